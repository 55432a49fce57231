//! Runs every case of clients/test-vectors/*.json (format:
//! clients/test-vectors/README.md) against the Rust client's state machine
//! with a fake socket, a fake history route and a fake clock, with the same
//! semantics as the TypeScript runner (clients/js/test/unit/vectors.test.ts).

use std::collections::HashMap;
use std::path::PathBuf;

use hubcast_client::core::{Backoff, Config, Core, Heartbeat, HistoryResult, Output};
use hubcast_client::{Cursor, PresenceUpdate, RoomUpdate};
use serde_json::{json, Map, Value};

fn vectors_dir() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../../clients/test-vectors")
}

/// `actual` has every member of `expected` with an equal value; `null` members must be absent or null.
fn subset(actual: &Value, expected: &Value) -> Result<(), String> {
    match expected {
        Value::Object(want) => {
            let Value::Object(got) = actual else {
                return Err(format!("{actual} is not an object"));
            };
            for (key, value) in want {
                let a = got.get(key).unwrap_or(&Value::Null);
                if value.is_null() {
                    if !a.is_null() {
                        return Err(format!("{key}: expected absent, got {a}"));
                    }
                } else if a != value {
                    return Err(format!("{key}: expected {value}, got {a}"));
                }
            }
            Ok(())
        }
        _ if actual == expected => Ok(()),
        _ => Err(format!("expected {expected}, got {actual}")),
    }
}

fn build_core(config: &Value) -> (Core, Option<Vec<String>>) {
    let c = config.as_object().cloned().unwrap_or_default();
    let mut cfg = Config::new("http://hubcast.test:8787");
    let reconnect = c
        .get("reconnect")
        .cloned()
        .unwrap_or(json!({"min_delay_ms": 100, "max_delay_ms": 1000, "try_again_later_ms": 5000}));
    cfg.reconnect = if reconnect.is_null() && c.contains_key("reconnect") {
        None
    } else {
        let r = if reconnect.is_null() {
            json!({})
        } else {
            reconnect
        };
        Some(Backoff {
            min_delay_ms: r.get("min_delay_ms").and_then(Value::as_u64).unwrap_or(100),
            max_delay_ms: r
                .get("max_delay_ms")
                .and_then(Value::as_u64)
                .unwrap_or(1000),
            try_again_later_ms: r
                .get("try_again_later_ms")
                .and_then(Value::as_u64)
                .unwrap_or(5000),
        })
    };
    cfg.heartbeat = c
        .get("heartbeat")
        .filter(|h| !h.is_null())
        .map(|h| Heartbeat {
            interval_ms: h["interval_ms"].as_u64().unwrap(),
            timeout_ms: h["timeout_ms"].as_u64().unwrap(),
        });
    cfg.connect_timeout_ms = c
        .get("connect_timeout_ms")
        .and_then(Value::as_u64)
        .unwrap_or(0);
    cfg.reconcile_ms = c.get("reconcile_ms").and_then(Value::as_u64).unwrap_or(0);
    cfg.history_page_size = c
        .get("history_page_size")
        .and_then(Value::as_u64)
        .unwrap_or(1000);
    cfg.send_token_as_message = c.get("send_token_as").and_then(Value::as_str) == Some("message");
    let tokens = match c.get("token") {
        None | Some(Value::Null) => None,
        Some(Value::String(t)) => Some(vec![t.clone()]),
        Some(Value::Array(list)) => Some(
            list.iter()
                .map(|t| t.as_str().unwrap().to_owned())
                .collect(),
        ),
        Some(other) => panic!("bad token config {other}"),
    };
    cfg.has_token_provider = tokens.is_some();
    let jitter = c.get("jitter").and_then(Value::as_f64).unwrap_or(0.5);
    (Core::new(cfg, Box::new(move || jitter)).unwrap(), tokens)
}

struct Sock {
    gen: u64,
    url: String,
    /// 0 connecting, 1 open, 3 closed (as a WebSocket's readyState).
    ready: u8,
}

struct Request {
    req: u64,
    url: String,
    authorization: Option<String>,
}

struct Runner {
    core: Core,
    now: u64,
    tokens: Option<Vec<String>>,
    token_calls: usize,
    sockets: Vec<Sock>,
    attempts_seen: usize,
    pending: Option<usize>,
    sent: Vec<String>,
    sent_read: usize,
    requests: Vec<Request>,
    requests_read: usize,
    outcomes: Vec<Value>,
    subs: HashMap<String, u64>,
    presence_keys: HashMap<u64, String>,
}

fn percent_decode(s: &str) -> String {
    let bytes = s.as_bytes();
    let mut out = Vec::new();
    let mut i = 0;
    while i < bytes.len() {
        match bytes[i] {
            b'%' if i + 2 < bytes.len() => {
                let hex = std::str::from_utf8(&bytes[i + 1..i + 3]).unwrap();
                out.push(u8::from_str_radix(hex, 16).unwrap());
                i += 3;
            }
            b'+' => {
                out.push(b' ');
                i += 1;
            }
            b => {
                out.push(b);
                i += 1;
            }
        }
    }
    String::from_utf8(out).unwrap()
}

/// Path and query parameters of a URL.
fn split_url(url: &str) -> (String, Vec<(String, String)>) {
    let rest = url.split_once("://").map_or(url, |(_, r)| r);
    let path_and_query = rest.find('/').map_or("/", |at| &rest[at..]);
    let (path, query) = path_and_query
        .split_once('?')
        .unwrap_or((path_and_query, ""));
    let params = query
        .split('&')
        .filter(|p| !p.is_empty())
        .map(|p| {
            let (k, v) = p.split_once('=').unwrap_or((p, ""));
            (percent_decode(k), percent_decode(v))
        })
        .collect();
    (path.to_owned(), params)
}

fn param<'a>(params: &'a [(String, String)], key: &str) -> Option<&'a str> {
    params
        .iter()
        .find(|(k, _)| k == key)
        .map(|(_, v)| v.as_str())
}

fn json_str(v: &Value) -> String {
    match v {
        Value::String(s) => s.clone(),
        other => other.to_string(),
    }
}

impl Runner {
    /// Handles what the client produced (answering token requests at once), then
    /// runs the timers due now: "everything that is ready without moving the clock".
    fn flush(&mut self) {
        loop {
            self.process();
            if !self.core.fire_next(self.now) {
                break;
            }
        }
        self.process();
    }

    fn process(&mut self) {
        loop {
            let outputs = self.core.take_outputs();
            if outputs.is_empty() {
                return;
            }
            for output in outputs {
                match output {
                    Output::Connect { gen, url } => self.sockets.push(Sock { gen, url, ready: 0 }),
                    Output::Send { text, .. } => self.sent.push(text),
                    Output::CloseSocket { gen, .. } => {
                        if let Some(s) = self.sockets.iter_mut().find(|s| s.gen == gen) {
                            s.ready = 3;
                        }
                    }
                    Output::HistoryGet { req, url, authorization, .. } => self.requests.push(Request { req, url, authorization }),
                    Output::GetToken { req } => {
                        let tokens = self.tokens.as_ref().expect("a token request without a token provider");
                        let token = tokens[self.token_calls.min(tokens.len() - 1)].clone();
                        self.token_calls += 1;
                        self.core.on_token(req, Ok(Some(token)));
                    }
                    Output::Room { update, .. } => match update {
                        RoomUpdate::Event(e) => self
                            .outcomes
                            .push(json!({"event": {"room": e.room, "seq": e.seq, "ts": e.ts, "data": e.data}})),
                        RoomUpdate::Reset(r) => self.outcomes.push(
                            json!({"reset": {"room": r.room, "epoch": r.epoch, "earliest": r.earliest, "head": r.head}}),
                        ),
                        RoomUpdate::Error(_) => {} // counted once, as a client error
                        RoomUpdate::Presence(_) => {} // the core reports it as Output::Presence
                        RoomUpdate::Ephemeral(_) => {} // no vector sends one
                    },
                    Output::Error(e) => {
                        let mut o = Map::new();
                        o.insert("code".into(), e.code.into());
                        if let Some(c) = e.close_code {
                            o.insert("close_code".into(), c.into());
                        }
                        if let Some(r) = e.room {
                            o.insert("room".into(), r.into());
                        }
                        self.outcomes.push(json!({ "error": o }));
                    }
                    Output::Published { result, .. } => self.publish_outcome(result),
                    // The shared vectors publish single events only.
                    Output::BatchPublished { .. } => {
                        panic!("the vectors never publish a batch")
                    }
                    Output::Presence { update, .. } => self.outcomes.push(match update {
                        PresenceUpdate::Members { room, members } => json!({"presence": {"room": room, "members": members_json(&members)}}),
                        PresenceUpdate::Join { room, member, members } => json!({"join": {"room": room, "member": member_json(&member), "members": members_json(&members)}}),
                        PresenceUpdate::Leave { room, member, members } => json!({"leave": {"room": room, "member": member_json(&member), "members": members_json(&members)}}),
                    }),
                    Output::PresenceResult { key, result } => {
                        let room = self.presence_keys.remove(&key).unwrap_or_default();
                        self.outcomes.push(match result {
                            Ok(members) => json!({"presence_result": {"room": room, "members": members_json(&members)}}),
                            Err(e) => json!({"presence_error": {"room": e.room, "code": e.code}}),
                        });
                    }
                    Output::RoomEnd { .. } | Output::State(_) | Output::Welcome { .. } | Output::Authenticated { .. } => {}
                }
            }
        }
    }

    fn publish_outcome(
        &mut self,
        result: Result<hubcast_client::Ack, hubcast_client::ClientError>,
    ) {
        match result {
            Ok(ack) => self
                .outcomes
                .push(json!({"ack": {"id": ack.id, "room": ack.room, "seq": ack.seq}})),
            Err(err) => {
                let mut o = Map::new();
                o.insert("id".into(), err.id.map_or(Value::Null, Value::from));
                o.insert("code".into(), err.code.into());
                if let Some(h) = err.head {
                    o.insert("head".into(), h.into());
                }
                self.outcomes.push(json!({ "publish_error": o }));
            }
        }
    }

    fn advance(&mut self, ms: u64) {
        let target = self.now + ms;
        loop {
            self.process();
            if !self.core.fire_next(target) {
                break;
            }
        }
        self.now = target;
        self.core.advance_to(target);
        self.process();
    }

    fn new_attempts(&self) -> usize {
        self.sockets.len() - self.attempts_seen
    }

    fn take_attempt(&mut self, query: Option<&Value>) -> Result<(), String> {
        if self.new_attempts() != 1 {
            return Err(format!(
                "expected one new connection attempt, got {}",
                self.new_attempts()
            ));
        }
        let index = self.attempts_seen;
        self.attempts_seen += 1;
        let (path, params) = split_url(&self.sockets[index].url);
        if path != "/v1/ws" {
            return Err(format!("path {path}"));
        }
        if let Some(Value::Object(q)) = query {
            for (key, value) in q {
                let got = param(&params, key);
                let want = if value.is_null() {
                    None
                } else {
                    Some(json_str(value))
                };
                if got.map(str::to_owned) != want {
                    return Err(format!("query {key}: expected {want:?}, got {got:?}"));
                }
            }
        }
        self.pending = Some(index);
        Ok(())
    }

    fn current(&mut self) -> Result<&mut Sock, String> {
        let index = self.pending.ok_or("there is no connection")?;
        Ok(&mut self.sockets[index])
    }

    fn step(&mut self, step: &Map<String, Value>) -> Result<(), String> {
        let key = step
            .keys()
            .find(|k| *k != "respond")
            .ok_or("empty step")?
            .clone();
        let arg = &step[&key];
        match key.as_str() {
            "subscribe" => {
                let room = arg["room"].as_str().unwrap();
                let cursor = arg.get("cursor").map(|c| Cursor {
                    epoch: c.get("epoch").and_then(Value::as_str).map(str::to_owned),
                    seq: c["seq"].as_u64().unwrap(),
                });
                let rewind = arg.get("rewind").and_then(Value::as_u64);
                let presence = arg
                    .get("presence")
                    .and_then(Value::as_bool)
                    .unwrap_or(false);
                let sub = self
                    .core
                    .subscribe_with_presence(room, cursor, rewind, presence)
                    .map_err(|e| format!("subscribe failed: {e}"))?;
                self.subs.insert(room.to_owned(), sub);
            }
            "request_presence" => {
                let room = arg["room"].as_str().unwrap();
                let key = self
                    .core
                    .request_presence(room)
                    .map_err(|e| format!("request_presence failed: {e}"))?;
                self.presence_keys.insert(key, room.to_owned());
            }
            "expect_members" => {
                self.flush();
                let room = arg["room"].as_str().unwrap();
                let sub = *self.subs.get(room).ok_or_else(|| format!("room {room}"))?;
                let got = members_json(&self.core.members(sub).unwrap_or_default());
                if got != arg["members"] {
                    return Err(format!("members {got}, expected {}", arg["members"]));
                }
            }
            "unsubscribe" => {
                if let Some(sub) = self.subs.get(arg["room"].as_str().unwrap()) {
                    self.core.unsubscribe(*sub);
                }
            }
            "publish" => {
                let id = arg["id"].as_str().map(str::to_owned);
                let room = arg["room"].as_str().unwrap();
                let result = self.core.publish(
                    room,
                    &arg["data"],
                    arg.get("expected_seq").and_then(Value::as_u64),
                    id,
                    None,
                );
                if let Err(err) = result {
                    self.publish_outcome(Err(err));
                }
            }
            "close_client" => self.core.close(),
            "advance_ms" => self.advance(arg.as_u64().unwrap()),
            "accept" => {
                let sock = self.current()?;
                if sock.ready != 0 {
                    return Err(format!("accept: socket is in state {}", sock.ready));
                }
                sock.ready = 1;
                let gen = sock.gen;
                self.core.on_open(gen);
            }
            "refuse" => {
                let sock = self.current()?;
                sock.ready = 3;
                let gen = sock.gen;
                self.core.on_close(gen, 1006, "");
            }
            "server" | "server_raw" => {
                let text = if key == "server" {
                    arg.to_string()
                } else {
                    arg.as_str().unwrap().to_owned()
                };
                let sock = self.current()?;
                if sock.ready == 1 {
                    let gen = sock.gen;
                    self.core.on_frame(gen, &text);
                }
            }
            "server_close" => {
                let code = arg["code"].as_u64().unwrap() as u16;
                let reason = arg
                    .get("reason")
                    .and_then(Value::as_str)
                    .unwrap_or("")
                    .to_owned();
                let sock = self.current()?;
                if sock.ready != 3 {
                    sock.ready = 3;
                    let gen = sock.gen;
                    self.core.on_close(gen, code, &reason);
                }
            }
            "expect_connect" => {
                self.flush();
                self.take_attempt(arg.get("query"))?;
            }
            "expect_reconnect" => {
                let delay = arg["delay_ms"].as_u64().unwrap();
                self.flush();
                if delay > 0 {
                    self.advance(delay - 1);
                    if self.new_attempts() != 0 {
                        return Err(format!("an attempt before {delay} ms"));
                    }
                    self.advance(1);
                }
                self.take_attempt(arg.get("query"))?;
            }
            "expect_no_reconnect" => {
                self.advance(60_000);
                if self.new_attempts() != 0 {
                    return Err("a new attempt".into());
                }
                if self.core.state().as_str() != "closed" {
                    return Err(format!("state {}", self.core.state()));
                }
            }
            "expect_sent" => {
                self.flush();
                let frame = self
                    .sent
                    .get(self.sent_read)
                    .ok_or("no frame was sent")?
                    .clone();
                self.sent_read += 1;
                let parsed: Value =
                    serde_json::from_str(&frame).map_err(|e| format!("sent {frame}: {e}"))?;
                subset(&parsed, arg).map_err(|e| format!("sent {frame}: {e}"))?;
            }
            "expect_nothing_sent" => {
                self.flush();
                if self.sent.len() > self.sent_read {
                    return Err(format!("sent {:?}", &self.sent[self.sent_read..]));
                }
            }
            "expect_http" => {
                self.flush();
                let request = self
                    .requests
                    .get(self.requests_read)
                    .ok_or("no history request was made")?;
                self.requests_read += 1;
                let (path, params) = split_url(&request.url);
                let room = arg["room"].as_str().unwrap();
                if path != format!("/v1/rooms/{room}/events") {
                    return Err(format!("path {path}"));
                }
                let after = param(&params, "after");
                if after != Some(arg["after"].to_string().as_str()) {
                    return Err(format!("after {after:?}, expected {}", arg["after"]));
                }
                let limit: u64 = param(&params, "limit")
                    .and_then(|l| l.parse().ok())
                    .unwrap_or(0);
                if limit < 1 {
                    return Err(format!("limit {limit}"));
                }
                if let Some(auth) = arg.get("authorization") {
                    if request.authorization.as_deref() != auth.as_str() {
                        return Err(format!(
                            "Authorization {:?}, expected {auth}",
                            request.authorization
                        ));
                    }
                }
                let req = request.req;
                let respond = step.get("respond").ok_or("no respond")?;
                let result = if respond.get("network_error").and_then(Value::as_bool) == Some(true)
                {
                    HistoryResult::NetworkError("Failed to fetch".into())
                } else {
                    HistoryResult::Response {
                        status: respond.get("status").and_then(Value::as_u64).unwrap_or(200) as u16,
                        body: respond.get("body").cloned().unwrap_or(Value::Null),
                    }
                };
                self.core.on_history(req, result);
            }
            "expect" => {
                self.flush();
                let expected = arg.as_array().unwrap();
                let seen: Vec<Value> = std::mem::take(&mut self.outcomes);
                let what = format!("outcomes {}", Value::Array(seen.clone()));
                if seen.len() != expected.len() {
                    return Err(format!(
                        "{what}: expected {}",
                        Value::Array(expected.clone())
                    ));
                }
                let ordered = |o: &Value| {
                    ["event", "reset", "presence", "join", "leave"]
                        .iter()
                        .any(|k| o.get(*k).is_some())
                };
                let seen_ordered: Vec<&Value> = seen.iter().filter(|o| ordered(o)).collect();
                let want_ordered: Vec<&Value> = expected.iter().filter(|o| ordered(o)).collect();
                if seen_ordered.len() != want_ordered.len() {
                    return Err(format!(
                        "{what}: expected {}",
                        Value::Array(expected.clone())
                    ));
                }
                for (i, (got, want)) in seen_ordered.iter().zip(&want_ordered).enumerate() {
                    let kind = want.as_object().unwrap().keys().next().unwrap();
                    let g = got
                        .get(kind)
                        .ok_or_else(|| format!("{what}: #{i} is not a {kind}"))?;
                    subset(g, &want[kind]).map_err(|e| format!("{what}: #{i}: {e}"))?;
                }
                let mut rest: Vec<&Value> = seen.iter().filter(|o| !ordered(o)).collect();
                for want in expected.iter().filter(|o| !ordered(o)) {
                    let kind = want.as_object().unwrap().keys().next().unwrap();
                    let at = rest
                        .iter()
                        .position(|got| {
                            got.get(kind)
                                .is_some_and(|g| subset(g, &want[kind]).is_ok())
                        })
                        .ok_or_else(|| format!("{what}: no outcome matches {want}"))?;
                    rest.remove(at);
                }
            }
            "expect_cursor" => {
                self.flush();
                let room = arg["room"].as_str().unwrap();
                let sub = *self.subs.get(room).ok_or_else(|| format!("room {room}"))?;
                let cursor = self.core.cursor(sub);
                if arg.get("cursor").is_some() {
                    if cursor.is_some() {
                        return Err(format!("cursor {cursor:?}, expected none"));
                    }
                } else {
                    let want = Cursor {
                        epoch: arg["epoch"].as_str().map(str::to_owned),
                        seq: arg["seq"].as_u64().unwrap(),
                    };
                    if cursor.as_ref() != Some(&want) {
                        return Err(format!("cursor {cursor:?}, expected {want:?}"));
                    }
                }
            }
            "expect_state" => {
                self.flush();
                let state = self.core.state().as_str();
                if Some(state) != arg.as_str() {
                    return Err(format!("state {state}, expected {arg}"));
                }
            }
            other => return Err(format!("unknown step {other}")),
        }
        self.flush();
        Ok(())
    }
}

fn run_case(case: &Value) -> Result<(), String> {
    let (core, tokens) = build_core(case.get("config").unwrap_or(&Value::Null));
    let mut runner = Runner {
        core,
        now: 0,
        tokens,
        token_calls: 0,
        sockets: Vec::new(),
        attempts_seen: 0,
        pending: None,
        sent: Vec::new(),
        sent_read: 0,
        requests: Vec::new(),
        requests_read: 0,
        outcomes: Vec::new(),
        subs: HashMap::new(),
        presence_keys: HashMap::new(),
    };
    for (index, step) in case["steps"].as_array().unwrap().iter().enumerate() {
        let step = step.as_object().unwrap();
        runner
            .step(step)
            .map_err(|e| format!("step {index} {}: {e}", Value::Object(step.clone())))?;
    }
    runner.flush();
    if !runner.outcomes.is_empty() {
        return Err(format!(
            "outcomes nobody expected: {}",
            Value::Array(runner.outcomes.clone())
        ));
    }
    if runner.sent.len() > runner.sent_read {
        return Err(format!(
            "frames sent that no step expected: {:?}",
            &runner.sent[runner.sent_read..]
        ));
    }
    if runner.requests.len() > runner.requests_read {
        return Err("history requests no step expected".into());
    }
    runner.core.close();
    Ok(())
}

#[test]
fn every_vector_case_passes() {
    let mut files: Vec<PathBuf> = std::fs::read_dir(vectors_dir())
        .expect("clients/test-vectors")
        .map(|e| e.unwrap().path())
        .filter(|p| p.extension().is_some_and(|e| e == "json"))
        .collect();
    files.sort();
    assert!(!files.is_empty(), "finds the shared vectors");
    let (mut passed, mut failed) = (0, Vec::new());
    for file in &files {
        let name = file.file_name().unwrap().to_string_lossy().into_owned();
        let vectors: Value = serde_json::from_str(&std::fs::read_to_string(file).unwrap()).unwrap();
        assert_eq!(
            vectors["format"], "hubcast-client-vectors/1",
            "{name}: format"
        );
        let cases = vectors["cases"].as_array().unwrap();
        assert!(!cases.is_empty(), "{name}: has cases");
        let mut names: Vec<&str> = cases.iter().map(|c| c["name"].as_str().unwrap()).collect();
        names.sort();
        names.dedup();
        assert_eq!(names.len(), cases.len(), "{name}: case names are unique");
        for case in cases {
            let case_name = case["name"].as_str().unwrap();
            match run_case(case) {
                Ok(()) => passed += 1,
                Err(err) => failed.push(format!("{name} / {case_name}: {err}")),
            }
        }
    }
    eprintln!("test vectors: {passed} passed, {} failed", failed.len());
    assert!(
        failed.is_empty(),
        "{} vector case(s) failed:\n{}",
        failed.len(),
        failed.join("\n\n")
    );
}

fn member_json(m: &hubcast_client::PresenceMember) -> Value {
    match &m.info {
        Some(info) => json!({"id": m.id, "info": info}),
        None => json!({"id": m.id}),
    }
}

fn members_json(members: &[hubcast_client::PresenceMember]) -> Value {
    Value::Array(members.iter().map(member_json).collect())
}
