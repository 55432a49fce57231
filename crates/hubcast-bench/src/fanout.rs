//! `bench fanout`: S subscribers on one room, publishes at a rate R (or as fast
//! as possible with R = 0); deliveries per second and publish→receive latency.

use super::delivery::{self, Shape};
use super::target::Target;
use super::{Common, Report};

#[derive(Debug, Clone, clap::Args)]
pub struct FanoutOptions {
    /// Subscribers on the room.
    #[arg(long, default_value_t = 10_000)]
    pub subscribers: usize,
    /// Publishes per second; 0 publishes as fast as the publishers can.
    #[arg(long, default_value_t = 100)]
    pub rate: u64,
    /// Events to publish.
    #[arg(long, default_value_t = 1_000)]
    pub events: u64,
    /// Concurrent HTTP publishes in flight.
    #[arg(long, default_value_t = 16)]
    pub publishers: usize,
}

pub async fn run(
    target: &Target,
    options: &FanoutOptions,
    common: &Common,
) -> anyhow::Result<Report> {
    let shape = Shape {
        rooms: 1,
        per_room: options.subscribers,
        events_per_room: options.events,
        rate: options.rate,
        publishers: options.publishers,
    };
    delivery::run("fanout", target, &shape, common).await
}
