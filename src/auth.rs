//! Bearer tokens at the listeners' edge. A [`Guard`] checks a request's
//! `authorization: Bearer <token>` header (gRPC metadata is the same header)
//! against the configured token in constant time, and counts and logs what it
//! refuses. [`RequireToken`] is the tower layer every listener applies: the
//! API's routes (not `/healthz` and `/readyz`: probes send no tokens), the
//! OTLP/gRPC service, and any axum router with one line:
//!
//! ```text
//! router.route_layer(RequireToken::new(guard, refuse))
//! ```
//!
//! The guard decides ([`Unauthenticated`] says why it refused); how a refusal
//! is answered is the listener's (the `refuse` function of [`RequireToken`]:
//! the API's error body over HTTP, status UNAUTHENTICATED over gRPC), so this
//! module knows nothing of the API above it.

use std::sync::atomic::AtomicU64;
use std::sync::Arc;
use std::task::{Context, Poll};

use axum::http::{self, header, HeaderValue};
use subtle::ConstantTimeEq;
use tonic::codegen::{BoxFuture, Service};
use tower::Layer;

use crate::stats::{LogEvery, Stats};

/// Why a request was refused.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
pub enum Unauthenticated {
    #[error("no `authorization: Bearer <token>` header")]
    Missing,
    #[error("the `authorization` header is not `Bearer <token>`")]
    Malformed,
    #[error("the bearer token is wrong")]
    Wrong,
}

/// Which listener a [`Guard`] stands at: its counter and its log lines.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Listener {
    /// The HTTP API (`api_unauthenticated`).
    Api,
    /// The OTLP receivers (`otlp_unauthenticated`).
    Otlp,
}

impl Listener {
    fn counter(self, stats: &Stats) -> &AtomicU64 {
        match self {
            Listener::Api => &stats.api_unauthenticated,
            Listener::Otlp => &stats.otlp_unauthenticated,
        }
    }

    fn name(self) -> &'static str {
        match self {
            Listener::Api => "HTTP API",
            Listener::Otlp => "OTLP",
        }
    }
}

/// Checks bearer tokens for one listener; without a token it admits everything.
#[derive(Clone)]
pub struct Guard {
    token: Option<Arc<[u8]>>,
    listener: Listener,
    stats: Arc<Stats>,
    log: Arc<LogEvery>,
}

impl Guard {
    pub fn new(token: Option<&str>, listener: Listener, stats: Arc<Stats>) -> Guard {
        Guard {
            token: token.map(|t| Arc::from(t.as_bytes())),
            listener,
            stats,
            log: Arc::new(LogEvery::default()),
        }
    }

    /// Admits a request whose `authorization` value (header or gRPC metadata)
    /// is `Bearer <token>` (the scheme in any case); refusals are counted and
    /// logged at most once per [`LogEvery`] period.
    pub fn check(&self, authorization: Option<&[u8]>) -> Result<(), Unauthenticated> {
        let Some(expected) = &self.token else {
            return Ok(());
        };
        let result = match authorization {
            None => Err(Unauthenticated::Missing),
            Some(value) => match bearer(value) {
                None => Err(Unauthenticated::Malformed),
                // Constant time in the token's bytes (a length mismatch alone
                // answers at once: the length is no secret worth the cost).
                Some(token) if bool::from(token.ct_eq(expected)) => Ok(()),
                Some(_) => Err(Unauthenticated::Wrong),
            },
        };
        if let Err(e) = result {
            let counter = self.listener.counter(&self.stats);
            Stats::add(counter, 1);
            if self.log.ready() {
                let refused = counter.load(std::sync::atomic::Ordering::Relaxed);
                tracing::warn!(
                    listener = self.listener.name(),
                    reason = %e,
                    refused_so_far = refused,
                    "refusing unauthenticated requests"
                );
            }
        }
        result
    }
}

/// The token of an `authorization` value `Bearer <token>`.
fn bearer(value: &[u8]) -> Option<&[u8]> {
    let space = value.iter().position(|&b| b == b' ')?;
    let (scheme, rest) = value.split_at(space);
    let token = rest.trim_ascii();
    (scheme.eq_ignore_ascii_case(b"bearer") && !token.is_empty()).then_some(token)
}

/// The OTLP/gRPC answer to a refused request: status UNAUTHENTICATED.
pub fn grpc_refusal(e: &Unauthenticated) -> http::Response<tonic::body::Body> {
    tonic::Status::unauthenticated(e.to_string()).into_http()
}

/// A tower layer that lets through only requests its [`Guard`] admits and
/// answers the others with `refuse`.
pub struct RequireToken<B> {
    guard: Guard,
    refuse: fn(&Unauthenticated) -> http::Response<B>,
}

impl<B> Clone for RequireToken<B> {
    fn clone(&self) -> Self {
        RequireToken {
            guard: self.guard.clone(),
            refuse: self.refuse,
        }
    }
}

impl<B> RequireToken<B> {
    pub fn new(guard: Guard, refuse: fn(&Unauthenticated) -> http::Response<B>) -> Self {
        RequireToken { guard, refuse }
    }
}

impl<S, B> Layer<S> for RequireToken<B> {
    type Service = RequireTokenService<S, B>;

    fn layer(&self, inner: S) -> Self::Service {
        RequireTokenService {
            inner,
            layer: self.clone(),
        }
    }
}

/// The service [`RequireToken`] wraps around a listener's service.
pub struct RequireTokenService<S, B> {
    inner: S,
    layer: RequireToken<B>,
}

impl<S: Clone, B> Clone for RequireTokenService<S, B> {
    fn clone(&self) -> Self {
        RequireTokenService {
            inner: self.inner.clone(),
            layer: self.layer.clone(),
        }
    }
}

impl<S, ReqBody, B> Service<http::Request<ReqBody>> for RequireTokenService<S, B>
where
    S: Service<http::Request<ReqBody>, Response = http::Response<B>>,
    S::Future: Send + 'static,
    S::Error: Send + 'static,
    B: Send + 'static,
{
    type Response = http::Response<B>;
    type Error = S::Error;
    type Future = BoxFuture<Self::Response, Self::Error>;

    fn poll_ready(&mut self, cx: &mut Context<'_>) -> Poll<Result<(), Self::Error>> {
        self.inner.poll_ready(cx)
    }

    fn call(&mut self, request: http::Request<ReqBody>) -> Self::Future {
        let authorization = request
            .headers()
            .get(header::AUTHORIZATION)
            .map(HeaderValue::as_bytes);
        match self.layer.guard.check(authorization) {
            Ok(()) => Box::pin(self.inner.call(request)),
            Err(e) => {
                let response = (self.layer.refuse)(&e);
                Box::pin(std::future::ready(Ok(response)))
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn guard(token: Option<&str>) -> Guard {
        Guard::new(token, Listener::Otlp, Arc::new(Stats::default()))
    }

    #[test]
    fn only_the_right_bearer_token_is_admitted_and_refusals_are_counted() {
        let g = guard(Some("s3cret"));
        assert_eq!(g.check(Some(b"Bearer s3cret")), Ok(()));
        assert_eq!(g.check(Some(b"bearer  s3cret ")), Ok(()));
        assert_eq!(g.check(None), Err(Unauthenticated::Missing));
        assert_eq!(
            g.check(Some(b"Basic s3cret")),
            Err(Unauthenticated::Malformed)
        );
        assert_eq!(g.check(Some(b"Bearer")), Err(Unauthenticated::Malformed));
        assert_eq!(g.check(Some(b"Bearer ")), Err(Unauthenticated::Malformed));
        assert_eq!(g.check(Some(b"Bearer s3cre")), Err(Unauthenticated::Wrong));
        assert_eq!(
            g.check(Some(b"Bearer s3cret2")),
            Err(Unauthenticated::Wrong)
        );
        assert_eq!(g.stats.snapshot().otlp_unauthenticated, 6);
        assert_eq!(g.stats.snapshot().api_unauthenticated, 0);
    }

    #[test]
    fn without_a_token_everything_is_admitted() {
        let g = guard(None);
        assert_eq!(g.check(None), Ok(()));
        assert_eq!(g.check(Some(b"Bearer anything")), Ok(()));
        assert_eq!(g.stats.snapshot().otlp_unauthenticated, 0);
    }
}
