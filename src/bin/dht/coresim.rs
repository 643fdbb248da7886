//! `dht sim` (the default): the node's protocol core, N instances over a simulated network with a
//! virtual clock ([`dht::sim`]); this file only turns the command line into a run and prints it.

use std::io::Write;
use std::time::Duration;

use anyhow::{Result, bail};
use dht::core::CoreConfig;
use dht::sim::NetConfig;
use dht::sim::scenario::{Scenario, SimReport, SimSpec};
use dht::{StoreLimits, Timing};

use crate::cli::Cli;

/// The run the command line asks for: the production timing (TTL 48 h, replication 1 h) and the
/// replication factor of `-k`.
pub fn spec(
    cli: &Cli,
    nodes: usize,
    scenario: Scenario,
    seed: u64,
    values: usize,
    (latency_ms, loss): (u64, f64),
    (duration, churn): (Duration, f64),
) -> Result<SimSpec> {
    if !(0.0..=1.0).contains(&loss) {
        bail!("--loss must be between 0 and 1");
    }
    if !(0.0..=1.0).contains(&churn) {
        bail!("--churn must be between 0 and 1");
    }
    let k = cli.replication_factor;
    let core = CoreConfig {
        k,
        alpha: dht::limits::DEFAULT_PARALLELISM,
        timing: Timing::default(),
        serving: true,
        store: StoreLimits::default(),
        seed,
        mirror: false,
        mirror_peers: Default::default(),
        mirror_feeders: Default::default(),
        amino: false,
    };
    Ok(SimSpec {
        nodes,
        seed,
        values,
        scenario,
        net: NetConfig {
            latency: Duration::from_millis(latency_ms),
            loss,
        },
        core,
        duration,
        churn_per_hour: churn,
    })
}

/// Prints the report as text.
pub fn print(r: &SimReport, out: &mut impl Write) -> std::io::Result<()> {
    writeln!(
        out,
        "{:?}: {} nodes, seed {}, {:.1} simulated hours in {:.1} s",
        r.scenario, r.nodes, r.seed, r.simulated_hours, r.wall_s
    )?;
    writeln!(
        out,
        "fetches: {} - {:.2}% found ({} more past their value's end); hops median {}; requests median {}",
        r.lookups,
        100.0 * r.lookup_success,
        r.fetches_past_end,
        r.hops_median,
        r.requests_per_lookup_median
    )?;
    writeln!(
        out,
        "stores: {} - acknowledged copies median {}",
        r.stores, r.store_acks_median
    )?;
    writeln!(
        out,
        "values lost: {} (publisher alive {}, publisher gone {}); expired after their publisher left: {}",
        r.values_lost,
        r.values_lost_publisher_alive,
        r.values_lost_publisher_dead,
        r.values_expired
    )?;
    writeln!(
        out,
        "memory per node: {} B resident ({} B by the cores' own count); routing table median {}; {:.0} messages per node per hour",
        r.memory_per_node_bytes,
        r.core_heap_per_node_bytes,
        r.routing_median,
        r.messages_per_node_per_hour
    )?;
    for s in &r.replicas {
        writeln!(
            out,
            "  at {:5.1} h: {:.1} copies per value, fewest {} (publisher alive)",
            s.hour, s.mean, s.min_publisher_alive
        )?;
    }
    Ok(())
}
