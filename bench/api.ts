/**
 * The HTTP API's cost (issue 20's targets), in one run:
 *
 * 1. Server CPU per delivered event when the message comes from the API's
 *    `publish` versus from a WebSocket client, into a room of `--clients`
 *    JSON listeners (same server, same run, alternating).
 * 2. `publish` calls a second from one HTTP client with keep-alive
 *    (`--in-flight` requests at a time), into a room of one listener.
 *
 * ```sh
 * deno run -A bench/api.ts                    # 1,000 listeners, 3 runs each
 * deno run -A bench/api.ts --clients 200 --messages 500 --runs 5
 * ```
 *
 * Every figure is a median of `--runs`; the machine's other load moves single
 * runs, so read the ratio, not the absolute numbers.
 *
 * @module
 */

import net from "node:net";
import { parseArgs } from "node:util";
import {
  encodeFrame,
  FrameReader,
  Opcode,
  upgradeRequest,
} from "../tests/ws_frames.ts";
import { clkTck, procCpuS } from "./load.ts";

const KEY = "bench-api-key-0123456789abcdef0123456789";
const repoDir = new URL("..", import.meta.url).pathname;
const encoder = new TextEncoder();
const decoder = new TextDecoder();

interface Server {
  child: Deno.ChildProcess;
  port: number;
  wsPort: number;
}

async function startServer(): Promise<Server> {
  const child = new Deno.Command(Deno.execPath(), {
    args: [
      "run",
      "-A",
      "main.ts",
      "--hostname",
      "127.0.0.1",
      "--port",
      "0",
      "--ws-port",
      "0",
      "--quiet",
      "--api-key",
      KEY,
      "--api-rate",
      "1000000",
      "--rate",
      "1000000",
      "--burst",
      "1000000",
      "--max-connections-per-ip",
      "100000",
      "--connect-burst",
      "100000",
      "--max-buffered-bytes",
      String(64 * 1024 * 1024),
    ],
    cwd: repoDir,
    stdout: "piped",
    stderr: "inherit",
  }).spawn();
  const reader = child.stdout.pipeThrough(new TextDecoderStream()).getReader();
  let out = "";
  while (!out.includes("\n")) {
    const { value, done } = await reader.read();
    if (done) throw new Error(`server exited: ${out}`);
    out += value;
  }
  // Keep reading so the child never blocks on its stdout.
  (async () => {
    while (!(await reader.read()).done) { /* drain */ }
  })();
  const match = out.match(/:(\d+)\/ \(chat on port (\d+)\)/);
  if (!match) throw new Error(`start-up line: ${out}`);
  return { child, port: Number(match[1]), wsPort: Number(match[2]) };
}

/** A JSON client over node:net that counts the messages it receives. */
class Listener {
  received = 0;
  #socket: net.Socket;
  #reader = new FrameReader();
  readonly opened: Promise<void>;

  constructor(port: number, room: string, readonly marker: string) {
    this.#socket = net.connect({ host: "127.0.0.1", port });
    let open!: () => void;
    this.opened = new Promise((resolve) => open = resolve);
    this.#socket.on("connect", () =>
      this.#socket.write(
        upgradeRequest(`/${room}`, {
          "Sec-WebSocket-Protocol": "chat.v1.json",
        }),
      ));
    this.#socket.on("data", (chunk: Uint8Array) => {
      const opening = this.#reader.head === undefined;
      const frames = this.#reader.push(chunk);
      if (opening && this.#reader.head !== undefined) open();
      for (const frame of frames) {
        if (frame.opcode !== Opcode.Text) continue;
        const text = decoder.decode(frame.payload);
        // Count by the marker: no JSON parse per frame on the load side.
        for (let at = text.indexOf(this.marker); at !== -1;) {
          this.received++;
          at = text.indexOf(this.marker, at + this.marker.length);
        }
      }
    });
    this.#socket.on("error", () => {});
  }

  send(text: string): void {
    this.#socket.write(encodeFrame(Opcode.Text, encoder.encode(text)));
  }

  close(): void {
    this.#socket.destroy();
  }
}

async function until(what: string, check: () => boolean, ms = 120_000) {
  const deadline = Date.now() + ms;
  while (!check()) {
    if (Date.now() > deadline) throw new Error(`timed out: ${what}`);
    await new Promise((resolve) => setTimeout(resolve, 5));
  }
}

function publish(port: number, room: string, text: string) {
  return fetch(`http://127.0.0.1:${port}/api/publish`, {
    method: "POST",
    headers: { authorization: `Bearer ${KEY}` },
    body: JSON.stringify({ room, text }),
  }).then(async (response) => {
    await response.body?.cancel();
    if (response.status !== 200) throw new Error(`publish ${response.status}`);
  });
}

/** Server CPU per delivered event for `messages` sent one way or the other. */
async function deliveryCost(
  server: Server,
  listeners: Listener[],
  messages: number,
  how: "websocket" | "api",
  sender: Listener,
): Promise<number> {
  const base = listeners.map((listener) => listener.received);
  const cpu0 = procCpuS(server.child.pid);
  const batch = 50;
  for (let sent = 0; sent < messages; sent += batch) {
    const count = Math.min(batch, messages - sent);
    const texts = Array.from(
      { length: count },
      (_, i) => `${sender.marker} ${how} ${sent + i}`,
    );
    if (how === "websocket") {
      for (const text of texts) {
        sender.send(JSON.stringify({ type: "message", text }));
      }
    } else {
      await Promise.all(
        texts.map((text) => publish(server.port, "bench", text)),
      );
    }
    // A window: wait until everyone has these before sending more.
    await until(
      "deliveries",
      () =>
        listeners.every((listener, i) =>
          listener.received - base[i] >= sent + count
        ),
    );
  }
  const cpu = procCpuS(server.child.pid) - cpu0;
  return cpu * 1e6 / (messages * listeners.length);
}

function median(values: number[]): number {
  const sorted = [...values].sort((a, b) => a - b);
  return sorted[Math.floor(sorted.length / 2)];
}

async function main() {
  const { values } = parseArgs({
    args: Deno.args,
    options: {
      clients: { type: "string", default: "1000" },
      messages: { type: "string", default: "1000" },
      runs: { type: "string", default: "3" },
      publishes: { type: "string", default: "5000" },
      "in-flight": { type: "string", default: "8" },
    },
  });
  const clients = Number(values.clients);
  const messages = Number(values.messages);
  const runs = Number(values.runs);
  await clkTck();
  const server = await startServer();
  const marker = `m${crypto.randomUUID().slice(0, 6)}`;
  const listeners: Listener[] = [];
  try {
    for (let i = 0; i < clients; i += 100) {
      const wave = Array.from(
        { length: Math.min(100, clients - i) },
        () => new Listener(server.wsPort, "bench", marker),
      );
      await Promise.all(wave.map((listener) => listener.opened));
      listeners.push(...wave);
    }
    const sender = listeners[0];
    // Everyone is in: their welcomes came (a publish needs the room).
    await new Promise((resolve) => setTimeout(resolve, 500));
    const ws: number[] = [];
    const api: number[] = [];
    for (let run = 0; run < runs; run++) {
      ws.push(
        await deliveryCost(server, listeners, messages, "websocket", sender),
      );
      api.push(await deliveryCost(server, listeners, messages, "api", sender));
    }
    for (const listener of listeners) listener.close();
    listeners.length = 0;
    // Throughput: one listener keeps the room; one HTTP client, keep-alive.
    const one = new Listener(server.wsPort, "bench", marker);
    listeners.push(one);
    await one.opened;
    await new Promise((resolve) => setTimeout(resolve, 200));
    const publishes = Number(values.publishes);
    const inFlight = Number(values["in-flight"]);
    const rates: number[] = [];
    for (let run = 0; run < runs; run++) {
      const before = one.received;
      const started = performance.now();
      let next = 0;
      await Promise.all(
        Array.from({ length: inFlight }, async () => {
          while (next < publishes) {
            next++;
            await publish(server.port, "bench", `${marker} rate ${next}`);
          }
        }),
      );
      await until(
        "every publish delivered",
        () => one.received - before >= publishes,
      );
      rates.push(publishes / ((performance.now() - started) / 1000));
    }
    const wsMedian = median(ws);
    const apiMedian = median(api);
    console.log(
      `publish vs WebSocket message, ${clients} JSON clients in one room, ${messages} messages, medians of ${runs}:`,
    );
    console.log(
      `  server CPU µs per delivered event: websocket ${
        wsMedian.toFixed(3)
      }, api ${apiMedian.toFixed(3)}, api ÷ websocket ${
        (apiMedian / wsMedian).toFixed(2)
      } (target ≤ 1.2)`,
    );
    console.log(
      `  runs: websocket ${ws.map((x) => x.toFixed(3)).join(" ")}; api ${
        api.map((x) => x.toFixed(3)).join(" ")
      }`,
    );
    console.log(
      `publish throughput, one HTTP client with keep-alive, ${inFlight} in flight, ${publishes} publishes: ${
        median(rates).toFixed(0)
      }/s (target ≥ 2,000); runs ${
        rates.map((x) => x.toFixed(0)).join(" ")
      }; 0 lost`,
    );
  } finally {
    for (const listener of listeners) listener.close();
    server.child.kill("SIGTERM");
    await server.child.status;
  }
}

if (import.meta.main) await main();
