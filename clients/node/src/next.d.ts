/** The Next.js gate: withGate() for route handlers, gateRequest() for middleware.ts. */
import type { Amount, Database, Decision } from './index.js';

/** The customer a request is for; null (or undefined, or '') when nobody is signed in. */
export type CustomerOf<Req extends Request = Request, Ctx = unknown> =
  | string
  | null
  | ((request: Req, context: Ctx) => string | null | undefined | Promise<string | null | undefined>);

export interface GateOptions {
  /** your node-postgres Pool or postgres.js sql; each count commits on its own when it is a pool */
  db: Database;
  /** no customer: 'pass' (ungated, the default) or '401' */
  anonymous?: 'pass' | '401';
  /** the database failed: '503' (the default) or 'open' (let the request through); logged either way */
  onError?: '503' | 'open';
  /** seconds skene.gates() is cached (default 10) */
  ttl?: number;
  /** where failures are logged (default console) */
  logger?: Pick<Console, 'warn' | 'error'>;
}

export interface WithGateOptions<Req extends Request = Request, Ctx = unknown> extends GateOptions {
  feature: string;
  customer: CustomerOf<Req, Ctx>;
  /** units per request (default 1) */
  amount?: Amount | ((request: Req, context: Ctx) => Amount | Promise<Amount>);
  /** give the count back when the handler throws or answers 5xx (default false) */
  refundOnError?: boolean;
}

/**
 * Gate an App Router route handler by one feature. Allowed: the handler's response
 * with RateLimit headers; blocked: a 402 application/problem+json, the handler not run.
 */
export function withGate<Req extends Request, Ctx>(
  handler: (request: Req, context: Ctx) => Response | Promise<Response>,
  options: WithGateOptions<Req, Ctx>,
): (request: Req, context: Ctx) => Promise<Response>;

export interface GateRequestOptions<Req extends Request = Request> extends GateOptions {
  customer: CustomerOf<Req, undefined>;
  amount?: Amount | ((request: Req) => Amount | Promise<Amount>);
}

export interface GateOutcome {
  /** the 402 (or 401/503) to answer with; null: let the request through */
  response: Response | null;
  /** RateLimit headers for the response when let through */
  headers: Record<string, string>;
  /** what was decided, one per matched feature counted */
  decisions: Decision[];
}

/**
 * Gate a request by the `match` patterns of skene.gates() (middleware.ts, Node.js
 * runtime): every matching feature is counted, in feature name order.
 */
export function gateRequest<Req extends Request>(
  request: Req,
  options: GateRequestOptions<Req>,
): Promise<GateOutcome>;

/** Forget the cached skene.gates() of a database. */
export function clearGateCache(db: Database): void;
