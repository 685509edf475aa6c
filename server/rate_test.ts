/**
 * The token bucket (rate.ts), with the clock given: what the message rate,
 * the connect rate and the API key's rate each rely on. (Each of those is
 * also tested end to end: hardening_test.ts, api_test.ts.)
 *
 * @module
 */

import assert from "node:assert/strict";
import { TokenBucket, TokenBuckets } from "./rate.ts";

Deno.test("a bucket starts full: burst takes, then one is refused", () => {
  const bucket = new TokenBucket(2, 3, 0);
  assert.deepEqual([0, 1, 2, 3].map(() => bucket.take(0)), [
    true,
    true,
    true,
    false,
  ]);
});

Deno.test("a bucket refills at rate per second, never past burst", () => {
  const bucket = new TokenBucket(2, 3, 0);
  for (let i = 0; i < 3; i++) bucket.take(0);
  assert.equal(bucket.take(499), false, "not a whole token after 499 ms");
  assert.equal(bucket.take(500), true, "one token after 500 ms at 2/s");
  assert.equal(bucket.take(500), false);
  // An hour idle saves up burst tokens, not 7200.
  const later = 3_600_000;
  assert.deepEqual([0, 1, 2, 3].map(() => bucket.take(later)), [
    true,
    true,
    true,
    false,
  ]);
});

Deno.test("a take of several tokens takes them all or none (a search costs more than a post)", () => {
  const bucket = new TokenBucket(1, 12, 0);
  assert.equal(bucket.take(0, 5), true);
  assert.equal(bucket.take(0, 5), true);
  assert.equal(bucket.take(0, 5), false, "2 left: none taken");
  assert.equal(bucket.take(0), true);
  assert.equal(bucket.take(0), true);
  assert.equal(bucket.take(0), false);
  assert.equal(bucket.take(4999, 5), false, "4.999 refilled");
  assert.equal(bucket.take(5000, 5), true, "5 refilled at 1/s");
});

Deno.test("secondsToToken says how long a refused take must wait", () => {
  const bucket = new TokenBucket(4, 1, 0);
  assert.equal(bucket.secondsToToken(), 0, "full: no wait");
  bucket.take(0);
  assert.equal(bucket.take(100), false);
  // 0.4 of a token after 100 ms at 4/s: 0.6 more takes 0.15 s.
  assert.ok(Math.abs(bucket.secondsToToken() - 0.15) < 1e-9);
});

Deno.test("full says when a bucket has refilled and may be forgotten", () => {
  const bucket = new TokenBucket(2, 2, 0);
  assert.equal(bucket.full(0), true);
  bucket.take(0);
  assert.equal(bucket.full(0), false);
  assert.equal(bucket.full(499), false);
  assert.equal(bucket.full(500), true);
});

Deno.test("TokenBuckets keeps one bucket per key: one key's flood leaves another's tokens", () => {
  const buckets = new TokenBuckets(1, 2);
  assert.deepEqual([0, 1, 2].map(() => buckets.take("a", 0)), [
    true,
    true,
    false,
  ]);
  assert.equal(buckets.take("b", 0), true, "b starts full");
  assert.equal(buckets.take("a", 999), false, "a: not a whole token yet");
  assert.equal(buckets.take("a", 1000), true, "a: one token after 1 s at 1/s");
  assert.equal(buckets.size, 2);
});

Deno.test("TokenBuckets.forgetFull forgets the refilled buckets, and only those", () => {
  const buckets = new TokenBuckets(1, 2);
  buckets.take("a", 0);
  buckets.take("a", 0);
  buckets.take("b", 1500);
  buckets.forgetFull(1999);
  assert.equal(buckets.size, 2, "a is 1.999 tokens, b 1.499: both kept");
  buckets.forgetFull(2000);
  assert.equal(buckets.size, 1, "a is full at 2 s: forgotten; b is not");
  // A forgotten key starts full again, as if never seen.
  assert.deepEqual([0, 1, 2].map(() => buckets.take("a", 2000)), [
    true,
    true,
    false,
  ]);
  buckets.forgetFull(10_000);
  assert.equal(buckets.size, 0);
});
