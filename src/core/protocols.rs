//! The node's protocols beside kad as the core takes them: broadcasts (ours spread, peers'
//! delivered, a forged one an offence), custom commands from peers (a blocked peer's refused),
//! mirrors (pushes taken from chosen feeders only, chosen mirrors fed).

use dht_behaviours::broadcast::BroadcastMessage;
use dht_behaviours::mirror::MirrorRecord;
use libp2p::kad::{Record, RecordKey};
use libp2p::{Multiaddr, PeerId};

use super::Core;
use super::broadcast::broadcaster::HandoffId;
use super::context::Cx;
use super::events::{Action, InboundId, OpId};
use super::records::{Admitted, Source};

impl Core {
    /// Broadcasts `payload` from this node.
    pub(super) fn originate(&mut self, op: OpId, payload: Vec<u8>, cx: &mut Cx) {
        self.broadcast
            .originate(op, payload, &self.routing, &mut self.rng, cx);
    }

    /// `peer` handed us `message` (inbound request `id`).
    pub(super) fn broadcast_received(
        &mut self,
        peer: PeerId,
        id: InboundId,
        message: BroadcastMessage,
        cx: &mut Cx,
    ) {
        let blocked = self.is_blocked(&peer);
        let offence =
            self.broadcast
                .received(peer, blocked, id, message, &self.routing, &mut self.rng, cx);
        if let Some(offence) = offence {
            self.offend(peer, offence, cx);
        }
    }

    /// A broadcast hand-off failed: another peer of its bucket, if one is left.
    pub(super) fn handoff_failed(&mut self, id: HandoffId, cx: &mut Cx) {
        self.broadcast.failed(id, &self.routing, &mut self.rng, cx);
    }

    /// `peer` sent us a command (inbound request `id`).
    pub(super) fn command_received(
        &mut self,
        peer: PeerId,
        id: InboundId,
        payload: Vec<u8>,
        cx: &mut Cx,
    ) {
        let blocked = self.is_blocked(&peer);
        self.commands.received(peer, blocked, id, payload, cx);
    }

    /// `peer` speaks the mirror protocol (identify says so): fed if it is a chosen mirror.
    pub(super) fn mirror_seen(&mut self, peer: PeerId, addrs: Vec<Multiaddr>, cx: &mut Cx) {
        if self.mirrors.seen(peer, addrs, &self.records, cx.now) {
            cx.out.push(Action::MirrorFound { peer });
        }
    }

    /// A mirror push from `peer` (this node is a mirror): kept outside the shares when its
    /// operator named `peer` a feeder, and acknowledged only once admitted; anyone else's push
    /// is refused unacknowledged (a stranger stores through kad, within its shares).
    /// The copy lives no longer than the sender's nor than the TTL.
    pub(super) fn mirrored(
        &mut self,
        peer: PeerId,
        id: InboundId,
        pushed: MirrorRecord,
        cx: &mut Cx,
    ) {
        if !self.config.mirror || !self.config.mirror_feeders.contains(&peer) {
            self.stats.mirror_pushes_refused += 1;
            cx.out.push(Action::AnswerMirror { id, kept: false });
            return;
        }
        let mut record = Record::new(RecordKey::from(pushed.key), pushed.value);
        let life = pushed.expires_in.min(self.config.timing.record_ttl);
        record.expires = Some(cx.now + life);
        let kept = match self.records.admit(Source::Feeder(peer), record, cx.now) {
            Ok(Admitted::New | Admitted::Updated) => {
                self.stats.puts_kept += 1;
                true
            }
            Ok(Admitted::Held) => true,
            Err(refusal) => {
                self.refused(peer, refusal, cx);
                false
            }
        };
        cx.out.push(Action::AnswerMirror { id, kept });
    }
}
