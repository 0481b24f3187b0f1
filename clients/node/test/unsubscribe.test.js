// verifyUnsubscribeToken accepts the tokens the Python worker puts in email links
// (skene_pg/email/handler.py: HMAC-SHA256 of the customer id keyed with
// SKENE_UNSUBSCRIBE_SECRET, hex); pytest passes tokens it made in SKENE_PYTHON_OUTPUTS.

import assert from 'node:assert/strict';
import { readFileSync } from 'node:fs';
import { test } from 'node:test';

import { unsubscribeToken, verifyUnsubscribeToken } from '../src/index.js';

const TOKENS = process.env.SKENE_PYTHON_OUTPUTS
  ? JSON.parse(readFileSync(process.env.SKENE_PYTHON_OUTPUTS, 'utf8')).unsubscribe
  : null;
const NO_PYTHON = TOKENS ? false : 'SKENE_PYTHON_OUTPUTS is not set (run through pytest)';

test('tokens made by the Python worker verify; others do not', { skip: NO_PYTHON }, () => {
  assert.ok(TOKENS.length >= 2);
  for (const { secret, customer, token } of TOKENS) {
    assert.equal(unsubscribeToken(secret, customer), token);
    assert.equal(verifyUnsubscribeToken(secret, customer, token), true, customer);
    assert.equal(verifyUnsubscribeToken(`${secret}x`, customer, token), false);
    assert.equal(verifyUnsubscribeToken(secret, `${customer}x`, token), false);
    assert.equal(verifyUnsubscribeToken(secret, customer, token.toUpperCase()), false);
    assert.equal(verifyUnsubscribeToken(secret, customer, token.slice(0, -1)), false);
    assert.equal(verifyUnsubscribeToken(secret, customer, ''), false);
  }
});

test('a token is the hex HMAC-SHA256 of the id; an empty secret is refused', () => {
  // RFC 4231 test case 2: key "Jefe", data "what do ya want for nothing?"
  assert.equal(
    unsubscribeToken('Jefe', 'what do ya want for nothing?'),
    '5bdcc146bf60754e6a042426089575c75a003f089d2739839dec58b964ec3843',
  );
  assert.equal(verifyUnsubscribeToken('Jefe', 'c', undefined), false);
  assert.throws(() => verifyUnsubscribeToken('', 'cus_42', 'x'), TypeError);
  assert.throws(() => unsubscribeToken(undefined, 'cus_42'), TypeError);
});
