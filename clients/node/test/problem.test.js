// The JS builder of a gate's HTTP answers against the shared vectors
// (tests/integrations/problem_vectors.json), and byte for byte against what the
// Python builder sends for them (pytest passes its output in SKENE_PYTHON_OUTPUTS).

import assert from 'node:assert/strict';
import { readFileSync } from 'node:fs';
import { describe, test } from 'node:test';

import * as problem from '../src/problem.js';

const VECTORS_PATH =
  process.env.SKENE_PROBLEM_VECTORS ??
  new URL('../../../tests/integrations/problem_vectors.json', import.meta.url);
const VECTORS = JSON.parse(readFileSync(VECTORS_PATH, 'utf8'));
const PYTHON = process.env.SKENE_PYTHON_OUTPUTS
  ? JSON.parse(readFileSync(process.env.SKENE_PYTHON_OUTPUTS, 'utf8')).problems
  : null;

const at = (text) => (text === null ? null : new Date(text));

function decision(d) {
  return {
    allowed: d.allowed,
    reason: d.reason,
    feature: d.feature,
    plan: d.plan,
    used: d.used,
    usageLimit: d.usage_limit,
    remaining: d.remaining,
    resetsAt: at(d.resets_at),
  };
}

function gate(g) {
  return g === null
    ? null
    : { feature: g.feature, name: g.name, match: [], message: g.message, upgradeUrl: g.upgrade_url };
}

describe('blocked: the 402', () => {
  for (const vector of VECTORS.blocked) {
    test(vector.name, async () => {
      const answer = problem.blocked(decision(vector.decision), gate(vector.gate), at(vector.now));
      assert.deepEqual(answer, { status: vector.status, body: vector.body, headers: vector.headers });
      // the same keys in the same order as the vector (and the Python builder)
      assert.deepEqual(Object.keys(answer.body), Object.keys(vector.body));
      assert.deepEqual(Object.keys(answer.headers), Object.keys(vector.headers));
      const response = problem.toResponse(answer);
      assert.equal(response.status, 402);
      assert.deepEqual(Object.fromEntries(response.headers), lower(vector.headers));
      assert.deepEqual(JSON.parse(await response.text()), vector.body);
    });
  }
});

describe('allowed: the RateLimit headers', () => {
  for (const vector of VECTORS.allowed) {
    test(vector.name, () => {
      assert.deepEqual(problem.ratelimitHeaders(decision(vector.decision), at(vector.now)), vector.headers);
    });
  }
});

test('anonymous (401) and unavailable (503)', () => {
  const anonymous = problem.anonymous(gate(VECTORS.anonymous.gate));
  assert.deepEqual(anonymous, {
    status: VECTORS.anonymous.status,
    body: VECTORS.anonymous.body,
    headers: VECTORS.anonymous.headers,
  });
  const unavailable = problem.unavailable();
  assert.deepEqual(unavailable, {
    status: VECTORS.unavailable.status,
    body: VECTORS.unavailable.body,
    headers: VECTORS.unavailable.headers,
  });
});

test('the tightest decision carries the headers', () => {
  const d = (feature, usageLimit, remaining) => ({ feature, usageLimit, remaining });
  assert.equal(problem.tightest([]), null);
  assert.equal(problem.tightest([d('a', null, null)]), null);
  assert.equal(problem.tightest([d('a', 10, 5), d('b', null, null), d('c', 3, 1), d('d', 9, 1)]).feature, 'c');
});

describe('bytes: what the Python builder sends', { skip: PYTHON ? false : 'SKENE_PYTHON_OUTPUTS is not set (run through pytest)' }, () => {
  test('every blocked vector, and 401/503', () => {
    for (const vector of VECTORS.blocked) {
      const answer = problem.blocked(decision(vector.decision), gate(vector.gate), at(vector.now));
      assert.equal(problem.content(answer), PYTHON.blocked[vector.name], vector.name);
    }
    assert.equal(problem.content(problem.anonymous(gate(VECTORS.anonymous.gate))), PYTHON.anonymous);
    assert.equal(problem.content(problem.unavailable()), PYTHON.unavailable);
  });

  test('non-ASCII and control characters are escaped as json.dumps does', () => {
    for (const [value, text] of PYTHON.strings) assert.equal(problem.pythonJson(value), text);
  });

  test('resets_at with milliseconds is written as Python isoformat writes it', () => {
    for (const [iso, text] of PYTHON.isoformat) assert.equal(problem.iso(new Date(iso)), text);
  });
});

function lower(headers) {
  return Object.fromEntries(Object.entries(headers).map(([k, v]) => [k.toLowerCase(), v]));
}
