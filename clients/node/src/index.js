// skene-pg for Node: the SQL contract (skene.check_and_increment, check, refund,
// identify, track, gates) over the caller's node-postgres Pool or postgres.js sql, with
// typed results. Each call is one statement: on a pool it commits on its own; on a
// client inside a transaction it is part of that transaction.

import { createHmac, timingSafeEqual } from 'node:crypto';

import { run } from './db.js';
import { SkeneError, isRetryable } from './errors.js';

export { SkeneError, isRetryable };

// Every column as text: one parser for both drivers, whatever type parsers the app set.
const USAGE =
  'feature, plan, used::text, usage_limit::text, remaining::text, ' +
  `to_char(resets_at AT TIME ZONE 'UTC', 'YYYY-MM-DD"T"HH24:MI:SS.US"Z"')`;

/**
 * A bigint column as a JS number. Exact up to Number.MAX_SAFE_INTEGER (2^53 - 1); a
 * larger value throws SkeneError code 'SKENE_UNSAFE_INTEGER' rather than come back
 * rounded (`row` on the error has the columns as the database sent them).
 */
function integer(text, column, row) {
  if (text === null || text === undefined) return null;
  const value = Number(text);
  if (!Number.isSafeInteger(value)) {
    throw new SkeneError(
      `skene: ${column} = ${text} is beyond Number.MAX_SAFE_INTEGER; it cannot be returned exactly`,
      { code: 'SKENE_UNSAFE_INTEGER', row },
    );
  }
  return value;
}

function timestamp(text) {
  return text === null || text === undefined ? null : new Date(text);
}

function one(rows) {
  if (rows.length !== 1) throw new SkeneError(`skene: expected one row, got ${rows.length}`);
  return rows[0];
}

function decision(rows) {
  const row = one(rows);
  const [allowed, reason, feature, plan, used, usageLimit, remaining, resetsAt] = row;
  return {
    allowed: allowed === 'true',
    reason,
    feature,
    plan,
    used: integer(used, 'used', row),
    usageLimit: integer(usageLimit, 'usage_limit', row),
    remaining: integer(remaining, 'remaining', row),
    resetsAt: timestamp(resetsAt),
  };
}

function refundResult(rows) {
  const row = one(rows);
  const [refunded, reason, feature, plan, used, usageLimit, remaining, resetsAt] = row;
  return {
    refunded: integer(refunded, 'refunded', row),
    reason,
    feature,
    plan,
    used: integer(used, 'used', row),
    usageLimit: integer(usageLimit, 'usage_limit', row),
    remaining: integer(remaining, 'remaining', row),
    resetsAt: timestamp(resetsAt),
  };
}

/** An amount as the text of a bigint parameter (numbers, bigints and digit strings). */
function amountParam(amount, name = 'amount') {
  if (amount === null || amount === undefined) return null;
  if (typeof amount === 'bigint') return amount.toString();
  if (typeof amount === 'number' && Number.isSafeInteger(amount)) return String(amount);
  if (typeof amount === 'string' && /^-?\d+$/.test(amount)) return amount;
  throw new SkeneError(`skene: ${name} must be an integer, got ${String(amount)}`, {
    code: '22023',
    hint: 'Pass a whole number of units, e.g. 1.',
  });
}

/**
 * Count `amount` units of `feature` for a customer, if the plan allows it; atomically.
 */
export async function checkAndIncrement(db, customerId, feature, options = {}) {
  const { amount = 1, idempotencyKey = null } = options;
  const rows = await run(
    db,
    `SELECT allowed::text, reason, ${USAGE} ` +
      'FROM skene.check_and_increment($1::text, $2::text, $3::bigint, $4::text)',
    [customerId, feature, amountParam(amount), idempotencyKey],
  );
  return decision(rows);
}

/** What checkAndIncrement would decide, counting nothing. */
export async function check(db, customerId, feature, options = {}) {
  const { amount = 1 } = options;
  const rows = await run(
    db,
    `SELECT allowed::text, reason, ${USAGE} FROM skene.check($1::text, $2::text, $3::bigint)`,
    [customerId, feature, amountParam(amount)],
  );
  return decision(rows);
}

/**
 * Give back what a counted call with `idempotencyKey` consumed (up to `amount`; all of
 * it when amount is omitted), at most once.
 */
export async function refund(db, customerId, feature, options = {}) {
  const { amount = null, idempotencyKey = null } = options;
  const rows = await run(
    db,
    `SELECT refunded::text, reason, ${USAGE} ` +
      'FROM skene.refund($1::text, $2::text, $3::bigint, $4::text)',
    [customerId, feature, amountParam(amount), idempotencyKey],
  );
  return refundResult(rows);
}

// JSON goes as text (cast in SQL): postgres.js would encode a string given for a jsonb
// parameter as a JSON string.
function jsonParam(value) {
  return value === null || value === undefined ? null : JSON.stringify(value);
}

/** Register a customer or update their contact details (undefined/null keeps a value). */
export async function identify(db, customerId, details = {}) {
  const { email = null, name = null, attributes = null, timezone = null } = details;
  await run(db, 'SELECT skene.identify($1::text, $2::text, $3::text, $4::text::jsonb, $5::text)', [
    customerId,
    email,
    name,
    jsonParam(attributes),
    timezone,
  ]);
}

/** Record an activity event (retention loops, milestones). */
export async function track(db, customerId, event, options = {}) {
  const { properties = {}, occurredAt = null } = options;
  const params = [customerId, event, jsonParam(properties ?? {})];
  if (occurredAt === null || occurredAt === undefined) {
    await run(db, 'SELECT skene.track($1::text, $2::text, $3::text::jsonb)', params);
    return;
  }
  const at = occurredAt instanceof Date ? occurredAt.toISOString() : String(occurredAt);
  await run(db, 'SELECT skene.track($1::text, $2::text, $3::text::jsonb, $4::timestamptz)', [
    ...params,
    at,
  ]);
}

/** skene.gates(): per feature its display name, match patterns, message and upgrade URL. */
export async function gates(db) {
  const rows = await run(
    db,
    'SELECT feature, name, match::text, message, upgrade_url FROM skene.gates()',
    [],
  );
  return rows.map(([feature, name, match, message, upgradeUrl]) => ({
    feature,
    name: name || feature,
    match: match ? JSON.parse(match) : [],
    message: message ?? null,
    upgradeUrl: upgradeUrl ?? null,
  }));
}

/**
 * The unsubscribe token of a customer, as skene-pg listen puts it in email links:
 * HMAC-SHA256 of the customer id (UTF-8) keyed with SKENE_UNSUBSCRIBE_SECRET, in hex.
 */
export function unsubscribeToken(secret, customerId) {
  requireSecret(secret);
  return createHmac('sha256', secret).update(String(customerId), 'utf8').digest('hex');
}

/** Whether `token` is the customer's unsubscribe token (compared in constant time). */
export function verifyUnsubscribeToken(secret, customerId, token) {
  const expected = Buffer.from(unsubscribeToken(secret, customerId), 'utf8');
  const given = Buffer.from(typeof token === 'string' ? token : '', 'utf8');
  return given.length === expected.length && timingSafeEqual(given, expected);
}

function requireSecret(secret) {
  if (typeof secret !== 'string' || secret === '') {
    // An empty key would make every token forgeable.
    throw new TypeError('skene-pg: the unsubscribe secret (SKENE_UNSUBSCRIBE_SECRET) is empty');
  }
}
