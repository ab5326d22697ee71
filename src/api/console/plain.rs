//! `/ui/plain/findings`: the findings as a plain HTML table, rendered on the
//! server for browsers without JavaScript. The same query parameters and
//! selection as `GET /api/v1/findings`.

use axum::extract::rejection::QueryRejection;
use axum::extract::{Query, State};
use axum::response::Response;

use super::super::coverage::blind_by_service;
use super::super::findings::{crossed_text, location_text, number, select, ListParams};
use super::super::params::{self, rfc3339, TimeRange};
use super::super::{ApiError, AppState};
use super::{kinds, respond, HTML};
use crate::analyze::{Culprit, Evidence};
use crate::store::Finding;

/// The findings page without scripts: one table row per finding, worst first.
pub async fn findings(
    State(state): State<AppState>,
    q: Result<Query<ListParams>, QueryRejection>,
    range: Result<Query<TimeRange>, QueryRejection>,
) -> Result<Response, ApiError> {
    let found = select(&state.store, params::query(q)?, TimeRange::read(range)?)?;
    let rows: String = found.iter().map(row).collect();
    let table = if found.is_empty() {
        format!("<p>No findings match.</p>{}", blind_notice(&state))
    } else {
        format!(
            "<table><thead><tr><th>Severity</th><th>Kind</th><th>Culprit</th><th>Summary</th>\
             <th>Remedy</th><th>Where and why</th><th class=\"num\">Count</th><th>Last seen</th>\
             <th>Example traces (JSON)</th></tr></thead><tbody>{rows}</tbody></table>"
        )
    };
    Ok(respond(
        HTML,
        format!(
            "<!doctype html><html lang=\"en\"><head><meta charset=\"utf-8\">\
             <title>Findings (plain) · hopscope</title><link rel=\"icon\" href=\"data:,\">\
             <link rel=\"stylesheet\" href=\"/ui/assets/console.css\"></head><body><main>\
             <h1>Findings</h1><p class=\"muted\">Worst first; filter with the query parameters of \
             <code>/api/v1/findings</code> (<code>kind</code>, <code>service</code>, \
             <code>severity</code>, <code>since</code>, <code>until</code>, <code>limit</code>). \
             The console with charts and the trace waterfall is at <a href=\"/\">/</a> (JavaScript).</p>\
             {table}</main></body></html>"
        ),
    ))
}

/// Under "no findings", the services whose spans leave detectors blind
/// ([`blind_by_service`]): silence there is no sign of health.
fn blind_notice(state: &AppState) -> String {
    let blind = blind_by_service(&state.store.coverage().services());
    if blind.is_empty() {
        return String::new();
    }
    let items: String = blind
        .iter()
        .map(|(service, names)| {
            format!(
                "<li>{}: {}</li>",
                escape(service.as_str()),
                escape(&names.join(", "))
            )
        })
        .collect();
    format!(
        "<p>But these detectors are blind for these services (<a href=\"/ui/coverage\">coverage</a> \
         says why and what to add):</p><ul>{items}</ul>"
    )
}

/// Example traces linked per finding.
const EXAMPLES: usize = 5;

fn row(f: &Finding) -> String {
    let o = &f.latest;
    let traces: String = o
        .trace_ids
        .iter()
        .take(EXAMPLES)
        .map(|t| {
            let hex = t.to_string();
            let short = hex.get(..12).unwrap_or(&hex);
            format!("<a href=\"/api/v1/traces/{hex}\" class=\"mono\">{short}</a> ")
        })
        .collect();
    let mut why: Vec<String> = o
        .location
        .iter()
        .map(|l| format!("at {}", location_text(l)))
        .collect();
    why.extend(o.crossed.iter().map(crossed_text));
    if kinds::per_request(o.kind) {
        why.extend(cost(&o.evidence));
    }
    format!(
        "<tr><td><span class=\"badge sev-{sev}\">{sev}</span></td>\
         <td title=\"{about}\">{label}<br><code>{kind}</code></td><td>{culprit}</td>\
         <td>{summary}</td><td>{remedy}</td><td>{why}</td><td class=\"num\">{count}</td>\
         <td>{last}</td><td>{traces}</td></tr>",
        sev = o.severity.as_str(),
        about = escape(kinds::description(o.kind)),
        label = escape(kinds::label(o.kind)),
        kind = o.kind.as_str(),
        culprit = escape(&culprit(&o.culprit)),
        why = why
            .iter()
            .map(|w| escape(w))
            .collect::<Vec<_>>()
            .join("<br>"),
        summary = escape(&o.summary),
        remedy = escape(&o.remedy),
        count = o.count,
        last = rfc3339(o.seen_ns),
    )
}

/// What a per-request pattern costs the user, when its evidence says: its
/// time on the request's critical path and share of it, and what running the
/// calls in parallel would save.
fn cost(evidence: &Evidence) -> Option<String> {
    let critical = evidence.critical_ms()?;
    let mut out = format!("costs {} ms on the critical path", number(critical));
    if let Some(share) = evidence.critical_share() {
        out.push_str(&format!(" ({:.1}% of the request)", share * 100.0));
    }
    if let Some(saved) = evidence.saved_ms() {
        out.push_str(&format!(
            "; running the calls in parallel would save {} ms",
            number(saved)
        ));
    }
    Some(out)
}

fn culprit(c: &Culprit) -> String {
    match c.peer {
        Some(peer) => format!("{} → {peer} {}", c.service, c.operation),
        None => format!("{} {}", c.service, c.operation),
    }
}

/// Text as HTML: the five characters that could open markup or end an attribute.
pub(super) fn escape(text: &str) -> String {
    let mut out = String::with_capacity(text.len());
    for c in text.chars() {
        match c {
            '<' => out.push_str("&lt;"),
            '>' => out.push_str("&gt;"),
            '&' => out.push_str("&amp;"),
            '"' => out.push_str("&quot;"),
            '\'' => out.push_str("&#39;"),
            c => out.push(c),
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::escape;

    #[test]
    fn names_from_the_wire_cannot_open_markup() {
        assert_eq!(
            escape(r#"<script>alert("x")</script> & 'y'"#),
            "&lt;script&gt;alert(&quot;x&quot;)&lt;/script&gt; &amp; &#39;y&#39;"
        );
    }
}
