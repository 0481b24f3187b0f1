// Running one statement on the caller's database handle: a node-postgres Pool, Client
// or PoolClient, or a postgres.js `sql` (also the `sql` of sql.begin / sql.reserve).
//
// Statements are never named: pg gets no `name:` (an unnamed statement, parsed and run
// in one round trip) and postgres.js runs them with `prepare: false` whatever the
// instance's own `prepare` setting, so every call is safe behind PgBouncer in
// transaction mode. Rows come back as arrays of text (the SQL casts every column), so
// neither driver's type parsers nor postgres.js column transforms change what we read.

import { toSkeneError } from './errors.js';

/** @returns {'pg' | 'postgres'} */
export function driverOf(db) {
  if (typeof db === 'function' && typeof db.unsafe === 'function') return 'postgres';
  if (db !== null && typeof db === 'object' && typeof db.query === 'function') return 'pg';
  throw new TypeError(
    'skene-pg: pass a node-postgres Pool/Client or a postgres.js sql instance as the database',
  );
}

/**
 * Run `text` with `params` ($1, $2, ...) and return its rows as arrays.
 * @param {any} db
 * @param {string} text
 * @param {unknown[]} params
 * @returns {Promise<unknown[][]>}
 */
export async function run(db, text, params) {
  const driver = driverOf(db);
  try {
    if (driver === 'postgres') {
      return await db.unsafe(text, params, { prepare: false }).values();
    }
    const result = await db.query({ text, values: params, rowMode: 'array' });
    return result.rows;
  } catch (error) {
    throw toSkeneError(error);
  }
}
