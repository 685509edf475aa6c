/**
 * The store contract of deno-chat, written once: what a room store does
 * ({@linkcode RoomStore}, its requests and answers), the room rules every
 * store follows (nick keys by confusable skeleton, random nicks, what an
 * event costs, reconnect tokens), and {@linkcode MemoryStore}, the default
 * store and the reference implementation that the contract tests
 * (store_contract_test.ts) hold every other store to, with
 * {@linkcode RoomArchive}, what it writes through to when rooms must outlive
 * the process (sqlite_store.ts), and {@linkcode pageBack}, how every store
 * reads history back a page at a time.
 *
 * A leaf: it imports only the wire contract (protocol.ts). main.ts uses a
 * store; redis_store.ts implements one; neither imports the other.
 *
 * @module
 */

import { createHmac, randomBytes, timingSafeEqual } from "node:crypto";
import type {
  InvitedPerson,
  InviteLinkEntry,
  LiveEvent,
  NewEvent,
  ReactEvent,
  RoomEvent,
  SearchScope,
  TypingEvent,
} from "../wire/protocol.ts";
import {
  matchesQuery,
  searchableText,
  type SearchQuery,
} from "../wire/search.ts";
import * as rules from "./room_rules.ts";
import type { OutboxWriter } from "./outbox.ts";
import {
  type Admission,
  type Author,
  canResume,
  connectionCount,
  type EditRefusal,
  type Entrant,
  type Invitation,
  type Invite,
  type JoinRequest,
  type KeptReaction,
  type Kick,
  type Member,
  nickCandidates,
  nickKey,
  type Poster,
  type PostRefusal,
  type Reactor,
  type ReactRefusal,
  type ReactUnchanged,
  type RoomTxn,
  type RuleContext,
  type Sanction,
  type SanctionKind,
  type Uninvitation,
} from "./room_rules.ts";
import {
  countUnread,
  forgotten,
  markRead,
  MAX_MY_ROOMS,
  MAX_UNREAD_READ,
  newestFirst,
  type ReadMarker,
  type UnreadCounts,
} from "./markers.ts";

export {
  MAX_MY_ROOMS,
  MAX_UNREAD_COUNTED,
  MAX_UNREAD_READ,
} from "./markers.ts";
export type { MarkedRoom, ReadMarker, UnreadCounts } from "./markers.ts";
export {
  inviteKeyOf,
  kickEvent,
  kickReason,
  LINK_KEY,
  linkId,
  NICK_CANDIDATES,
  nickCandidates,
  nickKey,
  NoNickLeft,
  personKeys,
  randomNick,
  reactionsFor,
  sanctionKeys,
} from "./room_rules.ts";
export type {
  Admission,
  Author,
  EditRefusal,
  Entrant,
  Invitation,
  Invite,
  JoinRequest,
  KeptReaction,
  Kick,
  Member,
  Poster,
  PostRefusal,
  Reactor,
  ReactRefusal,
  ReactUnchanged,
  Sanction,
  Uninvitation,
} from "./room_rules.ts";

/** Messages' reactions as a store keeps them, by message id. */
export type KeptReactions = Map<number, KeptReaction[]>;

/** A completed join: what the welcome says. */
export interface Joined {
  /** The nick held: the one asked for, or a random one. */
  nick: string;
  /** Set when the nick asked for was taken (a random one was given). */
  nickTaken: boolean;
  /**
   * The owner was in the room already (another tab of a session): it keeps
   * its nick, no join was appended, and `lastId` is the room's last id.
   */
  present: boolean;
  /** The room's epoch: ids start over when it changes. */
  epoch: string;
  /** Id of the join event (or the room's last); later ones come by `subscribe`. */
  lastId: number;
  /**
   * Id of the event that gave the owner its nick (its join, or its last
   * rename): direct messages to that nick from before it are not its.
   */
  claimedId: number;
  /**
   * What the client should show: what it missed and its join, when it
   * resumed without a gap; otherwise the room's recent history.
   */
  history: RoomEvent[];
  /** A resume that could not be served exactly (history gone or new epoch). */
  gap: boolean;
  /**
   * The reactions on the messages of the room's live window that have or
   * had any: those of `history`, and on a resume those the client had.
   */
  reactions: KeptReactions;
  /** The room's members, the joiner included. */
  users: string[];
  /** Lets the client take its nick back from a connection that went stale. */
  token: string;
  /** The members signed in by a login token, by nick. */
  verified: string[];
  /** The members who are moderators, by nick. */
  moderators: string[];
  /** The room's topic ("" for none) and slow-mode interval (0: off). */
  topic: string;
  slowSeconds: number;
  /** The room is invite-only. */
  private: boolean;
}

/** A member as `/who` and the API's `presence` show it. */
export interface RosterEntry {
  nick: string;
  verified: boolean;
  op: boolean;
  /** A verified person's user id (their token's `sub`). */
  user?: string;
  /** Their connections in the room, on every process. */
  connections: number;
}

/** Whose connections `disconnect` closes. */
export interface Disconnection {
  /** Only in this room (required with `nick`); absent: in every room. */
  room?: string;
  /** The member holding this nick in `room`. */
  nick?: string;
  /** The member with this owner (a verified person's `u.…`). */
  owner?: string;
}

/** A read of older events: what `history` is asked. */
export interface HistoryRequest {
  /** Only events with ids below this one. */
  before: number;
  /** At most this many events (the caller has checked it is sensible). */
  limit: number;
  /**
   * Whether the reader may see an event (main.ts's one filter: direct
   * messages only to their parties). Events it refuses are skipped, not
   * counted, so a page is full whenever enough visible events are left.
   */
  visible: (event: RoomEvent) => boolean;
}

/** What a `history` read found. */
export interface HistoryPage {
  /** Oldest first, as a welcome's history. */
  events: RoomEvent[];
  /** Older visible events remain (a next read with `before` the first id). */
  more: boolean;
  /** The reactions on `events` that have any (absent: none do). */
  reactions?: KeptReactions;
}

/** A search of a room's messages: what `search` is asked. */
export interface SearchRequest {
  /** The query, parsed (wire/search.ts); its `from` and `before` apply. */
  query: SearchQuery;
  /** At most this many events (the caller has checked it is sensible). */
  limit: number;
  /** As for history: events the reader may not see are skipped. */
  visible: (event: RoomEvent) => boolean;
}

/** What a search found. */
export interface SearchPage {
  /** Newest first. */
  events: RoomEvent[];
  /** Older events may match: search again with `before`. */
  more: boolean;
  /** With `more`: where the next search starts (ids below it). */
  before?: number;
  /** What was searched: everything kept, or the live window. */
  scope: SearchScope;
  /** The reactions on `events` that have any (absent: none do). */
  reactions?: KeptReactions;
}

/**
 * How long one search may read before it answers with what it has found
 * (`more` true, and `before` where it stopped), so that no query (a common
 * word among other people's direct messages, a selective `from:`, a long
 * prefix of a common one) holds the event loop for long. It is looked at
 * between reads, each of at most {@linkcode SEARCH_BATCH_MAX} events.
 * @default {50}
 */
export const SEARCH_BUDGET_MS = 50;

/** Most events a search reads from its source at once. @default {1024} */
export const SEARCH_BATCH_MAX = 1024;

/**
 * Everything about a room that outlives one message: its events (ids,
 * history, delivery), who is in it (nicks), and its lifetime. main.ts talks
 * to rooms only through this, so another implementation (a shared store for
 * several processes) changes nothing else. What must be atomic is one call.
 */
export interface RoomStore {
  /**
   * Holds a place in the room for a connection that is about to join (at
   * upgrade time), so the room exists from then on. False when the room is
   * new and `maxRooms` rooms exist.
   */
  hold(room: string): boolean;
  /** Gives back a hold whose connection never joined. */
  release(room: string): void;
  /**
   * Holds a room for a call that acts on it without a connection (the
   * app's HTTP API), so that a room nobody is in that the store keeps (an
   * archive's; Redis's, for `roomTtl`) is there for the call: `held`, to
   * be given back with `release`. With `create`, a room never made (or
   * expired) is made, empty, kept as if its last member had just left.
   * `absent`: there is no such room, here or kept; a store that keeps
   * nothing (memory without an archive) is never asked to make one, as
   * what is posted into it would end with the call, seen by nobody.
   * `full`: the room is new here and `maxRooms` rooms exist.
   */
  visit(room: string, create: boolean): Promise<Visit>;
  /**
   * Turns a hold into a member: takes over the nick from a stale holder (by
   * token), claims the nick (or a random one), reads what a resuming client
   * missed, then appends the join: one step. An owner already in the room
   * (one more tab) is counted, keeps its nick, and no join is appended.
   */
  join(room: string, request: JoinRequest): Promise<Joined>;
  /** Appends an event: gives it the next id and a time, keeps it, delivers it. */
  append(room: string, body: NewEvent): Promise<RoomEvent>;
  /** Moves `owner` from nick `from` to `to` and appends the nick event. */
  rename(
    room: string,
    owner: string,
    from: string,
    to: string,
  ): Promise<RoomEvent | "nick_taken">;
  /**
   * One connection of `owner` leaves (if it is still a member: found by
   * owner, as its nick may have changed since). With its last connection
   * the owner is out: announced when `announce` and others remain. The last
   * one out ends the room.
   */
  leave(room: string, owner: string, announce: boolean): Promise<void>;
  /** The room's members' nicks. */
  members(room: string): Promise<string[]>;
  /**
   * Up to `limit` visible events before `before`, of those the store still
   * has: in memory and in Redis the live window, with an archive all it
   * retains. Only for a room the reader is in.
   */
  history(room: string, request: HistoryRequest): Promise<HistoryPage>;
  /**
   * Up to `limit` visible messages, actions and DMs that match the query
   * (wire/search.ts `matchesQuery`), newest first, of those the store
   * still has: in memory and in Redis the live window (`scope` "window"),
   * with an archive all it retains ("all"); never a deleted message, and an
   * edited one by its new text. Only for a room the reader is in.
   */
  search(room: string, request: SearchRequest): Promise<SearchPage>;
  /** Passes an event on to every subscriber now, keeping nothing. */
  notify(room: string, event: TypingEvent): void;
  /**
   * Every event appended to the room from now on, in id order, and every
   * notification.
   */
  subscribe(room: string, onEvent: (event: LiveEvent) => void): () => void;
  /** Rooms that exist (with members or holds). */
  roomCount(): number;

  // Identity and moderation. Their state outlives a room's members: a
  // room's bans, mutes, topic, slow mode and reserved names are kept when it
  // empties (and in a shared store, on every process and across restarts).

  /** The members with whether each is verified and a moderator. */
  roster(room: string): Promise<RosterEntry[]>;
  /**
   * Appends a person's message or action, unless they are muted (by any of
   * their keys) or slow mode says it is too early (moderators excepted);
   * with `replyTo`, quoting that message (refused when the room keeps no
   * such message).
   */
  post(
    room: string,
    poster: Poster,
    body: NewEvent,
    replyTo?: number,
  ): Promise<RoomEvent | PostRefusal>;
  /**
   * Kicks (or bans) the member holding `nick`: they are out of the room at
   * once, the `kick` event is appended, and every process closes their
   * connections (through `onExpel`). A ban keeps their keys out.
   */
  kick(
    room: string,
    kick: Kick,
  ): Promise<RoomEvent | "no_such_nick">;
  /**
   * Mutes the member holding `nick` until `until`: by their
   * {@linkcode sanctionKeys} for a mute, so it silences that one person.
   */
  mute(
    room: string,
    nick: string,
    until?: number,
  ): Promise<"muted" | "no_such_nick">;
  /** Lifts the ban given to `nick`; false when there is none in force. */
  unban(room: string, nick: string): Promise<boolean>;
  /** Lifts the mute given to `nick`; false when there is none in force. */
  unmute(room: string, nick: string): Promise<boolean>;
  /**
   * The ban holding a person with these keys ({@linkcode JoinRequest.keys})
   * out of the room, if one does now.
   */
  banned(room: string, keys: string[]): Promise<Sanction | undefined>;
  /**
   * Whether someone may come into the room now (rules `admit`): not while
   * banned, and into a private room only a moderator, a member already in,
   * the invited, or someone with a valid code, whose use is spent here, at
   * once on every process (two who bring a code's last use: one gets in).
   */
  admit(room: string, entrant: Entrant): Promise<Admission>;
  /** Makes the room invite-only (or open again) and appends its event. */
  private(
    room: string,
    change: NewEvent & { type: "private" },
  ): Promise<RoomEvent>;
  /** Gives an invite (rules `invite`); or says why not. */
  invite(
    room: string,
    invitation: Invitation,
  ): Promise<"invited" | "no_such_nick" | "invite_limit">;
  /** Revokes invites (rules `uninvite`): how many (0: none was). */
  uninvite(room: string, target: Uninvitation): Promise<number>;
  /** Whether the room is private, and its invites in force (no codes). */
  invites(room: string): Promise<RoomInvites>;
  /** Sets the topic and appends its event. */
  topic(room: string, change: NewEvent & { type: "topic" }): Promise<RoomEvent>;
  /** Sets slow mode and appends its event. */
  slow(room: string, change: NewEvent & { type: "slow" }): Promise<RoomEvent>;
  /**
   * Adds or takes back a person's reaction to a message or action (rules
   * `react`); the room gets the notice live. The notice, or why not.
   */
  react(
    room: string,
    reactor: Reactor,
    id: number,
    key: string,
    on?: boolean,
  ): Promise<ReactEvent | ReactRefusal | ReactUnchanged>;
  /**
   * Replaces the text of a message or action by its author within
   * `windowMs` of it being sent (rules `edit`), and appends an `edit`
   * event; or says why not.
   */
  edit(
    room: string,
    author: Author,
    id: number,
    text: string,
    windowMs: number,
  ): Promise<RoomEvent | EditRefusal>;
  /**
   * Deletes a message or action from history and appends a `delete` event.
   * With `author`, only when that nick sent it and held the nick since
   * before it (`since`: the event that gave them the nick).
   */
  delete(
    room: string,
    id: number,
    by: string,
    author?: { nick: string; since: number },
  ): Promise<RoomEvent | "no_such_message" | "forbidden">;

  // Read markers (markers.ts): a person's (a session or a login), one in
  // each room they marked, on every process and, where the store keeps
  // anything, across restarts.

  /**
   * A person's read markers, the most recently moved first, at most
   * `MAX_MY_ROOMS`; void ones (another epoch) too: `unread` says so.
   */
  markers(person: string): Promise<ReadMarker[]>;
  /**
   * Moves a person's marker in a room forward to event `id`, noting the
   * nick they hold there (markers.ts `markRead`; a person keeps at most
   * `MAX_MY_ROOMS`: the least recently moved goes). Every process is told
   * through `onRead`. The marker as it now is, or why it did not move.
   */
  markRead(
    room: string,
    person: string,
    id: number,
    nick: string,
  ): Promise<ReadMarker | MarkRefusal>;
  /**
   * What a marker leaves unread, over what the store keeps (in memory and
   * in Redis the live window, with an archive every event retained, at most
   * `MAX_UNREAD_READ`), and the id it is counted through. Undefined when the
   * marker is void: its room does not exist, or is of another epoch.
   */
  unread(marker: ReadMarker): Promise<Unread | undefined>;

  // The app's API (http_api.ts): what it asks of every process.

  /**
   * The rooms with members, with how many (on every process), by name, and
   * whether each is private (lists leave those out for who is not in them).
   */
  rooms(): Promise<{ room: string; members: number; private: boolean }[]>;
  /**
   * Closes a person's connections on every process (through `onExpel`,
   * with `reason`), appending nothing; how many people it reached.
   */
  disconnect(target: Disconnection, reason: string): Promise<number>;
  /**
   * Runs `produce` once per `key` within `ttlMs`, on every process; a
   * repeat gets the first one's answer.
   */
  once(
    key: string,
    ttlMs: number,
    produce: () => Promise<number>,
  ): Promise<number>;
  /**
   * Changes committed, and decided again because the room had changed
   * between the rule's read and its commit (a shared store; `/metrics`).
   */
  decisions?(): { commits: number; again: number };
  /**
   * Turns of posts replicas acknowledged before delivery, and those
   * delivered with fewer (Redis with `--redis-wait-replicas`; `/metrics`).
   */
  replicaAcks?(): { acknowledged: number; short: number };
  /** False while the store cannot be reached (a shared store's server is down). */
  available?(): boolean;
  /** Lets go of connections and timers (at shutdown). */
  close?(): Promise<void>;
}

/** A room's invites, as `/invites` and the API list them. */
export interface RoomInvites {
  private: boolean;
  people: InvitedPerson[];
  links: InviteLinkEntry[];
}

/**
 * What a read marker leaves unread (markers.ts `countUnread`), counted
 * through event `through`: later events are the counter's to add as they
 * come.
 */
export interface Unread extends UnreadCounts {
  through: number;
}

/** Why a read marker did not move (markers.ts `markRead`). */
export type MarkRefusal = "unchanged" | "past_newest";

/** What {@linkcode RoomStore.visit} found. */
export type Visit = "held" | "absent" | "full";

/** What the store cannot do right now; the client is told `unavailable`. */
export class StoreUnavailable extends Error {}

/** The room does not exist (an append to a room nobody holds). */
export class NoSuchRoom extends Error {}

/**
 * Reads a history page through `older`, which gives up to `count` events
 * with ids below `before`, newest first (fewer only when no more are kept).
 * It reads on past events the reader may not see until it has `limit` + 1
 * visible ones (the one more says whether `more` is true) or none are left:
 * so a page is never short while older visible events exist, and paging
 * with `before` = the first id of the last page visits each event once.
 *
 * The one path every store's `history` takes, so the one place that says
 * what a page may hold: what `request.visible` allows (direct messages only
 * to their parties), and never a deleted message. Stores drop a deleted
 * message from what they keep, together with appending its `delete` event;
 * a page also skips any message whose `delete` event it passed on the way
 * back, so one read that straddles a deletion cannot show it either.
 */
export async function pageBack(
  request: HistoryRequest,
  older: (
    before: number,
    count: number,
  ) => RoomEvent[] | Promise<RoomEvent[]>,
): Promise<HistoryPage> {
  const found: RoomEvent[] = [];
  const deleted = new Set<number>();
  const batch = request.limit + 1;
  let before = request.before;
  while (found.length <= request.limit) {
    const events = await older(before, batch);
    for (const event of events) {
      // Newest first: a delete event comes before the message it deleted.
      if (event.type === "delete") deleted.add(event.deleted);
      if (deleted.has(event.id) || !request.visible(event)) continue;
      found.push(event);
    }
    if (events.length < batch) break;
    before = events[events.length - 1].id;
  }
  return {
    events: found.slice(0, request.limit).reverse(),
    more: found.length > request.limit,
  };
}

/**
 * Reads a search's answer through `older`, which gives up to `count`
 * candidate events with ids below `before`, newest first (fewer only when
 * no more are kept): every event of a window, or those an index says may
 * match. Each candidate is held to the one rule, whatever its source:
 * searchable (a message, an action, a DM), not deleted (nor passed by its
 * `delete` on the way back), from `query.from` (by nick key), visible to
 * the reader, and matching (`matchesQuery`). It reads on until it has
 * `limit` + 1 (the one more says `more`), none are left, or
 * {@linkcode SEARCH_BUDGET_MS} has gone by (then `more`, and `before` where
 * it stopped).
 */
export async function searchBack(
  request: SearchRequest,
  older: (
    before: number,
    count: number,
  ) => RoomEvent[] | Promise<RoomEvent[]>,
  budgetMs: number = SEARCH_BUDGET_MS,
): Promise<Omit<SearchPage, "scope">> {
  const { query, limit } = request;
  const fromKey = query.from === undefined ? undefined : nickKey(query.from);
  const deadline = performance.now() + budgetMs;
  const found: RoomEvent[] = [];
  const deleted = new Set<number>();
  let before = query.before ?? Number.MAX_SAFE_INTEGER;
  let batch = limit + 1;
  while (found.length <= limit) {
    const events = await older(before, batch);
    for (const event of events) {
      if (event.type === "delete") deleted.add(event.deleted);
      const text = searchableText(event);
      if (text === undefined || deleted.has(event.id)) continue;
      const from = (event as { from: string }).from;
      if (fromKey !== undefined && nickKey(from) !== fromKey) continue;
      if (!request.visible(event) || !matchesQuery(query, text)) continue;
      found.push(event);
    }
    if (events.length < batch) break;
    before = events[events.length - 1].id;
    if (found.length <= limit && performance.now() > deadline) {
      return { events: found, more: true, before };
    }
    // Sparse matches (a selective `from:`, others' DMs): read more at once.
    batch = Math.min(batch * 2, SEARCH_BATCH_MAX);
  }
  const events = found.slice(0, limit);
  const more = found.length > limit;
  return more
    ? { events, more, before: events[events.length - 1].id }
    : { events, more };
}

/** A room as an archive kept it: enough to carry on where it stopped. */
export interface ArchivedRoom {
  /** The room's epoch: a resume with it and a kept id has no gap. */
  epoch: string;
  /** The last id given out (retention may have dropped its event). */
  lastId: number;
  /** Its latest events, oldest first (at most the `limit` asked for). */
  recent: RoomEvent[];
  /** The reactions on `recent` (those that have or had any). */
  reactions: KeptReactions;
}

/**
 * A room's moderation as an archive keeps it: what a {@linkcode MemoryStore}
 * keeps of a room beyond its events (see `RoomStore`'s identity and
 * moderation methods). The slow-mode clock of each person is not kept: after
 * a restart everyone may post once at once.
 */
export interface ArchivedModeration {
  /** "" for none. */
  topic: string;
  /** 0: off. */
  slowSeconds: number;
  /** Bans and mutes by the nick key they were given to (expired ones too). */
  bans: [key: string, sanction: Sanction][];
  mutes: [key: string, sanction: Sanction][];
  /** Nick key → the verified owner that holds or held it. */
  reserved: [key: string, owner: string][];
  /** Invite-only. */
  private: boolean;
  /** Invites by the key they admit (rules `Invite`; expired ones too). */
  invites: [key: string, invite: Invite][];
}

/**
 * One change to a room's moderation, written with the archive's next
 * commit. A `ban` or `mute` without `sanction` is lifted, an `invite`
 * without `invite` revoked.
 */
export type ModerationChange =
  | { kind: "topic"; text: string }
  | { kind: "slow"; seconds: number }
  | { kind: "ban" | "mute"; key: string; sanction?: Sanction }
  | { kind: "reserved"; key: string; owner: string }
  | { kind: "private"; on: boolean }
  | { kind: "invite"; key: string; invite?: Invite };

/**
 * Where a {@linkcode MemoryStore} writes rooms through so that they outlive
 * the process (sqlite_store.ts): each room's epoch, last id and events,
 * its moderation (bans, mutes, topic, slow mode, reserved names), deletions,
 * and the reconnect tokens' key. Live membership is not kept: connections
 * die with the process. All of it is synchronous (an embedded database): the
 * store queues writes during a turn and commits them once at its end, and
 * delivers and answers only after the commit, so an event anyone has seen
 * (and a moderator's action anyone was told of) is on disk.
 */
export interface RoomArchive {
  /** The key of reconnect tokens, the same after a restart. */
  readonly tokenKey: Uint8Array;
  /** A room as kept, with up to `limit` recent events; undefined if never made. */
  load(room: string, limit: number): ArchivedRoom | undefined;
  /** Records a new room and its epoch (written with the next commit). */
  create(room: string, epoch: string): void;
  /** Queues an event of a room (written with the next commit). */
  append(room: string, event: RoomEvent): void;
  /**
   * Queues the deletion of an event (written with the next commit; reads
   * leave it out from now on).
   */
  delete(room: string, id: number): void;
  /** Queues a kept event's new form (an edited message). */
  replace(room: string, event: RoomEvent): void;
  /** Queues a kept message's reactions from now on. */
  react(room: string, id: number, reactions: KeptReaction[]): void;
  /** The reactions on these kept messages (queued ones included). */
  reactions(room: string, ids: readonly number[]): KeptReactions;
  /** A kept event of the room by id, if it is kept and not removed. */
  find(room: string, id: number): RoomEvent | undefined;
  /** A room's moderation as kept; undefined if it never had any. */
  moderation(room: string): ArchivedModeration | undefined;
  /** Queues a change of a room's moderation (written with the next commit). */
  moderate(room: string, change: ModerationChange): void;
  /** A person's read markers as kept (queued changes included). */
  markers(person: string): ReadMarker[];
  /** Queues a person's marker from now on (written with the next commit). */
  mark(person: string, marker: ReadMarker): void;
  /** Queues the forgetting of a person's marker in a room. */
  unmark(person: string, room: string): void;
  /**
   * Up to `count` kept messages, actions and direct messages of the room
   * with ids above `after` and below `before`, oldest first, as they read
   * now (queued ones included, removed ones never): what a marker leaves
   * unread.
   */
  newer(
    room: string,
    after: number,
    before: number,
    count: number,
  ): RoomEvent[];
  /** Writes what is queued in one transaction; throws if it could not. */
  commit(): void;
  /**
   * Up to `count` kept events of the room with ids below `before`, newest
   * first (removed ones never, even before their removal is committed).
   */
  older(room: string, before: number, count: number): RoomEvent[];
  /**
   * Up to `count` kept events of the room with ids below `before` that its
   * index says may match `query` (its terms only), newest first, as they
   * read now: a deletion or an edit not yet committed counts (the caller
   * holds each to the rule). Fewer only when no more may match.
   */
  search(
    room: string,
    query: SearchQuery,
    before: number,
    count: number,
  ): RoomEvent[];
  /** Commits what is queued and closes. */
  close(): void;
}

/** What every store needs to know (see main.ts's options of the same names). */
export interface StoreOptions {
  /** Events kept per room. */
  historySize: number;
  /** Bytes of history kept per room (see {@linkcode eventBytes}). */
  maxHistoryBytes: number;
  /** Rooms at once. */
  maxRooms: number;
  /** Called when a join takes a nick from `owner`: close that connection. */
  onEvict: (room: string, owner: string) => void;
  /**
   * Called when a moderator kicks or bans `owner`: close its connections
   * here with `reason`. (By default nothing: a store used without it.)
   */
  onExpel?: (room: string, owner: string, reason: string) => void;
  /**
   * Called on every process when a person's read marker moved (on any of
   * them): their connections here are told. (By default nothing.)
   */
  onRead?: (person: string, marker: ReadMarker) => void;
  /** Draws a random nick. @default {randomNick} */
  randomNick?: () => string;
  /**
   * The webhooks' outbox (stores/outbox.ts): every event appended is put
   * in it in the same step (with an archive, in the same commit).
   */
  outbox?: OutboxWriter;
}

/** A room's moderation, kept when the room ends (see `RoomStore`). */
interface MemoryModeration {
  topic: string;
  slowSeconds: number;
  /** By the nick key they were given to. */
  bans: Map<string, Sanction>;
  mutes: Map<string, Sanction>;
  /** Nick key → the verified owner that holds or held it. */
  reserved: Map<string, string>;
  /** Owner → when they last posted (for slow mode). */
  posted: Map<string, number>;
  private: boolean;
  /** By the key they admit (rules `Invite`). */
  invites: Map<string, Invite>;
}

interface MemoryRoom {
  name: string;
  /** Random, fixed for this room's life; tells resuming clients ids started over. */
  epoch: string;
  lastId: number;
  history: RoomEvent[];
  /** What `history` costs, by {@linkcode eventBytes}. */
  historyBytes: number;
  /** Members by nick key, and the same by owner. */
  nicks: Map<string, Member>;
  owners: Map<string, Member>;
  /** Connections upgraded and not yet joined. */
  holds: number;
  /** Reactions on the messages of `history` that have or had any. */
  reactions: KeptReactions;
}

/** What a {@linkcode MemoryStore} is made with. */
export interface MemoryStoreOptions extends StoreOptions {
  /** Where rooms are written through, to outlive the process. */
  archive?: RoomArchive;
  /** main.ts's logger (for an archive that fails). */
  log?: Log;
}

/**
 * How long a failed archive commit waits before it is tried again (the
 * disk full, say); meanwhile the store is unavailable and nothing queued is
 * delivered or lost.
 */
export const COMMIT_RETRY_MS = 1000;

/**
 * How long a read marker moved with an archive waits at most for a commit
 * to write it (it goes with the next one, if sooner), in ms: a marker a
 * second moving is not a transaction a second, and one lost to a crash
 * only moves back a little. Its `onRead` does not wait.
 * @default {1000}
 */
export const MARKERS_COMMIT_MS = 1000;

/**
 * The default store: every room in this process's memory, gone with it,
 * unless it writes through to a {@linkcode RoomArchive}. Its work is
 * synchronous; without an archive the promises are for the interface's
 * sake, with one they resolve once the turn's commit is done.
 */
export class MemoryStore implements RoomStore {
  #rooms = new Map<string, MemoryRoom>();
  /** Each room's subscribers, by name (a room nobody holds may have some). */
  #listeners = new Map<string, Set<(event: LiveEvent) => void>>();
  /**
   * Read markers by person, then room: made on first use (read from the
   * archive, if any), kept from then on.
   */
  #markers = new Map<string, Map<string, ReadMarker>>();
  /** The commit that writes the markers moved since the last one. */
  #marksDue?: ReturnType<typeof setTimeout>;
  #moderation = new Map<string, MemoryModeration>();
  /** `once` keys: the first call's answer, until it expires. */
  #once = new Map<string, { answer: Promise<number>; expires: number }>();
  #options: MemoryStoreOptions;
  #archive?: RoomArchive;
  /**
   * Keys the reconnect tokens: new for each store, so tokens die with it,
   * unless the archive keeps one.
   */
  #tokenKey: Uint8Array;
  /** Events appended this turn, delivered once the archive has them. */
  #unsent: [MemoryRoom, LiveEvent][] = [];
  /** The next commit, and what waits for it. */
  #commit?: {
    cancel: () => void;
    done: PromiseWithResolvers<void>;
  };
  /** The last commit failed (it is being retried). */
  #failing = false;

  constructor(options: MemoryStoreOptions) {
    this.#options = options;
    this.#archive = options.archive;
    this.#tokenKey = this.#archive?.tokenKey ?? randomBytes(32);
  }

  hold(name: string): boolean {
    let room = this.#rooms.get(name);
    if (!room) {
      if (this.#rooms.size >= this.#options.maxRooms) return false;
      room = this.#newRoom(name);
      this.#rooms.set(name, room);
    }
    room.holds++;
    return true;
  }

  /** A room as the archive kept it, or a new one (with a new epoch). */
  #newRoom(name: string): MemoryRoom {
    const room: MemoryRoom = {
      name,
      epoch: crypto.randomUUID().slice(0, 8),
      lastId: 0,
      history: [],
      historyBytes: 0,
      nicks: new Map(),
      owners: new Map(),
      holds: 0,
      reactions: new Map(),
    };
    const kept = this.#archive?.load(name, this.#options.historySize);
    if (!kept) {
      this.#archive?.create(name, room.epoch);
      return room;
    }
    room.epoch = kept.epoch;
    room.lastId = kept.lastId;
    // Reactions first: those of events the window leaves out go with them.
    room.reactions = kept.reactions;
    for (const event of kept.recent) this.#keep(room, event);
    return room;
  }

  release(name: string): void {
    const room = this.#rooms.get(name);
    if (!room) return;
    room.holds--;
    this.#endIfEmpty(name, room);
  }

  visit(name: string, create: boolean): Promise<Visit> {
    if (!this.#rooms.has(name)) {
      if (!this.#archive) return Promise.resolve("absent");
      if (!create && !this.#archive.load(name, 0)) {
        return Promise.resolve("absent");
      }
    }
    // Held, a kept room is loaded (a new one made) as for a joiner.
    return Promise.resolve(this.hold(name) ? "held" : "full");
  }

  join(name: string, request: JoinRequest): Promise<Joined> {
    const room = this.#room(name);
    room.holds--;
    // What a resuming client missed is read before the join appends
    // anything, so that the join cannot push the oldest missed event out.
    const since = request.since;
    const missed = since !== undefined &&
        canResume(
          {
            epoch: room.epoch,
            lastId: room.lastId,
            oldest: room.history[0]?.id,
          },
          since,
          request.epoch ?? "",
        )
      ? room.history.filter((event) => event.id > since)
      : undefined;
    const appended: RoomEvent[] = [];
    let decided: rules.JoinDecision;
    try {
      decided = rules.join(
        this.#txn(name, room, appended),
        request,
        this.#context(name, room),
      );
    } catch (error) {
      room.holds++; // still held: the caller gives the hold back
      return Promise.reject(error);
    }
    const { member } = decided;
    return this.#durable({
      nick: member.nick,
      nickTaken: decided.taken,
      present: decided.present,
      epoch: room.epoch,
      lastId: room.lastId,
      claimedId: member.claimedId,
      // A copy: with an archive the answer waits for the commit, and the
      // room's history may change meanwhile.
      history: missed ? [...missed, ...appended] : room.history.slice(),
      gap: since !== undefined && missed === undefined,
      // A copy, as the history: a reaction replaces its message's entry.
      reactions: new Map(room.reactions),
      users: membersOf(room),
      token: this.#token(name, room, member),
      ...this.#standing(name, room),
    });
  }

  append(name: string, body: NewEvent): Promise<RoomEvent> {
    // A promise either way: a missing room is a rejection, as in every store.
    try {
      return this.#durable(this.#append(this.#room(name), body));
    } catch (error) {
      return Promise.reject(error);
    }
  }

  rename(
    name: string,
    owner: string,
    from: string,
    to: string,
  ): Promise<RoomEvent | "nick_taken"> {
    const appended: RoomEvent[] = [];
    const txn = this.#txn(name, this.#room(name), appended);
    const renamed = rules.rename(txn, owner, from, to);
    return this.#durable(renamed === "nick_taken" ? renamed : appended[0]);
  }

  leave(name: string, owner: string, announce: boolean): Promise<void> {
    const room = this.#rooms.get(name);
    if (!room) return Promise.resolve();
    rules.leave(this.#txn(name, room), owner, HERE, 1, announce);
    this.#endIfEmpty(name, room);
    return this.#durable(undefined);
  }

  members(name: string): Promise<string[]> {
    const room = this.#rooms.get(name);
    return Promise.resolve(
      room ? membersOf(room) : [],
    );
  }

  async history(name: string, request: HistoryRequest): Promise<HistoryPage> {
    const room = this.#room(name);
    const page = await pageBack(request, (before, count) => {
      // The live window first, then (below its oldest) the archive's.
      const history = room.history;
      const end = firstAtOrAbove(history, before);
      const found = history.slice(Math.max(0, end - count), end).reverse();
      if (found.length === count || !this.#archive) return found;
      const floor = Math.min(before, history[0]?.id ?? room.lastId + 1);
      return found.concat(
        this.#archive.older(name, floor, count - found.length),
      );
    });
    const reactions = this.#reactionsOn(name, room, page.events);
    return reactions.size > 0 ? { ...page, reactions } : page;
  }

  /**
   * The reactions on `events` (a page read back): the live window's from
   * memory, older ones' from the archive.
   */
  #reactionsOn(
    name: string,
    room: MemoryRoom,
    events: RoomEvent[],
  ): KeptReactions {
    const reactions: KeptReactions = new Map();
    const archived: number[] = [];
    const oldest = room.history[0]?.id ?? room.lastId + 1;
    for (const { id } of events) {
      const kept = room.reactions.get(id);
      if (kept) reactions.set(id, kept);
      else if (id < oldest) archived.push(id);
    }
    if (this.#archive && archived.length > 0) {
      for (const entry of this.#archive.reactions(name, archived)) {
        reactions.set(...entry);
      }
    }
    return reactions;
  }

  async search(name: string, request: SearchRequest): Promise<SearchPage> {
    const room = this.#room(name);
    const archive = this.#archive;
    const page = archive
      // The file's index: every event retained.
      ? await searchBack(
        request,
        (before, count) => archive.search(name, request.query, before, count),
      )
      // The live window, newest first.
      : await searchBack(request, (before, count) => {
        const end = firstAtOrAbove(room.history, before);
        return room.history.slice(Math.max(0, end - count), end).reverse();
      });
    const reactions = this.#reactionsOn(name, room, page.events);
    const scope = archive ? "all" : "window";
    return reactions.size > 0
      ? { ...page, scope, reactions }
      : { ...page, scope };
  }

  available(): boolean {
    return !this.#failing;
  }

  close(): Promise<void> {
    clearTimeout(this.#marksDue);
    this.#marksDue = undefined;
    if (!this.#archive) return Promise.resolve();
    const commit = this.#commit;
    this.#commit = undefined;
    commit?.cancel();
    try {
      this.#archive.close(); // commits what is queued first
      commit?.done.resolve();
    } catch (error) {
      this.#options.log?.("error", "archive_failed", {
        error: error instanceof Error ? error.message : String(error),
      });
      commit?.done.reject(new StoreUnavailable("the store is closed"));
    }
    this.#unsent = [];
    return Promise.resolve();
  }

  notify(name: string, event: TypingEvent): void {
    if (this.#rooms.has(name)) this.#tell(name, event);
  }

  /**
   * A room nobody holds may be subscribed to (a person's read marker
   * watches it): its events come once it is held and something happens.
   */
  subscribe(name: string, onEvent: (event: LiveEvent) => void): () => void {
    let listeners = this.#listeners.get(name);
    if (!listeners) this.#listeners.set(name, listeners = new Set());
    listeners.add(onEvent);
    return () => {
      listeners.delete(onEvent);
      if (listeners.size === 0 && this.#listeners.get(name) === listeners) {
        this.#listeners.delete(name);
      }
    };
  }

  /** Passes an event on to the room's subscribers. */
  #tell(name: string, event: LiveEvent): void {
    const listeners = this.#listeners.get(name);
    if (listeners) { for (const onEvent of listeners) onEvent(event); }
  }

  roomCount(): number {
    return this.#rooms.size;
  }

  roster(name: string): Promise<RosterEntry[]> {
    const room = this.#rooms.get(name);
    return Promise.resolve(
      room
        ? [...room.owners.values()].map((member) => ({
          nick: member.nick,
          verified: member.verified,
          op: member.op,
          user: member.user,
          connections: connectionCount(member),
        }))
        : [],
    );
  }

  post(
    name: string,
    poster: Poster,
    body: NewEvent,
    replyTo?: number,
  ): Promise<RoomEvent | PostRefusal> {
    const appended: RoomEvent[] = [];
    const txn = this.#txn(name, this.#room(name), appended);
    const posted = rules.post(txn, poster, body, replyTo);
    return this.#durable(typeof posted === "number" ? appended[0] : posted);
  }

  kick(
    name: string,
    expulsion: Kick,
  ): Promise<RoomEvent | "no_such_nick"> {
    const room = this.#rooms.get(name);
    if (!room) return Promise.resolve("no_such_nick");
    const appended: RoomEvent[] = [];
    const kicked = rules.kick(this.#txn(name, room, appended), expulsion);
    return this.#durable(kicked === "no_such_nick" ? kicked : appended[0]);
  }

  mute(
    name: string,
    nick: string,
    until?: number,
  ): Promise<"muted" | "no_such_nick"> {
    const room = this.#rooms.get(name);
    if (!room) return Promise.resolve("no_such_nick");
    return this.#durable(rules.mute(this.#txn(name, room), nick, until));
  }

  unban(name: string, nick: string): Promise<boolean> {
    return this.#durable(
      rules.unban(this.#txn(name, this.#rooms.get(name)), nick),
    );
  }

  unmute(name: string, nick: string): Promise<boolean> {
    return this.#durable(
      rules.unmute(this.#txn(name, this.#rooms.get(name)), nick),
    );
  }

  banned(name: string, keys: string[]): Promise<Sanction | undefined> {
    return Promise.resolve(
      rules.sanctionOn(this.#txn(name, this.#rooms.get(name)), "ban", keys),
    );
  }

  admit(name: string, entrant: Entrant): Promise<Admission> {
    return this.#durable(
      rules.admit(this.#txn(name, this.#rooms.get(name)), entrant),
    );
  }

  private(
    name: string,
    change: NewEvent & { type: "private" },
  ): Promise<RoomEvent> {
    const appended: RoomEvent[] = [];
    rules.private(this.#txn(name, this.#room(name), appended), change);
    return this.#durable(appended[0]);
  }

  invite(
    name: string,
    invitation: Invitation,
  ): Promise<"invited" | "no_such_nick" | "invite_limit"> {
    return this.#durable(
      rules.invite(this.#txn(name, this.#rooms.get(name)), invitation),
    );
  }

  uninvite(name: string, target: Uninvitation): Promise<number> {
    return this.#durable(
      rules.uninvite(this.#txn(name, this.#rooms.get(name)), target),
    );
  }

  invites(name: string): Promise<RoomInvites> {
    return Promise.resolve(
      rules.invitesOf(this.#txn(name, this.#rooms.get(name))),
    );
  }

  topic(
    name: string,
    change: NewEvent & { type: "topic" },
  ): Promise<RoomEvent> {
    const appended: RoomEvent[] = [];
    rules.topic(this.#txn(name, this.#room(name), appended), change);
    return this.#durable(appended[0]);
  }

  slow(
    name: string,
    change: NewEvent & { type: "slow" },
  ): Promise<RoomEvent> {
    const appended: RoomEvent[] = [];
    rules.slow(this.#txn(name, this.#room(name), appended), change);
    return this.#durable(appended[0]);
  }

  edit(
    name: string,
    author: Author,
    id: number,
    text: string,
    windowMs: number,
  ): Promise<RoomEvent | EditRefusal> {
    const appended: RoomEvent[] = [];
    const txn = this.#txn(name, this.#room(name), appended);
    const edited = rules.edit(txn, author, id, text, windowMs);
    return this.#durable(typeof edited === "number" ? appended[0] : edited);
  }

  react(
    name: string,
    reactor: Reactor,
    id: number,
    key: string,
    on?: boolean,
  ): Promise<ReactEvent | ReactRefusal | ReactUnchanged> {
    const txn = this.#txn(name, this.#room(name));
    return this.#durable(rules.react(txn, reactor, id, key, on));
  }

  delete(
    name: string,
    id: number,
    by: string,
    author?: { nick: string; since: number },
  ): Promise<RoomEvent | "no_such_message" | "forbidden"> {
    const appended: RoomEvent[] = [];
    const txn = this.#txn(name, this.#room(name), appended);
    const removed = rules.delete(txn, id, by, author);
    return this.#durable(typeof removed === "number" ? appended[0] : removed);
  }

  markers(person: string): Promise<ReadMarker[]> {
    const mine = this.#markersOf(person);
    return Promise.resolve(
      newestFirst([...mine.values()]).slice(0, MAX_MY_ROOMS),
    );
  }

  markRead(
    name: string,
    person: string,
    id: number,
    nick: string,
  ): Promise<ReadMarker | MarkRefusal> {
    const room = this.#rooms.get(name);
    const mine = this.#markersOf(person);
    const marked = markRead(mine.get(name), room, {
      room: name,
      id,
      nick,
      now: Date.now(),
    });
    if (typeof marked === "string") return Promise.resolve(marked);
    mine.set(name, marked);
    this.#archive?.mark(person, marked);
    for (const old of forgotten([...mine.values()])) {
      mine.delete(old.room);
      this.#archive?.unmark(person, old.room);
    }
    // Written with the next commit, or within MARKERS_COMMIT_MS: not a
    // commit of its own each (a marker lost to a crash only moves back).
    if (this.#archive && this.#marksDue === undefined) {
      this.#marksDue = setTimeout(() => {
        this.#marksDue = undefined;
        this.#scheduleCommit(0);
      }, MARKERS_COMMIT_MS);
    }
    this.#options.onRead?.(person, marked);
    return Promise.resolve(marked);
  }

  unread(marker: ReadMarker): Promise<Unread | undefined> {
    try {
      return Promise.resolve(this.#unread(marker));
    } catch (error) {
      return Promise.reject(error); // the archive failed
    }
  }

  /**
   * A held room's from its live window (and, below it, the archive's); a
   * room nobody holds from the archive alone (in memory it is gone, and its
   * epoch with it).
   */
  #unread(marker: ReadMarker): Unread | undefined {
    const archive = this.#archive;
    const room = this.#rooms.get(marker.room);
    if (!room) {
      const kept = archive?.load(marker.room, 0);
      if (!kept || kept.epoch !== marker.epoch) return undefined;
      // One more than is read, to know whether there are more.
      const events = archive!.newer(
        marker.room,
        marker.id,
        Infinity,
        MAX_UNREAD_READ + 1,
      );
      const more = events.length > MAX_UNREAD_READ;
      return {
        ...countUnread(events.slice(0, MAX_UNREAD_READ), marker, more),
        through: kept.lastId,
      };
    }
    if (room.epoch !== marker.epoch) return undefined;
    const history = room.history;
    const windowFrom = history[0]?.id ?? room.lastId + 1;
    const start = firstAtOrAbove(history, marker.id + 1);
    if (!archive || marker.id + 1 >= windowFrom) {
      const counts = countUnread(history, marker, false, start);
      return { ...counts, through: room.lastId };
    }
    const after = history.slice(start);
    const earlier = archive.newer(
      marker.room,
      marker.id,
      windowFrom,
      MAX_UNREAD_READ + 1,
    );
    const more = earlier.length > MAX_UNREAD_READ;
    return {
      ...countUnread(
        more ? earlier.slice(0, MAX_UNREAD_READ) : [...earlier, ...after],
        marker,
        more,
      ),
      through: room.lastId,
    };
  }

  /** A person's markers by room, read from the archive on first use. */
  #markersOf(person: string): Map<string, ReadMarker> {
    let mine = this.#markers.get(person);
    if (!mine) {
      const kept = this.#archive?.markers(person) ?? [];
      mine = new Map(kept.map((marker) => [marker.room, marker]));
      this.#markers.set(person, mine);
    }
    return mine;
  }

  /**
   * The room as the rules see it ({@linkcode RoomTxn}): this store's maps,
   * each change made at once (and queued for the archive). Without `room`
   * (a room nobody holds) only its moderation can be read or changed.
   */
  #txn(
    name: string,
    room: MemoryRoom | undefined,
    appended: RoomEvent[] = [],
  ): RoomTxn {
    return new MemoryTxn(this.#host, name, room, appended);
  }

  /** What a {@linkcode MemoryTxn} reaches of this store, made once. */
  #host: MemoryHost = {
    // A held room's moderation is made (and kept) on first use, as a post
    // reads it every time: with an archive, not asking the file each time.
    // A room nobody holds (a ban check names any room) makes none.
    moderation: (name, make) =>
      make ? this.#moderationOf(name) : this.#moderationIfAny(name),
    record: (name, change) => this.#record(name, change),
    append: (room, body) => this.#append(room, body),
    announce: (room, notice) => this.#announce(room, notice),
    archive: () => this.#archive,
    evict: (name, owner, reason) =>
      reason === undefined
        ? this.#options.onEvict(name, owner)
        : this.#options.onExpel?.(name, owner, reason),
  };

  /** What the rules need beyond the room: candidates and the token check. */
  #context(name: string, room: MemoryRoom): RuleContext {
    return {
      process: HERE,
      candidates: drawnOnce(nickCandidates(this.#options.randomNick)),
      tokenMatches: (member, token) =>
        sameSecret(token, this.#token(name, room, member)),
    };
  }

  /**
   * A room's moderation, made on first use and kept when the room ends
   * (read back from the archive, if it has it).
   */
  #moderationOf(name: string): MemoryModeration {
    let moderation = this.#moderationIfAny(name);
    if (!moderation) {
      moderation = {
        topic: "",
        slowSeconds: 0,
        bans: new Map(),
        mutes: new Map(),
        reserved: new Map(),
        posted: new Map(),
        private: false,
        invites: new Map(),
      };
      this.#moderation.set(name, moderation);
    }
    return moderation;
  }

  /**
   * A room's moderation if it has any, here or in the archive (read once,
   * then kept here). Nothing is made for a room without any: a ban check at
   * the handshake names any room.
   */
  #moderationIfAny(name: string): MemoryModeration | undefined {
    const known = this.#moderation.get(name);
    if (known || !this.#archive) return known;
    const kept = this.#archive.moderation(name);
    if (!kept) return undefined;
    const now = Date.now();
    // Those that ran out while the process was away are left behind.
    const live = ([, sanction]: [string, { until?: number }]) =>
      sanction.until === undefined || sanction.until > now;
    const moderation: MemoryModeration = {
      topic: kept.topic,
      slowSeconds: kept.slowSeconds,
      bans: new Map(kept.bans.filter(live)),
      mutes: new Map(kept.mutes.filter(live)),
      reserved: new Map(kept.reserved),
      posted: new Map(),
      private: kept.private,
      invites: new Map(kept.invites.filter(live)),
    };
    this.#moderation.set(name, moderation);
    return moderation;
  }

  /**
   * Writes a moderation change through to the archive with this turn's
   * commit; the action's answer waits for it (see {@linkcode #durable}).
   */
  #record(name: string, change: ModerationChange): void {
    if (!this.#archive) return;
    this.#archive.moderate(name, change);
    this.#scheduleCommit(0);
  }

  /** What a welcome says of the room beyond its nicks. */
  #standing(
    name: string,
    room: MemoryRoom,
  ): Pick<
    Joined,
    "verified" | "moderators" | "topic" | "slowSeconds" | "private"
  > {
    const members = [...room.nicks.values()];
    const moderation = this.#moderationIfAny(name);
    return {
      verified: members.filter((m) => m.verified).map((m) => m.nick),
      moderators: members.filter((m) => m.op).map((m) => m.nick),
      topic: moderation?.topic ?? "",
      slowSeconds: moderation?.slowSeconds ?? 0,
      private: moderation?.private ?? false,
    };
  }

  rooms(): Promise<{ room: string; members: number; private: boolean }[]> {
    return Promise.resolve(
      [...this.#rooms].filter(([, room]) => room.owners.size > 0)
        .map(([name, room]) => ({
          room: name,
          members: room.owners.size,
          private: this.#moderationIfAny(name)?.private ?? false,
        }))
        .sort((a, b) => a.room.localeCompare(b.room)),
    );
  }

  disconnect(target: Disconnection, reason: string): Promise<number> {
    let people = 0;
    const rooms = target.room === undefined
      ? [...this.#rooms]
      : [[target.room, this.#rooms.get(target.room)] as const];
    for (const [name, room] of rooms) {
      const holder = target.nick !== undefined
        ? room?.nicks.get(nickKey(target.nick))
        : room?.owners.get(target.owner ?? "");
      if (!holder) continue;
      people++;
      this.#options.onExpel?.(name, holder.owner, reason);
    }
    return Promise.resolve(people);
  }

  once(
    key: string,
    ttlMs: number,
    produce: () => Promise<number>,
  ): Promise<number> {
    const now = Date.now();
    for (const [old, entry] of this.#once) {
      if (entry.expires <= now) this.#once.delete(old);
    }
    const known = this.#once.get(key);
    if (known) return known.answer;
    const answer = produce();
    this.#once.set(key, { answer, expires: now + ttlMs });
    // A call that failed did nothing: the key may be used again.
    answer.catch(() => this.#once.delete(key));
    return answer;
  }

  #room(name: string): MemoryRoom {
    const room = this.#rooms.get(name);
    if (!room) throw new NoSuchRoom(`no room ${name}: hold it first`);
    return room;
  }

  /** Ends a room nobody is in or on the way to; true if it ended. */
  #endIfEmpty(name: string, room: MemoryRoom): boolean {
    if (room.nicks.size > 0 || room.holds > 0) return false;
    this.#rooms.delete(name);
    return true;
  }

  #append(room: MemoryRoom, body: NewEvent): RoomEvent {
    const event = { ...body, id: ++room.lastId, ts: Date.now() } as RoomEvent;
    this.#keep(room, event);
    this.#options.outbox?.add(room.name, event);
    if (!this.#archive) {
      this.#tell(room.name, event);
      return event;
    }
    this.#archive.append(room.name, event);
    this.#unsent.push([room, event]);
    this.#scheduleCommit(0);
    return event;
  }

  /** A notice to the room's subscribers, after this turn's commit. */
  #announce(room: MemoryRoom, notice: ReactEvent): void {
    if (!this.#archive) {
      this.#tell(room.name, notice);
      return;
    }
    this.#unsent.push([room, notice]);
    this.#scheduleCommit(0);
  }

  /**
   * Puts an event in the live window, dropping the oldest beyond its
   * bounds (and their reactions: an archive keeps those it keeps).
   */
  #keep(room: MemoryRoom, event: RoomEvent): void {
    const { historySize, maxHistoryBytes } = this.#options;
    room.history.push(event);
    room.historyBytes += eventBytes(event);
    while (
      room.history.length > historySize ||
      (room.historyBytes > maxHistoryBytes && room.history.length > 0)
    ) {
      const dropped = room.history.shift()!;
      room.historyBytes -= eventBytes(dropped);
      if (room.reactions.size > 0) room.reactions.delete(dropped.id);
    }
  }

  /**
   * `value` once this turn's writes are committed (at once without an
   * archive): an event is delivered, and its sender answered, only when it
   * is on disk.
   */
  #durable<T>(value: T): Promise<T> {
    if (!this.#archive || !this.#commit) return Promise.resolve(value);
    return this.#commit.done.promise.then(() => value);
  }

  /**
   * One commit for everything appended in this turn (setImmediate runs
   * after the turn's I/O callbacks: every frame read in it), or after
   * `delayMs` when retrying.
   */
  #scheduleCommit(delayMs: number): void {
    if (this.#commit) return;
    const done = Promise.withResolvers<void>();
    done.promise.catch(() => {}); // a waiter may be gone (closed store)
    this.#commit = { cancel: this.#later(delayMs), done };
  }

  /** Calls `#flush` after `delayMs`, or at the end of the turn; returns a cancel. */
  #later(delayMs: number): () => void {
    if (delayMs > 0) {
      const timer = setTimeout(() => this.#flush(), delayMs);
      return () => clearTimeout(timer);
    }
    const immediate = setImmediate(() => this.#flush());
    return () => clearImmediate(immediate);
  }

  /** Commits, then delivers what was committed; on failure, retries later. */
  #flush(): void {
    const commit = this.#commit!;
    this.#commit = undefined;
    clearTimeout(this.#marksDue); // this commit writes them
    this.#marksDue = undefined;
    try {
      this.#archive!.commit();
    } catch (error) {
      if (!this.#failing) {
        this.#options.log?.("error", "archive_failed", {
          error: error instanceof Error ? error.message : String(error),
        });
      }
      this.#failing = true;
      this.#commit = commit;
      commit.cancel = this.#later(COMMIT_RETRY_MS);
      return;
    }
    if (this.#failing) this.#options.log?.("info", "archive_up", {});
    this.#failing = false;
    const unsent = this.#unsent;
    this.#unsent = [];
    for (const [room, event] of unsent) this.#tell(room.name, event);

    commit.done.resolve();
  }

  #token(name: string, room: MemoryRoom, holder: Member): string {
    return reconnectToken(this.#tokenKey, name, room.epoch, holder.joinedId);
  }
}

/** What a {@linkcode MemoryTxn} needs of its store (its private parts). */
interface MemoryHost {
  /** The room's moderation: made if `make` (else only if it has any). */
  moderation(name: string, make: boolean): MemoryModeration | undefined;
  record(name: string, change: ModerationChange): void;
  append(room: MemoryRoom, body: NewEvent): RoomEvent;
  announce(room: MemoryRoom, notice: ReactEvent): void;
  archive(): RoomArchive | undefined;
  evict(name: string, owner: string, reason?: string): void;
}

/**
 * A room of a {@linkcode MemoryStore} as the rules see it: its maps, read
 * and changed at once. One object per decision (a post makes one).
 */
class MemoryTxn implements RoomTxn {
  readonly now = Date.now();
  readonly epoch: string | undefined;

  constructor(
    private readonly host: MemoryHost,
    private readonly name: string,
    private readonly room: MemoryRoom | undefined,
    private readonly appended: RoomEvent[],
  ) {
    this.epoch = room?.epoch;
  }

  #room(): MemoryRoom {
    if (!this.room) throw new NoSuchRoom(`no room ${this.name}: hold it first`);
    return this.room;
  }

  /** The moderation, as kept (made for a held room; see MemoryHost). */
  #kept(): MemoryModeration | undefined {
    return this.host.moderation(this.name, this.room !== undefined);
  }

  /** The moderation, made if need be (to change it). */
  #moderation(): MemoryModeration {
    return this.host.moderation(this.name, true)!;
  }

  member(key: string): Member | undefined {
    return this.room?.nicks.get(key);
  }

  memberOf(owner: string): Member | undefined {
    return this.room?.owners.get(owner);
  }

  members(): Member[] {
    return [...(this.room?.owners.values() ?? [])];
  }

  reservedBy(key: string): string | undefined {
    return this.#kept()?.reserved.get(key);
  }

  #sanctions(kind: SanctionKind): Map<string, Sanction> | undefined {
    const kept = this.#kept();
    return kind === "ban" ? kept?.bans : kept?.mutes;
  }

  sanction(kind: SanctionKind, key: string): Sanction | undefined {
    return this.#sanctions(kind)?.get(key);
  }

  sanctions(kind: SanctionKind): [string, Sanction][] {
    const all = this.#sanctions(kind);
    return all && all.size > 0 ? [...all] : [];
  }

  get topic(): string {
    return this.#kept()?.topic ?? "";
  }

  get slowSeconds(): number {
    return this.#kept()?.slowSeconds ?? 0;
  }

  get private(): boolean {
    return this.#kept()?.private ?? false;
  }

  invite(key: string): Invite | undefined {
    return this.#kept()?.invites.get(key);
  }

  invites(): [string, Invite][] {
    const all = this.#kept()?.invites;
    return all && all.size > 0 ? [...all] : [];
  }

  postedAt(owner: string): number | undefined {
    return this.#kept()?.posted.get(owner);
  }

  kept(id: number): RoomEvent | undefined {
    const history = this.#room().history;
    const index = firstAtOrAbove(history, id);
    // Older than the live window: an archive still has it (a page of
    // history shows it, so it can be deleted as well).
    return history[index]?.id === id
      ? history[index]
      : this.host.archive()?.find(this.name, id);
  }

  append(body: NewEvent): number {
    const event = this.host.append(this.#room(), body);
    this.appended.push(event);
    return event.id;
  }

  putMember(member: Member, from?: string): void {
    const room = this.#room();
    if (from !== undefined) room.nicks.delete(from);
    room.nicks.set(nickKey(member.nick), member);
    room.owners.set(member.owner, member);
  }

  dropMember(member: Member): void {
    const room = this.#room();
    room.nicks.delete(nickKey(member.nick));
    room.owners.delete(member.owner);
  }

  unannounced(): void {} // no other process keeps a member list

  reserve(key: string, owner: string): void {
    this.#moderation().reserved.set(key, owner);
    this.host.record(this.name, { kind: "reserved", key, owner });
  }

  setSanction(kind: SanctionKind, key: string, sanction?: Sanction): void {
    const moderation = this.#moderation();
    const all = kind === "ban" ? moderation.bans : moderation.mutes;
    if (sanction) all.set(key, sanction);
    else all.delete(key);
    this.host.record(this.name, { kind, key, sanction });
  }

  setTopic(text: string): void {
    this.#moderation().topic = text;
    this.host.record(this.name, { kind: "topic", text });
  }

  setPrivate(on: boolean): void {
    this.#moderation().private = on;
    this.host.record(this.name, { kind: "private", on });
  }

  setInvite(key: string, invite?: Invite): void {
    const invites = this.#moderation().invites;
    if (invite) invites.set(key, invite);
    else invites.delete(key);
    this.host.record(this.name, { kind: "invite", key, invite });
  }

  setSlow(seconds: number): void {
    const moderation = this.#moderation();
    moderation.slowSeconds = seconds;
    moderation.posted.clear();
    this.host.record(this.name, { kind: "slow", seconds });
  }

  setPosted(owner: string, at: number): void {
    this.#moderation().posted.set(owner, at);
  }

  deleteEvent(event: RoomEvent): void {
    const room = this.#room();
    const index = firstAtOrAbove(room.history, event.id);
    if (room.history[index]?.id === event.id) {
      room.history.splice(index, 1);
      room.historyBytes -= eventBytes(event);
    }
    room.reactions.delete(event.id);
    this.host.archive()?.delete(this.name, event.id); // its reactions too
  }

  replaceEvent(event: RoomEvent): void {
    const room = this.#room();
    const index = firstAtOrAbove(room.history, event.id);
    if (room.history[index]?.id === event.id) {
      room.historyBytes += eventBytes(event) -
        eventBytes(room.history[index]);
      room.history[index] = event;
    }
    this.host.archive()?.replace(this.name, event);
  }

  reactions(id: number): KeptReaction[] | undefined {
    const room = this.#room();
    const kept = room.reactions.get(id);
    if (kept || id >= (room.history[0]?.id ?? room.lastId + 1)) return kept;
    return this.host.archive()?.reactions(this.name, [id]).get(id);
  }

  setReactions(id: number, reactions: KeptReaction[]): void {
    const room = this.#room();
    // Kept in memory while the message is in the live window.
    if (id >= (room.history[0]?.id ?? room.lastId + 1)) {
      room.reactions.set(id, reactions);
    }
    this.host.archive()?.react(this.name, id, reactions);
  }

  announce(notice: ReactEvent): void {
    this.host.announce(this.#room(), notice);
  }

  evict(member: Member, reason?: string): void {
    this.host.evict(this.name, member.owner, reason);
  }
}

/**
 * The values of `source`, drawn only as far as they are asked for, and each
 * once however often they are gone through (random nicks: a join that finds
 * its first candidate free draws no more).
 */
function drawnOnce<T>(source: Iterator<T>): Iterable<T> {
  const drawn: T[] = [];
  return {
    *[Symbol.iterator]() {
      for (let i = 0;; i++) {
        if (i === drawn.length) {
          const next = source.next();
          if (next.done) return;
          drawn.push(next.value);
        }
        yield drawn[i];
      }
    },
  };
}

/** The memory store's one process, as the rules name it in `connections`. */
const HERE = "";

/** The index of the first event with an id of at least `id` (binary search). */
function firstAtOrAbove(events: RoomEvent[], id: number): number {
  let low = 0;
  let high = events.length;
  while (low < high) {
    const middle = (low + high) >> 1;
    if (events[middle].id < id) low = middle + 1;
    else high = middle;
  }
  return low;
}

/** A room's members' nicks, in the order they joined (a rename keeps it). */
function membersOf(room: MemoryRoom): string[] {
  return [...room.owners.values()].map((member) => member.nick);
}

/**
 * What an event costs in history, roughly as V8 holds it: 2 bytes per UTF-16
 * unit of its strings, and 64 for the object.
 */
export function eventBytes(event: RoomEvent): number {
  // Field by field, not Object.values: this runs for every event.
  const e = event as Partial<
    Record<"from" | "to" | "text" | "nick" | "by" | "reason", string>
  >;
  const units = event.type.length + (e.from?.length ?? 0) +
    (e.to?.length ?? 0) + (e.text?.length ?? 0) + (e.nick?.length ?? 0) +
    (e.by?.length ?? 0) + (e.reason?.length ?? 0);
  return 64 + 2 * units;
}

/**
 * A member's reconnect token: derived from the room, its epoch and the id of
 * the member's join, keyed by the store's secret; stored nowhere, so it costs
 * nothing per member.
 */
export function reconnectToken(
  key: string | Uint8Array,
  room: string,
  epoch: string,
  joinedId: number,
): string {
  return createHmac("sha256", key)
    .update(`${room}/${epoch}/${joinedId}`)
    .digest("base64url");
}

/** Compares secrets in constant time. */
export function sameSecret(given: string, expected: string): boolean {
  const a = encoder.encode(given);
  const b = encoder.encode(expected);
  return a.length === b.length && timingSafeEqual(a, b);
}

const encoder = new TextEncoder();

/** Log fields: one line per event worth knowing, never message content. */
export type LogFields = Record<string, string | number | boolean | undefined>;

/** main.ts's logger, as a store gets it. */
export type Log = (
  level: "info" | "warn" | "error",
  event: string,
  fields?: LogFields,
) => void;

/**
 * What a store module loaded on demand (redis_store.ts) exports: how to
 * open its store. Each proves it with `satisfies`.
 */
export interface StoreFactory<Options extends StoreOptions> {
  connect(options: Options): Promise<RoomStore>;
}
