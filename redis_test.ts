/**
 * The Redis store (`--redis`): several chat processes sharing rooms through
 * a private `redis-server`. Skipped when redis-server is not installed,
 * except under CI (env CI set), where they run (and fail).
 *
 * @module
 */

import assert from "node:assert/strict";
import {
  closeAll,
  eventually,
  type Json,
  jsonClient,
  Peer,
  textClient,
  within,
} from "./test_helpers.ts";
import {
  type ChatProcess,
  haveRedis,
  health,
  type RedisServer,
  startChatProcess,
  startRedis,
} from "./redis_helpers.ts";
import { RedisStore } from "./redis_store.ts";
import { JSON_PROTOCOL, type LiveEvent, type RoomEvent } from "./protocol.ts";
import {
  type Joined,
  MemoryStore,
  type RoomStore,
  StoreUnavailable,
} from "./rooms.ts";

const ignore = !haveRedis && !Deno.env.get("CI");
if (ignore) {
  console.error(
    "redis_test.ts: redis-server not found; the Redis tests are skipped " +
      "(install it: apt-get install redis-server)",
  );
}

/** A redis-server and `count` chat processes on it, all stopped after. */
async function withCluster(
  count: number,
  fn: (redis: RedisServer, chats: ChatProcess[]) => Promise<void>,
  options: { env?: Record<string, string>; dir?: string; args?: string[] } = {},
): Promise<void> {
  const redis = await startRedis({ dir: options.dir });
  const chats: ChatProcess[] = [];
  try {
    chats.push(
      ...await Promise.all(
        Array.from(
          { length: count },
          () =>
            startChatProcess(redis.url, {
              env: options.env,
              args: options.args,
            }),
        ),
      ),
    );
    await fn(redis, chats);
  } finally {
    await Promise.all(chats.map((chat) => chat.stop()));
    await redis.kill();
  }
}

/** Reads JSON events until one matches; returns all read, that one last. */
async function eventsUntil(
  peer: Peer,
  done: (event: Json) => boolean,
  what: string,
): Promise<Json[]> {
  const events: Json[] = [];
  for (;;) {
    const event = await peer.event(what);
    events.push(event);
    if (done(event)) return events;
  }
}

function isMessage(text: string): (event: Json) => boolean {
  return (event) => event.type === "message" && event.text === text;
}

/** Ids follow each other by one, starting after `after`. */
function assertContiguous(events: Json[], after: number, who: string): void {
  events.forEach((event, i) =>
    assert.equal(
      event.id,
      after + 1 + i,
      `${who}: event ${i} has id ${event.id}`,
    )
  );
}

Deno.test({
  name: "redis: a conversation across two processes, both protocols, one order",
  ignore,
  fn: () =>
    withCluster(2, async (_redis, [a, b]) => {
      const alice = await jsonClient(a.server, "/talk", { nick: "alice" });
      const bob = await jsonClient(b.server, "/talk", { nick: "bob" });
      assert.deepEqual(bob.welcome.users, ["alice", "bob"]);
      const carol = await textClient(b.server, "/talk");
      const dave = await textClient(a.server, "/talk");
      await eventsUntil(alice, (e) => e.nick === dave.nick, "dave's join");
      await eventsUntil(bob, (e) => e.nick === dave.nick, "dave's join");
      const start = alice.welcome.lastId;
      for (let i = 0; i < 5; i++) {
        alice.send(JSON.stringify({ type: "message", text: `a${i}` }));
        bob.send(JSON.stringify({ type: "message", text: `b${i}` }));
        carol.send(`c${i}`);
        dave.send(`/me d${i}`);
      }
      const seen: Json[][] = [];
      for (const peer of [alice, bob]) {
        const events: Json[] = [];
        while (events.filter((e) => e.type !== "join").length < 20) {
          events.push(await peer.event("the 20 messages"));
        }
        seen.push(events.filter((e) => e.type !== "join"));
      }
      assert.deepEqual(seen[0], seen[1], "both JSON clients saw one order");
      const ids = seen[0].map((e) => e.id);
      assert.equal(new Set(ids).size, 20, "each event once");
      assert.ok(ids.every((id, i) => i === 0 || id === ids[i - 1] + 1));
      assert.ok(ids[0] > start);
      // Text clients, on either process, see the same order.
      const expected = seen[0].map((e) =>
        e.type === "action" ? `* ${e.from} ${e.text}` : `${e.from}: ${e.text}`
      );
      for (const peer of [carol, dave]) {
        const lines: string[] = [];
        while (lines.length < 20) {
          const line = await peer.next("a chat line");
          if (!line.startsWith(" .... ")) lines.push(line);
        }
        assert.deepEqual(lines, expected);
      }
      await closeAll(alice, bob, carol, dave);
    }),
});

Deno.test({
  name: "redis: a client resumes on another process without a gap",
  ignore,
  fn: () =>
    withCluster(2, async (_redis, [a, b]) => {
      const alice = await jsonClient(a.server, "/r", { nick: "alice" });
      const bob = await jsonClient(b.server, "/r", { nick: "bob" });
      const [bobJoin] = await eventsUntil(alice, (e) =>
        e.type === "join", "join");
      await alice.close();
      await eventsUntil(bob, (e) =>
        e.type === "leave", "alice's leave");
      bob.send(JSON.stringify({ type: "message", text: "m1" }));
      bob.send(JSON.stringify({ type: "message", text: "m2" }));
      await eventsUntil(bob, isMessage("m2"), "m2");
      const back = await jsonClient(b.server, "/r", {
        nick: "alice",
        since: bobJoin.id,
        epoch: alice.welcome.epoch,
        token: alice.welcome.token,
      });
      assert.equal(back.welcome.you, "alice");
      assert.equal(back.welcome.gap, false);
      assert.equal(back.welcome.epoch, alice.welcome.epoch);
      const history = back.welcome.history;
      assertContiguous(history, bobJoin.id, "resumed history");
      assert.deepEqual(
        history.map((e: Json) => [e.type, e.nick ?? e.text]),
        [["leave", "alice"], ["message", "m1"], ["message", "m2"], [
          "join",
          "alice",
        ]],
      );
      assert.equal(back.welcome.lastId, history.at(-1).id);
      await closeAll(back, bob);
    }),
});

Deno.test({
  name: "redis: history, epoch and ids outlive a restart of every process",
  ignore,
  fn: async () => {
    const redis = await startRedis();
    const chats: ChatProcess[] = [];
    try {
      const a = await startChatProcess(redis.url);
      chats.push(a);
      const alice = await jsonClient(a.server, "/keep", { nick: "alice" });
      for (const text of ["one", "two", "three"]) {
        alice.send(JSON.stringify({ type: "message", text }));
      }
      const [last] = (await eventsUntil(alice, isMessage("three"), "three"))
        .slice(-1);
      await alice.close();
      await a.stop();
      const [a2, b2] = await Promise.all([
        startChatProcess(redis.url),
        startChatProcess(redis.url),
      ]);
      chats.push(a2, b2);
      const back = await jsonClient(b2.server, "/keep", {
        nick: "alice",
        since: last.id,
        epoch: alice.welcome.epoch,
        token: alice.welcome.token,
      });
      assert.equal(back.welcome.gap, false);
      assert.equal(back.welcome.epoch, alice.welcome.epoch);
      // alice's leave is kept though she was the last one out (issue 17:
      // no two joins in a row for a later visitor).
      assert.deepEqual(back.welcome.history.map((e: Json) => [e.id, e.type]), [
        [last.id + 1, "leave"],
        [last.id + 2, "join"],
      ]);
      const newcomer = await jsonClient(a2.server, "/keep", { nick: "bob" });
      assert.deepEqual(
        newcomer.welcome.history.filter((e: Json) => e.type === "message")
          .map((e: Json) => e.text),
        ["one", "two", "three"],
      );
      assert.equal(newcomer.welcome.lastId, last.id + 3);
      await closeAll(back, newcomer);
    } finally {
      await Promise.all(chats.map((chat) => chat.stop()));
      await redis.kill();
    }
  },
});

Deno.test({
  name: "redis: a killed process's users are announced as left, once",
  ignore,
  fn: () =>
    withCluster(3, async (_redis, [a, b, c]) => {
      const alice = await jsonClient(a.server, "/k", { nick: "alice" });
      const bob = await textClient(a.server, "/k", { nick: "bob" });
      const carol = await jsonClient(b.server, "/k", { nick: "carol" });
      const dan = await jsonClient(c.server, "/k", { nick: "dan" });
      await eventsUntil(carol, (e) => e.nick === "dan", "dan's join");
      const killedAt = Date.now();
      await a.kill();
      for (const peer of [carol, dan]) {
        const leaves = [
          await peer.event("the first leave"),
          await peer.event("the second leave"),
        ];
        assert.deepEqual(
          leaves.map((e) => [e.type, e.nick]).sort(),
          [["leave", "alice"], ["leave", "bob"]],
        );
        assert.equal(leaves[1].id, leaves[0].id + 1);
      }
      const took = Date.now() - killedAt;
      assert.ok(took < 5000, `announced after ${took} ms`);
      // Nothing more (no second announcement from the other survivor).
      await new Promise((resolve) => setTimeout(resolve, 1500));
      assert.equal(carol.pending, 0);
      assert.equal(dan.pending, 0);
      // Their nicks are free again.
      const again = await jsonClient(b.server, "/k", { nick: "alice" });
      assert.equal(again.welcome.you, "alice");
      assert.deepEqual(again.welcome.users, ["carol", "dan", "alice"]);
      await closeAll(carol, dan, again);
      await Promise.all([alice.closed, bob.closed]);
    }, { env: { CHAT_REDIS_HEARTBEAT_MS: "300" } }),
});

Deno.test({
  name: "redis: a nick is unique across processes; a token takes it over",
  ignore,
  fn: () =>
    withCluster(2, async (_redis, [a, b]) => {
      const alice = await jsonClient(a.server, "/n", { nick: "Alice" });
      const other = await jsonClient(b.server, "/n", { nick: "alice" });
      assert.notEqual(other.welcome.you, "alice");
      assert.equal((await other.event("the error")).code, "nick_taken");
      other.send(JSON.stringify({ type: "nick", nick: "ALICE" }));
      assert.equal((await other.event("the error")).code, "nick_taken");
      other.send(JSON.stringify({ type: "nick", nick: "bob" }));
      const renamed = await eventsUntil(
        other,
        (e) => e.type === "nick",
        "nick",
      );
      assert.deepEqual([renamed.at(-1).from, renamed.at(-1).to], [
        other.welcome.you,
        "bob",
      ]);
      // The stale connection is on process a; the new one comes to b.
      const back = await jsonClient(b.server, "/n", {
        nick: "Alice",
        token: alice.welcome.token,
      });
      assert.equal(back.welcome.you, "Alice");
      const closed = await within(alice.closed, "the stale connection's close");
      assert.equal(closed.code, 1000);
      assert.deepEqual(back.welcome.users, ["bob", "Alice"]);
      // A wrong token takes nothing.
      const thief = await jsonClient(a.server, "/n", {
        nick: "alice",
        token: "x".repeat(43),
      });
      assert.notEqual(thief.welcome.you, "alice");
      await closeAll(other, back, thief);
    }),
});

Deno.test({
  name: "redis: Redis killed and restarted mid-chat: errors, then no loss",
  ignore,
  fn: async () => {
    const dir = await Deno.makeTempDir({ prefix: "chat-redis-" });
    let redis = await startRedis({ dir });
    const chats: ChatProcess[] = [];
    try {
      chats.push(
        ...await Promise.all([
          startChatProcess(redis.url),
          startChatProcess(redis.url),
        ]),
      );
      const [a, b] = chats;
      const alice = await jsonClient(a.server, "/o", { nick: "alice" });
      const bob = await jsonClient(b.server, "/o", { nick: "bob" });
      const carol = await textClient(b.server, "/o", { nick: "carol" });
      alice.send(JSON.stringify({ type: "message", text: "before" }));
      const seenA = await eventsUntil(alice, isMessage("before"), "before");
      const seenB = await eventsUntil(bob, isMessage("before"), "before");
      await redis.kill();
      for (const chat of chats) {
        await eventually("healthz 503", async () => {
          const { status, body } = await health(chat);
          return status === 503 && body.redis === "down";
        });
      }
      alice.send(JSON.stringify({ type: "message", text: "lost" }));
      assert.equal((await alice.event("the error")).code, "unavailable");
      carol.send("also lost");
      await carol.nextMatching(/unavailable/, "carol's error");
      // A new connection is refused while Redis is away.
      const refused = await fetch(`http://127.0.0.1:${a.wsPort}/o`, {
        headers: { upgrade: "websocket" },
      });
      await refused.body?.cancel();
      assert.equal(refused.status, 503);
      redis = await startRedis({ port: redis.port, dir });
      for (const chat of chats) {
        await eventually("healthz 200", async () => {
          const { status, body } = await health(chat);
          return status === 200 && body.redis === "up";
        });
      }
      alice.send(JSON.stringify({ type: "message", text: "after-a" }));
      bob.send(JSON.stringify({ type: "message", text: "after-b" }));
      carol.send("after-c");
      for (const [peer, seen] of [[alice, seenA], [bob, seenB]] as const) {
        const later: Json[] = [];
        while (later.filter((e) => e.type === "message").length < 3) {
          later.push(await peer.event("the messages after"));
        }
        const all = [...seen, ...later];
        assertContiguous(all, all[0].id - 1, "all events");
        assert.deepEqual(
          later.map((e) => e.text).sort(),
          ["after-a", "after-b", "after-c"],
        );
      }
      for (const text of ["after-a", "after-b", "after-c"]) {
        await carol.nextMatching(new RegExp(`: ${text}$`), text);
      }
      // A newcomer after the outage gets the whole history, once each.
      const dave = await jsonClient(a.server, "/o", { nick: "dave" });
      const texts = dave.welcome.history.filter((e: Json) =>
        e.type === "message"
      ).map((e: Json) => e.text);
      assert.deepEqual(texts.slice(0, 1), ["before"]);
      assert.equal(texts.length, 4);
      await closeAll(alice, bob, carol, dave);
    } finally {
      await Promise.all(chats.map((chat) => chat.stop()));
      await redis.kill();
      await Deno.remove(dir, { recursive: true });
    }
  },
});

Deno.test({
  name: "redis: RedisStore.connect fails clearly when Redis is unreachable",
  ignore,
  fn: async () => {
    const listener = Deno.listen({ hostname: "127.0.0.1", port: 0 });
    const port = listener.addr.port;
    listener.close();
    await assert.rejects(
      () =>
        RedisStore.connect({
          url: `redis://127.0.0.1:${port}`,
          historySize: 10,
          maxHistoryBytes: 100_000,
          maxRooms: 10,
          roomTtl: 60,
          onEvict: () => {},
          connectTimeoutMs: 500,
        }),
      /cannot reach Redis/,
    );
  },
});

Deno.test({
  name: "redis: in-process stores share a room; hold counts local rooms",
  ignore,
  fn: async () => {
    const redis = await startRedis();
    const common = {
      url: redis.url,
      historySize: 3,
      maxHistoryBytes: 100_000,
      maxRooms: 1,
      roomTtl: 60,
      onEvict: () => {},
      heartbeatMs: 200,
    };
    const one = await RedisStore.connect(common);
    const two = await RedisStore.connect(common);
    try {
      assert.ok(one.hold("x"));
      assert.equal(
        one.hold("y"),
        false,
        "maxRooms counts this process's rooms",
      );
      assert.ok(two.hold("y"), "another process has its own count");
      two.release("y");
      assert.ok(two.hold("x"));
      const got: number[] = [];
      const stop = two.subscribe("x", (event) => {
        if (event.type !== "typing") got.push(event.id);
      });
      const stopOne = one.subscribe("x", () => {});
      const joined = await one.join("x", { owner: "1", nick: "ann" });
      const other = await two.join("x", { owner: "1", nick: "ANN" });
      assert.equal(other.nickTaken, true);
      await one.append("x", { type: "message", from: "ann", text: "hi" });
      await eventually("delivery", () => got.length >= 2);
      assert.deepEqual(await two.members("x"), ["ann", other.nick]);
      // History is trimmed to historySize.
      const late = await one.join("x", { owner: "2" });
      assert.equal(late.history.length, 3);
      assert.equal(late.history.at(-1)!.id, late.lastId);
      assert.equal(joined.epoch, late.epoch);
      // A crashed process's members are announced as left by the other.
      const leaves: string[] = [];
      two.subscribe("x", (event) => {
        if (event.type === "leave") leaves.push(event.nick);
      });
      one.crash();
      await eventually("the reaping", () => leaves.length === 2);
      assert.deepEqual(leaves.sort(), ["ann", late.nick].sort());
      assert.deepEqual(await two.members("x"), [other.nick]);
      stop();
      stopOne();
    } finally {
      await one.close();
      await two.close();
      await redis.kill();
    }
  },
});

Deno.test({
  name: "redis: without --redis the in-memory store runs, the module unread",
  fn: async () => {
    // Denying read access to redis_store.ts makes any import of it fail, so
    // a chat that works here never loaded it.
    const child = new Deno.Command(Deno.execPath(), {
      args: [
        "run",
        "--allow-net",
        "--allow-env",
        "--allow-read",
        "--deny-read=./redis_store.ts",
        "main.ts",
        "--hostname",
        "127.0.0.1",
        "--port",
        "0",
        "--ws-port",
        "0",
        "--quiet",
      ],
      cwd: import.meta.dirname,
      env: { REDIS_URL: "" },
      stdin: "null",
      stdout: "piped",
      stderr: "null",
    }).spawn();
    const lines = child.stdout.pipeThrough(new TextDecoderStream()).getReader();
    try {
      const { value } = await within(lines.read(), "the start-up line", 15000);
      const match = value!.match(/:(\d+)\/ \(chat on port (\d+)\)/);
      assert.ok(match, value);
      const response = await fetch(`http://127.0.0.1:${match[1]}/healthz`);
      const body = await response.json();
      assert.equal(body.status, "ok");
      assert.equal("redis" in body, false);
      const peer = new Peer(`ws://127.0.0.1:${match[2]}/`, JSON_PROTOCOL);
      assert.equal((await peer.event("the welcome")).type, "welcome");
      await peer.close();
    } finally {
      child.kill("SIGTERM");
      await lines.cancel();
      await child.status;
    }
  },
});

Deno.test({
  name:
    "redis: RedisStore answers as MemoryStore does (history, resume, nicks)",
  ignore,
  fn: async () => {
    const redis = await startRedis();
    const options = {
      historySize: 5,
      maxHistoryBytes: 700,
      maxRooms: 10,
      onEvict: () => {},
    };
    const memory = new MemoryStore(options);
    const shared = await RedisStore.connect({
      ...options,
      url: redis.url,
      roomTtl: 60,
    });
    try {
      const runs: unknown[][] = [];
      for (const store of [memory, shared] as RoomStore[]) {
        const seen: unknown[] = [];
        const strip = (event: LiveEvent) => {
          if (event.type === "typing") return event;
          const { ts: _ts, ...rest } = event;
          return rest;
        };
        const answer = (joined: Joined) => ({
          ...joined,
          epoch: undefined,
          token: undefined,
          history: joined.history.map(strip),
        });
        const out: unknown[] = [];
        store.hold("x");
        const stop = store.subscribe("x", (event) => seen.push(strip(event)));
        const first = await store.join("x", { owner: "1", nick: "ann" });
        out.push(answer(first));
        for (const text of ["a", "b".repeat(120), "c", "d"]) {
          out.push(strip(
            await store.append("x", { type: "message", from: "ann", text }),
          ));
        }
        store.hold("x");
        const second = await store.join("x", { owner: "2", nick: "ANN" });
        out.push(answer({ ...second, nick: "", users: [] }));
        out.push(await store.rename("x", "2", second.nick, "Ann"));
        out.push(
          strip(
            await store.rename("x", "2", second.nick, "bob") as RoomEvent,
          ),
        );
        await store.leave("x", "1", true);
        store.hold("x");
        // Resume from every point: some served, some too old (gap).
        for (let since = 0; since <= first.lastId + 8; since += 2) {
          store.hold("x");
          const back = await store.join("x", {
            owner: `r${since}`,
            since,
            epoch: first.epoch,
          });
          out.push(
            answer({ ...back, nick: "", users: [], history: back.history }),
          );
          await store.leave("x", `r${since}`, false);
        }
        store.release("x");
        out.push(await store.members("x"));
        await eventually("delivery", () => seen.length >= 8);
        stop();
        runs.push([out, seen.slice(0, 8)]);
      }
      // Random nicks differ: compare what does not depend on them.
      const scrub = (value: unknown) =>
        JSON.parse(
          JSON.stringify(value).replace(/user-\d+/g, "user-N"),
        );
      assert.deepEqual(scrub(runs[1]), scrub(runs[0]));
    } finally {
      await shared.close();
      await redis.kill();
    }
  },
});

Deno.test({
  name: "redis: an outage longer than the heartbeat announces nobody as left",
  ignore,
  fn: async () => {
    const dir = await Deno.makeTempDir({ prefix: "chat-redis-" });
    let redis = await startRedis({ dir });
    const options = {
      url: redis.url,
      historySize: 50,
      maxHistoryBytes: 100_000,
      maxRooms: 10,
      roomTtl: 60,
      onEvict: () => {},
      heartbeatMs: 100,
    };
    const one = await RedisStore.connect(options);
    const two = await RedisStore.connect(options);
    try {
      const seen: RoomEvent[] = [];
      one.hold("x");
      two.hold("x");
      const stopOne = one.subscribe("x", () => {});
      const stopTwo = two.subscribe("x", (event) => {
        if (event.type !== "typing") seen.push(event);
      });
      await one.join("x", { owner: "1", nick: "ann" });
      await two.join("x", { owner: "1", nick: "bob" });
      await eventually("both joins", () => seen.length === 2);
      await redis.kill();
      await eventually("down", () => !one.available() && !two.available());
      await assert.rejects(
        () => one.append("x", { type: "message", from: "ann", text: "no" }),
        StoreUnavailable,
      );
      await new Promise((resolve) => setTimeout(resolve, 1000));
      redis = await startRedis({ port: redis.port, dir });
      await eventually("up", () => one.available() && two.available());
      await one.append("x", { type: "message", from: "ann", text: "yes" });
      await new Promise((resolve) => setTimeout(resolve, 800));
      assert.deepEqual(
        seen.map((event) => event.type),
        ["join", "join", "message"],
      );
      assert.deepEqual(await two.members("x"), ["ann", "bob"]);
      stopOne();
      stopTwo();
    } finally {
      await one.close();
      await two.close();
      await redis.kill();
      await Deno.remove(dir, { recursive: true });
    }
  },
});

Deno.test({
  name: "redis: one session's tabs on two processes are one member",
  ignore,
  fn: () =>
    withCluster(2, async (_redis, [a, b]) => {
      const session = "chat.session." + "s".repeat(30);
      const watcher = await jsonClient(a.server, "/tabs", { nick: "watcher" });
      const tab = (chat: ChatProcess) =>
        new Peer(
          `ws://127.0.0.1:${chat.wsPort}/tabs?nick=zoe`,
          [JSON_PROTOCOL, session],
        );
      const one = tab(a);
      const first = await one.event("the first tab's welcome");
      assert.equal(first.you, "zoe");
      const two = tab(b);
      const second = await two.event("the second tab's welcome");
      assert.equal(second.you, "zoe", "the same person keeps the nick");
      assert.deepEqual(second.users, ["watcher", "zoe"]);
      const [join] = await eventsUntil(
        watcher,
        (e) => e.type === "join",
        "join",
      );
      assert.equal(join.nick, "zoe");
      await one.close(1000); // a tab closed for good (no grace)
      watcher.send(JSON.stringify({ type: "message", text: "still here?" }));
      const seen = await eventsUntil(
        watcher,
        isMessage("still here?"),
        "the message",
      );
      assert.deepEqual(seen.map((e) => e.type), ["message"], "no leave yet");
      await two.close(1000);
      const [leave] = await eventsUntil(
        watcher,
        (e) => e.type === "leave",
        "zoe's leave",
      );
      assert.equal(leave.nick, "zoe");
      await watcher.close();
    }),
});

Deno.test({
  name: "redis: typing notices and direct messages cross processes",
  ignore,
  fn: () =>
    withCluster(2, async (_redis, [a, b]) => {
      const alice = await jsonClient(a.server, "/dm", { nick: "alice" });
      const bob = await jsonClient(b.server, "/dm", { nick: "bob" });
      await eventsUntil(alice, (e) => e.nick === "bob", "bob's join");
      alice.send(JSON.stringify({ type: "typing" }));
      assert.deepEqual(await bob.event("the typing notice"), {
        type: "typing",
        nick: "alice",
      });
      bob.send(JSON.stringify({ type: "dm", to: "alice", text: "psst" }));
      const [dm] = (await eventsUntil(alice, (e) => e.type === "dm", "the dm"))
        .slice(-1);
      assert.deepEqual([dm.from, dm.to, dm.text], ["bob", "alice", "psst"]);
      await closeAll(alice, bob);
    }),
});

Deno.test({
  name:
    "redis: a tab that drops on one process and comes back on another within the grace makes no leave or join",
  ignore,
  fn: () =>
    withCluster(2, async (_redis, [a, b]) => {
      const session = "chat.session." + "g".repeat(30);
      const watcher = await jsonClient(a.server, "/grace", { nick: "watcher" });
      const tab = (chat: ChatProcess, query = "") =>
        new Peer(
          `ws://127.0.0.1:${chat.wsPort}/grace?nick=zoe${query}`,
          [JSON_PROTOCOL, session],
        );
      const one = tab(a);
      const first = await one.event("the first tab's welcome");
      await eventsUntil(watcher, (e) => e.type === "join", "zoe's join");
      await one.close(4000); // dropped, not a goodbye: the grace begins on a
      const back = tab(b, `&since=${first.lastId}&epoch=${first.epoch}`);
      const again = await back.event("the welcome on the other process");
      assert.equal(again.you, "zoe");
      assert.equal(again.gap, false);
      // Past the grace period: neither a leave nor a join was announced.
      await new Promise((resolve) => setTimeout(resolve, 1500));
      watcher.send(JSON.stringify({ type: "message", text: "marker" }));
      const seen = await eventsUntil(watcher, isMessage("marker"), "marker");
      assert.deepEqual(seen.map((e) => e.type), ["message"]);
      await back.close(4000);
      const [leave] = await eventsUntil(
        watcher,
        (e) => e.type === "leave",
        "zoe's leave after the grace",
      );
      assert.equal(leave.nick, "zoe");
      await watcher.close();
    }, { args: ["--session-grace", "1"] }),
});
