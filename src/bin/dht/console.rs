//! The interactive console: a pure line parser, and an executor that renders results over the handle.

use std::io::Write;
use std::time::Duration;

use dht::ipns::{Name, PublishOptions};
use dht::{Dht, Key, PeerId};

use crate::cli::DEFAULT_PROVIDERS;

/// Help printed by `h`.
pub const HELP: &str = "\
commands:
  h                 this help
  i                 node info: peer id, addresses, peers, routing table, store, uptime
  r                 routing table: bucket, peer id, addresses
  p                 connected peers with addresses
  s VALUE           store VALUE (the rest of the line) under its SHA-256; prints <key> <nodes>
  sa KEY VALUE      store VALUE under KEY; prints <key> <nodes>
  f KEY             fetch the value under KEY
  l                 local store: key, size, preview
  provide KEY       announce this node as a provider of KEY (a CID, or any key); renewed every 22h
  findprovs KEY     providers of KEY: peer id and addresses, one per line
  findpeer PEER     the addresses of PEER
  ipns publish PATH point this node's IPNS name at PATH (e.g. /ipfs/bafy...); prints the name
  ipns resolve NAME the path an IPNS name points at
  b MESSAGE         broadcast MESSAGE to every node
  c PEER MESSAGE    send a custom command to PEER; prints its reply (this node echoes)
  bl [PEER]         the block list; with PEER, block it
  ub PEER           unblock PEER
  q                 quit
keys: 64 hex characters name a content key; a CID its multihash; /ipns/PEER and /pk/PEER the
namespace and the peer's multihash; `hex:...` a key by its bytes; other text is the key itself";

/// One console command.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Line {
    /// Nothing typed.
    Empty,
    /// `h`
    Help,
    /// `i`
    Info,
    /// `r`
    Routes,
    /// `p`
    Peers,
    /// `s VALUE`
    Store(String),
    /// `sa KEY VALUE`
    StoreAt(Key, String),
    /// `f KEY`
    Fetch(Key),
    /// `l`
    Local,
    /// `provide KEY`
    Provide(Key),
    /// `findprovs KEY`
    FindProviders(Key),
    /// `findpeer PEER`
    FindPeer(PeerId),
    /// `ipns publish PATH`
    IpnsPublish(String),
    /// `ipns resolve NAME`
    IpnsResolve(Name),
    /// `b MESSAGE`
    Broadcast(String),
    /// `c PEER MESSAGE`
    Custom(PeerId, String),
    /// `bl`
    BlockList,
    /// `bl PEER`
    Block(PeerId),
    /// `ub PEER`
    Unblock(PeerId),
    /// `q`
    Quit,
}

/// Parses one line; the error is the message to print after `error: `.
pub fn parse(line: &str) -> Result<Line, String> {
    let line = line.trim_end_matches(['\r', '\n']);
    let trimmed = line.trim_start();
    if trimmed.trim().is_empty() {
        return Ok(Line::Empty);
    }
    let (word, rest) = match trimmed.split_once(' ') {
        Some((w, r)) => (w, r),
        None => (trimmed, ""),
    };
    let no_args = |l: Line| {
        if rest.trim().is_empty() {
            Ok(l)
        } else {
            Err(format!("usage: {word}"))
        }
    };
    match word {
        "h" | "help" | "?" => no_args(Line::Help),
        "i" => no_args(Line::Info),
        "r" => no_args(Line::Routes),
        "p" => no_args(Line::Peers),
        "l" => no_args(Line::Local),
        "q" | "quit" | "exit" => no_args(Line::Quit),
        "s" if !rest.is_empty() => Ok(Line::Store(rest.to_owned())),
        "s" => Err("usage: s VALUE".into()),
        "sa" => match rest.trim_start().split_once(' ') {
            Some((key, value)) if !value.is_empty() => Ok(Line::StoreAt(
                Key::parse(key).map_err(|e| e.to_string())?,
                value.to_owned(),
            )),
            _ => Err("usage: sa KEY VALUE".into()),
        },
        "f" => match rest.trim() {
            "" => Err("usage: f KEY".into()),
            key if key.contains(' ') => Err("usage: f KEY".into()),
            key => Ok(Line::Fetch(Key::parse(key).map_err(|e| e.to_string())?)),
        },
        "b" if !rest.is_empty() => Ok(Line::Broadcast(rest.to_owned())),
        "b" => Err("usage: b MESSAGE".into()),
        "c" => match rest.trim_start().split_once(' ') {
            Some((peer, message)) if !message.is_empty() => {
                let peer = peer
                    .parse::<PeerId>()
                    .map_err(|_| format!("bad peer id {peer:?}"))?;
                Ok(Line::Custom(peer, message.to_owned()))
            }
            _ => Err("usage: c PEER MESSAGE".into()),
        },
        "bl" | "ub" => {
            let arg = rest.trim();
            match (word, arg) {
                ("bl", "") => Ok(Line::BlockList),
                ("ub", "") => Err("usage: ub PEER".into()),
                (_, peer) => {
                    let peer = peer
                        .parse::<PeerId>()
                        .map_err(|_| format!("bad peer id {peer:?}"))?;
                    Ok(if word == "bl" {
                        Line::Block(peer)
                    } else {
                        Line::Unblock(peer)
                    })
                }
            }
        }
        "provide" | "findprovs" => match rest.trim() {
            "" => Err(format!("usage: {word} KEY")),
            key if key.contains(' ') => Err(format!("usage: {word} KEY")),
            key => {
                let key = Key::parse(key).map_err(|e| e.to_string())?;
                Ok(if word == "provide" {
                    Line::Provide(key)
                } else {
                    Line::FindProviders(key)
                })
            }
        },
        "findpeer" => match rest.trim() {
            "" => Err("usage: findpeer PEER".into()),
            peer => peer
                .parse::<PeerId>()
                .map(Line::FindPeer)
                .map_err(|_| format!("bad peer id {peer:?}")),
        },
        "ipns" => match rest.trim().split_once(' ') {
            Some(("publish", path)) if !path.trim().is_empty() => {
                Ok(Line::IpnsPublish(path.trim().to_owned()))
            }
            Some(("resolve", name)) => name
                .trim()
                .parse::<Name>()
                .map(Line::IpnsResolve)
                .map_err(|e| e.to_string()),
            _ => Err("usage: ipns publish PATH | ipns resolve NAME".into()),
        },
        other => Err(format!("unknown command '{other}' (h for help)")),
    }
}

/// Shows bytes as text: printable characters as they are, others as `.`.
pub fn printable(bytes: &[u8]) -> String {
    String::from_utf8_lossy(bytes)
        .chars()
        .map(|c| if c.is_control() { '.' } else { c })
        .collect()
}

/// A duration as `1h02m03s`.
pub fn human_duration(d: Duration) -> String {
    let s = d.as_secs();
    format!("{}h{:02}m{:02}s", s / 3600, s / 60 % 60, s % 60)
}

/// A byte count as `12.3 KiB`.
pub fn human_bytes(n: u64) -> String {
    const UNITS: [&str; 4] = ["B", "KiB", "MiB", "GiB"];
    let mut v = n as f64;
    let mut unit = 0;
    while v >= 1024.0 && unit < UNITS.len() - 1 {
        v /= 1024.0;
        unit += 1;
    }
    if unit == 0 {
        format!("{n} B")
    } else {
        format!("{v:.1} {}", UNITS[unit])
    }
}

/// Runs one command against `node`, writing its result to `out`. Returns `false` on quit.
pub async fn execute(node: &Dht, line: Line, out: &mut impl Write) -> std::io::Result<bool> {
    let quit = line == Line::Quit;
    let result: anyhow::Result<()> = async {
        match line {
            Line::Empty => {}
            Line::Quit => return Ok(()),
            Line::Help => writeln!(out, "{HELP}")?,
            Line::Info => {
                let s = node.status().await?;
                writeln!(out, "peer id:        {}", s.peer_id)?;
                for a in &s.listen_addrs {
                    writeln!(out, "listening on:   {a}")?;
                }
                writeln!(out, "connected peers: {}", s.connected_peers)?;
                writeln!(out, "routing table:  {} peers", s.routing_table_size)?;
                writeln!(
                    out,
                    "stored:         {} keys, {}",
                    s.stored_keys,
                    human_bytes(s.stored_bytes as u64)
                )?;
                match &s.database {
                    Some(db) => writeln!(
                        out,
                        "persistence:    {} ({} changes written, {} failed writes)",
                        db.display(),
                        s.counters.records_written,
                        s.counters.write_errors
                    )?,
                    None => writeln!(out, "persistence:    none (records are lost at stop)")?,
                }
                if s.mirror {
                    writeln!(out, "mirror:         yes (keeps every record it is sent)")?;
                }
                writeln!(out, "uptime:         {}", human_duration(s.uptime))?;
            }
            Line::Routes => {
                let table = node.routing_table().await?;
                for e in &table {
                    let addrs: Vec<String> = e.addrs.iter().map(ToString::to_string).collect();
                    writeln!(out, "{:3} {} {}", e.bucket, e.peer, addrs.join(","))?;
                }
                writeln!(out, "{} peers", table.len())?;
            }
            Line::Peers => {
                let peers = node.connected_peers().await?;
                for p in &peers {
                    let addrs: Vec<String> = p.addrs.iter().map(ToString::to_string).collect();
                    writeln!(out, "{} {}", p.peer, addrs.join(","))?;
                }
                writeln!(out, "{} connected", peers.len())?;
            }
            Line::Store(value) => {
                let stored = node.store(value.into_bytes()).await?;
                writeln!(out, "{} {}", stored.key, stored.nodes)?;
            }
            Line::StoreAt(key, value) => {
                let stored = node.store_at(&key, value.into_bytes()).await?;
                writeln!(out, "{} {}", stored.key, stored.nodes)?;
            }
            Line::Fetch(key) => {
                let value = node.fetch(&key).await?;
                out.write_all(&value)?;
                writeln!(out)?;
            }
            Line::Local => {
                let records = node.local_records().await?;
                for r in &records {
                    let more = if r.size > r.preview.len() { "…" } else { "" };
                    writeln!(out, "{} {} {}{more}", r.key, r.size, printable(&r.preview))?;
                }
                writeln!(out, "{} records", records.len())?;
            }
            Line::Provide(key) => {
                let provided = node.provide(&key).await?;
                writeln!(
                    out,
                    "provided {} on {} nodes",
                    provided.key, provided.remote
                )?;
            }
            Line::FindProviders(key) => {
                let found = node.providers(&key, DEFAULT_PROVIDERS as usize).await?;
                for p in &found {
                    let addrs: Vec<String> = p.addrs.iter().map(ToString::to_string).collect();
                    writeln!(out, "{} {}", p.peer, addrs.join(" "))?;
                }
                writeln!(out, "{} providers", found.len())?;
            }
            Line::FindPeer(peer) => {
                let found = node.find_peer(peer).await?;
                for a in &found.addrs {
                    writeln!(out, "{a}")?;
                }
                let how = if found.reached {
                    "reached"
                } else {
                    "not reached"
                };
                writeln!(out, "{} addresses ({how})", found.addrs.len())?;
            }
            Line::IpnsPublish(path) => {
                let published = node
                    .publish_ipns(path.as_bytes(), PublishOptions::default())
                    .await?;
                writeln!(
                    out,
                    "published /ipns/{} sequence {} on {} nodes",
                    published.name, published.sequence, published.stored.nodes
                )?;
            }
            Line::IpnsResolve(name) => {
                let resolved = node.resolve_ipns(&name).await?;
                out.write_all(&resolved.value)?;
                writeln!(out, " (sequence {})", resolved.sequence)?;
            }
            Line::Broadcast(message) => {
                let n = node.broadcast(message.into_bytes()).await?;
                writeln!(out, "broadcast handed to {n} peers")?;
            }
            Line::BlockList => {
                let list = node.blocked().await?;
                for b in &list {
                    match b.remaining {
                        Some(left) => {
                            writeln!(out, "{} misbehaved, {} left", b.peer, human_duration(left))?
                        }
                        None => writeln!(out, "{} blocked by hand", b.peer)?,
                    }
                }
                writeln!(out, "{} blocked", list.len())?;
            }
            Line::Block(peer) => {
                node.block(peer).await?;
                writeln!(out, "blocked {peer}")?;
            }
            Line::Unblock(peer) => {
                let was = node.unblock(peer).await?;
                writeln!(
                    out,
                    "{} {peer}",
                    if was { "unblocked" } else { "was not blocked:" }
                )?;
            }
            Line::Custom(peer, message) => {
                let reply = node.custom_cmd(peer, message.into_bytes()).await?;
                writeln!(out, "{}", printable(&reply))?;
            }
        }
        Ok(())
    }
    .await;
    if let Err(e) = result {
        writeln!(out, "error: {e}")?;
    }
    out.flush()?;
    Ok(!quit)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn store_keeps_the_rest_of_the_line_with_spaces() {
        assert_eq!(
            parse("s hello  world "),
            Ok(Line::Store("hello  world ".into()))
        );
        assert_eq!(parse("s"), Err("usage: s VALUE".into()));
    }

    #[test]
    fn keys_follow_the_documented_rule() {
        let hex = "2cf24dba5fb0a30e26e83b2ac5b9e29e1b161e5c1fa7425e73043362938b9824";
        assert_eq!(
            parse(&format!("f {hex}")),
            Ok(Line::Fetch(Key::from_hex(hex).expect("hex")))
        );
        assert_eq!(
            parse("f /v/name"),
            Ok(Line::Fetch(Key::parse("/v/name").expect("key")))
        );
        assert!(parse("f hex:zz").expect_err("bad hex").contains("bad hex"));
        assert_eq!(parse("f"), Err("usage: f KEY".into()));
        assert_eq!(
            parse("sa /k two words"),
            Ok(Line::StoreAt(
                Key::parse("/k").expect("k"),
                "two words".into()
            ))
        );
        assert_eq!(parse("sa /k"), Err("usage: sa KEY VALUE".into()));
    }

    #[test]
    fn commands_and_errors() {
        assert_eq!(parse(""), Ok(Line::Empty));
        assert_eq!(parse("   "), Ok(Line::Empty));
        assert_eq!(parse("q"), Ok(Line::Quit));
        assert_eq!(parse("i\r\n"), Ok(Line::Info));
        assert_eq!(parse("x"), Err("unknown command 'x' (h for help)".into()));
        assert_eq!(parse("i extra"), Err("usage: i".into()));
        assert!(
            parse("c notapeer hi")
                .expect_err("bad peer")
                .contains("bad peer id")
        );
        let peer = PeerId::random();
        assert_eq!(
            parse(&format!("c {peer} hi there")),
            Ok(Line::Custom(peer, "hi there".into()))
        );
        assert_eq!(parse("b hi all"), Ok(Line::Broadcast("hi all".into())));
        assert_eq!(parse("bl"), Ok(Line::BlockList));
        assert_eq!(parse(&format!("bl {peer}")), Ok(Line::Block(peer)));
        assert_eq!(parse(&format!("ub {peer}")), Ok(Line::Unblock(peer)));
        assert_eq!(parse("ub"), Err("usage: ub PEER".into()));
        assert!(parse("bl nope").is_err());
    }

    #[test]
    fn routing_and_ipns_commands() {
        let cid = "QmY7Yh4UquoXHLPFo2XbhXkhBvFoPwmQUSa92pxnxjQuPU";
        let key = Key::parse(cid).expect("a CID");
        assert_eq!(
            parse(&format!("provide {cid}")),
            Ok(Line::Provide(key.clone()))
        );
        assert_eq!(
            parse(&format!("findprovs {cid}")),
            Ok(Line::FindProviders(key))
        );
        assert!(parse("provide").is_err());
        assert!(parse("findprovs a b").is_err());
        let peer = PeerId::random();
        assert_eq!(parse(&format!("findpeer {peer}")), Ok(Line::FindPeer(peer)));
        assert!(parse("findpeer nonsense").is_err());
        assert_eq!(
            parse("ipns publish /ipfs/bafy x"),
            Ok(Line::IpnsPublish("/ipfs/bafy x".into()))
        );
        assert_eq!(
            parse(&format!("ipns resolve /ipns/{peer}")),
            Ok(Line::IpnsResolve(Name(peer)))
        );
        assert!(parse("ipns resolve nonsense").is_err());
        assert!(parse("ipns publish").is_err());
        assert!(parse("ipns").is_err());
    }

    #[test]
    fn rendering_helpers() {
        assert_eq!(printable(b"a\x00b"), "a.b");
        assert_eq!(human_bytes(512), "512 B");
        assert_eq!(human_bytes(1536), "1.5 KiB");
        assert_eq!(human_duration(Duration::from_secs(3723)), "1h02m03s");
    }
}
