//! The data every stage shares: identifiers, interned names, the compact [`Span`],
//! and the assembled [`Trace`] handed from `assemble` to `analyze`.

mod attrs;
mod ids;
pub mod intern;
mod semantics;
mod span;
mod trace;

pub use attrs::{AttrArena, AttrIter, AttrRange, AttrValue, Found, RESOURCE_ATTRS};
pub use ids::{IdError, SpanId, TraceId};
pub use intern::Sym;
pub use semantics::{field, named_peer, url_host, Field, Semantics};
pub use span::{Event, Extra, Link, Span, SpanBatch, SpanKind, SpanSet, StatusCode};
pub use trace::{Trace, Warning, WarningCode};
