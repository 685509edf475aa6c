/**
 * Helpers shared by the test files: a live server per test, real WebSocket
 * clients that queue what they receive, and a raw TCP client for what a
 * browser cannot send (bad handshakes, oversized or invalid frames, a peer
 * that stops reading or vanishes without a close frame).
 *
 * @module
 */

import assert from "node:assert/strict";
import net from "node:net";
import { type ChatOptions, type ChatServer, startChat } from "../main.ts";
import { JSON_PROTOCOL, SESSION_PROTOCOL_PREFIX } from "../wire/protocol.ts";
import {
  closeCodeOf,
  decodeHeader,
  encodeFrame,
  Opcode,
  upgradeRequest,
} from "./ws_frames.ts";

/** How long a test waits for a frame or a close before it fails. */
export const WAIT_MS = 5000;

/** Options every test server starts with: loopback, free ports, no log noise. */
export const TEST_OPTIONS: ChatOptions = {
  port: 0,
  wsPort: 0,
  hostname: "127.0.0.1",
  quiet: true,
  logSink: () => {},
};

/**
 * For tests that open many connections at once from 127.0.0.1: the
 * per-address limits lifted (they have tests of their own).
 */
export const MANY_FROM_ONE_ADDRESS: ChatOptions = {
  maxConnectionsPerIp: 10_000,
  connectBurst: 10_000,
};

/** Starts a server, runs `fn`, and always shuts the server down. */
export async function withChat(
  options: ChatOptions,
  fn: (chat: ChatServer) => Promise<void>,
): Promise<void> {
  const chat = await startChat({ ...TEST_OPTIONS, ...options });
  try {
    await fn(chat);
  } finally {
    await chat.shutdown();
  }
}

/** Resolves with `promise`, or rejects after `ms` with `what` in the message. */
export async function within<T>(
  promise: Promise<T>,
  what: string,
  ms = WAIT_MS,
): Promise<T> {
  let timer: ReturnType<typeof setTimeout> | undefined;
  try {
    return await Promise.race([
      promise,
      new Promise<never>((_, reject) => {
        timer = setTimeout(
          () =>
            reject(new Error(`timed out after ${ms} ms waiting for ${what}`)),
          ms,
        );
      }),
    ]);
  } finally {
    clearTimeout(timer);
  }
}

/** A JSON event as the tests see it. */
// deno-lint-ignore no-explicit-any
export type Json = any;

/** A real WebSocket client that queues every frame it receives. */
export class Peer {
  readonly socket: WebSocket;
  readonly opened: Promise<void>;
  readonly closed: Promise<CloseEvent>;
  #frames: (string | ArrayBuffer)[] = [];
  #events: Json[] = [];
  #wake?: () => void;

  constructor(url: string, protocols?: string | string[]) {
    this.socket = new WebSocket(url, protocols);
    this.socket.binaryType = "arraybuffer";
    this.opened = new Promise((resolve, reject) => {
      this.socket.addEventListener("open", () => resolve(), { once: true });
      this.socket.addEventListener(
        "error",
        () => reject(new Error(`could not connect to ${url}`)),
        { once: true },
      );
    });
    this.opened.catch(() => {});
    this.closed = new Promise((resolve) => {
      this.socket.addEventListener("close", (event) => {
        resolve(event);
        this.#wake?.();
      });
    });
    this.socket.addEventListener("message", (event) => {
      this.#frames.push(event.data);
      this.#wake?.();
    });
  }

  get isClosed(): boolean {
    return this.socket.readyState === WebSocket.CLOSED;
  }

  /** Waits until at least `count` frames are queued. */
  async #waitFor(count: number, what: string): Promise<void> {
    const deadline = Date.now() + WAIT_MS;
    while (this.#frames.length < count) {
      if (this.isClosed) throw new Error(`closed while waiting for ${what}`);
      const left = deadline - Date.now();
      if (left <= 0) throw new Error(`timed out waiting for ${what}`);
      await within(
        new Promise<void>((resolve) => this.#wake = resolve),
        what,
        left,
      );
    }
  }

  async #take(what: string): Promise<string | ArrayBuffer> {
    await this.#waitFor(1, what);
    return this.#frames.shift()!;
  }

  /** The next text frame. */
  async next(what = "a frame"): Promise<string> {
    const frame = await this.#take(what);
    assert.equal(typeof frame, "string", "expected a text frame");
    return frame as string;
  }

  /**
   * The first queued (or next) text frame matching `pattern`; frames before
   * it stay queued, in order.
   */
  async nextMatching(pattern: RegExp, what = String(pattern)): Promise<string> {
    for (let seen = 0;; seen++) {
      await this.#waitFor(seen + 1, what);
      const frame = this.#frames[seen];
      if (typeof frame === "string" && pattern.test(frame)) {
        this.#frames.splice(seen, 1);
        return frame;
      }
    }
  }

  /** The next JSON event; a batch (array) frame yields its events in order. */
  async event(what = "an event"): Promise<Json> {
    if (this.#events.length === 0) {
      const parsed = JSON.parse(await this.next(what));
      this.#events.push(...(Array.isArray(parsed) ? parsed : [parsed]));
      assert.ok(this.#events.length > 0, "a batch frame is never empty");
    }
    return this.#events.shift();
  }

  /** Frames received and not yet taken (for "nothing else arrived" checks). */
  get pending(): number {
    return this.#frames.length + this.#events.length;
  }

  send(data: string | Uint8Array): void {
    this.socket.send(data as string);
  }

  /** Closes (if still open) and waits for the close to finish. */
  async close(code?: number, reason?: string): Promise<CloseEvent> {
    if (this.socket.readyState === WebSocket.OPEN) {
      this.socket.close(code, reason);
    }
    return await within(this.closed, "the close handshake");
  }
}

/** Chat URL for a room path (`/`, `/rust-fans`) and query. */
export function chatUrl(
  chat: ChatServer,
  path = "/",
  query: Record<string, string | number> = {},
  scheme = "ws",
): string {
  const url = new URL(`${scheme}://127.0.0.1:${chat.wsPort}${path}`);
  for (const [key, value] of Object.entries(query)) {
    url.searchParams.set(key, String(value));
  }
  return url.href;
}

/**
 * A plain-text client that has joined: its welcome line came, and its
 * `/nick` (no argument: "who am I?") has been answered, so the server has it
 * in the room. Returns its nick.
 */
export async function textClient(
  chat: ChatServer,
  path = "/",
  query: Record<string, string | number> = {},
): Promise<Peer & { nick: string }> {
  const peer = new Peer(chatUrl(chat, path, query));
  await within(peer.opened, "the connection to open");
  await peer.nextMatching(
    /^ \.\.\.\. you are \S+ in \S+; here: /u,
    "the welcome line",
  );
  peer.send("/nick");
  const line = await peer.nextMatching(
    /^ \.\.\.\. you are \S+\.$/u,
    "the /nick reply",
  );
  return Object.assign(peer, { nick: line.slice(" .... you are ".length, -1) });
}

/**
 * A JSON-protocol client and its welcome; `session` offers a session secret
 * as the second subprotocol, as the page does.
 */
export async function jsonClient(
  chat: ChatServer,
  path = "/",
  query: Record<string, string | number> = {},
  session?: string,
): Promise<Peer & { welcome: Json; nick: string }> {
  const peer = new Peer(
    chatUrl(chat, path, query),
    session === undefined
      ? JSON_PROTOCOL
      : [JSON_PROTOCOL, SESSION_PROTOCOL_PREFIX + session],
  );
  await within(peer.opened, "the connection to open");
  assert.equal(peer.socket.protocol, JSON_PROTOCOL);
  const welcome = await peer.event("the welcome");
  assert.equal(welcome.type, "welcome");
  return Object.assign(peer, { welcome, nick: welcome.you as string });
}

/** Closes every peer given and waits for all the closes. */
export async function closeAll(...peers: Peer[]): Promise<void> {
  await Promise.all(peers.map((peer) => peer.close()));
}

// ---------------------------------------------------------------------------
// Raw TCP client
// ---------------------------------------------------------------------------

const encoder = new TextEncoder();
const decoder = new TextDecoder();

/** What a raw handshake got back. */
export interface RawResponse {
  status: number;
  headers: Headers;
  body: string;
}

/** A TCP connection that spoke the handshake itself. */
export class RawClient {
  #buffer = new Uint8Array(0);
  constructor(readonly conn: Deno.Conn) {}

  static async connect(port: number): Promise<RawClient> {
    return new RawClient(await Deno.connect({ hostname: "127.0.0.1", port }));
  }

  /** Sends a request and reads the response head (and a short body). */
  async request(head: string): Promise<RawResponse> {
    await this.conn.write(encoder.encode(head));
    for (;;) {
      const text = decoder.decode(this.#buffer);
      const end = text.indexOf("\r\n\r\n");
      if (end !== -1) {
        const [statusLine, ...lines] = text.slice(0, end).split("\r\n");
        const headers = new Headers();
        for (const line of lines) {
          const colon = line.indexOf(":");
          headers.append(
            line.slice(0, colon).trim(),
            line.slice(colon + 1).trim(),
          );
        }
        const headBytes = encoder.encode(text.slice(0, end + 4)).length;
        this.#buffer = this.#buffer.slice(headBytes);
        const status = Number(statusLine.split(" ")[1]);
        const length = Number(headers.get("content-length") ?? 0);
        while (status !== 101 && this.#buffer.length < length) {
          if (!await this.#fill()) break;
        }
        const body = status === 101 ? "" : decoder.decode(this.#buffer);
        return { status, headers, body };
      }
      if (!await this.#fill()) {
        throw new Error("connection closed before a response");
      }
    }
  }

  /** A WebSocket handshake on `path`, with extra header lines. */
  upgrade(
    path = "/",
    extra: Record<string, string> = {},
  ): Promise<RawResponse> {
    return this.request(upgradeRequest(path, extra));
  }

  async #fill(): Promise<boolean> {
    const chunk = new Uint8Array(64 * 1024);
    const n = await this.conn.read(chunk);
    if (n === null) return false;
    const joined = new Uint8Array(this.#buffer.length + n);
    joined.set(this.#buffer);
    joined.set(chunk.subarray(0, n), this.#buffer.length);
    this.#buffer = joined;
    return true;
  }

  /** Sends one masked frame (as a client must). */
  async sendFrame(opcode: number, payload: Uint8Array): Promise<void> {
    await this.conn.write(encodeFrame(opcode, payload));
  }

  /** The next whole frame from the server, or undefined at EOF. */
  async nextFrame(): Promise<
    { opcode: number; payload: Uint8Array } | undefined
  > {
    for (;;) {
      const buffer = this.#buffer;
      const head = decodeHeader(buffer);
      if (head && buffer.length >= head.headerLength + head.length) {
        const end = head.headerLength + head.length;
        this.#buffer = buffer.slice(end);
        return {
          opcode: head.opcode,
          payload: buffer.slice(head.headerLength, end),
        };
      }
      if (!await this.#fill()) return undefined;
    }
  }

  /** The text of the next text frame. */
  async nextText(): Promise<string> {
    for (;;) {
      const frame = await this.nextFrame();
      if (!frame) throw new Error("connection ended before a text frame");
      if (frame.opcode === Opcode.Text) return decoder.decode(frame.payload);
    }
  }

  /**
   * Reads server frames until a close frame or EOF, keeping the text frames
   * in `texts`; returns the close code (undefined if the connection ended
   * without a close frame).
   */
  async readUntilClose(): Promise<number | undefined> {
    for (;;) {
      const frame = await this.nextFrame();
      if (!frame) return undefined;
      if (frame.opcode === Opcode.Text) {
        this.texts.push(decoder.decode(frame.payload));
      }
      if (frame.opcode === Opcode.Close) return closeCodeOf(frame.payload);
    }
  }

  /** Text frames seen by `readUntilClose`. */
  readonly texts: string[] = [];

  close(): void {
    try {
      this.conn.close();
    } catch {
      // already closed
    }
  }
}

/**
 * A handshake from another loopback source address (127.0.0.2, …), for
 * per-address limits: `Deno.connect` cannot choose its source address, but
 * `node:net` can. Resolves with the status and a function that closes.
 */
export function upgradeFrom(
  localAddress: string,
  port: number,
): Promise<{ status: number; close: () => Promise<void> }> {
  return new Promise((resolve, reject) => {
    const socket = net.connect({ host: "127.0.0.1", port, localAddress });
    const closed = new Promise<void>((done) =>
      socket.once("close", () => done())
    );
    const close = async () => {
      socket.destroy();
      await closed;
    };
    socket.once("error", reject);
    socket.once("connect", () => {
      socket.write(upgradeRequest());
    });
    let head = "";
    socket.on("data", (chunk: Uint8Array) => {
      head += decoder.decode(chunk);
      const line = head.split("\r\n")[0];
      if (head.includes("\r\n")) {
        socket.removeAllListeners("data");
        socket.on("data", () => {}); // keep draining
        resolve({ status: Number(line.split(" ")[1]), close });
      }
    });
  });
}

/** A raw client that completed the handshake on `path` (and nothing else). */
export async function rawSocket(
  chat: ChatServer,
  path = "/",
  extra: Record<string, string> = {},
): Promise<RawClient> {
  const raw = await RawClient.connect(chat.wsPort);
  const response = await raw.upgrade(path, extra);
  assert.equal(response.status, 101);
  return raw;
}

/** Reads `/metrics` and returns one sample's value (0 when absent). */
export async function metric(
  chat: ChatServer,
  sample: string,
): Promise<number> {
  const text = await (await fetch(`http://127.0.0.1:${chat.port}/metrics`))
    .text();
  const line = text.split("\n").find((line) => line.startsWith(sample + " "));
  return line ? Number(line.slice(sample.length + 1)) : 0;
}

/** Polls `check` until it holds (for state the server reports, not timing). */
export async function eventually(
  what: string,
  check: () => Promise<boolean> | boolean,
): Promise<void> {
  const deadline = Date.now() + WAIT_MS;
  while (!await check()) {
    if (Date.now() > deadline) throw new Error(`never happened: ${what}`);
    await new Promise((resolve) => setTimeout(resolve, 20));
  }
}

// ---------------------------------------------------------------------------
// TLS
// ---------------------------------------------------------------------------

/** A self-signed certificate for 127.0.0.1, made by openssl in a temp dir. */
export async function selfSignedCertificate(): Promise<
  { cert: string; key: string }
> {
  const dir = await Deno.makeTempDir();
  try {
    const { code, stderr } = await new Deno.Command("openssl", {
      args: [
        "req",
        "-x509",
        "-newkey",
        "ec",
        "-pkeyopt",
        "ec_paramgen_curve:prime256v1",
        "-nodes",
        "-days",
        "2",
        "-subj",
        "/CN=127.0.0.1",
        "-addext",
        "subjectAltName=IP:127.0.0.1",
        "-addext",
        "basicConstraints=critical,CA:FALSE",
        "-keyout",
        `${dir}/key.pem`,
        "-out",
        `${dir}/cert.pem`,
      ],
      stdout: "null",
      stderr: "piped",
    }).output();
    assert.equal(code, 0, new TextDecoder().decode(stderr));
    return {
      cert: await Deno.readTextFile(`${dir}/cert.pem`),
      key: await Deno.readTextFile(`${dir}/key.pem`),
    };
  } finally {
    await Deno.remove(dir, { recursive: true });
  }
}

// ---------------------------------------------------------------------------
// The CLI as a child process
// ---------------------------------------------------------------------------

/** The CLI as a child process (Deno from `Deno.execPath()`, never a bare `deno`). */
export function cli(
  args: string[],
  stderr: "piped" | "null" = "piped",
  permissions: string[] = [],
): Deno.Command {
  return new Deno.Command(Deno.execPath(), {
    args: [
      "run",
      "--allow-net",
      "--allow-env",
      "--allow-read",
      ...permissions,
      "main.ts",
      ...args,
    ],
    // The repository, where main.ts is.
    cwd: new URL("..", import.meta.url),
    stdin: "null",
    stdout: "piped",
    stderr,
  });
}

/** Starts the CLI on free loopback ports and reads them from its first line. */
export async function startCli(
  extra: string[] = [],
  permissions: string[] = [],
): Promise<{
  child: Deno.ChildProcess;
  lines: ReadableStreamDefaultReader<string>;
  port: number;
  wsPort: number;
}> {
  const args = ["--hostname", "127.0.0.1", "--port", "0", "--ws-port", "0"];
  const child = cli([...args, ...extra], "null", permissions).spawn();
  const lines = child.stdout.pipeThrough(new TextDecoderStream()).getReader();
  let out = "";
  while (!out.includes("\n")) {
    const { value, done } = await within(lines.read(), "the start-up line");
    if (done) break;
    out += value;
  }
  const match = out.match(
    /open http:\/\/127\.0\.0\.1:(\d+)\/ \(chat on port (\d+)\)/,
  );
  assert.ok(match, `start-up line: ${out}`);
  return { child, lines, port: Number(match[1]), wsPort: Number(match[2]) };
}

/** `GET /healthz` of a chat server or process: its status code and body. */
export async function health(
  chat: { port: number },
): Promise<{ status: number; body: Record<string, unknown> }> {
  const response = await fetch(`http://127.0.0.1:${chat.port}/healthz`);
  return { status: response.status, body: await response.json() };
}
