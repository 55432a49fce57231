//! The cluster backend of the black-box tests: with
//! `HUBCAST_TEST_BACKEND=cluster` every [`Server`](super::Server) runs on
//! PostgreSQL and NATS, each test in a schema and under a subject prefix of
//! its own ([`Cluster`]), so tests run in parallel.

use std::time::Duration;

use super::{chain, within, STEP};

/// PostgreSQL used when `HUBCAST_TEST_BACKEND=cluster` (override: `HUBCAST_TEST_PG_URL`).
pub const DEFAULT_PG_URL: &str = "postgres://postgres@127.0.0.1:5432/test";
/// NATS used when `HUBCAST_TEST_BACKEND=cluster` (override: `HUBCAST_TEST_NATS_URL`).
pub const DEFAULT_NATS_URL: &str = "nats://127.0.0.1:4222";

/// Whether `HUBCAST_TEST_BACKEND=cluster` selects PostgreSQL + NATS.
pub fn cluster_backend() -> bool {
    match std::env::var("HUBCAST_TEST_BACKEND").as_deref() {
        Ok("cluster") => true,
        Ok("") | Ok("sqlite") | Err(_) => false,
        Ok(other) => panic!("HUBCAST_TEST_BACKEND must be `sqlite` or `cluster`, not {other:?}"),
    }
}

/// The cluster's PostgreSQL URL for tests that need one whatever the backend
/// (`HUBCAST_TEST_PG_URL`, else [`DEFAULT_PG_URL`]).
pub fn test_pg_url() -> String {
    env_or("HUBCAST_TEST_PG_URL", DEFAULT_PG_URL)
}

/// The cluster's NATS URL (`HUBCAST_TEST_NATS_URL`, else [`DEFAULT_NATS_URL`]).
pub fn test_nats_url() -> String {
    env_or("HUBCAST_TEST_NATS_URL", DEFAULT_NATS_URL)
}

fn env_or(key: &str, default: &str) -> String {
    std::env::var(key)
        .ok()
        .filter(|v| !v.is_empty())
        .unwrap_or_else(|| default.to_owned())
}

/// One test's cluster: a PostgreSQL schema and a NATS subject prefix nobody
/// else uses, shared by the nodes started with [`Server::start_peer`]. The
/// schema is dropped (`DROP SCHEMA … CASCADE`) when the last node is dropped.
pub struct Cluster {
    pub pg_url: String,
    pub nats_url: String,
    pub schema: String,
    pub prefix: String,
}

impl Cluster {
    /// A new cluster on the test PostgreSQL and NATS ([`test_pg_url`], [`test_nats_url`]).
    pub(super) async fn from_env() -> Cluster {
        Cluster::new(&test_pg_url(), &test_nats_url()).await
    }

    /// A new cluster on the given PostgreSQL and NATS.
    pub(super) async fn new(pg_url: &str, nats_url: &str) -> Cluster {
        static NEXT: std::sync::atomic::AtomicU32 = std::sync::atomic::AtomicU32::new(0);
        let n = NEXT.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
        let tag = format!(
            "t{}_{}_{:08x}",
            std::process::id(),
            n,
            rand::random::<u32>()
        );
        let cluster = Cluster {
            pg_url: pg_url.to_owned(),
            nats_url: nats_url.to_owned(),
            schema: format!("hubcast_{tag}"),
            prefix: format!("hubcast_{tag}"),
        };
        // Fail here, clearly, rather than as a server that never gets ready.
        let (client, _) = within(
            STEP,
            "a connection to the test PostgreSQL",
            pg_connect(pg_url, None),
        )
        .await
        .unwrap_or_else(|err| {
            panic!(
                "cannot connect to {pg_url} (run scripts/services.sh): {}",
                chain(&err)
            )
        });
        drop(client);
        cluster
    }

    /// A new connection whose search path is this cluster's schema.
    pub async fn connect(&self) -> tokio_postgres::Client {
        let (client, _driver) = within(
            STEP,
            "a PostgreSQL connection",
            pg_connect(&self.pg_url, Some(&self.schema)),
        )
        .await
        .unwrap_or_else(|err| panic!("connect to {}: {}", self.pg_url, chain(&err)));
        client
    }
}

impl Drop for Cluster {
    fn drop(&mut self) {
        // Drop runs inside the test's runtime, which must not be blocked on:
        // clean up from a thread of its own, with a runtime of its own.
        let (url, schema) = (self.pg_url.clone(), self.schema.clone());
        let cleanup = std::thread::spawn(move || {
            let runtime = tokio::runtime::Builder::new_current_thread()
                .enable_all()
                .build()
                .expect("runtime");
            runtime.block_on(async {
                let drop_schema = async {
                    let (client, _) = pg_connect(&url, None).await?;
                    client
                        .batch_execute(&format!("DROP SCHEMA IF EXISTS {schema} CASCADE"))
                        .await
                };
                match tokio::time::timeout(Duration::from_secs(20), drop_schema).await {
                    Ok(Ok(())) => {}
                    // Best effort: the private PostgreSQL of a test may be gone already.
                    Ok(Err(err)) => {
                        eprintln!("note: could not drop test schema {schema}: {}", chain(&err))
                    }
                    Err(_) => eprintln!("note: timed out dropping test schema {schema}"),
                }
            });
        });
        let _ = cleanup.join();
    }
}

/// Connects to PostgreSQL at `url` (search path `schema`, if given); the
/// connection is driven by a spawned task that ends with it.
pub async fn pg_connect(
    url: &str,
    schema: Option<&str>,
) -> Result<(tokio_postgres::Client, tokio::task::JoinHandle<()>), tokio_postgres::Error> {
    use std::str::FromStr;
    let mut config = tokio_postgres::Config::from_str(url)?;
    config.connect_timeout(Duration::from_secs(5));
    config.application_name("hubcast-tests");
    if let Some(schema) = schema {
        config.options(format!("-c search_path={schema}"));
    }
    let (client, connection) = config.connect(tokio_postgres::NoTls).await?;
    let driver = tokio::spawn(async move {
        let _ = connection.await;
    });
    Ok((client, driver))
}
