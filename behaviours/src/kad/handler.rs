//! One connection's kad streams. Inbound, a stream serves request after request, in order, until
//! the peer ends it, it idles, or it reaches its request limit; a request without an answer
//! (ADD_PROVIDER) is taken and the stream read on. Outbound, requests share a small pool of
//! streams: one request at a time on each, the next request on a stream that has just answered,
//! a new stream only when every open one is busy. Independent requests are not pipelined: a
//! server that closes after one answer (rust-libp2p's kad and older builds of ours answer once)
//! would drop the ones behind it unseen, and one slow answer would hold up the rest;
//! go-libp2p-kad-dht does the same. The one exception is a request's follower (a store's check
//! of a copy, written with its PUT: see `exchange`), which depends on the request ahead anyway
//! and is sent again on its own stream when the peer never read it.

use std::collections::{HashMap, VecDeque};
use std::io;
use std::pin::Pin;
use std::task::{Context, Poll};
use std::time::Instant;

use futures::future::BoxFuture;
use futures::stream::FuturesUnordered;
use futures::{AsyncRead, AsyncReadExt, AsyncWriteExt, FutureExt, StreamExt};
use libp2p::swarm::handler::{
    ConnectionEvent, ConnectionHandler, ConnectionHandlerEvent, DialUpgradeError,
    FullyNegotiatedInbound, FullyNegotiatedOutbound, StreamUpgradeError, SubstreamProtocol,
};
use libp2p::{Stream, StreamProtocol};

use super::exchange::{Exchange, exchange};
use super::framing::{read_frame, write_message};
use super::{Failure, StreamLimits};
use crate::kad_wire::{KadRequest, KadResponse, MessageKind};

pub use super::exchange::Outgoing;
use super::messages::{HandlerIn, HandlerOut};
use super::upgrade::Upgrade;

/// How an inbound stream's turn ended.
enum Inbound {
    /// A request's bytes.
    Request(Vec<u8>),
    /// The peer ended the stream between requests, it idled, or it reached its limit.
    Ended,
    /// It broke.
    Failed(io::Error),
}

/// A stream's piece of work, finished.
// Each lives for one poll, between a stream's future and the handler: not worth a box.
#[allow(clippy::large_enum_variant)]
enum Step {
    Inbound {
        stream: u64,
        io: Stream,
        served: u32,
        outcome: Inbound,
    },
    Outbound {
        out: Outgoing,
        io: Stream,
        outcome: Exchange,
        /// The follower's, when `out` had one.
        then: Option<Exchange>,
    },
}

/// One connection's kad streams.
pub struct Handler {
    limits: StreamLimits,
    protocol: StreamProtocol,
    serve: bool,
    /// Inbound streams open (reading, waiting for the core's answer, or writing it).
    inbound: usize,
    next_stream: u64,
    /// Inbound streams whose request the behaviour is answering, with their requests served.
    waiting: HashMap<u64, (Stream, u32)>,
    /// Our requests waiting for a stream; retries (on a new stream) first.
    queue: VecDeque<Outgoing>,
    retries: VecDeque<Outgoing>,
    /// Outbound streams between requests, oldest first, with the time each became idle.
    idle: VecDeque<(Stream, Instant)>,
    /// When the oldest idle stream expires (armed while any is idle).
    idle_timer: Option<Pin<Box<tokio::time::Sleep>>>,
    /// Outbound streams open, busy or idle, and streams asked of the connection.
    outbound: usize,
    opening: usize,
    tasks: FuturesUnordered<BoxFuture<'static, Step>>,
    events: VecDeque<ConnectionHandlerEvent<Upgrade, (), HandlerOut>>,
}

impl Handler {
    /// A handler for one connection; it takes peers' requests only when `serve`.
    pub fn new(protocol: StreamProtocol, serve: bool, limits: StreamLimits) -> Self {
        Self {
            limits,
            protocol,
            serve,
            inbound: 0,
            next_stream: 0,
            waiting: HashMap::new(),
            queue: VecDeque::new(),
            retries: VecDeque::new(),
            idle: VecDeque::new(),
            idle_timer: None,
            outbound: 0,
            opening: 0,
            tasks: FuturesUnordered::new(),
            events: VecDeque::new(),
        }
    }

    fn notify(&mut self, event: HandlerOut) {
        self.events
            .push_back(ConnectionHandlerEvent::NotifyBehaviour(event));
    }

    /// Writes `answer` (if any) on an inbound stream, then reads the next request.
    fn serve_next(&mut self, stream: u64, mut io: Stream, served: u32, answer: Option<Vec<u8>>) {
        let limits = self.limits;
        self.tasks.push(
            async move {
                let outcome = serve(&mut io, served, answer, limits).await;
                Step::Inbound {
                    stream,
                    io,
                    served,
                    outcome,
                }
            }
            .boxed(),
        );
    }

    fn on_inbound(&mut self, stream: u64, io: Stream, served: u32, outcome: Inbound) {
        let bytes = match outcome {
            Inbound::Request(bytes) => bytes,
            Inbound::Ended => {
                self.inbound -= 1;
                return;
            }
            Inbound::Failed(e) => {
                self.inbound -= 1;
                self.notify(HandlerOut::InboundFailed(e));
                return;
            }
        };
        let request = match KadRequest::decode(&bytes, Instant::now()) {
            Ok(request) => request,
            Err(e) => {
                // Garbage ends the stream (the peer's next bytes cannot be trusted to be a
                // frame); the connection and the peer's other streams go on.
                self.inbound -= 1;
                self.notify(HandlerOut::Malformed(e.to_string()));
                return;
            }
        };
        let served = served.saturating_add(1);
        if matches!(request, KadRequest::AddProvider { .. }) {
            // No answer goes back: read on at once.
            self.serve_next(stream, io, served, None);
        } else {
            self.waiting.insert(stream, (io, served));
        }
        self.notify(HandlerOut::Request {
            stream,
            number: served,
            request,
        });
    }

    /// Starts `out` (and its follower) on `io`.
    fn exchange(&mut self, out: Outgoing, mut io: Stream, reused: bool) {
        let max = self.limits.max_message;
        self.tasks.push(
            async move {
                let (outcome, then) = exchange(&mut io, &out, reused, max).await;
                Step::Outbound {
                    out,
                    io,
                    outcome,
                    then,
                }
            }
            .boxed(),
        );
    }

    fn on_outbound(
        &mut self,
        mut out: Outgoing,
        io: Stream,
        outcome: Exchange,
        then: Option<Exchange>,
    ) {
        let follower = out.then.take();
        if outcome.is_answered() && then.as_ref().is_none_or(Exchange::is_answered) {
            self.make_idle(io);
        } else {
            // Ended, broken, timed out (a late answer would arrive where the next request's
            // belongs), or refused: the stream goes.
            self.outbound -= 1;
            drop(io);
        }
        let id = out.id;
        match outcome {
            Exchange::Answered(response) => {
                let response =
                    response.unwrap_or_else(|| Box::new(KadResponse::to(MessageKind::AddProvider)));
                self.notify(HandlerOut::Response { id, response });
            }
            Exchange::Closed(_) if !out.retried => {
                // The peer had ended a stream we held open (it answers once per stream): not its
                // failure. Once more, on a stream of its own, the follower still behind it.
                self.retries.push_back(Outgoing {
                    retried: true,
                    then: follower,
                    ..out
                });
                self.dispatch();
                return;
            }
            Exchange::Refused | Exchange::Unsent => self.notify(HandlerOut::Failed {
                id,
                error: Failure::Refused,
            }),
            Exchange::Closed(e) | Exchange::Failed(e) => {
                self.notify(HandlerOut::Failed {
                    id,
                    error: Failure::Io(e),
                });
            }
            Exchange::TimedOut => self.notify(HandlerOut::Failed {
                id,
                error: Failure::Timeout,
            }),
        }
        if let (Some(follower), Some(outcome)) = (follower, then) {
            self.on_follower(*follower, outcome);
        }
        self.dispatch();
    }

    /// The request behind another on a stream came out as `outcome`.
    fn on_follower(&mut self, out: Outgoing, outcome: Exchange) {
        let id = out.id;
        let error = match outcome {
            Exchange::Answered(response) => {
                let response =
                    response.unwrap_or_else(|| Box::new(KadResponse::to(MessageKind::AddProvider)));
                self.notify(HandlerOut::Response { id, response });
                return;
            }
            // Never read: the request ahead was refused, or the peer answers once per stream.
            // Once, on a stream of its own (the request ahead is settled, so order holds).
            Exchange::Unsent | Exchange::Closed(_) if !out.retried => {
                self.retries.push_back(Outgoing {
                    retried: true,
                    ..out
                });
                return;
            }
            Exchange::Unsent | Exchange::Refused => Failure::Refused,
            Exchange::Closed(e) | Exchange::Failed(e) => Failure::Io(e),
            Exchange::TimedOut => Failure::Timeout,
        };
        self.notify(HandlerOut::Failed { id, error });
    }

    /// Fails `out` and its follower.
    fn fail(&mut self, out: &Outgoing, error: Failure) {
        for id in out.ids() {
            let error = error.duplicate();
            self.notify(HandlerOut::Failed { id, error });
        }
    }

    fn make_idle(&mut self, io: Stream) {
        self.idle.push_back((io, Instant::now()));
    }

    /// Hands waiting requests to idle streams and asks for new streams where none is idle.
    fn dispatch(&mut self) {
        let now = Instant::now();
        let (expired, live): (Vec<Outgoing>, Vec<Outgoing>) =
            self.retries.drain(..).partition(|out| out.deadline <= now);
        self.retries.extend(live);
        for out in expired {
            self.fail(&out, Failure::Timeout);
        }
        while let Some(out) = self.queue.front() {
            if out.deadline <= now {
                let out = self.queue.pop_front().expect("front exists");
                self.fail(&out, Failure::Timeout);
                continue;
            }
            if out.needs_fresh_stream() {
                let out = self.queue.pop_front().expect("front exists");
                self.retries.push_back(out);
                continue;
            }
            // The stream idle the shortest: the others age out when fewer are needed.
            let Some((io, _)) = self.idle.pop_back() else {
                break;
            };
            let out = self.queue.pop_front().expect("front exists");
            self.exchange(out, io, true);
        }
        let wanted = self.queue.len() + self.retries.len();
        while wanted > self.opening {
            if self.outbound + self.opening >= self.limits.max_outbound_streams {
                // Every slot is taken: an idle stream (the oldest) gives its place to a request
                // that needs a new one, rather than let it wait for the stream to age out.
                if self.idle.pop_front().is_none() {
                    break;
                }
                self.outbound -= 1;
            }
            self.opening += 1;
            self.events
                .push_back(ConnectionHandlerEvent::OutboundSubstreamRequest {
                    protocol: SubstreamProtocol::new(Upgrade(Some(self.protocol.clone())), ())
                        .with_timeout(self.limits.request_timeout),
                });
        }
    }

    /// Drops idle streams the peer ended (or wrote to unasked), and those idle too long.
    fn watch_idle(&mut self, cx: &mut Context<'_>) {
        let before = self.idle.len();
        self.idle.retain_mut(|(io, _)| {
            let mut byte = [0u8; 1];
            // Pending: still open and quiet. Anything else: the stream is of no more use.
            Pin::new(io).poll_read(cx, &mut byte).is_pending()
        });
        let now = Instant::now();
        // A request that meets a server's close of a stream idle as long (ours, and Go's after a
        // minute) is sent again on a fresh stream.
        let idle_timeout = self.limits.idle_timeout;
        while self
            .idle
            .front()
            .is_some_and(|(_, since)| *since + idle_timeout <= now)
        {
            self.idle.pop_front();
        }
        self.outbound -= before - self.idle.len();
        let Some((_, since)) = self.idle.front() else {
            self.idle_timer = None;
            return;
        };
        // One timer for the oldest idle stream. The oldest only gets younger, so the timer
        // may fire early (and is set again), never late; it is not reset per request.
        let at = tokio::time::Instant::from_std(*since + idle_timeout);
        let timer = self
            .idle_timer
            .get_or_insert_with(|| Box::pin(tokio::time::sleep_until(at)));
        if timer.as_mut().poll(cx).is_ready() {
            timer.as_mut().reset(at);
            if timer.as_mut().poll(cx).is_ready() {
                // Due already: the next poll expires it.
                cx.waker().wake_by_ref();
            }
        }
    }
}

/// One turn of an inbound stream: the last request's answer written (a peer that does not read it
/// within the request timeout loses the stream), then the next request read. The wait for its
/// first byte may last the idle timeout; once it has begun, the whole message must arrive within
/// the request timeout, so a peer cannot hold a stream by trickling a message.
async fn serve(
    io: &mut Stream,
    served: u32,
    answer: Option<Vec<u8>>,
    limits: StreamLimits,
) -> Inbound {
    let timed_out =
        |what: &str| Inbound::Failed(io::Error::new(io::ErrorKind::TimedOut, what.to_owned()));
    if let Some(bytes) = answer {
        match tokio::time::timeout(
            limits.request_timeout,
            write_message(io, &bytes, limits.max_message),
        )
        .await
        {
            Ok(Ok(())) => {}
            Ok(Err(e)) => return Inbound::Failed(e),
            Err(_) => return timed_out("the peer did not take its kad answer in time"),
        }
    }
    if served >= limits.max_requests_per_stream {
        let _ = tokio::time::timeout(limits.request_timeout, io.close()).await;
        return Inbound::Ended;
    }
    let mut first = [0u8; 1];
    match tokio::time::timeout(limits.idle_timeout, io.read(&mut first)).await {
        Ok(Ok(1)) => {}
        Ok(Err(e)) => return Inbound::Failed(e),
        // The peer ended the stream, or it idled: our side ends too.
        Ok(Ok(_)) | Err(_) => {
            let _ = tokio::time::timeout(limits.request_timeout, io.close()).await;
            return Inbound::Ended;
        }
    }
    let mut message = futures::io::Cursor::new(first).chain(&mut *io);
    match tokio::time::timeout(
        limits.request_timeout,
        read_frame(&mut message, limits.max_message),
    )
    .await
    {
        Ok(Ok(Some(bytes))) => Inbound::Request(bytes),
        Ok(Ok(None)) => Inbound::Ended,
        Ok(Err(e)) => Inbound::Failed(e),
        Err(_) => timed_out("a kad message arrived too slowly"),
    }
}

impl ConnectionHandler for Handler {
    type FromBehaviour = HandlerIn;
    type ToBehaviour = HandlerOut;
    type InboundProtocol = Upgrade;
    type OutboundProtocol = Upgrade;
    type InboundOpenInfo = ();
    type OutboundOpenInfo = ();

    fn listen_protocol(&self) -> SubstreamProtocol<Upgrade> {
        SubstreamProtocol::new(Upgrade(self.serve.then(|| self.protocol.clone())), ())
    }

    fn on_behaviour_event(&mut self, event: HandlerIn) {
        match event {
            HandlerIn::Send(out) => {
                self.queue.push_back(out);
                self.dispatch();
            }
            HandlerIn::Answer {
                stream,
                request,
                response,
            } => {
                // Only the request the stream waits on: an answer to one that took none (an
                // ADD_PROVIDER, read past already) must not end the stream's next request.
                if self.waiting.get(&stream).is_none_or(|(_, n)| *n != request) {
                    return;
                }
                let Some((io, served)) = self.waiting.remove(&stream) else {
                    return;
                };
                match response {
                    Some(r) => {
                        let bytes = r.encode(Instant::now());
                        self.serve_next(stream, io, served, Some(bytes));
                    }
                    // Refused: the stream ends unanswered; the peer's next request takes another.
                    None => {
                        self.inbound -= 1;
                        drop(io);
                    }
                }
            }
        }
    }

    fn connection_keep_alive(&self) -> bool {
        // Open streams keep the connection alive by themselves; requests waiting for one too.
        !self.queue.is_empty() || !self.retries.is_empty()
    }

    fn poll(
        &mut self,
        cx: &mut Context<'_>,
    ) -> Poll<ConnectionHandlerEvent<Upgrade, (), HandlerOut>> {
        loop {
            if let Some(event) = self.events.pop_front() {
                return Poll::Ready(event);
            }
            match self.tasks.poll_next_unpin(cx) {
                Poll::Ready(Some(Step::Inbound {
                    stream,
                    io,
                    served,
                    outcome,
                })) => self.on_inbound(stream, io, served, outcome),
                Poll::Ready(Some(Step::Outbound {
                    out,
                    io,
                    outcome,
                    then,
                })) => self.on_outbound(out, io, outcome, then),
                Poll::Ready(None) | Poll::Pending => break,
            }
        }
        self.watch_idle(cx);
        if !self.retries.is_empty() || !self.queue.is_empty() {
            self.dispatch();
        }
        match self.events.pop_front() {
            Some(event) => Poll::Ready(event),
            None => Poll::Pending,
        }
    }

    fn on_connection_event(&mut self, event: ConnectionEvent<'_, Upgrade, Upgrade, (), ()>) {
        match event {
            ConnectionEvent::FullyNegotiatedInbound(FullyNegotiatedInbound {
                protocol: io,
                ..
            }) => {
                if !self.serve || self.inbound >= self.limits.max_inbound_streams {
                    tracing::debug!("kad stream refused: too many open on this connection");
                    drop(io);
                    return;
                }
                self.inbound += 1;
                let stream = self.next_stream;
                self.next_stream += 1;
                self.serve_next(stream, io, 0, None);
            }
            ConnectionEvent::FullyNegotiatedOutbound(FullyNegotiatedOutbound {
                protocol: io,
                ..
            }) => {
                self.opening -= 1;
                self.outbound += 1;
                match self.retries.pop_front().or_else(|| self.queue.pop_front()) {
                    Some(out) => self.exchange(out, io, false),
                    None => self.make_idle(io),
                }
                self.dispatch();
            }
            ConnectionEvent::DialUpgradeError(DialUpgradeError { error, .. }) => {
                self.opening -= 1;
                let error = match error {
                    StreamUpgradeError::Timeout => Failure::Timeout,
                    StreamUpgradeError::NegotiationFailed => Failure::Unsupported,
                    StreamUpgradeError::Io(e) => Failure::Io(e),
                    StreamUpgradeError::Apply(never) => match never {},
                };
                if matches!(error, Failure::Unsupported) {
                    // The peer does not speak kad: every request waiting here fails alike.
                    for out in self
                        .retries
                        .drain(..)
                        .chain(self.queue.drain(..))
                        .collect::<Vec<_>>()
                    {
                        self.fail(&out, Failure::Unsupported);
                    }
                    return;
                }
                if let Some(out) = self.retries.pop_front().or_else(|| self.queue.pop_front()) {
                    self.fail(&out, error);
                }
            }
            _ => {}
        }
    }
}
