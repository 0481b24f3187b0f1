// The HTTP answers of a gate, the same as the Python integrations give
// (skene_pg/http_problem.py): a blocked request's 402 as an RFC 9457 problem
// (application/problem+json), the RateLimit headers of an allowed one, and the 401 and
// 503 a gate may answer instead. Pure: a decision (and the feature's gate, and the
// time) in; a status, a body and headers out. tests/integrations/problem_vectors.json
// pins the output for every language.

export const CONTENT_TYPE = 'application/problem+json';
// Problem types are tag URIs (RFC 4151): stable names that are not meant to be fetched.
export const TYPE_PREFIX = 'tag:skene-pg,2025:';
const DEFAULT_TITLES = {
  limit_reached: 'Usage limit reached',
  not_in_plan: 'Not included in your plan',
};

/** ISO 8601 in UTC with a Z: seconds precision unless there is more (as Python's isoformat). */
export function iso(at) {
  if (at === null || at === undefined) return null;
  const text = at.toISOString(); // 2026-04-01T00:00:00.000Z
  const ms = at.getUTCMilliseconds();
  const seconds = text.slice(0, 19);
  return ms === 0 ? `${seconds}Z` : `${seconds}.${String(ms).padStart(3, '0')}000Z`;
}

/** Whole seconds from `now` until `at`, rounded up (never early), never negative. */
export function secondsUntil(at, now) {
  return Math.max(0, Math.ceil((at.getTime() - now.getTime()) / 1000));
}

/**
 * RateLimit-Limit, -Remaining and -Reset (seconds) for a limited feature; none for an
 * unlimited one, and no Reset when usage never resets or waiting can't help.
 */
export function ratelimitHeaders(decision, now = new Date()) {
  if (decision.usageLimit === null || decision.usageLimit === undefined) return {};
  const headers = {
    'RateLimit-Limit': String(decision.usageLimit),
    'RateLimit-Remaining': String(decision.remaining || 0),
  };
  if (decision.resetsAt && decision.reason !== 'not_in_plan') {
    headers['RateLimit-Reset'] = String(secondsUntil(decision.resetsAt, now));
  }
  return headers;
}

/** Of a request's decisions, the one whose headers it carries: the limited feature with the fewest units left. */
export function tightest(decisions) {
  let best = null;
  for (const d of decisions) {
    if (d.usageLimit === null || d.usageLimit === undefined) continue;
    if (best === null || (d.remaining || 0) < (best.remaining || 0)) best = d;
  }
  return best;
}

// Python's str() of a value in an f-string: None for null.
const py = (value) => (value === null || value === undefined ? 'None' : String(value));

/** The 402 of a blocked call; its title is the freemium loop's message. */
export function blocked(decision, gate, now = new Date()) {
  const name = gate ? gate.name : decision.feature;
  const detail =
    decision.reason === 'not_in_plan'
      ? `${py(name)} is not included in the ${py(decision.plan)} plan.`
      : `${py(name)}: ${py(decision.used)} of ${py(decision.usageLimit)} used on the ${py(decision.plan)} plan.`;
  const body = {
    type: TYPE_PREFIX + decision.reason,
    title: (gate ? gate.message : null) || DEFAULT_TITLES[decision.reason] || 'Blocked',
    status: 402,
    detail,
    reason: decision.reason,
    feature: decision.feature,
    plan: decision.plan,
    used: decision.used,
    limit: decision.usageLimit,
    remaining: decision.remaining,
    resets_at: iso(decision.resetsAt),
    upgrade_url: gate ? (gate.upgradeUrl ?? null) : null,
  };
  const headers = { 'Content-Type': CONTENT_TYPE, ...ratelimitHeaders(decision, now) };
  if ('RateLimit-Reset' in headers) headers['Retry-After'] = headers['RateLimit-Reset'];
  return { status: 402, body, headers };
}

/** 401 for a request with no customer, when anonymous requests are refused. */
export function anonymous(gate) {
  const body = {
    type: `${TYPE_PREFIX}anonymous`,
    title: 'Sign in to continue',
    status: 401,
    detail: `${py(gate.name)} is metered per customer: this request has none.`,
    feature: gate.feature,
  };
  return { status: 401, body, headers: { 'Content-Type': CONTENT_TYPE } };
}

/** 503 when the gate could not decide (the database failed), unless failing open. */
export function unavailable() {
  const body = {
    type: `${TYPE_PREFIX}unavailable`,
    title: 'Service unavailable',
    status: 503,
    detail: 'Usage limits could not be checked; try again shortly.',
  };
  return { status: 503, body, headers: { 'Content-Type': CONTENT_TYPE } };
}

// Python's json.dumps defaults: ", " and ": " separators, non-ASCII (and DEL) escaped as
// \uXXXX, so a body is byte for byte what the Python integrations send.
function escapeString(text) {
  return JSON.stringify(text).replace(
    /[\u007f-\uffff]/g,
    (c) => `\\u${c.charCodeAt(0).toString(16).padStart(4, '0')}`,
  );
}

/** JSON text as Python's json.dumps(value) writes it. */
export function pythonJson(value) {
  if (value === null || value === undefined) return 'null';
  if (typeof value === 'string') return escapeString(value);
  if (typeof value === 'number' || typeof value === 'boolean') return JSON.stringify(value);
  if (Array.isArray(value)) return `[${value.map(pythonJson).join(', ')}]`;
  const items = Object.entries(value).map(([k, v]) => `${escapeString(k)}: ${pythonJson(v)}`);
  return `{${items.join(', ')}}`;
}

/** The body of an answer as sent: JSON text, or '' when it has none. */
export function content(answer) {
  return answer.body === null || answer.body === undefined ? '' : pythonJson(answer.body);
}

/** An answer as a web Response (App Router route handlers, middleware). */
export function toResponse(answer) {
  return new Response(content(answer), { status: answer.status, headers: answer.headers });
}
