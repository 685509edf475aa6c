/**
 * Webhooks through an outage (issue 28): N events into R rooms while the
 * endpoint answers 500 for F seconds, then 204; then checks that every
 * event was accepted once per delivery id, in order per room, and says how
 * long the catching up took and what the server(s) spent.
 *
 * Usage: deno run -A bench/webhooks.ts [--events 10000] [--rooms 20]
 *          [--fail-s 60] [--store memory|data|redis] [--json]
 *
 * The chat is main.ts started as a child (with `--redis`: two processes on
 * a fresh redis-server, the rooms' clients alternating between them), its
 * limits lifted as in run.ts; one JSON client per room sends its share
 * with at most {@linkcode WINDOW} un-echoed. The endpoint is a `Deno.serve`
 * in this process (webhook_receiver.ts) that checks every signature.
 *
 * @module
 */

import { parseArgs } from "node:util";
import { BenchReceiver, type Hit, HOOK_SECRET } from "./webhook_receiver.ts";
import { fmt, procCpuS } from "./load.ts";
import { type Chat, startChat } from "./chat_process.ts";
import { startRedis } from "../tests/redis_helpers.ts";

/** Messages a client may have sent and not yet had echoed. */
const WINDOW = 32;
/** After the outage, everything must be delivered within this. */
const CATCH_UP_LIMIT_MS = 300_000;
/** How often the queue's depth is read from /metrics. */
const SAMPLE_MS = 1_000;
/** Reads one sample of a chat's `/metrics` (0 when absent). */
async function sample(chat: Chat, name: string): Promise<number> {
  const text = await (await fetch(`http://127.0.0.1:${chat.port}/metrics`))
    .text();
  const line = text.split("\n").find((line) => line.startsWith(name + " "));
  return line ? Number(line.slice(name.length + 1)) : 0;
}

/**
 * One JSON client in `room` sending `count` messages, at most WINDOW
 * un-echoed; resolves with the ids of its messages once all are echoed.
 */
async function sendAll(
  chat: Chat,
  room: string,
  count: number,
): Promise<number[]> {
  const socket = new WebSocket(
    `ws://127.0.0.1:${chat.wsPort}/${room}?nick=sender`,
    "chat.v1.json",
  );
  const ids: number[] = [];
  let me = "";
  let sent = 0;
  const done = Promise.withResolvers<void>();
  const send = () => {
    while (sent < count && sent - ids.length < WINDOW) {
      socket.send(
        JSON.stringify({ type: "message", text: `${room} ${++sent}` }),
      );
    }
  };
  socket.onmessage = ({ data }) => {
    const parsed = JSON.parse(data);
    for (const event of Array.isArray(parsed) ? parsed : [parsed]) {
      if (event.type === "welcome") {
        me = event.you;
        send();
      } else if (event.type === "message" && event.from === me) {
        ids.push(event.id);
        if (ids.length === count) done.resolve();
        else send();
      } else if (event.type === "error") {
        done.reject(new Error(`${room}: ${event.code} ${event.message}`));
      }
    }
  };
  socket.onclose = () => done.reject(new Error(`${room}: closed`));
  await done.promise;
  socket.onclose = null;
  const closed = new Promise((resolve) => socket.onclose = resolve);
  socket.close();
  await closed;
  return ids;
}

/** What the run found. */
interface Outcome {
  store: string;
  events: number;
  rooms: number;
  failS: number;
  /** Accepted (2xx) requests. */
  accepted: number;
  /** Events accepted more than once (by delivery id). */
  duplicates: number;
  /** Events sent that were never accepted. */
  missing: number;
  /** Rooms whose accepted events were not in id order. */
  outOfOrder: number;
  /** Requests in all, and those answered 500. */
  requests: number;
  refused: number;
  badSignatures: number;
  /** Seconds from the endpoint's recovery to its last acceptance. */
  catchUpS: number;
  /** Seconds to send every event (all echoed). */
  sendS: number;
  /** The largest `chat_webhook_queue` seen (summed over processes). */
  peakQueue: number;
  /** Server CPU seconds (every chat process, redis-server too), in all. */
  serverCpuS: number;
  /** The chat's own count of outcomes, summed over processes. */
  metrics: Record<string, number>;
}

async function run(
  store: "memory" | "data" | "redis",
  events: number,
  rooms: number,
  failS: number,
): Promise<Outcome> {
  const receiver = new BenchReceiver({ record: true });
  const hook = ["--webhook", receiver.url, "--webhook-secret", HOOK_SECRET];
  const stops: (() => Promise<void>)[] = [() => receiver.close()];
  const chats: Chat[] = [];
  const pids: number[] = [];
  let dir = "";
  try {
    if (store === "redis") {
      const redis = await startRedis();
      stops.unshift(() => redis.kill());
      pids.push(redis.child.pid);
      for (let i = 0; i < 2; i++) {
        chats.push(await startChat(["--redis", redis.url, ...hook]));
      }
    } else if (store === "data") {
      dir = await Deno.makeTempDir({ prefix: "chat-bench-hooks-" });
      chats.push(await startChat(["--data", `${dir}/chat.db`, ...hook]));
    } else chats.push(await startChat(hook));
    for (const chat of chats) stops.unshift(() => chat.stop());
    pids.push(...chats.map((chat) => chat.pid));
    const cpu0 = pids.reduce((sum, pid) => sum + procCpuS(pid), 0);
    const t0 = Date.now();
    receiver.failUntil = t0 + failS * 1000;
    let peakQueue = 0;
    const sampler = setInterval(async () => {
      try {
        let queue = 0;
        for (const chat of chats) {
          queue += await sample(chat, "chat_webhook_queue");
        }
        peakQueue = Math.max(peakQueue, queue);
      } catch { /* a sample missed */ }
    }, SAMPLE_MS);
    const names = Array.from({ length: rooms }, (_, i) => `hooks${i}`);
    const per = Math.ceil(events / rooms);
    const sentIds = await Promise.all(
      names.map((room, i) =>
        sendAll(chats[i % chats.length], room, Math.min(per, events - i * per))
      ),
    );
    const sendS = (Date.now() - t0) / 1000;
    console.error(
      `[webhooks] ${store}: ${events} events sent in ${
        fmt(sendS, 1)
      } s; the endpoint fails until ${failS} s`,
    );
    const accepted = () => receiver.hits.filter((hit) => hit.status < 300);
    const deadline = receiver.failUntil + CATCH_UP_LIMIT_MS;
    let lastLog = 0;
    while (new Set(accepted().map((hit) => hit.id)).size < events) {
      if (Date.now() > deadline) break;
      if (Date.now() - lastLog >= 10_000) {
        lastLog = Date.now();
        console.error(
          `[webhooks] ${store}: ${
            fmt((Date.now() - t0) / 1000, 0)
          } s: ${accepted().length} accepted of ${receiver.requests} requests`,
        );
      }
      await new Promise((resolve) => setTimeout(resolve, 200));
    }
    // Anything sent twice would come now.
    await new Promise((resolve) => setTimeout(resolve, 2_000));
    clearInterval(sampler);
    const serverCpuS = pids.reduce((sum, pid) => sum + procCpuS(pid), 0) -
      cpu0;
    const metrics: Record<string, number> = {};
    for (const outcome of ["delivered", "retried", "failed", "dropped"]) {
      metrics[outcome] = 0;
      for (const chat of chats) {
        metrics[outcome] += await sample(
          chat,
          `chat_webhook_deliveries_total{outcome="${outcome}"}`,
        );
      }
    }
    return {
      store,
      events,
      rooms,
      failS,
      ...check(receiver.hits, names, sentIds),
      requests: receiver.requests,
      refused: receiver.hits.filter((hit) => hit.status === 500).length,
      badSignatures: receiver.badSignatures,
      catchUpS: (Math.max(...accepted().map((hit) => hit.at)) -
        receiver.failUntil) / 1000,
      sendS,
      peakQueue,
      serverCpuS,
      metrics,
    };
  } finally {
    for (const stop of stops) await stop();
    if (dir) await Deno.remove(dir, { recursive: true });
  }
}

/** Once per id, every event, in order per room. */
function check(
  hits: Hit[],
  rooms: string[],
  sent: number[][],
): Pick<Outcome, "accepted" | "duplicates" | "missing" | "outOfOrder"> {
  const accepted = hits.filter((hit) => hit.status < 300);
  const ids = new Set<string>();
  let duplicates = 0;
  const byRoom = new Map<string, number[]>();
  for (const hit of accepted) {
    if (ids.has(hit.id)) duplicates++;
    ids.add(hit.id);
    if (!byRoom.has(hit.room)) byRoom.set(hit.room, []);
    byRoom.get(hit.room)!.push(hit.event);
  }
  let missing = 0;
  let outOfOrder = 0;
  rooms.forEach((room, i) => {
    const got = byRoom.get(room) ?? [];
    const have = new Set(got);
    missing += sent[i].filter((id) => !have.has(id)).length;
    if (got.some((id, j) => j > 0 && id <= got[j - 1])) outOfOrder++;
  });
  return { accepted: accepted.length, duplicates, missing, outOfOrder };
}

if (import.meta.main) {
  const { values } = parseArgs({
    args: Deno.args,
    options: {
      events: { type: "string", default: "10000" },
      rooms: { type: "string", default: "20" },
      "fail-s": { type: "string", default: "60" },
      store: { type: "string", default: "memory" },
      json: { type: "boolean", default: false },
    },
  });
  const store = values.store as "memory" | "data" | "redis";
  if (!["memory", "data", "redis"].includes(store)) {
    throw new Error("--store is memory, data or redis");
  }
  const outcome = await run(
    store,
    Number(values.events),
    Number(values.rooms),
    Number(values["fail-s"]),
  );
  if (values.json) console.log(JSON.stringify(outcome));
  else {
    const ok = outcome.duplicates === 0 && outcome.missing === 0 &&
      outcome.outOfOrder === 0 && outcome.badSignatures === 0 &&
      outcome.accepted === outcome.events;
    console.log(
      [
        `store ${outcome.store}: ${outcome.events} events in ${outcome.rooms} rooms, the endpoint failing for ${outcome.failS} s`,
        `  accepted ${outcome.accepted}, duplicates ${outcome.duplicates}, missing ${outcome.missing}, rooms out of order ${outcome.outOfOrder}, bad signatures ${outcome.badSignatures}: ${
          ok ? "PASS" : "FAIL"
        }`,
        `  requests ${outcome.requests} (${outcome.refused} answered 500), all sent in ${
          fmt(outcome.sendS, 1)
        } s, caught up ${
          fmt(outcome.catchUpS, 1)
        } s after the endpoint came back`,
        `  queue at most ${outcome.peakQueue}; server CPU ${
          fmt(outcome.serverCpuS, 2)
        } s in all; the chat counted ${JSON.stringify(outcome.metrics)}`,
      ].join("\n"),
    );
  }
}
