// The databases the tests run against. pytest (tests/node) starts a real PostgreSQL,
// migrates a database, applies the test catalogue (tests/node/conftest.py) with skene's
// clock fixed at 2026-03-10 12:00 UTC, and passes its URL; with the suite's PgBouncer
// (transaction mode) it passes that URL too.

import { randomUUID } from 'node:crypto';

import pg from 'pg';
import postgres from 'postgres';

export const DATABASE_URL = process.env.SKENE_TEST_DATABASE_URL;
export const POOLED_URL = process.env.SKENE_TEST_POOLED_URL;
export const NO_DATABASE = DATABASE_URL ? false : 'SKENE_TEST_DATABASE_URL is not set (run through pytest tests/node)';
export const NO_POOLER = POOLED_URL
  ? false
  : 'no PgBouncer: SKENE_TEST_POOLED_URL is not set (the suite has no pooler fixture)';

/** A customer id of its own for each test (Clerk-style). */
export function customer(prefix = 'user') {
  return `${prefix}_${randomUUID().replaceAll('-', '').slice(0, 20)}`;
}

/**
 * The database handles the client is tested on: node-postgres and postgres.js, directly
 * and through PgBouncer. Each `open(max)` gives { db, close }.
 */
export function targets() {
  const list = [];
  const add = (name, url, skip) => {
    list.push({
      name: `pg ${name}`,
      driver: 'pg',
      skip,
      open(max = 4) {
        const db = new pg.Pool({ connectionString: url, max });
        return { db, close: () => db.end() };
      },
    });
    list.push({
      name: `postgres.js ${name}`,
      driver: 'postgres',
      skip,
      open(max = 4) {
        // Through a transaction pooler an app's postgres.js needs prepare: false for its
        // own queries; skene's are unnamed either way. Directly, the default (prepare on).
        const options = name === 'through PgBouncer' ? { max, prepare: false } : { max };
        const db = postgres(url, { ...options, onnotice: () => {} });
        return { db, close: () => db.end({ timeout: 5 }) };
      },
    });
  };
  add('direct', DATABASE_URL, NO_DATABASE);
  add('through PgBouncer', POOLED_URL, NO_DATABASE || NO_POOLER);
  return list;
}

/** A plain node-postgres pool on the direct URL, for looking at what happened. */
export function inspector() {
  return new pg.Pool({ connectionString: DATABASE_URL, max: 2 });
}
