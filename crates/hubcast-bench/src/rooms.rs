//! `bench rooms`: many rooms with a few subscribers each (the per-entity shape:
//! one room per order, document or device), events published round-robin.

use super::delivery::{self, Shape};
use super::target::Target;
use super::{Common, Report};

#[derive(Debug, Clone, clap::Args)]
pub struct RoomsOptions {
    /// Rooms. The default keeps rooms × subscribers under one process's
    /// 20,000 open files; raise both where the limit allows.
    #[arg(long, default_value_t = 2_000)]
    pub rooms: usize,
    /// Subscribers on each room.
    #[arg(long, default_value_t = 5)]
    pub subscribers_per_room: usize,
    /// Events published to each room.
    #[arg(long, default_value_t = 10)]
    pub events_per_room: u64,
    /// Publishes per second over all rooms; 0 publishes as fast as possible.
    #[arg(long, default_value_t = 0)]
    pub rate: u64,
    /// Concurrent HTTP publishes in flight.
    #[arg(long, default_value_t = 16)]
    pub publishers: usize,
}

pub async fn run(
    target: &Target,
    options: &RoomsOptions,
    common: &Common,
) -> anyhow::Result<Report> {
    let shape = Shape {
        rooms: options.rooms,
        per_room: options.subscribers_per_room,
        events_per_room: options.events_per_room,
        rate: options.rate,
        publishers: options.publishers,
    };
    delivery::run("rooms", target, &shape, common).await
}
