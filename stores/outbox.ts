/**
 * The webhooks' outbox, as the stores and the deliverer
 * (server/webhooks.ts) share it: what one delivery is
 * ({@linkcode OutboxEntry}), what a store does with each event it appends
 * ({@linkcode OutboxWriter}: in the same step as the event, so a delivery is
 * kept exactly when its event is), and where deliveries wait until they are
 * done ({@linkcode Outbox}): in this process's memory
 * ({@linkcode MemoryOutbox}, bounded), in the `--data` file
 * (sqlite_outbox.ts) or in Redis (redis_outbox.ts).
 *
 * A leaf: it imports only the wire contract.
 *
 * @module
 */

import { randomBytes } from "node:crypto";
import type { DatabaseSync } from "node:sqlite";
import type { RoomEvent } from "../wire/protocol.ts";

/** One event to POST to one endpoint. */
export interface OutboxEntry {
  /**
   * The delivery's id (`X-Chat-Delivery`): one per event per endpoint, the
   * same on every try, after a restart and on another process, so the app
   * can tell a delivery it has had.
   */
  id: string;
  /** The endpoint's place in `--webhook`'s list. */
  endpoint: number;
  room: string;
  /** The event's JSON, as clients get it. */
  event: string;
  /** When it was stored (ms since the epoch): tried until the retry window from then is over. */
  created: number;
  /**
   * The part of the outbox it came from, where the outbox is shared out
   * between processes (redis_outbox.ts: a shard); see
   * {@linkcode OutboxSink.forget}.
   */
  part?: string;
  /** The storage's own name for it (a row, a stream entry). */
  ref?: number | string;
}

/**
 * What a store does for the webhooks with each event it appends: in the
 * same step as the event (before it is delivered to anyone), so that an
 * event that exists has its deliveries.
 */
export interface OutboxWriter {
  /** The event types (`RoomEvent["type"]`) the webhooks want. */
  readonly types: ReadonlySet<string>;
  /**
   * An event appended (rooms.ts's `MemoryStore`): queued for its
   * endpoints, and with `--data` written by the archive's next commit,
   * the one that writes the event.
   */
  add(room: string, event: RoomEvent): void;
  /**
   * Redis: the streams (one per endpoint) that the script appending the
   * room's events adds each wanted one to, in the same script.
   */
  streams?(room: string): string[];
  /**
   * Redis Cluster: the streams are the room's own and may have a TTL while
   * empty, which the script appending to them takes away (`PERSIST`).
   */
  readonly expiring?: boolean;
  /**
   * Redis Cluster: the script appended wanted events to the room's streams
   * (told after it, not in it: the outbox finds the room again by a scan
   * if this is lost).
   */
  appended?(room: string): void;
}

/**
 * More for the `--data` file's commits to write (sqlite_store.ts calls it):
 * the outbox's rows, written in the transaction that writes their events,
 * so that a `kill -9` after an echo loses no delivery.
 */
export interface CommitHook {
  /**
   * In the file's opening transaction: makes its tables if they are not
   * there (`CREATE TABLE IF NOT EXISTS`: the file's schema version is the
   * archive's) and keeps `db` for its own writes.
   */
  open(db: DatabaseSync): void;
  /** It has rows queued for the next commit. */
  pending(): boolean;
  /** In a commit's transaction: writes what is queued. */
  write(): void;
  /** The commit that called `write` is done: those rows are on disk. */
  committed(): void;
}

/** The deliverer (server/webhooks.ts), as an outbox hands it deliveries. */
export interface OutboxSink {
  /** Deliveries to make, each endpoint's in the order they were stored. */
  take(entries: OutboxEntry[]): void;
  /** How many more of an endpoint's deliveries it holds now. */
  room(endpoint: number): number;
  /**
   * Drops the deliveries of a part it has not started (this process no
   * longer delivers that part: another does, from storage).
   */
  forget(part: string): void;
}

/** Where deliveries wait until they are done, and how they reach the deliverer. */
export interface Outbox {
  /** What the store is given (see {@linkcode OutboxWriter}). */
  readonly writer: OutboxWriter;
  /**
   * Deliveries are kept outside this process's memory (a file, Redis): it
   * hands the deliverer only as many as it has room for, and the rest wait
   * there. Otherwise it hands every one, and the deliverer drops the oldest
   * when it holds too many.
   */
  readonly durable: boolean;
  /** Starts handing deliveries to `sink`. */
  start(sink: OutboxSink): void;
  /** The deliverer has room again for an endpoint's deliveries. */
  more(endpoint: number): void;
  /** Deliveries done with (delivered, or given up): forgotten for good. */
  done(entries: OutboxEntry[]): void;
  /**
   * Deliveries in storage not handed to the deliverer yet (the queue's
   * depth is these and what the deliverer holds).
   */
  waiting(): number;
  /** Stops handing deliveries, keeping what waits in storage. */
  close(): Promise<void>;
}

/**
 * The event types behind each name `--webhook-events` takes. A `dm` is
 * its two parties' alone, so it goes out only when named.
 */
export const WEBHOOK_EVENTS = {
  message: ["message", "action"],
  edit: ["edit"],
  delete: ["delete"],
  join: ["join"],
  leave: ["leave"],
  nick: ["nick"],
  moderation: ["kick", "topic", "slow"],
  dm: ["dm"],
} as const satisfies Record<string, readonly RoomEvent["type"][]>;

/** A name `--webhook-events` takes. */
export type WebhookEventKind = keyof typeof WEBHOOK_EVENTS;

/** The event types of the kinds named. */
export function eventTypes(kinds: readonly string[]): Set<string> {
  return new Set(
    kinds.flatMap((kind) =>
      (WEBHOOK_EVENTS as Record<string, readonly string[]>)[kind] ?? []
    ),
  );
}

/**
 * Deliveries kept in this process's memory only (no `--data`, no
 * `--redis`): every one is handed to the deliverer as its event is
 * appended, and lost with the process.
 */
export class MemoryOutbox implements Outbox {
  readonly durable = false;
  readonly writer: OutboxWriter;
  #sink?: OutboxSink;
  /** Makes this process's delivery ids its own (they start at 1 each time). */
  #tag = randomBytes(6).toString("hex");
  #next = 0;

  constructor(endpoints: number, types: ReadonlySet<string>) {
    this.writer = {
      types,
      add: (room, event) => {
        if (!this.#sink || !types.has(event.type)) return;
        const json = JSON.stringify(event);
        const created = event.ts;
        const entries: OutboxEntry[] = [];
        for (let endpoint = 0; endpoint < endpoints; endpoint++) {
          entries.push({
            id: `${this.#tag}.${++this.#next}`,
            endpoint,
            room,
            event: json,
            created,
          });
        }
        this.#sink.take(entries);
      },
    };
  }

  start(sink: OutboxSink): void {
    this.#sink = sink;
  }

  more(): void {}

  done(): void {}

  waiting(): number {
    return 0; // every one is handed at once
  }

  close(): Promise<void> {
    this.#sink = undefined;
    return Promise.resolve();
  }
}
