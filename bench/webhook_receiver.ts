/**
 * The benchmarks' webhook endpoint: a `Deno.serve` in the bench's own
 * process that answers 204, or 500 while told to fail, and (when asked)
 * keeps what each request was and checks its signature.
 *
 * @module
 */

import { createHmac } from "node:crypto";

/** The secret the bench's chats sign with. */
export const HOOK_SECRET = "bench-webhook-secret-0123456789abcdef";

/** One request, as kept with `record`. */
export interface Hit {
  /** `X-Chat-Delivery`. */
  id: string;
  room: string;
  /** The event's id in its room. */
  event: number;
  /** What it was answered. */
  status: number;
  /** When it came (`Date.now()`). */
  at: number;
}

/** A webhook endpoint on a free loopback port. */
export class BenchReceiver {
  /** Requests so far. */
  requests = 0;
  /** Requests whose signature did not verify (with `record`). */
  badSignatures = 0;
  /** It answers 500 until then (`Date.now()`), 204 after. */
  failUntil = 0;
  /** Every request, with `record`. */
  readonly hits: Hit[] = [];
  #server: Deno.HttpServer<Deno.NetAddr>;

  constructor(options: { record?: boolean } = {}) {
    this.#server = Deno.serve(
      { port: 0, hostname: "127.0.0.1", onListen: () => {} },
      async (request) => {
        this.requests++;
        const status = Date.now() < this.failUntil ? 500 : 204;
        if (!options.record) {
          await request.body?.cancel();
          return new Response(null, { status });
        }
        const body = await request.text();
        const timestamp = request.headers.get("x-chat-timestamp") ?? "";
        const signature = "sha256=" +
          createHmac("sha256", HOOK_SECRET).update(`${timestamp}.${body}`)
            .digest("hex");
        if (signature !== request.headers.get("x-chat-signature")) {
          this.badSignatures++;
        }
        const parsed = JSON.parse(body);
        // `--webhook-batch`: `{"deliveries": [...]}`, each as one alone.
        for (const { id, room, event } of parsed.deliveries ?? [parsed]) {
          this.hits.push({ id, room, event: event.id, status, at: Date.now() });
        }
        return new Response(null, { status });
      },
    );
  }

  /** Where it listens. */
  get url(): string {
    return `http://127.0.0.1:${this.#server.addr.port}/hook`;
  }

  async close(): Promise<void> {
    await this.#server.shutdown();
  }
}
