//! Helpers shared by the scenarios: start networks, and wait for conditions with a deadline.

use std::future::Future;
use std::num::NonZeroUsize;
use std::time::Duration;

use dht::{Dht, DhtOptions, Key, Multiaddr, PeerId, Timing};
use futures::StreamExt;
use libp2p::identity::Keypair;
use libp2p::kad::KBucketKey;
use libp2p::multiaddr::Protocol;
use libp2p::swarm::{NetworkBehaviour, SwarmEvent};
use libp2p::{Swarm, SwarmBuilder, noise, tcp, yamux};
use tokio::time::Instant;

/// Where the ports reserved for tests start: below Linux's ephemeral range (32768-60999), from
/// which the kernel picks port-0 listeners and outbound connections' local ports, so that no other
/// test's socket can take a port a test freed and means to bind again.
pub const RESERVED_PORTS_START: u16 = 20_000;
/// How many ports the tests may reserve in one run.
pub const RESERVED_PORTS: u16 = 10_000;

/// `n` consecutive ports of the reserved range, each bindable now and never handed out twice in
/// this test process. For tests that must bind a known port (a node restarted on its address, a
/// local network on consecutive ports); everything else listens on port 0.
pub fn reserve_ports(n: u16) -> u16 {
    use std::sync::atomic::{AtomicU16, Ordering};
    // A start that differs between processes and runs. The runner starts one process per test,
    // with consecutive pids: a start of `pid % range` put those a port apart, and one test's five
    // ports overlapped the next one's (a bind failed with "address in use"). A multiplicative
    // hash of the pid spreads consecutive pids across the range.
    static NEXT: AtomicU16 = AtomicU16::new(0);
    let spread = std::process::id().wrapping_mul(2_654_435_761) >> 16;
    let _ = NEXT.compare_exchange(
        0,
        1 + (spread % u32::from(RESERVED_PORTS / 2)) as u16,
        Ordering::SeqCst,
        Ordering::SeqCst,
    );
    loop {
        let offset = NEXT.fetch_add(n, Ordering::SeqCst);
        assert!(
            offset + n <= RESERVED_PORTS,
            "the tests reserved more than {RESERVED_PORTS} ports"
        );
        let base = RESERVED_PORTS_START + offset;
        if (base..base + n).all(|p| std::net::TcpListener::bind(("127.0.0.1", p)).is_ok()) {
            return base;
        }
    }
}

/// A loopback address on a reserved port (see [`reserve_ports`]).
pub fn reserved_addr() -> Multiaddr {
    format!("/ip4/127.0.0.1/tcp/{}", reserve_ports(1))
        .parse()
        .expect("addr")
}

/// Longest a scenario waits for a network to settle. A liveness bound, not a speed check: a
/// settled network passes at the first poll; with three CPU hogs on 2 cores, a 20-node network
/// once took longer than 30 s for every node to route the 19 others.
pub const SETTLE: Duration = Duration::from_secs(60);
/// Interval between two checks of a condition.
pub const POLL: Duration = Duration::from_millis(50);

/// Polls `check` until it returns `Some`, or fails the test with `what` after `within`.
pub async fn eventually<T, F, Fut>(within: Duration, what: &str, mut check: F) -> T
where
    F: FnMut() -> Fut,
    Fut: Future<Output = Option<T>>,
{
    let deadline = Instant::now() + within;
    loop {
        if let Some(v) = check().await {
            return v;
        }
        assert!(
            Instant::now() < deadline,
            "timed out after {within:?} waiting for {what}"
        );
        tokio::time::sleep(POLL).await;
    }
}

/// Logs of the nodes to standard error when `DHT_TEST_LOG` holds a filter (e.g. `dht=debug`), for
/// taking a failing scenario apart; silent otherwise.
pub fn log_if_asked() {
    static ONCE: std::sync::Once = std::sync::Once::new();
    ONCE.call_once(|| {
        if let Ok(filter) = std::env::var("DHT_TEST_LOG") {
            let _ = tracing_subscriber::fmt()
                .with_env_filter(tracing_subscriber::EnvFilter::new(filter))
                .with_test_writer()
                .try_init();
        }
    });
}

/// Options for a test node: loopback, an OS-chosen port, the fast timing profile.
pub fn options(k: usize) -> DhtOptions {
    log_if_asked();
    DhtOptions::default()
        .listen_on(["/ip4/127.0.0.1/tcp/0".parse().expect("addr")])
        .timing(Timing::fast())
        .replication_factor(NonZeroUsize::new(k).expect("k > 0"))
}

/// The first listen address of `node`, with `/p2p/<id>`.
pub async fn addr_of(node: &Dht) -> Multiaddr {
    node.listen_addrs()
        .await
        .expect("status")
        .into_iter()
        .next()
        .expect("a listen address")
}

/// Starts `n` nodes with replication factor `k`, joined one after another through the first, and
/// waits until every routing table holds every other node.
pub async fn network(n: usize, k: usize) -> Vec<Dht> {
    network_with(n, || options(k)).await
}

/// Like [`network`], with the options `make` gives each node.
pub async fn network_with(n: usize, make: impl Fn() -> DhtOptions) -> Vec<Dht> {
    let first = Dht::start(make()).await.expect("start node 0");
    let boot = addr_of(&first).await;
    let mut nodes = vec![first];
    for i in 1..n {
        let node = Dht::start(make().bootstrap(boot.clone()))
            .await
            .expect("start node");
        // One join at a time, as nodes come up in a real network: a node that joins while the
        // previous one is still joining does not hear of it until the next routing refresh.
        let id = node.peer_id();
        eventually(SETTLE, &format!("node {i} to join"), || async {
            let known = nodes[0].routing_table().await.ok()?;
            known.iter().any(|e| e.peer == id).then_some(())
        })
        .await;
        nodes.push(node);
    }
    wait_routed(&nodes, n - 1).await;
    nodes
}

/// The address without its `/p2p/<id>` part.
pub fn without_p2p(addr: &Multiaddr) -> Multiaddr {
    addr.iter()
        .filter(|p| !matches!(p, Protocol::P2p(_)))
        .collect()
}

/// The TCP port of a listen address.
pub fn tcp_port(addr: &Multiaddr) -> u16 {
    addr.iter()
        .find_map(|p| {
            if let Protocol::Tcp(port) = p {
                Some(port)
            } else {
                None
            }
        })
        .expect("a TCP address")
}

/// Waits until each node's routing table holds at least `min` peers.
pub async fn wait_routed(nodes: &[Dht], min: usize) {
    for (i, node) in nodes.iter().enumerate() {
        eventually(
            SETTLE,
            &format!("node {i} to route {min} peers"),
            || async { (node.routing_table().await.ok()?.len() >= min).then_some(()) },
        )
        .await;
    }
}

/// Stops every node.
pub async fn stop_all(nodes: &[Dht]) {
    for n in nodes {
        n.stop().await;
    }
}

/// The `n` peers of `ids` closest to `key` by XOR distance, closest first.
pub fn closest(ids: &[PeerId], key: &Key, n: usize) -> Vec<PeerId> {
    let target = KBucketKey::new(key.as_bytes().to_vec());
    let mut ids = ids.to_vec();
    ids.sort_by_key(|p| target.distance(&KBucketKey::from(*p)));
    ids.truncate(n);
    ids
}

/// A bare libp2p swarm on TCP + noise + yamux with the behaviour `make` builds, driven by the test
/// itself (for peers that are not `dht` nodes and need not behave).
pub fn tcp_swarm<B: NetworkBehaviour>(
    keypair: Keypair,
    make: impl FnOnce(&Keypair) -> B,
) -> Swarm<B> {
    SwarmBuilder::with_existing_identity(keypair)
        .with_tokio()
        .with_tcp(
            tcp::Config::default(),
            noise::Config::new,
            yamux::Config::default,
        )
        .expect("tcp")
        .with_behaviour(make)
        .expect("behaviour")
        .with_swarm_config(|c| c.with_idle_connection_timeout(Duration::from_secs(600)))
        .build()
}

/// Makes `swarm` listen on an OS-chosen port of 127.0.0.1 and returns the address once bound.
pub async fn listen_locally<B: NetworkBehaviour>(swarm: &mut Swarm<B>) -> Multiaddr {
    swarm
        .listen_on("/ip4/127.0.0.1/tcp/0".parse().expect("addr"))
        .expect("listen");
    loop {
        if let SwarmEvent::NewListenAddr { address, .. } = swarm.select_next_some().await {
            return address;
        }
    }
}

/// Whether `node` holds an unexpired copy of `key`.
pub async fn holds(node: &Dht, key: &Key) -> bool {
    node.local_records()
        .await
        .is_ok_and(|rs| rs.iter().any(|r| r.key == *key))
}

/// How many of `nodes` hold `key` in their own store: what a store's count must match (an
/// acknowledgement is not a copy).
pub async fn holders(nodes: &[Dht], key: &dht::Key) -> usize {
    let mut n = 0;
    for node in nodes {
        if node
            .local_records()
            .await
            .is_ok_and(|r| r.iter().any(|r| r.key == *key))
        {
            n += 1;
        }
    }
    n
}

/// The lines a child process writes to `from` (its stdout or stderr), as they come.
pub fn forward_lines<R: tokio::io::AsyncRead + Unpin + Send + 'static>(
    from: R,
) -> tokio::sync::mpsc::UnboundedReceiver<String> {
    use tokio::io::AsyncBufReadExt;
    let (tx, rx) = tokio::sync::mpsc::unbounded_channel();
    tokio::spawn(async move {
        let mut reader = tokio::io::BufReader::new(from).lines();
        while let Ok(Some(line)) = reader.next_line().await {
            if tx.send(line).is_err() {
                break;
            }
        }
    });
    rx
}

/// Waits up to `within` for a line containing `text` from `lines` (a process's output, see
/// [`forward_lines`]), keeping every line read in `seen`; returns it, or fails the test saying
/// what was seen.
pub async fn line_with(
    lines: &mut tokio::sync::mpsc::UnboundedReceiver<String>,
    seen: &mut Vec<String>,
    text: &str,
    within: Duration,
) -> String {
    let deadline = tokio::time::Instant::now() + within;
    loop {
        match tokio::time::timeout_at(deadline, lines.recv()).await {
            Ok(Some(line)) => {
                seen.push(line.clone());
                if line.contains(text) {
                    return line;
                }
            }
            Ok(None) => panic!("output ended without {text:?}; saw {seen:#?}"),
            Err(_) => panic!("no line with {text:?} within {within:?}; saw {seen:#?}"),
        }
    }
}

/// A bare peer (a swarm that only opens streams, as `key`) connected to `node`, its swarm driven
/// by a task: the control to open streams with, and the task to abort when done.
pub async fn stream_peer(
    node: &Dht,
    key: Keypair,
) -> (libp2p_stream::Control, tokio::task::JoinHandle<()>) {
    let mut swarm = tcp_swarm(key, |_| libp2p_stream::Behaviour::new());
    let control = swarm.behaviour().new_control();
    swarm.dial(addr_of(node).await).expect("dial");
    let connected = async {
        loop {
            if let SwarmEvent::ConnectionEstablished { peer_id, .. } =
                swarm.select_next_some().await
                && peer_id == node.peer_id()
            {
                return;
            }
        }
    };
    tokio::time::timeout(Duration::from_secs(10), connected)
        .await
        .expect("connected to the node");
    let driver = tokio::spawn(async move {
        loop {
            swarm.select_next_some().await;
        }
    });
    (control, driver)
}
