/**
 * The wire contract of deno-chat, written once: names and limits, the
 * events and frames, the one slash-command parser and its help, the
 * plain-text rendering, the cleaning of text from the network, close codes,
 * and the upgrade refusals (with whether a retry can help).
 *
 * A leaf: no Deno APIs, no state. The server (main.ts), the stores and the
 * terminal client import it; the page gets what it needs injected by
 * main.ts's `renderPage` (see {@linkcode PAGE_CONSTANTS}).
 *
 * @module
 */

import {
  DEFAULT_SEARCH_LIMIT,
  MAX_SEARCH_LIMIT,
  parseSearch,
  QueryProblem,
  SEARCH_RULE,
  SEARCH_WORD,
  type SearchQuery,
} from "./search.ts";

// ---------------------------------------------------------------------------
// Names and limits
// ---------------------------------------------------------------------------

/** The JSON subprotocol; without it a connection speaks plain text. */
export const JSON_PROTOCOL = "chat.v1.json";
/** The subprotocol prefix that carries a session secret (`chat.session.S`). */
export const SESSION_PROTOCOL_PREFIX = "chat.session.";
/**
 * The subprotocol prefix that carries a login token (`chat.auth.TOKEN`, a
 * JWT from the app's backend): browsers cannot set `Authorization` on a
 * WebSocket, and a subprotocol is in no URL or log. Never echoed.
 */
export const AUTH_PROTOCOL_PREFIX = "chat.auth.";
/**
 * The subprotocol prefix that carries the moderator key of `--op-key`
 * (`chat.op.KEY`), for deployments without login tokens. Never echoed.
 */
export const OP_PROTOCOL_PREFIX = "chat.op.";
/**
 * The subprotocol a client offers to be told that it may not come in (a
 * ban, a private room) by a close frame rather than the handshake's 403: a
 * browser shows neither the status nor the body of a refused handshake.
 * The upgrade then goes through and is closed at once with
 * {@linkcode CloseCode.Refused}, the refusal's name (`banned`,
 * `invite_only`) as its reason. Never echoed.
 */
export const REFUSALS_BY_CLOSE_PROTOCOL = "chat.refusals-by-close";
/** A session secret: 22–64 URL-safe base64 characters (128–384 bits). */
export const SESSION_SECRET = /^[A-Za-z0-9_-]{22,64}$/;
/** Longest room name, in characters. */
export const MAX_ROOM_CHARS = 32;
/** Longest nickname, in characters. @default {24} */
export const MAX_NICK_CHARS = 24;
/**
 * How much of the message replied to a reply quotes, in characters (longer
 * is cut, with `…`): enough to show it without a lookup.
 * @default {100}
 */
export const REPLY_QUOTE_CHARS = 100;
/**
 * Most distinct reaction keys one message may carry: a twenty-first is
 * refused (`reaction_limit`), while adding oneself to a key already there
 * is not.
 * @default {20}
 */
export const MAX_REACTION_KEYS = 20;
/**
 * Most nicks a message's reaction names (the first who reacted) in a
 * welcome, a history page or the API's history; its `count` counts them
 * all. A thousand people on one key would otherwise be a thousand nicks in
 * every newcomer's welcome.
 * @default {20}
 */
export const MAX_REACTION_NICKS = 20;
/** Longest `:short_name:` reaction key, colons included. @default {32} */
export const MAX_SHORT_NAME_CHARS = 32;
/**
 * Most unread messages (and mentions) counted in one room: past it the
 * count stays here, and a client shows "999+" (so a count is bounded work).
 * @default {999}
 */
export const MAX_UNREAD_COUNTED = 999;
/** A person's typing notices reach the room at most this often. */
export const TYPING_INTERVAL_MS = 2000;
/**
 * Most events one `history` read returns: a page of 200 is a few screens,
 * and bounds what one rate-limit token can make the server read and send.
 */
export const MAX_HISTORY_PAGE = 200;
/** Events a `history` read returns when it names no `limit`. */
export const DEFAULT_HISTORY_PAGE = 50;
/**
 * Longest ban or mute, in minutes: a year (366 days, so a leap year's fits).
 * @default {527040}
 */
export const MAX_MINUTES = 366 * 24 * 60;
/** Longest slow-mode interval, in seconds (an hour). @default {3600} */
export const MAX_SLOW_SECONDS = 3600;
/**
 * Longest kick, ban, mute or API `disconnect` reason, in characters, as
 * kept (it goes in a close frame of at most 123 bytes with `kicked by MOD: `).
 * @default {80}
 */
export const MAX_REASON_CHARS = 80;
/** Longest topic, in characters, as kept. @default {300} */
export const MAX_TOPIC_CHARS = 300;

const ROOM_PATTERN = new RegExp(`^[a-z0-9_-]{1,${MAX_ROOM_CHARS}}$`);

/** What a room name may be, in words (errors and usage lines). */
export const ROOM_RULE = `1-${MAX_ROOM_CHARS} of a-z, 0-9, - and _`;

/**
 * A room's name from what a person typed or a URL path held (`#Rust`,
 * `/rust`, `rust` are `rust`; capitals are taken as small letters), or
 * undefined when it is not a valid name.
 */
export function roomName(text: string): string | undefined {
  const name = text.replace(/^[#/]/, "").toLowerCase();
  return ROOM_PATTERN.test(name) ? name : undefined;
}

/** The room a chat URL path names (`/` is `lobby`), or undefined if invalid. */
export function roomFromPath(pathname: string): string | undefined {
  if (pathname === "/") return "lobby";
  return pathname.startsWith("/") ? roomName(pathname) : undefined;
}

// Letters, digits, `_` and `-`, and combining marks after the first character
// (for names like राम); nothing else: no controls, no bidi overrides.
const NICK_PATTERN = /^[\p{L}\p{Nd}_-][\p{L}\p{M}\p{Nd}_-]*$/u;

/** Is this a well-formed nickname (whoever holds it)? */
export function validNick(nick: string): boolean {
  return nick.length > 0 && [...nick].length <= MAX_NICK_CHARS &&
    NICK_PATTERN.test(nick);
}

/** What the nick refusals say, in both protocols and the terminal client. */
export const NICK_ERRORS: Record<"bad_nick" | "nick_taken", string> = {
  bad_nick: `a nickname is 1–${MAX_NICK_CHARS} letters, digits, "_" or "-"`,
  nick_taken: "that nickname is taken in this room",
};

// ---------------------------------------------------------------------------
// Fields: one check each, for every way in
// ---------------------------------------------------------------------------
//
// Each takes a value as it came (a typed line's word, a JSON frame's field,
// an API parameter) and answers it as kept, or the refusal. Both socket
// protocols (through the parsers below), the HTTP API (http_api.ts, and
// moderation.ts for every moderation command) and the terminal client call
// the same one, so a value is refused the same way, with the same code and
// message, wherever it comes in.

/** A value refused: its error code and what the sender is told. */
export class FieldRefusal {
  constructor(readonly code: ErrorCode, readonly message: string) {}
}

/** Is a check's answer a refusal (rather than the value as kept)? */
export function isRefusal(answer: unknown): answer is FieldRefusal {
  return answer instanceof FieldRefusal;
}

const BAD_NICK = new FieldRefusal("bad_nick", NICK_ERRORS.bad_nick);

/**
 * A nickname (to claim, or to name a member by): NFC-normalised, or
 * `bad_nick` when it is not a valid one (nobody can hold such a name).
 */
export function checkNick(value: unknown): string | FieldRefusal {
  if (typeof value !== "string") return BAD_NICK;
  const nick = value.normalize("NFC");
  return validNick(nick) ? nick : BAD_NICK;
}

/**
 * A message's text as kept ({@linkcode cleanText}; `""` when nothing is
 * left, which each way in treats its own way), or `too_long` past
 * `maxChars` characters (the `--max-message-chars` option).
 */
export function checkMessage(
  text: string,
  maxChars: number,
): string | FieldRefusal {
  const clean = cleanText(text);
  // Counting code points copies the text: only when it could be over.
  if (clean.length > maxChars && [...clean].length > maxChars) {
    return new FieldRefusal(
      "too_long",
      `message too long (max ${maxChars} characters)`,
    );
  }
  return clean;
}

/**
 * A topic as kept (cleaned, on one line; `""` clears it), or `too_long`
 * past {@linkcode MAX_TOPIC_CHARS}.
 */
export function checkTopic(value: unknown): string | FieldRefusal {
  if (typeof value !== "string") {
    return new FieldRefusal("bad_request", "a topic is text");
  }
  const topic = oneLine(cleanText(value));
  if ([...topic].length > MAX_TOPIC_CHARS) {
    return new FieldRefusal(
      "too_long",
      `topic too long (max ${MAX_TOPIC_CHARS} characters)`,
    );
  }
  return topic;
}

/**
 * A reason as kept (cleaned, on one line; undefined when absent or empty),
 * or `too_long` past {@linkcode MAX_REASON_CHARS}.
 */
export function checkReason(value: unknown): string | undefined | FieldRefusal {
  if (value === undefined) return undefined;
  if (typeof value !== "string") {
    return new FieldRefusal("bad_request", "a reason is text");
  }
  const reason = oneLine(cleanText(value));
  if ([...reason].length > MAX_REASON_CHARS) {
    return new FieldRefusal(
      "too_long",
      `reason too long (max ${MAX_REASON_CHARS} characters)`,
    );
  }
  return reason === "" ? undefined : reason;
}

/**
 * How long a ban or mute lasts, in minutes (undefined: until lifted), or
 * `bad_request` unless a whole number from 1 to {@linkcode MAX_MINUTES}.
 */
export function checkMinutes(
  value: unknown,
): number | undefined | FieldRefusal {
  if (value === undefined) return undefined;
  if (
    typeof value === "number" && Number.isSafeInteger(value) && value >= 1 &&
    value <= MAX_MINUTES
  ) {
    return value;
  }
  return new FieldRefusal(
    "bad_request",
    `minutes must be a whole number from 1 to ${MAX_MINUTES}`,
  );
}

/** One emoji (as Unicode lists them, or a lone pictograph such as ❤). */
const EMOJI = /^(?:\p{RGI_Emoji}|\p{Extended_Pictographic})$/v;
const SHORT_NAME = new RegExp(
  `^:[a-z0-9_+-]{1,${MAX_SHORT_NAME_CHARS - 2}}:$`,
);

/** What a reaction key may be, for its refusal. */
export const REACTION_KEY_RULE =
  `a reaction is one emoji or a :short_name: of at most ${MAX_SHORT_NAME_CHARS} characters (a-z, 0-9, _, + and -)`;

/** A reaction key: one emoji grapheme or a `:short_name:`. */
export function checkReactionKey(value: unknown): string | FieldRefusal {
  if (
    typeof value === "string" && (EMOJI.test(value) || SHORT_NAME.test(value))
  ) {
    return value;
  }
  return new FieldRefusal("bad_request", REACTION_KEY_RULE);
}

// ---------------------------------------------------------------------------
// Events and frames
// ---------------------------------------------------------------------------

/**
 * A room event as kept in history and sent to JSON clients. `verified` is
 * set (true) on what a person signed in with a login token says or does.
 */
export type RoomEvent =
  | ({ type: "message" } & Said)
  | ({ type: "action" } & Said)
  | { type: "join"; id: number; ts: number; nick: string; verified?: boolean }
  | { type: "leave"; id: number; ts: number; nick: string }
  | { type: "nick"; id: number; ts: number; from: string; to: string }
  /**
   * Its author replaced the text of message `target`: history, paging and
   * resume serve that message with the new text and `edited`; the old
   * text is served nowhere.
   */
  | {
    type: "edit";
    id: number;
    ts: number;
    from: string;
    target: number;
    text: string;
    /** The message's `edited` from now on. */
    edited: number;
    verified?: boolean;
  }
  | {
    type: "dm";
    id: number;
    ts: number;
    from: string;
    to: string;
    text: string;
    verified?: boolean;
  }
  | ModerationEvent
  | PrivateEvent;

/** What a message and an action (`/me`) both carry. */
export interface Said {
  id: number;
  ts: number;
  from: string;
  text: string;
  verified?: boolean;
  /** The earlier message this one answers, quoted. */
  replyTo?: ReplyQuote;
  /** When its text was last edited (its author's `edit`). */
  edited?: number;
  /**
   * Its reactions, in the order their keys were first used, in a welcome,
   * a history page or the HTTP API's history (absent: none). Live changes
   * come as {@linkcode ReactEvent}s.
   */
  reactions?: Reaction[];
}

/** One key's reactions to a message, as a reader sees them. */
export interface Reaction {
  /** One emoji, or a `:short_name:`. */
  key: string;
  /** How many people reacted with it. */
  count: number;
  /**
   * Their nicks (as they were when they reacted), first one first: at most
   * {@linkcode MAX_REACTION_NICKS} of them (`count` says how many in all).
   */
  nicks: string[];
  /** Whether the reader is one of them. */
  me: boolean;
}

/**
 * A reaction added (`on`) or taken back: passed on live to the room, with
 * the key's count after it; it takes no id and no place in history (the
 * message's `reactions` keep the result).
 */
export interface ReactEvent {
  type: "react";
  /** The message's id. */
  target: number;
  key: string;
  /** Who reacted (their nick). */
  from: string;
  on: boolean;
  /** How many people now react to the message with `key`. */
  count: number;
}

/**
 * A resuming client's welcome: the reactions now on messages it had before
 * it left (the room's kept ones with any, or with none left), which may
 * have changed while it was away.
 */
export interface Reacted {
  id: number;
  reactions: Reaction[];
}

/**
 * What moderators do that the room sees (see {@linkcode ModerationCommand}):
 * a kick (`ban` set when it is a ban; `minutes` absent: until unbanned), a
 * topic (empty: none), slow mode (0: off), a deleted message (its id in
 * `deleted`; it is gone from history).
 */
export type ModerationEvent =
  | {
    type: "kick";
    id: number;
    ts: number;
    nick: string;
    by: string;
    reason?: string;
    ban?: boolean;
    minutes?: number;
  }
  | { type: "topic"; id: number; ts: number; by: string; text: string }
  | { type: "slow"; id: number; ts: number; by: string; seconds: number }
  | { type: "delete"; id: number; ts: number; by: string; deleted: number };

/**
 * The message a reply answers, as the reply carries it: its id, author and
 * the start of its text ({@linkcode quoteOf}), so a client can show it
 * without a lookup (and after it has left history).
 */
export interface ReplyQuote {
  id: number;
  from: string;
  text: string;
}

/** The start of a message's text as a reply quotes it. */
export function quoteOf(text: string): string {
  if (text.length <= REPLY_QUOTE_CHARS) return text;
  const chars = [...text];
  return chars.length <= REPLY_QUOTE_CHARS
    ? text
    : chars.slice(0, REPLY_QUOTE_CHARS).join("") + "…";
}

/** An event that is passed on and forgotten: no id, not in history. */
export interface TypingEvent {
  type: "typing";
  nick: string;
}

/** What a room's subscriber gets: its events, and typing and reaction notices. */
export type LiveEvent = RoomEvent | TypingEvent | ReactEvent;

/**
 * A room event before the store gives it an id and a time. (`Omit` over the
 * union member by member: a plain `Omit<RoomEvent, …>` would merge them.)
 */
export type NewEvent = RoomEvent extends infer E
  ? E extends RoomEvent ? Omit<E, "id" | "ts"> : never
  : never;

/** The first frame a JSON client gets. */
export interface Welcome {
  type: "welcome";
  you: string;
  room: string;
  /** The room's epoch: ids start over when it changes. */
  epoch: string;
  users: string[];
  /** Recent events, or exactly what a resuming client missed. */
  history: RoomEvent[];
  lastId: number;
  /** A resume that could not be served exactly. */
  gap: boolean;
  /** A resume's: reactions now on messages the client already had. */
  reacted?: Reacted[];
  maxMessageChars: number;
  /** How long after sending its author may edit a message (0: never). */
  editWindowSeconds: number;
  /** Takes the nick back from a connection the server has not seen die. */
  token: string;
  /** The connection came with a session (see {@linkcode SESSION_PROTOCOL_PREFIX}). */
  session: boolean;
  /** You were signed in by a login token (your nick is your token's name). */
  verified: boolean;
  /** You are a moderator (see {@linkcode ModerationCommand}). */
  op: boolean;
  /** Members signed in by a login token, by nick. */
  verifiedUsers: string[];
  /** Members who are moderators, by nick. */
  moderators: string[];
  /** The room's topic; empty when none is set. */
  topic: string;
  /** Slow mode: seconds between one person's messages (0: off). */
  slowSeconds: number;
  /** The room is invite-only (see {@linkcode PrivateEvent}). */
  private: boolean;
  /**
   * A person's (a session's or a login's; absent for a connection without
   * either): the id they have read this room up to (their read marker; 0:
   * none, or one of an earlier epoch).
   */
  read?: number;
  /**
   * A person's: the rooms they have a read marker in, the most recently
   * marked first (at most 50: stores/markers.ts `MAX_MY_ROOMS`), each with
   * what it leaves unread.
   */
  rooms?: RoomCounts[];
}

/**
 * One of a person's rooms: where they have read it up to, and how many
 * messages, actions and direct messages to them came after that from
 * others (`unread`), and how many of those mention them or are direct
 * messages to them (`mentions`); each at most
 * {@linkcode MAX_UNREAD_COUNTED} (a client shows "999+").
 */
export interface RoomCounts {
  room: string;
  /** The event id read up to (the person's read marker). */
  read: number;
  unread: number;
  mentions: number;
}

/**
 * A person's read marker moved (by any of their connections, on any
 * process): every connection of theirs gets it, with the counts it leaves,
 * as one of their rooms ({@linkcode RoomCounts}). The id read up to is
 * `read`, not `id`: a notice is no room event (a client takes an `id` for
 * one of its room's events).
 */
export interface ReadNotice extends RoomCounts {
  type: "read";
}

/** What is unread in one of a person's rooms changed (a message came). */
export interface UnreadNotice {
  type: "unread";
  room: string;
  unread: number;
  mentions: number;
}

/**
 * A person's rooms with their counts: the answer to `rooms`, and sent
 * again when the list changes (a room marked for the first time, or one
 * whose marker became void: the room started over).
 */
export interface RoomsAnswer {
  type: "rooms";
  rooms: RoomCounts[];
}

/** Error codes a client may be sent (`unknown_command` only in plain text). */
export type ErrorCode =
  | "bad_json"
  | "bad_request"
  | "too_long"
  | "bad_nick"
  | "nick_taken"
  | "rate_limited"
  | "no_such_nick"
  | "bad_room"
  | "max_rooms"
  | "unavailable"
  | "unknown_command"
  /** A moderator's command from someone who is not one, or `/nick` when verified. */
  | "forbidden"
  /** A muted person's message (`retryAfter`: seconds left, if it ends). */
  | "muted"
  /** Slow mode: the next message may come in `retryAfter` seconds. */
  | "slow_mode"
  /**
   * `/delete` or a reply of an id that is not a message in the room's
   * history (never one, or deleted).
   */
  | "no_such_message"
  /** `/unban` of a nick nobody banned holds. */
  | "not_banned"
  /** An edit after `--edit-window` (or with editing off). */
  | "edit_window"
  /** A new reaction key on a message with {@linkcode MAX_REACTION_KEYS}. */
  | "reaction_limit"
  /** `/join` of a private room without an invite (as REFUSALS says). */
  | "invite_only"
  /** `/join` of a room that bans you (as REFUSALS says). */
  | "banned"
  /** `/uninvite` of a nick or link nobody invited. */
  | "not_invited"
  /** A new invite in a room with {@linkcode MAX_ROOM_INVITES}. */
  | "invite_limit"
  /**
   * The proxy's app refused a message or a `/join` (server/proxy.ts); an
   * app may name a code of its own instead.
   */
  | "refused_by_app";

/** A refusal of one frame; the connection stays open. */
export interface ErrorFrame {
  type: "error";
  code: ErrorCode;
  message: string;
  /** `muted`, `slow_mode`: whole seconds until it may be tried again. */
  retryAfter?: number;
}

/**
 * The answer to a moderator's command that the room does not see (`mute`,
 * `unmute`, `unban`), to that moderator only.
 */
export interface ModeratedFrame {
  type: "moderated";
  action: "mute" | "unmute" | "unban";
  nick: string;
  /** For how long; absent: until undone. */
  minutes?: number;
}

/**
 * The answer to a `history` read: the events before its `before`, oldest
 * first (as the welcome's history), and whether older ones remain.
 */
export interface HistoryAnswer {
  type: "history";
  events: RoomEvent[];
  more: boolean;
}

/**
 * What a search looked through: `all`, everything the room keeps (`--data`:
 * every event retained); `window`, the live window the store keeps
 * (in memory and with `--redis`: the last `--history-size` events).
 */
export type SearchScope = "all" | "window";

/**
 * The answer to a `search`, to the asker only: the events found, newest
 * first (messages, actions, and the asker's own DMs), whether older ones
 * may match (`more`; ask again with `before`), and what was searched.
 */
export interface SearchResults {
  type: "search_results";
  /** The search text as asked. */
  q: string;
  events: RoomEvent[];
  more: boolean;
  /**
   * With `more`: the `before` of the next search (the last event's id,
   * or where the search stopped when its time ran out).
   */
  before?: number;
  scope: SearchScope;
}

/** Every frame a JSON client may receive (batches are arrays of events). */
export type ServerFrame =
  | Welcome
  | ErrorFrame
  | ModeratedFrame
  | HistoryAnswer
  | InviteFrame
  | SearchResults
  | ReadNotice
  | UnreadNotice
  | RoomsAnswer
  | LiveEvent;

/** What a JSON client may send. */
export type ClientFrame =
  | { type: "edit"; id: number; text: string }
  /** Toggles a reaction (`on`: adds or takes it back whatever it was). */
  | { type: "react"; id: number; key: string; on?: boolean }
  | { type: "message"; text: string; replyTo?: number }
  | { type: "action"; text: string; replyTo?: number }
  | { type: "nick"; nick: string }
  | { type: "dm"; to: string; text: string }
  | { type: "typing" }
  | { type: "history"; before: number; limit?: number }
  /** See {@linkcode SearchCommand}. */
  | {
    type: "search";
    q: string;
    from?: string;
    before?: number;
    limit?: number;
  }
  /** Marks the room read up to event `id` (a person's only). */
  | { type: "read"; id: number }
  /** Asks for the person's rooms with their counts. */
  | { type: "rooms" }
  | ModerationCommand
  | AccessCommand;

// ---------------------------------------------------------------------------
// Commands: what clients send, in either protocol
// ---------------------------------------------------------------------------

/** What a client asked for (a typed line or a JSON frame). */
export type Command =
  /** `replyTo`: the id of the earlier message it answers. */
  | { type: "message" | "action"; text: string; replyTo?: number }
  /** The author's new text for their message `id`. */
  | { type: "edit"; id: number; text: string }
  /**
   * A reaction to message `id` with `key` (as typed: the store's caller
   * checks it), added or taken back (`on`; absent: the other of what it is).
   */
  | { type: "react"; id: number; key: string; on?: boolean }
  | { type: "dm"; to: string; text: string }
  | { type: "typing" }
  /** `nick` empty: the plain-text `/nick` that asks for yours. */
  | { type: "nick"; nick: string }
  /** `room` as typed; the caller checks it with {@linkcode roomName}. */
  | { type: "join"; room: string }
  | { type: "who" }
  | { type: "help" }
  | { type: "quit" }
  /**
   * Older events: up to `limit` before event id `before` (JSON), or before
   * the oldest this connection has seen (`/history`, `/more`: no `before`).
   */
  | { type: "history"; before?: number; limit: number }
  | SearchCommand
  /**
   * Marks the room read up to event `id`: JSON only, a client marks what it
   * has shown (a person's only: a session or a login).
   */
  | { type: "read"; id: number }
  /** The person's rooms with their counts (`/rooms` in plain text). */
  | { type: "rooms" }
  | ModerationCommand
  | AccessCommand
  | { type: "invalid"; code: ErrorCode; message: string };

/**
 * A search of the room's messages (see wire/search.ts): `q` as asked, its
 * `query` parsed, with the frame's `from` and `before` in it (as NICK and
 * id), and at most `limit` results.
 */
export interface SearchCommand {
  type: "search";
  q: string;
  query: SearchQuery;
  limit: number;
}

/**
 * What a moderator may do, in either protocol (the JSON frame is the same
 * object): close a person's connections with {@linkcode CloseCode.Kicked}
 * (`kick`), and keep them out (`ban`, by login for verified people, by
 * session and address for others), silence them alone (`mute`), set the
 * topic, slow the room down, and delete a message (also its author's
 * right). `minutes` absent: until undone. Whom a ban or mute holds is
 * rooms.ts `sanctionKeys`.
 */
export type ModerationCommand =
  | { type: "kick"; nick: string; reason?: string }
  | { type: "ban"; nick: string; minutes?: number; reason?: string }
  | { type: "unban"; nick: string }
  | { type: "mute"; nick: string; minutes?: number; reason?: string }
  | { type: "unmute"; nick: string }
  | { type: "topic"; text: string }
  | { type: "slow"; seconds: number }
  | { type: "delete"; id: number };

/** The moderation commands' names (`delete` is also an author's). */
export const MODERATION_TYPES: ReadonlySet<string> = new Set([
  "kick",
  "ban",
  "unban",
  "mute",
  "unmute",
  "topic",
  "slow",
  "delete",
]);

/** The commands of `/help` up to `/history`. */
const HELP_COMMANDS =
  "/nick NAME (or /nick to see yours), /me ACTION, /msg NICK TEXT, /reply ID TEXT, /edit ID TEXT, /react ID EMOJI, /join ROOM, /who, /history [N] (or /more: older events)";

/** The slash commands, as `/help` lists them (server and terminal client). */
export const HELP_TEXT =
  `commands: ${HELP_COMMANDS}, /rooms (yours, with what is unread), /search WORDS [from:NICK], /help, /quit; //text sends /text`;

/** How `/search` is used. */
export const SEARCH_USAGE = `usage: /search WORDS: ${SEARCH_RULE}`;

/** How `/history` is used, for a count that is not one. */
export const HISTORY_USAGE =
  `usage: /history [N] (N from 1 to ${MAX_HISTORY_PAGE}, default ${DEFAULT_HISTORY_PAGE})`;

/** The moderators' commands, added to `/help` for moderators. */
export const MODERATION_HELP =
  "moderators: /kick NICK [reason], /ban NICK [minutes] [reason], /unban NICK, /mute NICK [minutes] [reason], /unmute NICK, /topic TEXT, /slow SECONDS (0: off), /delete ID (also your own messages), /private on|off (invite-only or open), /invite NICK, /invite link [uses] [hours], /uninvite NICK|CODE, /uninvite link ID, /invites";

/** How `/reply` is used. */
export const REPLY_USAGE = "usage: /reply ID TEXT (ID: the message answered)";

/** How `/edit` is used. */
export const EDIT_USAGE = "usage: /edit ID TEXT (ID: your message)";

/** How `/react` is used. */
export const REACT_USAGE =
  "usage: /react ID EMOJI (an emoji or :short_name:; again to take it back)";

/** How `/join` is used, for a room name that is not one. */
export const JOIN_USAGE = `usage: /join ROOM (${ROOM_RULE})`;

/**
 * Every slash command's name (aliases too), as {@linkcode parseCommand}
 * knows them; the page's own parser is held to this list (protocol_test.ts).
 */
export const COMMAND_NAMES = [
  "nick",
  "me",
  "msg",
  "reply",
  "edit",
  "react",
  "join",
  "quit",
  "exit",
  "who",
  "history",
  "more",
  "search",
  "rooms",
  "help",
  "kick",
  "ban",
  "unban",
  "mute",
  "unmute",
  "topic",
  "slow",
  "delete",
  "private",
  "invite",
  "uninvite",
  "invites",
] as const;

/**
 * A typed line as a command: `/name args`, or a message (`//text` sends
 * `/text`). The one parser of slash commands: the server's plain-text
 * protocol and the terminal client both use it.
 */
export function parseCommand(line: string): Command {
  if (!line.startsWith("/") || line.startsWith("//")) {
    return {
      type: "message",
      text: line.startsWith("//") ? line.slice(1) : line,
    };
  }
  const match = line.match(/^\/(\S*)\s*([\s\S]*)$/)!;
  const name = match[1];
  const arg = match[2].trim();
  const usage = (message: string): Command => ({
    type: "invalid",
    code: "bad_request",
    message,
  });
  switch (name.toLowerCase()) {
    case "nick":
      return { type: "nick", nick: arg };
    case "me":
      if (arg === "") return usage("usage: /me ACTION");
      return { type: "action", text: arg };
    case "msg": {
      const dm = arg.match(/^(\S+)\s+([\s\S]+)$/);
      if (!dm) return usage("usage: /msg NICK TEXT");
      return { type: "dm", to: dm[1], text: dm[2] };
    }
    case "reply": {
      const reply = arg.match(/^(\d{1,15})\s+([\s\S]+)$/);
      if (!reply) return usage(REPLY_USAGE);
      return { type: "message", text: reply[2], replyTo: Number(reply[1]) };
    }
    case "edit": {
      const edit = arg.match(/^(\d{1,15})\s+([\s\S]+)$/);
      if (!edit || Number(edit[1]) < 1) return usage(EDIT_USAGE);
      return { type: "edit", id: Number(edit[1]), text: edit[2] };
    }
    case "react": {
      const react = arg.match(/^(\d{1,15})\s+(\S+)$/);
      if (!react || Number(react[1]) < 1) return usage(REACT_USAGE);
      return { type: "react", id: Number(react[1]), key: react[2] };
    }
    case "join":
      return { type: "join", room: arg };
    case "quit":
    case "exit":
      return { type: "quit" };
    case "who":
      return { type: "who" };
    case "history":
    case "more": {
      if (arg === "") return { type: "history", limit: DEFAULT_HISTORY_PAGE };
      const limit = /^\d{1,9}$/.test(arg) ? Number(arg) : 0;
      if (limit < 1 || limit > MAX_HISTORY_PAGE) return usage(HISTORY_USAGE);
      return { type: "history", limit };
    }
    case "search":
      if (arg === "") return usage(SEARCH_USAGE);
      return searchCommand(arg, {});
    case "rooms":
      return { type: "rooms" };
    case "help":
      return { type: "help" };
    case "kick":
    case "ban":
    case "unban":
    case "mute":
    case "unmute":
    case "topic":
    case "slow":
    case "delete":
      return parseModeration(name.toLowerCase(), arg);
    case "private":
    case "invite":
    case "uninvite":
    case "invites":
      return parseAccess(name.toLowerCase() as AccessCommand["type"], arg);
    default:
      return {
        type: "invalid",
        code: "unknown_command",
        message: `unknown command /${name} (try /help)`,
      };
  }
}

const SEARCH_FORM =
  `expected {"type":"search","q":TEXT,"from"?:NICK,"before"?:ID,"limit"?:N}: N from 1 to ${MAX_SEARCH_LIMIT} (default ${DEFAULT_SEARCH_LIMIT})`;

/**
 * A search's text and fields as a command, or why not (`bad_request`, its
 * message the query's problem): the query parsed once, the frame's `from`
 * and `before` added to it (given there and in the text: refused), `from`
 * held to the nick rules.
 */
function searchCommand(
  q: unknown,
  fields: { from?: unknown; before?: unknown; limit?: unknown },
): Command {
  const invalid = (message: string): Command => ({
    type: "invalid",
    code: "bad_request",
    message,
  });
  const { from, before, limit = DEFAULT_SEARCH_LIMIT } = fields;
  if (
    typeof q !== "string" || (from !== undefined && typeof from !== "string") ||
    (before !== undefined &&
      (typeof before !== "number" || !Number.isSafeInteger(before) ||
        before < 0)) ||
    typeof limit !== "number" || !Number.isInteger(limit) || limit < 1 ||
    limit > MAX_SEARCH_LIMIT
  ) {
    return invalid(SEARCH_FORM);
  }
  const query = parseSearch(q);
  if (query instanceof QueryProblem) return invalid(query.message);
  if (from !== undefined) {
    if (query.from !== undefined) return invalid("from: given twice");
    query.from = from;
  }
  if (before !== undefined) {
    if (query.before !== undefined) return invalid("before: given twice");
    query.before = before;
  }
  if (query.from !== undefined) {
    const nick = checkNick(query.from);
    if (isRefusal(nick)) return invalid(`from: ${nick.message}`);
    query.from = nick;
  }
  return { type: "search", q, query, limit };
}

/** How each moderation command is typed, for its usage error. */
export const MODERATION_USAGE: Record<string, string> = {
  kick: "usage: /kick NICK [reason]",
  ban: `usage: /ban NICK [minutes, 1-${MAX_MINUTES}] [reason]`,
  unban: "usage: /unban NICK",
  mute: `usage: /mute NICK [minutes, 1-${MAX_MINUTES}] [reason]`,
  unmute: "usage: /unmute NICK",
  topic: `usage: /topic TEXT (at most ${MAX_TOPIC_CHARS} characters)`,
  slow: `usage: /slow SECONDS (0-${MAX_SLOW_SECONDS}; 0 turns it off)`,
  delete: "usage: /delete ID (a message's id)",
};

/** Each moderation command's JSON form, for its `bad_request`. */
const MODERATION_JSON: Record<string, string> = {
  kick: '{"type":"kick","nick":…,"reason"?:…}',
  ban: '{"type":"ban","nick":…,"minutes"?:N,"reason"?:…}',
  unban: '{"type":"unban","nick":…}',
  mute: '{"type":"mute","nick":…,"minutes"?:N,"reason"?:…}',
  unmute: '{"type":"unmute","nick":…}',
  topic: '{"type":"topic","text":…} ("" clears it)',
  slow: `{"type":"slow","seconds":0-${MAX_SLOW_SECONDS}}`,
  delete: '{"type":"delete","id":N}',
};

/** A typed moderation command (`name` lower case) as a command. */
function parseModeration(name: string, arg: string): Command {
  const words = arg.match(/^(\S+)(?:\s+([\s\S]*))?$/);
  const first = words?.[1] ?? "";
  const rest = words?.[2]?.trim() ?? "";
  const frame: Record<string, unknown> = { type: name };
  switch (name) {
    case "kick":
      Object.assign(frame, { nick: first, reason: rest || undefined });
      break;
    case "ban":
    case "mute": {
      const timed = rest.match(/^(\d+)(?:\s+([\s\S]*))?$/);
      Object.assign(frame, {
        nick: first,
        minutes: timed ? Number(timed[1]) : undefined,
        reason: (timed ? timed[2]?.trim() : rest) || undefined,
      });
      break;
    }
    case "unban":
    case "unmute":
      if (rest !== "") frame.nick = ""; // one word only
      else frame.nick = first;
      break;
    case "topic":
      frame.text = arg;
      break;
    case "slow":
    case "delete":
      if (/^\d+$/.test(arg)) {
        frame[name === "slow" ? "seconds" : "id"] = Number(arg);
      }
      break;
  }
  const checked = checkModeration(frame);
  if (checked === undefined) {
    return {
      type: "invalid",
      code: "bad_request",
      message: MODERATION_USAGE[name],
    };
  }
  return moderationCommand(checked);
}

/**
 * A moderation command from a frame (JSON, an API call, or a typed line
 * made into one), its fields as kept by their checks; the first field
 * refused; or undefined when the frame is not one's form (a field it needs
 * is missing, or a number is not a whole one). The parsers run it, so both
 * protocols and the terminal client refuse alike, and moderation.ts runs it
 * again on every command, whoever gave it (the API's too).
 */
export function checkModeration(
  frame: Record<string, unknown>,
): ModerationCommand | FieldRefusal | undefined {
  const whole = (value: unknown, min: number, max: number) =>
    Number.isSafeInteger(value) && (value as number) >= min &&
    (value as number) <= max;
  switch (frame.type) {
    case "kick":
    case "ban":
    case "mute": {
      if (frame.nick === undefined || frame.nick === "") return undefined;
      const nick = checkNick(frame.nick);
      if (isRefusal(nick)) return nick;
      const minutes = frame.type === "kick"
        ? undefined
        : checkMinutes(frame.minutes);
      if (isRefusal(minutes)) return minutes;
      const reason = checkReason(frame.reason);
      if (isRefusal(reason)) return reason;
      return frame.type === "kick"
        ? { type: "kick", nick, reason }
        : { type: frame.type, nick, minutes, reason };
    }
    case "unban":
    case "unmute": {
      if (frame.nick === undefined || frame.nick === "") return undefined;
      const nick = checkNick(frame.nick);
      if (isRefusal(nick)) return nick;
      return { type: frame.type, nick };
    }
    case "topic": {
      if (frame.text === undefined) return undefined;
      const text = checkTopic(frame.text);
      if (isRefusal(text)) return text;
      return { type: "topic", text };
    }
    case "slow":
      if (!whole(frame.seconds, 0, MAX_SLOW_SECONDS)) return undefined;
      return { type: "slow", seconds: frame.seconds as number };
    case "delete":
      if (!whole(frame.id, 1, Number.MAX_SAFE_INTEGER)) return undefined;
      return { type: "delete", id: frame.id as number };
  }
  return undefined;
}

/** A checked moderation command as a command (a refusal is `invalid`). */
function moderationCommand(
  checked: ModerationCommand | FieldRefusal,
): Command {
  return isRefusal(checked)
    ? { type: "invalid", code: checked.code, message: checked.message }
    : checked;
}

const JSON_FORMS =
  'expected {"type":"message"|"action","text":…,"replyTo"?:ID}, {"type":"edit","id":ID,"text":…}, {"type":"react","id":ID,"key":EMOJI}, {"type":"dm","to":…,"text":…}, {"type":"nick","nick":…}, {"type":"history","before":ID,"limit":N}, {"type":"search","q":…}, {"type":"read","id":ID}, {"type":"rooms"} or {"type":"typing"}';

const HISTORY_FORM =
  `expected {"type":"history","before":ID,"limit":N}: ID a whole number >= 0, N from 1 to ${MAX_HISTORY_PAGE} (default ${DEFAULT_HISTORY_PAGE})`;

/** A `history` frame's fields as a command, or why they are not one. */
function historyCommand(frame: Record<string, unknown>): Command {
  const { before, limit = DEFAULT_HISTORY_PAGE } = frame;
  if (
    typeof before !== "number" || !Number.isSafeInteger(before) ||
    before < 0 || typeof limit !== "number" || !Number.isInteger(limit) ||
    limit < 1 || limit > MAX_HISTORY_PAGE
  ) {
    return { type: "invalid", code: "bad_request", message: HISTORY_FORM };
  }
  return { type: "history", before, limit };
}

/** What a `read` frame must be. */
export const READ_FORM =
  'expected {"type":"read","id":ID}: ID a whole number >= 1, an event of this room';

/** A JSON frame as a command; anything else is `bad_json` or `bad_request`. */
export function parseJsonCommand(data: string): Command {
  let value: unknown;
  try {
    value = JSON.parse(data);
  } catch {
    return { type: "invalid", code: "bad_json", message: "frame is not JSON" };
  }
  const frame = value as Record<string, unknown> | null;
  if (typeof frame === "object" && frame !== null && !Array.isArray(frame)) {
    if (
      (frame.type === "message" || frame.type === "action") &&
      typeof frame.text === "string"
    ) {
      const { replyTo } = frame;
      if (replyTo === undefined) return { type: frame.type, text: frame.text };
      if (
        typeof replyTo !== "number" || !Number.isSafeInteger(replyTo) ||
        replyTo < 1
      ) {
        return {
          type: "invalid",
          code: "bad_request",
          message: "replyTo is the id of a message: a whole number >= 1",
        };
      }
      return { type: frame.type, text: frame.text, replyTo };
    }
    if (frame.type === "edit") {
      const { id, text } = frame;
      if (
        typeof id !== "number" || !Number.isSafeInteger(id) || id < 1 ||
        typeof text !== "string"
      ) {
        return {
          type: "invalid",
          code: "bad_request",
          message: 'expected {"type":"edit","id":ID,"text":…}',
        };
      }
      return { type: "edit", id, text };
    }
    if (frame.type === "react") {
      const { id, key, on } = frame;
      if (
        typeof id !== "number" || !Number.isSafeInteger(id) || id < 1 ||
        typeof key !== "string" || (on !== undefined && typeof on !== "boolean")
      ) {
        return {
          type: "invalid",
          code: "bad_request",
          message: 'expected {"type":"react","id":ID,"key":EMOJI,"on"?:BOOL}',
        };
      }
      return on === undefined
        ? { type: "react", id, key }
        : { type: "react", id, key, on };
    }
    if (frame.type === "nick" && typeof frame.nick === "string") {
      return { type: "nick", nick: frame.nick };
    }
    if (
      frame.type === "dm" && typeof frame.to === "string" &&
      typeof frame.text === "string"
    ) {
      return { type: "dm", to: frame.to, text: frame.text };
    }
    if (frame.type === "typing") return { type: "typing" };
    if (frame.type === "history") return historyCommand(frame);
    if (typeof frame.type === "string" && ACCESS_TYPES.has(frame.type)) {
      return accessFrame(frame);
    }
    if (frame.type === "search") return searchCommand(frame.q, frame);
    if (frame.type === "read") {
      const { id } = frame;
      if (typeof id !== "number" || !Number.isSafeInteger(id) || id < 1) {
        return { type: "invalid", code: "bad_request", message: READ_FORM };
      }
      return { type: "read", id };
    }
    if (frame.type === "rooms") return { type: "rooms" };
    if (typeof frame.type === "string" && MODERATION_TYPES.has(frame.type)) {
      const checked = checkModeration(frame);
      if (checked === undefined) {
        return {
          type: "invalid",
          code: "bad_request",
          message: `expected ${MODERATION_JSON[frame.type]}`,
        };
      }
      return moderationCommand(checked);
    }
  }
  return { type: "invalid", code: "bad_request", message: JSON_FORMS };
}

// ---------------------------------------------------------------------------
// Private rooms: /private, /invite, /uninvite, /invites
// ---------------------------------------------------------------------------
//
// A moderator makes a room invite-only; then the handshake admits only the
// invited (by their keys, as a ban holds: room_rules.ts `admit`), those who
// bring a valid invite code (`?invite=CODE`), members already in, and
// moderators.

/** Uses an invite link has when none are asked for. @default {1} */
export const DEFAULT_INVITE_USES = 1;
/** Most uses one invite link may have. @default {1000} */
export const MAX_INVITE_USES = 1000;
/** Hours an invite link lasts when none are asked for. @default {24} */
export const DEFAULT_INVITE_HOURS = 24;
/** Longest an invite link may last, in hours (30 days). @default {720} */
export const MAX_INVITE_HOURS = 30 * 24;
/**
 * Most invites (people and links together) a room keeps; another is
 * refused with `invite_limit` until some are revoked or run out.
 * @default {1000}
 */
export const MAX_ROOM_INVITES = 1000;
/**
 * Random bytes in an invite code (192 bits, from `crypto`): 32 base64url
 * characters, longer than any nick, so `/uninvite WORD` tells them apart.
 * Nobody can guess one, and the handshake rate-limits tries anyway.
 * @default {24}
 */
export const INVITE_CODE_BYTES = 24;
/** An invite code as the server makes them (`?invite=`, `/uninvite`). */
export const INVITE_CODE = /^[A-Za-z0-9_-]{32}$/;
/**
 * A link's name in `/invites` and `/uninvite link ID`: the start of its
 * code's hash (the code itself is kept nowhere).
 */
export const LINK_ID = /^[A-Za-z0-9_-]{8}$/;
/** Longest verified user id an invite may name (the API's `user`). */
export const MAX_USER_CHARS = 256;

/**
 * A moderator made the room invite-only (`on`) or open again: kept in
 * history like a topic, and every welcome says which it is (`private`).
 */
export interface PrivateEvent {
  type: "private";
  id: number;
  ts: number;
  by: string;
  on: boolean;
}

/**
 * Who may come into a room, in either protocol (the JSON frame is the
 * same object): invite-only or open (`private`); an invite of a member by
 * nick (or a verified person who holds or held the name here: by their
 * login, lasting), of a verified `user` id, or a link with a code of
 * `uses` uses for `hours`; revoking one (by nick, user, the code itself, or
 * the link's id); and the list. Moderators only.
 */
export type AccessCommand =
  | { type: "private"; on: boolean }
  | { type: "invite"; nick: string }
  | { type: "invite"; user: string }
  | { type: "invite"; link: { uses: number; hours: number } }
  | { type: "uninvite"; nick: string }
  | { type: "uninvite"; user: string }
  | { type: "uninvite"; code: string }
  | { type: "uninvite"; link: string }
  | { type: "invites" };

/** The private-room commands' names. */
export const ACCESS_TYPES: ReadonlySet<string> = new Set([
  "private",
  "invite",
  "uninvite",
  "invites",
]);

/** How each private-room command is typed, for its usage error. */
export const ACCESS_USAGE: Record<AccessCommand["type"], string> = {
  private: "usage: /private on|off",
  invite:
    `usage: /invite NICK, or /invite link [uses, 1-${MAX_INVITE_USES}, default ${DEFAULT_INVITE_USES}] [hours, 1-${MAX_INVITE_HOURS}, default ${DEFAULT_INVITE_HOURS}]`,
  uninvite: "usage: /uninvite NICK, /uninvite CODE or /uninvite link ID",
  invites: "usage: /invites",
};

/** Each private-room command's JSON form, for its `bad_request`. */
const ACCESS_JSON: Record<AccessCommand["type"], string> = {
  private: '{"type":"private","on":true|false}',
  invite:
    '{"type":"invite","nick":…}, {"type":"invite","user":…} or {"type":"invite","link":{"uses"?:N,"hours"?:N}}',
  uninvite:
    '{"type":"uninvite","nick":…}, {"type":"uninvite","user":…}, {"type":"uninvite","code":…} or {"type":"uninvite","link":ID}',
  invites: '{"type":"invites"}',
};

/** A typed private-room command (`name` lower case) as a command. */
function parseAccess(name: AccessCommand["type"], arg: string): Command {
  const words = arg.split(/\s+/).filter((w) => w !== "");
  const frame: Record<string, unknown> = { type: name };
  const whole = (word: string | undefined) =>
    word === undefined ? undefined : /^\d{1,9}$/.test(word) ? Number(word) : -1;
  switch (name) {
    case "private":
      if (words.length === 1 && /^(on|off)$/i.test(words[0])) {
        frame.on = words[0].toLowerCase() === "on";
      }
      break;
    case "invite":
      if (words[0]?.toLowerCase() === "link" && words.length <= 3) {
        frame.link = { uses: whole(words[1]), hours: whole(words[2]) };
      } else if (words.length === 1) frame.nick = words[0];
      break;
    case "uninvite":
      // `link` first is the keyword, as for /invite (JSON names a nick
      // `link`).
      if (words[0]?.toLowerCase() === "link") {
        if (words.length === 2) frame.link = words[1];
      } else if (words.length === 1) {
        // A code is longer than any nick.
        frame[INVITE_CODE.test(words[0]) ? "code" : "nick"] = words[0];
      }
      break;
    case "invites":
      if (words.length > 0) frame.type = "";
      break;
  }
  return accessCommand(checkAccess(frame), ACCESS_USAGE[name]);
}

/** A checked private-room command as a command (a refusal is `invalid`). */
function accessCommand(
  checked: AccessCommand | FieldRefusal | undefined,
  usage: string,
): Command {
  if (checked === undefined) {
    return { type: "invalid", code: "bad_request", message: usage };
  }
  return isRefusal(checked)
    ? { type: "invalid", code: checked.code, message: checked.message }
    : checked;
}

/**
 * Uses of an invite link (default {@linkcode DEFAULT_INVITE_USES}), or
 * `bad_request` unless a whole number from 1 to {@linkcode MAX_INVITE_USES}.
 */
export function checkInviteUses(value: unknown): number | FieldRefusal {
  if (value === undefined) return DEFAULT_INVITE_USES;
  if (
    Number.isSafeInteger(value) && (value as number) >= 1 &&
    (value as number) <= MAX_INVITE_USES
  ) {
    return value as number;
  }
  return new FieldRefusal(
    "bad_request",
    `uses must be a whole number from 1 to ${MAX_INVITE_USES}`,
  );
}

/**
 * Hours an invite link lasts (default {@linkcode DEFAULT_INVITE_HOURS}), or
 * `bad_request` unless a whole number from 1 to {@linkcode MAX_INVITE_HOURS}.
 */
export function checkInviteHours(value: unknown): number | FieldRefusal {
  if (value === undefined) return DEFAULT_INVITE_HOURS;
  if (
    Number.isSafeInteger(value) && (value as number) >= 1 &&
    (value as number) <= MAX_INVITE_HOURS
  ) {
    return value as number;
  }
  return new FieldRefusal(
    "bad_request",
    `hours must be a whole number from 1 to ${MAX_INVITE_HOURS}`,
  );
}

/**
 * A private-room command from a frame (JSON, an API call, or a typed line
 * made into one), its fields as kept by their checks; the first field
 * refused; or undefined when the frame is not one's form. As
 * {@linkcode checkModeration}: the parsers run it, and the server runs it
 * again on every command, whoever gave it.
 */
export function checkAccess(
  frame: Record<string, unknown>,
): AccessCommand | FieldRefusal | undefined {
  const given = ["nick", "user", "code", "link"].filter((name) =>
    frame[name] !== undefined
  );
  switch (frame.type) {
    case "private":
      return typeof frame.on === "boolean"
        ? { type: "private", on: frame.on }
        : undefined;
    case "invites":
      return { type: "invites" };
    case "invite":
    case "uninvite": {
      if (given.length !== 1) return undefined;
      const [name] = given;
      const value = frame[name];
      if (name === "nick") {
        if (value === "") return undefined;
        const nick = checkNick(value);
        if (isRefusal(nick)) return nick;
        return { type: frame.type, nick } as AccessCommand;
      }
      if (name === "user") {
        if (
          typeof value !== "string" || value === "" ||
          value.length > MAX_USER_CHARS
        ) {
          return new FieldRefusal(
            "bad_request",
            `a user is a verified user id of 1 to ${MAX_USER_CHARS} characters`,
          );
        }
        return { type: frame.type, user: value } as AccessCommand;
      }
      if (frame.type === "invite") {
        if (name !== "link") return undefined;
        const link = value as Record<string, unknown>;
        if (typeof link !== "object" || link === null || Array.isArray(link)) {
          return undefined;
        }
        const uses = checkInviteUses(link.uses);
        if (isRefusal(uses)) return uses;
        const hours = checkInviteHours(link.hours);
        if (isRefusal(hours)) return hours;
        return { type: "invite", link: { uses, hours } };
      }
      if (name === "code") {
        if (typeof value !== "string" || !INVITE_CODE.test(value)) {
          return new FieldRefusal(
            "bad_request",
            "an invite code is 32 of A-Z, a-z, 0-9, - and _",
          );
        }
        return { type: "uninvite", code: value };
      }
      if (typeof value !== "string" || !LINK_ID.test(value)) {
        return new FieldRefusal(
          "bad_request",
          "a link is named by the 8 characters /invites shows",
        );
      }
      return { type: "uninvite", link: value };
    }
  }
  return undefined;
}

/** A private-room command's JSON frame as a command. */
function accessFrame(frame: Record<string, unknown>): Command {
  const type = frame.type as AccessCommand["type"];
  return accessCommand(checkAccess(frame), `expected ${ACCESS_JSON[type]}`);
}

/** A person invited into a private room, as `/invites` lists them. */
export interface InvitedPerson {
  /** The nick they were invited by (or asked for, coming with a code). */
  nick?: string;
  /** The verified user id they were invited by (the API's `user`). */
  user?: string;
  /** The moderator who invited them. */
  by: string;
  /** They came in with this link (its id). */
  via?: string;
}

/** An invite link, as `/invites` lists it (never its code). */
export interface InviteLinkEntry {
  /** Its id (the start of its code's hash): `/uninvite link ID`. */
  link: string;
  /** Uses left. */
  uses: number;
  /** When it ends (ms since the epoch). */
  until: number;
  by: string;
}

/**
 * The answers to the private-room commands, to the moderator only: who was
 * invited, a new link (its code and the page's URL with it, shown once:
 * only its hash is kept), who or which link was uninvited, and the list.
 */
export type InviteFrame =
  | { type: "invited"; nick: string }
  | { type: "invited"; user: string }
  | {
    type: "invite_link";
    link: string;
    code: string;
    /** The page with `#ROOM&invite=CODE`. */
    url: string;
    uses: number;
    until: number;
  }
  | { type: "uninvited"; nick: string }
  | { type: "uninvited"; user: string }
  | { type: "uninvited"; link: string }
  | {
    type: "invites";
    private: boolean;
    people: InvitedPerson[];
    links: InviteLinkEntry[];
  };

/** How an answer to a private-room command reads in plain text. */
export function inviteText(frame: InviteFrame): string {
  const who = (person: { nick?: string; user?: string }) =>
    person.nick ?? `user ${person.user}`;
  switch (frame.type) {
    case "invited":
      return `${who(frame)} is invited.`;
    case "invite_link":
      return `invite link ${frame.link} (${frame.uses} use${
        frame.uses === 1 ? "" : "s"
      }, until ${new Date(frame.until).toISOString()}): ${frame.url}`;
    case "uninvited":
      return "link" in frame
        ? `invite link ${frame.link} is revoked.`
        : `${who(frame)} is no longer invited.`;
    case "invites": {
      const people = frame.people.map((person) =>
        `${person.nick ?? (person.user ? `user ${person.user}` : "someone")}${
          person.via ? ` (link ${person.via})` : ` (by ${person.by})`
        }`
      );
      const links = frame.links.map((link) =>
        `${link.link} (${link.uses} use${
          link.uses === 1 ? "" : "s"
        } left, until ${new Date(link.until).toISOString()}, by ${link.by})`
      );
      return `${
        frame.private ? "this room is invite-only" : "this room is open"
      }; invited: ${people.join(", ") || "nobody"}; links: ${
        links.join(", ") || "none"
      }.`;
    }
  }
}

// ---------------------------------------------------------------------------
// Text from the network: what is kept, and what is printed
// ---------------------------------------------------------------------------

const encoder = new TextEncoder();

/**
 * A text frame's size in UTF-8 bytes, exact whenever it could be over `max`
 * (the server's `--max-frame-bytes`). Each UTF-16 unit is at most 3 bytes,
 * so a short string cannot be over and is not encoded (its UTF-16 length is
 * returned instead).
 */
export function frameBytes(text: string, max: number): number {
  // UTF-8 never takes fewer bytes than UTF-16 units, so a long string is over
  // without encoding it (which would copy a huge frame once more).
  if (text.length * 3 <= max || text.length > max) return text.length;
  return encoder.encode(text).byteLength;
}

// C0 and C1 controls except tab and newline.
// deno-lint-ignore no-control-regex -- matching control characters is the point
const CONTROL_CHARS = /[\x00-\x08\x0B-\x1F\x7F-\x9F]/g;
// deno-lint-ignore no-control-regex -- matching control characters is the point
const HAS_CONTROL = /[\x00-\x08\x0B-\x1F\x7F-\x9F]/;

/**
 * Terminal escape sequences, whole (ECMA-48): CSI … final byte, the string
 * ones (OSC, DCS, SOS, PM, APC) up to BEL or ST (or the end), other ESC
 * sequences, and their 8-bit forms. Removing only the ESC would leave
 * `[31m` behind on a terminal.
 */
const ESCAPE_SEQUENCES =
  // deno-lint-ignore no-control-regex -- matching control characters is the point
  /(?:\x1B\[|\x9B)[0-?]*[ -/]*[@-~]|(?:\x1B[\]PX^_]|[\x90\x98\x9D-\x9F])[\s\S]*?(?:\x07|\x1B\\|\x9C|$)|\x1B[ -/]*[0-~]?/g;

/** A message's text as it may be kept: no escape sequences or controls. */
export function cleanText(text: string): string {
  // Most messages have no control character at all: one test, no copies.
  if (!HAS_CONTROL.test(text)) return text.trim();
  return text.replace(ESCAPE_SEQUENCES, "").replace(CONTROL_CHARS, "").trim();
}

/**
 * Every Unicode line break that survives {@linkcode cleanText} (LF, and
 * U+2028 and U+2029), so a line is one line by every definition.
 */
const LINE_BREAKS = /[\n\u2028\u2029]/g;

/** A text on one line: a line break becomes a space. */
export function oneLine(text: string): string {
  return text.replace(LINE_BREAKS, " ");
}

const PRINT_BREAKS = /[\t\n\v\f\r\x85\u2028\u2029]/g;
// deno-lint-ignore no-control-regex -- matching control characters is the point
const ALL_CONTROLS = /[\x00-\x1f\x7f-\x9f]/g;
// Bidirectional overrides and isolates: they could reorder what follows them
// on the line (a message posing as another nick's).
const BIDI_CONTROLS = /[\u202a-\u202e\u2066-\u2069]/g;

/**
 * Text from the network made safe to print on a terminal: whole escape
 * sequences go, tabs and line breaks become spaces (an event is always one
 * line), and every other C0/C1 control and bidi override is dropped. (The
 * server cleans what it keeps; a client trusts no server.)
 */
export function printable(text: string): string {
  return text
    .replace(ESCAPE_SEQUENCES, "")
    .replace(PRINT_BREAKS, " ")
    .replace(ALL_CONTROLS, "")
    .replace(BIDI_CONTROLS, "");
}

/**
 * The tutorial's lines, one per event. A line break in a message becomes a
 * space: on a plain-text client it would start a line that could pass for a
 * system line (` .... admin has joined.`). JSON clients keep it.
 */
export function renderText(event: RoomEvent): string {
  switch (event.type) {
    case "message":
      return `${event.from}: ${replyText(event.replyTo)}${oneLine(event.text)}`;
    case "action":
      return `* ${event.from} ${replyText(event.replyTo)}${
        oneLine(event.text)
      }`;
    case "join":
      return ` .... ${event.nick} has joined.`;
    case "leave":
      return ` .... ${event.nick} has left.`;
    case "nick":
      return ` .... ${event.from} is now known as ${event.to}.`;
    case "edit":
      return `* ${event.from} edited: ${oneLine(event.text)}`;
    case "dm":
      return `[dm] ${event.from} -> ${event.to}: ${oneLine(event.text)}`;
    case "kick":
      return ` .... ${event.nick} was ${
        event.ban ? "banned" : "kicked"
      } by ${event.by}${
        event.ban && event.minutes ? ` for ${event.minutes} min` : ""
      }${event.reason ? ` (${oneLine(event.reason)})` : ""}.`;
    case "topic":
      return event.text
        ? ` .... ${event.by} set the topic: ${oneLine(event.text)}`
        : ` .... ${event.by} cleared the topic.`;
    case "slow":
      return event.seconds
        ? ` .... ${event.by} set slow mode: one message per ${event.seconds} s.`
        : ` .... ${event.by} turned slow mode off.`;
    case "delete":
      return ` .... ${event.by} deleted message ${event.deleted}.`;
    case "private":
      return event.on
        ? ` .... ${event.by} made the room invite-only.`
        : ` .... ${event.by} opened the room to everyone.`;
  }
}

/** A reaction notice on a plain-text line. */
export function renderReaction(event: ReactEvent): string {
  return event.on
    ? `* ${event.from} reacted ${event.key} to #${event.target}`
    : `* ${event.from} took back ${event.key} from #${event.target}`;
}

/** A reply's quote on a plain-text line: `↪ ada: "the start…" `. */
function replyText(quote: ReplyQuote | undefined): string {
  return quote ? `↪ ${quote.from}: "${oneLine(quote.text)}" ` : "";
}

/** A count as a client shows it: `999+` at {@linkcode MAX_UNREAD_COUNTED}. */
export function countText(count: number): string {
  return count >= MAX_UNREAD_COUNTED ? `${MAX_UNREAD_COUNTED}+` : String(count);
}

/**
 * One of a person's rooms with what is unread there, in plain text:
 * `lobby (all read)`, `rust (3 unread, 1 mention)`.
 */
export function roomCountsText(counts: RoomCounts): string {
  if (counts.unread === 0) return `${counts.room} (all read)`;
  const mentions = counts.mentions === 0
    ? ""
    : `, ${countText(counts.mentions)} mention${
      counts.mentions === 1 ? "" : "s"
    }`;
  return `${counts.room} (${countText(counts.unread)} unread${mentions})`;
}

/** A person's rooms on one plain-text line: the answer to `/rooms`. */
export function roomsText(rooms: readonly RoomCounts[]): string {
  return rooms.length === 0
    ? "your rooms: none yet (a room is listed once you have read in it)"
    : `your rooms: ${rooms.map(roomCountsText).join(", ")}`;
}

/** A plain-text system line: ` .... TEXT`. */
export function systemText(text: string): string {
  return ` .... ${text}`;
}

// ---------------------------------------------------------------------------
// Close codes and refusals
// ---------------------------------------------------------------------------

/** HTTP statuses the chat answers with, by name. */
export const Status = {
  BadRequest: 400,
  Unauthorized: 401,
  Forbidden: 403,
  NotFound: 404,
  MethodNotAllowed: 405,
  TooManyRequests: 429,
  UpgradeRequired: 426,
  ServiceUnavailable: 503,
} as const;

/**
 * WebSocket close codes (RFC 6455 §7.4.1) the server sends, plus
 * `Abnormal`, which is only ever recorded (a connection that ended without a
 * close frame), never sent.
 */
export const CloseCode = {
  Normal: 1000,
  GoingAway: 1001,
  UnsupportedData: 1003,
  Abnormal: 1006,
  PolicyViolation: 1008,
  MessageTooBig: 1009,
  InternalError: 1011,
  TryAgainLater: 1013,
  /** A moderator closed the connection (`/kick`, `/ban`); the reason says why. */
  Kicked: 4000,
  /**
   * Not let in (see {@linkcode REFUSALS_BY_CLOSE_PROTOCOL}): the reason is
   * the refusal's name, `banned` or `invite_only`.
   */
  Refused: 4003,
} as const;

/**
 * Close codes after which reconnecting would only repeat the problem: a
 * normal close by the server (`/quit`, "replaced by a new connection"), a
 * kick, a refusal at the door, unsupported data, a policy violation
 * (flooding) and a frame too big.
 */
export const FINAL_CLOSE_CODES: ReadonlySet<number> = new Set([
  CloseCode.Normal,
  CloseCode.Kicked,
  CloseCode.Refused,
  CloseCode.UnsupportedData,
  CloseCode.PolicyViolation,
  CloseCode.MessageTooBig,
]);

/** What every client is told at shutdown (with 1001). */
export const SHUTDOWN_REASON = "server shutting down";

/** One way an upgrade is refused. */
export interface Refusal {
  status: number;
  /** What the client is told (the response body). */
  message: string;
  /** Whether the same request may succeed later (clients back off and retry). */
  retryable: boolean;
}

/**
 * Every way an upgrade is refused: its status, what the client is told, and
 * whether trying again later can help. The name is also the log event's
 * `reason` and the metric's label.
 */
export const REFUSALS = {
  not_websocket: {
    status: Status.UpgradeRequired,
    message: "This port speaks WebSocket. Open the chat page on the page port.",
    retryable: false,
  },
  bad_room: {
    status: Status.BadRequest,
    message: `A room name is ${ROOM_RULE}.`,
    retryable: false,
  },
  origin: {
    status: Status.Forbidden,
    message: "This origin may not connect.",
    retryable: false,
  },
  shutting_down: {
    status: Status.ServiceUnavailable,
    message: "Shutting down.",
    retryable: true,
  },
  unavailable: {
    status: Status.ServiceUnavailable,
    message: "The chat store is unreachable.",
    retryable: true,
  },
  max_connections: {
    status: Status.ServiceUnavailable,
    message: "Server full.",
    retryable: true,
  },
  max_connections_per_ip: {
    status: Status.ServiceUnavailable,
    message: "Too many connections from your address.",
    retryable: true,
  },
  max_rooms: {
    status: Status.ServiceUnavailable,
    message: "Too many rooms: join an existing one.",
    retryable: true,
  },
  bad_handshake: {
    status: Status.BadRequest,
    message: "Bad WebSocket handshake.",
    retryable: false,
  },
  bad_request: {
    status: Status.BadRequest,
    message: "Bad request.",
    retryable: false,
  },
  connect_rate: {
    status: Status.TooManyRequests,
    message:
      "Too many new connections from your address: try again in a second.",
    retryable: true,
  },
  unauthorized: {
    status: Status.Unauthorized,
    message: "Sign in again: a valid login token is needed.",
    retryable: false,
  },
  banned: {
    status: Status.Forbidden,
    message: "You are banned from this room.",
    retryable: false,
  },
  // Also the answer to a wrong, used up, revoked or expired invite code:
  // the same words, so that no answer tells a guessed code from no code.
  invite_only: {
    status: Status.Forbidden,
    message: "This room is invite-only: ask a moderator for an invite.",
    retryable: false,
  },
  invite_rate: {
    status: Status.TooManyRequests,
    message: "Too many invite codes tried from your address: try again later.",
    retryable: true,
  },
} as const satisfies Record<string, Refusal>;

/** A refusal's name. */
export type RefusalReason = keyof typeof REFUSALS;

/**
 * Whether a refused upgrade's HTTP status may succeed on a later try: what
 * a client can know when all it sees is the status (browsers and Deno's
 * `WebSocket` do not show the body). Unknown statuses are not retried.
 */
export function retryableStatus(status: number): boolean {
  return Object.values(REFUSALS as Record<string, Refusal>).some((refusal) =>
    refusal.status === status && refusal.retryable
  );
}

/**
 * What the page's script needs of this contract, injected by main.ts as
 * JSON into the page (so the page holds no copy to drift).
 */
export const PAGE_CONSTANTS = {
  jsonProtocol: JSON_PROTOCOL,
  searchWordPattern: SEARCH_WORD.source,
  sessionProtocolPrefix: SESSION_PROTOCOL_PREFIX,
  sessionSecretPattern: SESSION_SECRET.source,
  authProtocolPrefix: AUTH_PROTOCOL_PREFIX,
  kickedCloseCode: CloseCode.Kicked,
  refusedCloseCode: CloseCode.Refused,
  refusalsByCloseProtocol: REFUSALS_BY_CLOSE_PROTOCOL,
  roomPattern: ROOM_PATTERN.source,
  roomRule: ROOM_RULE,
  nickPattern: NICK_PATTERN.source,
  maxNickChars: MAX_NICK_CHARS,
  typingIntervalMs: TYPING_INTERVAL_MS,
  editUsage: EDIT_USAGE,
  replyUsage: REPLY_USAGE,
  reactUsage: REACT_USAGE,
  maxReactionKeys: MAX_REACTION_KEYS,
  commands: COMMAND_NAMES,
  helpText: HELP_TEXT,
  maxUnreadCounted: MAX_UNREAD_COUNTED,
  moderationHelp: MODERATION_HELP,
  moderationUsage: MODERATION_USAGE,
  accessUsage: ACCESS_USAGE,
  inviteCodePattern: INVITE_CODE.source,
} as const;
