//! The routing one-shots, named as kubo's `ipfs routing` names them: `findprovs`, `findpeer`, and
//! `ipns resolve` / `ipns publish`. Each starts a short-lived node that joins through `-c`, asks,
//! prints and exits 1 with an `error:` line when nothing was found.

use std::io::Write;
use std::process::ExitCode;

use anyhow::{Result, bail};
use dht::ipns::{Name, PublishOptions};
use dht::{Dht, Key, PeerId};

use crate::cli::{Cli, IpnsCommand};

/// `dht findprovs KEY`: one provider per line, its peer id and then its addresses.
/// `join` starts the short-lived node, once the arguments are known to be good.
pub async fn findprovs<J: Future<Output = Result<Dht>>>(
    key: &str,
    count: u64,
    join: impl FnOnce() -> J,
) -> Result<ExitCode> {
    let key = Key::parse(key)?;
    let count = usize::try_from(count).unwrap_or(usize::MAX);
    let node = join().await?;
    let result = node.providers(&key, count).await;
    node.stop().await;
    let providers = result?;
    if providers.is_empty() {
        bail!("no providers found for {key}");
    }
    let mut out = std::io::stdout().lock();
    for p in providers {
        let addrs: Vec<String> = p.addrs.iter().map(ToString::to_string).collect();
        if addrs.is_empty() {
            writeln!(out, "{}", p.peer)?;
        } else {
            writeln!(out, "{} {}", p.peer, addrs.join(" "))?;
        }
    }
    out.flush()?;
    Ok(ExitCode::SUCCESS)
}

/// `dht findpeer PEER`: its addresses, one per line.
pub async fn findpeer<J: Future<Output = Result<Dht>>>(
    peer: PeerId,
    join: impl FnOnce() -> J,
) -> Result<ExitCode> {
    let node = join().await?;
    let result = node.find_peer(peer).await;
    node.stop().await;
    let found = result?;
    if found.addrs.is_empty() {
        bail!("peer {peer} was reached, but it announces no address");
    }
    let mut out = std::io::stdout().lock();
    for a in &found.addrs {
        writeln!(out, "{a}")?;
    }
    out.flush()?;
    Ok(ExitCode::SUCCESS)
}

/// `dht ipns resolve NAME` and `dht ipns publish PATH`.
pub async fn ipns<J: Future<Output = Result<Dht>>>(
    cli: &Cli,
    command: &IpnsCommand,
    join: impl FnOnce() -> J,
) -> Result<ExitCode> {
    match command {
        IpnsCommand::Resolve { name } => {
            let name: Name = name.parse()?;
            let node = join().await?;
            let result = node.resolve_ipns(&name).await;
            node.stop().await;
            let resolved = result?;
            let mut out = std::io::stdout().lock();
            out.write_all(&resolved.value)?;
            writeln!(out)?;
            out.flush()?;
        }
        IpnsCommand::Publish {
            path,
            lifetime,
            ttl,
        } => {
            // The name is the key's: a one-shot node's own key dies with it.
            let Some(key_file) = &cli.key_file else {
                bail!("ipns publish needs --key-file PATH: the name's key (created when missing)");
            };
            let key = dht::identity::load_or_create(key_file)?;
            let node = join().await?;
            let options = PublishOptions {
                key: Some(key),
                lifetime: *lifetime,
                ttl: *ttl,
            };
            let result = node.publish_ipns(path.as_bytes(), options).await;
            node.stop().await;
            let published = result?;
            println!(
                "/ipns/{} {} {}",
                published.name, published.sequence, published.stored.nodes
            );
        }
    }
    Ok(ExitCode::SUCCESS)
}
