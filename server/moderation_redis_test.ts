/**
 * Identity and moderation across processes: two chat processes on one
 * private `redis-server` (`--redis`, `--auth-secret`, `--op-key`). Names
 * reserved on one hold on the other; a kick closes a person's connections
 * on every process; bans, mutes, topic and slow mode live in Redis (so they
 * hold everywhere and after both processes restart); a deletion is gone
 * from the stream. Skipped without redis-server, except under CI.
 *
 * @module
 */

import assert from "node:assert/strict";
import { CloseCode } from "../wire/protocol.ts";
import { moderate } from "./moderation.ts";
import { RedisStore } from "../stores/redis_store.ts";
import {
  hs256,
  OP_KEY,
  SECRET,
  signedClient,
  statusFrom,
} from "../tests/auth_helpers.ts";
import {
  type ChatProcess,
  haveRedis,
  type RedisServer,
  startChatProcess,
  startRedis,
} from "../tests/redis_helpers.ts";
import {
  closeAll,
  type Json,
  jsonClient,
  metric,
  type Peer,
  RawClient,
  within,
} from "../tests/test_helpers.ts";

const ignore = !haveRedis && !Deno.env.get("CI");

const ARGS = ["--auth-secret", SECRET, "--op-key", OP_KEY];

/** Two chat processes with auth on one Redis; all stopped after. */
async function withPair(
  fn: (a: ChatProcess, b: ChatProcess, redis: RedisServer) => Promise<void>,
): Promise<void> {
  const redis = await startRedis();
  const chats: ChatProcess[] = [];
  try {
    for (let i = 0; i < 2; i++) {
      chats.push(await startChatProcess(redis.url, { args: ARGS }));
    }
    await fn(chats[0], chats[1], redis);
  } finally {
    await Promise.all(chats.map((chat) => chat.stop()));
    await redis.kill();
  }
}

function send(peer: Peer, frame: Json): void {
  peer.send(JSON.stringify(frame));
}

async function moderator(chat: ChatProcess, name = "mod") {
  return await signedClient(chat.server, {
    token: await hs256({ sub: `op-${name}`, name, roles: ["op"] }),
  });
}

/** The next event of `type` (batches taken apart), skipping others. */
async function next(peer: Peer, type: string): Promise<Json> {
  for (;;) {
    const event = await peer.event(`a ${type} event`);
    if (event.type === type) return event;
  }
}

Deno.test({
  name:
    "redis: a verified name is reserved on every process, and taken from an anonymous holder on another",
  ignore,
  fn: () =>
    withPair(async (a, b) => {
      const squatter = await jsonClient(b.server, "/", { nick: "ada" });
      const token = await hs256({ sub: "42", name: "ada" });
      const ada = await signedClient(a.server, { token });
      assert.equal(ada.welcome.you, "ada");
      assert.deepEqual(ada.welcome.verifiedUsers, ["ada"]);
      const renamed = await next(squatter, "nick");
      assert.equal(renamed.from, "ada");
      assert.match(renamed.to, /^user-\d+$/);
      const join = await next(squatter, "join");
      assert.deepEqual([join.nick, join.verified], ["ada", true]);
      // A second tab on the other process is the same member: no join.
      const tab = await signedClient(b.server, { token });
      assert.equal(tab.welcome.you, "ada");
      await closeAll(ada, tab);
      // Gone, and still hers: a look-alike on either process is refused.
      for (const chat of [a, b]) {
        const other = await jsonClient(chat.server, "/", { nick: "ADA" });
        assert.match(other.welcome.you, /^user-\d+$/);
        assert.equal((await next(other, "error")).code, "nick_taken");
        send(other, { type: "nick", nick: "\u0430da" });
        assert.equal((await next(other, "error")).code, "nick_taken");
        await other.close();
      }
      await squatter.close();
    }),
});

Deno.test({
  name:
    "redis: a kick closes the person's connections on every process; the count and /who",
  ignore,
  fn: () =>
    withPair(async (a, b) => {
      const session = "bob-session-secret-0123456789";
      const bobA = await jsonClient(a.server, "/", { nick: "bob" }, session);
      const bobB = await jsonClient(b.server, "/", { nick: "bob" }, session);
      const mod = await moderator(a);
      const witness = await jsonClient(b.server);
      assert.deepEqual(witness.welcome.moderators, ["mod"]);
      send(mod, { type: "kick", nick: "bob", reason: "spam" });
      for (const tab of [bobA, bobB]) {
        const closed = await within(tab.closed, "bob's close");
        assert.equal(closed.code, CloseCode.Kicked);
        assert.equal(closed.reason, "kicked by mod: spam");
      }
      const kick = await next(witness, "kick");
      assert.deepEqual([kick.nick, kick.by, kick.reason], [
        "bob",
        "mod",
        "spam",
      ]);
      assert.equal(
        await metric(a.server, 'chat_moderation_total{action="kick"}'),
        1,
      );
      await closeAll(mod, witness);
    }),
});

Deno.test({
  name:
    "redis: bans (by login, session, address) and mutes hold on every process and after a restart; unban and unmute anywhere",
  ignore,
  fn: async () => {
    const redis = await startRedis();
    let chats: ChatProcess[] = [];
    const start = async () => {
      chats = [
        await startChatProcess(redis.url, { args: ARGS }),
        await startChatProcess(redis.url, { args: ARGS }),
      ];
      return chats;
    };
    try {
      let [a, b] = await start();
      const token = await hs256({ sub: "7", name: "bob" });
      const session = "eve-session-secret-0123456789";
      const protocols = (secret: string) => ({
        "Sec-WebSocket-Protocol": `chat.v1.json, chat.session.${secret}`,
      });
      const bob = await signedClient(a.server, { token });
      const eve = await jsonClient(a.server, "/", { nick: "eve" }, session);
      // Verified, so eve's ban of her address (127.0.0.1) is not his.
      const tomToken = await hs256({ sub: "8", name: "tom" });
      const tom = await signedClient(a.server, { token: tomToken });
      const mod = await moderator(b);
      send(mod, { type: "ban", nick: "bob", reason: "abuse" });
      await within(bob.closed, "bob's close");
      send(mod, { type: "ban", nick: "eve", minutes: 60 });
      await within(eve.closed, "eve's close");
      send(mod, { type: "mute", nick: "tom" });
      await next(mod, "moderated");
      send(mod, { type: "topic", text: "be nice" });
      await next(mod, "topic");
      send(mod, { type: "slow", seconds: 600 });
      await next(mod, "slow");
      await closeAll(mod, tom);
      // Both processes restart; Redis keeps it all.
      await Promise.all(chats.map((chat) => chat.stop()));
      [a, b] = await start();
      for (const chat of [a, b]) {
        const raw = await RawClient.connect(chat.wsPort);
        const refused = await raw.upgrade("/", {
          Authorization: `Bearer ${token}`,
        });
        raw.close();
        assert.equal(refused.status, 403, "bob, by login");
        assert.equal(
          await statusFrom("127.0.0.2", chat.wsPort, "/", protocols(session)),
          403,
          "eve, by session",
        );
        assert.equal(
          await statusFrom(
            "127.0.0.1",
            chat.wsPort,
            "/",
            protocols("other-session-secret-01234567"),
          ),
          403,
          "eve's address",
        );
      }
      const tomAgain = await signedClient(b.server, { token: tomToken });
      assert.equal(tomAgain.welcome.topic, "be nice");
      assert.equal(tomAgain.welcome.slowSeconds, 600);
      send(tomAgain, { type: "message", text: "hello?" });
      assert.equal((await next(tomAgain, "error")).code, "muted");
      const mod2 = await moderator(a);
      send(mod2, { type: "unban", nick: "bob" });
      assert.equal((await next(mod2, "moderated")).action, "unban");
      send(mod2, { type: "unmute", nick: "tom" });
      assert.equal((await next(mod2, "moderated")).action, "unmute");
      const back = await signedClient(b.server, { token });
      assert.equal(back.welcome.you, "bob");
      // Slow mode, across processes: one message per 600 s for tom.
      send(tomAgain, { type: "message", text: "first" });
      assert.equal((await next(mod2, "message")).text, "first");
      const other = await signedClient(a.server, {
        token: await hs256({ sub: "9", name: "zed" }),
      });
      send(tomAgain, { type: "message", text: "second" });
      const slow = await next(tomAgain, "error");
      assert.equal(slow.code, "slow_mode");
      assert.ok(slow.retryAfter > 590 && slow.retryAfter <= 600);
      await closeAll(back, tomAgain, mod2, other);
    } finally {
      await Promise.all(chats.map((chat) => chat.stop()));
      await redis.kill();
    }
  },
});

Deno.test({
  name:
    "redis: a deletion on one process is gone from the stream: history and resume on the other",
  ignore,
  fn: () =>
    withPair(async (a, b) => {
      const bob = await jsonClient(a.server, "/", { nick: "bob" });
      const mod = await moderator(b);
      send(bob, { type: "message", text: "keep" });
      const keep = await next(bob, "message");
      send(bob, { type: "message", text: "drop" });
      const drop = await next(bob, "message");
      send(bob, { type: "message", text: "own" });
      const own = await next(bob, "message");
      send(mod, { type: "delete", id: drop.id });
      const deleted = await next(bob, "delete");
      assert.deepEqual([deleted.by, deleted.deleted], ["mod", drop.id]);
      assert.equal((await next(mod, "delete")).deleted, drop.id);
      send(bob, { type: "delete", id: own.id });
      assert.equal((await next(mod, "delete")).deleted, own.id);
      send(mod, { type: "delete", id: drop.id });
      assert.equal((await next(mod, "error")).code, "no_such_message");
      for (const chat of [a, b]) {
        const later = await jsonClient(chat.server);
        const ids = later.welcome.history.map((event: Json) => event.id);
        assert.ok(ids.includes(keep.id));
        assert.ok(!ids.includes(drop.id) && !ids.includes(own.id));
        const resumed = await jsonClient(chat.server, "/", {
          since: keep.id,
          epoch: bob.welcome.epoch,
        });
        assert.equal(resumed.welcome.gap, false);
        const types = resumed.welcome.history.map((event: Json) =>
          event.type === "message" ? event.text : event.type
        );
        assert.ok(!types.includes("drop") && !types.includes("own"));
        await closeAll(later, resumed);
      }
      await closeAll(bob, mod);
    }),
});

Deno.test({
  name: "redis: bans and mutes end when their minutes are up (the clock given)",
  ignore,
  fn: async () => {
    const redis = await startRedis();
    const store = await RedisStore.connect({
      url: redis.url,
      historySize: 100,
      maxHistoryBytes: 1 << 20,
      maxRooms: 10,
      roomTtl: 60,
      onEvict: () => {},
    });
    try {
      const room = "lobby";
      for (const nick of ["mod", "bob", "eve"]) {
        store.hold(room);
        await store.join(room, {
          owner: `s.${nick}`,
          nick,
          keys: [`s.${nick}`],
        });
      }
      const actor = { nick: "mod", op: true, claimedId: 0 };
      const minuteAgo = Date.now() - 61_000;
      await moderate(store, room, actor, {
        type: "ban",
        nick: "bob",
        minutes: 1,
      }, minuteAgo);
      await moderate(store, room, actor, {
        type: "mute",
        nick: "eve",
        minutes: 1,
      }, minuteAgo);
      assert.equal(await store.banned(room, ["s.bob"]), undefined);
      const eve = { owner: "s.eve", keys: ["s.eve"], op: false };
      const body = { type: "message" as const, from: "eve", text: "free" };
      assert.ok(!("refused" in await store.post(room, eve, body)));
      await moderate(store, room, actor, {
        type: "mute",
        nick: "eve",
        minutes: 1,
      });
      const refused = await store.post(room, eve, body);
      assert.equal("refused" in refused && refused.refused, "muted");
      for (const owner of ["s.mod", "s.eve"]) {
        await store.leave(room, owner, false);
      }
    } finally {
      await store.close();
      await redis.kill();
    }
  },
});
