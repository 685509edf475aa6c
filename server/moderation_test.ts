/**
 * Moderation in one process (the memory store), in both protocols: each
 * command by a moderator (token role `op`, or `--op-key`) and refused for
 * others; kicks close every connection with 4000; bans by login, session
 * and address; mutes, topic, slow mode, deletion from history and resume;
 * the log line and the metric; expiry (with the clock given, not waited).
 */

import assert from "node:assert/strict";
import type { ChatServer } from "../main.ts";
import { CloseCode, OP_PROTOCOL_PREFIX } from "../wire/protocol.ts";
import { MemoryStore } from "../stores/rooms.ts";
import { moderate } from "./moderation.ts";
import { onEveryStore } from "../tests/every_store.ts";
import {
  AUTH_OPTIONS,
  hs256,
  logLines,
  OP_KEY,
  signedClient,
  statusFrom,
} from "../tests/auth_helpers.ts";
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
} from "../tests/test_helpers.ts";

const SESSION = "bob-session-secret-0123456789";
const OTHER_SESSION = "another-session-secret-0123456";

/** A moderator by login token (role `op`), JSON. */
async function moderator(chat: ChatServer, name = "mod") {
  return await signedClient(chat, {
    token: await hs256({ sub: `op-${name}`, name, roles: ["op"] }),
  });
}

/** A plain-text moderator by `--op-key`, joined, its welcome line taken. */
async function textModerator(chat: ChatServer, nick = "keeper") {
  const peer = new Peer(chatUrl(chat, "/", { nick }), [
    OP_PROTOCOL_PREFIX + OP_KEY,
  ]);
  await within(peer.opened, "the connection to open");
  await peer.nextMatching(/^ \.\.\.\. you are /, "the welcome line");
  return peer;
}

/** Sends a JSON frame. */
function send(peer: Peer, frame: Json): void {
  peer.send(JSON.stringify(frame));
}

Deno.test("/kick by a moderator: every connection closed with 4000 and the reason, a kick event, a log line, a count", async () => {
  const log = logLines();
  await withChat({ ...AUTH_OPTIONS, ...log.options }, async (chat) => {
    const bob1 = await jsonClient(chat, "/", { nick: "bob" }, SESSION);
    const bob2 = await jsonClient(chat, "/", { nick: "bob" }, SESSION);
    const mod = await moderator(chat);
    const text = await textClient(chat);
    send(mod, { type: "kick", nick: "BOB", reason: "spam" });
    for (const tab of [bob1, bob2]) {
      const closed = await within(tab.closed, "bob's close");
      assert.equal(closed.code, CloseCode.Kicked);
      assert.equal(closed.reason, "kicked by mod: spam");
    }
    const kick = await mod.nextMatching(/"kick"/);
    const event = JSON.parse(kick);
    assert.deepEqual(
      {
        type: event.type,
        nick: event.nick,
        by: event.by,
        reason: event.reason,
      },
      { type: "kick", nick: "bob", by: "mod", reason: "spam" },
    );
    assert.equal(
      await text.nextMatching(/kicked/),
      " .... bob was kicked by mod (spam).",
    );
    assert.ok(
      log.lines.some((line) =>
        line.endsWith(
          ' INFO moderation action=kick room=lobby by=mod target=bob reason="spam"',
        )
      ),
      log.lines.join("\n"),
    );
    assert.equal(await metric(chat, 'chat_moderation_total{action="kick"}'), 1);
    // Kicked, not banned: bob may come back.
    const back = await jsonClient(chat, "/", { nick: "bob" }, SESSION);
    assert.equal(back.welcome.you, "bob");
    // No leave for bob was announced: the kick said it.
    text.send("/who");
    assert.match(await text.nextMatching(/in lobby/), /moderators: mod/);
    await closeAll(back, mod, text);
  });
});

Deno.test("plain text with --op-key: /kick, and /who shows the moderators", async () => {
  await withChat(AUTH_OPTIONS, async (chat) => {
    const bob = await textClient(chat, "/", { nick: "bob" });
    const keeper = await textModerator(chat);
    keeper.send("/who");
    assert.equal(
      await keeper.nextMatching(/in lobby/),
      " .... in lobby: bob, keeper; moderators: keeper",
    );
    keeper.send("/kick bob too loud");
    assert.equal(
      await keeper.nextMatching(/kicked/),
      " .... bob was kicked by keeper (too loud).",
    );
    const closed = await within(bob.closed, "bob's close");
    assert.equal(closed.code, CloseCode.Kicked);
    assert.equal(closed.reason, "kicked by keeper: too loud");
    keeper.send("/kick nobody");
    assert.equal(
      await keeper.nextMatching(/error/),
      " .... error: nobody here is called nobody",
    );
    await keeper.close();
  });
});

Deno.test("a wrong op key is 401; an op key on a server without one is 401", async () => {
  await withChat(AUTH_OPTIONS, async (chat) => {
    const raw = await RawClient.connect(chat.wsPort);
    const response = await raw.upgrade("/", {
      "Sec-WebSocket-Protocol": OP_PROTOCOL_PREFIX + "wrong-key",
    });
    assert.equal(response.status, 401);
    raw.close();
  });
  await withChat({}, async (chat) => {
    const raw = await RawClient.connect(chat.wsPort);
    const response = await raw.upgrade("/", {
      "Sec-WebSocket-Protocol": OP_PROTOCOL_PREFIX + OP_KEY,
    });
    assert.equal(response.status, 401);
    raw.close();
  });
});

Deno.test("every moderation command is refused for others, in both protocols", async () => {
  await withChat(AUTH_OPTIONS, async (chat) => {
    const bob = await jsonClient(chat, "/", { nick: "bob" });
    const eve = await jsonClient(chat, "/", { nick: "eve" });
    const text = await textClient(chat, "/", { nick: "tom" });
    const frames: Json[] = [
      { type: "kick", nick: "bob" },
      { type: "ban", nick: "bob", minutes: 5 },
      { type: "unban", nick: "bob" },
      { type: "mute", nick: "bob" },
      { type: "unmute", nick: "bob" },
      { type: "topic", text: "mine now" },
      { type: "slow", seconds: 10 },
    ];
    for (const frame of frames) {
      send(eve, frame);
      const error = await eve.nextMatching(/"error"/);
      assert.deepEqual(JSON.parse(error), {
        type: "error",
        code: "forbidden",
        message: `only moderators may /${frame.type}`,
      });
    }
    for (
      const line of [
        "/kick bob",
        "/ban bob 5",
        "/unban bob",
        "/mute bob",
        "/unmute bob",
        "/topic mine",
        "/slow 10",
      ]
    ) {
      text.send(line);
      assert.equal(
        await text.next(),
        ` .... error: only moderators may ${line.split(" ")[0]}`,
      );
    }
    // Deleting someone else's message.
    send(bob, { type: "message", text: "mine" });
    const message = JSON.parse(await eve.nextMatching(/"message"/));
    send(eve, { type: "delete", id: message.id });
    assert.equal(
      JSON.parse(await eve.nextMatching(/"error"/)).code,
      "forbidden",
    );
    text.send(`/delete ${message.id}`);
    assert.equal(
      await text.nextMatching(/error/),
      " .... error: only its author or a moderator may delete a message",
    );
    await closeAll(bob, eve, text);
  });
});

Deno.test("malformed moderation commands get their usage", async () => {
  await withChat(AUTH_OPTIONS, async (chat) => {
    const mod = await moderator(chat);
    send(mod, { type: "slow", seconds: -1 });
    const error = JSON.parse(await mod.nextMatching(/"error"/));
    assert.equal(error.code, "bad_request");
    assert.match(error.message, /"type":"slow","seconds":0-3600/);
    const keeper = await textModerator(chat);
    keeper.send("/ban");
    assert.equal(
      await keeper.nextMatching(/error/),
      " .... error: usage: /ban NICK [minutes, 1-527040] [reason]",
    );
    keeper.send("/delete last");
    assert.equal(
      await keeper.nextMatching(/error/),
      " .... error: usage: /delete ID (a message's id)",
    );
    await closeAll(mod, keeper);
  });
});

Deno.test("/ban by login: a verified person is refused with 403 while it lasts, and /unban lets them in", async () => {
  const log = logLines();
  await withChat({ ...AUTH_OPTIONS, ...log.options }, async (chat) => {
    const token = await hs256({ sub: "7", name: "bob" });
    const bob = await signedClient(chat, { token });
    const mod = await moderator(chat);
    send(mod, { type: "ban", nick: "bob", minutes: 60, reason: "abuse" });
    const closed = await within(bob.closed, "bob's close");
    assert.equal(closed.code, CloseCode.Kicked);
    assert.equal(closed.reason, "banned by mod: abuse");
    const kick = JSON.parse(await mod.nextMatching(/"kick"/));
    assert.deepEqual(
      [kick.nick, kick.ban, kick.minutes, kick.reason],
      ["bob", true, 60, "abuse"],
    );
    const raw = await RawClient.connect(chat.wsPort);
    const refused = await raw.upgrade("/", {
      Authorization: `Bearer ${token}`,
    });
    raw.close();
    assert.equal(refused.status, 403);
    assert.match(log.lines.at(-1)!, /upgrade_refused reason=banned /);
    // By login only: anonymous people from the same address get in, and
    // the ban is the room's.
    const anonymous = await jsonClient(chat);
    const elsewhere = await signedClient(chat, { token }, "/other");
    assert.equal(elsewhere.welcome.you, "bob");
    send(mod, { type: "unban", nick: "bob" });
    assert.deepEqual(JSON.parse(await mod.nextMatching(/"moderated"/)), {
      type: "moderated",
      action: "unban",
      nick: "bob",
    });
    const back = await signedClient(chat, { token });
    assert.equal(back.welcome.you, "bob");
    send(mod, { type: "unban", nick: "bob" });
    assert.equal(
      JSON.parse(await mod.nextMatching(/"error"/)).code,
      "not_banned",
    );
    assert.ok(
      log.lines.some((line) =>
        line.endsWith(
          'moderation action=ban room=lobby by=mod target=bob minutes=60 reason="abuse"',
        )
      ),
    );
    await closeAll(back, elsewhere, anonymous, mod);
  });
});

Deno.test("/ban of an anonymous person: by session (from any address) and by address (any session)", async () => {
  await withChat(AUTH_OPTIONS, async (chat) => {
    const bob = await jsonClient(chat, "/", { nick: "bob" }, SESSION);
    const keeper = await textModerator(chat);
    keeper.send("/ban bob");
    assert.equal(
      await keeper.nextMatching(/banned/),
      " .... bob was banned by keeper.",
    );
    await within(bob.closed, "bob's close");
    const protocols = (session: string) => ({
      "Sec-WebSocket-Protocol": `chat.v1.json, chat.session.${session}`,
    });
    // The same session from another address: refused.
    assert.equal(
      await statusFrom("127.0.0.2", chat.wsPort, "/", protocols(SESSION)),
      403,
    );
    // Another session from bob's address: refused.
    assert.equal(
      await statusFrom("127.0.0.1", chat.wsPort, "/", protocols(OTHER_SESSION)),
      403,
    );
    // Another session from another address: in.
    assert.equal(
      await statusFrom("127.0.0.3", chat.wsPort, "/", protocols(OTHER_SESSION)),
      101,
    );
    // A verified person from bob's address: in (a login is judged alone).
    const ada = await signedClient(chat, {
      token: await hs256({ sub: "1", name: "ada" }),
    });
    keeper.send("/unban bob");
    assert.equal(
      await keeper.nextMatching(/unbanned/),
      " .... bob is unbanned.",
    );
    const back = await jsonClient(chat, "/", { nick: "bob" }, SESSION);
    assert.equal(back.welcome.you, "bob");
    await closeAll(ada, back, keeper);
  });
});

Deno.test("/mute: messages refused with muted until /unmute; others hear nothing meanwhile", async () => {
  await withChat(AUTH_OPTIONS, async (chat) => {
    const bob = await jsonClient(chat, "/", { nick: "bob" });
    const mod = await moderator(chat);
    send(mod, { type: "mute", nick: "bob", minutes: 10 });
    assert.deepEqual(JSON.parse(await mod.nextMatching(/"moderated"/)), {
      type: "moderated",
      action: "mute",
      nick: "bob",
      minutes: 10,
    });
    send(bob, { type: "message", text: "let me speak" });
    const error = JSON.parse(await bob.nextMatching(/"error"/));
    assert.equal(error.code, "muted");
    assert.ok(error.retryAfter > 590 && error.retryAfter <= 600);
    send(mod, { type: "unmute", nick: "bob" });
    await mod.nextMatching(/"moderated"/);
    send(bob, { type: "message", text: "thanks" });
    const heard = JSON.parse(await mod.nextMatching(/"message"/));
    assert.equal(heard.text, "thanks"); // and not "let me speak" before it
    send(mod, { type: "unmute", nick: "bob" });
    assert.equal(
      JSON.parse(await mod.nextMatching(/"error"/)).code,
      "no_such_nick",
    );
    await closeAll(bob, mod);
  });
});

Deno.test("/topic: an event for the room, and every welcome carries it", async () => {
  await withChat(AUTH_OPTIONS, async (chat) => {
    const mod = await moderator(chat);
    send(mod, { type: "topic", text: "Deno 3 release party" });
    const topic = JSON.parse(await mod.nextMatching(/"topic"/));
    assert.deepEqual(
      [topic.type, topic.by, topic.text],
      ["topic", "mod", "Deno 3 release party"],
    );
    const later = await jsonClient(chat);
    assert.equal(later.welcome.topic, "Deno 3 release party");
    assert.equal(later.welcome.slowSeconds, 0);
    assert.deepEqual(later.welcome.moderators, ["mod"]);
    const text = new Peer(chatUrl(chat));
    await text.nextMatching(/you are/);
    assert.equal(await text.next(), " .... topic: Deno 3 release party");
    await closeAll(mod, later, text);
  });
});

Deno.test("/slow: once per interval per person (moderators excepted), slow_mode says when; 0 turns it off", async () => {
  await withChat(AUTH_OPTIONS, async (chat) => {
    const bob = await textClient(chat, "/", { nick: "bob" });
    const keeper = await textModerator(chat);
    assert.equal(await bob.next(), " .... keeper has joined.");
    keeper.send("/slow 30");
    assert.equal(
      await bob.next(),
      " .... keeper set slow mode: one message per 30 s.",
    );
    bob.send("first");
    assert.equal(await bob.next(), "bob: first");
    bob.send("second");
    assert.match(
      await bob.next(),
      /^ \.\.\.\. error: slow mode: you may post again in (30|29) s$/,
    );
    keeper.send("one");
    keeper.send("two");
    assert.equal(await bob.next(), "keeper: one");
    assert.equal(await bob.next(), "keeper: two");
    keeper.send("/slow 0");
    assert.equal(await bob.next(), " .... keeper turned slow mode off.");
    bob.send("free again");
    assert.equal(await bob.next(), "bob: free again");
    await closeAll(bob, keeper);
  });
});

Deno.test("/delete by its author or a moderator: a delete event, gone from history and from resume", async () => {
  await withChat(AUTH_OPTIONS, async (chat) => {
    const bob = await jsonClient(chat, "/", { nick: "bob" });
    const mod = await moderator(chat);
    // One at a time, so each comes in a frame of its own.
    const say = async (text: string) => {
      send(bob, { type: "message", text });
      return JSON.parse(await bob.nextMatching(new RegExp(`"${text}"`)));
    };
    const oops = await say("oops");
    const fine = await say("fine");
    const rude = await say("rude");
    const before = oops.id - 1;
    send(bob, { type: "delete", id: oops.id });
    const deleted = JSON.parse(await mod.nextMatching(/"delete"/));
    assert.deepEqual(
      [deleted.by, deleted.deleted],
      ["bob", oops.id],
    );
    const text = await textClient(chat);
    mod.send(JSON.stringify({ type: "delete", id: rude.id }));
    assert.equal(await text.next(), ` .... mod deleted message ${rude.id}.`);
    send(mod, { type: "delete", id: 999 });
    assert.equal(
      JSON.parse(await mod.nextMatching(/"error"/)).code,
      "no_such_message",
    );
    // A newcomer's history and a resume from before: neither has them.
    const later = await jsonClient(chat);
    const texts = later.welcome.history.map((event: Json) => event.text);
    assert.ok(texts.includes("fine"));
    assert.ok(!texts.includes("oops") && !texts.includes("rude"));
    const resumed = await jsonClient(chat, "/", {
      since: before,
      epoch: bob.welcome.epoch,
    });
    assert.equal(resumed.welcome.gap, false);
    const ids = resumed.welcome.history.map((event: Json) => event.id);
    assert.ok(ids.includes(fine.id));
    assert.ok(!ids.includes(oops.id) && !ids.includes(rude.id));
    assert.ok(
      resumed.welcome.history.some((event: Json) =>
        event.type === "delete" && event.deleted === rude.id
      ),
    );
    await closeAll(bob, mod, text, later, resumed);
  });
});

Deno.test("bans and mutes end by themselves when their minutes are up (the clock given)", async () => {
  const store = new MemoryStore({
    historySize: 100,
    maxHistoryBytes: 1 << 20,
    maxRooms: 10,
    onEvict: () => {},
  });
  const room = "lobby";
  store.hold(room);
  await store.join(room, { owner: "mod", nick: "mod", op: true });
  for (const nick of ["bob", "eve"]) {
    store.hold(room);
    await store.join(room, { owner: nick, nick, keys: [`s.${nick}`] });
  }
  const actor = { nick: "mod", op: true, claimedId: 0 };
  const minuteAgo = Date.now() - 61_000;
  // Given a minute ago for one minute: over already.
  await moderate(
    store,
    room,
    actor,
    { type: "ban", nick: "bob", minutes: 1 },
    minuteAgo,
  );
  await moderate(
    store,
    room,
    actor,
    { type: "mute", nick: "eve", minutes: 1 },
    minuteAgo,
  );
  assert.equal(await store.banned(room, ["s.bob"]), undefined);
  const posted = await store.post(room, {
    owner: "eve",
    keys: ["s.eve"],
    op: false,
  }, {
    type: "message",
    from: "eve",
    text: "free",
  });
  assert.ok(!("refused" in posted));
  // Given now for one minute: in force.
  await moderate(store, room, actor, { type: "mute", nick: "eve", minutes: 1 });
  const refused = await store.post(room, {
    owner: "eve",
    keys: ["s.eve"],
    op: false,
  }, {
    type: "message",
    from: "eve",
    text: "not yet",
  });
  assert.equal("refused" in refused && refused.refused, "muted");
});

// ---------------------------------------------------------------------------
// Whom a ban or a mute holds (rooms.ts `sanctionKeys`), on every store
// ---------------------------------------------------------------------------

/** The next event of `type` (batches taken apart), skipping others. */
async function nextOf(peer: Peer, type: string): Promise<Json> {
  for (;;) {
    const event = await peer.event(`a ${type} event`);
    if (event.type === type) return event;
  }
}

/** Posts `text` as `peer` and answers the error code, or "posted". */
async function postAs(peer: Peer, text: string): Promise<string> {
  send(peer, { type: "message", text });
  for (;;) {
    const event = await peer.event(`the answer to ${text}`);
    if (event.type === "error") return event.code;
    if (event.type === "message" && event.text === text) return "posted";
  }
}

/** Mutes (or bans) `nick` as `mod` and waits for it to be done. */
async function sanction(mod: Peer, type: "mute" | "ban", nick: string) {
  send(mod, { type, nick });
  const done = await nextOf(mod, type === "mute" ? "moderated" : "kick");
  assert.equal(done.nick, nick);
}

/** The status of a handshake from `address`, with `session` if given. */
function statusOf(chat: ChatServer, address: string, session?: string) {
  return statusFrom(address, chat.wsPort, "/", {
    "Sec-WebSocket-Protocol": session === undefined
      ? "chat.v1.json"
      : `chat.v1.json, chat.session.${session}`,
  });
}

onEveryStore(
  "a mute of an anonymous person holds their session: another person at the same address, with a session or without, may still post",
  {},
  async (chat) => {
    const bob = await jsonClient(chat, "/", { nick: "bob" }, SESSION);
    const eve = await jsonClient(chat, "/", { nick: "eve" }, OTHER_SESSION);
    const mod = await moderator(chat);
    await sanction(mod, "mute", "bob");
    assert.equal(await postAs(bob, "hi"), "muted");
    // Bob's other tab is bob.
    const tab = await jsonClient(chat, "/", { nick: "bob" }, SESSION);
    assert.equal(await postAs(tab, "from my other tab"), "muted");
    // Eve is another person, from the same address (127.0.0.1).
    assert.equal(await postAs(eve, "still here"), "posted");
    const heard = await nextOf(mod, "message");
    assert.deepEqual([heard.from, heard.text], ["eve", "still here"]);
    // So is someone there without a session: bob's address is not his mute.
    const cy = await jsonClient(chat, "/", { nick: "cy" });
    assert.equal(await postAs(cy, "me neither"), "posted");
    await closeAll(bob, tab, eve, cy, mod);
  },
);

onEveryStore(
  "a mute of a person without a session holds their address: others there without one are muted too, a person with a session is not",
  {},
  async (chat) => {
    const ann = await jsonClient(chat, "/", { nick: "ann" });
    const eve = await jsonClient(chat, "/", { nick: "eve" }, OTHER_SESSION);
    const mod = await moderator(chat);
    await sanction(mod, "mute", "ann");
    assert.equal(await postAs(ann, "hi"), "muted");
    // Nothing tells another connection without a session from ann.
    const again = await jsonClient(chat, "/", { nick: "cy" });
    assert.equal(await postAs(again, "hello?"), "muted");
    assert.equal(await postAs(eve, "not me"), "posted");
    await closeAll(ann, again, eve, mod);
  },
);

onEveryStore(
  "a ban of an anonymous person still keeps out another session, and no session, from their address",
  {},
  async (chat) => {
    const bob = await jsonClient(chat, "/", { nick: "bob" }, SESSION);
    const mod = await moderator(chat);
    await sanction(mod, "ban", "bob");
    assert.equal((await within(bob.closed, "bob's close")).code, 4000);
    assert.equal(await statusOf(chat, "127.0.0.1", SESSION), 403);
    assert.equal(await statusOf(chat, "127.0.0.1", OTHER_SESSION), 403);
    assert.equal(await statusOf(chat, "127.0.0.1"), 403);
    assert.equal(await statusOf(chat, "127.0.0.2", OTHER_SESSION), 101);
    await mod.close();
  },
);

onEveryStore(
  "--ban-by-address false: a ban holds the session alone, and the address only of a person without one",
  { banByAddress: false },
  async (chat) => {
    const bob = await jsonClient(chat, "/", { nick: "bob" }, SESSION);
    const mod = await moderator(chat);
    await sanction(mod, "ban", "bob");
    await within(bob.closed, "bob's close");
    assert.equal(await statusOf(chat, "127.0.0.2", SESSION), 403);
    assert.equal(await statusOf(chat, "127.0.0.1", OTHER_SESSION), 101);
    assert.equal(await statusOf(chat, "127.0.0.1"), 101);
    const ann = await jsonClient(chat, "/", { nick: "ann" });
    await sanction(mod, "ban", "ann");
    await within(ann.closed, "ann's close");
    assert.equal(await statusOf(chat, "127.0.0.1"), 403);
    assert.equal(await statusOf(chat, "127.0.0.1", OTHER_SESSION), 101);
    await mod.close();
  },
);
