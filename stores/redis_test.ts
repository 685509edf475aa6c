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
  health,
  type Json,
  jsonClient,
  metric,
  Peer,
  textClient,
  within,
} from "../tests/test_helpers.ts";
import {
  type ChatProcess,
  haveRedis,
  type RedisServer,
  startChatProcess,
  startRedis,
} from "../tests/redis_helpers.ts";
import {
  COALESCE_MS,
  POSTING_MS,
  RedisStore,
  type RedisStoreOptions,
} from "./redis_store.ts";
import { OPTIONS } from "../main.ts";
import { createClient } from "redis";
import {
  JSON_PROTOCOL,
  type LiveEvent,
  type ReactEvent,
  type RoomEvent,
} from "../wire/protocol.ts";
import {
  type Joined,
  type KeptReaction,
  MemoryStore,
  nickKey,
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

/**
 * Options for a store of the test's own on `redis` (one history, no TTL to
 * speak of, a quick heartbeat), with `fields` over them; with `warnings`,
 * the store's warnings and errors are kept there.
 */
function storeOptions(
  redis: RedisServer,
  fields: Partial<RedisStoreOptions> = {},
  warnings?: string[],
): RedisStoreOptions {
  return {
    url: redis.url,
    historySize: 100,
    maxHistoryBytes: 100_000,
    maxRooms: 10,
    roomTtl: 60,
    onEvict: () => {},
    heartbeatMs: 1000,
    ...(warnings
      ? {
        log: (level: string, event: string) => {
          if (level !== "info") warnings.push(event);
        },
      }
      : {}),
    ...fields,
  };
}

/**
 * A fresh redis-server and two stores on it, as two processes would have
 * them, with `fields` over {@linkcode storeOptions}; all closed after `test`.
 */
async function withTwoStores(
  fields: Partial<RedisStoreOptions>,
  test: (stores: {
    one: RedisStore;
    two: RedisStore;
    redis: RedisServer;
    options: RedisStoreOptions;
  }) => Promise<void>,
): Promise<void> {
  const redis = await startRedis();
  const options = storeOptions(redis, fields);
  const stores: RedisStore[] = [];
  try {
    for (let i = 0; i < 2; i++) stores.push(await RedisStore.connect(options));
    await test({ one: stores[0], two: stores[1], redis, options });
  } finally {
    for (const store of stores) await store.close();
    await redis.kill();
  }
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
      // The server has taken her leave (announced, kept in history) before
      // it is stopped: a stop first would leave her unannounced.
      await eventually(
        "alice's leave",
        async () => (await health(a)).body.connections === 0,
      );
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
      // The newcomer's join was one of a2's commits, counted in /metrics.
      assert.ok(
        await metric(
          a2.server,
          'chat_store_decisions_total{outcome="committed"}',
        ) >= 1,
      );
      await closeAll(back, newcomer);
    } finally {
      await Promise.all(chats.map((chat) => chat.stop()));
      await redis.kill();
    }
  },
});

Deno.test({
  name:
    "redis: --redis-coalesce-ms reaches the store: held this long, two processes' messages share a frame",
  ignore,
  fn: () =>
    withCluster(2, async (_redis, [a, b]) => {
      const alice = await jsonClient(a.server, "/w", { nick: "alice" });
      const bob = await jsonClient(b.server, "/w", { nick: "bob" });
      await eventsUntil(alice, (e) => e.nick === "bob", "bob's join");
      const say = (peer: Peer, text: string) =>
        peer.send(JSON.stringify({ type: "message", text }));
      const texts = (frame: string) =>
        [JSON.parse(frame)].flat().map((e: Json) => e.text);
      // Nobody else posts: a1 goes out at once.
      say(alice, "a1");
      assert.deepEqual(texts(await alice.next("a1")), ["a1"]);
      // b1 goes right after a1's echo, while alice's process counts as
      // posting (POSTING_MS): it waits for that process's next batch, well
      // past the default 40 ms, and goes out with a2 in one frame.
      say(bob, "b1");
      assert.deepEqual(texts(await bob.next("a1")), ["a1"]);
      await new Promise((resolve) => setTimeout(resolve, 300));
      say(alice, "a2");
      for (const peer of [alice, bob]) {
        assert.deepEqual(texts(await peer.next("b1 and a2")), ["b1", "a2"]);
      }
      await closeAll(alice, bob);
    }, { args: ["--redis-coalesce-ms", "60000"] }),
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
  fn: () =>
    withTwoStores({
      historySize: 3,
      maxRooms: 1,
      heartbeatMs: 200,
    }, async ({ one, two }) => {
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
        if (event.type !== "typing" && event.type !== "react") {
          got.push(event.id);
        }
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
    }),
});

/** How many times Redis ran `command` without an error (scripts' calls included). */
async function commandCalls(url: string, command: string): Promise<number> {
  const client = createClient({ url });
  await client.connect();
  try {
    const info = await client.info("commandstats");
    const found = info.match(
      new RegExp(`cmdstat_${command}:calls=(\\d+),.*failed_calls=(\\d+)`),
    );
    // A script's first call fails (NOSCRIPT), then it is loaded and run.
    return found ? Number(found[1]) - Number(found[2]) : 0;
  } finally {
    await client.close();
  }
}

/** Publishes `message` on `channel` from a client of our own. */
async function publish(url: string, channel: string, message: string) {
  const client = createClient({ url });
  await client.connect();
  try {
    await client.publish(channel, message);
  } finally {
    await client.close();
  }
}

/**
 * Big enough to take a subscriber many reads, small enough for Redis's
 * pub/sub output buffer limit (8 MB for 60 s).
 */
const JUNK = "x".repeat(4 * 1024 * 1024);

/** The members after each event, replayed from every event of a room. */
function membersAfter(events: RoomEvent[]): Map<number, string[]> {
  const members: string[] = [];
  const after = new Map<number, string[]>([[0, []]]);
  for (const event of events) {
    if (event.type === "join") members.push(event.nick);
    else if (event.type === "leave") {
      members.splice(members.indexOf(event.nick), 1);
    } else if (event.type === "nick") {
      members[members.indexOf(event.from)] = event.to;
    }
    after.set(event.id, [...members]);
  }
  return after;
}

Deno.test({
  name:
    "redis: a join reads no member list; its users are the members as of its lastId",
  ignore,
  fn: async () => {
    const redis = await startRedis();
    const warnings: string[] = [];
    const common = storeOptions(redis, { historySize: 10 }, warnings);
    const stores = [
      await RedisStore.connect(common),
      await RedisStore.connect(common),
    ];
    const watcher = await RedisStore.connect(common);
    try {
      // Every event of the room, from its first.
      const events: RoomEvent[] = [];
      watcher.hold("big");
      watcher.subscribe("big", (event) => {
        if (event.type !== "typing" && event.type !== "react") {
          events.push(event);
        }
      });
      const joins: Joined[] = [];
      const joinOn = async (i: number, nick?: string) => {
        const store = stores[i % 2];
        store.hold("big");
        joins.push(await store.join("big", { owner: `o${i}`, nick }));
      };
      // Each process reads its members once, when it first subscribes.
      await joinOn(0, "ann");
      await joinOn(1, "bob");
      const hvals = await commandCalls(redis.url, "hvals");
      // Joins on both processes at once, with leaves and renames among them:
      // each process's view is behind or ahead of each reply in turn.
      const joining = new Map<number, Promise<void>>();
      const work: Promise<unknown>[] = [];
      let renames = Promise.resolve();
      let annNick = "ann";
      for (let i = 2; i < 60; i++) {
        if (i % 5 === 0) {
          // A few MB on the room's channel ahead of the join's event (not
          // JSON: delivery drops it) keep the subscription reading while
          // the join's reply arrives: the process must wait for its event.
          await publish(redis.url, "chat:ev:big", JUNK);
        }
        joining.set(i, joinOn(i));
        const gone = i - 6;
        if (i % 10 === 0) {
          work.push(
            joining.get(gone)!.then(() =>
              stores[gone % 2].leave("big", `o${gone}`, true)
            ),
          );
        }
        if (i % 7 === 0) {
          renames = renames.then(async () => {
            const to = `ann${i}`;
            const renamed = await stores[0].rename("big", "o0", annNick, to);
            if (renamed !== "nick_taken") annNick = to;
          });
        }
      }
      await Promise.all([...joining.values(), ...work, renames]);
      assert.notEqual(annNick, "ann");
      // A batch of joins reads the room's moderators (the `ops` hash,
      // empty here) with one HVALS, shared by its joins, and nothing reads
      // the members again: at most one HVALS a join, whereas a member list
      // read (the fallback, with its warning) would add one more each.
      const read = await commandCalls(redis.url, "hvals") - hvals;
      assert.ok(
        read >= 1 && read <= joining.size,
        `no join read the member list (${read} HVALS for ${joining.size} joins)`,
      );
      assert.deepEqual(warnings, [], "no roster read again or missed");
      const last = Math.max(...joins.map((joined) => joined.lastId));
      await eventually("every event", () => (events.at(-1)?.id ?? 0) >= last);
      const after = membersAfter(events);
      for (const joined of joins) {
        assert.deepEqual(
          joined.users,
          after.get(joined.lastId),
          `the welcome of ${joined.nick} (lastId ${joined.lastId})`,
        );
      }
      assert.ok(
        events.some((e) => e.type === "leave") &&
          events.some((e) => e.type === "nick"),
      );
    } finally {
      for (const store of [...stores, watcher]) await store.close();
      await redis.kill();
    }
  },
});

/**
 * Two stores in room `name`, each with a member: `turns` are the messages
 * `one` hands out, grouped by the turn it hands them in; `say` posts one,
 * `handedOut` waits until `one` has handed it out.
 */
async function turnsOf(one: RedisStore, two: RedisStore, name: string) {
  const turns: string[][] = [];
  let turn: string[] | undefined;
  for (const store of [one, two]) store.hold(name);
  one.subscribe(name, (event) => {
    if (event.type !== "message") return;
    if (!turn) {
      turns.push(turn = []);
      queueMicrotask(() => turn = undefined);
    }
    turn.push(event.text);
  });
  two.subscribe(name, () => {});
  await one.join(name, { owner: "a", nick: "a" });
  await two.join(name, { owner: "b", nick: "b" });
  return {
    turns,
    say: (store: RedisStore, text: string) =>
      store.append(name, { type: "message", from: "x", text }),
    handedOut: (text: string) =>
      eventually(text, () => turns.flat().includes(text)),
  };
}

/**
 * `two` posts b1, pauses `pauseMs`, posts b2; 100 ms later `one` posts a1,
 * and 300 ms after that `two` posts b3. Returns the turns `one` handed them
 * out in (`turnsOf`).
 */
async function pausedTurns(
  one: RedisStore,
  two: RedisStore,
  name: string,
  pauseMs: number,
): Promise<string[][]> {
  const { turns, say, handedOut } = await turnsOf(one, two, name);
  const sleep = (ms: number) =>
    new Promise((resolve) => setTimeout(resolve, ms));
  await say(two, "b1");
  await handedOut("b1");
  await sleep(pauseMs);
  await say(two, "b2");
  await handedOut("b2");
  await sleep(100);
  await say(one, "a1");
  await sleep(300);
  await say(two, "b3");
  await handedOut("b3");
  return turns;
}

Deno.test({
  name:
    "redis: while two processes post into a room, each hands their batches out together; a lone poster's go out at once",
  ignore,
  // A wait this long would time the test out: nothing here may wait it out.
  fn: () =>
    withTwoStores({ coalesceMs: 60_000 }, async ({ one, two }) => {
      const { turns, say, handedOut } = await turnsOf(one, two, "c");
      // Nobody else posts: at once.
      await say(one, "alone");
      await handedOut("alone");
      // `two` posts while `one` does: b1 waits for one's next batch.
      await say(two, "b1");
      await say(one, "a2");
      await handedOut("a2");
      // Both quiet for longer than a poster counts (`POSTING_MS`): at once
      // again.
      await new Promise((resolve) => setTimeout(resolve, 2 * POSTING_MS));
      await say(two, "later");
      await handedOut("later");
      assert.deepEqual(turns, [["alone"], ["b1", "a2"], ["later"]]);
    }),
});

Deno.test("redis: --redis-coalesce-ms defaults to the store's own default", () => {
  // main.ts may not import the store (it is loaded only with --redis), so
  // the default is written twice: they must agree.
  assert.equal(OPTIONS.redisCoalesceMs.default, COALESCE_MS);
});

Deno.test({
  name:
    "redis: a process posting into a room is not waited for when its next batch is not due within the wait",
  ignore,
  fn: () =>
    // A 1 s wait; posters count for 5 s. `two` posts every 1.5 s, so its
    // next batch is due after any wait `one`'s a1 could make.
    withTwoStores(
      { coalesceMs: 1000, postingMs: 5000 },
      async ({ one, two }) => {
        // Were `two` waited for, a1 would still wait when b3 comes.
        assert.deepEqual(await pausedTurns(one, two, "d", 1500), [
          ["b1"],
          ["b2"],
          ["a1"],
          ["b3"],
        ]);
      },
    ),
});

Deno.test({
  name:
    "redis: a process back after a pause is waited for afresh, not paced by the pause",
  ignore,
  fn: () =>
    // A 1 s wait; posters count for 1.5 s. `two` posts, pauses 2 s, posts
    // again: its pace is not known then (so it is waited for), not 2 s
    // (which would be due after the wait).
    withTwoStores(
      { coalesceMs: 1000, postingMs: 1500 },
      async ({ one, two }) => {
        assert.deepEqual(await pausedTurns(one, two, "p", 2000), [
          ["b1"],
          ["b2"],
          ["a1", "b3"],
        ]);
      },
    ),
});

Deno.test({
  name:
    "redis: a welcome's history comes from the events the process took, as Redis has it (trims, deletions on another process)",
  ignore,
  fn: () =>
    withTwoStores({
      historySize: 40,
      maxHistoryBytes: 40_000,
    }, async ({ one: here, two: there, redis, options }) => {
      const client = createClient({ url: redis.url });
      await client.connect();
      try {
        for (const store of [here, there]) {
          store.hold("h");
          store.subscribe("h", () => {});
        }
        await here.join("h", { owner: "1", nick: "ann" });
        await there.join("h", { owner: "2", nick: "bob" });
        const say = (text: string) =>
          there.append("h", { type: "message", from: "bob", text });
        // Trimmed by count (40) and by bytes (each long one costs 2,064), one
        // deleted.
        const ids: number[] = [];
        for (let i = 0; i < 45; i++) {
          const text = i % 3 === 0 ? `s${i}` : `${i}`.padEnd(1000, "x");
          ids.push((await say(text)).id);
        }
        await there.delete("h", ids[40], "bob");
        await say("e");
        const stream = async () =>
          (await client.xRange("chat:room:h:events", "-", "+")).map((entry) =>
            JSON.parse(entry.message.e) as RoomEvent
          );
        const sentBefore = await netOutput(client);
        const cy = await here.join("h", { owner: "3", nick: "cy" });
        const sent = await netOutput(client) - sentBefore;
        const kept = await stream();
        assert.ok(kept.some((event) => event.type === "delete"));
        assert.ok(!kept.some((event) => event.id === ids[40]));
        assert.ok(kept[0].id > ids[0] && kept.length < 40);
        assert.deepEqual(cy.history, kept);
        // Redis sent the join's answer and event, not the history.
        const historyBytes = JSON.stringify(kept).length;
        assert.ok(
          sent < historyBytes / 2,
          `${sent} bytes for a history of ${historyBytes}`,
        );
        // A process that took none of it reads it from Redis.
        const third = await RedisStore.connect(options);
        try {
          third.hold("h");
          third.subscribe("h", () => {});
          const dee = await third.join("h", { owner: "4", nick: "dee" });
          assert.deepEqual(dee.history, await stream());
        } finally {
          await third.close();
        }
      } finally {
        await client.close();
      }
    }),
});

/** Bytes Redis has sent to its clients so far. */
async function netOutput(client: ReturnType<typeof createClient>) {
  const info = await client.info("stats");
  return Number(info.match(/total_net_output_bytes:(\d+)/)![1]);
}

Deno.test({
  name:
    "redis: a turn's appends are one script and one message, in the order asked",
  ignore,
  fn: () =>
    withTwoStores({}, async ({ one: writer, two: reader, redis }) => {
      const got: RoomEvent[] = [];
      reader.hold("t");
      reader.subscribe("t", (event) => {
        if (event.type === "message") got.push(event);
      });
      writer.hold("t");
      await writer.join("t", { owner: "w", nick: "w" });
      const scripts = await commandCalls(redis.url, "evalsha");
      const publishes = await commandCalls(redis.url, "publish");
      const texts = Array.from({ length: 20 }, (_, i) => `m${i}`);
      const appended = await Promise.all(
        texts.map((text) =>
          writer.append("t", { type: "message", from: "w", text })
        ),
      );
      assert.equal(await commandCalls(redis.url, "evalsha"), scripts + 1);
      assert.equal(await commandCalls(redis.url, "publish"), publishes + 1);
      const first = appended[0].id;
      assert.deepEqual(
        appended.map((event) => [event.id, (event as { text: string }).text]),
        texts.map((text, i) => [first + i, text]),
      );
      await eventually("delivery", () => got.length === texts.length);
      assert.deepEqual(got, appended);
    }),
});

Deno.test({
  name:
    "redis: a turn's posts are one script: a muted person's refused, the rest in order, a rename after them",
  ignore,
  fn: () =>
    withTwoStores({}, async ({ one: writer, two: reader, redis }) => {
      const got: RoomEvent[] = [];
      reader.hold("t");
      reader.subscribe("t", (event) => {
        if (event.type !== "typing" && event.type !== "react") got.push(event);
      });
      writer.hold("t");
      await writer.join("t", { owner: "s.ann", nick: "ann", keys: ["s.ann"] });
      writer.hold("t");
      await writer.join("t", { owner: "s.bob", nick: "bob", keys: ["s.bob"] });
      assert.equal(await writer.mute("t", "bob"), "muted");
      const ann = { owner: "s.ann", keys: ["s.ann"], op: false };
      const bob = { owner: "s.bob", keys: ["s.bob"], op: false };
      const scripts = await commandCalls(redis.url, "evalsha");
      const publishes = await commandCalls(redis.url, "publish");
      // One turn: three posts, then a rename by the first poster.
      const asked = [
        writer.post("t", ann, { type: "message", from: "ann", text: "a" }),
        writer.post("t", bob, { type: "message", from: "bob", text: "b" }),
        writer.post("t", ann, { type: "action", from: "ann", text: "c" }),
        writer.rename("t", "s.ann", "ann", "anna"),
      ] as const;
      const [a, b, c, renamed] = await Promise.all(asked);
      assert.deepEqual(b, { refused: "muted" });
      assert.equal(
        await commandCalls(redis.url, "evalsha"),
        scripts + 3,
        "one COMMIT for the posts (decided on what the mute left), a READ and a COMMIT for the rename",
      );
      assert.equal(
        await commandCalls(redis.url, "publish"),
        publishes + 2,
        "the posts as one message, the rename as another",
      );
      const posted = [a, c] as RoomEvent[];
      assert.deepEqual(
        posted.map((event) => [event.type, (event as { text: string }).text]),
        [["message", "a"], ["action", "c"]],
      );
      assert.ok(renamed !== "nick_taken");
      assert.deepEqual(
        [...posted, renamed].map((event) => event.id),
        [posted[0].id, posted[0].id + 1, posted[0].id + 2],
        "the rename after the posts asked before it",
      );
      await eventually("delivery", () => got.at(-1)?.id === renamed.id);
      assert.deepEqual(got.slice(-3), [...posted, renamed]);
    }),
});

Deno.test({
  name:
    "redis: each process's members follow kicks, verified takeovers, unannounced leaves, the last one out",
  ignore,
  fn: async () => {
    const redis = await startRedis();
    const warnings: string[] = [];
    const common = storeOptions(redis, {}, warnings);
    const [a, b, c] = [
      await RedisStore.connect(common),
      await RedisStore.connect(common),
      await RedisStore.connect(common),
    ];
    /** Every connection joined, by store and owner. */
    const connections: [RedisStore, string][] = [];
    /** A join, whose welcome must list the members as Redis has them. */
    const joinOn = async (
      store: RedisStore,
      request: Partial<Parameters<RoomStore["join"]>[1]> = {},
    ) => {
      const owner = request.owner ?? `s.${connections.length}`;
      connections.push([store, owner]);
      store.hold("r");
      const joined = await store.join("r", { ...request, owner });
      const roster = await a.roster("r");
      assert.deepEqual(joined.users, roster.map((entry) => entry.nick));
      assert.deepEqual(
        joined.verified,
        roster.filter((entry) => entry.verified).map((entry) => entry.nick),
      );
      assert.deepEqual(
        joined.moderators,
        roster.filter((entry) => entry.op).map((entry) => entry.nick),
      );
      return joined;
    };
    try {
      await joinOn(a, { nick: "mod", op: true, owner: "s.mod" });
      await joinOn(b, { nick: "bob" });
      await joinOn(c, { nick: "cy" });
      assert.deepEqual((await joinOn(b)).moderators, ["mod"]);
      // A kick: out on every process.
      assert.notEqual(
        await a.kick("r", { nick: "bob", by: "mod" }),
        "no_such_nick",
      );
      assert.ok(!(await joinOn(c)).users.includes("bob"));
      // A verified person takes a name an anonymous member holds: that one
      // is renamed (a nick event), and the newcomer is listed as verified.
      await joinOn(b, { nick: "carl" });
      const carl = await joinOn(c, {
        nick: "carl",
        verified: true,
        owner: "u.carl",
      });
      assert.equal(carl.nick, "carl");
      assert.ok((await joinOn(a)).verified.includes("carl"));
      // Leaves not announced (a process shutting down): no event, yet out
      // of every process's list.
      const cy = await joinOn(c, { nick: "cy2", owner: "s.cy2" });
      await c.leave("r", "s.cy2", false);
      await c.leave("r", "u.carl", false);
      assert.ok(!(await joinOn(b)).users.includes(cy.nick));
      // The moderator leaves: no longer listed as one.
      await a.leave("r", "s.mod", true);
      assert.deepEqual((await joinOn(b)).moderators, []);
      // Everyone leaves (those gone already change nothing), the last one
      // out unannounced (its process shutting down). A process that still
      // holds the room must not list anyone to the next one in.
      for (const [i, [store, owner]] of connections.entries()) {
        await store.leave("r", owner, i < connections.length - 1);
      }
      assert.deepEqual(await a.roster("r"), []);
      const alone = await joinOn(b, { nick: "last" });
      assert.deepEqual(alone.users, ["last"]);
      assert.deepEqual(warnings, [], "no member list read again or missed");
    } finally {
      for (const store of [a, b, c]) await store.close();
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
        "--deny-read=./stores/redis_store.ts",
        "main.ts",
        "--hostname",
        "127.0.0.1",
        "--port",
        "0",
        "--ws-port",
        "0",
        "--quiet",
      ],
      cwd: new URL("..", import.meta.url), // the repository, where main.ts is
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
          if (event.type === "typing" || event.type === "react") return event;
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
        if (event.type !== "typing" && event.type !== "react") seen.push(event);
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

Deno.test({
  name:
    "redis: joins racing from two processes are decided again when the other committed first; every nick stays one member's",
  ignore,
  fn: () =>
    withTwoStores({}, async ({ one, two }) => {
      const stores = [one, two];
      for (const store of stores) {
        for (let i = 0; i < 10; i++) store.hold("race");
        store.subscribe("race", () => {});
      }
      // Each process asks for the same ten nicks at once.
      const joins = await Promise.all(
        stores.flatMap((store, s) =>
          Array.from(
            { length: 10 },
            (_, i) => store.join("race", { owner: `${s}.${i}`, nick: `n${i}` }),
          )
        ),
      );
      const nicks = joins.map((joined) => joined.nick);
      assert.equal(new Set(nicks.map(nickKey)).size, 20, "no nick twice");
      for (let i = 0; i < 10; i++) {
        const asked = joins.filter((_, j) => j % 10 === i);
        assert.equal(
          asked.filter((joined) => joined.nick === `n${i}`).length,
          1,
          `n${i} went to one of the two`,
        );
        assert.equal(asked.filter((joined) => joined.nickTaken).length, 1);
      }
      const again = one.decisions().again + two.decisions().again;
      assert.ok(again > 0, "some joins found the room changed and re-decided");
      assert.deepEqual(
        (await one.members("race")).sort(),
        [...nicks].sort(),
      );
    }),
});

Deno.test({
  name:
    "redis: posts from two processes into one room never make each other decide again",
  ignore,
  fn: () =>
    withTwoStores({}, async ({ one, two }) => {
      for (const store of [one, two]) {
        store.hold("busy");
        store.subscribe("busy", () => {});
      }
      await one.join("busy", { owner: "a", nick: "a" });
      await two.join("busy", { owner: "b", nick: "b" });
      const before = one.decisions().again + two.decisions().again;
      const poster = (owner: string) => ({ owner, keys: [owner], op: false });
      for (let turn = 0; turn < 20; turn++) {
        await Promise.all([
          one.post("busy", poster("a"), {
            type: "message",
            from: "a",
            text: `a${turn}`,
          }),
          two.post("busy", poster("b"), {
            type: "message",
            from: "b",
            text: `b${turn}`,
          }),
        ]);
      }
      assert.equal(one.decisions().again + two.decisions().again, before);
      const page = await one.history("busy", {
        before: Number.MAX_SAFE_INTEGER,
        limit: 100,
        visible: () => true,
      });
      assert.equal(
        page.events.filter((event) => event.type === "message").length,
        40,
      );
    }),
});

Deno.test({
  name:
    "redis: two deletions of one message in one turn: one delete event, the other no_such_message, history's cost kept",
  ignore,
  fn: () =>
    withTwoStores({}, async ({ one, redis }) => {
      one.hold("d");
      one.subscribe("d", () => {});
      await one.join("d", { owner: "m", nick: "mod" });
      const said = await one.append("d", {
        type: "message",
        from: "mod",
        text: "oops",
      });
      const client = createClient({ url: redis.url });
      await client.connect();
      try {
        const bytes = async () =>
          Number(await client.hGet("chat:room:d:meta", "bytes"));
        const before = await bytes();
        const answers = await Promise.all([
          one.delete("d", said.id, "mod"),
          one.delete("d", said.id, "mod"),
        ]);
        assert.equal(
          answers.filter((answer) => typeof answer === "object").length,
          1,
        );
        assert.ok(answers.includes("no_such_message"));
        const deleted = answers.find((answer) => typeof answer === "object");
        assert.equal((deleted as RoomEvent).type, "delete");
        // One message less, one delete event more: never below what is kept.
        const kept = await client.xRange("chat:room:d:events", "-", "+");
        const cost = kept.reduce(
          (sum, entry) => sum + Number(entry.message.b),
          0,
        );
        assert.equal(await bytes(), cost);
        assert.ok(await bytes() < before + 200);
      } finally {
        await client.close();
      }
    }),
});

Deno.test({
  name:
    "redis: a resume from an id past any Redis gives is a gap, and the join beside it in its turn gets in",
  ignore,
  fn: () =>
    withTwoStores({}, async ({ one }) => {
      for (let i = 0; i < 2; i++) one.hold("s");
      one.subscribe("s", () => {});
      const [odd, plain] = await Promise.all([
        one.join("s", { owner: "a", nick: "ann", since: 1e22, epoch: "x" }),
        one.join("s", { owner: "b", nick: "bob" }),
      ]);
      assert.equal(odd.gap, true);
      assert.equal(odd.nick, "ann");
      assert.equal(plain.nick, "bob");
    }),
});

Deno.test({
  name:
    "redis: a mute and then the person's post in the same turn: the post is refused (a room's changes are committed in the order asked)",
  ignore,
  fn: () =>
    withTwoStores({}, async ({ one }) => {
      for (let i = 0; i < 2; i++) one.hold("o");
      one.subscribe("o", () => {});
      await one.join("o", { owner: "m", nick: "mod" });
      await one.join("o", { owner: "s.bob", nick: "bob", keys: ["s.bob"] });
      const bob = { owner: "s.bob", keys: ["s.bob"], op: false };
      const early = await one.post("o", bob, {
        type: "message",
        from: "bob",
        text: "before",
      });
      assert.equal((early as RoomEvent).type, "message");
      const [muted, late] = await Promise.all([
        one.mute("o", "bob"),
        one.post("o", bob, { type: "message", from: "bob", text: "after" }),
      ]);
      assert.equal(muted, "muted");
      assert.deepEqual(late, { refused: "muted" });
    }),
});

Deno.test({
  name:
    "redis: a thousand joins in one turn all get in, in batches no bigger than MAX_BATCH_FIELDS reads",
  ignore,
  fn: () =>
    withTwoStores({ maxRooms: 10 }, async ({ one }) => {
      const count = 1000;
      for (let i = 0; i < count; i++) one.hold("crowd");
      one.subscribe("crowd", () => {});
      const joins = await Promise.all(
        Array.from(
          { length: count },
          (_, i) => one.join("crowd", { owner: `c${i}`, nick: `c${i}` }),
        ),
      );
      assert.equal(
        joins.filter((joined) => joined.nick.startsWith("c")).length,
        count,
      );
      assert.equal((await one.members("crowd")).length, count);
    }),
});

Deno.test({
  name:
    "redis: a moderator's command forgets the bans and mutes that ran out (the moderation hash does not grow for ever)",
  ignore,
  fn: () =>
    withTwoStores({}, async ({ one, redis }) => {
      for (let i = 0; i < 3; i++) one.hold("e");
      one.subscribe("e", () => {});
      await one.join("e", { owner: "m", nick: "mod" });
      await one.join("e", { owner: "s.eve", nick: "eve", keys: ["s.eve"] });
      await one.join("e", { owner: "s.bob", nick: "bob", keys: ["s.bob"] });
      assert.equal(await one.mute("e", "eve", Date.now() + 100), "muted");
      assert.notEqual(
        await one.kick("e", {
          nick: "bob",
          by: "mod",
          ban: { until: Date.now() + 100 },
        }),
        "no_such_nick",
      );
      const client = createClient({ url: redis.url });
      await client.connect();
      try {
        const sanctions = async () =>
          Object.keys(await client.hGetAll("chat:room:e:mod")).filter((field) =>
            /^[bm]:/.test(field)
          ).sort();
        assert.deepEqual(await sanctions(), ["b:BOB", "m:EVE"]);
        await new Promise((resolve) => setTimeout(resolve, 150));
        await one.topic("e", { type: "topic", by: "mod", text: "tidy" });
        assert.deepEqual(await sanctions(), []);
      } finally {
        await client.close();
      }
    }),
});

// ---------------------------------------------------------------------------
// Reactions
// ---------------------------------------------------------------------------

/** The `react` notices a store's subscriber to `room` gets. */
function reactNotices(store: RedisStore, room: string): ReactEvent[] {
  const seen: ReactEvent[] = [];
  store.hold(room);
  store.subscribe(room, (event) => {
    if (event.type === "react") seen.push(event);
  });
  return seen;
}

Deno.test({
  name:
    "redis: two processes toggling reactions on one message at once: every toggle counted, none lost, every notice on both",
  ignore,
  fn: () =>
    withTwoStores({}, async ({ one, two, redis }) => {
      const stores = [one, two];
      const seen = stores.map((store) => reactNotices(store, "rx"));
      await one.join("rx", { owner: "s.a", nick: "a" });
      await two.join("rx", { owner: "s.b", nick: "b" });
      const said = await one.append("rx", {
        type: "message",
        from: "a",
        text: "vote",
      });
      const people = 10;
      const everyone = 2 * people;
      const client = createClient({ url: redis.url });
      await client.connect();
      // What the channel carries: a process's toggles of one turn are one
      // commit, its notices one message.
      const listener = client.duplicate();
      await listener.connect();
      let noticeMessages = 0;
      await listener.subscribe("chat:ev:rx", (message) => {
        if (message.startsWith('{"after":')) noticeMessages++;
      });
      try {
        const before = one.decisions().again + two.decisions().again;
        const met = () =>
          one.decisions().again + two.decisions().again > before;
        const expected: number[] = [];
        let round = 0;
        // Rounds of everyone on both processes toggling at once, until the
        // two processes' commits met (each one's toggles are one batch).
        for (; round < 2 || (!met() && round < 20); round += 2) {
          for (const on of [true, false]) {
            const answers = await Promise.all(
              stores.flatMap((store, s) =>
                Array.from({ length: people }, (_, i) =>
                  store.react(
                    "rx",
                    { owner: `s.${s}.${i}`, nick: `p${s}${i}`, keys: [] },
                    said.id,
                    "👍",
                  ))
              ),
            );
            // Each answer is the count just after it: 1 to 20 (or 19 to 0)
            // once each, whichever process came first.
            const counts = answers.map((answer) => {
              assert.ok("on" in answer && answer.on === on, `on: ${on}`);
              return answer.count;
            });
            const exact = Array.from(
              { length: everyone },
              (_, i) => on ? i + 1 : everyone - 1 - i,
            );
            assert.deepEqual(
              [...counts].sort((a, b) => a - b),
              [...exact].sort((a, b) => a - b),
            );
            expected.push(...exact);
            const kept = JSON.parse(
              (await client.hGet("chat:room:rx:reactions", String(said.id)))!,
            ) as KeptReaction[];
            assert.equal(kept[0]?.by.length ?? 0, on ? everyone : 0);
          }
        }
        assert.ok(met(), "the two processes' toggles met at least once");
        await eventually(
          "one notice message per process and turn",
          () => noticeMessages === 2 * round,
        );
        // Both processes' subscribers got every notice, in commit order.
        for (const [s, notices] of seen.entries()) {
          await eventually(
            `process ${s + 1}'s notices`,
            () => notices.length === expected.length,
          );
          assert.deepEqual(notices.map((notice) => notice.count), expected);
        }
      } finally {
        await listener.close();
        await client.close();
      }
    }),
});

Deno.test({
  name:
    "redis: a reaction notice reaches the other process after the event it reacts to, and between the events of its commit as it was decided",
  ignore,
  fn: () =>
    withTwoStores({}, async ({ one, two, redis }) => {
      const seen: unknown[] = [];
      one.hold("o");
      one.subscribe("o", () => {});
      two.hold("o");
      two.subscribe("o", (event) => {
        seen.push(
          event.type === "react"
            ? `react ${event.key} ${event.target}`
            : event.type === "typing"
            ? "typing"
            : `${event.type} ${event.id}`,
        );
      });
      await one.join("o", { owner: "s.a", nick: "a" }); // 1
      await two.join("o", { owner: "s.b", nick: "b" }); // 2
      const a = { owner: "s.a", nick: "a", keys: ["s.a"] };
      // A post and a reaction to it in one turn: the post goes first.
      const [said, reacted] = await Promise.all([
        one.append("o", { type: "message", from: "a", text: "hi" }),
        one.react("o", a, 3, "👍"),
      ]);
      assert.equal(said.id, 3);
      assert.equal((reacted as ReactEvent).count, 1);
      const other = await one.append("o", {
        type: "message",
        from: "a",
        text: "x",
      }); // 4
      // One batch: a reaction, a deletion (its event), a reaction.
      await Promise.all([
        one.react("o", a, 3, ":a:"),
        one.delete("o", other.id, "a"), // 5
        one.react("o", a, 3, ":b:"),
      ]);
      await eventually("every event and notice", () => seen.length === 8);
      assert.deepEqual(seen, [
        "join 1",
        "join 2",
        "message 3",
        "react 👍 3",
        "message 4",
        "react :a: 3",
        "delete 5",
        "react :b: 3",
      ]);
      // A notice for an event not delivered here yet waits for it.
      const client = createClient({ url: redis.url });
      await client.connect();
      try {
        const early = { type: "react", target: 6, key: "🎉", from: "x" };
        await client.publish(
          "chat:ev:o",
          JSON.stringify({ after: 6, notices: [{ ...early, on: true }] }),
        );
        await new Promise((resolve) => setTimeout(resolve, 100));
        assert.equal(seen.length, 8, "held until event 6 is delivered");
        await one.append("o", { type: "message", from: "a", text: "6" });
        await eventually(
          "the event, then the notice",
          () => seen.length === 10,
        );
        assert.deepEqual(seen.slice(8), ["message 6", "react 🎉 6"]);
      } finally {
        await client.close();
      }
    }),
});

Deno.test({
  name:
    "redis: a message's reactions go when it is trimmed (in the very commit that reacts too) or deleted, and expire with the room",
  ignore,
  fn: () =>
    withTwoStores({ historySize: 4 }, async ({ one, redis }) => {
      reactNotices(one, "t");
      await one.join("t", { owner: "s.a", nick: "a" }); // 1
      const ids = [];
      for (const text of ["m2", "m3", "m4"]) {
        ids.push(
          (await one.append("t", { type: "message", from: "a", text }))
            .id,
        );
      }
      const a = { owner: "s.a", nick: "a", keys: ["s.a"] };
      for (const id of ids) await one.react("t", a, id, "👍");
      const client = createClient({ url: redis.url });
      await client.connect();
      const key = "chat:room:t:reactions";
      try {
        const fields = async () =>
          (await client.hKeys(key)).map(Number).sort((x, y) => x - y);
        assert.deepEqual(await fields(), [2, 3, 4]);
        await one.delete("t", 3, "a"); // 5: 2, 4, 5 kept
        assert.deepEqual(await fields(), [2, 4]);
        await one.append("t", { type: "message", from: "a", text: "m6" });
        await one.append("t", { type: "message", from: "a", text: "m7" });
        // 2 trimmed: 4, 5, 6, 7 kept.
        assert.deepEqual(await fields(), [4]);
        await one.react("t", a, 6, "👍");
        // One commit: a reaction to the oldest, then an event that trims it.
        await Promise.all([
          one.react("t", a, 4, "🎉"),
          one.topic("t", { type: "topic", by: "a", text: "x" }), // 8
        ]);
        assert.deepEqual(await fields(), [6]);
        // The last one out: the reactions expire with the room's history.
        await one.leave("t", "s.a", true); // 9: 6, 7, 8, 9 kept
        const ttl = await client.pTTL("chat:room:t:meta");
        assert.ok(ttl > 0, "the room is left to expire");
        assert.ok(await client.pTTL(key) > 0, "and its reactions with it");
        await one.delete("t", 6, "mod"); // 10
        assert.equal(await client.exists(key), 0, "the last one gone");
        // A reaction into the empty room expires with it too.
        await one.react("t", a, 7, "👍");
        assert.deepEqual(await fields(), [7]);
        // Read at one instant: the same time left, give or take a ms.
        const [left, room] = await client.multi().pTTL(key).pTTL(
          "chat:room:t:meta",
        ).exec() as unknown as [number, number];
        assert.ok(left > 0 && Math.abs(left - room) <= 1, `${left}, ${room}`);
      } finally {
        await client.close();
      }
    }),
});

Deno.test({
  name:
    "redis: a join's, a resume's and a history page's reactions are Redis's, with each reactor's owner as this process names it",
  ignore,
  fn: () =>
    withTwoStores({}, async ({ one, two, redis }) => {
      for (const store of [one, two]) {
        for (let i = 0; i < 3; i++) store.hold("j");
        store.subscribe("j", () => {});
      }
      const ann = await one.join("j", { owner: "7", nick: "ann" }); // 1
      await two.join("j", { owner: "9", nick: "bob" }); // 2
      const said = await one.append("j", {
        type: "message",
        from: "ann",
        text: "hi",
      }); // 3
      await one.react("j", { owner: "7", nick: "ann", keys: [] }, 3, "👍");
      await two.react("j", { owner: "9", nick: "bob", keys: [] }, 3, "👍");
      await two.react("j", { owner: "9", nick: "bob", keys: [] }, 3, "🎉");
      const bobs = `${two.processId}/9`;
      const anns = `${one.processId}/7`;
      const client = createClient({ url: redis.url });
      await client.connect();
      try {
        assert.deepEqual(
          JSON.parse((await client.hGet("chat:room:j:reactions", "3"))!),
          [
            { key: "👍", by: [[anns, "ann"], [bobs, "bob"]] },
            { key: "🎉", by: [[bobs, "bob"]] },
          ],
        );
      } finally {
        await client.close();
      }
      const asSeenBy = (
        me: string,
        other: string,
      ): Map<number, KeptReaction[]> => {
        const [annOwner, bobOwner] = me === "ann" ? ["7", other] : [other, "9"];
        return new Map([[said.id, [
          { key: "👍", by: [[annOwner, "ann"], [bobOwner, "bob"]] },
          { key: "🎉", by: [[bobOwner, "bob"]] },
        ]]]);
      };
      const onOne = asSeenBy("ann", bobs);
      const onTwo = asSeenBy("bob", anns);
      const cy = await one.join("j", { owner: "8", nick: "cy" }); // 4
      assert.deepEqual(cy.reactions, onOne);
      const back = await two.join("j", {
        owner: "10",
        since: ann.lastId,
        epoch: ann.epoch,
      });
      assert.equal(back.gap, false);
      assert.deepEqual(back.history.map((event) => event.id), [2, 3, 4, 5]);
      assert.deepEqual(back.reactions, onTwo);
      const page = (before: number) =>
        two.history("j", { before, limit: 10, visible: () => true });
      assert.deepEqual((await page(100)).reactions, onTwo);
      // A page without a reacted message has none.
      assert.equal((await page(3)).reactions, undefined);
    }),
});

Deno.test({
  name:
    "redis: reactions across two processes: the notice on both, after its message; the welcome's, a history page's and a resume's with `me` for the reader's own, on either process",
  ignore,
  fn: () =>
    withCluster(2, async (_redis, [a, b]) => {
      const ADA = "ada-session-secret-0123456789";
      const ada = await jsonClient(a.server, "/re", { nick: "ada" }, ADA);
      const bob = await jsonClient(b.server, "/re", { nick: "bob" });
      await eventsUntil(ada, (e) => e.type === "join", "bob's join");
      ada.send(JSON.stringify({ type: "message", text: "ship it?" }));
      const [said] = (await eventsUntil(bob, isMessage("ship it?"), "it"))
        .slice(-1);
      await eventsUntil(ada, isMessage("ship it?"), "ada's echo");
      // bob, a connection (no session) on b, then ada on a.
      bob.send(JSON.stringify({ type: "react", id: said.id, key: "👍" }));
      const notice = {
        type: "react",
        target: said.id,
        key: "👍",
        from: "bob",
        on: true,
        count: 1,
      };
      assert.deepEqual(await ada.event("bob's reaction"), notice);
      assert.deepEqual(await bob.event("bob's own"), notice);
      ada.send(JSON.stringify({ type: "react", id: said.id, key: "👍" }));
      const second = { ...notice, from: "ada", count: 2 };
      assert.deepEqual(await bob.event("ada's reaction"), second);
      assert.deepEqual(await ada.event("ada's own"), second);
      const shown = (me: boolean) => [{
        key: "👍",
        count: 2,
        nicks: ["bob", "ada"],
        me,
      }];
      // A newcomer on a, and ada's second tab on b (the same person).
      const cy = await jsonClient(a.server, "/re", { nick: "cy" });
      const reactionsIn = (history: Json[]) =>
        history.find((event) => event.id === said.id)?.reactions;
      assert.deepEqual(reactionsIn(cy.welcome.history), shown(false));
      const tab = await jsonClient(b.server, "/re", {}, ADA);
      assert.deepEqual(reactionsIn(tab.welcome.history), shown(true));
      // bob's history page on b: his own by his connection's number.
      bob.send(JSON.stringify({
        type: "history",
        before: said.id + 1,
        limit: 10,
      }));
      const [page] = (await eventsUntil(
        bob,
        (e) => e.type === "history",
        "bob's page",
      )).slice(-1);
      assert.deepEqual(reactionsIn(page.events), shown(true));
      // cy resumes on b after a reaction taken back meanwhile.
      const lastId = cy.welcome.lastId;
      await cy.close();
      bob.send(JSON.stringify({ type: "react", id: said.id, key: "👍" }));
      await eventsUntil(ada, (e) => e.type === "react", "bob took it back");
      const back = await jsonClient(b.server, "/re", {
        nick: "cy",
        since: lastId,
        epoch: cy.welcome.epoch,
        token: cy.welcome.token,
      });
      assert.equal(back.welcome.gap, false);
      assert.deepEqual(back.welcome.reacted, [{
        id: said.id,
        reactions: [{ key: "👍", count: 1, nicks: ["ada"], me: false }],
      }]);
      await closeAll(ada, bob, tab, back);
    }),
});

Deno.test({
  name:
    "redis: a marker moved on one process while another knew it as it was: the other's next move is decided on what Redis has",
  ignore,
  fn: () =>
    withTwoStores({}, async ({ one, two }) => {
      for (const store of [one, two]) {
        assert.ok(store.hold("r"));
        await store.join("r", { owner: "s.ada", nick: "ada" });
      }
      for (let i = 0; i < 6; i++) { // 2 to 7
        await one.append("r", { type: "message", from: "bob", text: "x" });
      }
      // Both know ada's markers (none yet), as a process serving her does.
      assert.deepEqual(await one.markers("s.ada"), []);
      assert.deepEqual(await two.markers("s.ada"), []);
      const moved = await two.markRead("r", "s.ada", 6, "ada");
      assert.equal((moved as { id: number }).id, 6);
      // Behind it, whether `one` has heard of the move yet or not.
      assert.equal(await one.markRead("r", "s.ada", 5, "ada"), "unchanged");
      for (const store of [one, two]) {
        await eventually(
          "the marker everywhere",
          async () => (await store.markers("s.ada"))[0]?.id === 6,
        );
      }
      const next = await one.markRead("r", "s.ada", 7, "ada");
      assert.equal((next as { id: number }).id, 7);
      assert.equal((await two.markers("s.ada"))[0].id, 7);
      // Moves asked together go as one script, each on the one before.
      assert.ok(one.hold("q"));
      await one.join("q", { owner: "s.ada", nick: "ada" });
      await one.append("r", { type: "message", from: "bob", text: "y" }); // 8
      const together = await Promise.all([
        two.markRead("r", "s.ada", 8, "ada"),
        one.markRead("q", "s.ada", 1, "ada"),
        one.markRead("r", "s.ada", 6, "ada"),
      ]);
      assert.deepEqual(
        together.map((moved) => typeof moved === "string" ? moved : moved.id),
        [8, 1, "unchanged"],
      );
      for (const store of [one, two]) {
        await eventually(
          "both markers everywhere",
          async () =>
            JSON.stringify(
              (await store.markers("s.ada")).map((m) => [m.room, m.id]).sort(),
            ) === '[["q",1],["r",8]]',
        );
      }
    }),
});
