//! Realistic traces as OTLP export requests, deterministic for a seed.
//!
//! A trace enters through a SERVER span on the first service and calls down
//! [`Shape::depth`] levels of services, [`Shape::fan_out`] calls per level: each
//! call is a CLIENT span, the callee's SERVER span, and the callee's database
//! CLIENT span. Calls are sequential at even levels and concurrent at odd ones.
//! Every span has about ten attributes with semantic-convention keys and values
//! of realistic length (URLs, user agents, parameterized SQL as ORMs send it and
//! some with literal values: [`LITERAL_DIGITS`]-digit numbers, which
//! `template.rs` renews for every request sent). Each service runs
//! [`Shape::instances`] replicas, each its own resource (`service.instance.id`,
//! `k8s.pod.name`); every request picks one replica per service.
//!
//! A fraction of traces time out: the deepest call of one path waits on a stuck
//! query until its deadline (CLIENT span `context deadline exceeded`, gRPC status
//! 4 or no HTTP response), the callee is cancelled, and every caller above fails
//! with 504 or `DEADLINE_EXCEEDED`. Another fraction has one slow query
//! (500 ms–2 s) that its callers wait on.

use bytes::Bytes;

use hopscope::ingest::otlp::collector::trace::v1::ExportTraceServiceRequest;
use hopscope::ingest::otlp::common::v1::{any_value, AnyValue, InstrumentationScope, KeyValue};
use hopscope::ingest::otlp::resource::v1::Resource;
use hopscope::ingest::otlp::trace::v1::{span, status, ResourceSpans, ScopeSpans, Span, Status};

const US: u64 = 1_000;
const MS: u64 = 1_000_000;

/// The client-side deadline of the call that times out.
const DEADLINE: u64 = 1_000 * MS;

/// Largest trace a [`Shape`] may describe.
pub const MAX_SPANS_PER_TRACE: usize = 10_000;

/// Most replicas a service of a [`Shape`] may run.
pub const MAX_INSTANCES: usize = 64;

/// Digits of every literal number in a generated statement (`WHERE id = 123456`):
/// a fixed width, so that a template can renew them in place. No other run of
/// this many digits occurs in a statement.
pub const LITERAL_DIGITS: usize = 6;

/// What the generated traces look like.
#[derive(Debug, Clone, PartialEq)]
pub struct Shape {
    /// Services the traces visit; the first is the entry point (at least 2).
    pub services: usize,
    /// Levels of service calls below the entry span (1 to 8).
    pub depth: usize,
    /// Downstream calls each server span above the last level makes (1 to 16).
    pub fan_out: usize,
    /// Fraction of traces (0 to 1) whose deepest call times out and fails its callers.
    pub error_fraction: f64,
    /// Fraction of traces (0 to 1) with one slow database call (500 ms to 2 s).
    pub slow_db_fraction: f64,
    /// Replicas of each service (1 to [`MAX_INSTANCES`]), each its own
    /// `service.instance.id`; a request carries one replica per service.
    pub instances: usize,
    /// The entry span makes a database query of its own (a session lookup)
    /// before its calls: one span more per trace.
    pub entry_query: bool,
}

impl Default for Shape {
    /// 8 services of 3 replicas, 2 levels of 3 calls: 37 spans per trace; 1 %
    /// of traces time out and 2 % have a slow query.
    fn default() -> Self {
        Shape {
            services: 8,
            depth: 2,
            fan_out: 3,
            error_fraction: 0.01,
            slow_db_fraction: 0.02,
            instances: 3,
            entry_query: false,
        }
    }
}

/// Why a [`Shape`] cannot be generated.
#[derive(Debug, Clone, PartialEq, thiserror::Error)]
#[error("invalid trace shape: {0}")]
pub struct ShapeError(String);

impl Shape {
    /// Calls (CLIENT + SERVER + DB span each) below the entry span.
    fn calls(&self) -> usize {
        (1..=self.depth as u32)
            .map(|level| self.fan_out.saturating_pow(level))
            .fold(0, usize::saturating_add)
    }

    /// Spans in every generated trace.
    pub fn spans_per_trace(&self) -> usize {
        self.calls()
            .saturating_mul(3)
            .saturating_add(1 + usize::from(self.entry_query))
    }

    /// Checks every field's range.
    pub fn validate(&self) -> Result<(), ShapeError> {
        let fraction = |name: &str, f: f64| {
            if (0.0..=1.0).contains(&f) {
                Ok(())
            } else {
                Err(ShapeError(format!(
                    "{name} must be within 0 and 1, not {f}"
                )))
            }
        };
        if self.services < 2 {
            return Err(ShapeError(format!(
                "services must be at least 2 (an entry and a backend), not {}",
                self.services
            )));
        }
        if !(1..=8).contains(&self.depth) {
            return Err(ShapeError(format!(
                "depth must be within 1 and 8, not {}",
                self.depth
            )));
        }
        if !(1..=16).contains(&self.fan_out) {
            return Err(ShapeError(format!(
                "fan-out must be within 1 and 16, not {}",
                self.fan_out
            )));
        }
        if self.spans_per_trace() > MAX_SPANS_PER_TRACE {
            return Err(ShapeError(format!(
                "depth {} with fan-out {} makes {} spans per trace; at most {MAX_SPANS_PER_TRACE}",
                self.depth,
                self.fan_out,
                self.spans_per_trace()
            )));
        }
        if !(1..=MAX_INSTANCES).contains(&self.instances) {
            return Err(ShapeError(format!(
                "instances must be within 1 and {MAX_INSTANCES}, not {}",
                self.instances
            )));
        }
        fraction("error fraction", self.error_fraction)?;
        fraction("slow DB fraction", self.slow_db_fraction)
    }
}

/// xorshift64*: fast, deterministic, good enough for ids and jitter.
#[derive(Debug, Clone)]
pub(super) struct Rng(u64);

impl Rng {
    pub(super) fn new(seed: u64) -> Self {
        // splitmix64 of the seed, so nearby seeds give unrelated streams.
        let mut z = seed.wrapping_add(0x9e37_79b9_7f4a_7c15);
        z = (z ^ (z >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
        Rng((z ^ (z >> 31)) | 1)
    }

    pub(super) fn next(&mut self) -> u64 {
        self.0 ^= self.0 >> 12;
        self.0 ^= self.0 << 25;
        self.0 ^= self.0 >> 27;
        self.0.wrapping_mul(0x2545_f491_4f6c_dd1d)
    }

    pub(super) fn below(&mut self, n: u64) -> u64 {
        self.next() % n.max(1)
    }

    fn unit(&mut self) -> f64 {
        (self.next() >> 11) as f64 / (1u64 << 53) as f64
    }

    fn chance(&mut self, p: f64) -> bool {
        self.unit() < p
    }

    /// A duration in `lo..hi` nanoseconds, skewed towards `lo` like real latencies.
    fn latency(&mut self, lo: u64, hi: u64) -> u64 {
        let u = self.unit();
        lo + ((hi - lo) as f64 * u * u * u) as u64
    }

    fn pick<'a, T>(&mut self, items: &'a [T]) -> &'a T {
        &items[self.below(items.len() as u64) as usize]
    }

    /// An 8-byte id whose last byte is odd, so it is never all zero.
    fn id8(&mut self) -> [u8; 8] {
        (self.next() | 1).to_be_bytes()
    }

    fn uuid(&mut self) -> String {
        let (a, b) = (self.next(), self.next());
        format!(
            "{:08x}-{:04x}-4{:03x}-{:04x}-{:012x}",
            a >> 32,
            (a >> 16) & 0xffff,
            a & 0xfff,
            0x8000 | (b >> 48) & 0x3fff,
            b & 0xffff_ffff_ffff
        )
    }

    fn pod_ip(&mut self) -> String {
        let n = self.next();
        format!(
            "10.{}.{}.{}",
            40 + n % 8,
            (n >> 8) % 256,
            2 + (n >> 16) % 250
        )
    }
}

/// How a service is called.
#[derive(Clone, Copy)]
enum Api {
    Http {
        method: &'static str,
        route: &'static str,
    },
    Grpc {
        service: &'static str,
        method: &'static str,
    },
}

/// One statement a service sends its database; `{n}` is replaced by a literal.
struct Query {
    operation: &'static str,
    collection: &'static str,
    text: &'static str,
}

#[derive(Clone, Copy)]
enum DbSystem {
    Postgresql,
    Mysql,
    Redis,
}

impl DbSystem {
    fn name(self) -> &'static str {
        match self {
            DbSystem::Postgresql => "postgresql",
            DbSystem::Mysql => "mysql",
            DbSystem::Redis => "redis",
        }
    }

    fn port(self) -> i64 {
        match self {
            DbSystem::Postgresql => 5432,
            DbSystem::Mysql => 3306,
            DbSystem::Redis => 6379,
        }
    }

    /// The error a cancelled query reports (and its `db.response.status_code`).
    fn cancelled(self) -> (&'static str, &'static str) {
        match self {
            DbSystem::Postgresql => ("canceling statement due to user request", "57014"),
            DbSystem::Mysql => ("Query execution was interrupted", "1317"),
            DbSystem::Redis => ("context canceled", "ERR"),
        }
    }
}

struct ServiceSpec {
    name: &'static str,
    language: &'static str,
    api: Api,
    db: DbSystem,
    namespace: &'static str,
    queries: &'static [Query],
}

macro_rules! q {
    ($op:literal, $coll:literal, $text:literal) => {
        Query {
            operation: $op,
            collection: $coll,
            text: $text,
        }
    };
}

/// The entry service's routes (one is picked per trace).
const ENTRY_ROUTES: [(&str, &str); 3] = [
    ("POST", "/api/checkout"),
    ("GET", "/api/cart"),
    ("GET", "/api/products/{product_id}"),
];

const CATALOG: &[ServiceSpec] = &[
    ServiceSpec {
        name: "frontend",
        language: "nodejs",
        api: Api::Http { method: "GET", route: "/" },
        db: DbSystem::Redis,
        namespace: "0",
        queries: &[q!("GET", "session", "GET session:{n}")],
    },
    ServiceSpec {
        name: "checkout",
        language: "go",
        api: Api::Grpc { service: "oteldemo.CheckoutService", method: "PlaceOrder" },
        db: DbSystem::Postgresql,
        namespace: "orders",
        queries: &[
            q!("INSERT", "orders", "INSERT INTO orders (id, customer_id, status, total_cents, currency, shipping_address_id, created_at) VALUES ($1, $2, $3, $4, $5, $6, now()) RETURNING id, created_at"),
            q!("SELECT", "orders", "SELECT id, status, total_cents, currency, updated_at FROM orders WHERE customer_id = $1 AND status = ANY($2) ORDER BY updated_at DESC LIMIT $3"),
            q!("SELECT", "orders", "SELECT id, status, total_cents FROM orders WHERE customer_id = {n} AND status = 'pending' ORDER BY created_at DESC LIMIT 20"),
        ],
    },
    ServiceSpec {
        name: "cart",
        language: "dotnet",
        api: Api::Grpc { service: "oteldemo.CartService", method: "GetCart" },
        db: DbSystem::Redis,
        namespace: "0",
        queries: &[
            q!("HGETALL", "cart", "HGETALL cart:{n}"),
            q!("EXPIRE", "cart", "EXPIRE cart:{n} 3600"),
        ],
    },
    ServiceSpec {
        name: "payments",
        language: "java",
        api: Api::Grpc { service: "oteldemo.PaymentService", method: "Charge" },
        db: DbSystem::Postgresql,
        namespace: "payments",
        queries: &[
            q!("SELECT", "payments", "SELECT p.id, p.status, p.amount_cents, p.currency, p.card_last4, p.created_at FROM payments p WHERE p.order_id = $1 AND p.status IN ($2, $3)"),
            q!("UPDATE", "payments", "UPDATE payments SET status = $1, authorized_at = $2, processor_reference = $3 WHERE id = $4 AND status = $5"),
            q!("SELECT", "payments", "SELECT count(*) FROM payments WHERE customer_id = {n} AND created_at > now() - interval '1 day'"),
        ],
    },
    ServiceSpec {
        name: "inventory",
        language: "java",
        api: Api::Http { method: "GET", route: "/v1/inventory/{sku}" },
        db: DbSystem::Mysql,
        namespace: "inventory",
        queries: &[
            q!("SELECT", "stock", "SELECT sku, warehouse_id, quantity, reserved FROM stock WHERE sku = ? AND warehouse_id IN (?, ?, ?)"),
            q!("UPDATE", "stock", "UPDATE stock SET reserved = reserved + ? WHERE sku = ? AND warehouse_id = ? AND quantity - reserved >= ?"),
            q!("SELECT", "stock", "SELECT sku, quantity, reserved FROM stock WHERE sku = 'SKU-{n}' FOR UPDATE"),
        ],
    },
    ServiceSpec {
        name: "pricing",
        language: "python",
        api: Api::Http { method: "POST", route: "/v1/quotes" },
        db: DbSystem::Postgresql,
        namespace: "pricing",
        queries: &[
            q!("SELECT", "prices", "SELECT p.sku, p.list_price_cents, d.percent_off FROM prices p LEFT OUTER JOIN discounts d ON d.sku = p.sku AND d.valid_until > $1 WHERE p.sku = ANY($2) AND p.region = $3"),
            q!("SELECT", "prices", "SELECT sku, list_price_cents FROM prices WHERE sku = 'SKU-{n}' AND region = 'eu-west'"),
        ],
    },
    ServiceSpec {
        name: "shipping",
        language: "rust",
        api: Api::Grpc { service: "oteldemo.ShippingService", method: "GetQuote" },
        db: DbSystem::Postgresql,
        namespace: "shipping",
        queries: &[
            q!("SELECT", "shipping_rates", "SELECT zone, carrier, base_cents, per_kg_cents, eta_days FROM shipping_rates WHERE country = $1 AND postal_prefix = $2 ORDER BY base_cents LIMIT $3"),
            q!("SELECT", "shipping_rates", "SELECT zone, carrier, base_cents FROM shipping_rates WHERE country = 'DE' AND postal_prefix = '{n}'"),
        ],
    },
    ServiceSpec {
        name: "recommendations",
        language: "python",
        api: Api::Http { method: "GET", route: "/v1/recommendations" },
        db: DbSystem::Postgresql,
        namespace: "recommendations",
        queries: &[
            q!("SELECT", "recommendations", "SELECT product_id, score FROM recommendations WHERE customer_id = $1 AND product_id <> ALL($2) ORDER BY score DESC LIMIT $3"),
        ],
    },
    ServiceSpec {
        name: "currency",
        language: "cpp",
        api: Api::Grpc { service: "oteldemo.CurrencyService", method: "Convert" },
        db: DbSystem::Redis,
        namespace: "1",
        queries: &[q!("MGET", "fx", "MGET fx:EUR:USD fx:EUR:GBP fx:EUR:JPY fx:EUR:CHF")],
    },
    ServiceSpec {
        name: "accounts",
        language: "go",
        api: Api::Http { method: "GET", route: "/v1/accounts/{account_id}" },
        db: DbSystem::Postgresql,
        namespace: "accounts",
        queries: &[
            q!("SELECT", "accounts", "SELECT id, email, tier, default_address_id, created_at FROM accounts WHERE id = $1 AND deleted_at IS NULL"),
            q!("SELECT", "accounts", "SELECT id, email, tier FROM accounts WHERE id = {n}"),
        ],
    },
    ServiceSpec {
        name: "catalog",
        language: "go",
        api: Api::Grpc { service: "oteldemo.ProductCatalogService", method: "GetProduct" },
        db: DbSystem::Postgresql,
        namespace: "catalog",
        queries: &[
            q!("SELECT", "products", "SELECT id, name, description, picture_url, price_cents, categories FROM products WHERE id = $1"),
        ],
    },
    ServiceSpec {
        name: "fraud-detection",
        language: "java",
        api: Api::Grpc { service: "oteldemo.FraudDetectionService", method: "Score" },
        db: DbSystem::Mysql,
        namespace: "fraud",
        queries: &[
            q!("SELECT", "card_events", "SELECT count(*), max(amount_cents) FROM card_events WHERE card_fingerprint = ? AND created_at > ?"),
            q!("INSERT", "card_events", "INSERT INTO card_events (card_fingerprint, customer_id, amount_cents, created_at) VALUES (?, ?, ?, ?)"),
        ],
    },
    ServiceSpec {
        name: "ads",
        language: "java",
        api: Api::Http { method: "GET", route: "/v1/ads" },
        db: DbSystem::Redis,
        namespace: "2",
        queries: &[q!("ZREVRANGE", "ads", "ZREVRANGE ads:category:{n} 0 4 WITHSCORES")],
    },
    ServiceSpec {
        name: "email",
        language: "ruby",
        api: Api::Http { method: "POST", route: "/v1/send_order_confirmation" },
        db: DbSystem::Postgresql,
        namespace: "notifications",
        queries: &[
            q!("INSERT", "outbox", "INSERT INTO outbox (id, recipient, template, payload, created_at) VALUES ($1, $2, $3, $4, $5)"),
        ],
    },
    ServiceSpec {
        name: "reviews",
        language: "python",
        api: Api::Http { method: "GET", route: "/v1/products/{product_id}/reviews" },
        db: DbSystem::Postgresql,
        namespace: "reviews",
        queries: &[
            q!("SELECT", "reviews", "SELECT r.id, r.rating, r.title, r.body, a.display_name FROM reviews r JOIN authors a ON a.id = r.author_id WHERE r.product_id = $1 ORDER BY r.created_at DESC LIMIT $2 OFFSET $3"),
        ],
    },
    ServiceSpec {
        name: "search",
        language: "go",
        api: Api::Http { method: "GET", route: "/v1/search" },
        db: DbSystem::Postgresql,
        namespace: "catalog",
        queries: &[
            q!("SELECT", "products", "SELECT id, name, ts_rank(search_vector, query) AS rank FROM products, plainto_tsquery($1) query WHERE search_vector @@ query ORDER BY rank DESC LIMIT 20"),
        ],
    },
];

/// Services past the catalog.
const GENERIC: ServiceSpec = ServiceSpec {
    name: "service",
    language: "go",
    api: Api::Http {
        method: "GET",
        route: "/v1/items/{item_id}",
    },
    db: DbSystem::Postgresql,
    namespace: "items",
    queries: &[
        q!(
            "SELECT",
            "items",
            "SELECT id, name, attributes, updated_at FROM items WHERE id = $1 AND tenant_id = $2"
        ),
        q!(
            "SELECT",
            "items",
            "SELECT id, name FROM items WHERE tenant_id = {n} ORDER BY updated_at DESC LIMIT 50"
        ),
    ],
};

/// A service of the shape, with the strings its spans repeat.
struct Service {
    spec: &'static ServiceSpec,
    host: String,
    /// One per replica.
    resources: Vec<Resource>,
    scope: InstrumentationScope,
}

impl Service {
    fn new(index: usize, instances: usize) -> Self {
        let (spec, name) = match CATALOG.get(index) {
            Some(spec) => (spec, spec.name.to_owned()),
            None => (&GENERIC, format!("service-{index}")),
        };
        let host = format!("{name}.shop.svc.cluster.local");
        let resource = |replica: usize| {
            let pod = format!(
                "{name}-7d9f8c6b5-{:05x}",
                (index * 7919 + replica * 104_729) % 0xfffff
            );
            Resource {
                attributes: vec![
                    kv("service.name", text(&name)),
                    kv("service.namespace", text("shop")),
                    kv(
                        "service.version",
                        text(format!("1.{}.{}", 4 + index % 9, index % 5)),
                    ),
                    kv("service.instance.id", text(&pod)),
                    kv("deployment.environment.name", text("production")),
                    kv("telemetry.sdk.name", text("opentelemetry")),
                    kv("telemetry.sdk.language", text(spec.language)),
                    kv("telemetry.sdk.version", text("1.38.0")),
                    kv("k8s.pod.name", text(&pod)),
                    kv("k8s.namespace.name", text("shop")),
                    kv(
                        "host.name",
                        text(format!(
                            "ip-10-40-{}-{}.eu-west-1.compute.internal",
                            (index + replica) % 8,
                            10 + index
                        )),
                    ),
                ],
                ..Default::default()
            }
        };
        let scope = InstrumentationScope {
            name: format!("opentelemetry-instrumentation-{}", spec.language),
            version: "0.52.0".into(),
            ..Default::default()
        };
        Service {
            spec,
            host,
            resources: (0..instances).map(resource).collect(),
            scope,
        }
    }

    fn port(&self) -> i64 {
        match self.spec.api {
            Api::Http { .. } => 8080,
            Api::Grpc { .. } => 50051,
        }
    }
}

fn kv(key: &str, value: any_value::Value) -> KeyValue {
    KeyValue {
        key: key.to_owned(),
        value: Some(AnyValue { value: Some(value) }),
        ..Default::default()
    }
}

fn text(s: impl Into<String>) -> any_value::Value {
    any_value::Value::StringValue(s.into())
}

fn int(i: i64) -> any_value::Value {
    any_value::Value::IntValue(i)
}

/// How a span of a failing path failed.
#[derive(Clone, Copy, PartialEq)]
enum Outcome {
    Ok,
    /// The call that hit its deadline (CLIENT side) or was cancelled (SERVER, DB).
    TimedOut,
    /// A caller above the timeout, failing in turn.
    Upstream,
}

/// Per-trace state while its tree is laid out.
struct TraceBuild {
    trace_id: Bytes,
    /// Spans per service index.
    spans: Vec<Vec<Span>>,
    /// Calls laid out so far (numbers the database spans).
    calls: usize,
    /// Which call's query is slow, if any.
    slow_call: Option<usize>,
    /// Where the call that times out gives up.
    deadline_end: u64,
    /// Rotates through the backends to pick each callee.
    next_service: usize,
    /// The entry route (index into `ENTRY_ROUTES`).
    route: usize,
}

/// Generates traces of a [`Shape`]; see the module documentation.
pub struct Generator {
    rng: Rng,
    /// Picks each request's replicas (apart, so the traces do not depend on
    /// the number of replicas).
    replicas: Rng,
    shape: Shape,
    services: Vec<Service>,
}

impl Generator {
    /// A generator for `shape`, deterministic for `seed`.
    pub fn new(seed: u64, shape: Shape) -> Result<Self, ShapeError> {
        shape.validate()?;
        Ok(Generator {
            rng: Rng::new(seed),
            replicas: Rng::new(!seed),
            services: (0..shape.services)
                .map(|i| Service::new(i, shape.instances))
                .collect(),
            shape,
        })
    }

    /// The shape generated.
    pub fn shape(&self) -> &Shape {
        &self.shape
    }

    /// Spans per trace (every trace has the same tree).
    pub fn spans_per_trace(&self) -> usize {
        self.shape.spans_per_trace()
    }

    /// One export request with whole traces, `spans` rounded up to a whole trace,
    /// one `ResourceSpans` per service (one of its replicas) as an SDK or a
    /// collector batches them. The
    /// first trace starts at `start_ns`, the others within the next few
    /// milliseconds; spans come children first, in the order they end.
    pub fn request(&mut self, spans: usize, start_ns: u64) -> ExportTraceServiceRequest {
        let traces = spans.div_ceil(self.spans_per_trace()).max(1);
        let mut by_service: Vec<Vec<Span>> = (0..self.services.len()).map(|_| Vec::new()).collect();
        let mut start = start_ns;
        for _ in 0..traces {
            self.trace(start, &mut by_service);
            start += self.rng.latency(10 * US, 2 * MS);
        }
        ExportTraceServiceRequest {
            resource_spans: by_service
                .into_iter()
                .zip(&self.services)
                .filter(|(spans, _)| !spans.is_empty())
                .map(|(spans, service)| ResourceSpans {
                    resource: Some(
                        service.resources
                            [self.replicas.below(service.resources.len() as u64) as usize]
                            .clone(),
                    ),
                    scope_spans: vec![ScopeSpans {
                        scope: Some(service.scope.clone()),
                        spans,
                        ..Default::default()
                    }],
                    ..Default::default()
                })
                .collect(),
        }
    }

    /// Lays out one trace starting at `start`, appending its spans per service.
    fn trace(&mut self, start: u64, out: &mut Vec<Vec<Span>>) {
        let mut trace_id = [0; 16];
        trace_id[..8].copy_from_slice(&self.rng.id8());
        trace_id[8..].copy_from_slice(&self.rng.id8());
        let calls = self.shape.calls();
        let error = self.rng.chance(self.shape.error_fraction);
        let slow = self.rng.chance(self.shape.slow_db_fraction);
        let slow_call = slow.then(|| self.rng.below(calls as u64) as usize);
        let route = self.rng.below(ENTRY_ROUTES.len() as u64) as usize;
        let mut t = TraceBuild {
            trace_id: Bytes::copy_from_slice(&trace_id),
            spans: std::mem::take(out),
            calls: 0,
            slow_call,
            deadline_end: 0,
            next_service: route * 3,
            route,
        };
        self.serve(&mut t, 0, 0, None, start, error);
        *out = t.spans;
    }

    /// The service the next call goes to: round robin over the services after
    /// the caller (calls flow down a layered architecture), or over every other
    /// backend from the last one.
    fn callee(&self, t: &mut TraceBuild, caller: usize) -> usize {
        let n = self.services.len();
        let k = t.next_service;
        t.next_service += 1;
        if caller + 1 < n {
            caller + 1 + k % (n - caller - 1)
        } else if n > 2 {
            // 1..n without the caller (the last service).
            1 + k % (n - 2)
        } else {
            1
        }
    }

    /// The SERVER span of `svc` at `level` (0: the entry) starting at `start`,
    /// with its query and its downstream calls; returns its end. `failing`: this
    /// server is on the path to the call that times out.
    fn serve(
        &mut self,
        t: &mut TraceBuild,
        svc: usize,
        level: usize,
        parent: Option<Bytes>,
        start: u64,
        failing: bool,
    ) -> u64 {
        let id = Bytes::copy_from_slice(&self.rng.id8());
        let leaf = level == self.shape.depth;
        let mut cursor = start + self.rng.latency(40 * US, 400 * US);
        let outcome = match (failing, leaf) {
            (false, _) => Outcome::Ok,
            (true, true) => Outcome::TimedOut,
            (true, false) => Outcome::Upstream,
        };
        if level > 0 {
            let call = t.calls;
            t.calls += 1;
            let (end, db_outcome) = if outcome == Outcome::TimedOut {
                // Stuck until the caller gives up and the cancel arrives.
                let end = t.deadline_end - self.rng.latency(150 * US, 600 * US);
                (end.max(cursor + 1), Outcome::TimedOut)
            } else if t.slow_call == Some(call) {
                (cursor + 500 * MS + self.rng.below(1_500 * MS), Outcome::Ok)
            } else {
                (cursor + self.rng.latency(250 * US, 8 * MS), Outcome::Ok)
            };
            self.db_span(t, svc, &id, cursor, end, db_outcome);
            cursor = end + self.rng.latency(20 * US, 300 * US);
        } else if self.shape.entry_query {
            let end = cursor + self.rng.latency(250 * US, 8 * MS);
            self.db_span(t, svc, &id, cursor, end, Outcome::Ok);
            cursor = end + self.rng.latency(20 * US, 300 * US);
        }
        if !leaf {
            let parallel = level % 2 == 1;
            let fan_out = self.shape.fan_out;
            // Sequential callers stop at the first failure, so it is the last call.
            let failing_child = failing.then(|| {
                if parallel {
                    self.rng.below(fan_out as u64) as usize
                } else {
                    fan_out - 1
                }
            });
            let group_start = cursor;
            let mut group_end = cursor;
            for j in 0..fan_out {
                let callee = self.callee(t, svc);
                let call_start = if parallel {
                    group_start + j as u64 * self.rng.latency(20 * US, 150 * US)
                } else {
                    group_end + self.rng.latency(10 * US, 200 * US)
                };
                let child_failing = failing_child == Some(j);
                let deepest = child_failing && level + 1 == self.shape.depth;
                if deepest {
                    t.deadline_end = call_start + DEADLINE;
                }
                let client_id = Bytes::copy_from_slice(&self.rng.id8());
                let wire_out = self.rng.latency(150 * US, 1_500 * US);
                let served_end = self.serve(
                    t,
                    callee,
                    level + 1,
                    Some(client_id.clone()),
                    call_start + wire_out,
                    child_failing,
                );
                let (call_end, call_outcome) = match (child_failing, deepest) {
                    (false, _) => (
                        served_end + self.rng.latency(100 * US, 1_200 * US),
                        Outcome::Ok,
                    ),
                    (true, true) => (t.deadline_end, Outcome::TimedOut),
                    (true, false) => (
                        served_end + self.rng.latency(100 * US, 1_200 * US),
                        Outcome::Upstream,
                    ),
                };
                self.client_span(
                    t,
                    svc,
                    callee,
                    &id,
                    client_id,
                    call_start,
                    call_end,
                    call_outcome,
                );
                group_end = group_end.max(call_end);
            }
            cursor = group_end;
        }
        let end = cursor + self.rng.latency(30 * US, 500 * US);
        self.server_span(t, svc, level, parent, id, start, end, outcome);
        end
    }

    #[allow(clippy::too_many_arguments)]
    fn push(
        &mut self,
        t: &mut TraceBuild,
        svc: usize,
        span_id: Bytes,
        parent: Option<&Bytes>,
        name: String,
        kind: span::SpanKind,
        (start, end): (u64, u64),
        attributes: Vec<KeyValue>,
        error: Option<&str>,
    ) {
        let status = match error {
            Some(message) => Status {
                message: message.to_owned(),
                code: status::StatusCode::Error as i32,
            },
            None => Status::default(),
        };
        t.spans[svc].push(Span {
            trace_id: t.trace_id.clone(),
            span_id,
            parent_span_id: parent.cloned().unwrap_or_default(),
            name,
            start_time_unix_nano: start,
            end_time_unix_nano: end,
            attributes,
            status: Some(status),
            kind: kind as i32,
            // Sampled; whether the parent is remote is known (and true for servers).
            flags: if kind == span::SpanKind::Server && parent.is_some() {
                0x301
            } else {
                0x101
            },
            ..Default::default()
        });
    }

    #[allow(clippy::too_many_arguments)]
    fn server_span(
        &mut self,
        t: &mut TraceBuild,
        svc: usize,
        level: usize,
        parent: Option<Bytes>,
        id: Bytes,
        start: u64,
        end: u64,
        outcome: Outcome,
    ) {
        let rng = &mut self.rng;
        let service = &self.services[svc];
        let (name, attrs, error) = match service.spec.api {
            Api::Http { method, route } => {
                let (method, route) = if level == 0 {
                    ENTRY_ROUTES[t.route]
                } else {
                    (method, route)
                };
                let path = fill_route(rng, route);
                let (status, error) = match outcome {
                    Outcome::Ok => (if method == "POST" { 201 } else { 200 }, None),
                    Outcome::TimedOut => (503, Some("context canceled")),
                    Outcome::Upstream => (504, Some("504 Gateway Timeout")),
                };
                let (address, port, agent, client) = if level == 0 {
                    let n = rng.next();
                    (
                        "shop.example.com".to_owned(),
                        443,
                        *rng.pick(BROWSERS),
                        format!(
                            "{}.{}.{}.{}",
                            80 + n % 120,
                            (n >> 8) % 256,
                            (n >> 16) % 256,
                            1 + (n >> 24) % 254
                        ),
                    )
                } else {
                    (
                        service.host.clone(),
                        service.port(),
                        *rng.pick(HTTP_CLIENTS),
                        rng.pod_ip(),
                    )
                };
                let mut attrs = vec![
                    kv("http.request.method", text(method)),
                    kv("http.route", text(route)),
                    kv("url.path", text(path)),
                    kv(
                        "url.scheme",
                        text(if level == 0 { "https" } else { "http" }),
                    ),
                    kv("http.response.status_code", int(status)),
                    kv("server.address", text(address)),
                    kv("server.port", int(port)),
                    kv(
                        "network.protocol.version",
                        text(if level == 0 { "2" } else { "1.1" }),
                    ),
                    kv("user_agent.original", text(agent)),
                    kv("client.address", text(client)),
                ];
                if outcome != Outcome::Ok {
                    attrs.push(kv("error.type", text(status.to_string())));
                }
                (format!("{method} {route}"), attrs, error)
            }
            Api::Grpc {
                service: rpc,
                method,
            } => {
                let (code, error) = grpc_outcome(outcome);
                let mut attrs = vec![
                    kv("rpc.system", text("grpc")),
                    kv("rpc.service", text(rpc)),
                    kv("rpc.method", text(method)),
                    kv("rpc.grpc.status_code", int(code)),
                    kv("server.address", text(&service.host)),
                    kv("server.port", int(service.port())),
                    kv("client.address", text(rng.pod_ip())),
                    kv("client.port", int(32_768 + rng.below(28_000) as i64)),
                    kv("network.transport", text("tcp")),
                    kv("rpc.grpc.request.metadata.x-request-id", text(rng.uuid())),
                ];
                if outcome != Outcome::Ok {
                    attrs.push(kv("error.type", text("DEADLINE_EXCEEDED")));
                }
                (format!("{rpc}/{method}"), attrs, error)
            }
        };
        self.push(
            t,
            svc,
            id,
            parent.as_ref(),
            name,
            span::SpanKind::Server,
            (start, end),
            attrs,
            error,
        );
    }

    #[allow(clippy::too_many_arguments)]
    fn client_span(
        &mut self,
        t: &mut TraceBuild,
        caller: usize,
        callee: usize,
        parent: &Bytes,
        id: Bytes,
        start: u64,
        end: u64,
        outcome: Outcome,
    ) {
        let rng = &mut self.rng;
        let service = &self.services[callee];
        let peer = rng.pod_ip();
        let (name, attrs, error) = match service.spec.api {
            Api::Http { method, route } => {
                let path = fill_route(rng, route);
                let query = format!("?request_id={}&locale=en-US", rng.uuid());
                let mut attrs = vec![
                    kv("http.request.method", text(method)),
                    kv(
                        "url.full",
                        text(format!(
                            "http://{}:{}{path}{query}",
                            service.host,
                            service.port()
                        )),
                    ),
                    kv("url.template", text(route)),
                    kv("server.address", text(&service.host)),
                    kv("server.port", int(service.port())),
                    kv("network.protocol.version", text("1.1")),
                    kv("network.peer.address", text(peer)),
                    kv("network.peer.port", int(service.port())),
                ];
                let error = match outcome {
                    Outcome::Ok => {
                        attrs.push(kv(
                            "http.response.status_code",
                            int(if method == "POST" { 201 } else { 200 }),
                        ));
                        attrs.push(kv(
                            "http.response.body.size",
                            int(200 + rng.below(24_000) as i64),
                        ));
                        None
                    }
                    // No response: the client gave up.
                    Outcome::TimedOut => {
                        attrs.push(kv("error.type", text("timeout")));
                        Some("context deadline exceeded")
                    }
                    Outcome::Upstream => {
                        attrs.push(kv("http.response.status_code", int(504)));
                        attrs.push(kv("error.type", text("504")));
                        Some("504 Gateway Timeout")
                    }
                };
                (format!("{method} {route}"), attrs, error)
            }
            Api::Grpc {
                service: rpc,
                method,
            } => {
                let (code, error) = grpc_outcome(outcome);
                let mut attrs = vec![
                    kv("rpc.system", text("grpc")),
                    kv("rpc.service", text(rpc)),
                    kv("rpc.method", text(method)),
                    kv("rpc.grpc.status_code", int(code)),
                    kv("server.address", text(&service.host)),
                    kv("server.port", int(service.port())),
                    kv("network.peer.address", text(peer)),
                    kv("network.peer.port", int(service.port())),
                    kv("network.transport", text("tcp")),
                    kv("rpc.grpc.request.metadata.x-request-id", text(rng.uuid())),
                ];
                if outcome != Outcome::Ok {
                    attrs.push(kv("error.type", text("DEADLINE_EXCEEDED")));
                }
                (format!("{rpc}/{method}"), attrs, error)
            }
        };
        self.push(
            t,
            caller,
            id,
            Some(parent),
            name,
            span::SpanKind::Client,
            (start, end),
            attrs,
            error,
        );
    }

    fn db_span(
        &mut self,
        t: &mut TraceBuild,
        svc: usize,
        parent: &Bytes,
        start: u64,
        end: u64,
        outcome: Outcome,
    ) {
        let rng = &mut self.rng;
        let spec = self.services[svc].spec;
        let query = rng.pick(spec.queries);
        let statement = if query.text.contains("{n}") {
            query.text.replace("{n}", &literal(rng).to_string())
        } else {
            query.text.to_owned()
        };
        let summary = match spec.db {
            DbSystem::Redis => query.operation.to_owned(),
            _ => format!("{} {}", query.operation, query.collection),
        };
        let host = match spec.db {
            DbSystem::Postgresql => "postgres-primary.shop.svc.cluster.local",
            DbSystem::Mysql => "mysql-0.mysql.shop.svc.cluster.local",
            DbSystem::Redis => "redis-master.shop.svc.cluster.local",
        };
        let mut attrs = vec![
            kv("db.system.name", text(spec.db.name())),
            kv("db.namespace", text(spec.namespace)),
            kv("db.operation.name", text(query.operation)),
            kv("db.collection.name", text(query.collection)),
            kv("db.query.text", text(statement)),
            kv("db.query.summary", text(&summary)),
            kv("server.address", text(host)),
            kv("server.port", int(spec.db.port())),
            kv("network.peer.address", text(rng.pod_ip())),
        ];
        let error = if outcome == Outcome::Ok {
            attrs.push(kv("db.response.returned_rows", int(rng.below(50) as i64)));
            None
        } else {
            let (message, code) = spec.db.cancelled();
            attrs.push(kv("db.response.status_code", text(code)));
            attrs.push(kv("error.type", text(code)));
            Some(message)
        };
        let id = Bytes::copy_from_slice(&self.rng.id8());
        self.push(
            t,
            svc,
            id,
            Some(parent),
            summary,
            span::SpanKind::Client,
            (start, end),
            attrs,
            error,
        );
    }
}

/// A literal number of [`LITERAL_DIGITS`] digits for a statement.
pub(super) fn literal(rng: &mut Rng) -> u64 {
    const LOW: u64 = 10u64.pow(LITERAL_DIGITS as u32 - 1);
    LOW + rng.below(9 * LOW)
}

/// A gRPC span's status code and error message.
fn grpc_outcome(outcome: Outcome) -> (i64, Option<&'static str>) {
    match outcome {
        Outcome::Ok => (0, None),
        Outcome::TimedOut | Outcome::Upstream => (4, Some("context deadline exceeded")),
    }
}

/// A concrete path for a route template: `{...}` segments become ids.
fn fill_route(rng: &mut Rng, route: &str) -> String {
    let mut out = String::with_capacity(route.len() + 24);
    for (i, segment) in route.split('/').enumerate() {
        if i > 0 {
            out.push('/');
        }
        if segment.starts_with('{') {
            out.push_str(&rng.uuid());
        } else {
            out.push_str(segment);
        }
    }
    out
}

const BROWSERS: &[&str] = &[
    "Mozilla/5.0 (Windows NT 10.0; Win64; x64) AppleWebKit/537.36 (KHTML, like Gecko) Chrome/131.0.0.0 Safari/537.36",
    "Mozilla/5.0 (Macintosh; Intel Mac OS X 10_15_7) AppleWebKit/605.1.15 (KHTML, like Gecko) Version/18.1 Safari/605.1.15",
    "Mozilla/5.0 (iPhone; CPU iPhone OS 18_1 like Mac OS X) AppleWebKit/605.1.15 (KHTML, like Gecko) Version/18.1 Mobile/15E148 Safari/604.1",
    "Mozilla/5.0 (X11; Linux x86_64; rv:133.0) Gecko/20100101 Firefox/133.0",
];

const HTTP_CLIENTS: &[&str] = &[
    "Go-http-client/1.1",
    "python-requests/2.32.3",
    "okhttp/4.12.0",
    "axios/1.7.7",
];

#[cfg(test)]
mod tests {
    use super::*;

    fn spans(req: &ExportTraceServiceRequest) -> Vec<&Span> {
        req.resource_spans
            .iter()
            .flat_map(|rs| &rs.scope_spans)
            .flat_map(|ss| &ss.spans)
            .collect()
    }

    #[test]
    fn every_trace_has_the_shape_s_span_count_and_one_root() {
        for shape in [
            Shape::default(),
            Shape {
                depth: 1,
                fan_out: 5,
                ..Shape::default()
            },
            Shape {
                services: 2,
                depth: 4,
                fan_out: 2,
                error_fraction: 1.0,
                ..Shape::default()
            },
            // The peers' comparison load: 8 spans per trace.
            Shape {
                depth: 1,
                fan_out: 2,
                entry_query: true,
                error_fraction: 1.0,
                ..Shape::default()
            },
        ] {
            let mut gen = Generator::new(7, shape.clone()).unwrap();
            let req = gen.request(500, 1_000_000_000);
            let all = spans(&req);
            let mut by_trace = std::collections::HashMap::<&[u8], Vec<&Span>>::new();
            for s in &all {
                by_trace.entry(&s.trace_id[..]).or_default().push(s);
            }
            assert_eq!(by_trace.len(), 500usize.div_ceil(shape.spans_per_trace()));
            for spans in by_trace.values() {
                assert_eq!(spans.len(), shape.spans_per_trace());
                assert_eq!(
                    spans.iter().filter(|s| s.parent_span_id.is_empty()).count(),
                    1
                );
                let ids: std::collections::HashSet<&[u8]> =
                    spans.iter().map(|s| &s.span_id[..]).collect();
                assert!(spans
                    .iter()
                    .all(|s| s.parent_span_id.is_empty() || ids.contains(&s.parent_span_id[..])));
                assert!(spans
                    .iter()
                    .all(|s| s.end_time_unix_nano >= s.start_time_unix_nano));
                assert!(spans.iter().all(|s| (9..=12).contains(&s.attributes.len())));
            }
        }
    }

    #[test]
    fn timeouts_fail_the_path_up_to_the_root_and_slow_queries_are_slow() {
        let shape = Shape {
            error_fraction: 1.0,
            slow_db_fraction: 0.0,
            ..Shape::default()
        };
        let mut gen = Generator::new(3, shape).unwrap();
        let req = gen.request(1, 0);
        let all = spans(&req);
        let errors: Vec<&&Span> = all
            .iter()
            .filter(|s| s.status.as_ref().unwrap().code == status::StatusCode::Error as i32)
            .collect();
        // Entry, then per level CLIENT + SERVER + the stuck query at the bottom.
        assert_eq!(errors.len(), 1 + 2 * 2 + 1);
        let root = all.iter().find(|s| s.parent_span_id.is_empty()).unwrap();
        assert!(errors.iter().any(|s| s.span_id == root.span_id));
        assert!(root.end_time_unix_nano - root.start_time_unix_nano >= DEADLINE);
        assert!(errors
            .iter()
            .any(|s| s.status.as_ref().unwrap().message == "context deadline exceeded"));

        let shape = Shape {
            error_fraction: 0.0,
            slow_db_fraction: 1.0,
            ..Shape::default()
        };
        let mut gen = Generator::new(3, shape).unwrap();
        let req = gen.request(1, 0);
        let slow = spans(&req)
            .into_iter()
            .filter(|s| s.attributes.iter().any(|a| a.key == "db.system.name"))
            .filter(|s| s.end_time_unix_nano - s.start_time_unix_nano >= 500 * MS)
            .count();
        assert_eq!(slow, 1);
    }

    #[test]
    fn requests_rotate_over_the_replicas_and_literals_have_a_fixed_width() {
        let mut gen = Generator::new(11, Shape::default()).unwrap();
        let mut instances = std::collections::HashSet::new();
        let mut statements = 0;
        for _ in 0..20 {
            let req = gen.request(512, 0);
            for rs in &req.resource_spans {
                let attrs = &rs.resource.as_ref().unwrap().attributes;
                let value = |key: &str| {
                    attrs
                        .iter()
                        .find(|kv| kv.key == key)
                        .and_then(|kv| kv.value.clone())
                };
                // The pod is the instance.
                assert_eq!(value("service.instance.id"), value("k8s.pod.name"));
                instances.insert(format!("{:?}", value("service.instance.id")));
            }
            for span in spans(&req) {
                if let Some(text) = span
                    .attributes
                    .iter()
                    .find(|kv| kv.key == "db.query.text")
                    .and_then(|kv| match kv.value.as_ref()?.value.as_ref()? {
                        any_value::Value::StringValue(s) => Some(s.clone()),
                        _ => None,
                    })
                {
                    statements += 1;
                    for run in text.split(|c: char| !c.is_ascii_digit()) {
                        assert!(run.len() < LITERAL_DIGITS || run.len() == LITERAL_DIGITS);
                    }
                }
            }
        }
        // 8 services of 3 replicas each.
        assert_eq!(instances.len(), 24);
        assert!(statements > 1000);
        // Only literals are that long: no statement's constant is.
        for query in CATALOG.iter().chain([&GENERIC]).flat_map(|s| s.queries) {
            assert!(query
                .text
                .split(|c: char| !c.is_ascii_digit())
                .all(|run| run.len() < LITERAL_DIGITS));
        }
        assert!(Shape {
            instances: 0,
            ..Shape::default()
        }
        .validate()
        .is_err());
    }

    #[test]
    fn shapes_out_of_range_are_refused() {
        assert!(Shape {
            services: 1,
            ..Shape::default()
        }
        .validate()
        .is_err());
        assert!(Shape {
            depth: 0,
            ..Shape::default()
        }
        .validate()
        .is_err());
        assert!(Shape {
            fan_out: 16,
            depth: 8,
            ..Shape::default()
        }
        .validate()
        .is_err());
        assert!(Shape {
            error_fraction: 1.5,
            ..Shape::default()
        }
        .validate()
        .is_err());
        assert_eq!(Shape::default().spans_per_trace(), 37);
    }
}
