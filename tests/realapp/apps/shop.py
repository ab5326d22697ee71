"""The Python service of the real-application suite: one Flask application,
run under `opentelemetry-instrument gunicorn` as several services (the suite
names each with OTEL_SERVICE_NAME). Nothing in here knows about OpenTelemetry:
every span comes from the auto-instrumentation (Flask, requests, SQLAlchemy,
psycopg2, and threading, which carries the trace context into a thread
pool's threads).

Settings (environment):
  REALAPP_DB_URL          SQLAlchemy URL of the suite's PostgreSQL (optional)
  REALAPP_POOL_SIZE       QueuePool size (default 5)
  REALAPP_MAX_OVERFLOW    QueuePool overflow (default 0)
  REALAPP_POOL_TIMEOUT    seconds a request may wait for a connection (default 60)
  REALAPP_HOLD_MS         how long /orders/<id> and /orders/<id>/statement hold
                          their connection between two fast queries (default 100)
  REALAPP_DOWNSTREAM      URL that /relay and /feed/<id> call with requests
                          (optional); the base URL of the account parts for
                          /home/<id>
  REALAPP_DOWNSTREAM_TIMEOUT  requests' timeout for it, in seconds (default 2)
  REALAPP_SLEEP_MS        what /relay sleeps when it has no downstream (default 0)
"""

import os
import time
from concurrent.futures import ThreadPoolExecutor

import requests
from flask import Flask, abort, jsonify, request
from sqlalchemy import ForeignKey, Integer, Numeric, String, create_engine, func, select, text
from sqlalchemy.orm import DeclarativeBase, Mapped, Session, joinedload, mapped_column, relationship, selectinload
from sqlalchemy.pool import QueuePool

app = Flask(__name__)

DB_URL = os.environ.get("REALAPP_DB_URL")
HOLD = int(os.environ.get("REALAPP_HOLD_MS", "100")) / 1000.0
DOWNSTREAM = os.environ.get("REALAPP_DOWNSTREAM")
DOWNSTREAM_TIMEOUT = float(os.environ.get("REALAPP_DOWNSTREAM_TIMEOUT", "2"))
SLEEP = int(os.environ.get("REALAPP_SLEEP_MS", "0")) / 1000.0

engine = None
if DB_URL:
    engine = create_engine(
        DB_URL,
        poolclass=QueuePool,
        pool_size=int(os.environ.get("REALAPP_POOL_SIZE", "5")),
        max_overflow=int(os.environ.get("REALAPP_MAX_OVERFLOW", "0")),
        pool_timeout=float(os.environ.get("REALAPP_POOL_TIMEOUT", "60")),
    )

# One HTTP session per worker thread would be more usual; a module-level
# session is shared safely by requests for simple GETs.
http = requests.Session()


class Base(DeclarativeBase):
    pass


class Item(Base):
    __tablename__ = "items"
    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    name: Mapped[str] = mapped_column(String)
    price: Mapped[float] = mapped_column(Numeric(10, 2))


class Stock(Base):
    __tablename__ = "stock"
    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    sku: Mapped[str] = mapped_column(String)
    qty: Mapped[int] = mapped_column(Integer)


class Post(Base):
    __tablename__ = "posts"
    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    title: Mapped[str] = mapped_column(String)
    body: Mapped[str] = mapped_column(String)
    # The default loader strategy, lazy="select": each post's comments are
    # read by a query of their own the first time they are touched.
    comments: Mapped[list["Comment"]] = relationship(back_populates="post")


class Comment(Base):
    __tablename__ = "comments"
    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    post_id: Mapped[int] = mapped_column(ForeignKey("posts.id"))
    body: Mapped[str] = mapped_column(String)
    post: Mapped[Post] = relationship(back_populates="comments")


PAGE_SIZE = 20

# How /posts loads the page's comments (?load=...): lazily (None: the
# relationship's default), in one more query `IN` the page's ids, or in the
# page's own query by a LEFT OUTER JOIN.
COMMENT_LOADERS = {
    "lazy": None,
    "selectin": selectinload(Post.comments),
    "joined": joinedload(Post.comments),
}

# The parts of an account page that /home/<id> fetches from the accounts
# service, and how long the accounts service takes to answer each (ms): one
# after another they take their sum, at once the longest.
ACCOUNT_PARTS = {"profile": 60, "cart": 80, "recommendations": 120}


@app.get("/ready")
def ready():
    """Readiness for the suite (excluded from tracing by
    OTEL_PYTHON_FLASK_EXCLUDED_URLS): answers once the worker is up."""
    return "ok"


@app.get("/orders/<int:item_id>")
def order_held_in_app(item_id):
    """ORM: a fast query, the connection held in Python, another fast query."""
    with Session(engine) as session:
        item = session.get(Item, item_id)
        time.sleep(HOLD)
        stock = session.scalars(select(Stock).where(Stock.id == 1 + item_id % 10)).one()
        return jsonify(item=item.name, price=float(item.price), qty=stock.qty)


@app.get("/orders/<int:item_id>/statement")
def order_held_by_statement(item_id):
    """Core: a fast query, the connection held by the database, a fast query."""
    with engine.connect() as conn:
        name = conn.execute(text("SELECT name FROM items WHERE id = :id"), {"id": item_id}).scalar_one()
        conn.execute(text("SELECT pg_sleep(:s)"), {"s": HOLD})
        qty = conn.execute(text("SELECT qty FROM stock WHERE id = :id"), {"id": 1 + item_id % 10}).scalar_one()
        return jsonify(item=name, qty=qty)


@app.get("/items/<int:item_id>")
def item(item_id):
    """Core: one fast indexed lookup."""
    with engine.connect() as conn:
        row = conn.execute(text("SELECT id, name, price FROM items WHERE id = :id"), {"id": item_id}).one()
        return jsonify(id=row.id, name=row.name, price=float(row.price))


@app.get("/report")
def report():
    """Core: an aggregate over the 200,000 events that no index helps."""
    with engine.connect() as conn:
        rows = conn.execute(
            text(
                "SELECT region, count(DISTINCT note) AS notes, avg(amount) AS amount "
                "FROM events GROUP BY region ORDER BY notes DESC"
            )
        ).all()
        return jsonify(regions=len(rows))


@app.get("/relay")
def relay():
    """Call the downstream service (no deadline sent: only requests' own
    timeout), or sleep when this is the last hop."""
    if DOWNSTREAM:
        try:
            r = http.get(DOWNSTREAM, timeout=DOWNSTREAM_TIMEOUT)
        except requests.Timeout as e:
            return jsonify(error=f"downstream timed out: {e}"), 504
        except requests.ConnectionError as e:
            return jsonify(error=f"downstream unreachable: {e}"), 502
        return jsonify(downstream=r.status_code), r.status_code
    time.sleep(SLEEP)
    return jsonify(slept_ms=int(SLEEP * 1000))


@app.get("/checkout/<int:item_id>")
def checkout(item_id):
    """A fast lookup, then the stock from the downstream service."""
    with engine.connect() as conn:
        name = conn.execute(text("SELECT name FROM items WHERE id = :id"), {"id": item_id}).scalar_one()
    r = http.get(f"{DOWNSTREAM}/{1 + item_id % 10}", timeout=DOWNSTREAM_TIMEOUT)
    r.raise_for_status()
    return jsonify(item=name, stock=r.json())


@app.get("/posts")
def posts():
    """ORM: a page of 20 posts (?page=N, from 1) with their comments.
    ?load=lazy (the default) reads each post's comments when the page renders
    them, one query per post (the N+1); ?load=selectin or ?load=joined reads
    them with the page (one more query, or none)."""
    load = request.args.get("load", "lazy")
    if load not in COMMENT_LOADERS:
        abort(400, f"load must be one of {', '.join(COMMENT_LOADERS)}")
    page = request.args.get("page", 1, type=int)
    if page < 1:
        abort(400, "page counts from 1")
    query = select(Post).order_by(Post.id).limit(PAGE_SIZE).offset((page - 1) * PAGE_SIZE)
    if COMMENT_LOADERS[load] is not None:
        query = query.options(COMMENT_LOADERS[load])
    with Session(engine) as session:
        return jsonify(posts=render_posts(session.scalars(query).unique().all()))


def render_posts(page):
    """The page's posts with their comments (read by each post's loader)."""
    return [{"id": p.id, "title": p.title, "comments": [c.body for c in p.comments]} for p in page]


@app.get("/posts/stats")
def post_stats():
    """ORM: three different fast queries, one after another."""
    with Session(engine) as session:
        posts = session.scalar(select(func.count()).select_from(Post))
        comments = session.scalar(select(func.count()).select_from(Comment))
        busiest = session.execute(
            select(Comment.post_id, func.count().label("n")).group_by(Comment.post_id).order_by(text("n DESC"), Comment.post_id).limit(1)
        ).one()
        return jsonify(posts=posts, comments=comments, busiest_post=busiest.post_id)


def account_part(name, ms):
    """GET /<name>/<user_id>: one part of an account page, in `ms`."""

    def part(user_id):
        time.sleep(ms / 1000.0)
        return jsonify(part=name, user=user_id)

    app.add_url_rule(f"/{name}/<int:user_id>", name, part)


for _name, _ms in ACCOUNT_PARTS.items():
    account_part(_name, _ms)


@app.get("/home/<int:user_id>")
def home(user_id):
    """An account page: the user's profile, cart and recommendations from
    the accounts service (REALAPP_DOWNSTREAM), one after another, or at once
    with ?parallel=1 (a thread each)."""
    urls = [f"{DOWNSTREAM}/{name}/{user_id}" for name in ACCOUNT_PARTS]
    if request.args.get("parallel"):
        with ThreadPoolExecutor(max_workers=len(urls)) as pool:
            parts = list(pool.map(fetch_json, urls))
    else:
        parts = [fetch_json(url) for url in urls]
    return jsonify(parts=parts)


@app.get("/feed/<int:user_id>")
def feed(user_id):
    """The first page of posts, their comments read lazily (one query per
    post), while a thread fetches recommendations from the downstream
    service (REALAPP_DOWNSTREAM), which takes longer: the page waits on the
    recommendations, not on the comments."""
    with ThreadPoolExecutor(max_workers=1) as pool:
        recommendations = pool.submit(fetch_json, f"{DOWNSTREAM}?user={user_id}")
        with Session(engine) as session:
            page = render_posts(session.scalars(select(Post).order_by(Post.id).limit(PAGE_SIZE)).all())
        return jsonify(posts=page, recommendations=recommendations.result())


def fetch_json(url):
    """GET url from a downstream service, its JSON answer."""
    r = http.get(url, timeout=DOWNSTREAM_TIMEOUT)
    r.raise_for_status()
    return r.json()
