//! The scenarios: which services run, what each does and what goes wrong.
//! Every scenario's requests enter through the gateway's `GET /checkout`.
//! Durations are given in *units*, seconds of the real-world scenario,
//! multiplied by the demo's time scale; SQL runs at its real speed.
//!
//! The timeout scenarios share one chain (gateway → frontend → orders →
//! inventory) with different timeouts, latencies and failures. The saturation
//! scenarios put real SQLite databases behind connection pools and a service
//! served by one thread behind the gateway and frontend, which only pass
//! requests on.

use std::fmt;
use std::time::Duration;

use super::db::Data;
use super::services::{self, Endpoint};
use super::ENTRY_SERVICE;

/// What goes wrong behind the gateway in a `hopscope-demo` run.
#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub enum Scenario {
    /// Every hop answers fast: 200s.
    Healthy,
    /// inventory takes 40 s; the gateway gives up at 29 s, frontend → orders and
    /// orders → inventory at 30 s each (stacked, not propagated): every caller
    /// times out in turn, and inventory keeps working after its caller left.
    CascadingTimeout,
    /// The same topology, but each hop passes its remaining deadline and the
    /// callee subtracts a margin from it; inventory is slow (15 s) yet within
    /// budget: 200s, and inventory dominates the latency share.
    DeadlinePropagated,
    /// inventory is down: orders' connection is refused and it answers 502 at
    /// once, which every caller passes on. Fast errors, no timeouts.
    BadGateway,
    /// orders reads SQLite through a pool of 4 connections under 16 requests at
    /// once: requests queue for a connection while every query stays fast.
    PoolExhaustion,
    /// catalog answers from SQLite by indexed lookups, 2 requests at a time,
    /// and every 4th request also runs an unindexed report of a few hundred ms.
    SlowQuery,
    /// orders serves every request on one thread: it awaits inventory, then
    /// blocks that thread for 5 s, so requests in flight together progress one
    /// at a time.
    BlockedWorker,
    /// pool-exhaustion in orders and slow-query in catalog at the same time,
    /// behind one frontend, on separate databases.
    Mixed,
}

impl Scenario {
    /// The scenario's name on the command line.
    pub fn name(self) -> &'static str {
        match self {
            Scenario::Healthy => "healthy",
            Scenario::CascadingTimeout => "cascading-timeout",
            Scenario::DeadlinePropagated => "deadline-propagated",
            Scenario::BadGateway => "bad-gateway",
            Scenario::PoolExhaustion => "pool-exhaustion",
            Scenario::SlowQuery => "slow-query",
            Scenario::BlockedWorker => "blocked-worker",
            Scenario::Mixed => "mixed",
        }
    }

    /// What the scenario sets up, in one or two sentences (scenario seconds).
    pub fn describe(self) -> &'static str {
        match self {
            Scenario::Healthy => {
                "every hop answers in under a second (inventory in 0.8 s); the timeouts \
                 of cascading-timeout are never reached"
            }
            Scenario::CascadingTimeout => {
                "inventory takes 40 s; the gateway gives up at 29 s, frontend→orders and \
                 orders→inventory at 30 s each (stacked, no deadline propagation): every \
                 caller times out and inventory works on after its caller left"
            }
            Scenario::DeadlinePropagated => {
                "each hop sends its remaining deadline (x-deadline-ms) and the callee \
                 keeps 1 s less; inventory takes 15 s of the 29 s budget: slow, no timeouts"
            }
            Scenario::BadGateway => {
                "inventory is down: orders gets connection refused and answers 502 at \
                 once; frontend and the gateway pass it on"
            }
            Scenario::PoolExhaustion => {
                "orders reads its stock from SQLite through an r2d2 pool of 4 connections, \
                 three indexed queries per request of 1 s each (the database's round \
                 trip), while 16 requests come at once: they queue for a connection (a \
                 pool.acquire span each, or with --no-acquire-spans only a gap before the \
                 first query) while every query stays fast"
            }
            Scenario::SlowQuery => {
                "catalog looks products up in SQLite by indexed queries (1 s each, the \
                 database's round trip), 2 requests at a time, and every 4th request also \
                 runs a report over all 200,000 products that no index helps (a few \
                 hundred ms of real SQL, not scaled); its pool is large enough that nobody \
                 waits"
            }
            Scenario::BlockedWorker => {
                "orders serves every request on one thread: it awaits inventory (a CLIENT \
                 span), then blocks that thread for 5 s with no span; 6 requests are in \
                 flight at once, but their own time lines up one after another"
            }
            Scenario::Mixed => {
                "frontend calls orders, then catalog: orders' pool of 4 connections is \
                 exhausted by 16 requests at once while catalog runs its slow report \
                 every 8th request, each on a database of its own"
            }
        }
    }

    /// Whether the scenario's services query databases (through pools).
    pub fn has_databases(self) -> bool {
        self.plan(1.0, 1).has_databases()
    }

    /// Requests sent and requests in flight at once, unless the options say
    /// otherwise.
    pub fn traffic(self) -> (usize, usize) {
        match self {
            Scenario::Healthy
            | Scenario::CascadingTimeout
            | Scenario::DeadlinePropagated
            | Scenario::BadGateway => (40, 4),
            Scenario::PoolExhaustion | Scenario::Mixed => (48, 16),
            Scenario::SlowQuery => (24, 2),
            Scenario::BlockedWorker => (24, 6),
        }
    }

    /// The scenario's services and what each does, for `time_scale` and
    /// `concurrency` requests at once.
    pub(super) fn plan(self, time_scale: f64, concurrency: usize) -> Plan {
        let units = |u: f64| Duration::from_secs_f64(u * time_scale);
        match self {
            Scenario::Healthy => chain(units, Chain::default()),
            Scenario::CascadingTimeout => chain(
                units,
                Chain {
                    inventory_work: 40.0,
                    ..Chain::default()
                },
            ),
            Scenario::DeadlinePropagated => chain(
                units,
                Chain {
                    inventory_work: 15.0,
                    propagate_deadlines: true,
                    ..Chain::default()
                },
            ),
            Scenario::BadGateway => chain(
                units,
                Chain {
                    inventory_up: false,
                    ..Chain::default()
                },
            ),
            Scenario::PoolExhaustion => {
                behind_frontend(&units, vec![database(&units, Data::Orders, POOL_SIZE)])
            }
            Scenario::SlowQuery => behind_frontend(
                &units,
                vec![database(
                    &units,
                    Data::Catalog { report_every: 4 },
                    roomy_pool(concurrency),
                )],
            ),
            Scenario::BlockedWorker => {
                let inventory = Hop {
                    work: units(INVENTORY_WORK),
                    ..Hop::new("inventory", services::stock())
                };
                let orders = Hop {
                    calls: vec![Call::new("inventory", saturation_timeout(&units))],
                    blocking: units(BLOCKING_WORK),
                    one_thread: true,
                    ..Hop::new("orders", services::orders())
                };
                behind_frontend(&units, vec![inventory, orders])
            }
            Scenario::Mixed => behind_frontend(
                &units,
                vec![
                    database(&units, Data::Orders, POOL_SIZE),
                    database(
                        &units,
                        Data::Catalog { report_every: 8 },
                        roomy_pool(concurrency),
                    ),
                ],
            ),
        }
    }
}

impl fmt::Display for Scenario {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.name())
    }
}

/// A call to another service of the plan.
#[derive(Debug, Clone)]
pub(super) struct Call {
    /// The callee (a hop started before the caller).
    pub service: &'static str,
    /// The client timeout (for the gateway: its own limit).
    pub timeout: Duration,
}

impl Call {
    fn new(service: &'static str, timeout: Duration) -> Call {
        Call { service, timeout }
    }
}

/// A service's database and its pool.
#[derive(Debug, Clone, Copy)]
pub(super) struct DbPlan {
    pub data: Data,
    pub pool_size: u32,
    /// What each statement waits before SQLite runs it: the round trip and
    /// the queueing a database server would add (see [`super::db`]).
    pub latency: Duration,
}

/// What one service does with a request, in this order: its own work, its
/// calls one after the other, its queries, its blocking work; then it answers.
#[derive(Debug, Clone)]
pub(super) struct Hop {
    pub name: &'static str,
    pub serves: Endpoint,
    /// Own work, waited for asynchronously (the whole work of a leaf).
    pub work: Duration,
    pub calls: Vec<Call>,
    pub db: Option<DbPlan>,
    /// Synchronous work on the thread serving the request, with no span of its
    /// own.
    pub blocking: Duration,
    /// Served by one thread (a current-thread runtime of its own), as a
    /// single-threaded server or an event loop.
    pub one_thread: bool,
    /// Answers its own timeout like an API gateway ("Endpoint request timed out").
    pub gateway: bool,
    /// With deadline propagation: what a callee keeps back from the deadline it
    /// is given. The gateway's deadline is its own call timeout.
    pub deadline_margin: Option<Duration>,
    /// Whether anything listens at all (if not, callers get connection refused).
    pub up: bool,
}

impl Hop {
    /// A service that serves `serves` and answers at once.
    fn new(name: &'static str, serves: Endpoint) -> Hop {
        Hop {
            name,
            serves,
            work: Duration::ZERO,
            calls: Vec::new(),
            db: None,
            blocking: Duration::ZERO,
            one_thread: false,
            gateway: name == ENTRY_SERVICE,
            deadline_margin: None,
            up: true,
        }
    }
}

/// A scenario's services, callees before their callers; the last is the gateway.
#[derive(Debug, Clone)]
pub(super) struct Plan {
    pub hops: Vec<Hop>,
    /// The daemon's trace idle time: longer than any pause between two spans
    /// of one trace ending, so a trace is analyzed whole.
    pub trace_idle: Duration,
}

impl Plan {
    /// The longest client timeout: the user waits twice that.
    pub(super) fn longest_timeout(&self) -> Duration {
        self.hops
            .iter()
            .flat_map(|h| &h.calls)
            .map(|c| c.timeout)
            .max()
            .unwrap_or_default()
    }

    /// Whether any service has a database (which needs a data directory).
    pub(super) fn has_databases(&self) -> bool {
        self.hops.iter().any(|h| h.db.is_some())
    }
}

/// Timings (units) and failures of a timeout scenario.
#[derive(Debug, Clone, Copy)]
struct Chain {
    /// The gateway's own limit on its call to frontend (API Gateway: 29 s).
    gateway_timeout: f64,
    /// frontend's client timeout on its call to orders.
    frontend_timeout: f64,
    /// orders' client timeout on its call to inventory.
    orders_timeout: f64,
    /// How long inventory works on a request.
    inventory_work: f64,
    /// Whether each hop sends its remaining deadline and callees honour it.
    propagate_deadlines: bool,
    /// Whether inventory is listening at all.
    inventory_up: bool,
}

impl Default for Chain {
    /// Stacked timeouts under the gateway's, everything fast.
    fn default() -> Self {
        Chain {
            gateway_timeout: 29.0,
            frontend_timeout: 30.0,
            orders_timeout: 30.0,
            inventory_work: INVENTORY_WORK,
            propagate_deadlines: false,
            inventory_up: true,
        }
    }
}

/// gateway → frontend → orders → inventory, each doing some work before its
/// call.
fn chain(units: impl Fn(f64) -> Duration, c: Chain) -> Plan {
    let margin = c.propagate_deadlines.then(|| units(DEADLINE_MARGIN));
    let hop = |name, serves, work, call: Option<(&'static str, f64)>| Hop {
        work: units(work),
        calls: call
            .map(|(service, timeout)| Call::new(service, units(timeout)))
            .into_iter()
            .collect(),
        deadline_margin: margin,
        ..Hop::new(name, serves)
    };
    Plan {
        hops: vec![
            Hop {
                up: c.inventory_up,
                ..hop("inventory", services::stock(), c.inventory_work, None)
            },
            hop(
                "orders",
                services::orders(),
                ORDERS_WORK,
                Some(("inventory", c.orders_timeout)),
            ),
            hop(
                "frontend",
                services::checkout(),
                FRONTEND_WORK,
                Some(("orders", c.frontend_timeout)),
            ),
            hop(
                ENTRY_SERVICE,
                services::checkout(),
                GATEWAY_WORK,
                Some(("frontend", c.gateway_timeout)),
            ),
        ],
        trace_idle: units(TRACE_IDLE).max(MIN_TRACE_IDLE),
    }
}

/// `hops` behind the gateway and frontend: frontend calls, one after the
/// other, each of them that no other calls. Neither does work of its own, and
/// no timeout is near.
fn behind_frontend(units: &impl Fn(f64) -> Duration, mut hops: Vec<Hop>) -> Plan {
    let timeout = saturation_timeout(units);
    let called = |name| {
        hops.iter()
            .flat_map(|h| &h.calls)
            .any(|c| c.service == name)
    };
    let backends: Vec<Call> = hops
        .iter()
        .filter(|h| !called(h.name))
        .map(|h| Call::new(h.name, timeout))
        .collect();
    hops.push(Hop {
        calls: backends,
        ..Hop::new("frontend", services::checkout())
    });
    hops.push(Hop {
        calls: vec![Call::new("frontend", timeout)],
        ..Hop::new(ENTRY_SERVICE, services::checkout())
    });
    Plan {
        hops,
        trace_idle: SATURATION_TRACE_IDLE,
    }
}

/// The service that owns `data`, answering from it.
fn database(units: &impl Fn(f64) -> Duration, data: Data, pool_size: u32) -> Hop {
    let serves = match data {
        Data::Orders => services::orders(),
        Data::Catalog { .. } => services::products(),
    };
    Hop {
        db: Some(DbPlan {
            data,
            pool_size,
            latency: units(DB_LATENCY),
        }),
        ..Hop::new(data.namespace(), serves)
    }
}

/// The saturation scenarios' client timeouts: far beyond anything they wait
/// for, at any time scale (SQL is not scaled).
fn saturation_timeout(units: &impl Fn(f64) -> Duration) -> Duration {
    units(SATURATION_TIMEOUT).max(MIN_SATURATION_TIMEOUT)
}

/// A pool nobody waits for at `concurrency` requests at once.
fn roomy_pool(concurrency: usize) -> u32 {
    u32::try_from(concurrency).unwrap_or(u32::MAX).max(1)
}

/// Own work of the gateway, frontend and orders before they call the next hop.
const GATEWAY_WORK: f64 = 0.2;
const FRONTEND_WORK: f64 = 0.5;
const ORDERS_WORK: f64 = 0.5;
/// inventory's work when nothing is wrong with it.
const INVENTORY_WORK: f64 = 0.8;
/// What a callee keeps back from a propagated deadline (to answer in time).
const DEADLINE_MARGIN: f64 = 1.0;
/// The timeout scenarios' trace idle time: longer than the gap between a
/// caller giving up and its slow callee finishing (11 units in
/// cascading-timeout), so a trace is analyzed whole; at least
/// `MIN_TRACE_IDLE`.
const TRACE_IDLE: f64 = 20.0;
const MIN_TRACE_IDLE: Duration = Duration::from_millis(500);
/// The size of the pool that pool-exhaustion and mixed exhaust.
pub const POOL_SIZE: u32 = 4;
/// The blocking work of blocked-worker's orders per request.
const BLOCKING_WORK: f64 = 5.0;
/// What a database adds to each statement ([`DbPlan::latency`]).
const DB_LATENCY: f64 = 1.0;
/// Client timeouts of the saturation scenarios ([`saturation_timeout`]).
const SATURATION_TIMEOUT: f64 = 1000.0;
const MIN_SATURATION_TIMEOUT: Duration = Duration::from_secs(10);
/// The saturation scenarios' trace idle time: a slow statement runs at real
/// speed, several times its few hundred ms on a loaded machine, and no span of
/// its trace ends meanwhile.
const SATURATION_TRACE_IDLE: Duration = Duration::from_millis(1500);
