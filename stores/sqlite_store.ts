/**
 * The embedded, durable room store behind `--data FILE`: rooms.ts's
 * {@linkcode MemoryStore} writing through to a SQLite file (Deno's built-in
 * `node:sqlite`, no dependency). Loaded by server/open_store.ts only with `--data`.
 *
 * What the file keeps (live membership is not kept: connections die with the
 * process, and nobody is in a room after a restart):
 *
 * - `rooms`: per room, a small integer key, its name, its epoch and, once
 *   retention has trimmed it, the last event id given out (otherwise that is
 *   its newest event's: not written at every commit, which would cost a
 *   second page per commit);
 * - `events`: every event, keyed by (room key, id), with its time and its
 *   JSON as sent to clients; trimmed in the background by `retainEvents`
 *   per room and `retainDays`; a deleted message's row is deleted with the
 *   commit of its `delete` event, so no read (a welcome after a restart, a
 *   page of history) can return it;
 * - `reactions`: per message that has or had reactions, keyed by (room key,
 *   id), their JSON as the store keeps them (owners included: the file is
 *   the server's, never sent as it is); beside `events`, not in them, and
 *   gone with their message (deleted, trimmed);
 * - `search_index`: an FTS5 index of every message, action and DM (schema
 *   3), contentless (it keeps the index, not the text: `events` has that),
 *   of each one's words as wire/search.ts's `searchWords` makes them, by
 *   rowid (room key × 2^32 + id); changed in the same commit as an edit
 *   (the new text replaces the old), a deletion and a trim by retention,
 *   so the index never finds what no read would return; new rows are
 *   written in batches ({@linkcode INDEX_FLUSH_MS}), read from memory
 *   until then, and those a crash left out are written at the next start;
 * - `markers`: per person (a session's or a login's owner) and room name,
 *   their read marker: the room's epoch, the event id read up to, the nick
 *   they held, when it last moved (schema 4); at most `MAX_MY_ROOMS` per
 *   person, and those older than `retainDays` are deleted by the retention
 *   sweep;
 * - `moderation`: per room name (a ban is checked at the handshake, before
 *   the room is loaded), its topic, slow mode, bans, mutes, reserved
 *   verified names, whether it is private, and its invites (a link's by its
 *   code's hash, never the code), one row each; expired bans, mutes and
 *   invite links are deleted by the retention sweep;
 * - `meta`: the reconnect tokens' key, so tokens outlive a restart.
 *
 * Writes are grouped: the store queues a turn's events and commits them in
 * one transaction at the end of the turn, and only then delivers them, so
 * once a sender has its own message back it is in the file (WAL mode: a
 * commit is an append to the `-wal` file, which a `kill -9` cannot undo).
 * With `synchronous=NORMAL` (the default) the WAL is not fsynced at each
 * commit, so a power cut or kernel crash may lose the last commits (never
 * the file's consistency); `synchronous=FULL` fsyncs every commit.
 *
 * @module
 */

import { DatabaseSync, type StatementSync } from "node:sqlite";
import { randomBytes } from "node:crypto";
import type { RoomEvent } from "../wire/protocol.ts";
import { MAX_MY_ROOMS, newestFirst, type ReadMarker } from "./markers.ts";
import {
  ftsMatch,
  matchesQuery,
  searchableText,
  type SearchQuery,
  searchWords,
} from "../wire/search.ts";
import {
  type ArchivedModeration,
  type ArchivedRoom,
  type Invite,
  type KeptReaction,
  type KeptReactions,
  type Log,
  MemoryStore,
  type ModerationChange,
  type RoomArchive,
  type Sanction,
  type StoreFactory,
  type StoreOptions,
} from "./rooms.ts";
import type { CommitHook } from "./outbox.ts";

/** What {@linkcode SqliteStore.connect} needs. */
export interface SqliteStoreOptions extends StoreOptions {
  /** The database file (made, with its directory, if missing). */
  path: string;
  /** Events kept per room; older ones are trimmed in the background. */
  retainEvents: number;
  /** Days an event is kept (0: for ever). */
  retainDays: number;
  /** SQLite's `synchronous` (see the module's notes). @default {"normal"} */
  sync?: "normal" | "full";
  /** main.ts's logger. */
  log?: Log;
  /** More to write in each commit: the webhooks' outbox (sqlite_outbox.ts). */
  commitHook?: CommitHook;
}

/** `PRAGMA application_id`: marks a file as deno-chat's ("dcht"). */
const APPLICATION_ID = 0x64636874;
/**
 * The schema's version (`PRAGMA user_version`): 2 added reactions, 3 the
 * search index, 4 read markers.
 */
const SCHEMA_VERSION = 4;
/** How often retention runs when it has nothing left over, in ms. */
export const RETENTION_SWEEP_MS = 60_000;
/**
 * Rows one retention step deletes at most (a few ms of work), so trimming a
 * big backlog never holds the event loop for long; the next step follows
 * after {@linkcode RETENTION_STEP_MS}.
 */
export const RETENTION_STEP_ROWS = 5_000;
/** The pause between retention steps while a backlog is being trimmed. */
export const RETENTION_STEP_MS = 50;
/** How long a statement waits for a lock held by another process (a backup). */
const BUSY_TIMEOUT_MS = 5_000;
const DAY_MS = 24 * 60 * 60 * 1000;

/** Messages' reactions (schema 2): one row per message that has or had any. */
const REACTIONS_TABLE = `
  CREATE TABLE reactions (
    room INTEGER NOT NULL,
    id INTEGER NOT NULL,
    reactions TEXT NOT NULL,
    PRIMARY KEY (room, id)
  ) WITHOUT ROWID;
`;

/**
 * The search index (schema 3): FTS5 over each searchable event's words
 * (wire/search.ts `searchWords`, which already fold case and diacritics as
 * `unicode61 remove_diacritics 2` does), without a copy of the text
 * (`content=''`; `contentless_delete=1` lets an edit, a deletion and
 * retention remove a row by its rowid, room key × 2^32 + id), with lists
 * of every 2- and 3-character prefix ({@linkcode INDEX_PREFIX_CHARS}).
 */
const SEARCH_TABLE = `
  CREATE VIRTUAL TABLE search_index USING fts5(
    words,
    content = '',
    contentless_delete = 1,
    tokenize = 'unicode61 remove_diacritics 2',
    prefix = '2 3'
  );
`;

/**
 * The longest prefix the index keeps (its `prefix` option): a longer one is
 * searched by its first 3 characters (wire/search.ts `ftsMatch`), whose
 * list FTS5 reads newest first and stops; the rule sorts out the rest.
 * Without it a prefix of a common word cost a merge of whole lists (0.45 s
 * at the 99th percentile over a million events; bench/README.md).
 * @default {3}
 */
const INDEX_PREFIX_CHARS = 3;

/**
 * Event ids at or past this are not indexed (a room's ids share an index
 * rowid with its key: 2^32 each, billions of events more than retention
 * keeps). @default {2 ** 32}
 */
const INDEX_IDS = 2 ** 32;

/**
 * How long a new message may wait for its index row: new rows are written
 * to the index in batches (one transaction for many), as an FTS5 write
 * costs about as much per transaction as for a hundred rows. Meanwhile a
 * search reads them from memory ({@linkcode SqliteArchive.search}), and a
 * restart indexes what a crash left unwritten. @default {500}
 */
export const INDEX_FLUSH_MS = 500;
/**
 * New index rows that are written at once, with the commit that brings
 * their number to this, whatever their age. @default {256}
 */
export const INDEX_BATCH_ROWS = 256;

/** An index rowid from SQL parameters `?1` (room key) and `?2` (id). */
const INDEX_ROWID = "((?1 << 32) + ?2)";

/** A searchable event's words as the index keeps them; undefined if none. */
function indexWords(event: RoomEvent): string | undefined {
  const text = searchableText(event);
  if (text === undefined || event.id >= INDEX_IDS) return undefined;
  return searchWords(text).join(" ");
}

/**
 * Indexes the events a crash left out of the search index (new rows wait
 * up to {@linkcode INDEX_FLUSH_MS} for it; edits, deletions and trims do
 * not): each room's searchable events after the newest one indexed, in the
 * opening transaction. Usually none, or a few; after the upgrade from
 * schema 2 (an empty index), every one kept.
 */
function indexLeftOut(db: DatabaseSync): void {
  const insert = db.prepare(
    `INSERT INTO search_index (rowid, words) VALUES (${INDEX_ROWID}, ?3)`,
  );
  const newest = db.prepare(`
    SELECT max(id) - (?1 << 32) AS id FROM search_index_docsize
    WHERE id >= (?1 << 32) AND id < ((?1 + 1) << 32)
  `);
  const after = db.prepare(`
    SELECT id, event ->> '$.text' AS text FROM events
    WHERE room = ? AND id > ? AND id < ?
      AND event ->> '$.type' IN ('message', 'action', 'dm')
  `);
  for (const room of db.prepare("SELECT key FROM rooms").all()) {
    const from = Number(newest.get(room.key)?.id ?? 0);
    for (const row of after.iterate(room.key, from, INDEX_IDS)) {
      if (typeof row.text !== "string") continue;
      insert.run(room.key, row.id, searchWords(row.text).join(" "));
    }
  }
}

/**
 * Read markers (schema 4): one row per person and room, the room by name
 * (a person's rooms are listed without loading them).
 */
const MARKERS_TABLE = `
  CREATE TABLE markers (
    person TEXT NOT NULL,
    room TEXT NOT NULL,
    epoch TEXT NOT NULL,
    id INTEGER NOT NULL,
    nick TEXT NOT NULL,
    at INTEGER NOT NULL,
    PRIMARY KEY (person, room)
  ) WITHOUT ROWID;
`;

/**
 * What brings a file of schema N (the key) to N + 1, run at start in the
 * opening transaction: a file made by an older deno-chat is upgraded in
 * place, its history kept.
 */
const MIGRATIONS: Record<number, string> = {
  1: REACTIONS_TABLE,
  // The index is then built by `indexLeftOut`, as after a crash.
  2: SEARCH_TABLE,
  3: MARKERS_TABLE,
};

const SCHEMA = `
  CREATE TABLE meta (key TEXT PRIMARY KEY, value BLOB NOT NULL);
  CREATE TABLE rooms (
    key INTEGER PRIMARY KEY,
    name TEXT NOT NULL UNIQUE,
    epoch TEXT NOT NULL,
    last_id INTEGER NOT NULL
  );
  CREATE TABLE events (
    room INTEGER NOT NULL,
    id INTEGER NOT NULL,
    ts INTEGER NOT NULL,
    event TEXT NOT NULL,
    PRIMARY KEY (room, id)
  ) WITHOUT ROWID;
  CREATE TABLE moderation (
    room TEXT NOT NULL,
    kind TEXT NOT NULL,
    key TEXT NOT NULL,
    value TEXT NOT NULL,
    until INTEGER,
    PRIMARY KEY (room, kind, key)
  ) WITHOUT ROWID;
  ${REACTIONS_TABLE}
  ${SEARCH_TABLE}
  ${MARKERS_TABLE}
  PRAGMA application_id = ${APPLICATION_ID};
  PRAGMA user_version = ${SCHEMA_VERSION};
`;

/** A searchable event as the index takes it: its room key, id and words. */
type IndexRow = [room: number, id: number, words: string];

/** A room this process has touched: its key and what is to be written. */
interface KnownRoom {
  key: number;
  /** Made in this turn: its row is inserted with the next commit. */
  epoch?: string;
}

/** A data file that cannot be used: main.ts prints it as one line. */
export class DataFileError extends Error {}

/** The rooms archive in a SQLite file (see the module's notes). */
export class SqliteArchive implements RoomArchive {
  readonly tokenKey: Uint8Array;
  #db: DatabaseSync;
  #options: SqliteStoreOptions;
  #known = new Map<string, KnownRoom>();
  /** Rooms made since the last commit (their rows are to be inserted). */
  #made = new Map<string, KnownRoom>();
  #nextKey: number;
  #rows: [room: number, id: number, ts: number, event: string][] = [];
  /** The search index's rows of `#rows` (searchable events only). */
  #indexed: IndexRow[] = [];
  /**
   * Committed searchable events not yet in the index, by `room/id`, oldest
   * first: written in batches ({@linkcode INDEX_FLUSH_MS},
   * {@linkcode INDEX_BATCH_ROWS}), read by `search` from here meanwhile.
   */
  #unindexed = new Map<string, IndexRow>();
  #indexTimer?: ReturnType<typeof setTimeout>;
  /** Events to delete with the next commit: room key → ids. */
  #removals = new Map<number, Set<number>>();
  /** Kept events' new forms (edits), by `room/id`, for the next commit. */
  #replacements = new Map<
    string,
    [room: number, id: number, event: string, words: string | undefined]
  >();
  /**
   * Messages' reactions from now on, by `room/id`, for the next commit: the
   * latest list only, so a message toggled a hundred times in a turn is
   * one row written.
   */
  #reacted = new Map<
    string,
    [room: number, id: number, reactions: KeptReaction[]]
  >();
  /** Moderation changes for the next commit, in the order they were made. */
  #changes: [room: string, change: ModerationChange][] = [];
  /**
   * Read markers for the next commit, by person and room: the latest one
   * (null: forgotten), so a person marking a room often in a turn is one
   * row written.
   */
  #marks = new Map<string, Map<string, ReadMarker | null>>();
  #sql: Record<
    | "room"
    | "insertRoom"
    | "keepLast"
    | "newest"
    | "insertEvent"
    | "recent"
    | "older"
    | "allRooms"
    | "oldest"
    | "trimTo"
    | "firstTimes"
    | "event"
    | "removeEvent"
    | "replaceEvent"
    | "setReactions"
    | "reactions"
    | "reactionsFrom"
    | "removeReactions"
    | "trimReactions"
    | "index"
    | "unindex"
    | "trimIndex"
    | "search"
    | "indexComplete"
    | "moderation"
    | "setModeration"
    | "unsetModeration"
    | "expireSanctions"
    | "markers"
    | "setMarker"
    | "unsetMarker"
    | "expireMarkers"
    | "newer",
    StatementSync
  >;
  #retention?: ReturnType<typeof setTimeout>;
  #closed = false;

  private constructor(db: DatabaseSync, options: SqliteStoreOptions) {
    this.#db = db;
    this.#options = options;
    const prepare = (sql: string) => db.prepare(sql);
    this.#sql = {
      room: prepare("SELECT key, epoch, last_id FROM rooms WHERE name = ?"),
      insertRoom: prepare(
        "INSERT INTO rooms (key, name, epoch, last_id) VALUES (?, ?, ?, ?)",
      ),
      keepLast: prepare(
        "UPDATE rooms SET last_id = max(last_id, (SELECT max(id) FROM events WHERE room = ?1)) WHERE key = ?1",
      ),
      newest: prepare("SELECT max(id) AS id FROM events WHERE room = ?"),
      insertEvent: prepare(
        "INSERT INTO events (room, id, ts, event) VALUES (?, ?, ?, ?)",
      ),
      recent: prepare(
        "SELECT event FROM events WHERE room = ? ORDER BY id DESC LIMIT ?",
      ),
      older: prepare(
        "SELECT event FROM events WHERE room = ? AND id < ? ORDER BY id DESC LIMIT ?",
      ),
      allRooms: prepare("SELECT key, last_id FROM rooms"),
      oldest: prepare("SELECT min(id) AS id FROM events WHERE room = ?"),
      trimTo: prepare("DELETE FROM events WHERE room = ? AND id <= ?"),
      firstTimes: prepare(
        "SELECT id, ts FROM events WHERE room = ? ORDER BY id LIMIT ?",
      ),
      event: prepare("SELECT event FROM events WHERE room = ? AND id = ?"),
      removeEvent: prepare("DELETE FROM events WHERE room = ? AND id = ?"),
      replaceEvent: prepare(
        "UPDATE events SET event = ? WHERE room = ? AND id = ?",
      ),
      setReactions: prepare(
        "INSERT OR REPLACE INTO reactions (room, id, reactions) VALUES (?, ?, ?)",
      ),
      // The ids as one JSON array: one statement for a page of history.
      reactions: prepare(
        "SELECT id, reactions FROM reactions WHERE room = ? AND id IN (SELECT value FROM json_each(?))",
      ),
      reactionsFrom: prepare(
        "SELECT id, reactions FROM reactions WHERE room = ? AND id >= ?",
      ),
      removeReactions: prepare(
        "DELETE FROM reactions WHERE room = ? AND id = ?",
      ),
      trimReactions: prepare(
        "DELETE FROM reactions WHERE room = ? AND id <= ?",
      ),
      // INSERT OR REPLACE: an edit's words take the place of the old ones.
      index: prepare(
        `INSERT OR REPLACE INTO search_index (rowid, words) VALUES (${INDEX_ROWID}, ?3)`,
      ),
      unindex: prepare(`DELETE FROM search_index WHERE rowid = ${INDEX_ROWID}`),
      trimIndex: prepare(
        "DELETE FROM search_index WHERE rowid >= (?1 << 32) AND rowid <= (?1 << 32) + ?2",
      ),
      // FTS5 walks the index newest first within the room's rowids and
      // stops at the limit; each match's event by its key.
      search: prepare(`
        SELECT e.event AS event FROM search_index AS s
        JOIN events AS e ON e.room = ?1 AND e.id = s.rowid - (?1 << 32)
        WHERE search_index MATCH ?3
          AND s.rowid >= (?1 << 32) AND s.rowid < ${INDEX_ROWID}
        ORDER BY s.rowid DESC LIMIT ?4
      `),
      indexComplete: prepare(
        "INSERT OR REPLACE INTO meta (key, value) VALUES ('index_complete', ?)",
      ),
      moderation: prepare(
        "SELECT kind, key, value FROM moderation WHERE room = ?",
      ),
      setModeration: prepare(
        "INSERT OR REPLACE INTO moderation (room, kind, key, value, until) VALUES (?, ?, ?, ?, ?)",
      ),
      unsetModeration: prepare(
        "DELETE FROM moderation WHERE room = ? AND kind = ? AND key = ?",
      ),
      expireSanctions: prepare(
        "DELETE FROM moderation WHERE kind IN ('ban', 'mute', 'invite') AND until <= ?",
      ),
      markers: prepare(
        "SELECT room, epoch, id, nick, at FROM markers WHERE person = ?",
      ),
      // An upsert: cheaper than REPLACE's delete and insert of the row.
      setMarker: prepare(
        "INSERT INTO markers (person, room, epoch, id, nick, at) VALUES (?, ?, ?, ?, ?, ?) ON CONFLICT (person, room) DO UPDATE SET epoch = excluded.epoch, id = excluded.id, nick = excluded.nick, at = excluded.at",
      ),
      unsetMarker: prepare(
        "DELETE FROM markers WHERE person = ? AND room = ?",
      ),
      expireMarkers: prepare("DELETE FROM markers WHERE at < ?"),
      // What a marker leaves unread: messages, actions and DMs only, so
      // that joins and the like do not use up what a count reads.
      newer: prepare(
        "SELECT event FROM events WHERE room = ? AND id > ? AND id < ? AND event ->> '$.type' IN ('message', 'action', 'dm') ORDER BY id LIMIT ?",
      ),
    };
    this.#nextKey = Number(
      db.prepare("SELECT max(key) AS key FROM rooms").get()?.key ?? 0,
    ) + 1;
    this.tokenKey = db.prepare("SELECT value FROM meta WHERE key = 'token_key'")
      .get()!.value as Uint8Array;
    this.#scheduleRetention(RETENTION_SWEEP_MS);
  }

  /**
   * Opens (or makes) the file and proves it usable: an SQLite file of ours
   * (or a new one) that this process can write. Anything else throws a
   * {@linkcode DataFileError} with one line saying why, never an empty chat
   * in place of the history.
   */
  static open(options: SqliteStoreOptions): SqliteArchive {
    const { path } = options;
    let db: DatabaseSync | undefined;
    try {
      const slash = path.lastIndexOf("/");
      if (slash > 0) Deno.mkdirSync(path.slice(0, slash), { recursive: true });
      db = new DatabaseSync(path);
      db.exec(`PRAGMA busy_timeout = ${BUSY_TIMEOUT_MS}`);
      const id = Number(
        db.prepare("PRAGMA application_id").get()!
          .application_id,
      );
      const tables = Number(
        db.prepare("SELECT count(*) AS n FROM sqlite_schema").get()!.n,
      );
      if (id === 0 && tables > 0) {
        throw new DataFileError("an SQLite file, but not deno-chat's");
      }
      if (id !== 0 && id !== APPLICATION_ID) {
        throw new DataFileError("an SQLite file, but not deno-chat's");
      }
      const version = Number(
        db.prepare("PRAGMA user_version").get()!
          .user_version,
      );
      if (id === APPLICATION_ID && !upgradable(version)) {
        throw new DataFileError(otherSchema(version));
      }
      // WAL: a commit appends to the log (no rewrite of pages in place), and
      // readers (a backup) do not block the writer.
      const mode = db.prepare("PRAGMA journal_mode = WAL").get()!.journal_mode;
      if (mode !== "wal") {
        throw new DataFileError(`cannot use WAL mode (got ${mode})`);
      }
      db.exec(`PRAGMA synchronous = ${options.sync ?? "normal"}`);
      db.exec("BEGIN IMMEDIATE");
      if (id === 0) db.exec(SCHEMA);
      else {
        const upgraded = upgrade(db);
        // Closed with every index row written, or else (a crash, or a new
        // index) some left out; from now on, until a close says so again,
        // maybe some.
        const complete = db.prepare(
          "SELECT value FROM meta WHERE key = 'index_complete'",
        ).get()?.value;
        if (upgraded || Number(complete) !== 1) indexLeftOut(db);
      }
      db.prepare(
        "INSERT OR REPLACE INTO meta (key, value) VALUES ('index_complete', 0)",
      ).run();
      db.prepare(
        "INSERT OR IGNORE INTO meta (key, value) VALUES ('token_key', ?)",
      ).run(randomBytes(32));
      // A write at every start: a file we could read but not write fails
      // here, not at the first message.
      db.prepare(
        "INSERT OR REPLACE INTO meta (key, value) VALUES ('opened_at', ?)",
      ).run(Date.now());
      options.commitHook?.open(db);
      db.exec("COMMIT");
      return new SqliteArchive(db, options);
    } catch (error) {
      try {
        db?.close();
      } catch {
        // already failed
      }
      const why = error instanceof Error ? error.message : String(error);
      throw new DataFileError(`cannot use --data ${path}: ${firstLine(why)}`);
    }
  }

  load(room: string, limit: number): ArchivedRoom | undefined {
    this.commit(); // what is queued first (the room may have ended and come back)
    const row = this.#sql.room.get(room);
    if (!row) return undefined;
    const key = Number(row.key);
    const newest = Number(this.#sql.newest.get(key)?.id ?? 0);
    const lastId = Math.max(Number(row.last_id), newest);
    this.#known.set(room, { key });
    const recent = this.#sql.recent.all(key, limit)
      .map((row) => JSON.parse(row.event as string) as RoomEvent)
      .reverse();
    // A message's reactions go with it: those from the oldest recent id on
    // are those of `recent`.
    const reactions: KeptReactions = new Map();
    if (recent.length > 0) {
      for (const kept of this.#sql.reactionsFrom.iterate(key, recent[0].id)) {
        reactions.set(Number(kept.id), parseReactions(kept.reactions));
      }
    }
    return { epoch: String(row.epoch), lastId, recent, reactions };
  }

  create(room: string, epoch: string): void {
    const made = { key: this.#nextKey++, epoch };
    this.#known.set(room, made);
    this.#made.set(room, made);
  }

  append(room: string, event: RoomEvent): void {
    const known = this.#known.get(room);
    if (!known) throw new Error(`no room ${room} in the archive`);
    this.#rows.push([known.key, event.id, event.ts, JSON.stringify(event)]);
    const words = indexWords(event);
    if (words !== undefined) this.#indexed.push([known.key, event.id, words]);
  }

  delete(room: string, id: number): void {
    const known = this.#known.get(room);
    if (!known) throw new Error(`no room ${room} in the archive`);
    let ids = this.#removals.get(known.key);
    if (!ids) this.#removals.set(known.key, ids = new Set());
    ids.add(id);
    // Its reactions go with it (the stored row with the commit).
    this.#reacted.delete(`${known.key}/${id}`);
  }

  replace(room: string, event: RoomEvent): void {
    const known = this.#known.get(room);
    if (!known) throw new Error(`no room ${room} in the archive`);
    this.#replacements.set(`${known.key}/${event.id}`, [
      known.key,
      event.id,
      JSON.stringify(event),
      indexWords(event),
    ]);
  }

  react(room: string, id: number, reactions: KeptReaction[]): void {
    const known = this.#known.get(room);
    if (!known) throw new Error(`no room ${room} in the archive`);
    // Kept as given (the rules make a new list at each change) and turned
    // into JSON once, at the commit: a storm costs no JSON per toggle.
    this.#reacted.set(`${known.key}/${id}`, [known.key, id, reactions]);
  }

  reactions(room: string, ids: readonly number[]): KeptReactions {
    const found: KeptReactions = new Map();
    const known = this.#known.get(room);
    if (!known || ids.length === 0) return found;
    const removed = this.#removals.get(known.key);
    const stored: number[] = [];
    for (const id of ids) {
      if (removed?.has(id)) continue; // deleted this turn: none
      const queued = this.#reacted.get(`${known.key}/${id}`);
      if (queued) found.set(id, queued[2]);
      else stored.push(id);
    }
    if (stored.length === 0) return found;
    for (
      const row of this.#sql.reactions.iterate(
        known.key,
        JSON.stringify(stored),
      )
    ) {
      found.set(Number(row.id), parseReactions(row.reactions));
    }
    return found;
  }

  find(room: string, id: number): RoomEvent | undefined {
    const known = this.#known.get(room);
    if (!known || this.#removals.get(known.key)?.has(id)) return undefined;
    const queued = this.#rows.find(([key, rowId]) =>
      key === known.key && rowId === id
    );
    const text = this.#replacements.get(`${known.key}/${id}`)?.[2] ??
      queued?.[3] ?? this.#sql.event.get(known.key, id)?.event;
    return text === undefined
      ? undefined
      : JSON.parse(text as string) as RoomEvent;
  }

  moderation(room: string): ArchivedModeration | undefined {
    const rows = this.#sql.moderation.all(room);
    if (rows.length === 0) return undefined;
    const kept: ArchivedModeration = {
      topic: "",
      slowSeconds: 0,
      bans: [],
      mutes: [],
      reserved: [],
      private: false,
      invites: [],
    };
    for (const row of rows) {
      const key = String(row.key);
      const value = JSON.parse(String(row.value));
      switch (row.kind) {
        case "topic":
          kept.topic = value as string;
          break;
        case "slow":
          kept.slowSeconds = value as number;
          break;
        case "ban":
          kept.bans.push([key, value as Sanction]);
          break;
        case "mute":
          kept.mutes.push([key, value as Sanction]);
          break;
        case "reserved":
          kept.reserved.push([key, value as string]);
          break;
        case "private":
          kept.private = value as boolean;
          break;
        case "invite":
          kept.invites.push([key, value as Invite]);
          break;
      }
    }
    return kept;
  }

  moderate(room: string, change: ModerationChange): void {
    this.#changes.push([room, change]);
  }

  commit(): void {
    if (this.#closed) throw new Error("the data file is closed");
    const made = this.#made;
    if (
      made.size === 0 && this.#rows.length === 0 &&
      this.#removals.size === 0 && this.#changes.length === 0 &&
      this.#replacements.size === 0 && this.#reacted.size === 0 &&
      !this.#options.commitHook?.pending() && this.#marks.size === 0
    ) {
      return;
    }
    const sql = this.#sql;
    this.#db.exec("BEGIN");
    try {
      for (const [name, room] of made) {
        sql.insertRoom.run(room.key, name, room.epoch!, 0);
      }
      for (const row of this.#rows) sql.insertEvent.run(...row);
      // The index's new rows wait (in order); edits and deletions of rows
      // already written are written now. (Each step can be done again: a
      // failed commit is tried again whole.)
      const unindexed = this.#unindexed;
      for (const row of this.#indexed) {
        unindexed.set(`${row[0]}/${row[1]}`, row);
      }
      // After the inserts too: a message edited in the turn it was sent.
      for (const [at, [key, id, event, words]] of this.#replacements) {
        sql.replaceEvent.run(event, key, id);
        if (unindexed.has(at)) {
          if (words === undefined) unindexed.delete(at);
          else unindexed.set(at, [key, id, words]);
        } else if (words !== undefined) sql.index.run(key, id, words);
      }
      for (const [key, id, reactions] of this.#reacted.values()) {
        sql.setReactions.run(key, id, JSON.stringify(reactions));
      }
      // After the inserts: a message deleted in the turn it was sent is
      // among them. After the reactions: a deleted message has none.
      for (const [key, ids] of this.#removals) {
        for (const id of ids) {
          sql.removeEvent.run(key, id);
          sql.removeReactions.run(key, id);
          if (!unindexed.delete(`${key}/${id}`)) sql.unindex.run(key, id);
        }
      }
      for (const [room, change] of this.#changes) this.#apply(room, change);
      for (const [person, rooms] of this.#marks) {
        for (const [room, marker] of rooms) {
          if (marker === null) sql.unsetMarker.run(person, room);
          else {
            sql.setMarker.run(
              person,
              room,
              marker.epoch,
              marker.id,
              marker.nick,
              marker.at,
            );
          }
        }
      }
      const full = unindexed.size >= INDEX_BATCH_ROWS;
      if (full) {
        for (const row of unindexed.values()) {
          sql.index.run(...row);
        }
      }
      this.#options.commitHook?.write();
      this.#db.exec("COMMIT");
      if (full) unindexed.clear();
    } catch (error) {
      // Nothing of this transaction is kept; it is all tried again (and
      // its events are not searched before they are committed).
      if (this.#db.isTransaction) this.#db.exec("ROLLBACK");
      for (const [key, id] of this.#indexed) {
        this.#unindexed.delete(`${key}/${id}`);
      }
      throw error;
    }
    if (this.#unindexed.size > 0 && !this.#indexTimer) {
      this.#indexTimer = setTimeout(() => {
        this.#indexTimer = undefined;
        this.#writeIndex();
      }, INDEX_FLUSH_MS);
    }
    this.#rows = [];
    this.#indexed = [];
    this.#replacements.clear();
    this.#reacted.clear();
    this.#removals.clear();
    this.#changes = [];
    this.#marks.clear();
    for (const room of made.values()) room.epoch = undefined;
    made.clear();
    this.#options.commitHook?.committed();
  }

  /**
   * Writes the index rows that wait, in one transaction; true when none
   * wait any more. On failure they wait on (logged), for another try in
   * {@linkcode INDEX_FLUSH_MS} if `again`.
   */
  #writeIndex(again = true): boolean {
    if (this.#unindexed.size === 0) return true;
    try {
      this.#db.exec("BEGIN");
      for (const row of this.#unindexed.values()) {
        this.#sql.index.run(...row);
      }
      this.#db.exec("COMMIT");
      this.#unindexed.clear();
      return true;
    } catch (error) {
      if (this.#db.isTransaction) this.#db.exec("ROLLBACK");
      this.#options.log?.("error", "index_failed", {
        error: error instanceof Error ? error.message : String(error),
      });
      if (again) {
        this.#indexTimer ??= setTimeout(() => {
          this.#indexTimer = undefined;
          this.#writeIndex();
        }, INDEX_FLUSH_MS);
      }
      return false;
    }
  }

  /** Writes one moderation change (inside the commit's transaction). */
  #apply(room: string, change: ModerationChange): void {
    const { setModeration, unsetModeration } = this.#sql;
    switch (change.kind) {
      case "topic":
        setModeration.run(room, "topic", "", JSON.stringify(change.text), null);
        return;
      case "slow":
        setModeration.run(
          room,
          "slow",
          "",
          JSON.stringify(change.seconds),
          null,
        );
        return;
      case "reserved":
        setModeration.run(
          room,
          "reserved",
          change.key,
          JSON.stringify(change.owner),
          null,
        );
        return;
      case "ban":
      case "mute":
        if (!change.sanction) {
          unsetModeration.run(room, change.kind, change.key);
          return;
        }
        setModeration.run(
          room,
          change.kind,
          change.key,
          JSON.stringify(change.sanction),
          change.sanction.until ?? null,
        );
        return;
      case "private":
        setModeration.run(room, "private", "", JSON.stringify(change.on), null);
        return;
      case "invite":
        // A link's key holds its code's hash, never the code.
        if (!change.invite) {
          unsetModeration.run(room, "invite", change.key);
          return;
        }
        setModeration.run(
          room,
          "invite",
          change.key,
          JSON.stringify(change.invite),
          change.invite.until ?? null,
        );
    }
  }

  markers(person: string): ReadMarker[] {
    const found = new Map<string, ReadMarker>();
    for (const row of this.#sql.markers.iterate(person)) {
      const room = String(row.room);
      found.set(room, {
        room,
        epoch: String(row.epoch),
        id: Number(row.id),
        nick: String(row.nick),
        at: Number(row.at),
      });
    }
    for (const [room, marker] of this.#marks.get(person) ?? []) {
      if (marker === null) found.delete(room);
      else found.set(room, marker);
    }
    return newestFirst([...found.values()]).slice(0, MAX_MY_ROOMS);
  }

  mark(person: string, marker: ReadMarker): void {
    this.#marksOf(person).set(marker.room, marker);
  }

  unmark(person: string, room: string): void {
    this.#marksOf(person).set(room, null);
  }

  #marksOf(person: string): Map<string, ReadMarker | null> {
    let marks = this.#marks.get(person);
    if (!marks) this.#marks.set(person, marks = new Map());
    return marks;
  }

  newer(
    room: string,
    after: number,
    before: number,
    count: number,
  ): RoomEvent[] {
    const key = this.#known.get(room)?.key ??
      this.#sql.room.get(room)?.key as number | undefined;
    if (key === undefined) return [];
    const removed = this.#removals.get(Number(key));
    const counted = (event: RoomEvent) =>
      (event.type === "message" || event.type === "action" ||
        event.type === "dm") && !removed?.has(event.id);
    // SQLite takes no Infinity: the largest id it keeps instead.
    const below = Math.min(before, Number.MAX_SAFE_INTEGER);
    const stored = this.#sql.newer.all(
      key,
      after,
      below,
      count + (removed?.size ?? 0),
    ).map((row) => JSON.parse(row.event as string) as RoomEvent);
    // Queued this turn (a burst past the live window), as they read now.
    const queued = this.#rows.filter(([rowKey, id]) =>
      rowKey === key && id > after && id < below
    ).map(([, , , text]) => JSON.parse(text) as RoomEvent);
    const events = [...stored, ...queued].map((event) => {
      const edited = this.#replacements.get(`${key}/${event.id}`);
      return edited ? JSON.parse(edited[2]) as RoomEvent : event;
    }).filter(counted);
    return events.slice(0, count);
  }

  older(room: string, before: number, count: number): RoomEvent[] {
    const known = this.#known.get(room);
    if (!known) return [];
    // Deleted this turn, not yet committed: already gone for every reader.
    // As many more are read, so that a short answer still means no more.
    const removed = this.#removals.get(known.key);
    const rows = this.#sql.older.all(
      known.key,
      before,
      count + (removed?.size ?? 0),
    )
      .map((row) => JSON.parse(row.event as string) as RoomEvent);
    return removed
      ? rows.filter((event) => !removed.has(event.id)).slice(0, count)
      : rows;
  }

  search(
    room: string,
    query: SearchQuery,
    before: number,
    count: number,
  ): RoomEvent[] {
    const known = this.#known.get(room);
    if (!known || before <= 0) return [];
    const removed = this.#removals.get(known.key);
    let rows;
    try {
      // As in `older`: as many more as are deleted this turn.
      rows = this.#sql.search.all(
        known.key,
        Math.min(before, INDEX_IDS),
        ftsMatch(query, INDEX_PREFIX_CHARS),
        count + (removed?.size ?? 0),
      );
    } catch (error) {
      // The expression is made of quoted words, so this is not the
      // person's doing: logged, and nothing found (no SQL text to anyone).
      this.#options.log?.("error", "search_failed", {
        error: error instanceof Error ? error.message : String(error),
      });
      return [];
    }
    const found: RoomEvent[] = [];
    for (const row of rows) {
      const event = JSON.parse(row.event as string) as RoomEvent;
      if (removed?.has(event.id)) continue;
      // Edited this turn: as it reads now (the caller matches it again).
      const edited = this.#replacements.get(`${known.key}/${event.id}`);
      found.push(edited ? JSON.parse(edited[2]) as RoomEvent : event);
    }
    // The newest, not yet in the index: read here, by the same words.
    const waiting = this.#waiting(known.key, query, before, count);
    if (waiting.length === 0) return found.slice(0, count);
    return [...waiting, ...found].sort((a, b) => b.id - a.id).slice(0, count);
  }

  /**
   * Up to `count` of a room's committed events not yet in the index, with
   * ids below `before`, that match `query`, newest first, as they read now.
   */
  #waiting(
    key: number,
    query: SearchQuery,
    before: number,
    count: number,
  ): RoomEvent[] {
    const found: RoomEvent[] = [];
    const removed = this.#removals.get(key);
    const rows = [...this.#unindexed.values()];
    for (let i = rows.length - 1; i >= 0 && found.length < count; i--) {
      const [room, id, words] = rows[i];
      if (room !== key || id >= before || removed?.has(id)) continue;
      const edited = this.#replacements.get(`${key}/${id}`);
      if (!matchesQuery(query, edited?.[3] ?? words)) continue;
      // Committed (rows wait only once they are): the event as kept.
      const text = edited?.[2] ?? this.#sql.event.get(key, id)?.event;
      if (typeof text === "string") found.push(JSON.parse(text) as RoomEvent);
    }
    return found;
  }

  close(): void {
    if (this.#closed) return;
    clearTimeout(this.#retention);
    clearTimeout(this.#indexTimer);
    try {
      this.commit();
      // Every row written: the next start need not look for any left out.
      if (this.#writeIndex(false)) this.#sql.indexComplete.run(1);
    } finally {
      this.#closed = true;
      this.#db.close();
    }
  }

  /**
   * One step of retention: deletes at most `budget` rows, the oldest beyond
   * `retainEvents` per room and those older than `retainDays`; returns how
   * many it deleted (the budget used up means there may be more). Exposed
   * for tests, which pass their own `now`.
   */
  trim(now = Date.now(), budget = RETENTION_STEP_ROWS): number {
    const { retainEvents, retainDays } = this.#options;
    const sql = this.#sql;
    let deleted = 0;
    this.commit();
    this.#writeIndex(); // so that what it trims is trimmed from the index
    for (const row of sql.allRooms.all()) {
      if (deleted >= budget) break;
      const key = Number(row.key);
      const oldest = Number(sql.oldest.get(key)?.id ?? NaN);
      if (Number.isNaN(oldest)) continue;
      const last = Math.max(
        Number(row.last_id),
        Number(sql.newest.get(key)?.id ?? 0),
      );
      let upTo = last - retainEvents;
      if (retainDays > 0) {
        const cutoff = now - retainDays * DAY_MS;
        // Events are in time order by id: the expired ones are a prefix.
        for (const event of sql.firstTimes.iterate(key, budget - deleted)) {
          if (Number(event.ts) >= cutoff) break;
          upTo = Math.max(upTo, Number(event.id));
        }
      }
      upTo = Math.min(upTo, oldest + (budget - deleted) - 1);
      if (upTo < oldest) continue;
      sql.keepLast.run(key); // the last id given out, before its event goes
      deleted += Number(sql.trimTo.run(key, upTo).changes);
      // Their reactions and index rows with them (not counted: at most
      // one each per event).
      sql.trimReactions.run(key, upTo);
      sql.trimIndex.run(key, Math.min(upTo, INDEX_IDS - 1));
    }
    // Bans and mutes that have run out (a few rows at most).
    sql.expireSanctions.run(now);
    // Markers not moved for as long as events are kept.
    if (retainDays > 0) sql.expireMarkers.run(now - retainDays * DAY_MS);
    return deleted;
  }

  #scheduleRetention(ms: number): void {
    this.#retention = setTimeout(() => {
      let more = false;
      try {
        more = this.trim() >= RETENTION_STEP_ROWS;
      } catch (error) {
        this.#options.log?.("error", "retention_failed", {
          error: error instanceof Error ? error.message : String(error),
        });
      }
      if (!this.#closed) {
        this.#scheduleRetention(more ? RETENTION_STEP_MS : RETENTION_SWEEP_MS);
      }
    }, ms);
  }
}

/** Whether this process can use (perhaps after upgrading) a schema version. */
function upgradable(version: number): boolean {
  for (let v = version; v !== SCHEMA_VERSION; v++) {
    if (!(v in MIGRATIONS)) return false;
  }
  return true;
}

/**
 * Brings a file of ours to {@linkcode SCHEMA_VERSION}, in the opening
 * transaction (read again in it: what another opener did meanwhile counts);
 * true if it did.
 */
function upgrade(db: DatabaseSync): boolean {
  let version = Number(db.prepare("PRAGMA user_version").get()!.user_version);
  if (version === SCHEMA_VERSION) return false;
  if (!upgradable(version)) {
    throw new DataFileError(otherSchema(version));
  }
  for (; version < SCHEMA_VERSION; version++) db.exec(MIGRATIONS[version]);
  db.exec(`PRAGMA user_version = ${SCHEMA_VERSION}`);
  return true;
}

/** Why a file of schema `version` cannot be used. */
function otherSchema(version: number): string {
  return `made by another version of deno-chat (schema ${version}, this one reads ${SCHEMA_VERSION})`;
}

/** A `reactions` row's JSON, as the store keeps it. */
function parseReactions(text: unknown): KeptReaction[] {
  return JSON.parse(String(text)) as KeptReaction[];
}

function firstLine(text: string): string {
  return text.split("\n")[0];
}

/** Opens the file and returns a {@linkcode MemoryStore} writing through to it. */
export const SqliteStore: StoreFactory<SqliteStoreOptions> = {
  connect(options: SqliteStoreOptions) {
    // A file that cannot be used is a rejection, not a throw: callers
    // handle a factory's failure on its promise (main.ts words it).
    try {
      const archive = SqliteArchive.open(options);
      return Promise.resolve(
        new MemoryStore({ ...options, archive, log: options.log }),
      );
    } catch (error) {
      return Promise.reject(error);
    }
  },
};
