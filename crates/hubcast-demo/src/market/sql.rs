//! The market's tables and its transactions, for both stores. The SQL is the
//! same on SQLite and PostgreSQL (`$n` parameters bind by position on both);
//! only PostgreSQL needs `FOR UPDATE` (SQLite's single writer already
//! serializes every transaction).

use futures_util::future::BoxFuture;
use futures_util::FutureExt;
use serde::{Deserialize, Serialize};
use serde_json::{json, value::RawValue, Value};

use super::{decide, trade_event, BuyOrder, Market, Refusal, Trade};
use hubcast_server::store::transaction::{AppEvent, PostgresWork, SqliteWork, TxDecision};
use hubcast_server::store::StoreError;
use hubcast_server::RoomName;

const SCHEMA: &str = "
    CREATE TABLE IF NOT EXISTS demo_markets (
        id TEXT PRIMARY KEY,
        title TEXT NOT NULL,
        outcomes TEXT NOT NULL,
        liquidity DOUBLE PRECISION NOT NULL,
        shares TEXT NOT NULL,
        version BIGINT NOT NULL,
        volume DOUBLE PRECISION NOT NULL,
        updated_at BIGINT NOT NULL
    );
    CREATE TABLE IF NOT EXISTS demo_trades (
        market TEXT NOT NULL,
        version BIGINT NOT NULL,
        outcome BIGINT NOT NULL,
        shares DOUBLE PRECISION NOT NULL,
        cost DOUBLE PRECISION NOT NULL,
        ts BIGINT NOT NULL,
        PRIMARY KEY (market, version)
    );
";

const SELECT: &str =
    "SELECT id, title, outcomes, liquidity, shares, version, volume FROM demo_markets";
/// A buy's two writes, the same SQL on both stores (`$N` placeholders work in both).
const UPDATE_MARKET: &str =
    "UPDATE demo_markets SET shares = $1, version = $2, volume = $3, updated_at = $4 WHERE id = $5";
const INSERT_TRADE: &str = "INSERT INTO demo_trades (market, version, outcome, shares, cost, ts) VALUES ($1, $2, $3, $4, $5, $6)";

/// Why a transaction aborted, carried through the store as JSON.
#[derive(Debug, Serialize, Deserialize)]
#[serde(tag = "kind", rename_all = "snake_case")]
pub enum Aborted {
    NotFound,
    Refused { refusal: Refusal, market: Value },
}

fn app_error(what: &str, err: impl std::fmt::Display) -> StoreError {
    StoreError::Unavailable(format!("market {what}: {err}"))
}

fn market_of(
    id: String,
    title: String,
    outcomes: String,
    liquidity: f64,
    shares: String,
    version: i64,
    volume: f64,
) -> Result<Market, StoreError> {
    Ok(Market {
        id,
        title,
        outcomes: serde_json::from_str(&outcomes).map_err(|e| app_error("outcomes", e))?,
        liquidity,
        shares: serde_json::from_str(&shares).map_err(|e| app_error("shares", e))?,
        version: version as u64,
        volume,
    })
}

fn sqlite_market(
    row: &rusqlite::Row<'_>,
) -> rusqlite::Result<(String, String, String, f64, String, i64, f64)> {
    Ok((
        row.get(0)?,
        row.get(1)?,
        row.get(2)?,
        row.get(3)?,
        row.get(4)?,
        row.get(5)?,
        row.get(6)?,
    ))
}

fn pg_market(row: &tokio_postgres::Row) -> Result<Market, StoreError> {
    market_of(
        row.get(0),
        row.get(1),
        row.get(2),
        row.get(3),
        row.get(4),
        row.get(5),
        row.get(6),
    )
}

fn shares_text(market: &Market) -> String {
    serde_json::to_string(&market.shares).unwrap_or_else(|_| "[]".into())
}

fn outcomes_text(market: &Market) -> String {
    serde_json::to_string(&market.outcomes).unwrap_or_else(|_| "[]".into())
}

fn event_data(value: &Value) -> Result<Box<RawValue>, StoreError> {
    RawValue::from_string(value.to_string()).map_err(|e| app_error("event", e))
}

/// A buy: lock, check, update, record, announce.
pub struct Buy {
    pub market: String,
    pub order: BuyOrder,
}

impl Buy {
    /// What to do with the state read under the lock.
    fn decide(&self, market: Option<Market>) -> Result<Result<Trade, TxDecision>, StoreError> {
        let Some(market) = market else {
            return Ok(Err(TxDecision::Abort(json!(Aborted::NotFound))));
        };
        Ok(decide(&market, &self.order).map_err(|refusal| {
            TxDecision::Abort(json!(Aborted::Refused {
                refusal,
                market: market.view()
            }))
        }))
    }

    fn commit(trade: &Trade, ts: i64) -> Result<TxDecision, StoreError> {
        let room =
            RoomName::parse(&super::room_of(&trade.after.id)).map_err(|e| app_error("room", e))?;
        let event = trade_event(trade, ts);
        let answer = json!({"trade": event, "market": trade.after.view()});
        Ok(TxDecision::Commit {
            event: Some(AppEvent {
                room,
                data: event_data(&event)?,
            }),
            answer,
        })
    }
}

impl SqliteWork for Buy {
    fn run_sqlite(self: Box<Self>, conn: &rusqlite::Connection) -> Result<TxDecision, StoreError> {
        let sql = |e| app_error("sqlite", e);
        let row = {
            use rusqlite::OptionalExtension;
            conn.query_row(
                &format!("{SELECT} WHERE id = $1"),
                [&self.market],
                sqlite_market,
            )
            .optional()
            .map_err(sql)?
        };
        let market = row
            .map(|(a, b, c, d, e, f, g)| market_of(a, b, c, d, e, f, g))
            .transpose()?;
        let trade = match self.decide(market)? {
            Ok(trade) => trade,
            Err(abort) => return Ok(abort),
        };
        let ts = now_ms();
        let after = &trade.after;
        conn.execute(
            UPDATE_MARKET,
            rusqlite::params![
                shares_text(after),
                after.version as i64,
                after.volume,
                ts,
                after.id
            ],
        )
        .map_err(sql)?;
        conn.execute(
            INSERT_TRADE,
            rusqlite::params![
                after.id,
                after.version as i64,
                trade.outcome as i64,
                trade.shares,
                trade.cost,
                ts
            ],
        )
        .map_err(sql)?;
        Buy::commit(&trade, ts)
    }
}

impl PostgresWork for Buy {
    fn run_postgres<'a>(
        self: Box<Self>,
        tx: &'a tokio_postgres::Transaction<'_>,
    ) -> BoxFuture<'a, Result<TxDecision, StoreError>> {
        async move {
            let sql = |e| app_error("postgres", e);
            // The row lock: concurrent buys of this market wait here, then
            // read the state the previous one committed.
            let row = tx
                .query_opt(
                    &format!("{SELECT} WHERE id = $1 FOR UPDATE"),
                    &[&self.market],
                )
                .await
                .map_err(sql)?;
            let market = row.as_ref().map(pg_market).transpose()?;
            let trade = match self.decide(market)? {
                Ok(trade) => trade,
                Err(abort) => return Ok(abort),
            };
            let ts = now_ms();
            let after = &trade.after;
            tx.execute(
                UPDATE_MARKET,
                &[
                    &shares_text(after),
                    &(after.version as i64),
                    &after.volume,
                    &ts,
                    &after.id,
                ],
            )
            .await
            .map_err(sql)?;
            tx.execute(
                INSERT_TRADE,
                &[
                    &after.id,
                    &(after.version as i64),
                    &(trade.outcome as i64),
                    &trade.shares,
                    &trade.cost,
                    &ts,
                ],
            )
            .await
            .map_err(sql)?;
            Buy::commit(&trade, ts)
        }
        .boxed()
    }
}

/// Every market (a read, in a transaction like the rest).
pub struct List;

fn list_answer(markets: Vec<Market>) -> TxDecision {
    TxDecision::Commit {
        event: None,
        answer: json!(markets),
    }
}

impl SqliteWork for List {
    fn run_sqlite(self: Box<Self>, conn: &rusqlite::Connection) -> Result<TxDecision, StoreError> {
        let sql = |e| app_error("sqlite", e);
        let mut stmt = conn
            .prepare(&format!("{SELECT} ORDER BY id"))
            .map_err(sql)?;
        let rows = stmt.query_map([], sqlite_market).map_err(sql)?;
        let mut markets = Vec::new();
        for row in rows {
            let (a, b, c, d, e, f, g) = row.map_err(sql)?;
            markets.push(market_of(a, b, c, d, e, f, g)?);
        }
        Ok(list_answer(markets))
    }
}

impl PostgresWork for List {
    fn run_postgres<'a>(
        self: Box<Self>,
        tx: &'a tokio_postgres::Transaction<'_>,
    ) -> BoxFuture<'a, Result<TxDecision, StoreError>> {
        async move {
            let rows = tx
                .query(&format!("{SELECT} ORDER BY id"), &[])
                .await
                .map_err(|e| app_error("postgres", e))?;
            Ok(list_answer(
                rows.iter().map(pg_market).collect::<Result<_, _>>()?,
            ))
        }
        .boxed()
    }
}

/// Creates the market tables if missing.
pub struct Setup;

impl SqliteWork for Setup {
    fn run_sqlite(self: Box<Self>, conn: &rusqlite::Connection) -> Result<TxDecision, StoreError> {
        conn.execute_batch(SCHEMA)
            .map_err(|e| app_error("sqlite", e))?;
        Ok(TxDecision::Commit {
            event: None,
            answer: Value::Null,
        })
    }
}

impl PostgresWork for Setup {
    fn run_postgres<'a>(
        self: Box<Self>,
        tx: &'a tokio_postgres::Transaction<'_>,
    ) -> BoxFuture<'a, Result<TxDecision, StoreError>> {
        async move {
            let sql = |e| app_error("postgres", e);
            // Nodes starting together must not race on CREATE TABLE.
            tx.execute(
                "SELECT pg_advisory_xact_lock(hashtext('hubcast-demo-market'))",
                &[],
            )
            .await
            .map_err(sql)?;
            tx.batch_execute(SCHEMA).await.map_err(sql)?;
            Ok(TxDecision::Commit {
                event: None,
                answer: Value::Null,
            })
        }
        .boxed()
    }
}

/// Inserts a seed market if it is missing (or, with `reset`, puts it back to
/// its seed state, forgets its trades and announces a `reset` in its room).
pub struct Seed {
    pub market: Market,
    pub room: RoomName,
    pub reset: bool,
}

impl Seed {
    fn decision(&self, inserted: bool) -> Result<TxDecision, StoreError> {
        if !(inserted || self.reset) {
            return Ok(TxDecision::Commit {
                event: None,
                answer: Value::Null,
            });
        }
        let data = json!({"type": "reset", "market": self.market.view()});
        Ok(TxDecision::Commit {
            event: Some(AppEvent {
                room: self.room.clone(),
                data: event_data(&data)?,
            }),
            answer: Value::Null,
        })
    }
}

const INSERT: &str =
    "INSERT INTO demo_markets (id, title, outcomes, liquidity, shares, version, volume, updated_at)
     VALUES ($1, $2, $3, $4, $5, 0, 0, $6) ON CONFLICT (id) DO NOTHING";

impl SqliteWork for Seed {
    fn run_sqlite(self: Box<Self>, conn: &rusqlite::Connection) -> Result<TxDecision, StoreError> {
        let sql = |e| app_error("sqlite", e);
        let m = &self.market;
        if self.reset {
            conn.execute("DELETE FROM demo_markets WHERE id = $1", [&m.id])
                .map_err(sql)?;
            conn.execute("DELETE FROM demo_trades WHERE market = $1", [&m.id])
                .map_err(sql)?;
        }
        let inserted = conn
            .execute(
                INSERT,
                rusqlite::params![
                    m.id,
                    m.title,
                    outcomes_text(m),
                    m.liquidity,
                    shares_text(m),
                    now_ms()
                ],
            )
            .map_err(sql)?;
        self.decision(inserted == 1)
    }
}

impl PostgresWork for Seed {
    fn run_postgres<'a>(
        self: Box<Self>,
        tx: &'a tokio_postgres::Transaction<'_>,
    ) -> BoxFuture<'a, Result<TxDecision, StoreError>> {
        async move {
            let sql = |e| app_error("postgres", e);
            let m = &self.market;
            if self.reset {
                tx.execute("DELETE FROM demo_markets WHERE id = $1", &[&m.id])
                    .await
                    .map_err(sql)?;
                tx.execute("DELETE FROM demo_trades WHERE market = $1", &[&m.id])
                    .await
                    .map_err(sql)?;
            }
            let inserted = tx
                .execute(
                    INSERT,
                    &[
                        &m.id,
                        &m.title,
                        &outcomes_text(m),
                        &m.liquidity,
                        &shares_text(m),
                        &now_ms(),
                    ],
                )
                .await
                .map_err(sql)?;
            self.decision(inserted == 1)
        }
        .boxed()
    }
}

/// Milliseconds since the Unix epoch, for the market's own rows and events.
fn now_ms() -> i64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.as_millis() as i64)
}
