/**
 * Private rooms across processes: two chat processes on one private
 * `redis-server`. A room made private on one refuses strangers on the
 * other; an invite given on one admits on the other; a code's last use,
 * brought to both at once, admits one person; and all of it holds after
 * both processes restart. Skipped without redis-server, except under CI.
 *
 * @module
 */

import assert from "node:assert/strict";
import { JSON_PROTOCOL, SESSION_PROTOCOL_PREFIX } from "../wire/protocol.ts";
import { hs256, OP_KEY, SECRET, signedClient } from "./auth_helpers.ts";
import {
  type ChatProcess,
  haveRedis,
  startChatProcess,
  startRedis,
} from "./redis_helpers.ts";
import {
  closeAll,
  type Json,
  jsonClient,
  type Peer,
  RawClient,
} from "./test_helpers.ts";

const ignore = !haveRedis && !Deno.env.get("CI");

const ARGS = ["--auth-secret", SECRET, "--op-key", OP_KEY];

/** What a private room answers anyone it does not admit. */
const INVITE_ONLY = {
  status: 403,
  body: "This room is invite-only: ask a moderator for an invite.\n",
};

function send(peer: Peer, frame: Json): void {
  peer.send(JSON.stringify(frame));
}

/** The next event of `type` (batches taken apart), skipping others. */
async function next(peer: Peer, type: string): Promise<Json> {
  for (;;) {
    const event = await peer.event(`a ${type} event`);
    if (event.type === type) return event;
  }
}

async function moderator(chat: ChatProcess) {
  return await signedClient(chat.server, {
    token: await hs256({ sub: "op-mod", name: "mod", roles: ["op"] }),
  });
}

/** A handshake's status and body (the connection closed after). */
async function door(
  chat: ChatProcess,
  session: string,
  code?: string,
): Promise<{ status: number; body: string }> {
  const raw = await RawClient.connect(chat.wsPort);
  try {
    const response = await raw.upgrade(
      code === undefined ? "/" : `/?invite=${code}`,
      {
        "Sec-WebSocket-Protocol":
          `${JSON_PROTOCOL}, ${SESSION_PROTOCOL_PREFIX}${session}`,
      },
    );
    return { status: response.status, body: response.body };
  } finally {
    raw.conn.close();
  }
}

/** Redis's answer to one command, as the text of its reply (RESP). */
async function redisReply(port: number, command: string): Promise<string> {
  const conn = await Deno.connect({ hostname: "127.0.0.1", port });
  try {
    await conn.write(new TextEncoder().encode(command + "\r\n"));
    const buffer = new Uint8Array(64 * 1024);
    const n = await conn.read(buffer);
    return new TextDecoder().decode(buffer.subarray(0, n ?? 0));
  } finally {
    conn.close();
  }
}

/** A session secret of its own for person `n`. */
function session(n: number | string): string {
  return `person-${n}-session-secret-0123456789`;
}

Deno.test({
  name:
    "redis: private on one process refuses on the other; an invite and a code given on one admit on the other; both hold after both restart",
  ignore,
  fn: async () => {
    const redis = await startRedis();
    let chats: ChatProcess[] = [];
    try {
      for (let i = 0; i < 2; i++) {
        chats.push(await startChatProcess(redis.url, { args: ARGS }));
      }
      const [a, b] = chats;
      const bob = await jsonClient(
        a.server,
        "/",
        { nick: "bob" },
        session("bob"),
      );
      const mod = await moderator(a);
      send(mod, { type: "private", on: true });
      await next(mod, "private");
      // Another process: the stranger is refused there too, and bob's
      // other tab (a member already) is not.
      assert.deepEqual(await door(b, session("eve")), INVITE_ONLY);
      const tab = await jsonClient(b.server, "/", {}, session("bob"));
      assert.deepEqual([tab.welcome.you, tab.welcome.private], ["bob", true]);
      send(mod, { type: "invite", nick: "bob" });
      await next(mod, "invited");
      send(mod, { type: "invite", link: { uses: 3 } });
      const link = await next(mod, "invite_link");
      assert.equal(
        link.url,
        `http://127.0.0.1:${a.port}/#lobby&invite=${link.code}`,
      );
      // Redis keeps the code's hash, never the code.
      const kept = await redisReply(
        redis.port,
        "HGETALL chat:room:lobby:invites",
      );
      assert.match(kept, /link:[\w-]{43}/);
      assert.ok(!kept.includes(link.code), kept);
      const amy = await jsonClient(
        b.server,
        "/",
        { invite: link.code },
        session("amy"),
      );
      assert.equal(amy.welcome.private, true);
      await closeAll(bob, tab, amy, mod);
      for (const chat of chats) await chat.stop();
      // Both processes restarted (Redis kept): private, the invites, the
      // code's uses left.
      chats = [];
      for (let i = 0; i < 2; i++) {
        chats.push(await startChatProcess(redis.url, { args: ARGS }));
      }
      const [c, d] = chats;
      assert.deepEqual(await door(c, session("eve")), INVITE_ONLY);
      assert.deepEqual(await door(d, session("eve")), INVITE_ONLY);
      const back = await jsonClient(
        d.server,
        "/",
        { nick: "bob" },
        session("bob"),
      );
      assert.deepEqual([back.welcome.you, back.welcome.private], ["bob", true]);
      const again = await jsonClient(c.server, "/", {}, session("amy"));
      assert.equal(again.welcome.private, true);
      const cal = await jsonClient(
        c.server,
        "/",
        { invite: link.code },
        session("cal"),
      );
      assert.equal(cal.welcome.private, true);
      assert.equal((await door(d, session("dan"), link.code)).status, 101);
      // Three uses spent: amy, cal, dan.
      assert.deepEqual(await door(c, session("fay"), link.code), INVITE_ONLY);
      await closeAll(back, again, cal);
    } finally {
      await Promise.all(chats.map((chat) => chat.stop()));
      await redis.kill();
    }
  },
});

Deno.test({
  name:
    "redis: a code's last use brought to both processes at once admits exactly one person (ten times)",
  ignore,
  fn: async () => {
    const redis = await startRedis();
    const chats: ChatProcess[] = [];
    try {
      for (let i = 0; i < 2; i++) {
        chats.push(await startChatProcess(redis.url, { args: ARGS }));
      }
      const [a, b] = chats;
      const mod = await moderator(a);
      send(mod, { type: "private", on: true });
      await next(mod, "private");
      for (let round = 0; round < 10; round++) {
        send(mod, { type: "invite", link: { uses: 1 } });
        const { code } = await next(mod, "invite_link");
        const answers = await Promise.all([
          door(a, session(`a${round}`), code),
          door(b, session(`b${round}`), code),
        ]);
        assert.deepEqual(
          answers.map((answer) => answer.status).sort(),
          [101, 403],
          `round ${round}`,
        );
      }
      send(mod, { type: "invites" });
      const { people, links } = await next(mod, "invites");
      assert.equal(people.length, 10);
      assert.deepEqual(links, []);
      await mod.close();
    } finally {
      await Promise.all(chats.map((chat) => chat.stop()));
      await redis.kill();
    }
  },
});
