//! Forwarding: every analyzed trace's spans, with the analysis added as
//! attributes ([`encode`](mod@encode)), exported over OTLP to the user's own backend
//! (`--forward-otlp`). See `docs/FORWARDING.md`.
//!
//! [`Forwarder::send`] is called by the analysis (a blocking thread) once per
//! analyzed trace. The queue is bounded in spans (`--forward-queue-spans`):
//! when it is full the analysis waits for room, so the buffer fills and the
//! receivers refuse new exports retryably; nothing is dropped for want of
//! room. One task batches queued traces into requests (up to
//! [`MAX_BATCH_SPANS`] spans or [`MAX_BATCH_BYTES`] bytes, or what came in
//! [`LINGER`]) and sends them with up to [`MAX_IN_FLIGHT`] requests in
//! flight, retrying as the OTLP specification says for exporters
//! (`transport.rs`). Shutdown drains the queue until the daemon's deadline;
//! what is left is dropped and counted.

pub mod encode;
pub mod records;
mod transport;

use std::fmt;
use std::str::FromStr;
use std::sync::atomic::Ordering;
use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use parking_lot::Mutex;
use serde::{Deserialize, Serialize};
use tokio::sync::{mpsc, OwnedSemaphorePermit, Semaphore, TryAcquireError};
use tokio::task::{JoinHandle, JoinSet};
use tokio::time::Instant;
use tokio_util::sync::CancellationToken;

use crate::analyze::budget::TraceCalls;
use crate::analyze::AnalyzedTrace;
use crate::stats::{LogEvery, Stats};
pub use encode::encode;
pub use transport::ForwardError;
use transport::{Client, Outcome};

/// Most spans in one request.
pub const MAX_BATCH_SPANS: u64 = 8192;
/// Most encoded bytes in one request (before compression), under the 4 MiB
/// receivers (the Collector, hopscope) take by default; a single larger
/// trace goes alone.
pub const MAX_BATCH_BYTES: usize = 3 << 20;
/// How long the first trace of a request waits for others.
pub const LINGER: Duration = Duration::from_millis(200);
/// Requests sent at once.
pub const MAX_IN_FLIGHT: usize = 2;
/// `ExportTraceServiceRequest.resource_spans`.
const REQUEST_SPANS_FIELD: u32 = 1;

/// How spans are sent: OTLP/gRPC or OTLP/HTTP with a protobuf body.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Protocol {
    Grpc,
    Http,
}

/// Whether request bodies are compressed.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Compression {
    Gzip,
    None,
}

/// Parses the values of a lowercase enum by their serde names.
macro_rules! text_enum {
    ($ty:ty, $($value:ident = $text:literal),+) => {
        impl FromStr for $ty {
            type Err = String;

            fn from_str(s: &str) -> Result<Self, String> {
                match s {
                    $($text => Ok(<$ty>::$value),)+
                    _ => Err(format!(concat!("`{}`: one of" $(, " ", $text)+), s)),
                }
            }
        }

        impl fmt::Display for $ty {
            fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                f.write_str(match self { $(<$ty>::$value => $text,)+ })
            }
        }
    };
}

text_enum!(Protocol, Grpc = "grpc", Http = "http");
text_enum!(Compression, Gzip = "gzip", None = "none");

/// Where and how to forward, validated ([`crate::config::Config::forward`]).
#[derive(Debug, Clone, PartialEq)]
pub struct Options {
    /// The receiver: for gRPC its endpoint; for HTTP the full URL requests
    /// are posted to (`/v1/traces` added to one without a path).
    pub url: reqwest::Url,
    pub protocol: Protocol,
    pub compression: Compression,
    /// Most spans queued, being batched or in flight.
    pub queue_spans: u32,
    /// How long a request is retried before it is dropped.
    pub max_elapsed: Duration,
}

impl Options {
    /// Checks `url` for `protocol`: `http://` with a host (TLS is not
    /// supported yet); for HTTP, the OTLP rule for a URL without a path.
    pub fn new(
        url: &str,
        protocol: Protocol,
        compression: Compression,
        queue_spans: usize,
        max_elapsed: Duration,
    ) -> Result<Options, String> {
        let mut parsed = reqwest::Url::parse(url)
            .map_err(|e| format!("forward_otlp `{url}` is not a URL: {e}"))?;
        if parsed.scheme() != "http" || parsed.host().is_none() {
            return Err(format!(
                "forward_otlp `{url}` must be an http:// URL with a host (https is not supported)"
            ));
        }
        if protocol == Protocol::Http && matches!(parsed.path(), "" | "/") {
            parsed.set_path(crate::ingest::TRACES_PATH);
        }
        let queue_spans = u32::try_from(queue_spans)
            .ok()
            .filter(|&n| n > 0)
            .ok_or_else(|| format!("forward_queue_spans must be between 1 and {}", u32::MAX))?;
        if max_elapsed.is_zero() {
            return Err("forward_max_elapsed must be greater than 0".to_owned());
        }
        Ok(Options {
            url: parsed,
            protocol,
            compression,
            queue_spans,
            max_elapsed,
        })
    }
}

/// Spans that hold room in the queue until they are settled: sent, or
/// dropped for a reason. Spans dropped unsettled (the task stopped at the
/// shutdown deadline, or never took them) count as dropped at shutdown.
struct Ticket {
    spans: u64,
    stats: Arc<Stats>,
    settled: bool,
    _room: OwnedSemaphorePermit,
}

impl Ticket {
    fn new(spans: u64, stats: Arc<Stats>, room: OwnedSemaphorePermit) -> Ticket {
        stats.forward_queued.fetch_add(spans, Ordering::Relaxed);
        Ticket {
            spans,
            stats,
            settled: false,
            _room: room,
        }
    }
}

impl Drop for Ticket {
    fn drop(&mut self) {
        self.stats
            .forward_queued
            .fetch_sub(self.spans, Ordering::Relaxed);
        if !self.settled {
            Stats::add(&self.stats.forward_spans_dropped_shutdown, self.spans);
        }
    }
}

/// One analyzed trace waiting in the queue, encoded: its `ResourceSpans`
/// as the `resource_spans` entries of an `ExportTraceServiceRequest`, so
/// that entries of several traces, end to end, are one request (and the
/// queue holds the wire form, a fraction of the messages' memory).
struct Item {
    body: Vec<u8>,
    ticket: Ticket,
}

/// Traces gathered into one request.
#[derive(Default)]
struct Batch {
    /// An encoded `ExportTraceServiceRequest`.
    body: Vec<u8>,
    tickets: Vec<Ticket>,
    spans: u64,
    /// When the first trace came: the batch goes out [`LINGER`] after.
    since: Option<Instant>,
}

impl Batch {
    fn push(&mut self, item: Item) {
        self.since.get_or_insert_with(Instant::now);
        self.spans += item.ticket.spans;
        if self.body.is_empty() {
            self.body = item.body;
        } else {
            self.body.extend_from_slice(&item.body);
        }
        self.tickets.push(item.ticket);
    }

    fn full(&self) -> bool {
        self.spans >= MAX_BATCH_SPANS || self.body.len() >= MAX_BATCH_BYTES
    }

    fn is_empty(&self) -> bool {
        self.tickets.is_empty()
    }
}

/// The forwarding queue and its sending task.
pub struct Forwarder {
    queue: mpsc::UnboundedSender<Item>,
    room: Arc<Semaphore>,
    capacity: u32,
    stats: Arc<Stats>,
    /// Cancelled once every trace has been sent: the task drains and stops.
    done: CancellationToken,
    /// Cancelled at the shutdown deadline: what is not sent is dropped.
    abort: CancellationToken,
    task: Mutex<Option<JoinHandle<()>>>,
    full_log: LogEvery,
}

impl Forwarder {
    /// Starts the sending task (on the current runtime).
    pub fn start(options: &Options, stats: Arc<Stats>) -> Result<Forwarder, ForwardError> {
        let client = Client::new(options, stats.clone())?;
        let (queue, rx) = mpsc::unbounded_channel();
        let (done, abort) = (CancellationToken::new(), CancellationToken::new());
        let task = tokio::spawn(run(
            rx,
            Arc::new(client),
            options.max_elapsed,
            done.clone(),
            abort.clone(),
        ));
        tracing::info!(url = %options.url, protocol = %options.protocol, compression = %options.compression, "forwarding analyzed traces over OTLP");
        Ok(Forwarder {
            queue,
            room: Arc::new(Semaphore::new(options.queue_spans as usize)),
            capacity: options.queue_spans,
            stats,
            done,
            abort,
            task: Mutex::new(Some(task)),
            full_log: LogEvery::default(),
        })
    }

    /// Queues `trace` for forwarding, waiting for room while the queue is
    /// full (on a blocking thread: the analysis). After the shutdown
    /// deadline it is dropped and counted instead.
    pub fn send(&self, trace: &AnalyzedTrace, calls: &TraceCalls) {
        let spans = trace.trace.len() as u64;
        // A trace larger than the whole queue takes all of it.
        let want = spans.clamp(1, self.capacity as u64) as u32;
        let room = match self.room.clone().try_acquire_many_owned(want) {
            Ok(room) => Ok(room),
            Err(TryAcquireError::Closed) => Err(()),
            Err(TryAcquireError::NoPermits) => {
                if self.full_log.ready() {
                    tracing::warn!(
                        queued_spans = self.stats.forward_queued.load(Ordering::Relaxed),
                        "forwarding queue full: the analysis waits for the receiver (logged once in a while)"
                    );
                }
                self.room
                    .clone()
                    .blocking_acquire_many_owned(want)
                    .map_err(|_| ())
            }
        };
        let Ok(room) = room else {
            Stats::add(&self.stats.forward_spans_dropped_shutdown, spans);
            return;
        };
        let ticket = Ticket::new(spans, self.stats.clone(), room);
        let resource_spans = encode(trace, &mut records::attributes(trace, calls));
        let mut body = Vec::with_capacity(
            resource_spans
                .iter()
                .map(|r| prost::encoding::message::encoded_len(REQUEST_SPANS_FIELD, r))
                .sum(),
        );
        for r in &resource_spans {
            prost::encoding::message::encode(REQUEST_SPANS_FIELD, r, &mut body);
        }
        // Fails only once the task has stopped: the item's ticket counts it.
        let _ = self.queue.send(Item { body, ticket });
    }

    /// From `deadline` on, nothing waits for room and what is not sent is
    /// dropped (counted in `forward_spans_dropped_shutdown`).
    pub fn give_up_at(&self, deadline: Instant) {
        let (abort, room) = (self.abort.clone(), self.room.clone());
        tokio::spawn(async move {
            tokio::select! {
                _ = tokio::time::sleep_until(deadline) => {}
                _ = abort.cancelled() => {}
            }
            room.close();
            abort.cancel();
        });
    }

    /// Sends what is queued (every trace has been sent to the forwarder)
    /// and stops, by the deadline given to [`Forwarder::give_up_at`].
    pub async fn drain(&self) {
        let before = self
            .stats
            .forward_spans_dropped_shutdown
            .load(Ordering::Relaxed);
        self.done.cancel();
        let task = self.task.lock().take();
        if let Some(task) = task {
            if let Err(e) = task.await {
                tracing::error!(error = %e, "the forwarding task failed");
            }
        }
        // Whatever comes after is not waited for.
        self.room.close();
        self.abort.cancel();
        let dropped = self
            .stats
            .forward_spans_dropped_shutdown
            .load(Ordering::Relaxed)
            - before;
        if dropped > 0 {
            tracing::warn!(
                spans = dropped,
                "shutdown deadline reached before every analyzed span was forwarded; counted in forward_spans_dropped_shutdown"
            );
        }
    }
}

/// The sending task: batches, sends with [`MAX_IN_FLIGHT`] requests at
/// most, until `done` and the queue is empty, or `abort`.
async fn run(
    mut rx: mpsc::UnboundedReceiver<Item>,
    client: Arc<Client>,
    max_elapsed: Duration,
    done: CancellationToken,
    abort: CancellationToken,
) {
    let mut batch = Batch::default();
    let mut in_flight = JoinSet::new();
    let mut closing = false;
    loop {
        let lingered = batch.since.is_some_and(|t| t.elapsed() >= LINGER);
        let drained = closing && rx.is_empty();
        if !batch.is_empty()
            && (batch.full() || lingered || drained)
            && in_flight.len() < MAX_IN_FLIGHT
        {
            let Batch { body, tickets, .. } = std::mem::take(&mut batch);
            let client = client.clone();
            in_flight
                .spawn(async move { deliver(&client, body.into(), tickets, max_elapsed).await });
            continue;
        }
        if drained && batch.is_empty() && in_flight.is_empty() {
            return;
        }
        let linger_end = batch.since.map(|t| t + LINGER);
        tokio::select! {
            biased;
            _ = abort.cancelled() => {
                // Unsettled tickets count themselves as dropped.
                in_flight.abort_all();
                while in_flight.join_next().await.is_some() {}
                rx.close();
                while rx.try_recv().is_ok() {}
                return;
            }
            Some(joined) = in_flight.join_next(), if !in_flight.is_empty() => {
                if let Err(e) = joined {
                    tracing::error!(error = %e, "a forwarding request failed");
                }
            }
            item = rx.recv(), if !batch.full() => match item {
                Some(item) => batch.push(item),
                None => closing = true,
            },
            _ = sleep_until_opt(linger_end), if linger_end.is_some() && !lingered => {}
            _ = done.cancelled(), if !closing => closing = true,
        }
    }
}

async fn sleep_until_opt(at: Option<Instant>) {
    if let Some(at) = at {
        tokio::time::sleep_until(at).await;
    }
}

/// Sends one request, retrying as [`transport`] classifies each answer, and
/// settles its spans.
async fn deliver(client: &Client, body: Bytes, mut tickets: Vec<Ticket>, max_elapsed: Duration) {
    let spans: u64 = tickets.iter().map(|t| t.spans).sum();
    let stats = client.stats();
    let outcome = client.export(body, max_elapsed).await;
    match outcome {
        Outcome::Sent { rejected } => {
            let rejected = rejected.min(spans);
            Stats::add(&stats.forward_spans, spans - rejected);
            Stats::add(&stats.forward_spans_rejected, rejected);
        }
        Outcome::GaveUp => Stats::add(&stats.forward_spans_dropped_retries, spans),
        Outcome::Refused => Stats::add(&stats.forward_spans_dropped_refused, spans),
    }
    for t in &mut tickets {
        t.settled = true;
    }
}
