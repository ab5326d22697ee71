//! Query-string parsing shared by the handlers, with errors in the API's shape.

use std::time::{Duration, SystemTime, UNIX_EPOCH};

use axum::extract::rejection::QueryRejection;
use axum::extract::Query;
use serde::de::DeserializeOwned;
use serde::Deserialize;

use super::ApiError;

/// `since` and `until`: the time range every list endpoint takes, extracted
/// beside the endpoint's own filters (each endpoint's doc says what is timed:
/// a trace's root start, a finding's last sighting).
#[derive(Deserialize, utoipa::IntoParams)]
#[into_params(parameter_in = Query)]
pub struct TimeRange {
    /// At or after: RFC 3339, unix ms, or a duration ago (`15m`).
    #[param(schema_with = super::openapi::time_schema)]
    since: Option<String>,
    /// Before: RFC 3339, unix ms, or a duration ago.
    #[param(schema_with = super::openapi::time_schema)]
    until: Option<String>,
}

impl TimeRange {
    /// The range of a request as unix nanoseconds, each end read by
    /// [`time_ns`] relative to the same now; a JSON error if malformed.
    pub fn read(
        q: Result<Query<TimeRange>, QueryRejection>,
    ) -> Result<(Option<u64>, Option<u64>), ApiError> {
        let range = query(q)?;
        window(range.since.as_deref(), range.until.as_deref())
    }
}

/// Unwraps axum's query extraction, answering a JSON error for bad parameters.
pub fn query<T: DeserializeOwned>(q: Result<Query<T>, QueryRejection>) -> Result<T, ApiError> {
    q.map(|Query(t)| t)
        .map_err(|e| ApiError::bad_request("invalid_query", e.body_text()))
}

/// The `since` and `until` of a request, each as [`time_ns`] reads it,
/// relative to the same now.
fn window(
    since: Option<&str>,
    until: Option<&str>,
) -> Result<(Option<u64>, Option<u64>), ApiError> {
    let now = SystemTime::now();
    Ok((time_ns("since", since, now)?, time_ns("until", until, now)?))
}

/// A point in time: RFC 3339 (`2026-11-25T18:00:00Z`), unix milliseconds
/// (`1764093600000`), or a duration meaning that long ago (`15m`).
pub fn time_ns(name: &str, value: Option<&str>, now: SystemTime) -> Result<Option<u64>, ApiError> {
    let Some(text) = value.map(str::trim).filter(|t| !t.is_empty()) else {
        return Ok(None);
    };
    let at = if let Ok(ms) = text.parse::<u64>() {
        UNIX_EPOCH + Duration::from_millis(ms)
    } else if let Ok(t) = humantime::parse_rfc3339_weak(text) {
        t
    } else if let Ok(ago) = humantime::parse_duration(text) {
        now.checked_sub(ago).unwrap_or(UNIX_EPOCH)
    } else {
        return Err(ApiError::bad_request(
            "invalid_time",
            format!("`{name}` must be RFC 3339, unix milliseconds or a duration ago like 15m; got `{text}`"),
        ));
    };
    Ok(Some(unix_ns(at)))
}

/// A point in time as unix nanoseconds (0 before the epoch).
pub fn unix_ns(at: SystemTime) -> u64 {
    at.duration_since(UNIX_EPOCH).unwrap_or_default().as_nanos() as u64
}

pub fn rfc3339(ns: u64) -> String {
    humantime::format_rfc3339_micros(UNIX_EPOCH + Duration::from_nanos(ns)).to_string()
}

pub fn ms(ns: u64) -> f64 {
    ns as f64 / 1e6
}

/// `SERVICE` or `SERVICE:OPERATION` (split at the first colon).
pub fn entry(value: &str) -> (&str, Option<&str>) {
    match value.split_once(':') {
        Some((s, o)) => (s, Some(o)),
        None => (value, None),
    }
}
