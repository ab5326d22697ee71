//! Did a span end in a timeout, and how do we know? One function for every
//! detector: [`timeout`].
//!
//! A timeout is a span that gave up waiting (or was given up on): status ERROR
//! with a timeout/deadline message, gRPC `DEADLINE_EXCEEDED` (4), HTTP 504, 408 or
//! 524, an `error.type` naming a timeout, or, on a span whose status is ERROR, an
//! `exception` event whose type or message says timeout or deadline, or an
//! event whose name does (OpenTracing's `event=redis timeout` logs). A 502 or a
//! refused connection is a failure, not a timeout: the upstream answered (or was
//! not there), it was not slow. An exception recorded on a span that did not fail
//! was handled (retried, answered from a cache): the span did not time out.

use std::sync::LazyLock;

use crate::model::{AttrArena, AttrValue, Span, StatusCode, Sym};

static ERROR_TYPE: LazyLock<Sym> = LazyLock::new(|| Sym::new("error.type"));
static EXCEPTION: LazyLock<Sym> = LazyLock::new(|| Sym::new("exception"));
static EXCEPTION_TYPE: LazyLock<Sym> = LazyLock::new(|| Sym::new("exception.type"));
static EXCEPTION_MESSAGE: LazyLock<Sym> = LazyLock::new(|| Sym::new("exception.message"));

/// Why a span counts as timed out.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize)]
#[serde(tag = "signal", content = "detail", rename_all = "snake_case")]
pub enum TimeoutCause {
    /// `rpc.grpc.status_code` 4, DEADLINE_EXCEEDED.
    GrpcDeadlineExceeded,
    /// HTTP 504 (gateway timeout), 408 (request timeout) or 524 (Cloudflare).
    HttpStatus(u16),
    /// The span's status message.
    StatusMessage(String),
    /// `error.type`.
    ErrorType(String),
    /// An `exception` event's type or message, on a span whose status is ERROR.
    Exception(String),
    /// An event named for a timeout, on a span whose status is ERROR: an
    /// OpenTracing log `event=redis timeout` forwarded as an OTLP event.
    Event(String),
}

/// Does this text (an error message, an exception type, an `error.type`) say
/// that something timed out? Covers what common stacks print: Go `context
/// deadline exceeded`, gRPC `DEADLINE_EXCEEDED`, Python `ReadTimeout` /
/// `TimeoutError`, Java `SocketTimeoutException`, Node `ETIMEDOUT` /
/// `ESOCKETTIMEDOUT`, nginx `upstream timed out`, API Gateway `Endpoint request
/// timed out`.
pub fn says_timeout(text: &str) -> bool {
    let lower = text.to_ascii_lowercase();
    ["timeout", "timed out", "timedout", "time out", "deadline"]
        .iter()
        .any(|needle| lower.contains(needle))
}

/// Whether `span` (attributes in `arena`) ended in a timeout, and the first
/// signal that says so.
pub fn timeout(span: &Span, arena: &AttrArena) -> Option<TimeoutCause> {
    if span.grpc_status == Some(4) {
        return Some(TimeoutCause::GrpcDeadlineExceeded);
    }
    if let Some(code) = span.http_status.map(|c| c.get()) {
        if matches!(code, 504 | 408 | 524) {
            return Some(TimeoutCause::HttpStatus(code));
        }
    }
    let failed = span.status == StatusCode::Error;
    if failed {
        if let Some(message) = span.status_message().filter(|m| says_timeout(m)) {
            return Some(TimeoutCause::StatusMessage(message.to_owned()));
        }
    }
    // Ingest flags spans that have an `error.type`: most spans skip the lookup.
    if span.has_error_type {
        if let Some(AttrValue::Str(t)) = arena.get(span.attrs, *ERROR_TYPE) {
            if says_timeout(t) {
                return Some(TimeoutCause::ErrorType(t.to_owned()));
            }
        }
    }
    // An exception on a span that did not fail was handled. Python's `requests`
    // records a ReadTimeout this way: status ERROR, no HTTP status.
    if !failed {
        return None;
    }
    for event in span.events() {
        if event.name != *EXCEPTION {
            if says_timeout(event.name.as_str()) {
                return Some(TimeoutCause::Event(event.name.as_str().to_owned()));
            }
            continue;
        }
        for key in [*EXCEPTION_TYPE, *EXCEPTION_MESSAGE] {
            if let Some(AttrValue::Str(text)) = arena.get(event.attrs, key) {
                if says_timeout(text) {
                    return Some(TimeoutCause::Exception(text.to_owned()));
                }
            }
        }
    }
    None
}

#[cfg(test)]
mod tests {
    use std::num::NonZeroU16;

    use super::*;
    use crate::model::{Event, Extra, SpanId, SpanKind};

    fn span() -> Span {
        Span::new(
            SpanId::from_u64(1).unwrap(),
            None,
            "svc",
            "op",
            SpanKind::Client,
            (0, 1),
        )
    }

    fn with_message(message: &str) -> Span {
        let mut s = span();
        s.status = StatusCode::Error;
        s.extra = Some(Box::new(Extra {
            status_message: Some(message.into()),
            ..Extra::default()
        }));
        s
    }

    #[test]
    fn messages_real_stacks_print_are_timeouts() {
        for message in [
            "context deadline exceeded",
            "rpc error: code = DeadlineExceeded desc = context deadline exceeded",
            "DEADLINE_EXCEEDED: deadline exceeded after 29.999s",
            "HTTPConnectionPool(host='inventory', port=80): Read timed out. (read timeout=30)",
            "ReadTimeout",
            "TimeoutError: timed out",
            "java.net.SocketTimeoutException: Read timed out",
            "Error: connect ETIMEDOUT 10.0.0.7:443",
            "Error: ESOCKETTIMEDOUT",
            "upstream timed out (110: Connection timed out) while reading response header from upstream",
            "Endpoint request timed out",
        ] {
            assert!(
                matches!(timeout(&with_message(message), &AttrArena::default()), Some(TimeoutCause::StatusMessage(_))),
                "{message}"
            );
        }
    }

    #[test]
    fn failures_that_are_not_slowness_are_not_timeouts() {
        for message in [
            "dial tcp 10.0.0.7:5432: connect: connection refused",
            "upstream prematurely closed connection while reading response header from upstream",
            "502 Bad Gateway",
            "ECONNRESET",
            "no healthy upstream",
        ] {
            assert_eq!(
                timeout(&with_message(message), &AttrArena::default()),
                None,
                "{message}"
            );
        }
        let mut bad_gateway = span();
        bad_gateway.http_status = NonZeroU16::new(502);
        bad_gateway.status = StatusCode::Error;
        assert_eq!(timeout(&bad_gateway, &AttrArena::default()), None);
        // A timeout word in a message of a span that did not fail says nothing.
        let mut ok = with_message("timeout configured to 30s");
        ok.status = StatusCode::Ok;
        assert_eq!(timeout(&ok, &AttrArena::default()), None);
    }

    #[test]
    fn status_codes_and_attributes_are_timeouts() {
        for code in [504, 408, 524] {
            let mut s = span();
            s.http_status = NonZeroU16::new(code);
            assert_eq!(
                timeout(&s, &AttrArena::default()),
                Some(TimeoutCause::HttpStatus(code))
            );
        }
        let mut grpc = span();
        grpc.grpc_status = Some(4);
        assert_eq!(
            timeout(&grpc, &AttrArena::default()),
            Some(TimeoutCause::GrpcDeadlineExceeded)
        );
        let mut unavailable = span();
        unavailable.grpc_status = Some(14);
        assert_eq!(timeout(&unavailable, &AttrArena::default()), None);

        let mut arena = AttrArena::default();
        let mark = arena.mark();
        arena.sym(
            Sym::new("error.type"),
            Sym::new("java.net.SocketTimeoutException"),
        );
        let mut typed = span();
        typed.attrs = arena.finish(mark);
        typed.has_error_type = true;
        assert!(matches!(
            timeout(&typed, &arena),
            Some(TimeoutCause::ErrorType(_))
        ));

        let mark = arena.mark();
        arena.str(
            Sym::new("exception.type"),
            "requests.exceptions.ReadTimeout",
        );
        let event_attrs = arena.finish(mark);
        let mut excepted = span();
        excepted.status = StatusCode::Error;
        excepted.extra = Some(Box::new(Extra {
            events: vec![Event {
                time_ns: 1,
                name: Sym::new("exception"),
                attrs: event_attrs,
            }],
            ..Extra::default()
        }));
        assert!(matches!(
            timeout(&excepted, &arena),
            Some(TimeoutCause::Exception(_))
        ));

        // The same exception on a span that succeeded (or left its status
        // unset) was handled: a retry, a fallback. Not a timeout.
        for status in [StatusCode::Ok, StatusCode::Unset] {
            let mut handled = excepted.clone();
            handled.status = status;
            assert_eq!(timeout(&handled, &arena), None, "{status:?}");
        }
    }
}
