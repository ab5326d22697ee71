//! The demo's databases: real SQLite files in the demo's temporary directory,
//! filled once at start, each behind a real r2d2 connection pool. A request
//! served by a database-backed service takes a connection from the pool
//! (inside a `pool.acquire` span unless acquire spans are off), runs its
//! statements on it, each in a CLIENT span of its own that does not cover the
//! wait for the connection, and gives the connection back.
//!
//! SQLite runs in process, where a database server would be a round trip
//! away: each statement first waits the database's latency
//! ([`DbPlan::latency`], scaled like every invented duration), inside its span
//! and holding its connection, as a client does while its statement is on the
//! wire and at the server; then SQLite runs it for real. So a connection is
//! busy for as long as its calls last, the fast statements stay fast however
//! loaded the machine is (their real SQL takes microseconds), and the slow
//! statement is slow by its real SQL alone.
//!
//! Statements carry their literals inline (`... WHERE sku = 'A-3'`), in the
//! span's `db.query.text` exactly as executed, so the daemon has to fold them
//! into one shape. The pools' connections are read-only: SQLite lets readers
//! run side by side, so statements never wait for each other.

use std::path::Path;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

use opentelemetry::trace::{Span as _, SpanKind, Status, TraceContextExt as _, Tracer as _};
use opentelemetry::{Context, KeyValue};
use opentelemetry_sdk::trace::SdkTracer;
use r2d2::Pool;
use r2d2_sqlite::SqliteConnectionManager;
use rusqlite::{Connection, OpenFlags};

use super::scenario::DbPlan;
use super::DemoError;

/// `db.system.name` of every demo database.
const SYSTEM: &str = "sqlite";
/// How long a request waits for a connection before it fails (far beyond any
/// scenario's queue).
const ACQUIRE_TIMEOUT: Duration = Duration::from_secs(30);

/// Products in the catalog.
const PRODUCTS: u64 = 200_000;
/// Distinct SKUs in the orders' stock ledger, and ledger rows per SKU.
const STOCK_SKUS: u64 = 8;
const MOVES_PER_SKU: u64 = 500;
const COLORS: [&str; 8] = [
    "red", "blue", "green", "black", "white", "grey", "navy", "olive",
];
const KINDS: [&str; 10] = [
    "jacket", "boot", "tent", "backpack", "glove", "scarf", "lamp", "stove", "mug", "sock",
];

/// What a database holds and what a request runs on it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) enum Data {
    /// The orders service's stock and its ledger of stock moves. A request
    /// reads one SKU's stock and checks it against the ledger: three indexed
    /// statements.
    Orders,
    /// The catalog's products. A request looks a product up and lists others
    /// of its kind (indexed); every `report_every`-th request also runs a
    /// report over all products that no index helps (a few hundred
    /// milliseconds of real SQL).
    Catalog {
        /// Every how many requests the slow report runs.
        report_every: u64,
    },
}

/// One statement, as executed and as its span names it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(super) struct Statement {
    /// `db.operation.name`.
    pub operation: &'static str,
    /// `db.collection.name`.
    pub table: &'static str,
    /// `db.query.text`, literals inline.
    pub text: String,
}

impl Statement {
    fn select(table: &'static str, text: String) -> Statement {
        Statement {
            operation: "SELECT",
            table,
            text,
        }
    }

    /// The span name: `{operation} {table}`.
    pub(super) fn name(&self) -> String {
        format!("{} {}", self.operation, self.table)
    }
}

impl Data {
    /// `db.namespace`, and the database file's name.
    pub(super) fn namespace(self) -> &'static str {
        match self {
            Data::Orders => "orders",
            Data::Catalog { .. } => "catalog",
        }
    }

    /// The schema and its rows, as one script run in one transaction.
    fn script(self) -> String {
        // `n` counts 0..rows without a round trip per row.
        let numbers = |rows: u64| {
            format!("WITH RECURSIVE n(i) AS (SELECT 0 UNION ALL SELECT i + 1 FROM n WHERE i < {rows} - 1)")
        };
        match self {
            Data::Orders => format!(
                "BEGIN;
                 CREATE TABLE stock_moves (id INTEGER PRIMARY KEY, sku TEXT NOT NULL,
                     warehouse INTEGER NOT NULL, qty INTEGER NOT NULL);
                 {numbers}
                 INSERT INTO stock_moves (id, sku, warehouse, qty)
                     SELECT i, 'A-' || (i % {STOCK_SKUS}), i % 5, (i * 37) % 21 - 10 FROM n;
                 CREATE INDEX stock_moves_sku ON stock_moves (sku);
                 CREATE TABLE stock (sku TEXT PRIMARY KEY, qty INTEGER NOT NULL);
                 INSERT INTO stock (sku, qty) SELECT sku, SUM(qty) FROM stock_moves GROUP BY sku;
                 COMMIT;",
                numbers = numbers(STOCK_SKUS * MOVES_PER_SKU),
            ),
            Data::Catalog { .. } => format!(
                "BEGIN;
                 CREATE TABLE products (id INTEGER PRIMARY KEY, sku TEXT NOT NULL UNIQUE,
                     name TEXT NOT NULL, category TEXT NOT NULL, price_cents INTEGER NOT NULL,
                     description TEXT NOT NULL);
                 {numbers}
                 INSERT INTO products (id, sku, name, category, price_cents, description)
                     SELECT i, printf('P-%06d', i), color || ' ' || kind || ' ' || i, kind,
                         (i * 37) % 20000 + 99,
                         printf('A %s %s for the outdoors, model %d, %s edition', color, kind, i,
                             CASE i % 3 WHEN 0 THEN 'waterproof' ELSE 'classic' END)
                     FROM (SELECT i, {color} AS color, {kind} AS kind FROM n);
                 CREATE INDEX products_category ON products (category, price_cents);
                 COMMIT;",
                numbers = numbers(PRODUCTS),
                color = pick("(i * 7) % 8", &COLORS),
                kind = pick("(i * 13) % 10", &KINDS),
            ),
        }
    }

    /// The statements of the `n`-th request (from 0).
    pub(super) fn statements(self, n: u64) -> Vec<Statement> {
        match self {
            Data::Orders => {
                let sku = format!("A-{}", n % STOCK_SKUS);
                vec![
                    Statement::select(
                        "stock",
                        format!("SELECT qty FROM stock WHERE sku = '{sku}'"),
                    ),
                    Statement::select(
                        "stock_moves",
                        format!(
                            "SELECT warehouse, SUM(qty) FROM stock_moves WHERE sku = '{sku}' \
                             GROUP BY warehouse"
                        ),
                    ),
                    Statement::select(
                        "stock_moves",
                        format!("SELECT COUNT(*) FROM stock_moves WHERE sku = '{sku}' AND qty < 0"),
                    ),
                ]
            }
            Data::Catalog { report_every } => {
                let sku = format!("P-{:06}", n * 7_919 % PRODUCTS);
                let kind = KINDS[(n % KINDS.len() as u64) as usize];
                let mut statements = vec![
                    Statement::select(
                        "products",
                        format!("SELECT sku, name, price_cents FROM products WHERE sku = '{sku}'"),
                    ),
                    Statement::select(
                        "products",
                        format!(
                            "SELECT sku, name, price_cents FROM products WHERE category = '{kind}' \
                             ORDER BY price_cents LIMIT 5"
                        ),
                    ),
                ];
                if report_every > 0 && n % report_every == report_every - 1 {
                    statements.push(Statement::select("products", SLOW_REPORT.to_owned()));
                }
                statements
            }
        }
    }
}

/// The catalog's slow statement: distinct descriptions per category over every
/// product, which sorts all 200,000 descriptions.
pub(super) const SLOW_REPORT: &str = "SELECT category, COUNT(DISTINCT description) AS variants, \
     SUM(price_cents) AS value FROM products WHERE price_cents >= 500 GROUP BY category \
     ORDER BY variants DESC";

/// `CASE expr WHEN 0 THEN 'a' WHEN 1 THEN 'b' ... END`.
fn pick(expr: &str, words: &[&str]) -> String {
    let mut out = format!("CASE {expr}");
    for (i, w) in words.iter().enumerate() {
        out.push_str(&format!(" WHEN {i} THEN '{w}'"));
    }
    out.push_str(" END");
    out
}

/// Why a request's statements failed.
#[derive(Debug, thiserror::Error)]
pub(super) enum QueryError {
    /// No connection came free in time.
    #[error("no connection: {0}")]
    Acquire(#[from] r2d2::Error),
    /// A statement failed.
    #[error(transparent)]
    Sql(#[from] rusqlite::Error),
}

/// A filled database and its connection pool.
pub(super) struct Database {
    data: Data,
    /// Waited before each statement runs ([`DbPlan::latency`]).
    latency: Duration,
    pool: Pool<SqliteConnectionManager>,
    /// `db.client.connection.pool.name`.
    pool_name: String,
    acquire_spans: bool,
    /// Requests served so far: picks each request's statements.
    served: AtomicU64,
}

impl std::fmt::Debug for Database {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Database")
            .field("data", &self.data)
            .field("pool_name", &self.pool_name)
            .field("pool_size", &self.pool.max_size())
            .finish_non_exhaustive()
    }
}

impl Database {
    /// Creates `dir/{namespace}.sqlite`, fills it, and opens a pool of
    /// `plan.pool_size` read-only connections to it. Blocks: call it off the
    /// runtime's threads.
    pub(super) fn create(
        dir: &Path,
        plan: DbPlan,
        acquire_spans: bool,
    ) -> Result<Database, DemoError> {
        let DbPlan {
            data,
            pool_size,
            latency,
        } = plan;
        let namespace = data.namespace();
        let failed = |message: String| DemoError::Database {
            database: namespace,
            message,
        };
        let path = dir.join(format!("{namespace}.sqlite"));
        Connection::open(&path)
            .and_then(|c| c.execute_batch(&data.script()))
            .map_err(|e| failed(format!("cannot fill {}: {e}", path.display())))?;
        let manager = SqliteConnectionManager::file(&path)
            .with_flags(OpenFlags::SQLITE_OPEN_READ_ONLY | OpenFlags::SQLITE_OPEN_NO_MUTEX);
        let pool = Pool::builder()
            .max_size(pool_size)
            .min_idle(Some(pool_size))
            .connection_timeout(ACQUIRE_TIMEOUT)
            .build(manager)
            .map_err(|e| failed(format!("cannot open its pool: {e}")))?;
        Ok(Database {
            data,
            latency,
            pool,
            pool_name: format!("{namespace}-pool"),
            acquire_spans,
            served: AtomicU64::new(0),
        })
    }

    /// Serves one request: takes a connection, runs the request's statements
    /// on it, each in a CLIENT span under `cx`, and gives the connection back.
    /// Blocks: call it from `spawn_blocking`.
    pub(super) fn serve(&self, tracer: &SdkTracer, cx: &Context) -> Result<(), QueryError> {
        let n = self.served.fetch_add(1, Ordering::Relaxed);
        let mut acquire = self.acquire_spans.then(|| {
            tracer
                .span_builder("pool.acquire")
                .with_kind(SpanKind::Internal)
                .with_attributes([KeyValue::new(
                    "db.client.connection.pool.name",
                    self.pool_name.clone(),
                )])
                .start_with_context(tracer, cx)
        });
        let connection = self.pool.get();
        if let Some(span) = &mut acquire {
            if let Err(e) = &connection {
                span.set_attribute(KeyValue::new("error.type", "timeout"));
                span.set_status(Status::error(e.to_string()));
            }
            span.end();
        }
        let connection = connection?;
        for statement in self.data.statements(n) {
            self.execute(&connection, &statement, tracer, cx)?;
        }
        Ok(())
    }

    /// Runs one statement inside a CLIENT span, after the database's latency,
    /// and reads every row it returns.
    fn execute(
        &self,
        connection: &Connection,
        statement: &Statement,
        tracer: &SdkTracer,
        cx: &Context,
    ) -> Result<(), rusqlite::Error> {
        let span = tracer
            .span_builder(statement.name())
            .with_kind(SpanKind::Client)
            .with_attributes([
                KeyValue::new("db.system.name", SYSTEM),
                KeyValue::new("db.namespace", self.data.namespace()),
                KeyValue::new("db.operation.name", statement.operation),
                KeyValue::new("db.collection.name", statement.table),
                KeyValue::new("db.query.text", statement.text.clone()),
            ])
            .start_with_context(tracer, cx);
        let cx = cx.with_span(span);
        std::thread::sleep(self.latency);
        let rows = rows(connection, &statement.text);
        let span = cx.span();
        match &rows {
            Ok(rows) => span.set_attribute(KeyValue::new("db.response.returned_rows", *rows)),
            Err(e) => {
                let code = e
                    .sqlite_error_code()
                    .map_or_else(|| "sqlite_error".to_owned(), |c| format!("{c:?}"));
                span.set_attribute(KeyValue::new("error.type", code));
                span.set_status(Status::error(e.to_string()));
            }
        }
        span.end();
        rows.map(|_| ())
    }
}

/// Prepares and runs `sql`, reading every row; how many there were.
fn rows(connection: &Connection, sql: &str) -> Result<i64, rusqlite::Error> {
    let mut statement = connection.prepare(sql)?;
    let mut rows = statement.query([])?;
    let mut n = 0;
    while rows.next()?.is_some() {
        n += 1;
    }
    Ok(n)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn plan(data: Data) -> DbPlan {
        DbPlan {
            data,
            pool_size: 1,
            latency: Duration::ZERO,
        }
    }

    #[test]
    fn every_statement_runs_on_a_filled_database() {
        let dir = tempfile::tempdir().unwrap();
        for data in [Data::Orders, Data::Catalog { report_every: 2 }] {
            let db = Database::create(dir.path(), plan(data), false).unwrap();
            let connection = db.pool.get().unwrap();
            for n in 0..2 {
                for s in data.statements(n) {
                    let rows = rows(&connection, &s.text).unwrap();
                    assert!(rows > 0, "{}: no rows", s.text);
                }
            }
        }
        let slow = Data::Catalog { report_every: 2 };
        assert_eq!(slow.statements(0).len(), 2);
        assert_eq!(slow.statements(1).last().unwrap().text, SLOW_REPORT);
        assert_eq!(Data::Catalog { report_every: 0 }.statements(1).len(), 2);
    }

    #[test]
    fn the_pool_only_reads() {
        let dir = tempfile::tempdir().unwrap();
        let db = Database::create(dir.path(), plan(Data::Orders), false).unwrap();
        let connection = db.pool.get().unwrap();
        let write = connection.execute("DELETE FROM stock", []);
        assert!(write.is_err(), "{write:?}");
    }
}
