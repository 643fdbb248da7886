//! What the `dht` command does in each mode: run nodes (with console or stat mode), or a one-shot.

use std::io::{IsTerminal, Read, Write};
use std::num::NonZeroUsize;
use std::process::ExitCode;
use std::time::Duration;

use anyhow::{Context, Result, anyhow, bail};
use dht::PeerId;
use dht::identity;
use dht::{Dht, DhtOptions, Event, Key, Multiaddr, Timing};
use libp2p::multiaddr::Protocol;
use tokio::io::{AsyncBufReadExt, BufReader};
use tracing::warn;

use crate::cli::{Cli, OneShot};
use crate::console;

/// Longest wait for a local network to become routable before the console starts anyway.
pub const READY_TIMEOUT: Duration = Duration::from_secs(60);
/// Longest wait for a one-shot node to join through its bootstrap nodes.
pub const JOIN_TIMEOUT: Duration = Duration::from_secs(10);
/// Most nodes `dht sim --model` simulates (ids and routing tables only: about 2.5 KB each).
pub const MAX_MODEL_NODES: u64 = 1_000_000;
/// Most nodes `dht sim --swarm` starts (full libp2p swarms in one process stop being usable
/// between 200 and 500).
pub const MAX_SWARM_NODES: u64 = 1_000;
/// Interval between readiness checks.
const READY_POLL: Duration = Duration::from_millis(100);

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

fn options(cli: &Cli, listen: Vec<Multiaddr>, bootstrap: Vec<Multiaddr>) -> Result<DhtOptions> {
    let k = NonZeroUsize::new(cli.replication_factor)
        .ok_or_else(|| anyhow!("replication factor must be at least 1"))?;
    let mut o = DhtOptions::default()
        .listen_on(listen)
        .replication_factor(k)
        .kad_protocol(&cli.kad_protocol)
        .context("--kad-protocol")?;
    o.bootstrap = bootstrap;
    if cli.amino {
        o = o.amino();
    }
    if cli.fast {
        o = o.timing(Timing::fast());
    }
    if let Some(ttl) = cli.record_ttl {
        o.protocol.timing.record_ttl = ttl;
    }
    o.store_limits.max_records = cli.max_records;
    o.protocol.validate().context("timing")?;
    Ok(o)
}

/// The listen addresses of node `i` of a local network: the TCP ports shifted by `i`.
fn shifted(addrs: &[Multiaddr], i: usize) -> Result<Vec<Multiaddr>> {
    addrs
        .iter()
        .map(|a| {
            a.iter()
                .map(|p| match p {
                    Protocol::Tcp(0) => Ok(Protocol::Tcp(0)),
                    Protocol::Tcp(port) => u16::try_from(usize::from(port) + i)
                        .map(Protocol::Tcp)
                        .map_err(|_| {
                            anyhow!(
                                "node {i} would need TCP port {} (beyond 65535)",
                                usize::from(port) + i
                            )
                        }),
                    other => Ok(other),
                })
                .collect::<Result<Multiaddr>>()
        })
        .collect()
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

/// A client node that listens nowhere, for one operation. With --key-file it runs under that
/// identity, so a publisher's one-shot puts are its own: it may update and renew its free keys.
async fn client_node(cli: &Cli) -> Result<Dht> {
    let mut opts = options(cli, Vec::new(), Vec::new())?.client_mode(true);
    if let Some(path) = &cli.key_file {
        opts = opts.keypair(identity::load_or_create(path)?);
    }
    Ok(Dht::start(opts).await?)
}

/// A node that listens nowhere and joins through `-c`, for one operation.
pub(crate) async fn short_lived(cli: &Cli) -> Result<Dht> {
    if cli.connect.is_empty() {
        bail!("no node to talk to: give one with -c MULTIADDR");
    }
    let node = client_node(cli).await?;
    let mut errors = Vec::new();
    let mut reached = Vec::new();
    for addr in &cli.connect {
        match node.connect(addr.clone()).await {
            Ok(peer) => reached.push(peer),
            Err(e) => errors.push(e.to_string()),
        }
    }
    if errors.len() == cli.connect.len() {
        node.stop().await;
        bail!("cannot reach any node: {}", errors.join("; "));
    }
    let deadline = tokio::time::Instant::now() + JOIN_TIMEOUT;
    // A node still joining knows no one: what goes through it would reach it alone. Wait for
    // one of those given to have joined (a lone node, with no one to join, has).
    while !any_joined(&node, &reached).await {
        if tokio::time::Instant::now() >= deadline {
            warn!("the nodes given with -c are still joining; going on with what they know");
            break;
        }
        tokio::time::sleep(READY_POLL).await;
    }
    while node.routing_table().await?.is_empty() {
        if tokio::time::Instant::now() >= deadline {
            node.stop().await;
            bail!("the nodes given with -c do not speak {}", cli.kad_protocol);
        }
        tokio::time::sleep(READY_POLL).await;
    }
    Ok(node)
}

async fn put(cli: &Cli, at: Option<&str>, value: Option<&str>) -> Result<ExitCode> {
    let value = match value {
        Some(v) if v != "-" => v.as_bytes().to_vec(),
        _ => {
            let mut buf = Vec::new();
            std::io::stdin()
                .read_to_end(&mut buf)
                .context("reading the value from standard input")?;
            buf
        }
    };
    let key = at.map(Key::parse).transpose()?;
    let node = short_lived(cli).await?;
    let result = match &key {
        Some(k) => node.store_at(k, value).await,
        None => node.store(value).await,
    };
    node.stop().await;
    let stored = result?;
    // This short-lived node's own copy leaves with it: only the peers count.
    if stored.remote == 0 {
        bail!("could not store {}: no node acknowledged it", stored.key);
    }
    println!("{} {}", stored.key, stored.remote);
    Ok(ExitCode::SUCCESS)
}

async fn get(cli: &Cli, key: &str) -> Result<ExitCode> {
    let key = Key::parse(key)?;
    let node = short_lived(cli).await?;
    let result = node.fetch(&key).await;
    node.stop().await;
    let value = result?;
    let mut out = std::io::stdout().lock();
    out.write_all(&value)?;
    if out.is_terminal() {
        writeln!(out)?;
    }
    out.flush()?;
    Ok(ExitCode::SUCCESS)
}

/// Whether one of `peers` has joined its network (or has none to join). A peer that does not
/// describe itself (another implementation) is taken as joined.
async fn any_joined(node: &Dht, peers: &[PeerId]) -> bool {
    for peer in peers {
        match node.remote_info(*peer).await {
            Ok(info) if info.joining => {}
            _ => return true,
        }
    }
    false
}

/// Healthy means ready: the node answers and has joined its network (a node with peers to
/// join through and an empty routing table would keep a store to itself).
async fn health(cli: &Cli, addr: Multiaddr) -> Result<ExitCode> {
    let node = client_node(cli).await?;
    let result = async {
        let peer = node.connect(addr.clone()).await?;
        let info = node.remote_info(peer).await.ok();
        Ok::<_, dht::Error>((peer, info))
    }
    .await;
    node.stop().await;
    let (peer, info) = result.with_context(|| format!("no node answers at {addr}"))?;
    match info {
        Some(info) if info.joining => {
            eprintln!("joining: {peer} answers but has not joined its network yet");
            Ok(ExitCode::FAILURE)
        }
        Some(info) => {
            let n = info.routing_table.len();
            println!("ok {peer} ({n} peers in its routing table)");
            Ok(ExitCode::SUCCESS)
        }
        None => {
            println!("ok {peer}");
            Ok(ExitCode::SUCCESS)
        }
    }
}

async fn info(cli: &Cli, addr: Multiaddr, json: bool) -> Result<ExitCode> {
    let node = client_node(cli).await?;
    let result = async {
        let peer = node
            .connect(addr.clone())
            .await
            .with_context(|| format!("no node answers at {addr}"))?;
        node.remote_info(peer)
            .await
            .with_context(|| format!("{addr} did not describe itself"))
    }
    .await;
    node.stop().await;
    let info = result?;
    let mut out = std::io::stdout().lock();
    if json {
        serde_json::to_writer(&mut out, &info)?;
        writeln!(out)?;
    } else {
        writeln!(out, "peer id:         {}", info.peer_id)?;
        writeln!(out, "agent:           {}", info.agent_version)?;
        for a in &info.listen_addrs {
            writeln!(out, "listening on:    {a}")?;
        }
        writeln!(out, "connected peers: {}", info.connected_peers)?;
        writeln!(out, "routing table:   {} peers", info.routing_table.len())?;
        for e in &info.routing_table {
            writeln!(out, "  {:3} {}", e.bucket, e.peer)?;
        }
        writeln!(
            out,
            "stored:          {} keys, {}",
            info.stored_keys,
            console::human_bytes(info.stored_bytes as u64)
        )?;
        writeln!(
            out,
            "uptime:          {}",
            console::human_duration(Duration::from_secs(info.uptime_secs))
        )?;
    }
    out.flush()?;
    Ok(ExitCode::SUCCESS)
}

async fn bench(
    cli: &Cli,
    (ops, concurrency, size): (usize, usize, usize),
    duration: Option<Duration>,
    json: bool,
) -> Result<ExitCode> {
    // Two client nodes, so that every fetch is served by the network, not by the writer.
    let writer = short_lived(cli).await?;
    let reader = match short_lived(cli).await {
        Ok(r) => r,
        Err(e) => {
            writer.stop().await;
            return Err(e);
        }
    };
    let report = crate::bench::run(&writer, &reader, ops, concurrency, size, duration).await;
    writer.stop().await;
    reader.stop().await;
    let mut out = std::io::stdout().lock();
    if json {
        serde_json::to_writer(&mut out, &report)?;
        writeln!(out)?;
    } else {
        crate::bench::print_table(&report, &mut out)?;
    }
    let failed = report.store.errors + report.fetch.errors;
    Ok(if failed == 0 {
        ExitCode::SUCCESS
    } else {
        ExitCode::FAILURE
    })
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
