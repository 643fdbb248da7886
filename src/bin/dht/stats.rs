//! Stat mode: one line per second of peers, store size, operation rates and bandwidth.

use std::io::{IsTerminal, Write};
use std::time::{Duration, Instant};

use dht::{Dht, NodeStatus};

use crate::console::human_bytes;

/// Time between two refreshes.
pub const STAT_INTERVAL: Duration = Duration::from_secs(1);

/// Renders the line for `now`, with rates over the time since `before`.
pub fn render(before: &NodeStatus, now: &NodeStatus, elapsed: Duration) -> String {
    let secs = elapsed.as_secs_f64().max(1e-3);
    let rate = |a: u64, b: u64| b.saturating_sub(a) as f64 / secs;
    let (c0, c1) = (&before.counters, &now.counters);
    format!(
        "peers {} | routing {} | keys {} ({}) | store {:.1}/s issued {:.1}/s served | fetch {:.1}/s issued {:.1}/s served | errors {} | in {}/s out {}/s",
        now.connected_peers,
        now.routing_table_size,
        now.stored_keys,
        human_bytes(now.stored_bytes as u64),
        rate(c0.stores_issued, c1.stores_issued),
        rate(c0.stores_served, c1.stores_served),
        rate(c0.fetches_issued, c1.fetches_issued),
        rate(c0.fetches_served, c1.fetches_served),
        c1.errors,
        human_bytes(rate(before.bytes_in, now.bytes_in) as u64),
        human_bytes(rate(before.bytes_out, now.bytes_out) as u64),
    )
}

/// Prints a refreshed line every [`STAT_INTERVAL`] until the node stops: in place on a terminal,
/// one line per refresh otherwise.
pub async fn run(node: Dht) {
    let tty = std::io::stdout().is_terminal();
    let Ok(mut before) = node.status().await else {
        return;
    };
    let mut at = Instant::now();
    let mut tick = tokio::time::interval(STAT_INTERVAL);
    tick.tick().await;
    loop {
        tick.tick().await;
        let Ok(now) = node.status().await else { break };
        let line = render(&before, &now, at.elapsed());
        let mut out = std::io::stdout().lock();
        let written = if tty {
            write!(out, "\r\x1b[2K{line}")
        } else {
            writeln!(out, "{line}")
        };
        if written.and_then(|()| out.flush()).is_err() {
            break;
        }
        before = now;
        at = Instant::now();
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use dht::{Counters, PeerId};

    fn status(stores: u64, bytes_in: u64) -> NodeStatus {
        NodeStatus {
            peer_id: PeerId::random(),
            listen_addrs: vec![],
            connected_peers: 3,
            routing_table_size: 4,
            stored_keys: 5,
            stored_bytes: 2048,
            pending_operations: 0,
            uptime: Duration::ZERO,
            counters: Counters {
                stores_issued: stores,
                ..Counters::default()
            },
            bytes_in,
            bytes_out: 0,
            database: None,
            mirror: false,
        }
    }

    #[test]
    fn rates_are_per_second() {
        let line = render(&status(10, 0), &status(30, 4096), Duration::from_secs(2));
        assert!(
            line.contains("peers 3 | routing 4 | keys 5 (2.0 KiB)"),
            "{line}"
        );
        assert!(line.contains("store 10.0/s issued"), "{line}");
        assert!(line.contains("in 2.0 KiB/s"), "{line}");
    }
}
