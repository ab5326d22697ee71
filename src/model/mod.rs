//! The data every stage shares: identifiers, interned names, the compact [`Span`],
//! and the assembled [`Trace`] handed from `assemble` to `analyze`.

mod attrs;
mod ids;
mod intern;
mod span;
mod trace;

pub use attrs::{AttrValue, Attrs, AttrsBuilder};
pub use ids::{IdError, SpanId, TraceId};
pub use intern::Sym;
pub use span::{Event, Link, Semantics, Span, SpanBatch, SpanKind, StatusCode};
pub use trace::{Trace, Warning, WarningCode};
