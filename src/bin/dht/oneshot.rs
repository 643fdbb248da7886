//! The one-shot commands: a short-lived client node joins, does one thing (put, get, health,
//! info, bench) and stops.

use std::io::{IsTerminal, Read, Write};
use std::process::ExitCode;
use std::time::Duration;

use anyhow::{Context, Result, bail};
use dht::identity;
use dht::{Dht, Key, Multiaddr, PeerId};
use tracing::warn;

use crate::cli::{Cli, options};
use crate::console;

/// Longest wait for a one-shot node to join through its bootstrap nodes.
pub const JOIN_TIMEOUT: Duration = Duration::from_secs(10);
/// Interval between readiness checks.
pub const READY_POLL: Duration = Duration::from_millis(100);

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

pub(crate) async fn put(cli: &Cli, at: Option<&str>, value: Option<&str>) -> Result<ExitCode> {
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

pub(crate) async fn get(cli: &Cli, key: &str) -> Result<ExitCode> {
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
pub(crate) async fn health(cli: &Cli, addr: Multiaddr) -> Result<ExitCode> {
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

pub(crate) async fn info(cli: &Cli, addr: Multiaddr, json: bool) -> Result<ExitCode> {
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

pub(crate) async fn bench(
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
