//! The store contract, as tests every implementation runs through a factory.
//! A new store adds one `#[tokio::test]` per check below with its own factory.

use std::sync::Arc;
use std::time::Duration;

use serde_json::value::RawValue;

use futures_util::future::BoxFuture;
use futures_util::FutureExt;

use super::transaction::{AppEvent, Backend, PostgresWork, SqliteWork, TxDecision, TxOutcome};
use super::{
    AppendOutcome, AppendRequest, BatchItem, BatchOutcome, BatchRequest, CommitFeed,
    RetentionPolicy, Store, StoreError,
};
use crate::room::RoomName;

fn room(name: &str) -> RoomName {
    RoomName::parse(name).expect("valid test room")
}

fn request(room_name: &str, n: u64) -> AppendRequest {
    AppendRequest {
        room: room(room_name),
        data: RawValue::from_string(format!("{{\"n\":{n}}}")).expect("valid json"),
        idem_key: None,
        expected_seq: None,
        origin: None,
    }
}

async fn seq_of(store: &dyn Store, request: AppendRequest) -> u64 {
    match store.append(request).await.expect("append") {
        AppendOutcome::Appended(receipt) => receipt.seq,
        other => panic!("expected a new event, got {other:?}"),
    }
}

pub async fn seqs_are_gapless_per_room(store: Arc<dyn Store>, _feed: CommitFeed) {
    for n in 1..=5 {
        assert_eq!(seq_of(&*store, request("a", n)).await, n);
    }
    assert_eq!(seq_of(&*store, request("b", 1)).await, 1);
    assert_eq!(seq_of(&*store, request("a", 6)).await, 6);
    let page = store.read(&room("a"), 0, 100).await.unwrap();
    let seqs: Vec<u64> = page.events.iter().map(|e| e.seq).collect();
    assert_eq!(seqs, vec![1, 2, 3, 4, 5, 6]);
    assert_eq!(page.events[2].data.get(), r#"{"n":3}"#);
    let state = page.state.unwrap();
    assert_eq!((state.head, state.earliest), (6, 1));
    let ts: Vec<i64> = page.events.iter().map(|e| e.ts).collect();
    assert!(
        ts.windows(2).all(|w| w[0] <= w[1]),
        "ts never decreases: {ts:?}"
    );
}

pub async fn concurrent_appends_stay_gapless(store: Arc<dyn Store>, _feed: CommitFeed) {
    let tasks: Vec<_> = (0..200)
        .map(|n| {
            let store = store.clone();
            tokio::spawn(async move {
                seq_of(&*store, request(if n % 2 == 0 { "even" } else { "odd" }, n)).await
            })
        })
        .collect();
    let mut seqs = Vec::new();
    for task in tasks {
        seqs.push(task.await.unwrap());
    }
    seqs.sort_unstable();
    let expected: Vec<u64> = (1..=100).flat_map(|s| [s, s]).collect();
    assert_eq!(seqs, expected);
}

pub async fn idempotency_key_appends_once(store: Arc<dyn Store>, _feed: CommitFeed) {
    let keyed = |n| AppendRequest {
        idem_key: Some("k".into()),
        ..request("r", n)
    };
    let first = match store.append(keyed(1)).await.unwrap() {
        AppendOutcome::Appended(receipt) => receipt,
        other => panic!("{other:?}"),
    };
    match store.append(keyed(1)).await.unwrap() {
        AppendOutcome::Duplicate(receipt) => assert_eq!(receipt, first),
        other => panic!("{other:?}"),
    }
    // The same key in another room is another event.
    let other_room = AppendRequest {
        idem_key: Some("k".into()),
        ..request("s", 1)
    };
    assert!(matches!(
        store.append(other_room).await.unwrap(),
        AppendOutcome::Appended(_)
    ));
    let page = store.read(&room("r"), 0, 10).await.unwrap();
    assert_eq!(page.events.len(), 1);
    assert_eq!(page.events[0].data.get(), r#"{"n":1}"#);
}

pub async fn expected_seq_conflicts(store: Arc<dyn Store>, _feed: CommitFeed) {
    seq_of(&*store, request("r", 1)).await;
    let stale = AppendRequest {
        expected_seq: Some(0),
        ..request("r", 2)
    };
    match store.append(stale).await.unwrap() {
        AppendOutcome::Conflict { head, .. } => assert_eq!(head, 1),
        other => panic!("{other:?}"),
    }
    let fresh = AppendRequest {
        expected_seq: Some(1),
        ..request("r", 2)
    };
    assert!(matches!(store.append(fresh).await.unwrap(), AppendOutcome::Appended(r) if r.seq == 2));
    let new_room = AppendRequest {
        expected_seq: Some(0),
        ..request("new", 1)
    };
    assert!(
        matches!(store.append(new_room).await.unwrap(), AppendOutcome::Appended(r) if r.seq == 1)
    );
}

/// Every commit is reported once, after it (a read already sees it). The
/// order per room is checked for single-writer stores only (see the contract).
pub async fn commit_feed_reports_after_commit(store: Arc<dyn Store>, feed: CommitFeed) {
    commit_feed_check(store, feed, false).await
}

pub async fn commit_feed_reports_in_order_after_commit(store: Arc<dyn Store>, feed: CommitFeed) {
    commit_feed_check(store, feed, true).await
}

async fn commit_feed_check(store: Arc<dyn Store>, mut feed: CommitFeed, in_order: bool) {
    for n in 1..=20 {
        let store = store.clone();
        tokio::spawn(async move { store.append(request("f", n)).await.unwrap() });
    }
    let mut seen = Vec::new();
    while seen.len() < 20 {
        let batch = tokio::time::timeout(Duration::from_secs(5), feed.recv())
            .await
            .unwrap()
            .unwrap();
        for event in batch {
            // Reported only after commit: a read must already see it.
            let page = store.read(&event.room, event.seq - 1, 1).await.unwrap();
            assert_eq!(page.events[0].seq, event.seq);
            seen.push(event.seq);
        }
    }
    if !in_order {
        seen.sort_unstable();
    }
    assert_eq!(seen, (1..=20).collect::<Vec<_>>());
}

pub async fn reused_key_with_another_body_is_a_mismatch(store: Arc<dyn Store>, _feed: CommitFeed) {
    let keyed = |n, expected_seq| AppendRequest {
        idem_key: Some("k".into()),
        expected_seq,
        ..request("m", n)
    };
    let first = match store.append(keyed(1, None)).await.unwrap() {
        AppendOutcome::Appended(receipt) => receipt,
        other => panic!("{other:?}"),
    };
    // The same request again is a retry; another body or expected_seq is not.
    assert_eq!(
        store.append(keyed(1, None)).await.unwrap(),
        AppendOutcome::Duplicate(first.clone())
    );
    assert_eq!(
        store.append(keyed(2, None)).await.unwrap(),
        AppendOutcome::Mismatch(first.clone())
    );
    assert_eq!(
        store.append(keyed(1, Some(0))).await.unwrap(),
        AppendOutcome::Mismatch(first.clone())
    );
    assert_eq!(
        store.read(&room("m"), 0, 10).await.unwrap().events.len(),
        1,
        "nothing more was appended"
    );
}

pub async fn rooms_have_stable_epochs(store: Arc<dyn Store>, _feed: CommitFeed) {
    assert_eq!(store.room_state(&room("e")).await.unwrap(), None);
    // A subscriber learns the epoch the room will have; subscribing writes nothing.
    let promised = store.subscribe_state(&room("e")).await.unwrap();
    assert_eq!((promised.head, promised.earliest), (0, 1));
    assert_eq!(promised.epoch.len(), 16);
    assert_eq!(
        store.room_state(&room("e")).await.unwrap(),
        None,
        "a subscribe creates no room"
    );
    let receipt = match store.append(request("e", 1)).await.unwrap() {
        AppendOutcome::Appended(receipt) => receipt,
        other => panic!("{other:?}"),
    };
    assert_eq!(
        receipt.epoch, promised.epoch,
        "the first append keeps the promised epoch"
    );
    assert_eq!(
        store.room_state(&room("e")).await.unwrap().unwrap().epoch,
        promised.epoch
    );
    assert_eq!(
        store.subscribe_state(&room("e")).await.unwrap().epoch,
        promised.epoch
    );
    assert_ne!(store.epoch_for(&room("e2")), promised.epoch);
    seq_of(&*store, request("e2", 1)).await;
    let states = store
        .states(vec![room("e"), room("e2"), room("never")])
        .await
        .unwrap();
    let mut states: Vec<(String, String, u64, u64)> = states
        .into_iter()
        .map(|(r, s)| (r.to_string(), s.epoch, s.head, s.earliest))
        .collect();
    states.sort();
    let e2 = store.epoch_for(&room("e2"));
    assert_eq!(
        states,
        vec![
            ("e".to_string(), promised.epoch.clone(), 1, 1),
            ("e2".to_string(), e2, 1, 1)
        ]
    );
}

pub async fn deleting_a_room_starts_a_new_epoch(store: Arc<dyn Store>, _feed: CommitFeed) {
    assert_eq!(
        store.delete_room(&room("d")).await.unwrap(),
        None,
        "never written"
    );
    let keyed = |n: u64| AppendRequest {
        idem_key: Some(format!("k{n}")),
        ..request("d", n)
    };
    for n in 1..=3 {
        seq_of(&*store, keyed(n)).await;
    }
    let old = store.room_state(&room("d")).await.unwrap().unwrap();
    let epoch = store.delete_room(&room("d")).await.unwrap().unwrap();
    assert_ne!(epoch, old.epoch);
    assert_ne!(
        epoch,
        store.epoch_for(&room("d")),
        "not the derived epoch either"
    );
    let state = store.room_state(&room("d")).await.unwrap().unwrap();
    assert_eq!(
        (state.epoch.as_str(), state.head, state.earliest),
        (epoch.as_str(), 0, 1)
    );
    assert!(store
        .read(&room("d"), 0, 10)
        .await
        .unwrap()
        .events
        .is_empty());
    // The next publish starts the new log at seq 1, in the new epoch; the
    // deleted log's idempotency keys are gone with it.
    match store.append(keyed(1)).await.unwrap() {
        AppendOutcome::Appended(receipt) => {
            assert_eq!((receipt.seq, receipt.epoch), (1, epoch.clone()))
        }
        other => panic!("{other:?}"),
    }
    let (_, state) = store.states(vec![room("d")]).await.unwrap().remove(0);
    assert_eq!((state.epoch, state.head), (epoch, 1));
}

pub async fn revocations_are_kept_until_they_expire(store: Arc<dyn Store>, _feed: CommitFeed) {
    use crate::auth::revocation::Revocation;
    let token = Revocation::Token {
        jti: "t1".into(),
        expires_at: 100,
    };
    let user = |issued_before, expires_at| Revocation::User {
        user: "u".into(),
        issued_before,
        expires_at,
    };
    store.add_revocation(token.clone()).await.unwrap();
    store.add_revocation(user(50, 200)).await.unwrap();
    // A narrower one of the same user does not shrink it.
    store.add_revocation(user(40, 150)).await.unwrap();
    assert_eq!(
        store.revocations(10).await.unwrap(),
        vec![token.clone(), user(50, 200)]
    );
    assert_eq!(store.revocations(100).await.unwrap(), vec![user(50, 200)]);
    assert_eq!(store.prune_revocations(100).await.unwrap(), 1);
    assert_eq!(store.revocations(10).await.unwrap(), vec![user(50, 200)]);
}

pub async fn retention_prunes_and_moves_earliest(store: Arc<dyn Store>, _feed: CommitFeed) {
    for n in 1..=10 {
        seq_of(&*store, request("p", n)).await;
    }
    seq_of(&*store, request("q", 1)).await;
    let deleted = store
        .enforce_retention(RetentionPolicy::uniform(3, 0))
        .await
        .unwrap();
    assert_eq!(deleted, 7);
    let page = store.read(&room("p"), 0, 100).await.unwrap();
    assert_eq!(
        page.events.iter().map(|e| e.seq).collect::<Vec<_>>(),
        vec![8, 9, 10]
    );
    let state = page.state.unwrap();
    assert_eq!((state.head, state.earliest, state.retained()), (10, 8, 3));
    // What the reconcile reads tells hubs of the pruning too.
    let (_, listed) = store.states(vec![room("p")]).await.unwrap().remove(0);
    assert_eq!(listed, state);
    // Appends continue from the head.
    assert_eq!(seq_of(&*store, request("p", 11)).await, 11);
    // Age: with a 1 ms limit, everything written before the pause expires.
    tokio::time::sleep(Duration::from_millis(5)).await;
    store
        .enforce_retention(RetentionPolicy::uniform(0, 1))
        .await
        .unwrap();
    let state = store.room_state(&room("p")).await.unwrap().unwrap();
    assert_eq!((state.head, state.earliest, state.retained()), (11, 12, 0));
    assert_eq!(seq_of(&*store, request("p", 12)).await, 12);
}

/// A pass over more rooms than one page (the PostgreSQL store reads 500 at a
/// time, each page within the statement timeout), by count and by age.
pub async fn retention_covers_every_page_of_rooms(store: Arc<dyn Store>, _feed: CommitFeed) {
    const ROOMS: u64 = 1_100;
    let batch = BatchRequest {
        events: (0..ROOMS)
            .flat_map(|r| (1..=2).map(move |n| (r, n)))
            .map(|(r, n)| BatchItem {
                room: room(&format!("paged:{r:04}")),
                data: RawValue::from_string(format!("{{\"n\":{n}}}")).expect("valid json"),
                expected_seq: None,
            })
            .collect(),
        idem_key: None,
        origin: None,
    };
    store.append_batch(batch).await.expect("append the rooms");
    let deleted = store
        .enforce_retention(RetentionPolicy::uniform(1, 0))
        .await
        .unwrap();
    assert_eq!(deleted, ROOMS, "one event of each room by count");
    tokio::time::sleep(Duration::from_millis(5)).await;
    let deleted = store
        .enforce_retention(RetentionPolicy::uniform(0, 1))
        .await
        .unwrap();
    assert_eq!(deleted, ROOMS, "the other by age");
    for r in [0, 499, 500, 1_099] {
        let state = store
            .room_state(&room(&format!("paged:{r:04}")))
            .await
            .unwrap()
            .unwrap();
        assert_eq!((state.head, state.earliest), (2, 3), "room {r}");
    }
}

pub async fn namespaces_have_their_own_retention(store: Arc<dyn Store>, _feed: CommitFeed) {
    for n in 1..=10 {
        seq_of(&*store, request("short:a", n)).await;
        seq_of(&*store, request("long:a", n)).await;
        seq_of(&*store, request("other", n)).await;
    }
    let policy = RetentionPolicy {
        max_events: 5,
        max_age_ms: 0,
        namespaces: crate::config::Namespaces::new(&[
            crate::config::NamespaceConfig {
                prefix: "short:".into(),
                max_events: Some(2),
                ..Default::default()
            },
            crate::config::NamespaceConfig {
                prefix: "long:".into(),
                max_events: Some(0),
                ..Default::default()
            },
        ]),
    };
    store.enforce_retention(policy).await.unwrap();
    let earliest = |name: &'static str| {
        let store = store.clone();
        async move {
            store
                .room_state(&room(name))
                .await
                .unwrap()
                .unwrap()
                .earliest
        }
    };
    assert_eq!(earliest("short:a").await, 9);
    assert_eq!(earliest("long:a").await, 1, "0 keeps all");
    assert_eq!(earliest("other").await, 6);
}

fn message(room: &str, id: &str) -> crate::webhook::NewWebhook {
    crate::webhook::NewWebhook {
        endpoint: "e".into(),
        room: room.into(),
        msg_id: id.into(),
        body: format!("{{\"id\":\"{id}\"}}"),
    }
}

async fn due_ids(backend: &Backend, now: i64) -> Vec<String> {
    let outbox = backend.webhook_outbox();
    let due = outbox.due("e", now, 10, 10, 60_000).await.unwrap();
    // Whatever was claimed is let go again (no attempt was made).
    let release = super::webhook_outbox::DeliveryReport {
        retry: due
            .iter()
            .map(|m| (m.id, m.attempts, 0, String::new()))
            .collect(),
        ..Default::default()
    };
    outbox.finish(release).await.unwrap();
    due.into_iter().map(|m| m.msg_id).collect()
}

/// `due_ids`, rooms in name order (stores may interleave rooms; within a
/// room the order is the contract). Test ids start with their room's name.
async fn due_by_room(backend: &Backend, now: i64) -> Vec<String> {
    let mut ids = due_ids(backend, now).await;
    ids.sort_by_key(|id| id.chars().next());
    ids
}

/// The webhook outbox: messages come out per room in order; a room whose
/// oldest message waits for a retry is left out whole; what a round
/// delivered or dead-lettered is gone. A store shared by nodes claims what
/// `due` returns until `finish`.
pub async fn webhook_outbox_keeps_order_per_room(backend: Backend, claims: bool) {
    use super::webhook_outbox::DeliveryReport;
    let outbox = backend.webhook_outbox();
    let now = crate::event::now_ms();
    outbox
        .record(vec![
            message("a", "a1"),
            message("b", "b1"),
            message("a", "a2"),
            message("a", "a3"),
        ])
        .await
        .unwrap();
    assert_eq!(due_by_room(&backend, now).await, ["a1", "a2", "a3", "b1"]);
    let due = outbox.due("e", now, 10, 10, 60_000).await.unwrap();
    if claims {
        assert!(
            outbox
                .due("e", now, 10, 10, 60_000)
                .await
                .unwrap()
                .is_empty(),
            "claimed rooms are left out"
        );
    }
    let id = |msg: &str| due.iter().find(|m| m.msg_id == msg).unwrap().id;
    outbox
        .finish(DeliveryReport {
            delivered: vec![id("b1")],
            retry: vec![(id("a1"), 1, now + 3_600_000, "answered 500".into())],
            dead: vec![],
        })
        .await
        .unwrap();
    assert!(
        due_by_room(&backend, now).await.is_empty(),
        "a waits for its retry, b is done"
    );
    assert_eq!(
        due_by_room(&backend, now + 3_600_000).await,
        ["a1", "a2", "a3"]
    );
    outbox
        .finish(DeliveryReport {
            dead: vec![(id("a1"), "too old".into())],
            ..Default::default()
        })
        .await
        .unwrap();
    assert_eq!(due_by_room(&backend, now).await, ["a2", "a3"]);
    assert_eq!(outbox.backlog().await.unwrap(), [("e".to_owned(), 2)]);
}

/// Occupancy and presence: the store records each transition's messages
/// once, whichever node enters or leaves, and hands over what only dead
/// nodes hold.
pub async fn holding_decides_each_transition_once(backend: Backend) {
    use super::webhook_outbox::Holding;
    let outbox = backend.webhook_outbox();
    let now = crate::event::now_ms();
    let enter = |subject: &str, node: &str, expires_at: i64, id: &str| Holding::Enter {
        room: "r".into(),
        subject: subject.into(),
        info: Some("{\"name\":\"A\"}".into()),
        node: node.into(),
        expires_at,
        messages: vec![message("r", id)],
    };
    let leave = |subject: &str, node: &str, id: &str| Holding::Leave {
        room: "r".into(),
        subject: subject.into(),
        node: node.into(),
        now,
        messages: vec![message("r", id)],
    };
    let later = now + 60_000;
    assert!(outbox
        .holding(enter("", "n1", later, "occupied"))
        .await
        .unwrap());
    assert!(!outbox
        .holding(enter("", "n2", later, "occupied again"))
        .await
        .unwrap());
    assert!(!outbox
        .holding(leave("", "n1", "vacated by n1"))
        .await
        .unwrap());
    assert!(outbox.holding(leave("", "n2", "vacated")).await.unwrap());
    assert!(!outbox
        .holding(leave("", "n2", "vacated twice"))
        .await
        .unwrap());
    // A member whose only node stopped refreshing.
    assert!(outbox
        .holding(enter("alice", "dead", now - 1, "joined"))
        .await
        .unwrap());
    let abandoned = outbox.abandoned(now).await.unwrap();
    assert_eq!(abandoned.len(), 1);
    assert_eq!(
        (abandoned[0].subject.as_str(), abandoned[0].info.as_deref()),
        ("alice", Some("{\"name\":\"A\"}"))
    );
    assert!(outbox.holding(leave("alice", "", "left")).await.unwrap());
    assert!(outbox.abandoned(now).await.unwrap().is_empty());
    assert_eq!(
        due_ids(&backend, now).await,
        ["occupied", "vacated", "joined", "left"]
    );
}

pub async fn closed_store_refuses_writes(store: Arc<dyn Store>, _feed: CommitFeed) {
    seq_of(&*store, request("c", 1)).await;
    store.close().await;
    assert!(matches!(
        store.append(request("c", 2)).await,
        Err(StoreError::Closed)
    ));
}

/// An application transaction: increments a counter kept in the app's own
/// table while it is below `limit`, announcing each increment in room `tx`;
/// `fail_after_write` writes and then fails (its write must not survive).
struct Counter {
    limit: i64,
    fail_after_write: bool,
}

impl Counter {
    fn decide(&self, n: i64) -> Result<TxDecision, StoreError> {
        if self.fail_after_write {
            return Err(StoreError::Unavailable("the application failed".into()));
        }
        if n >= self.limit {
            return Ok(TxDecision::Abort(serde_json::json!({"n": n})));
        }
        let data = RawValue::from_string(format!("{{\"n\":{}}}", n + 1)).expect("json");
        Ok(TxDecision::Commit {
            event: Some(AppEvent {
                room: room("tx"),
                data,
            }),
            answer: serde_json::json!({"n": n + 1}),
        })
    }
}

const COUNTER_TABLE: &str =
    "CREATE TABLE IF NOT EXISTS app_counter (id INTEGER PRIMARY KEY, n BIGINT NOT NULL);
     INSERT INTO app_counter (id, n) VALUES (1, 0) ON CONFLICT (id) DO NOTHING;";

impl SqliteWork for Counter {
    fn run_sqlite(self: Box<Self>, conn: &rusqlite::Connection) -> Result<TxDecision, StoreError> {
        let db = |e: rusqlite::Error| StoreError::Unavailable(e.to_string());
        conn.execute_batch(COUNTER_TABLE).map_err(db)?;
        let n: i64 = conn
            .query_row("SELECT n FROM app_counter WHERE id = 1", [], |row| {
                row.get(0)
            })
            .map_err(db)?;
        if self.fail_after_write || n < self.limit {
            conn.execute("UPDATE app_counter SET n = n + 1 WHERE id = 1", [])
                .map_err(db)?;
        }
        self.decide(n)
    }
}

impl PostgresWork for Counter {
    fn run_postgres<'a>(
        self: Box<Self>,
        tx: &'a tokio_postgres::Transaction<'_>,
    ) -> BoxFuture<'a, Result<TxDecision, StoreError>> {
        async move {
            let db = |e: tokio_postgres::Error| StoreError::Unavailable(e.to_string());
            tx.batch_execute(COUNTER_TABLE).await.map_err(db)?;
            let n: i64 = tx
                .query_one("SELECT n FROM app_counter WHERE id = 1 FOR UPDATE", &[])
                .await
                .map_err(db)?
                .get(0);
            if self.fail_after_write || n < self.limit {
                tx.execute("UPDATE app_counter SET n = n + 1 WHERE id = 1", &[])
                    .await
                    .map_err(db)?;
            }
            self.decide(n)
        }
        .boxed()
    }
}

/// Creates the application's table (committed, no event) before the race:
/// concurrent `CREATE TABLE IF NOT EXISTS` can fail on PostgreSQL.
struct CounterSetup;

impl SqliteWork for CounterSetup {
    fn run_sqlite(self: Box<Self>, conn: &rusqlite::Connection) -> Result<TxDecision, StoreError> {
        conn.execute_batch(COUNTER_TABLE)
            .map_err(|e| StoreError::Internal(e.to_string()))?;
        Ok(TxDecision::Commit {
            event: None,
            answer: serde_json::Value::Null,
        })
    }
}

impl PostgresWork for CounterSetup {
    fn run_postgres<'a>(
        self: Box<Self>,
        tx: &'a tokio_postgres::Transaction<'_>,
    ) -> BoxFuture<'a, Result<TxDecision, StoreError>> {
        async move {
            tx.batch_execute(COUNTER_TABLE)
                .await
                .map_err(|e| StoreError::Internal(e.to_string()))?;
            Ok(TxDecision::Commit {
                event: None,
                answer: serde_json::Value::Null,
            })
        }
        .boxed()
    }
}

pub async fn transact_commits_app_state_with_its_event(backend: Backend, mut feed: CommitFeed) {
    let store = backend.store();
    backend
        .transact(CounterSetup)
        .await
        .expect("the application's table");
    // Application transactions race plain appends to the same room.
    let mut tasks = Vec::new();
    for n in 0..10 {
        let app = backend.clone();
        tasks.push(tokio::spawn(async move {
            app.transact(Counter {
                limit: 6,
                fail_after_write: false,
            })
            .await
        }));
        let publisher = store.clone();
        tokio::spawn(async move { publisher.append(request("tx", 100 + n)).await.unwrap() });
    }
    let mut committed = Vec::new();
    let mut aborted = 0;
    for task in tasks {
        match task.await.unwrap().expect("transact") {
            TxOutcome::Committed {
                receipt: Some(receipt),
                answer,
            } => committed.push((receipt.seq, answer)),
            TxOutcome::Aborted(answer) => {
                assert_eq!(answer, serde_json::json!({"n": 6}));
                aborted += 1;
            }
            other => panic!("{other:?}"),
        }
    }
    assert_eq!((committed.len(), aborted), (6, 4), "{committed:?}");
    let mut counts: Vec<_> = committed
        .iter()
        .map(|(_, answer)| answer["n"].as_i64().unwrap())
        .collect();
    counts.sort_unstable();
    assert_eq!(counts, (1..=6).collect::<Vec<_>>());

    // A failure after a write rolls the write back, and leaves the room alone.
    let failed = backend
        .transact(Counter {
            limit: 100,
            fail_after_write: true,
        })
        .await;
    assert!(
        matches!(failed, Err(StoreError::Unavailable(_))),
        "{failed:?}"
    );
    let check = backend
        .transact(Counter {
            limit: 0,
            fail_after_write: false,
        })
        .await
        .unwrap();
    assert_eq!(
        check,
        TxOutcome::Aborted(serde_json::json!({"n": 6})),
        "the counter is still 6"
    );

    // The room holds each committed event once at its receipt's seq, in a
    // gapless sequence with the plain appends, and each was on the commit feed.
    let mut seen = Vec::new();
    while seen.len() < 16 {
        let batch = tokio::time::timeout(Duration::from_secs(5), feed.recv())
            .await
            .unwrap()
            .unwrap();
        seen.extend(batch.iter().map(|e| e.seq));
    }
    seen.sort_unstable();
    assert_eq!(seen, (1..=16).collect::<Vec<_>>());
    let page = store.read(&room("tx"), 0, 100).await.unwrap();
    assert_eq!(page.events.len(), 16);
    for (seq, answer) in &committed {
        let event = &page.events[*seq as usize - 1];
        assert_eq!(
            event.data.get(),
            format!("{{\"n\":{}}}", answer["n"]),
            "seq {seq}"
        );
    }
}

/// A batch of `(room, n, expected_seq)` items, data `{"n": n}`.
fn batch(items: &[(&str, u64, Option<u64>)], key: Option<&str>) -> BatchRequest {
    BatchRequest {
        events: items
            .iter()
            .map(|&(room_name, n, expected_seq)| BatchItem {
                room: room(room_name),
                data: RawValue::from_string(format!("{{\"n\":{n}}}")).expect("valid json"),
                expected_seq,
            })
            .collect(),
        idem_key: key.map(str::to_owned),
        origin: None,
    }
}

/// `(room, seq)` of each receipt of an appended batch.
fn appended(outcome: BatchOutcome) -> Vec<(String, u64)> {
    match outcome {
        BatchOutcome::Appended(receipts) => receipts
            .into_iter()
            .map(|r| (r.room.as_str().to_owned(), r.seq))
            .collect(),
        other => panic!("expected the batch appended, got {other:?}"),
    }
}

/// Each room's head (0 for a room never created).
async fn heads(store: &dyn Store, rooms: &[&str]) -> Vec<u64> {
    let mut heads = Vec::new();
    for name in rooms {
        let state = store.room_state(&room(name)).await.unwrap();
        heads.push(state.map_or(0, |s| s.head));
    }
    heads
}

pub async fn batch_conflict_leaves_every_room_unchanged(store: Arc<dyn Store>, _feed: CommitFeed) {
    for n in 1..=2 {
        seq_of(&*store, request("ba", n)).await;
    }
    seq_of(&*store, request("bb", 1)).await;
    // Single appends to the same rooms share group commits with the batch.
    let singles: Vec<_> = (0..20)
        .map(|n| {
            let store = store.clone();
            tokio::spawn(async move { seq_of(&*store, request("bs", n)).await })
        })
        .collect();
    // The last item conflicts: the earlier ones (in rooms that exist and one
    // that does not) are not appended either.
    let conflicting = batch(
        &[
            ("ba", 10, Some(2)),
            ("bc", 11, None),
            ("ba", 12, None),
            ("bb", 13, Some(5)),
        ],
        None,
    );
    match store.append_batch(conflicting).await.unwrap() {
        BatchOutcome::Conflict {
            index, room, head, ..
        } => assert_eq!((index, room.as_str(), head), (3, "bb", 1)),
        other => panic!("expected a conflict, got {other:?}"),
    }
    assert_eq!(heads(&*store, &["ba", "bb", "bc"]).await, vec![2, 1, 0]);
    assert_eq!(store.room_state(&room("bc")).await.unwrap(), None);
    let mut single_seqs = Vec::new();
    for single in singles {
        single_seqs.push(single.await.unwrap());
    }
    single_seqs.sort();
    assert_eq!(single_seqs, (1..=20).collect::<Vec<_>>());
    // The store's view of each room is the database's: the next batch and
    // appends continue right after the heads.
    let next = batch(
        &[("ba", 20, Some(2)), ("bc", 21, None), ("bb", 22, Some(1))],
        None,
    );
    assert_eq!(
        appended(store.append_batch(next).await.unwrap()),
        vec![("ba".into(), 3), ("bc".into(), 1), ("bb".into(), 2)]
    );
    assert_eq!(seq_of(&*store, request("ba", 23)).await, 4);
    let page = store.read(&room("ba"), 0, 10).await.unwrap();
    let data: Vec<&str> = page.events.iter().map(|e| e.data.get()).collect();
    assert_eq!(
        data,
        [r#"{"n":1}"#, r#"{"n":2}"#, r#"{"n":20}"#, r#"{"n":23}"#]
    );
}

pub async fn batch_keeps_request_order(store: Arc<dyn Store>, mut feed: CommitFeed) {
    seq_of(&*store, request("ox", 0)).await;
    let items = [
        ("ox", 1, Some(1)),
        ("oy", 2, None),
        ("ox", 3, Some(2)),
        ("oy", 4, Some(1)),
        ("ox", 5, None),
    ];
    assert_eq!(
        appended(store.append_batch(batch(&items, None)).await.unwrap()),
        vec![
            ("ox".into(), 2),
            ("oy".into(), 1),
            ("ox".into(), 3),
            ("oy".into(), 2),
            ("ox".into(), 4)
        ]
    );
    let ox = store.read(&room("ox"), 1, 10).await.unwrap();
    let data: Vec<&str> = ox.events.iter().map(|e| e.data.get()).collect();
    assert_eq!(data, [r#"{"n":1}"#, r#"{"n":3}"#, r#"{"n":5}"#]);
    // The whole batch is on the commit feed, after the single append.
    let mut reported = Vec::new();
    while reported.len() < 6 {
        let events = tokio::time::timeout(Duration::from_secs(10), feed.recv())
            .await
            .expect("the feed reports the batch")
            .expect("feed open");
        reported.extend(events.iter().map(|e| (e.room.as_str().to_owned(), e.seq)));
    }
    let ox_seqs: Vec<u64> = reported
        .iter()
        .filter(|r| r.0 == "ox")
        .map(|r| r.1)
        .collect();
    let oy_seqs: Vec<u64> = reported
        .iter()
        .filter(|r| r.0 == "oy")
        .map(|r| r.1)
        .collect();
    assert_eq!((ox_seqs, oy_seqs), (vec![1, 2, 3, 4], vec![1, 2]));
}

pub async fn batch_idempotent_retry(store: Arc<dyn Store>, _feed: CommitFeed) {
    let items = [("ia", 1, None), ("ib", 2, Some(0)), ("ia", 3, None)];
    let first = match store.append_batch(batch(&items, Some("K"))).await.unwrap() {
        BatchOutcome::Appended(receipts) => receipts,
        other => panic!("{other:?}"),
    };
    // The same batch again is a retry: the first receipts, nothing appended
    // (its expected_seq is stale by now, but the key is checked first).
    assert_eq!(
        store.append_batch(batch(&items, Some("K"))).await.unwrap(),
        BatchOutcome::Duplicate(first.clone())
    );
    // Another batch under the same key is not a retry.
    let other = [("ia", 1, None), ("ib", 2, Some(0)), ("ia", 4, None)];
    assert_eq!(
        store.append_batch(batch(&other, Some("K"))).await.unwrap(),
        BatchOutcome::Mismatch
    );
    assert_eq!(heads(&*store, &["ia", "ib"]).await, vec![2, 1]);
    // A single publish's key never collides with a batch item's.
    let single = AppendRequest {
        idem_key: Some("K".into()),
        ..request("ia", 9)
    };
    assert!(matches!(
        store.append(single).await.unwrap(),
        AppendOutcome::Appended(r) if r.seq == 3
    ));
    // Without a key, the same batch is a new batch.
    assert_eq!(
        appended(store.append_batch(batch(&items[..1], None)).await.unwrap()),
        vec![("ia".into(), 4)]
    );
}

mod sqlite {
    use super::*;
    use crate::config::SqliteConfig;
    use crate::store::sqlite::SqliteStore;

    async fn open_backend(dir: &tempfile::TempDir) -> (Backend, CommitFeed) {
        let (store, feed) =
            SqliteStore::open(&dir.path().join("db/hubcast.db"), &SqliteConfig::default())
                .await
                .unwrap();
        (Backend::Sqlite(Arc::new(store)), feed)
    }

    async fn open(dir: &tempfile::TempDir) -> (Arc<dyn Store>, CommitFeed) {
        let (backend, feed) = open_backend(dir).await;
        (backend.store(), feed)
    }

    macro_rules! contract {
        ($($check:ident),* $(,)?) => {$(
            #[tokio::test]
            async fn $check() {
                let dir = tempfile::tempdir().unwrap();
                let (store, feed) = open(&dir).await;
                super::$check(store, feed).await;
            }
        )*};
    }

    #[tokio::test]
    async fn transact_commits_app_state_with_its_event() {
        let dir = tempfile::tempdir().unwrap();
        let (backend, feed) = open_backend(&dir).await;
        super::transact_commits_app_state_with_its_event(backend, feed).await;
    }

    contract!(
        seqs_are_gapless_per_room,
        concurrent_appends_stay_gapless,
        idempotency_key_appends_once,
        expected_seq_conflicts,
        commit_feed_reports_in_order_after_commit,
        rooms_have_stable_epochs,
        deleting_a_room_starts_a_new_epoch,
        revocations_are_kept_until_they_expire,
        retention_prunes_and_moves_earliest,
        retention_covers_every_page_of_rooms,
        namespaces_have_their_own_retention,
        closed_store_refuses_writes,
        reused_key_with_another_body_is_a_mismatch,
        batch_conflict_leaves_every_room_unchanged,
        batch_keeps_request_order,
        batch_idempotent_retry,
    );

    #[tokio::test]
    async fn webhook_outbox_keeps_order_per_room() {
        let dir = tempfile::tempdir().unwrap();
        let (backend, _feed) = open_backend(&dir).await;
        super::webhook_outbox_keeps_order_per_room(backend, false).await;
    }

    #[tokio::test]
    async fn holding_decides_each_transition_once() {
        let dir = tempfile::tempdir().unwrap();
        let (backend, _feed) = open_backend(&dir).await;
        super::holding_decides_each_transition_once(backend).await;
    }

    #[tokio::test]
    async fn committed_events_survive_reopen() {
        let dir = tempfile::tempdir().unwrap();
        let (store, _feed) = open(&dir).await;
        for n in 1..=3 {
            seq_of(&*store, request("d", n)).await;
        }
        let epoch = store.room_state(&room("d")).await.unwrap().unwrap().epoch;
        store.close().await;
        drop(store);
        let (store, _feed) = open(&dir).await;
        let page = store.read(&room("d"), 0, 10).await.unwrap();
        assert_eq!(page.events.len(), 3);
        assert_eq!(page.state.unwrap().epoch, epoch);
        assert_eq!(seq_of(&*store, request("d", 4)).await, 4);
    }
}

/// The same contract on PostgreSQL, each test in its own schema, dropped
/// afterwards. Skipped (with a note on stderr) only when no database answers
/// at `HUBCAST_TEST_PG_URL` (default postgres://postgres@127.0.0.1:5432/test);
/// `scripts/test.sh` starts one.
mod postgres {
    use super::*;
    use crate::config::PostgresConfig;
    use crate::store::postgres::PostgresStore;

    fn url() -> String {
        std::env::var("HUBCAST_TEST_PG_URL")
            .unwrap_or_else(|_| "postgres://postgres@127.0.0.1:5432/test".into())
    }

    /// A store in a fresh schema, or `None` when no PostgreSQL answers.
    async fn open_backend() -> Option<(Backend, CommitFeed, String)> {
        let schema = format!("contract_{:016x}", rand::random::<u64>());
        let config = PostgresConfig {
            schema: schema.clone(),
            pool_size: 8,
            outbox: false,
            ..PostgresConfig::default()
        };
        let rules = crate::store::EventRules {
            max_event_bytes: 1 << 20,
            namespaces: Default::default(),
        };
        match PostgresStore::open(&url(), &config, rules).await {
            Ok((store, feed)) => Some((Backend::Postgres(Arc::new(store)), feed, schema)),
            Err(err) => {
                let unreachable = matches!(err, crate::store::postgres::OpenError::Connect(_));
                assert!(
                    unreachable,
                    "postgres answered but the store did not open: {err}"
                );
                eprintln!("skipped: no PostgreSQL at {} ({err})", url());
                None
            }
        }
    }

    async fn drop_schema(schema: &str) {
        let (client, connection) = tokio_postgres::connect(&url(), tokio_postgres::NoTls)
            .await
            .expect("connect");
        let driver = tokio::spawn(connection);
        client
            .batch_execute(&format!("DROP SCHEMA IF EXISTS {schema} CASCADE"))
            .await
            .expect("drop schema");
        drop(client);
        let _ = driver.await;
    }

    macro_rules! contract {
        ($($check:ident),* $(,)?) => {$(
            #[tokio::test]
            async fn $check() {
                let Some((backend, feed, schema)) = open_backend().await else { return };
                super::$check(backend.store(), feed).await;
                backend.store().close().await;
                drop_schema(&schema).await;
            }
        )*};
    }

    contract!(
        seqs_are_gapless_per_room,
        concurrent_appends_stay_gapless,
        idempotency_key_appends_once,
        expected_seq_conflicts,
        commit_feed_reports_after_commit,
        rooms_have_stable_epochs,
        deleting_a_room_starts_a_new_epoch,
        revocations_are_kept_until_they_expire,
        retention_prunes_and_moves_earliest,
        retention_covers_every_page_of_rooms,
        namespaces_have_their_own_retention,
        closed_store_refuses_writes,
        reused_key_with_another_body_is_a_mismatch,
        batch_conflict_leaves_every_room_unchanged,
        batch_keeps_request_order,
        batch_idempotent_retry,
    );

    #[tokio::test]
    async fn transact_commits_app_state_with_its_event() {
        let Some((backend, feed, schema)) = open_backend().await else {
            return;
        };
        super::transact_commits_app_state_with_its_event(backend.clone(), feed).await;
        backend.store().close().await;
        drop_schema(&schema).await;
    }

    #[tokio::test]
    async fn webhook_outbox_keeps_order_per_room() {
        let Some((backend, _feed, schema)) = open_backend().await else {
            return;
        };
        super::webhook_outbox_keeps_order_per_room(backend.clone(), true).await;
        backend.store().close().await;
        drop_schema(&schema).await;
    }

    #[tokio::test]
    async fn holding_decides_each_transition_once() {
        let Some((backend, _feed, schema)) = open_backend().await else {
            return;
        };
        super::holding_decides_each_transition_once(backend.clone()).await;
        backend.store().close().await;
        drop_schema(&schema).await;
    }
}
