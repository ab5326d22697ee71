//! The scenarios: one topology (gateway → frontend → orders → inventory) with
//! different timeouts, latencies and failures. Times are in *units*: seconds of
//! the real-world scenario, multiplied by the demo's time scale.

use std::fmt;

/// What goes wrong behind the gateway in a `hopscope demo` run.
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
}

impl Scenario {
    /// The scenario's name on the command line.
    pub fn name(self) -> &'static str {
        match self {
            Scenario::Healthy => "healthy",
            Scenario::CascadingTimeout => "cascading-timeout",
            Scenario::DeadlinePropagated => "deadline-propagated",
            Scenario::BadGateway => "bad-gateway",
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
        }
    }

    /// The scenario's timings and failures.
    pub(super) fn plan(self) -> Plan {
        let stacked = Plan {
            gateway_timeout: 29.0,
            frontend_timeout: 30.0,
            orders_timeout: 30.0,
            inventory_work: 0.8,
            propagate_deadlines: false,
            inventory_up: true,
        };
        match self {
            Scenario::Healthy => stacked,
            Scenario::CascadingTimeout => Plan {
                inventory_work: 40.0,
                ..stacked
            },
            Scenario::DeadlinePropagated => Plan {
                inventory_work: 15.0,
                propagate_deadlines: true,
                ..stacked
            },
            Scenario::BadGateway => Plan {
                inventory_up: false,
                ..stacked
            },
        }
    }
}

impl fmt::Display for Scenario {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.name())
    }
}

/// Timings (units) and failures of one scenario.
#[derive(Debug, Clone, Copy)]
pub(super) struct Plan {
    /// The gateway's own limit on its call to frontend (API Gateway: 29 s).
    pub gateway_timeout: f64,
    /// frontend's client timeout on its call to orders.
    pub frontend_timeout: f64,
    /// orders' client timeout on its call to inventory.
    pub orders_timeout: f64,
    /// How long inventory works on a request.
    pub inventory_work: f64,
    /// Whether each hop sends its remaining deadline and callees honour it.
    pub propagate_deadlines: bool,
    /// Whether inventory is listening at all.
    pub inventory_up: bool,
}

/// Own work of the gateway, frontend and orders before they call the next hop.
pub(super) const GATEWAY_WORK: f64 = 0.2;
pub(super) const FRONTEND_WORK: f64 = 0.5;
pub(super) const ORDERS_WORK: f64 = 0.5;
/// What a callee keeps back from a propagated deadline (to answer in time).
pub(super) const DEADLINE_MARGIN: f64 = 1.0;
/// The daemon's trace idle time: longer than the gap between a caller giving up
/// and its slow callee finishing (11 units in cascading-timeout), so a trace is
/// analyzed whole.
pub(super) const TRACE_IDLE: f64 = 20.0;
