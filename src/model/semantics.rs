//! Typed semantic-convention fields, read from a span's packed attributes under
//! their current and legacy names (`db.system.name` or `db.system`,
//! `server.address` or `net.peer.name`, ...). Ingest interns the values of these
//! keys, so reading them costs a scan of the span's attributes, no allocation.
//! `docs/SEMANTIC_CONVENTIONS.md` lists what each detector reads.

use std::num::NonZeroU16;
use std::sync::LazyLock;

use rustc_hash::FxHashMap;

use super::{AttrArena, Found, Span, Sym};

/// Which typed field an attribute key fills.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Field {
    HttpStatus,
    GrpcStatus,
    HttpRoute,
    RpcSystem,
    DbSystem,
    DbNamespace,
    ServerAddress,
    PeerService,
    ErrorType,
    Instance,
}

/// Every key a typed field is read from, current names before legacy ones.
const NAMES: [(&str, Field); 14] = [
    ("http.response.status_code", Field::HttpStatus),
    ("http.status_code", Field::HttpStatus),
    ("rpc.grpc.status_code", Field::GrpcStatus),
    ("http.route", Field::HttpRoute),
    ("rpc.system", Field::RpcSystem),
    ("db.system.name", Field::DbSystem),
    ("db.system", Field::DbSystem),
    ("db.namespace", Field::DbNamespace),
    ("db.name", Field::DbNamespace),
    ("server.address", Field::ServerAddress),
    ("net.peer.name", Field::ServerAddress),
    ("peer.service", Field::PeerService),
    ("error.type", Field::ErrorType),
    ("service.instance.id", Field::Instance),
];

static KEYS: LazyLock<[Sym; 14]> = LazyLock::new(|| NAMES.map(|(k, _)| Sym::new(k)));

static FIELDS: LazyLock<FxHashMap<Sym, Field>> =
    LazyLock::new(|| KEYS.iter().zip(NAMES).map(|(&k, (_, f))| (k, f)).collect());

/// The typed field `key` fills, if any.
pub fn field(key: Sym) -> Option<Field> {
    FIELDS.get(&key).copied()
}

/// The host of a URL (`https://user@inventory:8080/items?id=1` →
/// `inventory`, `http://[::1]:80/` → `::1`); `None` without one.
pub fn url_host(url: &str) -> Option<&str> {
    let (_, rest) = url.split_once("://")?;
    let authority = rest.split(['/', '?', '#']).next()?;
    let host_port = authority.rsplit_once('@').map_or(authority, |(_, h)| h);
    let host = match host_port.strip_prefix('[') {
        Some(v6) => v6.split(']').next()?,
        None => host_port.split(':').next()?,
    };
    (!host.is_empty()).then_some(host)
}

/// The keys a span names its callee under, by preference; `true` for a URL,
/// read for its host.
const PEER_NAMES: [(&str, bool); 7] = [
    ("peer.service", false),
    ("server.address", false),
    ("net.peer.name", false),
    ("url.full", true),
    ("http.url", true),
    ("db.system.name", false),
    ("db.system", false),
];

static PEER_KEYS: LazyLock<[Sym; 7]> = LazyLock::new(|| PEER_NAMES.map(|(k, _)| Sym::new(k)));

/// The callee `span` names in its attributes (in `arena`): `peer.service`,
/// else `server.address` (legacy `net.peer.name`), else the host of `url.full`
/// (legacy `http.url`: Python's `requests` spans carry nothing else), else the
/// database system. One scan of the span's attributes.
pub fn named_peer(span: &Span, arena: &AttrArena) -> Option<Sym> {
    arena
        .find(span.attrs, *PEER_KEYS)
        .into_iter()
        .zip(PEER_NAMES)
        .find_map(|(found, (_, url))| match (found?, url) {
            (found, false) => found.sym(),
            // A host is a name from the wire: interned within its limit.
            (found, true) => url_host(found.text()?).map(|h| Sym::from_utf8_lossy(h.as_bytes())),
        })
}

/// The semantic-convention attributes the detectors read, typed.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct Semantics {
    pub http_status: Option<NonZeroU16>,
    pub grpc_status: Option<u8>,
    pub http_route: Option<Sym>,
    pub rpc_system: Option<Sym>,
    pub db_system: Option<Sym>,
    pub db_namespace: Option<Sym>,
    /// `server.address`, or legacy `net.peer.name`.
    pub server_address: Option<Sym>,
    pub peer_service: Option<Sym>,
    pub error_type: Option<Sym>,
    /// The resource's `service.instance.id`.
    pub instance: Option<Sym>,
}

impl Semantics {
    /// Reads the typed fields of `span`, whose attributes are in `arena`.
    pub fn of(span: &Span, arena: &AttrArena) -> Semantics {
        let mut sem = Semantics {
            http_status: span.http_status,
            grpc_status: span.grpc_status,
            ..Semantics::default()
        };
        // One pass; interned values come back as symbols, unresolved.
        let found = arena.find(span.attrs, *KEYS);
        for ((_, f), value) in NAMES.iter().zip(found) {
            let Some(sym) = value.and_then(Found::sym) else {
                continue;
            };
            let slot = match f {
                Field::HttpRoute => &mut sem.http_route,
                Field::RpcSystem => &mut sem.rpc_system,
                Field::DbSystem => &mut sem.db_system,
                Field::DbNamespace => &mut sem.db_namespace,
                Field::ServerAddress => &mut sem.server_address,
                Field::PeerService => &mut sem.peer_service,
                Field::ErrorType => &mut sem.error_type,
                Field::Instance => &mut sem.instance,
                Field::HttpStatus | Field::GrpcStatus => continue,
            };
            // Current names come first: a legacy name fills only what is empty.
            slot.get_or_insert(sym);
        }
        sem
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::model::{SpanId, SpanKind};

    #[test]
    fn url_hosts() {
        for (url, host) in [
            ("http://inventory:8080/items?id=1", Some("inventory")),
            (
                "https://user:pw@api.example.com/v1",
                Some("api.example.com"),
            ),
            ("http://[::1]:80/", Some("::1")),
            ("http://10.0.0.7", Some("10.0.0.7")),
            ("/items?id=1", None),
            ("http:///items", None),
        ] {
            assert_eq!(url_host(url), host, "{url}");
        }
    }

    /// A client span naming its callee under `attrs`, stored as ingest does:
    /// URLs inline, the other values interned.
    fn peer(attrs: &[(&str, &str)]) -> Option<&'static str> {
        let mut arena = AttrArena::default();
        let mark = arena.mark();
        for (k, v) in attrs {
            if k.ends_with("url") || k.ends_with("full") {
                arena.str(Sym::new(k), v);
            } else {
                arena.sym(Sym::new(k), Sym::new(v));
            }
        }
        let mut span = Span::new(
            SpanId::from_u64(1).unwrap(),
            None,
            "shop",
            "GET",
            SpanKind::Client,
            (0, 1),
        );
        span.attrs = arena.finish(mark);
        named_peer(&span, &arena).map(Sym::as_str)
    }

    #[test]
    fn the_named_peer_is_read_under_current_and_legacy_names() {
        // Python's requests: the old conventions, no server address.
        assert_eq!(
            peer(&[
                ("http.method", "GET"),
                ("http.url", "http://orders:8080/cart")
            ]),
            Some("orders")
        );
        assert_eq!(
            peer(&[("url.full", "https://orders.internal/cart")]),
            Some("orders.internal")
        );
        assert_eq!(peer(&[("net.peer.name", "db.old")]), Some("db.old"));
        assert_eq!(
            peer(&[
                ("url.full", "http://10.0.0.7/x"),
                ("server.address", "orders")
            ]),
            Some("orders"),
            "an address beats a URL's host"
        );
        assert_eq!(
            peer(&[("server.address", "10.0.0.7"), ("peer.service", "orders")]),
            Some("orders"),
            "the service beats an address"
        );
        assert_eq!(peer(&[("db.system", "postgresql")]), Some("postgresql"));
        assert_eq!(peer(&[("http.method", "GET")]), None);
    }
}
