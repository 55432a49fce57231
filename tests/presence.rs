//! Presence: `subscribe {room, presence: true}` enters a room's presence and
//! receives `presence` (the list) then `join`/`leave`; `presence {room}`
//! answers the list. Members are keyed by the token's `sub`: a user with
//! several sessions joins once and leaves with its last session. Both need
//! the token's `presence` grant.
//!
//! In cluster mode (`HUBCAST_TEST_BACKEND=cluster`) a second test runs two
//! nodes: members on A are visible from B, a user with a session on each is
//! one member, and the members of a `kill -9`ed node leave within the TTL.

mod support;

use std::time::Duration;

use serde_json::{json, Value};
use support::{Server, Ws};

const SECRET: &str = "presence-test-secret-0123456789abcdef";

fn config() -> String {
    format!(
        r#"
[sqlite]
synchronous = "normal"

[[auth.jwt]]
alg = "HS256"
secret = "{SECRET}"

[presence]
max_members = 4
heartbeat_ms = 200
ttl_ms = 1000
"#
    )
}

fn token(sub: &str, presence: bool) -> String {
    token_with_info(sub, presence, json!({"name": sub.to_uppercase()}))
}

fn token_with_info(sub: &str, presence: bool, info: Value) -> String {
    let exp = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_secs()
        + 3600;
    let claims = json!({
        "sub": sub,
        "exp": exp,
        "subscribe": ["*"],
        "publish": ["*"],
        "presence": if presence { json!(["chat:*"]) } else { json!([]) },
        "info": info,
    });
    hubcast_protocol::token::encode(
        &jsonwebtoken::Header::default(),
        &claims,
        &jsonwebtoken::EncodingKey::from_secret(SECRET.as_bytes()).expect("a non-empty secret"),
    )
    .expect("sign token")
}

async fn connect(server: &Server, sub: &str) -> Ws {
    Ws::connect(&server.ws_url(&format!("/v1/ws?token={}", token(sub, true)))).await
}

/// Subscribes with presence; returns the `presence` frame that follows `caught_up`.
async fn enter(ws: &mut Ws, room: &str) -> Value {
    ws.subscribe(room, json!({"presence": true})).await;
    ws.expect_type("caught_up").await;
    let list = ws.expect_type("presence").await;
    assert_eq!(list["room"], room, "{list}");
    list
}

/// The member ids of a `presence` frame.
fn ids(frame: &Value) -> Vec<String> {
    frame["members"]
        .as_array()
        .expect("members")
        .iter()
        .map(|m| m["id"].as_str().expect("id").to_owned())
        .collect()
}

/// Asks for the member list.
async fn members(ws: &mut Ws, room: &str) -> Vec<String> {
    ws.send_json(json!({"type": "presence", "room": room}))
        .await;
    let frame = ws.expect_type("presence").await;
    ids(&frame)
}

/// The next `join` or `leave` as `("join"|"leave", id)`.
async fn next_change(ws: &mut Ws) -> (String, String) {
    let frame = ws.next_json().await;
    let kind = frame["type"].as_str().unwrap_or_default().to_owned();
    assert!(
        kind == "join" || kind == "leave",
        "expected join or leave, got {frame}"
    );
    (
        kind,
        frame["member"]["id"]
            .as_str()
            .expect("member id")
            .to_owned(),
    )
}

fn change(kind: &str, id: &str) -> (String, String) {
    (kind.to_owned(), id.to_owned())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn join_and_leave_with_several_sessions_per_user() {
    let server = Server::start(&config()).await;
    let room = "chat:1";

    let mut carol = connect(&server, "carol").await;
    assert_eq!(ids(&enter(&mut carol, room).await), ["carol"]);

    // alice's first session joins (with the token's info); her list has both.
    let mut alice1 = connect(&server, "alice").await;
    let list = enter(&mut alice1, room).await;
    assert_eq!(ids(&list), ["alice", "carol"]);
    let join = carol.expect_type("join").await;
    assert_eq!(
        join,
        json!({"type": "join", "room": room, "member": {"id": "alice", "info": {"name": "ALICE"}}})
    );

    // Her second session does not join again: the next change carol sees is bob.
    let mut alice2 = connect(&server, "alice").await;
    assert_eq!(ids(&enter(&mut alice2, room).await), ["alice", "carol"]);
    let mut bob = connect(&server, "bob").await;
    assert_eq!(ids(&enter(&mut bob, room).await), ["alice", "bob", "carol"]);
    assert_eq!(next_change(&mut carol).await, change("join", "bob"));
    assert_eq!(next_change(&mut alice1).await, change("join", "bob"));
    assert_eq!(members(&mut carol, room).await, ["alice", "bob", "carol"]);

    // A plain subscriber is no member and gets no presence frames.
    let mut dave = connect(&server, "dave").await;
    dave.subscribe(room, json!({})).await;
    dave.expect_type("caught_up").await;
    assert_eq!(members(&mut dave, room).await, ["alice", "bob", "carol"]);

    // alice's first session leaving is not alice leaving: the next change is bob's.
    alice1
        .send_json(json!({"type": "unsubscribe", "room": room}))
        .await;
    alice1.expect_type("unsubscribed").await;
    bob.send_json(json!({"type": "unsubscribe", "room": room}))
        .await;
    bob.expect_type("unsubscribed").await;
    assert_eq!(next_change(&mut carol).await, change("leave", "bob"));
    assert_eq!(members(&mut carol, room).await, ["alice", "carol"]);

    // Her last session going (the connection just ends) is.
    drop(alice2);
    assert_eq!(next_change(&mut carol).await, change("leave", "alice"));
    assert_eq!(members(&mut carol, room).await, ["carol"]);

    // Events still flow, and dave saw no presence frame at all.
    bob.send_json(json!({"type": "publish", "id": "p1", "room": room, "data": "hi"}))
        .await;
    assert_eq!(bob.expect_type("ack").await["seq"], 1);
    assert_eq!(dave.expect_type("event").await["data"], "hi");
    assert_eq!(carol.expect_type("event").await["data"], "hi");

    // Rooms without presence: the request answers an empty list.
    assert_eq!(
        members(&mut carol, "chat:quiet").await,
        Vec::<String>::new()
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn presence_needs_the_grant_and_is_bounded() {
    let server = Server::start(&config()).await;
    let room = "chat:2";
    let mut nogrant =
        Ws::connect(&server.ws_url(&format!("/v1/ws?token={}", token("eve", false)))).await;
    nogrant
        .send_json(json!({"type": "subscribe", "room": room, "presence": true}))
        .await;
    let refused = nogrant.expect_type("error").await;
    assert_eq!(refused["code"], "forbidden", "{refused}");
    nogrant
        .send_json(json!({"type": "presence", "room": room}))
        .await;
    assert_eq!(nogrant.expect_type("error").await["code"], "forbidden");
    // With an `id`, the refusal names the request, so it is not taken for a
    // subscription's (those carry no id).
    nogrant
        .send_json(json!({"type": "presence", "room": room, "id": "q1"}))
        .await;
    let refused = nogrant.expect_type("error").await;
    assert_eq!(
        (&refused["code"], &refused["id"], &refused["room"]),
        (&json!("forbidden"), &json!("q1"), &json!(room)),
        "{refused}"
    );
    // Without presence the same token subscribes fine.
    nogrant.subscribe(room, json!({})).await;

    // max_members = 4: the fifth distinct member is refused; another session
    // of a member is not.
    let mut sessions = Vec::new();
    for user in ["u1", "u2", "u3", "u4"] {
        let mut ws = connect(&server, user).await;
        enter(&mut ws, room).await;
        sessions.push(ws);
    }
    let mut fifth = connect(&server, "u5").await;
    fifth
        .send_json(json!({"type": "subscribe", "room": room, "presence": true}))
        .await;
    fifth.expect_type("subscribed").await;
    let full = fifth.expect_type("error").await;
    assert_eq!(full["code"], "over_capacity", "{full}");
    let mut again = connect(&server, "u1").await;
    assert_eq!(
        ids(&enter(&mut again, room).await),
        ["u1", "u2", "u3", "u4"]
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn presence_across_two_nodes_and_a_killed_node() {
    if !support::cluster_backend() {
        eprintln!("SKIPPED presence::presence_across_two_nodes_and_a_killed_node: run with HUBCAST_TEST_BACKEND=cluster");
        return;
    }
    let mut a = Server::start(&config()).await;
    let b = Server::start_peer(&a, &config()).await;
    let room = "chat:cluster";

    let mut carol = connect(&b, "carol").await;
    enter(&mut carol, room).await;

    // alice has a session on each node: one member. dave is on A only.
    let mut alice_a = connect(&a, "alice").await;
    enter(&mut alice_a, room).await;
    assert_eq!(next_change(&mut carol).await, change("join", "alice"));
    // Her session on B entered last, with other info: every node shows that info.
    let mut alice_b = Ws::connect(&b.ws_url(&format!(
        "/v1/ws?token={}",
        token_with_info("alice", true, json!({"name": "ALICE on B"}))
    )))
    .await;
    enter(&mut alice_b, room).await;
    let mut dave = connect(&a, "dave").await;
    enter(&mut dave, room).await;
    assert_eq!(
        next_change(&mut carol).await,
        change("join", "dave"),
        "alice's second session must not join again"
    );

    // Both nodes see everyone, and alice with her latest session's info.
    let mut probe_a = connect(&a, "probe").await;
    let alice_info = |frame: &Value| frame["members"][0]["info"].clone();
    support::within(
        support::PHASE,
        "node A to list the members of both nodes",
        async {
            loop {
                probe_a
                    .send_json(json!({"type": "presence", "room": room, "id": "probe"}))
                    .await;
                let list = probe_a.expect_type("presence").await;
                if ids(&list) == ["alice", "carol", "dave"]
                    && alice_info(&list) == json!({"name": "ALICE on B"})
                {
                    break;
                }
                tokio::time::sleep(Duration::from_millis(50)).await;
            }
        },
    )
    .await;
    carol
        .send_json(json!({"type": "presence", "room": room, "id": "carol"}))
        .await;
    let list = carol.expect_type("presence").await;
    assert_eq!(ids(&list), ["alice", "carol", "dave"]);
    assert_eq!(alice_info(&list), json!({"name": "ALICE on B"}), "{list}");

    // Kill A (its sessions get no chance to leave): dave (only on A) leaves
    // once A's announcement expires; alice (also on B) stays.
    a.kill9().await;
    let leave = support::within(
        Duration::from_secs(15),
        "dave to leave after node A died",
        next_change(&mut carol),
    )
    .await;
    assert_eq!(leave, change("leave", "dave"));
    assert_eq!(members(&mut carol, room).await, ["alice", "carol"]);
    drop(alice_b);
    assert_eq!(next_change(&mut carol).await, change("leave", "alice"));
    drop((alice_a, dave, probe_a));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn presence_request_id_is_echoed() {
    let server = Server::start(&config()).await;
    let room = "chat:ids";
    let mut alice = connect(&server, "alice").await;
    let list = enter(&mut alice, room).await;
    assert!(
        list.get("id").is_none(),
        "a subscription's list carries no id: {list}"
    );
    alice
        .send_json(json!({"type": "presence", "room": room, "id": "q-7"}))
        .await;
    let answer = alice.expect_type("presence").await;
    assert_eq!(answer["id"], "q-7", "{answer}");
    assert_eq!(ids(&answer), ["alice"]);
    alice
        .send_json(json!({"type": "presence", "room": room, "id": ""}))
        .await;
    assert_eq!(alice.expect_type("error").await["code"], "bad_request");
}

/// A member's info is its latest session's: a second session with a fresher
/// token shows its info; when that session leaves, the earlier one's returns.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn member_info_is_the_latest_sessions() {
    let server = Server::start(&config()).await;
    let room = "chat:info";
    let with_info = |name: &str| {
        let url = server.ws_url(&format!(
            "/v1/ws?token={}",
            token_with_info("alice", true, json!({"name": name}))
        ));
        async move { Ws::connect(&url).await }
    };
    let info_of = |frame: &Value| -> Vec<Value> {
        frame["members"]
            .as_array()
            .expect("members")
            .iter()
            .map(|m| m["info"].clone())
            .collect()
    };
    let mut probe = connect(&server, "probe").await;
    enter(&mut probe, room).await;

    let mut first = with_info("Alice").await;
    enter(&mut first, room).await;
    let join = probe.expect_type("join").await;
    assert_eq!(
        join["member"],
        json!({"id": "alice", "info": {"name": "Alice"}})
    );

    let mut second = with_info("Alice Liddell").await;
    let list = enter(&mut second, room).await;
    assert_eq!(
        info_of(&list),
        [json!({"name": "Alice Liddell"}), json!({"name": "PROBE"})],
        "{list}"
    );
    probe
        .send_json(json!({"type": "presence", "room": room, "id": "a"}))
        .await;
    let list = probe.expect_type("presence").await;
    assert_eq!(
        info_of(&list)[0],
        json!({"name": "Alice Liddell"}),
        "{list}"
    );

    // The latest session leaving: the member stays, with the earlier info.
    second
        .send_json(json!({"type": "unsubscribe", "room": room}))
        .await;
    second.expect_type("unsubscribed").await;
    probe
        .send_json(json!({"type": "presence", "room": room, "id": "b"}))
        .await;
    let list = probe.expect_type("presence").await;
    assert_eq!(info_of(&list)[0], json!({"name": "Alice"}), "{list}");

    // The first session leaving is alice leaving, with the info she had.
    drop(first);
    let leave = probe.expect_type("leave").await;
    assert_eq!(
        leave["member"],
        json!({"id": "alice", "info": {"name": "Alice"}}),
        "{leave}"
    );
}
