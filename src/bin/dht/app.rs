//! What the `dht` command does in each mode: run nodes (with console or stat mode), or a one-shot.

use std::io::{IsTerminal, Write};
use std::process::ExitCode;
use std::time::Duration;

use anyhow::{Context, Result, anyhow};
use dht::identity;
use dht::{Dht, Event, Multiaddr};
use libp2p::multiaddr::Protocol;
use tokio::io::{AsyncBufReadExt, BufReader};
use tracing::warn;

use crate::cli::{Cli, OneShot};
use crate::cli::{options, shifted};
use crate::console;
use crate::oneshot::{READY_POLL, bench, get, health, info, put, short_lived};

/// Longest wait for a local network to become routable before the console starts anyway.
pub const READY_TIMEOUT: Duration = Duration::from_secs(60);
/// Most nodes `dht sim --model` simulates (ids and routing tables only: about 2.5 KB each).
pub const MAX_MODEL_NODES: u64 = 1_000_000;
/// Most nodes `dht sim --swarm` starts (full libp2p swarms in one process stop being usable
/// between 200 and 500).
pub const MAX_SWARM_NODES: u64 = 1_000;

/// Runs the command line; the exit code is 0 on success, 1 when the operation failed.
pub async fn run(cli: Cli) -> Result<ExitCode> {
    match &cli.command {
        None => serve(&cli).await,
        Some(OneShot::Put { at, value }) => put(&cli, at.as_deref(), value.as_deref()).await,
        Some(OneShot::Get { key }) => get(&cli, key).await,
        Some(OneShot::Findprovs { key, count }) => {
            crate::routing::findprovs(key, *count, || short_lived(&cli)).await
        }
        Some(OneShot::Findpeer { peer }) => {
            crate::routing::findpeer(*peer, || short_lived(&cli)).await
        }
        Some(OneShot::Ipns { command }) => {
            crate::routing::ipns(&cli, command, || short_lived(&cli)).await
        }
        Some(OneShot::Health { addr }) => health(&cli, addr.clone()).await,
        Some(OneShot::Info { addr, json }) => info(&cli, addr.clone(), *json).await,
        Some(OneShot::Sim {
            nodes,
            scenario,
            seed,
            values,
            latency_ms,
            loss,
            duration,
            churn,
            swarm,
            lookups,
            fetches,
            settle,
            json,
            model,
        }) => {
            if !*swarm && !*model {
                let spec = crate::coresim::spec(
                    &cli,
                    *nodes as usize,
                    *scenario,
                    *seed,
                    *values as usize,
                    (*latency_ms, *loss),
                    (*duration, *churn),
                )?;
                let report =
                    tokio::task::spawn_blocking(move || dht::sim::scenario::run(&spec)).await?;
                return print_report(&report, *json, crate::coresim::print);
            }
            if *model {
                if *nodes > MAX_MODEL_NODES {
                    anyhow::bail!("--model simulates at most {MAX_MODEL_NODES} nodes");
                }
                let (n, k, l) = (*nodes as usize, cli.replication_factor, *lookups as usize);
                let report =
                    tokio::task::spawn_blocking(move || crate::model::run(n, k, l)).await?;
                return print_report(&report, *json, crate::model::print);
            }
            if *nodes > MAX_SWARM_NODES {
                anyhow::bail!("--swarm simulates at most {MAX_SWARM_NODES} nodes");
            }
            let report = crate::sim::run(
                *nodes as usize,
                cli.replication_factor,
                *lookups as usize,
                *fetches as usize,
                *settle,
            )
            .await?;
            print_report(&report, *json, crate::sim::print)
        }
        Some(OneShot::Flood {
            addr,
            duration,
            kind,
            size,
        }) => {
            let report = crate::flood::run(addr.clone(), *duration, *kind, *size as usize).await?;
            println!("{}", serde_json::to_string(&report)?);
            Ok(ExitCode::SUCCESS)
        }
        Some(OneShot::Bench {
            ops,
            concurrency,
            size,
            duration,
            json,
        }) => {
            let shape = (*ops as usize, *concurrency as usize, *size as usize);
            bench(&cli, shape, *duration, *json).await
        }
    }
}

/// Prints a simulation's report as one JSON object, or as text with `text`.
fn print_report<R: serde::Serialize>(
    report: &R,
    json: bool,
    text: fn(&R, &mut std::io::StdoutLock<'static>) -> std::io::Result<()>,
) -> Result<ExitCode> {
    let mut out = std::io::stdout().lock();
    if json {
        serde_json::to_writer(&mut out, report)?;
        writeln!(out)?;
    } else {
        text(report, &mut out)?;
    }
    Ok(ExitCode::SUCCESS)
}

/// The address other local nodes use to reach `node`: a loopback one when there is one.
async fn local_addr(node: &Dht) -> Result<Multiaddr> {
    let addrs = node.listen_addrs().await?;
    let loopback = addrs.iter().find(|a| {
        a.iter().any(|p| match p {
            Protocol::Ip4(ip) => ip.is_loopback(),
            Protocol::Ip6(ip) => ip.is_loopback(),
            _ => false,
        })
    });
    loopback
        .or(addrs.first())
        .cloned()
        .ok_or_else(|| anyhow!("the first node has no listen address"))
}

async fn echo(_peer: dht::PeerId, payload: Vec<u8>) -> std::result::Result<Vec<u8>, String> {
    Ok(payload)
}

async fn serve(cli: &Cli) -> Result<ExitCode> {
    // Caught from here on: a signal while the nodes start stops them cleanly rather than killing
    // the process (and, with a data dir, losing its last writes).
    let mut shutdown = Shutdown::install();
    let n = usize::from(cli.network);
    let mut nodes: Vec<Dht> = Vec::with_capacity(n);
    // With a console, standard output carries only command results (scripts read it); the
    // node's own status lines go to standard error.
    let console_mode = cli.interactive;
    let mut banner: Box<dyn Write> = if console_mode {
        Box::new(std::io::stderr())
    } else {
        Box::new(std::io::stdout())
    };
    // With -n and --mirror, the feeders' identities are made first, so that the mirror (node 0)
    // can name them.
    let keys: Vec<Option<libp2p::identity::Keypair>> = (0..n)
        .map(|i| (cli.mirror && i > 0).then(libp2p::identity::Keypair::generate_ed25519))
        .collect();
    for i in 0..n {
        let listen = if cli.client {
            Vec::new()
        } else {
            shifted(&cli.listen, i)?
        };
        let mut bootstrap = cli.connect.clone();
        if let Some(first) = nodes.first() {
            bootstrap.insert(0, local_addr(first).await?);
        }
        let mut opts = options(cli, listen, bootstrap)?
            .client_mode(cli.client)
            .mirror(cli.mirror && i == 0);
        opts.blocked = cli.block.clone();
        for peer in &cli.mirror_peer {
            opts = opts.mirror_peer(*peer);
        }
        if i == 0 {
            for peer in &cli.mirror_feeder {
                opts = opts.mirror_feeder(*peer);
            }
            for key in keys.iter().flatten() {
                opts = opts.mirror_feeder(key.public().to_peer_id());
            }
        }
        if let Some(key) = &keys[i] {
            opts = opts.keypair(key.clone());
        }
        // With -n and --mirror the first node is the mirror, and every other one feeds it.
        if cli.mirror
            && let Some(first) = nodes.first()
        {
            opts = opts.mirror_peer(first.peer_id());
        }
        if let Some(dir) = &cli.data_dir
            && !cli.client
        {
            opts = opts.data_dir(if n > 1 {
                dir.join(i.to_string())
            } else {
                dir.clone()
            });
        }
        if i == 0
            && let Some(path) = &cli.key_file
        {
            opts = opts.keypair(identity::load_or_create(path)?);
        }
        let node = Dht::start(opts).await.with_context(|| {
            if n > 1 {
                format!("node {i}")
            } else {
                "node".into()
            }
        })?;
        node.set_command_handler(echo).await?;
        let status = node.status().await?;
        if n == 1 {
            writeln!(banner, "peer id: {}", status.peer_id)?;
            if let Some(dir) = &cli.data_dir {
                writeln!(
                    banner,
                    "data dir: {} ({} records)",
                    dir.display(),
                    status.stored_keys
                )?;
            }
            for a in &status.listen_addrs {
                writeln!(banner, "listening on {a}")?;
            }
        } else {
            for a in &status.listen_addrs {
                writeln!(banner, "node {i}: {a}")?;
            }
        }
        banner.flush()?;
        nodes.push(node);
    }
    let first = nodes[0].clone();

    let ready = {
        let nodes = nodes.clone();
        let expect_peers = n > 1 || !cli.connect.is_empty();
        tokio::spawn(async move {
            let started = tokio::time::Instant::now();
            let mut warned = false;
            while !routable(&nodes, expect_peers).await {
                if !warned && started.elapsed() > READY_TIMEOUT / 6 {
                    warn!("still joining: not every node is routable yet (retrying)");
                    warned = true;
                }
                tokio::time::sleep(READY_POLL).await;
            }
            let plural = if nodes.len() == 1 { "" } else { "s" };
            let line = format!("ready: {} node{plural} routable", nodes.len());
            if console_mode {
                eprintln!("{line}");
            } else {
                println!("{line}");
            }
        })
    };

    let outcome = if cli.interactive {
        // A script piped in runs against a joined network, not a lonely node.
        let _ = tokio::time::timeout(READY_TIMEOUT, ready).await;
        tokio::select! {
            r = run_console(first.clone()) => r,
            _ = shutdown.wait() => Ok(()),
        }
    } else if cli.stat {
        tokio::select! {
            _ = crate::stats::run(first.clone()) => Ok(()),
            _ = shutdown.wait() => Ok(()),
        }
    } else {
        shutdown.wait().await;
        Ok(())
    };
    for node in &nodes {
        node.stop().await;
    }
    outcome.map(|()| ExitCode::SUCCESS)
}

/// Whether every node has a routing table entry and is in some other node's routing table.
async fn routable(nodes: &[Dht], expect_peers: bool) -> bool {
    if !expect_peers {
        return true;
    }
    let mut known = std::collections::HashSet::new();
    for node in nodes {
        match node.routing_table().await {
            Ok(table) if !table.is_empty() => known.extend(table.into_iter().map(|e| e.peer)),
            _ => return false,
        }
    }
    nodes.len() == 1 || nodes.iter().all(|n| known.contains(&n.peer_id()))
}

async fn run_console(node: Dht) -> Result<()> {
    let interactive = std::io::stdin().is_terminal();
    let mut events = node.events();
    let printer = tokio::spawn(async move {
        while let Some(event) = events.next().await {
            if let Event::Broadcast { origin, payload } = event {
                println!("broadcast from {origin}: {}", console::printable(&payload));
            }
        }
    });
    let mut lines = BufReader::new(tokio::io::stdin()).lines();
    loop {
        if interactive {
            print!("$> ");
            std::io::stdout().flush()?;
        }
        let Some(line) = lines.next_line().await? else {
            break;
        };
        let mut out = Vec::new();
        let go_on = match console::parse(&line) {
            Ok(cmd) => console::execute(&node, cmd, &mut out).await?,
            Err(e) => {
                writeln!(out, "error: {e}")?;
                true
            }
        };
        let mut stdout = std::io::stdout().lock();
        stdout.write_all(&out)?;
        stdout.flush()?;
        if !go_on {
            break;
        }
    }
    printer.abort();
    Ok(())
}

/// SIGINT and SIGTERM, listened for from the moment this is made.
struct Shutdown {
    #[cfg(unix)]
    signals: Option<(tokio::signal::unix::Signal, tokio::signal::unix::Signal)>,
}

impl Shutdown {
    fn install() -> Self {
        #[cfg(unix)]
        {
            use tokio::signal::unix::{SignalKind, signal};
            let signals = signal(SignalKind::interrupt())
                .and_then(|int| Ok((int, signal(SignalKind::terminate())?)))
                .ok();
            Self { signals }
        }
        #[cfg(not(unix))]
        {
            Self {}
        }
    }

    async fn wait(&mut self) {
        #[cfg(unix)]
        if let Some((int, term)) = self.signals.as_mut() {
            tokio::select! {
                _ = int.recv() => {}
                _ = term.recv() => {}
            }
            return;
        }
        let _ = tokio::signal::ctrl_c().await;
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ports_shift_and_overflow_is_an_error() {
        let a: Vec<Multiaddr> = vec!["/ip4/127.0.0.1/tcp/3000".parse().expect("addr")];
        assert_eq!(
            shifted(&a, 4).expect("ok")[0].to_string(),
            "/ip4/127.0.0.1/tcp/3004"
        );
        let z: Vec<Multiaddr> = vec!["/ip4/127.0.0.1/tcp/0".parse().expect("addr")];
        assert_eq!(
            shifted(&z, 4).expect("ok")[0].to_string(),
            "/ip4/127.0.0.1/tcp/0"
        );
        let top: Vec<Multiaddr> = vec!["/ip4/127.0.0.1/tcp/65535".parse().expect("addr")];
        assert!(shifted(&top, 1).is_err());
    }
}
