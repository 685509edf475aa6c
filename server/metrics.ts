/**
 * What `GET /metrics` shows: the counters a running chat keeps, and the
 * Prometheus text made from them and from its gauges, one row each in
 * {@linkcode METRICS}. Adding a metric is a row there, and its count where
 * the thing happens.
 *
 * @module
 */

import { CloseCode } from "../wire/protocol.ts";

/** What a running chat counts; made new by each start. */
export interface Counters {
  messagesReceived: number;
  framesSent: number;
  slowConsumerDrops: number;
  /** Refusals told to clients, by error code. */
  refused: Map<string, number>;
  /** Connections closed, by close code (see {@linkcode closeLabel}). */
  closes: Map<number | "other", number>;
  upgradesRefused: Map<string, number>;
  moderation: Map<string, number>;
  /** By label set: `method="publish",status="200"`. */
  apiRequests: Map<string, number>;
  /**
   * What this process's clients had stored, by kind: `message`, `action`,
   * `reply` (a message or action answering one), `edit`, `dm`.
   */
  said: Map<string, number>;
  /** Reactions this process's clients changed: `added`, `taken_back`. */
  reactions: Map<string, number>;
  /**
   * Unread counts after a marker, by where: `store` (asked of the store: a
   * round trip with Redis) or `here` (over the room's recent events kept
   * by server/unread.ts).
   */
  unreadCounts: Map<string, number>;
  /**
   * Webhook deliveries by outcome: `delivered`, `retried` (a try that
   * failed, to be tried again), `failed` (given up after the retry
   * window), `dropped` (over the queue's limit in memory).
   */
  webhooks: Map<string, number>;
  /** Seconds from an event's commit to its webhook's 2xx. */
  webhookLatency: Histogram;
  /** Proxy POSTs, by label set: `proxy="publish",outcome="answered"`. */
  proxyRequests: Map<string, number>;
  /** Proxy verdicts, by label set: `proxy="publish",verdict="refuse"`. */
  proxyVerdicts: Map<string, number>;
  /** Seconds from a proxy POST to its answer (answered ones). */
  proxyLatency: Histogram;
}

/** A Prometheus histogram: counts per upper bound, their sum and count. */
export interface Histogram {
  /** Upper bounds, ascending (`+Inf` is implied). */
  bounds: readonly number[];
  /** Observations at or under each bound (not cumulative). */
  counts: number[];
  sum: number;
  count: number;
}

/** A histogram with these bounds and nothing observed. */
export function newHistogram(bounds: readonly number[]): Histogram {
  return { bounds, counts: bounds.map(() => 0), sum: 0, count: 0 };
}

/** Counts one observation. */
export function observe(histogram: Histogram, value: number): void {
  const at = histogram.bounds.findIndex((bound) => value <= bound);
  if (at !== -1) histogram.counts[at]++;
  histogram.sum += value;
  histogram.count++;
}

/**
 * Bounds of `chat_webhook_latency_seconds`: from a delivery at once to one
 * after an endpoint was down for an hour.
 */
export const WEBHOOK_LATENCY_BOUNDS = [
  0.005,
  0.01,
  0.025,
  0.05,
  0.1,
  0.25,
  0.5,
  1,
  5,
  30,
  60,
  300,
  3600,
];

/** Bounds of `chat_proxy_latency_seconds`: a local app's 1 ms to a timeout. */
export const PROXY_LATENCY_BOUNDS = [
  0.001,
  0.0025,
  0.005,
  0.01,
  0.025,
  0.05,
  0.1,
  0.25,
  0.5,
  1,
  5,
];

/** Counters at zero, for a new start. */
export function newCounters(): Counters {
  return {
    messagesReceived: 0,
    framesSent: 0,
    slowConsumerDrops: 0,
    refused: new Map(),
    closes: new Map(),
    upgradesRefused: new Map(),
    moderation: new Map(),
    apiRequests: new Map(),
    said: new Map(),
    reactions: new Map(),
    unreadCounts: new Map([["store", 0], ["here", 0]]),
    webhooks: new Map(
      ["delivered", "retried", "failed", "dropped"].map((k) => [k, 0]),
    ),
    webhookLatency: newHistogram(WEBHOOK_LATENCY_BOUNDS),
    proxyRequests: new Map(),
    proxyVerdicts: new Map(),
    proxyLatency: newHistogram(PROXY_LATENCY_BOUNDS),
  };
}

/** One more of `key`. */
export function bump<K>(map: Map<K, number>, key: K): void {
  map.set(key, (map.get(key) ?? 0) + 1);
}

/** Close codes counted by their number in `/metrics`; others are `other`. */
const KNOWN_CLOSE_CODES = new Set<number>([
  ...Object.values(CloseCode),
  1002,
  1007,
  1010,
  1012,
]);

/** A close code as `chat_closes_total` labels it. */
export function closeLabel(code: number): number | "other" {
  return KNOWN_CLOSE_CODES.has(code) ? code : "other";
}

/** The gauges, read when `/metrics` is asked for, and the counters. */
export interface Readings {
  /** Clients in a room. */
  connections: number;
  /** Rooms with members or connections on their way in. */
  rooms: number;
  /** The room store can be reached. */
  storeUp: boolean;
  /** Upgraded sockets not yet closed. */
  socketsOpen: number;
  /** Sockets that never opened, given up on, still held by Deno. */
  socketsStuck: number;
  /**
   * A shared store's commits, and changes it decided again because the
   * room had changed meanwhile (rooms.ts `RoomStore.decisions`).
   */
  decisions: { commits: number; again: number };
  /** Posts' turns replicas acknowledged, and not (rooms.ts `replicaAcks`). */
  replicaAcks?: { acknowledged: number; short: number };
  /** Webhook deliveries not done yet, in memory and in storage. */
  webhookQueue: number;
  /** Messages waiting for the proxy's answer (server/proxy.ts). */
  proxyWaiting?: number;
  counters: Counters;
}

type Sample = number | Map<string | number, number> | Histogram;

/** `/metrics`, one row each: name, type, help, value, and its label if any. */
export const METRICS: [
  name: string,
  type: "gauge" | "counter" | "histogram",
  help: string,
  value: (readings: Readings) => Sample,
  label?: string,
][] = [
  ["chat_connections", "gauge", "Clients in a room.", (r) => r.connections],
  [
    "chat_rooms",
    "gauge",
    "Rooms with members or connections on their way in.",
    (r) => r.rooms,
  ],
  [
    "chat_store_up",
    "gauge",
    "1 while the room store can be reached.",
    (r) => r.storeUp ? 1 : 0,
  ],
  [
    "chat_sockets_open",
    "gauge",
    "Upgraded sockets not yet closed, including ones being closed.",
    (r) => r.socketsOpen,
  ],
  [
    "chat_sockets_stuck",
    "gauge",
    "Sockets that never opened, given up on, still held by Deno.",
    (r) => r.socketsStuck,
  ],
  [
    "chat_messages_received_total",
    "counter",
    "Text frames received.",
    (r) => r.counters.messagesReceived,
  ],
  [
    "chat_frames_sent_total",
    "counter",
    "Frames sent to clients.",
    (r) => r.counters.framesSent,
  ],
  [
    "chat_messages_refused_total",
    "counter",
    "Messages refused, by reason.",
    (r) => r.counters.refused,
    "reason",
  ],
  [
    "chat_closes_total",
    "counter",
    "Connections closed, by close code.",
    (r) => r.counters.closes,
    "code",
  ],
  [
    "chat_slow_consumer_drops_total",
    "counter",
    "Clients dropped for not reading.",
    (r) => r.counters.slowConsumerDrops,
  ],
  [
    "chat_upgrades_refused_total",
    "counter",
    "WebSocket upgrades refused, by reason.",
    (r) => r.counters.upgradesRefused,
    "reason",
  ],
  [
    "chat_moderation_total",
    "counter",
    "Moderation actions done, by action.",
    (r) => r.counters.moderation,
    "action",
  ],
  [
    "chat_said_total",
    "counter",
    "Messages, actions, replies, edits and direct messages this process's clients had stored, by kind.",
    (r) => r.counters.said,
    "kind",
  ],
  [
    "chat_reactions_total",
    "counter",
    "Reactions this process's clients added or took back.",
    (r) => r.counters.reactions,
    "change",
  ],
  [
    "chat_unread_counts_total",
    "counter",
    "Unread counts after a read marker, by where they were counted: asked of the store, or over the room's recent events here.",
    (r) => r.counters.unreadCounts,
    "by",
  ],
  [
    "chat_store_decisions_total",
    "counter",
    "Changes the shared store committed, and decided again because the room had changed meanwhile.",
    (r) =>
      new Map([
        ["committed", r.decisions.commits],
        ["again", r.decisions.again],
      ]),
    "outcome",
  ],
  [
    "chat_redis_replica_acks_total",
    "counter",
    "Turns of posts delivered after --redis-wait-replicas replicas had them (acknowledged) or after --redis-wait-ms without (short).",
    (r) =>
      new Map([
        ["acknowledged", r.replicaAcks?.acknowledged ?? 0],
        ["short", r.replicaAcks?.short ?? 0],
      ]),
    "outcome",
  ],
  [
    "chat_api_requests_total",
    "counter",
    "HTTP API calls, by method and status.",
    (r) => r.counters.apiRequests,
  ],
  [
    "chat_webhook_deliveries_total",
    "counter",
    "Webhook deliveries: delivered, retried (a try failed), failed (given up after the retry window), dropped (over the queue's limit in memory).",
    (r) => r.counters.webhooks,
    "outcome",
  ],
  [
    "chat_webhook_queue",
    "gauge",
    "Webhook deliveries not done yet, in memory and in storage.",
    (r) => r.webhookQueue,
  ],
  [
    "chat_webhook_latency_seconds",
    "histogram",
    "Seconds from an event's commit to its webhook's 2xx answer.",
    (r) => r.counters.webhookLatency,
  ],
  [
    "chat_proxy_requests_total",
    "counter",
    "Proxy POSTs to the app, by proxy (connect, publish) and outcome (answered, failed).",
    (r) => r.counters.proxyRequests,
  ],
  [
    "chat_proxy_verdicts_total",
    "counter",
    "What the proxy decided, by proxy and verdict (allow, replace, refuse, failed_open, failed_closed, over_limit).",
    (r) => r.counters.proxyVerdicts,
  ],
  [
    "chat_proxy_waiting",
    "gauge",
    "Messages waiting for the proxy's answer.",
    (r) => r.proxyWaiting ?? 0,
  ],
  [
    "chat_proxy_latency_seconds",
    "histogram",
    "Seconds from a proxy POST to the app's answer.",
    (r) => r.counters.proxyLatency,
  ],
];

/** Prometheus text format: one line per sample, labelled ones by key. */
export function renderMetrics(readings: Readings): string {
  const lines: string[] = [];
  for (const [name, type, help, value, label] of METRICS) {
    lines.push(`# HELP ${name} ${help}`, `# TYPE ${name} ${type}`);
    const sample = value(readings);
    if (typeof sample === "number") lines.push(`${name} ${sample}`);
    else if (!(sample instanceof Map)) {
      let below = 0;
      sample.bounds.forEach((bound, i) => {
        below += sample.counts[i];
        lines.push(`${name}_bucket{le="${bound}"} ${below}`);
      });
      lines.push(
        `${name}_bucket{le="+Inf"} ${sample.count}`,
        `${name}_sum ${sample.sum}`,
        `${name}_count ${sample.count}`,
      );
    } else {
      for (const [key, n] of sample) {
        // Without a label name, the keys are whole label sets.
        lines.push(
          label ? `${name}{${label}="${key}"} ${n}` : `${name}{${key}} ${n}`,
        );
      }
    }
  }
  return lines.join("\n") + "\n";
}
