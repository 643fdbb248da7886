//! Inbound handshakes bounded per address and in all, oldest displaced first.
//!
//! A connection that sends a few bytes and stalls holds one of the swarm's pending-inbound places
//! until its handshake times out. Three hundred of them once made a node refuse every newcomer
//! for ten seconds. Here each inbound handshake (TCP accept to an authenticated, multiplexed
//! connection) is registered by its remote IP; at [`MAX_HANDSHAKES_PER_IP`] from one address or
//! [`MAX_HANDSHAKES`] in all, a new one aborts the oldest pending one instead of being refused,
//! and none lasts longer than [`INBOUND_HANDSHAKE_TIMEOUT`]. An honest handshake takes a few
//! milliseconds, so it completes long before enough newer ones arrive to displace it, while a
//! staller only ever holds places it will lose.

use std::collections::VecDeque;
use std::future::Future;
use std::net::IpAddr;
use std::pin::Pin;
use std::sync::{Arc, Mutex};
use std::task::{Context, Poll};
use std::time::Duration;

use dht_behaviours::config::MAX_PENDING_INCOMING;
use futures::TryFutureExt;
use futures::future::{AbortHandle, Abortable, Aborted, MapErr};
use libp2p::core::transport::{DialOpts, ListenerId, TransportError, TransportEvent};
use libp2p::multiaddr::Protocol;
use libp2p::{Multiaddr, Transport};

/// Longest an inbound connection may take from accept to a multiplexed, authenticated link.
pub const INBOUND_HANDSHAKE_TIMEOUT: Duration = Duration::from_secs(5);
/// Inbound handshakes from one IP address at once (a local network of 20 nodes on 127.0.0.1
/// starting together stays below it).
pub const MAX_HANDSHAKES_PER_IP: usize = 32;
/// Inbound handshakes at once. Half the swarm's own pending-inbound bound, so that a displaced
/// handshake has room to be reported gone before the swarm would refuse a newcomer.
pub const MAX_HANDSHAKES: usize = MAX_PENDING_INCOMING as usize / 2;

const _: () = assert!(MAX_HANDSHAKES_PER_IP <= MAX_HANDSHAKES);

/// A handshake that failed, or gave way to a newer one.
#[derive(Debug, thiserror::Error)]
pub enum HandshakeError<E: std::error::Error + 'static> {
    /// The transport's own error.
    #[error(transparent)]
    Transport(E),
    /// Aborted to make room for a newer handshake (the oldest pending from its address, or of all).
    #[error("inbound handshake displaced by a newer one")]
    Displaced,
}

#[derive(Debug, Default)]
struct Registry {
    next: u64,
    /// Oldest first.
    pending: VecDeque<(u64, Option<IpAddr>, AbortHandle)>,
}

impl Registry {
    /// Registers a new handshake from `ip`, aborting the oldest ones in the way.
    fn add(&mut self, ip: Option<IpAddr>, handle: AbortHandle) -> u64 {
        if let Some(ip) = ip
            && self
                .pending
                .iter()
                .filter(|(_, i, _)| *i == Some(ip))
                .count()
                >= MAX_HANDSHAKES_PER_IP
            && let Some(pos) = self.pending.iter().position(|(_, i, _)| *i == Some(ip))
            && let Some((_, _, oldest)) = self.pending.remove(pos)
        {
            oldest.abort();
        }
        if self.pending.len() >= MAX_HANDSHAKES
            && let Some((_, _, oldest)) = self.pending.pop_front()
        {
            oldest.abort();
        }
        let id = self.next;
        self.next += 1;
        self.pending.push_back((id, ip, handle));
        id
    }

    fn remove(&mut self, id: u64) {
        if let Some(pos) = self.pending.iter().position(|(i, _, _)| *i == id) {
            self.pending.remove(pos);
        }
    }
}

/// A transport whose inbound handshakes are bounded as the module says.
pub struct HandshakeGuard<T> {
    inner: T,
    registry: Arc<Mutex<Registry>>,
}

impl<T> HandshakeGuard<T> {
    /// Guards the inbound handshakes of `inner`.
    pub fn new(inner: T) -> Self {
        Self {
            inner,
            registry: Arc::default(),
        }
    }
}

fn ip_of(addr: &Multiaddr) -> Option<IpAddr> {
    addr.iter().find_map(|p| match p {
        Protocol::Ip4(ip) => Some(IpAddr::V4(ip)),
        Protocol::Ip6(ip) => Some(IpAddr::V6(ip)),
        _ => None,
    })
}

/// One inbound handshake, unregistered when it ends or is dropped.
pub struct Guarded<F> {
    inner: Pin<Box<Abortable<F>>>,
    id: u64,
    registry: Arc<Mutex<Registry>>,
}

impl<F, O, E> Future for Guarded<F>
where
    F: Future<Output = Result<O, E>>,
    E: std::error::Error + 'static,
{
    type Output = Result<O, HandshakeError<E>>;

    fn poll(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Self::Output> {
        match self.inner.as_mut().poll(cx) {
            Poll::Pending => Poll::Pending,
            Poll::Ready(Ok(result)) => Poll::Ready(result.map_err(HandshakeError::Transport)),
            Poll::Ready(Err(Aborted)) => Poll::Ready(Err(HandshakeError::Displaced)),
        }
    }
}

impl<F> Drop for Guarded<F> {
    fn drop(&mut self) {
        if let Ok(mut registry) = self.registry.lock() {
            registry.remove(self.id);
        }
    }
}

type DialFuture<T> = MapErr<
    <T as Transport>::Dial,
    fn(<T as Transport>::Error) -> HandshakeError<<T as Transport>::Error>,
>;

impl<T> Transport for HandshakeGuard<T>
where
    T: Transport + Unpin,
    T::Error: 'static,
{
    type Output = T::Output;
    type Error = HandshakeError<T::Error>;
    type ListenerUpgrade = Guarded<T::ListenerUpgrade>;
    type Dial = DialFuture<T>;

    fn listen_on(
        &mut self,
        id: ListenerId,
        addr: Multiaddr,
    ) -> Result<(), TransportError<Self::Error>> {
        self.inner
            .listen_on(id, addr)
            .map_err(|e| e.map(HandshakeError::Transport))
    }

    fn remove_listener(&mut self, id: ListenerId) -> bool {
        self.inner.remove_listener(id)
    }

    fn dial(
        &mut self,
        addr: Multiaddr,
        opts: DialOpts,
    ) -> Result<Self::Dial, TransportError<Self::Error>> {
        let to_ours: fn(T::Error) -> HandshakeError<T::Error> = HandshakeError::Transport;
        self.inner
            .dial(addr, opts)
            .map(|dial| dial.map_err(to_ours))
            .map_err(|e| e.map(HandshakeError::Transport))
    }

    fn poll(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<TransportEvent<Self::ListenerUpgrade, Self::Error>> {
        let this = self.get_mut();
        let event = match Pin::new(&mut this.inner).poll(cx) {
            Poll::Ready(event) => event,
            Poll::Pending => return Poll::Pending,
        };
        let ip = match &event {
            TransportEvent::Incoming { send_back_addr, .. } => ip_of(send_back_addr),
            _ => None,
        };
        let registry = Arc::clone(&this.registry);
        let guarded = event
            .map_upgrade(|upgrade| {
                let (handle, abort) = AbortHandle::new_pair();
                let id = match registry.lock() {
                    Ok(mut r) => r.add(ip, handle),
                    // A poisoned lock (a panic elsewhere) leaves the handshake unbounded.
                    Err(_) => u64::MAX,
                };
                Guarded {
                    inner: Box::pin(Abortable::new(upgrade, abort)),
                    id,
                    registry,
                }
            })
            .map_err(HandshakeError::Transport);
        Poll::Ready(guarded)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_oldest_of_an_address_and_of_all_give_way() {
        let mut r = Registry::default();
        let a: IpAddr = "10.0.0.1".parse().expect("ip");
        let mut handles = Vec::new();
        for _ in 0..MAX_HANDSHAKES_PER_IP + 3 {
            let (handle, _registration) = AbortHandle::new_pair();
            r.add(Some(a), handle.clone());
            handles.push(handle);
        }
        let aborted = handles.iter().filter(|h| h.is_aborted()).count();
        assert_eq!(aborted, 3, "the three oldest of that address");
        assert!(handles[..3].iter().all(|h| h.is_aborted()));
        // Other addresses fill the rest; at the total, the oldest of all goes.
        let mut others = Vec::new();
        for i in 0..MAX_HANDSHAKES {
            let (handle, _registration) = AbortHandle::new_pair();
            r.add(
                Some(IpAddr::from([10, 1, (i / 256) as u8, i as u8])),
                handle.clone(),
            );
            others.push(handle);
        }
        assert_eq!(r.pending.len(), MAX_HANDSHAKES);
        assert!(handles.iter().all(|h| h.is_aborted()));
        assert!(!others.last().expect("one").is_aborted());
        let first = r.pending.front().map(|(id, _, _)| *id).expect("one");
        r.remove(first);
        assert_eq!(r.pending.len(), MAX_HANDSHAKES - 1);
    }
}
