/**
 * Webhooks on a Redis Cluster (`--redis-cluster` with `--webhook`): two
 * chat processes on a private cluster of 3 masters send the events of
 * rooms on every master to a local receiver, each once (by delivery id),
 * in order per room, from one process; the entries are in the rooms' own
 * streams (`chat:room:{NAME}:wh:ENDPOINT`), and an entry whose room never
 * reached the index is found by the scan. A process killed mid-delivery
 * has its shards taken over: everything delivered, with the ids it was
 * tried with. Skipped without redis-server, except under CI.
 *
 * @module
 */

import assert from "node:assert/strict";
import { createHash } from "node:crypto";
import {
  redisCli,
  type RedisCluster,
  startCluster,
} from "./cluster_helpers.ts";
import {
  type ChatProcess,
  haveRedis,
  startChatProcess,
} from "./redis_helpers.ts";
import type { ChatServer } from "../main.ts";
import {
  closeAll,
  eventually,
  type Json,
  jsonClient,
  metric,
  type Peer,
} from "./test_helpers.ts";
import {
  assertOrderedOnce,
  drained,
  HOOK_SECRET,
  Receiver,
} from "./webhook_helpers.ts";

const ignore = !haveRedis && !Deno.env.get("CI");

const FAST = ["--rate", "1000", "--burst", "1000"];

/** A hash's first 12 hex digits, as the outbox names endpoints and rooms. */
function short(text: string): string {
  return createHash("sha256").update(text).digest("hex").slice(0, 12);
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
function outcome(chat: ChatProcess, name: string): Promise<number> {
  return metric(
    chat.server as ChatServer,
    `chat_webhook_deliveries_total{outcome="${name}"}`,
  );
}

/** Rooms `w0`, `w1`, … until `perMaster` are found on each master. */
async function roomsOnEveryMaster(
  cluster: RedisCluster,
  perMaster: number,
): Promise<string[]> {
  const byMaster = new Map<number, string[]>();
  for (let i = 0;; i++) {
    const room = `w${i}`;
    const master = await cluster.masterOf(`chat:room:{${room}}:meta`);
    const rooms = byMaster.get(master.port) ?? [];
    if (rooms.length < perMaster) rooms.push(room);
    byMaster.set(master.port, rooms);
    if (
      byMaster.size === 3 &&
      [...byMaster.values()].every((list) => list.length === perMaster)
    ) break;
  }
  return [...byMaster.values()].flat();
}

/** Sends `count` messages into each of `rooms`, from clients on both processes. */
async function chatter(
  chats: ChatProcess[],
  rooms: string[],
  count: number,
): Promise<{ room: string; event: Json }[]> {
  const peers: Peer[] = [];
  const sent: { room: string; event: Json }[] = [];
  try {
    for (const [i, room] of rooms.entries()) {
      peers.push(
        await jsonClient(chats[i % chats.length].server, `/${room}`, {
          nick: `p${i}`,
        }),
      );
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

/** Two chat processes on `cluster`, sending to `receiver`. */
async function twoProcesses(
  cluster: RedisCluster,
  receiver: Receiver,
): Promise<ChatProcess[]> {
  const chats: ChatProcess[] = [];
  for (let i = 0; i < 2; i++) {
    chats.push(
      await startChatProcess(cluster.urls.join(","), {
        flag: "--redis-cluster",
        args: [
          ...FAST,
          "--webhook",
          receiver.url,
          "--webhook-secret",
          HOOK_SECRET,
        ],
        // Short heartbeats: leases run out, and are taken over, in under a second.
        env: { CHAT_REDIS_HEARTBEAT_MS: "200" },
      }),
    );
  }
  return chats;
}

/** Runs redis-cli on the master of `key`'s slot. */
async function onMaster(
  cluster: RedisCluster,
  key: string,
  args: string[],
): Promise<string> {
  const master = await cluster.masterOf(key);
  return (await redisCli(["-p", String(master.port), ...args])).trim();
}

Deno.test({
  name:
    "redis cluster webhooks: two processes deliver the events of rooms on every master each once, by id, in order per room; the entries are the rooms' own streams; one whose room missed the index is found by the scan",
  ignore,
  fn: async () => {
    const cluster = await startCluster({ replicas: 0 });
    const receiver = new Receiver();
    const chats: ChatProcess[] = [];
    try {
      const endpoint = short(receiver.url);
      const rooms = await roomsOnEveryMaster(cluster, 3);
      // An entry a commit wrote whose process died before it added the
      // room to the index: nothing but the stream says it is there.
      const lostEvent = {
        type: "message",
        id: 1,
        ts: Date.now(),
        from: "ghost",
        text: "lost",
      };
      const lostKey = `chat:room:{lost}:wh:${endpoint}`;
      const lostId = await onMaster(cluster, lostKey, [
        "XADD",
        lostKey,
        "*",
        "r",
        "lost",
        "e",
        JSON.stringify(lostEvent),
      ]);
      chats.push(...await twoProcesses(cluster, receiver));
      // Both hold shards by now (heartbeats of 200 ms share them out).
      await new Promise((resolve) => setTimeout(resolve, 1000));
      const sent = await chatter(chats, rooms, 4);
      await receiver.until(
        "every message and the lost entry",
        () => receiver.accepted().length >= sent.length + 1,
      );
      await new Promise((resolve) => setTimeout(resolve, 1000)); // any twice?
      assert.equal(receiver.requests.length, sent.length + 1, "each once");
      assertOrderedOnce(receiver.requests);

      const lost = receiver.accepted().find((r) => r.json.room === "lost");
      assert.deepEqual(lost?.json, {
        id: `${endpoint}.${short("lost")}.${lostId}`,
        room: "lost",
        event: lostEvent,
      });
      const byEvent = new Map(
        receiver.accepted().map((
          r,
        ) => [`${r.json.room}/${r.json.event.id}`, r]),
      );
      for (const { room, event } of sent) {
        const got = byEvent.get(`${room}/${event.id}`);
        assert.ok(got, `${room}/${event.id} delivered`);
        assert.deepEqual(got.json.event, event);
        // ENDPOINT.ROOM.ENTRY: the entry of the room's own stream.
        assert.match(
          got.id,
          new RegExp(`^${endpoint}\\.${short(room)}\\.\\d+-\\d+$`),
        );
      }
      // In order per room: the ids the room gave, as they were sent.
      for (const room of rooms) {
        assert.deepEqual(
          receiver.accepted().filter((r) => r.json.room === room).map((r) =>
            r.json.event.id
          ),
          sent.filter((s) => s.room === room).map((s) => s.event.id),
        );
      }

      await drained(...chats);
      const delivered = [
        await outcome(chats[0], "delivered"),
        await outcome(chats[1], "delivered"),
      ];
      assert.equal(delivered[0] + delivered[1], sent.length + 1, "once");
      assert.ok(delivered.every((n) => n > 0), `both deliver: ${delivered}`);

      // The rooms' own streams, emptied and left to expire; the shards'
      // indexes empty; nothing under a single Redis's names.
      for (const room of [...rooms, "lost"]) {
        const key = `chat:room:{${room}}:wh:${endpoint}`;
        await eventually(
          `${key} emptied`,
          async () =>
            await onMaster(cluster, key, ["XLEN", key]) === "0" &&
            Number(await onMaster(cluster, key, ["PTTL", key])) > 0,
        );
      }
      await eventually("the indexes empty", async () => {
        for (let shard = 0; shard < 16; shard++) {
          const key = `chat:{wh}:rooms:${shard}`;
          if (await onMaster(cluster, key, ["SCARD", key]) !== "0") {
            return false;
          }
        }
        return true;
      });
      for (const node of cluster.nodes) {
        assert.equal(
          (await redisCli(["-p", String(node.port), "KEYS", "chat:wh:*"]))
            .trim(),
          "",
        );
      }
    } finally {
      await Promise.all(chats.map((chat) => chat.stop()));
      await receiver.close();
      await cluster.stop();
    }
  },
});

Deno.test({
  name:
    "redis cluster webhooks: a process killed mid-delivery has its shards taken over by the other: everything delivered once, in order per room, with the ids it was tried with",
  ignore,
  fn: async () => {
    const cluster = await startCluster({ replicas: 0 });
    const receiver = new Receiver();
    receiver.answer = () => 500; // the app is down: both processes retry
    const chats: ChatProcess[] = [];
    try {
      const rooms = await roomsOnEveryMaster(cluster, 3);
      chats.push(...await twoProcesses(cluster, receiver));
      const [a, b] = chats;
      await new Promise((resolve) => setTimeout(resolve, 1000));
      const sent = await chatter(chats, rooms, 3);
      const deadline = Date.now() + 10_000;
      while (
        !(await outcome(a, "retried") > 0 && await outcome(b, "retried") > 0)
      ) {
        assert.ok(Date.now() < deadline, "both processes are delivering");
        await new Promise((resolve) => setTimeout(resolve, 100));
      }
      await a.kill(); // mid-delivery: its shards' requests failing
      const triedBefore = new Map(
        receiver.requests.map((
          r,
        ) => [`${r.json.room}/${r.json.event.id}`, r.id]),
      );
      receiver.answer = () => 200;
      await receiver.until(
        "every message",
        () => receiver.accepted().length >= sent.length,
      );
      await new Promise((resolve) => setTimeout(resolve, 1000));
      assertOrderedOnce(receiver.requests);
      assert.equal(receiver.accepted().length, sent.length, "each once");
      for (const got of receiver.accepted()) {
        const before = triedBefore.get(`${got.json.room}/${got.json.event.id}`);
        if (before) assert.equal(got.id, before, "the id it was tried with");
      }
      assert.ok(triedBefore.size > 0);
      await drained(b);
      assert.equal(await outcome(b, "delivered"), sent.length, "all by b");
    } finally {
      await Promise.all(chats.map((chat) => chat.kill()));
      await receiver.close();
      await cluster.stop();
    }
  },
});
