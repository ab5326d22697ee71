//! Traces the detector tests and the Grafana tests share.

use opentelemetry::trace::SpanKind;

use super::{sp, Sp};

/// gateway → frontend → orders → inventory; each caller's own timeout, none
/// propagated; inventory is slow and keeps working after orders gave up.
pub fn cascade() -> Vec<Sp> {
    vec![
        sp(
            "gateway",
            (1, 0),
            "POST /checkout",
            SpanKind::Server,
            (0, 2900),
        )
        .failed("Endpoint request timed out", 504),
        sp(
            "gateway",
            (2, 1),
            "POST /checkout",
            SpanKind::Client,
            (5, 2900),
        )
        .failed("context deadline exceeded", 504),
        sp(
            "frontend",
            (3, 2),
            "POST /checkout",
            SpanKind::Server,
            (10, 3000),
        )
        .failed("upstream orders timed out", 504),
        sp(
            "frontend",
            (4, 3),
            "POST /orders",
            SpanKind::Client,
            (15, 3015),
        )
        .failed("context deadline exceeded", 504),
        sp(
            "orders",
            (5, 4),
            "POST /orders",
            SpanKind::Server,
            (20, 3030),
        )
        .failed("upstream inventory timed out", 504),
        sp(
            "orders",
            (6, 5),
            "GET /inventory",
            SpanKind::Client,
            (25, 3025),
        )
        .failed("context deadline exceeded", 504),
        sp(
            "inventory",
            (7, 6),
            "GET /inventory",
            SpanKind::Server,
            (30, 4000),
        )
        .http(200),
    ]
}

/// A request of `service` whose database call starts at `wait_ms` and takes
/// `db_ms`.
pub fn db_request(
    service: &'static str,
    route: &'static str,
    statement: String,
    wait_ms: u64,
    db_ms: u64,
) -> Vec<Sp> {
    let end = wait_ms + db_ms + 5;
    vec![
        sp(service, (1, 0), route, SpanKind::Server, (0, end)).attr("http.route", route),
        sp(
            service,
            (2, 1),
            "SELECT shop",
            SpanKind::Client,
            (wait_ms, wait_ms + db_ms),
        )
        .attr("db.system.name", "postgresql")
        .attr("server.address", "db.internal")
        .attr("db.namespace", "shop")
        .attr("db.query.text", statement),
    ]
}
