/**
 * OpenTelemetry (server/telemetry.ts): the chat run as the CLI with
 * `OTEL_DENO=true` exports its spans over OTLP (`http/json`) to a receiver
 * here, which decodes what arrives: a handshake (accepted and refused), a
 * post, an API call, a webhook delivery and a publish proxy call, each with
 * its room; the webhook endpoint and the app get their span's
 * `traceparent`; `/metrics` still answers as before.
 *
 * @module
 */

import assert from "node:assert/strict";
import { JSON_PROTOCOL } from "../wire/protocol.ts";
import { type Json, Peer, within } from "./test_helpers.ts";
import { HOOK_SECRET } from "./webhook_helpers.ts";

const API_KEY = "otel-test-api-key-0123456789-abcdefgh";
const ROOM = "otel-room";
/** How long the spans may take to arrive (Deno exports every 100 ms here). */
const ARRIVAL_MS = 10_000;

/** One exported span, as OTLP/JSON has it, attributes made plain. */
interface ExportedSpan {
  traceId: string;
  spanId: string;
  parentSpanId: string;
  name: string;
  kind: number;
  scope: string;
  status: { code: number };
  attributes: Record<string, unknown>;
}

/** OTLP/JSON's `AnyValue` as a plain value. */
function plain(value: Json): unknown {
  if ("stringValue" in value) return value.stringValue;
  if ("intValue" in value) return Number(value.intValue);
  if ("doubleValue" in value) return value.doubleValue;
  if ("boolValue" in value) return value.boolValue;
  return value;
}

/** An OTLP/HTTP receiver on a free port: keeps the spans and metric names. */
class OtlpReceiver {
  readonly spans: ExportedSpan[] = [];
  readonly metricNames = new Set<string>();
  readonly contentTypes = new Set<string>();
  #server: Deno.HttpServer<Deno.NetAddr>;

  constructor() {
    this.#server = Deno.serve(
      { port: 0, hostname: "127.0.0.1", onListen: () => {} },
      async (request) => {
        const path = new URL(request.url).pathname;
        this.contentTypes.add(request.headers.get("content-type") ?? "");
        const body = await request.json();
        if (path === "/v1/traces") this.#traces(body);
        if (path === "/v1/metrics") this.#metrics(body);
        return Response.json({});
      },
    );
  }

  get url(): string {
    return `http://127.0.0.1:${this.#server.addr.port}`;
  }

  #traces(body: Json): void {
    for (const resource of body.resourceSpans ?? []) {
      for (const scoped of resource.scopeSpans ?? []) {
        for (const span of scoped.spans ?? []) {
          const attributes: Record<string, unknown> = {};
          for (const { key, value } of span.attributes ?? []) {
            attributes[key] = plain(value);
          }
          this.spans.push({
            traceId: span.traceId,
            spanId: span.spanId,
            parentSpanId: span.parentSpanId ?? "",
            name: span.name,
            kind: span.kind,
            scope: scoped.scope?.name ?? "",
            status: span.status ?? { code: 0 },
            attributes,
          });
        }
      }
    }
  }

  #metrics(body: Json): void {
    for (const resource of body.resourceMetrics ?? []) {
      for (const scoped of resource.scopeMetrics ?? []) {
        for (const metric of scoped.metrics ?? []) {
          this.metricNames.add(metric.name);
        }
      }
    }
  }

  /** The first span `match` accepts, waited for. */
  async span(
    what: string,
    match: (span: ExportedSpan) => boolean,
  ): Promise<ExportedSpan> {
    await until(what, () => this.spans.some(match));
    return this.spans.find(match)!;
  }

  async close(): Promise<void> {
    await this.#server.shutdown();
  }
}

/** A webhook endpoint that keeps each request's `traceparent`. */
class TraceparentReceiver {
  readonly traceparents: string[] = [];
  #server: Deno.HttpServer<Deno.NetAddr>;

  constructor() {
    this.#server = Deno.serve(
      { port: 0, hostname: "127.0.0.1", onListen: () => {} },
      async (request) => {
        await request.text();
        this.traceparents.push(request.headers.get("traceparent") ?? "");
        return new Response(null, { status: 204 });
      },
    );
  }

  get url(): string {
    return `http://127.0.0.1:${this.#server.addr.port}/hook`;
  }

  async close(): Promise<void> {
    await this.#server.shutdown();
  }
}

/** Polls `check` every 50 ms until it holds, for at most ARRIVAL_MS. */
async function until(what: string, check: () => boolean): Promise<void> {
  const deadline = Date.now() + ARRIVAL_MS;
  while (!check()) {
    if (Date.now() > deadline) throw new Error(`never arrived: ${what}`);
    await new Promise((resolve) => setTimeout(resolve, 50));
  }
}

/** What every traced process here runs with: OTLP/JSON, exported at once. */
function otelEnv(endpoint: string): Record<string, string> {
  return {
    OTEL_DENO: "true",
    OTEL_EXPORTER_OTLP_ENDPOINT: endpoint,
    OTEL_EXPORTER_OTLP_PROTOCOL: "http/json",
    OTEL_SERVICE_NAME: "deno-chat-test",
    OTEL_BSP_SCHEDULE_DELAY: "100",
    OTEL_METRIC_EXPORT_INTERVAL: "200",
    OTEL_DENO_CONSOLE: "ignore",
  };
}

/** The CLI with OpenTelemetry on, exporting to `endpoint`; its ports. */
async function startTracedCli(
  endpoint: string,
  webhook: string,
  extra: string[] = [],
): Promise<{
  child: Deno.ChildProcess;
  lines: ReadableStreamDefaultReader<string>;
  port: number;
  wsPort: number;
}> {
  const child = new Deno.Command(Deno.execPath(), {
    args: [
      "run",
      "--allow-net",
      "--allow-env",
      "--allow-read",
      "main.ts",
      "--hostname",
      "127.0.0.1",
      "--port",
      "0",
      "--ws-port",
      "0",
      "--quiet",
      "--api-key",
      API_KEY,
      "--webhook",
      webhook,
      "--webhook-secret",
      HOOK_SECRET,
      ...extra,
    ],
    cwd: new URL("..", import.meta.url),
    env: otelEnv(endpoint),
    stdin: "null",
    stdout: "piped",
    stderr: "null",
  }).spawn();
  const lines = child.stdout.pipeThrough(new TextDecoderStream()).getReader();
  let out = "";
  while (!out.includes("\n")) {
    const { value, done } = await within(lines.read(), "the start-up line");
    if (done) break;
    out += value;
  }
  const match = out.match(
    /open http:\/\/127\.0\.0\.1:(\d+)\/ \(chat on port (\d+)\)/,
  );
  assert.ok(match, `start-up line: ${out}`);
  return { child, lines, port: Number(match[1]), wsPort: Number(match[2]) };
}

Deno.test("otel: a handshake, a post, an API call and a webhook delivery are exported as spans with their room; webhooks get the traceparent; /metrics stays", async () => {
  const otlp = new OtlpReceiver();
  const hook = new TraceparentReceiver();
  const chat = await startTracedCli(otlp.url, hook.url);
  const peer = new Peer(
    `ws://127.0.0.1:${chat.wsPort}/${ROOM}?nick=ada`,
    JSON_PROTOCOL,
  );
  try {
    await within(peer.opened, "the connection to open");
    assert.equal((await peer.event("the welcome")).type, "welcome");
    peer.send(JSON.stringify({ type: "message", text: "traced" }));
    const said = await peer.event("the message back");
    assert.deepEqual([said.type, said.text], ["message", "traced"]);

    // Not a WebSocket: refused at the chat port's door.
    const refused = await fetch(
      `http://127.0.0.1:${chat.wsPort}/${ROOM}?nick=bob`,
    );
    await refused.body?.cancel();
    assert.equal(refused.status, 426);

    const published = await fetch(`http://127.0.0.1:${chat.port}/api/publish`, {
      method: "POST",
      headers: { authorization: `Bearer ${API_KEY}` },
      body: JSON.stringify({ room: ROOM, text: "from the api" }),
    });
    assert.equal(published.status, 200);
    await published.body?.cancel();

    // The handshake: a child of Deno's own span for the upgrade request.
    const handshake = await otlp.span(
      "chat.handshake accepted",
      (span) =>
        span.name === "chat.handshake" &&
        span.attributes["chat.handshake.outcome"] === "accepted",
    );
    assert.equal(handshake.scope, "deno-chat");
    assert.equal(handshake.attributes["chat.room"], ROOM);
    const upgradeRequest = await otlp.span(
      "the upgrade request's span",
      (span) => span.spanId === handshake.parentSpanId,
    );
    assert.equal(upgradeRequest.traceId, handshake.traceId);
    assert.equal(upgradeRequest.kind, 2, "Deno.serve's SERVER span");

    const refusal = await otlp.span(
      "chat.handshake refused",
      (span) =>
        span.name === "chat.handshake" &&
        span.attributes["chat.handshake.outcome"] === "refused",
    );
    assert.equal(refusal.attributes["chat.refusal"], "not_websocket");
    assert.equal(refusal.attributes["chat.room"], ROOM);
    const refusedRequest = await otlp.span(
      "the refused request's span",
      (span) => span.spanId === refusal.parentSpanId,
    );
    assert.equal(refusedRequest.attributes["http.response.status_code"], "426");

    // The post: a trace of its own, not the upgrade request's.
    const post = await otlp.span(
      "chat.post",
      (span) => span.name === "chat.post",
    );
    assert.deepEqual(
      [post.attributes["chat.room"], post.attributes["chat.post.kind"]],
      [ROOM, "message"],
    );
    assert.equal(post.parentSpanId, "");
    assert.notEqual(post.traceId, handshake.traceId);
    assert.equal(post.status.code, 0);

    // The API call: a child of Deno's span for the request.
    const apiCall = await otlp.span(
      "chat.api",
      (span) => span.name === "chat.api",
    );
    assert.deepEqual(apiCall.attributes, {
      "http.request.method": "POST",
      "chat.api.method": "publish",
      "chat.room": ROOM,
      "http.response.status_code": 200,
    });
    const apiRequest = await otlp.span(
      "the API request's span",
      (span) => span.spanId === apiCall.parentSpanId,
    );
    assert.equal(apiRequest.traceId, apiCall.traceId);
    assert.equal(apiRequest.kind, 2, "Deno.serve's SERVER span");

    // Both events were delivered, each try in its span, whose context the
    // endpoint was sent.
    await until("two deliveries", () => hook.traceparents.length >= 2);
    const deliveries = await Promise.all(
      hook.traceparents.slice(0, 2).map((traceparent) => {
        const match = traceparent.match(
          /^00-([0-9a-f]{32})-([0-9a-f]{16})-01$/,
        );
        assert.ok(match, `a sampled W3C traceparent: "${traceparent}"`);
        return otlp.span(
          `the delivery span of ${traceparent}`,
          (span) => span.traceId === match[1] && span.spanId === match[2],
        );
      }),
    );
    for (const delivery of deliveries) {
      assert.equal(delivery.name, "chat.webhook.deliver");
      assert.equal(delivery.parentSpanId, "");
      assert.equal(delivery.kind, 3, "a CLIENT span");
      assert.equal(delivery.attributes["chat.room"], ROOM);
      assert.equal(delivery.attributes["server.address"], "127.0.0.1");
      assert.equal(delivery.attributes["chat.webhook.attempt"], 1);
      assert.equal(delivery.attributes["http.response.status_code"], 204);
    }
    assert.notEqual(deliveries[0].traceId, deliveries[1].traceId);

    // The chat's own figures, as OpenTelemetry metrics too.
    await until(
      "chat.connections and chat.posts",
      () =>
        otlp.metricNames.has("chat.connections") &&
        otlp.metricNames.has("chat.posts"),
    );
    assert.deepEqual([...otlp.contentTypes], ["application/json"]);

    // /metrics (Prometheus) is as it was.
    const metrics = await fetch(`http://127.0.0.1:${chat.port}/metrics`);
    assert.equal(metrics.status, 200);
    const text = await metrics.text();
    assert.match(text, /^chat_connections 1$/m);
    assert.match(text, /^chat_said_total\{kind="message"\} 1$/m);
  } finally {
    await peer.close();
    chat.child.kill("SIGTERM");
    await within(chat.child.status, "the chat to exit");
    await chat.lines.cancel();
    await hook.close();
    await otlp.close();
  }
});

Deno.test("otel: the chat's publish proxy call is a CLIENT span of its own with the room, and the app gets its traceparent", async () => {
  const otlp = new OtlpReceiver();
  const traceparents: string[] = [];
  // The app: allows every message, keeps each request's traceparent.
  const app = Deno.serve(
    { port: 0, hostname: "127.0.0.1", onListen: () => {} },
    async (request) => {
      const { publishes } = await request.json();
      traceparents.push(request.headers.get("traceparent") ?? "");
      return Response.json({
        results: publishes.map(() => ({ allow: true })),
      });
    },
  );
  const hook = new TraceparentReceiver();
  const chat = await startTracedCli(otlp.url, hook.url, [
    "--proxy-publish",
    `http://127.0.0.1:${app.addr.port}/publish`,
  ]);
  const peer = new Peer(
    `ws://127.0.0.1:${chat.wsPort}/${ROOM}?nick=ada`,
    JSON_PROTOCOL,
  );
  try {
    await within(peer.opened, "the connection");
    assert.equal((await peer.event("the welcome")).type, "welcome");
    peer.send(JSON.stringify({ type: "message", text: "asked first" }));
    for (;;) {
      const event = await peer.event("the echo");
      if (event.type === "message") break;
    }
    assert.equal(traceparents.length, 1);
    const match = traceparents[0].match(
      /^00-([0-9a-f]{32})-([0-9a-f]{16})-01$/,
    );
    assert.ok(match, `a sampled W3C traceparent: "${traceparents[0]}"`);
    const span = await otlp.span(
      "the proxy span of the traceparent",
      (span) => span.traceId === match[1] && span.spanId === match[2],
    );
    assert.equal(span.name, "chat.proxy.publish");
    assert.equal(span.parentSpanId, "", "a trace of its own");
    assert.equal(span.kind, 3, "a CLIENT span");
    assert.equal(span.attributes["chat.room"], ROOM);
    assert.equal(span.attributes["chat.proxy.asks"], 1);
  } finally {
    await peer.close();
    chat.child.kill("SIGTERM");
    await within(chat.child.status, "the chat to exit");
    await chat.lines.cancel();
    await app.shutdown();
    await hook.close();
    await otlp.close();
  }
});
