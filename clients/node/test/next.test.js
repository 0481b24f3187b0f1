// withGate and gateRequest with web Requests against the real database: what a route
// handler and middleware.ts answer (the example app is driven through `next start` by
// tests/node/test_nextjs_example.py).

import assert from 'node:assert/strict';
import { after, before, describe, test } from 'node:test';

import pg from 'pg';

import { check, checkAndIncrement } from '../src/index.js';
import { clearGateCache, gateRequest, withGate } from '../src/next.js';
import * as problem from '../src/problem.js';
import { DATABASE_URL, NO_DATABASE, customer } from './helpers.js';

const MONTH_END = '2026-04-01T00:00:00Z';
const UPGRADE = 'https://app.example.com/billing';

/** A logger that keeps what it was told. */
function recorder() {
  const lines = [];
  return {
    lines,
    warn: (text) => lines.push(['warn', text]),
    error: (text) => lines.push(['error', text]),
  };
}

const post = (path, user) =>
  new Request(`http://localhost${path}`, {
    method: 'POST',
    headers: user ? { 'x-user-id': user } : {},
  });
const fromHeader = (request) => request.headers.get('x-user-id');

describe('withGate', { skip: NO_DATABASE }, () => {
  let db;
  let look;
  before(() => {
    db = new pg.Pool({ connectionString: DATABASE_URL, max: 4 });
    look = new pg.Pool({ connectionString: DATABASE_URL, max: 1 });
  });
  after(async () => {
    await db?.end();
    await look?.end();
  });

  const limit = (id, feature, n) =>
    look.query('SELECT skene.set_limit_override($1, $2, $3)', [id, feature, n]);

  test('allowed: the handler runs and its response carries RateLimit headers; then a 402', async () => {
    const id = customer();
    await limit(id, 'api_calls', 3);
    let ran = 0;
    const POST = withGate(
      async (request, { params }) => {
        ran += 1;
        return Response.json({ id: (await params).id });
      },
      { db, feature: 'api_calls', customer: fromHeader },
    );
    const context = { params: Promise.resolve({ id: 'f_1' }) };
    for (let i = 1; i <= 3; i += 1) {
      const response = await POST(post('/api/features/f_1', id), context);
      assert.equal(response.status, 200);
      assert.deepEqual(await response.json(), { id: 'f_1' });
      assert.equal(response.headers.get('ratelimit-limit'), '3');
      assert.equal(response.headers.get('ratelimit-remaining'), String(3 - i));
      assert.match(response.headers.get('ratelimit-reset'), /^\d+$/);
    }
    const blocked = await POST(post('/api/features/f_1', id), context);
    assert.equal(ran, 3); // not for the blocked request
    assert.equal(blocked.status, 402);
    const body = await blocked.json();
    assert.deepEqual(body, {
      type: 'tag:skene-pg,2025:limit_reached',
      title: "You've reached your free tier limit. Upgrade to continue.",
      status: 402,
      detail: 'API calls: 3 of 3 used on the free plan.',
      reason: 'limit_reached',
      feature: 'api_calls',
      plan: 'free',
      used: 3,
      limit: 3,
      remaining: 0,
      resets_at: MONTH_END,
      upgrade_url: UPGRADE,
    });
    assert.equal(blocked.headers.get('content-type'), 'application/problem+json');
    assert.equal(blocked.headers.get('ratelimit-limit'), '3');
    assert.equal(blocked.headers.get('ratelimit-remaining'), '0');
    assert.equal(blocked.headers.get('retry-after'), blocked.headers.get('ratelimit-reset'));
    assert.equal((await check(db, id, 'api_calls')).used, 3);
  });

  test('amount per request; a redirect (immutable headers) still gets its headers', async () => {
    const id = customer();
    const POST = withGate(() => Response.redirect('https://example.com/done', 303), {
      db,
      feature: 'exports',
      customer: id,
      amount: async (request) => Number(new URL(request.url).searchParams.get('n')),
    });
    const response = await POST(post('/api/exports?n=2'), undefined);
    assert.equal(response.status, 303);
    assert.equal(response.headers.get('location'), 'https://example.com/done');
    assert.equal(response.headers.get('ratelimit-remaining'), '1');
    const blocked = await POST(post('/api/exports?n=2'), undefined); // 2 more than the 1 left
    assert.equal(blocked.status, 402);
    assert.equal((await blocked.json()).title, 'Free plans include 3 exports a month.');
  });

  test('anonymous: passes ungated by default, or 401', async () => {
    const handler = () => new Response('ok');
    const open = withGate(handler, { db, feature: 'api_calls', customer: fromHeader });
    const response = await open(post('/api/features/x'), undefined);
    assert.equal(response.status, 200);
    assert.equal(response.headers.get('ratelimit-limit'), null);

    const closed = withGate(handler, { db, feature: 'api_calls', customer: fromHeader, anonymous: '401' });
    const refused = await closed(post('/api/features/x'), undefined);
    assert.equal(refused.status, 401);
    assert.equal(refused.headers.get('content-type'), 'application/problem+json');
    assert.deepEqual(await refused.json(), {
      type: 'tag:skene-pg,2025:anonymous',
      title: 'Sign in to continue',
      status: 401,
      detail: 'API calls is metered per customer: this request has none.',
      feature: 'api_calls',
    });
  });

  test('refundOnError: a handler that throws or answers 5xx gets its count back', async () => {
    const id = customer();
    const failing = withGate(
      (request) => {
        if (request.headers.get('x-fail') === 'throw') throw new Error('boom');
        return new Response('down', { status: 502 });
      },
      { db, feature: 'api_calls', customer: id, refundOnError: true },
    );
    const throwing = new Request('http://localhost/api/features/a', { method: 'POST', headers: { 'x-fail': 'throw' } });
    await assert.rejects(failing(throwing, undefined), /boom/);
    assert.equal((await failing(post('/api/features/a'), undefined)).status, 502);
    assert.equal((await check(db, id, 'api_calls')).used, 0);

    const kept = withGate(() => new Response('down', { status: 500 }), { db, feature: 'api_calls', customer: id });
    await kept(post('/api/features/a'), undefined);
    assert.equal((await check(db, id, 'api_calls')).used, 1); // without refundOnError: counted
  });

  test('the database fails: 503 problem, or through when failing open; logged', async () => {
    const down = new pg.Pool({ connectionString: 'postgresql://nobody@127.0.0.1:1/none', max: 1 });
    try {
      const logger = recorder();
      const strict = withGate(() => new Response('ok'), { db: down, feature: 'api_calls', customer: 'c', logger });
      const refused = await strict(post('/api/features/a'), undefined);
      assert.equal(refused.status, 503);
      assert.deepEqual(await refused.json(), problem.unavailable().body);
      assert.equal(logger.lines[0][0], 'error');

      const open = withGate(() => new Response('ok'), {
        db: down,
        feature: 'api_calls',
        customer: 'c',
        onError: 'open',
        logger,
      });
      const through = await open(post('/api/features/a'), undefined);
      assert.equal(through.status, 200);
      assert.ok(logger.lines.slice(1).every(([level]) => level === 'warn'));
    } finally {
      await down.end();
    }
  });

  test('bad options are refused when the route is defined', () => {
    assert.throws(() => withGate(() => new Response(), { feature: 'api_calls', customer: 'c' }), TypeError);
    assert.throws(() => withGate(() => new Response(), { db, customer: 'c' }), TypeError);
    assert.throws(() => withGate(() => new Response(), { db, feature: 'x', customer: 'c', onError: 'ignore' }), TypeError);
  });
});

describe('gateRequest', { skip: NO_DATABASE }, () => {
  let db;
  before(() => {
    db = new pg.Pool({ connectionString: DATABASE_URL, max: 4 });
  });
  after(() => db?.end());

  test('counts every matching feature in name order; the first block refunds the others', async () => {
    const id = customer();
    // POST /api/features/* matches api_calls (100 a month) and exports (3 a month)
    for (let i = 1; i <= 3; i += 1) {
      const gate = await gateRequest(post('/api/features/f_9', id), { db, customer: fromHeader });
      assert.equal(gate.response, null);
      assert.deepEqual(
        gate.decisions.map((d) => [d.feature, d.used]),
        [
          ['api_calls', i],
          ['exports', i],
        ],
      );
      // the tightest feature's headers: exports
      assert.equal(gate.headers['RateLimit-Limit'], '3');
      assert.equal(gate.headers['RateLimit-Remaining'], String(3 - i));
    }
    const blocked = await gateRequest(post('/api/features/f_9', id), { db, customer: fromHeader });
    assert.equal(blocked.response.status, 402);
    assert.deepEqual(blocked.headers, {});
    const body = await blocked.response.json();
    assert.deepEqual([body.feature, body.title, body.used, body.limit], [
      'exports',
      'Free plans include 3 exports a month.',
      3,
      3,
    ]);
    // the blocked request was counted against api_calls first, then given back
    assert.equal((await check(db, id, 'api_calls')).used, 3);
  });

  test('requests no pattern matches pass untouched, uncounted', async () => {
    const id = customer();
    for (const request of [
      new Request('http://localhost/api/features/f_1', { headers: { 'x-user-id': id } }), // GET
      post('/api/features/f_1/comments', id), // * stays within one segment
      post('/api/other', id),
    ]) {
      const gate = await gateRequest(request, { db, customer: fromHeader });
      assert.deepEqual(gate, { response: null, headers: {}, decisions: [] });
    }
    assert.equal((await check(db, id, 'api_calls')).used, 0);
  });

  test('** spans segments, any method; the path is matched decoded', async () => {
    const id = customer();
    const deep = await gateRequest(post('/api/exports/2026/03/csv', id), { db, customer: id });
    assert.deepEqual(deep.decisions.map((d) => d.feature), ['exports']);
    const encoded = await gateRequest(post('/api/features/a%20b', id), { db, customer: id });
    assert.deepEqual(encoded.decisions.map((d) => d.feature), ['api_calls', 'exports']);
    const sso = await gateRequest(new Request('http://localhost/sso/saml/login'), { db, customer: id });
    assert.equal(sso.response.status, 402);
    assert.deepEqual(
      [...sso.response.headers.keys()].sort(),
      ['content-type', 'ratelimit-limit', 'ratelimit-remaining'], // not_in_plan: no Reset
    );
    assert.equal((await sso.response.json()).detail, 'Single sign-on is not included in the free plan.');
  });

  test('anonymous: through by default, 401 when asked', async () => {
    const through = await gateRequest(post('/api/features/f'), { db, customer: fromHeader });
    assert.deepEqual([through.response, through.decisions], [null, []]);
    const refused = await gateRequest(post('/api/features/f'), { db, customer: null, anonymous: '401' });
    assert.equal(refused.response.status, 401);
    assert.equal((await refused.response.json()).feature, 'api_calls'); // the first matching gate
  });

  test('skene.gates() is read once per ttl; a failed read keeps the last table', async () => {
    let reads = 0;
    let failing = false;
    const counting = {
      query(config) {
        if (config.text.includes('skene.gates()')) {
          reads += 1;
          if (failing) return Promise.reject(new Error('connection lost'));
        }
        return db.query(config);
      },
    };
    const id = customer();
    await gateRequest(post('/api/other', id), { db: counting, customer: id });
    await gateRequest(post('/api/other', id), { db: counting, customer: id });
    assert.equal(reads, 1);
    failing = true;
    const logger = recorder();
    const stale = await gateRequest(post('/api/exports/x', id), { db: counting, customer: id, ttl: 0, logger });
    assert.equal(reads, 2);
    assert.deepEqual(stale.decisions.map((d) => d.feature), ['exports']); // gated with the last table
    assert.match(logger.lines[0][1], /using the last ones read/);
    clearGateCache(counting);
    const none = await gateRequest(post('/api/exports/x', id), { db: counting, customer: id, logger });
    assert.equal(none.response.status, 503); // no table at all: the database is down
    const open = await gateRequest(post('/api/exports/x', id), { db: counting, customer: id, logger, onError: 'open' });
    assert.equal(open.response, null);
  });

  test('concurrent middleware calls for one customer: exactly the limit gets through', async () => {
    const id = customer();
    await checkAndIncrement(db, id, 'exports', { amount: 1 }); // 2 left
    const outcomes = await Promise.all(
      Array.from({ length: 10 }, () => gateRequest(post('/api/exports/run', id), { db, customer: id })),
    );
    assert.equal(outcomes.filter((o) => o.response === null).length, 2);
    assert.equal(outcomes.filter((o) => o.response?.status === 402).length, 8);
  });
});
