-- The real-application suite's database, generated at each run (no data is
-- shipped): a small indexed catalogue, a 200,000-row table that the slow
-- aggregate scans without an index, the hot row of the lock scenario, and a
-- blog of 40 posts with 3 to 5 comments each (the N+1 scenarios).
CREATE TABLE items (
    id integer PRIMARY KEY,
    name text NOT NULL,
    price numeric(10, 2) NOT NULL
);
INSERT INTO items
SELECT i, 'item ' || i, (i % 97) + 0.99
FROM generate_series(1, 1000) AS i;

CREATE TABLE events (
    id integer PRIMARY KEY,
    region text NOT NULL,
    kind text NOT NULL,
    amount integer NOT NULL,
    note text NOT NULL
);
INSERT INTO events
SELECT i,
       'region-' || (i % 37),
       'kind-' || (i % 11),
       (i * 7919) % 1000,
       md5(i::text)
FROM generate_series(1, 200000) AS i;

CREATE TABLE stock (
    id integer PRIMARY KEY,
    sku text NOT NULL,
    qty integer NOT NULL
);
INSERT INTO stock
SELECT i, 'sku-' || i, 1000000
FROM generate_series(1, 10) AS i;

CREATE TABLE posts (
    id integer PRIMARY KEY,
    title text NOT NULL,
    body text NOT NULL
);
INSERT INTO posts
SELECT i, 'post ' || i, repeat(md5(i::text), 4)
FROM generate_series(1, 40) AS i;

CREATE TABLE comments (
    id integer PRIMARY KEY,
    post_id integer NOT NULL REFERENCES posts (id),
    body text NOT NULL
);
CREATE INDEX comments_post_id ON comments (post_id);
INSERT INTO comments
SELECT row_number() OVER (ORDER BY p, c), p, 'comment ' || c || ' on post ' || p
FROM generate_series(1, 40) AS p, generate_series(1, 3 + p % 3) AS c;

ANALYZE;
