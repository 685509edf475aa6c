/**
 * Reference chat server: the bare tutorial loop, used as the yardstick in
 * `bench/run.ts`. It deliberately has no features and no limits — no history,
 * no rate limiting, no backpressure handling, no JSON protocol — so that the
 * benchmark shows what our server's features cost relative to the simplest
 * thing that works.
 *
 * The only concession to the benchmark is that rooms are keyed by URL path,
 * like ours, so a scenario that spreads clients over several rooms (the idle
 * connection scenario) does the same work on every server.
 *
 * Usage: deno run -A bench/reference_server.ts --port P --ws-port W
 *          [--hostname 127.0.0.1]
 *
 * @module
 */
import { parseArgs } from "node:util";

/** Largest nick suffix: nicks look like `user-NNNNN`, as on our server. */
const NICK_SUFFIX_LIMIT = 100_000;

const { values } = parseArgs({
  args: Deno.args,
  options: {
    port: { type: "string", default: "8000" },
    "ws-port": { type: "string", default: "8001" },
    hostname: { type: "string", default: "127.0.0.1" },
  },
});

const hostname = values.hostname;
const rooms = new Map<string, Set<WebSocket>>();

/** Sends `line` to every socket in the room: the tutorial's broadcast loop. */
function broadcast(room: Set<WebSocket>, line: string): void {
  for (const s of room) {
    if (s.readyState === WebSocket.OPEN) s.send(line);
  }
}

// The page port exists only so that readiness checks (`GET /healthz`) are the
// same for every server under test.
Deno.serve(
  { port: Number(values.port), hostname, onListen() {} },
  (req) => {
    if (new URL(req.url).pathname === "/healthz") {
      return Response.json({ ok: true, server: "reference" });
    }
    return new Response("reference chat server\n");
  },
);

Deno.serve(
  { port: Number(values["ws-port"]), hostname, onListen() {} },
  (req) => {
    if (req.headers.get("upgrade")?.toLowerCase() !== "websocket") {
      return new Response("expected a websocket upgrade\n", { status: 426 });
    }
    const key = new URL(req.url).pathname;
    const { socket, response } = Deno.upgradeWebSocket(req);
    const nick = `user-${Math.floor(Math.random() * NICK_SUFFIX_LIMIT)}`;
    let room = rooms.get(key);
    if (!room) {
      room = new Set();
      rooms.set(key, room);
    }
    const members = room;
    socket.onopen = () => {
      members.add(socket);
      broadcast(members, ` .... ${nick} has joined.`);
    };
    socket.onmessage = (e) => {
      broadcast(members, `${nick}: ${e.data}`);
    };
    socket.onclose = () => {
      members.delete(socket);
      if (members.size === 0) rooms.delete(key);
      else broadcast(members, ` .... ${nick} has left.`);
    };
    socket.onerror = () => {};
    return response;
  },
);
