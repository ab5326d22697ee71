//! The query strings of Jaeger's API: Go durations, microsecond and
//! millisecond times, tags as a JSON map or logfmt, and the search filter that
//! Jaeger's own stores apply (a trace matches when one of its spans passes
//! every condition).

use std::time::{Duration, SystemTime, UNIX_EPOCH};

use super::convert::{Log, Tag, LIST_TAGS};
use super::JaegerError;
use crate::model::{Span, TraceId};

/// Traces a search answers when it names no `limit` (Jaeger's default).
pub const DEFAULT_LIMIT: usize = 100;
/// The most a search answers, whatever it asks.
pub const MAX_LIMIT: usize = 10_000;

/// The query string as pairs, in order; repeated keys (`traceID`, `tag`) kept.
pub type Pairs = Vec<(String, String)>;

fn param<'a>(pairs: &'a Pairs, key: &str) -> Option<&'a str> {
    pairs
        .iter()
        .rev()
        .find(|(k, _)| k == key)
        .map(|(_, v)| v.trim())
        .filter(|v| !v.is_empty())
}

fn bad(name: &str, value: &str, why: impl std::fmt::Display) -> JaegerError {
    JaegerError::bad_request(format!("unable to parse param '{name}' (`{value}`): {why}"))
}

/// An unsigned integer parameter.
fn integer(pairs: &Pairs, name: &str) -> Result<Option<u64>, JaegerError> {
    param(pairs, name)
        .map(|v| v.parse::<u64>().map_err(|e| bad(name, v, e)))
        .transpose()
}

/// A Go duration (`time.ParseDuration`): a sequence of decimal numbers with
/// units `ns`, `us` (`µs`, `μs`), `ms`, `s`, `m`, `h`, such as `1.2s`, `500ms`
/// or `1m30s`; `0` alone is zero. Negative durations are refused.
pub fn go_duration(text: &str) -> Result<Duration, String> {
    let body = text.strip_prefix('+').unwrap_or(text);
    if body.starts_with('-') {
        return Err("a duration cannot be negative".into());
    }
    if body == "0" {
        return Ok(Duration::ZERO);
    }
    if body.is_empty() {
        return Err("empty duration".into());
    }
    let mut rest = body;
    let mut total = 0f64;
    while !rest.is_empty() {
        let number_len = rest
            .find(|c: char| !(c.is_ascii_digit() || c == '.'))
            .unwrap_or(rest.len());
        let (number, after) = rest.split_at(number_len);
        if number.is_empty() || number == "." {
            return Err(format!("expected a number at `{rest}`"));
        }
        let value: f64 = number
            .parse()
            .map_err(|_| format!("`{number}` is not a number"))?;
        let unit_len = after
            .find(|c: char| c.is_ascii_digit() || c == '.')
            .unwrap_or(after.len());
        let (unit, next) = after.split_at(unit_len);
        let ns_per = match unit {
            "ns" => 1.0,
            "us" | "µs" | "μs" => 1e3,
            "ms" => 1e6,
            "s" => 1e9,
            "m" => 60e9,
            "h" => 3600e9,
            "" => return Err(format!("missing unit after `{number}`")),
            other => return Err(format!("unknown unit `{other}`")),
        };
        total += value * ns_per;
        rest = next;
    }
    if !total.is_finite() || total > u64::MAX as f64 {
        return Err("duration out of range".into());
    }
    Ok(Duration::from_nanos(total as u64))
}

fn duration(pairs: &Pairs, name: &str) -> Result<Option<Duration>, JaegerError> {
    param(pairs, name)
        .map(|v| go_duration(v).map_err(|e| bad(name, v, e)))
        .transpose()
}

/// Tags to match: a JSON map (`{"error":"true"}`, what Grafana sends; values
/// of other JSON types are compared as their text) or logfmt
/// (`error=true http.status_code=500`, values may be double-quoted).
pub fn tags(text: &str) -> Result<Vec<(String, String)>, String> {
    if text.starts_with('{') {
        let map: serde_json::Map<String, serde_json::Value> =
            serde_json::from_str(text).map_err(|e| format!("not a JSON map: {e}"))?;
        return Ok(map
            .into_iter()
            .map(|(k, v)| match v {
                serde_json::Value::String(s) => (k, s),
                other => (k, other.to_string()),
            })
            .collect());
    }
    let mut out = Vec::new();
    let mut rest = text.trim_start();
    while !rest.is_empty() {
        let eq = rest
            .find('=')
            .ok_or_else(|| format!("expected key=value at `{rest}`"))?;
        let key = &rest[..eq];
        if key.is_empty() || key.contains(char::is_whitespace) {
            return Err(format!("expected key=value at `{rest}`"));
        }
        let after = &rest[eq + 1..];
        let (value, next) = if let Some(quoted) = after.strip_prefix('"') {
            let end = quoted
                .find('"')
                .ok_or_else(|| format!("unterminated quote after `{key}=`"))?;
            (&quoted[..end], &quoted[end + 1..])
        } else {
            let end = after.find(char::is_whitespace).unwrap_or(after.len());
            (&after[..end], &after[end..])
        };
        out.push((key.to_owned(), value.to_owned()));
        rest = next.trim_start();
    }
    Ok(out)
}

/// A parsed `GET /api/traces` query.
#[derive(Debug, Default)]
pub struct Search {
    pub service: Option<String>,
    pub operation: Option<String>,
    pub tags: Vec<(String, String)>,
    /// Span start bounds, unix µs (inclusive).
    pub start_us: Option<u64>,
    pub end_us: Option<u64>,
    pub min_duration: Option<Duration>,
    pub max_duration: Option<Duration>,
    pub limit: usize,
    /// `traceID=` parameters: these traces, whatever the other parameters say.
    pub trace_ids: Vec<TraceId>,
}

impl Search {
    pub fn parse(pairs: &Pairs) -> Result<Search, JaegerError> {
        let mut tag_list = match param(pairs, "tags") {
            Some(t) => tags(t).map_err(|e| bad("tags", t, e))?,
            None => Vec::new(),
        };
        // Jaeger's own form: repeated `tag=key:value`.
        for (_, t) in pairs.iter().filter(|(k, _)| k == "tag") {
            let (k, v) = t
                .split_once(':')
                .ok_or_else(|| bad("tag", t, "expected key:value"))?;
            tag_list.push((k.to_owned(), v.to_owned()));
        }
        let trace_ids = pairs
            .iter()
            .filter(|(k, _)| k == "traceID")
            .map(|(_, v)| parse_trace_id(v).map_err(|e| bad("traceID", v, e)))
            .collect::<Result<Vec<_>, _>>()?;
        let search = Search {
            service: param(pairs, "service").map(str::to_owned),
            operation: param(pairs, "operation").map(str::to_owned),
            tags: tag_list,
            start_us: integer(pairs, "start")?,
            end_us: integer(pairs, "end")?,
            min_duration: duration(pairs, "minDuration")?,
            max_duration: duration(pairs, "maxDuration")?,
            limit: match integer(pairs, "limit")? {
                None | Some(0) => DEFAULT_LIMIT,
                Some(n) => (n as usize).min(MAX_LIMIT),
            },
            trace_ids,
        };
        if let (Some(min), Some(max)) = (search.min_duration, search.max_duration) {
            if max < min {
                return Err(JaegerError::bad_request(
                    "'maxDuration' should be greater than 'minDuration'",
                ));
            }
        }
        if let (Some(start), Some(end)) = (search.start_us, search.end_us) {
            if end < start {
                return Err(JaegerError::bad_request(
                    "'end' should be greater than 'start'",
                ));
            }
        }
        Ok(search)
    }

    /// Whether a span passes the conditions that need no tags.
    pub fn span_passes(&self, span: &Span, start_ns: u64) -> bool {
        let start_us = start_ns / 1_000;
        let duration = Duration::from_nanos(span.duration_ns());
        self.service
            .as_deref()
            .is_none_or(|s| span.service.as_str() == s)
            && self
                .operation
                .as_deref()
                .is_none_or(|o| span.operation.as_str() == o)
            && self.start_us.is_none_or(|t| start_us >= t)
            && self.end_us.is_none_or(|t| start_us <= t)
            && self.min_duration.is_none_or(|d| duration >= d)
            && self.max_duration.is_none_or(|d| duration <= d)
    }

    /// Whether every searched tag is among the span's tags, its logs' fields
    /// or its process's tags (as Jaeger's stores match them, by text);
    /// a list-valued tag (`hopscope.findings`, `hopscope.finding`,
    /// `hopscope.finding_id`) matches any one of its items.
    pub fn tags_match(&self, tags: &[Tag], logs: &[Log], process_tags: &[Tag]) -> bool {
        self.tags.iter().all(|(key, value)| {
            tags.iter()
                .chain(logs.iter().flat_map(|l| l.fields()))
                .chain(process_tags)
                .any(|t| {
                    t.key == key
                        && if LIST_TAGS.contains(&key.as_str()) {
                            t.text().split(',').any(|kind| kind == value)
                        } else {
                            t.text() == *value
                        }
                })
        })
    }
}

/// A trace id as Jaeger writes it: 32 hex digits, or 16 for a 64-bit id
/// (padded with zeros on the left); either case.
pub fn parse_trace_id(text: &str) -> Result<TraceId, String> {
    let text = text.trim();
    if text.len() == 16 {
        TraceId::parse_hex(&format!("{text:0>32}")).map_err(|e| e.to_string())
    } else {
        TraceId::parse_hex(text).map_err(|e| e.to_string())
    }
}

/// `GET /api/dependencies`: the window `[endTs - lookback, endTs]`, in unix ns;
/// `endTs` (unix ms) defaults to now and `lookback` (ms) to a day, as in Jaeger.
pub fn dependencies_window(pairs: &Pairs, now: SystemTime) -> Result<(u64, u64), JaegerError> {
    let now_ms = now
        .duration_since(UNIX_EPOCH)
        .unwrap_or_default()
        .as_millis() as u64;
    let end_ms = integer(pairs, "endTs")?.unwrap_or(now_ms);
    let lookback_ms = integer(pairs, "lookback")?.unwrap_or(24 * 3600 * 1000);
    let to_ns = |ms: u64| ms.saturating_mul(1_000_000);
    Ok((to_ns(end_ms.saturating_sub(lookback_ms)), to_ns(end_ms)))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn go_durations_parse_as_go_does() {
        let ok = [
            ("1.2s", 1_200_000_000),
            ("500ms", 500_000_000),
            ("1m30s", 90_000_000_000),
            ("100us", 100_000),
            ("100µs", 100_000),
            ("100μs", 100_000),
            ("2h", 7_200_000_000_000),
            ("0", 0),
            ("+3ns", 3),
            (".5s", 500_000_000),
        ];
        for (text, ns) in ok {
            assert_eq!(go_duration(text), Ok(Duration::from_nanos(ns)), "{text}");
        }
        for bad in ["", "5", "-1s", "1x", "s", "1.2.3s", "1e3s", "ms"] {
            assert!(go_duration(bad).is_err(), "{bad}");
        }
    }

    #[test]
    fn tags_come_as_a_json_map_or_logfmt() {
        let want = vec![
            ("error".to_owned(), "true".to_owned()),
            ("http.route".to_owned(), "/a b".to_owned()),
        ];
        assert_eq!(
            tags(r#"{"error":"true","http.route":"/a b"}"#).unwrap(),
            want
        );
        assert_eq!(tags(r#"error=true http.route="/a b""#).unwrap(), want);
        assert_eq!(tags(r#"{"n": 5}"#).unwrap(), vec![("n".into(), "5".into())]);
        for bad in ["{", "error", "=x", r#"a="x"#] {
            assert!(tags(bad).is_err(), "{bad}");
        }
    }

    fn pairs(query: &[(&str, &str)]) -> Pairs {
        query
            .iter()
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect()
    }

    #[test]
    fn a_search_answers_100_traces_unless_told_and_never_more_than_the_store_holds() {
        let limit = |q: &[(&str, &str)]| Search::parse(&pairs(q)).unwrap().limit;
        assert_eq!(limit(&[]), DEFAULT_LIMIT);
        assert_eq!(DEFAULT_LIMIT, 100);
        assert_eq!(limit(&[("limit", "0")]), DEFAULT_LIMIT);
        assert_eq!(limit(&[("limit", "20")]), 20);
        assert_eq!(limit(&[("limit", "99999999")]), MAX_LIMIT);
        // Empty parameters are absent (Grafana sends `operation=` and `tags=`).
        let q = Search::parse(&pairs(&[
            ("operation", ""),
            ("tags", ""),
            ("minDuration", ""),
        ]))
        .unwrap();
        assert!(q.operation.is_none() && q.tags.is_empty() && q.min_duration.is_none());
    }

    #[test]
    fn the_dependency_window_defaults_to_a_day_before_now() {
        let now = UNIX_EPOCH + Duration::from_secs(100_000);
        assert_eq!(
            dependencies_window(&pairs(&[]), now).unwrap(),
            (13_600 * 1_000_000_000, 100_000 * 1_000_000_000)
        );
        assert_eq!(
            dependencies_window(&pairs(&[("endTs", "5000"), ("lookback", "2000")]), now).unwrap(),
            (3_000_000_000, 5_000_000_000)
        );
        assert!(dependencies_window(&pairs(&[("lookback", "1h")]), now).is_err());
    }

    #[test]
    fn trace_ids_take_64_and_128_bits() {
        assert_eq!(
            parse_trace_id("00000000000000ff").unwrap().to_string(),
            "000000000000000000000000000000ff"
        );
        assert!(parse_trace_id("83A9EFD15C1C98A977E0711CC93EE28B").is_ok());
        assert!(parse_trace_id("xyz").is_err());
        assert!(parse_trace_id("0000000000000000").is_err());
    }
}
