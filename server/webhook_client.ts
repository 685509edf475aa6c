/**
 * The webhooks' HTTP/1.1 client: a POST over a kept-alive connection
 * (`Deno.connect`, or `Deno.connectTls` for `https:`), its answer's status
 * read and its body read past (or kept, for the proxy: `exchange`). It does what a delivery needs and no more,
 * at about a third of `fetch`'s CPU per request (bench/README.md, "Seventh
 * session: webhooks"): a room's deliveries go one after another, so each
 * costs a whole round of the event loop, and a busy chat pays it per
 * event.
 *
 * What it does not do, on purpose: follow redirects (a redirect is an
 * answer that is not 2xx, so a failure), use a proxy (`HTTP_PROXY` is not
 * read), HTTP/2, or send anything but `Content-Length` bodies.
 *
 * @module
 */

import { traceHeaders } from "./telemetry.ts";

/** A response's status line and headers may be at most this long. */
export const MAX_RESPONSE_HEAD_BYTES = 16 * 1024;
/**
 * A response's body is read past up to this many bytes; a longer one is
 * left unread and its connection closed (the status still counts).
 */
export const MAX_RESPONSE_BODY_BYTES = 64 * 1024;
/**
 * An idle connection older than this is closed rather than used: servers
 * close kept-alive connections after a few seconds (Node's after 5), and a
 * request sent as they do would fail for nothing.
 */
export const IDLE_CONNECTION_MS = 4_000;
/**
 * How often requests are checked against their deadline (one timer for
 * all, not one per request: a request's timeout is met within this).
 */
export const TIMEOUT_CHECK_MS = 100;

const encoder = new TextEncoder();
const decoder = new TextDecoder();
const CR = 13;
const LF = 10;

/** A request or connection that failed: no status came. */
export class WebhookRequestError extends Error {}

/** One connection and what it has read past its last response. */
interface Connection {
  conn: Deno.Conn;
  /** Bytes read and not yet used. */
  buffer: Uint8Array;
  /** `buffer`'s bytes in use, from 0. */
  length: number;
  /** When it was last given back (`performance.now()`). */
  idleSince: number;
  /** It has carried a request before (a failure may be the server closing it). */
  reused: boolean;
  /** When its request is given up (`performance.now()`; Infinity: idle). */
  deadline: number;
  /** Its request was given up: closed for that. */
  timedOut: boolean;
}

/** POSTs to one URL over kept-alive connections (see the module's notes). */
export class WebhookClient {
  #hostname: string;
  #port: number;
  #tls: boolean;
  /** The start of every request: its line, `Host` and fixed headers. */
  #head: string;
  #idle: Connection[] = [];
  #busy = new Set<Connection>();
  #watcher?: ReturnType<typeof setInterval>;
  #closed = false;

  constructor(url: string) {
    const parsed = new URL(url);
    this.#tls = parsed.protocol === "https:";
    this.#hostname = parsed.hostname.replace(/^\[(.*)\]$/, "$1");
    this.#port = Number(parsed.port) || (this.#tls ? 443 : 80);
    const auth = parsed.username || parsed.password
      ? `Authorization: Basic ${
        btoa(
          `${decodeURIComponent(parsed.username)}:${
            decodeURIComponent(parsed.password)
          }`,
        )
      }\r\n`
      : "";
    this.#head = `POST ${parsed.pathname}${parsed.search} HTTP/1.1\r\n` +
      `Host: ${parsed.host}\r\n` +
      "User-Agent: deno-chat\r\n" +
      "Content-Type: application/json\r\n" + auth;
  }

  /**
   * POSTs `body` with `headers` (names and values of the caller's, which
   * must be header-safe) and the active span's trace context
   * (`traceparent`, as `fetch` would send), and answers the response's
   * status; throws a {@linkcode WebhookRequestError} when none came within
   * `timeoutMs`.
   */
  async post(
    headers: string,
    body: string,
    timeoutMs: number,
  ): Promise<number> {
    return (await this.#send(headers, body, timeoutMs)).status;
  }

  /**
   * As {@linkcode WebhookClient.post}, and answers the response's body too
   * (server/proxy.ts reads the app's answer); a body longer than
   * `maxBodyBytes` is a {@linkcode WebhookRequestError}.
   */
  async exchange(
    headers: string,
    body: string,
    timeoutMs: number,
    maxBodyBytes: number,
  ): Promise<{ status: number; body: Uint8Array }> {
    const answer = await this.#send(headers, body, timeoutMs, maxBodyBytes);
    return { status: answer.status, body: answer.body ?? new Uint8Array() };
  }

  async #send(
    headers: string,
    body: string,
    timeoutMs: number,
    maxBodyBytes?: number,
  ): Promise<{ status: number; body?: Uint8Array }> {
    const bytes = encoder.encode(
      `${this.#head}${traceLines()}${headers}Content-Length: ${
        utf8Length(body)
      }\r\n\r\n${body}`,
    );
    const deadline = performance.now() + timeoutMs;
    for (let attempt = 0;; attempt++) {
      const connection = await this.#connection(deadline, timeoutMs);
      connection.deadline = deadline;
      this.#watch();
      const kept: Kept | undefined = maxBodyBytes === undefined
        ? undefined
        : { max: maxBodyBytes, chunks: [], length: 0, tooLong: false };
      try {
        await writeAll(connection.conn, bytes);
        const answer = await readResponse(connection, kept);
        if (answer.reusable && !this.#closed) this.#giveBack(connection);
        else this.#drop(connection);
        if (!kept) return { status: answer.status };
        if (kept.tooLong) {
          throw new WebhookRequestError(
            `the response's body is longer than ${kept.max} bytes`,
          );
        }
        return { status: answer.status, body: joined(kept) };
      } catch (error) {
        this.#drop(connection);
        if (connection.timedOut) {
          throw new WebhookRequestError(`no answer within ${timeoutMs} ms`);
        }
        // A kept-alive connection the server had closed: once more, anew.
        if (
          connection.reused && attempt === 0 && !this.#closed &&
          !(error instanceof WebhookRequestError)
        ) {
          continue;
        }
        throw error instanceof WebhookRequestError
          ? error
          : new WebhookRequestError(
            error instanceof Error ? error.message : String(error),
          );
      }
    }
  }

  /** Closes every connection; requests on their way fail. */
  close(): void {
    this.#closed = true;
    clearInterval(this.#watcher);
    this.#watcher = undefined;
    for (const connection of [...this.#idle, ...this.#busy]) {
      this.#drop(connection);
    }
    this.#idle = [];
  }

  /**
   * Closes the connections whose request is past its deadline, every
   * {@linkcode TIMEOUT_CHECK_MS} while any request is on its way.
   */
  #watch(): void {
    if (this.#watcher !== undefined) return;
    this.#watcher = setInterval(() => {
      const now = performance.now();
      for (const connection of [...this.#busy]) {
        if (connection.deadline <= now) {
          connection.timedOut = true;
          this.#drop(connection);
        }
      }
      if (this.#busy.size === 0) {
        clearInterval(this.#watcher);
        this.#watcher = undefined;
      }
    }, TIMEOUT_CHECK_MS);
  }

  /**
   * An idle connection young enough, else a new one (given up on at the
   * deadline).
   */
  async #connection(deadline: number, timeoutMs: number): Promise<Connection> {
    if (this.#closed) throw new WebhookRequestError("the client is closed");
    const now = performance.now();
    while (this.#idle.length > 0) {
      const connection = this.#idle.pop()!;
      if (now - connection.idleSince < IDLE_CONNECTION_MS) {
        this.#busy.add(connection);
        connection.reused = true;
        return connection;
      }
      this.#drop(connection);
    }
    const target = { hostname: this.#hostname, port: this.#port };
    const connecting = this.#tls
      ? Deno.connectTls(target)
      : Deno.connect(target);
    let timer: ReturnType<typeof setTimeout> | undefined;
    let late = false;
    let conn: Deno.Conn;
    try {
      conn = await Promise.race([
        connecting,
        new Promise<never>((_, reject) => {
          timer = setTimeout(() => {
            late = true;
            reject(
              new WebhookRequestError(`no connection within ${timeoutMs} ms`),
            );
          }, Math.max(0, deadline - performance.now()));
        }),
      ]);
    } catch (error) {
      // One made after all is closed when it comes.
      connecting.then((made) => late && made.close(), () => {});
      throw error instanceof WebhookRequestError
        ? error
        : new WebhookRequestError(
          `cannot connect: ${error instanceof Error ? error.message : error}`,
        );
    } finally {
      clearTimeout(timer);
    }
    const connection: Connection = {
      conn,
      buffer: new Uint8Array(4096),
      length: 0,
      idleSince: now,
      reused: false,
      deadline,
      timedOut: false,
    };
    if (this.#closed) {
      conn.close();
      throw new WebhookRequestError("the client is closed");
    }
    this.#busy.add(connection);
    return connection;
  }

  #giveBack(connection: Connection): void {
    this.#busy.delete(connection);
    connection.deadline = Infinity;
    connection.idleSince = performance.now();
    this.#idle.push(connection);
  }

  #drop(connection: Connection): void {
    this.#busy.delete(connection);
    const at = this.#idle.indexOf(connection);
    if (at !== -1) this.#idle.splice(at, 1);
    try {
      connection.conn.close();
    } catch {
      // closed already
    }
  }
}

/**
 * The active span's trace-context headers as header lines (none when
 * nothing is recorded); a value that is not plain visible ASCII, which a
 * `tracestate` taken from elsewhere could be, is left out.
 */
function traceLines(): string {
  let lines = "";
  for (const [name, value] of Object.entries(traceHeaders())) {
    if (/^[\x20-\x7e]*$/.test(value)) lines += `${name}: ${value}\r\n`;
  }
  return lines;
}

/** A response's body as `exchange` keeps it: up to `max` bytes. */
interface Kept {
  max: number;
  chunks: Uint8Array[];
  length: number;
  /** It was longer than `max` (what is kept is not all of it). */
  tooLong: boolean;
}

/** Keeps a copy of `bytes` (the buffer they are in is reused). */
function keep(kept: Kept, bytes: Uint8Array): void {
  if (bytes.length === 0) return;
  kept.chunks.push(bytes.slice());
  kept.length += bytes.length;
}

/** The kept chunks as one array. */
function joined(kept: Kept): Uint8Array {
  const bytes = new Uint8Array(kept.length);
  let at = 0;
  for (const chunk of kept.chunks) {
    bytes.set(chunk, at);
    at += chunk.length;
  }
  return bytes;
}

/** The length of `text` in UTF-8, without encoding it. */
function utf8Length(text: string): number {
  let bytes = text.length;
  for (let i = 0; i < text.length; i++) {
    const unit = text.charCodeAt(i);
    if (unit < 0x80) continue;
    if (unit < 0x800) bytes += 1;
    else if (
      unit >= 0xd800 && unit <= 0xdbff &&
      (text.charCodeAt(i + 1) & 0xfc00) === 0xdc00
    ) {
      bytes += 2; // a surrogate pair: 4 bytes for 2 units
      i++;
    } else bytes += 2; // 3 bytes (a lone surrogate too: U+FFFD)
  }
  return bytes;
}

async function writeAll(conn: Deno.Conn, bytes: Uint8Array): Promise<void> {
  for (let written = 0; written < bytes.length;) {
    written += await conn.write(bytes.subarray(written));
  }
}

/** Reads more into the connection's buffer; false at the end of the stream. */
async function fill(connection: Connection): Promise<boolean> {
  if (connection.length === connection.buffer.length) {
    const bigger = new Uint8Array(connection.buffer.length * 2);
    bigger.set(connection.buffer);
    connection.buffer = bigger;
  }
  const n = await connection.conn.read(
    connection.buffer.subarray(connection.length),
  );
  if (n === null) return false;
  connection.length += n;
  return true;
}

/** Forgets the first `count` bytes of the buffer. */
function consume(connection: Connection, count: number): void {
  connection.buffer.copyWithin(0, count, connection.length);
  connection.length -= count;
}

/** Where `\r\n` (or `\r\n\r\n` with `double`) starts at or after `from`; -1. */
function lineEnd(connection: Connection, from: number, double = false): number {
  const { buffer, length } = connection;
  const need = double ? 4 : 2;
  for (let i = from; i + need <= length; i++) {
    if (
      buffer[i] === CR && buffer[i + 1] === LF &&
      (!double || (buffer[i + 2] === CR && buffer[i + 3] === LF))
    ) {
      return i;
    }
  }
  return -1;
}

/**
 * Reads one response: its status, and whether the connection can carry
 * another; its body is read past, or kept in `kept`.
 */
async function readResponse(
  connection: Connection,
  kept?: Kept,
): Promise<{ status: number; reusable: boolean }> {
  for (;;) {
    let end = lineEnd(connection, 0, true);
    while (end === -1) {
      if (connection.length > MAX_RESPONSE_HEAD_BYTES) {
        throw new WebhookRequestError("the response's head is too long");
      }
      if (!await fill(connection)) {
        throw new Error("the connection closed before a response");
      }
      end = lineEnd(connection, 0, true);
    }
    const head = decoder.decode(connection.buffer.subarray(0, end));
    consume(connection, end + 4);
    const [statusLine, ...lines] = head.split("\r\n");
    const match = /^HTTP\/1\.([01]) (\d{3})/.exec(statusLine);
    if (!match) throw new WebhookRequestError("not an HTTP/1.x response");
    const status = Number(match[2]);
    // 1xx: an interim answer, the real one follows.
    if (status < 200) continue;
    let contentLength: number | undefined;
    let chunked = false;
    let close = match[1] === "0";
    for (const line of lines) {
      const colon = line.indexOf(":");
      if (colon === -1) continue;
      const name = line.slice(0, colon).trim().toLowerCase();
      const value = line.slice(colon + 1).trim().toLowerCase();
      if (name === "content-length") {
        if (!/^\d+$/.test(value)) {
          throw new WebhookRequestError("a bad Content-Length");
        }
        contentLength = Number(value);
      } else if (name === "transfer-encoding") {
        chunked = value.split(",").map((v) => v.trim()).includes("chunked");
      } else if (name === "connection") {
        const options = value.split(",").map((v) => v.trim());
        if (options.includes("close")) close = true;
        else if (options.includes("keep-alive")) close = false;
      }
    }
    let read: boolean;
    if (status === 204 || status === 304) read = true;
    else if (chunked) read = await skipChunked(connection, kept);
    else if (contentLength !== undefined) {
      read = await skip(connection, contentLength, kept);
    } else if (kept) {
      // Delimited by the end of the connection: kept up to its limit.
      do {
        keep(kept, connection.buffer.subarray(0, connection.length));
        connection.length = 0;
      } while (kept.length <= kept.max && await fill(connection));
      kept.tooLong = kept.length > kept.max;
      return { status, reusable: false };
    } else {
      // Delimited by the end of the connection: read past what fits.
      while (connection.length <= MAX_RESPONSE_BODY_BYTES) {
        connection.length = 0;
        if (!await fill(connection)) break;
      }
      return { status, reusable: false };
    }
    if (kept && !read && !kept.tooLong) {
      throw new WebhookRequestError("the response's body was cut short");
    }
    // Bytes beyond the response: not ours to read, so not a connection to keep.
    return { status, reusable: read && !close && connection.length === 0 };
  }
}

/**
 * Reads past `count` bytes of body (kept in `kept`, if given); false if
 * they were more than {@linkcode MAX_RESPONSE_BODY_BYTES} (or `kept`'s
 * limit: left unread) or the stream ended.
 */
async function skip(
  connection: Connection,
  count: number,
  kept?: Kept,
): Promise<boolean> {
  if (count > (kept ? kept.max - kept.length : MAX_RESPONSE_BODY_BYTES)) {
    if (kept) kept.tooLong = true;
    return false;
  }
  while (connection.length < count) {
    count -= connection.length;
    if (kept) keep(kept, connection.buffer.subarray(0, connection.length));
    connection.length = 0;
    if (!await fill(connection)) return false;
  }
  if (kept) keep(kept, connection.buffer.subarray(0, count));
  consume(connection, count);
  return true;
}

/**
 * Reads past a chunked body (kept in `kept`, if given) and its trailers;
 * false if too long or cut.
 */
async function skipChunked(
  connection: Connection,
  kept?: Kept,
): Promise<boolean> {
  let total = 0;
  for (;;) {
    let end = lineEnd(connection, 0);
    while (end === -1) {
      if (connection.length > MAX_RESPONSE_HEAD_BYTES) return false;
      if (!await fill(connection)) return false;
      end = lineEnd(connection, 0);
    }
    const sizeText = decoder.decode(
      connection.buffer.subarray(0, end),
    ).split(";")[0].trim();
    if (!/^[0-9a-fA-F]+$/.test(sizeText)) {
      throw new WebhookRequestError("a bad chunk size");
    }
    const size = parseInt(sizeText, 16);
    consume(connection, end + 2);
    if (size === 0) {
      // Trailers, up to an empty line.
      for (;;) {
        let line = lineEnd(connection, 0);
        while (line === -1) {
          if (connection.length > MAX_RESPONSE_HEAD_BYTES) return false;
          if (!await fill(connection)) return false;
          line = lineEnd(connection, 0);
        }
        consume(connection, line + 2);
        if (line === 0) return true;
      }
    }
    total += size;
    if (total > (kept ? kept.max : MAX_RESPONSE_BODY_BYTES)) {
      if (kept) kept.tooLong = true;
      return false;
    }
    if (!await skip(connection, size, kept)) return false;
    if (!await skip(connection, 2)) return false; // the chunk's CRLF
  }
}
