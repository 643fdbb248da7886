//! What is in flight between the core and the swarm: each side's id for the same request, the
//! channels of peers' requests waiting for the core's answer, and the handles' operations
//! waiting for their outcome. Bookkeeping only: what to send and answer is the core's call.

use std::collections::HashMap;

use dht_behaviours::broadcast::Ack;
use dht_behaviours::command::CommandReply;
use dht_behaviours::info::NodeInfo;
use dht_behaviours::kad::{OutboundId, Responder};
use libp2p::request_response::{OutboundRequestId, ResponseChannel};
use libp2p::swarm::ConnectionId;
use libp2p::{Multiaddr, PeerId};

use super::callers::Caller;
use crate::command::Reply;
use crate::core::{CommandId, DialId, HandoffId, InboundId, MirrorId, OpId, RequestId};
use crate::node::pending::Pending;

/// Inbound requests of one protocol waiting for the core's answer, numbered for it.
pub(crate) struct Inbound<T> {
    waiting: HashMap<InboundId, T>,
    next: InboundId,
}

impl<T> Default for Inbound<T> {
    fn default() -> Self {
        Self {
            waiting: HashMap::new(),
            next: 0,
        }
    }
}

impl<T> Inbound<T> {
    /// Holds `channel` until the core answers; the number the core answers by.
    pub fn insert(&mut self, channel: T) -> InboundId {
        let id = self.next;
        self.next += 1;
        self.waiting.insert(id, channel);
        id
    }

    /// The channel of request `id`, if it still waits.
    pub fn remove(&mut self, id: &InboundId) -> Option<T> {
        self.waiting.remove(id)
    }
}

/// Every id map between the swarm and the core, and the driver's own requests pending.
pub(crate) struct Wires {
    /// Our kad requests: the swarm's ids to the core's.
    pub kad_requests: HashMap<OutboundId, RequestId>,
    /// Peers' kad requests.
    pub kad_inbound: Inbound<Responder>,
    /// Peers' custom commands.
    pub command_inbound: Inbound<ResponseChannel<CommandReply>>,
    /// Our custom commands.
    pub command_requests: HashMap<OutboundRequestId, CommandId>,
    /// Peers' broadcast hand-offs.
    pub broadcast_inbound: Inbound<ResponseChannel<Ack>>,
    /// Our broadcast hand-offs.
    pub broadcast_requests: HashMap<OutboundRequestId, HandoffId>,
    /// Mirror pushes to this node (acknowledged only once kept).
    pub mirror_inbound: Inbound<ResponseChannel<()>>,
    /// Our hand-offs to mirrors.
    pub mirror_requests: HashMap<OutboundRequestId, MirrorId>,
    /// The core's dials in progress.
    pub core_dials: HashMap<ConnectionId, (DialId, Multiaddr)>,
    /// The handles' operations, by the core's number.
    pub callers: HashMap<OpId, Caller>,
    next_op: OpId,
    /// Dials the handles asked for (`connect`), each with its deadline.
    pub dials: Pending<ConnectionId, Reply<PeerId>>,
    /// Node-info requests the handles asked for, each with its deadline.
    pub info_ops: Pending<OutboundRequestId, (PeerId, Reply<NodeInfo>)>,
}

impl Default for Wires {
    fn default() -> Self {
        Self {
            kad_requests: HashMap::new(),
            kad_inbound: Inbound::default(),
            command_inbound: Inbound::default(),
            command_requests: HashMap::new(),
            broadcast_inbound: Inbound::default(),
            broadcast_requests: HashMap::new(),
            mirror_inbound: Inbound::default(),
            mirror_requests: HashMap::new(),
            core_dials: HashMap::new(),
            callers: HashMap::new(),
            next_op: 0,
            dials: Pending::new(),
            info_ops: Pending::new(),
        }
    }
}

impl Wires {
    /// Numbers an operation `caller` waits for.
    pub fn start(&mut self, caller: Caller) -> OpId {
        let op = self.next_op;
        self.next_op += 1;
        self.callers.insert(op, caller);
        op
    }
}
