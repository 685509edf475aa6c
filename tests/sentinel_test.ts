/**
 * Redis Sentinel (`--redis redis+sentinel://…`): two chat processes on a
 * primary, its replica and three Sentinels, all started here. The primary
 * is killed (SIGKILL) while a client posts; Sentinel promotes the replica
 * and the chat recovers on its own: the clients keep their sockets, posts
 * answer `unavailable` meanwhile, and then messages reach both processes'
 * clients and the history again. With `--redis-wait-replicas 1` every
 * message echoed before the kill is in the history after the failover.
 * Skipped without redis-server, except under CI.
 *
 * @module
 */

import assert from "node:assert/strict";
import {
  type ChatProcess,
  haveRedis,
  redisCall,
  type SentinelSet,
  startChatProcess,
  startSentinelSet,
} from "./redis_helpers.ts";
import { closeAll, type Json, jsonClient, type Peer } from "./test_helpers.ts";
import { OPTIONS } from "../server/options.ts";
import { WAIT_REPLICAS_MS } from "../stores/redis_store.ts";
import {
  DEFAULT_SENTINEL_PORT,
  parseSentinelUrl,
  redactRedisUrl,
} from "../stores/redis_url.ts";

const ignore = !haveRedis && !Deno.env.get("CI");

/**
 * How long the chat may take to recover after the primary is killed:
 * Sentinel's own failover takes 2–6 s here (1 s to call it down, then an
 * election and the promotion), the chat's retry at most 2 s after that.
 */
const RECOVERY_LIMIT_MS = 25_000;

/** Between two posts while waiting for the chat to recover. */
const RETRY_EVERY_MS = 250;

function say(peer: Peer, text: string): void {
  peer.send(JSON.stringify({ type: "message", text }));
}

/** The next event that `matches`, skipping others. */
async function next(
  peer: Peer,
  matches: (event: Json) => boolean,
  what: string,
): Promise<Json> {
  for (;;) {
    const event = await peer.event(what);
    if (matches(event)) return event;
  }
}

const message = (text: string) => (event: Json) =>
  event.type === "message" && event.text === text;

/**
 * Has `peer` post until one of its posts is echoed (each post before that
 * must be refused as `unavailable`, the store's answer while Redis is
 * away); returns that post's text and how long it took from `since`.
 */
async function postUntilEchoed(
  peer: Peer,
  since: number,
  prefix: string,
): Promise<{ text: string; ms: number }> {
  for (let n = 0;; n++) {
    const ms = Date.now() - since;
    assert.ok(
      ms < RECOVERY_LIMIT_MS,
      `recovered within ${RECOVERY_LIMIT_MS} ms`,
    );
    const text = `${prefix}-${n}`;
    say(peer, text);
    const answer = await next(
      peer,
      (event) => message(text)(event) || event.type === "error",
      `the echo of ${text} or an error`,
    );
    if (answer.type === "message") return { text, ms: Date.now() - since };
    assert.equal(answer.code, "unavailable", JSON.stringify(answer));
    await new Promise((resolve) => setTimeout(resolve, RETRY_EVERY_MS));
  }
}

/** The texts of the messages in a newcomer's welcome. */
function historyTexts(welcome: Json): string[] {
  return welcome.history.filter((event: Json) => event.type === "message")
    .map((event: Json) => event.text);
}

/** Runs `fn` on a Sentinel set and two chat processes started with `args`. */
async function withFailoverSet(
  args: string[],
  fn: (set: SentinelSet, chats: ChatProcess[]) => Promise<void>,
  setOptions: Parameters<typeof startSentinelSet>[0] = {},
): Promise<void> {
  const set = await startSentinelSet(setOptions);
  const chats: ChatProcess[] = [];
  try {
    chats.push(
      ...await Promise.all([
        startChatProcess(set.url, { args }),
        startChatProcess(set.url, { args }),
      ]),
    );
    await fn(set, chats);
  } finally {
    await Promise.all(chats.map((chat) => chat.stop()));
    await set.stop();
  }
}

Deno.test({
  name:
    "sentinel: the primary killed mid-chat, Sentinel promotes the replica and the chat recovers on its own",
  ignore,
  fn: () =>
    withFailoverSet([], async (set, [a, b]) => {
      const alice = await jsonClient(a.server, "/f", { nick: "alice" });
      const bob = await jsonClient(b.server, "/f", { nick: "bob" });
      say(alice, "before");
      await next(alice, message("before"), "alice's echo of before");
      await next(bob, message("before"), "before at bob");
      assert.equal(await set.masterPort(), set.primary.port);

      const killedAt = Date.now();
      await set.primary.kill();
      const recovered = await postUntilEchoed(alice, killedAt, "retry");
      // The replica is the master now, and the other process's pub/sub
      // follows it: alice's first post that got through reaches bob.
      assert.equal(await set.masterPort(), set.replica.port);
      await next(bob, message(recovered.text), "the first post after, at bob");
      say(bob, "after-b");
      await next(alice, message("after-b"), "bob's post at alice");
      assert.ok(!alice.isClosed && !bob.isClosed, "both kept their sockets");

      // Both processes take newcomers again, and the history has it all.
      const carol = await jsonClient(b.server, "/f", { nick: "carol" });
      const texts = historyTexts(carol.welcome);
      assert.deepEqual(texts.slice(0, 1), ["before"]);
      assert.deepEqual(texts.slice(-2), [recovered.text, "after-b"]);
      const dave = await jsonClient(a.server, "/f", { nick: "dave" });
      assert.deepEqual(historyTexts(dave.welcome), texts);
      // What the new master has is what the chat says.
      const stored = await redisCall(set.replica.port, ["DBSIZE"]) as number;
      assert.ok(stored > 0, "the chat writes to the promoted replica");
      await closeAll(alice, bob, carol, dave);
    }),
});

/**
 * How far behind its primary the replica of the WAIT test is: what the
 * primary wrote in the last this many ms is lost when it dies, unless the
 * chat waited for the replica.
 */
const REPLICA_LAG_MS = 300;

Deno.test({
  name:
    "sentinel: with --redis-wait-replicas 1 every message echoed before the primary died is in the history after the failover",
  ignore,
  fn: () =>
    withFailoverSet(
      // Long enough for the lagging replica's acknowledgement.
      ["--redis-wait-replicas", "1", "--redis-wait-ms", "2000"],
      async (set, [a, b]) => {
        const alice = await jsonClient(a.server, "/w", { nick: "alice" });
        const bob = await jsonClient(b.server, "/w", { nick: "bob" });
        // The joins reach the replica (only posts wait for it).
        await new Promise((resolve) => setTimeout(resolve, 2 * REPLICA_LAG_MS));
        // alice posts at a steady pace (the next post when the last is
        // answered); the primary dies with posts on their way.
        const echoed: string[] = [];
        for (let n = 0; n < 8; n++) {
          const text = `w-${n}`;
          say(alice, text);
          await next(alice, message(text), `the echo of ${text}`);
          echoed.push(text);
        }
        say(alice, "w-in-flight");
        // The in-flight post's commit and its echo, if one, land within
        // the replica's lag: without the wait, this is where they are lost.
        await new Promise((resolve) => setTimeout(resolve, 50));
        const killedAt = Date.now();
        await set.primary.kill();
        const answer = await next(
          alice,
          (event) => message("w-in-flight")(event) || event.type === "error",
          "the in-flight post's echo or error",
        );
        if (answer.type === "message") echoed.push("w-in-flight");
        else assert.equal(answer.code, "unavailable");
        const recovered = await postUntilEchoed(alice, killedAt, "retry");
        await next(bob, message(recovered.text), "the first post at bob");
        const carol = await jsonClient(b.server, "/w", { nick: "carol" });
        const texts = historyTexts(carol.welcome);
        for (const text of echoed) {
          assert.ok(texts.includes(text), `${text} survived: ${texts}`);
        }
        assert.equal(texts.at(-1), recovered.text);
        // Before the kill the replica acknowledged every turn.
        const metrics = await (await fetch(
          `http://127.0.0.1:${a.port}/metrics`,
        )).text();
        const acked = metrics.match(
          /^chat_redis_replica_acks_total\{outcome="acknowledged"\} (\d+)$/m,
        );
        assert.ok(
          acked && Number(acked[1]) >= 8,
          `acknowledged turns: ${acked?.[1]}`,
        );
        await closeAll(alice, bob, carol);
      },
      { replicaLagMs: REPLICA_LAG_MS },
    ),
});

Deno.test({
  name:
    "sentinel: a failover that lost delivered messages: their ids are not given out again, and the room goes on from what the new master has on both processes, nobody closed",
  ignore,
  fn: () =>
    withFailoverSet([], async (set, [a, b]) => {
      const alice = await jsonClient(a.server, "/l", { nick: "alice" });
      const bob = await jsonClient(b.server, "/l", { nick: "bob" });
      say(alice, "kept");
      await next(bob, message("kept"), "kept at bob");
      await new Promise((resolve) => setTimeout(resolve, 2 * REPLICA_LAG_MS));
      // Echoed at once (no wait), and still on their way to the replica
      // when the primary dies.
      const lostIds: number[] = [];
      for (const text of ["lost-1", "lost-2"]) {
        say(alice, text);
        lostIds.push((await next(alice, message(text), `${text}'s echo`)).id);
        await next(bob, message(text), `${text} at bob`);
      }
      const killed = Date.now();
      await set.primary.kill();
      // The room's last id is put back to what was delivered (KEEP_LAST):
      // the next post gets an id after the lost ones, and reaches bob.
      const { text } = await postUntilEchoed(alice, killed, "again");
      const again = await next(bob, message(text), `${text} at bob`);
      assert.ok(lostIds.every((id) => id < again.id), `${lostIds}`);
      // The lost messages are gone from history; what came after is there.
      const carol = await jsonClient(b.server, "/l", { nick: "carol" });
      const texts = historyTexts(carol.welcome);
      assert.equal(texts[0], "kept");
      assert.equal(texts.at(-1), text);
      assert.ok(!texts.includes("lost-1") && !texts.includes("lost-2"));
      await closeAll(alice, bob, carol);
    }, { replicaLagMs: REPLICA_LAG_MS }),
});

Deno.test("sentinel: --redis-wait-ms defaults to the store's own default, and waiting is off by default", () => {
  // options.ts does not load the store (it brings the Redis client).
  assert.equal(OPTIONS.redisWaitMs.default, WAIT_REPLICAS_MS);
  assert.equal(OPTIONS.redisWaitReplicas.default, 0);
});

Deno.test("sentinel: a redis+sentinel:// URL's parts, and what is wrong with a malformed one", () => {
  assert.deepEqual(
    parseSentinelUrl(
      "redis+sentinel://app:p%40ss@10.0.0.1:26380,[::1],s3:5000/chat?db=2&sentinelPassword=x",
    ),
    {
      sentinels: [
        { host: "10.0.0.1", port: 26380 },
        { host: "::1", port: DEFAULT_SENTINEL_PORT },
        { host: "s3", port: 5000 },
      ],
      master: "chat",
      username: "app",
      password: "p@ss",
      database: 2,
      sentinelPassword: "x",
    },
  );
  assert.deepEqual(parseSentinelUrl("redis+sentinel://:pw@h:1/m"), {
    sentinels: [{ host: "h", port: 1 }],
    master: "m",
    password: "pw",
  });
  assert.equal(
    redactRedisUrl("redis+sentinel://app:pw@h:1/m?sentinelPassword=sp&db=1"),
    "redis+sentinel://app:***@h:1/m?sentinelPassword=***&db=1",
  );
  for (
    const [url, problem] of [
      ["redis+sentinel://h:1", /^names no master/],
      ["redis+sentinel:///m", /^names no Sentinel/],
      ["redis+sentinel://h:0/m", /^has a Sentinel address "h:0"/],
      ["redis+sentinel://h:1,/m", /^has a Sentinel address ""/],
      ["redis+sentinel://h:1/m?db=one", /^has db=one/],
      [
        "redis+sentinel://h:1/m?timeout=5",
        /^has an unknown parameter "timeout"/,
      ],
      ["redis+sentinel://h:1/%E0", /^has a malformed %-escape/],
    ] as const
  ) {
    const parsed = parseSentinelUrl(url);
    assert.equal(typeof parsed, "string", url);
    assert.match(parsed as string, problem);
  }
});
