//! Property test: over many seeds, a simulated server that drops, duplicates
//! and reorders frames, cuts the connection at random and answers history
//! reads (sometimes failing) never makes the client deliver a duplicate or an
//! out-of-order event; once the chaos stops, everything is delivered.

use hubcast_client::core::{Backoff, Config, Core, HistoryResult, Output};
use hubcast_client::RoomUpdate;
use rand::rngs::StdRng;
use rand::{RngExt, SeedableRng};
use serde_json::{json, Value};

const ROOMS: [&str; 2] = ["a", "b"];

struct Sim {
    core: Core,
    rng: StdRng,
    now: u64,
    heads: [u64; 2],
    active: [bool; 2],
    socket: Option<u64>,
    connecting: Option<u64>,
    inflight: Vec<String>,
    http: Vec<(u64, usize, u64, u64)>,
    delivered: [Vec<u64>; 2],
    chaos: bool,
}

impl Sim {
    fn room(name: &str) -> usize {
        ROOMS.iter().position(|r| *r == name).unwrap()
    }

    fn event(room: usize, seq: u64) -> String {
        json!({"type": "event", "room": ROOMS[room], "seq": seq, "ts": seq, "data": seq})
            .to_string()
    }

    /// Queues a server frame, perhaps dropping or duplicating it (in chaos).
    fn push(&mut self, frame: String, lossy: bool) {
        if self.chaos && lossy && self.rng.random_bool(0.05) {
            return; // lost
        }
        self.inflight.push(frame.clone());
        if self.chaos && lossy && self.rng.random_bool(0.05) {
            self.inflight.push(frame); // duplicated
        }
    }

    fn process(&mut self) {
        loop {
            let outputs = self.core.take_outputs();
            if outputs.is_empty() {
                return;
            }
            for output in outputs {
                match output {
                    Output::Connect { gen, .. } => self.connecting = Some(gen),
                    Output::CloseSocket { gen, .. } => {
                        if self.socket == Some(gen) {
                            self.socket = None;
                            self.inflight.clear();
                            self.active = [false; 2];
                        }
                        if self.connecting == Some(gen) {
                            self.connecting = None;
                        }
                    }
                    Output::Send { text, .. } => self.on_client_frame(&text),
                    Output::HistoryGet {
                        req,
                        room,
                        after,
                        limit,
                        ..
                    } => self.http.push((req, Sim::room(&room), after, limit)),
                    Output::Room {
                        update: RoomUpdate::Event(e),
                        ..
                    } => {
                        let r = Sim::room(&e.room);
                        let last = self.delivered[r].last().copied().unwrap_or(0);
                        assert_eq!(
                            e.seq,
                            last + 1,
                            "room {}: delivered {} after {last}",
                            e.room,
                            e.seq
                        );
                        assert_eq!(e.data, json!(e.seq));
                        self.delivered[r].push(e.seq);
                    }
                    Output::Room {
                        update: RoomUpdate::Reset(r),
                        ..
                    } => panic!("unexpected reset {r:?}"),
                    _ => {}
                }
            }
        }
    }

    fn on_client_frame(&mut self, text: &str) {
        let frame: Value = serde_json::from_str(text).unwrap();
        match frame["type"].as_str().unwrap() {
            "subscribe" => {
                let r = Sim::room(frame["room"].as_str().unwrap());
                let head = self.heads[r];
                self.push(
                    json!({"type": "subscribed", "room": ROOMS[r], "epoch": "E", "head": head})
                        .to_string(),
                    false,
                );
                let from = frame["cursor"].as_u64().unwrap_or(head);
                for seq in from + 1..=head {
                    self.push(Sim::event(r, seq), true);
                }
                self.push(
                    json!({"type": "caught_up", "room": ROOMS[r], "seq": head}).to_string(),
                    false,
                );
                self.active[r] = true;
            }
            "unsubscribe" => {
                let r = Sim::room(frame["room"].as_str().unwrap());
                self.active[r] = false;
                self.push(
                    json!({"type": "unsubscribed", "room": ROOMS[r]}).to_string(),
                    false,
                );
            }
            "ping" => self.push(json!({"type": "pong"}).to_string(), false),
            _ => {}
        }
    }

    fn tick(&mut self) {
        let step = self.rng.random_range(0..30);
        self.now += step;
        self.core.advance_to(self.now);
        self.process();
        // The server side.
        if let Some(gen) = self.connecting.take() {
            if self.chaos && self.rng.random_bool(0.2) {
                self.core.on_close(gen, 1006, "");
            } else {
                self.socket = Some(gen);
                self.core.on_open(gen);
                self.process();
                self.inflight.insert(
                    0,
                    json!({"type": "welcome", "session": "s", "heartbeat_ms": 15000}).to_string(),
                );
            }
            self.process();
        }
        if self.rng.random_bool(0.3) {
            let r = self.rng.random_range(0..2);
            self.heads[r] += 1;
            if self.active[r] {
                let frame = Sim::event(r, self.heads[r]);
                self.push(frame, true);
            }
        }
        for _ in 0..self.rng.random_range(0..4) {
            if self.inflight.is_empty() || self.socket.is_none() {
                break;
            }
            let at = if self.chaos && self.inflight.len() > 1 && self.rng.random_bool(0.1) {
                1
            } else {
                0
            };
            let frame = self.inflight.remove(at);
            let gen = self.socket.unwrap();
            self.core.on_frame(gen, &frame);
            self.process();
        }
        if !self.http.is_empty() && self.rng.random_bool(0.5) {
            let (req, r, after, limit) = self.http.remove(0);
            let result = if self.chaos && self.rng.random_bool(0.15) {
                HistoryResult::NetworkError("down".into())
            } else {
                let end = self.heads[r].min(after + limit);
                let events: Vec<Value> = (after + 1..=end)
                    .map(|s| json!({"seq": s, "ts": s, "data": s}))
                    .collect();
                HistoryResult::Response {
                    status: 200,
                    body: json!({"room": ROOMS[r], "epoch": "E", "head": self.heads[r], "earliest": 1, "events": events}),
                }
            };
            self.core.on_history(req, result);
            self.process();
        }
        if self.chaos && self.rng.random_bool(0.01) {
            if let Some(gen) = self.socket.take() {
                self.inflight.clear();
                self.active = [false; 2];
                let code = [1006, 1012, 4009, 1011, 1001][self.rng.random_range(0..5)];
                self.core.on_close(gen, code, "");
                self.process();
            }
        }
    }
}

fn run(seed: u64) {
    let mut cfg = Config::new("http://sim:1");
    cfg.reconnect = Some(Backoff {
        min_delay_ms: 10,
        max_delay_ms: 200,
        try_again_later_ms: 100,
    });
    cfg.heartbeat = None;
    cfg.connect_timeout_ms = 0;
    cfg.history_page_size = 3;
    cfg.reconcile_ms = if seed % 2 == 0 { 200 } else { 0 };
    let mut jitter = StdRng::seed_from_u64(seed ^ 0x5eed);
    let core = Core::new(cfg, Box::new(move || jitter.random::<f64>())).unwrap();
    let mut sim = Sim {
        core,
        rng: StdRng::seed_from_u64(seed),
        now: 0,
        heads: [0, 0],
        active: [false; 2],
        socket: None,
        connecting: None,
        inflight: Vec::new(),
        http: Vec::new(),
        delivered: [Vec::new(), Vec::new()],
        chaos: true,
    };
    for room in ROOMS {
        sim.core
            .subscribe(
                room,
                Some(hubcast_client::Cursor {
                    epoch: Some("E".into()),
                    seq: 0,
                }),
                None,
            )
            .unwrap();
    }
    sim.process();
    for _ in 0..600 {
        sim.tick();
    }
    // The network heals: everything published must arrive, exactly once, in order.
    sim.chaos = false;
    for _ in 0..3000 {
        sim.tick();
        if sim.delivered[0].len() as u64 == sim.heads[0]
            && sim.delivered[1].len() as u64 == sim.heads[1]
            && sim.inflight.is_empty()
        {
            break;
        }
    }
    assert!(
        sim.heads[0] + sim.heads[1] > 100,
        "seed {seed}: the simulation published too little"
    );
    for (r, name) in ROOMS.iter().enumerate() {
        let want: Vec<u64> = (1..=sim.heads[r]).collect();
        assert_eq!(sim.delivered[r], want, "seed {seed}: room {name}");
    }
}

#[test]
fn random_disconnects_duplicates_and_reorders_never_break_order() {
    for seed in 0..300 {
        run(seed);
    }
}
