/**
 * The HTTP API for the app behind the chat: `POST /api/METHOD` with a JSON
 * body, answered `{"result":…}` or `{"error":{"code":…,"message":…}}`, and
 * `GET /api/openapi.json`, made from the same table as the handlers
 * ({@linkcode API_METHODS}), so the two cannot drift.
 *
 * A side module: main.ts turns it on with `--api-key` and gives it an
 * {@linkcode ApiBackend} (the store and this process's connections); nothing
 * here keeps process state but the key's rate bucket, or imports main.ts.
 *
 * @module
 */

import {
  type AccessCommand,
  checkInviteHours,
  checkInviteUses,
  checkMessage,
  checkMinutes,
  checkNick,
  checkReactionKey,
  checkReason,
  checkTopic,
  DEFAULT_HISTORY_PAGE,
  DEFAULT_INVITE_HOURS,
  DEFAULT_INVITE_USES,
  FieldRefusal,
  isRefusal,
  MAX_HISTORY_PAGE,
  MAX_INVITE_HOURS,
  MAX_INVITE_USES,
  MAX_MINUTES,
  MAX_NICK_CHARS,
  MAX_REASON_CHARS,
  MAX_ROOM_CHARS,
  MAX_SHORT_NAME_CHARS,
  MAX_TOPIC_CHARS,
  MAX_USER_CHARS,
  type ModerationCommand,
  ROOM_RULE,
  type RoomEvent,
  roomName,
  type SearchScope,
} from "../wire/protocol.ts";
import {
  DEFAULT_SEARCH_LIMIT,
  MAX_SEARCH_CHARS,
  MAX_SEARCH_LIMIT,
  parseSearch,
  QueryProblem,
  SEARCH_RULE,
  type SearchQuery,
} from "../wire/search.ts";
import { sameSecret, StoreUnavailable } from "../stores/rooms.ts";
import { TokenBucket } from "./rate.ts";
import { parseUrl } from "./handshake.ts";
import { annotate, inSpan, ROOM_ATTRIBUTE } from "./telemetry.ts";

// ---------------------------------------------------------------------------
// Limits
// ---------------------------------------------------------------------------

/** Largest request body, in bytes; bigger gets 413. */
export const API_MAX_BODY_BYTES = 64 * 1024;
/** Shortest API key `--api-key` accepts. */
export const API_MIN_KEY_CHARS = 32;
/** How long an `idempotency_key` is remembered, in milliseconds. */
export const IDEMPOTENCY_TTL_MS = 5 * 60_000;
/** Longest `idempotency_key`, in characters. */
export const MAX_IDEMPOTENCY_KEY_CHARS = 128;
/** Most rooms one `broadcast` reaches. */
export const MAX_BROADCAST_ROOMS = 100;
/** Most commands in one `batch`. */
export const MAX_BATCH_COMMANDS = 100;

// ---------------------------------------------------------------------------
// What the API needs from the chat
// ---------------------------------------------------------------------------

/** One person in a room, as `presence` answers. */
export interface PresenceEntry {
  nick: string;
  /** The verified user id (the token's `sub`), when there is one. */
  user?: string;
  /** Their connections in the room (tabs, devices, processes). */
  connections: number;
  op: boolean;
}

/** This process, as `info` answers. */
export interface ProcessInfo {
  version: string;
  uptimeSeconds: number;
  connections: number;
  rooms: number;
  store: string;
  storeUp: boolean;
}

/** Who a `disconnect` is for. */
export interface DisconnectTarget {
  /** Only their connections in this room; absent: everywhere. */
  room?: string;
  /** A nick (with `room`). */
  nick?: string;
  /** A verified user id (the token's `sub`). */
  user?: string;
}

/** An error the API answers with: its code, status and message. */
export class ApiError extends Error {
  constructor(
    readonly status: number,
    readonly code: string,
    message: string,
    readonly field?: string,
  ) {
    super(message);
  }
}

/** What main.ts gives the API: the chat, on every process. */
export interface ApiBackend {
  /**
   * Appends a message to a room, as `from`: one with people in it, one the
   * store keeps while nobody is in it, or a new one where rooms are kept;
   * undefined when there is no such room (in memory: nobody is in it).
   */
  publish(room: string, from: string, text: string): Promise<
    RoomEvent | undefined
  >;
  /**
   * Runs `produce` once per `key` within `ttlMs` on every process; a repeat
   * gets the first one's answer.
   */
  once(
    key: string,
    ttlMs: number,
    produce: () => Promise<number>,
  ): Promise<number>;
  presence(room: string): Promise<PresenceEntry[]>;
  rooms(): Promise<{ room: string; members: number }[]>;
  info(): ProcessInfo;
  /** Undefined when there is no such room (as for `publish`, none made). */
  history(
    room: string,
    before: number | undefined,
    limit: number,
  ): Promise<{ events: RoomEvent[]; more: boolean } | undefined>;
  /**
   * The room's messages and actions that match (no private messages),
   * newest first, as a person's `search`; undefined when there is no such
   * room (as for `history`).
   */
  search(
    room: string,
    query: SearchQuery,
    limit: number,
  ): Promise<
    | {
      events: RoomEvent[];
      more: boolean;
      before?: number;
      scope: SearchScope;
    }
    | undefined
  >;
  /** Closes the target's connections; how many members it reached. */
  disconnect(target: DisconnectTarget, reason: string): Promise<number>;
  /** A moderation action as a moderator named `api` would give it. */
  moderate(room: string, command: ModerationCommand): Promise<unknown>;
  /**
   * A private-room command (`private`, `invite`, `uninvite`, `invites`) as
   * a moderator named `api` would give it: its answer's fields.
   */
  access(room: string, command: AccessCommand): Promise<unknown>;
  /**
   * Replaces the text of message `id`, which `from` posted, as its author
   * would (the store's `edit` within `--edit-window`): the edit event, or
   * an {@linkcode ApiError} saying why not.
   */
  edit(room: string, as: Speaker, id: number, text: string): Promise<
    RoomEvent
  >;
  /**
   * Adds or takes back (`on`; absent: toggles) the reaction `key` of `as`
   * to message `id`, as a person in the room would (the store's `react`):
   * the room's notice, or an {@linkcode ApiError} saying why not.
   */
  react(
    room: string,
    as: Speaker,
    id: number,
    key: string,
    on?: boolean,
  ): Promise<{ on: boolean; count: number }>;
}

/**
 * Whom an `edit` or `react` is done as: the app under a name (`from`), or
 * a verified user (`user`, their token's `sub`; `from` their name).
 */
export interface Speaker {
  from: string;
  user?: string;
}

/** How the API is set up (from main.ts's options). */
export interface ApiSettings {
  key: string;
  /** The name a `publish` without `from` is shown under. */
  name: string;
  maxMessageChars: number;
  /** Requests a second per key (a token bucket of one second's worth). */
  rate: number;
  log: (
    level: "info" | "warn",
    event: string,
    fields: Record<string, string | number | undefined>,
  ) => void;
  /** Counts a request by method and status (`chat_api_requests_total`). */
  count: (method: string, status: number) => void;
}

// ---------------------------------------------------------------------------
// Parameters: a small JSON Schema, checked here and published as OpenAPI
// ---------------------------------------------------------------------------

/**
 * The chat's own check of a parameter (protocol.ts's, the same for the
 * WebSocket): its refusal is the answer, in place of the schema's type and
 * bounds, which stay in the document to describe it. (A function: left out
 * of the document's JSON.)
 */
export type FieldCheck = (value: unknown) => unknown;

/** The part of JSON Schema the methods' parameters use. */
export type Schema =
  | {
    type: "string";
    description?: string;
    pattern?: string;
    maxLength?: number;
    minLength?: number;
    check?: FieldCheck;
  }
  | {
    type: "integer";
    description?: string;
    minimum?: number;
    maximum?: number;
    check?: FieldCheck;
  }
  | { type: "boolean"; description?: string }
  | {
    type: "array";
    description?: string;
    items: Schema;
    minItems?: number;
    maxItems?: number;
  }
  | {
    type: "object";
    description?: string;
    properties: Record<string, Schema>;
    required?: string[];
    additionalProperties?: false;
  };

/** Checks `value` against `schema`; the first problem, with its field. */
export function check(
  value: unknown,
  schema: Schema,
  field = "",
): ApiError | undefined {
  const bad = (message: string) =>
    new ApiError(400, "bad_field", `${field || "the body"} ${message}`, field);
  if ("check" in schema && schema.check) {
    const answer = schema.check(value);
    return isRefusal(answer) ? refusal(answer, field) : undefined;
  }
  switch (schema.type) {
    case "string":
      if (typeof value !== "string") return bad("must be a string");
      if (schema.minLength !== undefined && value.length < schema.minLength) {
        return bad(`must have at least ${schema.minLength} characters`);
      }
      if (schema.maxLength !== undefined && value.length > schema.maxLength) {
        return bad(`must have at most ${schema.maxLength} characters`);
      }
      if (schema.pattern && !new RegExp(schema.pattern, "u").test(value)) {
        return bad(`does not match ${schema.pattern}`);
      }
      return;
    case "integer":
      if (!Number.isSafeInteger(value)) return bad("must be a whole number");
      if (schema.minimum !== undefined && (value as number) < schema.minimum) {
        return bad(`must be at least ${schema.minimum}`);
      }
      if (schema.maximum !== undefined && (value as number) > schema.maximum) {
        return bad(`must be at most ${schema.maximum}`);
      }
      return;
    case "boolean":
      return typeof value === "boolean"
        ? undefined
        : bad("must be true or false");
    case "array": {
      if (!Array.isArray(value)) return bad("must be an array");
      if (schema.minItems !== undefined && value.length < schema.minItems) {
        return bad(`must have at least ${schema.minItems} items`);
      }
      if (schema.maxItems !== undefined && value.length > schema.maxItems) {
        return bad(`must have at most ${schema.maxItems} items`);
      }
      for (const [i, item] of value.entries()) {
        const problem = check(item, schema.items, `${field}[${i}]`);
        if (problem) return problem;
      }
      return;
    }
    case "object": {
      if (typeof value !== "object" || value === null || Array.isArray(value)) {
        return bad("must be an object");
      }
      const object = value as Record<string, unknown>;
      for (const name of schema.required ?? []) {
        if (!(name in object)) {
          return new ApiError(
            400,
            "missing_field",
            `${join(field, name)} is required`,
            join(field, name),
          );
        }
      }
      for (const [name, item] of Object.entries(object)) {
        const property = Object.hasOwn(schema.properties, name)
          ? schema.properties[name]
          : undefined;
        if (!property) {
          if (schema.additionalProperties !== false) continue;
          return new ApiError(
            400,
            "unknown_field",
            `${join(field, name)} is not a parameter here`,
            join(field, name),
          );
        }
        const problem = check(item, property, join(field, name));
        if (problem) return problem;
      }
      return;
    }
  }
}

function join(parent: string, name: string): string {
  return parent ? `${parent}.${name}` : name;
}

/** A field's refusal (protocol.ts) as the API answers it: 400, naming it. */
function refusal(refused: FieldRefusal, field: string): ApiError {
  return new ApiError(400, refused.code, refused.message, field);
}

const ROOM: Schema = {
  type: "string",
  description: `A room's name: ${ROOM_RULE}.`,
  pattern: "^[A-Za-z0-9_-]+$",
  maxLength: MAX_ROOM_CHARS,
};
const TEXT: Schema = {
  type: "string",
  description: "The message's text (at most `--max-message-chars`).",
};
const NICK: Schema = {
  type: "string",
  description: "A person's nick.",
  maxLength: MAX_NICK_CHARS,
  check: checkNick,
};
const REASON: Schema = {
  type: "string",
  description: "Why, for the log and the person.",
  maxLength: MAX_REASON_CHARS,
  check: checkReason,
};
const MINUTES: Schema = {
  type: "integer",
  description: "How long, in minutes (absent: until lifted).",
  minimum: 1,
  maximum: MAX_MINUTES,
  check: checkMinutes,
};
const FROM: Schema = {
  type: "string",
  description: "The name it is shown under (nick rules); default `--api-name`.",
  maxLength: MAX_NICK_CHARS,
  check: checkNick,
};
const USER_AS: Schema = {
  type: "string",
  description:
    "Acts for this verified user (their token's `sub`), shown as `from`, which is then their name and required.",
  minLength: 1,
  maxLength: 256,
};
const REACTION_KEY: Schema = {
  type: "string",
  description: "One emoji, or a `:short_name:`.",
  maxLength: MAX_SHORT_NAME_CHARS,
  check: checkReactionKey,
};
const TOPIC: Schema = {
  type: "string",
  description: 'The topic (`""` clears it).',
  maxLength: MAX_TOPIC_CHARS,
  check: checkTopic,
};
/** A search's text: parsed by wire/search.ts, which says what is wrong. */
const SEARCH_TEXT: Schema = {
  type: "string",
  description: `What to find: ${SEARCH_RULE}.`,
  minLength: 1,
  maxLength: MAX_SEARCH_CHARS,
  check: (value) =>
    typeof value !== "string"
      ? new FieldRefusal("bad_request", "q is the text to search for")
      : queryRefusal(parseSearch(value)),
};

/** A query's problem as a field's refusal (`bad_request`), else undefined. */
function queryRefusal(
  query: SearchQuery | QueryProblem,
): FieldRefusal | undefined {
  return query instanceof QueryProblem
    ? new FieldRefusal("bad_request", query.message)
    : undefined;
}

const IDEMPOTENCY_KEY: Schema = {
  type: "string",
  description:
    "The same key within 5 minutes publishes once and answers the same id.",
  minLength: 1,
  maxLength: MAX_IDEMPOTENCY_KEY_CHARS,
};

const INVITE_USER: Schema = {
  type: "string",
  description: "A verified user id (their tokens' `sub`).",
  minLength: 1,
  maxLength: MAX_USER_CHARS,
};

/** An object schema with these properties, of which `required` must be given. */
function params(
  properties: Record<string, Schema>,
  required: string[] = [],
): Schema {
  return { type: "object", properties, required, additionalProperties: false };
}

// ---------------------------------------------------------------------------
// The methods
// ---------------------------------------------------------------------------

interface Method {
  summary: string;
  params: Schema;
  /** What `result` is, for the OpenAPI document. */
  result: Record<string, unknown>;
  run: (args: Record<string, unknown>, api: Api) => Promise<unknown>;
}

/** The context a method runs in. */
interface Api {
  backend: ApiBackend;
  settings: ApiSettings;
}

const OBJECT = { type: "object" };
const ID_RESULT = {
  type: "object",
  properties: { id: { type: "integer" } },
  required: ["id"],
};

/** A room name as the chat knows it, or a 400 naming the field. */
function room(args: Record<string, unknown>, field = "room"): string {
  const name = roomName(String(args[field]));
  if (!name) {
    throw new ApiError(
      400,
      "bad_field",
      `${field} is not a room name: ${ROOM_RULE}`,
      field,
    );
  }
  return name;
}

/** A message's text as it may be kept, or a 400 naming the field. */
function text(args: Record<string, unknown>, api: Api): string {
  const clean = checkMessage(String(args.text), api.settings.maxMessageChars);
  if (isRefusal(clean)) throw refusal(clean, "text");
  // A socket's blank line is nothing; a call that posts nothing is a mistake.
  if (clean === "") {
    throw new ApiError(400, "bad_field", "text is empty", "text");
  }
  return clean;
}

/** Whom an edit or a reaction is done as: `from`, and `user` if given. */
function speaker(args: Record<string, unknown>, api: Api): Speaker {
  if (args.user === undefined) return { from: from(args, api) };
  if (args.from === undefined) {
    throw new ApiError(
      400,
      "missing_field",
      "with user, from is required: the user's name",
      "from",
    );
  }
  return { from: from(args, api), user: args.user as string };
}

/** The nick a post is shown under (checked by its schema, NFC here). */
function from(args: Record<string, unknown>, api: Api): string {
  if (args.from === undefined) return api.settings.name;
  const nick = checkNick(args.from);
  if (isRefusal(nick)) throw refusal(nick, "from");
  return nick;
}

async function publishOne(
  api: Api,
  name: string,
  sender: string,
  message: string,
): Promise<number> {
  const event = await api.backend.publish(name, sender, message);
  if (!event) {
    throw new ApiError(404, "no_such_room", `there is no room ${name}`, "room");
  }
  return event.id;
}

/**
 * A moderation method: its parameters (checked by the schema first), and
 * the command it gives, which is the parameters but `room` under the
 * command's name (the same shape as the WebSocket's JSON form).
 */
function moderation(
  type: ModerationCommand["type"],
  summary: string,
  properties: Record<string, Schema>,
  required: string[],
): Method {
  return {
    summary,
    params: params({ room: ROOM, ...properties }, ["room", ...required]),
    result: OBJECT,
    run: async (args, api) => {
      const { room: _, ...rest } = args;
      const command = { type, ...rest } as ModerationCommand;
      return await api.backend.moderate(room(args), command) ?? {};
    },
  };
}

/**
 * A private-room method: its parameters (checked by the schema first), and
 * the command it gives (the parameters but `room`, as the WebSocket's JSON
 * form). `invite` and `uninvite` name their target by exactly one of
 * `nick`, `user`, `code` and `link`.
 */
function access(
  type: AccessCommand["type"],
  summary: string,
  properties: Record<string, Schema>,
  required: string[],
): Method {
  return {
    summary,
    params: params({ room: ROOM, ...properties }, ["room", ...required]),
    result: OBJECT,
    run: async (args, api) => {
      const { room: _, ...rest } = args;
      const targets = ["nick", "user", "code", "link"].filter((name) =>
        name in rest
      );
      if ((type === "invite" || type === "uninvite") && targets.length !== 1) {
        throw new ApiError(
          400,
          "missing_field",
          `give one of ${
            type === "invite"
              ? "nick, user or link"
              : "nick, user, code or link"
          }`,
          targets[1] ?? "nick",
        );
      }
      const command = { type, ...rest } as AccessCommand;
      return await api.backend.access(room(args), command);
    },
  };
}

/**
 * Every method, by name: its summary, parameters, result and handler. The
 * handler and `GET /api/openapi.json` are made from this one table.
 */
export const API_METHODS: Record<string, Method> = {
  publish: {
    summary:
      "Posts a message into a room, as `from` (default `--api-name`); with `--data` or `--redis` also into a room nobody is in, made if new.",
    params: params(
      { room: ROOM, text: TEXT, from: FROM, idempotency_key: IDEMPOTENCY_KEY },
      ["room", "text"],
    ),
    result: ID_RESULT,
    run: async (args, api) => {
      const name = room(args);
      const message = text(args, api);
      const sender = from(args, api);
      const publish = () => publishOne(api, name, sender, message);
      const key = args.idempotency_key as string | undefined;
      const id = key === undefined
        ? await publish()
        : await api.backend.once(`publish:${key}`, IDEMPOTENCY_TTL_MS, publish);
      return { id };
    },
  },
  broadcast: {
    summary: `Posts the same message into up to ${MAX_BROADCAST_ROOMS} rooms.`,
    params: params({
      rooms: {
        type: "array",
        items: ROOM,
        minItems: 1,
        maxItems: MAX_BROADCAST_ROOMS,
      },
      text: TEXT,
      from: FROM,
    }, ["rooms", "text"]),
    result: {
      type: "object",
      properties: { results: { type: "array", items: OBJECT } },
    },
    run: async (args, api) => {
      const message = text(args, api);
      const sender = from(args, api);
      const names = (args.rooms as string[]).map((_, i) =>
        room(args.rooms as Record<string, unknown>, String(i))
      );
      const results = [];
      for (const name of names) {
        try {
          results.push({
            room: name,
            id: await publishOne(api, name, sender, message),
          });
        } catch (error) {
          if (!(error instanceof ApiError)) throw error;
          results.push({
            room: name,
            error: { code: error.code, message: error.message },
          });
        }
      }
      return { results };
    },
  },
  presence: {
    summary: "Who is in a room: nick, verified user id, connections.",
    params: params({ room: ROOM }, ["room"]),
    result: {
      type: "object",
      properties: { people: { type: "array", items: OBJECT } },
    },
    run: async (args, api) => ({
      people: await api.backend.presence(room(args)),
    }),
  },
  rooms: {
    summary:
      "The rooms with people in them, with how many (private rooms are left out).",
    params: params({}),
    result: {
      type: "object",
      properties: { rooms: { type: "array", items: OBJECT } },
    },
    run: async (_, api) => ({ rooms: await api.backend.rooms() }),
  },
  info: {
    summary: "This process: version, uptime, connections, rooms, store health.",
    params: params({}),
    result: OBJECT,
    run: (_, api) => Promise.resolve(api.backend.info()),
  },
  history: {
    summary: "A room's events before `before` (or the latest), oldest first.",
    params: params({
      room: ROOM,
      before: { type: "integer", description: "An event id.", minimum: 1 },
      limit: {
        type: "integer",
        description: `Events at most (default ${DEFAULT_HISTORY_PAGE}).`,
        minimum: 1,
        maximum: MAX_HISTORY_PAGE,
      },
    }, ["room"]),
    result: {
      type: "object",
      properties: {
        events: { type: "array", items: OBJECT },
        more: { type: "boolean" },
      },
    },
    run: async (args, api) => {
      const name = room(args);
      const page = await api.backend.history(
        name,
        args.before as number | undefined,
        (args.limit as number | undefined) ?? DEFAULT_HISTORY_PAGE,
      );
      if (!page) {
        throw new ApiError(
          404,
          "no_such_room",
          `there is no room ${name}`,
          "room",
        );
      }
      return page;
    },
  },
  search: {
    summary:
      "A room's messages and actions that match `q` (words, phrases, prefixes, from:NICK), newest first; `more` while older ones may match (search again with `before`); `scope` says what was searched: `all` (everything `--data` keeps) or `window` (the live window, in memory and with `--redis`). No private messages.",
    params: params({
      room: ROOM,
      q: SEARCH_TEXT,
      from: {
        ...NICK,
        description: "Only what this nick said (as from:NICK in q).",
      },
      before: {
        type: "integer",
        description: "Only events with ids below this one.",
        minimum: 0,
      },
      limit: {
        type: "integer",
        description: `Results at most (default ${DEFAULT_SEARCH_LIMIT}).`,
        minimum: 1,
        maximum: MAX_SEARCH_LIMIT,
      },
    }, ["room", "q"]),
    result: {
      type: "object",
      properties: {
        events: { type: "array", items: OBJECT },
        more: { type: "boolean" },
        before: { type: "integer" },
        scope: { type: "string", enum: ["all", "window"] },
      },
      required: ["events", "more", "scope"],
    },
    run: async (args, api) => {
      const name = room(args);
      // Checked by the schema; parsed again here for the query itself.
      const query = parseSearch(args.q as string) as SearchQuery;
      for (const field of ["from", "before"] as const) {
        if (args[field] === undefined) continue;
        if (query[field] !== undefined) {
          throw new ApiError(
            400,
            "bad_request",
            `${field} given twice (here and as ${field}: in q)`,
            field,
          );
        }
      }
      if (args.from !== undefined) query.from = args.from as string;
      if (args.before !== undefined) query.before = args.before as number;
      if (query.from !== undefined) {
        const nick = checkNick(query.from);
        if (isRefusal(nick)) {
          throw new ApiError(400, "bad_request", `from: ${nick.message}`, "q");
        }
        query.from = nick;
      }
      const found = await api.backend.search(
        name,
        query,
        (args.limit as number | undefined) ?? DEFAULT_SEARCH_LIMIT,
      );
      if (!found) {
        throw new ApiError(
          404,
          "no_such_room",
          `there is no room ${name}`,
          "room",
        );
      }
      return found;
    },
  },
  disconnect: {
    summary:
      "Closes a person's connections (by nick in a room, or by verified user id, everywhere or in one room).",
    params: params({
      room: ROOM,
      nick: NICK,
      user: { type: "string", maxLength: 256 },
      reason: REASON,
    }),
    result: {
      type: "object",
      properties: { people: { type: "integer" } },
    },
    run: async (args, api) => {
      const target: DisconnectTarget = {
        room: args.room === undefined ? undefined : room(args),
        nick: args.nick as string | undefined,
        user: args.user as string | undefined,
      };
      if ((target.nick === undefined) === (target.user === undefined)) {
        throw new ApiError(
          400,
          "missing_field",
          "give nick (with room) or user",
          "nick",
        );
      }
      if (target.nick !== undefined && target.room === undefined) {
        throw new ApiError(
          400,
          "missing_field",
          "room is required with nick",
          "room",
        );
      }
      const reason = checkReason(args.reason);
      if (isRefusal(reason)) throw refusal(reason, "reason");
      const people = await api.backend.disconnect(
        target,
        reason ?? "disconnected by the app",
      );
      if (people === 0) {
        throw new ApiError(
          404,
          "no_such_nick",
          "nobody like that is connected",
          target.nick ? "nick" : "user",
        );
      }
      return { people };
    },
  },
  kick: moderation(
    "kick",
    "Kicks a person out of a room (a `kick` event; their connections close with 4000).",
    { nick: NICK, reason: REASON },
    ["nick"],
  ),
  ban: moderation(
    "ban",
    "Kicks a person and keeps them out (for `minutes`, or until unbanned).",
    { nick: NICK, minutes: MINUTES, reason: REASON },
    ["nick"],
  ),
  unban: moderation(
    "unban",
    "Lifts a ban.",
    { nick: NICK },
    ["nick"],
  ),
  mute: moderation(
    "mute",
    "Refuses a person's messages (for `minutes`, or until unmuted).",
    { nick: NICK, minutes: MINUTES, reason: REASON },
    ["nick"],
  ),
  unmute: moderation(
    "unmute",
    "Lifts a mute.",
    { nick: NICK },
    ["nick"],
  ),
  edit: {
    summary:
      "Replaces the text of a message the app posted as `from` (default `--api-name`), or a verified `user` sent signed in, within `--edit-window`: an `edit` event; refused with `forbidden` for another's message, `no_such_message`, `edit_window`, `muted`.",
    params: params({
      room: ROOM,
      id: { type: "integer", description: "The message's id.", minimum: 1 },
      text: TEXT,
      from: FROM,
      user: USER_AS,
    }, ["room", "id", "text"]),
    result: ID_RESULT,
    run: async (args, api) => {
      const event = await api.backend.edit(
        room(args),
        speaker(args, api),
        args.id as number,
        text(args, api),
      );
      return { id: event.id };
    },
  },
  react: {
    summary:
      "Adds or takes back (`on`; absent: toggles) a reaction to a message, as `from` (default `--api-name`) or a verified `user`: the room gets the `react` notice; the answer is the key's count after it. Refused with `bad_request` (the key), `no_such_message`, `reaction_limit`, `muted`.",
    params: params({
      room: ROOM,
      id: { type: "integer", description: "The message's id.", minimum: 1 },
      key: REACTION_KEY,
      on: {
        type: "boolean",
        description: "true adds it, false takes it back (absent: toggles).",
      },
      from: FROM,
      user: USER_AS,
    }, ["room", "id", "key"]),
    result: {
      type: "object",
      properties: { on: { type: "boolean" }, count: { type: "integer" } },
      required: ["on", "count"],
    },
    run: async (args, api) => {
      const notice = await api.backend.react(
        room(args),
        speaker(args, api),
        args.id as number,
        args.key as string,
        args.on as boolean | undefined,
      );
      return { on: notice.on, count: notice.count };
    },
  },
  delete: moderation(
    "delete",
    "Deletes a message from the room and its history (a `delete` event).",
    { id: { type: "integer", description: "The message's id.", minimum: 1 } },
    ["id"],
  ),
  topic: moderation(
    "topic",
    'Sets the room\'s topic (`""` clears it).',
    { text: TOPIC },
    ["text"],
  ),
  private: access(
    "private",
    "Makes a room invite-only (`on`: true) or open again: a `private` event; the answer is `{private}`.",
    {
      on: {
        type: "boolean",
        description: "true: invite-only; false: open to everyone.",
      },
    },
    ["on"],
  ),
  invite: access(
    "invite",
    "Invites into a room, by one of: `nick` (a member, or a verified person who holds or held the name there: by their login), `user` (a verified user id), or `link` (a code for `uses` people within `hours`; the answer has the code and the page's URL with it, given this once).",
    {
      nick: NICK,
      user: INVITE_USER,
      link: {
        type: "object",
        description: "An invite link: how many may use it, for how long.",
        properties: {
          uses: {
            type: "integer",
            description: `People it admits (default ${DEFAULT_INVITE_USES}).`,
            minimum: 1,
            maximum: MAX_INVITE_USES,
            check: checkInviteUses,
          },
          hours: {
            type: "integer",
            description: `Hours it lasts (default ${DEFAULT_INVITE_HOURS}).`,
            minimum: 1,
            maximum: MAX_INVITE_HOURS,
            check: checkInviteHours,
          },
        },
        additionalProperties: false,
      },
    },
    [],
  ),
  uninvite: access(
    "uninvite",
    "Revokes invites, by one of: `nick`, `user`, `code` (a link's code) or `link` (a link's id, as `invites` lists it).",
    {
      nick: NICK,
      user: INVITE_USER,
      code: {
        type: "string",
        description: "An invite link's code.",
        pattern: "^[A-Za-z0-9_-]+$",
        minLength: 32,
        maxLength: 32,
      },
      link: {
        type: "string",
        description: "An invite link's id (8 characters).",
        pattern: "^[A-Za-z0-9_-]+$",
        minLength: 8,
        maxLength: 8,
      },
    },
    [],
  ),
  invites: access(
    "invites",
    "Whether a room is private, who is invited and its links in force (never their codes).",
    {},
    [],
  ),
  batch: {
    summary:
      `Several calls (at most ${MAX_BATCH_COMMANDS}) in order, each with its own answer.`,
    params: params({
      commands: {
        type: "array",
        minItems: 1,
        maxItems: MAX_BATCH_COMMANDS,
        items: {
          type: "object",
          properties: {
            method: { type: "string" },
            params: { type: "object", properties: {} },
          },
          required: ["method"],
        },
      },
    }, ["commands"]),
    result: {
      type: "object",
      properties: { replies: { type: "array", items: OBJECT } },
    },
    run: async (args, api) => {
      const replies = [];
      for (
        const entry of args.commands as { method: string; params?: unknown }[]
      ) {
        if (entry.method === "batch") {
          replies.push(
            errorBody(
              new ApiError(
                400,
                "bad_field",
                "a batch cannot hold a batch",
                "method",
              ),
            ),
          );
          continue;
        }
        const { status, body } = await call(
          entry.method,
          entry.params ?? {},
          api,
        );
        api.settings.count(entry.method, status);
        replies.push(body);
      }
      return { replies };
    },
  },
};

// ---------------------------------------------------------------------------
// HTTP
// ---------------------------------------------------------------------------

function errorBody(error: ApiError) {
  return {
    error: {
      code: error.code,
      message: error.message,
      ...(error.field !== undefined ? { field: error.field } : {}),
    },
  };
}

/** Runs one method; every outcome is a status and a body. */
async function call(
  method: string,
  args: unknown,
  api: Api,
): Promise<{ status: number; body: unknown }> {
  try {
    const spec = Object.hasOwn(API_METHODS, method)
      ? API_METHODS[method]
      : undefined;
    if (!spec) {
      throw new ApiError(400, "unknown_method", `there is no method ${method}`);
    }
    const problem = check(args, spec.params);
    if (problem) throw problem;
    return {
      status: 200,
      body: { result: await spec.run(args as Record<string, unknown>, api) },
    };
  } catch (error) {
    if (error instanceof ApiError) {
      return { status: error.status, body: errorBody(error) };
    }
    if (error instanceof StoreUnavailable) {
      const unavailable = new ApiError(
        503,
        "unavailable",
        "the chat store is unreachable: try again",
      );
      return { status: 503, body: errorBody(unavailable) };
    }
    throw error;
  }
}

/** The key a request shows, from `Authorization: Bearer` or `X-API-Key`. */
function keyOf(req: Request): string | undefined {
  const bearer = /^Bearer\s+(\S+)$/i.exec(
    req.headers.get("authorization") ?? "",
  );
  return bearer?.[1] ?? req.headers.get("x-api-key") ?? undefined;
}

/** Query parameters that would put a key where logs and proxies see it. */
const KEY_PARAMS = ["key", "api_key", "apikey", "token", "access_token"];

/** The OpenAPI 3.1 document of {@linkcode API_METHODS}. */
export function openApiDocument(version: string): Record<string, unknown> {
  const error = {
    description: "An error.",
    content: {
      "application/json": {
        schema: { $ref: "#/components/schemas/Error" },
      },
    },
  };
  const paths = Object.fromEntries(
    Object.entries(API_METHODS).map(([name, method]) => [
      `/api/${name}`,
      {
        post: {
          operationId: name,
          summary: method.summary,
          security: [{ bearer: [] }, { apiKey: [] }],
          requestBody: {
            required: true,
            content: { "application/json": { schema: method.params } },
          },
          responses: {
            "200": {
              description: "Done.",
              content: {
                "application/json": {
                  schema: {
                    type: "object",
                    properties: { result: method.result },
                    required: ["result"],
                  },
                },
              },
            },
            "400": error,
            "401": error,
            "404": error,
            "413": error,
            "429": error,
            "503": error,
          },
        },
      },
    ]),
  );
  return {
    openapi: "3.1.0",
    info: {
      title: "deno-chat HTTP API",
      version,
      description:
        "Post, look and act on the chat from an app's backend. Every method is `POST /api/METHOD` with a JSON body.",
    },
    paths,
    components: {
      securitySchemes: {
        bearer: { type: "http", scheme: "bearer" },
        apiKey: { type: "apiKey", in: "header", name: "X-API-Key" },
      },
      schemas: {
        Error: {
          type: "object",
          properties: {
            error: {
              type: "object",
              properties: {
                code: { type: "string" },
                message: { type: "string" },
                field: { type: "string" },
              },
              required: ["code", "message"],
            },
          },
          required: ["error"],
        },
      },
    },
  };
}

/** Is this a request for the API (a path under `/api/`)? */
export function apiPath(req: Request): boolean {
  return parseUrl(req)?.pathname.startsWith("/api/") ?? false;
}

/**
 * The API's handler, for paths under `/api/`. Every call is one log line
 * (method, room, status, ms) and counted; the key is never logged.
 */
export function apiHandler(
  backend: ApiBackend,
  settings: ApiSettings,
  version: string,
): (req: Request) => Promise<Response> {
  const api: Api = { backend, settings };
  const document = JSON.stringify(openApiDocument(version));
  // One second's worth of requests may come at once.
  const bucket = new TokenBucket(settings.rate, settings.rate);
  const json = (status: number, body: unknown, headers: HeadersInit = {}) =>
    new Response(JSON.stringify(body), {
      status,
      headers: { "content-type": "application/json", ...headers },
    });
  const refuse = (
    status: number,
    code: string,
    message: string,
    headers?: HeadersInit,
  ) => json(status, errorBody(new ApiError(status, code, message)), headers);

  // Each call in a `chat.api` span (server/telemetry.ts).
  return (req: Request) =>
    inSpan(
      "chat.api",
      { "http.request.method": req.method },
      () => handleApiRequest(req),
    );

  async function handleApiRequest(req: Request): Promise<Response> {
    const started = performance.now();
    const url = new URL(req.url);
    const method = url.pathname.slice("/api/".length);
    annotate({ "chat.api.method": method });
    let room: string | undefined;
    const answer = (response: Response) => {
      settings.count(method, response.status);
      annotate({
        [ROOM_ATTRIBUTE]: room,
        "http.response.status_code": response.status,
      });
      settings.log(response.status < 400 ? "info" : "warn", "api", {
        method,
        room,
        status: response.status,
        ms: Math.round(performance.now() - started),
      });
      return response;
    };
    if (method === "openapi.json" && req.method === "GET") {
      return new Response(document, {
        headers: { "content-type": "application/json" },
      });
    }
    if (KEY_PARAMS.some((name) => url.searchParams.has(name))) {
      return answer(
        refuse(
          400,
          "key_in_url",
          "send the key in a header (Authorization: Bearer KEY or X-API-Key), never in the URL",
        ),
      );
    }
    const key = keyOf(req);
    if (key === undefined || !sameSecret(key, settings.key)) {
      return answer(
        refuse(
          401,
          "unauthorized",
          key === undefined ? "no API key" : "wrong API key",
        ),
      );
    }
    if (req.method !== "POST") {
      return answer(refuse(405, "method_not_allowed", "use POST"));
    }
    if (!bucket.take()) {
      const wait = Math.ceil(bucket.secondsToToken());
      return answer(
        refuse(
          429,
          "rate_limited",
          `more than ${settings.rate} requests a second`,
          { "retry-after": String(Math.max(1, wait)) },
        ),
      );
    }
    const body = await readBody(req);
    if (body === "too_large") {
      return answer(
        refuse(
          413,
          "too_large",
          `the body is over ${API_MAX_BODY_BYTES} bytes`,
        ),
      );
    }
    let args: unknown;
    try {
      args = body === "" ? {} : JSON.parse(body);
    } catch {
      return answer(refuse(400, "bad_json", "the body is not JSON"));
    }
    if (typeof args === "object" && args !== null && "room" in args) {
      room = String((args as { room: unknown }).room);
    }
    const { status, body: reply } = await call(method, args, api);
    return answer(json(status, reply));
  }
}

/** The body as text, or `too_large` past {@linkcode API_MAX_BODY_BYTES}. */
async function readBody(req: Request): Promise<string | "too_large"> {
  const declared = Number(req.headers.get("content-length") ?? 0);
  if (declared > API_MAX_BODY_BYTES) return "too_large";
  if (!req.body) return "";
  const chunks: Uint8Array[] = [];
  let size = 0;
  for await (const chunk of req.body) {
    size += chunk.byteLength;
    if (size > API_MAX_BODY_BYTES) return "too_large";
    chunks.push(chunk);
  }
  const bytes = new Uint8Array(size);
  let at = 0;
  for (const chunk of chunks) {
    bytes.set(chunk, at);
    at += chunk.byteLength;
  }
  return new TextDecoder().decode(bytes);
}
