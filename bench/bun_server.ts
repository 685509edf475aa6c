/**
 * The same chat on Bun's built-in WebSocket pub/sub (`server.publish`), used
 * by `bench/run.ts` as the "fast native runtime" comparison point. Run it with
 * the pinned Bun binary (`bench/.bun`, installed by run.ts), not with Deno.
 *
 * Protocols, matching our server closely enough for the load generator:
 * - plain text (no subprotocol): `NICK: text` lines, ` .... NICK has joined.`
 *   / ` .... NICK has left.`;
 * - `chat.v1.json`: a welcome object (with users and up to
 *   {@linkcode HISTORY_LIMIT} history events, like ours), then one JSON object
 *   per event, published with `server.publish` (Bun does not batch).
 *
 * Text and JSON clients of one room share events: each room has one topic per
 * protocol and an event is published only to topics that have subscribers.
 *
 * Usage: bun bench/bun_server.ts --port P --ws-port W [--hostname 127.0.0.1]
 *
 * @module
 */
import process from "node:process";
import { parseArgs } from "node:util";

/** The JSON subprotocol name, as on our server. */
const JSON_PROTOCOL = "chat.v1.json";
/** Events kept per room for the JSON welcome (ours keeps up to 100). */
const HISTORY_LIMIT = 100;
/** Largest nick suffix: nicks look like `user-NNNNN`, as on our server. */
const NICK_SUFFIX_LIMIT = 100_000;
/** Seconds without traffic before Bun pings; Deno's default is 120 s too. */
const IDLE_TIMEOUT_S = 120;
/** Per-socket send buffer before Bun reports backpressure (Bun's default). */
const BACKPRESSURE_LIMIT = 16 * 1024 * 1024;

// Minimal structural types for the parts of Bun's API used here, so that
// `deno check` can type-check this file without Bun's type package.
interface SocketData {
  nick: string;
  room: string;
  json: boolean;
}
interface BunSocket {
  data: SocketData;
  send(data: string): number;
  subscribe(topic: string): void;
}
interface BunServer {
  upgrade(
    req: Request,
    opts: { data: SocketData; headers?: Record<string, string> },
  ): boolean;
  publish(topic: string, data: string): number;
}
interface BunServeOptions {
  port: number;
  hostname: string;
  fetch(req: Request, server: BunServer): Response | undefined;
  websocket?: {
    idleTimeout: number;
    backpressureLimit: number;
    open(ws: BunSocket): void;
    message(ws: BunSocket, message: string | Uint8Array): void;
    close(ws: BunSocket): void;
  };
}
declare const Bun: { serve(options: BunServeOptions): BunServer };

/** A chat event as the JSON protocol sends it. */
type ChatEvent =
  | { type: "join" | "leave"; id: number; ts: number; nick: string }
  | { type: "message"; id: number; ts: number; from: string; text: string };

/** Per-room state: members (for the welcome), history, subscriber counts. */
interface Room {
  users: Set<string>;
  history: ChatEvent[];
  lastId: number;
  textSubscribers: number;
  jsonSubscribers: number;
}

const { values } = parseArgs({
  args: process.argv.slice(2),
  options: {
    port: { type: "string", default: "8000" },
    "ws-port": { type: "string", default: "8001" },
    hostname: { type: "string", default: "127.0.0.1" },
  },
});

const hostname = values.hostname;
const epoch = Date.now();
const rooms = new Map<string, Room>();

function textTopic(room: string): string {
  return `t${room}`;
}
function jsonTopic(room: string): string {
  return `j${room}`;
}

/** Renders an event as the plain-text protocol line. */
function textLine(ev: ChatEvent): string {
  if (ev.type === "message") return `${ev.from}: ${ev.text}`;
  return ` .... ${ev.nick} has ${ev.type === "join" ? "joined" : "left"}.`;
}

/** Records `ev` in the room's history and publishes it in both formats. */
function emit(server: BunServer, name: string, room: Room, ev: ChatEvent) {
  room.history.push(ev);
  if (room.history.length > HISTORY_LIMIT) room.history.shift();
  if (room.textSubscribers > 0) server.publish(textTopic(name), textLine(ev));
  if (room.jsonSubscribers > 0) {
    server.publish(jsonTopic(name), JSON.stringify(ev));
  }
}

// The page port exists only so that readiness checks (`GET /healthz`) are the
// same for every server under test.
Bun.serve({
  port: Number(values.port),
  hostname,
  fetch(req) {
    if (new URL(req.url).pathname === "/healthz") {
      return Response.json({ ok: true, server: "bun" });
    }
    return new Response("bun chat server\n");
  },
});

const wsServer = Bun.serve({
  port: Number(values["ws-port"]),
  hostname,
  fetch(req, server) {
    const offered = (req.headers.get("sec-websocket-protocol") ?? "")
      .split(",").map((p) => p.trim());
    const json = offered.includes(JSON_PROTOCOL);
    const data: SocketData = {
      nick: `user-${Math.floor(Math.random() * NICK_SUFFIX_LIMIT)}`,
      room: new URL(req.url).pathname,
      json,
    };
    const headers = json
      ? { "Sec-WebSocket-Protocol": JSON_PROTOCOL }
      : undefined;
    if (server.upgrade(req, { data, headers })) return undefined;
    return new Response("expected a websocket upgrade\n", { status: 426 });
  },
  websocket: {
    idleTimeout: IDLE_TIMEOUT_S,
    backpressureLimit: BACKPRESSURE_LIMIT,
    open(ws) {
      const { nick, room: name, json } = ws.data;
      let room = rooms.get(name);
      if (!room) {
        room = {
          users: new Set(),
          history: [],
          lastId: 0,
          textSubscribers: 0,
          jsonSubscribers: 0,
        };
        rooms.set(name, room);
      }
      if (json) {
        ws.send(JSON.stringify({
          type: "welcome",
          you: nick,
          room: name,
          epoch,
          users: [...room.users],
          history: room.history,
          lastId: room.lastId,
        }));
        room.jsonSubscribers++;
        ws.subscribe(jsonTopic(name));
      } else {
        room.textSubscribers++;
        ws.subscribe(textTopic(name));
      }
      room.users.add(nick);
      emit(wsServer, name, room, {
        type: "join",
        id: ++room.lastId,
        ts: Date.now(),
        nick,
      });
    },
    message(ws, message) {
      const { nick, room: name, json } = ws.data;
      const room = rooms.get(name);
      if (!room) return;
      const raw = typeof message === "string"
        ? message
        : new TextDecoder().decode(message);
      let text = raw;
      if (json) {
        try {
          const parsed = JSON.parse(raw);
          if (parsed?.type !== "message" || typeof parsed.text !== "string") {
            return;
          }
          text = parsed.text;
        } catch {
          return;
        }
      }
      emit(wsServer, name, room, {
        type: "message",
        id: ++room.lastId,
        ts: Date.now(),
        from: nick,
        text,
      });
    },
    close(ws) {
      const { nick, room: name, json } = ws.data;
      const room = rooms.get(name);
      if (!room) return;
      if (json) room.jsonSubscribers--;
      else room.textSubscribers--;
      room.users.delete(nick);
      if (room.textSubscribers + room.jsonSubscribers === 0) {
        rooms.delete(name);
        return;
      }
      emit(wsServer, name, room, {
        type: "leave",
        id: ++room.lastId,
        ts: Date.now(),
        nick,
      });
    },
  },
});
