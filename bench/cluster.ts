/**
 * The Redis Cluster bench (issue 28 point 4; bench/README.md, "Eighth
 * session, Redis Cluster"):
 *
 * 1. CPU per delivery: scenario (b)'s load spread over rooms, 1,020 clients
 *    in 30 rooms of 34 (dealt in turn, `load.ts --rooms-striped`), two
 *    senders per room × 200 messages, over 4 chat processes, once with one
 *    redis-server (`--redis`) and once with a cluster of 3 masters
 *    (`--redis-cluster`, no replicas, as the single one has none); the
 *    server CPU counts every chat process and every redis-server.
 * 2. Failover: 2 chat processes on 3 masters with a replica each
 *    (`cluster-node-timeout` {@linkcode NODE_TIMEOUT_MS}); a sender on one
 *    process posts every {@linkcode SEND_EVERY_MS} ms into a room of the
 *    master that is then killed (SIGKILL); how long until a post gets
 *    through again, and of the posts acknowledged (echoed) before the kill,
 *    how many the history no longer has and how many ids were given twice.
 *
 * Usage: deno run -A bench/cluster.ts [--rounds 2] [--skip-cpu]
 *          [--skip-failover] [--json]
 *
 * @module
 */

import { parseArgs } from "node:util";
import { type RedisCluster, startCluster } from "../tests/cluster_helpers.ts";
import {
  type ChatProcess,
  startChatProcess,
  startRedis,
} from "../tests/redis_helpers.ts";
import {
  closeAll,
  type Json,
  jsonClient,
  type Peer,
} from "../tests/test_helpers.ts";

/** Flags that lift a chat process's limits so it is measured, not throttled. */
const UNLIMITED = [
  "--rate",
  "1000000",
  "--burst",
  "1000000",
  "--max-connections",
  "100000",
  "--max-connections-per-ip",
  "100000",
  "--max-buffered-bytes",
  "1073741824",
  "--connect-rate",
  "1000000",
  "--connect-burst",
  "1000000",
];
/** Chat processes in the CPU runs. */
const PROCESSES = 4;
/** Rooms in the CPU runs, and clients in each. */
const ROOMS = 30;
const ROOM_SIZE = 34;
/** Senders per room, and messages each. */
const ROOM_SENDERS = 2;
const MESSAGES = 200;
/** The failover run's `cluster-node-timeout`, in ms. */
const NODE_TIMEOUT_MS = 2000;
/** How often the failover run's sender posts, in ms. */
const SEND_EVERY_MS = 20;
/** How long the failover run posts before the kill, in ms. */
const BEFORE_KILL_MS = 3000;
/** The failover run gives up after this long without a post getting through. */
const RECOVERY_LIMIT_MS = 60_000;

const loadScript = new URL("./load.ts", import.meta.url).pathname;
const repoDir = new URL("..", import.meta.url).pathname;

interface CpuRun {
  mode: "redis" | "cluster";
  status: string;
  delivered: number;
  lost: number;
  dups: number;
  cpuUsPerDelivery: number;
  /** Of `cpuUsPerDelivery`: the chat processes', and the redis-servers'. */
  chatUsPerDelivery: number;
  redisUsPerDelivery: number;
  deliveredPerS: number;
  clientCpuShare: number;
  loadAverage: string;
}

function loadAverage(): string {
  return Deno.readTextFileSync("/proc/loadavg").split(" ").slice(0, 3).join(
    " ",
  );
}

/** CPU µs per delivery of the first `chats` pids, and of the rest. */
function split(cpuSByPid: number[], chats: number, delivered: number) {
  const sum = (xs: number[]) => xs.reduce((a, b) => a + b, 0);
  return {
    chatUsPerDelivery: sum(cpuSByPid.slice(0, chats)) / delivered * 1e6,
    redisUsPerDelivery: sum(cpuSByPid.slice(chats)) / delivered * 1e6,
  };
}

/** One CPU run: 4 chat processes on `urls`, load.ts against them. */
async function cpuRun(mode: "redis" | "cluster"): Promise<CpuRun> {
  let cluster: RedisCluster | undefined;
  let stopRedis: (() => Promise<void>) | undefined;
  let url: string;
  let redisPids: number[];
  if (mode === "cluster") {
    cluster = await startCluster({ masters: 3, replicas: 0 });
    url = cluster.urls.join(",");
    redisPids = cluster.nodes.map((node) => node.child.pid);
  } else {
    const redis = await startRedis();
    stopRedis = redis.kill;
    url = redis.url;
    redisPids = [redis.child.pid];
  }
  const chats: ChatProcess[] = [];
  try {
    for (let i = 0; i < PROCESSES; i++) {
      chats.push(
        await startChatProcess(url, {
          flag: mode === "cluster" ? "--redis-cluster" : "--redis",
          args: UNLIMITED,
        }),
      );
    }
    const pids = [...chats.map((chat) => chat.child.pid), ...redisPids];
    const { stdout, stderr } = await new Deno.Command(Deno.execPath(), {
      args: [
        "run",
        "-A",
        loadScript,
        ...chats.flatMap((chat) => [
          "--url",
          `ws://127.0.0.1:${chat.wsPort}/bench`,
        ]),
        `--clients=${ROOMS * ROOM_SIZE}`,
        `--room-size=${ROOM_SIZE}`,
        "--rooms-striped",
        `--senders=${ROOMS * ROOM_SENDERS}`,
        `--messages=${MESSAGES}`,
        "--window=16",
        `--pid=${pids.join(",")}`,
        "--json",
        "--quiet",
      ],
      cwd: repoDir,
      stdout: "piped",
      stderr: "piped",
    }).output();
    const text = new TextDecoder().decode(stdout).trim();
    if (!text) throw new Error(new TextDecoder().decode(stderr));
    const report = JSON.parse(text.split("\n").at(-1)!);
    return {
      mode,
      status: report.status,
      delivered: report.delivered,
      lost: report.lost,
      dups: report.dups,
      cpuUsPerDelivery: report.server.cpuUsPerDelivery,
      ...split(report.server.cpuSByPid ?? [], chats.length, report.delivered),
      deliveredPerS: report.deliveredPerS,
      clientCpuShare: report.client.cpuShare,
      loadAverage: loadAverage(),
    };
  } finally {
    await Promise.all(chats.map((chat) => chat.stop()));
    await cluster?.stop();
    await stopRedis?.();
  }
}

interface FailoverRun {
  /** From the kill to the first post echoed again, in ms. */
  recoveryMs: number;
  /** Posts echoed before the kill. */
  acked: number;
  /** Of those, how many the history (read after) does not have. */
  lostFromHistory: number;
  /** Ids echoed before the kill that the history has with another post. */
  idsGivenTwice: number;
  /** Posts refused (`unavailable`) while the master was being replaced. */
  refused: number;
  /** Posts echoed before the kill that the other process never delivered. */
  notDelivered: number;
  loadAverage: string;
}

/** Rooms `f0`, `f1`, … until one whose slot is on `cluster`'s first master. */
async function roomOnSomeMaster(cluster: RedisCluster) {
  const room = "f0";
  const master = await cluster.masterOf(`chat:room:{${room}}:meta`);
  return { room, master };
}

async function failoverRun(): Promise<FailoverRun> {
  const cluster = await startCluster({
    masters: 3,
    replicas: 1,
    nodeTimeoutMs: NODE_TIMEOUT_MS,
  });
  const chats: ChatProcess[] = [];
  const peers: Peer[] = [];
  try {
    for (let i = 0; i < 2; i++) {
      chats.push(
        await startChatProcess(cluster.urls.join(","), {
          flag: "--redis-cluster",
          args: [...UNLIMITED, "--history-size", "10000"],
        }),
      );
    }
    const { room, master } = await roomOnSomeMaster(cluster);
    const sender = await jsonClient(chats[0].server, `/${room}`, {
      nick: "sender",
    });
    const receiver = await jsonClient(chats[1].server, `/${room}`, {
      nick: "receiver",
    });
    peers.push(sender, receiver);
    // Echoes and deliveries, by the post's text.
    const echoed = new Map<string, number>();
    const delivered = new Set<string>();
    let refused = 0;
    let firstAfterKill: number | undefined;
    let killedAt: number | undefined;
    const pump = async (peer: Peer, onEvent: (event: Json) => void) => {
      try {
        for (;;) onEvent(await peer.event());
      } catch {
        // closed, or quiet for long: the run is over
      }
    };
    const seen = pump(sender, (event) => {
      if (event.type === "message" && event.from === "sender") {
        echoed.set(event.text, event.id);
        if (killedAt !== undefined && firstAfterKill === undefined) {
          firstAfterKill = Date.now();
        }
      } else if (event.type === "error") refused++;
    });
    const heard = pump(receiver, (event) => {
      if (event.type === "message") delivered.add(event.text);
    });
    let n = 0;
    const start = Date.now();
    let ackedBeforeKill = new Map<string, number>();
    for (;;) {
      sender.send(JSON.stringify({ type: "message", text: `post ${n++}` }));
      await new Promise((resolve) => setTimeout(resolve, SEND_EVERY_MS));
      if (killedAt === undefined && Date.now() - start >= BEFORE_KILL_MS) {
        ackedBeforeKill = new Map(echoed);
        killedAt = Date.now();
        await master.kill();
      }
      if (killedAt !== undefined) {
        if (
          firstAfterKill !== undefined && Date.now() - firstAfterKill > 1000
        ) break;
        if (Date.now() - killedAt > RECOVERY_LIMIT_MS) break;
      }
    }
    await new Promise((resolve) => setTimeout(resolve, 500));
    // A fresh client reads the history back (the handshake is refused
    // while the store is away).
    let reader: (Peer & { welcome: Json }) | undefined;
    for (let tries = 0; !reader; tries++) {
      reader = await jsonClient(chats[1].server, `/${room}`, {
        nick: "reader",
      }).catch((error) => {
        if (tries >= 50) throw error;
        return undefined;
      });
      if (!reader) await new Promise((resolve) => setTimeout(resolve, 200));
    }
    peers.push(reader);
    const history = new Map<number, string>();
    for (const event of reader.welcome.history) {
      if (event.type === "message") history.set(event.id, event.text);
    }
    let lostFromHistory = 0;
    let idsGivenTwice = 0;
    let notDelivered = 0;
    for (const [text, id] of ackedBeforeKill) {
      const kept = history.get(id);
      if (kept === undefined) lostFromHistory++;
      else if (kept !== text) idsGivenTwice++;
      if (!delivered.has(text)) notDelivered++;
    }
    await closeAll(...peers);
    await Promise.all([seen, heard]);
    return {
      recoveryMs: firstAfterKill === undefined
        ? NaN
        : firstAfterKill - killedAt!,
      acked: ackedBeforeKill.size,
      lostFromHistory,
      idsGivenTwice,
      refused,
      notDelivered,
      loadAverage: loadAverage(),
    };
  } finally {
    await closeAll(...peers).catch(() => {});
    await Promise.all(chats.map((chat) => chat.stop()));
    await cluster.stop();
  }
}

if (import.meta.main) {
  const { values } = parseArgs({
    args: Deno.args,
    options: {
      rounds: { type: "string", default: "2" },
      "skip-cpu": { type: "boolean", default: false },
      "skip-failover": { type: "boolean", default: false },
      json: { type: "boolean", default: false },
    },
  });
  const rounds = Number(values.rounds);
  const cpu: CpuRun[] = [];
  if (!values["skip-cpu"]) {
    // Alternated, so that a change in the machine's load hits both.
    for (let i = 0; i < rounds; i++) {
      for (const mode of ["redis", "cluster"] as const) {
        const run = await cpuRun(mode);
        cpu.push(run);
        console.error(JSON.stringify(run));
      }
    }
  }
  const failover: FailoverRun[] = [];
  if (!values["skip-failover"]) {
    for (let i = 0; i < rounds; i++) {
      const run = await failoverRun();
      failover.push(run);
      console.error(JSON.stringify(run));
    }
  }
  const median = (xs: number[]) => {
    const sorted = [...xs].sort((a, b) => a - b);
    return sorted[Math.floor((sorted.length - 1) / 2)];
  };
  const per = (mode: string) =>
    median(
      cpu.filter((run) => run.mode === mode).map((run) => run.cpuUsPerDelivery),
    );
  const summary = {
    cpuUsPerDelivery: { redis: per("redis"), cluster: per("cluster") },
    ratio: per("cluster") / per("redis"),
    cpu,
    failover,
  };
  console.log(JSON.stringify(summary, null, values.json ? 0 : 2));
}
