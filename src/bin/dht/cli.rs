//! Command-line flags (go-dht's, with multiaddrs) and the one-shot subcommands.

use std::net::IpAddr;
use std::num::NonZeroUsize;
use std::path::PathBuf;

use anyhow::{Context, Result, anyhow};

use clap::{Parser, Subcommand};
use dht::limits::{DEFAULT_KAD_PROTOCOL, DEFAULT_REPLICATION_FACTOR, STORE_MAX_RECORDS};
use dht::{DhtOptions, Multiaddr, Timing};
use libp2p::multiaddr::Protocol;

/// Default listen address, as go-dht's `0.0.0.0:3000`.
pub const DEFAULT_LISTEN: &str = "/ip4/0.0.0.0/tcp/3000";
/// Default address `dht health` checks.
pub const DEFAULT_HEALTH_ADDR: &str = "/ip4/127.0.0.1/tcp/3000";
/// Most nodes `-n` starts in one process.
pub const MAX_LOCAL_NETWORK: usize = 512;

const KEY_RULE: &str = "\
KEYS:
  64 hexadecimal characters name a content key (the SHA-256 of a value; `printf %s VALUE | sha256sum`
  gives the same). A CID (Qm..., bafy..., bafk...) names its multihash, as the IPFS DHT keys content.
  /ipns/PEER and /pk/PEER name the namespace and the peer id's multihash. `hex:` followed by hex
  names a key by its bytes. Any other text is a key made of exactly those bytes, so `/v/name` as
  used by other libp2p tools works.

ENVIRONMENT:
  Every node flag can come from the environment: DHT_LISTEN, DHT_CONNECT (comma-separated),
  DHT_VERBOSE, DHT_KEY_FILE, DHT_REPLICATION_FACTOR, DHT_KAD_PROTOCOL, DHT_RECORD_TTL, DHT_FAST,
  DHT_CLIENT, DHT_BLOCK, DHT_DATA_DIR, DHT_MIRROR, DHT_MAX_RECORDS, DHT_AMINO; flags win.

ADDRESSES:
  Multiaddrs such as /ip4/127.0.0.1/tcp/3000, /ip6/::1/tcp/3000, /dns4/bootstrap/tcp/3000, with or
  without /p2p/<peer id>; `host:port` is accepted as shorthand (1.2.3.4:3000, [::1]:3000, name:3000).

EXAMPLES:
  dht -n 5 -i                                  five local nodes on ports 3000-3004, console on the first
  dht -l /ip4/0.0.0.0/tcp/4000 -c 127.0.0.1:3000   one node joining another
  dht put 'hello world' -c 127.0.0.1:3000      store a value, print `<key> <nodes>`
  dht get <KEY> -c 127.0.0.1:3000              print the value stored under KEY
  dht findprovs <CID> -c 127.0.0.1:3000        print the providers of a CID, one per line
  dht findpeer <PEER> -c 127.0.0.1:3000        print a peer's addresses
  dht ipns resolve <NAME> -c 127.0.0.1:3000    print the path an IPNS name points at";

/// A Kademlia DHT node on libp2p (TCP + noise + yamux).
#[derive(Debug, Parser)]
#[command(name = "dht", version, about, after_help = KEY_RULE)]
pub struct Cli {
    /// Address to listen on (repeatable). Example: -l /ip4/0.0.0.0/tcp/3000
    #[arg(short = 'l', long = "listen", value_name = "MULTIADDR", value_parser = parse_addr,
          default_value = DEFAULT_LISTEN, env = "DHT_LISTEN", value_delimiter = ',')]
    pub listen: Vec<Multiaddr>,

    /// Node to join through (repeatable). Example: -c /ip4/10.0.0.5/tcp/3000/p2p/12D3KooW...
    #[arg(short = 'c', long = "connect", value_name = "MULTIADDR", value_parser = parse_addr, global = true,
          env = "DHT_CONNECT", value_delimiter = ',')]
    pub connect: Vec<Multiaddr>,

    /// Interactive console (type `h` for its commands); with -n it drives the first node
    #[arg(short = 'i', long = "interactive", conflicts_with = "stat")]
    pub interactive: bool,

    /// Stat mode: a line of peers, store size, operations per second and bandwidth every second
    #[arg(short = 's', long = "stat")]
    pub stat: bool,

    /// Log detail: 0 quiet, 1 errors, 2 warnings, 3 info, 4 debug, 5 trace. RUST_LOG overrides it
    #[arg(short = 'v', long = "verbose", value_name = "0..5", default_value_t = 3, global = true, env = "DHT_VERBOSE",
          value_parser = clap::value_parser!(u8).range(0..=5))]
    pub verbose: u8,

    /// Start N nodes in this process on consecutive ports from the listen port, all joined to the
    /// first (or to -c). Example: -n 5
    #[arg(short = 'n', long = "network", value_name = "N", default_value_t = 1,
          value_parser = clap::value_parser!(u16).range(1..=MAX_LOCAL_NETWORK as i64))]
    pub network: u16,

    /// Key file holding the node's identity; created when missing, so the peer id survives
    /// restarts. With -n it is the first node's.
    #[arg(
        long = "key-file",
        value_name = "PATH",
        global = true,
        env = "DHT_KEY_FILE"
    )]
    pub key_file: Option<PathBuf>,

    /// Number of closest nodes each value is stored on
    #[arg(long = "replication-factor", value_name = "K", default_value_t = DEFAULT_REPLICATION_FACTOR,
          global = true, value_parser = parse_k, env = "DHT_REPLICATION_FACTOR")]
    pub replication_factor: usize,

    /// Kademlia protocol name; change it only for a private network
    #[arg(long = "kad-protocol", value_name = "NAME", default_value = DEFAULT_KAD_PROTOCOL, global = true,
          env = "DHT_KAD_PROTOCOL")]
    pub kad_protocol: String,

    /// Refuse this peer (repeatable): no connection, never in the routing table.
    /// Misbehaving peers are also blocked automatically for a while
    #[arg(
        long = "block",
        value_name = "PEER",
        env = "DHT_BLOCK",
        value_delimiter = ','
    )]
    pub block: Vec<dht::PeerId>,

    /// Use the DHT without serving it: listen nowhere, never hold values for others. For a console
    /// attached to a running network (docker exec ... dht --client -i -c ...)
    #[arg(long = "client", conflicts_with = "network", env = "DHT_CLIENT")]
    pub client: bool,

    /// How long stored values live unless their publisher stores them again. Example: 48h, 30m, 90s
    #[arg(long = "record-ttl", value_name = "DURATION", value_parser = parse_duration, global = true,
          env = "DHT_RECORD_TTL")]
    pub record_ttl: Option<std::time::Duration>,

    /// Keep the identity key and the records here across restarts (a redb database). With -n each
    /// node gets DIR/<i>. Without it the node keeps everything in memory and loses it at stop
    #[arg(
        long = "data-dir",
        value_name = "DIR",
        global = true,
        env = "DHT_DATA_DIR"
    )]
    pub data_dir: Option<PathBuf>,

    /// Mirror node: keep a copy of every record its feeders (--mirror-feeder) send it; anyone
    /// else's push is refused. With -n the first node is the mirror, and the others feed it
    #[arg(long = "mirror", env = "DHT_MIRROR", conflicts_with = "client")]
    pub mirror: bool,

    /// As a mirror, take the pushes of this peer (repeatable): the nodes that name this one
    /// with --mirror-peer
    #[arg(
        long = "mirror-feeder",
        value_name = "PEER",
        env = "DHT_MIRROR_FEEDER",
        value_delimiter = ',',
        requires = "mirror"
    )]
    pub mirror_feeder: Vec<dht::PeerId>,

    /// Feed this mirror node every record held here (repeatable). A peer that only announces
    /// the mirror protocol gets nothing
    #[arg(
        long = "mirror-peer",
        value_name = "PEER",
        env = "DHT_MIRROR_PEER",
        value_delimiter = ','
    )]
    pub mirror_peer: Vec<dht::PeerId>,

    /// Most records the local store holds
    #[arg(long = "max-records", value_name = "N", default_value_t = STORE_MAX_RECORDS, global = true,
          env = "DHT_MAX_RECORDS", value_parser = parse_positive)]
    pub max_records: usize,

    /// Amino mode: serve as a conforming IPFS DHT server (/ipfs/kad/1.0.0, k = 20, records kept
    /// 36 h, provider records 48 h and re-announced every 22 h, 4 MiB messages); only /pk/, /ipns/
    /// and provider records are kept
    #[arg(long = "amino", env = "DHT_AMINO", global = true,
          conflicts_with_all = ["kad_protocol", "replication_factor", "record_ttl"])]
    pub amino: bool,

    /// Threads that run the node: 1 runs everything on one thread (no wake-ups between threads;
    /// the default for a single node and for one-shot commands), 0 one per core (the default
    /// with -n and for sim)
    #[arg(long = "threads", value_name = "N", env = "DHT_THREADS", global = true,
          value_parser = clap::value_parser!(u16).range(0..=1024))]
    pub threads: Option<u16>,

    /// Use the fast timing profile (seconds instead of hours; for tests and experiments)
    #[arg(long = "fast", global = true, env = "DHT_FAST")]
    pub fast: bool,

    /// One-shot command; without one, run a node.
    #[command(subcommand)]
    pub command: Option<OneShot>,
}

/// Commands that start a short-lived node, act, print and exit with a meaningful status.
#[derive(Debug, Subcommand)]
pub enum OneShot {
    /// Store a value (the argument, or standard input when it is absent or `-`); prints `<key> <nodes>`
    Put {
        /// Store at this key instead of the value's SHA-256
        #[arg(long = "at", value_name = "KEY")]
        at: Option<String>,
        /// The value; `-` or nothing reads standard input
        value: Option<String>,
    },
    /// Fetch the value stored under KEY and print it as it is
    Get {
        /// The key (see KEYS below)
        key: String,
    },
    /// Find providers of KEY (a CID, or any key form): one per line, its peer id and then its
    /// addresses; exit 1 when none is found
    Findprovs {
        /// The key (see KEYS below)
        key: String,
        /// Stop once this many are found
        #[arg(long, default_value_t = DEFAULT_PROVIDERS, value_parser = clap::value_parser!(u64).range(1..=dht::core::queries::MAX_PROVIDERS_FOUND as u64))]
        count: u64,
    },
    /// Find the addresses of a peer: one multiaddr per line; exit 1 when none is known
    Findpeer {
        /// The peer id
        peer: dht::PeerId,
    },
    /// IPNS names: resolve one, or publish a path under this node's key (--key-file)
    Ipns {
        #[command(subcommand)]
        command: IpnsCommand,
    },
    /// Ask a node for its account of itself: peer id, addresses, routing table, store size
    Info {
        /// The node to ask
        #[arg(value_parser = parse_addr, default_value = DEFAULT_HEALTH_ADDR)]
        addr: Multiaddr,
        /// Print JSON instead of text
        #[arg(long)]
        json: bool,
    },
    /// Measure a running network: N stores, then N fetches of those values by another node
    Bench {
        /// Operations per phase
        #[arg(long, default_value_t = 1000, value_parser = clap::value_parser!(u64).range(1..=crate::bench::MAX_OPS as u64))]
        ops: u64,
        /// Operations in flight
        #[arg(long, default_value_t = 1, value_parser = clap::value_parser!(u64).range(1..=crate::bench::MAX_CONCURRENCY as u64))]
        concurrency: u64,
        /// Value size in bytes
        #[arg(long, default_value_t = 100, value_parser = clap::value_parser!(u64).range(1..=dht::limits::MAX_VALUE_SIZE as u64))]
        size: u64,
        /// Keep fetching the stored values (in a cycle) for this long instead of once each
        #[arg(long, value_name = "DURATION", value_parser = parse_duration)]
        duration: Option<std::time::Duration>,
        /// Print one JSON object instead of a table
        #[arg(long)]
        json: bool,
    },
    /// Hostile load, to measure a node's defences: one fresh identity sends requests of one kind
    /// (PUT_VALUE with distinct keys, or GET_VALUE / FIND_NODE for random keys) as fast as the node
    /// takes them; prints what was answered and refused
    Flood {
        /// The node to flood, with /p2p/<id>
        #[arg(value_parser = parse_addr)]
        addr: Multiaddr,
        /// How long
        #[arg(long, value_name = "DURATION", default_value = "60s", value_parser = parse_duration)]
        duration: std::time::Duration,
        /// The requests sent: put (PUT_VALUE), get (GET_VALUE) or find (FIND_NODE)
        #[arg(long, value_enum, default_value = "put")]
        kind: crate::flood::Kind,
        /// Value size in bytes (put)
        #[arg(long, default_value_t = dht::limits::MAX_VALUE_SIZE as u64, value_parser = clap::value_parser!(u64).range(1..=dht::limits::MAX_VALUE_SIZE as u64))]
        size: u64,
    },
    /// Simulate a network of N nodes: the node's own protocol core over a simulated network with a
    /// virtual clock, reproducible from --seed (--swarm: full libp2p nodes in memory instead;
    /// --model: the lookup state machine alone)
    Sim {
        /// Nodes to simulate
        #[arg(long, default_value_t = 100, value_parser = clap::value_parser!(u64).range(2..=1_000_000))]
        nodes: u64,
        /// What to run: steady (join, store, fetch), die30 (30% of the nodes die at once), churn
        /// (nodes leave and join for --duration), partition (a split that heals)
        #[arg(long, default_value = "steady")]
        scenario: dht::sim::scenario::Scenario,
        /// Seed of the run: the same seed gives the same run
        #[arg(long, default_value_t = 1)]
        seed: u64,
        /// Values stored (and fetched, each from another node)
        #[arg(long, default_value_t = 200)]
        values: u64,
        /// Mean one-way latency of the simulated network (each message takes 0.5x to 1.5x)
        #[arg(long, default_value = "20", value_name = "MS")]
        latency_ms: u64,
        /// Share of messages lost, from 0 to 1
        #[arg(long, default_value_t = 0.0)]
        loss: f64,
        /// Churn: simulated time the churn lasts
        #[arg(long, default_value = "48h", value_parser = parse_duration)]
        duration: std::time::Duration,
        /// Churn: share of the nodes replaced per hour
        #[arg(long, default_value_t = 0.05)]
        churn: f64,
        /// Run full libp2p nodes on the in-memory transport instead (a few hundred at most)
        #[arg(long, conflicts_with = "model")]
        swarm: bool,
        /// Lookups to measure
        #[arg(long, default_value_t = 200)]
        lookups: u64,
        /// Values to store and fetch
        #[arg(long, default_value_t = 50)]
        fetches: u64,
        /// Longest wait for the routing tables to fill
        #[arg(long, default_value = "300s", value_parser = parse_duration)]
        settle: std::time::Duration,
        /// Print one JSON object instead of text
        #[arg(long)]
        json: bool,
        /// Run our lookup state machine on a model of N nodes (ids and routing tables, an instant
        /// network) instead: for 1,000 to 100,000 nodes
        #[arg(long)]
        model: bool,
    },
    /// Exit 0 when a node answers at MULTIADDR over libp2p (default: the local node on port 3000)
    Health {
        /// The node to check
        #[arg(value_parser = parse_addr, default_value = DEFAULT_HEALTH_ADDR)]
        addr: Multiaddr,
    },
}

/// Providers `dht findprovs` stops at unless told (as kubo's `ipfs routing findprovs`).
pub const DEFAULT_PROVIDERS: u64 = 20;

/// What `dht ipns` does.
#[derive(Debug, Subcommand)]
pub enum IpnsCommand {
    /// Print the path NAME points at (the best valid record the network holds)
    Resolve {
        /// The name: a peer id (12D3KooW...) or libp2p-key CID (k51...), optionally after /ipns/
        name: String,
    },
    /// Publish PATH under the name of --key-file's key (created when missing); prints the name and
    /// the record's sequence number
    Publish {
        /// What the name points at, e.g. /ipfs/bafy...
        path: String,
        /// How long the record stays valid
        #[arg(long, value_name = "DURATION", default_value = "48h", value_parser = parse_duration)]
        lifetime: std::time::Duration,
        /// How long resolvers may cache it
        #[arg(long, value_name = "DURATION", default_value = "5m", value_parser = parse_duration)]
        ttl: std::time::Duration,
    },
}

/// Parses `90`, `90s`, `30m`, `48h` or `2d`.
pub fn parse_duration(s: &str) -> Result<std::time::Duration, String> {
    let (num, unit) = s
        .find(|c: char| !c.is_ascii_digit())
        .map_or((s, ""), |i| s.split_at(i));
    let n: u64 = num
        .parse()
        .map_err(|_| format!("bad duration {s:?}: expected e.g. 90s, 30m, 48h"))?;
    let secs = match unit {
        "" | "s" => n,
        "m" => n.saturating_mul(60),
        "h" => n.saturating_mul(3600),
        "d" => n.saturating_mul(86_400),
        _ => return Err(format!("bad duration {s:?}: the unit must be s, m, h or d")),
    };
    if secs == 0 {
        return Err(format!("bad duration {s:?}: it must be positive"));
    }
    Ok(std::time::Duration::from_secs(secs))
}

fn parse_k(s: &str) -> Result<usize, String> {
    match s.parse::<usize>() {
        Ok(k) if (1..=256).contains(&k) => Ok(k),
        _ => Err(format!("{s:?} is not a replication factor from 1 to 256")),
    }
}

fn parse_positive(s: &str) -> Result<usize, String> {
    match s.parse::<usize>() {
        Ok(n) if n > 0 => Ok(n),
        _ => Err(format!("{s:?} is not a positive number")),
    }
}

/// Parses a multiaddr, or `host:port` shorthand.
pub fn parse_addr(s: &str) -> Result<Multiaddr, String> {
    if s.starts_with('/') {
        return s
            .parse::<Multiaddr>()
            .map_err(|e| format!("malformed multiaddr {s:?}: {e}"));
    }
    let (host, port) = s
        .rsplit_once(':')
        .ok_or_else(|| format!("{s:?} is neither a multiaddr (/ip4/...) nor host:port"))?;
    let port: u16 = port
        .parse()
        .map_err(|_| format!("bad port {port:?} in {s:?}: expected 0 to 65535"))?;
    let host = host.trim_start_matches('[').trim_end_matches(']');
    let text = match host.parse::<IpAddr>() {
        Ok(IpAddr::V4(ip)) => format!("/ip4/{ip}/tcp/{port}"),
        Ok(IpAddr::V6(ip)) => format!("/ip6/{ip}/tcp/{port}"),
        Err(_)
            if !host.is_empty()
                && host
                    .chars()
                    .all(|c| c.is_ascii_alphanumeric() || c == '-' || c == '.') =>
        {
            format!("/dns4/{host}/tcp/{port}")
        }
        Err(_) => return Err(format!("bad host {host:?} in {s:?}")),
    };
    text.parse()
        .map_err(|e| format!("malformed address {s:?}: {e}"))
}

pub(crate) fn options(
    cli: &Cli,
    listen: Vec<Multiaddr>,
    bootstrap: Vec<Multiaddr>,
) -> Result<DhtOptions> {
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
pub(crate) fn shifted(addrs: &[Multiaddr], i: usize) -> Result<Vec<Multiaddr>> {
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

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn multiaddrs_and_shorthand() {
        assert_eq!(
            parse_addr("/ip4/1.2.3.4/tcp/5").expect("ok").to_string(),
            "/ip4/1.2.3.4/tcp/5"
        );
        assert_eq!(
            parse_addr("1.2.3.4:3000").expect("ok").to_string(),
            "/ip4/1.2.3.4/tcp/3000"
        );
        assert_eq!(
            parse_addr("[::1]:3000").expect("ok").to_string(),
            "/ip6/::1/tcp/3000"
        );
        assert_eq!(
            parse_addr("bootstrap:3000").expect("ok").to_string(),
            "/dns4/bootstrap/tcp/3000"
        );
    }

    #[test]
    fn bad_addresses_name_the_culprit() {
        assert!(
            parse_addr("/ip4/999.1.1.1/tcp/1")
                .expect_err("bad")
                .contains("999.1.1.1")
        );
        assert!(
            parse_addr("1.2.3.4:99999")
                .expect_err("bad")
                .contains("99999")
        );
        assert!(
            parse_addr("nonsense")
                .expect_err("bad")
                .contains("nonsense")
        );
        assert!(parse_addr("a b:1").is_err());
    }

    #[test]
    fn durations() {
        assert_eq!(parse_duration("90").expect("ok").as_secs(), 90);
        assert_eq!(parse_duration("30m").expect("ok").as_secs(), 1800);
        assert_eq!(parse_duration("48h").expect("ok").as_secs(), 172_800);
        assert!(parse_duration("0s").is_err());
        assert!(parse_duration("5y").is_err());
        assert!(parse_duration("h").is_err());
    }

    #[test]
    fn flags_parse() {
        let cli = Cli::try_parse_from(["dht", "-n", "3", "-i", "-v", "4", "-c", "127.0.0.1:3000"])
            .expect("parse");
        assert_eq!((cli.network, cli.interactive, cli.verbose), (3, true, 4));
        assert_eq!(cli.listen[0].to_string(), DEFAULT_LISTEN);
        assert!(Cli::try_parse_from(["dht", "-v", "6"]).is_err());
        assert!(Cli::try_parse_from(["dht", "-n", "0"]).is_err());
        assert!(Cli::try_parse_from(["dht", "-i", "-s"]).is_err());
        // Amino fixes the protocol, k and the TTLs: asking for others as well is a usage error.
        assert!(Cli::try_parse_from(["dht", "--amino"]).is_ok_and(|c| c.amino));
        assert!(Cli::try_parse_from(["dht", "--amino", "--kad-protocol", "/x/kad"]).is_err());
        assert!(Cli::try_parse_from(["dht", "--amino", "--replication-factor", "5"]).is_err());
        assert!(Cli::try_parse_from(["dht", "--amino", "--record-ttl", "1h"]).is_err());
        let cli = Cli::try_parse_from(["dht", "findprovs", "Qm", "--count", "5"]).expect("parse");
        assert!(matches!(
            cli.command,
            Some(OneShot::Findprovs { count: 5, .. })
        ));
        assert!(Cli::try_parse_from(["dht", "findprovs", "Qm", "--count", "0"]).is_err());
        let cli = Cli::try_parse_from(["dht", "get", "abc", "-c", "1.2.3.4:5"]).expect("parse");
        assert!(matches!(cli.command, Some(OneShot::Get { .. })));
        assert_eq!(cli.connect.len(), 1);
    }
}
