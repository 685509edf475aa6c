/**
 * `deno task bench`: runs the benchmark scenarios against the reference
 * server, Bun and our server, alternating, several runs each, and prints
 * medians, the ratios ours/reference and ours/Bun, and the issue's targets.
 *
 * Every measurement starts a fresh server process on fresh ports (so RSS
 * "before" is a just-started server and no run inherits another's rooms or
 * TIME_WAIT sockets), runs `bench/load.ts` against it as a subprocess (so the
 * load generator's CPU time is its own) and stops the server.
 *
 * Usage: deno task bench [--scenario a,b,c,d] [--runs 3]
 *          [--servers reference,bun,ours] [--protocols text,json] [--json]
 *        deno task bench --redis     # (b), (d), (f), (g): in memory vs two
 *                                    # processes sharing rooms through Redis
 *        deno task bench --scenario f --servers ours,redis  # (f) alone
 *        deno task bench --data      # (a), (b) and (e): in memory vs
 *                                    # `--data` (a SQLite file in a tmp dir)
 *        deno task bench --scenario b,r --servers ours --protocols json
 *                                    # (r): a reaction storm against the
 *                                    # same storm of plain messages and (b)
 *                                    # (with --data or --redis: those too)
 *        deno task bench --redis --base DIR --servers ours,redis,redis-base
 *                                    # and another build (a worktree: DIR
 *                                    # holds its main.ts) in the same run
 *        deno task bench --redis --scenario b --scale 10
 *                                    # (a) and (b) with 10x the messages
 *        deno task bench --redis --scenario b --pin
 *                                    # servers (redis-server too) on CPU 0,
 *                                    # the load on the others (taskset)
 *        deno task bench --webhook --scenario b --protocols json
 *                                    # [--webhook-batch N: passed on]
 *                                    # (b) with webhooks on (`hooks`: every
 *                                    # message POSTed to a local endpoint)
 *                                    # against off (`ours`); with --data or
 *                                    # --redis, `data-hooks` against `data`
 *                                    # and `redis-hooks` against `redis` too
 *        deno task bench --proxy     # (b) and (d) with the publish proxy on
 *                                    # (`proxy`: every message asked of a
 *                                    # local app answering in 1 ms) against
 *                                    # off (`ours`)
 *
 * @module
 */
import { parseArgs } from "node:util";
import {
  expectedReactionCounts,
  fmt,
  type LoadReport,
  probeStoredReactions,
  procCpuS,
} from "./load.ts";
import { freePort } from "../tests/ws_frames.ts";
import { untilRedisAnswers } from "../tests/redis_helpers.ts";
import { BenchReceiver, HOOK_SECRET } from "./webhook_receiver.ts";
import { BenchProxyApp } from "./proxy_app.ts";

/** Bun release used as the comparison point (npm package `bun`). */
const BUN_VERSION = "1.4.4";
/** Load processes for the throughput scenarios (a) and (b). */
const DEFAULT_WORKERS = 2;
/**
 * Scenario (f): clients joining at once. Big enough that one wave's join
 * events reach the room in a few batched frames, small enough that the
 * room fills one join after another rather than all at once.
 */
const JOIN_WAVE = 100;
/**
 * Scenario (r): toggles per client. 4 over 8 keys: most people toggle some
 * key twice (taking it back), and 1,000 clients make 4 M deliveries, ~2 s of
 * server CPU (200 clock ticks: a per-delivery figure to 0.5 %).
 */
const REACT_TOGGLES = 4;
/** Scenario (r): reaction keys in use (of load.ts's REACTION_KEYS). */
const REACT_KEYS = 8;
/**
 * Scenario (r): toggles per second per client: the server's default rate
 * limit (`--rate`, 10/s; the bench lifts it, the clients keep to it).
 */
const REACT_RATE = 10;
/**
 * Scenario (r): toggles a client may have un-echoed: the default burst
 * (20), so that with {@linkcode REACT_TOGGLES} of them no client waits for
 * an echo: all 4,000 toggles are sent within 0.4 s, at the rate limit.
 */
const REACT_WINDOW = 20;
/** Runs per scenario and server when `--runs` is not given. */
const DEFAULT_RUNS = 3;
/** A server must answer `GET /healthz` within this after being started. */
const READY_TIMEOUT_MS = 30_000;
/** Poll interval while waiting for `/healthz`. */
const READY_POLL_MS = 50;
/** After SIGTERM a server gets this long before SIGKILL. */
const STOP_GRACE_MS = 3_000;
/** One load run (a subprocess) is killed after this long. */
const LOAD_TIMEOUT_MS = 180_000;
/** `npm install` of Bun must finish within this. */
const INSTALL_TIMEOUT_MS = 300_000;
/** File descriptors needed by the largest scenario, plus headroom. */
const FDS_NEEDED = 10_000 + 1_024;
/** Flags that lift our server's limits so it is measured, not throttled. */
const OURS_UNLIMITED = [
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
  "--quiet",
];

const benchDir = new URL(".", import.meta.url).pathname;
const repoDir = new URL("..", import.meta.url).pathname;
const bunDir = `${benchDir}.bun`;

/** One scenario of the issue, as load.ts flags. */
interface Scenario {
  id: string;
  title: string;
  args: string[];
  /** Uses `--workers` load processes (the throughput scenarios). */
  spread?: boolean;
  /** Metrics shown for this scenario (keys of {@linkcode pick}). */
  metrics: Metric[];
  /** The protocols it runs with, when not every one. */
  protocols?: string[];
  /** What `--scenario` calls it, when not its id (both (f) sizes are `f`). */
  group?: string;
  /** Runs on our builds only (reactions: the others have none). */
  oursOnly?: boolean;
}

type Metric =
  | "deliveredPerS"
  | "cpuUsPerDelivery"
  | "lost"
  | "dups"
  | "p50"
  | "p99"
  | "max"
  | "rssPerConnBytes"
  | "clientCpuShare"
  | "deliveredPerFrame"
  | "cpuUsPerMessage"
  | "cpuUsPerJoin"
  | "joinS"
  | "countsWrong"
  | "outOfStep"
  | "meWrong";

/** What the throughput scenarios (a) and (b) report. */
const THROUGHPUT_METRICS: Metric[] = [
  "deliveredPerS",
  "cpuUsPerDelivery",
  "lost",
  "dups",
  "p50",
  "p99",
  "clientCpuShare",
  "deliveredPerFrame",
];

const SCENARIOS: Scenario[] = [
  {
    id: "a",
    title: "(a) 100 clients, 4 senders x 2,000 msgs, window 16",
    args: ["--clients=100", "--senders=4", "--messages=2000"],
    spread: true,
    metrics: THROUGHPUT_METRICS,
  },
  {
    id: "b",
    title: "(b) 1,000 clients, 2 senders x 200 msgs, window 16",
    args: ["--clients=1000", "--senders=2", "--messages=200"],
    spread: true,
    metrics: THROUGHPUT_METRICS,
  },
  {
    id: "c",
    title: "(c) 10,000 idle clients in rooms of 100: server RSS per connection",
    // Rooms of 100: in one room of 10,000 the join notices alone are 50 M
    // messages, which would measure fan-out, not what an idle socket costs.
    args: ["--clients=10000", "--senders=0", "--room-size=100"],
    metrics: ["rssPerConnBytes"],
  },
  {
    id: "d",
    title: "(d) latency: 1,000 clients, 1 sender at 100 msgs/s for 10 s",
    args: [
      "--clients=1000",
      "--senders=1",
      "--messages=1000",
      "--rate=100",
      "--duration=30",
    ],
    metrics: ["p50", "p99", "max", "lost", "cpuUsPerDelivery"],
  },
  {
    id: "e",
    title:
      "(e) 10,000 messages into one room, 2 clients: server CPU per message",
    // Two clients: per-message work (ids, history, the --data commit)
    // dominates, not fan-out.
    args: ["--clients=2", "--senders=1", "--messages=10000"],
    metrics: ["cpuUsPerMessage", "deliveredPerS", "p99", "lost"],
  },
  {
    id: "g",
    title:
      "(g) latency, senders not in step: 1,000 clients, 2 senders at 15 msgs/s each, staggered, for 10 s",
    // With Redis the two senders are on the two processes: what the wait
    // for each other's batches (COALESCE_MS in redis_store.ts) costs the
    // people of a busy room who do not type in step.
    args: [
      "--clients=1000",
      "--senders=2",
      "--messages=150",
      "--rate=15",
      "--stagger",
      "--duration=30",
    ],
    metrics: ["p50", "p99", "max", "lost", "cpuUsPerDelivery"],
  },
  // (r), issue 26: a reaction storm, and the same storm of plain messages
  // as its yardstick (the same clients, senders, pacing and deliveries).
  ...(["msg", "react"] as const).map((kind): Scenario => ({
    id: `r-${kind}`,
    group: "r",
    title: kind === "react"
      ? `(r) reaction storm: 1,000 JSON clients each toggle ${REACT_TOGGLES} reactions (${REACT_KEYS} keys) on one message at ${REACT_RATE}/s, window ${REACT_WINDOW}`
      : `(r) yardstick: the same storm of plain messages, 1,000 JSON clients each send ${REACT_TOGGLES} at ${REACT_RATE}/s, window ${REACT_WINDOW}`,
    args: [
      "--clients=1000",
      "--senders=1000",
      kind === "react"
        ? `--react=${REACT_TOGGLES}`
        : `--messages=${REACT_TOGGLES}`,
      ...(kind === "react" ? [`--react-keys=${REACT_KEYS}`] : []),
      `--rate=${REACT_RATE}`,
      `--window=${REACT_WINDOW}`,
      "--duration=120",
    ],
    spread: true,
    metrics: [
      ...THROUGHPUT_METRICS,
      ...(kind === "react"
        ? ["countsWrong", "outOfStep", "meWrong"] as Metric[]
        : []),
    ],
    protocols: ["json"],
    oursOnly: true,
  })),
  ...[1_000, 3_000].map((clients): Scenario => ({
    id: `f${clients / 1000}k`,
    group: "f",
    title: `(f) ${
      clients.toLocaleString("en-US")
    } JSON clients join one room in waves of ${JOIN_WAVE}, then leave`,
    args: [
      `--clients=${clients}`,
      "--senders=0",
      `--join-wave=${JOIN_WAVE}`,
    ],
    metrics: ["cpuUsPerJoin", "joinS", "rssPerConnBytes", "clientCpuShare"],
    protocols: ["json"],
  })),
];

const METRIC_LABEL: Record<Metric, string> = {
  deliveredPerS: "deliv/s",
  cpuUsPerDelivery: "srv CPU µs/deliv",
  lost: "lost",
  dups: "dups",
  p50: "p50 ms",
  p99: "p99 ms",
  max: "max ms",
  rssPerConnBytes: "RSS B/conn",
  clientCpuShare: "client CPU %",
  deliveredPerFrame: "deliv/frame",
  cpuUsPerMessage: "srv CPU µs/msg",
  cpuUsPerJoin: "srv CPU µs/join",
  joinS: "join phase s",
  countsWrong: "counts wrong",
  outOfStep: "out of step",
  meWrong: "me wrong",
};

function pick(r: LoadReport, m: Metric): number {
  switch (m) {
    case "deliveredPerS":
      return r.deliveredPerS;
    case "cpuUsPerDelivery":
      return r.server.cpuUsPerDelivery;
    case "lost":
      return r.lost;
    case "dups":
      return r.dups;
    case "p50":
      return r.latencyMs.p50;
    case "p99":
      return r.latencyMs.p99;
    case "max":
      return r.latencyMs.max;
    case "rssPerConnBytes":
      return r.server.rssPerConnBytes;
    case "clientCpuShare":
      return 100 * r.client.cpuShare;
    case "deliveredPerFrame":
      return r.deliveredPerFrame;
    case "cpuUsPerMessage": {
      const sent = r.config.senders * r.config.messages;
      return sent > 0 ? r.server.cpuS * 1e6 / sent : NaN;
    }
    case "cpuUsPerJoin":
      return r.churn?.cpuUsPerJoin ?? NaN;
    case "joinS":
      return r.churn?.joinS ?? NaN;
    case "countsWrong":
      // Clients whose counts were wrong at the end, echoes that were not
      // the toggle sent, and what fresh clients found wrong in history.
      return r.react
        ? r.react.wrongClients + r.react.echoMismatches +
          r.react.storedProblems.length + (r.react.probes === 0 ? 1 : 0)
        : NaN;
    case "outOfStep":
      return r.react?.outOfStep ?? NaN;
    case "meWrong":
      return r.react?.meProblems?.length ?? NaN;
  }
}

/** A server build and protocol measured as one column. */
interface Target {
  name: string;
  /**
   * `hooks`, `data-hooks`, `redis-hooks`: as `ours`, `data` and `redis`,
   * with `--webhook` to the bench's endpoint (`--webhook`);
   * `redis`: two main.ts processes and a redis-server, clients split;
   * `base`, `redis-base`: as `ours` and `redis`, with `--base`'s main.ts
   * (another build, to compare in the same run);
   * `data`: main.ts with `--data` in a fresh tmp dir (`data-full`: and
   * `--data-sync full`);
   * `proxy`: as `ours`, with `--proxy-publish` to the bench's app (`--proxy`).
   */
  server:
    | "reference"
    | "bun"
    | "ours"
    | "redis"
    | "data"
    | "data-full"
    | "base"
    | "redis-base"
    | "hooks"
    | "data-hooks"
    | "redis-hooks"
    | "proxy";
  protocol: "text" | "json";
}

const ALL_TARGETS: Target[] = [
  { name: "reference/text", server: "reference", protocol: "text" },
  { name: "bun/text", server: "bun", protocol: "text" },
  { name: "bun/json", server: "bun", protocol: "json" },
  { name: "ours/text", server: "ours", protocol: "text" },
  { name: "ours/json", server: "ours", protocol: "json" },
  { name: "redis/text", server: "redis", protocol: "text" },
  { name: "redis/json", server: "redis", protocol: "json" },
  { name: "data/text", server: "data", protocol: "text" },
  { name: "data/json", server: "data", protocol: "json" },
  { name: "data-full/text", server: "data-full", protocol: "text" },
  { name: "data-full/json", server: "data-full", protocol: "json" },
  { name: "base/text", server: "base", protocol: "text" },
  { name: "base/json", server: "base", protocol: "json" },
  { name: "redis-base/text", server: "redis-base", protocol: "text" },
  { name: "redis-base/json", server: "redis-base", protocol: "json" },
  { name: "hooks/text", server: "hooks", protocol: "text" },
  { name: "hooks/json", server: "hooks", protocol: "json" },
  { name: "data-hooks/text", server: "data-hooks", protocol: "text" },
  { name: "data-hooks/json", server: "data-hooks", protocol: "json" },
  { name: "redis-hooks/text", server: "redis-hooks", protocol: "text" },
  { name: "redis-hooks/json", server: "redis-hooks", protocol: "json" },
  { name: "proxy/text", server: "proxy", protocol: "text" },
  { name: "proxy/json", server: "proxy", protocol: "json" },
];

/** `--proxy`: the app the `proxy` server asks about every message. */
let proxyApp: BenchProxyApp | undefined;

/**
 * `--webhook`: the endpoint the `*-hooks` servers POST every message to (a
 * `Deno.serve` in this process, answering 204), and the flags that say so.
 */
let receiver: BenchReceiver | undefined;
function webhookArgs(): string[] {
  if (!receiver) throw new Error("the hooks servers need --webhook");
  return [
    "--webhook",
    receiver.url,
    "--webhook-secret",
    HOOK_SECRET,
    ...(webhookBatch ? ["--webhook-batch", webhookBatch] : []),
  ];
}

/** `--webhook-batch N`: passed on to the `*-hooks` servers. */
let webhookBatch: string | undefined;

/** `--base`: the directory of the other build's main.ts, with a slash. */
let baseDir = "";
/**
 * `--pin`: the CPUs (taskset lists) the servers (redis-server included) and
 * the load run on, so that they do not take turns on the same cores.
 */
let pinned: { servers: string; load: string } | undefined;

function log(s: string): void {
  console.error(`[bench] ${s}`);
}

/** Metrics that must be 0: the tables show the worst run's. */
const WORST_OF_RUNS: Metric[] = [
  "lost",
  "dups",
  "countsWrong",
  "outOfStep",
  "meWrong",
];

/** Whether scenario `s` runs against target `t`. */
function runsOn(s: Scenario, t: Target): boolean {
  if (s.protocols && !s.protocols.includes(t.protocol)) return false;
  return !s.oursOnly || (t.server !== "reference" && t.server !== "bun");
}

/** Median of the finite values; NaN if there are none. */
export function median(xs: number[]): number {
  const v = xs.filter(Number.isFinite).sort((a, b) => a - b);
  if (v.length === 0) return NaN;
  const mid = Math.floor(v.length / 2);
  return v.length % 2 ? v[mid] : (v[mid - 1] + v[mid]) / 2;
}

/** Runs `cmd` under bash with the soft fd limit raised to the hard limit. */
function withFdLimit(
  cmd: string,
  args: string[],
  cpus?: string,
): [string, string[]] {
  return [
    "bash",
    [
      "-c",
      'ulimit -n "$(ulimit -Hn)" 2>/dev/null; exec "$@"',
      "bench",
      ...(cpus === undefined ? [] : ["taskset", "-c", cpus]),
      cmd,
      ...args,
    ],
  ];
}

async function hardFdLimit(): Promise<number> {
  const out = await new Deno.Command("bash", { args: ["-c", "ulimit -Hn"] })
    .output();
  const s = new TextDecoder().decode(out.stdout).trim();
  return s === "unlimited" ? Infinity : Number(s);
}

async function runQuiet(cmd: string, args: string[], timeoutMs: number) {
  const child = new Deno.Command(cmd, {
    args,
    stdout: "piped",
    stderr: "piped",
    signal: AbortSignal.timeout(timeoutMs),
  });
  return await child.output();
}

/**
 * Returns the path of a working Bun binary of {@linkcode BUN_VERSION},
 * installing the `bun` npm package into bench/.bun (gitignored) if needed;
 * null if that is impossible (no npm), in which case Bun is skipped.
 */
export async function ensureBun(): Promise<string | null> {
  const find = async () => {
    const oven = `${bunDir}/node_modules/@oven`;
    const candidates: string[] = [];
    try {
      for (const e of Deno.readDirSync(oven)) {
        candidates.push(`${oven}/${e.name}/bin/bun`);
      }
    } catch { /* not installed yet */ }
    // Prefer the plain build; "-baseline" is for CPUs without AVX2.
    candidates.sort((a, b) => a.length - b.length);
    candidates.push(`${bunDir}/node_modules/bun/bin/bun.exe`);
    for (const path of candidates) {
      try {
        const out = await runQuiet(path, ["--version"], 10_000);
        const v = new TextDecoder().decode(out.stdout).trim();
        if (out.success && v === BUN_VERSION) return path;
      } catch { /* missing, or not runnable on this CPU */ }
    }
    return null;
  };
  const found = await find();
  if (found) return found;
  // --ignore-scripts: the binary comes in the optional dependency
  // @oven/bun-<os>-<arch>; bun's postinstall only moves it around.
  for (
    const pkg of [
      `bun@${BUN_VERSION}`,
      `@oven/bun-linux-x64-baseline@${BUN_VERSION}`,
    ]
  ) {
    log(`installing ${pkg} into bench/.bun with npm …`);
    try {
      const out = await runQuiet("npm", [
        "install",
        "--prefix",
        bunDir,
        "--no-audit",
        "--no-fund",
        "--ignore-scripts",
        "--save-exact",
        pkg,
      ], INSTALL_TIMEOUT_MS);
      if (!out.success) {
        log(`npm install failed: ${new TextDecoder().decode(out.stderr)}`);
        return null;
      }
    } catch (e) {
      log(`npm install failed: ${(e as Error).message}`);
      return null;
    }
    const path = await find();
    if (path) return path;
  }
  return null;
}

/** A started server under test (several processes for `redis`). */
interface Running {
  /** Every process whose CPU and RSS count (redis-server included). */
  pids: number[];
  /** The chat ports; load.ts deals its clients over them. */
  wsPorts: number[];
  /** The page ports of our processes (`/metrics`). */
  pagePorts: number[];
  stop(): Promise<void>;
  /**
   * `--data`: stops the server and starts another on the same file (what
   * it kept, read back), which `stop` then stops for good.
   */
  restart?(): Promise<Running>;
}

/**
 * Two of our processes sharing rooms through a fresh redis-server (no
 * persistence, as a cache would run), each on its own ports.
 */
async function startRedisCluster(
  dir = repoDir,
  extra: string[] = [],
): Promise<Running> {
  const redisPort = freePort();
  const [redisCommand, redisArgs] = withFdLimit("redis-server", [
    "--port",
    String(redisPort),
    "--bind",
    "127.0.0.1",
    "--save",
    "",
    "--appendonly",
    "no",
  ], pinned?.servers);
  const redis = new Deno.Command(redisCommand, {
    args: redisArgs,
    stdin: "null",
    stdout: "null",
    stderr: "inherit",
  }).spawn();
  const stopRedis = async () => {
    try {
      redis.kill("SIGTERM");
    } catch { /* gone */ }
    await redis.status;
  };
  try {
    await untilRedisAnswers(redisPort, redis);
  } catch (e) {
    await stopRedis();
    throw e;
  }
  const url = `redis://127.0.0.1:${redisPort}`;
  const chats: Running[] = [];
  try {
    for (let i = 0; i < 2; i++) {
      chats.push(
        await startServer(
          { ...OURS_TARGET },
          "",
          ["--redis", url, ...extra],
          dir,
        ),
      );
    }
  } catch (e) {
    await Promise.all(chats.map((c) => c.stop()));
    await stopRedis();
    throw e;
  }
  return {
    pids: [...chats.flatMap((c) => c.pids), redis.pid],
    wsPorts: chats.flatMap((c) => c.wsPorts),
    pagePorts: chats.flatMap((c) => c.pagePorts),
    stop: async () => {
      await Promise.all(chats.map((c) => c.stop()));
      await stopRedis();
    },
  };
}

const OURS_TARGET: Target = { name: "ours", server: "ours", protocol: "text" };

/**
 * Our server with `--data` on a new file in a fresh tmp dir (so every
 * measurement starts from an empty file), removed when it stops.
 */
async function startWithData(
  full: boolean,
  extra: string[] = [],
): Promise<Running> {
  const dir = await Deno.makeTempDir({ prefix: "chat-bench-data-" });
  const remove = () => Deno.remove(dir, { recursive: true }).catch(() => {});
  const launch = async (): Promise<Running> => {
    const running = await startServer(OURS_TARGET, "", [
      "--data",
      `${dir}/chat.db`,
      ...(full ? ["--data-sync", "full"] : []),
      ...extra,
    ]);
    return {
      ...running,
      stop: async () => {
        await running.stop();
        await remove();
      },
      restart: async () => {
        await running.stop();
        return await launch();
      },
    };
  };
  try {
    return await launch();
  } catch (e) {
    await remove();
    throw e;
  }
}

/** Starts a server of `target`'s kind and waits until `/healthz` answers. */
async function startServer(
  target: Target,
  bun: string,
  extra: string[] = [],
  dir = target.server === "base" ? baseDir : repoDir,
): Promise<Running> {
  if (target.server === "redis") return await startRedisCluster();
  if (target.server === "redis-hooks") {
    return await startRedisCluster(repoDir, webhookArgs());
  }
  if (target.server === "data-hooks") {
    return await startWithData(false, webhookArgs());
  }
  if (target.server === "hooks") {
    return await startServer(OURS_TARGET, bun, webhookArgs());
  }
  if (target.server === "proxy") {
    if (!proxyApp) throw new Error("the proxy server needs --proxy");
    return await startServer(OURS_TARGET, bun, [
      "--proxy-publish",
      proxyApp.url,
    ]);
  }
  if (target.server === "redis-base") return await startRedisCluster(baseDir);
  if (target.server === "data" || target.server === "data-full") {
    return await startWithData(target.server === "data-full");
  }
  const port = freePort();
  const wsPort = freePort();
  const common = [
    "--port",
    String(port),
    "--ws-port",
    String(wsPort),
    "--hostname",
    "127.0.0.1",
  ];
  const [cmd, args] = target.server === "bun"
    ? withFdLimit(
      bun,
      [`${benchDir}bun_server.ts`, ...common],
      pinned?.servers,
    )
    : target.server === "reference"
    ? withFdLimit(Deno.execPath(), [
      "run",
      "-A",
      `${benchDir}reference_server.ts`,
      ...common,
    ], pinned?.servers)
    : withFdLimit(Deno.execPath(), [
      "run",
      "-A",
      `${dir}main.ts`,
      ...common,
      ...OURS_UNLIMITED,
      ...extra,
    ], pinned?.servers);
  const child = new Deno.Command(cmd, {
    args,
    cwd: dir,
    stdin: "null",
    stdout: "null",
    stderr: "inherit",
  }).spawn();
  const exited = child.status.then(() => true);
  const stop = async () => {
    try {
      child.kill("SIGTERM");
    } catch { /* already gone */ }
    const timer = setTimeout(() => {
      try {
        child.kill("SIGKILL");
      } catch { /* gone */ }
    }, STOP_GRACE_MS);
    await child.status;
    clearTimeout(timer);
  };
  const deadline = Date.now() + READY_TIMEOUT_MS;
  while (Date.now() < deadline) {
    const done = await Promise.race([
      exited,
      new Promise((r) => setTimeout(() => r(false), READY_POLL_MS)),
    ]);
    if (done) throw new Error(`${target.server} server exited at start`);
    try {
      const res = await fetch(`http://127.0.0.1:${port}/healthz`, {
        signal: AbortSignal.timeout(1_000),
      });
      await res.body?.cancel();
      if (res.ok) {
        return {
          pids: [child.pid],
          wsPorts: [wsPort],
          pagePorts: [port],
          stop,
        };
      }
    } catch { /* not up yet */ }
  }
  await stop();
  throw new Error(
    `${target.server} server not ready in ${READY_TIMEOUT_MS} ms`,
  );
}

/** Runs load.ts once against a fresh server; null when it could not run. */
async function measure(
  target: Target,
  scenario: Scenario,
  bun: string,
  workers: number,
): Promise<LoadReport | null> {
  let server: Running;
  try {
    server = await startServer(target, bun);
  } catch (e) {
    log(`${target.name}: ${(e as Error).message}`);
    return null;
  }
  try {
    const [cmd, args] = withFdLimit(Deno.execPath(), [
      "run",
      "-A",
      `${benchDir}load.ts`,
      ...server.wsPorts.map((port) => `--url=ws://127.0.0.1:${port}/bench`),
      `--pid=${server.pids.join(",")}`,
      `--protocol=${target.protocol}`,
      "--json",
      "--quiet",
      `--workers=${scenario.spread ? workers : 1}`,
      ...scenario.args,
    ], pinned?.load);
    const out = await new Deno.Command(cmd, {
      args,
      stdout: "piped",
      stderr: "inherit",
      signal: AbortSignal.timeout(LOAD_TIMEOUT_MS),
    }).output();
    const text = new TextDecoder().decode(out.stdout).trim();
    if (target.server === "redis" || target.server === "redis-base") {
      log(`${target.name}: ${await decisionsOf(server.pagePorts)}`);
    }
    const report = text ? JSON.parse(text) as LoadReport : null;
    if (target.server.endsWith("hooks")) {
      log(`${target.name}: ${await webhooksOf(server.pagePorts)}`);
      if (report) await countDrain(report, server);
    }
    if (report?.react && server.restart) {
      server = await server.restart();
      await checkAfterRestart(report, server.wsPorts[0]);
    }
    return report;
  } catch (e) {
    log(`${target.name}: load failed: ${(e as Error).message}`);
    return null;
  } finally {
    await server.stop();
  }
}

/**
 * Scenario (r) with `--data`: after a restart on the same file, a fresh
 * client must find the message's reactions as every client counted them
 * (a history page's), else the report is `wrong`; keys shown as its own
 * (`me`) go to `meProblems`.
 */
async function checkAfterRestart(
  report: LoadReport,
  wsPort: number,
): Promise<void> {
  const react = report.react!;
  const { senders, react: toggles, reactKeys } = report.config;
  const found = await probeStoredReactions(
    `ws://127.0.0.1:${wsPort}/bench`,
    react.target,
    expectedReactionCounts(senders, toggles, reactKeys),
  );
  react.probes++;
  const restarted = (problem: string) => `after a restart: ${problem}`;
  react.storedProblems.push(...found.counts.map(restarted));
  react.meProblems.push(...found.me.map(restarted));
  if (found.counts.length > 0 && report.status === "ok") {
    report.status = "wrong";
  }
}

/**
 * How often the Redis processes decided a change again because the room
 * had changed between its read and its commit (`chat_store_decisions_total`
 * of each process's `/metrics`), per 1,000 commits.
 */
async function decisionsOf(pagePorts: number[]): Promise<string> {
  const total = { committed: 0, again: 0 };
  for (const port of pagePorts) {
    try {
      const text = await (await fetch(`http://127.0.0.1:${port}/metrics`, {
        signal: AbortSignal.timeout(1_000),
      })).text();
      for (const outcome of ["committed", "again"] as const) {
        const found = text.match(
          new RegExp(
            `chat_store_decisions_total\\{outcome="${outcome}"\\} (\\d+)`,
          ),
        );
        total[outcome] += Number(found?.[1] ?? 0);
      }
    } catch { /* a build without the metric */ }
  }
  const per1000 = total.committed
    ? fmt(1000 * total.again / total.committed, 2)
    : "-";
  return `store commits ${total.committed}, decided again ${total.again} (${per1000} per 1,000)`;
}

/** A drain of the webhooks' queue gives up after this long. */
const DRAIN_TIMEOUT_MS = 120_000;

/**
 * The webhooks a `*-hooks` server had not delivered when the load ended
 * are its work too: waits until its queue is empty and adds the server CPU
 * spent meanwhile to the run's (and to its CPU per delivery), so that
 * webhooks on are not measured by what they left for later.
 */
async function countDrain(report: LoadReport, server: Running): Promise<void> {
  const cpu0 = server.pids.reduce((sum, pid) => sum + procCpuS(pid), 0);
  const t0 = performance.now();
  const deadline = Date.now() + DRAIN_TIMEOUT_MS;
  for (;;) {
    let waiting = 0;
    for (const port of server.pagePorts) {
      const text = await (await fetch(`http://127.0.0.1:${port}/metrics`))
        .text();
      waiting += Number(
        text.split("\n").find((line) => line.startsWith("chat_webhook_queue "))
          ?.split(" ")[1] ?? 0,
      );
    }
    if (waiting === 0) break;
    if (Date.now() > deadline) {
      report.errors.push(`webhooks: ${waiting} still waiting after the drain`);
      break;
    }
    await new Promise((resolve) => setTimeout(resolve, 50));
  }
  const extra = server.pids.reduce((sum, pid) => sum + procCpuS(pid), 0) -
    cpu0;
  report.server.cpuS += extra;
  report.server.cpuUsPerDelivery = report.server.cpuS / report.delivered * 1e6;
  log(
    `webhooks drained in ${fmt((performance.now() - t0) / 1000, 1)} s, ${
      fmt(extra, 2)
    } s more server CPU counted`,
  );
}

/**
 * What the `*-hooks` servers had delivered when the load ended, and what
 * was still waiting (whose CPU the run did not count).
 */
async function webhooksOf(pagePorts: number[]): Promise<string> {
  let delivered = 0, retried = 0, waiting = 0;
  for (const port of pagePorts) {
    try {
      const text = await (await fetch(`http://127.0.0.1:${port}/metrics`, {
        signal: AbortSignal.timeout(1_000),
      })).text();
      const read = (sample: string) =>
        Number(
          text.split("\n").find((line) => line.startsWith(sample + " "))
            ?.split(" ")[1] ?? 0,
        );
      delivered += read('chat_webhook_deliveries_total{outcome="delivered"}');
      retried += read('chat_webhook_deliveries_total{outcome="retried"}');
      waiting += read("chat_webhook_queue");
    } catch { /* gone */ }
  }
  return `webhooks: ${delivered} delivered, ${retried} retried, ${waiting} still waiting at the end of the load; the endpoint has had ${
    receiver?.requests ?? 0
  } requests in all`;
}

function oneLine(r: LoadReport | null): string {
  if (!r) return "FAILED";
  const parts = [`${r.status}`];
  if (r.churn) {
    parts.push(
      `${fmt(r.churn.cpuUsPerJoin, 0)} µs CPU/join`,
      `joined in ${fmt(r.churn.joinS, 1)} s`,
      `left in ${fmt(r.churn.leaveS, 1)} s`,
      `client ${fmt(100 * r.client.cpuShare, 0)} %`,
    );
  } else if (r.delivered) {
    parts.push(
      `${fmt(r.deliveredPerS, 0)} deliv/s`,
      `${fmt(r.server.cpuUsPerDelivery, 3)} µs CPU/deliv`,
      `p99 ${fmt(r.latencyMs.p99, 1)} ms`,
      `lost ${r.lost}`,
      `client ${fmt(100 * r.client.cpuShare, 0)} %`,
    );
  } else {
    parts.push(`${fmt(r.server.rssPerConnBytes, 0)} B/conn`);
  }
  if (r.errors.length) parts.push(`(${r.errors[0]})`);
  return parts.join(", ");
}

/** Column-aligned text table. */
function table(rows: string[][]): string {
  const widths = rows[0].map((_, i) =>
    Math.max(...rows.map((r) => r[i].length))
  );
  return rows.map((r) =>
    r.map((c, i) => (i === 0 ? c.padEnd(widths[i]) : c.padStart(widths[i])))
      .join("  ")
  ).join("\n");
}

type Medians = Record<string, Record<string, Partial<Record<Metric, number>>>>;

/**
 * Scenario (r) against plain messages, per target: the reaction storm's
 * server CPU per delivered event and deliveries per frame beside the same
 * storm of messages (the yardstick: same clients, senders, pacing and
 * deliveries) and (b), when it ran.
 */
function reactionStormTable(m: Medians, targets: Target[]): string {
  if (!m["r-react"]) return "";
  const rows: string[][] = [[
    "server",
    "react µs/deliv",
    "msgs µs/deliv",
    "react ÷ msgs",
    "(b) µs/deliv",
    "react ÷ (b)",
    "react deliv/frame",
    "msgs deliv/frame",
    "(b) deliv/frame",
  ]];
  for (const t of targets) {
    const react = m["r-react"]?.[t.name];
    if (!react) continue;
    const msgs = m["r-msg"]?.[t.name] ?? {};
    const b = m["b"]?.[t.name] ?? {};
    const cpu = (x: Partial<Record<Metric, number>>) =>
      x.cpuUsPerDelivery ?? NaN;
    const frame = (x: Partial<Record<Metric, number>>) =>
      x.deliveredPerFrame ?? NaN;
    rows.push([
      t.name,
      fmt(cpu(react), 3),
      fmt(cpu(msgs), 3),
      fmt(cpu(react) / cpu(msgs), 2),
      fmt(cpu(b), 3),
      fmt(cpu(react) / cpu(b), 2),
      fmt(frame(react), 1),
      fmt(frame(msgs), 1),
      fmt(frame(b), 1),
    ]);
  }
  return `(r) the reaction storm against plain messages (medians)\n${
    table(rows)
  }`;
}

/** The issue's targets, checked against the medians. */
function targetChecks(m: Medians): string[][] {
  const get = (s: string, t: string, k: Metric) => m[s]?.[t]?.[k] ?? NaN;
  const rows: string[][] = [["target", "value", "limit", "verdict"]];
  const check = (name: string, value: number, limit: number, le = true) => {
    if (!Number.isFinite(value) || !Number.isFinite(limit)) return;
    const ok = le ? value <= limit : value >= limit;
    rows.push([
      name,
      fmt(value, 3),
      (le ? "≤ " : "≥ ") + fmt(limit, 3),
      ok ? "PASS" : "FAIL",
    ]);
  };
  for (const s of ["a", "b"]) {
    const refCpu = get(s, "reference/text", "cpuUsPerDelivery");
    check(
      `(${s}) json CPU/deliv ≤ 0.2× reference (must)`,
      get(s, "ours/json", "cpuUsPerDelivery"),
      0.2 * refCpu,
    );
    check(
      `(${s}) json CPU/deliv ≤ Bun json (goal)`,
      get(s, "ours/json", "cpuUsPerDelivery"),
      get(s, "bun/json", "cpuUsPerDelivery"),
    );
    check(
      `(${s}) json deliv/s ≥ 0.9× Bun json`,
      get(s, "ours/json", "deliveredPerS"),
      0.9 * get(s, "bun/json", "deliveredPerS"),
      false,
    );
    check(`(${s}) json lost = 0`, get(s, "ours/json", "lost"), 0);
    check(
      `(${s}) json p99 ≤ reference p99`,
      get(s, "ours/json", "p99"),
      get(s, "reference/text", "p99"),
    );
    check(
      `(${s}) text CPU/deliv ≤ 1.1× reference`,
      get(s, "ours/text", "cpuUsPerDelivery"),
      1.1 * refCpu,
    );
    check(`(${s}) text lost = 0`, get(s, "ours/text", "lost"), 0);
    for (const p of ["text", "json"]) {
      check(
        `(${s}) --data ${p} CPU/deliv ≤ 1.15× in memory`,
        get(s, `data/${p}`, "cpuUsPerDelivery"),
        1.15 * get(s, `ours/${p}`, "cpuUsPerDelivery"),
      );
      check(`(${s}) --data ${p} lost = 0`, get(s, `data/${p}`, "lost"), 0);
    }
  }
  // Redis mode at the cost of one process (issue 16): both processes and
  // redis-server against one process in memory, same run.
  for (const [p, factor] of [["json", 1.3], ["text", 1.1]] as const) {
    check(
      `(b) redis ${p} CPU/deliv ≤ ${factor}× in memory`,
      get("b", `redis/${p}`, "cpuUsPerDelivery"),
      factor * get("b", `ours/${p}`, "cpuUsPerDelivery"),
    );
    check(`(b) redis ${p} lost = 0`, get("b", `redis/${p}`, "lost"), 0);
    check(`(b) redis ${p} dups = 0`, get("b", `redis/${p}`, "dups"), 0);
  }
  // Webhooks on (issue 28): CPU per delivery within 1.1× off, same run.
  for (
    const [on, off] of [
      ["hooks", "ours"],
      ["data-hooks", "data"],
      ["redis-hooks", "redis"],
    ]
  ) {
    for (const p of ["text", "json"]) {
      check(
        `(b) ${on}/${p} CPU/deliv ≤ 1.1× ${off}/${p} (webhooks off)`,
        get("b", `${on}/${p}`, "cpuUsPerDelivery"),
        1.1 * get("b", `${off}/${p}`, "cpuUsPerDelivery"),
      );
      check(`(b) ${on}/${p} lost = 0`, get("b", `${on}/${p}`, "lost"), 0);
    }
  }
  // The publish proxy on (issue 28 point 2), an app answering in 1 ms: CPU
  // per delivery within 1.2× off, p99 within 5 ms plus the app's 1 ms.
  for (const p of ["text", "json"]) {
    check(
      `(b) proxy/${p} CPU/deliv ≤ 1.2× ours/${p} (proxy off)`,
      get("b", `proxy/${p}`, "cpuUsPerDelivery"),
      1.2 * get("b", `ours/${p}`, "cpuUsPerDelivery"),
    );
    check(`(b) proxy/${p} lost = 0`, get("b", `proxy/${p}`, "lost"), 0);
    check(
      `(d) proxy/${p} p99 ≤ ours/${p} p99 + 6 ms`,
      get("d", `proxy/${p}`, "p99"),
      get("d", `ours/${p}`, "p99") + 6,
    );
  }
  // A reaction storm (issue 26): CPU per delivered event within 1.2× a
  // plain message's (the same storm of messages), nothing lost, counts exact.
  for (const t of ["ours/json", "data/json", "redis/json"]) {
    check(
      `(r) ${t} react CPU/deliv ≤ 1.2× the message storm's`,
      get("r-react", t, "cpuUsPerDelivery"),
      1.2 * get("r-msg", t, "cpuUsPerDelivery"),
    );
    check(
      `(r) ${t} react deliv/frame ≥ 0.8× the message storm's`,
      get("r-react", t, "deliveredPerFrame"),
      0.8 * get("r-msg", t, "deliveredPerFrame"),
      false,
    );
    check(`(r) ${t} react lost = 0`, get("r-react", t, "lost"), 0);
    check(`(r) ${t} react dups = 0`, get("r-react", t, "dups"), 0);
    check(
      `(r) ${t} counts exact (clients, echoes, history)`,
      get("r-react", t, "countsWrong"),
      0,
    );
    check(
      `(r) ${t} notices in the store's order (out of step)`,
      get("r-react", t, "outOfStep"),
      0,
    );
    check(
      `(r) ${t} a fresh client is "me" for none (owners)`,
      get("r-react", t, "meWrong"),
      0,
    );
    check(`(r) ${t} message storm lost = 0`, get("r-msg", t, "lost"), 0);
  }
  check(
    "(f) redis json CPU/join ≤ 2× in memory at 3,000",
    get("f3k", "redis/json", "cpuUsPerJoin"),
    2 * get("f3k", "ours/json", "cpuUsPerJoin"),
  );
  for (const t of ["ours/json", "redis/json"]) {
    check(
      `(f) ${t} CPU/join at 3,000 ≤ 2× at 1,000`,
      get("f3k", t, "cpuUsPerJoin"),
      2 * get("f1k", t, "cpuUsPerJoin"),
    );
  }
  for (const p of ["text", "json"]) {
    check(
      `(c) ${p} RSS/idle conn ≤ 1.2× reference`,
      get("c", `ours/${p}`, "rssPerConnBytes"),
      1.2 * get("c", "reference/text", "rssPerConnBytes"),
    );
    check(
      `(d) ${p} p99 ≤ 50 ms at 1,000 clients`,
      get("d", `ours/${p}`, "p99"),
      50,
    );
  }
  return rows;
}

/** The commit of the build in `dir`, and whether its .ts files changed since. */
async function buildOf(dir: string): Promise<string> {
  const git = (...args: string[]) =>
    new Deno.Command("git", {
      args: ["-C", dir, ...args],
      stdout: "piped",
      stderr: "null",
    }).output().then((o) => new TextDecoder().decode(o.stdout).trim())
      .catch(() => "");
  const commit = await git("rev-parse", "--short", "HEAD");
  const dirty = await git("status", "--porcelain", "--", "*.ts") !== "";
  return commit
    ? `${commit}${dirty ? " + uncommitted .ts changes" : ""}`
    : "uncommitted";
}

/**
 * A throughput scenario with `scale` times the messages per sender: (b)'s
 * 400 messages take half a second, where a run's CPU moves by tens of per
 * cent with how the processes happen to share 2 cores.
 */
function scaled(scenario: Scenario, scale: number): Scenario {
  if (scale === 1) return scenario;
  // Messages per sender, or (r)'s toggles per client.
  const flag = scenario.args.find((a) => a.startsWith("--react=")) !==
      undefined
    ? "--react="
    : "--messages=";
  const count = (arg: string) => Number(arg.slice(flag.length));
  const before = count(scenario.args.find((a) => a.startsWith(flag))!);
  return {
    ...scenario,
    title: scenario.title
      .replace(`x ${fmt(before, 0)} msgs`, `x ${fmt(before * scale, 0)} msgs`)
      .replace(`each toggle ${before} `, `each toggle ${before * scale} `)
      .replace(`each send ${before} `, `each send ${before * scale} `),
    args: scenario.args.map((arg) =>
      arg.startsWith(flag) ? `${flag}${count(arg) * scale}` : arg
    ),
  };
}

async function main(): Promise<void> {
  const { values } = parseArgs({
    args: Deno.args,
    options: {
      scenario: { type: "string" },
      runs: { type: "string", default: String(DEFAULT_RUNS) },
      servers: { type: "string" },
      redis: { type: "boolean", default: false },
      data: { type: "boolean", default: false },
      base: { type: "string" },
      protocols: { type: "string", default: "text,json" },
      workers: { type: "string", default: String(DEFAULT_WORKERS) },
      json: { type: "boolean", default: false },
      scale: { type: "string", default: "1" },
      pin: { type: "boolean", default: false },
      webhook: { type: "boolean", default: false },
      "webhook-batch": { type: "string" },
      proxy: { type: "boolean", default: false },
    },
  });
  const t0 = performance.now();
  webhookBatch = values["webhook-batch"];
  const runs = Number(values.runs);
  if (!Number.isInteger(runs) || runs < 1 || runs > 10) {
    throw new Error("--runs must be 1 … 10");
  }
  const workers = Number(values.workers);
  if (!Number.isInteger(workers) || workers < 1 || workers > 8) {
    throw new Error("--workers must be 1 … 8");
  }
  // --redis: (b), (d), (f) and (g), one in-memory process against two
  // processes and a redis-server, unless --scenario or --servers say
  // otherwise.
  // --data: (a), (b) and (e), in memory against --data.
  const scenarioIds = (values.scenario ??
    (values.proxy
      ? "b,d"
      : values.redis
      ? "b,d,f,g"
      : values.data
      ? "a,b,e"
      : "a,b,c,d")).split(
      ",",
    );
  if (values.pin) {
    const cpus = navigator.hardwareConcurrency;
    if (cpus < 2) throw new Error("--pin needs at least 2 CPUs");
    pinned = { servers: "0", load: cpus === 2 ? "1" : `1-${cpus - 1}` };
    log(`pinned: servers on CPU ${pinned.servers}, load on ${pinned.load}`);
  }
  const scale = Number(values.scale);
  if (!Number.isInteger(scale) || scale < 1 || scale > 100) {
    throw new Error("--scale must be 1 … 100");
  }
  const scenarios = SCENARIOS.filter((s) =>
    scenarioIds.includes(s.id) || scenarioIds.includes(s.group ?? s.id)
  ).map((s) => s.spread ? scaled(s, scale) : s);
  const servers = (values.servers ??
    (values.proxy
      ? "ours,proxy"
      : values.webhook
      ? values.redis
        ? "ours,hooks,redis,redis-hooks"
        : values.data
        ? "ours,hooks,data,data-hooks"
        : "ours,hooks"
      : values.redis
      ? "ours,redis"
      : values.data
      ? "ours,data"
      : "reference,bun,ours")).split(",");
  const protocols = values.protocols.split(",");
  let targets = ALL_TARGETS.filter((t) =>
    servers.includes(t.server) && protocols.includes(t.protocol)
  );
  if (values.base !== undefined) {
    baseDir = new URL(`${Deno.realPathSync(values.base)}/`, "file:///")
      .pathname;
    Deno.statSync(`${baseDir}main.ts`);
  } else if (targets.some((t) => t.server.endsWith("base"))) {
    throw new Error("the base servers need --base DIR (another build)");
  }
  if (scenarios.length === 0 || targets.length === 0) {
    throw new Error("nothing to run: check --scenario, --servers, --protocols");
  }
  const fds = await hardFdLimit();
  if (fds < FDS_NEEDED && scenarios.some((s) => s.id === "c")) {
    log(`warning: hard fd limit ${fds} < ${FDS_NEEDED}; scenario (c) may fail`);
  }
  let bun = "";
  if (targets.some((t) => t.server === "bun")) {
    bun = await ensureBun() ?? "";
    if (!bun) {
      log("Bun unavailable: skipping the Bun columns");
      targets = targets.filter((t) => t.server !== "bun");
    } else log(`bun ${BUN_VERSION}: ${bun}`);
  }
  try {
    Deno.statSync(`${repoDir}main.ts`);
  } catch {
    log("main.ts not found: skipping our server");
    targets = targets.filter((t) => t.server !== "ours");
  }
  if (targets.some((t) => t.server === "redis")) {
    try {
      await new Deno.Command("redis-server", { args: ["--version"] }).output();
    } catch {
      log("redis-server not found: skipping the redis columns");
      targets = targets.filter((t) => t.server !== "redis");
    }
  }
  if (targets.some((t) => t.server.endsWith("hooks"))) {
    if (!values.webhook) {
      throw new Error("the hooks servers need --webhook (the endpoint)");
    }
    receiver = new BenchReceiver();
    log(`webhooks to ${receiver.url}`);
  }
  if (targets.some((t) => t.server === "proxy")) {
    if (!values.proxy) throw new Error("the proxy server needs --proxy");
    proxyApp = new BenchProxyApp();
    log(`proxy app at ${proxyApp.url}`);
  }
  const build = await buildOf(repoDir);
  const baseBuild = baseDir ? await buildOf(baseDir) : "";

  const all: Record<string, Record<string, LoadReport[]>> = {};
  for (let run = 1; run <= runs; run++) {
    for (const s of scenarios) {
      // Alternate the order between runs so no server always goes first.
      const order = run % 2 ? targets : [...targets].reverse();
      for (const t of order) {
        if (!runsOn(s, t)) continue;
        const r = await measure(t, s, bun, workers);
        log(`run ${run}/${runs} (${s.id}) ${t.name.padEnd(14)} ${oneLine(r)}`);
        if (r) ((all[s.id] ??= {})[t.name] ??= []).push(r);
      }
    }
  }

  const medians: Medians = {};
  const out: string[] = [];
  for (const s of scenarios) {
    const rows: string[][] = [[
      "server",
      ...s.metrics.map((m) => METRIC_LABEL[m]),
      "runs",
    ]];
    for (const t of targets) {
      if (!runsOn(s, t)) continue;
      const reports = all[s.id]?.[t.name] ?? [];
      const med: Partial<Record<Metric, number>> = {};
      for (const m of s.metrics) {
        const values = reports.map((r) => pick(r, m));
        // What must be 0 is shown for the worst run, not the median one.
        med[m] = WORST_OF_RUNS.includes(m)
          ? (values.length ? Math.max(...values) : NaN)
          : median(values);
      }
      (medians[s.id] ??= {})[t.name] = med;
      rows.push([
        t.name,
        ...s.metrics.map((m) =>
          fmt(
            med[m]!,
            m === "cpuUsPerDelivery" ? 3 : m === "cpuUsPerJoin" ? 0 : 1,
          )
        ),
        String(reports.length),
      ]);
    }
    const ratio = (name: string, num: string, den: string) => {
      const a = medians[s.id][num];
      const b = medians[s.id][den];
      if (!a || !b) return;
      rows.push([
        name,
        ...s.metrics.map((m) =>
          m === "lost" || m === "dups" ? "" : fmt(a[m]! / b[m]!, 2)
        ),
        "",
      ]);
    };
    ratio("ours/text ÷ reference", "ours/text", "reference/text");
    ratio("ours/json ÷ reference", "ours/json", "reference/text");
    ratio("ours/text ÷ bun/text", "ours/text", "bun/text");
    ratio("ours/json ÷ bun/json", "ours/json", "bun/json");
    ratio("redis/text ÷ ours/text", "redis/text", "ours/text");
    ratio("redis/json ÷ ours/json", "redis/json", "ours/json");
    ratio("base/text ÷ ours/text", "base/text", "ours/text");
    ratio("base/json ÷ ours/json", "base/json", "ours/json");
    ratio("redis-base/text ÷ ours/text", "redis-base/text", "ours/text");
    ratio("redis-base/json ÷ ours/json", "redis-base/json", "ours/json");
    ratio("data/text ÷ ours/text", "data/text", "ours/text");
    ratio("data/json ÷ ours/json", "data/json", "ours/json");
    ratio("data-full/json ÷ ours/json", "data-full/json", "ours/json");
    for (const p of ["text", "json"]) {
      ratio(`hooks/${p} ÷ ours/${p}`, `hooks/${p}`, `ours/${p}`);
      ratio(`data-hooks/${p} ÷ data/${p}`, `data-hooks/${p}`, `data/${p}`);
      ratio(`redis-hooks/${p} ÷ redis/${p}`, `redis-hooks/${p}`, `redis/${p}`);
    }
    out.push(`${s.title} — medians of ${runs} run(s)`, table(rows), "");
  }
  const storm = reactionStormTable(medians, targets);
  if (storm) out.push(storm, "");
  const checks = targetChecks(medians);
  if (checks.length > 1) out.push("Targets from the issue", table(checks), "");
  const elapsedS = (performance.now() - t0) / 1000;
  out.push(
    `${new Date().toISOString()}  ours = main.ts @ ${build}  ${
      baseBuild ? `base = ${baseDir}main.ts @ ${baseBuild}  ` : ""
    }bun ${BUN_VERSION}  ` +
      `deno ${Deno.version.deno}  ${navigator.hardwareConcurrency} cores  ` +
      `${elapsedS.toFixed(0)} s`,
  );
  const result = {
    date: new Date().toISOString(),
    build,
    ...(baseBuild ? { baseBuild } : {}),
    runs,
    medians,
    reports: all,
    elapsedS,
  };
  try {
    Deno.mkdirSync(`${benchDir}results`, { recursive: true });
    const file = `${benchDir}results/${result.date.replaceAll(":", "-")}.json`;
    Deno.writeTextFileSync(file, JSON.stringify(result, null, 1));
    log(`raw results: ${file}`);
  } catch { /* results are optional */ }
  await receiver?.close();
  if (proxyApp) {
    log(`proxy app: ${proxyApp.requests} requests, ${proxyApp.asks} asks`);
    await proxyApp.close();
  }
  console.log(values.json ? JSON.stringify(result) : out.join("\n"));
}

if (import.meta.main) await main();
