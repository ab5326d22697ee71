//! `hopscope analyze --format sarif`: the findings as a SARIF 2.1.0 log that
//! GitHub code scanning (and other SARIF viewers) accept, from the same
//! [`Findings`] selection the text and JSON reports list.
//!
//! One run; the driver `hopscope` with one rule per finding kind present;
//! one result per finding, its level from the severity (critical → `error`,
//! warning → `warning`, info → `note`), `partialFingerprints` from the
//! finding's id (kind and culprit), so code scanning keeps one alert for one
//! problem across runs whatever traces showed it.
//!
//! Where: code scanning refuses a result without a location ("expected at
//! least one location"), places an alert by the physical location of the
//! first (its SARIF reference lists `physicalLocation` as required), and
//! ignores the others. When the culprit's spans carry the `code.*`
//! attributes, the result points at that file and line: a relative path as
//! given (relative to the repository root, as code scanning reads it), an
//! absolute one as a `file:` URI, which code scanning makes relative to the
//! checkout (`checkout_path` of `upload-sarif`). Without them the result
//! points at the service: an artifact named after the service (not a file of
//! the repository, so the alert has no code preview) at line 1, and a logical
//! location of kind `module` with the service's name. A file path with
//! control characters is not used.

use std::collections::BTreeMap;
use std::io::{self, Write};

use serde_json::{json, Value};

use crate::analyze::{patterns, CodeLocation, FindingKind, Severity};
use crate::api::rfc3339;
use crate::store::{Finding, Store};

use super::report::{qualified_function, Baseline, Findings, Report};
use super::{InputSummary, OutOfBounds};

/// The schema a SARIF 2.1.0 log names.
pub const SCHEMA: &str =
    "https://docs.oasis-open.org/sarif/sarif/v2.1.0/errata01/os/schemas/sarif-schema-2.1.0.json";

/// The fingerprint key of a finding's id (kind and culprit).
const FINGERPRINT: &str = "hopscopeFindingId/v1";

/// Writes the SARIF log at the end of the run; traces add nothing to it.
pub struct Sarif<W: Write> {
    out: W,
}

impl<W: Write> Sarif<W> {
    /// A SARIF report written to `out`.
    pub fn new(out: W) -> Self {
        Sarif { out }
    }
}

impl<W: Write> Report for Sarif<W> {
    fn trace(
        &mut self,
        _: &Store,
        _: &crate::analyze::AnalyzedTrace,
        _: Option<&Baseline>,
    ) -> io::Result<()> {
        Ok(())
    }

    fn finish(
        &mut self,
        _: &Store,
        _: &[InputSummary],
        out_of_bounds: &OutOfBounds,
        findings: &Findings,
    ) -> io::Result<()> {
        serde_json::to_writer_pretty(&mut self.out, &log(findings, out_of_bounds))?;
        self.out.write_all(b"\n")?;
        self.out.flush()
    }
}

/// SARIF's level for a severity.
pub fn level(severity: Severity) -> &'static str {
    match severity {
        Severity::Critical => "error",
        Severity::Warning => "warning",
        Severity::Info => "note",
    }
}

/// The SARIF log of `findings`; spans left out for their times are a
/// warning among the invocation's `toolExecutionNotifications`, SARIF's place
/// for what happened during a run rather than in the code.
pub fn log(findings: &Findings, out_of_bounds: &OutOfBounds) -> Value {
    // One rule per kind present, in kind order; its level is the worst of
    // its findings, its help the remedy of the worst (listed first).
    let mut kinds: BTreeMap<FindingKind, &Finding> = BTreeMap::new();
    for f in &findings.new {
        kinds.entry(f.latest.kind).or_insert(f);
    }
    let index: BTreeMap<FindingKind, usize> =
        kinds.keys().enumerate().map(|(i, &k)| (k, i)).collect();
    let rules: Vec<Value> = kinds.values().map(|f| rule(f)).collect();
    let results: Vec<Value> = findings
        .new
        .iter()
        .map(|f| {
            let mut r = result(f, index[&f.latest.kind]);
            if findings.known.is_some() {
                // Reported against a baseline: every result listed is new.
                r["baselineState"] = json!("new");
            }
            r
        })
        .collect();
    let mut run = json!({
        "tool": {
            "driver": {
                "name": "hopscope",
                "version": env!("CARGO_PKG_VERSION"),
                "semanticVersion": env!("CARGO_PKG_VERSION"),
                "rules": rules,
            }
        },
        "results": results,
        "columnKind": "unicodeCodePoints",
    });
    if let Some(text) = out_of_bounds.text() {
        run["invocations"] = json!([{
            "executionSuccessful": true,
            "toolExecutionNotifications": [{
                "descriptor": { "id": "span-out-of-bounds" },
                "level": "warning",
                "message": { "text": text },
            }],
        }]);
    }
    if let Some((file, known)) = &findings.known {
        run["properties"] = json!({ "baseline": { "file": file, "known": known } });
    }
    json!({
        "$schema": SCHEMA,
        "version": "2.1.0",
        "runs": [run],
    })
}

/// The rule of `f`'s kind.
fn rule(f: &Finding) -> Value {
    let kind = f.latest.kind;
    let (short, full) = describe(kind);
    json!({
        "id": kind.as_str(),
        "name": kind.as_str(),
        "shortDescription": { "text": short },
        "fullDescription": { "text": full },
        "help": { "text": f.latest.remedy },
        "defaultConfiguration": { "level": level(f.latest.severity) },
    })
}

/// One result: the finding's summary and cost, where it is, and its numbers.
fn result(f: &Finding, rule_index: usize) -> Value {
    let o = &f.latest;
    let critical_ms = o.evidence.critical_ms();
    let critical_share = o.evidence.critical_share();
    let mut text = o.summary.trim_end().to_owned();
    if !text.ends_with('.') {
        text.push('.');
    }
    // The anti-patterns' summaries say their critical cost already.
    if let Some(ms) = critical_ms.filter(|_| !patterns::KINDS.contains(&o.kind)) {
        text.push_str(&format!(" It costs {ms:.1} ms on the critical path"));
        if let Some(share) = critical_share {
            text.push_str(&format!(" ({:.0} % of the request)", share * 100.0));
        }
        text.push('.');
    }
    text.push_str(&format!(" Seen {} time(s).", o.count));
    let mut trace_ids: Vec<String> = Vec::new();
    for id in &o.trace_ids {
        let id = id.to_string();
        if !trace_ids.contains(&id) {
            trace_ids.push(id);
        }
    }
    let mut properties = json!({
        "severity": o.severity.as_str(),
        "culprit": o.culprit,
        "remedy": o.remedy,
        "count": o.count,
        "traceIds": trace_ids,
        "crossed": o.crossed,
        "firstSeen": rfc3339(f.first_seen_ns),
        "lastSeen": rfc3339(o.seen_ns),
    });
    // The anti-patterns' summaries say their critical cost already.
    if let Some(ms) = critical_ms.filter(|_| !patterns::KINDS.contains(&o.kind)) {
        properties["criticalMs"] = json!(ms);
    }
    if let Some(share) = critical_share {
        properties["criticalShare"] = json!(share);
    }
    json!({
        "ruleId": o.kind.as_str(),
        "ruleIndex": rule_index,
        "level": level(o.severity),
        "message": { "text": text },
        "locations": [location(f)],
        "partialFingerprints": { FINGERPRINT: format!("{:016x}", f.id) },
        "properties": properties,
    })
}

/// Where `f` is: its source file and line when known, else its service.
fn location(f: &Finding) -> Value {
    let o = &f.latest;
    let service = o.culprit.service.as_str();
    let code = o.location.as_ref();
    let source = code.and_then(|l| Some((artifact_uri(l.file.as_deref()?)?, l.line)));
    let physical = match source {
        Some((uri, line)) => json!({
            "artifactLocation": { "uri": uri },
            // A file without a line: its first line.
            "region": { "startLine": line.unwrap_or(1).max(1) },
        }),
        None => json!({
            "artifactLocation": { "uri": encode(service, false) },
            "region": { "startLine": 1 },
        }),
    };
    let mut logical: Vec<Value> = code.and_then(function).into_iter().collect();
    logical.push(json!({ "name": service, "kind": "module" }));
    json!({ "physicalLocation": physical, "logicalLocations": logical })
}

/// The function of a code location, as a SARIF logical location.
fn function(l: &CodeLocation) -> Option<Value> {
    let name = l.function.as_deref()?;
    Some(json!({
        "name": name,
        "fullyQualifiedName": qualified_function(l)?,
        "kind": "function",
    }))
}

/// A `code.file.path` as an artifact URI: a relative path stays relative
/// (`./` dropped, `\` as `/`), an absolute one (`/…`, `C:\…`) becomes a
/// `file:` URI; None for an empty path or one with control characters.
pub fn artifact_uri(path: &str) -> Option<String> {
    if path.is_empty() || path.chars().any(char::is_control) {
        return None;
    }
    let path = path.replace('\\', "/");
    let drive = matches!(path.as_bytes(), [d, b':', b'/', ..] if d.is_ascii_alphabetic());
    if path.starts_with('/') {
        Some(format!("file://{}", encode(&path, true)))
    } else if drive {
        Some(format!("file:///{}", encode(&path, true)))
    } else {
        let relative = path.trim_start_matches("./");
        (!relative.is_empty()).then(|| encode(relative, false))
    }
}

/// `text` percent-encoded as a URI path: unreserved characters, `/` and the
/// sub-delimiters kept; `:` kept only in an absolute path (in a relative one
/// it would read as a scheme).
fn encode(text: &str, absolute: bool) -> String {
    let mut out = String::with_capacity(text.len());
    for b in text.bytes() {
        let keep = b.is_ascii_alphanumeric()
            || b"-._~/!$&'()*+,;=@".contains(&b)
            || (absolute && b == b':');
        if keep {
            out.push(b as char);
        } else {
            out.push_str(&format!("%{b:02X}"));
        }
    }
    out
}

/// A kind's short and full description.
fn describe(kind: FindingKind) -> (&'static str, &'static str) {
    match kind {
        FindingKind::CascadingTimeout => (
            "A slow hop made its callers time out",
            "Calls on the chain to one slow span timed out waiting for it: the slow hop is the cause, not the first span that failed.",
        ),
        FindingKind::DeadlineNotPropagated => (
            "A deadline is not passed down",
            "A callee keeps working after its caller gave up: the caller's remaining time budget does not reach it.",
        ),
        FindingKind::TimeoutInversion => (
            "An inner timeout is longer than the outer one",
            "A call is allowed more time than its caller waits, so the caller times out first and the inner timeout never helps.",
        ),
        FindingKind::GatewayTimeout => (
            "The gateway answers with a timeout",
            "Requests through the gateway end in a gateway timeout: the service behind it takes longer than the gateway waits.",
        ),
        FindingKind::TimeoutHeadroom => (
            "A timeout leaves little headroom",
            "Calls take close to their timeout: a little more latency and they fail.",
        ),
        FindingKind::SlowQuery => (
            "A slow database statement",
            "A database statement shape takes long, on the critical path of the requests that run it.",
        ),
        FindingKind::SlowHealthCheck => (
            "A slow health check",
            "A health-check route takes long: the orchestrator may kill or drain an instance that is only busy.",
        ),
        FindingKind::ColdStart => (
            "Cold starts",
            "The first requests an instance serves are much slower than the rest.",
        ),
        FindingKind::PoolExhaustion => (
            "A connection pool runs out",
            "Requests wait for a connection from a pool that is in use up to its size.",
        ),
        FindingKind::BlockedWorker => (
            "A blocked worker",
            "Blocking work holds the only worker (an event loop, a single thread), so other requests queue behind it.",
        ),
        FindingKind::LockContention => (
            "Lock contention",
            "Requests wait on a lock (a hot row, a mutex) that other requests hold.",
        ),
        FindingKind::NPlusOne => (
            "N+1 calls",
            "A request makes the same call once per item instead of once for all of them.",
        ),
        FindingKind::SerialCalls => (
            "Independent calls made one after another",
            "Calls that do not depend on each other run in sequence; in parallel the request would be shorter.",
        ),
        FindingKind::RedundantCall => (
            "The same call repeated",
            "A request makes the same call with the same parameters more than once.",
        ),
        FindingKind::ChattyEdge => (
            "A chatty service edge",
            "One service calls another many times per request.",
        ),
        FindingKind::ExcessiveFanout => (
            "Excessive fan-out",
            "One operation starts very many child calls.",
        ),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn paths_become_uris_code_scanning_reads() {
        assert_eq!(
            artifact_uri("src/orders/views.py").as_deref(),
            Some("src/orders/views.py")
        );
        assert_eq!(artifact_uri("./app/db.js").as_deref(), Some("app/db.js"));
        assert_eq!(
            artifact_uri("/home/runner/work/shop/src/my views.py").as_deref(),
            Some("file:///home/runner/work/shop/src/my%20views.py")
        );
        assert_eq!(
            artifact_uri(r"C:\shop\Orders.cs").as_deref(),
            Some("file:///C:/shop/Orders.cs")
        );
        assert_eq!(artifact_uri("a:b.py").as_deref(), Some("a%3Ab.py"));
        assert_eq!(artifact_uri("evil\n.py"), None);
        assert_eq!(artifact_uri(""), None);
    }
}
