/**
 * A chat process for the benchmarks that start their own: `main.ts` with
 * its limits lifted (as run.ts does) on free ports, ready once `/healthz`
 * answers.
 *
 * @module
 */

import { freePort } from "../tests/ws_frames.ts";

/** Limits lifted, as run.ts does. */
export const UNLIMITED = [
  "--rate",
  "1000000",
  "--burst",
  "1000000",
  "--max-connections-per-ip",
  "100000",
  "--connect-rate",
  "1000000",
  "--connect-burst",
  "1000000",
  "--quiet",
];

const repoDir = new URL("..", import.meta.url).pathname;

/** A chat process: its pid and ports. */
export interface Chat {
  pid: number;
  port: number;
  wsPort: number;
  stop(): Promise<void>;
}

/** Starts main.ts with `args` and waits for `/healthz`. */
export async function startChat(args: string[]): Promise<Chat> {
  const port = freePort();
  const wsPort = freePort();
  const child = new Deno.Command(Deno.execPath(), {
    args: [
      "run",
      "-A",
      `${repoDir}main.ts`,
      "--hostname",
      "127.0.0.1",
      "--port",
      String(port),
      "--ws-port",
      String(wsPort),
      ...UNLIMITED,
      ...args,
    ],
    cwd: repoDir,
    stdin: "null",
    stdout: "null",
    stderr: "inherit",
  }).spawn();
  const stop = async () => {
    try {
      child.kill("SIGTERM");
    } catch { /* gone */ }
    await child.status;
  };
  for (let i = 0; i < 300; i++) {
    try {
      const response = await fetch(`http://127.0.0.1:${port}/healthz`);
      await response.body?.cancel();
      if (response.ok) return { pid: child.pid, port, wsPort, stop };
    } catch { /* not yet */ }
    await new Promise((resolve) => setTimeout(resolve, 100));
  }
  await stop();
  throw new Error("the chat did not start");
}
