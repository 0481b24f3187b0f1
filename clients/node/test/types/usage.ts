// Type-checked by test/types.test.js (tsc, strict, skipLibCheck off): the shipped .d.ts
// files are valid and fit real pg and postgres.js instances and Next route handlers.
import pg from 'pg';
import postgres from 'postgres';

import {
  type Decision,
  type Refund,
  SkeneError,
  check,
  checkAndIncrement,
  gates,
  identify,
  refund,
  track,
  verifyUnsubscribeToken,
} from 'skene-pg';
import { gateRequest, withGate } from 'skene-pg/next';
import { blocked, toResponse } from 'skene-pg/problem';

const pool = new pg.Pool();
const sql = postgres({ prepare: false });

export async function calls(client: pg.PoolClient): Promise<number> {
  const d: Decision = await checkAndIncrement(pool, 'cus_42', 'api_calls', { amount: 2, idempotencyKey: 'k' });
  const e: Decision = await check(sql, 'cus_42', 'api_calls');
  const f: Decision = await checkAndIncrement(client, 'cus_42', 'api_calls', { amount: 3n });
  await sql.begin(async (tx) => checkAndIncrement(tx, 'cus_42', 'api_calls'));
  const r: Refund = await refund(pool, 'cus_42', 'api_calls', { idempotencyKey: 'k' });
  await identify(pool, 'cus_42', { email: 'a@example.com', attributes: { seats: 3 }, timezone: null });
  await track(sql, 'cus_42', 'signed_in', { properties: { via: 'sso' }, occurredAt: new Date() });
  const names: string[] = (await gates(pool)).map((g) => g.name);
  const ok: boolean = verifyUnsubscribeToken('secret', 'cus_42', 'token');
  const resets: number | undefined = d.resetsAt?.getTime();
  const left: number = (e.remaining ?? Infinity) + (f.usageLimit ?? 0) + r.refunded;
  try {
    await check(pool, 'cus_42', 'nope');
  } catch (error) {
    if (error instanceof SkeneError && error.code === '22023') return names.length + (error.hint ?? '').length;
  }
  return ok ? left + (resets ?? 0) : 0;
}

// An App Router route handler as Next 15 types it: (request, { params: Promise<...> })
export const POST = withGate(
  async (request: Request, { params }: { params: Promise<{ id: string }> }) =>
    Response.json({ id: (await params).id, by: request.headers.get('x-user-id') }),
  {
    db: pool,
    feature: 'api_calls',
    customer: (request) => request.headers.get('x-user-id'),
    amount: async (request) => Number(new URL(request.url).searchParams.get('n') ?? 1),
    refundOnError: true,
  },
);

export async function middleware(request: Request): Promise<Response | undefined> {
  const gate = await gateRequest(request, { db: sql, customer: async () => 'user_2NNEqL2nrIRdJ194ndJqAHwEfxC' });
  const headers: Record<string, string> = gate.headers;
  return gate.response ?? new Response(null, { headers });
}

export const answer: Response = toResponse(
  blocked(
    { reason: 'limit_reached', feature: 'f', plan: 'free', used: 1, usageLimit: 1, remaining: 0, resetsAt: null },
    null,
  ),
);
