//! `hopscope analyze FILE...`: the daemon's analysis of exported trace files,
//! without a daemon.
//!
//! Each input's format is detected from its content ([`detect`]): OTLP
//! protobuf (one request, or length-delimited requests), OTLP/JSON (one
//! request, or JSON Lines of requests), Jaeger query-API JSON ([`jaeger`]) and
//! Zipkin v2 JSON ([`zipkin`]). Whatever the format, spans reach the same
//! [`Buffer`] the daemon's receivers feed, grouped by trace however many
//! requests or files a trace is spread over; completed traces go through
//! [`pipeline::finish`] (assembly, analysis, the store) and, at the end, the
//! cross-trace detectors ([`pipeline::detect_window`]). [`report`] renders
//! the result for people or as the API's JSON, [`sarif`] as SARIF 2.1.0 for
//! code scanning; with a [`report::Baseline`], only findings not in it are
//! reported, and [`run`] hands the caller those findings for its gate.
//!
//! Memory: requests (protobuf, JSON Lines) are read and decoded one at a time;
//! a JSON document (a Jaeger or Zipkin export, a single OTLP/JSON request) is
//! read whole, bounded by the file, and a Jaeger `data` array is then
//! converted trace by trace. The
//! buffer holds at most [`Options::max_buffered_spans`]: past it the oldest
//! traces are analyzed early, as in the daemon, and spans of theirs that come
//! later are merged and the trace analyzed again (a `late_spans` warning).
//!
//! Time: a run's "now" is the files' own time, not the wall clock, and not
//! the newest span read (one span stamped in 2500 would push every other
//! trace out of the call window, and the cross-trace findings with it). It
//! is the bulk of the end times read ([`Session`]): spans ending more than
//! `future_skew` after the newest of the bulk, or more than
//! `aggregate_retention` before the oldest of it, are left out as the
//! daemon's receivers refuse them ([`TimeBounds::screen`]), counted with
//! their reasons in the report ([`OutOfBounds`]), and the clock follows the
//! spans kept.

pub mod detect;
mod ids;
pub mod jaeger;
pub mod report;
pub mod sarif;
pub mod zipkin;

pub use detect::{Format, Layout};
pub use ids::{span_id, trace_id};

use std::io::{self, BufRead, BufReader, Read};

use serde::de::IgnoredAny;
use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

use std::time::Instant;

use crate::analyze::{self, AnalyzedTrace};
use crate::assemble::{Buffer, BufferLimits, Completed};
use crate::clock::{Clock, Screened, TimeBounds};
use crate::config::Config;
use crate::ingest::{decode_export, decode_export_json};
use crate::model::{SpanBatch, TraceId};
use crate::pipeline;
use crate::stats::Stats;
use crate::store::{Aggregates, FindingStore, Store, TraceStore};

/// Largest protobuf request or JSON line read (the OTLP receivers' default
/// limit is 4 MiB; the Collector's file exporter writes one batch per entry).
pub const MAX_RECORD_BYTES: usize = 256 << 20;

/// Where spans are read from.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Input {
    /// `-`
    Stdin,
    File(PathBuf),
}

impl Input {
    /// `-` is stdin, anything else a path.
    pub fn parse(text: &str) -> Input {
        if text == "-" {
            Input::Stdin
        } else {
            Input::File(PathBuf::from(text))
        }
    }

    /// How it is named in messages.
    pub fn name(&self) -> String {
        match self {
            Input::Stdin => "<stdin>".to_owned(),
            Input::File(p) => p.display().to_string(),
        }
    }

    /// Its size in bytes, when known (a regular file).
    pub fn size(&self) -> Option<u64> {
        match self {
            Input::Stdin => None,
            Input::File(p) => std::fs::metadata(p)
                .ok()
                .filter(|m| m.is_file())
                .map(|m| m.len()),
        }
    }
}

/// Why an input could not be analyzed.
#[derive(Debug, thiserror::Error)]
pub enum OfflineError {
    #[error("{input}: {source}")]
    Io { input: String, source: io::Error },
    #[error("{input}: empty input, no spans")]
    Empty { input: String },
    #[error("{input}{at}: not a trace format hopscope reads (OTLP protobuf or JSON, Jaeger JSON, Zipkin v2 JSON): {why}")]
    Unknown {
        input: String,
        at: String,
        why: String,
    },
    #[error("{input}{at}: malformed JSON: {why}")]
    Json {
        input: String,
        at: String,
        why: String,
    },
    #[error("{input}{at}: malformed {format}: {why}")]
    Malformed {
        input: String,
        at: String,
        format: Format,
        why: String,
    },
    #[error("{input}: not a baseline (the findings of `hopscope analyze --format json`): {why}")]
    Baseline { input: String, why: String },
    #[error("cannot write the report: {0}")]
    Output(#[source] io::Error),
    #[error("{input}{at}: a record of {bytes} bytes is over the {limit}-byte limit")]
    TooLarge {
        input: String,
        at: String,
        bytes: usize,
        limit: usize,
    },
}

/// Knobs of an offline run.
#[derive(Debug, Clone)]
pub struct Options {
    /// Most spans buffered before the oldest traces are analyzed early.
    pub max_buffered_spans: usize,
    /// What the per-trace detectors are told, as the daemon's `Config` does.
    pub analysis: analyze::Options,
    /// Findings already known: reported as known, not as findings.
    pub baseline: Option<report::Baseline>,
    /// How far from the files' own time a span may end and still be
    /// analyzed, as the daemon's `future_skew` and `aggregate_retention`.
    pub bounds: TimeBounds,
}

impl Default for Options {
    fn default() -> Self {
        Options {
            max_buffered_spans: 1_000_000,
            analysis: analyze::Options::default(),
            baseline: None,
            bounds: Config::default().time_bounds(),
        }
    }
}

/// What was read from one input.
#[derive(Debug, Clone, serde::Serialize)]
pub struct InputSummary {
    pub input: String,
    pub format: Format,
    /// Requests, lines or documents read.
    pub records: u64,
    /// Bytes read.
    #[serde(skip)]
    pub bytes: u64,
    pub spans: u64,
    /// Spans refused for malformed ids or times.
    pub rejected: u64,
    /// Why (the first few).
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub errors: Vec<String>,
}

/// Spans of a run left out for ending far from the files' own time, as the
/// daemon's receivers refuse them.
#[derive(Debug, Clone, Default, serde::Serialize)]
pub struct OutOfBounds {
    /// Spans ending more than `future_skew` after the newest end time of
    /// the bulk of those read.
    pub future: u64,
    /// Spans ending more than `aggregate_retention` before the oldest end
    /// time of the bulk.
    pub past: u64,
    /// Why (the first few).
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub reasons: Vec<String>,
}

impl OutOfBounds {
    /// What was left out, for people; none when nothing was.
    pub fn text(&self) -> Option<String> {
        let n = self.future + self.past;
        (n > 0).then(|| {
            format!(
                "{n} span(s) left out for ending far from the files' own time \
                 ({} too far after it, {} too far before it): {}",
                self.future,
                self.past,
                self.reasons.join("; ")
            )
        })
    }

    fn add(&mut self, screened: Screened, reasons: Vec<String>) {
        self.future += screened.future;
        self.past += screened.past;
        let room = MAX_ERRORS.saturating_sub(self.reasons.len());
        self.reasons.extend(reasons.into_iter().take(room));
    }
}

/// Most end times sampled to find the bulk of a run's time.
const MAX_END_SAMPLES: usize = 1 << 16;

/// How many interquartile ranges beyond the quartiles an end time still
/// belongs to the bulk (Tukey's "far out" fence).
const FENCE: u64 = 3;

/// An evenly spaced sample of the end times read, in read order, bounded:
/// every `stride`-th span; when full, every other sample is dropped and the
/// stride doubles. The same files give the same sample.
#[derive(Debug)]
struct EndTimes {
    sample: Vec<u64>,
    stride: u64,
    seen: u64,
    /// The bulk last found, and the spans seen then: it is found again only
    /// once they have grown by a 64th, so a small `--max-buffered-spans`,
    /// which analyzes a few traces early after every record, does not sort
    /// the sample each time.
    found: Option<(u64, Option<(u64, u64)>)>,
}

impl Default for EndTimes {
    fn default() -> Self {
        EndTimes {
            sample: Vec::new(),
            stride: 1,
            seen: 0,
            found: None,
        }
    }
}

impl EndTimes {
    fn push(&mut self, end_ns: u64) {
        if self.seen % self.stride == 0 {
            if self.sample.len() == MAX_END_SAMPLES {
                let mut i = 0;
                self.sample.retain(|_| {
                    i += 1;
                    i % 2 == 1
                });
                self.stride *= 2;
            }
            if self.seen % self.stride == 0 {
                self.sample.push(end_ns);
            }
        }
        self.seen += 1;
    }

    /// The oldest and the newest end time of the bulk: those within
    /// [`FENCE`] interquartile ranges of the quartiles. A week of traffic is
    /// all bulk; a few spans stamped in 2500 or at the epoch among today's
    /// are not (as long as they are fewer than a quarter of the spans).
    fn bulk(&mut self) -> Option<(u64, u64)> {
        match self.found {
            Some((seen, bulk)) if self.seen - seen <= seen / 64 => bulk,
            _ => {
                let bulk = self.find_bulk();
                self.found = Some((self.seen, bulk));
                bulk
            }
        }
    }

    /// [`EndTimes::bulk`] from the sample as it is.
    fn find_bulk(&self) -> Option<(u64, u64)> {
        let mut s = self.sample.clone();
        s.sort_unstable();
        let n = s.len();
        let (q1, q3) = (*s.get(n / 4)?, s[3 * n / 4]);
        let reach = (q3 - q1).saturating_mul(FENCE);
        let (low, high) = (q1.saturating_sub(reach), q3.saturating_add(reach));
        let oldest = s.iter().find(|&&e| e >= low)?;
        let newest = s.iter().rev().find(|&&e| e <= high)?;
        Some((*oldest, *newest))
    }
}

/// Analyzes `inputs` in order into `report`; `progress` is told the bytes
/// read so far over all inputs. Stops at the first input that cannot be read.
/// Returns the findings reported (those not in the baseline), for a gate.
pub fn run(
    inputs: &[Input],
    mut options: Options,
    report: &mut dyn report::Report,
    progress: &mut dyn FnMut(u64),
) -> Result<report::Findings, OfflineError> {
    let baseline = options.baseline.take();
    let mut session = Session::new(options);
    let mut written: io::Result<()> = Ok(());
    let mut on_trace = |store: &Store, t: &AnalyzedTrace| {
        if written.is_ok() {
            written = report.trace(store, t, baseline.as_ref());
        }
    };
    let mut done = 0;
    for input in inputs {
        let summary = session.read(input, &mut |n| progress(done + n), &mut on_trace)?;
        done += summary.bytes;
    }
    session.finish(&mut on_trace);
    written.map_err(OfflineError::Output)?;
    let findings = report::Findings::select(session.store(), baseline.as_ref());
    report
        .finish(
            session.store(),
            &session.inputs,
            &session.out_of_bounds,
            &findings,
        )
        .map_err(OfflineError::Output)?;
    Ok(findings)
}

/// An offline analysis: the daemon's buffer and store, fed from files.
///
/// Its clock is the files' own time. Traces are screened as they are
/// analyzed, against the bulk of the end times read by then: for a run that
/// fits [`Options::max_buffered_spans`] that is every span of every input
/// (everything is analyzed at the end); past it, the traces analyzed early
/// are judged by what was read before them, so a run that starts with hours
/// of stray spans may keep some it would otherwise leave out.
pub struct Session {
    store: Store,
    buffer: Buffer,
    analysis: analyze::Options,
    bounds: TimeBounds,
    ends: EndTimes,
    started: Instant,
    /// Inputs read so far.
    pub inputs: Vec<InputSummary>,
    /// Spans left out so far for ending far from the files' own time.
    pub out_of_bounds: OutOfBounds,
}

/// Every trace id of a run is analyzed within it: nothing completes by time.
const NEVER: Duration = Duration::from_secs(100 * 365 * 24 * 3600);

impl Session {
    pub fn new(options: Options) -> Session {
        let stats = Arc::new(Stats::default());
        let limits = BufferLimits {
            idle: NEVER,
            max_age: NEVER,
            late_grace: NEVER,
            max_spans: options.max_buffered_spans.max(1),
            max_bytes: usize::MAX,
        };
        Session {
            store: Store::new(
                // Each analyzed trace is handed to the report before the next
                // is stored, so the store needs to hold few.
                TraceStore::new(1_000, 256 << 20),
                Aggregates::new(NEVER),
                FindingStore::new(10_000),
                stats.clone(),
                // The files' own time: as far as their spans kept have reached.
                Clock::manual(0),
            ),
            buffer: Buffer::new(limits, stats),
            analysis: options.analysis,
            bounds: options.bounds,
            ends: EndTimes::default(),
            started: Instant::now(),
            inputs: Vec::new(),
            out_of_bounds: OutOfBounds::default(),
        }
    }

    /// The store the analysis fills.
    pub fn store(&self) -> &Store {
        &self.store
    }

    /// Reads one input into the buffer, analyzing the oldest traces early when
    /// it is full (each handed to `on_trace`); `progress` is told the bytes read.
    pub fn read(
        &mut self,
        input: &Input,
        progress: &mut dyn FnMut(u64),
        on_trace: &mut dyn FnMut(&Store, &AnalyzedTrace),
    ) -> Result<InputSummary, OfflineError> {
        let name = input.name();
        let io_error = |source| OfflineError::Io {
            input: name.clone(),
            source,
        };
        let file: Box<dyn Read> = match input {
            Input::Stdin => Box::new(io::stdin().lock()),
            Input::File(path) => Box::new(std::fs::File::open(path).map_err(io_error)?),
        };
        let mut reader = BufReader::with_capacity(
            1 << 16,
            Counting {
                inner: file,
                read: 0,
                progress,
            },
        );
        let head = reader.fill_buf().map_err(io_error)?;
        let Some(layout) = detect::layout(head) else {
            return Err(OfflineError::Empty { input: name });
        };
        let mut reading = Reading {
            session: self,
            summary: InputSummary {
                input: name.clone(),
                format: match layout {
                    Layout::ProtobufSingle | Layout::ProtobufStream => Format::OtlpProtobuf,
                    _ => Format::OtlpJson,
                },
                records: 0,
                bytes: 0,
                spans: 0,
                rejected: 0,
                errors: Vec::new(),
            },
            on_trace,
        };
        match layout {
            Layout::ProtobufSingle => {
                let body = read_bounded(&mut reader, &name, "")?;
                reading.protobuf(&body, "")?;
            }
            Layout::ProtobufStream => {
                for n in 1.. {
                    let mut len = [0u8; 4];
                    match reader.read_exact(&mut len) {
                        Ok(()) => {}
                        Err(e) if e.kind() == io::ErrorKind::UnexpectedEof => break,
                        Err(e) => return Err(io_error(e)),
                    }
                    let at = format!(": request {n}");
                    let len = u32::from_be_bytes(len) as usize;
                    if len > MAX_RECORD_BYTES {
                        return Err(OfflineError::TooLarge {
                            input: name,
                            at,
                            bytes: len,
                            limit: MAX_RECORD_BYTES,
                        });
                    }
                    let mut body = vec![0u8; len];
                    reader
                        .read_exact(&mut body)
                        .map_err(|e| OfflineError::Malformed {
                            input: name.clone(),
                            at: at.clone(),
                            format: Format::OtlpProtobuf,
                            why: format!("a request of {len} bytes is cut short: {e}"),
                        })?;
                    reading.protobuf(&body, &at)?;
                }
            }
            Layout::JsonLines => {
                let mut line = Vec::new();
                for n in 1.. {
                    line.clear();
                    let read = (&mut reader)
                        .take(MAX_RECORD_BYTES as u64 + 1)
                        .read_until(b'\n', &mut line)
                        .map_err(io_error)?;
                    if read == 0 {
                        break;
                    }
                    let at = format!(":{n}");
                    if line.len() > MAX_RECORD_BYTES {
                        return Err(OfflineError::TooLarge {
                            input: name,
                            at,
                            bytes: line.len(),
                            limit: MAX_RECORD_BYTES,
                        });
                    }
                    if line.iter().all(u8::is_ascii_whitespace) {
                        continue;
                    }
                    reading.json(&line, &at)?;
                }
            }
            Layout::JsonDocument => {
                // One document, read whole: bounded by the file. Several
                // documents one after the other are read one by one.
                let mut doc = Vec::new();
                reader.read_to_end(&mut doc).map_err(io_error)?;
                let mut values =
                    serde_json::Deserializer::from_slice(&doc).into_iter::<IgnoredAny>();
                let mut start = 0;
                for n in 1.. {
                    let at = if n == 1 {
                        String::new()
                    } else {
                        format!(": document {n}")
                    };
                    match values.next() {
                        None => break,
                        Some(Ok(_)) => {
                            let end = values.byte_offset();
                            reading.json(&doc[start..end], &at)?;
                            start = end;
                        }
                        Some(Err(e)) => {
                            // A protobuf request that happens to start like JSON.
                            if n == 1 && doc.first() == Some(&b'\n') && decode_export(&doc).is_ok()
                            {
                                reading.protobuf(&doc, "")?;
                                break;
                            }
                            return Err(OfflineError::Json {
                                input: name,
                                at,
                                why: e.to_string(),
                            });
                        }
                    }
                }
            }
        }
        let mut summary = reading.summary;
        summary.bytes = reader.get_ref().read;
        if summary.records == 0 {
            return Err(OfflineError::Empty { input: name });
        }
        self.inputs.push(summary.clone());
        Ok(summary)
    }

    /// Analyzes everything still buffered, then runs the cross-trace detectors.
    pub fn finish(&mut self, on_trace: &mut dyn FnMut(&Store, &AnalyzedTrace)) {
        let drained = self.buffer.drain();
        self.complete(drained, on_trace);
        pipeline::detect_window(
            &self.store,
            &self.analysis.thresholds,
            analyze::budget::Timeouts::default(),
        );
    }

    /// Spans of one decoded record into the buffer; the oldest traces out
    /// when it is full.
    fn add(&mut self, batch: SpanBatch, on_trace: &mut dyn FnMut(&Store, &AnalyzedTrace)) {
        let mut full = false;
        for s in batch.traces.iter().flat_map(|(_, set)| &set.spans) {
            self.ends.push(s.end_ns);
        }
        for (trace_id, set) in batch.traces {
            let now = self.now();
            full |= self.buffer.insert(trace_id, set, now, None);
        }
        if full {
            let now = self.now();
            let early = self.buffer.take_oldest(now);
            self.complete(early, on_trace);
        }
    }

    /// Arrival order: each call a nanosecond later, so the oldest trace is
    /// the one read first.
    fn now(&mut self) -> Instant {
        self.started += Duration::from_nanos(1);
        self.started
    }

    /// Completed traces through the daemon's pipeline, in start order, each
    /// handed to `on_trace` as soon as it is stored.
    fn complete(
        &mut self,
        mut completed: Vec<Completed>,
        on_trace: &mut dyn FnMut(&Store, &AnalyzedTrace),
    ) {
        let bulk = self.ends.bulk();
        let start = |c: &Completed| c.spans.spans.iter().map(|s| s.start_ns).min();
        completed.sort_by_cached_key(|c| (start(c), c.trace_id));
        for c in completed {
            let Some(c) = self.screen(c, bulk) else {
                continue;
            };
            if let Some(end) = c.spans.spans.iter().map(|s| s.end_ns).max() {
                self.store.clock().advance_to(end);
            }
            let id: TraceId = c.trace_id;
            pipeline::finish(&self.store, &self.analysis, None, vec![c]);
            if let Some(t) = self.store.traces().get(&id) {
                on_trace(&self.store, &t);
            }
        }
    }

    /// `c` without its spans that end out of bounds of `bulk` (the oldest
    /// and newest end time of it), counted with their reasons; none when no
    /// span is left. Each span is judged alone: the rest of its trace stays.
    fn screen(&mut self, mut c: Completed, bulk: Option<(u64, u64)>) -> Option<Completed> {
        let Some((oldest, newest)) = bulk else {
            return Some(c);
        };
        let bounds = TimeBounds {
            future: self.bounds.future,
            // Whole seconds, rounded up: reasons stay readable.
            past: self.bounds.past.saturating_add(Duration::from_secs(
                (newest - oldest).div_ceil(1_000_000_000),
            )),
        };
        let spans = std::mem::take(&mut c.spans);
        let mut batch = SpanBatch {
            accepted: spans.spans.len() as u64,
            traces: vec![(c.trace_id, spans)],
            rejected: 0,
            errors: Vec::new(),
        };
        let screened = bounds.screen(newest, &mut batch);
        self.out_of_bounds.add(screened, batch.errors);
        let (_, spans) = batch.traces.pop()?;
        c.spans = spans;
        Some(c)
    }
}

/// One input being read: its summary grows with each record.
struct Reading<'a> {
    session: &'a mut Session,
    summary: InputSummary,
    on_trace: &'a mut dyn FnMut(&Store, &AnalyzedTrace),
}

/// How many refusal reasons an input's summary keeps.
const MAX_ERRORS: usize = 3;

impl Reading<'_> {
    fn batch(&mut self, format: Format, batch: SpanBatch) {
        if self.summary.records == 0 {
            self.summary.format = format;
        }
        self.summary.records += 1;
        self.summary.spans += batch.accepted;
        self.summary.rejected += batch.rejected;
        for e in &batch.errors {
            if self.summary.errors.len() < MAX_ERRORS {
                self.summary.errors.push(e.clone());
            }
        }
        self.session.add(batch, self.on_trace);
    }

    fn malformed(&self, at: &str, format: Format, why: impl ToString) -> OfflineError {
        OfflineError::Malformed {
            input: self.summary.input.clone(),
            at: at.to_owned(),
            format,
            why: why.to_string(),
        }
    }

    fn protobuf(&mut self, body: &[u8], at: &str) -> Result<(), OfflineError> {
        let batch = decode_export(body).map_err(|e| self.malformed(at, Format::OtlpProtobuf, e))?;
        self.batch(Format::OtlpProtobuf, batch);
        Ok(())
    }

    /// One JSON document of any format we read.
    fn json(&mut self, doc: &[u8], at: &str) -> Result<(), OfflineError> {
        let format = detect::json_format(doc)
            .map_err(|e| OfflineError::Json {
                input: self.summary.input.clone(),
                at: at.to_owned(),
                why: e.to_string(),
            })?
            .ok_or_else(|| OfflineError::Unknown {
                input: self.summary.input.clone(),
                at: at.to_owned(),
                why: "a JSON document with none of resourceSpans, data, spans, or an array of spans with traceId".to_owned(),
            })?;
        match format {
            Format::OtlpJson => {
                let batch = decode_export_json(doc).map_err(|e| self.malformed(at, format, e))?;
                self.batch(format, batch);
            }
            Format::Jaeger => {
                let read = jaeger::read(doc, &mut |batch| self.batch(format, batch));
                read.map_err(|e| self.malformed(at, format, e))?;
            }
            Format::Zipkin => {
                let spans = serde_json::from_slice::<zipkin::Document>(doc)
                    .map_err(|e| self.malformed(at, format, e))?
                    .spans();
                self.batch(format, zipkin::convert(spans));
            }
            Format::OtlpProtobuf => return Err(self.malformed(at, format, "not JSON")),
        }
        Ok(())
    }
}

/// Microseconds (as Jaeger and Zipkin JSON write times) → nanoseconds; `None`
/// for a negative or absent time. A fractional value is rounded.
fn micros_to_ns(n: Option<&serde_json::Number>) -> Option<u64> {
    let n = n?;
    let us = n
        .as_u64()
        .or_else(|| n.as_f64().filter(|f| *f >= 0.0).map(|f| f.round() as u64))?;
    Some(us.saturating_mul(1_000))
}

/// The rest of `reader`, at most [`MAX_RECORD_BYTES`].
fn read_bounded(reader: &mut impl Read, input: &str, at: &str) -> Result<Vec<u8>, OfflineError> {
    let mut body = Vec::new();
    reader
        .take(MAX_RECORD_BYTES as u64 + 1)
        .read_to_end(&mut body)
        .map_err(|source| OfflineError::Io {
            input: input.to_owned(),
            source,
        })?;
    if body.len() > MAX_RECORD_BYTES {
        return Err(OfflineError::TooLarge {
            input: input.to_owned(),
            at: at.to_owned(),
            bytes: body.len(),
            limit: MAX_RECORD_BYTES,
        });
    }
    Ok(body)
}

/// A reader that reports how many bytes went through it.
struct Counting<'a, R> {
    inner: R,
    read: u64,
    progress: &'a mut dyn FnMut(u64),
}

impl<R: Read> Read for Counting<'_, R> {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        let n = self.inner.read(buf)?;
        self.read += n as u64;
        (self.progress)(self.read);
        Ok(n)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const S: u64 = 1_000_000_000;
    const HOUR: u64 = 3_600 * S;
    const TODAY: u64 = 1_800_000_000 * S;

    fn ends(times: impl IntoIterator<Item = u64>) -> EndTimes {
        let mut e = EndTimes::default();
        times.into_iter().for_each(|t| e.push(t));
        e
    }

    #[test]
    fn a_week_of_traffic_is_all_bulk_and_stray_spans_among_today_are_not() {
        // A week, busy by day and quiet by night, past the sample's size.
        let week = (0..7 * 24).flat_map(|h| {
            let busy = if h % 24 < 8 { 100 } else { 1_000 };
            (0..busy).map(move |i| TODAY - 7 * 24 * HOUR + h * HOUR + i * HOUR / busy)
        });
        let mut e = ends(week);
        assert!(e.sample.len() <= MAX_END_SAMPLES && e.stride > 1);
        let (oldest, newest) = e.bulk().unwrap();
        assert!(oldest < TODAY - 7 * 24 * HOUR + HOUR, "{oldest}");
        assert!(newest > TODAY - HOUR, "{newest}");

        // Five minutes of today's traffic, one span in 2500 and one at the epoch.
        let year_2500 = 16_725_225_600 * S;
        let today = (0..1_000).map(|i| TODAY + i * 300 * S / 1_000);
        let mut e = ends([year_2500, 0].into_iter().chain(today));
        assert_eq!(e.bulk(), Some((TODAY, TODAY + 999 * 300 * S / 1_000)));
    }
}
