/**
 * The page server's routes: the page (client.html with the chat port and
 * the wire contract's constants filled in, and a policy that lets only its
 * own script and style run), `/healthz` and `/metrics`. What the routes
 * report comes in as functions, so the handler is a plain
 * `(req: Request) => Response` that tests call without a network.
 *
 * @module
 */

import clientHtml from "../client.html" with { type: "text" };
import { PAGE_CONSTANTS, Status } from "../wire/protocol.ts";
import type { Log } from "../stores/rooms.ts";
import { parseUrl } from "./handshake.ts";

/** The page as served: the chat port filled in, and its headers. */
export interface Page {
  html: string;
  headers: Record<string, string>;
}

const encoder = new TextEncoder();

/**
 * Renders the page once at start-up. The policy allows only the page's own
 * inline script and style (by hash), so injected markup could not run.
 */
export async function renderPage(chatPort: number): Promise<Page> {
  // The chat port, and the wire contract's constants the page needs (so it
  // holds no copy of them), as JSON in an attribute.
  const contract = JSON.stringify(PAGE_CONSTANTS).replaceAll("&", "&amp;")
    .replaceAll('"', "&quot;").replaceAll("<", "&lt;");
  const html = clientHtml.replace(
    '<meta name="chat-port" content="">',
    // A function, so that no `$&` in the JSON is read as a pattern.
    () =>
      `<meta name="chat-port" content="${chatPort}">\n` +
      `    <meta name="chat-contract" content="${contract}">`,
  );
  const hashOf = async (tag: "script" | "style") => {
    const body = html.match(new RegExp(`<${tag}>([\\s\\S]*?)</${tag}>`))?.[1] ??
      "";
    const digest = await crypto.subtle.digest(
      "SHA-256",
      encoder.encode(body),
    );
    return `'sha256-${btoa(String.fromCharCode(...new Uint8Array(digest)))}'`;
  };
  const csp = [
    "default-src 'none'",
    `script-src ${await hashOf("script")}`,
    `style-src ${await hashOf("style")}`,
    "connect-src ws: wss:",
    "frame-ancestors 'none'",
    "base-uri 'none'",
    "form-action 'none'",
  ].join("; ");
  return {
    html,
    headers: {
      "content-type": "text/html; charset=utf-8",
      "content-security-policy": csp,
      "x-content-type-options": "nosniff",
      "referrer-policy": "no-referrer",
    },
  };
}

/** What `/healthz` reports, read when it is asked for. */
export interface Health {
  /** The room store can be reached. */
  up: boolean;
  /** Clients in a room. */
  connections: number;
  rooms: number;
  /** Whether to say how Redis is (with `--redis`). */
  redis: boolean;
}

/** The page server's routes beside the page, each there when given. */
export interface PageRoutes {
  /** `/healthz`'s figures. */
  health?: () => Health;
  /** `/metrics`' text (not given with `--metrics false`). */
  metrics?: () => string;
  /** Where a request whose `Host` makes no URL is logged. */
  log?: Log;
}

/** The page server's handler: the page, `/healthz` and `/metrics`. */
export function pageHandler(
  page: Page,
  { health, metrics, log }: PageRoutes = {},
): (req: Request) => Response {
  const startedAt = Date.now();
  const routes: Record<string, () => Response> = {
    "/": () => new Response(page.html, { headers: page.headers }),
  };
  if (health) {
    routes["/healthz"] = () => {
      const { up, connections, rooms, redis } = health();
      return Response.json({
        status: up ? "ok" : "down",
        connections,
        rooms,
        uptimeSeconds: Math.floor((Date.now() - startedAt) / 1000),
        ...(redis ? { redis: up ? "up" : "down" } : {}),
      }, { status: up ? 200 : Status.ServiceUnavailable });
    };
  }
  if (metrics) {
    routes["/metrics"] = () =>
      new Response(metrics(), {
        headers: { "content-type": "text/plain; version=0.0.4; charset=utf-8" },
      });
  }
  return function handlePageRequest(req: Request): Response {
    const url = parseUrl(req);
    if (!url) {
      log?.("warn", "bad_request", {});
      return new Response("Bad request\n", { status: Status.BadRequest });
    }
    const route = routes[url.pathname];
    if (!route) {
      return new Response("Not found\n", { status: Status.NotFound });
    }
    if (req.method !== "GET" && req.method !== "HEAD") {
      return new Response("Method not allowed\n", {
        status: Status.MethodNotAllowed,
        headers: { allow: "GET, HEAD" },
      });
    }
    return route();
  };
}
