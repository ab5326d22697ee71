//! Typed semantic-convention fields, read from a span's packed attributes under
//! their current and legacy names (`db.system.name` or `db.system`,
//! `server.address` or `net.peer.name`, ...). Ingest interns the values of these
//! keys, so reading them costs a scan of the span's attributes, no allocation.

use std::num::NonZeroU16;
use std::sync::LazyLock;

use rustc_hash::FxHashMap;

use super::{AttrArena, AttrValue, Span, Sym};

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

static FIELDS: LazyLock<FxHashMap<Sym, Field>> = LazyLock::new(|| {
    [
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
    ]
    .into_iter()
    .map(|(k, f)| (Sym::new(k), f))
    .collect()
});

/// The typed field `key` fills, if any.
pub fn field(key: Sym) -> Option<Field> {
    FIELDS.get(&key).copied()
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
        for (key, value) in arena.iter(span.attrs) {
            let (Some(f), AttrValue::Str(text)) = (field(key), value) else {
                continue;
            };
            // Ingest interned these values: this finds the symbol, never adds one.
            let sym = Sym::lookup(text);
            match f {
                Field::HttpRoute => sem.http_route = sym,
                Field::RpcSystem => sem.rpc_system = sym,
                Field::DbSystem => sem.db_system = sym,
                Field::DbNamespace => sem.db_namespace = sym,
                Field::ServerAddress => sem.server_address = sym,
                Field::PeerService => sem.peer_service = sym,
                Field::ErrorType => sem.error_type = sym,
                Field::Instance => sem.instance = sym,
                Field::HttpStatus | Field::GrpcStatus => {}
            }
        }
        sem
    }
}
