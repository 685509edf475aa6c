/**
 * The one WebSocket frame codec (RFC 6455 §5.2), the handshake request, and
 * a free loopback port, for the tests' raw clients
 * (`RawClient` in test_helpers.ts) and the benches (bench/):
 * client frames out (FIN set, masked, as a client must send them) and frame
 * headers in. It knows nothing of sockets: callers keep their own buffers.
 *
 * @module
 */

/** The opcodes the tests and the load generator use. */
export const Opcode = {
  Continuation: 0x0,
  Text: 0x1,
  Binary: 0x2,
  Close: 0x8,
  Ping: 0x9,
  Pong: 0xa,
} as const;

/**
 * One client frame: FIN set, `opcode`, the payload masked with a random key
 * (a server must close on an unmasked client frame).
 */
export function encodeFrame(opcode: number, payload: Uint8Array): Uint8Array {
  const length = payload.length;
  const head = length < 126 ? 2 : length < 65_536 ? 4 : 10;
  const frame = new Uint8Array(head + 4 + length);
  frame[0] = 0x80 | opcode;
  if (head === 2) frame[1] = 0x80 | length;
  else if (head === 4) {
    frame[1] = 0x80 | 126;
    frame[2] = length >> 8;
    frame[3] = length & 0xff;
  } else {
    frame[1] = 0x80 | 127;
    new DataView(frame.buffer).setBigUint64(2, BigInt(length));
  }
  const key = (Math.random() * 0x1_0000_0000) >>> 0;
  const mask = [
    key >>> 24,
    (key >>> 16) & 0xff,
    (key >>> 8) & 0xff,
    key & 0xff,
  ];
  frame.set(mask, head);
  const base = head + 4;
  for (let i = 0; i < length; i++) frame[base + i] = payload[i] ^ mask[i & 3];
  return frame;
}

/** A frame's header, as {@linkcode decodeHeader} reads it. */
export interface FrameHeader {
  /** The last frame of its message. */
  fin: boolean;
  opcode: number;
  /** Masked: a client's frame (a server's never is). */
  masked: boolean;
  /** Payload bytes. */
  length: number;
  /** Where the payload starts, from the frame's first byte (mask key included). */
  headerLength: number;
}

/**
 * The header of the frame that starts at `offset` in `bytes`, or undefined
 * while the bytes so far hold only part of it. The payload is
 * `bytes[offset + headerLength, offset + headerLength + length)`, once that
 * many bytes have come.
 */
export function decodeHeader(
  bytes: Uint8Array,
  offset = 0,
): FrameHeader | undefined {
  const available = bytes.length - offset;
  if (available < 2) return undefined;
  const b0 = bytes[offset];
  const b1 = bytes[offset + 1];
  const masked = (b1 & 0x80) !== 0;
  let length = b1 & 0x7f;
  let headerLength = 2;
  if (length === 126) {
    if (available < 4) return undefined;
    length = (bytes[offset + 2] << 8) | bytes[offset + 3];
    headerLength = 4;
  } else if (length === 127) {
    if (available < 10) return undefined;
    length = Number(
      new DataView(bytes.buffer, bytes.byteOffset + offset + 2, 8)
        .getBigUint64(0),
    );
    headerLength = 10;
  }
  if (masked) headerLength += 4;
  return {
    fin: (b0 & 0x80) !== 0,
    opcode: b0 & 0x0f,
    masked,
    length,
    headerLength,
  };
}

/** The status code of a close frame's payload, if it has one. */
export function closeCodeOf(payload: Uint8Array): number | undefined {
  return payload.length >= 2 ? (payload[0] << 8) | payload[1] : undefined;
}

/**
 * The head of a client's WebSocket handshake request on `path` (by default a
 * fixed key, for tools that check the status, not the accept hash), with
 * extra headers.
 */
export function upgradeRequest(
  path = "/",
  extra: Record<string, string> = {},
  { host = "127.0.0.1", key = "dGhlIHNhbXBsZSBub25jZQ==" } = {},
): string {
  const lines = [
    `GET ${path} HTTP/1.1`,
    `Host: ${host}`,
    "Upgrade: websocket",
    "Connection: Upgrade",
    `Sec-WebSocket-Key: ${key}`,
    "Sec-WebSocket-Version: 13",
    ...Object.entries(extra).map(([key, value]) => `${key}: ${value}`),
  ];
  return lines.join("\r\n") + "\r\n\r\n";
}

/** A free TCP port on 127.0.0.1 (free when asked; taken soon after). */
export function freePort(): number {
  const listener = Deno.listen({ hostname: "127.0.0.1", port: 0 });
  const { port } = listener.addr;
  listener.close();
  return port;
}

/** A frame from a server, as {@linkcode FrameReader} hands it out. */
export interface Frame {
  opcode: number;
  /** Valid until the next `push` (it may share the reader's buffer). */
  payload: Uint8Array;
}

/**
 * A client's view of what a server sends, chunk by chunk as a socket gives
 * it: the HTTP response head first (kept in `head`), then whole frames.
 */
export class FrameReader {
  #buffer = new Uint8Array(0);
  /** The response head (status line and headers), once it has come. */
  head?: string;

  /** Adds bytes; returns the frames they complete, in order. */
  push(chunk: Uint8Array): Frame[] {
    const bytes = new Uint8Array(this.#buffer.length + chunk.length);
    bytes.set(this.#buffer);
    bytes.set(chunk, this.#buffer.length);
    let offset = 0;
    if (this.head === undefined) {
      const end = headEnd(bytes);
      if (end === -1) {
        this.#buffer = bytes;
        return [];
      }
      this.head = new TextDecoder().decode(bytes.subarray(0, end));
      offset = end;
    }
    const frames: Frame[] = [];
    for (;;) {
      const header = decodeHeader(bytes, offset);
      const size = header ? header.headerLength + header.length : 0;
      if (!header || bytes.length - offset < size) break;
      frames.push({
        opcode: header.opcode,
        payload: bytes.subarray(offset + header.headerLength, offset + size),
      });
      offset += size;
    }
    this.#buffer = bytes.slice(offset);
    return frames;
  }
}

/** Where an HTTP head ends (after its CRLF CRLF), or -1 before it has. */
function headEnd(bytes: Uint8Array): number {
  for (let i = 3; i < bytes.length; i++) {
    if (
      bytes[i] === 10 && bytes[i - 1] === 13 && bytes[i - 2] === 10 &&
      bytes[i - 3] === 13
    ) return i + 1;
  }
  return -1;
}
