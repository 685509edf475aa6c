/**
 * The one token bucket of deno-chat: a connection's messages (`--rate`,
 * `--burst`), an address's new connections (`--connect-rate`,
 * `--connect-burst`) and the HTTP API key's requests (`--api-rate`) are
 * each one {@linkcode TokenBucket}; the connect rate keeps one per address in
 * {@linkcode TokenBuckets}.
 *
 * A leaf: no imports, no clock of its own (every method takes `now`).
 *
 * @module
 */

/**
 * `rate` tokens a second, at most `burst` saved up; it starts full. Each
 * thing allowed takes one token (or what it costs); with less than that
 * left, it is refused.
 *
 * @example
 * ```ts
 * const bucket = new TokenBucket(10, 20);
 * if (!bucket.take()) console.log("slow down");
 * ```
 */
export class TokenBucket {
  /** Tokens left at `refilledAt` (a fraction between refills). */
  tokens: number;
  /** When `tokens` was last brought up to date (ms since the epoch). */
  refilledAt: number;

  constructor(
    /** Tokens added per second. */
    readonly rate: number,
    /** Most tokens saved up (and the start). */
    readonly burst: number,
    now: number = Date.now(),
  ) {
    this.tokens = burst;
    this.refilledAt = now;
  }

  /**
   * Takes `count` tokens (one thing that costs as much as `count`) if there
   * are that many; false (nothing taken) if not.
   */
  take(now: number = Date.now(), count = 1): boolean {
    this.tokens = this.#tokensAt(now);
    this.refilledAt = now;
    if (this.tokens < count) return false;
    this.tokens -= count;
    return true;
  }

  /** Seconds until the next token, from the last `take` (0: one is there). */
  secondsToToken(): number {
    return Math.max(0, (1 - this.tokens) / this.rate);
  }

  /** Full again by `now`: it says nothing any more, and may be forgotten. */
  full(now: number = Date.now()): boolean {
    return this.#tokensAt(now) >= this.burst;
  }

  #tokensAt(now: number): number {
    return Math.min(
      this.burst,
      this.tokens + (now - this.refilledAt) * this.rate / 1000,
    );
  }
}

/**
 * A {@linkcode TokenBucket} per key (an address's new connections), each
 * made full on its key's first `take`. {@linkcode TokenBuckets.forgetFull}
 * drops the ones that have refilled, which say nothing any more, so only
 * keys that took lately are kept.
 *
 * @example
 * ```ts
 * const connects = new TokenBuckets(2, 10);
 * if (!connects.take("192.0.2.1")) console.log("too many connections");
 * connects.forgetFull(); // now and then, on a timer
 * ```
 */
export class TokenBuckets {
  readonly #buckets = new Map<string, TokenBucket>();

  constructor(
    /** Tokens added per second, to each key's bucket. */
    readonly rate: number,
    /** Most tokens a key's bucket saves up (and its start). */
    readonly burst: number,
  ) {}

  /** Takes a token from `key`'s bucket; false (nothing taken) if none. */
  take(key: string, now: number = Date.now()): boolean {
    let bucket = this.#buckets.get(key);
    if (!bucket) {
      bucket = new TokenBucket(this.rate, this.burst, now);
      this.#buckets.set(key, bucket);
    }
    return bucket.take(now);
  }

  /** Forgets the buckets full again by `now` (as if never used). */
  forgetFull(now: number = Date.now()): void {
    for (const [key, bucket] of this.#buckets) {
      if (bucket.full(now)) this.#buckets.delete(key);
    }
  }

  /** How many keys are remembered. */
  get size(): number {
    return this.#buckets.size;
  }
}
