// The Next.js gate: withGate() for App Router route handlers, gateRequest() for
// middleware.ts. Both speak web Request/Response only (no import of `next`), answer
// exactly as the Python integrations do (./problem.js), and run each count as one
// statement on the database handle they are given: on a pool it commits on its own,
// whatever the app's own transaction does.

import { randomUUID } from 'node:crypto';

import { gateTable } from './gates.js';
import { SkeneError, checkAndIncrement, refund } from './index.js';
import * as problem from './problem.js';

const ANONYMOUS = ['pass', '401'];
const ON_ERROR = ['503', 'open'];

function policyOf(options) {
  const { anonymous = 'pass', onError = '503', refundOnError = false } = options;
  if (!ANONYMOUS.includes(anonymous)) {
    throw new TypeError(`skene-pg: anonymous must be one of ${ANONYMOUS.join(', ')}, got ${anonymous}`);
  }
  if (!ON_ERROR.includes(onError)) {
    throw new TypeError(`skene-pg: onError must be one of ${ON_ERROR.join(', ')}, got ${onError}`);
  }
  if (!options.db) throw new TypeError('skene-pg: pass `db` (a pg Pool or a postgres.js sql)');
  return { anonymous, onError, refundOnError: Boolean(refundOnError) };
}

/** An idempotency key for one request's count; never the client's own header. */
function requestKey() {
  return `req:${randomUUID().replaceAll('-', '')}`;
}

async function customerOf(customer, request, context) {
  const found = typeof customer === 'function' ? await customer(request, context) : customer;
  return found === undefined || found === '' ? null : found;
}

/** The answer when the gate could not decide: 503, or null (let through) when failing open. */
function failedAnswer(error, policy, customer, logger) {
  const who = customer === null ? '' : ` for ${customer}`;
  if (policy.onError === 'open') {
    logger.warn(`skene: gate failed${who}, letting the request through: ${error.message}`);
    return null;
  }
  logger.error(`skene: gate failed${who}, answering 503: ${error.message}`);
  return problem.unavailable();
}

async function giveBack(db, customer, counted, logger) {
  for (const item of counted) {
    try {
      await refund(db, customer, item.feature, { amount: item.amount, idempotencyKey: item.key });
    } catch (error) {
      logger.error(`skene: refund of ${item.feature} for ${customer} failed: ${error.message}`);
    }
  }
}

/**
 * Count one request against `gates` (in feature order) for `customer`: the first block
 * answers 402 and gives back what the request counted before it; a database error
 * answers 503 (giving back likewise) or, failing open, lets the request through.
 */
async function gateFeatures(db, gates, customer, amount, policy, logger) {
  const result = { answer: null, decisions: [], counted: [] };
  if (gates.length === 0) return result;
  if (customer === null) {
    if (policy.anonymous === '401') result.answer = problem.anonymous(gates[0]);
    return result;
  }
  // Keys cost a write each; they are needed only to give counts back.
  const keyed = policy.refundOnError || gates.length > 1;
  for (const gate of gates) {
    const key = keyed ? requestKey() : null;
    let decision;
    try {
      decision = await checkAndIncrement(db, customer, gate.feature, { amount, idempotencyKey: key });
    } catch (error) {
      if (!(error instanceof SkeneError)) throw error;
      result.answer = failedAnswer(error, policy, customer, logger);
      if (result.answer !== null) {
        await giveBack(db, customer, result.counted, logger); // the request is not served
        result.counted = [];
      }
      return result;
    }
    result.decisions.push(decision);
    if (!decision.allowed) {
      await giveBack(db, customer, result.counted, logger);
      result.counted = [];
      result.answer = problem.blocked(decision, gate, new Date());
      return result;
    }
    if (key !== null) result.counted.push({ feature: gate.feature, key, amount });
  }
  return result;
}

/** The RateLimit headers of a request's tightest decision. */
function headersOf(decisions) {
  const decision = problem.tightest(decisions);
  return decision === null ? {} : problem.ratelimitHeaders(decision, new Date());
}

/** `response` with `headers` added (a copy when its headers are immutable). */
function withHeaders(response, headers) {
  const entries = Object.entries(headers);
  if (entries.length === 0) return response;
  try {
    for (const [name, value] of entries) response.headers.set(name, value);
    return response;
  } catch {
    const copy = new Response(response.body, response);
    for (const [name, value] of entries) copy.headers.set(name, value);
    return copy;
  }
}

/**
 * Gate an App Router route handler by one feature:
 *
 *   export const POST = withGate(handler, { db, feature: 'api_calls', customer });
 *
 * Allowed: the handler's Response with RateLimit headers. Blocked: a 402
 * application/problem+json (the handler does not run).
 */
export function withGate(handler, options) {
  const policy = policyOf(options);
  const { db, feature, customer, amount = 1, ttl = 10, logger = console } = options;
  if (typeof feature !== 'string' || feature === '') {
    throw new TypeError('skene-pg: withGate needs the `feature` to count');
  }
  return async function gated(request, context) {
    let target = { feature, name: feature, message: null, upgradeUrl: null };
    try {
      target = (await gateTable(db, { ttl, logger })).get(feature) ?? target;
    } catch (error) {
      if (!(error instanceof SkeneError)) throw error;
      const answer = failedAnswer(error, policy, null, logger);
      if (answer !== null) return problem.toResponse(answer);
    }
    const who = await customerOf(customer, request, context);
    const units = typeof amount === 'function' ? await amount(request, context) : amount;
    const result = await gateFeatures(db, [target], who, units, policy, logger);
    if (result.answer !== null) return problem.toResponse(result.answer);
    let response;
    try {
      response = await handler(request, context);
    } catch (error) {
      await giveBack(db, who, result.counted, logger);
      throw error;
    }
    if (typeof response?.status !== 'number') return response; // Next reports the handler's mistake
    if (response.status >= 500) await giveBack(db, who, result.counted, logger);
    return withHeaders(response, headersOf(result.decisions));
  };
}

/**
 * Gate a request by the `match` patterns of skene.gates() (cached `ttl` seconds), for
 * middleware.ts:
 *
 *   const gate = await gateRequest(request, { db, customer });
 *   return gate.response ?? NextResponse.next({ headers: gate.headers });
 *
 * `response` is the 402 (or 401/503) to answer with, null to let the request through;
 * `headers` the RateLimit headers for the response; `decisions` what was decided.
 */
export async function gateRequest(request, options) {
  const policy = { ...policyOf(options), refundOnError: false }; // middleware never sees the response
  const { db, customer, amount = 1, ttl = 10, logger = console } = options;
  const outcome = (answer, decisions = []) => ({
    response: answer === null ? null : problem.toResponse(answer),
    headers: answer === null ? headersOf(decisions) : {},
    decisions,
  });
  let table;
  try {
    table = await gateTable(db, { ttl, logger });
  } catch (error) {
    if (!(error instanceof SkeneError)) throw error;
    return outcome(failedAnswer(error, policy, null, logger));
  }
  const url = new URL(request.url);
  let path = url.pathname;
  try {
    path = decodeURIComponent(path);
  } catch {
    // a malformed escape: match the path as sent
  }
  const matched = table.matching(request.method, path);
  if (matched.length === 0) return outcome(null);
  const who = await customerOf(customer, request, undefined);
  const units = typeof amount === 'function' ? await amount(request) : amount;
  const result = await gateFeatures(db, matched, who, units, policy, logger);
  return outcome(result.answer, result.decisions);
}

export { clearGateCache } from './gates.js';
