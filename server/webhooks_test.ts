/**
 * Webhooks (issue 28 point 1) through real servers: a chat started as in
 * production (or as a child process, for `kill -9` and Redis) and a real
 * HTTP endpoint (tests/webhook_helpers.ts) that answers as each test
 * says: the deliveries, their signature and ids, the kinds asked for,
 * retries and their order per room, a dead endpoint, the queue's limit,
 * `--data` across a `kill -9`, Redis with two processes and one killed,
 * the command line, and README.md's receiver.
 *
 * @module
 */

import assert from "node:assert/strict";
import type { ChatServer } from "../main.ts";
import {
  cli,
  closeAll,
  eventually,
  type Json,
  jsonClient,
  metric,
  type Peer,
  startCli,
  textClient,
  withChat,
  within,
} from "../tests/test_helpers.ts";
import {
  assertOrderedOnce,
  drained,
  expectedSignature,
  HOOK_SECRET,
  Receiver,
} from "../tests/webhook_helpers.ts";
import {
  haveRedis,
  startChatProcess,
  startRedis,
} from "../tests/redis_helpers.ts";
import {
  WEBHOOK_CONCURRENCY,
  WEBHOOK_QUEUE_LIMIT,
  Webhooks,
} from "./webhooks.ts";
import { eventTypes, MemoryOutbox } from "../stores/outbox.ts";
import { newCounters } from "./metrics.ts";

/** Runs `fn` with a receiver, always closed after. */
async function withReceiver(
  fn: (receiver: Receiver) => Promise<void>,
): Promise<void> {
  const receiver = new Receiver();
  try {
    await fn(receiver);
  } finally {
    await receiver.close();
  }
}

/** A chat's options that send to `receiver`. */
function hookedTo(receiver: Receiver, events?: string[]) {
  return {
    webhook: [receiver.url],
    webhookSecret: HOOK_SECRET,
    ...(events ? { webhookEvents: events } : {}),
  };
}

/** Sends a JSON message and waits for its echo. */
async function say(peer: Peer, text: string): Promise<Json> {
  peer.send(JSON.stringify({ type: "message", text }));
  for (;;) {
    const event = await peer.event(`the echo of ${text}`);
    if (event.type === "message" && event.text === text) return event;
  }
}

/** `/metrics`'s webhook deliveries of an outcome. */
function outcome(chat: { port: number }, name: string): Promise<number> {
  return metric(
    chat as ChatServer,
    `chat_webhook_deliveries_total{outcome="${name}"}`,
  );
}

// ---------------------------------------------------------------------------
// What is sent
// ---------------------------------------------------------------------------

Deno.test("a delivery is the event as its room got it, POSTed as {id, room, event}, signed over TIMESTAMP.BODY with the secret", async () => {
  await withReceiver(async (receiver) => {
    await withChat(hookedTo(receiver), async (chat) => {
      const ada = await jsonClient(chat, "/lobby", { nick: "ada" });
      const echo = await say(ada, "hello, app");
      await receiver.until("the delivery", () => receiver.requests.length > 0);
      const [got] = receiver.requests;
      assert.equal(got.contentType, "application/json");
      assert.deepEqual(got.json, { id: got.id, room: "lobby", event: echo });
      assert.equal(got.body, JSON.stringify(got.json), "exactly that JSON");
      assert.match(got.timestamp, /^\d+$/);
      assert.ok(
        Math.abs(Number(got.timestamp) - Date.now() / 1000) < 60,
        "a timestamp of now, in seconds",
      );
      assert.equal(
        got.signature,
        expectedSignature(HOOK_SECRET, got.timestamp, got.body),
      );
      assert.notEqual(
        got.signature,
        expectedSignature(HOOK_SECRET + "x", got.timestamp, got.body),
        "another secret does not verify",
      );
      assert.notEqual(
        got.signature,
        expectedSignature(
          HOOK_SECRET,
          String(Number(got.timestamp) - 1),
          got.body,
        ),
        "the timestamp is signed",
      );
      await drained(chat);
      assert.equal(await outcome(chat, "delivered"), 1);
      await ada.close();
    });
  });
});

Deno.test("only the kinds asked for go out, in the room's order: by default messages only, never a direct message unless `dm` is named", async () => {
  await withReceiver(async (receiver) => {
    await withChat(hookedTo(receiver), async (chat) => {
      const ada = await jsonClient(chat, "/", { nick: "ada" });
      const bob = await textClient(chat, "/", { nick: "bob" });
      ada.send(JSON.stringify({ type: "dm", to: "bob", text: "psst" }));
      await bob.nextMatching(/psst/);
      bob.send("/me waves");
      await bob.nextMatching(/waves/);
      await say(ada, "last");
      await receiver.until(
        "two deliveries",
        () => receiver.requests.length >= 2,
      );
      await closeAll(ada, bob);
      // A leave would come after the close: give it the chance.
      await new Promise((resolve) => setTimeout(resolve, 200));
      assert.deepEqual(
        receiver.requests.map((r) => [r.json.event.type, r.json.event.from]),
        [["action", "bob"], ["message", "ada"]],
      );
    });
  });
  await withReceiver(async (receiver) => {
    const events = ["join", "leave", "nick", "message", "dm"];
    await withChat(hookedTo(receiver, events), async (chat) => {
      const ada = await jsonClient(chat, "/", { nick: "ada" });
      const bob = await textClient(chat, "/", { nick: "bob" });
      bob.send("/nick bobby");
      await bob.nextMatching(/bobby/);
      ada.send(JSON.stringify({ type: "dm", to: "bobby", text: "psst" }));
      await bob.nextMatching(/psst/);
      await say(ada, "hi");
      await bob.close();
      await receiver.until(
        "six deliveries",
        () => receiver.requests.length >= 6,
      );
      assert.deepEqual(
        receiver.requests.map((r) => r.json.event.type),
        ["join", "join", "nick", "dm", "message", "leave"],
      );
      const ids = receiver.requests.map((r) => r.json.event.id);
      assert.deepEqual(ids, [...ids].sort((a, b) => a - b), "in id order");
      await ada.close();
    });
  });
});

// ---------------------------------------------------------------------------
// Retries and order
// ---------------------------------------------------------------------------

Deno.test("an endpoint answering 500 for a while: each delivery is tried again with the same id, every room's accepted once each in id order, and a failing event holds back only its own room", async () => {
  await withReceiver(async (receiver) => {
    let failures = 6;
    receiver.answer = () => failures-- > 0 ? 500 : 200;
    await withChat(hookedTo(receiver), async (chat) => {
      const ada = await jsonClient(chat, "/alpha", { nick: "ada" });
      const bob = await jsonClient(chat, "/beta", { nick: "bob" });
      const sent: Json[] = [];
      for (let i = 1; i <= 3; i++) {
        sent.push(await say(ada, `a${i}`), await say(bob, `b${i}`));
      }
      await receiver.until(
        "all six accepted",
        () => receiver.accepted().length === 6,
      );
      assertOrderedOnce(receiver.requests);
      for (const room of ["alpha", "beta"]) {
        assert.deepEqual(
          receiver.accepted().filter((r) => r.json.room === room)
            .map((r) => r.json.event),
          sent.filter((_, i) => i % 2 === (room === "alpha" ? 0 : 1)),
          `${room}: every message, in order`,
        );
      }
      // Every try of an event carried the id it was accepted with.
      const acceptedId = new Map(
        receiver.accepted().map((
          r,
        ) => [`${r.json.room}/${r.json.event.id}`, r.id]),
      );
      for (const request of receiver.requests) {
        assert.equal(
          request.id,
          acceptedId.get(`${request.json.room}/${request.json.event.id}`),
        );
        assert.equal(request.json.id, request.id);
      }
      assert.equal(new Set(acceptedId.values()).size, 6, "one id per event");
      assert.equal(receiver.requests.length, 12, "six failed, six accepted");
      await drained(chat);
      assert.equal(await outcome(chat, "retried"), 6);
      assert.equal(await outcome(chat, "delivered"), 6);
      assert.equal(await outcome(chat, "failed"), 0);
      assert.equal(await metric(chat, "chat_webhook_queue"), 0);
      await closeAll(ada, bob);
    });
  });
});

Deno.test("--webhook-batch: a room's deliveries waiting behind a failure go in one POST, {deliveries: [...]} in the room's order, signed over the batch; each accepted once", async () => {
  await withReceiver(async (receiver) => {
    let down = true;
    receiver.answer = () => down ? 500 : 200;
    await withChat(
      { ...hookedTo(receiver), webhookBatch: 3 },
      async (chat) => {
        const ada = await jsonClient(chat, "/alpha", { nick: "ada" });
        const sent: Json[] = [];
        for (let i = 1; i <= 5; i++) sent.push(await say(ada, `a${i}`));
        await receiver.until("a try", () => receiver.requests.length > 0);
        down = false;
        await receiver.until(
          "every message accepted",
          () =>
            receiver.accepted().flatMap((r) => r.json.deliveries).length === 5,
        );
        const accepted = receiver.accepted();
        // 5 behind a failure, at most 3 a POST: two POSTs, 3 then 2.
        assert.deepEqual(
          accepted.map((r) => r.json.deliveries.length),
          [3, 2],
        );
        const deliveries = accepted.flatMap((r) => r.json.deliveries);
        assert.deepEqual(deliveries.map((d: Json) => d.event), sent);
        assert.deepEqual(
          deliveries.map((d: Json) => d.room),
          Array(5).fill("alpha"),
        );
        assert.equal(new Set(deliveries.map((d: Json) => d.id)).size, 5);
        for (const request of receiver.requests) {
          assert.equal(request.id, request.json.deliveries[0].id);
          assert.equal(
            request.signature,
            expectedSignature(HOOK_SECRET, request.timestamp, request.body),
          );
        }
        // Every failed try was of the first, as a batch of the ones waiting.
        for (const request of receiver.requests) {
          if (request.status !== 200) {
            assert.equal(request.json.deliveries[0].event.id, sent[0].id);
          }
        }
        await drained(chat);
        assert.equal(await outcome(chat, "delivered"), 5);
        await closeAll(ada);
      },
    );
  });
});

Deno.test("backoff: a delivery that fails three times is tried a fourth, and counted as retried three times", async () => {
  await withReceiver(async (receiver) => {
    receiver.answer = () => receiver.requests.length < 3 ? 503 : 204;
    await withChat(hookedTo(receiver), async (chat) => {
      const ada = await jsonClient(chat, "/", { nick: "ada" });
      await say(ada, "again and again");
      await receiver.until(
        "the fourth try",
        () => receiver.accepted().length === 1,
      );
      assert.deepEqual(receiver.requests.map((r) => r.status), [
        503,
        503,
        503,
        204,
      ]);
      assert.equal(new Set(receiver.requests.map((r) => r.id)).size, 1);
      assert.equal(
        new Set(receiver.requests.map((r) => r.signature)).size,
        new Set(receiver.requests.map((r) => r.timestamp)).size,
        "each try signed at its own time",
      );
      await drained(chat);
      assert.equal(await outcome(chat, "retried"), 3);
      assert.equal(await outcome(chat, "delivered"), 1);
      const latency = await metric(chat, "chat_webhook_latency_seconds_count");
      assert.equal(latency, 1, "its latency observed once");
      await ada.close();
    });
  });
});

Deno.test("after --webhook-retry-hours a delivery is given up and counted failed, and its room's next one goes", async () => {
  await withReceiver(async (receiver) => {
    receiver.answer = (request) =>
      request.json.event.text === "doomed" ? 500 : 200;
    // 0.0003 hours: about a second.
    await withChat(
      { ...hookedTo(receiver), webhookRetryHours: 0.0003 },
      async (chat) => {
        const ada = await jsonClient(chat, "/", { nick: "ada" });
        await say(ada, "doomed");
        await say(ada, "next");
        await receiver.until(
          "the next one",
          () => receiver.accepted().length === 1,
          10_000,
        );
        assert.equal(receiver.accepted()[0].json.event.text, "next");
        const doomed = receiver.requests.filter((r) =>
          r.json.event.text === "doomed"
        );
        assert.ok(doomed.length >= 2, "tried more than once first");
        assert.ok(
          receiver.requests.indexOf(receiver.accepted()[0]) >
            receiver.requests.indexOf(doomed.at(-1)!),
          "the next one only once the first was given up",
        );
        await drained(chat);
        assert.equal(await outcome(chat, "failed"), 1);
        assert.equal(await outcome(chat, "delivered"), 1);
        assert.equal(await outcome(chat, "retried"), doomed.length - 1);
        await ada.close();
      },
    );
  });
});

// ---------------------------------------------------------------------------
// A dead endpoint
// ---------------------------------------------------------------------------

Deno.test("a dead endpoint does not hold up the chat: every message reaches every client while the endpoint never answers, one request per room at a time, cut off after the timeout", async () => {
  await withReceiver(async (receiver) => {
    receiver.answer = () => "hang";
    const fast = { rate: 1000, burst: 1000 };
    await withChat({ ...hookedTo(receiver), ...fast }, async (chat) => {
      const ada = await jsonClient(chat, "/", { nick: "ada" });
      const bob = await jsonClient(chat, "/", { nick: "bob" });
      assert.equal((await ada.event("bob's join")).type, "join");
      for (let i = 1; i <= 50; i++) {
        ada.send(JSON.stringify({ type: "message", text: `m${i}` }));
      }
      for (let i = 1; i <= 50; i++) {
        assert.equal((await bob.event(`m${i}`)).text, `m${i}`);
        assert.equal((await ada.event(`the echo of m${i}`)).text, `m${i}`);
      }
      await receiver.until(
        "the first try",
        () => receiver.requests.length === 1,
      );
      assert.equal(await metric(chat, "chat_webhook_queue"), 50);
      // Cut off after WEBHOOK_TIMEOUT_MS and tried again: the same delivery.
      await receiver.until(
        "a second try",
        () => receiver.requests.length === 2,
        15_000,
      );
      assert.equal(receiver.requests[1].id, receiver.requests[0].id);
      assert.equal(receiver.requests[0].json.event.text, "m1");
      assert.equal(await outcome(chat, "retried"), 1);
      // Still nothing in the way.
      ada.send(JSON.stringify({ type: "message", text: "still here" }));
      assert.equal((await bob.event("still here")).text, "still here");
      await closeAll(ada, bob);
    });
  });
});

Deno.test("in memory, over WEBHOOK_QUEUE_LIMIT deliveries per endpoint the oldest are dropped and counted; the rest go in order", async () => {
  await withReceiver(async (receiver) => {
    const counters = newCounters();
    const outbox = new MemoryOutbox(1, eventTypes(["message"]));
    const webhooks = new Webhooks({
      urls: [receiver.url],
      secret: HOOK_SECRET,
      retryMs: 60_000,
      counters,
      log: () => {},
    }, outbox);
    webhooks.start();
    try {
      const over = 5;
      // In one turn: none is on its way yet when the limit is passed.
      for (let id = 1; id <= WEBHOOK_QUEUE_LIMIT + over; id++) {
        outbox.writer.add("lobby", {
          type: "message",
          id,
          ts: Date.now(),
          from: "ada",
          text: `m${id}`,
        });
      }
      assert.equal(counters.webhooks.get("dropped"), over);
      assert.equal(webhooks.depth(), WEBHOOK_QUEUE_LIMIT);
      await receiver.until(
        "three deliveries",
        () => receiver.accepted().length >= 3,
      );
      assert.deepEqual(
        receiver.accepted().slice(0, 3).map((r) => r.json.event.id),
        [over + 1, over + 2, over + 3],
        "the oldest were the ones dropped",
      );
    } finally {
      await webhooks.close();
    }
  });
});

Deno.test("rooms are delivered side by side, up to WEBHOOK_CONCURRENCY requests at once per endpoint", async () => {
  await withReceiver(async (receiver) => {
    receiver.answer = () => "hang";
    const counters = newCounters();
    const outbox = new MemoryOutbox(1, eventTypes(["message"]));
    const webhooks = new Webhooks({
      urls: [receiver.url],
      secret: HOOK_SECRET,
      retryMs: 60_000,
      counters,
      log: () => {},
    }, outbox);
    webhooks.start();
    try {
      for (let room = 0; room < WEBHOOK_CONCURRENCY + 4; room++) {
        for (let id = 1; id <= 2; id++) {
          outbox.writer.add(`r${room}`, {
            type: "message",
            id,
            ts: Date.now(),
            from: "ada",
            text: "x",
          });
        }
      }
      await receiver.until(
        "as many at once as allowed",
        () => receiver.requests.length === WEBHOOK_CONCURRENCY,
      );
      await new Promise((resolve) => setTimeout(resolve, 200));
      assert.equal(receiver.requests.length, WEBHOOK_CONCURRENCY, "no more");
      assert.deepEqual(
        receiver.requests.map((r) => r.json.event.id),
        receiver.requests.map(() => 1),
        "each room's first",
      );
    } finally {
      await webhooks.close();
    }
  });
});

// ---------------------------------------------------------------------------
// --data: kill -9 and restart
// ---------------------------------------------------------------------------

Deno.test("--data: kill -9 right after the echoes loses no delivery; the restarted server delivers them, same ids, in order", async () => {
  const dir = await Deno.makeTempDir({ prefix: "chat-hooks-" });
  try {
    await withReceiver(async (receiver) => {
      receiver.answer = () => 500; // the app is down: nothing is done
      const args = [
        "--data",
        `${dir}/chat.db`,
        "--webhook",
        receiver.url,
        "--webhook-secret",
        HOOK_SECRET,
        "--quiet",
      ];
      const first = await startCli(args, [`--allow-write=${dir}`]);
      const ada = await jsonClient(
        { wsPort: first.wsPort } as ChatServer,
        "/lobby",
        {
          nick: "ada",
        },
      );
      const sent: Json[] = [];
      for (let i = 1; i <= 5; i++) sent.push(await say(ada, `n${i}`));
      first.child.kill("SIGKILL"); // right after the last echo
      await within(first.child.status, "the kill");
      await first.lines.cancel();
      await within(ada.closed, "the dropped connection");
      const triedBefore = new Map(
        receiver.requests.map((r) => [r.json.event.id, r.id]),
      );

      receiver.answer = () => 200;
      const second = await startCli(args, [`--allow-write=${dir}`]);
      try {
        await receiver.until(
          "all five accepted",
          () => receiver.accepted().length === 5,
        );
        assert.deepEqual(receiver.accepted().map((r) => r.json.event), sent);
        for (const got of receiver.accepted()) {
          const before = triedBefore.get(got.json.event.id);
          if (before) assert.equal(got.id, before, "the id it was tried with");
        }
        assert.equal(new Set(receiver.accepted().map((r) => r.id)).size, 5);
        assertOrderedOnce(receiver.requests);
        await drained({ port: second.port }); // its rows deleted
      } finally {
        second.child.kill("SIGTERM");
        assert.equal((await within(second.child.status, "the exit")).code, 0);
        await second.lines.cancel();
      }
    });
  } finally {
    await Deno.remove(dir, { recursive: true });
  }
});

// ---------------------------------------------------------------------------
// Redis: one process delivers each event
// ---------------------------------------------------------------------------

/** Two chat processes on one Redis, sending to `receiver`. */
async function twoProcesses(receiver: Receiver) {
  const redis = await startRedis();
  const args = ["--webhook", receiver.url, "--webhook-secret", HOOK_SECRET];
  // Short heartbeats: leases run out, and are taken over, in under a second.
  const env = { CHAT_REDIS_HEARTBEAT_MS: "200" };
  const a = await startChatProcess(redis.url, { args, env });
  const b = await startChatProcess(redis.url, { args, env });
  return { redis, a, b };
}

/** Sends `count` messages into each of `rooms`, from clients on both processes. */
async function chatter(
  servers: ChatServer[],
  rooms: string[],
  count: number,
): Promise<Json[]> {
  const peers: Peer[] = [];
  const sent: Json[] = [];
  try {
    for (const [i, room] of rooms.entries()) {
      const peer = await jsonClient(servers[i % servers.length], `/${room}`, {
        nick: `p${i}`,
      });
      peers.push(peer);
    }
    for (let n = 1; n <= count; n++) {
      for (const [i, peer] of peers.entries()) {
        sent.push({
          room: rooms[i],
          event: await say(peer, `${rooms[i]}-${n}`),
        });
      }
    }
  } finally {
    await closeAll(...peers);
  }
  return sent;
}

const ROOMS = Array.from({ length: 12 }, (_, i) => `room${i}`);

Deno.test({
  name:
    "Redis, two processes: each event is delivered once, by one of them, in order per room",
  ignore: !haveRedis,
  fn: async () => {
    await withReceiver(async (receiver) => {
      const { redis, a, b } = await twoProcesses(receiver);
      try {
        // Both hold shards by now (heartbeats of 200 ms share them out).
        await new Promise((resolve) => setTimeout(resolve, 1000));
        const sent = await chatter([a.server, b.server], ROOMS, 4);
        await receiver.until(
          "every message",
          () => receiver.accepted().length >= sent.length,
        );
        await new Promise((resolve) => setTimeout(resolve, 1000)); // any twice?
        assert.equal(receiver.requests.length, sent.length, "each once");
        assertOrderedOnce(receiver.requests);
        const got = new Set(
          receiver.accepted().map((r) => `${r.json.room}/${r.json.event.id}`),
        );
        for (const { room, event } of sent) {
          assert.ok(got.has(`${room}/${event.id}`));
        }
        await drained(a, b);
        const delivered = [
          await outcome(a, "delivered"),
          await outcome(b, "delivered"),
        ];
        assert.equal(
          delivered[0] + delivered[1],
          sent.length,
          "between them, once",
        );
        assert.ok(delivered.every((n) => n > 0), `both deliver: ${delivered}`);
      } finally {
        await a.stop();
        await b.stop();
        await redis.kill();
      }
    });
  },
});

Deno.test({
  name:
    "Redis: a process killed mid-delivery has its deliveries taken over by the other, each once, in order per room",
  ignore: !haveRedis,
  fn: async () => {
    await withReceiver(async (receiver) => {
      receiver.answer = () => 500; // the app is down: both processes retry
      const { redis, a, b } = await twoProcesses(receiver);
      try {
        await new Promise((resolve) => setTimeout(resolve, 1000));
        const sent = await chatter([a.server, b.server], ROOMS, 3);
        const retrying = async (chat: { port: number }) =>
          await outcome(chat, "retried") > 0;
        const deadline = Date.now() + 10_000;
        while (!(await retrying(a) && await retrying(b))) {
          assert.ok(Date.now() < deadline, "both processes are delivering");
          await new Promise((resolve) => setTimeout(resolve, 100));
        }
        await a.kill(); // mid-delivery: its shards' requests failing
        receiver.answer = () => 200;
        await receiver.until(
          "every message",
          () => receiver.accepted().length >= sent.length,
        );
        await new Promise((resolve) => setTimeout(resolve, 1000));
        assertOrderedOnce(receiver.requests);
        assert.equal(receiver.accepted().length, sent.length, "each once");
        await drained(b);
        assert.equal(await outcome(b, "delivered"), sent.length, "all by b");
      } finally {
        await a.kill();
        await b.stop();
        await redis.kill();
      }
    });
  },
});

// ---------------------------------------------------------------------------
// The command line
// ---------------------------------------------------------------------------

Deno.test("the command line: --webhook needs a secret of 32 characters or more, an http(s) URL named once and known kinds; each mistake is one line and exit 2", async () => {
  const cases: [string[], RegExp][] = [
    [["--webhook", "http://127.0.0.1:9/"], /--webhook needs --webhook-secret/],
    [
      ["--webhook", "http://127.0.0.1:9/", "--webhook-secret", "short"],
      /--webhook-secret must be at least 32 characters/,
    ],
    [
      ["--webhook", "ftp://example.com/", "--webhook-secret", HOOK_SECRET],
      /--webhook must be an http:\/\/ or https:\/\/ URL, got "ftp:\/\/example.com\/"/,
    ],
    [
      ["--webhook-events", "message,typing"],
      /--webhook-events takes message, edit, delete, join, leave, nick, moderation, dm \(comma-separated\), got "typing"/,
    ],
    [
      ["--webhook-retry-hours", "0"],
      /--webhook-retry-hours must be a number of hours above 0/,
    ],
    [
      [
        "--webhook",
        "http://127.0.0.1:9/a",
        "--webhook",
        "http://127.0.0.1:9/a",
        "--webhook-secret",
        HOOK_SECRET,
      ],
      /--webhook http:\/\/127.0.0.1:9\/a is given twice/,
    ],
  ];
  for (const [args, said] of cases) {
    const { code, stderr } = await cli(args).output();
    const text = new TextDecoder().decode(stderr);
    assert.equal(code, 2, `${args.join(" ")}: ${text}`);
    assert.match(text, said);
    assert.equal(text.trim().split("\n").length, 1, text);
  }
  await assert.rejects(
    () =>
      withChat({ webhook: ["http://127.0.0.1:9/"] }, () => Promise.resolve()),
    /--webhook needs --webhook-secret/,
  );
  // Redis not there: one line, exit 1, as without webhooks.
  const probe = Deno.listen({ hostname: "127.0.0.1", port: 0 });
  const port = probe.addr.port;
  probe.close();
  const { code, stderr } = await cli([
    "--redis",
    `redis://127.0.0.1:${port}`,
    "--webhook",
    "http://127.0.0.1:9/",
    "--webhook-secret",
    HOOK_SECRET,
  ]).output();
  const text = new TextDecoder().decode(stderr);
  assert.equal(code, 1, text);
  assert.match(text, /cannot reach Redis at redis:\/\/127\.0\.0\.1:\d+/);
  assert.equal(text.trim().split("\n").length, 1, text);
});

// ---------------------------------------------------------------------------
// README.md's receiver
// ---------------------------------------------------------------------------

Deno.test("README.md's receiver, run as written: takes a real delivery, refuses a forged signature and an old timestamp, and a delivery it has had", async () => {
  const readme = await Deno.readTextFile(
    new URL("../README.md", import.meta.url),
  );
  const section = readme.slice(readme.indexOf("\n## Webhooks"));
  const code = section.match(/```ts\n([\s\S]*?)```/)?.[1];
  assert.ok(code, "the Webhooks section has a receiver");
  assert.ok(
    code.split("\n").filter((l) => l.trim()).length <= 20,
    "in 20 lines",
  );
  const dir = await Deno.makeTempDir({ prefix: "chat-receiver-" });
  const probe = Deno.listen({ hostname: "127.0.0.1", port: 0 });
  const port = probe.addr.port;
  probe.close();
  await Deno.writeTextFile(
    `${dir}/receiver.ts`,
    code.replace("port: 8000", `port: ${port}, hostname: "127.0.0.1"`),
  );
  const child = new Deno.Command(Deno.execPath(), {
    args: [
      "run",
      "--allow-net",
      "--allow-env=HOOK_SECRET",
      `${dir}/receiver.ts`,
    ],
    env: { HOOK_SECRET },
    stdin: "null",
    stdout: "piped",
    stderr: "null",
  }).spawn();
  const reader = child.stdout.pipeThrough(new TextDecoderStream())
    .getReader();
  let out = "";
  /** The receiver's next line of output. */
  const nextLine = async (what: string): Promise<string> => {
    while (!out.includes("\n")) {
      const { value, done } = await within(reader.read(), what, 10_000);
      if (done) throw new Error(`the receiver ended before ${what}`);
      out += value;
    }
    const line = out.slice(0, out.indexOf("\n"));
    out = out.slice(line.length + 1);
    return line;
  };
  const url = `http://127.0.0.1:${port}/`;
  try {
    let up = false;
    for (let i = 0; i < 100 && !up; i++) {
      up = await fetch(url, { method: "POST", body: "{}" })
        .then(async (r) => (await r.body?.cancel(), true), () => false);
      if (!up) await new Promise((resolve) => setTimeout(resolve, 100));
    }
    assert.ok(up, "the receiver listens");
    await withChat(
      { webhook: [url], webhookSecret: HOOK_SECRET },
      async (chat) => {
        const ada = await jsonClient(chat, "/lobby", { nick: "ada" });
        await say(ada, "hello, receiver");
        assert.equal(
          await nextLine("the receiver's line"),
          "lobby message hello, receiver",
        );
        // The receiver prints before it answers: the chat counts after.
        await eventually(
          "its 2xx counted",
          async () => await outcome(chat, "delivered") === 1,
        );
        await ada.close();
      },
    );
    const post = async (timestamp: string, signature: string, body: string) => {
      const response = await fetch(url, {
        method: "POST",
        headers: {
          "x-chat-timestamp": timestamp,
          "x-chat-signature": signature,
          "x-chat-delivery": "d1",
        },
        body,
      });
      await response.body?.cancel();
      return response.status;
    };
    const body = JSON.stringify({
      id: "d1",
      room: "lobby",
      event: { type: "message", id: 9, ts: 0, from: "eve", text: "forged" },
    });
    const now = String(Math.floor(Date.now() / 1000));
    const old = String(Number(now) - 3600);
    assert.equal(
      await post(now, expectedSignature("not-the-secret", now, body), body),
      401,
    );
    assert.equal(
      await post(old, expectedSignature(HOOK_SECRET, old, body), body),
      401,
    );
    assert.equal(
      await post(now, expectedSignature(HOOK_SECRET, now, body), body),
      204,
    );
    assert.equal(
      await post(now, expectedSignature(HOOK_SECRET, now, body), body),
      204,
    );
    assert.equal(await nextLine("the signed one"), "lobby message forged");
    child.kill("SIGTERM");
    await child.status;
    while (true) {
      const { value, done } = await reader.read();
      if (done) break;
      out += value;
    }
    assert.equal(out, "", "the same delivery again is not handled again");
  } finally {
    try {
      child.kill("SIGTERM");
    } catch {
      // ended already
    }
    await child.status;
    await reader.cancel();
    await Deno.remove(dir, { recursive: true });
  }
});
