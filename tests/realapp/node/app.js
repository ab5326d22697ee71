// The Node.js service of the real-application suite: express 5 and pg, run as
// `node --require @opentelemetry/auto-instrumentations-node/register app.js`
// with OTEL_* settings in the environment. Nothing in here knows about
// OpenTelemetry: every span comes from the auto-instrumentation (http,
// express, pg, pg-pool).
//
// Settings (environment):
//   REALAPP_PORT        port to listen on (127.0.0.1)
//   REALAPP_DB_URL      postgres:// URL of the suite's database (optional)
//   REALAPP_POOL_SIZE   pg.Pool max (default 20)
//   REALAPP_HASH_MS     CPU time of one GET /hash, calibrated at start (default 200)
//   REALAPP_HOLD_MS     what POST /stock/:id/reserve holds its row lock in the
//                       app between SELECT ... FOR UPDATE and UPDATE (default 60)
'use strict';

const crypto = require('node:crypto');
const express = require('express');
const pg = require('pg');

const port = Number(process.env.REALAPP_PORT || 0);
const hashMs = Number(process.env.REALAPP_HASH_MS || 200);
const holdMs = Number(process.env.REALAPP_HOLD_MS || 60);

// How many PBKDF2 iterations take hashMs of CPU here: measured once at start.
function calibrate() {
  const probe = 20000;
  let best = Infinity;
  for (let i = 0; i < 3; i++) {
    const t0 = process.hrtime.bigint();
    crypto.pbkdf2Sync('password', 'salt', probe, 64, 'sha512');
    best = Math.min(best, Number(process.hrtime.bigint() - t0) / 1e6);
  }
  return Math.max(1000, Math.round((probe * hashMs) / best));
}
const iterations = calibrate();

const pool = process.env.REALAPP_DB_URL
  ? new pg.Pool({
      connectionString: process.env.REALAPP_DB_URL,
      max: Number(process.env.REALAPP_POOL_SIZE || 20),
    })
  : null;

const app = express();

// Synchronous CPU work on the event loop: every other request waits.
app.get('/hash', (req, res) => {
  const salt = String(req.query.user || 'anonymous');
  const key = crypto.pbkdf2Sync('password', salt, iterations, 64, 'sha512');
  res.json({ hash: key.toString('hex').slice(0, 16), iterations });
});

// One fast indexed read.
app.get('/stock/:id', async (req, res) => {
  const { rows } = await pool.query('SELECT id, sku, qty FROM stock WHERE id = $1', [
    Number(req.params.id),
  ]);
  res.json(rows[0] || null);
});

// One transaction on a hot row: lock it, hold the lock in the app, update it.
app.post('/stock/:id/reserve', async (req, res) => {
  const id = Number(req.params.id);
  const client = await pool.connect();
  try {
    await client.query('BEGIN');
    const { rows } = await client.query('SELECT qty FROM stock WHERE id = $1 FOR UPDATE', [id]);
    await new Promise((resolve) => setTimeout(resolve, holdMs));
    await client.query('UPDATE stock SET qty = qty - 1 WHERE id = $1', [id]);
    await client.query('COMMIT');
    res.json({ id, qty: rows[0].qty - 1 });
  } catch (err) {
    await client.query('ROLLBACK').catch(() => {});
    throw err;
  } finally {
    client.release();
  }
});

// A loop by hand: the first ids, then one query per id, each awaited in turn
// (pool.query checks a connection out and back for every one).
app.get('/stock-report', async (req, res) => {
  const { rows } = await pool.query('SELECT id FROM stock ORDER BY id LIMIT $1', [10]);
  const items = [];
  for (const { id } of rows) {
    const item = await pool.query('SELECT id, sku, qty FROM stock WHERE id = $1', [id]);
    items.push(item.rows[0]);
  }
  res.json(items);
});

const server = app.listen(port, '127.0.0.1', () => {
  console.log(`listening on 127.0.0.1:${server.address().port} (hash: ${iterations} iterations)`);
});

function stop() {
  server.close(() => {
    (pool ? pool.end() : Promise.resolve()).finally(() => process.exit(0));
  });
  setTimeout(() => process.exit(0), 3000).unref();
}
process.on('SIGTERM', stop);
process.on('SIGINT', stop);
