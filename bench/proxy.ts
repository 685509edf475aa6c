/**
 * What the publish proxy adds to a message's way (issue 28 point 2): one
 * JSON sender posting at a steady rate into a room of listeners, each
 * message's time from send to its echo, with `--proxy-publish` to a local
 * app answering in 1 ms (bench/proxy_app.ts) and without, alternating;
 * and the chat's CPU per message. `run.ts --proxy` measures the same in
 * the throughput scenario (b); this one is the latency alone, at a rate
 * low enough that queueing does not hide it.
 *
 * Usage: deno run -A bench/proxy.ts [--messages 1000] [--rate 100]
 *          [--listeners 100] [--runs 3]
 *
 * @module
 */

import { parseArgs } from "node:util";
import { fmt, procCpuS } from "./load.ts";
import { PROXY_APP_DELAY_MS } from "./proxy_app.ts";
import { type Chat, startChat } from "./chat_process.ts";

const repoDir = new URL("..", import.meta.url).pathname;

/** A JSON socket in the bench room, open and welcomed. */
async function joined(
  chat: Chat,
  nick: string,
  onEvent: (event: { type: string; from?: string; text?: string }) => void,
): Promise<WebSocket> {
  const socket = new WebSocket(
    `ws://127.0.0.1:${chat.wsPort}/bench?nick=${nick}`,
    "chat.v1.json",
  );
  const welcomed = Promise.withResolvers<void>();
  socket.onmessage = ({ data }) => {
    const parsed = JSON.parse(data);
    for (const event of Array.isArray(parsed) ? parsed : [parsed]) {
      if (event.type === "welcome") welcomed.resolve();
      else onEvent(event);
    }
  };
  socket.onerror = () => welcomed.reject(new Error(`${nick} failed`));
  await welcomed.promise;
  return socket;
}

/** One run: latencies (ms) and the chat's CPU per message (µs). */
async function measure(
  proxyArgs: string[],
  messages: number,
  rate: number,
  listeners: number,
): Promise<{ latencies: number[]; cpuUsPerMessage: number; appMs: number }> {
  const chat = await startChat(proxyArgs);
  const sockets: WebSocket[] = [];
  try {
    let heard = 0;
    const allHeard = Promise.withResolvers<void>();
    for (let i = 0; i < listeners; i++) {
      sockets.push(
        await joined(chat, `l${i}`, (event) => {
          if (event.type !== "message") return;
          if (++heard === messages * listeners) allHeard.resolve();
        }),
      );
    }
    const sentAt = new Map<string, number>();
    const latencies: number[] = [];
    const echoed = Promise.withResolvers<void>();
    const sender = await joined(chat, "sender", (event) => {
      if (event.type !== "message" || event.from !== "sender") return;
      latencies.push(performance.now() - sentAt.get(event.text!)!);
      if (latencies.length === messages) echoed.resolve();
    });
    sockets.push(sender);
    const cpu0 = procCpuS(chat.pid);
    const started = performance.now();
    for (let i = 0; i < messages; i++) {
      // Steady: each message at its own time, not after the last one's echo.
      const due = started + (i * 1000) / rate;
      const wait = due - performance.now();
      if (wait > 0) await new Promise((resolve) => setTimeout(resolve, wait));
      const text = `m${i}`;
      sentAt.set(text, performance.now());
      sender.send(JSON.stringify({ type: "message", text }));
    }
    await echoed.promise;
    await allHeard.promise;
    const cpu = procCpuS(chat.pid) - cpu0;
    const metrics = await (await fetch(`http://127.0.0.1:${chat.port}/metrics`))
      .text();
    const read = (name: string) =>
      Number(
        metrics.split("\n").find((line) => line.startsWith(name + " "))
          ?.split(" ")[1] ?? NaN,
      );
    const posts = read("chat_proxy_latency_seconds_count");
    return {
      latencies,
      cpuUsPerMessage: (cpu * 1e6) / messages,
      appMs: posts
        ? (read("chat_proxy_latency_seconds_sum") / posts) * 1000
        : NaN,
    };
  } finally {
    for (const socket of sockets) socket.close();
    await chat.stop();
  }
}

function quantile(sorted: number[], q: number): number {
  return sorted[Math.min(sorted.length - 1, Math.floor(q * sorted.length))];
}

function median(xs: number[]): number {
  const sorted = [...xs].sort((a, b) => a - b);
  return sorted[Math.floor(sorted.length / 2)];
}

async function main(): Promise<void> {
  const { values } = parseArgs({
    args: Deno.args,
    options: {
      messages: { type: "string", default: "1000" },
      rate: { type: "string", default: "100" },
      listeners: { type: "string", default: "100" },
      runs: { type: "string", default: "3" },
    },
  });
  const messages = Number(values.messages);
  const rate = Number(values.rate);
  const listeners = Number(values.listeners);
  const runs = Number(values.runs);
  // The app in a process of its own, as an app would be.
  const appProcess = new Deno.Command(Deno.execPath(), {
    args: ["run", "--allow-net", `${repoDir}bench/proxy_app.ts`],
    stdin: "null",
    stdout: "piped",
    stderr: "inherit",
  }).spawn();
  const reader = appProcess.stdout.pipeThrough(new TextDecoderStream())
    .getReader();
  let appUrl = "";
  while (!appUrl.includes("\n")) {
    const { value, done } = await reader.read();
    if (done) throw new Error("the app did not start");
    appUrl += value;
  }
  appUrl = appUrl.trim();
  const rows: Record<string, { p50: number; p99: number; cpu: number }[]> = {
    off: [],
    on: [],
  };
  try {
    for (let run = 1; run <= runs; run++) {
      const order = run % 2 ? ["off", "on"] : ["on", "off"];
      for (const mode of order) {
        const { latencies, cpuUsPerMessage, appMs } = await measure(
          mode === "on" ? ["--proxy-publish", appUrl] : [],
          messages,
          rate,
          listeners,
        );
        const sorted = latencies.sort((a, b) => a - b);
        const row = {
          p50: quantile(sorted, 0.5),
          p99: quantile(sorted, 0.99),
          cpu: cpuUsPerMessage,
        };
        rows[mode].push(row);
        console.error(
          `[proxy] run ${run}/${runs} ${mode.padEnd(3)} p50 ${
            fmt(row.p50, 2)
          } ms, p99 ${fmt(row.p99, 2)} ms, chat CPU ${
            fmt(row.cpu, 0)
          } µs/message, POST to answer ${fmt(appMs, 2)} ms (load ${
            Deno.loadavg()[0].toFixed(1)
          })`,
        );
      }
    }
  } finally {
    appProcess.kill("SIGTERM");
    await reader.cancel();
    await appProcess.status;
  }
  const [off, on] = [rows.off, rows.on].map((r) => ({
    p50: median(r.map((x) => x.p50)),
    p99: median(r.map((x) => x.p99)),
    cpu: median(r.map((x) => x.cpu)),
  }));
  console.log(
    `${messages} messages at ${rate}/s into ${listeners} listeners, ${runs} runs, medians; app answers in ${PROXY_APP_DELAY_MS} ms`,
  );
  console.log(
    `proxy off: p50 ${fmt(off.p50, 2)} ms, p99 ${fmt(off.p99, 2)} ms, CPU ${
      fmt(off.cpu, 0)
    } µs/message`,
  );
  console.log(
    `proxy on:  p50 ${fmt(on.p50, 2)} ms, p99 ${fmt(on.p99, 2)} ms, CPU ${
      fmt(on.cpu, 0)
    } µs/message`,
  );
  console.log(
    `added: p50 ${fmt(on.p50 - off.p50, 2)} ms, p99 ${
      fmt(on.p99 - off.p99, 2)
    } ms (target ≤ 5 ms + the app's ${PROXY_APP_DELAY_MS} ms); CPU ${
      fmt(on.cpu / off.cpu, 2)
    }×`,
  );
}

if (import.meta.main) await main();
