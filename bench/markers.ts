/**
 * `deno run -A bench/markers.ts`: what read markers cost the server, for
 * issue 27's target: "1,000 people with 3 tabs each moving markers at 1/s
 * cost ≤ 10 % of one core".
 *
 * `--people` people (a session each) with `--tabs` JSON connections each,
 * every tab in another of `--rooms` rooms (so each person watches `--tabs`
 * rooms). Each room first gets `--messages` messages (a filler client);
 * every person's markers start `--behind` events before the newest (10:
 * people a little behind; `--behind 100`, every message of the live window
 * unread, is the worst case: every count reads the whole window). Then,
 * for `--seconds`, each person moves a marker `--rate` times a second (in
 * turn in each of their rooms, one event further each time, the people
 * spread over the second), so every move is counted again over the
 * messages after it, and each is told to every tab of that person (a
 * `read` notice: checked, one per tab per move). The server's CPU over
 * that phase (every process: with `--redis` both chat processes and
 * redis-server), as a share of one core, is set against the same phase
 * with nobody moving a marker (the connections idle), measured first.
 *
 * Usage: deno run -A bench/markers.ts [--people 1000] [--tabs 3]
 *          [--rooms 10] [--messages 100] [--behind 10] [--rate 1]
 *          [--seconds 30]
 *          [--data | --redis] [--json] [--cpu-prof DIR]
 *
 * `--cpu-prof DIR` writes the server's V8 CPU profile there (in memory or
 * with `--data`).
 *
 * @module
 */

import { parseArgs } from "node:util";
import { clkTck } from "./load.ts";
import {
  type ChatProcess,
  startChatProcess,
  startRedis,
} from "../tests/redis_helpers.ts";
import { JSON_PROTOCOL, SESSION_PROTOCOL_PREFIX } from "../wire/protocol.ts";

/** Connections opened at once while everyone comes in. */
const WAVE = 100;
/** A frame awaited (a welcome, an echo) comes within this, or the run fails. */
const FRAME_TIMEOUT_MS = 30_000;
/** How often the movers' clock ticks, in ms. */
const TICK_MS = 10;

const repoDir = new URL("..", import.meta.url).pathname;

function log(text: string): void {
  console.error(`[markers] ${text}`);
}

/** The server's limits lifted, so that it is measured, not throttled. */
const LIFTED = [
  "--rate",
  "1000000",
  "--burst",
  "1000000",
  "--max-connections",
  "100000",
  "--max-connections-per-ip",
  "100000",
  "--connect-burst",
  "100000",
  "--connect-rate",
  "100000",
  "--max-rooms",
  "100000",
];

/** A running server: where to connect, and its processes' pids. */
interface Server {
  urls: string[];
  pids: number[];
  stop(): Promise<void>;
}

/** `main.ts` in memory or with `--data`, a child process. */
async function startServer(
  extra: string[],
  profile?: string,
): Promise<Server> {
  const child = new Deno.Command(Deno.execPath(), {
    args: [
      "run",
      "-A",
      ...(profile ? ["--cpu-prof", `--cpu-prof-dir=${profile}`] : []),
      "main.ts",
      "--hostname",
      "127.0.0.1",
      "--port",
      "0",
      "--ws-port",
      "0",
      "--quiet",
      ...LIFTED,
      ...extra,
    ],
    cwd: repoDir,
    stdin: "null",
    stdout: "piped",
    stderr: "inherit",
  }).spawn();
  const lines = child.stdout.pipeThrough(new TextDecoderStream()).getReader();
  let out = "";
  while (!out.includes("\n")) {
    const { value, done } = await lines.read();
    if (done) throw new Error(`the server did not start: ${out}`);
    out += value;
  }
  const port = out.match(/chat on port (\d+)/)?.[1];
  if (!port) throw new Error(`no chat port in: ${out}`);
  const drained = (async () => {
    while (!(await lines.read()).done) { /* keep the pipe flowing */ }
  })();
  return {
    urls: [`ws://127.0.0.1:${port}`],
    pids: [child.pid],
    stop: async () => {
      child.kill("SIGTERM");
      await child.status;
      await drained.catch(() => {});
    },
  };
}

/** Two chat processes on a private redis-server. */
async function startRedisPair(): Promise<Server> {
  const redis = await startRedis();
  const chats: ChatProcess[] = [];
  for (let i = 0; i < 2; i++) {
    chats.push(await startChatProcess(redis.url, { args: LIFTED }));
  }
  if (Deno.env.get("MARKERS_DEBUG")) log(`redis on ${redis.port}`);
  return {
    urls: chats.map((chat) => `ws://127.0.0.1:${chat.wsPort}`),
    pids: [...chats.map((chat) => chat.child.pid), redis.child.pid],
    stop: async () => {
      await Promise.all(chats.map((chat) => chat.stop()));
      await redis.kill();
    },
  };
}

/** One connection: its socket, and how many `read` notices it got. */
interface Tab {
  socket: WebSocket;
  reads: number;
}

/** Opens a JSON connection and waits for its welcome (its `lastId`). */
function connect(
  url: string,
  session?: string,
): Promise<{ tab: Tab; lastId: number }> {
  return new Promise((resolve, reject) => {
    const socket = new WebSocket(
      url,
      session === undefined
        ? JSON_PROTOCOL
        : [JSON_PROTOCOL, SESSION_PROTOCOL_PREFIX + session],
    );
    const tab: Tab = { socket, reads: 0 };
    const timer = setTimeout(
      () => reject(new Error(`no welcome from ${url}`)),
      FRAME_TIMEOUT_MS,
    );
    socket.onerror = () => reject(new Error(`cannot connect to ${url}`));
    socket.onmessage = (event) => {
      const frame = String(event.data);
      if (!frame.startsWith('{"type":"welcome"')) return;
      clearTimeout(timer);
      // From now on only the notices are counted (no decoding).
      socket.onmessage = (event) => {
        const text = String(event.data);
        if (text.startsWith('{"type":"read"')) tab.reads++;
        else if (text.startsWith("[") && text.includes('"type":"read"')) {
          tab.reads += text.split('"type":"read"').length - 1;
        }
      };
      resolve({ tab, lastId: JSON.parse(frame).lastId });
    };
  });
}

/** Closes every socket and waits for the closes. */
async function closeAll(sockets: WebSocket[]): Promise<void> {
  await Promise.all(sockets.map((socket) =>
    new Promise<void>((resolve) => {
      if (socket.readyState === WebSocket.CLOSED) return resolve();
      socket.addEventListener("close", () => resolve());
      socket.close(1000);
    })
  ));
}

/** The servers' CPU seconds so far, user and system, all processes together. */
async function cpuOf(
  pids: number[],
): Promise<{ user: number; system: number; each: number[] }> {
  const ticks = await clkTck();
  let user = 0;
  let system = 0;
  const each: number[] = [];
  for (const pid of pids) {
    const stat = await Deno.readTextFile(`/proc/${pid}/stat`);
    // utime and stime: fields 14 and 15 (11 and 12 after the command's ")").
    const fields = stat.slice(stat.lastIndexOf(")") + 2).split(" ");
    user += Number(fields[11]) / ticks;
    system += Number(fields[12]) / ticks;
    each.push((Number(fields[11]) + Number(fields[12])) / ticks);
  }
  return { user, system, each };
}

/** The 1-, 5- and 15-minute load averages now. */
function loadAverage(): string {
  return Deno.readTextFileSync("/proc/loadavg").split(" ").slice(0, 3).join(
    " ",
  );
}

async function main(): Promise<void> {
  const { values } = parseArgs({
    args: Deno.args,
    options: {
      people: { type: "string", default: "1000" },
      tabs: { type: "string", default: "3" },
      rooms: { type: "string", default: "10" },
      messages: { type: "string", default: "100" },
      behind: { type: "string", default: "10" },
      rate: { type: "string", default: "1" },
      seconds: { type: "string", default: "30" },
      data: { type: "boolean", default: false },
      redis: { type: "boolean", default: false },
      json: { type: "boolean", default: false },
      "cpu-prof": { type: "string" },
    },
  });
  const people = Number(values.people);
  const tabs = Number(values.tabs);
  const roomCount = Number(values.rooms);
  const messages = Number(values.messages);
  const behind = Number(values.behind);
  const rate = Number(values.rate);
  const seconds = Number(values.seconds);
  if (tabs > roomCount) throw new Error("--tabs at most --rooms");
  await clkTck();
  const dir = values.data
    ? await Deno.makeTempDir({ prefix: "bench-markers-" })
    : undefined;
  const store = values.redis ? "redis" : values.data ? "data" : "memory";
  const server = values.redis ? await startRedisPair() : await startServer(
    dir ? ["--data", `${dir}/chat.db`] : [],
    values["cpu-prof"],
  );
  const sockets: WebSocket[] = [];
  try {
    const rooms = Array.from({ length: roomCount }, (_, i) => `m${i}`);
    // Tab t of person p: room (p + t) mod rooms, on process (p + t) mod N.
    const where = (p: number, t: number) => ({
      room: (p + t) % roomCount,
      url: server.urls[(p + t) % server.urls.length],
    });
    log(`${people} people × ${tabs} tabs in ${roomCount} rooms (${store})`);
    const tabOf: Tab[][] = Array.from({ length: people }, () => []);
    const pairs: [number, number][] = [];
    for (let p = 0; p < people; p++) {
      for (let t = 0; t < tabs; t++) pairs.push([p, t]);
    }
    for (let i = 0; i < pairs.length; i += WAVE) {
      const wave = pairs.slice(i, i + WAVE);
      const opened = await Promise.all(wave.map(([p, t]) => {
        const { room, url } = where(p, t);
        const session = `bench-person-${p}`.padEnd(24, "x");
        return connect(`${url}/${rooms[room]}?nick=p${p}`, session);
      }));
      opened.forEach(({ tab }, j) => {
        tabOf[wave[j][0]].push(tab);
        sockets.push(tab.socket);
      });
    }
    // Each room's messages, which everyone has unread.
    const lastIds: number[] = [];
    for (const room of rooms) {
      const { tab, lastId } = await connect(`${server.urls[0]}/${room}`);
      sockets.push(tab.socket);
      const done = new Promise<number>((resolve, reject) => {
        let seen = 0;
        const timer = setTimeout(
          () => reject(new Error(`the messages of ${room}`)),
          FRAME_TIMEOUT_MS,
        );
        tab.socket.onmessage = (event) => {
          const text = String(event.data);
          const events = JSON.parse(text);
          for (const e of Array.isArray(events) ? events : [events]) {
            if (e.type !== "message" || e.from === undefined) continue;
            if (++seen === messages) {
              clearTimeout(timer);
              resolve(e.id);
            }
          }
        };
      });
      for (let i = 0; i < messages; i++) {
        tab.socket.send(JSON.stringify({
          type: "message",
          text: `message ${i} for p${i % people}, about nothing much`,
        }));
      }
      lastIds.push(messages > 0 ? await done : lastId);
    }
    // Markers start below the messages: every move leaves some unread.
    const next = Array.from(
      { length: people },
      (_, p) =>
        Array.from(
          { length: tabs },
          (_, t) => lastIds[where(p, t).room] - behind,
        ),
    );
    const moves = Math.round(seconds * rate);
    if (Math.ceil(moves / tabs) > behind || behind > messages) {
      throw new Error(
        `--behind must be at most --messages, and cover ${
          Math.ceil(moves / tabs)
        } moves per room`,
      );
    }
    const phase = async (moving: boolean) => {
      await new Promise((resolve) => setTimeout(resolve, 2000)); // settle
      const load = loadAverage();
      const cpu0 = await cpuOf(server.pids);
      const started = performance.now();
      let sent = 0;
      await new Promise<void>((resolve) => {
        const timer = setInterval(() => {
          const elapsed = performance.now() - started;
          if (elapsed >= seconds * 1000) {
            clearInterval(timer);
            return resolve();
          }
          if (!moving) return;
          // Person p's k-th move is due at (k + p / people) / rate seconds.
          const due = Math.floor(elapsed / 1000 * rate * people);
          for (; sent < due && sent < moves * people; sent++) {
            const p = sent % people;
            const k = Math.floor(sent / people);
            const t = k % tabs;
            const id = ++next[p][t];
            tabOf[p][t].socket.send(JSON.stringify({ type: "read", id }));
          }
        }, TICK_MS);
      });
      const wall = (performance.now() - started) / 1000;
      const cpu1 = await cpuOf(server.pids);
      const user = cpu1.user - cpu0.user;
      const system = cpu1.system - cpu0.system;
      const cpu = user + system;
      const each = cpu1.each.map((s, i) => s - cpu0.each[i]);
      return {
        cpuS: cpu,
        user,
        system,
        each,
        share: cpu / wall,
        wall,
        load,
        sent,
      };
    };
    log("idle phase (nobody moves a marker)");
    const idle = await phase(false);
    log("moving phase");
    const moving = await phase(true);
    // Every move told to every tab of its person (late ones waited for).
    const expected = moving.sent * tabs;
    const received = () =>
      tabOf.flat().reduce((sum, tab) => sum + tab.reads, 0);
    for (let waited = 0; received() < expected && waited < 10_000;) {
      await new Promise((resolve) => setTimeout(resolve, 100));
      waited += 100;
    }
    const got = received();
    const report = {
      store,
      people,
      tabs,
      rooms: roomCount,
      messages,
      behind,
      rate,
      seconds,
      moves: moving.sent,
      readNoticesExpected: expected,
      readNoticesGot: got,
      idle: {
        cpuS: idle.cpuS,
        userS: idle.user,
        systemS: idle.system,
        share: idle.share,
        loadAverage: idle.load,
      },
      moving: {
        cpuS: moving.cpuS,
        userS: moving.user,
        systemS: moving.system,
        share: moving.share,
        loadAverage: moving.load,
      },
      markersShare: moving.share - idle.share,
      /** Each process's CPU seconds moving − idle (chat processes, then redis-server). */
      markersCpuSByProcess: moving.each.map((s, i) => s - idle.each[i]),
      loadAverageAfter: loadAverage(),
    };
    if (values.json) console.log(JSON.stringify(report, null, 2));
    else {
      const pct = (x: number) => `${(100 * x).toFixed(1)} %`;
      console.log(
        [
          `store ${store}: ${people} people × ${tabs} tabs, ${roomCount} rooms, ${moving.sent} moves in ${seconds} s (${rate}/s each)`,
          `read notices: ${got} of ${expected}`,
          `server CPU, idle:   ${idle.cpuS.toFixed(2)} s (user ${
            idle.user.toFixed(2)
          }, system ${idle.system.toFixed(2)}) = ${
            pct(idle.share)
          } of a core (load average ${idle.load})`,
          `server CPU, moving: ${moving.cpuS.toFixed(2)} s (user ${
            moving.user.toFixed(2)
          }, system ${moving.system.toFixed(2)}) = ${
            pct(moving.share)
          } of a core (load average ${moving.load})`,
          `markers: ${pct(report.markersShare)} of a core; ${
            (1e6 * (moving.cpuS - idle.cpuS) / Math.max(1, moving.sent))
              .toFixed(1)
          } µs per move (${tabs} notices each)`,
          ...(server.pids.length > 1
            ? [
              `by process (chat, chat, redis-server): ${
                report.markersCpuSByProcess.map((s) =>
                  `${(1e6 * s / Math.max(1, moving.sent)).toFixed(1)} µs`
                ).join(", ")
              } per move`,
            ]
            : []),
          `load average after: ${report.loadAverageAfter}`,
        ].join("\n"),
      );
    }
    if (got !== expected) {
      Deno.exitCode = 1;
      if (Deno.env.get("MARKERS_DEBUG")) {
        const sends = Array.from(
          { length: people },
          (_, p) =>
            Math.floor(moving.sent / people) +
            (p < moving.sent % people ? 1 : 0),
        );
        tabOf.forEach((own, p) =>
          own.forEach((tab, t) => {
            if (tab.reads !== sends[p]) {
              log(
                `person ${p} tab ${t} (${where(p, t).url}): ${tab.reads} of ${
                  sends[p]
                }`,
              );
            }
          })
        );
      }
    }
  } finally {
    await closeAll(sockets).catch(() => {});
    await server.stop();
    if (dir) await Deno.remove(dir, { recursive: true });
  }
}

if (import.meta.main) await main();
