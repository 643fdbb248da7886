//! What goes into the core and what comes out: [`Input`]s (commands, peers' requests, answers
//! and failures of our requests, peers seen, time passing) and [`Action`]s (requests to send,
//! answers to give, operations ended, records kept, peers evicted, held out, blocked or caught
//! lying).

use std::time::Duration;

use std::sync::Arc;

use dht_behaviours::broadcast::{Ack, BroadcastMessage};
use dht_behaviours::command::CommandReply;
use dht_behaviours::kad_wire::{KadRequest, KadResponse, WirePeer};
use dht_behaviours::mirror::MirrorRecord;
use dht_behaviours::validation::RecordError;
use libp2p::{Multiaddr, PeerId};

use super::outbox::{FailureKind, Outgoing, RequestId};
use super::records::Refusal;
use super::standing::reputation::Offence;

/// Identifies one of the core's dials (the core's number; the driver maps its own to it).
pub type DialId = u64;

/// Identifies one hand-off to a mirror (the core's number; the driver maps its own to it).
pub type MirrorId = u64;

/// Identifies one hand-off of a broadcast (the core's number; the driver maps its own to it).
pub type HandoffId = u64;

/// Identifies one of our commands on the wire (the core's number; the driver maps its own to it).
pub type CommandId = u64;

/// Identifies an operation a caller asked for (the driver's or the simulator's number).
pub type OpId = u64;
/// Identifies an inbound request (the driver's number), to answer it.
pub type InboundId = u64;

/// Something that happened to the core.
#[derive(Debug, Clone, PartialEq)]
pub enum Input {
    /// Store `value` under `key` on the k closest nodes (and here, when serving).
    Store {
        /// The caller's number for the reply.
        op: OpId,
        /// The key.
        key: Vec<u8>,
        /// The value.
        value: Vec<u8>,
    },
    /// Fetch the value under `key`.
    Fetch {
        /// The caller's number for the reply.
        op: OpId,
        /// The key.
        key: Vec<u8>,
    },
    /// Announce this node as a provider of `key` on the k closest nodes, and again every
    /// provide interval while the node runs.
    Provide {
        /// The caller's number for the reply.
        op: OpId,
        /// The key.
        key: Vec<u8>,
    },
    /// Find up to `want` providers of `key`.
    Providers {
        /// The caller's number for the reply.
        op: OpId,
        /// The key.
        key: Vec<u8>,
        /// Providers wanted: the lookup ends once it has this many.
        want: usize,
    },
    /// Find the addresses of `peer`.
    FindPeer {
        /// The caller's number for the reply.
        op: OpId,
        /// The peer sought.
        peer: PeerId,
    },
    /// Find the k closest peers to `key`.
    Closest {
        /// The caller's number for the reply.
        op: OpId,
        /// The key.
        key: Vec<u8>,
    },
    /// Broadcast `payload` to every node.
    Broadcast {
        /// The caller's number for the reply.
        op: OpId,
        /// The application's bytes.
        payload: Vec<u8>,
    },
    /// A peer handed us a broadcast message.
    BroadcastReceived {
        /// Who.
        peer: PeerId,
        /// The driver's number for the answer.
        id: InboundId,
        /// The message.
        message: BroadcastMessage,
    },
    /// A hand-off of ours ([`Action::Broadcast`]) was answered.
    BroadcastAnswered {
        /// Which.
        id: HandoffId,
    },
    /// A hand-off of ours failed.
    BroadcastFailed {
        /// Which.
        id: HandoffId,
    },
    /// Send `payload` to `peer`'s command handler.
    Command {
        /// The caller's number for the reply.
        op: OpId,
        /// To whom.
        peer: PeerId,
        /// The application's bytes.
        payload: Vec<u8>,
    },
    /// A peer answered one of our commands ([`Action::SendCommand`]).
    CommandAnswered {
        /// Which.
        id: CommandId,
        /// Its handler's answer.
        reply: CommandReply,
    },
    /// One of our commands failed on the way (`reason` `None`: the transport's timeout).
    CommandFailed {
        /// Which.
        id: CommandId,
        /// Why.
        reason: Option<String>,
    },
    /// A peer sent us a command.
    CommandReceived {
        /// Who.
        peer: PeerId,
        /// The driver's number for the answer.
        id: InboundId,
        /// Its bytes.
        payload: Vec<u8>,
    },
    /// The application's handler answered a peer's command ([`Action::RunHandler`]).
    HandlerDone {
        /// Which inbound command.
        id: InboundId,
        /// The answer.
        reply: CommandReply,
    },
    /// The application set or removed its command handler.
    SetHandler {
        /// Whether one is set now.
        present: bool,
    },
    /// Join the network through these peers.
    Join {
        /// Known peers, with addresses.
        peers: Vec<(PeerId, Vec<Multiaddr>)>,
    },
    /// Dial these addresses to join (again with back-off for as long as the table is empty), and
    /// dial them again at each refresh once joined if their peers left the table.
    Bootstrap {
        /// The bootstrap addresses.
        addrs: Vec<Multiaddr>,
    },
    /// We dialed `peer` at `addr` and are connected: through one of our [`Action::Dial`]s
    /// (`dial`), or another dial (a request's). A dial of a bootstrap address joins through it.
    Connected {
        /// Who.
        peer: PeerId,
        /// The address dialed, ending in the peer's id.
        addr: Multiaddr,
        /// Which of our dials, if one.
        dial: Option<DialId>,
    },
    /// One of our [`Action::Dial`]s failed.
    DialFailed {
        /// Which.
        dial: DialId,
    },
    /// The host has a new listen address (an interface came up): rejoin now.
    NewAddress,
    /// The addresses this node is reached at, best first (announced with its provider records).
    OwnAddresses {
        /// Confirmed external addresses, then public listen addresses, then the rest.
        addrs: Vec<Multiaddr>,
    },
    /// A peer that serves kad was seen (identify, or a connection to a known server).
    PeerSeen {
        /// Who.
        peer: PeerId,
        /// Its listen addresses, as it announced them.
        addrs: Vec<Multiaddr>,
        /// Whether the peer is on this host (connected over loopback): only then are its
        /// loopback addresses dialable from here, and kept.
        same_host: bool,
    },
    /// A dial of a peer failed and no connection to it is left: it leaves the table (remembered
    /// for a rejoin unless its address turned out to be someone else's), and stops being fed as
    /// a mirror.
    Undialable {
        /// Who.
        peer: PeerId,
        /// The address answered with another peer's id.
        wrong_peer: bool,
    },
    /// A peer speaks the mirror protocol (identify said so): it is fed every record held here.
    MirrorSeen {
        /// Who.
        peer: PeerId,
        /// Its listen addresses, as it announced them.
        addrs: Vec<Multiaddr>,
        /// Whether the peer is on this host (connected over loopback): only then are its
        /// loopback addresses dialable from here, and kept.
        same_host: bool,
    },
    /// A mirror acknowledged a hand-off ([`Action::Mirror`]).
    MirrorAcked {
        /// Which.
        id: MirrorId,
    },
    /// A hand-off to a mirror failed.
    MirrorFailed {
        /// Which.
        id: MirrorId,
    },
    /// A peer cannot be reached (a dial failed, a ping met a broken connection): it leaves the
    /// table, remembered for a rejoin ([`Action::Evicted`]).
    Unreachable {
        /// Who.
        peer: PeerId,
    },
    /// Every connection to a peer broke (closed on an error, not by either side's choice): a
    /// peer of the table is checked at once ([`Action::CheckPeer`]), so that a dead one leaves
    /// within a dial's time rather than at the next refresh.
    ConnectionLost {
        /// Who.
        peer: PeerId,
    },
    /// A peer took a request and never answered it (a ping timed out): it is held out for a
    /// while ([`Action::HeldOut`]) and leaves the table.
    Silent {
        /// Who.
        peer: PeerId,
    },
    /// A peer was heard from (a ping answered, identify received): a silent peer is back.
    Heard {
        /// Who.
        peer: PeerId,
    },
    /// A peer misbehaved where the driver saw it (a frame that does not decode).
    Offence {
        /// Who.
        peer: PeerId,
        /// What it did.
        offence: Offence,
    },
    /// The operator blocks a peer until unblocked.
    Block {
        /// Who.
        peer: PeerId,
    },
    /// The operator lifts a block.
    Unblock {
        /// Who.
        peer: PeerId,
    },
    /// A record handed over by the mirror protocol (this node is a mirror); answered with
    /// [`Action::AnswerMirror`].
    Mirror {
        /// From whom.
        peer: PeerId,
        /// The driver's number for the answer.
        id: InboundId,
        /// The record, with the life the sender's copy has left.
        record: MirrorRecord,
    },
    /// An inbound kad request.
    Request {
        /// From whom.
        peer: PeerId,
        /// The driver's number for the answer.
        id: InboundId,
        /// The request.
        request: KadRequest,
        /// Whether the requester serves kad itself (it may enter the routing table).
        serving: bool,
        /// The host it came from, when hosts share a budget (the IP address of the connection
        /// that carried it; `None` for loopback in a local network, or unknown).
        host: Option<std::net::IpAddr>,
        /// Whether the requester is on this host (the addresses of the providers it announces
        /// are vetted by it).
        same_host: bool,
    },
    /// One of our requests was answered.
    Response {
        /// Which.
        id: RequestId,
        /// The answer, its peers' addresses as the answering peer gave them.
        response: KadResponse,
        /// Whether the answering peer is on this host (the addresses it names are vetted by it).
        same_host: bool,
    },
    /// One of our requests failed.
    Failure {
        /// Which.
        id: RequestId,
        /// How.
        kind: FailureKind,
    },
    /// Time passed (at or after [`Core::next_wakeup`]).
    Tick,
}

/// What an operation came to.
#[derive(Debug, Clone, PartialEq)]
pub enum OpOk {
    /// Stored: these peers acknowledged the record and then served it back when asked, so they
    /// keep a copy (this node's own copy aside). An acknowledgement alone counts for nothing.
    Stored {
        /// Peers seen to keep a copy.
        kept: Vec<PeerId>,
        /// Whether this node keeps one too (a serving node's store; a provide says no).
        here: bool,
    },
    /// The value.
    Value(Vec<u8>),
    /// The closest peers that answered.
    Closest(Vec<PeerId>),
    /// Providers of a key (possibly none), each with the addresses it was named with.
    Providers(Vec<WirePeer>),
    /// A peer's addresses.
    PeerAddrs {
        /// Its addresses.
        addrs: Vec<Multiaddr>,
        /// Whether it answered us (else the addresses are what others said of it).
        reached: bool,
    },
    /// A peer's handler answered.
    Command(Vec<u8>),
    /// A broadcast went out in this many hand-offs.
    Broadcast {
        /// Hand-offs sent.
        sent: usize,
    },
}

/// Why an operation failed.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum OpError {
    /// The closest peers all answered, and none holds the key.
    #[error("not found")]
    NotFound,
    /// The deadline passed, or closer peers never answered.
    #[error("timed out")]
    Timeout,
    /// No peer is known.
    #[error("no peers")]
    NoPeers,
    /// As many of the handles' operations run as the core takes at once
    /// ([`super::operations::MAX_OPERATIONS`]).
    #[error("busy: {pending} operations pending")]
    Busy {
        /// The operations running.
        pending: usize,
    },
    /// A client's store that no peer kept (a client keeps no copy itself).
    #[error("no node kept the record")]
    NotKept,
    /// This node refused its own record.
    #[error("{0}")]
    Refused(Refusal),
    /// A peer's command handler refused.
    #[error("refused: {0}")]
    CommandRefused(String),
    /// A command could not be delivered.
    #[error("{0}")]
    CommandFailed(String),
    /// This node refused its own broadcast (over its share, as its peers would refuse it).
    #[error("broadcast refused: {0}")]
    BroadcastRefused(String),
    /// This node provides too many keys already.
    #[error("provide refused: {0}")]
    ProvideRefused(String),
}

/// What an operation cost.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Report {
    /// Requests sent.
    pub requests: usize,
    /// Rounds until the closest peer that answered (or the holder) was reached.
    pub hops: u32,
    /// How long it took.
    pub took: Duration,
}

/// What the core wants done.
#[derive(Debug, Clone, PartialEq)]
pub enum Action {
    /// Send a request.
    Send(Outgoing),
    /// Answer an inbound request; `None` refuses it (the stream is reset, nothing acknowledged).
    Answer {
        /// Which request.
        id: InboundId,
        /// The answer.
        response: Option<KadResponse>,
    },
    /// An operation ended.
    Reply {
        /// Which.
        op: OpId,
        /// How.
        result: Result<OpOk, OpError>,
        /// At what cost.
        report: Report,
    },
    /// Send a command to a peer; its outcome comes back as [`Input::CommandAnswered`] or
    /// [`Input::CommandFailed`].
    SendCommand {
        /// The core's number for this command.
        id: CommandId,
        /// To whom.
        peer: PeerId,
        /// Its addresses, should it need dialing.
        addrs: Vec<Multiaddr>,
        /// The bytes.
        payload: Vec<u8>,
    },
    /// Run the application's handler on a peer's command; its answer comes back as
    /// [`Input::HandlerDone`].
    RunHandler {
        /// Which inbound command.
        id: InboundId,
        /// From whom.
        peer: PeerId,
        /// Its bytes.
        payload: Vec<u8>,
    },
    /// Answer a peer's command.
    AnswerCommand {
        /// Which inbound command.
        id: InboundId,
        /// The answer.
        reply: CommandReply,
    },
    /// Hand a broadcast message to a peer; the outcome comes back as
    /// [`Input::BroadcastAnswered`] or [`Input::BroadcastFailed`].
    Broadcast {
        /// The core's number for this hand-off.
        id: HandoffId,
        /// To whom.
        peer: PeerId,
        /// Its addresses, should it need dialing.
        addrs: Vec<Multiaddr>,
        /// The message, its height set for the receiver's share.
        message: BroadcastMessage,
    },
    /// Answer a peer's broadcast hand-off; `None` refuses it.
    AnswerBroadcast {
        /// Which inbound hand-off.
        id: InboundId,
        /// The answer.
        ack: Option<Ack>,
    },
    /// A broadcast reached this node for the first time: the application gets it.
    Deliver {
        /// The node that first sent it.
        origin: PeerId,
        /// Its bytes.
        payload: Arc<Vec<u8>>,
    },
    /// Acknowledge a mirror push (`kept`), or drop it unacknowledged: a mirror admits before it
    /// acknowledges, and takes pushes only from its named feeders.
    AnswerMirror {
        /// Which push.
        id: InboundId,
        /// Whether the record is held now.
        kept: bool,
    },
    /// Hand a record to a mirror; its outcome comes back as [`Input::MirrorAcked`] or
    /// [`Input::MirrorFailed`].
    Mirror {
        /// The core's number for this hand-off.
        id: MirrorId,
        /// The mirror.
        peer: PeerId,
        /// Its addresses, should it need dialing.
        addrs: Vec<Multiaddr>,
        /// The record, with the life it has left.
        record: MirrorRecord,
    },
    /// A new mirror was found; it is being sent every record held here.
    MirrorFound {
        /// Who.
        peer: PeerId,
    },
    /// A record a peer sent (a PUT_VALUE, a mirrored copy) was not kept.
    Refused {
        /// Who sent it.
        peer: PeerId,
        /// Why (an [`Refusal::Invalid`] record is a lie).
        refusal: Refusal,
    },
    /// A peer left the routing table after failing requests in a row, or found unreachable (the
    /// driver remembers it, to dial it again should this node end up cut off).
    Evicted {
        /// Who.
        peer: PeerId,
        /// The addresses it had.
        addrs: Vec<Multiaddr>,
    },
    /// The routing table emptied: feed back every connected peer that serves kad as
    /// [`Input::PeerSeen`], so a node cut off from its table but not from the network re-learns
    /// its peers at once.
    Relearn,
    /// Dial `addr` (a bootstrap node, or a peer to rejoin through); the outcome comes back as
    /// [`Input::Connected`] or [`Input::DialFailed`].
    Dial {
        /// The core's number for this dial.
        dial: DialId,
        /// Where.
        addr: Multiaddr,
    },
    /// Dial `peer` once, to see whether it is alive; a failure comes back as
    /// [`Input::Undialable`], which evicts it.
    CheckPeer {
        /// Who.
        peer: PeerId,
        /// Its addresses in the table.
        addrs: Vec<Multiaddr>,
    },
    /// The node joined (again) through this peer.
    Joined {
        /// Who.
        peer: PeerId,
    },
    /// A peer answered one of our requests with a false record.
    Lied {
        /// Who.
        peer: PeerId,
        /// What was wrong.
        error: RecordError,
    },
    /// A silent peer is held out for `held`: not asked, not told about, not in the table.
    HeldOut {
        /// Who.
        peer: PeerId,
        /// For how long (unless heard from sooner).
        held: Duration,
    },
    /// Block a peer: disconnect it and refuse its connections.
    Block {
        /// Who.
        peer: PeerId,
        /// The offence that made one too many (`None`: the operator's block).
        offence: Option<Offence>,
    },
    /// Lift a block (the operator's, or one that ran out).
    Unblock {
        /// Who.
        peer: PeerId,
    },
}

impl Action {
    /// The end of operation `op`, with no report (it needed no lookup).
    pub(crate) fn reply(op: OpId, result: Result<OpOk, OpError>) -> Self {
        Self::Reply {
            op,
            result,
            report: Report::default(),
        }
    }
}
