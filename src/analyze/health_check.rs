//! `slow_health_check`: a SERVER span of a health endpoint took longer than
//! [`HEALTH_CHECK_LIMIT_NS`]. A balancer probing it gives up and ejects the
//! target exactly when load is high.

use std::sync::LazyLock;

use serde_json::json;

use super::finding::{ChainHop, Culprit, FindingKind, Observation, Severity};
use crate::model::{SpanKind, Sym, Trace};

/// Health checks slower than this are a finding.
pub const HEALTH_CHECK_LIMIT_NS: u64 = 500_000_000;

const WORDS: [&str; 8] = [
    "health", "healthz", "ready", "readyz", "live", "livez", "ping", "status",
];

static ROUTE: LazyLock<Sym> = LazyLock::new(|| Sym::new("http.route"));

/// Whether a route or span name (`GET /healthz`, `/api/v1/status`,
/// `grpc.health.v1.Health/Check`) names a health endpoint: a path of at most
/// two segments ending in a health word (`/_health`, `/ping.json` too), or the
/// gRPC health service. `/orders/{id}/status` is not one.
pub fn is_health_route(route: &str) -> bool {
    if route.contains("grpc.health.v1.Health") {
        return true;
    }
    let path = route.rsplit(' ').next().unwrap_or(route);
    let path = path.split(['?', '#']).next().unwrap_or(path);
    if !path.starts_with('/') {
        return false;
    }
    let segments: Vec<&str> = path.split('/').filter(|s| !s.is_empty()).collect();
    let Some(last) = segments.last().filter(|_| segments.len() <= 2) else {
        return false;
    };
    let word = last.trim_start_matches(['_', '.']);
    let word = word.split('.').next().unwrap_or(word);
    WORDS.iter().any(|w| w.eq_ignore_ascii_case(word))
}

/// One observation per slow health-check SERVER span of the trace.
pub fn slow_health_checks(trace: &Trace) -> Vec<Observation> {
    let mut out = Vec::new();
    for i in 0..trace.len() as u32 {
        let span = trace.span(i);
        let duration = trace.end(i) - trace.start(i);
        if span.kind != SpanKind::Server || duration <= HEALTH_CHECK_LIMIT_NS {
            continue;
        }
        let route = trace.arena.get_sym(span.attrs, *ROUTE);
        let name = route.unwrap_or(span.operation);
        if !is_health_route(name.as_str()) && !is_health_route(span.operation.as_str()) {
            continue;
        }
        let duration_ms = duration as f64 / 1e6;
        out.push(Observation {
            kind: FindingKind::SlowHealthCheck,
            severity: Severity::Warning,
            culprit: Culprit {
                service: span.service,
                operation: name,
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
                "The health check {name} of {} took {duration_ms:.0} ms (over {} ms)",
                span.service,
                HEALTH_CHECK_LIMIT_NS / 1_000_000
            ),
            remedy: "Keep health checks cheap and independent of dependencies: a balancer \
                     that times them out ejects healthy targets exactly when load is high."
                .to_owned(),
            evidence: json!({
                "duration_ms": duration_ms,
                "limit_ms": HEALTH_CHECK_LIMIT_NS as f64 / 1e6,
                "route": route,
            }),
            trace_ids: vec![trace.trace_id],
            count: 1,
            seen_ns: trace.end(i),
        });
    }
    out
}

#[cfg(test)]
mod tests {
    use super::is_health_route;

    #[test]
    fn health_routes() {
        for yes in [
            "GET /healthz",
            "/health",
            "GET /api/status",
            "/_ping",
            "HEAD /readyz?verbose",
            "/actuator/health",
            "grpc.health.v1.Health/Check",
            "/livez",
        ] {
            assert!(is_health_route(yes), "{yes}");
        }
        for no in [
            "GET /orders/{id}/status",
            "POST /checkout",
            "/healthy-food",
            "GET /",
            "SELECT status",
        ] {
            assert!(!is_health_route(no), "{no}");
        }
    }
}
