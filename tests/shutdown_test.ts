/**
 * Shutdown under load: SIGTERM while clients keep sending. Every client
 * must get the close frame 1001, every time (RFC 6455 §7.1.1: the server
 * waits, bounded, for the client's close before it drops the TCP
 * connection, so the close frame cannot be lost to a reset).
 *
 * @module
 */

import assert from "node:assert/strict";
import net from "node:net";
import { CloseCode, JSON_PROTOCOL } from "../wire/protocol.ts";
import { startCli, within } from "./test_helpers.ts";
import {
  closeCodeOf,
  encodeFrame,
  FrameReader,
  Opcode,
  upgradeRequest,
} from "./ws_frames.ts";

/** Clients per run, spread over source addresses, protocols and rooms. */
const CLIENTS = 200;
const SOURCE_ADDRESSES = ["127.0.0.1", "127.0.0.2", "127.0.0.3", "127.0.0.4"];
const ROOMS = 10;
/** Each client sends a message this often until it sees the close. */
const SEND_EVERY_MS = 200;
const encoder = new TextEncoder();

/** How many times the whole scenario runs (each must be perfect). */
const RUNS = Number(Deno.env.get("RUNS") ?? 20);

/**
 * A client over node:net (which can choose its source address) that reads
 * every frame, sends a text frame every {@linkcode SEND_EVERY_MS} until the
 * server's close frame comes, answers it, and reports its code (undefined
 * when the connection ended without one).
 */
function sendingClient(
  localAddress: string,
  port: number,
  path: string,
  json: boolean,
): Promise<{ opened: Promise<void>; closeCode: Promise<number | undefined> }> {
  return new Promise((resolveClient, rejectClient) => {
    const socket = net.connect({ host: "127.0.0.1", port, localAddress });
    let timer: ReturnType<typeof setInterval> | undefined;
    let markOpened!: () => void;
    const opened = new Promise<void>((resolve) => markOpened = resolve);
    let code: number | undefined;
    const closeCode = new Promise<number | undefined>((resolve) => {
      socket.once("close", () => {
        clearInterval(timer);
        resolve(code);
      });
    });
    socket.once("error", () => {}); // a reset shows as a missing close code
    socket.once("connect", () => {
      const extra: Record<string, string> = json
        ? { "Sec-WebSocket-Protocol": JSON_PROTOCOL }
        : {};
      socket.write(upgradeRequest(path, extra));
      resolveClient({ opened, closeCode });
    });
    socket.once("error", rejectClient);
    const reader = new FrameReader();
    socket.on("data", (chunk: Uint8Array) => {
      const opening = reader.head === undefined;
      const frames = reader.push(chunk);
      if (reader.head === undefined) return;
      if (opening) {
        assert.match(reader.head, /^HTTP\/1\.1 101/);
        markOpened();
        let n = 0;
        timer = setInterval(() => {
          const text = json
            ? JSON.stringify({ type: "message", text: `m${n++}` })
            : `m${n++}`;
          socket.write(encodeFrame(Opcode.Text, encoder.encode(text)));
        }, SEND_EVERY_MS);
      }
      const close = frames.find((frame) => frame.opcode === Opcode.Close);
      if (close) {
        code = closeCodeOf(close.payload);
        clearInterval(timer);
        // The closing handshake's answer; the server then ends the TCP.
        socket.write(encodeFrame(Opcode.Close, close.payload.slice()));
      }
    });
  });
}

Deno.test({
  name:
    `SIGTERM while ${CLIENTS} clients keep sending gives every one 1001, ${RUNS} times in a row`,
  fn: async () => {
    for (let run = 0; run < RUNS; run++) {
      const { child, lines, wsPort } = await startCli([
        "--max-connections-per-ip",
        "1000",
        "--connect-burst",
        "1000",
        "--quiet",
      ]);
      const clients = await Promise.all(
        Array.from({ length: CLIENTS }, (_, i) =>
          sendingClient(
            SOURCE_ADDRESSES[i % SOURCE_ADDRESSES.length],
            wsPort,
            `/room-${i % ROOMS}`,
            i % 2 === 0,
          )),
      );
      await Promise.all(clients.map((client) => within(client.opened, "open")));
      // Let the sends run for a while: frames both ways at the signal.
      await new Promise((resolve) => setTimeout(resolve, 3 * SEND_EVERY_MS));
      child.kill("SIGTERM");
      const codes = await Promise.all(
        clients.map((client) => within(client.closeCode, "the close")),
      );
      const status = await within(child.status, "the exit");
      await lines.cancel();
      const wrong = codes.filter((code) => code !== CloseCode.GoingAway);
      assert.deepEqual(
        wrong,
        [],
        `run ${
          run + 1
        }: ${wrong.length} of ${CLIENTS} clients did not get 1001`,
      );
      assert.equal(status.code, 0);
    }
  },
});
