//! `slow_health_check`: a SERVER span of a health endpoint took longer than
//! `slow_health_check.limit_ms` ([`SlowHealthCheck`]). A balancer probing it
//! gives up and ejects the target exactly when load is high.
//!
//! A health endpoint is one of a list of routes ([`HealthRoutes`],
//! `slow_health_check.routes`), matched exactly: `/orders/{id}/status` and
//! `/deliver` are endpoints that happen to end in a health word, not probes.

use std::sync::LazyLock;

use super::evidence::{self, Evidence};
use super::finding::{ChainHop, Crossed, Culprit, FindingKind, Observation, Severity};
use super::thresholds::{ns, SlowHealthCheck};
use crate::model::{Found, Span, SpanKind, Sym, Trace};

/// The health routes unless configured: the conventional probe paths
/// (Kubernetes' `/livez` and `/readyz`, `/healthz`, Spring Boot Actuator's,
/// MicroProfile's `/health/live` and `/health/ready`) and the gRPC health
/// service's `Check` (not `Watch`, a stream that lasts as long as its client).
pub const DEFAULT_HEALTH_ROUTES: [&str; 17] = [
    "/health",
    "/healthz",
    "/healthcheck",
    "/health/live",
    "/health/liveness",
    "/health/ready",
    "/health/readiness",
    "/livez",
    "/readyz",
    "/live",
    "/ready",
    "/ping",
    "/status",
    "/actuator/health",
    "/actuator/health/liveness",
    "/actuator/health/readiness",
    "grpc.health.v1.Health/Check",
];

/// A health route that cannot match a request.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error(
    "`{0}` is not a health route: give a path (`/healthz`) or a gRPC method \
     (`grpc.health.v1.Health/Check`), without spaces, query or fragment"
)]
pub struct InvalidHealthRoute(pub String);

/// The routes that are health checks, compared exactly (a trailing `/` aside)
/// with a SERVER span's `http.route`, its `url.path` (or legacy `http.target`,
/// without the query) and the path of its name (`GET /healthz`, or the gRPC
/// method `grpc.health.v1.Health/Check`). Empty: no span is a health check.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct HealthRoutes(Vec<Box<str>>);

/// In the configuration, a list of strings, each checked as it is read.
impl<'de> serde::Deserialize<'de> for HealthRoutes {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        let routes = Vec::<String>::deserialize(d)?;
        HealthRoutes::new(routes).map_err(serde::de::Error::custom)
    }
}

impl serde::Serialize for HealthRoutes {
    fn serialize<S: serde::Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.collect_seq(self.0.iter().map(|r| &**r))
    }
}

impl Default for HealthRoutes {
    fn default() -> Self {
        HealthRoutes::new(DEFAULT_HEALTH_ROUTES).expect("the defaults are valid")
    }
}

/// A path without its query, fragment and trailing `/`.
fn path_only(text: &str) -> &str {
    let path = text.split(['?', '#']).next().unwrap_or(text);
    match path.strip_suffix('/') {
        Some(trimmed) if !trimmed.is_empty() => trimmed,
        _ => path,
    }
}

/// The keys a span names its route or path under, current names first.
static PATH_KEYS: LazyLock<[Sym; 3]> =
    LazyLock::new(|| ["http.route", "url.path", "http.target"].map(Sym::new));

impl HealthRoutes {
    /// Validates the routes: each a path starting with `/` or a gRPC method
    /// (`package.Service/Method`), with no whitespace, `?` or `#`.
    pub fn new<S: AsRef<str>>(
        routes: impl IntoIterator<Item = S>,
    ) -> Result<HealthRoutes, InvalidHealthRoute> {
        routes
            .into_iter()
            .map(|r| {
                let r = r.as_ref();
                let valid = r.contains('/')
                    && r != "/"
                    && !r.contains(|c: char| {
                        c.is_whitespace() || c.is_control() || "?#".contains(c)
                    });
                if valid {
                    Ok(path_only(r).into())
                } else {
                    Err(InvalidHealthRoute(r.to_owned()))
                }
            })
            .collect::<Result<_, _>>()
            .map(HealthRoutes)
    }

    /// The route `text` (a route, a path with its query, a span name) names,
    /// if it is one of these.
    pub fn matching(&self, text: &str) -> Option<&str> {
        let path = path_only(text.rsplit(' ').next().unwrap_or(text));
        self.0.iter().map(|r| &**r).find(|r| *r == path)
    }

    /// The health route `span` (attributes in `trace`'s arena) serves, if any.
    fn of(&self, trace: &Trace, span: &Span) -> Option<&str> {
        if self.0.is_empty() {
            return None;
        }
        trace
            .arena
            .find(span.attrs, *PATH_KEYS)
            .into_iter()
            .flatten()
            .filter_map(Found::text)
            .chain([span.operation.as_str()])
            .find_map(|text| self.matching(text))
    }
}

/// One observation per slow health-check SERVER span of the trace.
pub fn slow_health_checks(trace: &Trace, config: &SlowHealthCheck) -> Vec<Observation> {
    let limit_ns = ns(config.limit_ms);
    let mut out = Vec::new();
    for i in 0..trace.len() as u32 {
        let span = trace.span(i);
        let duration = trace.end(i) - trace.start(i);
        if span.kind != SpanKind::Server || duration <= limit_ns {
            continue;
        }
        let Some(route) = config.routes.of(trace, span) else {
            continue;
        };
        let route = Sym::new(route);
        let duration_ms = duration as f64 / 1e6;
        out.push(Observation {
            kind: FindingKind::SlowHealthCheck,
            severity: Severity::Warning,
            culprit: Culprit {
                service: span.service,
                operation: route,
                peer: None,
            },
            chain: vec![ChainHop {
                span_id: Some(span.span_id),
                service: span.service,
                operation: span.operation,
                duration_ms,
                timed_out: false,
            }],
            summary: format!(
                "The health check {route} of {} took {duration_ms:.0} ms (over {} ms)",
                span.service, config.limit_ms
            ),
            remedy: "Keep health checks cheap and independent of dependencies: a balancer \
                     that times them out ejects healthy targets exactly when load is high."
                .to_owned(),
            evidence: Evidence::SlowHealthCheck(evidence::SlowHealthCheck {
                duration_ms,
                limit_ms: config.limit_ms,
                route,
            }),
            trace_ids: vec![trace.trace_id],
            count: 1,
            seen_ns: trace.end(i),
            crossed: vec![Crossed::new(
                "slow_health_check.limit_ms",
                config.limit_ms,
                duration_ms,
            )],
            location: super::finding::CodeLocation::of(trace, i),
            spans: Vec::new(),
        });
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn health_routes_match_exactly() {
        let routes = HealthRoutes::default();
        for (yes, route) in [
            ("GET /healthz", "/healthz"),
            ("/health", "/health"),
            ("/health/", "/health"),
            ("HEAD /readyz?verbose", "/readyz"),
            ("/actuator/health", "/actuator/health"),
            ("/actuator/health/readiness", "/actuator/health/readiness"),
            ("grpc.health.v1.Health/Check", "grpc.health.v1.Health/Check"),
            ("/livez", "/livez"),
            ("/status", "/status"),
        ] {
            assert_eq!(routes.matching(yes), Some(route), "{yes}");
        }
        for no in [
            "GET /orders/{id}/status",
            "/order/status",
            "/api/v1/orders/123/status",
            "GET /api/status",
            "/deliver",
            "/alive",
            "/healthy-food",
            "/health/db/slow-query",
            "grpc.health.v1.Health/Watch",
            "POST /checkout",
            "GET /",
            "SELECT status",
        ] {
            assert_eq!(routes.matching(no), None, "{no}");
        }
    }

    #[test]
    fn configured_routes_replace_the_defaults_and_bad_ones_are_refused() {
        let routes = HealthRoutes::new(["/internal/up/", "/api/status"]).unwrap();
        assert_eq!(routes.matching("GET /internal/up"), Some("/internal/up"));
        assert_eq!(routes.matching("GET /api/status"), Some("/api/status"));
        assert_eq!(routes.matching("/healthz"), None);
        assert_eq!(
            HealthRoutes::new([""; 0]).unwrap().matching("/healthz"),
            None
        );
        for bad in [
            "",
            "/",
            "healthz",
            "/health z",
            "/health?x=1",
            "/health#top",
        ] {
            assert_eq!(
                HealthRoutes::new([bad]),
                Err(InvalidHealthRoute(bad.to_owned())),
                "{bad}"
            );
        }
    }
}
