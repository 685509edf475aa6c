/**
 * The benchmarks' proxy app (`run.ts --proxy`): a `Deno.serve` in the
 * bench's own process that answers every `--proxy-publish` (or
 * `--proxy-connect`) POST after {@linkcode PROXY_APP_DELAY_MS}, allowing
 * everything, and counts what it was asked (its CPU is not the chat's).
 *
 * @module
 */

/** How long the app takes to answer, in ms (the "answering in 1 ms"). */
export const PROXY_APP_DELAY_MS = 1;

/** A proxy app on a free loopback port. */
export class BenchProxyApp {
  /** POSTs so far. */
  requests = 0;
  /** Asks in them (publishes and connects). */
  asks = 0;
  #server: Deno.HttpServer<Deno.NetAddr>;

  constructor(delayMs = PROXY_APP_DELAY_MS) {
    this.#server = Deno.serve(
      { port: 0, hostname: "127.0.0.1", onListen: () => {} },
      async (request) => {
        const body = await request.json();
        const asks: unknown[] = body.publishes ?? body.connects ?? [];
        this.requests++;
        this.asks += asks.length;
        await new Promise((resolve) => setTimeout(resolve, delayMs));
        return Response.json({ results: asks.map(() => ({ allow: true })) });
      },
    );
  }

  /** Where it listens. */
  get url(): string {
    return `http://127.0.0.1:${this.#server.addr.port}/publish`;
  }

  async close(): Promise<void> {
    await this.#server.shutdown();
  }
}

/**
 * As a process of its own (`deno run --allow-net bench/proxy_app.ts`), so
 * that the load's event loop does not hold up its answers: prints its URL.
 */
if (import.meta.main) {
  const app = new BenchProxyApp();
  console.log(app.url);
}
