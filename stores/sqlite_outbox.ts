/**
 * The webhooks' outbox in the `--data` file: a row per event per endpoint,
 * written by the archive's commit (sqlite_store.ts) in the transaction
 * that writes the event, deleted once the delivery is done (delivered or
 * given up). After a restart, or a `kill -9`, what was not done is read
 * back and delivered.
 *
 * Its tables are its own and made at open if missing (`CREATE TABLE IF
 * NOT EXISTS`), so a file's schema version stays the archive's, and a file
 * of an older deno-chat takes them on without a migration:
 *
 * - `webhook_outbox`: `seq` (AUTOINCREMENT: never used twice, so delivery
 *   ids are never reused), the endpoint's URL, the room, when the event was
 *   committed, and the event's JSON; an index by endpoint and `seq`;
 * - in `meta`, `webhook_tag`: random, made once per file, the first part of
 *   every delivery id (`TAG.SEQ`), so a new file's ids are not an old
 *   one's.
 *
 * @module
 */

import type { DatabaseSync, StatementSync } from "node:sqlite";
import { randomBytes } from "node:crypto";
import type {
  CommitHook,
  Outbox,
  OutboxEntry,
  OutboxSink,
  OutboxWriter,
} from "./outbox.ts";
import type { Log } from "./rooms.ts";

const TABLES = `
  CREATE TABLE IF NOT EXISTS webhook_outbox (
    seq INTEGER PRIMARY KEY AUTOINCREMENT,
    endpoint TEXT NOT NULL,
    room TEXT NOT NULL,
    created INTEGER NOT NULL,
    event TEXT NOT NULL
  );
  CREATE INDEX IF NOT EXISTS webhook_outbox_by_endpoint
    ON webhook_outbox (endpoint, seq);
`;

/**
 * How long the rows of done deliveries may wait to be deleted by the
 * archive's next commit (in its transaction, for nothing more), before
 * they are deleted in one of their own, in ms.
 */
export const OUTBOX_DELETE_WAIT_MS = 1_000;

/** What {@linkcode SqliteOutbox} is made with. */
export interface SqliteOutboxOptions {
  /** The endpoints' URLs (`--webhook`), in order. */
  urls: string[];
  /** The event types they want. */
  types: ReadonlySet<string>;
  /** How long a delivery is tried (rows of endpoints no longer named go after it). */
  retryMs: number;
  log?: Log;
}

/** A row as read back: the statements' answer. */
interface OutboxRow {
  seq: number;
  room: string;
  created: number;
  event: string;
}

/** The outbox in the `--data` file (see the module's notes). */
export class SqliteOutbox implements Outbox, CommitHook {
  readonly durable = true;
  readonly writer: OutboxWriter;
  #options: SqliteOutboxOptions;
  #db?: DatabaseSync;
  #sql?: Record<"insert" | "after" | "delete", StatementSync>;
  #tag = "";
  /** Rows for the next commit: endpoint, room, created, event. */
  #queued: [number, string, number, string][] = [];
  /** What the last `write` wrote, handed out once its commit is done. */
  #written: OutboxEntry[] = [];
  #sink?: OutboxSink;
  /** Per endpoint: the last `seq` handed to the deliverer. */
  #cursor: number[];
  /** Per endpoint: every row up to the cursor has been handed. */
  #caughtUp: boolean[];
  /** Rows in the file (of the endpoints named), and those handed. */
  #stored = 0;
  #handed = 0;
  /** Rows to delete, with the next commit (or on their own, later). */
  #deletes: number[] = [];
  /** Those the commit on its way deletes (again, if it fails). */
  #deleting: number[] = [];
  #deleteDue?: ReturnType<typeof setTimeout>;
  #closed = false;

  constructor(options: SqliteOutboxOptions) {
    this.#options = options;
    this.#cursor = options.urls.map(() => 0);
    this.#caughtUp = options.urls.map(() => false);
    this.writer = {
      types: options.types,
      add: (room, event) => {
        if (!options.types.has(event.type)) return;
        const json = JSON.stringify(event);
        for (let endpoint = 0; endpoint < options.urls.length; endpoint++) {
          this.#queued.push([endpoint, room, event.ts, json]);
        }
      },
    };
  }

  open(db: DatabaseSync): void {
    db.exec(TABLES);
    db.prepare(
      "INSERT OR IGNORE INTO meta (key, value) VALUES ('webhook_tag', ?)",
    ).run(randomBytes(6).toString("hex"));
    this.#tag = String(
      db.prepare("SELECT value FROM meta WHERE key = 'webhook_tag'").get()!
        .value,
    );
    const urls = JSON.stringify(this.#options.urls);
    // An endpoint no longer named keeps its rows for the retry window (it
    // may be named again), not for ever.
    const forgotten = db.prepare(
      "DELETE FROM webhook_outbox WHERE endpoint NOT IN (SELECT value FROM json_each(?)) AND created < ?",
    ).run(urls, Date.now() - this.#options.retryMs).changes;
    if (Number(forgotten) > 0) {
      this.#options.log?.("warn", "webhook_forgotten", {
        deliveries: Number(forgotten),
      });
    }
    this.#stored = Number(
      db.prepare(
        "SELECT count(*) AS n FROM webhook_outbox WHERE endpoint IN (SELECT value FROM json_each(?))",
      ).get(urls)!.n,
    );
    this.#db = db;
    this.#sql = {
      insert: db.prepare(
        "INSERT INTO webhook_outbox (endpoint, room, created, event) VALUES (?, ?, ?, ?)",
      ),
      after: db.prepare(
        "SELECT seq, room, created, event FROM webhook_outbox WHERE endpoint = ? AND seq > ? ORDER BY seq LIMIT ?",
      ),
      delete: db.prepare(
        "DELETE FROM webhook_outbox WHERE seq IN (SELECT value FROM json_each(?))",
      ),
    };
  }

  pending(): boolean {
    return this.#queued.length > 0;
  }

  write(): void {
    // A commit that failed wrote nothing: its rows are written again.
    this.#written = [];
    if (this.#deletes.length > 0 || this.#deleting.length > 0) {
      this.#deleting.push(...this.#deletes);
      this.#deletes = [];
      this.#sql!.delete.run(JSON.stringify(this.#deleting));
    }
    const { urls } = this.#options;
    for (const [endpoint, room, created, event] of this.#queued) {
      const seq = Number(
        this.#sql!.insert.run(urls[endpoint], room, created, event)
          .lastInsertRowid,
      );
      this.#written.push(this.#entry(endpoint, { seq, room, created, event }));
    }
  }

  committed(): void {
    const written = this.#written;
    this.#deleting = [];
    if (this.#deletes.length === 0 && this.#deleteDue !== undefined) {
      clearTimeout(this.#deleteDue);
      this.#deleteDue = undefined;
    }
    this.#queued = [];
    this.#written = [];
    this.#stored += written.length;
    if (!this.#sink || written.length === 0) return;
    // Handed at once where the deliverer has read all before them and has
    // room; otherwise they are read from the file in their turn (`more`).
    const byEndpoint = this.#options.urls.map((): OutboxEntry[] => []);
    for (const entry of written) byEndpoint[entry.endpoint].push(entry);
    const handed: OutboxEntry[] = [];
    byEndpoint.forEach((entries, endpoint) => {
      if (entries.length === 0) return;
      if (
        !this.#caughtUp[endpoint] ||
        this.#sink!.room(endpoint) < entries.length
      ) {
        this.#caughtUp[endpoint] = false;
        return;
      }
      this.#cursor[endpoint] = entries.at(-1)!.ref as number;
      handed.push(...entries);
    });
    this.#handed += handed.length;
    if (handed.length > 0) this.#sink.take(handed);
  }

  start(sink: OutboxSink): void {
    this.#sink = sink;
    this.#options.urls.forEach((_, endpoint) => this.more(endpoint));
  }

  more(endpoint: number): void {
    const sink = this.#sink;
    if (!sink || this.#closed || this.#caughtUp[endpoint]) return;
    const room = sink.room(endpoint);
    if (room <= 0) return;
    const rows = this.#sql!.after.all(
      this.#options.urls[endpoint],
      this.#cursor[endpoint],
      room,
    ) as unknown as OutboxRow[];
    if (rows.length < room) this.#caughtUp[endpoint] = true;
    if (rows.length === 0) return;
    this.#cursor[endpoint] = Number(rows.at(-1)!.seq);
    this.#handed += rows.length;
    sink.take(rows.map((row) => this.#entry(endpoint, row)));
  }

  done(entries: OutboxEntry[]): void {
    this.#handed -= entries.length;
    this.#stored -= entries.length;
    for (const entry of entries) this.#deletes.push(entry.ref as number);
    this.#deleteDue ??= setTimeout(
      () => this.#delete(),
      OUTBOX_DELETE_WAIT_MS,
    );
  }

  waiting(): number {
    return Math.max(0, this.#stored - this.#handed);
  }

  close(): Promise<void> {
    clearTimeout(this.#deleteDue);
    this.#delete();
    this.#closed = true;
    this.#sink = undefined;
    return Promise.resolve();
  }

  #entry(endpoint: number, row: OutboxRow): OutboxEntry {
    const seq = Number(row.seq);
    return {
      id: `${this.#tag}.${seq}`,
      endpoint,
      room: String(row.room),
      event: String(row.event),
      created: Number(row.created),
      ref: seq,
    };
  }

  /**
   * Deletes the rows of done deliveries that no commit has deleted (kept,
   * and delivered again, if it fails).
   */
  #delete(): void {
    this.#deleteDue = undefined;
    const db = this.#db;
    // With those of a commit that failed (deleting twice is harmless).
    const seqs = [...this.#deleting, ...this.#deletes];
    if (seqs.length === 0 || !db?.isOpen || db.isTransaction) return;
    this.#deletes = [];
    this.#deleting = [];
    try {
      this.#sql!.delete.run(JSON.stringify(seqs));
    } catch (error) {
      // At worst delivered again after a restart: at least once.
      this.#options.log?.("error", "webhook_outbox_failed", {
        error: error instanceof Error ? error.message : String(error),
      });
    }
  }
}
