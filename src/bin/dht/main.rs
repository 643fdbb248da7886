//! `dht`: run a DHT node, a local network of nodes, or a one-shot command.

mod app;
mod bench;
mod cli;
mod console;
mod coresim;
mod flood;
mod model;
mod oneshot;
mod routing;
mod sim;
mod stats;

use std::process::ExitCode;

use clap::Parser;
use tracing_subscriber::EnvFilter;

/// Maps `-v 0..5` onto tracing levels; libp2p's own crates log one level quieter.
fn log_filter(verbose: u8) -> EnvFilter {
    const LEVELS: [&str; 6] = ["off", "error", "warn", "info", "debug", "trace"];
    let ours = LEVELS[usize::from(verbose.min(5))];
    let theirs =
        LEVELS[usize::from(verbose.saturating_sub(1).min(5)).max(usize::from(verbose.min(1)))];
    let theirs = if verbose >= 5 { "trace" } else { theirs };
    EnvFilter::new(format!("{theirs},dht={ours},dht_behaviours={ours}"))
}

fn main() -> ExitCode {
    let cli = cli::Cli::parse();
    // One-shot commands keep standard error quiet unless asked: their output is for scripts.
    let verbose = if cli.command.is_some() {
        cli.verbose.saturating_sub(1)
    } else {
        cli.verbose
    };
    let filter = std::env::var("RUST_LOG")
        .ok()
        .filter(|v| !v.is_empty())
        .and_then(|v| EnvFilter::try_new(v).ok())
        .unwrap_or_else(|| log_filter(verbose));
    tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(std::io::stderr)
        .with_ansi(std::io::IsTerminal::is_terminal(&std::io::stderr()))
        .init();

    // A node is one event loop and its connections' tasks: on one thread it pays for no
    // wake-ups between threads, which on a loaded host cost more than a second core gives.
    // Many nodes in one process (-n, sim) share every core.
    let many_nodes = cli.network > 1 || matches!(cli.command, Some(cli::OneShot::Sim { .. }));
    let threads = cli.threads.unwrap_or(if many_nodes { 0 } else { 1 });
    let mut builder = if threads == 1 {
        tokio::runtime::Builder::new_current_thread()
    } else {
        let mut b = tokio::runtime::Builder::new_multi_thread();
        if threads > 1 {
            b.worker_threads(usize::from(threads));
        }
        b
    };
    let runtime = match builder.enable_all().build() {
        Ok(rt) => rt,
        Err(e) => {
            eprintln!("error: cannot start the runtime: {e}");
            return ExitCode::FAILURE;
        }
    };
    let code = match runtime.block_on(app::run(cli)) {
        Ok(code) => code,
        Err(e) => {
            eprintln!("error: {e:#}");
            ExitCode::FAILURE
        }
    };
    // A console's read of standard input runs on a blocking thread that nothing can interrupt:
    // dropping the runtime would wait for a line that may never come (a stop by SIGTERM with the
    // terminal still open). The node has stopped cleanly by now; give stragglers a moment, no more.
    runtime.shutdown_timeout(SHUTDOWN_GRACE);
    code
}

/// How long the runtime's leftover blocking tasks (a console's pending read) may hold the exit.
const SHUTDOWN_GRACE: std::time::Duration = std::time::Duration::from_millis(200);
