/**
 * OpenTelemetry: the chat's own spans and a few of its counters, exported
 * by Deno's built-in OpenTelemetry when the process runs with
 * `OTEL_DENO=true` (README.md, "OpenTelemetry", names the variables).
 *
 * Deno registers its tracer, meter, context manager and W3C trace-context
 * propagator with the `@opentelemetry/api` package at start-up, so this
 * module only speaks that API. Without `OTEL_DENO` no tracer provider is
 * registered: {@linkcode inSpan} then only calls its function (the API's
 * no-op spans and contexts cost a post about 10 µs of CPU in the chat,
 * bench (e)), nothing is recorded or sent, and {@linkcode traceHeaders}
 * gives nothing.
 *
 * The spans (all with `chat.room` where there is a room):
 * - `chat.handshake`: the chat port's answer to one request, a child of
 *   Deno's own `Deno.serve` span; `chat.handshake.outcome` is `accepted`
 *   or `refused`, and `chat.refusal` names a refusal.
 * - `chat.post`: one post, edit, reply, action or private message, from
 *   the command to the store's answer (`chat.post.kind`). A root span of
 *   its own: a socket's frames are not part of the request that opened it.
 * - `chat.api`: one HTTP API call, a child of Deno's `Deno.serve` span.
 * - `chat.webhook.deliver`: one try of one webhook delivery, a root span;
 *   the request carries its `traceparent`.
 * - `chat.proxy.connect` / `chat.proxy.publish`: one request of the proxy
 *   (server/proxy.ts) in {@linkcode inProxySpan}; the request (sent by
 *   server/webhook_client.ts) carries its `traceparent`.
 *
 * @module
 */

import {
  type Attributes,
  type AttributeValue,
  context,
  INVALID_SPAN_CONTEXT,
  metrics,
  propagation,
  ProxyTracerProvider,
  ROOT_CONTEXT,
  type Span,
  SpanKind,
  SpanStatusCode,
  trace,
} from "@opentelemetry/api";

export { type Span, SpanKind, SpanStatusCode } from "@opentelemetry/api";

/** The instrumentation scope the chat's spans and metrics are under. */
export const TELEMETRY_SCOPE = "deno-chat";

/** The attribute that names the room of a span. */
export const ROOM_ATTRIBUTE = "chat.room";

/**
 * The chat's tracer. A proxy: it follows whichever tracer provider is
 * registered, Deno's or one a library user sets up.
 */
const tracer = trace.getTracer(TELEMETRY_SCOPE);

/** What `fn` is given while nothing is recorded: a span that does nothing. */
const UNRECORDED = trace.wrapSpanContext(INVALID_SPAN_CONTEXT);

/**
 * Whether a tracer provider is registered (Deno's with `OTEL_DENO=true`, or
 * one a library user set): until one is, the API answers with its own
 * proxy, whose spans are no-ops.
 */
function tracing(): boolean {
  return !(trace.getTracerProvider() instanceof ProxyTracerProvider);
}

/** Attributes as call sites give them: an undefined one is left out. */
export type SpanAttributes = Record<string, AttributeValue | undefined>;

/** How {@linkcode inSpan} starts its span. */
export interface InSpanOptions {
  /**
   * A new trace rather than a child of the active span: for work that is
   * not part of whatever happens to be active (a socket's frame, a webhook
   * try started from a timer).
   */
  root?: boolean;
  /** @default {SpanKind.INTERNAL} */
  kind?: SpanKind;
}

/** `attributes` without the undefined ones. */
function defined(attributes: SpanAttributes): Attributes {
  const kept: Attributes = {};
  for (const key in attributes) {
    const value = attributes[key];
    if (value !== undefined) kept[key] = value;
  }
  return kept;
}

/** Marks the span failed with the error (its message and an exception event). */
export function recordFailure(span: Span, error: unknown): void {
  if (error instanceof Error) span.recordException(error);
  else span.recordException(String(error));
  span.setStatus({
    code: SpanStatusCode.ERROR,
    message: error instanceof Error ? error.message : String(error),
  });
}

/**
 * Runs `fn` in a new span named `name`, active while it runs (so spans and
 * {@linkcode traceHeaders} inside are its children), and ends the span when
 * `fn` returns or, for a promise, settles. A throw or rejection marks the
 * span failed ({@linkcode recordFailure}) and goes on to the caller. While
 * nothing is recorded it only calls `fn`.
 */
export function inSpan<T>(
  name: string,
  attributes: SpanAttributes,
  fn: (span: Span) => T,
  options: InSpanOptions = {},
): T {
  if (!tracing()) return fn(UNRECORDED);
  return tracer.startActiveSpan(
    name,
    { attributes: defined(attributes), kind: options.kind, root: options.root },
    options.root ? ROOT_CONTEXT : context.active(),
    (span) => {
      let result: T;
      try {
        result = fn(span);
      } catch (error) {
        recordFailure(span, error);
        span.end();
        throw error;
      }
      if (result instanceof Promise) {
        return result.then((value) => {
          span.end();
          return value;
        }, (error) => {
          recordFailure(span, error);
          span.end();
          throw error;
        }) as T;
      }
      span.end();
      return result;
    },
  );
}

/**
 * Sets attributes on the active span (none: nothing), for what is learnt
 * inside it: the room once read, a handshake's outcome.
 */
export function annotate(attributes: SpanAttributes): void {
  trace.getActiveSpan()?.setAttributes(defined(attributes));
}

/**
 * The trace-context headers for an outgoing request from the active span:
 * `traceparent` (and `tracestate` when there is one), or none when nothing
 * is recorded. Deno's `fetch` sends them itself; a client that writes its
 * own requests (the webhooks', the proxy's) adds these.
 */
export function traceHeaders(): Record<string, string> {
  const carrier: Record<string, string> = {};
  propagation.inject(context.active(), carrier);
  return carrier;
}

/** What {@linkcode observeChat} reads at each metrics export. */
export interface ChatReadings {
  /** Joined connections (`chat_connections`). */
  connections: number;
  /** Rooms this process holds (`chat_rooms`). */
  rooms: number;
  /** Frames received (`chat_messages_received_total`). */
  messagesReceived: number;
  /** Posts stored, by kind (`chat_said_total`). */
  said: ReadonlyMap<string, number>;
  /** Webhook deliveries by outcome (`chat_webhook_deliveries_total`). */
  webhooks: ReadonlyMap<string, number>;
}

/**
 * Exports a few of `/metrics`' figures as OpenTelemetry metrics too
 * (`chat.connections`, `chat.rooms`, `chat.messages.received`,
 * `chat.posts` by `chat.post.kind`, `chat.webhook.deliveries` by
 * `chat.webhook.outcome`): observable instruments, read by `read` when
 * Deno exports, so the chat's paths pay nothing. Answers a function that
 * stops reading (a stopped chat's figures are not reported).
 */
export function observeChat(read: () => ChatReadings): () => void {
  const meter = metrics.getMeter(TELEMETRY_SCOPE);
  const connections = meter.createObservableGauge("chat.connections", {
    description: "Joined WebSocket connections",
  });
  const rooms = meter.createObservableGauge("chat.rooms", {
    description: "Rooms this process holds",
  });
  const received = meter.createObservableCounter("chat.messages.received", {
    description: "Frames received from clients",
  });
  const posts = meter.createObservableCounter("chat.posts", {
    description: "Posts this process's clients stored, by kind",
  });
  const deliveries = meter.createObservableCounter("chat.webhook.deliveries", {
    description: "Webhook deliveries by outcome",
  });
  const instruments = [connections, rooms, received, posts, deliveries];
  const callback = (
    observer: Parameters<
      Parameters<typeof meter.addBatchObservableCallback>[0]
    >[0],
  ) => {
    const now = read();
    observer.observe(connections, now.connections);
    observer.observe(rooms, now.rooms);
    observer.observe(received, now.messagesReceived);
    for (const [kind, count] of now.said) {
      observer.observe(posts, count, { "chat.post.kind": kind });
    }
    for (const [outcome, count] of now.webhooks) {
      observer.observe(deliveries, count, { "chat.webhook.outcome": outcome });
    }
  };
  meter.addBatchObservableCallback(callback, instruments);
  return () => meter.removeBatchObservableCallback(callback, instruments);
}

/** What a `chat.post` span says the post was. */
export type PostKind = "message" | "action" | "reply" | "edit" | "dm";

/**
 * Runs one post through the store in a `chat.post` span of its own (a new
 * trace: see the module's notes), `chat.room` and `chat.post.kind` set.
 */
export function inPostSpan<T>(room: string, kind: PostKind, fn: () => T): T {
  return inSpan(
    "chat.post",
    { [ROOM_ATTRIBUTE]: room, "chat.post.kind": kind },
    fn,
    { root: true },
  );
}

/**
 * Runs one request of the proxy (server/proxy.ts: a batch of asks POSTed
 * to `--proxy-connect` or `--proxy-publish`) in a `chat.proxy.connect` or
 * `chat.proxy.publish` span: a CLIENT span of a trace of its own (a batch
 * answers many handshakes or posts, so it is none's child), with the
 * number of asks (`chat.proxy.asks`) and their room when they share one.
 * The request made inside carries its `traceparent` (webhook_client.ts
 * adds {@linkcode traceHeaders}; Deno's `fetch` would too, as its child).
 */
export function inProxySpan<T>(
  kind: "connect" | "publish",
  asks: readonly unknown[],
  fn: () => T,
): T {
  const rooms = new Set(
    asks.map((ask) => (ask as { room?: unknown } | null)?.room),
  );
  const [room] = rooms;
  return inSpan(
    `chat.proxy.${kind}`,
    {
      [ROOM_ATTRIBUTE]: rooms.size === 1 && typeof room === "string"
        ? room
        : undefined,
      "chat.proxy.asks": asks.length,
    },
    fn,
    { root: true, kind: SpanKind.CLIENT },
  );
}
