/**
 * Private rooms on a real server with real clients, on every store (memory,
 * `--data`, `--redis`): `/private on|off` and its event and welcome, the
 * handshake's 403 `invite_only`, invites by nick (and by a verified
 * person's login), invite links with codes (uses, revocation, hours), the
 * code guesses' rate limit, `/join` at a private room's door, the HTTP
 * API's methods, and a restart with `--data`. Two processes on one Redis
 * are in private_redis_test.ts.
 *
 * @module
 */

import assert from "node:assert/strict";
import type { ChatServer } from "../main.ts";
import {
  ACCESS_USAGE,
  CloseCode,
  JSON_PROTOCOL,
  MODERATION_HELP,
  NICK_ERRORS,
  REFUSALS,
  REFUSALS_BY_CLOSE_PROTOCOL,
  SESSION_PROTOCOL_PREFIX,
} from "../wire/protocol.ts";
import { onEveryStore, STORES } from "./every_store.ts";
import {
  AUTH_OPTIONS,
  hs256,
  logLines,
  OP_KEY,
  signedClient,
} from "./auth_helpers.ts";
import {
  chatUrl,
  closeAll,
  type Json,
  jsonClient,
  metric,
  Peer,
  RawClient,
  textClient,
  withChat,
  within,
} from "./test_helpers.ts";
import { OP_PROTOCOL_PREFIX } from "../wire/protocol.ts";

const BOB = "bob-session-secret-0123456789";
const EVE = "eve-session-secret-0123456789";
const AMY = "amy-session-secret-0123456789";
const CAL = "cal-session-secret-0123456789";
const DAN = "dan-session-secret-0123456789";

/** What a refused handshake says: no answer tells a wrong code from none. */
const INVITE_ONLY = {
  status: 403,
  body: "This room is invite-only: ask a moderator for an invite.\n",
};

/** A moderator by login token (role `op`), JSON. */
async function moderator(chat: ChatServer, name = "mod") {
  return await signedClient(chat, {
    token: await hs256({ sub: `op-${name}`, name, roles: ["op"] }),
  });
}

/** Sends a JSON frame. */
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

/**
 * A handshake's status and body, as a client without a WebSocket API sees
 * it (a browser's shows neither), with a session if given; the connection
 * is closed before this resolves.
 */
async function door(
  chat: ChatServer,
  query: Record<string, string> = {},
  session?: string,
  path = "/",
): Promise<{ status: number; body: string }> {
  const raw = await RawClient.connect(chat.wsPort);
  try {
    const search = new URLSearchParams(query).toString();
    const response = await raw.upgrade(search ? `${path}?${search}` : path, {
      "Sec-WebSocket-Protocol": session === undefined
        ? JSON_PROTOCOL
        : `${JSON_PROTOCOL}, ${SESSION_PROTOCOL_PREFIX}${session}`,
    });
    return { status: response.status, body: response.body };
  } finally {
    raw.conn.close();
  }
}

/** Makes the room private (the moderator takes its event). */
async function makePrivate(mod: Peer): Promise<Json> {
  send(mod, { type: "private", on: true });
  return await next(mod, "private");
}

/** Closes a person's last tab with 1000 (no grace) and waits for the leave. */
async function leave(peer: Peer, witness: Peer, nick: string): Promise<void> {
  await peer.close(1000);
  for (;;) {
    const event = await next(witness, "leave");
    if (event.nick === nick) return;
  }
}

/** A code nobody was given. */
function wrongCode(): string {
  const bytes = crypto.getRandomValues(new Uint8Array(24));
  return btoa(String.fromCharCode(...bytes)).replaceAll("+", "-")
    .replaceAll("/", "_");
}

// ---------------------------------------------------------------------------
// Every store
// ---------------------------------------------------------------------------

onEveryStore(
  "/private on: everyone sees it, welcomes say it, a stranger gets 403 invite_only; /private off opens the room again",
  {},
  async (chat) => {
    const tess = await textClient(chat, "/", { nick: "tess" });
    const mod = await moderator(chat);
    assert.equal(mod.welcome.private, false);
    const on = await makePrivate(mod);
    assert.deepEqual(
      { ...on, id: typeof on.id, ts: typeof on.ts },
      { type: "private", id: "number", ts: "number", by: "mod", on: true },
    );
    assert.equal(
      await tess.nextMatching(/invite-only/),
      " .... mod made the room invite-only.",
    );
    assert.deepEqual(await door(chat, {}, EVE), INVITE_ONLY);
    assert.deepEqual(await door(chat), INVITE_ONLY);
    // Another moderator comes in; the welcome says what the room is, and
    // its history has the event.
    const other = await moderator(chat, "keeper");
    assert.equal(other.welcome.private, true);
    assert.ok(
      other.welcome.history.some((event: Json) =>
        event.type === "private" && event.id === on.id && event.on === true
      ),
    );
    send(other, { type: "private", on: false });
    const off = await next(mod, "private");
    assert.deepEqual([off.by, off.on, off.id > on.id], ["keeper", false, true]);
    assert.equal(
      await tess.nextMatching(/everyone/),
      " .... keeper opened the room to everyone.",
    );
    const eve = await jsonClient(chat, "/", { nick: "eve" }, EVE);
    assert.equal(eve.welcome.private, false);
    assert.equal(
      await metric(chat, 'chat_upgrades_refused_total{reason="invite_only"}'),
      2,
    );
    await closeAll(tess, mod, other, eve);
  },
);

onEveryStore(
  "/invite NICK: gone and back with the same session, they are admitted; a stranger is not; /uninvite refuses them again",
  {},
  async (chat) => {
    const bob = await jsonClient(chat, "/", { nick: "bob" }, BOB);
    const mod = await moderator(chat);
    await makePrivate(mod);
    send(mod, { type: "invite", nick: "BOB" });
    assert.deepEqual(await next(mod, "invited"), {
      type: "invited",
      nick: "BOB",
    });
    await leave(bob, mod, "bob");
    const back = await jsonClient(chat, "/", { nick: "bob" }, BOB);
    assert.deepEqual([back.welcome.you, back.welcome.private], ["bob", true]);
    // Another session from the same address, or none: not bob.
    assert.deepEqual(await door(chat, {}, EVE), INVITE_ONLY);
    assert.deepEqual(await door(chat), INVITE_ONLY);
    send(mod, { type: "invites" });
    assert.deepEqual(await next(mod, "invites"), {
      type: "invites",
      private: true,
      people: [{ nick: "bob", by: "mod" }],
      links: [],
    });
    send(mod, { type: "uninvite", nick: "bob" });
    assert.deepEqual(await next(mod, "uninvited"), {
      type: "uninvited",
      nick: "bob",
    });
    // In the room still: another tab of bob's needs no invite.
    const tab = await jsonClient(chat, "/", {}, BOB);
    assert.equal(tab.welcome.you, "bob");
    await tab.close(1000);
    await leave(back, mod, "bob");
    assert.deepEqual(await door(chat, {}, BOB), INVITE_ONLY);
    send(mod, { type: "uninvite", nick: "bob" });
    assert.deepEqual(await next(mod, "error"), {
      type: "error",
      code: "not_invited",
      message: "bob is not invited here",
    });
    send(mod, { type: "invite", nick: "nobody" });
    assert.equal((await next(mod, "error")).code, "no_such_nick");
    await mod.close();
  },
);

onEveryStore(
  "/invite NICK of a verified person who is not here invites their login: they come back with any session",
  {},
  async (chat) => {
    const token = await hs256({ sub: "42", name: "ada" });
    const mod = await moderator(chat);
    const ada = await signedClient(chat, { token, session: AMY });
    await leave(ada, mod, "ada");
    await makePrivate(mod);
    send(mod, { type: "invite", nick: "ada" });
    assert.deepEqual(await next(mod, "invited"), {
      type: "invited",
      nick: "ada",
    });
    const back = await signedClient(chat, { token, session: CAL });
    assert.deepEqual([back.welcome.you, back.welcome.verified], ["ada", true]);
    // An anonymous person is not ada, whatever nick they ask for.
    assert.deepEqual(await door(chat, { nick: "ada" }, EVE), INVITE_ONLY);
    await closeAll(back, mod);
  },
);

onEveryStore(
  "/invite link: a code admits up to its uses, then 403 as no code; who came with it comes back without it; a revoked code is 403",
  {},
  async (chat) => {
    const mod = await moderator(chat);
    await makePrivate(mod);
    const asked = Date.now();
    send(mod, { type: "invite", link: { uses: 2 } });
    const link = await next(mod, "invite_link");
    assert.match(link.code, /^[A-Za-z0-9_-]{32}$/);
    assert.match(link.link, /^[A-Za-z0-9_-]{8}$/);
    assert.equal(
      link.url,
      `http://127.0.0.1:${chat.port}/#lobby&invite=${link.code}`,
    );
    assert.equal(link.uses, 2);
    assert.ok(
      link.until >= asked + 24 * 3_600_000 &&
        link.until <= Date.now() + 24 * 3_600_000,
    );
    const amy = await jsonClient(chat, "/", {
      nick: "amy",
      invite: link.code,
    }, AMY);
    assert.deepEqual([amy.welcome.you, amy.welcome.private], ["amy", true]);
    const cal = await jsonClient(chat, "/", { invite: link.code }, CAL);
    assert.equal(cal.welcome.private, true);
    // Used up: the third is refused as if it brought nothing.
    assert.deepEqual(await door(chat, { invite: link.code }, DAN), INVITE_ONLY);
    assert.deepEqual(await door(chat, {}, DAN), INVITE_ONLY);
    // Amy is invited from now on: back without the code.
    await leave(amy, mod, "amy");
    const again = await jsonClient(chat, "/", { nick: "amy" }, AMY);
    assert.equal(again.welcome.you, "amy");
    send(mod, { type: "invites" });
    assert.deepEqual(await next(mod, "invites"), {
      type: "invites",
      private: true,
      people: [
        { nick: "amy", by: "mod", via: link.link },
        { by: "mod", via: link.link },
      ],
      links: [],
    });
    // Revoked by its code, or by its id: 403.
    send(mod, { type: "invite", link: {} });
    const byCode = await next(mod, "invite_link");
    assert.equal(byCode.uses, 1);
    send(mod, { type: "uninvite", code: byCode.code });
    assert.deepEqual(await next(mod, "uninvited"), {
      type: "uninvited",
      link: byCode.link,
    });
    assert.deepEqual(
      await door(chat, { invite: byCode.code }, DAN),
      INVITE_ONLY,
    );
    send(mod, { type: "invite", link: { uses: 5, hours: 2 } });
    const byId = await next(mod, "invite_link");
    send(mod, { type: "invites" });
    const listed = await next(mod, "invites");
    assert.deepEqual(listed.links, [
      { link: byId.link, uses: 5, until: byId.until, by: "mod" },
    ]);
    send(mod, { type: "uninvite", link: byId.link });
    assert.deepEqual(await next(mod, "uninvited"), {
      type: "uninvited",
      link: byId.link,
    });
    assert.deepEqual(await door(chat, { invite: byId.code }, DAN), INVITE_ONLY);
    await closeAll(again, cal, mod);
  },
);

/** Moves the clock `ms` on while `fn` runs (the server is in this process). */
async function later<T>(ms: number, fn: () => Promise<T>): Promise<T> {
  const now = Date.now;
  Date.now = () => now() + ms;
  try {
    return await fn();
  } finally {
    Date.now = now;
  }
}

for (const store of STORES.filter((store) => store.name !== "--redis")) {
  Deno.test({
    name:
      `an invite link ends after its hours: its code is refused as none is (the clock moved) (${store.name})`,
    ignore: store.ignore,
    fn: () =>
      store.run((storeOptions) =>
        withChat({ ...AUTH_OPTIONS, ...storeOptions }, async (chat) => {
          const mod = await moderator(chat);
          await makePrivate(mod);
          send(mod, { type: "invite", link: { uses: 2, hours: 1 } });
          const { code } = await next(mod, "invite_link");
          const minute = 60_000;
          const early = await later(
            59 * minute,
            () => door(chat, { invite: code }, AMY),
          );
          assert.equal(early.status, 101);
          assert.deepEqual(
            await later(61 * minute, () => door(chat, { invite: code }, CAL)),
            INVITE_ONLY,
          );
          await mod.close();
        })
      ),
  });
}

Deno.test("--data: a restart keeps the room private, its invites and a link's uses left; the file holds the code's hash, never the code", async () => {
  const dir = await Deno.makeTempDir({ prefix: "chat-private-" });
  const options = { ...AUTH_OPTIONS, data: `${dir}/chat.db` };
  try {
    let link: Json;
    await withChat(options, async (chat) => {
      const bob = await jsonClient(chat, "/", { nick: "bob" }, BOB);
      const mod = await moderator(chat);
      await makePrivate(mod);
      send(mod, { type: "invite", nick: "bob" });
      await next(mod, "invited");
      send(mod, { type: "invite", link: { uses: 2 } });
      link = await next(mod, "invite_link");
      const amy = await jsonClient(chat, "/", { invite: link.code }, AMY);
      await closeAll(bob, amy, mod);
    });
    let file = "";
    for (const name of ["chat.db", "chat.db-wal"]) {
      try {
        file += new TextDecoder("latin1").decode(
          await Deno.readFile(`${dir}/${name}`),
        );
      } catch (error) {
        if (!(error instanceof Deno.errors.NotFound)) throw error;
      }
    }
    const hash = new Uint8Array(
      await crypto.subtle.digest(
        "SHA-256",
        new TextEncoder().encode(link!.code),
      ),
    );
    const hashText = btoa(String.fromCharCode(...hash)).replaceAll("+", "-")
      .replaceAll("/", "_").replace(/=+$/, "");
    assert.ok(file.includes(`link:${hashText}`), "the code's hash is kept");
    assert.ok(!file.includes(link!.code), "the code is not");
    await withChat(options, async (chat) => {
      assert.deepEqual(await door(chat, {}, EVE), INVITE_ONLY);
      const bob = await jsonClient(chat, "/", { nick: "bob" }, BOB);
      assert.deepEqual([bob.welcome.you, bob.welcome.private], ["bob", true]);
      const amy = await jsonClient(chat, "/", {}, AMY);
      assert.equal(amy.welcome.private, true);
      const cal = await jsonClient(chat, "/", { invite: link.code }, CAL);
      assert.equal(cal.welcome.private, true);
      assert.deepEqual(
        await door(chat, { invite: link.code }, DAN),
        INVITE_ONLY,
      );
      await closeAll(bob, amy, cal);
    });
  } finally {
    await Deno.remove(dir, { recursive: true });
  }
});

// ---------------------------------------------------------------------------
// The door: guesses, /join, plain text
// ---------------------------------------------------------------------------

/**
 * A connection that offers {@linkcode REFUSALS_BY_CLOSE_PROTOCOL} (as the
 * page does), with a session: its close event, and how many frames came
 * before it.
 */
async function refusedByClose(
  chat: ChatServer,
  session: string,
  query: Record<string, string> = {},
): Promise<{ code: number; reason: string; frames: number }> {
  const peer = new Peer(chatUrl(chat, "/", query), [
    JSON_PROTOCOL,
    SESSION_PROTOCOL_PREFIX + session,
    REFUSALS_BY_CLOSE_PROTOCOL,
  ]);
  await within(peer.opened, "the connection to open");
  assert.equal(peer.socket.protocol, JSON_PROTOCOL);
  const { code, reason } = await within(peer.closed, "the refusal's close");
  return { code, reason, frames: peer.pending };
}

Deno.test("a client that offers chat.refusals-by-close is told invite_only or banned in a close frame (4003), counted and logged as the 403; with a code it comes in", async () => {
  const log = logLines();
  await withChat({ ...AUTH_OPTIONS, ...log.options }, async (chat) => {
    const bob = await jsonClient(chat, "/", { nick: "bob" }, BOB);
    const mod = await moderator(chat);
    await makePrivate(mod);
    assert.deepEqual(await refusedByClose(chat, EVE), {
      code: CloseCode.Refused,
      reason: "invite_only",
      frames: 0,
    });
    // Nobody came in: the moderator's next event is its own message.
    send(mod, { type: "message", text: "still here" });
    const said = await mod.event();
    assert.deepEqual([said.type, said.text], ["message", "still here"]);
    // Without it, the same refusal is the handshake's 403.
    assert.deepEqual(await door(chat, {}, EVE), INVITE_ONLY);
    // A valid code admits as it does without the subprotocol.
    send(mod, { type: "invite", link: {} });
    const { code } = await next(mod, "invite_link");
    const eve = new Peer(chatUrl(chat, "/", { nick: "eve", invite: code }), [
      JSON_PROTOCOL,
      SESSION_PROTOCOL_PREFIX + EVE,
      REFUSALS_BY_CLOSE_PROTOCOL,
    ]);
    await within(eve.opened, "the connection to open");
    const welcome = await eve.event("the welcome");
    assert.deepEqual(
      [welcome.type, welcome.you, welcome.private],
      ["welcome", "eve", true],
    );
    await eve.close(1000);
    send(mod, { type: "ban", nick: "bob" });
    await within(bob.closed, "bob's close");
    assert.deepEqual(await refusedByClose(chat, BOB), {
      code: CloseCode.Refused,
      reason: "banned",
      frames: 0,
    });
    assert.equal(
      await metric(chat, 'chat_upgrades_refused_total{reason="invite_only"}'),
      2,
    );
    assert.equal(
      await metric(chat, 'chat_upgrades_refused_total{reason="banned"}'),
      1,
    );
    assert.equal(
      log.lines.filter((line) =>
        /upgrade_refused reason=(invite_only|banned) /.test(line)
      ).length,
      3,
    );
    await mod.close();
  });
});

Deno.test("guessed codes are answered as no code is, and past 10 tries from an address, 429 invite_rate (even for the right code)", async () => {
  const log = logLines();
  await withChat({ ...AUTH_OPTIONS, ...log.options }, async (chat) => {
    const mod = await moderator(chat);
    await makePrivate(mod);
    send(mod, { type: "invite", link: {} });
    const { code } = await next(mod, "invite_link");
    const none = await door(chat, {}, EVE);
    assert.deepEqual(none, INVITE_ONLY);
    for (let i = 0; i < 9; i++) {
      assert.deepEqual(await door(chat, { invite: wrongCode() }, EVE), none);
    }
    // Not even a code: refused the same way, and a try spent.
    assert.deepEqual(await door(chat, { invite: "abc" }, EVE), none);
    const raw = await RawClient.connect(chat.wsPort);
    const flood = await raw.upgrade(`/?invite=${code}`, {
      "Sec-WebSocket-Protocol": JSON_PROTOCOL,
    });
    raw.conn.close();
    assert.deepEqual(
      [flood.status, flood.body, flood.headers.get("retry-after")],
      [
        429,
        "Too many invite codes tried from your address: try again later.\n",
        "1",
      ],
    );
    assert.equal(
      await metric(chat, 'chat_upgrades_refused_total{reason="invite_rate"}'),
      1,
    );
    // The right code is not spent: a tab without one still may not come in,
    // and the log never shows a code.
    assert.ok(log.lines.every((line) => !line.includes(code)));
    await mod.close();
  });
});

Deno.test("/join into a private room: refused invite_only without an invite, banned while a ban holds; with an invite it moves", async () => {
  await withChat(AUTH_OPTIONS, async (chat) => {
    const eve = new Peer(chatUrl(chat, "/secret", { nick: "eve" }), [
      SESSION_PROTOCOL_PREFIX + EVE,
    ]);
    await within(eve.opened, "the connection to open");
    await eve.nextMatching(/^ \.\.\.\. you are eve in secret/);
    const dan = await signedClient(chat, {
      token: await hs256({ sub: "7", name: "dan" }),
    }, "/secret");
    const mod = await signedClient(chat, {
      token: await hs256({ sub: "op-mod", name: "mod", roles: ["op"] }),
    }, "/secret");
    await makePrivate(mod);
    send(mod, { type: "invite", nick: "eve" });
    await next(mod, "invited");
    send(mod, { type: "ban", nick: "dan" });
    await within(dan.closed, "dan's close");
    const bob = await textClient(chat, "/", { nick: "bob" });
    bob.send("/join secret");
    assert.equal(
      await bob.nextMatching(/error/),
      " .... error: This room is invite-only: ask a moderator for an invite.",
    );
    bob.send("/who"); // still in the lobby
    assert.equal(await bob.nextMatching(/in lobby/), " .... in lobby: bob");
    // Eve leaves for the lobby and comes back: her invite holds.
    eve.send("/join lobby");
    await eve.nextMatching(/^ \.\.\.\. you are eve in lobby/);
    eve.send("/join secret");
    assert.match(
      await eve.nextMatching(/^ \.\.\.\. you are eve in secret/),
      /here: .*eve/,
    );
    assert.equal(
      await eve.nextMatching(/this room is invite-only/),
      " .... this room is invite-only.",
    );
    // Dan's ban holds at /join's door as at the handshake's: dan, signed
    // in on a plain-text connection (a bearer token) in the lobby.
    const token = await hs256({ sub: "7", name: "dan" });
    const back = new Peer(chatUrl(chat, "/"), {
      protocols: [],
      headers: { authorization: `Bearer ${token}` },
    } as unknown as string[]);
    await within(back.opened, "the connection to open");
    await back.nextMatching(/^ \.\.\.\. you are dan in lobby/);
    back.send("/join secret");
    assert.equal(
      await back.nextMatching(/error/),
      ` .... error: ${REFUSALS.banned.message}`,
    );
    await back.close();
    await closeAll(bob, eve, mod);
  });
});

Deno.test("plain text: /private, /invite NICK, /invite link, /invites, /uninvite, their usage and /help", async () => {
  await withChat(AUTH_OPTIONS, async (chat) => {
    const bob = await textClient(chat, "/", { nick: "bob" });
    const keeper = new Peer(chatUrl(chat, "/", { nick: "keeper" }), [
      OP_PROTOCOL_PREFIX + OP_KEY,
    ]);
    await within(keeper.opened, "the connection to open");
    await keeper.nextMatching(/^ \.\.\.\. you are /);
    keeper.send("/private maybe");
    assert.equal(
      await keeper.nextMatching(/error/),
      " .... error: usage: /private on|off",
    );
    keeper.send("/private ON");
    assert.equal(
      await keeper.nextMatching(/invite-only/),
      " .... keeper made the room invite-only.",
    );
    keeper.send("/invite bob");
    assert.equal(await keeper.nextMatching(/invited/), " .... bob is invited.");
    keeper.send("/invite link 3 2");
    const line = await keeper.nextMatching(/invite link/);
    const match = line.match(
      /^ \.\.\.\. invite link ([\w-]{8}) \(3 uses, until (\S+)\): http:\/\/127\.0\.0\.1:(\d+)\/#lobby&invite=([\w-]{32})$/,
    );
    assert.ok(match, line);
    assert.equal(Number(match[3]), chat.port);
    keeper.send("/invites");
    assert.equal(
      await keeper.nextMatching(/invited:/),
      ` .... this room is invite-only; invited: bob (by keeper); links: ${
        match[1]
      } (3 uses left, until ${match[2]}, by keeper).`,
    );
    keeper.send(`/uninvite ${match[4]}`);
    assert.equal(
      await keeper.nextMatching(/revoked/),
      ` .... invite link ${match[1]} is revoked.`,
    );
    keeper.send("/uninvite bob");
    assert.equal(
      await keeper.nextMatching(/longer/),
      " .... bob is no longer invited.",
    );
    keeper.send("/invite link 1001");
    assert.equal(
      await keeper.nextMatching(/error/),
      " .... error: uses must be a whole number from 1 to 1000",
    );
    keeper.send("/invite link 1 721");
    assert.equal(
      await keeper.nextMatching(/error/),
      " .... error: hours must be a whole number from 1 to 720",
    );
    keeper.send("/uninvite link abc");
    assert.equal(
      await keeper.nextMatching(/error/),
      " .... error: a link is named by the 8 characters /invites shows",
    );
    keeper.send("/help");
    assert.equal(
      await keeper.nextMatching(/\/private/),
      ` .... ${MODERATION_HELP}`,
    );
    assert.match(MODERATION_HELP, /\/kick .*\/private on\|off .*\/invites$/);
    bob.send("/private off");
    assert.equal(
      await bob.nextMatching(/error/),
      " .... error: only moderators may /private",
    );
    bob.send("/invites");
    assert.equal(
      await bob.nextMatching(/error/),
      " .... error: only moderators may /invites",
    );
    await closeAll(bob, keeper);
  });
});

Deno.test("the private-room commands' walk: bad, missing and over-long arguments are refused with a clear code, in both protocols, never an internal error", async () => {
  const log = logLines();
  await withChat(
    { ...AUTH_OPTIONS, ...log.options, rate: 1000, burst: 1000 },
    async (chat) => {
      const json = await moderator(chat);
      const keeper = new Peer(chatUrl(chat, "/", { nick: "keeper" }), [
        OP_PROTOCOL_PREFIX + OP_KEY,
      ]);
      await within(keeper.opened, "the connection to open");
      await keeper.nextMatching(/^ \.\.\.\. you are /);
      const long = "w".repeat(10_000);
      const frames: Json[] = [
        { type: "private" },
        { type: "private", on: "yes" },
        { type: "private", on: 1 },
        { type: "private", on: null },
        { type: "invite" },
        { type: "invite", nick: 42 },
        { type: "invite", nick: "" },
        { type: "invite", nick: long },
        { type: "invite", nick: "a", user: "b" },
        { type: "invite", user: "" },
        { type: "invite", user: "w".repeat(257) },
        { type: "invite", user: 5 },
        { type: "invite", code: "c".repeat(32) },
        { type: "invite", link: "x" },
        { type: "invite", link: [] },
        { type: "invite", link: null },
        { type: "invite", link: { uses: 0 } },
        { type: "invite", link: { uses: 1001 } },
        { type: "invite", link: { uses: 1.5 } },
        { type: "invite", link: { uses: "5" } },
        { type: "invite", link: { hours: 0 } },
        { type: "invite", link: { hours: 721 } },
        { type: "invite", link: { hours: 2 ** 53 } },
        { type: "uninvite" },
        { type: "uninvite", code: "short" },
        { type: "uninvite", code: 42 },
        { type: "uninvite", code: long },
        { type: "uninvite", link: "too-long-id" },
        { type: "uninvite", link: 5 },
        { type: "uninvite", nick: "a", code: "b" },
        { type: "uninvite", nick: "nobody" },
        { type: "uninvite", user: "w".repeat(256) },
      ];
      for (const frame of frames) {
        send(json, frame);
        const answer = await next(json, "error");
        assert.ok(
          ["bad_request", "bad_nick", "not_invited"].includes(answer.code),
          `${JSON.stringify(frame).slice(0, 100)}: ${JSON.stringify(answer)}`,
        );
      }
      const lines: [string, string][] = [
        ["/private", "usage: /private on|off"],
        ["/private on off", "usage: /private on|off"],
        ["/invite", ACCESS_USAGE.invite],
        ["/invite a b", ACCESS_USAGE.invite],
        ["/invite link x", "uses must be a whole number from 1 to 1000"],
        ["/invite link 0", "uses must be a whole number from 1 to 1000"],
        ["/invite link 5 0", "hours must be a whole number from 1 to 720"],
        ["/invite link 5 5 5", ACCESS_USAGE.invite],
        ["/invite " + long, NICK_ERRORS.bad_nick],
        ["/uninvite", ACCESS_USAGE.uninvite],
        ["/uninvite link", ACCESS_USAGE.uninvite],
        ["/uninvite link a b", ACCESS_USAGE.uninvite],
        ["/uninvite " + "c".repeat(32), "that code is not invited here"],
        ["/invites please", "usage: /invites"],
      ];
      for (const [line, message] of lines) {
        keeper.send(line);
        assert.equal(
          await keeper.nextMatching(/error/),
          ` .... error: ${message}`,
          line.slice(0, 40),
        );
      }
      assert.ok(!json.isClosed && !keeper.isClosed);
      await closeAll(json, keeper);
      assert.deepEqual(
        log.lines.filter((line) => /handler_failed|request_failed/.test(line)),
        [],
      );
    },
  );
});
