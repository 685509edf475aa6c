/**
 * Webhooks (`--webhook URL`): every event of the kinds asked for
 * (`--webhook-events`) POSTed as JSON to each endpoint, signed with
 * `--webhook-secret`, delivered at least once and in order per room per
 * endpoint, tried again with exponential backoff and full jitter until
 * `--webhook-retry-hours` have passed since the event.
 *
 * The store puts each wanted event in the outbox in the same step as the
 * event (stores/outbox.ts), and {@linkcode Webhooks} delivers from it: one
 * lane per endpoint and room, one request at a time in a lane (a failing
 * event holds back its room's later ones for that endpoint, nothing else),
 * at most {@linkcode WEBHOOK_CONCURRENCY} requests at a time per endpoint,
 * each given up after {@linkcode WEBHOOK_TIMEOUT_MS}. It holds at most
 * {@linkcode WEBHOOK_QUEUE_LIMIT} deliveries per endpoint in memory: in
 * memory only, the oldest beyond are dropped (and counted); with `--data`
 * or `--redis` the rest wait in storage. Nothing here is on the chat's
 * way: the store only adds to the outbox, and requests are sent after the
 * turn, so a dead or slow endpoint costs the chat nothing but memory.
 *
 * @module
 */

import { createHmac, createSecretKey, type KeyObject } from "node:crypto";
import type { Outbox, OutboxEntry, OutboxSink } from "../stores/outbox.ts";
import { WebhookClient } from "./webhook_client.ts";
import type { Log } from "../stores/rooms.ts";
import { bump, type Counters, observe } from "./metrics.ts";
import {
  inSpan,
  ROOM_ATTRIBUTE,
  SpanKind,
  SpanStatusCode,
} from "./telemetry.ts";

/** The shortest `--webhook-secret`, as for `--api-key`. */
export const WEBHOOK_MIN_SECRET_CHARS = 32;
/** How long one POST may take before it counts as failed, in ms. */
export const WEBHOOK_TIMEOUT_MS = 5_000;
/** The first retry waits up to this, in ms; each next one up to twice as long. */
export const WEBHOOK_RETRY_BASE_MS = 500;
/**
 * The longest wait before a retry, in ms: a room's event is tried at least
 * this often while its endpoint is down, so deliveries resume within about
 * this once it is back.
 */
export const WEBHOOK_RETRY_MAX_MS = 30_000;
/**
 * Deliveries per endpoint held in memory (waiting, retried or on their
 * way). In memory only, the oldest beyond it are dropped
 * (`chat_webhook_deliveries_total{outcome="dropped"}`); with `--data` or
 * `--redis` the rest wait in storage and are read as these are done.
 */
export const WEBHOOK_QUEUE_LIMIT = 20_000;
/**
 * With `--data` or `--redis`: more is read from storage once an endpoint's
 * held deliveries fall under this share of {@linkcode WEBHOOK_QUEUE_LIMIT}.
 */
export const WEBHOOK_REFILL_SHARE = 0.5;
/** Requests on their way to one endpoint at once (each in another room). */
export const WEBHOOK_CONCURRENCY = 16;
/** The largest `--webhook-batch`. */
export const WEBHOOK_MAX_BATCH = 1000;

/** The headers of a delivery. */
export const WEBHOOK_HEADERS = {
  /** `sha256=` and the hex HMAC-SHA256 of `TIMESTAMP.BODY` with the secret. */
  signature: "X-Chat-Signature",
  /** When it was signed, in seconds since the epoch (refuse old ones). */
  timestamp: "X-Chat-Timestamp",
  /**
   * The delivery's id: the same on every try (de-duplicate by it). In a
   * batch (`--webhook-batch`), its first delivery's.
   */
  delivery: "X-Chat-Delivery",
} as const;

/** What {@linkcode Webhooks} is made with. */
export interface WebhookConfig {
  /** The endpoints' URLs (`--webhook`), in order. */
  urls: string[];
  /** Signs every delivery (`--webhook-secret`). */
  secret: string;
  /** How long after its event a delivery is tried, in ms (`--webhook-retry-hours`). */
  retryMs: number;
  /**
   * Most deliveries of one room in one POST (`--webhook-batch`); above 1
   * every POST is a batch, `{"deliveries":[…]}`. @default {1}
   */
  batch?: number;
  /** Where the outcomes are counted (`/metrics`). */
  counters: Counters;
  log: Log;
}

/**
 * The signature header's value for a body sent at `timestamp` (seconds):
 * `sha256=` and the hex HMAC-SHA256 of `TIMESTAMP.BODY`.
 */
export function webhookSignature(
  secret: string | KeyObject,
  timestamp: string,
  body: string,
): string {
  return "sha256=" +
    createHmac("sha256", secret).update(`${timestamp}.${body}`).digest("hex");
}

/** What a delivery POSTs: `{"id", "room", "event"}`. */
export function webhookBody(entry: OutboxEntry): string {
  return `{"id":${JSON.stringify(entry.id)},"room":${
    JSON.stringify(entry.room)
  },"event":${entry.event}}`;
}

/**
 * What a batch POSTs (`--webhook-batch` above 1): `{"deliveries": [...]}`,
 * each as {@linkcode webhookBody}, one room's, in its order.
 */
export function webhookBatchBody(entries: readonly OutboxEntry[]): string {
  return `{"deliveries":[${entries.map(webhookBody).join(",")}]}`;
}

/** A delivery as the deliverer holds it. */
interface Delivery extends OutboxEntry {
  /** Tries that failed. */
  attempts: number;
  state: "queued" | "sending" | "done";
}

/** One room's deliveries to one endpoint: sent one at a time, in order. */
interface Lane {
  room: string;
  deliveries: Delivery[];
  /** The first not done (earlier ones are kept until compacted). */
  head: number;
  /** Its first delivery is on its way, or waiting to be tried again. */
  busy: boolean;
  /** In its endpoint's `ready` list. */
  ready: boolean;
  retry?: ReturnType<typeof setTimeout>;
}

/** One endpoint: its lanes, and what it holds. */
interface Endpoint {
  url: string;
  /** Its URL's host name and port, as its spans name it (no credentials). */
  server: { "server.address": string; "server.port": number };
  index: number;
  client: WebhookClient;
  lanes: Map<string, Lane>;
  /** Lanes with a delivery to send, in the order they became ready. */
  ready: Lane[];
  readyHead: number;
  inFlight: number;
  /** Deliveries held, in lanes: waiting, retried or on their way. */
  held: number;
  /** In memory only: deliveries in the order taken (to drop the oldest). */
  arrivals: Delivery[];
  arrivalsHead: number;
  /** Its last delivery failed (logged once, until one gets through). */
  failing: boolean;
}

/** A URL's host name and port, as OpenTelemetry's attributes name them. */
function serverOf(url: string): Endpoint["server"] {
  const { hostname, port, protocol } = new URL(url);
  return {
    "server.address": hostname.replace(/^\[(.*)\]$/, "$1"),
    "server.port": Number(port) || (protocol === "https:" ? 443 : 80),
  };
}

/** Arrays read from a head index are cut back once that many are behind it. */
const COMPACT_AT = 1024;

/** Delivers the outbox's deliveries to their endpoints (see the module's notes). */
export class Webhooks implements OutboxSink {
  #config: WebhookConfig;
  #outbox: Outbox;
  #endpoints: Endpoint[];
  #turn?: ReturnType<typeof setImmediate>;
  #requests = new Set<Promise<void>>();
  /** The secret as a key, made once (not at each signature). */
  #key: KeyObject;
  #closed = false;

  constructor(config: WebhookConfig, outbox: Outbox) {
    this.#config = config;
    this.#outbox = outbox;
    this.#key = createSecretKey(new TextEncoder().encode(config.secret));
    this.#endpoints = config.urls.map((url, index) => ({
      url,
      server: serverOf(url),
      index,
      client: new WebhookClient(url),
      lanes: new Map(),
      ready: [],
      readyHead: 0,
      inFlight: 0,
      held: 0,
      arrivals: [],
      arrivalsHead: 0,
      failing: false,
    }));
  }

  /** Starts taking deliveries from the outbox. */
  start(): void {
    this.#outbox.start(this);
  }

  /** Deliveries not done yet: held here, and waiting in storage. */
  depth(): number {
    let held = 0;
    for (const endpoint of this.#endpoints) held += endpoint.held;
    return held + this.#outbox.waiting();
  }

  take(entries: OutboxEntry[]): void {
    if (this.#closed) return;
    for (const entry of entries) {
      const endpoint = this.#endpoints[entry.endpoint];
      if (!endpoint) continue;
      const delivery: Delivery = { ...entry, attempts: 0, state: "queued" };
      let lane = endpoint.lanes.get(entry.room);
      if (!lane) {
        lane = {
          room: entry.room,
          deliveries: [],
          head: 0,
          busy: false,
          ready: false,
        };
        endpoint.lanes.set(entry.room, lane);
      }
      lane.deliveries.push(delivery);
      endpoint.held++;
      if (!lane.busy) this.#makeReady(endpoint, lane);
      if (!this.#outbox.durable) {
        endpoint.arrivals.push(delivery);
        if (endpoint.held > WEBHOOK_QUEUE_LIMIT) this.#dropOldest(endpoint);
      }
    }
    this.#schedule();
  }

  room(endpoint: number): number {
    const held = this.#endpoints[endpoint]?.held ?? WEBHOOK_QUEUE_LIMIT;
    return this.#closed ? 0 : Math.max(0, WEBHOOK_QUEUE_LIMIT - held);
  }

  forget(part: string): void {
    for (const endpoint of this.#endpoints) {
      for (const lane of endpoint.lanes.values()) {
        const kept: Delivery[] = [];
        for (let i = lane.head; i < lane.deliveries.length; i++) {
          const delivery = lane.deliveries[i];
          if (delivery.part === part && delivery.state === "queued") {
            delivery.state = "done";
            endpoint.held--;
          } else kept.push(delivery);
        }
        lane.deliveries = kept;
        lane.head = 0;
        if (kept[0]?.state !== "sending") {
          clearTimeout(lane.retry);
          lane.retry = undefined;
          lane.busy = false;
        }
        if (kept.length === 0 && !lane.busy) endpoint.lanes.delete(lane.room);
        else if (!lane.busy) this.#makeReady(endpoint, lane);
      }
    }
    this.#schedule();
  }

  /**
   * Stops: no more requests, those on their way cut short (their
   * deliveries stay in storage, to be made again), the outbox closed.
   */
  async close(): Promise<void> {
    if (this.#closed) return;
    this.#closed = true;
    if (this.#turn) clearImmediate(this.#turn);
    this.#turn = undefined;
    for (const endpoint of this.#endpoints) {
      for (const lane of endpoint.lanes.values()) clearTimeout(lane.retry);
    }
    for (const endpoint of this.#endpoints) endpoint.client.close();
    await Promise.allSettled([...this.#requests]);
    await this.#outbox.close();
  }

  /** A lane with a delivery to send joins its endpoint's ready list. */
  #makeReady(endpoint: Endpoint, lane: Lane): void {
    if (lane.ready || lane.busy || lane.head >= lane.deliveries.length) return;
    lane.ready = true;
    endpoint.ready.push(lane);
  }

  /** Work for the end of this turn: requests to send, more to read. */
  #schedule(): void {
    if (this.#closed) return;
    this.#turn ??= setImmediate(() => {
      this.#turn = undefined;
      for (const endpoint of this.#endpoints) {
        if (
          this.#outbox.durable &&
          endpoint.held < WEBHOOK_QUEUE_LIMIT * WEBHOOK_REFILL_SHARE
        ) {
          this.#outbox.more(endpoint.index); // may take() more at once
        }
        this.#pump(endpoint);
      }
    });
  }

  /** Sends the next delivery of ready lanes, up to the concurrency. */
  #pump(endpoint: Endpoint): void {
    while (
      endpoint.inFlight < WEBHOOK_CONCURRENCY &&
      endpoint.readyHead < endpoint.ready.length
    ) {
      const lane = endpoint.ready[endpoint.readyHead++];
      lane.ready = false;
      if (lane.busy || lane.head >= lane.deliveries.length) continue;
      const delivery = lane.deliveries[lane.head];
      const request = this.#send(endpoint, lane, delivery);
      this.#requests.add(request);
      request.finally(() => this.#requests.delete(request));
    }
    if (endpoint.readyHead >= COMPACT_AT) {
      endpoint.ready = endpoint.ready.slice(endpoint.readyHead);
      endpoint.readyHead = 0;
    }
  }

  /**
   * One try of a lane's first delivery (with `--webhook-batch`, and those
   * after it up to the batch), and what follows from its answer.
   */
  async #send(
    endpoint: Endpoint,
    lane: Lane,
    delivery: Delivery,
  ): Promise<void> {
    lane.busy = true;
    const batch = this.#config.batch ?? 1;
    const sent = lane.deliveries.slice(lane.head, lane.head + batch);
    for (const one of sent) one.state = "sending";
    endpoint.inFlight++;
    const body = batch > 1 ? webhookBatchBody(sent) : webhookBody(delivery);
    const timestamp = String(Math.floor(Date.now() / 1000));
    const { delivery: id, timestamp: time, signature } = WEBHOOK_HEADERS;
    let status = 0;
    let problem = "";
    try {
      // A try is a trace of its own: its event's post is long over, and
      // what is active here is whichever turn scheduled it.
      status = await inSpan("chat.webhook.deliver", {
        [ROOM_ATTRIBUTE]: lane.room,
        ...endpoint.server,
        "chat.webhook.delivery": delivery.id,
        "chat.webhook.attempt": delivery.attempts + 1,
        "chat.webhook.deliveries": sent.length,
      }, async (span) => {
        const answered = await endpoint.client.post(
          `${id}: ${delivery.id}\r\n${time}: ${timestamp}\r\n${signature}: ${
            webhookSignature(this.#key, timestamp, body)
          }\r\n`,
          body,
          WEBHOOK_TIMEOUT_MS,
        );
        span.setAttribute("http.response.status_code", answered);
        if (answered < 200 || answered >= 300) {
          span.setStatus({ code: SpanStatusCode.ERROR });
        }
        return answered;
      }, { root: true, kind: SpanKind.CLIENT });
    } catch (error) {
      problem = error instanceof Error ? error.message : String(error);
    } finally {
      endpoint.inFlight--;
    }
    if (this.#closed) return;
    if (status >= 200 && status < 300) {
      for (const one of sent) this.#delivered(endpoint, lane, one);
    } else {
      // The batch's others wait with the first, to go with it again.
      for (const one of sent.slice(1)) one.state = "queued";
      this.#failed(endpoint, lane, delivery, problem || `status ${status}`);
    }
    // The room's next one now, not a turn later: a busy room's deliveries
    // go one after another, so each turn saved is throughput.
    this.#pump(endpoint);
    if (
      this.#outbox.durable &&
      endpoint.held < WEBHOOK_QUEUE_LIMIT * WEBHOOK_REFILL_SHARE
    ) {
      this.#schedule();
    }
  }

  #delivered(endpoint: Endpoint, lane: Lane, delivery: Delivery): void {
    const { counters, log } = this.#config;
    bump(counters.webhooks, "delivered");
    observe(
      counters.webhookLatency,
      Math.max(0, Date.now() - delivery.created) / 1000,
    );
    if (endpoint.failing) {
      endpoint.failing = false;
      log("info", "webhook_recovered", { endpoint: endpoint.url });
    }
    this.#finish(endpoint, lane, delivery);
  }

  #failed(
    endpoint: Endpoint,
    lane: Lane,
    delivery: Delivery,
    problem: string,
  ): void {
    const { counters, log, retryMs } = this.#config;
    delivery.attempts++;
    if (!endpoint.failing) {
      endpoint.failing = true;
      log("warn", "webhook_failing", { endpoint: endpoint.url, problem });
    }
    if (Date.now() - delivery.created >= retryMs) {
      bump(counters.webhooks, "failed");
      log("warn", "webhook_gave_up", {
        endpoint: endpoint.url,
        room: lane.room,
        delivery: delivery.id,
        attempts: delivery.attempts,
      });
      return this.#finish(endpoint, lane, delivery);
    }
    bump(counters.webhooks, "retried");
    delivery.state = "queued";
    // Full jitter: anywhere up to the exponential bound, so that the lanes
    // of an endpoint that comes back do not all try again at once.
    const bound = Math.min(
      WEBHOOK_RETRY_MAX_MS,
      WEBHOOK_RETRY_BASE_MS * 2 ** (delivery.attempts - 1),
    );
    lane.retry = setTimeout(() => {
      lane.retry = undefined;
      lane.busy = false;
      this.#makeReady(endpoint, lane);
      this.#schedule();
    }, Math.random() * bound);
  }

  /** A lane's first delivery is done with: the next one may go. */
  #finish(endpoint: Endpoint, lane: Lane, delivery: Delivery): void {
    delivery.state = "done";
    endpoint.held--;
    this.#outbox.done([delivery]); // it writes them together, a turn later
    lane.head++;
    lane.busy = false;
    if (lane.head >= lane.deliveries.length) {
      endpoint.lanes.delete(lane.room);
      return;
    }
    if (lane.head >= COMPACT_AT) {
      lane.deliveries = lane.deliveries.slice(lane.head);
      lane.head = 0;
    }
    this.#makeReady(endpoint, lane);
  }

  /**
   * In memory only, over {@linkcode WEBHOOK_QUEUE_LIMIT}: the oldest
   * delivery not on its way is dropped. Before it in its lane are only
   * older ones, each done or on its way (a batch's).
   */
  #dropOldest(endpoint: Endpoint): void {
    const { arrivals } = endpoint;
    while (
      endpoint.arrivalsHead < arrivals.length &&
      arrivals[endpoint.arrivalsHead].state === "done"
    ) {
      endpoint.arrivalsHead++;
    }
    // Past the few on their way (at most WEBHOOK_CONCURRENCY).
    for (let i = endpoint.arrivalsHead; i < arrivals.length; i++) {
      const delivery = arrivals[i];
      if (delivery.state !== "queued") continue;
      const lane = endpoint.lanes.get(delivery.room)!;
      this.#drop(endpoint, lane, lane.deliveries.indexOf(delivery, lane.head));
      break;
    }
    if (endpoint.arrivalsHead >= COMPACT_AT) {
      endpoint.arrivals = arrivals.slice(endpoint.arrivalsHead);
      endpoint.arrivalsHead = 0;
    }
  }

  #drop(endpoint: Endpoint, lane: Lane, at: number): void {
    const [dropped] = lane.deliveries.splice(at, 1);
    dropped.state = "done";
    endpoint.held--;
    bump(this.#config.counters.webhooks, "dropped");
    if (at !== lane.head) return;
    // It was waiting to be tried again: the next one goes instead.
    clearTimeout(lane.retry);
    lane.retry = undefined;
    lane.busy = false;
    if (lane.head >= lane.deliveries.length) endpoint.lanes.delete(lane.room);
    else this.#makeReady(endpoint, lane);
  }
}
