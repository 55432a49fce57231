//! End to end against the real server binary: the client sees exactly events
//! 1..N while the server is killed (-9) and restarted twice and its socket is
//! cut once by a proxy in between.
//!
//! The binary: env HUBCAST_BIN, else the workspace's target/debug/hubcast (in
//! CARGO_TARGET_DIR when that is set; built with `cargo build -p hubcast --bin
//! hubcast` if missing).

use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use futures_util::StreamExt;
use hubcast_client::{Client, Cursor, RoomUpdate, SubscribeOptions};
use serde_json::json;
use tokio::net::{TcpListener, TcpStream};
use tokio::task::JoinHandle;
use tokio::time::timeout;

fn binary() -> PathBuf {
    if let Ok(bin) = std::env::var("HUBCAST_BIN") {
        return PathBuf::from(bin);
    }
    let root = Path::new(env!("CARGO_MANIFEST_DIR")).join("../..");
    // Where cargo puts it (a relative CARGO_TARGET_DIR is taken from the workspace root).
    let target = std::env::var_os("CARGO_TARGET_DIR")
        .map_or_else(|| root.join("target"), |dir| root.join(dir));
    let bin = target.join("debug/hubcast");
    if !bin.exists() {
        let status = Command::new(env!("CARGO"))
            .args(["build", "-p", "hubcast", "--bin", "hubcast"])
            .current_dir(&root)
            .status()
            .expect("cargo build");
        assert!(status.success(), "building the hubcast binary failed");
    }
    bin
}

fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
}

struct Server {
    child: Child,
    addr: SocketAddr,
}

impl Drop for Server {
    /// No test leaves a server behind, whatever it asserts.
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

async fn start_server(bin: &Path, dir: &Path) -> Server {
    let port = free_port();
    let addr: SocketAddr = format!("127.0.0.1:{port}").parse().unwrap();
    let mut command = Command::new(bin);
    for (key, _) in std::env::vars() {
        if key.starts_with("HUBCAST_") {
            command.env_remove(key);
        }
    }
    let child = command
        .args([
            "serve",
            "--listen",
            &addr.to_string(),
            "--store",
            &format!("sqlite://{}/hubcast.db", dir.display()),
        ])
        .current_dir(dir)
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .expect("spawn hubcast serve");
    let http = reqwest::Client::new();
    timeout(Duration::from_secs(20), async {
        loop {
            if let Ok(r) = http.get(format!("http://{addr}/healthz")).send().await {
                if r.status().is_success() {
                    return;
                }
            }
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    })
    .await
    .expect("the server did not come up");
    Server { child, addr }
}

/// A TCP proxy to the current server; `cut` drops every open connection.
struct Proxy {
    addr: SocketAddr,
    target: Arc<Mutex<SocketAddr>>,
    conns: Arc<Mutex<Vec<JoinHandle<()>>>>,
}

impl Proxy {
    async fn start(target: SocketAddr) -> Proxy {
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        let target = Arc::new(Mutex::new(target));
        let conns: Arc<Mutex<Vec<JoinHandle<()>>>> = Arc::default();
        let (t, c) = (target.clone(), conns.clone());
        tokio::spawn(async move {
            while let Ok((mut inbound, _)) = listener.accept().await {
                let to = *t.lock().unwrap();
                let task = tokio::spawn(async move {
                    if let Ok(mut outbound) = TcpStream::connect(to).await {
                        let _ = tokio::io::copy_bidirectional(&mut inbound, &mut outbound).await;
                    }
                });
                c.lock().unwrap().push(task);
            }
        });
        Proxy {
            addr,
            target,
            conns,
        }
    }

    fn retarget(&self, to: SocketAddr) {
        *self.target.lock().unwrap() = to;
    }

    fn cut(&self) {
        for task in self.conns.lock().unwrap().drain(..) {
            task.abort();
        }
    }
}

async fn publish(server: SocketAddr, n: u64) {
    let http = reqwest::Client::new();
    let result = timeout(Duration::from_secs(20), async {
        loop {
            let sent = http
                .post(format!("http://{server}/v1/rooms/e2e/events"))
                .header("idempotency-key", format!("e2e-{n}"))
                .json(&json!({"data": {"n": n}}))
                .send()
                .await;
            if let Ok(response) = sent {
                if response.status().as_u16() == 201 || response.status().as_u16() == 200 {
                    return;
                }
            }
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    })
    .await;
    result.expect("publish did not succeed in time");
}

/// Reads the subscription until it has delivered through `n`.
async fn read_through(sub: &mut hubcast_client::Subscription, seen: &mut Vec<u64>, n: u64) {
    timeout(Duration::from_secs(30), async {
        while seen.last().copied().unwrap_or(0) < n {
            match sub.next().await.expect("the subscription ended") {
                RoomUpdate::Event(e) => {
                    assert_eq!(e.data, json!({"n": e.seq}));
                    seen.push(e.seq);
                }
                RoomUpdate::Reset(r) => panic!("unexpected reset {r:?}"),
                RoomUpdate::Error(_) => {} // e.g. history_unavailable while the server is down
                RoomUpdate::Presence(p) => panic!("no presence was asked for, got {p:?}"),
                RoomUpdate::Ephemeral(m) => panic!("no ephemeral message was sent, got {m:?}"),
            }
        }
    })
    .await
    .unwrap_or_else(|_| panic!("did not see events through {n}; saw {seen:?}"));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn exactly_once_in_order_across_kills_and_a_cut() {
    let bin = binary();
    let dir = tempfile::tempdir().unwrap();
    let mut server = start_server(&bin, dir.path()).await;
    let proxy = Proxy::start(server.addr).await;

    let client = Client::builder(format!("http://{}", proxy.addr))
        .reconnect(Duration::from_millis(20), Duration::from_millis(300))
        .connect_timeout(Some(Duration::from_secs(2)))
        .build()
        .unwrap();
    let mut sub = client
        .subscribe(
            "e2e",
            SubscribeOptions {
                cursor: Some(Cursor {
                    epoch: None,
                    seq: 0,
                }),
                ..Default::default()
            },
        )
        .await
        .unwrap();
    let mut seen = Vec::new();
    let mut n = 0;

    for round in 0..4 {
        for _ in 0..10 {
            n += 1;
            publish(server.addr, n).await;
        }
        read_through(&mut sub, &mut seen, n).await;
        match round {
            0 | 2 => {
                // kill -9 and restart on the same store.
                server.child.kill().unwrap();
                server.child.wait().unwrap();
                server = start_server(&bin, dir.path()).await;
                proxy.retarget(server.addr);
            }
            1 => proxy.cut(),
            _ => {}
        }
        // Published while the client is (re)connecting.
        for _ in 0..5 {
            n += 1;
            publish(server.addr, n).await;
        }
    }
    read_through(&mut sub, &mut seen, n).await;
    assert_eq!(seen, (1..=n).collect::<Vec<u64>>());
    assert_eq!(sub.cursor().map(|c| c.seq), Some(n));

    // A socket publish goes through the same client, acknowledged with the next seq.
    let ack = timeout(
        Duration::from_secs(10),
        client.publish("e2e", json!({"n": n + 1}), Default::default()),
    )
    .await
    .expect("publish timed out")
    .expect("publish failed");
    assert_eq!(ack.seq, n + 1);
    read_through(&mut sub, &mut seen, n + 1).await;
    assert_eq!(seen, (1..=n + 1).collect::<Vec<u64>>());

    client.close().await;
    server.child.kill().unwrap();
    server.child.wait().unwrap();
}

/// The next presence update of `sub` (events are not expected here).
async fn next_presence(sub: &mut hubcast_client::Subscription) -> hubcast_client::PresenceUpdate {
    let update = timeout(Duration::from_secs(10), sub.next())
        .await
        .expect("a presence update in time");
    match update.expect("the subscription ended") {
        RoomUpdate::Presence(update) => update,
        other => panic!("expected a presence update, got {other:?}"),
    }
}

fn ids(members: &[hubcast_client::PresenceMember]) -> Vec<String> {
    members.iter().map(|m| m.id.clone()).collect()
}

/// The async client's presence: a `presence` subscription yields the member
/// list, then joins and leaves; `Client::presence` asks for the list. The
/// server runs in protected mode, so members are the sessions' ids.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn presence_on_the_async_client() {
    use hubcast_client::PresenceUpdate;
    let bin = binary();
    let dir = tempfile::tempdir().unwrap();
    let server = start_server(&bin, dir.path()).await;
    let url = format!("http://{}", server.addr);
    let room = "chat:e2e";
    let with_presence = SubscribeOptions {
        presence: true,
        ..Default::default()
    };

    let alice = Client::new(url.clone()).unwrap();
    let mut alice_sub = alice.subscribe(room, with_presence.clone()).await.unwrap();
    let PresenceUpdate::Members { members, .. } = next_presence(&mut alice_sub).await else {
        panic!("the list comes first")
    };
    assert_eq!(members.len(), 1, "{members:?}");
    let alice_id = members[0].id.clone();

    let bob = Client::new(url.clone()).unwrap();
    let mut bob_sub = bob.subscribe(room, with_presence.clone()).await.unwrap();
    let PresenceUpdate::Members { members, .. } = next_presence(&mut bob_sub).await else {
        panic!("the list comes first")
    };
    assert_eq!(members.len(), 2, "{members:?}");
    let bob_id = ids(&members)
        .into_iter()
        .find(|id| *id != alice_id)
        .expect("bob's id");
    match next_presence(&mut alice_sub).await {
        PresenceUpdate::Join {
            member, members, ..
        } => {
            assert_eq!(member.id, bob_id);
            assert_eq!(members.len(), 2);
        }
        other => panic!("expected bob's join, got {other:?}"),
    }
    let mut both = vec![alice_id.clone(), bob_id.clone()];
    both.sort();
    assert_eq!(ids(&alice_sub.members()), both);

    // A presence request needs no subscription (a third client asks).
    let carol = Client::new(url.clone()).unwrap();
    assert_eq!(ids(&carol.presence(room).await.unwrap()), both);
    assert_eq!(
        ids(&carol.presence("chat:empty").await.unwrap()),
        Vec::<String>::new()
    );
    assert_eq!(
        carol.presence("bad room").await.unwrap_err().code,
        "invalid_room"
    );

    // Bob's subscription ending is bob leaving.
    drop(bob_sub);
    match next_presence(&mut alice_sub).await {
        PresenceUpdate::Leave {
            member, members, ..
        } => {
            assert_eq!(member.id, bob_id);
            assert_eq!(ids(&members), std::slice::from_ref(&alice_id));
        }
        other => panic!("expected bob's leave, got {other:?}"),
    }
    assert_eq!(ids(&alice_sub.members()), std::slice::from_ref(&alice_id));
    assert_eq!(ids(&carol.presence(room).await.unwrap()), [alice_id]);
    for client in [alice, bob, carol] {
        client.close().await;
    }
}

/// Counts history reads (a spurious gap heal would show here).
struct CountingHistory {
    reads: Arc<std::sync::atomic::AtomicUsize>,
    inner: hubcast_client::ReqwestHistory,
}

impl hubcast_client::HistoryFetcher for CountingHistory {
    fn get(
        &self,
        url: String,
        authorization: Option<String>,
    ) -> futures_util::future::BoxFuture<'static, Result<(u16, serde_json::Value), String>> {
        self.reads.fetch_add(1, std::sync::atomic::Ordering::SeqCst);
        self.inner.get(url, authorization)
    }
}

/// In an `echo = false` room the client's own publishes never come back; it
/// counts their acked seqs as delivered, so events of others arriving around
/// them (before or after the ack) are delivered in order without any history
/// read, and a resume from its cursor has no duplicate and no gap.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn no_echo_rooms_skip_own_publishes_without_gap_heals() {
    let bin = binary();
    let dir = tempfile::tempdir().unwrap();
    std::fs::write(
        dir.path().join("hubcast.toml"),
        "[[namespaces]]\nprefix = \"quiet:\"\necho = false\n",
    )
    .unwrap();
    let server = start_server(&bin, dir.path()).await;
    let url = format!("http://{}", server.addr);
    let room = "quiet:e2e";
    let reads = Arc::new(std::sync::atomic::AtomicUsize::new(0));
    let client = Client::builder(url.clone())
        .history(CountingHistory {
            reads: reads.clone(),
            inner: Default::default(),
        })
        .build()
        .unwrap();
    let mut sub = client
        .subscribe(
            room,
            SubscribeOptions {
                cursor: Some(Cursor {
                    epoch: None,
                    seq: 0,
                }),
                ..Default::default()
            },
        )
        .await
        .unwrap();

    // Once the subscription is live (the hub counts it): before that its replay
    // reads the log, which has no senders, and would include our own events.
    timeout(Duration::from_secs(10), async {
        loop {
            let stats: serde_json::Value = reqwest::get(format!("{url}/v1/rooms/{room}"))
                .await
                .expect("room stats")
                .json()
                .await
                .expect("json");
            if stats["subscribers"] == 1 {
                break;
            }
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
    })
    .await
    .expect("the subscription went live");

    // Others publish over HTTP while this client publishes over its socket.
    let others = tokio::spawn({
        let addr = server.addr;
        async move {
            let http = reqwest::Client::new();
            let mut seqs = Vec::new();
            for i in 0..40 {
                let receipt: serde_json::Value = http
                    .post(format!("http://{addr}/v1/rooms/quiet:e2e/events"))
                    .json(&json!({"data": {"from": "http", "i": i}}))
                    .send()
                    .await
                    .expect("http publish")
                    .json()
                    .await
                    .expect("receipt");
                seqs.push(receipt["seq"].as_u64().expect("seq"));
            }
            seqs
        }
    });
    let mut own = Vec::new();
    for i in 0..40 {
        let ack = client
            .publish(room, json!({"from": "socket", "i": i}), Default::default())
            .await
            .expect("ack");
        own.push(ack.seq);
    }
    let others = others.await.unwrap();
    assert_eq!(own.len() + others.len(), 80);

    let mut seen = Vec::new();
    timeout(Duration::from_secs(30), async {
        while seen.len() < others.len() {
            match sub.next().await.expect("the subscription ended") {
                RoomUpdate::Event(e) => {
                    assert_eq!(e.data["from"], "http", "our own event came back: {e:?}");
                    seen.push(e.seq);
                }
                other => panic!("unexpected {other:?}"),
            }
        }
    })
    .await
    .unwrap_or_else(|_| panic!("saw {seen:?} of {others:?}"));
    assert_eq!(seen, others, "exactly the others' events, in order");
    // Every ack and every other event has been read, and the driver shares
    // the cursor before it hands either over.
    assert_eq!(
        sub.cursor().map(|c| c.seq),
        Some(80),
        "the cursor counts our own seqs as delivered"
    );
    assert_eq!(
        reads.load(std::sync::atomic::Ordering::SeqCst),
        0,
        "no hole was healed from history"
    );

    // Resume from that cursor: nothing replayed, the next event is 81.
    let cursor = sub.cursor();
    drop(sub);
    client.close().await;
    let resumed = Client::new(url.clone()).unwrap();
    let mut sub = resumed
        .subscribe(
            room,
            SubscribeOptions {
                cursor,
                ..Default::default()
            },
        )
        .await
        .unwrap();
    reqwest::Client::new()
        .post(format!("http://{}/v1/rooms/quiet:e2e/events", server.addr))
        .json(&json!({"data": {"from": "http", "i": "after"}}))
        .send()
        .await
        .expect("http publish");
    match timeout(Duration::from_secs(10), sub.next())
        .await
        .expect("an event in time")
    {
        Some(RoomUpdate::Event(e)) => assert_eq!((e.seq, &e.data["i"]), (81, &json!("after"))),
        other => panic!("expected event 81, got {other:?}"),
    }
    resumed.close().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn ephemeral_messages_come_on_the_stream_outside_the_event_order() {
    let bin = binary();
    let dir = tempfile::tempdir().unwrap();
    std::fs::write(
        dir.path().join("hubcast.toml"),
        "[[namespaces]]\nprefix = \"typing:\"\nephemeral = \"allowed\"\n",
    )
    .unwrap();
    let server = start_server(&bin, dir.path()).await;
    let url = format!("http://{}", server.addr);
    let room = "typing:e2e";
    let client = Client::new(url.clone()).unwrap();
    let mut sub = client
        .subscribe(room, SubscribeOptions::default())
        .await
        .unwrap();
    let http = reqwest::Client::new();
    let publish = |data: serde_json::Value, ephemeral: bool| {
        let (http, url) = (http.clone(), url.clone());
        async move {
            let options = hubcast_client::HttpPublish {
                ephemeral,
                ..Default::default()
            };
            hubcast_client::http_publish(&http, &url, room, &data, &options)
                .await
                .unwrap()
        }
    };
    // Publish until the live subscription has seen an event: from then on it
    // is a current subscriber.
    let mut n = 0;
    let first = timeout(Duration::from_secs(20), async {
        loop {
            n += 1;
            assert_eq!(publish(json!({"n": n}), false).await.0, 201);
            if let Ok(Some(RoomUpdate::Event(e))) =
                timeout(Duration::from_millis(200), sub.next()).await
            {
                return e.seq;
            }
        }
    })
    .await
    .expect("the subscription never went live");
    let (status, receipt) = publish(json!({"typing": "alice"}), true).await;
    assert_eq!(
        (status, &receipt["ephemeral"]),
        (202, &json!(true)),
        "{receipt}"
    );
    let mut updates = Vec::new();
    let head = timeout(Duration::from_secs(20), async {
        let (status, receipt) = publish(json!({"after": true}), false).await;
        assert_eq!(status, 201, "{receipt}");
        let head = receipt["seq"].as_u64().unwrap();
        loop {
            let update = sub.next().await.expect("the subscription ended");
            let done = matches!(&update, RoomUpdate::Event(e) if e.seq == head);
            updates.push(update);
            if done {
                return head;
            }
        }
    })
    .await
    .expect("no event after the ephemeral message");
    let ephemeral: Vec<&hubcast_client::Ephemeral> = updates
        .iter()
        .filter_map(|u| match u {
            RoomUpdate::Ephemeral(m) => Some(m),
            _ => None,
        })
        .collect();
    assert_eq!(ephemeral.len(), 1, "{updates:?}");
    assert_eq!(
        (ephemeral[0].room.as_str(), &ephemeral[0].data),
        (room, &json!({"typing": "alice"}))
    );
    // The ephemeral message took no seq: the events stay consecutive, and
    // the cursor is the last event's.
    let seqs: Vec<u64> = updates
        .iter()
        .filter_map(|u| match u {
            RoomUpdate::Event(e) => Some(e.seq),
            _ => None,
        })
        .collect();
    assert_eq!(seqs, ((first + 1)..=head).collect::<Vec<_>>());
    assert_eq!(sub.cursor().map(|c| c.seq), Some(head));
}

/// `publish_batch`: one ack per event, in order; in a no-echo room the
/// batch's own seqs count as delivered (no heal), and a conflict appends
/// nothing.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn publish_batch_acks_every_event_and_skips_own_seqs() {
    let bin = binary();
    let dir = tempfile::tempdir().unwrap();
    std::fs::write(
        dir.path().join("hubcast.toml"),
        "[[namespaces]]\nprefix = \"quiet:\"\necho = false\n",
    )
    .unwrap();
    let server = start_server(&bin, dir.path()).await;
    let url = format!("http://{}", server.addr);
    let room = "quiet:batch";
    let reads = Arc::new(std::sync::atomic::AtomicUsize::new(0));
    let client = Client::builder(url.clone())
        .history(CountingHistory {
            reads: reads.clone(),
            inner: Default::default(),
        })
        .build()
        .unwrap();
    let mut sub = client
        .subscribe(
            room,
            SubscribeOptions {
                cursor: Some(Cursor {
                    epoch: None,
                    seq: 0,
                }),
                ..Default::default()
            },
        )
        .await
        .unwrap();
    timeout(Duration::from_secs(10), async {
        loop {
            let stats: serde_json::Value = reqwest::get(format!("{url}/v1/rooms/{room}"))
                .await
                .expect("room stats")
                .json()
                .await
                .expect("json");
            if stats["subscribers"] == 1 {
                break;
            }
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
    })
    .await
    .expect("the subscription went live");

    let events = vec![
        (room.to_owned(), json!({"n": 1}), None),
        ("quiet:other".to_owned(), json!({"n": 2}), None),
        (room.to_owned(), json!({"n": 3}), Some(1)),
    ];
    let acks = client
        .publish_batch(events, Default::default())
        .await
        .expect("batch ack");
    let got: Vec<(&str, u64)> = acks.iter().map(|a| (a.room.as_str(), a.seq)).collect();
    assert_eq!(got, [(room, 1), ("quiet:other", 1), (room, 2)]);
    let conflict = client
        .publish_batch(
            vec![
                (room.to_owned(), json!({"n": 4}), None),
                ("quiet:other".to_owned(), json!({"n": 5}), Some(0)),
            ],
            Default::default(),
        )
        .await
        .expect_err("a stale expected_seq");
    assert_eq!(
        (
            conflict.code.as_str(),
            conflict.room.as_deref(),
            conflict.head
        ),
        ("conflict", Some("quiet:other"), Some(1))
    );
    reqwest::Client::new()
        .post(format!("{url}/v1/rooms/{room}/events"))
        .json(&json!({"data": {"n": "http"}}))
        .send()
        .await
        .expect("http publish");
    match timeout(Duration::from_secs(10), sub.next())
        .await
        .expect("an event in time")
    {
        Some(RoomUpdate::Event(e)) => assert_eq!((e.seq, &e.data["n"]), (3, &json!("http"))),
        other => panic!("expected event 3, got {other:?}"),
    }
    assert_eq!(sub.cursor().map(|c| c.seq), Some(3));
    assert_eq!(
        reads.load(std::sync::atomic::Ordering::SeqCst),
        0,
        "the batch's own seqs were no hole to heal"
    );
    client.close().await;
}
