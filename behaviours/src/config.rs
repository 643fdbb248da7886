//! Protocol parameters: every limit is a named constant, and the timing profile is checked at start.

use std::num::NonZeroUsize;
use std::time::Duration;

use libp2p::StreamProtocol;

use crate::ip_limits::IpLimit;

/// Largest value a record may carry, in bytes (64 KiB). Enforced before any traffic.
pub const MAX_VALUE_SIZE: usize = 64 * 1024;
/// Longest record key, in bytes. Content keys are 32 bytes; free keys may be text such as `/v/name`.
pub const MAX_KEY_SIZE: usize = 256;
/// Room in a kad message for everything but the record: closer-peer lists (k peers with up to
/// [`MAX_ADDRS_PER_PEER`] addresses each), the publisher and protobuf framing.
pub const KAD_PACKET_OVERHEAD: usize = 32 * 1024;
/// The kad frame limit, raised from libp2p's 16 KiB so that the largest record fits in one message.
pub const KAD_MAX_PACKET_SIZE: usize = MAX_VALUE_SIZE + MAX_KEY_SIZE + KAD_PACKET_OVERHEAD;
/// libp2p-kad sends a record's remaining life in whole seconds and encodes less than one second as 0,
/// which means "never expires": the receiver keeps such a record with a fresh TTL, bringing a dying
/// record back to life. A record is therefore treated as expired a margin before its expiry (see
/// [`Timing::expiry_margin`]): this second, plus the longest a put may wait for its lookup.
pub const EXPIRY_MARGIN: Duration = Duration::from_secs(1);
/// A lookup's deadline holds this many request timeouts: a silent peer delays it by one third.
pub const PEER_TIMEOUTS_PER_QUERY: u32 = 3;
/// Addresses kept for one peer learned through identify or a lookup answer.
pub const MAX_ADDRS_PER_PEER: usize = 8;

/// Records a node's store holds at most.
pub const STORE_MAX_RECORDS: usize = 65_536;
/// Bytes of keys and values a node's store holds at most (256 MiB).
pub const STORE_MAX_BYTES: usize = 256 * 1024 * 1024;
// Provider records have limits of their own: see `crate::providers`.

/// Largest custom-command request payload (1 MiB).
pub const MAX_COMMAND_REQUEST: usize = 1024 * 1024;
/// Largest custom-command reply payload (1 MiB).
pub const MAX_COMMAND_REPLY: usize = 1024 * 1024;
/// Concurrent inbound plus outbound custom-command streams per connection.
pub const MAX_COMMAND_STREAMS: usize = 64;

/// Largest broadcast payload (64 KiB).
pub const MAX_BROADCAST_PAYLOAD: usize = 64 * 1024;
/// Peers per routing-table bucket that a broadcast is handed to; more than one survives a peer
/// that acknowledges and then dies before forwarding.
pub const BROADCAST_REDUNDANCY: usize = 2;
/// Further peers of the same bucket tried when a hand-off fails.
pub const BROADCAST_MAX_RETRIES: usize = 3;
/// Broadcast message ids remembered for de-duplication. A full cache refuses new messages rather
/// than forget one it may see again (which would deliver it twice).
pub const SEEN_CACHE_CAPACITY: usize = 65_536;
/// How long a broadcast message id is remembered: longer than any message stays acceptable.
pub const SEEN_CACHE_TTL: Duration = Duration::from_secs(600);
/// A message older than this (by its origin's clock) is refused: replays end here.
pub const MAX_BROADCAST_AGE: Duration = Duration::from_secs(300);
/// How far ahead of ours an origin's clock may be.
pub const MAX_CLOCK_SKEW: Duration = Duration::from_secs(60);
/// Messages of one origin remembered at once (within [`SEEN_CACHE_TTL`]): an origin beyond it is
/// refused until its older messages age out, so that one origin can hold at most this share of
/// the seen cache.
pub const MAX_BROADCASTS_PER_ORIGIN: usize = 256;
/// Broadcast hand-offs one peer may make to us per second, sustained (duplicates included: each
/// message reaches a node a few times).
pub const FORWARDER_RATE: u32 = 20;
/// Broadcast hand-offs one peer may make to us in a burst.
pub const FORWARDER_BURST: u32 = 200;
/// What a duplicate hand-off costs a forwarder, in new messages: it costs us a lookup, not a
/// signature check or a forward (each message reaches a node about five times).
pub const DUPLICATE_HANDOFF_COST: f64 = 0.125;
/// Forwarders whose rate is tracked: as many as the connections a node keeps.
pub const MAX_FORWARDERS: usize = MAX_ESTABLISHED as usize;

// Any message still acceptable is still remembered, so none is delivered twice.
const _: () =
    assert!(SEEN_CACHE_TTL.as_secs() >= MAX_BROADCAST_AGE.as_secs() + MAX_CLOCK_SKEW.as_secs());
// One forwarder at its sustained rate cannot fill the seen cache on its own.
const _: () =
    assert!((FORWARDER_RATE as u64) * SEEN_CACHE_TTL.as_secs() < SEEN_CACHE_CAPACITY as u64);
/// Concurrent broadcast streams per connection.
pub const MAX_BROADCAST_STREAMS: usize = 128;

/// Established connections to one peer (simultaneous dials can briefly make two).
pub const MAX_CONNECTIONS_PER_PEER: u32 = 4;
/// Incoming connections still in their handshake.
pub const MAX_PENDING_INCOMING: u32 = 256;
/// Outgoing connections still in their handshake.
pub const MAX_PENDING_OUTGOING: u32 = 256;
/// Established connections in all.
pub const MAX_ESTABLISHED: u32 = 4096;
/// Inbound connections from one IP address at once (loopback exempt unless configured).
pub const MAX_CONNECTIONS_PER_IP: u32 = 16;

/// Default replication factor k: the number of closest nodes a value is stored on.
pub const DEFAULT_REPLICATION_FACTOR: usize = 20;
/// Default lookup parallelism alpha.
pub const DEFAULT_PARALLELISM: usize = 3;
/// How often, per provide interval, a node looks for the keys it must announce again.
pub const PROVIDE_CHECKS_PER_INTERVAL: u32 = 16;

/// Amino's replication factor (and bucket size).
pub const AMINO_REPLICATION_FACTOR: usize = 20;
/// How long an Amino server keeps a record (go-libp2p-kad-dht's `MaxRecordAge`).
pub const AMINO_RECORD_TTL: Duration = Duration::from_secs(36 * 60 * 60);
/// How long an Amino server keeps a provider record (the IPFS DHT spec's 48 h).
pub const AMINO_PROVIDER_TTL: Duration = Duration::from_secs(48 * 60 * 60);
/// How often an Amino node re-announces what it provides (the spec's 22 h).
pub const AMINO_PROVIDE_INTERVAL: Duration = Duration::from_secs(22 * 60 * 60);
/// The largest kad message go-libp2p-kad-dht reads (its `network.MessageSizeMax`, 4 MiB).
pub const AMINO_MAX_PACKET_SIZE: usize = 4 * 1024 * 1024;

/// The standard libp2p Kademlia protocol, spoken by go-, js- and py-libp2p.
pub const DEFAULT_KAD_PROTOCOL: &str = "/ipfs/kad/1.0.0";
/// The identify protocol.
pub const IDENTIFY_PROTOCOL: &str = "/ipfs/id/1.0.0";
/// The custom-command request/response protocol.
pub const COMMAND_PROTOCOL: StreamProtocol = StreamProtocol::new("/dht/cmd/1.0.0");
/// The broadcast hand-off protocol.
pub const BROADCAST_PROTOCOL: StreamProtocol = StreamProtocol::new("/dht/broadcast/2.0.0");

// The limits must fit together: a maximal record must fit in one kad frame.
const _: () = assert!(KAD_MAX_PACKET_SIZE >= MAX_VALUE_SIZE + MAX_KEY_SIZE + 16 * 1024);
const _: () = assert!(STORE_MAX_BYTES >= MAX_VALUE_SIZE + MAX_KEY_SIZE);
const _: () = assert!(MAX_KEY_SIZE <= u8::MAX as usize + 1);
const _: () = assert!(AMINO_MAX_PACKET_SIZE >= KAD_MAX_PACKET_SIZE);
const _: () = assert!(AMINO_PROVIDE_INTERVAL.as_secs() < AMINO_PROVIDER_TTL.as_secs());

/// Timing of every periodic job and deadline of the protocol core.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Timing {
    /// Deadline of one whole kad query (store, fetch, lookup).
    pub query_timeout: Duration,
    /// Deadline of one custom command, request and reply.
    pub command_timeout: Duration,
    /// Deadline of one broadcast hand-off to a peer.
    pub broadcast_timeout: Duration,
    /// Interval between pings on every connection.
    pub ping_interval: Duration,
    /// A ping unanswered for this long closes the connection.
    pub ping_timeout: Duration,
    /// A connection with no open stream is closed after this long.
    pub idle_timeout: Duration,
    /// How long a stored record lives unless its publisher renews it.
    pub record_ttl: Duration,
    /// How often holders re-store records on the current closest nodes; the publisher's re-store
    /// also renews its records' life (a republish).
    pub replication_interval: Duration,
    /// How often the routing table is refreshed by a bootstrap lookup (our own id, then the
    /// sparse buckets).
    pub bootstrap_interval: Duration,
    /// How long a provider record lives unless its provider announces it again.
    pub provider_ttl: Duration,
    /// How often a node announces again the keys it provides: well within
    /// [`Timing::provider_ttl`], so that a record is renewed before it expires.
    pub provide_interval: Duration,
}

impl Default for Timing {
    /// The Kademlia paper's and libp2p's numbers: TTL 48 h, re-replication (and republish) 1 h;
    /// provider records as Amino keeps them: 48 h, announced again every 22 h.
    fn default() -> Self {
        Self {
            query_timeout: Duration::from_secs(30),
            command_timeout: Duration::from_secs(10),
            broadcast_timeout: Duration::from_secs(10),
            ping_interval: Duration::from_secs(15),
            ping_timeout: Duration::from_secs(20),
            idle_timeout: Duration::from_secs(60),
            record_ttl: Duration::from_secs(48 * 3600),
            replication_interval: Duration::from_secs(3600),
            // go-libp2p-kad-dht's refresh period. At 5 minutes (libp2p's) these lookups were two
            // thirds of all requests under churn; at 10 the 3,000-node 48 h churn run finds as
            // many fetches with 41 % fewer messages (README, churn, fifth pass).
            bootstrap_interval: Duration::from_secs(600),
            provider_ttl: Duration::from_secs(48 * 3600),
            provide_interval: Duration::from_secs(22 * 3600),
        }
    }
}

impl Timing {
    /// A profile for tests and local experiments: seconds instead of hours.
    pub fn fast() -> Self {
        Self {
            query_timeout: Duration::from_secs(10),
            command_timeout: Duration::from_secs(5),
            broadcast_timeout: Duration::from_secs(5),
            ping_interval: Duration::from_secs(1),
            ping_timeout: Duration::from_secs(3),
            idle_timeout: Duration::from_secs(30),
            record_ttl: Duration::from_secs(120),
            replication_interval: Duration::from_secs(10),
            bootstrap_interval: Duration::from_secs(10),
            // The record TTL's seconds for hours, and the default's ratio of interval to TTL.
            provider_ttl: Duration::from_secs(120),
            provide_interval: Duration::from_secs(55),
        }
    }

    /// How long before its expiry a record stops being served, replicated or handed on: a put
    /// encodes the record only after its lookup (up to a query timeout), and must still carry at
    /// least [`EXPIRY_MARGIN`] of life then.
    pub fn expiry_margin(&self) -> Duration {
        self.query_timeout + EXPIRY_MARGIN
    }

    /// How long one kad request of a lookup may go unanswered before the peer counts as failed
    /// and the lookup moves on: a third of the whole query's deadline.
    pub fn peer_timeout(&self) -> Duration {
        self.query_timeout / PEER_TIMEOUTS_PER_QUERY
    }

    /// Checks that the intervals make sense together: a republished record reaches its holders
    /// before their copies stop being served (replication + query deadline + 1 s < TTL), and a
    /// provider's new announcement reaches them before its record expires (provide interval +
    /// query deadline < provider TTL).
    pub fn validate(&self) -> Result<(), ConfigError> {
        let nonzero = [
            ("query timeout", self.query_timeout),
            ("command timeout", self.command_timeout),
            ("broadcast timeout", self.broadcast_timeout),
            ("ping interval", self.ping_interval),
            ("ping timeout", self.ping_timeout),
            ("idle timeout", self.idle_timeout),
            ("record TTL", self.record_ttl),
            ("replication interval", self.replication_interval),
            ("bootstrap interval", self.bootstrap_interval),
            ("provider TTL", self.provider_ttl),
            ("provide interval", self.provide_interval),
        ];
        if let Some((name, _)) = nonzero.iter().find(|(_, d)| d.is_zero()) {
            return Err(ConfigError::Invalid(format!(
                "{name} must be greater than zero"
            )));
        }
        if self.replication_interval + self.expiry_margin() >= self.record_ttl {
            return Err(ConfigError::Invalid(format!(
                "replication interval ({:?}) plus the query timeout and 1 s must be shorter than the \
                 record TTL ({:?})",
                self.replication_interval, self.record_ttl
            )));
        }
        // The latest a renewal lands: a check period late, both phases of the provide at their
        // deadline.
        let check = self.provide_interval / PROVIDE_CHECKS_PER_INTERVAL;
        if self.provide_interval + check + 2 * self.query_timeout >= self.provider_ttl {
            return Err(ConfigError::Invalid(format!(
                "provide interval ({:?}) plus a sixteenth of it and two query timeouts must be \
                 shorter than the provider TTL ({:?})",
                self.provide_interval, self.provider_ttl
            )));
        }
        Ok(())
    }
}

/// Everything the protocol core needs to build a node's behaviour.
#[derive(Debug, Clone)]
pub struct ProtocolConfig {
    /// The kad protocol name; `/ipfs/kad/1.0.0` unless the network is private.
    pub kad_protocol: StreamProtocol,
    /// Replication factor k (also the bucket size).
    pub replication_factor: NonZeroUsize,
    /// Lookup parallelism alpha.
    pub parallelism: NonZeroUsize,
    /// Deadlines and periodic jobs.
    pub timing: Timing,
    /// Agent version announced by identify.
    pub agent_version: String,
    /// A client uses the DHT but never serves it: it does not answer kad requests and never enters
    /// routing tables, so no value is ever stored on it (consoles and one-shot commands).
    pub client_mode: bool,
    /// A mirror keeps a copy of every record it sees. It announces itself by speaking
    /// [`crate::mirror::MIRROR_PROTOCOL`]; nodes that see it send it the records they hold and each
    /// new one they store, and its per-peer store quota is lifted.
    pub mirror: bool,
    /// The cap on inbound connections per remote IP address.
    pub ip_limit: IpLimit,
    /// Amino mode: behave as a conforming IPFS DHT server ([`ProtocolConfig::amino`]).
    pub amino: bool,
}

impl Default for ProtocolConfig {
    fn default() -> Self {
        Self {
            kad_protocol: StreamProtocol::new(DEFAULT_KAD_PROTOCOL),
            replication_factor: NonZeroUsize::new(DEFAULT_REPLICATION_FACTOR)
                .unwrap_or(NonZeroUsize::MIN),
            parallelism: NonZeroUsize::new(DEFAULT_PARALLELISM).unwrap_or(NonZeroUsize::MIN),
            timing: Timing::default(),
            agent_version: format!("dht/{}", env!("CARGO_PKG_VERSION")),
            client_mode: false,
            mirror: false,
            ip_limit: IpLimit {
                max_per_ip: MAX_CONNECTIONS_PER_IP,
                include_loopback: false,
            },
            amino: false,
        }
    }
}

impl ProtocolConfig {
    /// Amino mode, as the IPFS DHT (the "Amino" network) defines a server: `/ipfs/kad/1.0.0`,
    /// k = 20, records kept [`AMINO_RECORD_TTL`], provider records [`AMINO_PROVIDER_TTL`] and
    /// re-announced every [`AMINO_PROVIDE_INTERVAL`], messages of up to [`AMINO_MAX_PACKET_SIZE`];
    /// the node keeps only `/pk/` and `/ipns/` records (and provider records).
    pub fn amino(mut self) -> Self {
        self.amino = true;
        self.kad_protocol = StreamProtocol::new(DEFAULT_KAD_PROTOCOL);
        self.replication_factor =
            NonZeroUsize::new(AMINO_REPLICATION_FACTOR).unwrap_or(NonZeroUsize::MIN);
        self.timing.record_ttl = AMINO_RECORD_TTL;
        self.timing.provider_ttl = AMINO_PROVIDER_TTL;
        self.timing.provide_interval = AMINO_PROVIDE_INTERVAL;
        self
    }

    /// The largest kad message taken or sent.
    pub fn max_packet_size(&self) -> usize {
        if self.amino {
            AMINO_MAX_PACKET_SIZE
        } else {
            KAD_MAX_PACKET_SIZE
        }
    }
}

impl ProtocolConfig {
    /// Checks the configuration as a whole.
    pub fn validate(&self) -> Result<(), ConfigError> {
        self.timing.validate()
    }
}

/// Parses a kad protocol name given by a user.
pub fn parse_protocol_name(name: &str) -> Result<StreamProtocol, ConfigError> {
    StreamProtocol::try_from_owned(name.to_owned())
        .map_err(|_| ConfigError::Invalid(format!("protocol name {name:?} must start with '/'")))
}

/// A configuration that cannot work.
#[derive(Debug, thiserror::Error)]
pub enum ConfigError {
    /// The reason, in words.
    #[error("invalid configuration: {0}")]
    Invalid(String),
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn default_and_fast_profiles_are_valid() {
        assert!(Timing::default().validate().is_ok());
        assert!(Timing::fast().validate().is_ok());
    }

    #[test]
    fn republish_must_be_shorter_than_ttl() {
        let mut t = Timing::fast();
        t.replication_interval = t.record_ttl - Duration::from_secs(1);
        assert!(t.validate().is_err());
    }

    #[test]
    fn providers_must_be_announced_again_before_they_expire() {
        let mut t = Timing::fast();
        t.provide_interval = t.provider_ttl;
        assert!(t.validate().is_err());
        // A renewal lands at worst a check period late, with both of its phases at their deadline.
        t.provide_interval = t.provider_ttl - 2 * t.query_timeout;
        assert!(t.validate().is_err());
        t.provide_interval = (t.provider_ttl - 2 * t.query_timeout) * 15 / 17;
        assert!(t.validate().is_ok());
        t.provide_interval = Duration::ZERO;
        assert!(t.validate().is_err());
    }

    #[test]
    fn zero_durations_are_refused() {
        let mut t = Timing::fast();
        t.query_timeout = Duration::ZERO;
        assert!(t.validate().is_err());
    }

    #[test]
    fn protocol_names_must_start_with_slash() {
        assert!(parse_protocol_name("/my/kad/1.0.0").is_ok());
        assert!(parse_protocol_name("kad").is_err());
    }
}
