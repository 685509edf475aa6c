/**
 * Measures what issue 9 says an attacker (or plain bad luck) can make the
 * chat server hold, against `main.ts` run as a subprocess on 127.0.0.1:
 *
 * - **slots**: clients that send a valid upgrade request and reset the TCP
 *   connection at once (and, as a control, ones that reset right after the
 *   `101`): `chat_sockets_open`, file descriptors, and whether the address
 *   can still connect.
 * - **stalled**: connections that send half an upgrade request and stall:
 *   file descriptors and RSS per connection, and whether the server ever
 *   closes them.
 * - **history**: rooms filled to a full history with maximum-length messages
 *   (ASCII, then 3-byte characters): RSS growth against the text's UTF-8 size.
 * - **frames**: connections that each send one huge text frame (far over
 *   `--max-frame-bytes`): RSS before, at the peak, after, and the close code.
 *
 * Every part starts a fresh server on fresh ports (as `bench/run.ts` does),
 * waits for `GET /healthz`, measures VmRSS/VmHWM from `/proc/PID/status` and
 * open descriptors from `/proc/PID/fd`, and stops the server. Every wait is
 * bounded; the whole run stops by itself in under 3 minutes.
 *
 * Usage: deno run -A bench/exposure.ts [--part slots,stalled,history,frames]
 *          [--server-arg ARG ...] [--slots N] [--stalled N]
 *          [--stalled-seconds S] [--rooms N] [--frames N] [--frame-mib M]
 *          [--main PATH] [--json] [--verbose]
 *
 * `--server-arg` adds one argument to every server started (repeat it:
 * `--server-arg --history-size --server-arg 50`). `--main` measures another
 * copy of the server (a patched one, say) instead of this repository's.
 *
 * @module
 */
import net from "node:net";
import { parseArgs } from "node:util";
import {
  encodeFrame,
  freePort,
  Opcode,
  upgradeRequest,
} from "../tests/ws_frames.ts";

const repoDir = new URL("..", import.meta.url).pathname;
/** A server must answer `GET /healthz` within this after being started. */
const READY_TIMEOUT_MS = 30_000;
const READY_POLL_MS = 50;
/** After SIGTERM a server gets this long before SIGKILL. */
const STOP_GRACE_MS = 3_000;
/** The whole run is abandoned (servers killed, exit 1) after this. */
const WATCHDOG_MS = 175_000;
/** A client's handshake must be answered within this. */
const HANDSHAKE_TIMEOUT_MS = 5_000;
/** New connections opened at once (the listen backlog is 511). */
const CONNECT_BATCH = 100;

const encoder = new TextEncoder();
const decoder = new TextDecoder();

function log(s: string): void {
  console.error(`[exposure] ${s}`);
}

const sleep = (ms: number) => new Promise((r) => setTimeout(r, ms));

// ---------------------------------------------------------------- /proc ---

/** A `/proc/PID/status` field in KiB (VmRSS, VmHWM); NaN if unreadable. */
function statusKiB(pid: number, field: "VmRSS" | "VmHWM"): number {
  try {
    const status = Deno.readTextFileSync(`/proc/${pid}/status`);
    const m = status.match(new RegExp(`^${field}:\\s+(\\d+)\\s+kB`, "m"));
    return m ? Number(m[1]) : NaN;
  } catch {
    return NaN;
  }
}

/** Open file descriptors of process `pid`; NaN if unreadable. */
function fdCount(pid: number): number {
  try {
    let n = 0;
    for (const _ of Deno.readDirSync(`/proc/${pid}/fd`)) n++;
    return n;
  } catch {
    return NaN;
  }
}

// --------------------------------------------------------------- server ---

/** A started `main.ts`. */
interface Server {
  pid: number;
  port: number;
  wsPort: number;
  /** One sample from `/metrics` (0 when absent, NaN when unreachable). */
  metric(sample: string): Promise<number>;
  /** SIGTERM (SIGKILL after a grace): how long it took, and if it was killed. */
  stop(): Promise<{ ms: number; killed: boolean }>;
}

const running = new Set<Deno.ChildProcess>();
/** The server under test (`--main`, for a patched copy); main.ts by default. */
let mainPath = `${repoDir}main.ts`;

/** Starts main.ts with the soft fd limit raised, waits for `/healthz`. */
async function startServer(args: string[], verbose: boolean): Promise<Server> {
  const port = freePort();
  const wsPort = freePort();
  const child = new Deno.Command("bash", {
    args: [
      "-c",
      'ulimit -n "$(ulimit -Hn)" 2>/dev/null; exec "$@"',
      "exposure",
      Deno.execPath(),
      "run",
      "-A",
      mainPath,
      "--port",
      String(port),
      "--ws-port",
      String(wsPort),
      "--hostname",
      "127.0.0.1",
      ...args,
    ],
    cwd: repoDir,
    stdin: "null",
    stdout: "null",
    stderr: verbose ? "inherit" : "null",
  }).spawn();
  running.add(child);
  const exited = child.status.then(() => true);
  let stopped: Promise<{ ms: number; killed: boolean }> | undefined;
  const stop = () =>
    stopped ??= (async () => {
      const t0 = performance.now();
      let killed = false;
      try {
        child.kill("SIGTERM");
      } catch { /* already gone */ }
      const timer = setTimeout(() => {
        killed = true;
        try {
          child.kill("SIGKILL");
        } catch { /* gone */ }
      }, STOP_GRACE_MS);
      await child.status;
      clearTimeout(timer);
      running.delete(child);
      return { ms: performance.now() - t0, killed };
    })();
  const metric = async (sample: string) => {
    try {
      // No keep-alive: an idle connection of ours would hold up shutdown.
      const res = await fetch(`http://127.0.0.1:${port}/metrics`, {
        headers: { connection: "close" },
        signal: AbortSignal.timeout(2_000),
      });
      const text = await res.text();
      const line = text.split("\n").find((l) => l.startsWith(sample + " "));
      return line ? Number(line.slice(sample.length + 1)) : 0;
    } catch {
      return NaN;
    }
  };
  const deadline = Date.now() + READY_TIMEOUT_MS;
  while (Date.now() < deadline) {
    const done = await Promise.race([exited, sleep(READY_POLL_MS)]);
    if (done) throw new Error("main.ts exited at start");
    try {
      const res = await fetch(`http://127.0.0.1:${port}/healthz`, {
        headers: { connection: "close" },
        signal: AbortSignal.timeout(1_000),
      });
      await res.body?.cancel();
      if (res.ok) return { pid: child.pid, port, wsPort, metric, stop };
    } catch { /* not up yet */ }
  }
  await stop();
  throw new Error(`main.ts not ready in ${READY_TIMEOUT_MS} ms`);
}

/** Resident memory and descriptors of the server right now. */
interface Sample {
  rssKiB: number;
  hwmKiB: number;
  fds: number;
}

function sample(pid: number): Sample {
  return {
    rssKiB: statusKiB(pid, "VmRSS"),
    hwmKiB: statusKiB(pid, "VmHWM"),
    fds: fdCount(pid),
  };
}

// --------------------------------------------------------------- client ---

/**
 * A minimal WebSocket client over `node:net` (which, unlike `Deno.connect`,
 * can choose its source address and reset a connection).
 */
class RawWs {
  status = 0;
  /** Text frames received. */
  texts = 0;
  /** The server's close code (0: none yet; -1: closed without a frame). */
  closeCode = 0;
  readonly closed: Promise<void>;
  #buf = new Uint8Array(0);
  #headDone = false;

  constructor(readonly socket: net.Socket) {
    this.closed = new Promise((resolve) => {
      socket.once("close", () => {
        if (this.closeCode === 0) this.closeCode = -1;
        resolve();
      });
    });
    socket.on("error", () => {});
  }

  /** Connects and completes the handshake; `status` is 0 on no answer. */
  static open(
    port: number,
    path = "/",
    localAddress?: string,
  ): Promise<RawWs> {
    const socket = net.connect({ host: "127.0.0.1", port, localAddress });
    const ws = new RawWs(socket);
    return new Promise((resolve) => {
      const timer = setTimeout(() => resolve(ws), HANDSHAKE_TIMEOUT_MS);
      socket.once("connect", () => socket.write(upgradeRequest(path)));
      socket.on("data", (chunk: Uint8Array) => {
        const head = !ws.#headDone;
        ws.#feed(chunk);
        if (head && ws.#headDone) {
          clearTimeout(timer);
          resolve(ws);
        }
      });
      ws.closed.then(() => {
        clearTimeout(timer);
        resolve(ws);
      });
    });
  }

  send(text: string): void {
    this.socket.write(encodeFrame(Opcode.Text, encoder.encode(text)));
  }

  /** Text frames received so far reach `n`, or `ms` pass. */
  async waitTexts(n: number, ms: number): Promise<boolean> {
    const deadline = Date.now() + ms;
    while (this.texts < n && this.closeCode === 0 && Date.now() < deadline) {
      await sleep(20);
    }
    return this.texts >= n;
  }

  destroy(): void {
    this.socket.destroy();
  }

  #feed(chunk: Uint8Array): void {
    const joined = new Uint8Array(this.#buf.length + chunk.length);
    joined.set(this.#buf);
    joined.set(chunk, this.#buf.length);
    this.#buf = joined;
    if (!this.#headDone) {
      const text = decoder.decode(this.#buf.subarray(0, 4096));
      const end = text.indexOf("\r\n\r\n");
      if (end === -1) return;
      this.status = Number(text.split(" ")[1]);
      this.#headDone = true;
      this.#buf = this.#buf.slice(
        encoder.encode(text.slice(0, end + 4)).length,
      );
    }
    for (;;) {
      const b = this.#buf;
      if (b.length < 2) return;
      let len = b[1] & 0x7f;
      let at = 2;
      if (len === 126) {
        if (b.length < 4) return;
        len = (b[2] << 8) | b[3];
        at = 4;
      } else if (len === 127) {
        if (b.length < 10) return;
        len = Number(new DataView(b.buffer, b.byteOffset).getBigUint64(2));
        at = 10;
      }
      if (b.length < at + len) return;
      const opcode = b[0] & 0x0f;
      if (opcode === 0x1) this.texts++;
      if (opcode === 0x8) {
        this.closeCode = len >= 2 ? (b[at] << 8) | b[at + 1] : 1005;
        // Answer as a well-behaved peer would: echo the code, then leave.
        const reply = len >= 2 ? b.slice(at, at + 2) : new Uint8Array(0);
        this.socket.end(encodeFrame(Opcode.Close, reply));
      }
      this.#buf = b.slice(at + len);
    }
  }
}

/**
 * Opens `count` TCP connections from `localAddress`, `CONNECT_BATCH` at a
 * time, and hands each to `onConnect` once connected.
 */
async function connectMany(
  port: number,
  count: number,
  localAddress: string,
  onConnect: (socket: net.Socket) => void,
): Promise<net.Socket[]> {
  const sockets: net.Socket[] = [];
  for (let done = 0; done < count; done += CONNECT_BATCH) {
    const batch = Math.min(CONNECT_BATCH, count - done);
    await Promise.all(
      Array.from({ length: batch }, () =>
        new Promise<void>((resolve) => {
          const socket = net.connect({ host: "127.0.0.1", port, localAddress });
          sockets.push(socket);
          socket.on("error", () => {});
          const timer = setTimeout(resolve, HANDSHAKE_TIMEOUT_MS);
          socket.once("connect", () => {
            clearTimeout(timer);
            onConnect(socket);
            resolve();
          });
        })),
    );
  }
  return sockets;
}

// --------------------------------------------------------------- output ---

type Row = [string, string, string];
const results: { part: string; rows: Row[] }[] = [];

function kib(n: number): string {
  return Number.isFinite(n) ? `${n.toLocaleString("en-US")} KiB` : "n/a";
}

function num(n: number, digits = 0): string {
  return Number.isFinite(n)
    ? n.toLocaleString("en-US", {
      minimumFractionDigits: digits,
      maximumFractionDigits: digits,
    })
    : "n/a";
}

function table(rows: Row[]): string {
  const all: Row[] = [["measurement", "value", "note"], ...rows];
  const w = [0, 1, 2].map((i) => Math.max(...all.map((r) => r[i].length)));
  return all.map((r) =>
    `${r[0].padEnd(w[0])}  ${r[1].padStart(w[1])}  ${r[2]}`.trimEnd()
  ).join("\n");
}

// ---------------------------------------------------------------- parts ---

interface Config {
  serverArgs: string[];
  verbose: boolean;
  slots: number;
  stalled: number;
  stalledSeconds: number;
  rooms: number;
  frames: number;
  frameMiB: number;
}

/** Item 1: resets during the handshake, from 127.0.0.1; control from .2. */
async function partSlots(cfg: Config): Promise<Row[]> {
  const server = await startServer(cfg.serverArgs, cfg.verbose);
  try {
    const rows: Row[] = [];
    const before = sample(server.pid);
    const open0 = await server.metric("chat_sockets_open");
    // Reset right after writing the request: the server reads it, answers
    // 101 into a reset connection.
    const reset = await connectMany(
      server.wsPort,
      cfg.slots,
      "127.0.0.1",
      (socket) => {
        socket.write(upgradeRequest("/exposure"));
        socket.resetAndDestroy();
      },
    );
    await sleep(2_000);
    const afterReset = sample(server.pid);
    const openReset = await server.metric("chat_sockets_open");
    const probe1 = await RawWs.open(server.wsPort, "/exposure", "127.0.0.1");
    probe1.destroy();
    // Control: reset only after the 101 arrived.
    const after101: RawWs[] = [];
    for (let done = 0; done < cfg.slots; done += CONNECT_BATCH) {
      const batch = Math.min(CONNECT_BATCH, cfg.slots - done);
      after101.push(
        ...await Promise.all(
          Array.from(
            { length: batch },
            () => RawWs.open(server.wsPort, "/exposure", "127.0.0.2"),
          ),
        ),
      );
    }
    const got101 = after101.filter((ws) => ws.status === 101).length;
    for (const ws of after101) ws.socket.resetAndDestroy();
    await sleep(2_000);
    const afterControl = sample(server.pid);
    const openControl = await server.metric("chat_sockets_open");
    const probe2 = await RawWs.open(server.wsPort, "/exposure", "127.0.0.2");
    probe2.destroy();
    await sleep(3_000);
    const late = sample(server.pid);
    const openLate = await server.metric("chat_sockets_open");
    const probe3 = await RawWs.open(server.wsPort, "/exposure", "127.0.0.1");
    probe3.destroy();
    await sleep(200);
    const exit = await server.stop();
    rows.push(
      ["server fds at start", num(before.fds), ""],
      ["chat_sockets_open at start", num(open0), ""],
      [
        `reset right after the request (${reset.length} from 127.0.0.1):`,
        "",
        "",
      ],
      ["  chat_sockets_open after 2 s", num(openReset), ""],
      [
        "  server fds after 2 s",
        num(afterReset.fds),
        `+${num(afterReset.fds - before.fds)}`,
      ],
      [
        "  a new upgrade from 127.0.0.1",
        String(probe1.status || "no answer"),
        probe1.status === 503 ? "address locked out" : "",
      ],
      [`reset after the 101 (${cfg.slots} from 127.0.0.2, control):`, "", ""],
      ["  handshakes answered 101", num(got101), ""],
      [
        "  chat_sockets_open after 2 s",
        num(openControl),
        `+${num(openControl - openReset)} over the first batch`,
      ],
      [
        "  server fds after 2 s",
        num(afterControl.fds),
        `+${num(afterControl.fds - afterReset.fds)} over the first batch`,
      ],
      [
        "  a new upgrade from 127.0.0.2",
        String(probe2.status || "no answer"),
        "",
      ],
      [
        "7 s after the first batch",
        `${num(openLate)} open`,
        `fds ${num(late.fds)} (+${num(late.fds - before.fds)} since start)`,
      ],
      [
        "a new upgrade from 127.0.0.1 after 7 s",
        String(probe3.status || "no answer"),
        "",
      ],
      [
        "RSS start / end",
        `${kib(before.rssKiB)} / ${kib(late.rssKiB)}`,
        "",
      ],
      [
        "SIGTERM to exit",
        `${num(exit.ms)} ms`,
        exit.killed ? "did not exit: SIGKILL" : "",
      ],
    );
    return rows;
  } finally {
    await server.stop();
  }
}

/** Item 7: half an upgrade request, then nothing. */
async function partStalled(cfg: Config): Promise<Row[]> {
  const server = await startServer(cfg.serverArgs, cfg.verbose);
  const sockets: net.Socket[] = [];
  try {
    await sleep(500);
    const before = sample(server.pid);
    const request = upgradeRequest("/exposure");
    const half = request.slice(0, Math.floor(request.length / 2));
    let closedByServer = 0;
    const t0 = performance.now();
    let firstCloseS = NaN;
    sockets.push(
      ...await connectMany(
        server.wsPort,
        cfg.stalled,
        "127.0.0.1",
        (socket) => {
          socket.on("data", () => {}); // read (and drop) whatever comes
          socket.once("close", () => {
            closedByServer++;
            if (!Number.isFinite(firstCloseS)) {
              firstCloseS = (performance.now() - t0) / 1000;
            }
          });
          socket.write(half);
        },
      ),
    );
    const connected = sockets.filter((s) => !s.connecting && !s.destroyed)
      .length;
    await sleep(1_000);
    const held = sample(server.pid);
    const rows: Row[] = [
      ["connections that sent half a request", num(connected), ""],
      ["server fds before / with them", `${before.fds} / ${held.fds}`, ""],
      [
        "fds per stalled connection",
        num((held.fds - before.fds) / connected, 2),
        "",
      ],
      [
        "RSS before / with them",
        `${kib(before.rssKiB)} / ${kib(held.rssKiB)}`,
        "",
      ],
      [
        "RSS per stalled connection",
        `${num((held.rssKiB - before.rssKiB) * 1024 / connected)} B`,
        "",
      ],
    ];
    // A real client still gets in while they are held?
    const probe = await RawWs.open(server.wsPort, "/exposure", "127.0.0.3");
    rows.push([
      "a real handshake meanwhile",
      String(probe.status || "no answer"),
      "",
    ]);
    probe.destroy();
    const deadline = t0 + cfg.stalledSeconds * 1000;
    let next = 15;
    while (performance.now() < deadline && closedByServer < connected) {
      await sleep(250);
      const s = (performance.now() - t0) / 1000;
      if (s >= next) {
        rows.push([
          `  after ${next} s`,
          `${num(connected - closedByServer)} open`,
          `server fds ${num(fdCount(server.pid))}, RSS ${
            kib(statusKiB(server.pid, "VmRSS"))
          }`,
        ]);
        next += 15;
      }
    }
    const endS = (performance.now() - t0) / 1000;
    rows.push(
      [
        `closed by the server within ${num(endS)} s`,
        num(closedByServer),
        Number.isFinite(firstCloseS)
          ? `first after ${num(firstCloseS, 1)} s`
          : "",
      ],
      ["server fds at the end", num(fdCount(server.pid)), ""],
    );
    for (const s of sockets) s.destroy();
    await sleep(1_000);
    rows.push([
      "server fds 1 s after the clients left",
      num(fdCount(server.pid)),
      "",
    ]);
    return rows;
  } finally {
    for (const s of sockets) s.destroy();
    await server.stop();
  }
}

/** Item 8a: rooms filled to a full history of maximum-length messages. */
async function partHistory(cfg: Config): Promise<Row[]> {
  const rows: Row[] = [];
  const kinds = [
    { name: "ASCII", char: "a", utf8: 1 },
    { name: "3-byte (U+20AC €)", char: "€", utf8: 3 },
    { name: "4-byte (U+1F600 😀)", char: "😀", utf8: 4 },
  ];
  for (const kind of kinds) {
    // Limits lifted so a room fills at once; the caller's args come last.
    const server = await startServer([
      "--rate",
      "1000000",
      "--burst",
      "1000000",
      ...cfg.serverArgs,
    ], cfg.verbose);
    const clients: RawWs[] = [];
    try {
      const chars = serverFlag(cfg.serverArgs, "--max-message-chars", 2000);
      const history = serverFlag(cfg.serverArgs, "--history-size", 100);
      for (let i = 0; i < cfg.rooms; i++) {
        clients.push(await RawWs.open(server.wsPort, `/history-${i}`));
      }
      const joined = clients.filter((ws) => ws.status === 101).length;
      await sleep(1_000);
      const before = sample(server.pid);
      // Characters (code points, as main.ts counts them): an 8-character
      // ASCII prefix, distinct per message, then the body.
      const body = kind.char.repeat(chars - 8);
      /** Sends `history` more messages from each client; all echoed? */
      const fill = async (round: number) => {
        for (let m = 0; m < history; m++) {
          for (const [i, ws] of clients.entries()) {
            const id = `${round}${String(m).padStart(3, "0")}`;
            ws.send(`${id}${String(i).padStart(3, "0")}${body}`);
          }
          if (m % 10 === 9) await sleep(0);
        }
        // The sender's own echo: one text frame per message.
        return await Promise.all(
          clients.map((ws) => ws.waitTexts(round * history, 30_000)),
        );
      };
      const t0 = performance.now();
      const complete = await fill(1);
      const fillS = (performance.now() - t0) / 1000;
      const filled = sample(server.pid);
      await sleep(3_000);
      const settled = sample(server.pid);
      // A second round replaces every message: the history stays as big, so
      // growth now is what the traffic itself leaves behind.
      await fill(2);
      await sleep(1_000);
      const refilled = sample(server.pid);
      const textBytes = joined * history * (8 + (chars - 8) * kind.utf8);
      // V8 keeps a string in one byte per UTF-16 unit if all are Latin-1,
      // else in two.
      const v8Bytes = joined * history *
        (8 + (chars - 8) * kind.char.length * (kind.utf8 === 1 ? 1 : 2));
      const growthKiB = settled.rssKiB - before.rssKiB;
      const again = refilled.rssKiB - settled.rssKiB;
      rows.push(
        [
          `${kind.name}: ${joined} rooms x ${history} msgs x ${chars} chars`,
          "",
          `${complete.filter(Boolean).length} rooms complete in ${
            num(fillS, 1)
          } s`,
        ],
        [
          "  text size (UTF-8)",
          kib(Math.round(textBytes / 1024)),
          `as V8 strings ${kib(Math.round(v8Bytes / 1024))}`,
        ],
        [
          "  RSS before / filled / +3 s",
          `${kib(before.rssKiB)} / ${kib(filled.rssKiB)} / ${
            kib(settled.rssKiB)
          }`,
          "",
        ],
        [
          "  RSS growth (+3 s)",
          kib(growthKiB),
          `${num(growthKiB * 1024 / textBytes, 2)} x the UTF-8 text`,
        ],
        [
          "  RSS growth per room",
          kib(Math.round(growthKiB / joined)),
          `text ${kib(Math.round(textBytes / joined / 1024))} per room`,
        ],
        [
          "  RSS after a 2nd round (replaces all)",
          kib(refilled.rssKiB),
          `${again >= 0 ? "+" : "-"}${kib(Math.abs(again))}; peak ${
            kib(refilled.hwmKiB)
          }`,
        ],
      );
    } finally {
      for (const ws of clients) ws.destroy();
      await server.stop();
    }
  }
  return rows;
}

/** A numeric flag's value in the server's arguments (the last one wins). */
function serverFlag(args: string[], flag: string, fallback: number): number {
  let value = fallback;
  for (const [i, arg] of args.entries()) {
    if (arg === flag && i + 1 < args.length) value = Number(args[i + 1]);
    else if (arg.startsWith(`${flag}=`)) {
      value = Number(arg.slice(flag.length + 1));
    }
  }
  return value;
}

/** Item 8b: huge text frames, far over --max-frame-bytes. */
async function partFrames(cfg: Config): Promise<Row[]> {
  const server = await startServer(cfg.serverArgs, cfg.verbose);
  const clients: RawWs[] = [];
  try {
    for (let i = 0; i < cfg.frames; i++) {
      clients.push(
        await RawWs.open(server.wsPort, "/frames", `127.0.0.${10 + i}`),
      );
    }
    await sleep(1_000);
    const before = sample(server.pid);
    const size = Math.round(cfg.frameMiB * 1024 * 1024);
    const frame = encodeFrame(Opcode.Text, new Uint8Array(size).fill(0x61));
    let peak = before.rssKiB;
    let sampling = true;
    const sampler = (async () => {
      while (sampling) {
        peak = Math.max(peak, statusKiB(server.pid, "VmRSS"));
        await sleep(20);
      }
    })();
    const t0 = performance.now();
    for (const ws of clients) ws.socket.write(frame);
    // Closed: a close frame came, or the connection ended without one.
    const deadline = Date.now() + 20_000;
    while (clients.some((ws) => ws.closeCode === 0) && Date.now() < deadline) {
      await sleep(10);
    }
    const closeS = (performance.now() - t0) / 1000;
    const right = sample(server.pid);
    await sleep(2_000);
    const at2 = sample(server.pid);
    await sleep(8_000);
    const at10 = sample(server.pid);
    sampling = false;
    await sampler;
    const codes = new Map<number, number>();
    for (const ws of clients) {
      codes.set(ws.closeCode, (codes.get(ws.closeCode) ?? 0) + 1);
    }
    const codeText = [...codes].map(([c, n]) =>
      `${n} x ${c === -1 ? "no close frame" : c === 0 ? "still open" : c}`
    ).join(", ");
    return [
      [
        `${clients.length} connections, one ${
          num(cfg.frameMiB)
        } MiB text frame each`,
        "",
        `total ${num(cfg.frameMiB * clients.length)} MiB`,
      ],
      ["RSS before", kib(before.rssKiB), ""],
      [
        "RSS peak (sampled every 20 ms)",
        kib(peak),
        `VmHWM ${kib(at10.hwmKiB)}`,
      ],
      [
        "RSS right after the closes",
        kib(right.rssKiB),
        `${num(closeS, 2)} s after the send`,
      ],
      ["RSS 2 s later", kib(at2.rssKiB), ""],
      ["RSS 10 s later", kib(at10.rssKiB), ""],
      [
        "peak growth per MiB sent",
        `${
          num(
            (peak - before.rssKiB) / 1024 / (cfg.frameMiB * clients.length),
            2,
          )
        } MiB`,
        "",
      ],
      ["close codes the senders got", codeText, ""],
    ];
  } finally {
    for (const ws of clients) ws.destroy();
    await server.stop();
  }
}

// ----------------------------------------------------------------- main ---

const PARTS = {
  slots: { title: "1. aborted handshakes (slots)", run: partSlots },
  stalled: { title: "7. stalled handshakes", run: partStalled },
  history: { title: "8a. full histories", run: partHistory },
  frames: { title: "8b. huge frames", run: partFrames },
} as const;

async function main(): Promise<void> {
  const { values } = parseArgs({
    args: Deno.args,
    options: {
      part: { type: "string", default: "slots,stalled,history,frames" },
      "server-arg": { type: "string", multiple: true, default: [] },
      slots: { type: "string", default: "100" },
      stalled: { type: "string", default: "1000" },
      "stalled-seconds": { type: "string", default: "65" },
      rooms: { type: "string", default: "40" },
      frames: { type: "string", default: "5" },
      "frame-mib": { type: "string", default: "20" },
      main: { type: "string" },
      json: { type: "boolean", default: false },
      verbose: { type: "boolean", default: false },
    },
  });
  const bounded = (name: string, value: string, max: number) => {
    const n = Number(value);
    if (!(n > 0 && n <= max)) throw new Error(`--${name} must be 1 … ${max}`);
    return n;
  };
  const cfg: Config = {
    serverArgs: values["server-arg"],
    verbose: values.verbose,
    slots: bounded("slots", values.slots, 1000),
    stalled: bounded("stalled", values.stalled, 5000),
    stalledSeconds: bounded("stalled-seconds", values["stalled-seconds"], 80),
    rooms: bounded("rooms", values.rooms, 200),
    frames: bounded("frames", values.frames, 20),
    frameMiB: bounded("frame-mib", values["frame-mib"], 128),
  };
  if (values.main) mainPath = values.main;
  const parts = values.part.split(",").map((p) => p.trim());
  for (const p of parts) {
    if (!(p in PARTS)) throw new Error(`unknown part ${p}`);
  }
  const watchdog = setTimeout(() => {
    log(`not done after ${WATCHDOG_MS / 1000} s: stopping`);
    for (const child of running) {
      try {
        child.kill("SIGKILL");
      } catch { /* gone */ }
    }
    Deno.exit(1);
  }, WATCHDOG_MS);
  const t0 = performance.now();
  for (const p of parts as (keyof typeof PARTS)[]) {
    log(`${PARTS[p].title} …`);
    const rows = await PARTS[p].run(cfg);
    results.push({ part: PARTS[p].title, rows });
    if (!values.json) console.log(`${PARTS[p].title}\n${table(rows)}\n`);
  }
  clearTimeout(watchdog);
  const footer = `${new Date().toISOString()}  deno ${Deno.version.deno}  ` +
    `${navigator.hardwareConcurrency} cores  server: ${mainPath}  args: ${
      cfg.serverArgs.join(" ") || "(defaults)"
    }  ${((performance.now() - t0) / 1000).toFixed(0)} s`;
  if (values.json) console.log(JSON.stringify({ results, footer }));
  else console.log(footer);
}

if (import.meta.main) await main();
