/**
 * The WebSocket handshake as the chat port reads it: the headers, parsed as
 * RFC 7230 lists, the subprotocol it answers with, the request's URL, the
 * origin rule, and the answer to a refused upgrade. Pure functions of a
 * request: no process state, and no import of `main.ts` (the protocol
 * names and the allowed origins come in as arguments).
 *
 * Why not leave it to `Deno.upgradeWebSocket`: its `protocol` option looks
 * the chosen name up in `Sec-WebSocket-Protocol` split on `", "` only, so
 * `chat.v1.json,chat.session.S` (as Node's `ws` and Python's
 * `websocket-client` send it) is refused. We choose here, call it without
 * `protocol`, and set the answer's header ourselves.
 *
 * @module
 */

import { Status } from "../wire/protocol.ts";

/**
 * The elements of a list-valued header (RFC 7230 §7, the `#rule`): split on
 * commas with any optional whitespace (spaces, tabs) around them, empty
 * elements dropped, so `a,b`, `a , b` and `, a,,b ,` are all `[a, b]`. A
 * header sent as several lines is one list (RFC 7230 §3.2.2) and
 * `Headers.get` already joins the lines with `", "`, so the elements of every
 * line come, in order.
 */
export function listElements(value: string | null): string[] {
  if (value === null) return [];
  return value.split(",").map((element) =>
    element.replace(/^[ \t]+|[ \t]+$/g, "")
  )
    .filter((element) => element !== "");
}

/**
 * Whether the list-valued header `name` holds `token`, compared ignoring
 * ASCII case, as `Connection` and `Upgrade` tokens are (RFC 7230 §6.1, §6.7):
 * `Connection: keep-alive, Upgrade` holds `upgrade`.
 */
export function hasToken(
  headers: Headers,
  name: string,
  token: string,
): boolean {
  const wanted = token.toLowerCase();
  return listElements(headers.get(name)).some((element) =>
    element.toLowerCase() === wanted
  );
}

/**
 * The subprotocols a client offers in `Sec-WebSocket-Protocol`, in its order.
 * Names are compared exactly (RFC 6455 §4.1: the server must answer with one
 * of them as sent), so no case is changed.
 */
export function offeredProtocols(headers: Headers): string[] {
  return listElements(headers.get("sec-websocket-protocol"));
}

/**
 * The subprotocol to answer with: the first of `supported` (our order of
 * preference) that the client offered, or undefined to answer with none
 * (plain text). Only a name in `supported` is ever answered, so whatever
 * else was offered (unknown protocols, a session secret) is never echoed.
 */
export function chooseProtocol(
  offered: readonly string[],
  supported: readonly string[],
): string | undefined {
  return supported.find((name) => offered.includes(name));
}

/** What the chat port reads from a handshake request. */
export interface Handshake {
  /** `Upgrade` names `websocket` (any case): a WebSocket handshake at all. */
  websocket: boolean;
  /** Every subprotocol offered, in the client's order (session included). */
  offered: string[];
  /** The subprotocol to answer with, or undefined for none. */
  protocol: string | undefined;
}

/**
 * Reads a handshake request's headers: whether it asks for WebSocket, what
 * it offers, and which of `supported` to answer with. `Connection` is left
 * to `Deno.upgradeWebSocket`, which already reads it as a token list.
 */
export function readHandshake(
  headers: Headers,
  supported: readonly string[],
): Handshake {
  const offered = offeredProtocols(headers);
  return {
    websocket: hasToken(headers, "upgrade", "websocket"),
    offered,
    protocol: chooseProtocol(offered, supported),
  };
}

/**
 * The request's URL, or undefined when its `Host` makes none (`Host: a b`):
 * a 400, not an exception.
 */
export function parseUrl(req: Request): URL | undefined {
  try {
    return new URL(req.url);
  } catch {
    return undefined;
  }
}

/**
 * Is this request's origin allowed to open a chat connection? Only browsers
 * send `Origin`, and it is what stops another site's page from using a
 * visitor's browser to join the chat; terminal tools send none. Without an
 * `allowed` list (`--allow-origin`), the page's own host is.
 */
export function originAllowed(
  origin: string | null,
  host: string | null,
  allowed: readonly string[],
): boolean {
  if (origin === null) return true;
  if (allowed.length > 0) {
    return allowed.includes("*") || allowed.includes(origin);
  }
  try {
    return new URL(origin).hostname === new URL(`http://${host}`).hostname;
  } catch {
    return false;
  }
}

/**
 * The answer to a refused upgrade: its message as plain text, with what
 * the status calls for (426: the upgrade to ask for; 429: when to retry).
 */
export function refusalResponse(status: number, message: string): Response {
  return new Response(message + "\n", {
    status,
    headers: {
      "content-type": "text/plain; charset=utf-8",
      ...(status === Status.UpgradeRequired
        ? { upgrade: "websocket", connection: "Upgrade" }
        : {}),
      ...(status === Status.TooManyRequests ? { "retry-after": "1" } : {}),
    },
  });
}
