"""hopscope's real-application suite: real services under the real
OpenTelemetry auto-instrumentation, a real PostgreSQL, a real hopscope daemon,
and assertions on its HTTP API only (OTLP in, HTTP API out).

Run by tests/realapp/run.sh, which installs what this needs, starts the
database and passes its URL; see that script. This driver is not
instrumented: its requests are the clients' (the services' SERVER spans are
the roots of the traces).

    python suite.py [SCENARIO...]

Environment: HOPSCOPE_BIN (the daemon), REALAPP_PG_PORT (the database's port
on 127.0.0.1, user postgres, database shop), REALAPP_VENV, REALAPP_SAVE (where
each scenario's traces and findings are written; default
target/realapp/traces), REALAPP_ROUNDS (how many times each scenario sends its
concurrency's worth of requests, instead of its default).
"""

import concurrent.futures
import json
import os
import re
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
import traceback
from pathlib import Path

import requests

HERE = Path(__file__).resolve().parent
REPO = HERE.parent.parent
APPS = HERE / "apps"
NODE = HERE / "node"

BIN = os.environ.get("HOPSCOPE_BIN") or str(REPO / "target/debug/hopscope")
VENV = Path(os.environ.get("REALAPP_VENV") or REPO / "target/realapp/venv")
PG_PORT = int(os.environ.get("REALAPP_PG_PORT", "5432"))
SAVE = Path(os.environ.get("REALAPP_SAVE") or REPO / "target/realapp/traces")
PG_URL_PY = f"postgresql+psycopg2://postgres@127.0.0.1:{PG_PORT}/shop"
PG_URL_NODE = f"postgres://postgres@127.0.0.1:{PG_PORT}/shop"

# Every wait is bounded by one of these.
START_DEADLINE = 60.0  # a daemon or a service to come up
SETTLE_DEADLINE = 90.0  # every trace analyzed and the detectors run over them
HTTP_TIMEOUT = 10.0  # one API call

# The timeout family: what stacked timeouts may be reported as. The entry
# point (frontend) answers 504 when its call times out, which may also read as
# a gateway_timeout at a configured limit.
TIMEOUT_KINDS = {
    "cascading_timeout",
    "gateway_timeout",
    "deadline_not_propagated",
    "timeout_inversion",
    "timeout_headroom",
}


def log(msg):
    print(msg, flush=True)


def free_port():
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def wait_until(what, cond, deadline, interval=0.1, alive=None):
    """Poll cond() until it returns a truthy value (returned) or the
    deadline (seconds from now) passes (AssertionError naming `what`)."""
    end = time.monotonic() + deadline
    last_err = None
    while True:
        if alive is not None:
            alive()
        try:
            v = cond()
            if v:
                return v
        except (requests.RequestException, OSError, ValueError) as e:
            last_err = e
        if time.monotonic() >= end:
            raise AssertionError(f"timed out after {deadline:.0f} s waiting for {what}" + (f" (last error: {last_err})" if last_err else ""))
        time.sleep(interval)


class Proc:
    """A child process in a session of its own (a gunicorn master and its
    worker are stopped together), output to a log file."""

    def __init__(self, name, argv, env, cwd, logdir):
        self.name = name
        self.log_path = Path(logdir) / f"{name}.log"
        self.log_file = open(self.log_path, "wb")
        self.p = subprocess.Popen(argv, env=env, cwd=cwd, stdout=self.log_file, stderr=subprocess.STDOUT, start_new_session=True)

    def check_alive(self):
        if self.p.poll() is not None:
            raise AssertionError(f"{self.name} exited with {self.p.returncode}:\n{self.tail()}")

    def tail(self, n=30):
        try:
            return "\n".join(self.log_path.read_text(errors="replace").splitlines()[-n:])
        except OSError:
            return ""

    def stop(self):
        if self.p.poll() is None:
            try:
                os.killpg(self.p.pid, signal.SIGTERM)
            except ProcessLookupError:
                pass
            try:
                self.p.wait(timeout=10)
            except subprocess.TimeoutExpired:
                try:
                    os.killpg(self.p.pid, signal.SIGKILL)
                except ProcessLookupError:
                    pass
                self.p.wait(timeout=10)
        self.log_file.close()


class Daemon:
    """A fresh hopscope daemon: its own data directory, every listener on an
    ephemeral loopback port (read back from its log)."""

    def __init__(self, workdir, trace_idle="1s", detect_interval="1s"):
        self.data_dir = Path(workdir) / "hopscope-data"
        argv = [
            BIN, "serve",
            "--data-dir", str(self.data_dir),
            "--otlp-grpc-addr", "127.0.0.1:0",
            "--otlp-http-addr", "127.0.0.1:0",
            "--api-addr", "127.0.0.1:0",
            "--jaeger-addr", "127.0.0.1:0",
            "--trace-idle", trace_idle,
            "--detect-interval", detect_interval,
            "--wal-sync", "none",
        ]
        env = {k: v for k, v in os.environ.items() if not k.startswith("HOPSCOPE_")}
        self.proc = Proc("hopscope", argv, env, workdir, workdir)
        line = wait_until("hopscope's listening line", self._listening, START_DEADLINE, alive=self.proc.check_alive)
        addrs = dict(re.findall(r"(\w+_addr)=(\S+)", line))
        self.api = f"http://{addrs['api_addr']}"
        self.jaeger = f"http://{addrs['jaeger_addr']}"
        self.otlp_http = f"http://{addrs['otlp_http_addr']}"
        self.otlp_grpc = f"http://{addrs['otlp_grpc_addr']}"
        wait_until("hopscope /readyz", lambda: requests.get(self.api + "/readyz", timeout=HTTP_TIMEOUT).status_code == 200, START_DEADLINE, alive=self.proc.check_alive)

    def _listening(self):
        for line in self.proc.log_path.read_text(errors="replace").splitlines():
            if "hopscope listening" in line:
                return line
        return None

    def get(self, path, **params):
        r = requests.get(self.api + path, params=params, timeout=HTTP_TIMEOUT)
        r.raise_for_status()
        return r.json()

    def stats(self):
        return self.get("/api/v1/stats")

    def entry_traces(self, entry):
        """Analyzed traces whose entry point is `entry`: a service, or
        SERVICE:OPERATION."""
        service, _, operation = entry.partition(":")
        entries = self.get("/api/v1/hops", since="1h")["entries"]
        return sum(
            e["traces"] for e in entries
            if e["entry"].get("service") == service and operation in ("", e["entry"].get("operation"))
        )

    def settle(self, traces, entry):
        """Await: at least `traces` traces entered at `entry` (a service, or
        SERVICE:OPERATION) analyzed (other traces, like the root dns.lookup
        span a Node service records at start, do not count), no span buffered, no analysis pending, and the
        detectors current over every analyzed trace (`detectors_current`),
        in two polls in a row with the same count of analyzed traces."""
        def ready():
            s = self.stats()
            return (
                s["buffered_spans"] == 0
                and s["analysis_pending"] == 0
                and s["detectors_current"]
                and self.entry_traces(entry) >= traces
            ) and s
        what = f"{traces} traces of {entry} analyzed and the detectors current"
        prev = wait_until(what, ready, SETTLE_DEADLINE, interval=0.2, alive=self.proc.check_alive)
        for _ in range(100):
            time.sleep(0.2)  # poll interval
            s = wait_until(what, ready, SETTLE_DEADLINE, interval=0.2, alive=self.proc.check_alive)
            if s["counters"]["traces_analyzed"] == prev["counters"]["traces_analyzed"]:
                return s
            prev = s
        raise AssertionError("the count of analyzed traces never stood still")

    def findings(self):
        return self.get("/api/v1/findings", limit=1000)["findings"]

    def queries(self):
        return self.get("/api/v1/queries", limit=1000)["queries"]

    def jaeger_traces(self, services, limit):
        """Every stored trace in which one of `services` has a span, as one
        Jaeger query-API document."""
        seen = {}
        for svc in services:
            r = requests.get(self.jaeger + "/api/traces", params={"service": svc, "limit": limit}, timeout=60)
            r.raise_for_status()
            for t in r.json()["data"]:
                seen.setdefault(t["traceID"], t)
        data = sorted(seen.values(), key=lambda t: min(s["startTime"] for s in t["spans"]))
        return {"data": data, "total": len(data), "limit": 0, "offset": 0, "errors": None}

    def stop(self):
        self.proc.stop()


def otel_env(service, instance, daemon, extra=None):
    env = {k: v for k, v in os.environ.items() if not k.startswith(("OTEL_", "HOPSCOPE_", "REALAPP_"))}
    env.update({
        "OTEL_SERVICE_NAME": service,
        "OTEL_RESOURCE_ATTRIBUTES": f"service.instance.id={instance}",
        "OTEL_TRACES_EXPORTER": "otlp",
        "OTEL_METRICS_EXPORTER": "none",
        "OTEL_LOGS_EXPORTER": "none",
        "OTEL_EXPORTER_OTLP_ENDPOINT": daemon.otlp_http,
        "OTEL_EXPORTER_OTLP_PROTOCOL": "http/protobuf",
        "OTEL_BSP_SCHEDULE_DELAY": "100",
    })
    env.update(extra or {})
    return env


class Scenario:
    def __init__(self, name, workdir):
        self.name = name
        self.workdir = Path(workdir)
        self.procs = []
        self.daemon = None
        self.services = []
        self.failures = []
        self.findings = []
        self.notes = []
        self.pool_size = None  # the configured pool, where one matters

    # -- processes --------------------------------------------------------
    def start_daemon(self, **kw):
        self.daemon = Daemon(self.workdir, **kw)
        self.procs.append(self.daemon.proc)
        return self.daemon

    def python_service(self, service, settings, instance=None, threads=32, disabled=None):
        """shop.py under `opentelemetry-instrument gunicorn`. Returns its URL
        once its worker answers (GET /ready: an excluded URL, no span)."""
        port = free_port()
        extra = {k: str(v) for k, v in settings.items()}
        extra["OTEL_PYTHON_FLASK_EXCLUDED_URLS"] = "ready"
        extra["PATH"] = f"{VENV / 'bin'}:{os.environ.get('PATH', '')}"
        if disabled:
            extra["OTEL_PYTHON_DISABLED_INSTRUMENTATIONS"] = disabled
        env = otel_env(service, instance or f"{service}-1", self.daemon, extra)
        argv = [
            str(VENV / "bin/opentelemetry-instrument"),
            str(VENV / "bin/gunicorn"),
            "-c", str(APPS / "gunicorn.conf.py"),
            "--bind", f"127.0.0.1:{port}",
            "--threads", str(threads),
            "shop:app",
        ]
        p = Proc(service, argv, env, APPS, self.workdir)
        self.procs.append(p)
        self.services.append(service)
        url = f"http://127.0.0.1:{port}"
        wait_until(f"{service} to answer", lambda: requests.get(url + "/ready", timeout=2).status_code == 200, START_DEADLINE, interval=0.2, alive=p.check_alive)
        return url

    def node_service(self, service, settings, instance=None):
        """app.js under `node --require
        @opentelemetry/auto-instrumentations-node/register`. Returns its URL
        once it listens (a bare TCP connect: no request, no span)."""
        port = free_port()
        extra = {k: str(v) for k, v in settings.items()}
        extra["REALAPP_PORT"] = str(port)
        # Resource detectors that read this process only: the cloud ones
        # would ask metadata endpoints off the loopback, and host's ids would
        # end up in the saved traces.
        extra["OTEL_NODE_RESOURCE_DETECTORS"] = "env,os,process"
        env = otel_env(service, instance or f"{service}-1", self.daemon, extra)
        argv = ["node", "--require", "@opentelemetry/auto-instrumentations-node/register", str(NODE / "app.js")]
        p = Proc(service, argv, env, NODE, self.workdir)
        self.procs.append(p)
        self.services.append(service)

        def listening():
            with socket.create_connection(("127.0.0.1", port), timeout=1):
                return True
        wait_until(f"{service} to listen", listening, START_DEADLINE, interval=0.2, alive=p.check_alive)
        return f"http://127.0.0.1:{port}"

    def stop(self):
        for p in reversed(self.procs):
            try:
                p.stop()
            except Exception as e:  # keep stopping the others
                log(f"  stopping {p.name}: {e}")

    # -- assertions -------------------------------------------------------
    def check(self, cond, msg):
        if not cond:
            self.failures.append(msg)
        return cond

    def of_kind(self, kind, service=None):
        return [f for f in self.findings if f["kind"] == kind and (service is None or f["culprit"].get("service") == service)]

    def expect(self, kind, service=None, what=None):
        found = self.of_kind(kind, service)
        self.check(found, f"expected a {kind} finding" + (f" on {service}" if service else "") + (f" ({what})" if what else "") + f"; got: {kinds_of(self.findings) or 'none'}")
        return found

    def only(self, allowed):
        extra = sorted({f["kind"] for f in self.findings} - set(allowed))
        self.check(not extra, f"unexpected finding kinds (silence elsewhere): {extra}" + "".join(f"\n      {line(f)}" for f in self.findings if f["kind"] in extra))


def kinds_of(findings):
    return ", ".join(sorted({f["kind"] for f in findings}))


def line(f):
    c = f.get("culprit") or {}
    culprit = " / ".join(str(c.get(k)) for k in ("service", "operation", "peer") if c.get(k))
    summary = (f.get("summary") or "").splitlines()[0] if f.get("summary") else ""
    return f"{f['kind']} [{f.get('severity')}] {culprit}: {summary}"


def rounds(default):
    """How many times each scenario's concurrency is sent (its requests are
    rounds x concurrency): the scenario's default, or REALAPP_ROUNDS (fewer
    for smaller saved traces, more for a longer run)."""
    return int(os.environ.get("REALAPP_ROUNDS") or default)


def load(url_of, n, concurrency, method="GET", timeout=30):
    """n requests, at most `concurrency` in flight (one thread each); url_of(i)
    gives the i-th URL. Returns the status codes (0: no answer)."""
    def one(i):
        try:
            return requests.request(method, url_of(i), timeout=timeout).status_code
        except requests.RequestException:
            return 0
    with concurrent.futures.ThreadPoolExecutor(max_workers=concurrency) as ex:
        return list(ex.map(one, range(n)))


def status_summary(codes):
    out = {}
    for c in codes:
        out[c] = out.get(c, 0) + 1
    return " ".join(f"{k}x{v}" for k, v in sorted(out.items()))


def drive(sc, url_of, n, concurrency, entry, method="GET", status=200, what=""):
    """Send the scenario's load (see load; `what` describes it further),
    check that every request answered `status`, await the analysis of the
    traces entered at `entry` (see Daemon.settle) and read the findings."""
    codes = load(url_of, n, concurrency, method)
    sc.notes.append(f"load: {n} requests, {concurrency} at once{what}: {status_summary(codes)}")
    sc.check(all(c == status for c in codes), f"every request should answer {status}: {status_summary(codes)}")
    sc.daemon.settle(n, entry)
    sc.findings = sc.daemon.findings()


# ---------------------------------------------------------------------------
# Scenarios. Each starts its daemon and services, sends its load, awaits the
# analysis, then asserts its finding and silence elsewhere.

POOL_SIZE = 2


def pool_scenario(sc, route, disabled=None, concurrency=14):
    requests_total = rounds(5) * concurrency
    sc.start_daemon()
    sc.pool_size = POOL_SIZE
    url = sc.python_service(
        "orders",
        {"REALAPP_DB_URL": PG_URL_PY, "REALAPP_POOL_SIZE": POOL_SIZE, "REALAPP_MAX_OVERFLOW": 0, "REALAPP_POOL_TIMEOUT": 60, "REALAPP_HOLD_MS": 100},
        disabled=disabled,
    )
    drive(sc, lambda i: f"{url}{route.format(id=1 + i % 500)}", requests_total, concurrency, "orders")
    return requests_total


def assert_pool(sc, service="orders"):
    found = sc.expect("pool_exhaustion", service)
    if not found:
        sc.notes.append(f"estimated pool size: none (no pool_exhaustion finding; configured {POOL_SIZE})")
    for f in found:
        est = f["evidence"].get("estimated_pool_size")
        sc.notes.append(f"estimated pool size {est} (configured {POOL_SIZE}), wait_from {f['evidence'].get('wait_from')}")
        sc.check(est == POOL_SIZE, f"pool_exhaustion's estimated_pool_size is {est}, the pool has {POOL_SIZE}")


def assert_queries_once(sc, executions, shapes):
    """Each of the app's statements is counted once per execution, whichever
    instrumentations recorded it (one or two spans per execution)."""
    qs = sc.daemon.queries()
    for needle in shapes:
        matching = [q for q in qs if needle in q["statement"]]
        calls = sum(q["count"] for q in matching)
        sc.notes.append(f"queries: {calls} call(s) of {needle!r} over {len(matching)} shape(s) (executed {executions} times)")
        sc.check(calls == executions, f"GET /api/v1/queries counts {calls} call(s) of the statement with {needle!r} over {len(matching)} shape(s); it was executed {executions} times")


def s_pool_held_in_app(sc):
    n = pool_scenario(sc, "/orders/{id}")
    assert_pool(sc)
    sc.only({"pool_exhaustion"})
    return n


def s_pool_held_by_statement(sc):
    n = pool_scenario(sc, "/orders/{id}/statement")
    assert_pool(sc)
    # pg_sleep(0.1) is a 100 ms statement among sub-millisecond ones: a
    # slow_query on that shape (and on it only) is allowed, not required.
    for f in sc.of_kind("slow_query"):
        sc.check("pg_sleep" in json.dumps(f["culprit"]), f"a slow_query may name the pg_sleep statement only: {line(f)}")
    sc.only({"pool_exhaustion", "slow_query"})
    return n


ORM_SHAPES = ["FROM items WHERE items.id", "FROM stock WHERE stock.id"]


def db_instrumentations(disabled=None):
    """Scenario: the held-in-app pool with both database instrumentations, or
    with one of them disabled: the pool is still 2 and each statement counts
    once."""

    def scenario(sc):
        n = pool_scenario(sc, "/orders/{id}", disabled=disabled)
        assert_pool(sc)
        assert_queries_once(sc, n, ORM_SHAPES)
        sc.only({"pool_exhaustion"})
        return n

    return scenario


def s_slow_aggregate(sc):
    sc.start_daemon()
    sc.pool_size = 10
    url = sc.python_service("catalog", {"REALAPP_DB_URL": PG_URL_PY, "REALAPP_POOL_SIZE": sc.pool_size, "REALAPP_MAX_OVERFLOW": 0})
    n, every = rounds(20) * 4, 10
    drive(sc, lambda i: f"{url}/report" if i % every == every // 2 else f"{url}/items/{1 + (i * 37) % 1000}", n, 4, "catalog", what=f", every {every}th the report")
    slow = sc.expect("slow_query", "catalog", "the aggregate over events")
    for f in slow:
        sc.check("FROM events" in json.dumps(f["culprit"]), f"slow_query should name the aggregate over events: {line(f)}")
    others = [f for f in slow if "FROM events" not in json.dumps(f["culprit"])]
    sc.check(not others, "slow_query names a fast lookup: " + "; ".join(line(f) for f in others))
    sc.only({"slow_query"})
    return n


def s_stacked_timeouts(sc):
    # The slow hop's spans end 3 s after its callers gave up: the trace stays
    # open long enough for them (no late-span re-analysis needed).
    sc.start_daemon(trace_idle="5s")
    inventory = sc.python_service("inventory", {"REALAPP_SLEEP_MS": 5000})
    orders = sc.python_service("orders", {"REALAPP_DOWNSTREAM": inventory + "/relay", "REALAPP_DOWNSTREAM_TIMEOUT": 2})
    frontend = sc.python_service("frontend", {"REALAPP_DOWNSTREAM": orders + "/relay", "REALAPP_DOWNSTREAM_TIMEOUT": 2})
    n = rounds(2) * 6
    # Every request times out at the frontend: 504.
    drive(sc, lambda i: f"{frontend}/relay", n, 6, "frontend", status=504)
    # The origin of the cascade is inventory (the hop that sleeps 5 s); the
    # missing deadline shows on its edge (orders -> inventory), and may show
    # on frontend -> orders too (orders gives up a few ms after frontend:
    # equal timeouts, no deadline sent: that is true, not a false culprit).
    def inventory_side(f):
        c = f["culprit"]
        return c.get("service") == "inventory" or "inventory" in str(c.get("peer") or "")
    main = [f for f in sc.findings if f["kind"] in ("cascading_timeout", "deadline_not_propagated")]
    sc.check(main, f"expected cascading_timeout and/or deadline_not_propagated; got: {kinds_of(sc.findings) or 'none'}")
    sc.check(any(inventory_side(f) for f in main), "a cascading_timeout or deadline_not_propagated should name inventory's side (the hop that sleeps 5 s): " + "; ".join(line(f) for f in main))
    for f in sc.of_kind("cascading_timeout"):
        sc.check(f["culprit"].get("service") == "inventory", f"the cascade's origin should be inventory: {line(f)}")
    sc.only(TIMEOUT_KINDS)
    return n


def s_blocked_event_loop(sc):
    d = sc.start_daemon()
    hasher = sc.node_service("hasher", {"REALAPP_HASH_MS": 200}, instance="hasher-1")
    gateway = sc.python_service("gateway", {"REALAPP_DOWNSTREAM": hasher + "/hash", "REALAPP_DOWNSTREAM_TIMEOUT": 30})
    n = rounds(6) * 8
    drive(sc, lambda i: f"{gateway}/relay", n, 8, "gateway")
    for f in sc.expect("blocked_worker", "hasher"):
        sc.check("hasher-1" in json.dumps(f), f"blocked_worker should name the instance hasher-1: {line(f)}")
    # The gateway's wait is the hasher's event loop (Node starts the SERVER
    # span only when the loop gets to the request), not the network: no
    # finding blames the gateway or its edge to the hasher.
    for f in sc.findings:
        sc.check(f["culprit"].get("service") == "hasher", f"a finding blames another side than the hasher: {line(f)}")
    entries = d.get("/api/v1/hops", entry="gateway:GET /relay")["entries"]
    hops = [h for e in entries if e["entry"].get("service") == "gateway" for h in e["hops"]][:3]
    sc.notes.append("hops of gateway:GET /relay: " + ", ".join(f"{h['kind']} {h['service']}:{h['operation']}{' -> ' + h['peer'] if h.get('peer') else ''} {h['share']:.0%}" for h in hops))
    sc.only({"blocked_worker"})
    return n


def s_hot_row(sc):
    sc.start_daemon()
    warehouse = sc.node_service("warehouse", {"REALAPP_DB_URL": PG_URL_NODE, "REALAPP_POOL_SIZE": 20, "REALAPP_HOLD_MS": 60})
    n = rounds(4) * 12
    drive(sc, lambda i: f"{warehouse}/stock/1/reserve", n, 12, "warehouse:POST /stock/:id/reserve", method="POST")
    for f in sc.expect("lock_contention", "warehouse"):
        text = json.dumps(f)
        sc.check("FOR UPDATE" in json.dumps(f["culprit"]), f"lock_contention should name the FOR UPDATE statement: {line(f)}")
        sc.check("stock" in text, f"lock_contention should name the table stock: {line(f)}")
    sc.only({"lock_contention"})
    return n


def s_healthy(sc):
    sc.start_daemon()
    stockroom = sc.node_service("stockroom", {"REALAPP_DB_URL": PG_URL_NODE, "REALAPP_POOL_SIZE": 10})
    sc.pool_size = 10
    storefront = sc.python_service("storefront", {"REALAPP_DB_URL": PG_URL_PY, "REALAPP_POOL_SIZE": sc.pool_size, "REALAPP_DOWNSTREAM": stockroom + "/stock", "REALAPP_DOWNSTREAM_TIMEOUT": 5})
    n = rounds(15) * 4
    drive(sc, lambda i: f"{storefront}/checkout/{1 + (i * 13) % 1000}", n, 4, "storefront")
    sc.only(set())
    return n


# -- anti-patterns: an N+1 of the ORM, calls made one after another ---------

PAGE_SIZE = 20  # posts on a page of GET /posts (apps/shop.py)
# The lazy load of one post's comments: `SELECT comments.id AS comments_id,
# ... FROM comments WHERE %(param_1)s = comments.post_id`.
LAZY_COMMENTS = "FROM comments WHERE %(param_1)s = comments.post_id"
# selectinload's one query for the page: `... WHERE comments.post_id IN (...)`.
BATCHED_COMMENTS = "FROM comments WHERE comments.post_id IN"
ACCOUNT_PARTS = ("profile", "cart", "recommendations")  # what GET /home/<id> fetches


def expect_comments_loop(sc, service, operation, n):
    """The n_plus_one of the lazy-loaded comments (n requests of `operation`
    on `service`, both database instrumentations): one finding, 20 calls per
    request one at a time, the database as callee, no parameter values."""
    # Two spans per comment query (SQLAlchemy's and psycopg2's), counted once.
    assert_queries_once(sc, n * PAGE_SIZE, [LAZY_COMMENTS])
    found = sc.expect("n_plus_one", service, "one lazy load of comments per post")
    sc.check(len(found) <= 1, "one n_plus_one (the comments' query, whichever instrumentation recorded it): " + "; ".join(line(f) for f in found))
    for f in found:
        c, e = f["culprit"], f["evidence"]
        sc.notes.append(
            f"n_plus_one [{f.get('severity')}]: calls {e.get('calls')}, peak_in_flight {e.get('peak_in_flight')}, distinct_parameters {e.get('distinct_parameters')}, "
            f"total {e.get('total_ms')} ms, critical {e.get('critical_ms')} ms ({e.get('critical_share')}), peer {c.get('peer')!r}"
        )
        # The callee is the database, named as such (its host, 127.0.0.1, is
        # also the host of every other service of the suite).
        sc.check("postgresql" in str(c.get("peer")), f"the repeated call goes to PostgreSQL, and the culprit's peer says so: culprit {c}")
        sc.check(LAZY_COMMENTS in str(e.get("shape")), f"the repeated statement is the lazy load of comments: shape {e.get('shape')!r}")
        sc.check(e.get("calls") == PAGE_SIZE, f"{PAGE_SIZE} calls per request (one per post, each recorded twice, counted once): calls {e.get('calls')}")
        sc.check(e.get("peak_in_flight") == 1, f"the lazy loads run one at a time: peak_in_flight {e.get('peak_in_flight')}")
        sc.check(e.get("distinct_parameters") is None, f"the instrumentation records no parameter values: distinct_parameters {e.get('distinct_parameters')}")
        sc.check(e.get("parent") == {"service": service, "operation": operation}, f"the loop runs in {service}'s {operation}: parent {e.get('parent')}")
    return found


def s_orm_n_plus_one(sc):
    sc.start_daemon()
    url = sc.python_service("blog", {"REALAPP_DB_URL": PG_URL_PY, "REALAPP_POOL_SIZE": 2})
    # Two clients at once: the lazy loads of a page follow each other about
    # 1 ms apart (more clients on the suite's 2 cores stretch the gaps).
    n = rounds(6) * 2
    drive(sc, lambda i: f"{url}/posts?page={1 + i % 2}", n, 2, "blog")
    for f in expect_comments_loop(sc, "blog", "GET /posts", n):
        sc.check((f["evidence"].get("critical_ms") or 0) > 0, f"the loop is on the critical path: {line(f)}")
    sc.only({"n_plus_one"})
    return n


def s_orm_n_plus_one_off_critical_path(sc):
    sc.start_daemon()
    # The recommendations take 400 ms, many times what the loop takes even
    # when the 2 cores are busy.
    recommender = sc.python_service("recommender", {"REALAPP_SLEEP_MS": 400})
    feed = sc.python_service("feed", {"REALAPP_DB_URL": PG_URL_PY, "REALAPP_POOL_SIZE": 2, "REALAPP_DOWNSTREAM": recommender + "/relay", "REALAPP_DOWNSTREAM_TIMEOUT": 5})
    n = rounds(6) * 2
    drive(sc, lambda i: f"{feed}/feed/{1 + i}", n, 2, "feed")
    # The loop is real and reported, with what it costs: little or nothing of
    # the page's time, which waits on the recommendations meanwhile.
    for f in expect_comments_loop(sc, "feed", "GET /feed/<int:user_id>", n):
        e = f["evidence"]
        sc.check((e.get("critical_ms") or 0) <= (e.get("total_ms") or 0) / 4, f"the loop is off the critical path: critical_ms {e.get('critical_ms')} of total_ms {e.get('total_ms')}")
        sc.check(f.get("severity") != "critical", f"a loop off the critical path is not critical: {line(f)}")
    sc.only({"n_plus_one"})
    return n


def s_orm_batched(sc):
    sc.start_daemon()
    url = sc.python_service("blog", {"REALAPP_DB_URL": PG_URL_PY, "REALAPP_POOL_SIZE": 3})
    routes = ["/posts?load=selectin&page=1", "/posts?load=joined&page=2", "/posts/stats"]
    n = rounds(3) * len(routes)
    drive(sc, lambda i: url + routes[i % len(routes)], n, len(routes), "blog")
    # selectinload: one `IN` query per page, so the page is batched indeed.
    assert_queries_once(sc, n // len(routes), [BATCHED_COMMENTS])
    # Neither the batched page, the joined one nor three different fast
    # queries is an N+1 or worth running in parallel.
    sc.only(set())
    return n


def account_pages(sc, query=""):
    """portal's GET /home/<id> fetching its three parts from accounts
    (profile 60 ms, cart 80 ms, recommendations 120 ms), 4 clients at once.
    Checks each trace's shape over the Jaeger API (the three GET spans under
    the page's span, their http.url only telling them apart) and returns the
    number of requests and the three calls' (start, end) (µs) per trace."""
    n = rounds(3) * 4
    sc.start_daemon()
    accounts = sc.python_service("accounts", {})
    portal = sc.python_service("portal", {"REALAPP_DOWNSTREAM": accounts, "REALAPP_DOWNSTREAM_TIMEOUT": 5})
    drive(sc, lambda i: f"{portal}/home/{1 + i}{query}", n, 4, "portal")
    calls = []
    for t in sc.daemon.jaeger_traces(["portal"], n + 10)["data"]:
        service = {pid: p["serviceName"] for pid, p in t["processes"].items()}
        spans = {s["spanID"]: s for s in t["spans"]}

        def parent_of(s):
            return next((spans.get(r["spanID"]) for r in s["references"] if r["refType"] == "CHILD_OF"), None)

        page = [s for s in t["spans"] if service[s["processID"]] == "portal" and s["operationName"] == "GET /home/<int:user_id>"]
        if not sc.check(len(page) == 1, f"trace {t['traceID']}: one GET /home/<int:user_id> span, not {len(page)}"):
            continue
        gets = sorted((s for s in t["spans"] if parent_of(s) is page[0]), key=lambda s: s["startTime"])
        urls = [tags(s).get("http.url", "") for s in gets]
        sc.check(
            [s["operationName"] for s in gets] == ["GET"] * 3 and sorted(u.rsplit("/", 2)[-2] for u in urls) == sorted(ACCOUNT_PARTS),
            f"trace {t['traceID']}: the page's children are the three GET spans to {', '.join(ACCOUNT_PARTS)}: {[(s['operationName'], tags(s).get('http.url')) for s in gets]}",
        )
        calls.append([(s["startTime"], s["startTime"] + s["duration"]) for s in gets])
    sc.check(len(calls) == n, f"{n} traces of GET /home/<int:user_id>, not {len(calls)}")
    return n, calls


def tags(span):
    return {t["key"]: t["value"] for t in span["tags"]}


def s_serial_requests(sc):
    n, calls = account_pages(sc)
    for c in calls:
        sc.check(all(a[1] <= b[0] for a, b in zip(c, c[1:])), f"each call starts after the previous one ended: {c}")
    found = sc.expect("serial_calls", "portal", "three GETs to accounts one after another")
    for f in found:
        c, e = f["culprit"], f["evidence"]
        targets = [x.get("target") for x in sorted(e.get("calls") or [], key=lambda x: x.get("start_ms", 0))]
        sc.notes.append(f"serial_calls: saved {e.get('saved_ms')} ms, critical {e.get('critical_ms')} ms, targets {targets}")
        sc.check(c.get("operation") == "GET /home/<int:user_id>", f"the serial calls' parent is the page: culprit {c}")
        sc.check((e.get("saved_ms") or 0) >= 100, f"running them at once would save >= 100 ms: saved_ms {e.get('saved_ms')}")
        sc.check(
            len(targets) == 3 and all(part in str(t) for part, t in zip(ACCOUNT_PARTS, targets)),
            f"the three calls, told apart by http.url, are to {', '.join(ACCOUNT_PARTS)}: targets {targets}",
        )
    sc.only({"serial_calls"})
    return n


def s_parallel_requests(sc):
    n, calls = account_pages(sc, "?parallel=1")
    for c in calls:
        sc.check(max(a for a, _ in c) < min(b for _, b in c), f"the three calls overlap: {c}")
    sc.only(set())
    return n


def s_node_n_plus_one(sc):
    sc.start_daemon()
    url = sc.node_service("inventory", {"REALAPP_DB_URL": PG_URL_NODE, "REALAPP_POOL_SIZE": 5})
    n = rounds(6) * 2
    drive(sc, lambda i: f"{url}/stock-report", n, 2, "inventory:GET /stock-report")
    # pg's spans: `pg-pool.connect` then `pg.query:SELECT shop` per query,
    # under express's request handler span; the checkouts are no calls.
    found = sc.expect("n_plus_one", "inventory", "one query per stock id")
    sc.check(len(found) == 1, "one n_plus_one: " + "; ".join(line(f) for f in found))
    for f in found:
        c, e = f["culprit"], f["evidence"]
        sc.notes.append(f"n_plus_one [{f.get('severity')}]: calls {e.get('calls')}, peak_in_flight {e.get('peak_in_flight')}, source {e.get('source')!r}, critical {e.get('critical_ms')} ms")
        sc.check(c.get("operation") == "SELECT id, sku, qty FROM stock WHERE id = $1", f"the repeated statement: culprit {c}")
        sc.check("postgresql" in str(c.get("peer")), f"the callee is PostgreSQL: culprit {c}")
        # Node stamps starts in whole milliseconds: one query right after
        # another both "start at 28 ms"; they still ran one at a time.
        sc.check(e.get("calls") == 10 and e.get("peak_in_flight") == 1, f"10 queries (the stock table's 10 rows) one at a time: {line(f)}")
        sc.check(e.get("source") == "SELECT id FROM stock ORDER BY id LIMIT $1", f"the loop follows the query for the ids: source {e.get('source')!r}")
    sc.only({"n_plus_one"})
    return n


SCENARIOS = {
    "pool-held-in-app": s_pool_held_in_app,
    "pool-held-by-statement": s_pool_held_by_statement,
    "both-db-instrumentations": db_instrumentations(),
    "one-db-instrumentation": db_instrumentations(disabled="psycopg2"),
    "one-db-instrumentation-psycopg2": db_instrumentations(disabled="sqlalchemy"),
    "slow-aggregate": s_slow_aggregate,
    "stacked-timeouts": s_stacked_timeouts,
    "blocked-event-loop": s_blocked_event_loop,
    "hot-row": s_hot_row,
    "healthy": s_healthy,
    "orm_n_plus_one": s_orm_n_plus_one,
    "orm_n_plus_one_off_critical_path": s_orm_n_plus_one_off_critical_path,
    "orm_batched": s_orm_batched,
    "serial_requests": s_serial_requests,
    "parallel_requests": s_parallel_requests,
    "node_n_plus_one": s_node_n_plus_one,
}


def strip_analysis(doc):
    """The daemon's Jaeger answer carries its own analysis (hopscope.* tags,
    repair warnings): drop it, so a replay sees what the services sent."""
    for t in doc["data"]:
        for s in t["spans"]:
            s["tags"] = [tag for tag in s["tags"] if not tag["key"].startswith("hopscope.")]
            s["warnings"] = None
    return doc


def save(sc, traces_expected):
    out = SAVE / sc.name
    doc = strip_analysis(sc.daemon.jaeger_traces(sc.services, traces_expected + 100))
    path = out / f"{sc.name}.json"
    path.write_text(json.dumps(doc, separators=(",", ":")))
    (out / "findings.json").write_text(json.dumps({"findings": sc.findings}, indent=1))
    (out / "queries.json").write_text(json.dumps(sc.daemon.get("/api/v1/queries", limit=1000), indent=1))
    (out / "stats.json").write_text(json.dumps(sc.daemon.stats(), indent=1))
    # The saved file must replay offline: `hopscope analyze` reads it whole.
    r = subprocess.run([BIN, "analyze", "--format", "json", str(path)], capture_output=True, timeout=300)
    if r.returncode != 0:
        sc.failures.append(f"hopscope analyze {path} failed: {r.stderr.decode(errors='replace')[-500:]}")
        return path, None
    replay = json.loads(r.stdout)
    sc.check(len(replay["traces"]) == len(doc["data"]), f"hopscope analyze read {len(replay['traces'])} of the {len(doc['data'])} saved traces")
    return path, replay


def run(name):
    sc = Scenario(name, tempfile.mkdtemp(prefix=f"realapp-{name}-"))
    t0 = time.monotonic()
    log(f"== {name}")
    out = SAVE / name
    shutil.rmtree(out, ignore_errors=True)
    out.mkdir(parents=True)
    saved = replay = None
    try:
        n = SCENARIOS[name](sc)
        saved, replay = save(sc, n)
    except Exception as e:
        sc.failures.append(f"{type(e).__name__}: {e}")
        if not isinstance(e, AssertionError):
            sc.failures.append(traceback.format_exc())
        if sc.daemon is not None:
            try:
                sc.findings = sc.findings or sc.daemon.findings()
            except Exception:
                pass
    finally:
        sc.stop()
        for p in sc.procs:  # the services' and the daemon's logs
            try:
                shutil.copyfile(p.log_path, out / p.log_path.name)
            except OSError:
                pass
        shutil.rmtree(sc.workdir, ignore_errors=True)
    report = [f"== {name}"]
    report += [f"  {note}" for note in sc.notes]
    report += [f"  finding: {line(f)}" for f in sc.findings] or ["  finding: none"]
    if saved:
        report.append(f"  traces: {saved} ({saved.stat().st_size // 1024} KiB); replay with `hopscope analyze`: {kinds_of(replay['findings']) if replay else '?'}")
    ok = not sc.failures
    report += [f"  FAIL: {msg}" for msg in sc.failures]
    if not ok:
        for p in sc.procs:
            if p.name != "hopscope" and p.p.returncode not in (0, -15, None):
                report.append(f"  --- {p.name} log:\n{p.tail()}")
    report.append(f"{'PASS' if ok else 'FAIL'} {name} ({time.monotonic() - t0:.1f} s)")
    for r in report[1:]:
        log(r)
    (out / "report.txt").write_text("\n".join(report) + "\n")
    return ok, brief(sc.findings, sc.pool_size)


def brief(findings, pool_size):
    """The findings in a few words: kind (service; estimated/configured pool)."""
    if not findings:
        return "no findings"
    out = []
    for f in findings:
        est = (f.get("evidence") or {}).get("estimated_pool_size")
        pool = f", estimated pool {est}, configured {pool_size}" if f["kind"] == "pool_exhaustion" else ""
        out.append(f"{f['kind']} ({f['culprit'].get('service')}{pool})")
    return ", ".join(out)


START = time.time()


def main(argv):
    # Every address is on the loopback: no proxy, whatever the environment says.
    for k in ("NO_PROXY", "no_proxy"):
        os.environ[k] = ",".join(x for x in ("127.0.0.1,localhost", os.environ.get(k)) if x)
    names = argv or list(SCENARIOS)
    unknown = [n for n in names if n not in SCENARIOS]
    if unknown:
        print(f"unknown scenario(s): {' '.join(unknown)}; known: {' '.join(SCENARIOS)}", file=sys.stderr)
        return 2
    results = {n: run(n) for n in names}
    passed = sum(ok for ok, _ in results.values())
    failed = len(results) - passed
    log("")
    for n, (ok, brief) in results.items():
        log(f"  {'pass' if ok else 'FAIL'}  {n:32} {brief}")
    t0 = float(os.environ.get("REALAPP_T0") or START)
    log(f"realapp: took {time.time() - t0:.0f} s in all")
    log(f"realapp: {passed} passed, {failed} failed")
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
