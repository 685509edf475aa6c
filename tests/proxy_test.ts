/**
 * The proxy the app answers (issue 28 point 2; server/proxy.ts) through
 * real servers: a chat and a real local HTTP app (`Deno.serve`) that
 * answers as each test says. Connections and messages allowed, refused
 * and changed, in both protocols; what the app is asked; batching and
 * order; no answer, a late one or a bad one, failing open and closed; the
 * signature; and README.md's example app, run as written.
 *
 * @module
 */

import assert from "node:assert/strict";
import type { ChatOptions, ChatServer } from "../main.ts";
import {
  chatUrl,
  cli,
  closeAll,
  eventually,
  type Json,
  jsonClient,
  metric,
  Peer,
  RawClient,
  textClient,
  withChat,
  within,
} from "./test_helpers.ts";
import { expectedSignature } from "./webhook_helpers.ts";
import {
  PROXY_CONCURRENCY,
  PROXY_MAX_ANSWER_BYTES,
  PROXY_MAX_BATCH,
  PROXY_MAX_WAITING,
} from "../server/proxy.ts";
import {
  CloseCode,
  JSON_PROTOCOL,
  REFUSALS_BY_CLOSE_PROTOCOL,
} from "../wire/protocol.ts";

/** One request the app got. */
interface Asked {
  path: string;
  headers: Headers;
  body: string;
  json: Json;
}

/** What the app answers: a JSON body, a Response, or `hang` (never). */
type Reply = Json | Response | "hang";

/** A local app on a free loopback port that answers as told. */
class App {
  readonly asked: Asked[] = [];
  /** Answers a request (change it at any time). */
  answer: (asked: Asked) => Reply | Promise<Reply> = allowAll;
  #server: Deno.HttpServer<Deno.NetAddr>;
  #hung = new Set<() => void>();

  constructor() {
    this.#server = Deno.serve(
      { port: 0, hostname: "127.0.0.1", onListen: () => {} },
      async (request) => {
        const body = await request.text();
        const asked: Asked = {
          path: new URL(request.url).pathname,
          headers: request.headers,
          body,
          json: JSON.parse(body),
        };
        this.asked.push(asked);
        const reply = await this.answer(asked);
        if (reply === "hang") {
          await new Promise<void>((resolve) => this.#hung.add(resolve));
          return new Response("too late");
        }
        return reply instanceof Response ? reply : Response.json(reply);
      },
    );
  }

  get url(): string {
    return `http://127.0.0.1:${this.#server.addr.port}`;
  }

  /** The publishes the app was asked about, in order, over every request. */
  get publishes(): Json[] {
    return this.asked.filter((a) => a.path === "/publish")
      .flatMap((a) => a.json.publishes);
  }

  /** The connects the app was asked about, in order. */
  get connects(): Json[] {
    return this.asked.filter((a) => a.path === "/connect")
      .flatMap((a) => a.json.connects);
  }

  async close(): Promise<void> {
    for (const wake of this.#hung) wake();
    await this.#server.shutdown();
  }
}

/** Lets everything through. */
function allowAll(asked: Asked): Json {
  const asks = asked.json.publishes ?? asked.json.connects;
  return { results: asks.map(() => ({ allow: true })) };
}

/**
 * The tests' word filter: "spam" is refused with a code of the app's,
 * "shout TEXT" becomes TEXT in capitals, "bad code" is refused with a
 * code that is not one, the rest goes.
 */
function filter(asked: Asked): Json {
  return {
    results: asked.json.publishes.map((ask: Json) =>
      /spam/.test(ask.text)
        ? { allow: false, code: "no_spam", reason: "no spam here" }
        : ask.text.startsWith("shout ")
        ? { allow: true, text: ask.text.slice(6).toUpperCase() }
        : ask.text === "bad code"
        ? { allow: false, code: "Not A Code!" }
        : { allow: true }
    ),
  };
}

/**
 * Runs `fn` with an app and a chat that asks it (`which`: about
 * connections, messages or both); both always stopped.
 */
async function withApp(
  which: ("connect" | "publish")[],
  options: ChatOptions,
  fn: (app: App, chat: ChatServer) => Promise<void>,
  answer?: App["answer"],
): Promise<void> {
  const app = new App();
  if (answer) app.answer = answer;
  try {
    await withChat({
      ...(which.includes("connect")
        ? { proxyConnect: `${app.url}/connect` }
        : {}),
      ...(which.includes("publish")
        ? { proxyPublish: `${app.url}/publish` }
        : {}),
      ...options,
    }, (chat) => fn(app, chat));
  } finally {
    await app.close();
  }
}

/** Sends a JSON frame. */
function send(peer: Peer, frame: Json): void {
  peer.send(JSON.stringify(frame));
}

/** The next event of `type` (others before it are skipped). */
async function next(peer: Peer, type: string): Promise<Json> {
  for (;;) {
    const event = await peer.event(`a ${type} event`);
    if (event.type === type) return event;
  }
}

/** A WebSocket handshake's status and body, by a raw client. */
async function door(chat: ChatServer, path: string): Promise<[number, string]> {
  const raw = await RawClient.connect(chat.wsPort);
  try {
    const { status, body } = await raw.upgrade(path);
    return [status, body];
  } finally {
    raw.close();
  }
}

// ---------------------------------------------------------------------------
// Publish
// ---------------------------------------------------------------------------

Deno.test("publish proxy, JSON: the app allows, refuses (its code, to the sender alone) and replaces a message's text; it is asked with the room, nick, address and text", async () => {
  await withApp(["publish"], {}, async (app, chat) => {
    const ada = await jsonClient(chat, "/lobby", { nick: "ada" });
    const bob = await jsonClient(chat, "/lobby", { nick: "bob" });
    await next(ada, "join");
    send(ada, { type: "message", text: "buy spam now" });
    assert.deepEqual(await ada.event(), {
      type: "error",
      code: "no_spam",
      message: "no spam here",
    });
    send(ada, { type: "message", text: "shout hello" });
    const loud = await next(bob, "message");
    assert.deepEqual([loud.from, loud.text], ["ada", "HELLO"]);
    assert.equal((await next(ada, "message")).text, "HELLO");
    send(ada, { type: "message", text: "bad code" });
    assert.deepEqual(await ada.event(), {
      type: "error",
      code: "refused_by_app",
      message: "refused by the app",
    });
    send(ada, { type: "message", text: "plain" });
    assert.equal((await next(ada, "message")).text, "plain");
    // Bob saw the replaced one and the plain one only.
    assert.equal((await next(bob, "message")).text, "plain");
    assert.equal(bob.pending, 0);
    assert.deepEqual(app.publishes[0], {
      room: "lobby",
      nick: "ada",
      address: "127.0.0.1",
      kind: "message",
      text: "buy spam now",
    });
    assert.deepEqual(
      app.publishes.map((ask) => ask.text),
      ["buy spam now", "shout hello", "bad code", "plain"],
    );
    const history = (await jsonClient(chat, "/lobby", { nick: "cy" })).welcome
      .history.filter((e: Json) => e.type === "message")
      .map((e: Json) => e.text);
    assert.deepEqual(history, ["HELLO", "plain"]);
    assert.equal(
      await metric(
        chat,
        'chat_proxy_verdicts_total{proxy="publish",verdict="refuse"}',
      ),
      2,
    );
    assert.equal(
      await metric(
        chat,
        'chat_proxy_verdicts_total{proxy="publish",verdict="replace"}',
      ),
      1,
    );
    await closeAll(ada, bob);
  }, filter);
});

Deno.test("publish proxy, plain text: a refusal is an error line to the sender, a replacement is what the room sees", async () => {
  await withApp(["publish"], {}, async (_app, chat) => {
    const ada = await textClient(chat, "/lobby", { nick: "ada" });
    const bob = await jsonClient(chat, "/lobby", { nick: "bob" });
    ada.send("spam spam");
    assert.equal(
      await ada.nextMatching(/error/),
      " .... error: no spam here",
    );
    ada.send("shout hi there");
    assert.equal(await ada.nextMatching(/HI THERE/), "ada: HI THERE");
    assert.equal((await next(bob, "message")).text, "HI THERE");
    assert.equal(bob.pending, 0);
    await closeAll(ada, bob);
  }, filter);
});

Deno.test("publish proxy: actions, replies, edits and direct messages are asked about too, each with its kind", async () => {
  await withApp(["publish"], {}, async (app, chat) => {
    const ada = await jsonClient(chat, "/lobby", { nick: "ada" });
    const bob = await jsonClient(chat, "/lobby", { nick: "bob" });
    send(ada, { type: "message", text: "first" });
    const first = await next(bob, "message");
    send(ada, { type: "action", text: "waves" });
    assert.equal((await next(bob, "action")).text, "waves");
    send(ada, { type: "message", text: "shout answer", replyTo: first.id });
    const reply = await next(bob, "message");
    assert.deepEqual([reply.text, reply.replyTo.id], ["ANSWER", first.id]);
    send(ada, { type: "edit", id: first.id, text: "shout edited" });
    const edit = await next(bob, "edit");
    assert.deepEqual([edit.target, edit.text], [first.id, "EDITED"]);
    send(ada, { type: "dm", to: "bob", text: "spam for you" });
    assert.equal((await next(ada, "error")).code, "no_spam");
    send(ada, { type: "dm", to: "bob", text: "shout psst" });
    assert.equal((await next(bob, "dm")).text, "PSST");
    assert.deepEqual(
      app.publishes.map((ask) => [ask.kind, ask.replyTo, ask.id, ask.to]),
      [
        ["message", undefined, undefined, undefined],
        ["action", undefined, undefined, undefined],
        ["message", first.id, undefined, undefined],
        ["edit", undefined, first.id, undefined],
        ["dm", undefined, undefined, "bob"],
        ["dm", undefined, undefined, "bob"],
      ],
    );
    // Not asked: typing, reactions, /who, a message the chat refuses itself.
    send(ada, { type: "react", id: first.id, key: "👍" });
    await next(bob, "react");
    send(ada, { type: "message", text: "x".repeat(3000) });
    assert.equal((await next(ada, "error")).code, "too_long");
    assert.equal(app.publishes.length, 6);
    await closeAll(ada, bob);
  }, filter);
});

Deno.test("publish proxy: messages sent in one go reach the app in one request, and are stored in the order sent", async () => {
  await withApp(["publish"], {}, async (app, chat) => {
    const ada = await jsonClient(chat, "/lobby", { nick: "ada" });
    const bob = await jsonClient(chat, "/lobby", { nick: "bob" });
    const texts = Array.from({ length: 8 }, (_, i) => `m${i}`);
    for (const text of texts) send(ada, { type: "message", text });
    for (const text of texts) {
      assert.equal((await next(bob, "message")).text, text);
    }
    const requests = app.asked.filter((a) => a.path === "/publish");
    assert.ok(
      requests.some((request) => request.json.publishes.length > 1),
      `several messages in one request: ${
        requests.map((r) => r.json.publishes.length)
      }`,
    );
    assert.ok(requests.length < texts.length);
    await closeAll(ada, bob);
  });
});

Deno.test("publish proxy: a late answer holds back the sender's later frames, a rename too, and everything comes out in the order sent", async () => {
  let first = true;
  await withApp(["publish"], {}, async (app, chat) => {
    const ada = await jsonClient(chat, "/lobby", { nick: "ada" });
    const bob = await jsonClient(chat, "/lobby", { nick: "bob" });
    send(ada, { type: "message", text: "one" });
    await new Promise((resolve) => setTimeout(resolve, 30));
    send(ada, { type: "nick", nick: "ada2" });
    send(ada, { type: "message", text: "two" });
    send(ada, { type: "message", text: "three" });
    const seen: string[] = [];
    while (seen.length < 4) {
      const event = await bob.event();
      if (event.type === "message") seen.push(`${event.from}: ${event.text}`);
      if (event.type === "nick") seen.push(`${event.from} -> ${event.to}`);
    }
    assert.deepEqual(seen, [
      "ada: one",
      "ada -> ada2",
      "ada2: two",
      "ada2: three",
    ]);
    assert.deepEqual(app.publishes.map((ask) => ask.text), [
      "one",
      "two",
      "three",
    ]);
    // Those after the rename were asked about under the nick they went out with.
    assert.deepEqual(app.publishes.map((ask) => ask.nick), [
      "ada",
      "ada2",
      "ada2",
    ]);
    await closeAll(ada, bob);
  }, async (asked) => {
    // The first request waits 300 ms; the later ones are answered at once.
    if (first) {
      first = false;
      await new Promise((resolve) => setTimeout(resolve, 300));
    }
    return allowAll(asked);
  });
});

Deno.test("publish proxy: a message sent after a /join still waiting behind a late answer is asked about in the room it goes to, and refused there", async () => {
  let first = true;
  await withApp(["publish"], {}, async (app, chat) => {
    // `/join` is plain text's (the page opens another socket instead).
    const ada = await textClient(chat, "/lobby", { nick: "ada" });
    const cy = await jsonClient(chat, "/b", { nick: "cy" });
    ada.send("one");
    await new Promise((resolve) => setTimeout(resolve, 30));
    ada.send("/join b");
    ada.send("two");
    assert.equal(await ada.nextMatching(/error/), " .... error: lobby only");
    assert.deepEqual(
      app.publishes.map((ask) => [ask.room, ask.text]),
      [["lobby", "one"], ["b", "two"]],
    );
    // cy in #b saw ada come, and nothing of "two".
    send(cy, { type: "message", text: "after" });
    for (;;) {
      const event = await cy.event("cy's own message");
      assert.notEqual(event.text, "two");
      if (event.type === "message" && event.text === "after") break;
    }
    await closeAll(ada, cy);
  }, async (asked) => {
    // The first request waits 300 ms; ada may speak in the lobby only.
    if (first) {
      first = false;
      await new Promise((resolve) => setTimeout(resolve, 300));
    }
    return {
      results: asked.json.publishes.map((ask: Json) =>
        ask.room === "lobby" || ask.nick !== "ada"
          ? { allow: true }
          : { allow: false, code: "lobby_only", reason: "lobby only" }
      ),
    };
  });
});

Deno.test("publish proxy: no answer within --proxy-timeout-ms lets the message through failing open, and refuses it with unavailable failing closed", async () => {
  for (const fail of ["open", "closed"] as const) {
    await withApp(
      ["publish"],
      { proxyTimeoutMs: 150, proxyFail: fail },
      async (app, chat) => {
        const ada = await jsonClient(chat, "/lobby", { nick: "ada" });
        const started = Date.now();
        send(ada, { type: "message", text: "anyone?" });
        const event = await ada.event();
        const waited = Date.now() - started;
        if (fail === "open") {
          assert.deepEqual([event.type, event.text], ["message", "anyone?"]);
        } else {
          assert.deepEqual(event, {
            type: "error",
            code: "unavailable",
            message: "the chat's app did not answer: try again",
          });
        }
        assert.ok(waited >= 140 && waited < 2000, `waited ${waited} ms`);
        assert.equal(app.publishes.length, 1);
        assert.equal(
          await metric(
            chat,
            `chat_proxy_verdicts_total{proxy="publish",verdict="failed_${fail}"}`,
          ),
          1,
        );
        assert.equal(
          await metric(
            chat,
            'chat_proxy_requests_total{proxy="publish",outcome="failed"}',
          ),
          1,
        );
        await ada.close();
      },
      () => "hang",
    );
  }
});

Deno.test("publish proxy: a bad answer (not JSON, a 500, the wrong number of results, a result that is none, one too long) counts as no answer, per --proxy-fail", async () => {
  const bad: [string, (asked: Asked) => Reply][] = [
    ["not JSON", () => new Response("ok")],
    ["a 500", () => new Response("{}", { status: 500 })],
    ["too few results", () => ({ results: [] })],
    ["no results", () => ({ allowed: true })],
    ["a result that is none", () => ({ results: [{ allow: "yes" }] })],
    [
      "an answer too long",
      () => ({
        results: [{ allow: true }],
        padding: "x".repeat(PROXY_MAX_ANSWER_BYTES),
      }),
    ],
  ];
  for (const [what, answer] of bad) {
    for (const fail of ["open", "closed"] as const) {
      await withApp(["publish"], { proxyFail: fail }, async (_app, chat) => {
        const ada = await jsonClient(chat, "/lobby", { nick: "ada" });
        send(ada, { type: "message", text: what });
        const event = await ada.event(`the answer to ${what}, ${fail}`);
        if (fail === "open") {
          assert.deepEqual([event.type, event.text], ["message", what], what);
        } else {
          assert.deepEqual([event.type, event.code], ["error", "unavailable"]);
        }
        await ada.close();
      }, answer);
    }
  }
});

Deno.test("publish proxy: requests are signed with --proxy-secret as webhooks are", async () => {
  const secret = "test-proxy-secret-0123456789-abcdefgh";
  await withApp(
    ["connect", "publish"],
    { proxySecret: secret },
    async (app, chat) => {
      const ada = await jsonClient(chat, "/lobby", { nick: "ada" });
      send(ada, { type: "message", text: "signed" });
      await next(ada, "message");
      for (const asked of app.asked) {
        const timestamp = asked.headers.get("x-chat-timestamp") ?? "";
        assert.ok(Math.abs(Number(timestamp) - Date.now() / 1000) < 10);
        assert.equal(
          asked.headers.get("x-chat-signature"),
          expectedSignature(secret, timestamp, asked.body),
        );
        assert.equal(asked.headers.get("content-type"), "application/json");
      }
      assert.equal(app.asked.length, 2); // the connect and the publish
      await ada.close();
    },
  );
});

Deno.test("publish proxy: past PROXY_MAX_WAITING messages waiting for the app, a message is refused at once with rate_limited", async () => {
  await withApp(
    ["publish"],
    { rate: 1_000_000, burst: 1_000_000, proxyTimeoutMs: 20_000 },
    async (app, chat) => {
      const ada = await jsonClient(chat, "/lobby", { nick: "ada" });
      const bob = await jsonClient(chat, "/lobby", { nick: "bob" });
      for (let i = 0; i < PROXY_MAX_WAITING; i++) {
        send(ada, { type: "message", text: `m${i}` });
      }
      await eventually(
        "every message of ada's waiting",
        async () =>
          await metric(chat, "chat_proxy_waiting") === PROXY_MAX_WAITING,
      );
      send(bob, { type: "message", text: "one too many" });
      assert.deepEqual(await next(bob, "error"), {
        type: "error",
        code: "rate_limited",
        message: "the chat is busy: message dropped, try again",
      });
      assert.equal(
        await metric(
          chat,
          'chat_proxy_verdicts_total{proxy="publish",verdict="over_limit"}',
        ),
        1,
      );
      // PROXY_CONCURRENCY POSTs of PROXY_MAX_BATCH on their way; the rest
      // gather for the next.
      assert.deepEqual(
        app.asked.map((asked) => asked.json.publishes.length),
        Array(PROXY_CONCURRENCY).fill(PROXY_MAX_BATCH),
      );
      await closeAll(ada, bob);
    },
    () => "hang",
  );
});

Deno.test("the command line: proxy URLs are http(s), --proxy-fail is open or closed, --proxy-timeout-ms a number of ms, --proxy-secret 32 characters or more", async () => {
  const cases: [string[], RegExp][] = [
    [
      ["--proxy-publish", "ftp://example.com/"],
      /--proxy-publish must be an http:\/\/ or https:\/\/ URL, got "ftp:\/\/example.com\/"/,
    ],
    [
      ["--proxy-connect", "nowhere"],
      /--proxy-connect must be an http:\/\/ or https:\/\/ URL/,
    ],
    [
      ["--proxy-fail", "maybe"],
      /--proxy-fail must be open or closed, got "maybe"/,
    ],
    [
      ["--proxy-timeout-ms", "0"],
      /--proxy-timeout-ms must be a whole number from 1 to 60000, got "0"/,
    ],
    [
      ["--proxy-secret", "short"],
      /--proxy-secret must be at least 32 characters/,
    ],
  ];
  for (const [args, said] of cases) {
    const { code, stderr } = await cli(args).output();
    const text = new TextDecoder().decode(stderr);
    assert.equal(code, 2, text);
    assert.match(text, said);
    assert.equal(text.trim().split("\n").length, 1, text);
  }
});

// ---------------------------------------------------------------------------
// Connect
// ---------------------------------------------------------------------------

Deno.test("connect proxy: the app is asked with the room, address, nick and roles; it may name the nick and make a moderator", async () => {
  await withApp(["connect", "publish"], {}, async (app, chat) => {
    const ada = await jsonClient(chat, "/lobby", { nick: "ada" });
    assert.equal(ada.welcome.you, "Ada_Lovelace");
    assert.deepEqual(app.connects, [{
      room: "lobby",
      address: "127.0.0.1",
      nick: "ada",
      roles: [],
      via: "connect",
    }]);
    const bob = await jsonClient(chat, "/lobby", { nick: "bob" });
    assert.equal(bob.welcome.you, "bob");
    // Made a moderator by the app: bob may be kicked by ada.
    send(ada, { type: "kick", nick: "bob" });
    assert.equal(
      (await within(bob.closed, "bob's kick")).code,
      CloseCode.Kicked,
    );
    // A nick the app names is checked as any other is.
    const cy = await jsonClient(chat, "/lobby", { nick: "cy" });
    assert.notEqual(cy.welcome.you, "bad nick!");
    assert.equal((await next(cy, "error")).code, "bad_nick");
    await closeAll(ada, cy);
  }, (asked) => ({
    results: asked.json.connects?.map((ask: Json) =>
      ask.nick === "ada"
        ? { allow: true, nick: "Ada_Lovelace", roles: ["op"] }
        : ask.nick === "cy"
        ? { allow: true, nick: "bad nick!" }
        : { allow: true }
    ) ?? asked.json.publishes.map(() => ({ allow: true })),
  }));
});

Deno.test("connect proxy: a refusal is the app's 4xx status and reason (others are 403), or a 4003 close with the reason for chat.refusals-by-close", async () => {
  await withApp(["connect", "publish"], {}, async (_app, chat) => {
    assert.deepEqual(await door(chat, "/vip?nick=eve"), [
      451,
      "members only\n",
    ]);
    assert.deepEqual(await door(chat, "/vip?nick=mallory"), [
      403,
      "The app did not let you in.\n",
    ]);
    const peer = new Peer(chatUrl(chat, "/vip", { nick: "eve" }), [
      JSON_PROTOCOL,
      REFUSALS_BY_CLOSE_PROTOCOL,
    ]);
    const { code, reason } = await within(peer.closed, "the refusal's close");
    assert.deepEqual([code, reason, peer.pending], [
      CloseCode.Refused,
      "members only",
      0,
    ]);
    assert.equal(
      await metric(
        chat,
        'chat_upgrades_refused_total{reason="refused_by_app"}',
      ),
      3,
    );
    // Another room lets eve in; /join to the refused one is refused too.
    const eve = await textClient(chat, "/lobby", { nick: "eve" });
    eve.send("/join vip");
    assert.equal(await eve.next(), " .... error: members only");
    eve.send("still in the lobby");
    assert.equal(await eve.next(), "eve: still in the lobby");
    await eve.close();
  }, (asked) => ({
    results: asked.json.connects?.map((ask: Json) =>
      ask.room !== "vip"
        ? { allow: true }
        : ask.nick === "mallory"
        ? { allow: false, status: 200 }
        : { allow: false, status: 451, reason: "members only" }
    ) ?? asked.json.publishes.map(() => ({ allow: true })),
  }));
});

Deno.test("connect proxy: no answer lets the connection in failing open, and is a 503 failing closed", async () => {
  for (const fail of ["open", "closed"] as const) {
    await withApp(
      ["connect"],
      { proxyTimeoutMs: 100, proxyFail: fail },
      async (app, chat) => {
        if (fail === "open") {
          const ada = await jsonClient(chat, "/lobby", { nick: "ada" });
          assert.equal(ada.welcome.you, "ada");
          await ada.close();
        } else {
          assert.deepEqual(await door(chat, "/lobby?nick=ada"), [
            503,
            "The chat's app did not answer: try again.\n",
          ]);
        }
        assert.equal(app.connects.length, 1);
      },
      () => "hang",
    );
  }
});

Deno.test("connect proxy: a full server refuses a connection without asking the app", async () => {
  await withApp(["connect"], { maxConnections: 1 }, async (app, chat) => {
    const ada = await jsonClient(chat, "/lobby", { nick: "ada" });
    assert.equal(app.connects.length, 1);
    const [status, body] = await door(chat, "/lobby?nick=bob");
    assert.equal(status, 503);
    assert.match(body, /Server full/);
    assert.equal(app.connects.length, 1, "the app was not asked");
    await closeAll(ada);
  });
});

Deno.test("connect proxy: a chat that stops answers a handshake waiting for the app at once, with shutting_down, not at the app's timeout", async () => {
  await withApp(["connect"], { proxyTimeoutMs: 60_000 }, async (app, chat) => {
    const raw = await RawClient.connect(chat.wsPort);
    try {
      const door = raw.upgrade("/lobby");
      await eventually("the app asked", () => app.connects.length === 1);
      const stopped = chat.shutdown(); // withChat's own is the same promise
      const { status, body } = await within(door, "the handshake's answer");
      assert.equal(status, 503);
      assert.match(body, /Shutting down/);
      await within(stopped, "the shutdown");
    } finally {
      raw.close();
    }
  }, () => "hang");
});

Deno.test("connect proxy: a bad answer is no answer (a 500 failing closed is a 503)", async () => {
  await withApp(["connect"], {}, async (_app, chat) => {
    assert.deepEqual(await door(chat, "/lobby?nick=ada"), [
      503,
      "The chat's app did not answer: try again.\n",
    ]);
    await eventually(
      "the failure counted",
      async () =>
        await metric(
          chat,
          'chat_proxy_verdicts_total{proxy="connect",verdict="failed_closed"}',
        ) === 1,
    );
  }, () => new Response("oops", { status: 500 }));
});

// ---------------------------------------------------------------------------
// README.md's example app
// ---------------------------------------------------------------------------

Deno.test("README.md's proxy app, run as written: refuses a message with the word, lets the rest through", async () => {
  const readme = await Deno.readTextFile(
    new URL("../README.md", import.meta.url),
  );
  const section = readme.slice(
    readme.indexOf("\n## Proxy: let the app decide"),
  );
  const code = section.match(/```ts\n([\s\S]*?)```/)?.[1];
  assert.ok(code, "the Proxy section has an app");
  assert.ok(code.split("\n").length <= 25, "in 25 lines");
  const probe = Deno.listen({ hostname: "127.0.0.1", port: 0 });
  const port = probe.addr.port;
  probe.close();
  const dir = await Deno.makeTempDir({ prefix: "chat-proxy-app-" });
  assert.ok(code.includes("port: 8787"));
  await Deno.writeTextFile(
    `${dir}/app.ts`,
    code.replace("port: 8787", `port: ${port}, hostname: "127.0.0.1"`),
  );
  const child = new Deno.Command(Deno.execPath(), {
    args: ["run", "--allow-net", `${dir}/app.ts`],
    stdin: "null",
    stdout: "null",
    stderr: "null",
  }).spawn();
  const url = `http://127.0.0.1:${port}/`;
  try {
    let up = false;
    for (let i = 0; i < 100 && !up; i++) {
      up = await fetch(url, { method: "POST", body: '{"publishes":[]}' })
        .then(async (r) => (await r.body?.cancel(), true), () => false);
      if (!up) await new Promise((resolve) => setTimeout(resolve, 100));
    }
    assert.ok(up, "the app listens");
    await withChat({ proxyPublish: url }, async (chat) => {
      const ada = await jsonClient(chat, "/lobby", { nick: "ada" });
      const bob = await textClient(chat, "/lobby", { nick: "bob" });
      send(ada, { type: "message", text: "Cheap SPAM here" });
      assert.deepEqual(await next(ada, "error"), {
        type: "error",
        code: "no_spam",
        message: "no spam in this chat",
      });
      send(ada, { type: "message", text: "hello, bob" });
      assert.equal((await next(ada, "message")).text, "hello, bob");
      assert.equal(await bob.nextMatching(/^ada:/), "ada: hello, bob");
      bob.send("spam!");
      assert.equal(
        await bob.nextMatching(/error/),
        " .... error: no spam in this chat",
      );
      await closeAll(ada, bob);
    });
  } finally {
    child.kill();
    await child.status;
    await Deno.remove(dir, { recursive: true });
  }
});
