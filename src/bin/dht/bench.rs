//! `dht bench`: a store-then-fetch workload against a running network, with latency percentiles.

use std::collections::BTreeMap;
use std::io::{IsTerminal, Write};
use std::time::{Duration, Instant};

use dht::{Dht, Key};
use futures::StreamExt;
use serde::Serialize;

/// Most operations one run may ask for.
pub const MAX_OPS: usize = 10_000_000;
/// Most operations in flight.
pub const MAX_CONCURRENCY: usize = 1024;

/// Figures of one phase.
#[derive(Debug, Clone, Serialize)]
pub struct Phase {
    /// Operations attempted.
    pub ops: usize,
    /// Operations that failed (or, for fetches, returned a wrong value).
    pub errors: usize,
    /// Wall-clock seconds for the phase.
    pub seconds: f64,
    /// Successful operations per second.
    pub throughput: f64,
    /// Latency percentiles of successful operations, in milliseconds.
    pub p50_ms: f64,
    /// 90th percentile.
    pub p90_ms: f64,
    /// 99th percentile.
    pub p99_ms: f64,
    /// Slowest.
    pub max_ms: f64,
    /// When the phase began and ended, in seconds since the Unix epoch: a script sampling the
    /// nodes' CPU time can charge each phase its share.
    pub started_unix: f64,
    /// When the phase ended.
    pub ended_unix: f64,
}

/// Now, in seconds since the Unix epoch.
fn unix_now() -> f64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0.0, |d| d.as_secs_f64())
}

/// The whole report.
#[derive(Debug, Clone, Serialize)]
pub struct Report {
    /// Operations per phase.
    pub ops: usize,
    /// Operations in flight.
    pub concurrency: usize,
    /// Value size in bytes.
    pub value_size: usize,
    /// The store phase.
    pub store: Phase,
    /// The fetch phase (by a different node than the one that stored).
    pub fetch: Phase,
    /// How many stores reported each number of acknowledging nodes.
    pub stored_count: BTreeMap<usize, usize>,
}

/// The `q`-quantile of sorted latencies, in milliseconds.
fn quantile(sorted: &[Duration], q: f64) -> f64 {
    if sorted.is_empty() {
        return 0.0;
    }
    let rank = ((sorted.len() as f64 * q).ceil() as usize).clamp(1, sorted.len());
    sorted[rank - 1].as_secs_f64() * 1e3
}

fn phase(
    ops: usize,
    errors: usize,
    started_unix: f64,
    elapsed: Duration,
    mut latencies: Vec<Duration>,
) -> Phase {
    latencies.sort_unstable();
    let seconds = elapsed.as_secs_f64();
    Phase {
        ops,
        errors,
        seconds,
        throughput: if seconds > 0.0 {
            latencies.len() as f64 / seconds
        } else {
            0.0
        },
        p50_ms: quantile(&latencies, 0.50),
        p90_ms: quantile(&latencies, 0.90),
        p99_ms: quantile(&latencies, 0.99),
        max_ms: latencies.last().map_or(0.0, |d| d.as_secs_f64() * 1e3),
        started_unix,
        ended_unix: started_unix + seconds,
    }
}

/// A progress bar on standard error, drawn only on a terminal.
struct Progress {
    label: &'static str,
    total: usize,
    done: usize,
    draw: bool,
    last: Instant,
}

impl Progress {
    fn new(label: &'static str, total: usize) -> Self {
        Self {
            label,
            total,
            done: 0,
            draw: std::io::stderr().is_terminal(),
            last: Instant::now(),
        }
    }

    fn step(&mut self) {
        self.done += 1;
        if self.draw && self.total == usize::MAX {
            if self.last.elapsed() > Duration::from_millis(100) {
                self.last = Instant::now();
                eprint!("\r{:6} {}", self.label, self.done);
            }
            return;
        }
        if self.draw
            && (self.done == self.total || self.last.elapsed() > Duration::from_millis(100))
        {
            self.last = Instant::now();
            let width = 40;
            let filled = width * self.done / self.total.max(1);
            eprint!(
                "\r{:6} [{}{}] {}/{}",
                self.label,
                "=".repeat(filled),
                " ".repeat(width - filled),
                self.done,
                self.total
            );
            if self.done == self.total {
                eprintln!();
            }
        }
    }
}

/// A value of `size` bytes, unique for `i` and this run.
fn value(i: usize, size: usize, run: u64) -> Vec<u8> {
    let mut v = Vec::with_capacity(size);
    let tag = format!("{run:016x}-{i:010}-");
    v.extend_from_slice(&tag.as_bytes()[..tag.len().min(size)]);
    let mut x = run ^ (i as u64).wrapping_mul(0x9e37_79b9_7f4a_7c15);
    while v.len() < size {
        x ^= x << 13;
        x ^= x >> 7;
        x ^= x << 17;
        v.push(x as u8);
    }
    v
}

/// Stores `ops` values through `writer`, then fetches each through `reader`; with `duration`, the
/// fetches cycle over the same keys until it has passed (the data stays, the operations grow).
pub async fn run(
    writer: &Dht,
    reader: &Dht,
    ops: usize,
    concurrency: usize,
    size: usize,
    duration: Option<Duration>,
) -> Report {
    let run_id: u64 = rand::random();
    let mut bar = Progress::new("store", ops);
    let started_unix = unix_now();
    let started = Instant::now();
    let mut results = futures::stream::iter(0..ops)
        .map(|i| {
            let v = value(i, size, run_id);
            async move {
                let t = Instant::now();
                let r = writer.store(v).await;
                (t.elapsed(), r)
            }
        })
        .buffer_unordered(concurrency);
    let mut latencies = Vec::with_capacity(ops);
    let mut errors = 0;
    let mut stored_count = BTreeMap::new();
    while let Some((took, r)) = results.next().await {
        bar.step();
        match r {
            Ok(s) => {
                latencies.push(took);
                *stored_count.entry(s.remote).or_insert(0) += 1;
            }
            Err(e) => {
                errors += 1;
                tracing::warn!("store failed: {e}");
            }
        }
    }
    let store = phase(ops, errors, started_unix, started.elapsed(), latencies);

    let started_unix = unix_now();
    let started = Instant::now();
    let fetches = futures::stream::iter(0..).take_while(|n| {
        let go_on = match duration {
            Some(d) => started.elapsed() < d,
            None => *n < ops,
        };
        futures::future::ready(go_on)
    });
    let mut bar = Progress::new("fetch", if duration.is_some() { usize::MAX } else { ops });
    let mut results = fetches
        .map(|n| {
            let v = value(n % ops, size, run_id);
            async move {
                let key = Key::for_value(&v);
                let t = Instant::now();
                let r = reader.fetch(&key).await;
                (t.elapsed(), r.map(|got| got == v))
            }
        })
        .buffer_unordered(concurrency);
    let mut latencies = Vec::with_capacity(ops);
    let mut errors = 0;
    while let Some((took, r)) = results.next().await {
        bar.step();
        match r {
            Ok(true) => latencies.push(took),
            Ok(false) => errors += 1,
            Err(e) => {
                errors += 1;
                tracing::warn!("fetch failed: {e}");
            }
        }
    }
    let attempted = latencies.len() + errors;
    let fetch = phase(
        attempted,
        errors,
        started_unix,
        started.elapsed(),
        latencies,
    );
    Report {
        ops,
        concurrency,
        value_size: size,
        store,
        fetch,
        stored_count,
    }
}

/// Prints the report as a table.
pub fn print_table(r: &Report, out: &mut impl Write) -> std::io::Result<()> {
    writeln!(
        out,
        "{} operations, {} in flight, {}-byte values",
        r.ops, r.concurrency, r.value_size
    )?;
    writeln!(
        out,
        "{:<6} {:>7} {:>6} {:>9} {:>8} {:>8} {:>8} {:>8}",
        "op", "ops", "errors", "ops/s", "p50 ms", "p90 ms", "p99 ms", "max ms"
    )?;
    for (name, p) in [("store", &r.store), ("fetch", &r.fetch)] {
        writeln!(
            out,
            "{:<6} {:>7} {:>6} {:>9.1} {:>8.3} {:>8.3} {:>8.3} {:>8.3}",
            name, p.ops, p.errors, p.throughput, p.p50_ms, p.p90_ms, p.p99_ms, p.max_ms
        )?;
    }
    let counts: Vec<String> = r
        .stored_count
        .iter()
        .map(|(nodes, n)| format!("{nodes} nodes x{n}"))
        .collect();
    writeln!(out, "stored on: {}", counts.join(", "))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn quantiles_pick_the_right_rank() {
        let d: Vec<Duration> = (1..=100).map(Duration::from_millis).collect();
        assert_eq!(quantile(&d, 0.5), 50.0);
        assert_eq!(quantile(&d, 0.99), 99.0);
        assert_eq!(quantile(&d, 1.0), 100.0);
        assert_eq!(quantile(&[], 0.5), 0.0);
    }

    #[test]
    fn values_are_unique_and_sized() {
        assert_eq!(value(1, 100, 7).len(), 100);
        assert_eq!(value(1, 5, 7).len(), 5);
        assert_ne!(value(1, 100, 7), value(2, 100, 7));
        assert_ne!(value(1, 100, 7), value(1, 100, 8));
    }
}
