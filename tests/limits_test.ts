/**
 * One set of limits (protocol.ts): a topic, a reason, minutes, a message's
 * text and a nick are refused the same way, with the same error code and
 * message, whichever way they come in: a typed line (plain text), a JSON
 * frame, the HTTP API, or the terminal client (which refuses before
 * sending). At the limit each is taken, one over it refused, on each way in.
 * A real server; the plain-text protocol shows no codes, so its refusals
 * are counted by code in `chat_messages_refused_total`.
 *
 * @module
 */

import assert from "node:assert/strict";
import type { ChatServer } from "../main.ts";
import { parseInput } from "../clients/chat_client.ts";
import { OP_PROTOCOL_PREFIX } from "../wire/protocol.ts";
import { OP_KEY, signedClient } from "./auth_helpers.ts";
import {
  chatUrl,
  closeAll,
  type Json,
  jsonClient,
  metric,
  Peer,
  withChat,
  within,
} from "./test_helpers.ts";

const API_KEY = "limits-test-key-0123456789abcdef";
const MAX_MESSAGE = 10;
const OPTIONS = {
  opKey: OP_KEY,
  apiKey: API_KEY,
  maxMessageChars: MAX_MESSAGE,
};

/** The refusals, word for word (written out: the test holds the code to them). */
const TOPIC_TOO_LONG = {
  code: "too_long",
  message: "topic too long (max 300 characters)",
};
const REASON_TOO_LONG = {
  code: "too_long",
  message: "reason too long (max 80 characters)",
};
const BAD_MINUTES = {
  code: "bad_request",
  message: "minutes must be a whole number from 1 to 527040",
};
const MESSAGE_TOO_LONG = {
  code: "too_long",
  message: "message too long (max 10 characters)",
};
const BAD_NICK = {
  code: "bad_nick",
  message: 'a nickname is 1–24 letters, digits, "_" or "-"',
};

const MAX_MINUTES = 366 * 24 * 60;
const topic = (chars: number) => "t".repeat(chars);
const reason = (chars: number) => "r".repeat(chars);
const longNick = (chars: number) => "n".repeat(chars);

/** The three ways into a running chat, each answering a refusal alike. */
interface Ways {
  chat: ChatServer;
  /** A moderator speaking JSON (`--op-key`). */
  json: Peer & { nick: string };
  /** A moderator speaking plain text (`--op-key`). */
  text: Peer & { nick: string };
  /** The member the moderators act on. */
  bob: Peer & { nick: string };
}

async function withWays(fn: (ways: Ways) => Promise<void>): Promise<void> {
  await withChat(OPTIONS, async (chat) => {
    const bob = await jsonClient(chat, "/", { nick: "bob" }, SESSION);
    const json = await signedClient(chat, { opKey: OP_KEY }, "/", {
      nick: "jmod",
    });
    const text = new Peer(chatUrl(chat, "/", { nick: "tmod" }), [
      OP_PROTOCOL_PREFIX + OP_KEY,
    ]);
    await within(text.opened, "the connection to open");
    await text.nextMatching(/^ \.\.\.\. you are tmod /, "the welcome line");
    try {
      await fn({
        chat,
        json,
        text: Object.assign(text, { nick: "tmod" }),
        bob,
      });
    } finally {
      await closeAll(bob, json, text);
    }
  });
}

const SESSION = "limits-bob-session-secret-0123";

/** A JSON client's answer: the next error, or the next event `ok` accepts. */
async function jsonAnswer(
  peer: Peer,
  ok: (event: Json) => boolean,
): Promise<Json> {
  for (;;) {
    const event = await peer.event("an answer");
    if (event.type === "error" || ok(event)) return event;
  }
}

/** Sends a JSON frame and expects the refusal. */
async function jsonRefused(
  peer: Peer,
  frame: Json,
  refusal: { code: string; message: string },
): Promise<void> {
  peer.send(JSON.stringify(frame));
  const answer = await jsonAnswer(peer, () => false);
  assert.deepEqual(
    { code: answer.code, message: answer.message },
    refusal,
    JSON.stringify(frame).slice(0, 80),
  );
}

/** Sends a typed line and expects the refusal, its code counted. */
async function textRefused(
  ways: Ways,
  line: string,
  refusal: { code: string; message: string },
): Promise<void> {
  const sample = `chat_messages_refused_total{reason="${refusal.code}"}`;
  const before = await metric(ways.chat, sample);
  ways.text.send(line);
  assert.equal(
    await ways.text.nextMatching(/^ \.\.\.\. error: /),
    ` .... error: ${refusal.message}`,
    line.slice(0, 80),
  );
  assert.equal(await metric(ways.chat, sample), before + 1, sample);
}

/** An API call: its status and body. */
async function api(
  chat: ChatServer,
  method: string,
  body: Json,
): Promise<{ status: number; body: Json }> {
  const response = await fetch(`http://127.0.0.1:${chat.port}/api/${method}`, {
    method: "POST",
    headers: {
      authorization: `Bearer ${API_KEY}`,
      "content-type": "application/json",
    },
    body: JSON.stringify(body),
  });
  return { status: response.status, body: await response.json() };
}

/** Calls the API and expects the refusal (400, naming the field). */
async function apiRefused(
  chat: ChatServer,
  method: string,
  body: Json,
  field: string,
  refusal: { code: string; message: string },
): Promise<void> {
  const answer = await api(chat, method, body);
  assert.equal(answer.status, 400, `${method} ${field}`);
  assert.deepEqual(answer.body.error, { ...refusal, field });
}

/** Calls the API and expects it done. */
async function apiDone(
  chat: ChatServer,
  method: string,
  body: Json,
): Promise<Json> {
  const answer = await api(chat, method, body);
  assert.equal(answer.status, 200, JSON.stringify(answer.body));
  return answer.body.result;
}

/** The terminal client's answer to a typed line: refused before sending. */
function clientRefused(line: string, refusal: { message: string }): void {
  assert.deepEqual(parseInput(line), {
    kind: "usage",
    message: refusal.message,
  });
}

Deno.test("a topic over 300 characters is refused alike by text, JSON, the API and the terminal client; 300 is set on each", async () => {
  await withWays(async (ways) => {
    await textRefused(ways, `/topic ${topic(301)}`, TOPIC_TOO_LONG);
    await jsonRefused(
      ways.json,
      { type: "topic", text: topic(301) },
      TOPIC_TOO_LONG,
    );
    await apiRefused(
      ways.chat,
      "topic",
      { room: "lobby", text: topic(301) },
      "text",
      TOPIC_TOO_LONG,
    );
    clientRefused(`/topic ${topic(301)}`, TOPIC_TOO_LONG);

    const setBy = (by: string) => (event: Json) =>
      event.type === "topic" && event.by === by;
    ways.text.send(`/topic ${topic(300)}`);
    assert.equal(
      await ways.text.nextMatching(/^ \.\.\.\. (error|tmod set)/),
      ` .... tmod set the topic: ${topic(300)}`,
    );
    ways.json.send(JSON.stringify({ type: "topic", text: topic(300) }));
    assert.equal((await jsonAnswer(ways.json, setBy("jmod"))).text, topic(300));
    await apiDone(ways.chat, "topic", { room: "lobby", text: topic(300) });
    assert.equal((await jsonAnswer(ways.bob, setBy("api"))).text, topic(300));
    assert.deepEqual(parseInput(`/topic ${topic(300)}`), {
      kind: "send",
      frame: { type: "topic", text: topic(300) },
    });
  });
});

Deno.test("a reason over 80 characters is refused alike by text, JSON, the API and the terminal client; 80 is taken on each", async () => {
  await withWays(async (ways) => {
    for (const command of ["kick", "ban", "mute"]) {
      await textRefused(
        ways,
        `/${command} bob ${reason(81)}`,
        REASON_TOO_LONG,
      );
      await jsonRefused(
        ways.json,
        { type: command, nick: "bob", reason: reason(81) },
        REASON_TOO_LONG,
      );
      await apiRefused(
        ways.chat,
        command,
        { room: "lobby", nick: "bob", reason: reason(81) },
        "reason",
        REASON_TOO_LONG,
      );
      clientRefused(`/${command} bob ${reason(81)}`, REASON_TOO_LONG);
    }
    // The API's disconnect has a reason too: the same one.
    await apiRefused(
      ways.chat,
      "disconnect",
      { room: "lobby", nick: "bob", reason: reason(81) },
      "reason",
      REASON_TOO_LONG,
    );

    // At the limit: a mute (it keeps bob in the room), then lifted.
    ways.text.send(`/mute bob ${reason(80)}`);
    assert.equal(
      await ways.text.nextMatching(/^ \.\.\.\. (error|bob is)/),
      " .... bob is muted.",
    );
    ways.text.send("/unmute bob");
    await ways.text.nextMatching(/^ \.\.\.\. bob is unmuted\.$/);
    const moderated = (action: string) => (event: Json) =>
      event.type === "moderated" && event.action === action;
    ways.json.send(
      JSON.stringify({ type: "mute", nick: "bob", reason: reason(80) }),
    );
    assert.equal((await jsonAnswer(ways.json, moderated("mute"))).nick, "bob");
    ways.json.send(JSON.stringify({ type: "unmute", nick: "bob" }));
    await jsonAnswer(ways.json, moderated("unmute"));
    await apiDone(ways.chat, "mute", {
      room: "lobby",
      nick: "bob",
      reason: reason(80),
    });
    await apiDone(ways.chat, "unmute", { room: "lobby", nick: "bob" });
    assert.deepEqual(parseInput(`/mute bob ${reason(80)}`), {
      kind: "send",
      frame: {
        type: "mute",
        nick: "bob",
        minutes: undefined,
        reason: reason(80),
      },
    });
  });
});

Deno.test("minutes past a year (or 0) are refused alike by text, JSON, the API and the terminal client; a year is taken on each", async () => {
  await withWays(async (ways) => {
    for (const command of ["ban", "mute"]) {
      for (const minutes of [MAX_MINUTES + 1, 0]) {
        await textRefused(
          ways,
          `/${command} bob ${minutes} spam`,
          BAD_MINUTES,
        );
        await jsonRefused(
          ways.json,
          { type: command, nick: "bob", minutes },
          BAD_MINUTES,
        );
        await apiRefused(
          ways.chat,
          command,
          { room: "lobby", nick: "bob", minutes },
          "minutes",
          BAD_MINUTES,
        );
        clientRefused(`/${command} bob ${minutes} spam`, BAD_MINUTES);
      }
    }

    // At the limit: a mute for a year, then lifted.
    ways.text.send(`/mute bob ${MAX_MINUTES}`);
    assert.equal(
      await ways.text.nextMatching(/^ \.\.\.\. (error|bob is)/),
      ` .... bob is muted for ${MAX_MINUTES} min.`,
    );
    ways.text.send("/unmute bob");
    await ways.text.nextMatching(/^ \.\.\.\. bob is unmuted\.$/);
    ways.json.send(
      JSON.stringify({ type: "mute", nick: "bob", minutes: MAX_MINUTES }),
    );
    const muted = await jsonAnswer(
      ways.json,
      (event) => event.type === "moderated" && event.action === "mute",
    );
    assert.equal(muted.minutes, MAX_MINUTES);
    ways.json.send(JSON.stringify({ type: "unmute", nick: "bob" }));
    await jsonAnswer(
      ways.json,
      (event) => event.type === "moderated" && event.action === "unmute",
    );
    const result = await apiDone(ways.chat, "mute", {
      room: "lobby",
      nick: "bob",
      minutes: MAX_MINUTES,
    });
    assert.equal(result.minutes, MAX_MINUTES);
    await apiDone(ways.chat, "unmute", { room: "lobby", nick: "bob" });
    assert.equal(parseInput(`/mute bob ${MAX_MINUTES}`).kind, "send");
  });
});

Deno.test("a message over --max-message-chars is refused alike by text, JSON and the API; at the limit it is posted on each", async () => {
  await withWays(async (ways) => {
    const over = "m".repeat(MAX_MESSAGE + 1);
    const at = "m".repeat(MAX_MESSAGE);
    await textRefused(ways, over, MESSAGE_TOO_LONG);
    await jsonRefused(
      ways.json,
      { type: "message", text: over },
      MESSAGE_TOO_LONG,
    );
    await jsonRefused(
      ways.json,
      { type: "dm", to: "bob", text: over },
      MESSAGE_TOO_LONG,
    );
    await apiRefused(
      ways.chat,
      "publish",
      { room: "lobby", text: over },
      "text",
      MESSAGE_TOO_LONG,
    );
    await apiRefused(
      ways.chat,
      "broadcast",
      { rooms: ["lobby"], text: over },
      "text",
      MESSAGE_TOO_LONG,
    );

    const from = (nick: string) => (event: Json) =>
      event.type === "message" && event.from === nick;
    ways.text.send(at);
    assert.equal(
      await ways.text.nextMatching(/^(tmod: | \.\.\.\. error)/),
      `tmod: ${at}`,
    );
    ways.json.send(JSON.stringify({ type: "message", text: at }));
    assert.equal((await jsonAnswer(ways.json, from("jmod"))).text, at);
    await apiDone(ways.chat, "publish", { room: "lobby", text: at });
    assert.equal((await jsonAnswer(ways.bob, from("app"))).text, at);
  });
});

Deno.test("a nick over 24 characters is refused alike by text, JSON, the API and the terminal client; 24 is taken on each", async () => {
  await withWays(async (ways) => {
    await textRefused(ways, `/nick ${longNick(25)}`, BAD_NICK);
    await jsonRefused(
      ways.json,
      { type: "nick", nick: longNick(25) },
      BAD_NICK,
    );
    await apiRefused(
      ways.chat,
      "publish",
      { room: "lobby", text: "hi", from: longNick(25) },
      "from",
      BAD_NICK,
    );
    clientRefused(`/nick ${longNick(25)}`, BAD_NICK);
    // A nick a moderator names: no member can hold it, so it is refused alike.
    await textRefused(ways, `/mute ${longNick(25)}`, BAD_NICK);
    await jsonRefused(
      ways.json,
      { type: "mute", nick: longNick(25) },
      BAD_NICK,
    );
    await apiRefused(
      ways.chat,
      "mute",
      { room: "lobby", nick: longNick(25) },
      "nick",
      BAD_NICK,
    );
    clientRefused(`/mute ${longNick(25)}`, BAD_NICK);

    const renamed = (event: Json) => event.type === "nick";
    ways.text.send(`/nick ${"a".repeat(24)}`);
    assert.equal(
      await ways.text.nextMatching(/^ \.\.\.\. (error|tmod is)/),
      ` .... tmod is now known as ${"a".repeat(24)}.`,
    );
    ways.json.send(JSON.stringify({ type: "nick", nick: "b".repeat(24) }));
    const nick = await jsonAnswer(
      ways.json,
      (event) => renamed(event) && event.from === "jmod",
    );
    assert.equal(nick.to, "b".repeat(24));
    await apiDone(ways.chat, "publish", {
      room: "lobby",
      text: "hi",
      from: "c".repeat(24),
    });
    const posted = await jsonAnswer(
      ways.bob,
      (event) => event.type === "message" && event.text === "hi",
    );
    assert.equal(posted.from, "c".repeat(24));
    // And a member with a 24-character nick is named by it on every way in.
    await apiDone(ways.chat, "mute", { room: "lobby", nick: "b".repeat(24) });
    assert.equal(parseInput(`/nick ${"a".repeat(24)}`).kind, "send");
  });
});
