-- The real-application suite's database, generated at each run (no data is
-- shipped): a small indexed catalogue, a 200,000-row table that the slow
-- aggregate scans without an index, and the hot row of the lock scenario.
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

ANALYZE;
