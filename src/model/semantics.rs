//! Typed semantic-convention fields, read from a span's packed attributes under
//! their current and legacy names (`db.system.name` or `db.system`,
//! `server.address` or `net.peer.name`, ...). Ingest interns the values of these
//! keys, so reading them costs a scan of the span's attributes, no allocation.

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
