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

// ---------------------------------------------------------------------------
// Names and limits
// ---------------------------------------------------------------------------

/** The JSON subprotocol; without it a connection speaks plain text. */
export const JSON_PROTOCOL = "chat.v1.json";
/** The subprotocol prefix that carries a session secret (`chat.session.S`). */
export const SESSION_PROTOCOL_PREFIX = "chat.session.";
/** A session secret: 22–64 URL-safe base64 characters (128–384 bits). */
export const SESSION_SECRET = /^[A-Za-z0-9_-]{22,64}$/;
/** Longest room name, in characters. */
export const MAX_ROOM_CHARS = 32;
/** Longest nickname, in characters. */
export const MAX_NICK_CHARS = 24;
/** A person's typing notices reach the room at most this often. */
export const TYPING_INTERVAL_MS = 2000;
/**
 * Most events one `history` read returns: a page of 200 is a few screens,
 * and bounds what one rate-limit token can make the server read and send.
 */
export const MAX_HISTORY_PAGE = 200;
/** Events a `history` read returns when it names no `limit`. */
export const DEFAULT_HISTORY_PAGE = 50;

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
// Events and frames
// ---------------------------------------------------------------------------

/** A room event as kept in history and sent to JSON clients. */
export type RoomEvent =
  | { type: "message"; id: number; ts: number; from: string; text: string }
  | { type: "action"; id: number; ts: number; from: string; text: string }
  | { type: "join"; id: number; ts: number; nick: string }
  | { type: "leave"; id: number; ts: number; nick: string }
  | { type: "nick"; id: number; ts: number; from: string; to: string }
  | {
    type: "dm";
    id: number;
    ts: number;
    from: string;
    to: string;
    text: string;
  };

/** An event that is passed on and forgotten: no id, not in history. */
export interface TypingEvent {
  type: "typing";
  nick: string;
}

/** What a room's subscriber gets: its events, and typing notices. */
export type LiveEvent = RoomEvent | TypingEvent;

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
  maxMessageChars: number;
  /** Takes the nick back from a connection the server has not seen die. */
  token: string;
  /** The connection came with a session (see {@linkcode SESSION_PROTOCOL_PREFIX}). */
  session: boolean;
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
  | "unknown_command";

/** A refusal of one frame; the connection stays open. */
export interface ErrorFrame {
  type: "error";
  code: ErrorCode;
  message: string;
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

/** Every frame a JSON client may receive (batches are arrays of events). */
export type ServerFrame = Welcome | ErrorFrame | HistoryAnswer | LiveEvent;

/** What a JSON client may send. */
export type ClientFrame =
  | { type: "message"; text: string }
  | { type: "action"; text: string }
  | { type: "nick"; nick: string }
  | { type: "dm"; to: string; text: string }
  | { type: "typing" }
  | { type: "history"; before: number; limit?: number };

// ---------------------------------------------------------------------------
// Commands: what clients send, in either protocol
// ---------------------------------------------------------------------------

/** What a client asked for (a typed line or a JSON frame). */
export type Command =
  | { type: "message" | "action"; text: string }
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
  | { type: "invalid"; code: ErrorCode; message: string };

/** The slash commands, as `/help` lists them (server and terminal client). */
export const HELP_TEXT =
  `commands: /nick NAME (or /nick to see yours), /me ACTION, /msg NICK TEXT, /join ROOM, /who, /history [N] (or /more: older events), /help, /quit; //text sends /text`;

/** How `/history` is used, for a count that is not one. */
export const HISTORY_USAGE =
  `usage: /history [N] (N from 1 to ${MAX_HISTORY_PAGE}, default ${DEFAULT_HISTORY_PAGE})`;

/** How `/join` is used, for a room name that is not one. */
export const JOIN_USAGE = `usage: /join ROOM (${ROOM_RULE})`;

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
    case "help":
      return { type: "help" };
    default:
      return {
        type: "invalid",
        code: "unknown_command",
        message: `unknown command /${name} (try /help)`,
      };
  }
}

const JSON_FORMS =
  'expected {"type":"message"|"action","text":…}, {"type":"dm","to":…,"text":…}, {"type":"nick","nick":…}, {"type":"history","before":ID,"limit":N} or {"type":"typing"}';

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
      return { type: frame.type, text: frame.text };
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
  }
  return { type: "invalid", code: "bad_request", message: JSON_FORMS };
}

// ---------------------------------------------------------------------------
// Text from the network: what is kept, and what is printed
// ---------------------------------------------------------------------------

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
      return `${event.from}: ${oneLine(event.text)}`;
    case "action":
      return `* ${event.from} ${oneLine(event.text)}`;
    case "join":
      return ` .... ${event.nick} has joined.`;
    case "leave":
      return ` .... ${event.nick} has left.`;
    case "nick":
      return ` .... ${event.from} is now known as ${event.to}.`;
    case "dm":
      return `[dm] ${event.from} -> ${event.to}: ${oneLine(event.text)}`;
  }
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
} as const;

/**
 * Close codes after which reconnecting would only repeat the problem: a
 * normal close by the server (`/quit`, "replaced by a new connection"),
 * unsupported data, a policy violation (flooding) and a frame too big.
 */
export const FINAL_CLOSE_CODES: ReadonlySet<number> = new Set([
  CloseCode.Normal,
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
  sessionProtocolPrefix: SESSION_PROTOCOL_PREFIX,
  maxNickChars: MAX_NICK_CHARS,
  maxRoomChars: MAX_ROOM_CHARS,
  typingIntervalMs: TYPING_INTERVAL_MS,
  finalCloseCodes: [...FINAL_CLOSE_CODES],
  retryableStatuses: [
    ...new Set(
      Object.values(REFUSALS as Record<string, Refusal>)
        .filter((refusal) => refusal.retryable)
        .map((refusal) => refusal.status),
    ),
  ],
  helpText: HELP_TEXT,
} as const;
