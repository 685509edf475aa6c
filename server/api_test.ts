/**
 * The HTTP API (http_api.ts) against a live server: every method, the key,
 * bad input, limits, the OpenAPI document, and across two processes on
 * Redis. Real HTTP calls, real chat clients.
 *
 * @module
 */

import assert from "node:assert/strict";
import { Validator } from "@seriousme/openapi-schema-validator";
import { API_MAX_BODY_BYTES, API_METHODS } from "./http_api.ts";
import type { ChatOptions, ChatServer } from "../main.ts";
import { CloseCode } from "../wire/protocol.ts";
import {
  hs256,
  logLines,
  SECRET,
  signedClient,
} from "../tests/auth_helpers.ts";
import {
  haveRedis,
  startChatProcess,
  startRedis,
} from "../tests/redis_helpers.ts";
import {
  closeAll,
  type Json,
  jsonClient,
  metric,
  textClient,
  withChat,
  within,
} from "../tests/test_helpers.ts";

const KEY = "k".repeat(16) + "0123456789abcdef0123";
const ADA = "ada-session-secret-0123456789";
const CAL = "cal-session-secret-0123456789";
const API = { apiKey: KEY };

/** A call to the API on the page port (or `port`): status and JSON body. */
async function call(
  chat: Pick<ChatServer, "port">,
  method: string,
  body: unknown = {},
  init: { headers?: Record<string, string>; port?: number; raw?: string } = {},
): Promise<{ status: number; body: Json; headers: Headers }> {
  const response = await fetch(
    `http://127.0.0.1:${init.port ?? chat.port}/api/${method}`,
    {
      method: "POST",
      headers: {
        authorization: `Bearer ${KEY}`,
        "content-type": "application/json",
        ...init.headers,
      },
      body: init.raw ?? JSON.stringify(body),
    },
  );
  const text = await response.text();
  return {
    status: response.status,
    body: text ? JSON.parse(text) : undefined,
    headers: response.headers,
  };
}

/** The methods each test below covers: the OpenAPI test holds them to the table. */
const TESTED = new Set<string>();
function covers(...methods: string[]): void {
  for (const method of methods) TESTED.add(method);
}

covers("publish");
Deno.test("api publish: a message in the room as --api-name (or from), with its id, to both protocols", async () => {
  await withChat(API, async (chat) => {
    const ada = await jsonClient(chat, "/ci", { nick: "ada" });
    const bob = await textClient(chat, "/ci", { nick: "bob" });
    await ada.event("bob's join");
    const published = await call(chat, "publish", {
      room: "ci",
      text: "Build #512 passed",
    });
    assert.equal(published.status, 200);
    const event = await ada.event("the published message");
    assert.deepEqual(published.body, { result: { id: event.id } });
    assert.equal(event.type, "message");
    assert.equal(event.from, "app");
    assert.equal(event.text, "Build #512 passed");
    assert.equal(await bob.next(), "app: Build #512 passed");
    const named = await call(chat, "publish", {
      room: "ci",
      text: "deploying",
      from: "deploy-bot",
    });
    assert.equal(named.status, 200);
    assert.equal(await bob.next(), "deploy-bot: deploying");
    // It is history like any event: a newcomer gets it.
    const cy = await jsonClient(chat, "/ci", { nick: "cy" });
    assert.ok(
      cy.welcome.history.some((e: Json) =>
        e.id === event.id && e.from === "app"
      ),
    );
    await closeAll(ada, bob, cy);
  });
});

covers("react");
Deno.test("api react: as the app and for a verified user (one each, `me` theirs on their own socket); history counts them; a verified user's edit through the API; bad keys, unknown ids and mutes refused", async () => {
  await withChat({ ...API, authSecret: SECRET }, async (chat) => {
    const token = await hs256({ sub: "u-ada", name: "ada" });
    const ada = await signedClient(chat, { token }, "/ci");
    ada.send(JSON.stringify({ type: "message", text: "relase notes" }));
    const said = await ada.event("ada's message");
    const reacted = await call(chat, "react", {
      room: "ci",
      id: said.id,
      key: "🚀",
    });
    assert.deepEqual(reacted, {
      status: 200,
      body: { result: { on: true, count: 1 } },
      headers: reacted.headers,
    });
    assert.deepEqual(await ada.event("the app's reaction"), {
      type: "react",
      target: said.id,
      key: "🚀",
      from: "app",
      on: true,
      count: 1,
    });
    // For ada (as her token's sub): her reaction, the same person as her socket.
    const forAda = await call(chat, "react", {
      room: "ci",
      id: said.id,
      key: "🚀",
      user: "u-ada",
      from: "ada",
    });
    assert.deepEqual(forAda.body, { result: { on: true, count: 2 } });
    ada.send(
      JSON.stringify({ type: "react", id: said.id, key: "🚀", on: true }),
    );
    await ada.event("ada's reaction through the API");
    ada.send(JSON.stringify({ type: "history", before: said.id + 100 }));
    const page = await ada.event("the history page");
    assert.deepEqual(
      page.events.find((e: Json) => e.id === said.id).reactions,
      [{ key: "🚀", count: 2, nicks: ["app", "ada"], me: true }],
      "her `on` changed nothing: the API's reaction was hers",
    );
    const history = await call(chat, "history", { room: "ci" });
    assert.deepEqual(
      history.body.result.events.find((e: Json) => e.id === said.id).reactions,
      [{ key: "🚀", count: 2, nicks: ["app", "ada"], me: false }],
    );
    // A verified user's edit through the API: her message, not the app's.
    const fixed = await call(chat, "edit", {
      room: "ci",
      id: said.id,
      text: "release notes",
      user: "u-ada",
      from: "ada",
    });
    assert.equal(fixed.status, 200);
    const edit = await ada.event("the edit");
    assert.deepEqual([edit.type, edit.text], ["edit", "release notes"]);
    const asApp = await call(chat, "edit", {
      room: "ci",
      id: said.id,
      text: "x",
    });
    assert.equal(asApp.body.error.code, "forbidden");
    const noName = await call(chat, "react", {
      room: "ci",
      id: said.id,
      key: "🚀",
      user: "u-ada",
    });
    assert.deepEqual(
      [noName.status, noName.body.error.code, noName.body.error.field],
      [400, "missing_field", "from"],
    );
    const badKey = await call(chat, "react", {
      room: "ci",
      id: said.id,
      key: "+1",
    });
    assert.deepEqual(
      [badKey.status, badKey.body.error.code, badKey.body.error.field],
      [400, "bad_request", "key"],
    );
    const unknown = await call(chat, "react", {
      room: "ci",
      id: 999,
      key: "👍",
    });
    assert.deepEqual(
      [unknown.status, unknown.body.error.code, unknown.body.error.field],
      [404, "no_such_message", "id"],
    );
    const muted = await call(chat, "mute", { room: "ci", nick: "ada" });
    assert.equal(muted.status, 200);
    const silenced = await call(chat, "react", {
      room: "ci",
      id: said.id,
      key: "👀",
      user: "u-ada",
      from: "ada",
    });
    assert.deepEqual(
      [silenced.status, silenced.body.error.code, silenced.body.error.field],
      [403, "muted", "user"],
    );
    assert.equal(ada.pending, 0, "nothing reached the room");
    await closeAll(ada);
  });
});

covers("edit");
Deno.test("api edit: the app replaces the text of its own message (an edit event everyone gets); another's is forbidden, an unknown one 404", async () => {
  await withChat(API, async (chat) => {
    const ada = await jsonClient(chat, "/ci", { nick: "ada" });
    const bob = await textClient(chat, "/ci", { nick: "bob" });
    await ada.event("bob's join");
    const posted = await call(chat, "publish", {
      room: "ci",
      text: "deployng",
    });
    const id = posted.body.result.id;
    assert.equal((await ada.event("the post")).text, "deployng");
    assert.equal(await bob.next(), "app: deployng");
    const edited = await call(chat, "edit", {
      room: "ci",
      id,
      text: "deploying",
    });
    assert.equal(edited.status, 200);
    const event = await ada.event("the edit");
    assert.deepEqual(edited.body, { result: { id: event.id } });
    assert.deepEqual(
      [event.type, event.from, event.target, event.text],
      ["edit", "app", id, "deploying"],
    );
    assert.equal(await bob.next(), "* app edited: deploying");
    // Not the app's (as that from), and not a message: refused, named.
    ada.send(JSON.stringify({ type: "message", text: "mine" }));
    const mine = await ada.event("ada's message");
    const other = await call(chat, "edit", {
      room: "ci",
      id: mine.id,
      text: "hijacked",
    });
    assert.equal(other.status, 403);
    assert.deepEqual(
      [other.body.error.code, other.body.error.field],
      ["forbidden", "from"],
    );
    const unknown = await call(chat, "edit", {
      room: "ci",
      id: 999,
      text: "x",
    });
    assert.equal(unknown.status, 404);
    assert.equal(unknown.body.error.code, "no_such_message");
    // A newcomer's welcome has the new text.
    const cy = await jsonClient(chat, "/ci", { nick: "cy" });
    assert.equal(
      cy.welcome.history.find((e: Json) => e.id === id).text,
      "deploying",
    );
    await closeAll(ada, bob, cy);
  });
});

Deno.test("api publish: the same idempotency_key publishes once and answers the same id", async () => {
  await withChat(API, async (chat) => {
    const ada = await jsonClient(chat, "/ci", { nick: "ada" });
    const args = { room: "ci", text: "once", idempotency_key: "build-512" };
    const [first, second] = await Promise.all([
      call(chat, "publish", args),
      call(chat, "publish", args),
    ]);
    assert.equal(first.status, 200);
    assert.deepEqual(second.body, first.body);
    assert.equal((await ada.event("the one message")).id, first.body.result.id);
    const other = await call(chat, "publish", {
      ...args,
      idempotency_key: "x",
    });
    assert.equal(other.body.result.id, first.body.result.id + 1);
    assert.equal((await ada.event("the second")).text, "once");
    await ada.close();
  });
});

Deno.test("api publish: unknown room 404, bad fields 400 naming the field, too long, bad from", async () => {
  await withChat({ ...API, maxMessageChars: 10 }, async (chat) => {
    const ada = await jsonClient(chat, "/ci", { nick: "ada" });
    const cases: [unknown, number, string, string?][] = [
      [{ room: "nowhere", text: "hi" }, 404, "no_such_room", "room"],
      [{ room: "ci" }, 400, "missing_field", "text"],
      [{ text: "hi" }, 400, "missing_field", "room"],
      [{ room: "ci", text: 5 }, 400, "bad_field", "text"],
      [{ room: "ci", text: "hi", extra: 1 }, 400, "unknown_field", "extra"],
      [{ room: "no room!", text: "hi" }, 400, "bad_field", "room"],
      [{ room: "ci", text: "far too long" }, 400, "too_long", "text"],
      [{ room: "ci", text: "   " }, 400, "bad_field", "text"],
      [{ room: "ci", text: "hi", from: "a b" }, 400, "bad_nick", "from"],
      [[1, 2], 400, "bad_field", ""],
    ];
    for (const [body, status, code, field] of cases) {
      const answer = await call(chat, "publish", body);
      assert.equal(answer.status, status, JSON.stringify(body));
      assert.equal(answer.body.error.code, code, JSON.stringify(body));
      if (field) assert.equal(answer.body.error.field, field);
    }
    await ada.close();
  });
});

covers("broadcast");
Deno.test("api broadcast: the same text into many rooms, each with its own answer", async () => {
  await withChat(API, async (chat) => {
    const a = await jsonClient(chat, "/a", { nick: "ann" });
    const b = await jsonClient(chat, "/b", { nick: "bob" });
    const answer = await call(chat, "broadcast", {
      rooms: ["a", "b", "nowhere"],
      text: "maintenance at noon",
    });
    assert.equal(answer.status, 200);
    const [ra, rb, rn] = answer.body.result.results;
    assert.equal((await a.event("a's copy")).id, ra.id);
    assert.equal((await b.event("b's copy")).id, rb.id);
    assert.deepEqual(rn.error.code, "no_such_room");
    const tooMany = await call(chat, "broadcast", {
      rooms: Array.from({ length: 101 }, (_, i) => `r${i}`),
      text: "x",
    });
    assert.equal(tooMany.body.error.field, "rooms");
    await closeAll(a, b);
  });
});

covers("presence", "rooms", "info");
Deno.test("api presence, rooms and info: who is where, with connections and user ids", async () => {
  await withChat({ ...API, authSecret: SECRET }, async (chat) => {
    const session = "s".repeat(30);
    const tab1 = await jsonClient(chat, "/", { nick: "ada" }, session);
    const tab2 = await jsonClient(chat, "/", {}, session);
    const token = await hs256({ sub: "42", name: "bob" });
    const bob = await signedClient(chat, { token });
    const cy = await jsonClient(chat, "/den", { nick: "cy" });
    const presence = await call(chat, "presence", { room: "lobby" });
    assert.deepEqual(presence.body.result.people, [
      { nick: "ada", connections: 2, op: false },
      { nick: "bob", user: "42", connections: 1, op: false },
    ]);
    assert.deepEqual(
      (await call(chat, "presence", { room: "nowhere" })).body.result.people,
      [],
    );
    assert.deepEqual(
      (await call(chat, "rooms")).body.result.rooms,
      [{ room: "den", members: 1 }, { room: "lobby", members: 2 }],
    );
    const info = (await call(chat, "info")).body.result;
    assert.equal(info.connections, 4);
    assert.equal(info.rooms, 2);
    assert.equal(info.store, "memory");
    assert.equal(info.storeUp, true);
    assert.match(info.version, /^\d+\.\d+\.\d+$/);
    assert.equal(typeof info.uptimeSeconds, "number");
    await closeAll(tab1, tab2, bob, cy);
  });
});

covers("history");
Deno.test("api history: the room's events before an id, oldest first, no private messages", async () => {
  await withChat(API, async (chat) => {
    const ada = await jsonClient(chat, "/", { nick: "ada" });
    const bob = await jsonClient(chat, "/", { nick: "bob" });
    await ada.event("bob's join");
    for (const text of ["one", "two", "three"]) {
      ada.send(JSON.stringify({ type: "message", text }));
    }
    ada.send(JSON.stringify({ type: "dm", to: "bob", text: "secret" }));
    await bob.nextMatching(/secret/);
    const all = await call(chat, "history", { room: "lobby" });
    assert.deepEqual(
      all.body.result.events.map((e: Json) => e.text ?? e.type),
      ["join", "join", "one", "two", "three"],
    );
    assert.equal(all.body.result.more, false);
    const ids = all.body.result.events.map((e: Json) => e.id);
    const page = await call(chat, "history", {
      room: "lobby",
      before: ids[3],
      limit: 2,
    });
    assert.deepEqual(
      page.body.result.events.map((e: Json) => e.id),
      [ids[1], ids[2]],
    );
    assert.equal(page.body.result.more, true);
    assert.equal(
      (await call(chat, "history", { room: "lobby", limit: 0 })).body.error
        .field,
      "limit",
    );
    await closeAll(ada, bob);
  });
});

covers("search");
Deno.test("api search: newest first, no private messages, a bad q is bad_request, under --api-rate", async () => {
  await withChat({ ...API, apiRate: 3 }, async (chat) => {
    const ada = await jsonClient(chat, "/", { nick: "ada" });
    const bob = await jsonClient(chat, "/", { nick: "bob" });
    await ada.event("bob's join");
    for (const text of ["deploy failed", "deploy fixed", "lunch"]) {
      ada.send(JSON.stringify({ type: "message", text }));
    }
    ada.send(JSON.stringify({ type: "dm", to: "bob", text: "deploy secret" }));
    await bob.nextMatching(/deploy secret/);
    const found = await call(chat, "search", { room: "lobby", q: "deploy" });
    assert.equal(found.status, 200);
    assert.deepEqual(
      found.body.result.events.map((e: Json) => e.text),
      ["deploy fixed", "deploy failed"],
    );
    assert.deepEqual(
      [found.body.result.more, found.body.result.scope],
      [false, "window"],
    );
    const bad = await call(chat, "search", { room: "lobby", q: '"deploy' });
    assert.equal(bad.status, 400);
    assert.deepEqual(bad.body.error, {
      code: "bad_request",
      message: 'unbalanced quotes: a "phrase" needs its closing quote',
      field: "q",
    });
    // The third call of the second: --api-rate 3.
    const over = await call(chat, "search", { room: "lobby", q: "fix*" });
    const refused = await call(chat, "search", { room: "lobby", q: "fix*" });
    assert.deepEqual([over.status, refused.status], [200, 429]);
    assert.deepEqual(
      over.body.result.events.map((e: Json) => e.text),
      ["deploy fixed"],
    );
    assert.equal(
      await metric(
        chat,
        'chat_api_requests_total{method="search",status="429"}',
      ),
      1,
    );
    await closeAll(ada, bob);
  });
});

covers("disconnect");
Deno.test("api disconnect: by nick in a room, or a verified user everywhere; unknown nick 404", async () => {
  await withChat({ ...API, authSecret: SECRET }, async (chat) => {
    const ada = await jsonClient(chat, "/", { nick: "ada" });
    const token = await hs256({ sub: "7", name: "bob" });
    const bob1 = await signedClient(chat, { token });
    const bob2 = await signedClient(chat, { token }, "/den");
    const cy = await jsonClient(chat, "/", { nick: "cy" });
    const one = await call(chat, "disconnect", {
      room: "lobby",
      nick: "cy",
      reason: "spam",
    });
    assert.deepEqual(one.body, { result: { people: 1 } });
    const closed = await within(cy.closed, "cy's close");
    assert.equal(closed.code, CloseCode.Kicked);
    assert.equal(closed.reason, "disconnected by the app: spam");
    const everywhere = await call(chat, "disconnect", { user: "7" });
    assert.deepEqual(everywhere.body, { result: { people: 2 } });
    await within(bob1.closed, "bob's lobby tab");
    await within(bob2.closed, "bob's den tab");
    const nobody = await call(chat, "disconnect", {
      room: "lobby",
      nick: "zed",
    });
    assert.equal(nobody.status, 404);
    assert.equal(nobody.body.error.code, "no_such_nick");
    assert.equal(
      (await call(chat, "disconnect", { nick: "ada" })).body.error.field,
      "room",
    );
    await closeAll(ada, bob1, bob2, cy);
  });
});

covers("kick", "ban", "unban", "mute", "unmute", "delete", "topic");
Deno.test("api moderation: every action as the moderator api, logged and counted", async () => {
  const logs = logLines();
  await withChat({ ...API, ...logs.options }, async (chat) => {
    const ada = await jsonClient(chat, "/", { nick: "ada" });
    const bob = await jsonClient(chat, "/", { nick: "bob" });
    await ada.event("bob's join");
    const ok = async (method: string, args: Json) => {
      const answer = await call(chat, method, { room: "lobby", ...args });
      assert.equal(
        answer.status,
        200,
        `${method}: ${JSON.stringify(answer.body)}`,
      );
      return answer.body.result;
    };
    await ok("topic", { text: "be kind" });
    assert.deepEqual(
      [(await ada.event("the topic")).type, (await bob.event("topic")).type],
      ["topic", "topic"],
    );
    await ok("mute", { nick: "bob", minutes: 5 });
    bob.send(JSON.stringify({ type: "message", text: "hello?" }));
    assert.equal((await bob.event("the refusal")).code, "muted");
    await ok("unmute", { nick: "bob" });
    bob.send(JSON.stringify({ type: "message", text: "thanks" }));
    const message = await ada.event("bob's message");
    assert.equal(message.text, "thanks");
    await bob.event("bob's own echo");
    await ok("delete", { id: message.id });
    const deleted = await ada.event("the delete");
    assert.deepEqual([deleted.type, deleted.id > message.id], ["delete", true]);
    await ok("kick", { nick: "bob", reason: "test" });
    assert.equal(
      (await within(bob.closed, "bob's kick")).code,
      CloseCode.Kicked,
    );
    await ok("ban", { nick: "ada", minutes: 1 });
    await within(ada.closed, "ada's ban");
    await ok("unban", { nick: "ada" });
    const missing = await call(chat, "kick", { room: "lobby", nick: "zed" });
    assert.equal(missing.status, 404);
    assert.equal(missing.body.error.code, "no_such_nick");
    const lines = logs.lines.filter((line) => line.includes(" moderation "));
    assert.equal(lines.length, 7);
    assert.ok(lines.every((line) => line.includes("by=api")), lines.join("\n"));
    assert.equal(
      await metric(chat, 'chat_moderation_total{action="kick"}'),
      1,
    );
    await closeAll(ada, bob);
  });
});

covers("batch");
Deno.test("api batch: several calls in order, each with its own answer", async () => {
  await withChat(API, async (chat) => {
    const ada = await jsonClient(chat, "/", { nick: "ada" });
    const answer = await call(chat, "batch", {
      commands: [
        { method: "publish", params: { room: "lobby", text: "first" } },
        { method: "publish", params: { room: "nowhere", text: "x" } },
        { method: "nope" },
        { method: "presence", params: { room: "lobby" } },
        { method: "batch", params: { commands: [] } },
      ],
    });
    assert.equal(answer.status, 200);
    const [first, nowhere, nope, presence, nested] = answer.body.result.replies;
    assert.equal((await ada.event("first")).id, first.result.id);
    assert.equal(nowhere.error.code, "no_such_room");
    assert.equal(nope.error.code, "unknown_method");
    assert.deepEqual(presence.result.people.map((p: Json) => p.nick), ["ada"]);
    assert.equal(nested.error.code, "bad_field");
    await ada.close();
  });
});

Deno.test("api key: none, wrong or in the URL is refused and never logged; both headers work", async () => {
  const logs = logLines();
  await withChat({ ...API, ...logs.options }, async (chat) => {
    const none = await call(chat, "info", {}, {
      headers: { authorization: "" },
    });
    assert.equal(none.status, 401);
    assert.equal(none.body.error.code, "unauthorized");
    const wrong = await call(chat, "info", {}, {
      headers: { authorization: `Bearer ${KEY.slice(1)}x` },
    });
    assert.equal(wrong.status, 401);
    const header = await call(chat, "info", {}, {
      headers: { authorization: "", "x-api-key": KEY },
    });
    assert.equal(header.status, 200);
    const url = await fetch(
      `http://127.0.0.1:${chat.port}/api/info?key=${KEY}`,
      { method: "POST", body: "{}" },
    );
    assert.equal(url.status, 400);
    assert.equal((await url.json()).error.code, "key_in_url");
    const get = await fetch(`http://127.0.0.1:${chat.port}/api/info`, {
      headers: { authorization: `Bearer ${KEY}` },
    });
    assert.equal(get.status, 405);
    await get.body?.cancel();
    assert.ok(!logs.lines.some((line) => line.includes(KEY)), "key logged");
    assert.ok(
      logs.lines.some((line) =>
        / api method=info status=401 ms=\d+/.test(line)
      ),
      logs.lines.join("\n"),
    );
  });
});

Deno.test("api bad input: not JSON, unknown method, a body over 64 KiB", async () => {
  await withChat(API, async (chat) => {
    const notJson = await call(chat, "info", undefined, { raw: "{" });
    assert.deepEqual([notJson.status, notJson.body.error.code], [
      400,
      "bad_json",
    ]);
    const unknown = await call(chat, "explode");
    assert.deepEqual(
      [unknown.status, unknown.body.error.code],
      [400, "unknown_method"],
    );
    const big = await call(chat, "publish", undefined, {
      raw: JSON.stringify({
        room: "lobby",
        text: "x".repeat(API_MAX_BODY_BYTES),
      }),
    });
    assert.deepEqual([big.status, big.body.error.code], [413, "too_large"]);
  });
});

Deno.test("api rate limit: over --api-rate a second gets 429 with Retry-After; counted by method and status", async () => {
  await withChat({ ...API, apiRate: 2 }, async (chat) => {
    const answers = [];
    for (let i = 0; i < 3; i++) answers.push(await call(chat, "info"));
    assert.deepEqual(answers.map((a) => a.status), [200, 200, 429]);
    assert.equal(answers[2].body.error.code, "rate_limited");
    assert.equal(answers[2].headers.get("retry-after"), "1");
    assert.equal(
      await metric(chat, 'chat_api_requests_total{method="info",status="200"}'),
      2,
    );
    assert.equal(
      await metric(chat, 'chat_api_requests_total{method="info",status="429"}'),
      1,
    );
  });
});

Deno.test("api off without --api-key; with --api-port it is only there", async () => {
  await withChat({}, async (chat) => {
    const off = await fetch(`http://127.0.0.1:${chat.port}/api/info`, {
      method: "POST",
      headers: { authorization: `Bearer ${KEY}` },
      body: "{}",
    });
    assert.equal(off.status, 404);
    assert.equal(await off.text(), "Not found\n");
  });
  await withChat({ ...API, apiPort: 0 }, async (chat) => {
    assert.ok(chat.apiPort && chat.apiPort !== chat.port);
    const there = await call(chat, "info", {}, { port: chat.apiPort });
    assert.equal(there.status, 200);
    const page = await fetch(`http://127.0.0.1:${chat.port}/api/info`, {
      method: "POST",
      headers: { authorization: `Bearer ${KEY}` },
      body: "{}",
    });
    assert.equal(page.status, 404);
    await page.body?.cancel();
    // Never on the chat port.
    const chatPort = await fetch(`http://127.0.0.1:${chat.wsPort}/api/info`, {
      method: "POST",
      headers: { authorization: `Bearer ${KEY}` },
      body: "{}",
    });
    assert.equal(chatPort.status, 426);
    await chatPort.body?.cancel();
  });
});

Deno.test("the start line says where the API answers: under the page's URL, on its own port, or nowhere without a key (never the key)", async () => {
  const started = async (
    options: ChatOptions,
    check: (start: Record<string, unknown>, chat: ChatServer) => void,
  ) => {
    const lines: string[] = [];
    await withChat({
      ...options,
      logFormat: "json",
      quiet: false,
      logSink: (line) => lines.push(line),
    }, (chat) => {
      const start = JSON.parse(lines[0]);
      assert.equal(start.event, "start");
      assert.equal(start.page, `http://127.0.0.1:${chat.port}/`);
      assert.equal(start.page, chat.pageUrl);
      assert.equal(start.chat, `ws://127.0.0.1:${chat.wsPort}/`);
      assert.equal(start.chat, chat.chatUrl);
      check(start, chat);
      return Promise.resolve();
    });
    assert.ok(
      !lines.some((line) => line.includes(KEY)),
      "the key is never logged",
    );
  };
  await started({}, (start) => assert.equal(start.api, undefined));
  await started(API, (start, chat) => {
    assert.equal(start.api, `http://127.0.0.1:${chat.port}/api/`);
  });
  await started({ ...API, apiPort: 0 }, (start, chat) => {
    assert.equal(start.api, `http://127.0.0.1:${chat.apiPort}/api/`);
  });
});

covers("private", "invite", "uninvite", "invites");
Deno.test("api private rooms: private, invite by nick, user and link, invites, uninvite; rooms leaves a private room out", async () => {
  const logs = logLines();
  const options = { ...API, authSecret: SECRET, ...logs.options };
  await withChat(options, async (chat) => {
    const ada = await jsonClient(chat, "/secret", { nick: "ada" }, ADA);
    const bob = await jsonClient(chat, "/", { nick: "bob" });
    const answer = (method: string, args: Json) =>
      call(chat, method, { room: "secret", ...args });
    const ok = async (method: string, args: Json) => {
      const { status, body } = await answer(method, args);
      assert.equal(status, 200, `${method}: ${JSON.stringify(body)}`);
      return body.result;
    };
    assert.deepEqual((await call(chat, "rooms", {})).body.result.rooms, [
      { room: "lobby", members: 1 },
      { room: "secret", members: 1 },
    ]);
    assert.deepEqual(await ok("private", { on: true }), { private: true });
    const event = await ada.event("the private event");
    assert.deepEqual([event.type, event.by, event.on], [
      "private",
      "api",
      true,
    ]);
    assert.deepEqual((await call(chat, "rooms", {})).body.result.rooms, [
      { room: "lobby", members: 1 },
    ]);
    assert.deepEqual(await ok("invite", { nick: "ada" }), { nick: "ada" });
    assert.deepEqual(await ok("invite", { user: "42" }), { user: "42" });
    const link = await ok("invite", { link: { uses: 3, hours: 2 } });
    assert.deepEqual(Object.keys(link).sort(), [
      "code",
      "link",
      "until",
      "url",
      "uses",
    ]);
    assert.equal(
      link.url,
      `http://127.0.0.1:${chat.port}/#secret&invite=${link.code}`,
    );
    assert.equal(link.uses, 3);
    assert.deepEqual(await ok("invites", {}), {
      private: true,
      people: [{ nick: "ada", by: "api" }, { user: "42", by: "api" }],
      links: [{ link: link.link, uses: 3, until: link.until, by: "api" }],
    });
    // Verified user 42, by any name and session: in.
    const token = await hs256({ sub: "42", name: "dee" });
    const dee = await signedClient(chat, { token }, "/secret");
    assert.equal(dee.welcome.private, true);
    // A code from the API works at the door; a revoked one does not.
    const cal = await jsonClient(chat, "/secret", { invite: link.code }, CAL);
    assert.equal(cal.welcome.private, true);
    assert.deepEqual(await ok("uninvite", { link: link.link }), {
      link: link.link,
    });
    assert.deepEqual(await ok("uninvite", { user: "42" }), { user: "42" });
    const none = await answer("uninvite", { user: "42" });
    assert.deepEqual(
      [none.status, none.body.error.code, none.body.error.field],
      [
        400,
        "not_invited",
        "user",
      ],
    );
    const two = await answer("invite", { nick: "ada", user: "42" });
    assert.deepEqual([two.status, two.body.error.code], [400, "missing_field"]);
    const nobody = await answer("invite", { nick: "nobody" });
    assert.deepEqual(
      [nobody.status, nobody.body.error.code, nobody.body.error.field],
      [404, "no_such_nick", "nick"],
    );
    const many = await answer("invite", { link: { uses: 1001 } });
    assert.deepEqual(
      [many.status, many.body.error.code, many.body.error.field],
      [400, "bad_request", "link.uses"],
    );
    assert.ok(
      logs.lines.some((line) =>
        line.endsWith(
          `INFO moderation action=invite room=secret by=api target=link:${link.link} uses=3 hours=2`,
        )
      ),
      logs.lines.join("\n"),
    );
    assert.ok(logs.lines.every((line) => !line.includes(link.code)));
    assert.equal(
      await metric(chat, 'chat_moderation_total{action="invite"}'),
      3,
    );
    await closeAll(ada, bob, dee, cal);
  });
});

Deno.test("api OpenAPI: GET /api/openapi.json validates, and every method in it has a handler and a test", async () => {
  await withChat(API, async (chat) => {
    const response = await fetch(
      `http://127.0.0.1:${chat.port}/api/openapi.json`,
    );
    const document = await response.json();
    const result = await new Validator().validate(document);
    assert.equal(result.valid, true, JSON.stringify(result.errors));
    assert.equal(document.openapi, "3.1.0");
    const methods = Object.keys(document.paths).map((path) =>
      path.slice("/api/".length)
    );
    assert.deepEqual(new Set(methods), new Set(Object.keys(API_METHODS)));
    assert.deepEqual(new Set(methods), TESTED);
  });
});

Deno.test({
  name:
    "api with --redis: publish on one process reaches both; disconnect and idempotency across processes",
  ignore: !haveRedis && !Deno.env.get("CI"),
  fn: async () => {
    const redis = await startRedis();
    const args = ["--api-key", KEY];
    const one = await startChatProcess(redis.url, { args });
    const two = await startChatProcess(redis.url, { args });
    try {
      const ada = await jsonClient(one.server, "/ci", { nick: "ada" });
      const bob = await jsonClient(two.server, "/ci", { nick: "bob" });
      await ada.event("bob's join");
      const published = await call(one, "publish", {
        room: "ci",
        text: "from one",
        idempotency_key: "k1",
      });
      assert.equal((await ada.event("on one")).id, published.body.result.id);
      assert.equal((await bob.event("on two")).id, published.body.result.id);
      const again = await call(two, "publish", {
        room: "ci",
        text: "from one",
        idempotency_key: "k1",
      });
      assert.deepEqual(again.body, published.body);
      assert.deepEqual(
        (await call(two, "rooms")).body.result.rooms,
        [{ room: "ci", members: 2 }],
      );
      const gone = await call(one, "disconnect", { room: "ci", nick: "bob" });
      assert.deepEqual(gone.body, { result: { people: 1 } });
      assert.equal(
        (await within(bob.closed, "bob on two")).code,
        CloseCode.Kicked,
      );
      // No second copy of the idempotent message came in the meantime.
      const next = await ada.event("bob's leave");
      assert.equal(next.type, "leave");
      await closeAll(ada, bob);
    } finally {
      await Promise.all([one.stop(), two.stop()]);
      await redis.kill();
    }
  },
});
