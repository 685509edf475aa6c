/**
 * Test helpers for verified identity and moderation: login tokens minted
 * with `jose` (HS256 with a shared secret, ES256 with a key pair), clients
 * that present them, and a server's log lines kept for assertions.
 *
 * @module
 */

import assert from "node:assert/strict";
import net from "node:net";
import { exportSPKI, generateKeyPair, type JWTPayload, SignJWT } from "jose";
import type { ChatOptions, ChatServer } from "../main.ts";
import {
  AUTH_PROTOCOL_PREFIX,
  JSON_PROTOCOL,
  OP_PROTOCOL_PREFIX,
} from "../wire/protocol.ts";
import { chatUrl, type Json, Peer, within } from "./test_helpers.ts";
import { upgradeRequest } from "./ws_frames.ts";

/** The HS256 secret the tests' servers verify with. */
export const SECRET = "test-secret-of-at-least-32-bytes-long!!";

/** The `--op-key` the tests' servers take. */
export const OP_KEY = "test-op-key-0123456789";

/** Server options: HS256 tokens with {@linkcode SECRET}, and the op key. */
export const AUTH_OPTIONS: ChatOptions = { authSecret: SECRET, opKey: OP_KEY };

/** Seconds a test token lives. */
const TTL_SECONDS = 600;

/** A token's claims beyond the defaults (`sub` given, `exp` in 10 min). */
export type Claims = JWTPayload & { name?: string; roles?: string[] };

/**
 * An HS256 token for `claims` (a `sub` of `undefined` is left out; `exp`
 * defaults to 10 minutes from now), signed with `secret`.
 */
export function hs256(
  claims: Claims,
  secret: string = SECRET,
): Promise<string> {
  const now = Math.floor(Date.now() / 1000);
  const payload = { exp: now + TTL_SECONDS, ...claims };
  return new SignJWT(payload).setProtectedHeader({ alg: "HS256" })
    .sign(new TextEncoder().encode(secret));
}

/** An ES256 key pair: the public key as PEM (for the server), and a signer. */
export async function es256Keys(): Promise<{
  publicPem: string;
  sign: (claims: Claims) => Promise<string>;
}> {
  const { publicKey, privateKey } = await generateKeyPair("ES256", {
    extractable: true,
  });
  return {
    publicPem: await exportSPKI(publicKey),
    sign: (claims) => {
      const now = Math.floor(Date.now() / 1000);
      return new SignJWT({ exp: now + TTL_SECONDS, ...claims })
        .setProtectedHeader({ alg: "ES256" }).sign(privateKey);
    },
  };
}

/** How a client shows who it is. */
export interface Credentials {
  /** A login token, as the `chat.auth.` subprotocol (as browsers send it). */
  token?: string;
  /** A login token as `Authorization: Bearer`. */
  bearer?: string;
  /** The op key, as the `chat.op.` subprotocol. */
  opKey?: string;
  /** A session secret. */
  session?: string;
}

/** The subprotocols a JSON client with these credentials offers. */
export function protocolsOf(credentials: Credentials): string[] {
  return [
    JSON_PROTOCOL,
    ...(credentials.token ? [AUTH_PROTOCOL_PREFIX + credentials.token] : []),
    ...(credentials.opKey ? [OP_PROTOCOL_PREFIX + credentials.opKey] : []),
    ...(credentials.session ? ["chat.session." + credentials.session] : []),
  ];
}

/** A JSON client with credentials, and its welcome. */
export async function signedClient(
  chat: ChatServer,
  credentials: Credentials,
  path = "/",
  query: Record<string, string | number> = {},
): Promise<Peer & { welcome: Json; nick: string }> {
  const url = chatUrl(chat, path, query);
  const protocols = protocolsOf(credentials);
  const peer = credentials.bearer
    ? new BearerPeer(url, protocols, credentials.bearer)
    : new Peer(url, protocols);
  await within(peer.opened, "the connection to open");
  assert.equal(peer.socket.protocol, JSON_PROTOCOL);
  const welcome = await peer.event("the welcome");
  assert.equal(welcome.type, "welcome");
  return Object.assign(peer, { welcome, nick: welcome.you as string });
}

/** A {@linkcode Peer} whose handshake carries `Authorization: Bearer`. */
class BearerPeer extends Peer {
  constructor(url: string, protocols: string[], token: string) {
    // Deno's WebSocket takes headers (browsers' does not).
    const options = {
      protocols,
      headers: { authorization: `Bearer ${token}` },
    };
    super(url, options as unknown as string[]);
  }
}

/** A server's log lines, kept (the server logs at info). */
export function logLines(): { lines: string[]; options: ChatOptions } {
  const lines: string[] = [];
  return {
    lines,
    options: { quiet: false, logSink: (line) => lines.push(line) },
  };
}

/**
 * The status of a handshake on `path` with `headers` from another loopback
 * source address (127.0.0.2, …), for bans by address: `node:net` can
 * choose its source address, `Deno.connect` cannot. The connection is
 * closed before this resolves.
 */
export function statusFrom(
  localAddress: string,
  port: number,
  path = "/",
  headers: Record<string, string> = {},
): Promise<number> {
  return new Promise((resolve, reject) => {
    const socket = net.connect({ host: "127.0.0.1", port, localAddress });
    let head = "";
    socket.once("error", reject);
    socket.once("connect", () => socket.write(upgradeRequest(path, headers)));
    socket.on("data", (chunk: Uint8Array) => {
      head += new TextDecoder().decode(chunk);
      if (!head.includes("\r\n")) return;
      socket.removeAllListeners("data");
      socket.on("data", () => {}); // keep draining
      socket.once("close", () => resolve(Number(head.split(" ")[1])));
      socket.destroy();
    });
  });
}
