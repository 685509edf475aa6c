/**
 * The terminal client of deno-chat: `deno task client [URL]`.
 *
 * It speaks the JSON protocol (`chat.v1.json`, see README.md "Protocols"),
 * renders events the way the plain-text protocol does (`ada: hi`,
 * `* ada waves`, ` .... ada has joined.`), and reconnects with resume when
 * the connection drops, so nothing is lost or shown twice.
 *
 * - On a terminal it draws a prompt that incoming lines do not break, colours
 *   nicks (unless `NO_COLOR` is set) and prefixes lines with the time.
 * - With pipes it prints one line per event and reads one line per input, so
 *   scripts and tests can drive it.
 * - Messages and actions show their id on a terminal (`#43 ada: hi`; in
 *   pipes with `--ids`), so `/reply 43 text` can answer one; a reply shows
 *   what it answers as the plain-text protocol does
 *   (`ada: ↪ bob: "hi" yes`).
 * - Edits are shown as `* ada edited: text` (`* ada edited #43: text` with
 *   ids); `/edit 43 text` edits message 43 of yours, `/edit text` the last
 *   message of yours the room echoed.
 * - `/react 43 👍` reacts to message 43 (again: takes it back), `/react 👍`
 *   to the last message shown. Reactions come live as
 *   `* cy reacted 👍 to #43 (👍 2)`; the history's are shown under their
 *   message (`   👍 2 (you, cy)`), and a resume says which changed while
 *   away (` .... #43 now: 👍 3 (you +2)`).
 * - Private rooms: an invite link (`http://HOST:8080/#room&invite=CODE`) is
 *   a URL like any other; a room that will not let you in says why
 *   (invite-only, banned), and a refused `/join` goes back to the room
 *   left. Moderators' `/private`, `/invite`, `/uninvite` and `/invites`
 *   are answered in system lines (`/invite link` with the link's URL).
 * - It marks what it has shown as read (a `read` of the newest event, at
 *   most every {@linkcode READ_INTERVAL_MS}), so the person's other tabs and
 *   devices know; `/rooms` lists their rooms with what is unread there;
 *   a mention of them (or a DM to them) rings the terminal's bell, and in a
 *   pipe prints ` .... you were mentioned in ROOM (1 mention unread)`.
 * - Nothing a peer sends reaches the terminal as a control or escape
 *   sequence: see {@linkcode printable} (protocol.ts).
 *
 * The pure pieces ({@linkcode printable} (protocol.ts), {@linkcode render},
 * {@linkcode parseInput}, {@linkcode connectUrl}, {@linkcode backoffDelay},
 * {@linkcode LineEditor}, …) are exported for the unit tests.
 *
 * @module
 */

import { parseArgs } from "node:util";
import {
  AUTH_PROTOCOL_PREFIX,
  checkMessage,
  checkNick,
  checkReactionKey,
  type ClientFrame,
  CloseCode,
  countText,
  type ErrorFrame,
  FINAL_CLOSE_CODES,
  HELP_TEXT,
  type HistoryAnswer,
  type InviteFrame,
  inviteText,
  isRefusal,
  JOIN_USAGE,
  JSON_PROTOCOL,
  type ModeratedFrame,
  MODERATION_HELP,
  parseCommand,
  printable,
  type ReactEvent,
  type Reaction,
  type ReadNotice,
  REFUSALS_BY_CLOSE_PROTOCOL,
  renderText,
  type ReplyQuote,
  retryableStatus,
  ROOM_RULE,
  type RoomCounts,
  type RoomEvent,
  roomName,
  type RoomsAnswer,
  roomsText,
  type SearchResults,
  SESSION_PROTOCOL_PREFIX,
  type UnreadNotice,
  type Welcome,
} from "../wire/protocol.ts";

// ---------------------------------------------------------------------------
// Constants
// ---------------------------------------------------------------------------

/** Where the client connects when no URL is given (the lobby). */
export const DEFAULT_URL = "ws://localhost:12345/";
/** First reconnect delay; each failed attempt doubles it. */
export const BACKOFF_MIN_MS = 500;
/** Longest reconnect delay. */
export const BACKOFF_MAX_MS = 10_000;
/** Attempts after the first when the client has never been connected. */
export const DEFAULT_RETRIES = 5;
/** How `/edit` is used here: the server's form, or the text alone. */
export const EDIT_LAST_USAGE =
  "usage: /edit [ID] TEXT (ID: your message; without it, your last one)";
/** How `/react` is used here: the server's form, or the emoji alone. */
export const REACT_LAST_USAGE =
  "usage: /react [ID] EMOJI (an emoji or :short_name:; ID: the message; without it, the last one shown; again to take it back)";
/**
 * What the client's own forms of the commands do, after the server's
 * {@linkcode HELP_TEXT} in `/help` and `--help`.
 */
export const CLIENT_HELP_TEXT =
  "/edit TEXT (no ID) edits your last message; /react EMOJI (no ID) reacts to the last message shown, yours too";
/**
 * How often at most the client tells the server what it has shown (a
 * `read` of the newest event), in ms: a busy room costs a frame a second,
 * not one per message.
 * @default {1000}
 */
export const READ_INTERVAL_MS = 1000;
/**
 * Most nicks named for one reaction under a message; the others are
 * counted (`and 4 more`), so that a popular message keeps a short line.
 * @default {5}
 */
export const REACTION_NICKS_SHOWN = 5;

const USAGE = `deno-chat terminal client.

Usage: deno task client [URL] [options]
       deno run --allow-net chat_client.ts [URL] [options]

  URL            the chat server and room, e.g. ws://localhost:12345/rust-fans
                 (default ${DEFAULT_URL}, the lobby; wss:// for TLS);
                 the page's URL (http://localhost:8080/#rust-fans) works too,
                 and so does an invite link (…/#rust-fans&invite=CODE)

Options:
  --nick NAME    ask for this nickname (also ?nick=NAME in the URL)
  --token JWT    sign in with a login token from the app (sent as the
                 subprotocol chat.auth.JWT; your name is the token's)
  --retries N    attempts after the first when the first connection fails
                 (default ${DEFAULT_RETRIES}); once connected it retries forever
  --ids          show message ids (#43) in pipes too, as on a terminal:
                 /reply 43 TEXT answers message 43
  -h, --help     show this help

Type a line to send it. ${HELP_TEXT}.
${CLIENT_HELP_TEXT}.
Ctrl-D (or the end of stdin) and Ctrl-C quit.

Nicks are coloured when stdout is a terminal and NO_COLOR is not set.`;

// ---------------------------------------------------------------------------
// Protocol types
// ---------------------------------------------------------------------------

/**
 * A room event as the server sends it. A type-only import: nothing of
 * main.ts is loaded.
 */
export type ChatEvent = RoomEvent;

export type { ErrorFrame, Welcome };

/** What the client sends. */
export type OutFrame = ClientFrame;

// ---------------------------------------------------------------------------
// Rendering
// ---------------------------------------------------------------------------

/**
 * How lines are dressed: colours, a time prefix and message ids (all for
 * terminals; a pipe gets the plain-text protocol's lines).
 */
export interface RenderStyle {
  colour: boolean;
  time: boolean;
  /**
   * `#43 ` before a message or action, and after `edited` (the message
   * edited): the id that `/reply` and `/edit` take.
   */
  ids?: boolean;
}

/** No colours, no time: what pipes get. */
export const PLAIN: RenderStyle = { colour: false, time: false };

/** ANSI foreground colours for nicks (no black, white or grey). */
const NICK_COLOURS = [31, 32, 33, 34, 35, 36, 91, 92, 93, 94, 95, 96];

/**
 * The ANSI colour of a nick: the same for the same nick in every run and
 * on every machine (FNV-1a of its code points, lower-cased so that `Ada`
 * and `ada` look alike too; the server tells nicks apart by a stricter key).
 */
export function nickColour(nick: string): number {
  let hash = 0x811c9dc5;
  for (const char of nick.toLowerCase()) {
    hash ^= char.codePointAt(0)!;
    hash = Math.imul(hash, 0x01000193) >>> 0;
  }
  return NICK_COLOURS[hash % NICK_COLOURS.length];
}

function nickText(nick: unknown, style: RenderStyle): string {
  const clean = printable(String(nick ?? "?"));
  return style.colour ? `\x1b[${nickColour(clean)}m${clean}\x1b[39m` : clean;
}

function clock(ts: number | undefined, style: RenderStyle): string {
  if (!style.time) return "";
  const date = new Date(typeof ts === "number" ? ts : Date.now());
  const hhmm = `${String(date.getHours()).padStart(2, "0")}:${
    String(date.getMinutes()).padStart(2, "0")
  }`;
  return style.colour ? `\x1b[2m${hhmm}\x1b[22m ` : `${hhmm} `;
}

/** `#ID `, dim with colours. */
function refText(id: unknown, style: RenderStyle): string {
  const ref = `#${printable(String(id ?? "?"))}`;
  return style.colour ? `\x1b[2m${ref}\x1b[22m` : ref;
}

/** `#ID ` when ids are shown (dim with colours), else nothing. */
function idText(id: unknown, style: RenderStyle): string {
  if (!style.ids || typeof id !== "number") return "";
  return `${refText(id, style)} `;
}

/**
 * What a reply answers, before its text: `↪ bob: "the start of it" `, as
 * the plain-text protocol's `renderText` (protocol.ts) puts it; nothing
 * for a message that is no reply.
 */
function quoteText(quote: unknown, style: RenderStyle): string {
  if (typeof quote !== "object" || quote === null) return "";
  const { from, text } = quote as Partial<ReplyQuote>;
  return `↪ ${nickText(from, style)}: "${printable(String(text ?? ""))}" `;
}

/** A system line (` .... TEXT`); `text` must already be safe to print. */
export function systemLine(
  text: string,
  style: RenderStyle = PLAIN,
  ts?: number,
): string {
  return `${clock(ts, style)} .... ${text}`;
}

/**
 * One event as one line, as the plain-text protocol renders it (`nick: text`,
 * `* nick action`, ` .... nick has joined.`, `[dm] ada -> bob: hi`, a reply
 * `ada: ↪ bob: "hi" yes`), with the time and a message's id when `style`
 * asks. A reaction notice is the plain-text line with the key's count
 * after it (`* cy reacted 👍 to #43 (👍 2)`): its `#ID` is always shown, as
 * it names no message otherwise. Every field from the network goes through
 * {@linkcode printable} (protocol.ts).
 */
export function render(
  event: ChatEvent | ReactEvent | ErrorFrame,
  style: RenderStyle = PLAIN,
): string {
  const ts = "ts" in event ? event.ts : undefined;
  const time = clock(ts, style);
  const text = (value: unknown) => printable(String(value ?? ""));
  switch (event.type) {
    case "message":
      return `${time}${idText(event.id, style)}${
        nickText(event.from, style)
      }: ${quoteText(event.replyTo, style)}${text(event.text)}`;
    case "action":
      return `${time}${idText(event.id, style)}* ${
        nickText(event.from, style)
      } ${quoteText(event.replyTo, style)}${text(event.text)}`;
    case "dm":
      return `${time}[dm] ${nickText(event.from, style)} -> ${
        nickText(event.to, style)
      }: ${text(event.text)}`;
    case "join":
      return systemLine(
        `${nickText(event.nick, style)} has joined.`,
        style,
        ts,
      );
    case "leave":
      return systemLine(`${nickText(event.nick, style)} has left.`, style, ts);
    case "nick":
      return systemLine(
        `${nickText(event.from, style)} is now known as ${
          nickText(event.to, style)
        }.`,
        style,
        ts,
      );
    case "error":
      return systemLine(`error: ${text(event.message)}`, style);
    case "edit":
      return `${time}* ${nickText(event.from, style)} edited${
        style.ids ? ` ${idText(event.target, style).trimEnd()}` : ""
      }: ${text(event.text)}`;
    case "react": {
      const key = text(event.key);
      return `${time}* ${nickText(event.from, style)} ${
        event.on ? `reacted ${key} to` : `took back ${key} from`
      } ${refText(event.target, style)} (${key} ${text(event.count)})`;
    }
    case "kick":
    case "topic":
    case "slow":
    case "delete":
    case "private":
      // The server's own plain-text line, made printable.
      return systemLine(
        text(renderText(event).replace(/^ \.\.\.\. /, "")),
        style,
        ts,
      );
  }
}

/**
 * The answer to a private-room command (`/invite`, `/invite link`,
 * `/uninvite`, `/invites`), to the moderator who gave it, as a system line:
 * the plain-text protocol's words, printable (an invite link's URL whole,
 * to copy).
 */
export function inviteLine(
  frame: InviteFrame,
  style: RenderStyle = PLAIN,
): string {
  let text: string;
  try {
    text = printable(inviteText(frame));
  } catch {
    // A field the words need is not what it should be (`until`, a list).
    text = "the server's answer could not be read";
  }
  return systemLine(text, style);
}

/** What a search looked through, as its last line says it. */
export const SCOPE_WORDS: Record<SearchResults["scope"], string> = {
  all: "in everything this room keeps",
  window:
    "in the recent messages this server keeps (older ones are not searched)",
};

/**
 * When a search result was said, in full (`2026-12-07 09:05`, local time):
 * a result may be from any day, so the date is part of it.
 */
export function resultTime(ts: unknown): string {
  if (typeof ts !== "number" || !Number.isFinite(ts)) return "?";
  const date = new Date(ts);
  const two = (n: number) => String(n).padStart(2, "0");
  return `${date.getFullYear()}-${two(date.getMonth() + 1)}-${
    two(date.getDate())
  } ${two(date.getHours())}:${two(date.getMinutes())}`;
}

/**
 * The answer to `/search` as lines: each result with its id (for `/reply`,
 * `/react`) and its date and time, newest first, then how many, what was
 * searched, and the command that reads further back when there is more.
 */
export function searchLines(
  answer: SearchResults,
  style: RenderStyle = PLAIN,
): string[] {
  const events = Array.isArray(answer.events) ? answer.events : [];
  const plain = { ...style, time: false, ids: false };
  const lines = events.map((event) =>
    systemLine(
      `${refText(event?.id, style)} ${resultTime(event?.ts)} ${
        render(event as ChatEvent, plain)
      }`,
      style,
    )
  );
  const q = printable(String(answer.q ?? ""));
  const found = events.length === 0
    ? `nothing found for "${q}"`
    : `${events.length} found for "${q}", newest first,`;
  const scope = SCOPE_WORDS[answer.scope] ?? SCOPE_WORDS.window;
  const before = answer.more === true && Number.isSafeInteger(answer.before)
    ? ` Older: /search ${
      q.replace(/(^|\s)before:\S*/gi, "").trim()
    } before:${answer.before}`
    : "";
  lines.push(systemLine(`${found} ${scope}.${before}`, style));
  return lines;
}

/**
 * Why the server would not let this person into the room, from a
 * {@linkcode CloseCode.Refused} close's reason (`withCode`: an invite code
 * was brought, and did not admit).
 */
export function refusalText(reason: string, withCode: boolean): string {
  switch (reason) {
    case "invite_only":
      return withCode
        ? "this room is invite-only, and the invite link admits nobody now (used up, revoked or expired): ask a moderator for a new one"
        : "this room is invite-only: ask a moderator for an invite (/invite NICK) or an invite link";
    case "banned":
      return "you are banned from this room";
    default:
      return `refused (${printable(reason)})`;
  }
}

/** Width of the time prefix (`09:05 `) when lines have one. */
const CLOCK_WIDTH = 6;

/**
 * Who reacted with one key: `you` first when the reader is one of them
 * (the nick they have now named), then the others as they were named, at
 * most {@linkcode REACTION_NICKS_SHOWN} of them.
 */
function reactorsText(
  reaction: Partial<Reaction>,
  you: string | undefined,
  style: RenderStyle,
): string {
  const nicks = Array.isArray(reaction.nicks) ? reaction.nicks.map(String) : [];
  const me = reaction.me === true;
  const mine = me && you !== undefined ? nicks.indexOf(you) : -1;
  const names = mine >= 0 || (me && nicks.length === 0)
    ? [
      "you",
      ...nicks.filter((_, i) => i !== mine).map((n) => nickText(n, style)),
    ]
    : nicks.map((n) => nickText(n, style));
  // The server names the first few (MAX_REACTION_NICKS); `count` is all.
  const all = Math.max(names.length, Number(reaction.count) || 0);
  const more = all - Math.min(names.length, REACTION_NICKS_SHOWN);
  // Reacted under a nick given up since: which of them is not known.
  const renamed = me && mine < 0 && nicks.length > 0 ? "; one is you" : "";
  return `${names.slice(0, REACTION_NICKS_SHOWN).join(", ")}${
    more > 0 ? ` and ${more} more` : ""
  }${renamed}`;
}

/**
 * A message's reactions, on the line under it (a welcome's history or a
 * history page): `   👍 2 (ada, bob) 🎉 1 (you)`, indented past the time
 * when lines have one; undefined when it has none. `you` is the reader's
 * nick, shown as `you` where `me` says the reader is one of them.
 */
export function reactionsLine(
  reactions: unknown,
  you: string | undefined,
  style: RenderStyle = PLAIN,
): string | undefined {
  if (!Array.isArray(reactions) || reactions.length === 0) return undefined;
  const items = reactions.map((reaction: Partial<Reaction>) =>
    `${printable(String(reaction.key ?? "?"))} ${
      printable(String(reaction.count ?? 0))
    } (${reactorsText(reaction, you, style)})`
  );
  return `${" ".repeat(style.time ? CLOCK_WIDTH : 0)}   ${items.join(" ")}`;
}

/** One key's reactions as the client keeps them: no nicks. */
export type ReactionCount = Pick<Reaction, "key" | "count" | "me">;

/**
 * A message's reactions in short, as a resume's changes are shown
 * (`👍 2 (you +1) 🎉 1`; `no reactions` when none are left).
 */
export function reactionsSummary(reactions: readonly ReactionCount[]): string {
  if (reactions.length === 0) return "no reactions";
  return reactions.map(({ key, count, me }) =>
    `${printable(key)} ${count}${
      me ? (count > 1 ? ` (you +${count - 1})` : " (you)") : ""
    }`
  ).join(" ");
}

/** The well-formed reactions of what the network sent, without nicks. */
function reactionCounts(reactions: unknown): ReactionCount[] {
  if (!Array.isArray(reactions)) return [];
  return reactions.filter((reaction) =>
    typeof reaction?.key === "string" && Number.isSafeInteger(reaction.count) &&
    reaction.count > 0
  ).map(({ key, count, me }) => ({ key, count, me: me === true }));
}

/** The users list after `event` (joins, leaves and renames; others keep it). */
export function updateUsers(
  users: readonly string[],
  event: ChatEvent,
): string[] {
  const same = (a: string) => (b: string) =>
    a.toLowerCase() === b.toLowerCase();
  switch (event.type) {
    case "join":
      return users.some(same(event.nick)) ? [...users] : [...users, event.nick];
    case "leave":
      return users.filter((nick) => !same(event.nick)(nick));
    case "nick":
      return users.map((nick) => same(event.from)(nick) ? event.to : nick);
    default:
      return [...users];
  }
}

// ---------------------------------------------------------------------------
// Input: what a typed line means
// ---------------------------------------------------------------------------

/** A typed line, parsed. */
export type Input =
  | { kind: "send"; frame: OutFrame }
  /** `/edit TEXT`: the last message of mine the room echoed gets `text`. */
  | { kind: "editLast"; text: string }
  /** `/react EMOJI`: a reaction to the last message shown (a toggle). */
  | { kind: "reactLast"; key: string }
  | { kind: "join"; room: string }
  | { kind: "who" }
  /** `/more` or `/history N`: older events, before the oldest shown. */
  | { kind: "history"; limit: number }
  /** `/rooms`: the person's rooms with what is unread there. */
  | { kind: "rooms" }
  | { kind: "whoami" }
  | { kind: "help" }
  | { kind: "quit" }
  | { kind: "usage"; message: string }
  | { kind: "empty" };

/**
 * A typed line as a frame to send or a local command. `//text` sends the
 * message `/text`; a blank line is nothing; a command's mistakes are
 * `usage` (shown locally as `error: …`, nothing sent).
 */
export function parseInput(line: string): Input {
  const trimmed = line.trim();
  if (trimmed === "") return { kind: "empty" };
  // `/edit TEXT`: no id (one would be a number, alone or before the text).
  const edit = /^\/edit(?:\s+([\s\S]*))?$/i.exec(trimmed);
  const editText = edit?.[1]?.trim() ?? "";
  if (edit && !/^#?\d+(?:\s|$)/.test(editText)) {
    return editText === ""
      ? { kind: "usage", message: EDIT_LAST_USAGE }
      : { kind: "editLast", text: editText };
  }
  // `/react EMOJI`: no id, as for /edit (a keycap such as 1️⃣ is no id).
  const react = /^\/react(?:\s+([\s\S]*))?$/i.exec(trimmed);
  const reactArg = react?.[1]?.trim() ?? "";
  if (react && !/^#?\d+(?:\s|$)/.test(reactArg)) {
    if (!/^\S+$/.test(reactArg)) {
      return { kind: "usage", message: REACT_LAST_USAGE };
    }
    // Checked here, so a bad key is explained before anything is sent.
    const key = checkReactionKey(reactArg);
    return isRefusal(key)
      ? { kind: "usage", message: key.message }
      : { kind: "reactLast", key };
  }
  // `/reply #43 text`, `/edit #43 text`, `/react #43 👍`: the id as the
  // client shows it.
  const command = parseCommand(
    trimmed.replace(/^(\/(?:reply|edit|react)\s+)#(?=\d)/i, "$1"),
  );
  switch (command.type) {
    case "message":
    case "action":
    case "dm":
    case "edit":
      return { kind: "send", frame: command };
    case "react": {
      const key = checkReactionKey(command.key);
      if (isRefusal(key)) return { kind: "usage", message: key.message };
      return { kind: "send", frame: command };
    }
    case "nick": {
      if (command.nick === "") return { kind: "whoami" };
      // Checked here too, so a bad name is explained before it is sent.
      const nick = checkNick(command.nick);
      if (isRefusal(nick)) return { kind: "usage", message: nick.message };
      return { kind: "send", frame: command };
    }
    case "join": {
      const room = roomName(command.room);
      return room
        ? { kind: "join", room }
        : { kind: "usage", message: JOIN_USAGE };
    }
    case "who":
    case "help":
    case "quit":
    case "rooms":
      return { kind: command.type };
    case "history":
      return { kind: "history", limit: command.limit };
    case "search":
      // The text as typed: the server reads `from:` and `before:` in it.
      return { kind: "send", frame: { type: "search", q: command.q } };
    case "typing":
    case "read":
      return { kind: "empty" }; // not typed commands
    case "kick":
    case "ban":
    case "unban":
    case "mute":
    case "unmute":
    case "topic":
    case "slow":
    case "delete":
    case "private":
    case "invite":
    case "uninvite":
    case "invites":
      // Its JSON frame is the command itself; the server judges who may.
      return { kind: "send", frame: command };
    case "invalid":
      return {
        kind: "usage",
        message: edit
          ? EDIT_LAST_USAGE
          : react
          ? REACT_LAST_USAGE
          : printable(command.message),
      };
  }
}

// ---------------------------------------------------------------------------
// URLs and reconnecting
// ---------------------------------------------------------------------------

/**
 * The chat URL the user gave, as a `ws:`/`wss:` URL: `http(s):` is mapped to
 * `ws(s):` and a URL without a scheme gets `ws://`. The page's way of naming
 * a room (`http://HOST:8080/#rust-fans`) becomes the path. Throws on
 * anything else.
 */
export function parseChatUrl(input: string): URL {
  const withScheme = /^[a-z][a-z0-9+.-]*:\/\//i.test(input)
    ? input
    : `ws://${input}`;
  const url = new URL(withScheme);
  if (url.protocol === "http:") url.protocol = "ws:";
  if (url.protocol === "https:") url.protocol = "wss:";
  if (url.protocol !== "ws:" && url.protocol !== "wss:") {
    throw new TypeError(`not a ws:// or wss:// URL: ${input}`);
  }
  // `#ROOM`, or an invite link's `#ROOM&invite=CODE`.
  const [first, ...rest] = url.hash.slice(1).split("&");
  let hash = first;
  try {
    hash = decodeURIComponent(hash);
  } catch {
    // a malformed escape: kept, and no room
  }
  const room = roomName(hash);
  if (url.pathname === "/" && room) url.pathname = `/${room}`;
  // The code goes where the chat port looks for it: `?invite=CODE`, for
  // the room it names only.
  const invite = new URLSearchParams(rest.join("&")).get("invite");
  if (invite && room && url.pathname === `/${room}`) {
    url.searchParams.set("invite", invite);
  }
  url.hash = "";
  return url;
}

/** How long the page is given to answer when looking for its chat port. */
const PAGE_TIMEOUT_MS = 5000;

/**
 * When `url` reached deno-chat's page server rather than its chat: the chat
 * URL the page names (its `<meta name="chat-port">`, same host, same room),
 * or undefined when the page names none.
 */
export async function chatUrlFromPage(url: URL): Promise<URL | undefined> {
  const page = new URL(url);
  page.protocol = url.protocol === "wss:" ? "https:" : "http:";
  page.pathname = "/";
  page.search = "";
  try {
    const response = await fetch(page, {
      signal: AbortSignal.timeout(PAGE_TIMEOUT_MS),
    });
    const html = await response.text();
    const port = html.match(/<meta name="chat-port" content="(\d{1,5})">/)
      ?.[1];
    if (!port || Number(port) === 0 || Number(port) > 65535) return undefined;
    const chat = new URL(url);
    chat.port = port;
    return chat.port === url.port ? undefined : chat;
  } catch {
    return undefined; // not a page, or not one of ours
  }
}

/** What a reconnect presents so that the server sends exactly what was missed. */
export interface ResumeState {
  /** Id of the last event seen. */
  lastId: number;
  /** The room's epoch from the last welcome. */
  epoch: string;
  /** The last welcome's reconnect token (keeps the nick from a dead connection). */
  token?: string;
}

/**
 * The URL of one connection attempt: `base` (server and room) with
 * `nick=NICK`, and when resuming `since=LAST_ID&epoch=EPOCH&token=TOKEN`.
 * A resume never brings an invite code (`invite=`): the person was let in,
 * and is invited from then on, so the code would only spend a try.
 */
export function connectUrl(
  base: URL,
  nick?: string,
  resume?: ResumeState,
): string {
  const url = new URL(base);
  for (const key of ["nick", "since", "epoch", "token"]) {
    url.searchParams.delete(key);
  }
  if (nick) url.searchParams.set("nick", nick);
  if (resume) {
    url.searchParams.delete("invite");
    url.searchParams.set("since", String(resume.lastId));
    url.searchParams.set("epoch", resume.epoch);
    if (resume.token) url.searchParams.set("token", resume.token);
  }
  return url.href;
}

/** `base` with its path naming `room` (`/join`); an invite code stays behind. */
export function roomUrl(base: URL, room: string): URL {
  const url = new URL(base);
  url.pathname = `/${room}`;
  url.searchParams.delete("invite");
  return url;
}

/**
 * How long to wait before reconnect attempt `attempt` (0 for the first):
 * 0.5 s doubling up to 10 s, each with ±25 % jitter (never over the cap), so
 * clients of a restarted server do not all come back at once.
 */
export function backoffDelay(
  attempt: number,
  random: () => number = Math.random,
): number {
  const base = Math.min(BACKOFF_MAX_MS, BACKOFF_MIN_MS * 2 ** attempt);
  return Math.round(Math.min(BACKOFF_MAX_MS, base * (0.75 + random() / 2)));
}

/** Why a connection attempt failed, and whether retrying could help. */
export interface Failure {
  reason: string;
  permanent: boolean;
  /** An HTTP server answered, not the chat: it may be deno-chat's page. */
  web?: boolean;
}

/**
 * What the server's refusals mean, by status (README "Limits and
 * refusals"); whether one is worth retrying comes from protocol.ts.
 */
const REFUSAL_REASONS: Record<number, string> = {
  400: `bad room (a room is ${ROOM_RULE})`,
  403: "this origin may not connect",
  // The page server answers 200 for its page, 404 for a room's path.
  200: "a web page, not the chat: give the chat's port (12345 by default)",
  404: "not a chat server",
  426: "not a chat server",
  429: "too many new connections from this address",
  503: "the server is full (connections or rooms) or shutting down",
};

/**
 * Explains a WebSocket that failed to open, from the error Deno reported
 * (`Invalid status code: 400`, `tcp connect error`, `dns error`, …). A
 * TCP failure is retried with `Deno.connect` to learn its exact cause.
 */
export async function explainFailure(
  error: string,
  url: URL,
): Promise<Failure> {
  const status = error.match(/status code:? (\d{3})/i);
  if (status) {
    const code = Number(status[1]);
    const reason = REFUSAL_REASONS[code];
    return {
      reason: reason ? `${code} ${reason}` : `HTTP ${code}`,
      permanent: !retryableStatus(code),
      ...(code === 200 || code === 404 ? { web: true } : {}),
    };
  }
  if (/dns/i.test(error)) {
    return { reason: `cannot resolve ${url.hostname}`, permanent: false };
  }
  if (/tcp connect/i.test(error)) {
    try {
      const port = Number(url.port) || (url.protocol === "wss:" ? 443 : 80);
      const conn = await Deno.connect({ hostname: url.hostname, port });
      conn.close();
    } catch (cause) {
      const message = cause instanceof Error ? cause.message : String(cause);
      return {
        reason: message.replace(/ \(os error \d+\)$/, "").toLowerCase(),
        permanent: false,
      };
    }
  }
  return {
    reason: error.replace(/^NetworkError: /, "") || "connection failed",
    permanent: false,
  };
}

// ---------------------------------------------------------------------------
// The terminal: a prompt that incoming lines do not break
// ---------------------------------------------------------------------------

/** What a key press completed. */
export type EditorAction =
  | { type: "line"; line: string }
  | { type: "eof" }
  | { type: "interrupt" };

/** A key's escape sequence: CSI, SS3 (`ESC O x`) or Alt+key (`ESC x`). */
const KEY_SEQUENCE =
  // deno-lint-ignore no-control-regex -- matching escape sequences is the point
  /^\x1b(?:\[[\x30-\x3f]*[\x20-\x2f]*[\x40-\x7e]|O[\x40-\x7e]|[^[O])/;

/** Clear the whole current line and go to its start. */
const CLEAR_LINE = "\r\x1b[2K";

/**
 * A small line editor for a terminal in raw mode: it keeps what the user is
 * typing and draws the prompt, so an incoming line can be printed above it
 * ({@linkcode LineEditor.printAbove}). Keys: printable text, Enter,
 * Backspace, Delete, ←/→, Home/End (and Ctrl-A/E), ↑/↓ history, Ctrl-U/K/W,
 * Ctrl-C (interrupt) and Ctrl-D (end on an empty line). Other keys and
 * controls are ignored, so the input line never holds one.
 */
export class LineEditor {
  /** What has been typed, by code point. */
  #chars: string[] = [];
  #cursor = 0;
  #history: string[] = [];
  #browsing = 0;
  #pending = "";

  constructor(public prompt = "> ") {}

  /** The line being typed. */
  get text(): string {
    return this.#chars.join("");
  }

  /** Feeds what the terminal sent; returns the lines (and ends) it completed. */
  feed(input: string): EditorAction[] {
    const actions: EditorAction[] = [];
    const data = this.#pending + input;
    this.#pending = "";
    let i = 0;
    while (i < data.length) {
      const char = String.fromCodePoint(data.codePointAt(i)!);
      if (char === "\x1b") {
        const sequence = data.slice(i).match(KEY_SEQUENCE);
        if (!sequence) {
          // Incomplete (split across reads), or a lone Escape: keep it.
          this.#pending = data.slice(i);
          break;
        }
        this.#key(sequence[0]);
        i += sequence[0].length;
        continue;
      }
      i += char.length;
      if (char === "\r" || char === "\n") {
        if (char === "\r" && data[i] === "\n") i++;
        const line = this.text;
        if (line.trim() !== "") this.#history.push(line);
        this.#browsing = this.#history.length;
        this.#chars = [];
        this.#cursor = 0;
        actions.push({ type: "line", line });
      } else if (char === "\x03") {
        actions.push({ type: "interrupt" });
      } else if (char === "\x04") {
        if (this.#chars.length === 0) actions.push({ type: "eof" });
        else this.#chars.splice(this.#cursor, 1);
      } else {
        this.#key(char);
      }
    }
    return actions;
  }

  #key(key: string): void {
    switch (key) {
      case "\x7f":
      case "\x08":
        if (this.#cursor > 0) this.#chars.splice(--this.#cursor, 1);
        return;
      case "\x1b[3~":
        this.#chars.splice(this.#cursor, 1);
        return;
      case "\x1b[D":
      case "\x02":
        this.#cursor = Math.max(0, this.#cursor - 1);
        return;
      case "\x1b[C":
      case "\x06":
        this.#cursor = Math.min(this.#chars.length, this.#cursor + 1);
        return;
      case "\x1b[H":
      case "\x1bOH":
      case "\x1b[1~":
      case "\x1b[7~":
      case "\x01":
        this.#cursor = 0;
        return;
      case "\x1b[F":
      case "\x1bOF":
      case "\x1b[4~":
      case "\x1b[8~":
      case "\x05":
        this.#cursor = this.#chars.length;
        return;
      case "\x15": // Ctrl-U: delete to the start
        this.#chars.splice(0, this.#cursor);
        this.#cursor = 0;
        return;
      case "\x0b": // Ctrl-K: delete to the end
        this.#chars.splice(this.#cursor);
        return;
      case "\x17": { // Ctrl-W: delete the word before the cursor
        let start = this.#cursor;
        while (start > 0 && this.#chars[start - 1] === " ") start--;
        while (start > 0 && this.#chars[start - 1] !== " ") start--;
        this.#chars.splice(start, this.#cursor - start);
        this.#cursor = start;
        return;
      }
      case "\x1b[A":
      case "\x1b[B": {
        const step = key === "\x1b[A" ? -1 : 1;
        const next = this.#browsing + step;
        if (next < 0 || next > this.#history.length) return;
        this.#browsing = next;
        this.#chars = [...(this.#history[next] ?? "")];
        this.#cursor = this.#chars.length;
        return;
      }
    }
    if (key.length > 0 && !key.startsWith("\x1b") && printable(key) === key) {
      this.#chars.splice(this.#cursor++, 0, key);
    }
  }

  /** Output that redraws the prompt line, the cursor where the user left it. */
  redraw(): string {
    const back = this.#chars.length - this.#cursor;
    return `${CLEAR_LINE}${this.prompt}${this.text}${
      back > 0 ? `\x1b[${back}D` : ""
    }`;
  }

  /**
   * Output that prints `line` where the prompt was and redraws the prompt,
   * with what the user had typed, below it. `\r\n`: raw mode may not turn
   * `\n` into a new line at the start.
   */
  printAbove(line: string): string {
    return `${CLEAR_LINE}${line}\r\n${this.redraw()}`;
  }

  /** Output that leaves the prompt line empty (on exit). */
  clear(): string {
    return CLEAR_LINE;
  }
}

/** Where the client's lines go. */
export interface Screen {
  /** Prints one line (already safe to print). */
  print(line: string): void;
  /** Sets the prompt (a terminal shows it; a pipe does not). */
  setPrompt(prompt: string): void;
  /** Rings the terminal's bell. */
  bell(): void;
}

/** The terminal's bell. */
export const BELL = "\x07";

const encoder = new TextEncoder();

function writeAll(text: string): void {
  const data = encoder.encode(text);
  try {
    for (let done = 0; done < data.length;) {
      done += Deno.stdout.writeSync(data.subarray(done));
    }
  } catch {
    // stdout is gone (a closed pipe): nothing more can be shown.
  }
}

/** Lines to stdout, one per line; no prompt. */
class PipeScreen implements Screen {
  print(line: string): void {
    writeAll(line + "\n");
  }
  setPrompt(): void {}
  bell(): void {
    writeAll(BELL);
  }
}

/** Lines above a prompt that the user types into. */
class TerminalScreen implements Screen {
  constructor(readonly editor: LineEditor) {}
  print(line: string): void {
    writeAll(this.editor.printAbove(line));
  }
  setPrompt(prompt: string): void {
    this.editor.prompt = prompt;
    writeAll(this.editor.redraw());
  }
  bell(): void {
    writeAll(BELL);
  }
}

// ---------------------------------------------------------------------------
// Reading input: lines from a pipe, keys from a terminal
// ---------------------------------------------------------------------------

/** An async queue of typed lines; `end()` marks the end of input. */
class LineQueue implements AsyncIterable<string> {
  #lines: string[] = [];
  #ended = false;
  #wake?: () => void;

  push(line: string): void {
    this.#lines.push(line);
    this.#wake?.();
  }

  end(): void {
    this.#ended = true;
    this.#wake?.();
  }

  async *[Symbol.asyncIterator](): AsyncIterator<string> {
    for (;;) {
      if (this.#lines.length > 0) yield this.#lines.shift()!;
      else if (this.#ended) return;
      else await new Promise<void>((resolve) => this.#wake = resolve);
    }
  }
}

/** Reads lines from a pipe into `queue` (a last line without `\n` counts). */
async function readPipe(
  stream: ReadableStream<Uint8Array>,
  queue: LineQueue,
): Promise<void> {
  let buffer = "";
  // A TextDecoder rather than TextDecoderStream: its types differ between
  // Deno's and the DOM's lib, and the e2e tests check with both.
  const decoder = new TextDecoder();
  for await (const bytes of stream) {
    buffer += decoder.decode(bytes, { stream: true });
    let newline;
    while ((newline = buffer.indexOf("\n")) !== -1) {
      queue.push(buffer.slice(0, newline).replace(/\r$/, ""));
      buffer = buffer.slice(newline + 1);
    }
  }
  if (buffer !== "") queue.push(buffer);
  queue.end();
}

/** Reads keys from a terminal in raw mode into the editor and `queue`. */
async function readTerminal(
  editor: LineEditor,
  queue: LineQueue,
  interrupt: () => void,
): Promise<void> {
  const decoder = new TextDecoder();
  for await (const chunk of Deno.stdin.readable) {
    for (const action of editor.feed(decoder.decode(chunk, { stream: true }))) {
      if (action.type === "line") queue.push(action.line);
      else if (action.type === "eof") return queue.end();
      else return interrupt();
    }
    writeAll(editor.redraw());
  }
  queue.end();
}

// ---------------------------------------------------------------------------
// The connection: connect, welcome, events, reconnect with resume
// ---------------------------------------------------------------------------

/** How one connection attempt ended. */
type Outcome =
  | { opened: false; error: string }
  | { opened: true; welcomed: boolean; code: number; reason: string };

/** Everything the client needs to run. */
export interface ClientOptions {
  /** Server and room. */
  url: URL;
  /** The nick to ask for. */
  nick?: string;
  /** Attempts after the first when it has never been connected. */
  retries: number;
  /** A login token (see README "Identity and moderation"). */
  token?: string;
  screen: Screen;
  style: RenderStyle;
  /**
   * stdout is a terminal: a mention rings its bell (a mention in another
   * room says where too); else a line says it.
   */
  bell?: boolean;
  /** Where "cannot connect" goes (stderr). */
  fail: (message: string) => void;
}

/**
 * One chat session: connects, shows what arrives, sends what is typed, and
 * reconnects (resuming from the last event seen) until the user quits.
 */
export class ChatClient {
  #options: ClientOptions;
  #base: URL;
  #socket?: WebSocket;
  /** The last welcome's room state, updated by every event. */
  #room?: {
    name: string;
    epoch: string;
    lastId: number;
    /** The oldest event id shown: where `/more` reads back from. */
    oldest: number;
    token?: string;
    users: string[];
  };
  #you?: string;
  /**
   * The id of my last message or action that came back from the room
   * (`/edit TEXT` edits it); none after a rename, as the server lets edit
   * only what was sent under the nick held now.
   */
  #lastOwn?: number;
  /**
   * The id of the latest message or action shown, anyone's (`/react
   * EMOJI` reacts to it); none once it is deleted.
   */
  #lastShown?: number;
  /**
   * The reactions on the messages shown, as far as the client knows (the
   * history's, then the live notices): a resume's `reacted` is shown only
   * where it differs. Messages without any have no entry.
   */
  #reactions = new Map<number, ReactionCount[]>();
  /** The server's `--max-message-chars`, from the last welcome. */
  #maxMessageChars?: number;
  /** The person's rooms with what is unread there, as the server said. */
  #counts = new Map<string, RoomCounts>();
  /** `/rooms` asked, not yet answered. */
  #roomsAsked = 0;
  /** The welcome had `read`: the server keeps this person's markers. */
  #marks = false;
  /** The newest id told the server as read in this room (and epoch). */
  #readSent = 0;
  /** When the last `read` went. */
  #readAt = -Infinity;
  /** The next `read`, when one waits for {@linkcode READ_INTERVAL_MS}. */
  #readTimer?: ReturnType<typeof setTimeout>;
  #everConnected = false;
  /** A moderator here (the last welcome's `op`): `/help` lists their commands. */
  #op = false;
  /**
   * Where `/join` left from, until the room joined lets this person in:
   * refused at its door, the client goes back there.
   */
  #leftBase?: URL;
  /** The page's chat URL has been tried (it is followed once). */
  #followedPage = false;
  #quitting = false;
  #joining = false;
  #welcomed = false;
  #onWelcome: (() => void)[] = [];
  #wakeSleep?: () => void;
  /** A random session secret: every reconnect of this run is one person. */
  readonly #session = SESSION_PROTOCOL_PREFIX + randomSecret();

  constructor(options: ClientOptions) {
    this.#options = options;
    this.#base = new URL(options.url);
    const nick = options.nick ?? this.#base.searchParams.get("nick");
    this.#you = nick || undefined;
  }

  #print(line: string): void {
    this.#options.screen.print(line);
  }

  #system(text: string): void {
    this.#print(systemLine(text, this.#options.style));
  }

  /**
   * Connects and keeps connecting until the user quits (0) or the server
   * cannot be reached at all, or refuses for good (1).
   */
  async run(): Promise<number> {
    let attempt = 0;
    for (;;) {
      const resume = this.#room && {
        lastId: this.#room.lastId,
        epoch: this.#room.epoch,
        token: this.#room.token,
      };
      const url = connectUrl(this.#base, this.#you, resume);
      const outcome = await this.#connectOnce(url);
      if (this.#quitting) return 0;
      if (this.#joining) {
        this.#joining = false;
        attempt = 0;
        continue;
      }
      if (outcome.opened && outcome.code === CloseCode.Refused) {
        const why = refusalText(
          outcome.reason,
          this.#base.searchParams.has("invite"),
        );
        if (this.#goBack(why)) {
          attempt = 0;
          continue;
        }
        this.#options.fail(
          `cannot connect to ${printable(this.#base.href)}: ${why}`,
        );
        return 1;
      }
      if (!outcome.opened) {
        const failure = await explainFailure(outcome.error, this.#base);
        // `deno task client http://HOST:8080/` (the page's URL): the page
        // names the chat port, so go there rather than fail.
        const chat = failure.web && !this.#followedPage
          ? await chatUrlFromPage(this.#base)
          : undefined;
        if (this.#quitting) return 0;
        if (chat) {
          this.#followedPage = true;
          const page = new URL("/", chat);
          page.protocol = chat.protocol === "wss:" ? "https:" : "http:";
          page.port = this.#base.port;
          this.#system(
            `${
              printable(page.href)
            } is the web page; connecting to its chat at ${
              printable(chat.href)
            } instead.`,
          );
          this.#base = chat;
          attempt = 0;
          continue;
        }
        const target = printable(this.#base.href);
        if (failure.permanent && this.#goBack(failure.reason)) {
          attempt = 0;
          continue;
        }
        if (
          failure.permanent ||
          (!this.#everConnected && attempt >= this.#options.retries)
        ) {
          this.#options.fail(`cannot connect to ${target}: ${failure.reason}`);
          return 1;
        }
        this.#system(`cannot connect: ${failure.reason}`);
      } else {
        if (outcome.welcomed) attempt = 0;
        const reason = printable(outcome.reason);
        if (outcome.code === 1001) {
          this.#system("the server is restarting.");
        } else if (FINAL_CLOSE_CODES.has(outcome.code)) {
          this.#system(
            `disconnected by the server: ${
              reason || "closed"
            } (${outcome.code}).`,
          );
          return 1;
        } else {
          this.#system(
            `connection lost (${outcome.code || 1006}${
              reason ? `: ${reason}` : ""
            }).`,
          );
        }
      }
      const delay = backoffDelay(attempt++);
      const again = this.#everConnected ? "reconnecting" : "retrying";
      this.#system(`${again} in ${(delay / 1000).toFixed(1)} s`);
      await this.#sleep(delay);
      if (this.#quitting) return 0;
    }
  }

  /**
   * After a `/join` the room refused (`why`): says so and goes back to the
   * room left, if there is one to go back to.
   */
  #goBack(why: string): boolean {
    const left = this.#leftBase;
    if (!left) return false;
    this.#leftBase = undefined;
    this.#system(
      `error: cannot join ${
        printable(this.#base.pathname.slice(1) || "lobby")
      }: ${why}.`,
    );
    this.#base = left;
    return true;
  }

  /** One WebSocket, from connecting to closed. */
  #connectOnce(url: string): Promise<Outcome> {
    return new Promise((resolve) => {
      const socket = new WebSocket(url, [
        JSON_PROTOCOL,
        // A refusal at the door comes as a close with its reason (a
        // handshake's 403 would say only its status).
        REFUSALS_BY_CLOSE_PROTOCOL,
        this.#session,
        ...(this.#options.token
          ? [AUTH_PROTOCOL_PREFIX + this.#options.token]
          : []),
      ]);
      this.#socket = socket;
      this.#welcomed = false;
      let opened = false;
      let error = "";
      socket.onopen = () => opened = true;
      socket.onerror = (event) => {
        error = (event as ErrorEvent).message ?? "";
      };
      socket.onmessage = (event) => {
        if (typeof event.data === "string") this.#receive(event.data);
      };
      socket.onclose = (event) => {
        const welcomed = this.#welcomed;
        this.#socket = undefined;
        this.#welcomed = false;
        resolve(
          opened
            ? { opened, welcomed, code: event.code, reason: event.reason }
            : { opened, error },
        );
      };
    });
  }

  #sleep(ms: number): Promise<void> {
    return new Promise((resolve) => {
      const timer = setTimeout(done, ms);
      function done() {
        clearTimeout(timer);
        resolve();
      }
      this.#wakeSleep = done;
    });
  }

  #receive(data: string): void {
    let frame: unknown;
    try {
      frame = JSON.parse(data);
    } catch {
      return this.#system("error: the server sent a frame that is not JSON");
    }
    const items = Array.isArray(frame) ? frame : [frame];
    for (const item of items) {
      if (typeof item !== "object" || item === null) continue;
      if (item.type === "welcome") this.#welcome(item as Welcome);
      else if (item.type === "history") this.#older(item as HistoryAnswer);
      else if (item.type === "react") this.#reaction(item as ReactEvent);
      else if (item.type === "search_results") {
        const answer = item as SearchResults;
        for (const line of searchLines(answer, this.#options.style)) {
          this.#print(line);
        }
      } else if (item.type === "read" || item.type === "unread") {
        this.#counted(item as ReadNotice | UnreadNotice);
      } else if (item.type === "rooms") this.#rooms(item as RoomsAnswer);
      else if (item.type === "error") {
        this.#print(render(item as ErrorFrame, this.#options.style));
      } else if (
        ["invited", "invite_link", "uninvited", "invites"].includes(item.type)
      ) {
        this.#print(inviteLine(item as InviteFrame, this.#options.style));
      } else if (item.type === "moderated") {
        const done = item as ModeratedFrame;
        const what = { mute: "muted", unmute: "unmuted", unban: "unbanned" };
        this.#system(
          printable(
            `${done.nick} is ${what[done.action] ?? done.action}${
              done.minutes ? ` for ${done.minutes} min` : ""
            }.`,
          ),
        );
      } else this.#event(item as ChatEvent);
    }
  }

  #welcome(welcome: Welcome): void {
    const style = this.#options.style;
    const previous = this.#room;
    const resumed = previous !== undefined && previous.name === welcome.room;
    const history = Array.isArray(welcome.history) ? welcome.history : [];
    if (resumed) {
      this.#system("reconnected.");
      if (welcome.gap) {
        this.#system(
          "some history was missed while disconnected (the server restarted or too much happened).",
        );
      }
    }
    // On resume the history is what was missed; the epoch check keeps
    // anything already shown from being shown twice.
    const continued = resumed && previous.epoch === welcome.epoch;
    const seen = continued ? previous.lastId : -Infinity;
    // On a new arrival the history ends with our own join: the `you are`
    // line below says it (as the plain-text protocol does), after the past.
    const last = history.at(-1);
    const ownJoin = !resumed && last?.type === "join" &&
      last.nick === welcome.you;
    // A new arrival (a first connection, another room, a reset) has
    // sent nothing there yet: what its nick said before was someone else.
    if (!continued) {
      this.#lastOwn = undefined;
      this.#lastShown = undefined;
      this.#reactions.clear();
    }
    this.#you = welcome.you;
    this.#op = welcome.op === true;
    // In: a code brought is spent (its bringer is invited from now on), and
    // a /join refused from here has this room to come back to.
    this.#base.searchParams.delete("invite");
    this.#leftBase = undefined;
    // Reactions that changed while away, on messages shown before: one
    // short line each (the missed history below shows its own in full).
    if (continued && Array.isArray(welcome.reacted)) {
      const reacted = welcome.reacted.filter((entry) =>
        typeof entry?.id === "number"
      ).sort((a, b) => a.id - b.id);
      for (const { id, reactions } of reacted) {
        const now = reactionCounts(reactions);
        const summary = reactionsSummary(now);
        if (summary !== reactionsSummary(this.#reactions.get(id) ?? [])) {
          this.#system(`${refText(id, style)} now: ${summary}`);
        }
        this.#keepReactions(id, now);
      }
    }
    for (const event of ownJoin ? history.slice(0, -1) : history) {
      if (typeof event?.id === "number" && event.id > seen) {
        this.#show(event, true);
        if (continued) this.#track(event);
      }
    }
    this.#room = {
      name: welcome.room,
      epoch: welcome.epoch,
      lastId: Math.max(
        welcome.lastId,
        ...history.map((event) => Number(event?.id) || 0),
      ),
      oldest: resumed && previous.epoch === welcome.epoch
        ? previous.oldest
        : Number(history[0]?.id) || welcome.lastId + 1,
      token: welcome.token,
      users: Array.isArray(welcome.users) ? [...welcome.users] : [],
    };
    this.#maxMessageChars = Number.isSafeInteger(welcome.maxMessageChars)
      ? welcome.maxMessageChars
      : undefined;
    if (!resumed) {
      this.#system(
        `you are ${nickText(welcome.you, style)} in ${
          printable(String(welcome.room))
        }; here: ${this.#room.users.map((u) => nickText(u, style)).join(", ")}`,
      );
      // As the plain-text protocol says it (its welcome has no flag).
      if (welcome.private === true) this.#system("this room is invite-only.");
    }
    this.#options.screen.setPrompt(`${printable(String(welcome.room))}> `);
    this.#everConnected = true;
    this.#welcomed = true;
    if (Array.isArray(welcome.rooms)) this.#keepCounts(welcome.rooms);
    // What this room was read up to (by any tab or device of this person).
    if (!continued) this.#readSent = 0;
    // A server that keeps read markers says where this room was read to.
    this.#marks = Number.isSafeInteger(welcome.read);
    if (this.#marks) this.#readSent = Math.max(this.#readSent, welcome.read!);
    for (const wake of this.#onWelcome.splice(0)) wake();
    this.#markShown();
  }

  /**
   * Tells the server what has been shown: the newest event's id, at once
   * or (after one within {@linkcode READ_INTERVAL_MS}) when that is over.
   */
  #markShown(): void {
    const room = this.#room;
    if (!room || !this.#welcomed || room.lastId <= this.#readSent) return;
    if (!this.#marks || this.#readTimer !== undefined) return;
    const wait = this.#readAt + READ_INTERVAL_MS - Date.now();
    if (wait <= 0) return this.#sendRead();
    this.#readTimer = setTimeout(() => {
      this.#readTimer = undefined;
      this.#sendRead();
    }, wait);
  }

  #sendRead(): void {
    const room = this.#room;
    if (!room || !this.#welcomed || room.lastId <= this.#readSent) return;
    this.#readSent = room.lastId;
    this.#readAt = Date.now();
    this.#socket?.send(JSON.stringify({ type: "read", id: room.lastId }));
  }

  /** The person's rooms and counts as a welcome or a `rooms` answer says. */
  #keepCounts(rooms: unknown[]): void {
    this.#counts.clear();
    for (const entry of rooms) {
      const counts = countsOf(entry);
      if (counts) this.#counts.set(counts.room, counts);
    }
  }

  /**
   * A marker moved or a count changed: kept; a mention more than was
   * known rings (see {@linkcode ClientOptions.bell}).
   */
  #counted(notice: ReadNotice | UnreadNotice): void {
    const room = typeof notice.room === "string" ? notice.room : undefined;
    const known = room === undefined ? undefined : this.#counts.get(room);
    const counts = countsOf({
      room,
      read: notice.type === "read" ? notice.read : known?.read ?? 0,
      unread: notice.unread,
      mentions: notice.mentions,
    });
    if (!counts) return;
    this.#counts.set(counts.room, counts);
    if (counts.mentions > (known?.mentions ?? 0)) this.#mentioned(counts);
  }

  /** The person's rooms: kept, and shown when `/rooms` asked. */
  #rooms(answer: RoomsAnswer): void {
    if (!Array.isArray(answer.rooms)) return;
    this.#keepCounts(answer.rooms);
    if (this.#roomsAsked === 0) return;
    this.#roomsAsked--;
    this.#system(printable(roomsText([...this.#counts.values()])));
  }

  /** A mention: the bell on a terminal (and where, if elsewhere), else a line. */
  #mentioned(counts: RoomCounts): void {
    const line = `you were mentioned in ${printable(counts.room)} (${
      countText(counts.mentions)
    } ${counts.mentions === 1 ? "mention" : "mentions"} unread)`;
    if (!this.#options.bell) return this.#system(line);
    this.#options.screen.bell();
    if (counts.room !== this.#room?.name) this.#system(line);
  }

  /** Older events (the answer to `/more`), printed oldest first. */
  #older(answer: HistoryAnswer): void {
    const room = this.#room;
    if (!room || !Array.isArray(answer.events)) return;
    const events = answer.events.filter((event) =>
      typeof event?.id === "number" && event.id < room.oldest
    );
    if (events.length > 0) this.#system("earlier:");
    for (const event of events) this.#show(event, false);
    if (events.length > 0) room.oldest = events[0].id;
    if (!answer.more) {
      this.#system(`this is the beginning of ${printable(room.name)}.`);
    }
  }

  #event(event: ChatEvent): void {
    const room = this.#room;
    if (!room || typeof event.id !== "number") return; // typing, unknown
    if (event.id <= room.lastId) return; // already shown
    room.lastId = event.id;
    room.users = updateUsers(room.users, event);
    this.#track(event);
    this.#markShown();
    if (event.type === "nick" && event.from === this.#you) this.#you = event.to;
    if (
      [
        "message",
        "action",
        "join",
        "leave",
        "nick",
        "dm",
        "edit",
        "kick",
        "topic",
        "slow",
        "delete",
        "private",
      ].includes(event.type)
    ) {
      this.#show(event, true);
    }
    if (event.type === "delete") {
      this.#reactions.delete(event.deleted);
      if (event.deleted === this.#lastShown) this.#lastShown = undefined;
    }
  }

  /**
   * Prints an event, and a message's reactions under it; keeps what they
   * are. `latest`: nothing newer has been shown (not a `/more` page).
   */
  #show(event: ChatEvent, latest: boolean): void {
    const style = this.#options.style;
    this.#print(render(event, style));
    if (event.type !== "message" && event.type !== "action") return;
    if (latest) this.#lastShown = event.id;
    const line = reactionsLine(event.reactions, this.#you, style);
    if (line !== undefined) this.#print(line);
    this.#keepReactions(event.id, reactionCounts(event.reactions));
  }

  #keepReactions(id: number, reactions: ReactionCount[]): void {
    if (reactions.length > 0) this.#reactions.set(id, reactions);
    else this.#reactions.delete(id);
  }

  /** A live reaction notice: shown, and the count kept. */
  #reaction(notice: ReactEvent): void {
    if (!this.#room) return;
    const { target, key, count } = notice;
    if (
      typeof target !== "number" || typeof key !== "string" ||
      !Number.isSafeInteger(count)
    ) {
      return;
    }
    const mine = notice.from === this.#you;
    const kept = [...(this.#reactions.get(target) ?? [])];
    const index = kept.findIndex((reaction) => reaction.key === key);
    const me = mine ? notice.on === true : index >= 0 && kept[index].me;
    if (count <= 0) {
      if (index >= 0) kept.splice(index, 1);
    } else if (index >= 0) kept[index] = { key, count, me };
    else kept.push({ key, count, me });
    this.#keepReactions(target, kept);
    this.#print(render(notice, this.#options.style));
  }

  /** Keeps {@linkcode ChatClient.#lastOwn} up to date with `event`. */
  #track(event: ChatEvent): void {
    if (this.#you === undefined) return;
    if (
      (event.type === "message" || event.type === "action") &&
      event.from === this.#you
    ) {
      this.#lastOwn = event.id;
    } else if (event.type === "nick" && event.from === this.#you) {
      this.#lastOwn = undefined;
    } else if (event.type === "delete" && event.deleted === this.#lastOwn) {
      this.#lastOwn = undefined;
    }
  }

  /** Resolves true once connected and welcomed; false if quitting first. */
  #connected(quiet = false): Promise<boolean> {
    if (this.#quitting) return Promise.resolve(false);
    if (this.#welcomed) return Promise.resolve(true);
    if (!quiet) {
      this.#system(
        `not connected: will send when ${
          this.#everConnected ? "reconnected" : "connected"
        }.`,
      );
    }
    return new Promise((resolve) => {
      this.#onWelcome.push(() => resolve(!this.#quitting));
    });
  }

  /** Carries out one typed line. Resolves false when the user quit. */
  async handle(input: Input): Promise<boolean> {
    switch (input.kind) {
      case "empty":
        return true;
      case "usage":
        // Worded as the server's errors are, so every complaint looks alike.
        this.#system(`error: ${input.message}`);
        return true;
      case "help":
        this.#system(`${HELP_TEXT}; ${CLIENT_HELP_TEXT}`);
        if (this.#op) this.#system(MODERATION_HELP);
        return true;
      case "whoami":
        this.#system(
          this.#you
            ? `you are ${nickText(this.#you, this.#options.style)}.`
            : "not connected yet.",
        );
        return true;
      case "who": {
        const room = this.#room;
        this.#system(
          room
            ? `in ${printable(room.name)}: ${
              room.users.map((u) => nickText(u, this.#options.style)).join(", ")
            }`
            : "not connected yet.",
        );
        return true;
      }
      case "quit":
        await this.quit();
        return false;
      case "rooms":
        if (await this.#connected()) {
          this.#roomsAsked++;
          this.#socket?.send(JSON.stringify({ type: "rooms" }));
        }
        return !this.#quitting;
      case "history":
        if (await this.#connected()) {
          const before = this.#room?.oldest ?? 0;
          this.#socket?.send(
            JSON.stringify({ type: "history", before, limit: input.limit }),
          );
        }
        return !this.#quitting;
      case "join":
        if (this.#room?.name === input.room) {
          this.#system(`already in ${input.room}.`);
          return true;
        }
        // Kept until the new room lets this person in (see #goBack).
        if (this.#room) this.#leftBase = this.#base;
        this.#base = roomUrl(this.#base, input.room);
        this.#room = undefined; // a new room: no resume
        if (this.#socket) {
          this.#joining = true;
          this.#socket.close(1000, "joining another room");
        } else {
          this.#wakeSleep?.();
        }
        return true;
      case "editLast":
      case "reactLast":
      case "send": {
        if (!await this.#connected()) return !this.#quitting;
        if (input.kind === "editLast" && this.#lastOwn === undefined) {
          this.#system(
            "error: no message of yours here to edit yet (/edit ID TEXT edits one by its id)",
          );
          return true;
        }
        if (input.kind === "reactLast" && this.#lastShown === undefined) {
          this.#system(
            "error: no message shown here to react to (/react ID EMOJI reacts to one by its id)",
          );
          return true;
        }
        const frame: OutFrame = input.kind === "editLast"
          ? { type: "edit", id: this.#lastOwn!, text: input.text }
          : input.kind === "reactLast"
          ? { type: "react", id: this.#lastShown!, key: input.key }
          : input.frame;
        // The server's own check, with its limit: refused here the same way.
        const problem = this.#maxMessageChars !== undefined &&
          (frame.type === "message" || frame.type === "action" ||
            frame.type === "dm" || frame.type === "edit") &&
          checkMessage(frame.text, this.#maxMessageChars);
        if (isRefusal(problem)) {
          this.#system(`error: ${problem.message}`);
          return true;
        }
        this.#socket?.send(JSON.stringify(frame));
        return !this.#quitting;
      }
    }
  }

  /**
   * The end of input: quits, but not before the first connection has shown
   * the room (so `chat_client URL </dev/null` shows it, and a server that
   * cannot be reached still gets its exit code 1).
   */
  async endOfInput(): Promise<void> {
    if (!this.#everConnected) await this.#connected(true);
    await this.quit();
  }

  /** Closes the connection cleanly and resolves when it is closed. */
  async quit(): Promise<void> {
    this.#quitting = true;
    clearTimeout(this.#readTimer);
    this.#readTimer = undefined;
    this.#wakeSleep?.();
    for (const wake of this.#onWelcome.splice(0)) wake();
    const socket = this.#socket;
    if (!socket || socket.readyState === WebSocket.CLOSED) return;
    const closed = new Promise((resolve) =>
      socket.addEventListener("close", resolve, { once: true })
    );
    socket.close(1000, "bye");
    await closed;
  }
}

/** One of a person's rooms as the network sent it, if well formed. */
function countsOf(entry: unknown): RoomCounts | undefined {
  const { room, read, unread, mentions } = (entry ?? {}) as RoomCounts;
  const count = (n: unknown) => Number.isSafeInteger(n) && (n as number) >= 0;
  if (
    typeof room !== "string" || !count(read) || !count(unread) ||
    !count(mentions)
  ) {
    return undefined;
  }
  return { room, read, unread, mentions };
}

function randomSecret(): string {
  const bytes = crypto.getRandomValues(new Uint8Array(32));
  return btoa(String.fromCharCode(...bytes))
    .replaceAll("+", "-").replaceAll("/", "_").replace(/=+$/, "");
}

// ---------------------------------------------------------------------------
// Command line
// ---------------------------------------------------------------------------

/** The command line, parsed. */
export interface ClientArgs {
  url: URL;
  nick?: string;
  token?: string;
  retries: number;
  /** Show message ids in pipes too (a terminal always shows them). */
  ids: boolean;
  help: boolean;
}

/** Parses the command line; throws a `TypeError` with a message on misuse. */
export function parseClientArgs(args: string[]): ClientArgs {
  const { values, positionals } = parseArgs({
    args,
    options: {
      nick: { type: "string" },
      token: { type: "string" },
      retries: { type: "string" },
      ids: { type: "boolean" },
      help: { type: "boolean", short: "h" },
    },
    allowPositionals: true,
    strict: true,
  });
  if (positionals.length > 1) {
    throw new TypeError(`one URL at most, got ${positionals.length}`);
  }
  const retries = values.retries === undefined
    ? DEFAULT_RETRIES
    : Number(values.retries);
  if (!Number.isInteger(retries) || retries < 0) {
    throw new TypeError(
      `--retries takes a whole number, not ${values.retries}`,
    );
  }
  return {
    url: parseChatUrl(positionals[0] ?? DEFAULT_URL),
    nick: values.nick,
    token: values.token,
    retries,
    ids: values.ids ?? false,
    help: values.help ?? false,
  };
}

/** Runs the client; resolves with the exit code. */
export async function main(args: string[]): Promise<number> {
  let parsed: ClientArgs;
  try {
    parsed = parseClientArgs(args);
  } catch (error) {
    console.error(
      `chat_client: ${
        error instanceof Error ? error.message : error
      }\n\n${USAGE}`,
    );
    return 2;
  }
  if (parsed.help) {
    console.log(USAGE);
    return 0;
  }
  const tty = Deno.stdout.isTerminal();
  const interactive = tty && Deno.stdin.isTerminal();
  const style: RenderStyle = {
    colour: tty && !Deno.noColor,
    time: tty,
    ids: tty || parsed.ids,
  };
  const editor = new LineEditor("> ");
  const screen = interactive ? new TerminalScreen(editor) : new PipeScreen();
  const client = new ChatClient({
    url: parsed.url,
    nick: parsed.nick,
    token: parsed.token,
    retries: parsed.retries,
    screen,
    style,
    bell: tty,
    fail: (message) => {
      if (interactive) writeAll(editor.clear());
      console.error(`chat_client: ${message}`);
    },
  });

  const queue = new LineQueue();
  const interrupt = () => void client.quit();
  if (interactive) {
    Deno.stdin.setRaw(true);
    writeAll(editor.redraw());
    readTerminal(editor, queue, interrupt).catch(() => queue.end());
  } else {
    Deno.addSignalListener("SIGINT", interrupt);
    readPipe(Deno.stdin.readable, queue).catch(() => queue.end());
  }
  // Lines are carried out in order; a message typed while disconnected
  // waits for the reconnect. The end of input quits.
  (async () => {
    for await (const line of queue) {
      if (!await client.handle(parseInput(line))) return;
    }
    await client.endOfInput();
  })().catch(interrupt);
  try {
    // 0 only once the user quit and the socket is closed.
    return await client.run();
  } finally {
    if (interactive) {
      writeAll(editor.clear());
      Deno.stdin.setRaw(false);
    } else {
      Deno.removeSignalListener("SIGINT", interrupt);
    }
  }
}

if (import.meta.main) {
  // Deno.exit: a read from stdin may still be pending.
  Deno.exit(await main(Deno.args));
}
