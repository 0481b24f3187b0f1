// The client against a real PostgreSQL, over node-postgres and postgres.js, directly
// and through PgBouncer in transaction mode.

import assert from 'node:assert/strict';
import { after, before, describe, test } from 'node:test';

import pg from 'pg';
import postgres from 'postgres';

import {
  SkeneError,
  check,
  checkAndIncrement,
  gates,
  identify,
  isRetryable,
  refund,
  track,
} from '../src/index.js';
import { DATABASE_URL, NO_DATABASE, customer, inspector, targets } from './helpers.js';

const MONTH_END = new Date('2026-04-01T00:00:00Z'); // the clock is at 2026-03-10 12:00 UTC
const FEATURES = 'api_calls, burst, exports, seats, sso';

let look; // a pool of the test's own, to set plans and read tables
before(() => {
  if (!NO_DATABASE) look = inspector();
});
after(() => look?.end());

for (const target of targets()) {
  describe(target.name, { skip: target.skip }, () => {
    let handle;
    before(() => {
      handle = target.open(30);
    });
    after(() => handle?.close());

    test('every decision field has its type: numbers, a Date or null, a boolean', async () => {
      const id = customer();
      const first = await checkAndIncrement(handle.db, id, 'api_calls');
      assert.deepEqual(first, {
        allowed: true,
        reason: 'ok',
        feature: 'api_calls',
        plan: 'free',
        used: 1,
        usageLimit: 100,
        remaining: 99,
        resetsAt: MONTH_END,
      });
      assert.equal(typeof first.allowed, 'boolean');
      for (const key of ['used', 'usageLimit', 'remaining']) {
        assert.equal(typeof first[key], 'number', key);
      }
      assert.ok(first.resetsAt instanceof Date);

      const asked = await check(handle.db, id, 'api_calls', { amount: 5 });
      assert.deepEqual([asked.allowed, asked.used, asked.remaining], [true, 1, 99]); // counts nothing

      const lifetime = await checkAndIncrement(handle.db, id, 'seats');
      assert.equal(lifetime.resetsAt, null); // usage never resets

      const blocked = await checkAndIncrement(handle.db, id, 'sso');
      assert.deepEqual([blocked.allowed, blocked.reason, blocked.usageLimit], [false, 'not_in_plan', 0]);

      await look.query("SELECT skene.set_plan($1, 'pro')", [id]);
      const unlimited = await checkAndIncrement(handle.db, id, 'api_calls', { amount: 2n });
      assert.deepEqual(
        [unlimited.plan, unlimited.used, unlimited.usageLimit, unlimited.remaining],
        ['pro', 3, null, null],
      );
    });

    test('30 concurrent calls against a limit of 20: exactly 20 allowed', async () => {
      const id = customer();
      const decisions = await Promise.all(
        Array.from({ length: 30 }, () => checkAndIncrement(handle.db, id, 'burst')),
      );
      const allowed = decisions.filter((d) => d.allowed);
      assert.equal(allowed.length, 20);
      assert.deepEqual(
        allowed.map((d) => d.used).sort((a, b) => a - b),
        Array.from({ length: 20 }, (_, i) => i + 1),
      );
      for (const d of decisions.filter((d) => !d.allowed)) {
        assert.deepEqual([d.reason, d.used, d.remaining], ['limit_reached', 20, 0]);
      }
      assert.equal((await check(handle.db, id, 'burst')).used, 20);
      const hits = await look.query(
        "SELECT count(*)::int AS n FROM skene.limit_hits WHERE customer_id = $1 AND feature = 'burst'",
        [id],
      );
      assert.equal(hits.rows[0].n, 1); // the first block only
    });

    test('bad input: SkeneError with the SQLSTATE, message and hint', async () => {
      const id = customer();
      await assert.rejects(checkAndIncrement(handle.db, id, 'api_call'), (error) => {
        assert.ok(error instanceof SkeneError);
        assert.equal(error.name, 'SkeneError');
        assert.equal(error.code, '22023');
        assert.match(error.message, /unknown feature 'api_call'/);
        assert.equal(error.hint, `Defined features: ${FEATURES}.`);
        assert.equal(isRetryable(error), false);
        return true;
      });
      for (const [who, amount] of [
        [id, 0],
        [id, -3],
        ['', 1],
      ]) {
        await assert.rejects(checkAndIncrement(handle.db, who, 'api_calls', { amount }), (error) => {
          assert.equal(error.code, '22023', `${who} ${amount}`);
          assert.ok(error.hint, 'a hint');
          return true;
        });
      }
      // not a whole number: refused before it reaches the database
      await assert.rejects(checkAndIncrement(handle.db, id, 'api_calls', { amount: 1.5 }), {
        name: 'SkeneError',
        code: '22023',
      });
      assert.equal((await check(handle.db, id, 'api_calls')).used, 0); // nothing counted
    });

    test('idempotency keys count once; refund gives the count back once', async () => {
      const id = customer();
      const first = await checkAndIncrement(handle.db, id, 'exports', { idempotencyKey: 'req_1' });
      const again = await checkAndIncrement(handle.db, id, 'exports', { idempotencyKey: 'req_1' });
      assert.deepEqual([first.reason, first.used], ['ok', 1]);
      assert.deepEqual([again.reason, again.used], ['duplicate', 1]);
      const back = await refund(handle.db, id, 'exports', { idempotencyKey: 'req_1' });
      assert.deepEqual(back, {
        refunded: 1,
        reason: 'refunded',
        feature: 'exports',
        plan: 'free',
        used: 0,
        usageLimit: 3,
        remaining: 3,
        resetsAt: MONTH_END,
      });
      const twice = await refund(handle.db, id, 'exports', { idempotencyKey: 'req_1', amount: 1 });
      assert.deepEqual([twice.refunded, twice.reason], [0, 'not_counted']);
    });

    test('identify and track reach the customer row', async () => {
      const id = customer();
      await identify(handle.db, id, {
        email: 'ada@example.com',
        name: 'Ada',
        attributes: { company: 'Analytical Engines', seats: 3 },
        timezone: 'Europe/London',
      });
      await identify(handle.db, id, { attributes: { plan_hint: 'pro' } }); // merged, rest kept
      await track(handle.db, id, 'project_created', {
        properties: { project: 'Apollo' },
        occurredAt: new Date('2026-03-09T08:30:00Z'),
      });
      const { rows } = await look.query(
        'SELECT email, name, timezone, attributes, last_activity_at FROM skene.customers WHERE customer_id = $1',
        [id],
      );
      assert.deepEqual(rows[0], {
        email: 'ada@example.com',
        name: 'Ada',
        timezone: 'Europe/London',
        attributes: { company: 'Analytical Engines', seats: 3, plan_hint: 'pro' },
        last_activity_at: new Date('2026-03-09T08:30:00Z'),
      });
      await assert.rejects(identify(handle.db, id, { timezone: 'Mars/Olympus' }), { code: '22023' });
      await track(handle.db, customer(), 'signed_in'); // the defaults: no properties, now
    });

    test('gates() lists the features with their patterns, message and upgrade URL', async () => {
      const table = await gates(handle.db);
      assert.deepEqual(
        table.map((g) => g.feature),
        FEATURES.split(', '),
      );
      assert.deepEqual(
        table.find((g) => g.feature === 'api_calls'),
        {
          feature: 'api_calls',
          name: 'API calls',
          match: [{ method: 'POST', path: '/api/features/*' }],
          message: "You've reached your free tier limit. Upgrade to continue.",
          upgradeUrl: 'https://app.example.com/billing',
        },
      );
      assert.equal(table.find((g) => g.feature === 'burst').name, 'burst');
    });
  });
}

describe('node-postgres only', { skip: NO_DATABASE }, () => {
  test('no named statement is ever prepared (safe behind a transaction pooler)', async () => {
    const client = new pg.Client({ connectionString: DATABASE_URL });
    await client.connect();
    try {
      const id = customer();
      for (let i = 0; i < 3; i += 1) await checkAndIncrement(client, id, 'api_calls');
      await check(client, id, 'api_calls');
      await refund(client, id, 'api_calls', { idempotencyKey: 'none' });
      await gates(client);
      const { rows } = await client.query('SELECT name FROM pg_prepared_statements');
      assert.deepEqual(rows, []);
    } finally {
      await client.end();
    }
  });

  test("inside the app's transaction: a rollback takes the count back", async () => {
    const client = new pg.Client({ connectionString: DATABASE_URL });
    await client.connect();
    try {
      const id = customer();
      await client.query('BEGIN');
      assert.equal((await checkAndIncrement(client, id, 'api_calls', { amount: 7 })).used, 7);
      await client.query('ROLLBACK');
      assert.equal((await check(client, id, 'api_calls')).used, 0);
    } finally {
      await client.end();
    }
  });

  test('a count beyond 2^53 - 1 throws SKENE_UNSAFE_INTEGER; 2^53 - 1 is exact', async () => {
    const pool = new pg.Pool({ connectionString: DATABASE_URL, max: 1 });
    try {
      const id = customer();
      await checkAndIncrement(pool, id, 'api_calls');
      await look.query("SELECT skene.set_limit_override($1, 'api_calls', $2)", [id, '9007199254740991']);
      const edge = await check(pool, id, 'api_calls');
      assert.deepEqual([edge.usageLimit, edge.remaining], [Number.MAX_SAFE_INTEGER, 9007199254740990]);
      await look.query("SELECT skene.set_limit_override($1, 'api_calls', $2)", [id, '9007199254740993']);
      await assert.rejects(check(pool, id, 'api_calls'), (error) => {
        assert.ok(error instanceof SkeneError);
        assert.equal(error.code, 'SKENE_UNSAFE_INTEGER');
        assert.match(error.message, /usage_limit = 9007199254740993/);
        assert.equal(error.row[5], '9007199254740993'); // exactly what the database sent
        return true;
      });
    } finally {
      await pool.end();
    }
  });

  test("the app's own type parsers change nothing", async () => {
    // an app that parses int8 as BigInt and timestamptz as text, for its own queries
    const types = {
      getTypeParser: (oid, format) =>
        oid === 20 ? BigInt : oid === 1184 ? String : pg.types.getTypeParser(oid, format),
    };
    const pool = new pg.Pool({ connectionString: DATABASE_URL, max: 1, types });
    try {
      const d = await checkAndIncrement(pool, customer(), 'api_calls');
      assert.deepEqual([d.used, d.resetsAt], [1, MONTH_END]);
    } finally {
      await pool.end();
    }
  });

  test('an unreachable database: SkeneError with code null and the cause', async () => {
    const pool = new pg.Pool({ connectionString: 'postgresql://nobody@127.0.0.1:1/none', max: 1 });
    try {
      await assert.rejects(checkAndIncrement(pool, customer(), 'api_calls'), (error) => {
        assert.ok(error instanceof SkeneError);
        assert.equal(error.code, null);
        assert.match(error.message, /database unavailable/);
        assert.equal(error.cause.code, 'ECONNREFUSED');
        return true;
      });
    } finally {
      await pool.end();
    }
  });
});

describe('postgres.js only', { skip: NO_DATABASE }, () => {
  test('statements stay unnamed even on an instance with prepare on (the default)', async () => {
    const sql = postgres(DATABASE_URL, { max: 1 }); // prepare: true
    try {
      const id = customer();
      for (let i = 0; i < 3; i += 1) await checkAndIncrement(sql, id, 'api_calls');
      await check(sql, id, 'api_calls');
      await gates(sql);
      const rows = await sql.unsafe('SELECT statement FROM pg_prepared_statements');
      assert.deepEqual(
        rows.filter((r) => r.statement.includes('skene.')),
        [],
      );
    } finally {
      await sql.end({ timeout: 5 });
    }
  });

  test("inside sql.begin: part of the app's transaction; column transforms change nothing", async () => {
    const sql = postgres(DATABASE_URL, { max: 1, transform: postgres.camel });
    try {
      const id = customer();
      await assert.rejects(
        sql.begin(async (tx) => {
          assert.equal((await checkAndIncrement(tx, id, 'api_calls', { amount: 4 })).usageLimit, 100);
          throw new Error('the app fails: roll back');
        }),
        /roll back/,
      );
      assert.equal((await check(sql, id, 'api_calls')).used, 0);
    } finally {
      await sql.end({ timeout: 5 });
    }
  });

  test('an unreachable database: SkeneError with code null', async () => {
    const sql = postgres('postgresql://nobody@127.0.0.1:1/none', { max: 1, connect_timeout: 5 });
    try {
      await assert.rejects(checkAndIncrement(sql, customer(), 'api_calls'), (error) => {
        assert.ok(error instanceof SkeneError);
        assert.equal(error.code, null);
        assert.ok(error.cause);
        return true;
      });
    } finally {
      await sql.end({ timeout: 1 });
    }
  });
});

test('a database handle that is neither pg nor postgres.js is refused', async () => {
  await assert.rejects(checkAndIncrement({}, 'c', 'api_calls'), TypeError);
});
