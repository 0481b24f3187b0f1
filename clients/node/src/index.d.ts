/**
 * skene-pg for Node: the SQL contract of skene-pg over your own node-postgres Pool or
 * postgres.js sql. Every count is an exact JS number (see Decision).
 */

/** A node-postgres Pool, Client or PoolClient (anything with pg's `query(config)`). */
export interface PgQueryable {
  query(config: { text: string; values?: unknown[]; rowMode?: 'array' }): Promise<{ rows: any[] }>;
}

/** A postgres.js `sql` (also the `sql` of `sql.begin(...)` or `sql.reserve()`). */
export interface PostgresJsSql {
  (...args: any[]): any;
  unsafe(query: string, parameters?: any[], options?: { prepare?: boolean }): any;
}

/** Where skene's functions are called: a pool commits each call on its own; a client
 * inside a transaction makes the call part of that transaction. */
export type Database = PgQueryable | PostgresJsSql;

export type Reason = 'ok' | 'limit_reached' | 'not_in_plan' | 'over_soft_limit' | 'duplicate';

/**
 * The gate's answer (skene.decision). Counts are JS numbers, exact up to
 * Number.MAX_SAFE_INTEGER; a larger value throws SkeneError code 'SKENE_UNSAFE_INTEGER'.
 */
export interface Decision {
  /** may the call go ahead */
  allowed: boolean;
  reason: Reason;
  feature: string;
  /** the customer's plan */
  plan: string;
  /** units counted in the current period, this call included when allowed */
  used: number;
  /** the limit; null when unlimited */
  usageLimit: number | null;
  /** usageLimit - used, never below 0; null when unlimited */
  remaining: number | null;
  /** end of the period (for rolling windows: when the next unit frees up); null: never resets */
  resetsAt: Date | null;
}

/** What skene.refund gave back, and the usage after it. */
export interface Refund {
  /** units given back; 0 when nothing was */
  refunded: number;
  reason: 'refunded' | 'not_counted' | 'expired';
  feature: string;
  plan: string;
  used: number;
  usageLimit: number | null;
  remaining: number | null;
  resetsAt: Date | null;
}

/** A `match` pattern of a feature: `*` within one path segment, `**` across segments. */
export interface MatchPattern {
  method?: string;
  path: string;
}

/** One feature as skene.gates() describes it to middleware. */
export interface Gate {
  feature: string;
  /** display name: `[features.X] name`, else the feature's own name */
  name: string;
  match: MatchPattern[];
  /** the freemium loop's message: the title of a blocked request's 402 */
  message: string | null;
  upgradeUrl: string | null;
}

/** Units: a safe integer number, a bigint, or a string of digits. */
export type Amount = number | bigint | string;

/** A skene call failed. */
export class SkeneError extends Error {
  constructor(
    message: string,
    fields?: { code?: string | null; hint?: string | null; detail?: string | null; cause?: unknown; row?: unknown },
  );
  name: 'SkeneError';
  /**
   * The SQLSTATE when the database raised it ('22023' bad input, '55000' no config
   * applied, '42501' missing grant, ...); null when no server answered (the driver's
   * error is in `cause`); 'SKENE_UNSAFE_INTEGER' when a count exceeds 2^53 - 1.
   */
  code: string | null;
  /** the database's HINT, e.g. "Defined features: api_calls, exports." */
  hint: string | null;
  detail: string | null;
  /** with SKENE_UNSAFE_INTEGER: the result row as the database sent it (text) */
  row?: unknown;
}

/** Whether an error is a deadlock, serialization failure or timeout (nothing changed: run it again). */
export function isRetryable(error: unknown): boolean;

/** Count `amount` (default 1) units of `feature` for a customer if the plan allows it, atomically. */
export function checkAndIncrement(
  db: Database,
  customerId: string,
  feature: string,
  options?: { amount?: Amount; idempotencyKey?: string | null },
): Promise<Decision>;

/** What checkAndIncrement would decide, counting nothing. */
export function check(
  db: Database,
  customerId: string,
  feature: string,
  options?: { amount?: Amount },
): Promise<Decision>;

/** Give back (up to `amount`; omitted: all) what a counted call with `idempotencyKey` consumed, at most once. */
export function refund(
  db: Database,
  customerId: string,
  feature: string,
  options: { idempotencyKey: string; amount?: Amount | null },
): Promise<Refund>;

/** Register or update a customer's contact details (null/undefined keeps the stored value; attributes are merged). */
export function identify(
  db: Database,
  customerId: string,
  details?: {
    email?: string | null;
    name?: string | null;
    attributes?: Record<string, unknown> | null;
    /** an IANA zone, e.g. 'Europe/London' */
    timezone?: string | null;
  },
): Promise<void>;

/** Record a customer's activity (retention loops, milestones). */
export function track(
  db: Database,
  customerId: string,
  event: string,
  options?: { properties?: Record<string, unknown>; occurredAt?: Date | string | null },
): Promise<void>;

/** skene.gates(): per feature its name, match patterns, freemium message and upgrade URL. */
export function gates(db: Database): Promise<Gate[]>;

/** A customer's unsubscribe token (HMAC-SHA256 of the id keyed with SKENE_UNSUBSCRIBE_SECRET, hex). Throws TypeError on an empty secret. */
export function unsubscribeToken(secret: string, customerId: string): string;

/** Whether `token` is the customer's unsubscribe token, compared in constant time. Throws TypeError on an empty secret. */
export function verifyUnsubscribeToken(secret: string, customerId: string, token: string): boolean;
