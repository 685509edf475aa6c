/**
 * Load generator for the chat server (and the reference and Bun servers in
 * this folder).
 *
 * It connects N clients to a room (or to rooms of `--room-size` clients),
 * waits until the join traffic has settled, lets K of them send M messages
 * each with at most `--window` of their own messages un-echoed (optionally
 * paced at `--rate` messages/s), counts every chat message each client
 * receives, and reports deliveries/s, lost messages, latency percentiles, the
 * server's CPU time per delivered message and RSS (from /proc/PID), and the
 * load generator's own CPU time so a reader sees when the client is the
 * bottleneck.
 *
 * The WebSocket client is a minimal one written over `node:net`, for two
 * reasons:
 * - Deno's `WebSocket` and `Deno.connect` cannot bind a source address, but
 *   Deno's `node:net` honours `localAddress`, so clients can be spread over
 *   127.0.0.1–127.0.0.x (one address gives at most ~28k ephemeral ports and
 *   makes every client look like one IP to per-IP limits);
 * - it parses every frame that arrived in one read in one go, instead of one
 *   event-loop task per message, so one load process can receive several
 *   hundred thousand messages per second.
 *
 * With `--workers P` the clients are spread over P subprocesses of this
 * script (Deno.Command with Deno.execPath()), coordinated over stdin/stdout.
 *
 * Every phase is bounded in time (`--duration`, {@linkcode CONNECT_PHASE_MS},
 * {@linkcode SETTLE_MAX_MS}, {@linkcode STALL_MS}) and the tool stops by
 * itself. Traffic goes only to 127.0.0.0/8: other URLs are refused.
 *
 * Usage: deno run -A bench/load.ts --url ws://127.0.0.1:8001/bench
 *          [--clients 100] [--senders 4] [--messages 2000] [--window 16]
 *          [--size 64] [--protocol text|json] [--rate 0] [--stagger]
 *          [--duration 60]
 *          [--pid SERVER_PID[,PID…]] [--workers 1] [--room-size 0]
 *          [--rooms-striped]
 *          [--source-ips 0] [--join-wave 0] [--react 0] [--react-keys 8]
 *          [--json] [--quiet]
 *
 * With `--react N` (scenario (r), a reaction storm, JSON only) client 0
 * posts one message once everyone is in, and then each of the K senders
 * toggles a reaction on that message N times instead of sending messages,
 * its keys from a fixed set of `--react-keys` emoji (see
 * {@linkcode reactionKeyOf}), window and pacing as for messages. Every
 * client applies every `react` notice to its own per-key counts, checks
 * each notice's count against them, and must end with the counts the
 * toggles add up to; then a fresh client per server process checks the
 * message's `reactions` in its welcome and in a history page.
 *
 * With `--join-wave W` (scenario (f)) there is no send phase: the clients
 * join in waves of W (a wave starts when every client of the last one has
 * its welcome), then leave in waves of W (a close handshake each, then the
 * rest of the room has gone quiet), and the report's `churn` says what the
 * server processes used in all, per join (a join and its leave).
 *
 * @module
 */
import net from "node:net";
import { createHash } from "node:crypto";
import { parseArgs } from "node:util";
import {
  decodeHeader,
  encodeFrame,
  Opcode,
  upgradeRequest,
} from "../tests/ws_frames.ts";

/** The JSON subprotocol offered with `--protocol json`. */
export const JSON_PROTOCOL = "chat.v1.json";
/** Connections opened concurrently per process while connecting. */
const CONNECT_BATCH = 200;
/** One connection (TCP + handshake) must finish within this. */
const CONNECT_TIMEOUT_MS = 10_000;
/** The whole connect phase must finish within this. */
const CONNECT_PHASE_MS = 120_000;
/** Join traffic counts as settled after this long without a frame. */
const SETTLE_QUIET_MS = 300;
/** Settling gives up (and the run goes on) after this long. */
const SETTLE_MAX_MS = 30_000;
/** The send phase stops if no message was delivered for this long. */
const STALL_MS = 10_000;
/** Progress lines on stderr (and worker progress events) this often. */
const PROGRESS_INTERVAL_MS = 1_000;
/** Default clients per source address when `--source-ips` is 0 (auto). */
const CLIENTS_PER_SOURCE_IP = 1_000;
/** Source addresses are 127.0.0.1 … 127.0.0.254. */
const MAX_SOURCE_IPS = 254;
/** Largest frame accepted from a server; more means a broken server. */
const MAX_FRAME_BYTES = 64 * 1024 * 1024;
/** Upper bounds on options, so a typo cannot start an unbounded run. */
const MAX_CLIENTS = 60_000;
const MAX_WORKERS = 16;
const MAX_DURATION_S = 600;
/** Latency histogram: buckets grow by 1 % from 1 µs, up to ~10 minutes. */
const HIST_GROWTH = 1.01;
const HIST_BUCKETS = 2_100;
/** Client CPU above this share of its cores means the client is the limit. */
const CLIENT_SATURATED_SHARE = 0.9;
/** A client's close handshake (scenario (f)) must finish within this. */
const CLOSE_TIMEOUT_MS = 10_000;
/** Status code of the close frames sent when leaving (RFC 6455 normal). */
const CLOSE_NORMAL = 1000;
/**
 * Scenario (r)'s reaction keys, the first `--react-keys` of them: one code
 * point each (no variation selectors), all plain emoji the server takes.
 */
export const REACTION_KEYS = [
  "👍",
  "😂",
  "🎉",
  "😮",
  "😢",
  "🔥",
  "👀",
  "🚀",
  "💯",
  "🙏",
  "👏",
  "🤔",
  "😍",
  "😎",
  "🥳",
  "💡",
  "✅",
  "🐛",
  "🍕",
  "🌈",
] as const;
/** Scenario (r): reaction keys used when `--react-keys` is not given. */
const DEFAULT_REACTION_KEYS = 8;
/** The text of scenario (r)'s message: `~TAG~REACT_TARGET~…`. */
const REACT_TARGET = "react-target";
/** A fresh client's check of the stored reactions must finish within this. */
const PROBE_TIMEOUT_MS = 10_000;
/** RFC 6455 handshake GUID. */
const WS_GUID = "258EAFA5-E914-47DA-95CA-C5AB0DC85B11";

/** Options of one load run (the command-line flags, parsed). */
export interface LoadConfig {
  url: string;
  /**
   * Every server URL (`--url` repeated: several processes of one chat);
   * client i uses `urls[i % urls.length]`.
   */
  urls: string[];
  clients: number;
  senders: number;
  messages: number;
  window: number;
  size: number;
  protocol: "text" | "json";
  /** Messages per second per sender; 0 = as fast as the window allows. */
  rate: number;
  /**
   * With `rate`: the senders' sends spread evenly over each period (sender
   * k starts k/senders of a period late) instead of all at once, as people
   * who do not type in step.
   */
  stagger: boolean;
  durationS: number;
  pid: number;
  /** Every process whose CPU and RSS count as the server's (`--pid 1,2,3`). */
  pids: number[];
  workers: number;
  /** Clients per room (rooms are `PATH-0`, `PATH-1`, …); 0 = one room. */
  roomSize: number;
  /**
   * With `roomSize`: clients are dealt to the rooms in turn (client i in
   * room i mod rooms), so the first K senders are in K rooms, not one
   * (the cluster bench's rooms each with their senders).
   */
  roomsStriped?: boolean;
  sourceIps: number;
  /**
   * Scenario (f): join in waves of this many clients, then leave in waves,
   * no messages; 0 = the usual connect, settle, send.
   */
  joinWave: number;
  /**
   * Scenario (r): each sender toggles this many reactions on one message
   * (posted by client 0) instead of sending messages; 0 = messages.
   */
  react: number;
  /** Scenario (r): how many of {@linkcode REACTION_KEYS} the toggles use. */
  reactKeys: number;
  /** Random tag in every message text, so stray messages are not counted. */
  tag: string;
  quiet: boolean;
}

/** What one process (or the in-process group) measured. */
interface GroupReport {
  connected: number;
  delivered: number;
  expected: number;
  dups: number;
  /** Data frames the clients received during the send phase. */
  frames: number;
  hist: number[];
  maxLatencyMs: number;
  startAt: number;
  lastDeliveryAt: number;
  cpuS: number;
  errors: string[];
  /** Scenario (r): what this group's clients saw of the reactions. */
  react?: GroupReactions;
}

/** Scenario (r), one group: the target and the clients' counts. */
interface GroupReactions {
  /** The id of the message reacted to. */
  target: number;
  /**
   * Notices whose count was not the client's count for the key ± 1: the
   * notices came out of the order in which the store counted them.
   */
  outOfStep: number;
  /** Clients whose counts at the end were not the toggles' sum. */
  wrongClients: number;
  /** The first such client's counts and the expected ones. */
  wrongExample?: string;
  /** A toggle's echo that was not the client's next toggle. */
  echoMismatches: number;
}

/** The final report, printed as a table or with `--json`. */
export interface LoadReport {
  config: Omit<LoadConfig, "tag" | "quiet">;
  /** `wrong`: nothing lost, but reaction counts that do not add up. */
  status: "ok" | "lost" | "wrong" | "error";
  errors: string[];
  connected: number;
  connectS: number;
  expected: number;
  delivered: number;
  lost: number;
  dups: number;
  /**
   * Deliveries per data frame received in the send phase: how many events
   * the server put in one frame (1 for text).
   */
  deliveredPerFrame: number;
  sendPhaseS: number;
  deliveredPerS: number;
  latencyMs: { p50: number; p99: number; max: number };
  server: {
    pid: number;
    cpuS: number;
    cpuUsPerDelivery: number;
    cpuShare: number;
    /** `cpuS` by process, in `--pid` order. */
    cpuSByPid?: number[];
    /** CPU seconds by thread name, all processes together. */
    cpuSByThread?: Record<string, number>;
    rssBeforeKiB: number;
    rssConnectedKiB: number;
    rssAfterKiB: number;
    rssPerConnBytes: number;
  };
  client: {
    workers: number;
    cpuS: number;
    cpuShare: number;
    saturated: boolean;
  };
  /** Scenario (r) (`--react`): the reaction storm's checks. */
  react?: {
    /** Clients that toggled (`--senders`), each `--react` times. */
    reactors: number;
    togglesPerClient: number;
    target: number;
    /** Each key's count at the end, from the toggles each person made. */
    expected: Record<string, number>;
    /** Notices whose count was not the client's running count ± 1. */
    outOfStep: number;
    /** Clients whose counts at the end were not `expected`. */
    wrongClients: number;
    wrongExample?: string;
    echoMismatches: number;
    /** Fresh clients that read the message back (one per server URL). */
    probes: number;
    /** What they found wrong in a welcome's or a history page's counts. */
    storedProblems: string[];
    /**
     * Keys a fresh client was shown as its own (`me`): it reacted with
     * none, so every one is a wrong owner match (reported apart: the
     * counts can be right).
     */
    meProblems: string[];
  };
  /** Scenario (f) (`--join-wave`): joins and leaves, no send phase. */
  churn?: {
    /** Clients per wave. */
    wave: number;
    /** From the first connect to the last welcome. */
    joinS: number;
    /** From the first close to the room going quiet. */
    leaveS: number;
    /** Server CPU (every `--pid`) over both phases. */
    cpuS: number;
    /** `cpuS` ÷ clients: what one join and its leave cost the server. */
    cpuUsPerJoin: number;
    /** Server RSS with everyone in the room − before anyone came, per client. */
    rssPerMemberBytes: number;
  };
}

// ---------------------------------------------------------------- /proc ---

let clockTicks = 0;

/** Clock ticks per second for /proc stat fields (`getconf CLK_TCK`). */
export async function clkTck(): Promise<number> {
  if (clockTicks) return clockTicks;
  clockTicks = 100; // Linux's USER_HZ almost everywhere; used if getconf fails
  try {
    const out = await new Deno.Command("getconf", { args: ["CLK_TCK"] })
      .output();
    const n = Number(new TextDecoder().decode(out.stdout).trim());
    if (n > 0) clockTicks = n;
  } catch { /* keep the default */ }
  return clockTicks;
}

/**
 * CPU seconds (user + system, all threads) used so far by process `pid`
 * ("self" for this process), from /proc/PID/stat; NaN if unreadable.
 */
export function procCpuS(pid: number | "self"): number {
  try {
    const stat = Deno.readTextFileSync(`/proc/${pid}/stat`);
    // The command name (field 2) may contain spaces: split after its ")".
    const fields = stat.slice(stat.lastIndexOf(")") + 2).split(" ");
    // utime and stime are fields 14 and 15, i.e. 11 and 12 after field 2.
    return (Number(fields[11]) + Number(fields[12])) / (clockTicks || 100);
  } catch {
    return NaN;
  }
}

/** One thread's name and CPU seconds so far, by thread id. */
type ThreadCpu = Map<string, { name: string; cpuS: number }>;

/**
 * CPU seconds used so far by each thread of process `pid` (`deno` is the
 * main thread, `V8 DefaultWorke` V8's background threads, i.e. mostly
 * concurrent GC), from the kernel's nanosecond counters in
 * /proc/PID/task/TID/schedstat; empty if unreadable.
 */
export function procThreadCpuS(pid: number): ThreadCpu {
  const threads: ThreadCpu = new Map();
  try {
    for (const task of Deno.readDirSync(`/proc/${pid}/task`)) {
      try {
        const dir = `/proc/${pid}/task/${task.name}`;
        const name = Deno.readTextFileSync(`${dir}/comm`).trim();
        const ns = Number(
          Deno.readTextFileSync(`${dir}/schedstat`).split(" ")[0],
        );
        threads.set(task.name, { name, cpuS: ns / 1e9 });
      } catch { /* the thread ended */ }
    }
  } catch { /* the process ended */ }
  return threads;
}

/**
 * What each thread used between `before` and `after`, summed by thread
 * name over the processes (thread by thread, so that one ending in
 * between takes away nothing).
 */
function threadDeltas(
  before: ThreadCpu[],
  after: ThreadCpu[],
): Record<string, number> {
  const sum: Record<string, number> = {};
  after.forEach((threads, i) => {
    for (const [tid, { name, cpuS }] of threads) {
      const earlier = before[i]?.get(tid)?.cpuS ?? 0;
      sum[name] = (sum[name] ?? 0) + cpuS - earlier;
    }
  });
  return sum;
}

/** Resident set size of process `pid` in KiB (VmRSS); NaN if unreadable. */
export function procRssKiB(pid: number): number {
  try {
    const status = Deno.readTextFileSync(`/proc/${pid}/status`);
    const m = status.match(/^VmRSS:\s+(\d+)\s+kB/m);
    return m ? Number(m[1]) : NaN;
  } catch {
    return NaN;
  }
}

// ------------------------------------------------------------ histogram ---

function histIndex(ms: number): number {
  const us = Math.max(1, ms * 1000);
  return Math.min(
    HIST_BUCKETS - 1,
    Math.floor(Math.log(us) / Math.log(HIST_GROWTH)),
  );
}

/** The latency (ms) below which fraction `q` of the samples lie. */
function histQuantile(hist: number[], q: number): number {
  const total = hist.reduce((a, b) => a + b, 0);
  if (total === 0) return NaN;
  const want = Math.ceil(q * total);
  let seen = 0;
  for (let i = 0; i < hist.length; i++) {
    seen += hist[i];
    if (seen >= want) return HIST_GROWTH ** (i + 0.5) / 1000;
  }
  return NaN;
}

// ------------------------------------------------------------ reactions ---

/**
 * Scenario (r): the key (an index into {@linkcode REACTION_KEYS}) of
 * sender `sender`'s toggle number `n`. A fixed hash, so that every load
 * process and the final check know every toggle without being told; some
 * people toggle one key twice (taking it back), so counts go down as well
 * as up.
 */
export function reactionKeyOf(sender: number, n: number, keys: number): number {
  let h = Math.imul(sender + 1, 0x9e3779b1) ^ Math.imul(n + 1, 0x85ebca6b);
  h ^= h >>> 16;
  h = Math.imul(h, 0x7feb352d);
  h ^= h >>> 15;
  return (h >>> 0) % keys;
}

/** Each key's count once each of `senders` made its `toggles` toggles. */
export function expectedReactionCounts(
  senders: number,
  toggles: number,
  keys: number,
): Int32Array {
  const counts = new Int32Array(keys);
  const on = new Uint8Array(keys);
  for (let sender = 0; sender < senders; sender++) {
    on.fill(0);
    for (let n = 0; n < toggles; n++) on[reactionKeyOf(sender, n, keys)] ^= 1;
    for (let k = 0; k < keys; k++) counts[k] += on[k];
  }
  return counts;
}

/** Counts by key, for reports: `{"👍": 3, …}` (keys at 0 included). */
function countsByKey(counts: ArrayLike<number>): Record<string, number> {
  return Object.fromEntries(
    Array.from(counts, (count, k) => [REACTION_KEYS[k], count]),
  );
}

/** What a fresh client found wrong in a message's stored reactions. */
export interface StoredProblems {
  /** Counts (and nicks) that differ from the toggles' sum. */
  counts: string[];
  /** Keys shown as the fresh client's own (`me`), which it never used. */
  me: string[];
}

/**
 * Scenario (r): a fresh JSON client reads message `target` back from the
 * server at `url` (its welcome's history, unless the message is older than
 * all of it, then a history page of that one message) and says what differs
 * from `expected` (by key; keys at 0 must be absent).
 */
export async function probeStoredReactions(
  url: string,
  target: number,
  expected: Int32Array,
): Promise<StoredProblems> {
  const me: string[] = [];
  const problems: string[] = [];
  const ws = new WebSocket(url, JSON_PROTOCOL);
  const frames: unknown[] = [];
  let wake: (() => void) | null = null;
  ws.onmessage = (e) => {
    frames.push(JSON.parse(e.data));
    wake?.();
  };
  const closed = new Promise<void>((resolve) => {
    ws.onclose = () => {
      wake?.();
      resolve();
    };
  });
  ws.onerror = () => {};
  const deadline = Date.now() + PROBE_TIMEOUT_MS;
  /** The next frame that passes `test`. */
  const next = async (test: (frame: Json) => boolean): Promise<Json | null> => {
    for (;;) {
      const frame = frames.shift() as Json | undefined;
      if (frame !== undefined) {
        if (!Array.isArray(frame) && test(frame)) return frame;
        continue;
      }
      if (ws.readyState >= WebSocket.CLOSING || Date.now() > deadline) {
        return null;
      }
      await new Promise<void>((resolve) => {
        wake = resolve;
        setTimeout(resolve, 100);
      });
      wake = null;
    }
  };
  const compare = (where: string, event: Json | undefined) => {
    if (!event) {
      problems.push(`${url}: ${where}: message #${target} not there`);
      return;
    }
    const got = new Map<string, number>();
    for (const r of (event.reactions ?? []) as Json[]) {
      got.set(r.key, r.count);
      if (r.nicks?.length !== r.count) {
        problems.push(
          `${url}: ${where}: ${r.key}: ${r.nicks?.length} nicks, count ${r.count}`,
        );
      }
      if (r.me !== false) me.push(`${url}: ${where}: ${r.key}: me ${r.me}`);
    }
    expected.forEach((count, k) => {
      const key = REACTION_KEYS[k];
      if ((got.get(key) ?? 0) !== count || (count === 0 && got.has(key))) {
        problems.push(
          `${url}: ${where}: ${key} ${
            got.get(key) ?? "absent"
          }, expected ${count}`,
        );
      }
      got.delete(key);
    });
    for (const key of got.keys()) {
      problems.push(`${url}: ${where}: unexpected key ${key}`);
    }
  };
  try {
    const welcome = await next((f) => f.type === "welcome");
    if (!welcome) problems.push(`${url}: no welcome`);
    else {
      const history = welcome.history as Json[];
      // After everyone left (a restart's check), the leaves may fill it.
      if (!(history[0]?.id > target)) {
        compare("welcome", history.find((e) => e.id === target));
      }
      ws.send(
        JSON.stringify({ type: "history", before: target + 1, limit: 1 }),
      );
      const page = await next((f) => f.type === "history");
      if (!page) problems.push(`${url}: no history page`);
      else {
        compare(
          "history page",
          (page.events as Json[]).find((e) => e.id === target),
        );
      }
    }
  } catch (e) {
    problems.push(`${url}: ${(e as Error).message}`);
  } finally {
    ws.close();
    await closed;
  }
  return { counts: problems, me };
}

// deno-lint-ignore no-explicit-any
type Json = any;

// --------------------------------------------------------------- client ---

const encoder = new TextEncoder();
const decoder = new TextDecoder();

function wallMs(): number {
  return performance.timeOrigin + performance.now();
}

/** Shared state of the clients of one process. */
class Group {
  readonly clients: Client[] = [];
  delivered = 0;
  expected = 0;
  dups = 0;
  frames = 0;
  connected = 0;
  readonly hist: number[] = new Array(HIST_BUCKETS).fill(0);
  maxLatencyMs = 0;
  lastFrameAt = 0;
  lastDeliveryAt = 0;
  startAt = 0;
  running = false;
  readonly errors: string[] = [];
  #onProgress: (() => void) | null = null;
  /** Scenario (r): the key index of each reaction key used. */
  readonly keyIndex: Map<string, number>;
  /**
   * Scenario (r): a number for each reactor's nick, in the order this
   * process first saw them (for the clients' last-notice tables).
   */
  readonly nickIndex = new Map<string, number>();
  /** Scenario (r): each key's count once every toggle is in. */
  readonly expectedCounts: Int32Array;
  /** Scenario (r): notices whose count was not the running count ± 1. */
  outOfStep = 0;
  /** Scenario (r): echoes that were not the client's next toggle. */
  echoMismatches = 0;

  constructor(readonly cfg: LoadConfig, readonly indices: number[]) {
    const keys = cfg.react > 0 ? cfg.reactKeys : 0;
    this.keyIndex = new Map(REACTION_KEYS.slice(0, keys).map((k, i) => [k, i]));
    this.expectedCounts = expectedReactionCounts(
      Math.min(cfg.senders, cfg.clients),
      cfg.react,
      keys,
    );
  }

  /** Connects this group's clients, CONNECT_BATCH at a time. */
  async connect(): Promise<void> {
    const urls = (this.cfg.urls ?? [this.cfg.url]).map((url) => new URL(url));
    const deadline = Date.now() + CONNECT_PHASE_MS;
    for (let i = 0; i < this.indices.length; i += CONNECT_BATCH) {
      if (Date.now() > deadline) throw new Error("connect phase timed out");
      const batch = this.indices.slice(i, i + CONNECT_BATCH).map((idx) => {
        const c = new Client(this, idx, urls[idx % urls.length]);
        this.clients.push(c);
        return c.open();
      });
      await Promise.all(batch);
      this.connected = this.clients.length;
    }
    const senders = Math.min(this.cfg.senders, this.cfg.clients);
    for (const c of this.clients) {
      // Everyone in a room, the sender included, receives each message.
      const room = c.room;
      let roomSenders = 0;
      for (let s = 0; s < senders; s++) {
        if (this.roomOf(s) === room) roomSenders++;
      }
      // Scenario (r): every toggle's notice reaches everyone, the toggler too.
      c.expected = roomSenders *
        (this.cfg.react > 0 ? this.cfg.react : this.cfg.messages);
      this.expected += c.expected;
    }
  }

  /**
   * Scenario (f): joins this group's clients `wave` at a time, each wave
   * once the last one has its welcomes.
   */
  async joinInWaves(wave: number): Promise<void> {
    const urls = (this.cfg.urls ?? [this.cfg.url]).map((url) => new URL(url));
    const deadline = Date.now() + CONNECT_PHASE_MS;
    for (let i = 0; i < this.indices.length; i += wave) {
      if (Date.now() > deadline) throw new Error("join phase timed out");
      const batch = this.indices.slice(i, i + wave).map((idx) => {
        const c = new Client(this, idx, urls[idx % urls.length], true);
        this.clients.push(c);
        return c.open().then(() => c.welcomed);
      });
      await Promise.all(batch);
      this.connected = this.clients.length;
    }
  }

  /**
   * Scenario (f): closes the clients `wave` at a time (close handshakes),
   * each wave once the room has gone quiet after the last one (the others
   * got its leaves).
   */
  async leaveInWaves(wave: number): Promise<void> {
    for (let i = 0; i < this.clients.length; i += wave) {
      await Promise.all(this.clients.slice(i, i + wave).map((c) => c.leave()));
      await this.settle();
    }
  }

  roomOf(idx: number): number {
    const { roomSize, clients, roomsStriped } = this.cfg;
    if (roomSize === 0) return 0;
    return roomsStriped
      ? idx % Math.ceil(clients / roomSize)
      : Math.floor(idx / roomSize);
  }

  /** Waits until no frame arrived for SETTLE_QUIET_MS (join traffic). */
  async settle(): Promise<void> {
    const deadline = Date.now() + SETTLE_MAX_MS;
    this.lastFrameAt = Date.now();
    while (Date.now() < deadline) {
      const quietFor = Date.now() - this.lastFrameAt;
      if (quietFor >= SETTLE_QUIET_MS) return;
      await sleep(SETTLE_QUIET_MS - quietFor + 5);
    }
    this.errors.push("join traffic did not settle");
  }

  /**
   * Scenario (r): client 0 (in whichever process has it) posts the message
   * to react to; resolves with its id once every client of this group has
   * it.
   */
  async postTarget(): Promise<number> {
    this.clients.find((c) => c.idx === 0)?.postTarget();
    const deadline = Date.now() + SETTLE_MAX_MS;
    while (this.clients.some((c) => c.target === 0)) {
      if (Date.now() > deadline) {
        throw new Error("the message to react to did not reach every client");
      }
      await sleep(10);
    }
    const target = this.clients[0]?.target ?? 0;
    if (this.clients.some((c) => c.target !== target)) {
      throw new Error("clients disagree on the message to react to");
    }
    return target;
  }

  /** Runs the send phase until everything arrived, a stall or the cap. */
  async run(startAt: number): Promise<GroupReport> {
    const cpu0 = procCpuS("self");
    this.startAt = startAt;
    this.running = true;
    const capAt = startAt + this.cfg.durationS * 1000;
    this.lastDeliveryAt = startAt;
    for (const c of this.clients) c.startSending(startAt);
    while (this.delivered < this.expected) {
      const now = wallMs();
      if (now > capAt) {
        this.errors.push(`duration cap of ${this.cfg.durationS} s reached`);
        break;
      }
      if (now - Math.max(this.lastDeliveryAt, startAt) > STALL_MS) {
        this.errors.push(`no delivery for ${STALL_MS / 1000} s`);
        break;
      }
      await new Promise<void>((resolve) => {
        this.#onProgress = resolve;
        setTimeout(resolve, PROGRESS_INTERVAL_MS / 4);
      });
      this.#onProgress = null;
    }
    this.running = false;
    for (const c of this.clients) c.stopSending();
    let react: GroupReactions | undefined;
    if (this.cfg.react > 0) {
      react = {
        target: this.clients[0]?.target ?? 0,
        outOfStep: this.outOfStep,
        wrongClients: 0,
        echoMismatches: this.echoMismatches,
      };
      const want = this.expectedCounts.join(",");
      for (const c of this.clients) {
        const got = c.counts.join(",");
        if (got === want) continue;
        react.wrongClients++;
        react.wrongExample ??= `client ${c.idx}: ${got}, expected ${want}`;
      }
    }
    return {
      connected: this.connected,
      delivered: this.delivered,
      expected: this.expected,
      dups: this.dups,
      frames: this.frames,
      hist: this.hist,
      maxLatencyMs: this.maxLatencyMs,
      startAt,
      lastDeliveryAt: this.lastDeliveryAt,
      cpuS: procCpuS("self") - cpu0,
      errors: this.errors,
      ...(react ? { react } : {}),
    };
  }

  /** Called after each read: wakes `run` once the last message arrived. */
  checkDone(): void {
    if (this.delivered >= this.expected && this.#onProgress) {
      this.#onProgress();
    }
  }

  close(): void {
    for (const c of this.clients) c.destroy();
  }
}

/** One WebSocket client over a raw `node:net` socket. */
class Client {
  readonly room: number;
  readonly senderId: number;
  readonly json: boolean;
  expected = 0;
  #sock: net.Socket | null = null;
  #rest: Uint8Array | null = null;
  #fragments: Uint8Array[] | null = null;
  #outbox: Uint8Array[] = [];
  #lastSeq: Int32Array;
  #sent = 0;
  #inflight = 0;
  #timer: ReturnType<typeof setInterval> | undefined;
  #closed = false;
  /** Settled by the first data frame: the welcome (or the text greeting). */
  readonly welcomed: Promise<void>;
  #welcome!: { resolve: () => void; reject: (error: Error) => void };
  #gotWelcome = false;
  #onClosed: (() => void) | null = null;
  /** Scenario (r): the id of the message reacted to, once it came. */
  target = 0;
  /** Scenario (r): this client's count of each key, from the notices. */
  readonly counts: Int32Array;
  /** Scenario (r): the nick the welcome gave (`from` of its own notices). */
  #you = "";
  /** Scenario (r): whether this client's reaction with each key is on. */
  #mine: Uint8Array;
  /** Scenario (r): its toggles not yet echoed, oldest first. */
  #toggles: { key: number; on: boolean; at: number }[] = [];
  /**
   * Scenario (r): the last notice of each reactor and key (index
   * reactor × keys + key): 0 none, 1 on, 2 taken back. A toggle always
   * flips, so the same twice in a row is a duplicate.
   */
  #lastOn: Uint8Array;

  /**
   * `churn` (scenario (f)): after the welcome, frames are only counted as
   * traffic, not decoded, so that the load process stays cheap while every
   * client receives every join and leave of a room of thousands.
   */
  constructor(
    readonly group: Group,
    readonly idx: number,
    readonly url: URL,
    readonly churn = false,
  ) {
    this.welcomed = new Promise((resolve, reject) => {
      this.#welcome = { resolve, reject };
    });
    this.welcomed.catch(() => {}); // only scenario (f) awaits it
    const cfg = group.cfg;
    this.room = group.roomOf(idx);
    this.senderId = idx < cfg.senders ? idx : -1;
    this.json = cfg.protocol === "json";
    this.#lastSeq = new Int32Array(Math.max(1, cfg.senders)).fill(-1);
    const keys = group.keyIndex.size;
    this.counts = new Int32Array(keys);
    this.#mine = new Uint8Array(keys);
    this.#lastOn = new Uint8Array(keys > 0 ? cfg.senders * keys : 0);
  }

  /** TCP connect from this client's source address, then the handshake. */
  open(): Promise<void> {
    const cfg = this.group.cfg;
    const path = cfg.roomSize > 0
      ? `${this.url.pathname}-${this.room}`
      : this.url.pathname;
    const key = btoa(
      String.fromCharCode(...crypto.getRandomValues(new Uint8Array(16))),
    );
    const accept = createHash("sha1").update(key + WS_GUID).digest("base64");
    const localAddress = `127.0.0.${1 + (this.idx % cfg.sourceIps)}`;
    return new Promise((resolve, reject) => {
      const sock = net.connect({
        host: this.url.hostname,
        port: Number(this.url.port),
        localAddress,
      });
      this.#sock = sock;
      sock.setNoDelay(true);
      const timer = setTimeout(() => {
        sock.destroy();
        reject(new Error(`client ${this.idx}: connect timed out`));
      }, CONNECT_TIMEOUT_MS);
      let head: Uint8Array = new Uint8Array(0);
      const onHandshake = (chunk: Uint8Array) => {
        head = concat([head, chunk]);
        const end = indexOfCrlfCrlf(head);
        if (end < 0) return;
        clearTimeout(timer);
        sock.off("data", onHandshake);
        const lines = decoder.decode(head.subarray(0, end)).split("\r\n");
        const headers = new Map(
          lines.slice(1).map((l) => {
            const i = l.indexOf(":");
            return [l.slice(0, i).trim().toLowerCase(), l.slice(i + 1).trim()];
          }),
        );
        const problem = !/^HTTP\/1\.1 101/.test(lines[0])
          ? `status "${lines[0]}"`
          : headers.get("sec-websocket-accept") !== accept
          ? "bad Sec-WebSocket-Accept"
          : this.json &&
              headers.get("sec-websocket-protocol") !== JSON_PROTOCOL
          ? `subprotocol ${JSON_PROTOCOL} not accepted`
          : "";
        if (problem) {
          sock.destroy();
          reject(new Error(`client ${this.idx}: handshake failed: ${problem}`));
          return;
        }
        sock.on("data", (c: Uint8Array) => this.#onData(c));
        // Bytes after the header block already belong to the first frames.
        if (head.length > end + 4) this.#onData(head.subarray(end + 4));
        resolve();
      };
      sock.on("data", onHandshake);
      sock.on("error", (e: Error) => {
        clearTimeout(timer);
        if (!this.#closed) {
          this.group.errors.push(`client ${this.idx}: ${e.message}`);
        }
        reject(e);
      });
      sock.on("close", () => {
        if (!this.#closed && this.group.running) {
          this.group.errors.push(`client ${this.idx}: closed by server`);
        }
        this.#closed = true;
        this.#welcome.reject(new Error(`client ${this.idx}: closed`));
        this.#onClosed?.();
      });
      sock.write(
        upgradeRequest(
          path,
          this.json ? { "Sec-WebSocket-Protocol": JSON_PROTOCOL } : {},
          { host: this.url.host, key },
        ),
      );
    });
  }

  /** Starts this client's sends: the window now, or paced by `--rate`. */
  startSending(startAt: number): void {
    if (this.senderId < 0) return;
    const cfg = this.group.cfg;
    if (cfg.rate <= 0) {
      this.#fill();
      this.#flush();
      return;
    }
    const late = cfg.stagger
      ? this.senderId * 1000 / cfg.rate / cfg.senders
      : 0;
    const tick = () => {
      const due = Math.min(
        this.#total,
        Math.floor((wallMs() - startAt - late) * cfg.rate / 1000) + 1,
      );
      while (this.#sent < due && this.#inflight < cfg.window) this.#queue();
      this.#flush();
      if (this.#sent >= this.#total) clearInterval(this.#timer);
    };
    this.#timer = setInterval(tick, Math.min(10, 1000 / cfg.rate));
    tick();
  }

  stopSending(): void {
    clearInterval(this.#timer);
  }

  /** Sends a close frame and resolves when the server has closed. */
  leave(): Promise<void> {
    if (this.#closed) return Promise.resolve();
    return new Promise((resolve, reject) => {
      const timer = setTimeout(() => {
        this.destroy();
        reject(new Error(`client ${this.idx}: close timed out`));
      }, CLOSE_TIMEOUT_MS);
      this.#onClosed = () => {
        clearTimeout(timer);
        resolve();
      };
      const code = new Uint8Array(2);
      new DataView(code.buffer).setUint16(0, CLOSE_NORMAL);
      this.#sock!.write(encodeFrame(Opcode.Close, code));
    });
  }

  destroy(): void {
    this.#closed = true;
    clearInterval(this.#timer);
    this.#sock?.destroy();
  }

  /** What this client sends in all: messages, or toggles in scenario (r). */
  get #total(): number {
    const cfg = this.group.cfg;
    return cfg.react > 0 ? cfg.react : cfg.messages;
  }

  #fill(): void {
    const cfg = this.group.cfg;
    while (this.#sent < this.#total && this.#inflight < cfg.window) {
      this.#queue();
    }
  }

  /** Scenario (r): client 0 posts the message everyone will react to. */
  postTarget(): void {
    const text = `~${this.group.cfg.tag}~${REACT_TARGET}~`;
    this.#outbox.push(
      encodeFrame(
        Opcode.Text,
        encoder.encode(JSON.stringify({ type: "message", text })),
      ),
    );
    this.#flush();
  }

  /**
   * Queues the next message, whose text carries its send time; in scenario
   * (r) the next toggle (its send time kept until its echo).
   */
  #queue(): void {
    const cfg = this.group.cfg;
    if (cfg.react > 0) {
      const key = reactionKeyOf(this.senderId, this.#sent, cfg.reactKeys);
      const on = this.#mine[key] === 0;
      this.#mine[key] = on ? 1 : 0;
      this.#toggles.push({ key, on, at: wallMs() });
      const body = JSON.stringify({
        type: "react",
        id: this.target,
        key: REACTION_KEYS[key],
      });
      this.#outbox.push(encodeFrame(Opcode.Text, encoder.encode(body)));
      this.#sent++;
      this.#inflight++;
      return;
    }
    let text = `~${cfg.tag}~${this.senderId}~${this.#sent}~${
      wallMs().toFixed(3)
    }~`;
    if (text.length < cfg.size) text += "x".repeat(cfg.size - text.length);
    const body = this.json ? JSON.stringify({ type: "message", text }) : text;
    this.#outbox.push(encodeFrame(Opcode.Text, encoder.encode(body)));
    this.#sent++;
    this.#inflight++;
  }

  /** Writes all queued frames with one write. */
  #flush(): void {
    if (this.#outbox.length === 0 || this.#closed) return;
    const out = this.#outbox.length === 1
      ? this.#outbox[0]
      : concat(this.#outbox);
    this.#outbox = [];
    this.#sock!.write(out);
  }

  /** Parses every complete frame in the bytes read so far. */
  #onData(chunk: Uint8Array): void {
    const group = this.group;
    const now = wallMs();
    group.lastFrameAt = Date.now();
    let data = chunk;
    if (this.#rest) {
      data = concat([this.#rest, chunk]);
      this.#rest = null;
    }
    let off = 0;
    for (;;) {
      const head = decodeHeader(data, off);
      if (!head) break;
      if (head.length > MAX_FRAME_BYTES || head.masked) {
        group.errors.push(`client ${this.idx}: invalid frame from server`);
        this.destroy();
        return;
      }
      const end = off + head.headerLength + head.length;
      if (data.length < end) break;
      this.#onFrame(
        head.fin,
        head.opcode,
        data.subarray(off + head.headerLength, end),
        now,
      );
      off = end;
    }
    if (off < data.length) this.#rest = data.slice(off);
    this.#flush();
    group.checkDone();
  }

  #onFrame(
    fin: boolean,
    opcode: number,
    payload: Uint8Array,
    now: number,
  ): void {
    if (opcode === Opcode.Ping) { // answer so idle timeouts do not close us
      this.#outbox.push(encodeFrame(Opcode.Pong, payload));
      return;
    }
    if (opcode === Opcode.Close) {
      if (!this.#closed && this.group.running) {
        this.group.errors.push(`client ${this.idx}: close frame from server`);
      }
      this.destroy();
      return;
    }
    if (opcode === Opcode.Pong) return;
    if (this.churn && this.#gotWelcome) return; // traffic only, see constructor
    // A new data frame (not a continuation) starts a new message.
    if (opcode !== Opcode.Continuation) this.#fragments = null;
    if (!fin) {
      (this.#fragments ??= []).push(payload.slice());
      return;
    }
    if (this.#fragments) {
      this.#fragments.push(payload);
      payload = concat(this.#fragments);
      this.#fragments = null;
    }
    if (this.group.running) this.group.frames++;
    const text = decoder.decode(payload);
    if (!this.#gotWelcome) {
      this.#gotWelcome = true;
      if (!this.json || text.includes('"type":"welcome"')) {
        this.#welcome.resolve();
      } else {
        this.#welcome.reject(
          new Error(`client ${this.idx}: no welcome: ${text.slice(0, 80)}`),
        );
      }
    }
    if (this.json) this.#onJson(text, now);
    else {
      // `NICK: TEXT`; join/leave lines carry no tag.
      const i = text.indexOf("~");
      if (i >= 0) this.#onChat(text.slice(i), now);
    }
  }

  #onJson(frame: string, now: number): void {
    let v: unknown;
    try {
      v = JSON.parse(frame);
    } catch {
      this.group.errors.push(`client ${this.idx}: frame is not JSON`);
      return;
    }
    // One object, or an array of the events of one server event-loop turn.
    // The welcome's history is not counted: it is not a delivery.
    const react = this.group.cfg.react > 0;
    for (const ev of Array.isArray(v) ? v : [v]) {
      if (!ev) continue;
      if (react) this.#onReactFrame(ev, now);
      else if (ev.type === "message" && typeof ev.text === "string") {
        this.#onChat(ev.text, now);
      }
    }
  }

  /** Scenario (r): the welcome, the target message, notices, refusals. */
  #onReactFrame(ev: Json, now: number): void {
    const group = this.group;
    if (ev.type === "react") this.#onReact(ev, now);
    else if (ev.type === "welcome") this.#you = ev.you;
    else if (
      ev.type === "message" && this.target === 0 &&
      ev.text === `~${group.cfg.tag}~${REACT_TARGET}~`
    ) {
      this.target = ev.id;
    } else if (ev.type === "error") {
      group.errors.push(`client ${this.idx}: ${ev.code}: ${ev.message}`);
    }
  }

  /**
   * Scenario (r): one `react` notice. The count is the server's: it must
   * be this client's count for the key ± 1 (the notices come in the order
   * the store counted them), and it becomes this client's count.
   */
  #onReact(ev: Json, now: number): void {
    const group = this.group;
    const key = group.keyIndex.get(ev.key);
    if (ev.target !== this.target || key === undefined) {
      group.errors.push(
        `client ${this.idx}: stray notice ${ev.key} #${ev.target}`,
      );
      return;
    }
    let reactor = group.nickIndex.get(ev.from);
    if (reactor === undefined) {
      reactor = group.nickIndex.size;
      if (reactor * group.keyIndex.size >= this.#lastOn.length) {
        group.errors.push(`client ${this.idx}: more reactors than senders`);
        return;
      }
      group.nickIndex.set(ev.from, reactor);
    }
    const slot = reactor * group.keyIndex.size + key;
    const state = ev.on ? 1 : 2;
    if (this.#lastOn[slot] === state) {
      group.dups++;
      return;
    }
    this.#lastOn[slot] = state;
    if (ev.count !== this.counts[key] + (ev.on ? 1 : -1)) group.outOfStep++;
    this.counts[key] = ev.count;
    group.delivered++;
    group.lastDeliveryAt = now;
    if (ev.from !== this.#you) return;
    const toggle = this.#toggles.shift();
    if (!toggle || toggle.key !== key || toggle.on !== ev.on) {
      group.echoMismatches++;
    }
    if (toggle) {
      const latency = Math.max(0, now - toggle.at);
      group.hist[histIndex(latency)]++;
      if (latency > group.maxLatencyMs) group.maxLatencyMs = latency;
    }
    this.#inflight--;
    if (group.cfg.rate <= 0) this.#fill();
  }

  /** Counts one chat message `~TAG~SENDER~SEQ~SENTAT~…`. */
  #onChat(text: string, now: number): void {
    const parts = text.split("~", 5);
    const group = this.group;
    if (parts[1] !== group.cfg.tag) return;
    const sender = Number(parts[2]);
    const seq = Number(parts[3]);
    if (!(sender >= 0 && sender < this.#lastSeq.length)) return;
    if (seq <= this.#lastSeq[sender]) {
      group.dups++;
      return;
    }
    this.#lastSeq[sender] = seq;
    group.delivered++;
    group.lastDeliveryAt = now;
    const latency = Math.max(0, now - Number(parts[4]));
    group.hist[histIndex(latency)]++;
    if (latency > group.maxLatencyMs) group.maxLatencyMs = latency;
    if (sender === this.senderId) {
      this.#inflight--;
      if (group.cfg.rate <= 0) this.#fill();
    }
  }
}

/** Index of the first CR LF CR LF (end of HTTP headers), or -1. */
function indexOfCrlfCrlf(b: Uint8Array): number {
  for (let i = 0; i + 3 < b.length; i++) {
    if (b[i] === 13 && b[i + 1] === 10 && b[i + 2] === 13 && b[i + 3] === 10) {
      return i;
    }
  }
  return -1;
}

function concat(parts: Uint8Array[]): Uint8Array {
  let n = 0;
  for (const p of parts) n += p.length;
  const out = new Uint8Array(n);
  n = 0;
  for (const p of parts) {
    out.set(p, n);
    n += p.length;
  }
  return out;
}

function sleep(ms: number): Promise<void> {
  return new Promise((r) => setTimeout(r, ms));
}

// -------------------------------------------------------------- workers ---

/** The coordinator's view of one group: in this process or a subprocess. */
interface GroupHandle {
  connect(): Promise<void>;
  settle(): Promise<void>;
  /** Scenario (r): the message to react to (see `Group.postTarget`). */
  postTarget(): Promise<number>;
  run(startAt: number): Promise<GroupReport>;
  close(): Promise<void>;
  progress(): { connected: number; delivered: number; expected: number };
}

function localHandle(group: Group): GroupHandle {
  return {
    connect: () => group.connect(),
    settle: () => group.settle(),
    postTarget: () => group.postTarget(),
    run: (startAt) => group.run(startAt),
    close: () => Promise.resolve(group.close()),
    progress: () => ({
      connected: group.clients.length,
      delivered: group.delivered,
      expected: group.expected,
    }),
  };
}

/** Starts a worker subprocess for `indices` and talks JSON lines to it. */
function workerHandle(cfg: LoadConfig, indices: number[]): GroupHandle {
  const child = new Deno.Command(Deno.execPath(), {
    args: [
      "run",
      "-A",
      new URL(import.meta.url).pathname,
      "--worker",
      JSON.stringify({ cfg, indices }),
    ],
    stdin: "piped",
    stdout: "piped",
    stderr: "inherit",
  }).spawn();
  const writer = child.stdin.getWriter();
  const state = { connected: 0, delivered: 0, expected: 0 };
  // One command is outstanding at a time; its reply settles `waiter.next`.
  const waiter: {
    next: { resolve: (v: unknown) => void; reject: (e: Error) => void } | null;
  } = { next: null };
  (async () => {
    for await (const line of lines(child.stdout)) {
      const msg = JSON.parse(line);
      if (msg.ev === "progress") Object.assign(state, msg.state);
      else if (msg.ev === "error") waiter.next?.reject(new Error(msg.message));
      else waiter.next?.resolve(msg.result);
    }
    waiter.next?.reject(new Error("load worker exited"));
  })();
  const call = (cmd: string, arg?: unknown) =>
    new Promise<unknown>((resolve, reject) => {
      waiter.next = { resolve, reject };
      writer.write(encoder.encode(JSON.stringify({ cmd, arg }) + "\n"));
    });
  return {
    connect: () => call("connect") as Promise<void>,
    settle: () => call("settle") as Promise<void>,
    postTarget: () => call("postTarget") as Promise<number>,
    run: (startAt) => call("run", startAt) as Promise<GroupReport>,
    close: async () => {
      await call("close");
      await writer.close();
      await child.status;
    },
    progress: () => state,
  };
}

/** Splits a byte stream into lines. */
async function* lines(stream: ReadableStream<Uint8Array>) {
  const textDecoder = new TextDecoder();
  let buf = "";
  for await (const chunk of stream) {
    buf += textDecoder.decode(chunk, { stream: true });
    let i;
    while ((i = buf.indexOf("\n")) >= 0) {
      yield buf.slice(0, i);
      buf = buf.slice(i + 1);
    }
  }
}

/** Worker side: runs one group, driven by commands on stdin. */
async function workerMain(spec: string): Promise<void> {
  await clkTck();
  const { cfg, indices } = JSON.parse(spec) as {
    cfg: LoadConfig;
    indices: number[];
  };
  const group = new Group(cfg, indices);
  const send = (msg: unknown) =>
    Deno.stdout.writeSync(encoder.encode(JSON.stringify(msg) + "\n"));
  const timer = setInterval(() =>
    send({
      ev: "progress",
      state: {
        connected: group.clients.length,
        delivered: group.delivered,
        expected: group.expected,
      },
    }), PROGRESS_INTERVAL_MS);
  for await (const line of lines(Deno.stdin.readable)) {
    const { cmd, arg } = JSON.parse(line);
    try {
      let result: unknown = null;
      if (cmd === "connect") await group.connect();
      else if (cmd === "settle") await group.settle();
      else if (cmd === "postTarget") result = await group.postTarget();
      else if (cmd === "run") result = await group.run(arg);
      else if (cmd === "close") group.close();
      send({ ev: "result", result });
      if (cmd === "close") break;
    } catch (e) {
      send({ ev: "error", message: (e as Error).message });
    }
  }
  clearInterval(timer);
  Deno.exit(0);
}

// ---------------------------------------------------------- coordinator ---

/**
 * Runs one load test as configured and returns its report. Progress goes to
 * stderr unless `cfg.quiet`.
 */
export async function runLoad(cfg: LoadConfig): Promise<LoadReport> {
  await clkTck();
  const log = (s: string) => {
    if (!cfg.quiet) console.error(`[load] ${s}`);
  };
  const pid = cfg.pid;
  const pids = cfg.pids ?? (pid ? [pid] : []);
  // Several server processes (a chat over Redis, Redis included): summed.
  const total = (of: (pid: number) => number) =>
    pids.reduce((sum, p) => sum + of(p), 0);
  const rssBefore = pid ? total(procRssKiB) : NaN;
  const buckets: number[][] = Array.from({ length: cfg.workers }, () => []);
  for (let i = 0; i < cfg.clients; i++) buckets[i % cfg.workers].push(i);
  const handles = cfg.workers === 1
    ? [localHandle(new Group(cfg, buckets[0]))]
    : buckets.map((b) => workerHandle(cfg, b));
  const sum = (k: "connected" | "delivered" | "expected") =>
    handles.reduce((a, h) => a + h.progress()[k], 0);
  const errors: string[] = [];
  let phase = "connecting";
  const t0 = performance.now();
  const ticker = setInterval(() => {
    const s = ((performance.now() - t0) / 1000).toFixed(0);
    if (phase === "connecting") {
      log(`${s}s connected ${sum("connected")}/${cfg.clients}`);
    } else if (phase === "sending") {
      const exp = sum("expected");
      log(
        `${s}s delivered ${sum("delivered")}/${exp} ` +
          `(${(100 * sum("delivered") / Math.max(1, exp)).toFixed(0)}%)`,
      );
    }
  }, PROGRESS_INTERVAL_MS);

  if (cfg.joinWave > 0) return await runChurn(cfg, log);

  const reports: GroupReport[] = [];
  let connectS = NaN;
  let serverCpu0 = NaN;
  let serverCpu1 = NaN;
  let byPid0: number[] = [];
  let byPid1: number[] = [];
  let byThread0: ThreadCpu[] = [];
  let byThread1: ThreadCpu[] = [];
  let rssConnected = NaN;
  let coordinatorRunCpu = 0;
  /** Scenario (r): the message reacted to, and what fresh clients found. */
  let target = 0;
  let probes = 0;
  const storedProblems: string[] = [];
  const meProblems: string[] = [];
  try {
    await Promise.all(handles.map((h) => h.connect()));
    connectS = (performance.now() - t0) / 1000;
    log(`connected ${cfg.clients} clients in ${connectS.toFixed(1)} s`);
    phase = "settling";
    await Promise.all(handles.map((h) => h.settle()));
    if (cfg.react > 0) {
      const targets = await Promise.all(handles.map((h) => h.postTarget()));
      target = targets[0];
      if (targets.some((t) => t !== target)) {
        throw new Error("load processes disagree on the message to react to");
      }
    }
    rssConnected = pid ? total(procRssKiB) : NaN;
    serverCpu0 = pid ? total(procCpuS) : NaN;
    byPid0 = pids.map(procCpuS);
    byThread0 = pids.map(procThreadCpuS);
    phase = "sending";
    const startAt = wallMs();
    const ownCpu0 = procCpuS("self");
    reports.push(...await Promise.all(handles.map((h) => h.run(startAt))));
    serverCpu1 = pid ? total(procCpuS) : NaN;
    byPid1 = pids.map(procCpuS);
    byThread1 = pids.map(procThreadCpuS);
    coordinatorRunCpu = procCpuS("self") - ownCpu0;
    if (target > 0) {
      const expected = expectedReactionCounts(
        cfg.senders,
        cfg.react,
        cfg.reactKeys,
      );
      for (const url of cfg.urls ?? [cfg.url]) {
        const found = await probeStoredReactions(url, target, expected);
        storedProblems.push(...found.counts);
        meProblems.push(...found.me);
        probes++;
      }
    }
  } catch (e) {
    errors.push((e as Error).message);
  } finally {
    clearInterval(ticker);
  }
  const rssAfter = pid ? total(procRssKiB) : NaN;
  await Promise.all(handles.map((h) => h.close().catch(() => {})));

  const hist = new Array(HIST_BUCKETS).fill(0);
  let delivered = 0, expected = 0, dups = 0, maxLat = 0, clientCpu = 0;
  let frames = 0;
  let startAt = Infinity, lastAt = 0, connected = 0;
  for (const r of reports) {
    r.hist.forEach((n, i) => hist[i] += n);
    delivered += r.delivered;
    expected += r.expected;
    dups += r.dups;
    frames += r.frames;
    maxLat = Math.max(maxLat, r.maxLatencyMs);
    clientCpu += r.cpuS;
    startAt = Math.min(startAt, r.startAt);
    lastAt = Math.max(lastAt, r.lastDeliveryAt);
    connected += r.connected;
    errors.push(...new Set(r.errors.slice(0, 5)));
  }
  let react: LoadReport["react"];
  if (cfg.react > 0) {
    react = {
      reactors: cfg.senders,
      togglesPerClient: cfg.react,
      target,
      expected: countsByKey(
        expectedReactionCounts(cfg.senders, cfg.react, cfg.reactKeys),
      ),
      outOfStep: 0,
      wrongClients: 0,
      echoMismatches: 0,
      probes,
      storedProblems: storedProblems.slice(0, 10),
      meProblems: meProblems.slice(0, 10),
    };
    for (const r of reports) {
      if (!r.react) continue;
      react.outOfStep += r.react.outOfStep;
      react.wrongClients += r.react.wrongClients;
      react.echoMismatches += r.react.echoMismatches;
      react.wrongExample ??= r.react.wrongExample;
    }
    // Clients that never got as far as reporting count as wrong, too.
    react.wrongClients += cfg.clients - connected;
  }
  // With workers, the coordinator's own (small) share counts too.
  if (cfg.workers > 1) clientCpu += coordinatorRunCpu;
  const sendPhaseS = reports.length ? (lastAt - startAt) / 1000 : NaN;
  const serverCpu = serverCpu1 - serverCpu0;
  const expectedTotal = reports.length ? expected : NaN;
  const lost = expectedTotal - delivered;
  const { tag: _tag, quiet: _quiet, ...config } = cfg;
  return {
    config,
    status: errors.length && !reports.length
      ? "error"
      : lost !== 0
      ? "lost"
      : react && (react.wrongClients > 0 || react.echoMismatches > 0 ||
          react.outOfStep > 0 || react.storedProblems.length > 0 ||
          react.probes === 0)
      ? "wrong"
      : "ok",
    errors,
    connected,
    connectS,
    expected: expectedTotal,
    delivered,
    lost,
    dups,
    deliveredPerFrame: frames > 0 ? delivered / frames : NaN,
    sendPhaseS,
    deliveredPerS: sendPhaseS > 0 ? delivered / sendPhaseS : NaN,
    latencyMs: {
      p50: histQuantile(hist, 0.5),
      p99: histQuantile(hist, 0.99),
      max: delivered ? maxLat : NaN,
    },
    server: {
      pid,
      cpuS: serverCpu,
      cpuUsPerDelivery: delivered ? serverCpu / delivered * 1e6 : NaN,
      cpuShare: sendPhaseS > 0 ? serverCpu / sendPhaseS : NaN,
      cpuSByPid: byPid1.map((cpu, i) => cpu - byPid0[i]),
      cpuSByThread: threadDeltas(byThread0, byThread1),
      rssBeforeKiB: rssBefore,
      rssConnectedKiB: rssConnected,
      rssAfterKiB: rssAfter,
      rssPerConnBytes: (rssConnected - rssBefore) * 1024 / cfg.clients,
    },
    client: {
      workers: cfg.workers,
      cpuS: clientCpu,
      cpuShare: sendPhaseS > 0 ? clientCpu / sendPhaseS : NaN,
      saturated: sendPhaseS > 0 &&
        clientCpu / sendPhaseS > CLIENT_SATURATED_SHARE * cfg.workers,
    },
    ...(react ? { react } : {}),
  };
}

/**
 * Scenario (f): every client joins the one room, in waves, then leaves, in
 * waves; what the server processes used in all, per join. One load process
 * (so that the waves are in order).
 */
async function runChurn(
  cfg: LoadConfig,
  log: (s: string) => void,
): Promise<LoadReport> {
  const pids = cfg.pids ?? (cfg.pid ? [cfg.pid] : []);
  const total = (of: (pid: number) => number) =>
    pids.reduce((sum, p) => sum + of(p), 0);
  const group = new Group(
    cfg,
    Array.from({ length: cfg.clients }, (_, i) => i),
  );
  const errors: string[] = [];
  const rssBefore = total(procRssKiB);
  const cpu0 = total(procCpuS);
  const ownCpu0 = procCpuS("self");
  const t0 = performance.now();
  let joinS = NaN, leaveS = NaN, rssJoined = NaN;
  try {
    await group.joinInWaves(cfg.joinWave);
    joinS = (performance.now() - t0) / 1000;
    log(`${cfg.clients} joined in ${joinS.toFixed(1)} s`);
    await group.settle();
    rssJoined = total(procRssKiB);
    const t1 = performance.now();
    await group.leaveInWaves(cfg.joinWave);
    leaveS = (performance.now() - t1) / 1000;
    log(`${cfg.clients} left in ${leaveS.toFixed(1)} s`);
  } catch (e) {
    errors.push((e as Error).message);
  }
  const cpuS = total(procCpuS) - cpu0;
  const clientCpu = procCpuS("self") - ownCpu0;
  const wallS = (performance.now() - t0) / 1000;
  group.close();
  errors.push(...new Set(group.errors.slice(0, 5)));
  const { tag: _tag, quiet: _quiet, ...config } = cfg;
  return {
    config,
    status: errors.length ? "error" : "ok",
    errors,
    connected: group.connected,
    connectS: joinS,
    expected: 0,
    delivered: 0,
    lost: 0,
    dups: 0,
    deliveredPerFrame: NaN,
    sendPhaseS: NaN,
    deliveredPerS: NaN,
    latencyMs: { p50: NaN, p99: NaN, max: NaN },
    server: {
      pid: cfg.pid,
      cpuS,
      cpuUsPerDelivery: NaN,
      cpuShare: cpuS / wallS,
      rssBeforeKiB: rssBefore,
      rssConnectedKiB: rssJoined,
      rssAfterKiB: total(procRssKiB),
      rssPerConnBytes: (rssJoined - rssBefore) * 1024 / cfg.clients,
    },
    client: {
      workers: 1,
      cpuS: clientCpu,
      cpuShare: clientCpu / wallS,
      saturated: clientCpu / wallS > CLIENT_SATURATED_SHARE,
    },
    churn: {
      wave: cfg.joinWave,
      joinS,
      leaveS,
      cpuS,
      cpuUsPerJoin: cpuS / cfg.clients * 1e6,
      rssPerMemberBytes: (rssJoined - rssBefore) * 1024 / cfg.clients,
    },
  };
}

// ------------------------------------------------------------------ CLI ---

/** Formats a number for the table: NaN as "-", small values with decimals. */
export function fmt(n: number, digits = 1): string {
  if (!Number.isFinite(n)) return "-";
  return Math.abs(n) >= 1000
    ? Math.round(n).toLocaleString("en-US")
    : n.toFixed(digits);
}

/** Renders a report as a two-column table. */
export function reportTable(r: LoadReport): string {
  const c = r.config;
  const rows: [string, string][] = [
    ["status", r.status + (r.errors.length ? ` (${r.errors[0]})` : "")],
    [
      "scenario",
      `${c.clients} clients, ${c.senders} senders x ${
        c.react > 0 ? `${c.react} reactions` : c.messages
      }, ` +
      `window ${c.window}${c.rate ? `, ${c.rate} msg/s` : ""}, ` +
      `${c.size} B, ${c.protocol}, ${c.workers} worker(s)`,
    ],
    ["connected", `${r.connected} in ${fmt(r.connectS, 2)} s`],
    ...(r.churn
      ? [[
        "churn",
        `waves of ${r.churn.wave}: joined in ${fmt(r.churn.joinS, 1)} s, ` +
        `left in ${fmt(r.churn.leaveS, 1)} s, server CPU ` +
        `${fmt(r.churn.cpuS, 2)} s = ${fmt(r.churn.cpuUsPerJoin, 0)} µs/join`,
      ] as [string, string]]
      : []),
    ...(r.react
      ? [[
        "reactions",
        `${r.react.reactors} clients x ${r.react.togglesPerClient} toggles ` +
        `on #${r.react.target}; end counts ${
          JSON.stringify(r.react.expected)
        }; wrong on ${r.react.wrongClients} client(s)` +
        `${r.react.wrongExample ? ` (${r.react.wrongExample})` : ""}, ` +
        `${r.react.outOfStep} notice(s) out of step, ` +
        `${r.react.echoMismatches} echo mismatch(es); stored: ${
          r.react.storedProblems.length === 0
            ? `exact (${r.react.probes} fresh client(s))`
            : r.react.storedProblems.join("; ")
        }${
          r.react.meProblems.length
            ? `; shown as a fresh client's own: ${
              r.react.meProblems.join("; ")
            }`
            : ""
        }`,
      ] as [string, string]]
      : []),
    [
      "delivered",
      `${r.delivered} of ${r.expected} (lost ${r.lost}, dups ${r.dups})`,
    ],
    ["delivered/s", fmt(r.deliveredPerS, 0)],
    ["delivered per frame", fmt(r.deliveredPerFrame, 1)],
    [
      "latency ms",
      `p50 ${fmt(r.latencyMs.p50, 2)}  p99 ${fmt(r.latencyMs.p99, 2)}  ` +
      `max ${fmt(r.latencyMs.max, 2)}`,
    ],
    [
      "server CPU",
      `${fmt(r.server.cpuS, 2)} s = ${fmt(r.server.cpuUsPerDelivery, 3)} ` +
      `µs/delivery (${fmt(100 * r.server.cpuShare, 0)} % of a core)`,
    ],
    [
      "server RSS KiB",
      `before ${fmt(r.server.rssBeforeKiB, 0)}, connected ` +
      `${fmt(r.server.rssConnectedKiB, 0)}, after ` +
      `${fmt(r.server.rssAfterKiB, 0)} ` +
      `(${fmt(r.server.rssPerConnBytes, 0)} B/conn)`,
    ],
    [
      "client CPU",
      `${fmt(r.client.cpuS, 2)} s (${fmt(100 * r.client.cpuShare, 0)} % ` +
      `of a core${r.client.saturated ? ", SATURATED: client-bound" : ""})`,
    ],
  ];
  return rows.map(([k, v]) => `${k.padEnd(15)} ${v}`).join("\n");
}

/** Parses the command line into a config; throws on bad values. */
export function parseLoadArgs(args: string[]): LoadConfig & { json: boolean } {
  const { values } = parseArgs({
    args,
    options: {
      url: {
        type: "string",
        multiple: true,
        default: ["ws://127.0.0.1:8001/bench"],
      },
      clients: { type: "string", default: "100" },
      senders: { type: "string", default: "4" },
      messages: { type: "string", default: "2000" },
      window: { type: "string", default: "16" },
      size: { type: "string", default: "64" },
      protocol: { type: "string", default: "text" },
      rate: { type: "string", default: "0" },
      stagger: { type: "boolean", default: false },
      duration: { type: "string", default: "60" },
      pid: { type: "string", default: "0" },
      workers: { type: "string", default: "1" },
      "room-size": { type: "string", default: "0" },
      "rooms-striped": { type: "boolean", default: false },
      "source-ips": { type: "string", default: "0" },
      "join-wave": { type: "string", default: "0" },
      react: { type: "string", default: "0" },
      "react-keys": {
        type: "string",
        default: String(DEFAULT_REACTION_KEYS),
      },
      json: { type: "boolean", default: false },
      quiet: { type: "boolean", default: false },
    },
  });
  const int = (name: keyof typeof values, min: number, max: number) => {
    const n = Number(values[name]);
    if (!Number.isInteger(n) || n < min || n > max) {
      throw new Error(`--${name} must be an integer in [${min}, ${max}]`);
    }
    return n;
  };
  const urls = values.url.map((text) => new URL(text));
  for (const url of urls) {
    // Load goes to this machine only: 127.0.0.0/8 (or "localhost").
    if (
      url.protocol !== "ws:" ||
      !(/^127\.\d+\.\d+\.\d+$/.test(url.hostname) ||
        url.hostname === "localhost")
    ) {
      throw new Error("--url must be ws://127.x.x.x:PORT/ROOM (loopback only)");
    }
    if (!url.port) throw new Error("--url needs an explicit port");
  }
  const url = urls[0];
  const pids = values.pid.split(",").map((text) => {
    const n = Number(text);
    if (!Number.isInteger(n) || n < 0 || n > 2 ** 31) {
      throw new Error("--pid must be process ids separated by commas");
    }
    return n;
  });
  if (values.protocol !== "text" && values.protocol !== "json") {
    throw new Error("--protocol must be text or json");
  }
  const clients = int("clients", 1, MAX_CLIENTS);
  if (Number(values["join-wave"]) > 0 && Number(values.workers) > 1) {
    throw new Error("--join-wave runs in one load process (--workers 1)");
  }
  const react = int("react", 0, 1_000_000);
  if (react > 0) {
    if (values.protocol !== "json") {
      throw new Error("--react needs --protocol json");
    }
    if (Number(values["room-size"]) > 0 || Number(values["join-wave"]) > 0) {
      throw new Error("--react is one room: no --room-size, no --join-wave");
    }
    if (Number(values.senders) < 1) {
      throw new Error("--react needs --senders 1 or more (who react)");
    }
  }
  const sourceIps = int("source-ips", 0, MAX_SOURCE_IPS) ||
    Math.min(MAX_SOURCE_IPS, Math.ceil(clients / CLIENTS_PER_SOURCE_IP));
  return {
    url: url.href,
    urls: urls.map((u) => u.href),
    clients,
    senders: Math.min(int("senders", 0, MAX_CLIENTS), clients),
    messages: int("messages", 0, 10_000_000),
    window: int("window", 1, 1_000_000),
    size: int("size", 1, 1_000_000),
    protocol: values.protocol,
    rate: int("rate", 0, 1_000_000),
    stagger: values.stagger,
    durationS: int("duration", 1, MAX_DURATION_S),
    pid: pids[0],
    pids: pids.filter((n) => n > 0),
    workers: Math.min(int("workers", 1, MAX_WORKERS), clients),
    roomSize: int("room-size", 0, MAX_CLIENTS),
    roomsStriped: values["rooms-striped"],
    sourceIps,
    joinWave: int("join-wave", 0, MAX_CLIENTS),
    react,
    reactKeys: int("react-keys", 1, REACTION_KEYS.length),
    tag: crypto.randomUUID().slice(0, 8),
    quiet: values.quiet,
    json: values.json,
  };
}

if (import.meta.main) {
  if (Deno.args[0] === "--worker") {
    await workerMain(Deno.args[1]);
  } else {
    const { json, ...cfg } = parseLoadArgs(Deno.args);
    const report = await runLoad(cfg);
    console.log(json ? JSON.stringify(report) : reportTable(report));
    Deno.exit(report.status === "ok" ? 0 : 1);
  }
}
