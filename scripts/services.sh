#!/usr/bin/env bash
# Makes sure the services the cluster tests need are up on loopback:
# PostgreSQL on 127.0.0.1:5432 (trust auth for local tests, database `test`)
# and NATS on 127.0.0.1:4222. Installs them with apt-get when missing, starts
# them when stopped, and leaves running ones alone. Idempotent.
set -euo pipefail

PG_PORT=${PG_PORT:-5432}
NATS_PORT=${NATS_PORT:-4222}
APT_UPDATED=0

apt_install() {
    if [ "$APT_UPDATED" = 0 ]; then
        apt-get update -qq
        APT_UPDATED=1
    fi
    DEBIAN_FRONTEND=noninteractive apt-get install -y -qq "$@" >/dev/null
}

port_open() { (exec 3<>"/dev/tcp/127.0.0.1/$1") 2>/dev/null; }

wait_port() {
    for _ in $(seq 1 100); do
        port_open "$1" && return 0
        sleep 0.1
    done
    echo "service on port $1 did not come up" >&2
    return 1
}

ensure_postgres() {
    if ! port_open "$PG_PORT"; then
        if ! ls /etc/postgresql/*/main >/dev/null 2>&1; then
            echo "installing postgresql"
            apt_install postgresql
            local version
            version=$(ls /etc/postgresql | sort -V | tail -1)
            # Test machine only: trust connections from loopback.
            local hba="/etc/postgresql/$version/main/pg_hba.conf"
            sed -i -E 's/^(host\s+all\s+all\s+(127\.0\.0\.1\/32|::1\/128)\s+)\S+/\1trust/' "$hba"
            sed -i -E 's/^(local\s+all\s+all\s+)\S+/\1trust/' "$hba"
        fi
        echo "starting postgresql"
        pg_ctlcluster --skip-systemctl-redirect "$(ls /etc/postgresql | sort -V | tail -1)" main start
        wait_port "$PG_PORT"
    fi
    if ! psql -h 127.0.0.1 -p "$PG_PORT" -U postgres -tAc "SELECT 1 FROM pg_database WHERE datname = 'test'" | grep -q 1; then
        psql -h 127.0.0.1 -p "$PG_PORT" -U postgres -c "CREATE DATABASE test" >/dev/null
    fi
}

ensure_nats() {
    if port_open "$NATS_PORT"; then
        return
    fi
    if ! command -v nats-server >/dev/null && [ ! -x /usr/sbin/nats-server ]; then
        echo "installing nats-server"
        apt_install nats-server
    fi
    echo "starting nats-server"
    local bin
    bin=$(command -v nats-server || echo /usr/sbin/nats-server)
    mkdir -p /tmp/hubcast-nats
    nohup "$bin" -a 127.0.0.1 -p "$NATS_PORT" -js -sd /tmp/hubcast-nats >/tmp/hubcast-nats/nats.log 2>&1 &
    wait_port "$NATS_PORT"
}

ensure_postgres
ensure_nats
echo "services ready: postgres 127.0.0.1:$PG_PORT, nats 127.0.0.1:$NATS_PORT"
