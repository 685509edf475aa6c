/**
 * Redis Cluster (`--redis-cluster`): chat processes on a private
 * cluster of 3 masters, each with a replica. Rooms whose keys hash to
 * different masters carry messages, history, reactions and read markers
 * across the processes, frame for frame; a chat process killed (SIGKILL)
 * has its members announced as left by the others; then one master is
 * killed and the chat comes back on its own once its replica takes over.
 * And a failover's lost writes never make an id be given out twice.
 * Skipped without redis-server, except under CI.
 *
 * @module
 */

import assert from "node:assert/strict";
import {
  redisCli,
  type RedisCluster,
  startCluster,
} from "./cluster_helpers.ts";
import {
  type ChatProcess,
  haveRedis,
  startChatProcess,
  startRedis,
} from "./redis_helpers.ts";
import { closeAll, type Json, jsonClient, type Peer } from "./test_helpers.ts";

const ignore = !haveRedis && !Deno.env.get("CI");

const ADA = "ada-session-secret-0123456789";
const FAST = ["--rate", "1000", "--burst", "1000"];
/**
 * How long the chat may take to come back after a master is killed: the
 * cluster's node timeout (1 s here), the replica's election, and the
 * store's rediscovery and resync.
 */
const RECOVERY_BOUND_MS = 10_000;

function send(peer: Peer, frame: Json): void {
  peer.send(JSON.stringify(frame));
}

/** The next event that passes `test` (others before it are skipped). */
async function until(peer: Peer, test: (event: Json) => boolean) {
  for (;;) {
    const event = await peer.event();
    if (test(event)) return event;
  }
}

/**
 * Rooms named `r0`, `r1`, … until one is found on each master: their keys'
 * hash tag (`{NAME}`) decides the master.
 */
async function roomsOnEveryMaster(cluster: RedisCluster): Promise<string[]> {
  const byMaster = new Map<number, string>();
  for (let i = 0; byMaster.size < 3; i++) {
    const room = `r${i}`;
    const master = await cluster.masterOf(`chat:room:{${room}}:meta`);
    if (!byMaster.has(master.port)) byMaster.set(master.port, room);
  }
  return [...byMaster.values()];
}

Deno.test({
  name:
    "redis cluster: rooms on three masters carry messages, history, reactions and markers across processes; a process killed is reaped; a master killed, the chat is back within the bound on its own",
  ignore,
  fn: async () => {
    const cluster = await startCluster({ nodeTimeoutMs: 1000 });
    const chats: ChatProcess[] = [];
    const peers: Peer[] = [];
    try {
      // A third process dies below: heartbeats of 500 ms have it reaped
      // in about 1.5 s.
      for (let i = 0; i < 3; i++) {
        chats.push(
          await startChatProcess(cluster.urls.join(","), {
            flag: "--redis-cluster",
            args: FAST,
            env: { CHAT_REDIS_HEARTBEAT_MS: "500" },
          }),
        );
      }
      const [a, b, c] = chats.map((chat) => chat.server);
      const rooms = await roomsOnEveryMaster(cluster);
      const pairs: {
        room: string;
        ada: Peer & { welcome: Json };
        bob: Peer;
      }[] = [];
      for (const room of rooms) {
        const ada = await jsonClient(a, `/${room}`, { nick: "ada" }, ADA);
        const bob = await jsonClient(b, `/${room}`, { nick: "bob" });
        peers.push(ada, bob);
        assert.equal(ada.welcome.room, room);
        assert.deepEqual([...bob.welcome.users].sort(), ["ada", "bob"]);
        const joined = await until(ada, (e) => e.type === "join");
        assert.equal(joined.nick, "bob");
        pairs.push({ room, ada, bob });
      }

      // A message in each room: the same frame on both processes.
      const said: Json[] = [];
      for (const { room, ada, bob } of pairs) {
        send(ada, { type: "message", text: `hello ${room}` });
        const mine = await until(ada, (e) => e.type === "message");
        assert.equal(mine.from, "ada");
        assert.equal(mine.text, `hello ${room}`);
        assert.deepEqual(await until(bob, (e) => e.type === "message"), mine);
        said.push(mine);
      }

      // History: a newcomer on the other process gets it in its welcome.
      for (const [i, { room }] of pairs.entries()) {
        const cy = await jsonClient(b, `/${room}`, { nick: "cy" });
        assert.deepEqual(
          cy.welcome.history.find((e: Json) => e.id === said[i].id),
          said[i],
        );
        await cy.close();
      }

      // A reaction on b reaches a, as the same notice.
      const { ada, bob } = pairs[0];
      send(bob, { type: "react", id: said[0].id, key: "👍" });
      const reacted = {
        type: "react",
        target: said[0].id,
        key: "👍",
        from: "bob",
        on: true,
        count: 1,
      };
      assert.deepEqual(await until(bob, (e) => e.type === "react"), reacted);
      assert.deepEqual(await until(ada, (e) => e.type === "react"), reacted);

      // A read marker set on a reaches ada's connection on b (her markers'
      // hash is in a slot of its own; every process hears of it).
      const adaOnB = await jsonClient(b, `/${pairs[1].room}`, {}, ADA);
      peers.push(adaOnB);
      send(ada, { type: "read", id: said[0].id });
      const read = {
        type: "read",
        room: pairs[0].room,
        read: said[0].id,
        unread: 0,
        mentions: 0,
      };
      assert.deepEqual(await until(ada, (e) => e.type === "read"), read);
      assert.deepEqual(await until(adaOnB, (e) => e.type === "read"), read);

      // A process killed (SIGKILL) with a member in a room on every master:
      // a survivor finds it in the processes' bookkeeping ({procs}) and
      // announces each of its members as left, on both processes alike.
      const doomed: Peer[] = [];
      for (const { room } of pairs) {
        doomed.push(await jsonClient(c, `/${room}`, { nick: "dee" }));
      }
      for (const { ada } of pairs) {
        await until(ada, (e) => e.type === "join" && e.nick === "dee");
      }
      await chats[2].kill();
      await Promise.all(doomed.map((peer) => peer.closed));
      for (const { ada, bob } of pairs) {
        const left = await until(
          ada,
          (e) => e.type === "leave" && e.nick === "dee",
        );
        assert.deepEqual(
          await until(bob, (e) => e.type === "leave" && e.nick === "dee"),
          left,
        );
      }

      // The master of the first room's slot dies; its replica takes over.
      const master = await cluster.masterOf(
        `chat:room:{${pairs[0].room}}:meta`,
      );
      const killedAt = Date.now();
      await master.kill();
      let back: Json | undefined;
      for (let n = 0; Date.now() - killedAt < RECOVERY_BOUND_MS; n++) {
        send(ada, { type: "message", text: `after ${n}` });
        const reply = await until(
          ada,
          (e) => e.type === "message" || e.type === "error",
        );
        if (reply.type === "message") {
          back = reply;
          break;
        }
        assert.equal(reply.code, "unavailable");
        await new Promise((resolve) => setTimeout(resolve, 200));
      }
      assert.ok(back, `no message got through within ${RECOVERY_BOUND_MS} ms`);
      // The other process delivers it too: its sharded subscription moved
      // to the new master.
      assert.deepEqual(
        await until(bob, (e) => e.type === "message" && e.id === back.id),
        back,
      );
      // The other rooms work as before.
      for (const { room, ada, bob } of pairs.slice(1)) {
        send(bob, { type: "message", text: `still ${room}` });
        const mine = await until(bob, (e) => e.type === "message");
        assert.equal(mine.text, `still ${room}`);
        assert.deepEqual(await until(ada, (e) => e.type === "message"), mine);
      }
    } finally {
      await closeAll(...peers).catch(() => {});
      await Promise.all(chats.map((chat) => chat.stop()));
      await cluster.stop();
    }
  },
});

Deno.test({
  name:
    "a failover that lost a room's last events (a replica behind its master): the next post does not get their ids again, and is delivered",
  ignore,
  fn: async () => {
    // One redis-server stands in for the cluster: what a promoted replica
    // lacks is taken out by hand, and the process's connections are cut,
    // as a failover cuts them.
    const redis = await startRedis();
    let chat: ChatProcess | undefined;
    const peers: Peer[] = [];
    try {
      chat = await startChatProcess(redis.url, { args: FAST });
      const ada = await jsonClient(chat.server, "/r", { nick: "ada" });
      const bob = await jsonClient(chat.server, "/r", { nick: "bob" });
      peers.push(ada, bob);
      await until(ada, (e) => e.type === "join" && e.nick === "bob");
      const said: Json[] = [];
      for (let i = 0; i < 3; i++) {
        send(ada, { type: "message", text: `m${i}` });
        said.push(await until(ada, (e) => e.type === "message"));
        await until(bob, (e) => e.type === "message");
      }
      const cli = (...args: string[]) =>
        redisCli(["-p", String(redis.port), ...args]);
      const [lost1, lost2] = said.slice(1).map((event) => `${event.id}-0`);
      await cli("XDEL", "chat:room:r:events", lost1, lost2);
      await cli("HSET", "chat:room:r:meta", "last", String(said[0].id));
      await cli("CLIENT", "KILL", "TYPE", "normal");
      await cli("CLIENT", "KILL", "TYPE", "pubsub");
      let back: Json | undefined;
      const deadline = Date.now() + 10_000;
      while (!back && Date.now() < deadline) {
        send(ada, { type: "message", text: "after" });
        const reply = await until(
          ada,
          (e) => e.type === "message" || e.type === "error",
        );
        if (reply.type === "message") back = reply;
        else await new Promise((resolve) => setTimeout(resolve, 100));
      }
      assert.ok(back, "the post got through");
      assert.equal(back.text, "after");
      assert.equal(back.id, said[2].id + 1);
      assert.deepEqual(
        await until(bob, (e) => e.type === "message"),
        back,
      );
    } finally {
      await closeAll(...peers).catch(() => {});
      await chat?.stop();
      await redis.kill();
    }
  },
});
