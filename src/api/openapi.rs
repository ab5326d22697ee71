//! The OpenAPI 3.1 document of `/api/v1`, served at `GET /api/v1/openapi.json`.
//!
//! The `/api/v1` routes are registered only here, through utoipa-axum's
//! [`OpenApiRouter`]: each `routes!` call adds the handler to the axum router
//! and its `#[utoipa::path]` operation (parameters from the `IntoParams` query
//! types, bodies from the `ToSchema` response types) to the document, so the
//! document cannot list a route the router lacks, nor miss one it has.

use std::sync::LazyLock;

use axum::http::header;
use axum::response::IntoResponse;
use utoipa::openapi::schema::{ObjectBuilder, OneOfBuilder, Schema, Type};
use utoipa::openapi::{OpenApi, RefOr};
use utoipa::{PartialSchema, ToSchema};
use utoipa_axum::router::OpenApiRouter;
use utoipa_axum::routes;

use super::schemas::string_schema;
use super::{
    coverage, edges, federate, findings, health, hops, queries, timeouts, traces, AppState,
};
use crate::analyze::coverage::Detector;
use crate::analyze::{FindingKind, Severity};

/// Title, version and description of the document.
#[derive(utoipa::OpenApi)]
#[openapi(info(
    title = "hopscope",
    description = "Critical paths, latency share per hop, findings, timeout budgets and \
                   statement shapes of the traces hopscope analyzed, and what each \
                   service's instrumentation leaves them blind to. Durations are \
                   milliseconds in fields ending `_ms`, times RFC 3339, ids lowercase hex; \
                   every error is `{\"error\": {\"code\", \"message\"}}`."
))]
struct Info;

/// The `/api/v1` routes together with their OpenAPI operations.
pub fn v1_routes() -> OpenApiRouter<AppState> {
    OpenApiRouter::with_openapi(<Info as utoipa::OpenApi>::openapi())
        .routes(routes!(health::stats))
        .routes(routes!(traces::list))
        .routes(routes!(traces::get))
        .routes(routes!(hops::list))
        .routes(routes!(hops::series))
        .routes(routes!(findings::list))
        .routes(routes!(findings::get))
        .routes(routes!(timeouts::list))
        .routes(routes!(queries::list))
        .routes(routes!(edges::list))
        .routes(routes!(coverage::list))
        .routes(routes!(federate::state))
        .routes(routes!(federate::timeouts))
        .routes(routes!(federate::window))
        .routes(routes!(openapi_json))
}

/// The document of [`v1_routes`], with the version of this build.
pub fn document() -> OpenApi {
    let mut doc = v1_routes().into_openapi();
    doc.info.version = env!("CARGO_PKG_VERSION").to_owned();
    // Each kind with its label and one line (`api/kinds.rs`).
    if let Some(RefOr::T(Schema::Object(kind))) = doc
        .components
        .as_mut()
        .and_then(|c| c.schemas.get_mut(FindingKind::name().as_ref()))
    {
        kind.description = Some(format!(
            "What a finding found:\n\n{}",
            super::kinds::markdown_list()
        ));
    }
    doc
}

static DOCUMENT_JSON: LazyLock<String> = LazyLock::new(|| {
    // Serializing a tree of strings, maps and numbers cannot fail.
    document().to_pretty_json().unwrap_or_default()
});

/// This document.
#[utoipa::path(
    get,
    path = "/api/v1/openapi.json",
    operation_id = "openapi",
    tag = "meta",
    responses((status = 200, description = "The OpenAPI 3.1 document of /api/v1", content_type = "application/json", body = Object))
)]
pub async fn openapi_json() -> impl IntoResponse {
    (
        [(header::CONTENT_TYPE, "application/json")],
        DOCUMENT_JSON.as_str(),
    )
}

/// What `since` and `until` accept (`params::time_ns`): unix milliseconds,
/// RFC 3339 in UTC, or a duration ago; empty means absent.
pub(super) fn time_schema() -> RefOr<Schema> {
    string_schema(
        "Unix milliseconds, RFC 3339 in UTC (`2026-11-25T18:00:00Z`), or a duration ago (`15m`); \
         empty means absent.",
        Some(concat!(
            "^(|[0-9]{1,15}",
            "|(19[7-9][0-9]|2[0-9]{3})-(0[1-9]|1[0-2])-(0[1-9]|1[0-9]|2[0-8])",
            "[T ]([01][0-9]|2[0-3]):[0-5][0-9]:[0-5][0-9](\\.[0-9]{1,9})?(Z|\\+00:00)?",
            "|[0-9]{1,6}(ms|s|m|h|d))$"
        )),
    )
}

/// A step of a series: whole minutes or hours (`parse_step` in `hops.rs`).
pub(super) fn step_schema() -> RefOr<Schema> {
    string_schema(
        "Whole minutes or hours (`5m`, `1h`), at most 24 h; empty means 1 minute.",
        Some("^(|[1-9][0-9]{0,5}[mh])$"),
    )
}

/// An entry point: `SERVICE:OPERATION`.
pub(super) fn entry_schema() -> RefOr<Schema> {
    string_schema("`SERVICE:OPERATION`.", Some("^$|:"))
}

/// A finding kind, or empty for any.
pub(super) fn kind_schema() -> RefOr<Schema> {
    empty_or(FindingKind::schema())
}

/// A detector coverage can leave blind: a finding kind or `service_graph`.
pub(super) fn detector_schema() -> RefOr<Schema> {
    let names = FindingKind::ALL
        .iter()
        .map(|k| k.as_str())
        .chain([Detector::ServiceGraph.as_str(), Detector::Hops.as_str()]);
    ObjectBuilder::new()
        .schema_type(Type::String)
        .description(Some(
            "A finding kind, `service_graph` (the edges and wire hops), or `hops` (latency share per entry point and hop).",
        ))
        .enum_values(Some(names))
        .into()
}

/// A severity, or empty for any.
pub(super) fn severity_schema() -> RefOr<Schema> {
    empty_or(Severity::schema())
}

fn empty_or(schema: RefOr<Schema>) -> RefOr<Schema> {
    OneOfBuilder::new()
        .item(schema)
        .item(
            ObjectBuilder::new()
                .schema_type(Type::String)
                .enum_values(Some([""])),
        )
        .into()
}

/// `limit`: any count is accepted; the handlers cap it (at 1,000).
pub(super) fn limit_schema() -> RefOr<Schema> {
    count_schema("At most this many; larger values are taken as 1000.")
}

/// A trace page's `limit`: any count is accepted; the handler caps it.
pub(super) fn page_limit_schema() -> RefOr<Schema> {
    count_schema("At most this many spans (default 1000); 0 is taken as 1, larger values than 10000 as 10000.")
}

/// A trace page's `offset`: past the last span, the page is empty.
pub(super) fn offset_schema() -> RefOr<Schema> {
    count_schema("The tree position to start from (0 is the root).")
}

/// A trace page's `max_depth`.
pub(super) fn depth_schema() -> RefOr<Schema> {
    count_schema("The deepest level to include (the root's is 0).")
}

/// A yes-or-no parameter: `true` or `false`.
pub(super) fn flag_schema() -> RefOr<Schema> {
    ObjectBuilder::new()
        .schema_type(Type::Boolean)
        .description(Some("`true` or `false` (the default)."))
        .into()
}

/// Any non-negative integer a query string can carry as a count.
fn count_schema(description: &str) -> RefOr<Schema> {
    ObjectBuilder::new()
        .schema_type(Type::Integer)
        .description(Some(description))
        .minimum(Some(0))
        .maximum(Some(u64::MAX))
        .into()
}
