/**
 * The HTTP API on rooms in every state (issue 29), against the real server
 * on memory, `--data` and Redis: held here, held on another process
 * (Redis), kept while nobody is in it (`--data`, Redis), never made, and a
 * malformed name.
 *
 * - The walk: every method of `API_METHODS` (so a new one is walked too)
 *   in every room state, with each parameter missing, of the wrong type,
 *   too long and at its limit, alone and in `batch`: every answer is a
 *   documented 2xx/4xx with a code naming the field, never a 5xx, and the
 *   server serves on. The same over the socket's moderation commands, as
 *   a moderator by `--op-key`: never a 1011 close or an internal error.
 * - Rooms a store keeps are rooms the API can use: `publish`, `broadcast`,
 *   `topic`, `history`, `delete` and the sanctions on a room nobody is in,
 *   seen by the next to join, within the same limits; `publish` makes a
 *   room never made if `--max-rooms` allows. In memory nothing is kept:
 *   404 `no_such_room`.
 *
 * @module
 */

import assert from "node:assert/strict";
import { createClient } from "redis";
import { API_METHODS, type Schema } from "./http_api.ts";
import type { ChatOptions, ChatServer } from "../main.ts";
import {
  CloseCode,
  JSON_PROTOCOL,
  MAX_MINUTES,
  MAX_REASON_CHARS,
  MAX_SLOW_SECONDS,
  MAX_TOPIC_CHARS,
  MODERATION_TYPES,
  OP_PROTOCOL_PREFIX,
} from "../wire/protocol.ts";
import { OP_KEY } from "../tests/auth_helpers.ts";
import {
  type ChatProcess,
  haveRedis,
  startChatProcess,
  startRedis,
} from "../tests/redis_helpers.ts";
import {
  chatUrl,
  closeAll,
  eventually,
  type Json,
  jsonClient,
  Peer,
  RawClient,
  withChat,
  within,
} from "../tests/test_helpers.ts";

const KEY = "k".repeat(16) + "0123456789abcdef0123";
/** `--max-message-chars` here: the limit of `text` where its schema has none. */
const MESSAGE_CHARS = 100;
/** Every server here: the API on, its rate and the sockets' out of the way. */
const OPTIONS: ChatOptions = {
  apiKey: KEY,
  apiRate: 1_000_000,
  opKey: OP_KEY,
  maxMessageChars: MESSAGE_CHARS,
  rate: 10_000,
  burst: 10_000,
};

/** A call to the API: its status and JSON body. */
async function api(
  chat: Pick<ChatServer, "port">,
  method: string,
  body: unknown = {},
): Promise<{ status: number; body: Json }> {
  const response = await fetch(`http://127.0.0.1:${chat.port}/api/${method}`, {
    method: "POST",
    headers: {
      authorization: `Bearer ${KEY}`,
      "content-type": "application/json",
    },
    body: JSON.stringify(body),
  });
  const text = await response.text();
  let parsed: Json;
  try {
    parsed = JSON.parse(text);
  } catch {
    parsed = text; // a 500's "Internal error", which the walk reports
  }
  return { status: response.status, body: parsed };
}

/** A call that must succeed: its result. */
async function ok(
  chat: Pick<ChatServer, "port">,
  method: string,
  body: unknown = {},
): Promise<Json> {
  const answer = await api(chat, method, body);
  assert.equal(
    answer.status,
    200,
    `${method} ${JSON.stringify(body)}: ${JSON.stringify(answer.body)}`,
  );
  return answer.body.result;
}

/** A call that must fail: its status and error. */
async function refused(
  chat: Pick<ChatServer, "port">,
  method: string,
  body: unknown = {},
): Promise<[number, string, string | undefined]> {
  const answer = await api(chat, method, body);
  assert.ok(
    answer.body?.error,
    `${method} ${JSON.stringify(body)}: ${JSON.stringify(answer.body)}`,
  );
  return [answer.status, answer.body.error.code, answer.body.error.field];
}

// ---------------------------------------------------------------------------
// The stores
// ---------------------------------------------------------------------------

/** What a test gets: the chat, and on Redis another process on it. */
interface World {
  chat: ChatServer;
  /** Another process on the same Redis (when asked for). */
  other?: ChatProcess;
  /** The Redis server's URL (Redis only). */
  redisUrl?: string;
}

/** A store the chat runs on, as the tests start it. */
interface Site {
  name: "memory" | "data" | "redis";
  ignore: boolean;
  /** Rooms nobody is in are kept (`--data` for good, Redis for `--room-ttl`). */
  keeps: boolean;
  /** Starts the chat on it (with `other`: a second process), runs `fn`. */
  run(
    options: ChatOptions,
    fn: (world: World) => Promise<void>,
    other?: boolean,
  ): Promise<void>;
}

const SITES: Site[] = [
  {
    name: "memory",
    ignore: false,
    keeps: false,
    run: (options, fn) =>
      withChat({ ...OPTIONS, ...options }, (chat) => fn({ chat })),
  },
  {
    name: "data",
    ignore: false,
    keeps: true,
    run: async (options, fn) => {
      const dir = await Deno.makeTempDir({ prefix: "chat-api-rooms-" });
      try {
        await withChat(
          { ...OPTIONS, data: `${dir}/chat.db`, ...options },
          (chat) => fn({ chat }),
        );
      } finally {
        await Deno.remove(dir, { recursive: true });
      }
    },
  },
  {
    name: "redis",
    ignore: !haveRedis && !Deno.env.get("CI"),
    keeps: true,
    run: async (options, fn, other = false) => {
      const redis = await startRedis();
      let second: ChatProcess | undefined;
      try {
        if (other) second = await startChatProcess(redis.url);
        await withChat(
          { ...OPTIONS, redis: redis.url, ...options },
          (chat) => fn({ chat, other: second, redisUrl: redis.url }),
        );
      } finally {
        await second?.stop();
        await redis.kill();
      }
    },
  },
];

/** Registers a test for every site `applies` to (the others are ignored). */
function everywhere(
  what: string,
  fn: (site: Site) => Promise<void>,
  applies: (site: Site) => boolean = () => true,
): void {
  for (const site of SITES) {
    Deno.test({
      name: `api on ${site.name}: ${what}`,
      ignore: site.ignore || !applies(site),
      fn: () => fn(site),
    });
  }
}

let serial = 0;

/** A room name never used before. */
function fresh(): string {
  return `new-${++serial}`;
}

/**
 * A room someone was in and left (with a message and the leave in its
 * history): kept with `--data` and Redis, gone in memory. Resolves once
 * the server has the leave.
 */
async function emptied(chat: ChatServer, room: string): Promise<void> {
  const cy = await jsonClient(chat, `/${room}`, { nick: "cy" });
  cy.send(JSON.stringify({ type: "message", text: "before the quiet" }));
  await cy.event("cy's own message");
  await cy.close();
  await eventually(
    `${room} empty`,
    async () => (await ok(chat, "presence", { room })).people.length === 0,
  );
}

// ---------------------------------------------------------------------------
// The walk: every method, every room state, every parameter at its edges
// ---------------------------------------------------------------------------

/**
 * The error codes of the README's API section with their status (a test
 * below holds the README to it): the walk accepts no other.
 */
const DOCUMENTED: Record<string, number> = {
  missing_field: 400,
  bad_field: 400,
  unknown_field: 400,
  too_long: 400,
  bad_nick: 400,
  bad_request: 400,
  not_banned: 400,
  not_invited: 400,
  invite_limit: 400,
  no_such_room: 404,
  no_such_nick: 404,
  no_such_message: 404,
};

/** One call of the walk. */
interface Case {
  method: string;
  label: string;
  args: Record<string, unknown>;
  /**
   * The parameters it gives a bad value: it must be refused, naming one of
   * them (a malformed room's walk has two).
   */
  bad: string[];
}

/** A valid value of each parameter, by name (what it means to the chat). */
const VALUES: Record<string, (room: () => string) => unknown> = {
  room: (room) => room(),
  rooms: (room) => [room()],
  text: () => "walking",
  key: () => "👍",
  from: () => "walker",
  idempotency_key: () => `walk-${++serial}`,
  nick: () => "nobody",
  user: () => "nobody",
  reason: () => "walk",
  minutes: () => 5,
  id: () => 1_000_000,
  before: () => 1_000_000,
  limit: () => 10,
  commands: () => [{ method: "info" }],
  // Open: a private walk room would refuse the walk's own sockets.
  on: () => false,
  code: () => "c".repeat(32),
};

/** A valid value of a parameter the table above does not know, by type. */
function sample(schema: Schema): unknown {
  switch (schema.type) {
    case "string":
      return "x".repeat(Math.max(1, schema.minLength ?? 1));
    case "integer":
      return schema.minimum ?? 1;
    case "boolean":
      return true;
    case "array":
      return Array.from(
        { length: Math.max(1, schema.minItems ?? 1) },
        () => sample(schema.items),
      );
    case "object":
      return {};
  }
}

/** Beyond the schema: what a method needs (disconnect: a nick or a user). */
const ALSO: Record<string, (param?: string) => Record<string, unknown>> = {
  disconnect: (param) => param === "user" ? {} : { nick: "nobody" },
  // One target each (a case that gives another parameter gives only it).
  invite: (param) =>
    ["user", "link"].includes(param ?? "") ? {} : { nick: "nobody" },
  uninvite: (param) =>
    ["user", "code", "link"].includes(param ?? "") ? {} : { nick: "nobody" },
};

/** A string of `length` characters that passes the parameter's pattern. */
function filler(length: number): string {
  return "w".repeat(length);
}

/**
 * The values of a parameter at and past its edges: the wrong type, one
 * past each limit (refused), and each limit (anything documented).
 */
function edges(
  name: string,
  schema: Schema,
  valid: () => unknown,
): { label: string; value: () => unknown; bad: boolean }[] {
  const out: { label: string; value: () => unknown; bad: boolean }[] = [];
  const add = (label: string, value: () => unknown, bad: boolean) =>
    out.push({ label, value, bad });
  switch (schema.type) {
    case "string": {
      add("a number", () => 42, true);
      add("null", () => null, true);
      const longest = schema.maxLength ??
        (name === "text" ? MESSAGE_CHARS : undefined);
      if (longest === undefined) {
        add("10,000 characters", () => filler(10_000), false);
      } else {
        add(`${longest} characters`, () => filler(longest), false);
        add(`${longest + 1} characters`, () => filler(longest + 1), true);
      }
      if (schema.minLength) {
        add(
          `${schema.minLength - 1} characters`,
          () => filler(schema.minLength! - 1),
          true,
        );
      }
      if (schema.pattern) {
        add("malformed", () => "no room!", true);
        add("empty", () => "", true);
      }
      break;
    }
    case "integer":
      add("a string", () => String(valid()), true);
      add("a fraction", () => 1.5, true);
      add("past 2^53", () => 2 ** 53, true);
      if (schema.minimum !== undefined) {
        add(`${schema.minimum}`, () => schema.minimum, false);
        add(`${schema.minimum - 1}`, () => schema.minimum! - 1, true);
      }
      if (schema.maximum !== undefined) {
        add(`${schema.maximum}`, () => schema.maximum, false);
        add(`${schema.maximum + 1}`, () => schema.maximum! + 1, true);
      } else {
        add("2^53 - 1", () => Number.MAX_SAFE_INTEGER, false);
      }
      break;
    case "boolean":
      add("a string", () => "yes", true);
      break;
    case "array": {
      const item = () => (valid() as unknown[])[0];
      add("a string", () => "x", true);
      add("an object", () => ({}), true);
      if (schema.minItems) {
        add(
          `${schema.minItems - 1} items`,
          () => Array.from({ length: schema.minItems! - 1 }, item),
          true,
        );
      }
      if (schema.maxItems !== undefined) {
        add(
          `${schema.maxItems} items`,
          () => Array.from({ length: schema.maxItems! }, item),
          false,
        );
        add(
          `${schema.maxItems + 1} items`,
          () => Array.from({ length: schema.maxItems! + 1 }, item),
          true,
        );
      }
      for (const edge of edges(`${name}[0]`, schema.items, item)) {
        if (edge.bad) {
          add(`an item ${edge.label}`, () => [edge.value()], true);
        }
      }
      break;
    }
    case "object":
      add("an array", () => [], true);
      add("a string", () => "x", true);
      for (const required of schema.required ?? []) {
        add(`without ${required}`, () => ({}), true);
      }
      break;
  }
  return out;
}

/**
 * Every case of one method in a room (`room` gives its name each time; a
 * `malformed` one is a bad value of every parameter it is given to).
 */
function casesOf(
  method: string,
  room: () => string,
  malformed: boolean,
): Case[] {
  const params = API_METHODS[method].params;
  assert.equal(params.type, "object");
  if (params.type !== "object") return [];
  const required = params.required ?? [];
  const value = (name: string) =>
    VALUES[name]?.(room) ?? sample(params.properties[name]);
  const base = (param?: string) => ({
    ...Object.fromEntries(required.map((name) => [name, value(name)])),
    ...ALSO[method]?.(param),
  });
  const cases: Case[] = [];
  // `given`: the parameter this case gives a value of its own (a room at
  // its longest is a good name, even in the malformed room's walk).
  const add = (
    label: string,
    args: Record<string, unknown>,
    bad?: string,
    given?: string,
  ) =>
    cases.push({
      method,
      label,
      args,
      bad: [
        ...(bad ? [bad] : []),
        ...(malformed
          ? ["room", "rooms"].filter((name) => name in args && name !== given)
          : []),
      ],
    });
  add("valid", base());
  for (const [name, schema] of Object.entries(params.properties)) {
    if (required.includes(name)) {
      const { [name]: _, ...rest } = base();
      add(`${name} missing`, rest, name);
    }
    for (const edge of edges(name, schema, () => value(name))) {
      add(
        `${name} ${edge.label}`,
        { ...base(name), [name]: edge.value() },
        edge.bad ? name : undefined,
        name,
      );
    }
  }
  add("an unknown parameter", { ...base(), walk: 1 }, "walk");
  return cases;
}

/** The parameter a field names (`rooms[3]` → `rooms`, `a.b` → `a`). */
function head(field: string): string {
  return field.split(/[.[]/)[0];
}

/**
 * Holds one answer to the rules: a documented status and code, the field
 * named (the bad parameter's, when one was given), a `result` otherwise.
 * `status` is undefined for a reply inside a batch.
 */
function assertDocumented(
  c: Case,
  status: number | undefined,
  body: Json,
  where: string,
): void {
  const what = `${where}: ${c.method} (${c.label}) ${
    JSON.stringify(c.args).slice(0, 100)
  } answered ${status ?? "in a batch"} ${JSON.stringify(body).slice(0, 200)}`;
  if (status !== undefined) assert.ok(status < 500, what);
  if (body?.result !== undefined) {
    assert.ok(status === undefined || status === 200, what);
    assert.deepEqual(c.bad, [], `accepted a bad value: ${what}`);
    if (c.method === "broadcast") {
      for (const result of body.result.results) {
        assert.ok(
          typeof result.id === "number" ||
            DOCUMENTED[result.error?.code] !== undefined,
          what,
        );
      }
    }
    return;
  }
  const error = body?.error;
  assert.ok(error, what);
  assert.ok(DOCUMENTED[error.code] !== undefined, `undocumented code: ${what}`);
  if (status !== undefined) assert.equal(status, DOCUMENTED[error.code], what);
  assert.equal(typeof error.field, "string", `no field: ${what}`);
  const params = API_METHODS[c.method].params;
  const names = params.type === "object" ? Object.keys(params.properties) : [];
  if (c.bad.length > 0) {
    assert.equal(DOCUMENTED[error.code], 400, what);
    assert.ok(c.bad.includes(head(error.field)), `the wrong field: ${what}`);
  } else {
    assert.ok(names.includes(head(error.field)), `the wrong field: ${what}`);
  }
}

/** A room state the walk visits, and what makes it. */
interface RoomState {
  state: string;
  room: () => string;
  /** Not a room name. */
  malformed?: boolean;
}

/**
 * Walks every case in every room state, one call each and then all of a
 * state's in batches; the server must serve on, and log no failure.
 */
async function walk(world: World, states: RoomState[], logs: string[]) {
  const { chat } = world;
  // Every problem, not just the first: the report lists them all.
  const problems: string[] = [];
  const judge = (
    c: Case,
    status: number | undefined,
    body: Json,
    where: string,
  ) => {
    try {
      assertDocumented(c, status, body, where);
    } catch (error) {
      if (!(error instanceof assert.AssertionError)) throw error;
      problems.push(error.message.split("\n")[0]);
    }
  };
  for (const { state, room, malformed = false } of states) {
    const cases = Object.keys(API_METHODS).flatMap((method) =>
      casesOf(method, room, malformed)
    );
    for (const c of cases) {
      const answer = await api(chat, c.method, c.args);
      judge(c, answer.status, answer.body, state);
    }
    // The same in batches (each case made again: a fresh room is fresh).
    const again = Object.keys(API_METHODS).filter((m) => m !== "batch")
      .flatMap((method) => casesOf(method, room, malformed));
    for (let i = 0; i < again.length; i += 100) {
      const chunk = again.slice(i, i + 100);
      const answer = await api(chat, "batch", {
        commands: chunk.map((c) => ({ method: c.method, params: c.args })),
      });
      if (answer.status !== 200) {
        problems.push(`${state}: a batch answered ${answer.status}`);
        continue;
      }
      answer.body.result.replies.forEach((reply: Json, j: number) =>
        judge(chunk[j], undefined, reply, `${state}, in a batch`)
      );
    }
  }
  assert.deepEqual(problems, []);
  assert.deepEqual(
    logs.filter((line) => /request_failed|handler_failed/.test(line)),
    [],
  );
  // Still serving: a newcomer gets what the API publishes.
  const late = await jsonClient(chat, "/after-the-walk", { nick: "late" });
  const published = await ok(chat, "publish", {
    room: "after-the-walk",
    text: "still here",
  });
  assert.equal((await late.event("the message")).id, published.id);
  await late.close();
}

everywhere(
  "the walk: every method in every room state, each parameter missing, wrong, too long and at its limit, is a documented 2xx/4xx naming the field",
  async (site) => {
    const logs: string[] = [];
    await site.run(
      { quiet: false, logSink: (line) => logs.push(line) },
      async (world) => {
        const { chat, other } = world;
        const here = await jsonClient(chat, "/here", { nick: "ada" });
        const there = other &&
          await jsonClient(other.server, "/there", { nick: "bea" });
        await emptied(chat, "quiet");
        const states: RoomState[] = [
          { state: "held here", room: () => "here" },
          ...(there ? [{ state: "held elsewhere", room: () => "there" }] : []),
          {
            state: site.keeps ? "kept, nobody in it" : "emptied",
            room: () => "quiet",
          },
          { state: "never made", room: () => fresh() },
          { state: "malformed", room: () => "no room!", malformed: true },
        ];
        try {
          await walk(world, states, logs);
        } finally {
          await closeAll(here, ...(there ? [there] : []));
        }
      },
      true,
    );
  },
);

Deno.test("api walk: every error code it accepts is documented in the README's API section", async () => {
  const readme = await Deno.readTextFile(
    new URL("../README.md", import.meta.url),
  );
  const section = readme.split("\n## The HTTP API\n")[1].split("\n## ")[0]
    .replace(/\s+/g, " ");
  // "400 (`bad_json`, …), 401 (`unauthorized`), …": the codes by status.
  const listed = new Map(
    [...section.matchAll(/\b(\d{3}) \(([^)]*)\)/g)].map((
      [, status, codes],
    ) => [Number(status), codes]),
  );
  for (const [code, status] of Object.entries(DOCUMENTED)) {
    assert.ok(listed.get(status)?.includes(`\`${code}\``), `${status} ${code}`);
  }
});

// ---------------------------------------------------------------------------
// The walk over the socket's moderation commands
// ---------------------------------------------------------------------------

/** A moderation command's argument, as protocol.ts limits it. */
interface Argument {
  type: "string" | "integer";
  required?: boolean;
  /** Characters (strings) or value (integers) at most and at least. */
  max?: number;
  min?: number;
}

/** Each moderation command's arguments, in the order they are typed. */
const COMMAND_ARGS: Record<string, Record<string, Argument>> = {
  kick: {
    nick: { type: "string", required: true },
    reason: { type: "string", max: MAX_REASON_CHARS },
  },
  ban: {
    nick: { type: "string", required: true },
    minutes: { type: "integer", min: 1, max: MAX_MINUTES },
    reason: { type: "string", max: MAX_REASON_CHARS },
  },
  unban: { nick: { type: "string", required: true } },
  mute: {
    nick: { type: "string", required: true },
    minutes: { type: "integer", min: 1, max: MAX_MINUTES },
    reason: { type: "string", max: MAX_REASON_CHARS },
  },
  unmute: { nick: { type: "string", required: true } },
  topic: { text: { type: "string", required: true, max: MAX_TOPIC_CHARS } },
  slow: {
    seconds: { type: "integer", required: true, min: 0, max: MAX_SLOW_SECONDS },
  },
  delete: { id: { type: "integer", required: true, min: 1 } },
};

/** A valid value of each argument. */
const ARG_VALUES: Record<string, unknown> = {
  nick: "nobody",
  reason: "walk",
  minutes: 5,
  text: "walking",
  seconds: 0,
  id: 1_000_000,
};

/** The frames of the walk: each command, each argument at and past its edges. */
function commandFrames(): Record<string, unknown>[] {
  const frames: Record<string, unknown>[] = [];
  for (const [type, args] of Object.entries(COMMAND_ARGS)) {
    const base = Object.fromEntries(
      Object.entries(args).filter(([, arg]) => arg.required)
        .map(([name]) => [name, ARG_VALUES[name]]),
    );
    frames.push({ type, ...base });
    frames.push({ type });
    for (const [name, arg] of Object.entries(args)) {
      const values: unknown[] = arg.type === "string"
        ? [42, null, "", "w".repeat(10_000)]
        : ["5", 1.5, -1, 2 ** 53, Number.MAX_SAFE_INTEGER];
      if (arg.max !== undefined) {
        values.push(
          ...(arg.type === "string"
            ? ["w".repeat(arg.max), "w".repeat(arg.max + 1)]
            : [arg.max, arg.max + 1]),
        );
      }
      if (arg.min !== undefined) values.push(arg.min, arg.min - 1);
      for (const value of values) frames.push({ type, ...base, [name]: value });
    }
  }
  return frames;
}

/** A frame as a moderator types it (`/ban nick 5 reason`). */
function typed(frame: Record<string, unknown>): string {
  const { type, ...fields } = frame;
  const words = Object.keys(COMMAND_ARGS[type as string])
    .filter((name) => fields[name] !== undefined && fields[name] !== null)
    .map((name) => String(fields[name]));
  return `/${type} ${words.join(" ")}`.trimEnd();
}

/** Error codes a moderator's command may be refused with (protocol.ts). */
const COMMAND_CODES = new Set([
  "bad_request",
  "bad_nick",
  "too_long",
  "no_such_nick",
  "no_such_message",
  "not_banned",
]);

everywhere(
  "the walk over the socket's moderation commands: bad, missing and over-long arguments are refused, never a 1011 or an internal error",
  async (site) => {
    assert.deepEqual(
      new Set(Object.keys(COMMAND_ARGS)),
      MODERATION_TYPES,
      "every moderation command is walked",
    );
    const logs: string[] = [];
    await site.run(
      { quiet: false, logSink: (line) => logs.push(line) },
      async ({ chat }) => {
        const op = [OP_PROTOCOL_PREFIX + OP_KEY];
        const json = new Peer(chatUrl(chat, "/mods", { nick: "jay" }), [
          JSON_PROTOCOL,
          ...op,
        ]);
        await within(json.opened, "the JSON moderator");
        assert.equal((await json.event("the welcome")).type, "welcome");
        const text = new Peer(chatUrl(chat, "/mods", { nick: "tom" }), op);
        await within(text.opened, "the text moderator");
        await text.nextMatching(/^ \.\.\.\. you are tom in mods/, "welcome");
        const frames = commandFrames();
        try {
          for (const frame of frames) {
            // Answered in order: whatever comes before the history page
            // is this command's answer (or a room event).
            json.send(JSON.stringify(frame));
            json.send(JSON.stringify({ type: "history", before: 1 }));
            for (;;) {
              const event = await json.event(`the answer to ${frame.type}`);
              if (event.type === "history") break;
              if (event.type === "error") {
                assert.ok(
                  COMMAND_CODES.has(event.code),
                  `${JSON.stringify(frame).slice(0, 200)}: ${event.code}`,
                );
              }
            }
            text.send(typed(frame));
            text.send("/nick");
            for (;;) {
              const line = await text.next(`the answer to ${typed(frame)}`);
              if (line === " .... you are tom.") break;
              assert.doesNotMatch(line, /internal/i, typed(frame));
            }
          }
          assert.equal(json.isClosed || text.isClosed, false);
        } finally {
          const closes = await Promise.all([json.close(), text.close()]);
          for (const close of closes) {
            assert.notEqual(close.code, CloseCode.InternalError);
          }
        }
        assert.deepEqual(
          logs.filter((line) => /handler_failed|request_failed/.test(line)),
          [],
        );
      },
    );
  },
);

// ---------------------------------------------------------------------------
// Rooms a store keeps are rooms the API can use
// ---------------------------------------------------------------------------

const SESSION = "bob-session-secret-0123456789";

/** An event in a few words, for comparing histories. */
function brief(event: Json): string {
  const who = event.from ?? event.nick ?? event.by;
  const what = event.text ?? event.deleted;
  return `${event.type} ${who}${what === undefined ? "" : `: ${what}`}`;
}

/** The status of a WebSocket handshake on `path` (403 while banned). */
async function handshake(chat: ChatServer, path: string): Promise<number> {
  const raw = await RawClient.connect(chat.wsPort);
  try {
    return (await raw.upgrade(path)).status;
  } finally {
    raw.close();
  }
}

/** Waits until this process holds no room (its members' leaves are done). */
async function noRoomsHeld(chat: ChatServer): Promise<void> {
  await eventually(
    "no room held",
    async () => (await ok(chat, "info")).rooms === 0,
  );
}

everywhere(
  "a room nobody is in that the store keeps: publish, broadcast, topic, history, delete and the sanctions act on it, and the next to join sees them",
  (site) =>
    // No grace: banned bob's session is out of the room here at once.
    site.run({ sessionGrace: 0 }, async ({ chat }) => {
      const ada = await jsonClient(chat, "/quiet", { nick: "ada" });
      ada.send(JSON.stringify({ type: "message", text: "hello" }));
      const hello = await ada.event("ada's hello");
      const bob = await jsonClient(chat, "/quiet", { nick: "bob" }, SESSION);
      await ada.event("bob's join");
      await ok(chat, "ban", { room: "quiet", nick: "bob", reason: "spam" });
      assert.equal(
        (await within(bob.closed, "bob's ban")).code,
        CloseCode.Kicked,
      );
      await ada.close();
      await noRoomsHeld(chat);

      const room = { room: "quiet" };
      const posted = await ok(chat, "publish", { ...room, text: "posted" });
      assert.ok(posted.id > hello.id);
      const broadcast = await ok(chat, "broadcast", {
        rooms: ["quiet"],
        text: "to every room",
      });
      assert.deepEqual(broadcast.results, [
        { room: "quiet", id: posted.id + 1 },
      ]);
      await ok(chat, "topic", { ...room, text: "a quiet room" });
      await ok(chat, "delete", { ...room, id: hello.id });
      // The same limits, and nobody to kick or mute.
      assert.deepEqual(
        await refused(chat, "publish", {
          ...room,
          text: "w".repeat(MESSAGE_CHARS + 1),
        }),
        [400, "too_long", "text"],
      );
      assert.deepEqual(
        await refused(chat, "delete", { ...room, id: hello.id }),
        [404, "no_such_message", "id"],
      );
      for (const method of ["kick", "ban", "mute"]) {
        assert.deepEqual(
          await refused(chat, method, { ...room, nick: "ada" }),
          [404, "no_such_nick", "nick"],
          method,
        );
      }
      // bob's ban holds while nobody is in the room, until the app lifts it.
      assert.equal(await handshake(chat, "/quiet"), 403);
      assert.deepEqual(await ok(chat, "unban", { ...room, nick: "bob" }), {
        type: "moderated",
        action: "unban",
        nick: "bob",
      });
      const kept = [
        "join ada",
        "join bob",
        "kick bob",
        "leave ada",
        "message app: posted",
        "message app: to every room",
        "topic api: a quiet room",
        `delete api: ${hello.id}`,
      ];
      const page = await ok(chat, "history", room);
      assert.deepEqual(page.events.map(brief), kept);
      assert.equal(page.more, false);

      const cy = await jsonClient(chat, "/quiet", { nick: "cy" });
      assert.equal(cy.welcome.topic, "a quiet room");
      assert.deepEqual(cy.welcome.history.map(brief), [...kept, "join cy"]);
      const ids = cy.welcome.history.map((event: Json) => event.id);
      assert.deepEqual(ids, [...ids].sort((a, b) => a - b));
      const back = await jsonClient(chat, "/quiet", { nick: "bob" }, SESSION);
      assert.equal(back.nick, "bob");
      await closeAll(cy, back);
    }),
  (site) => site.keeps,
);

everywhere(
  "a room never made: publish makes it if --max-rooms allows (503 max_rooms if not; 404 in memory), and nothing else makes one",
  (site) =>
    site.run({ maxRooms: 1 }, async ({ chat }) => {
      const ada = await jsonClient(chat, "/full", { nick: "ada" });
      assert.deepEqual(
        await refused(chat, "publish", { room: "fresh", text: "first" }),
        site.keeps ? [503, "max_rooms", "room"] : [404, "no_such_room", "room"],
      );
      await ada.close();
      await noRoomsHeld(chat);
      const none = [404, "no_such_room", "room"];
      assert.deepEqual(
        await refused(chat, "history", { room: "fresh" }),
        none,
      );
      assert.deepEqual(
        await refused(chat, "topic", { room: "fresh", text: "t" }),
        none,
      );
      assert.deepEqual(
        await refused(chat, "delete", { room: "fresh", id: 1 }),
        none,
      );
      if (!site.keeps) {
        // Memory keeps nothing: a message into a room nobody is in would
        // be seen by nobody.
        assert.deepEqual(
          await refused(chat, "publish", { room: "fresh", text: "first" }),
          none,
        );
        const { results } = await ok(chat, "broadcast", {
          rooms: ["fresh"],
          text: "x",
        });
        assert.equal(results[0].error.code, "no_such_room");
        return;
      }
      assert.deepEqual(
        await ok(chat, "publish", { room: "fresh", text: "first" }),
        { id: 1 },
      );
      const bea = await jsonClient(chat, "/fresh", { nick: "bea" });
      assert.deepEqual(bea.welcome.history.map(brief), [
        "message app: first",
        "join bea",
      ]);
      // bea holds the one room there may be: a kept room is one more.
      assert.deepEqual(
        await refused(chat, "publish", { room: "full", text: "x" }),
        [503, "max_rooms", "room"],
      );
      await bea.close();
    }),
);

Deno.test("api on memory: nothing is kept, so a room nobody is in is 404 no_such_room; a ban it had is still lifted", async () => {
  await SITES[0].run({}, async ({ chat }) => {
    const ada = await jsonClient(chat, "/gone", { nick: "ada" });
    ada.send(JSON.stringify({ type: "message", text: "hello" }));
    const hello = await ada.event("ada's hello");
    const bob = await jsonClient(chat, "/gone", { nick: "bob" }, SESSION);
    await ok(chat, "ban", { room: "gone", nick: "bob" });
    await within(bob.closed, "bob's ban");
    await ada.close();
    await noRoomsHeld(chat);
    const none = [404, "no_such_room", "room"];
    const room = { room: "gone" };
    assert.deepEqual(
      await refused(chat, "publish", { ...room, text: "x" }),
      none,
    );
    assert.deepEqual(await refused(chat, "history", room), none);
    assert.deepEqual(
      await refused(chat, "topic", { ...room, text: "t" }),
      none,
    );
    assert.deepEqual(
      await refused(chat, "delete", { ...room, id: hello.id }),
      none,
    );
    assert.deepEqual(
      await refused(chat, "kick", { ...room, nick: "ada" }),
      [404, "no_such_nick", "nick"],
    );
    assert.equal(await handshake(chat, "/gone"), 403);
    assert.deepEqual(await ok(chat, "unban", { ...room, nick: "bob" }), {
      type: "moderated",
      action: "unban",
      nick: "bob",
    });
    const back = await jsonClient(chat, "/gone", { nick: "bob" }, SESSION);
    // A new room: nothing of the old one but its moderation was kept.
    assert.deepEqual(back.welcome.history.map(brief), ["join bob"]);
    await back.close();
  });
});

Deno.test({
  name:
    "api on redis: a room held on another process is reached there; once its last member left it is kept, and the app's posts keep it --room-ttl longer",
  ignore: SITES[2].ignore,
  fn: () =>
    SITES[2].run({ roomTtl: 60 }, async ({ chat, other, redisUrl }) => {
      const redis = createClient({ url: redisUrl });
      await redis.connect();
      const ttl = (room: string, key: "meta" | "events") =>
        redis.ttl(`chat:room:${room}:${key}`);
      try {
        const bea = await jsonClient(other!.server, "/there", { nick: "bea" });
        const across = await ok(chat, "publish", {
          room: "there",
          text: "across",
        });
        assert.equal((await bea.event("the message")).id, across.id);
        await ok(chat, "topic", { room: "there", text: "over there" });
        assert.equal((await bea.event("the topic")).text, "over there");
        await bea.close();
        await eventually(
          "bea's leave",
          async () =>
            (await ok(chat, "presence", { room: "there" })).people.length ===
              0,
        );
        // Kept for the other process's --room-ttl (a day) from bea's leave:
        // shortened here, the app's post gives it this one's again.
        await redis.expire("chat:room:there:meta", 5);
        await redis.expire("chat:room:there:events", 5);
        await ok(chat, "publish", { room: "there", text: "into the quiet" });
        for (const key of ["meta", "events"] as const) {
          const left = await ttl("there", key);
          assert.ok(left > 5 && left <= 60, `${key}: ${left}`);
        }
        // Made by publish: kept for --room-ttl, its history with it.
        await ok(chat, "publish", { room: "fresh", text: "first" });
        for (const key of ["meta", "events"] as const) {
          const left = await ttl("fresh", key);
          assert.ok(left > 0 && left <= 60, `${key}: ${left}`);
        }
        // The next to join, on the other process, sees what was posted.
        const cy = await jsonClient(other!.server, "/there", { nick: "cy" });
        assert.equal(cy.welcome.topic, "over there");
        assert.deepEqual(cy.welcome.history.map(brief).slice(-4), [
          "topic api: over there",
          "leave bea",
          "message app: into the quiet",
          "join cy",
        ]);
        const dee = await jsonClient(other!.server, "/fresh", { nick: "dee" });
        assert.deepEqual(dee.welcome.history.map(brief), [
          "message app: first",
          "join dee",
        ]);
        // With a member it is kept for good again.
        assert.equal(await ttl("fresh", "meta"), -1);
        assert.equal(await ttl("fresh", "events"), -1);
        await closeAll(cy, dee);
      } finally {
        await redis.close();
      }
    }, true),
});
