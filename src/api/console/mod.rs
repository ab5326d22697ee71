//! The web console: HTML pages, a stylesheet and ES modules compiled into the
//! binary (`include_str!`), which read the JSON API from the browser.
//!
//! * `/` (the findings page), `/ui/findings`, `/ui/entry`, `/ui/trace?id=`,
//!   `/ui/timeouts`, `/ui/coverage`, and `/ui/assets/{name}`: open without the
//!   API token. They hold no data; the scripts ask for the token when the API
//!   answers 401, keep it in `sessionStorage` and send it as `Authorization:
//!   Bearer`.
//!   `kinds.js` is generated from `api/kinds.rs` (each finding kind's label
//!   and one line), the rest are files under `assets/`.
//! * `/ui/plain/findings`: the findings as a server-rendered HTML table, for
//!   browsers without JavaScript (each page's `<noscript>` links to it). It is
//!   data, so it needs the token like the JSON.
//!
//! Every answer carries a Content-Security-Policy that allows only the
//! console's own scripts, styles and API (`'self'`): no inline script, no
//! other origin.

mod plain;

use std::sync::LazyLock;

use axum::extract::Path;
use axum::http::{header, HeaderValue};
use axum::response::{IntoResponse, Response};
use axum::routing::get;
use axum::Router;

use super::{kinds, ApiError, AppState};
use crate::analyze::FindingKind;

/// Only the console's own origin: scripts, styles, API calls.
const CSP: &str = "default-src 'none'; script-src 'self'; style-src 'self'; \
                   img-src 'self' data:; connect-src 'self'; base-uri 'none'; form-action 'self'; \
                   frame-ancestors 'none'";

const SHELL: &str = include_str!("assets/shell.html");

/// The static files under `/ui/assets/`: name, content type, body.
const ASSETS: &[(&str, &str, &str)] = &[
    ("console.css", CSS, include_str!("assets/console.css")),
    ("common.js", JS, include_str!("assets/common.js")),
    ("findings.js", JS, include_str!("assets/findings.js")),
    ("entry.js", JS, include_str!("assets/entry.js")),
    ("trace.js", JS, include_str!("assets/trace.js")),
    ("timeouts.js", JS, include_str!("assets/timeouts.js")),
    ("coverage.js", JS, include_str!("assets/coverage.js")),
];
const CSS: &str = "text/css; charset=utf-8";
const JS: &str = "text/javascript; charset=utf-8";
const HTML: &str = "text/html; charset=utf-8";

/// A console page: its path under `/ui/`, title, script and main fragment.
struct Page {
    name: &'static str,
    title: &'static str,
    main: &'static str,
}

const PAGES: &[Page] = &[
    Page {
        name: "findings",
        title: "Findings",
        main: include_str!("assets/findings.html"),
    },
    Page {
        name: "entry",
        title: "Entry point",
        main: include_str!("assets/entry.html"),
    },
    Page {
        name: "trace",
        title: "Trace",
        main: include_str!("assets/trace.html"),
    },
    Page {
        name: "timeouts",
        title: "Timeout budgets",
        main: include_str!("assets/timeouts.html"),
    },
    Page {
        name: "coverage",
        title: "Coverage",
        main: include_str!("assets/coverage.html"),
    },
];

/// The open routes: pages and assets (no data, so no token).
pub fn pages() -> Router<AppState> {
    Router::new()
        .route("/", get(|| async { page("findings") }))
        .route("/ui", get(|| async { page("findings") }))
        .route(
            "/ui/{page}",
            get(|Path(name): Path<String>| async move { page(&name) }),
        )
        .route("/ui/assets/{name}", get(asset))
}

/// The routes that show data and so stand behind the API token.
pub fn data() -> Router<AppState> {
    Router::new().route("/ui/plain/findings", get(plain::findings))
}

/// A console answer: its body with the console's headers.
fn respond(content_type: &'static str, body: String) -> Response {
    (
        [
            (header::CONTENT_TYPE, HeaderValue::from_static(content_type)),
            (
                header::CONTENT_SECURITY_POLICY,
                HeaderValue::from_static(CSP),
            ),
            (
                header::X_CONTENT_TYPE_OPTIONS,
                HeaderValue::from_static("nosniff"),
            ),
            (header::CACHE_CONTROL, HeaderValue::from_static("no-cache")),
        ],
        body,
    )
        .into_response()
}

fn page(name: &str) -> Response {
    match PAGES.iter().find(|p| p.name == name) {
        Some(p) => respond(HTML, render(p.title, p.name, &main_of(p))),
        None => ApiError::not_found("page_not_found", format!("no console page `{name}`"))
            .into_response(),
    }
}

/// A page's main fragment; the findings page's kind filter lists every kind
/// by its label, with its one line on hover.
fn main_of(p: &Page) -> String {
    let kinds: String = FindingKind::ALL
        .iter()
        .map(|&k| {
            format!(
                "<option value=\"{}\" title=\"{}\">{}</option>",
                k.as_str(),
                plain::escape(kinds::description(k)),
                plain::escape(kinds::label(k))
            )
        })
        .collect();
    p.main.replace("{{kinds}}", &kinds)
}

/// The shell around a page's main part: header, navigation, token form.
fn render(title: &str, active: &str, main: &str) -> String {
    let nav: String = PAGES
        .iter()
        .map(|p| {
            let current = if p.name == active {
                " aria-current=\"page\""
            } else {
                ""
            };
            format!("<a href=\"/ui/{}\"{current}>{}</a>", p.name, p.title)
        })
        .collect();
    SHELL
        .replace("{{title}}", title)
        .replace("{{page}}", active)
        .replace("{{nav}}", &nav)
        .replace("{{script}}", &format!("{active}.js"))
        .replace("{{main}}", main)
}

/// `kinds.js`, generated once from [`kinds::console_module`].
static KINDS_JS: LazyLock<String> = LazyLock::new(kinds::console_module);

async fn asset(Path(name): Path<String>) -> Response {
    if name == "kinds.js" {
        return respond(JS, KINDS_JS.clone());
    }
    match ASSETS.iter().find(|(n, _, _)| *n == name) {
        Some((_, content_type, body)) => respond(content_type, (*body).to_owned()),
        None => ApiError::not_found("asset_not_found", format!("no console asset `{name}`"))
            .into_response(),
    }
}
