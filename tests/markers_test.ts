/**
 * Read markers and unread counts with real clients on real servers (issue
 * 27 points 2 and 3): a marker reaches every tab and device of its person,
 * live; it moves only forward; bad `read`s are refused; the welcome carries
 * the room's marker and the person's rooms with their counts; counts
 * follow the rooms' messages live (mentions, DMs, a person's own, a
 * deletion, an edit); `rooms` in both protocols; a room that started over
 * voids its marker; with `--data` markers outlive a restart; with Redis a
 * marker set on one process reaches the person's connections on the other,
 * and both count alike. The stores' rules are held to the contract in
 * stores/store_contract_test.ts.
 *
 * @module
 */

import assert from "node:assert/strict";
import { READ_FORM, SESSION_PROTOCOL_PREFIX } from "../wire/protocol.ts";
import { NO_MARKERS } from "../server/unread.ts";
import { hs256, SECRET, signedClient } from "./auth_helpers.ts";
import {
  type ChatProcess,
  haveRedis,
  startChatProcess,
  startRedis,
} from "./redis_helpers.ts";
import {
  chatUrl,
  closeAll,
  type Json,
  jsonClient,
  metric,
  Peer,
  textClient,
  withChat,
} from "./test_helpers.ts";

const ADA = "ada-session-secret-0123456789";
const LAPTOP = "ada-laptop-session-0123456789";
const PHONE = "ada-phone-session-01234567890";
const FAST = { rate: 1000, burst: 1000 };

function send(peer: Peer, frame: Json): void {
  peer.send(JSON.stringify(frame));
}

/** The next event that passes `test` (others before it are skipped). */
async function until(
  peer: Peer,
  test: (event: Json) => boolean,
  what = "the event awaited",
): Promise<Json> {
  for (;;) {
    const event = await peer.event(what);
    if (test(event)) return event;
  }
}

const isRead = (event: Json) => event.type === "read";
const isUnread = (event: Json) => event.type === "unread";
const isRooms = (event: Json) => event.type === "rooms";
const isError = (event: Json) => event.type === "error";

/**
 * `peer` says `text` (a message, or a DM with `to`), and it has come back
 * to it and to each of `seen`: the event.
 */
async function say(
  peer: Peer,
  text: string,
  seen: Peer[] = [],
  to?: string,
): Promise<Json> {
  send(peer, to ? { type: "dm", to, text } : { type: "message", text });
  const type = to ? "dm" : "message";
  const mine = (event: Json) => event.type === type && event.text === text;
  const event = await until(peer, mine, `the echo of ${text}`);
  for (const other of seen) await until(other, mine, `${text} delivered`);
  return event;
}

Deno.test("a read marker reaches every tab and device of its person live, with what it leaves unread, and only moves forward", async () => {
  await withChat({ ...FAST, authSecret: SECRET }, async (chat) => {
    // One person (a login) on a laptop with two tabs and on a phone,
    // the phone in another room.
    const token = await hs256({ sub: "7", name: "ada" });
    const laptop = await signedClient(chat, { token, session: LAPTOP });
    const tab = await signedClient(chat, { token, session: LAPTOP });
    const phone = await signedClient(chat, { token, session: PHONE }, "/away");
    for (const peer of [laptop, tab, phone]) {
      assert.equal(peer.welcome.read, 0, "no marker yet");
      assert.deepEqual(peer.welcome.rooms, []);
    }
    const bob = await jsonClient(chat, "/", { nick: "bob" });
    const hi = await say(bob, "hi ada", [laptop, tab]);
    send(laptop, { type: "read", id: hi.id });
    const read = {
      type: "read",
      room: "lobby",
      read: hi.id,
      unread: 0,
      mentions: 0,
    };
    const rooms = {
      type: "rooms",
      rooms: [{ room: "lobby", read: hi.id, unread: 0, mentions: 0 }],
    };
    for (const peer of [laptop, tab, phone]) {
      assert.deepEqual(await until(peer, isRead), read);
      // The room is new to the list: the list comes too.
      assert.deepEqual(await until(peer, isRooms), rooms);
    }
    // At or below the marker: nothing moves, nobody is told; the next
    // move is the next notice everyone gets.
    const next = await say(bob, "and now?", [laptop, tab]);
    send(tab, { type: "read", id: hi.id });
    send(tab, { type: "read", id: hi.id - 1 });
    send(tab, { type: "read", id: next.id });
    for (const peer of [laptop, tab, phone]) {
      assert.deepEqual(await until(peer, isRead), { ...read, read: next.id });
    }
    await closeAll(laptop, tab, phone, bob);
  });
});

Deno.test("read is refused past the room's newest event, when it is not a whole number >= 1, and from a connection with no session or login: nothing is kept", async () => {
  await withChat(FAST, async (chat) => {
    const ada = await jsonClient(chat, "/", { nick: "ada" }, ADA);
    const bob = await jsonClient(chat, "/", { nick: "bob" });
    const last = (await say(bob, "hello", [ada])).id;
    send(ada, { type: "read", id: last + 1 });
    assert.deepEqual(await until(ada, isError), {
      type: "error",
      code: "bad_request",
      message: `no event ${last + 1} in lobby yet`,
    });
    for (const id of [0, -1, 1.5, "3", null]) {
      send(ada, { type: "read", id });
      assert.deepEqual(await until(ada, isError), {
        type: "error",
        code: "bad_request",
        message: READ_FORM,
      }, `id ${id}`);
    }
    send(bob, { type: "read", id: last });
    send(bob, { type: "rooms" });
    for (let i = 0; i < 2; i++) {
      assert.deepEqual(await until(bob, isError), {
        type: "error",
        code: "bad_request",
        message: NO_MARKERS,
      });
    }
    send(ada, { type: "rooms" });
    assert.deepEqual(await until(ada, isRooms), { type: "rooms", rooms: [] });
    await closeAll(ada, bob);
  });
});

Deno.test("the welcome carries the room's marker and the person's rooms with unread and mention counts", async () => {
  await withChat(FAST, async (chat) => {
    const ada = await jsonClient(chat, "/", { nick: "ada" }, ADA);
    const bob = await jsonClient(chat, "/", { nick: "bob" });
    const seen = await say(bob, "hello", [ada]);
    send(ada, { type: "read", id: seen.id });
    await until(ada, isRead);
    await say(bob, "ada: lunch?", [ada]); // unread, a mention
    await say(bob, "psst", [ada], "ada"); // a DM to ada: a mention
    await say(bob, "anyone?", [ada]); // unread
    await say(ada, "back soon", [bob]); // her own: not unread
    await ada.close();
    // Another connection of ada's, in another room: its welcome has them.
    const away = await jsonClient(chat, "/away", {}, ADA);
    assert.equal(away.welcome.read, 0, "nothing read in /away");
    assert.deepEqual(away.welcome.rooms, [
      { room: "lobby", read: seen.id, unread: 3, mentions: 2 },
    ]);
    const back = await jsonClient(chat, "/", {}, ADA);
    assert.equal(back.welcome.read, seen.id);
    // A connection without a session or a login has no markers.
    assert.equal(bob.welcome.read, undefined);
    assert.equal(bob.welcome.rooms, undefined);
    await closeAll(away, back, bob);
  });
});

Deno.test("counts follow the person's rooms live, the room they are in too: messages, mentions of their nick, DMs, not their own; a deletion and an edit count again", async () => {
  await withChat(FAST, async (chat) => {
    const here = await jsonClient(chat, "/", { nick: "ada" }, ADA);
    const away = await jsonClient(chat, "/away", {}, ADA);
    const bob = await jsonClient(chat, "/", { nick: "bob" });
    const first = await say(bob, "hello", [here]);
    send(here, { type: "read", id: first.id });
    for (const peer of [here, away]) await until(peer, isRooms);
    const unread = (unread: number, mentions: number) => ({
      type: "unread",
      room: "lobby",
      unread,
      mentions,
    });
    const expect = async (count: Json) => {
      for (const peer of [here, away]) {
        assert.deepEqual(
          await until(peer, isUnread, `unread ${JSON.stringify(count)}`),
          count,
        );
      }
    };
    const hey = await say(bob, "hey", [here]);
    await expect(unread(1, 0));
    await say(bob, "@ADA look", [here]); // by nick key
    await expect(unread(2, 1));
    await say(bob, "psst", [here], "ada");
    await expect(unread(3, 2));
    await say(here, "mine", [bob]); // her own: no notice
    await say(bob, "adamant", [here]); // not her nick
    await expect(unread(4, 2));
    send(bob, { type: "delete", id: hey.id });
    await expect(unread(3, 2));
    const edited = await say(bob, "later", [here]);
    await expect(unread(4, 2));
    send(bob, { type: "edit", id: edited.id, text: "later, ada" });
    const newest = await until(bob, (event) => event.type === "edit");
    await expect(unread(4, 3));
    // Read up to the newest event: nothing unread, on both.
    send(here, { type: "read", id: newest.id });
    for (const peer of [here, away]) {
      assert.deepEqual(await until(peer, isRead), {
        type: "read",
        room: "lobby",
        read: newest.id,
        unread: 0,
        mentions: 0,
      });
    }
    await closeAll(here, away, bob);
  });
});

Deno.test("a marker moved among the room's recent events is counted here, not asked of the store; after an edit the store counts, and the counts are exact either way", async () => {
  await withChat(FAST, async (chat) => {
    const ada = await jsonClient(chat, "/", { nick: "ada" }, ADA);
    const bob = await jsonClient(chat, "/", { nick: "bob" });
    const counts = async () => ({
      store: await metric(chat, 'chat_unread_counts_total{by="store"}'),
      here: await metric(chat, 'chat_unread_counts_total{by="here"}'),
    });
    const first = await say(bob, "one", [ada]);
    send(ada, { type: "read", id: first.id }); // new to her list: the store
    await until(ada, isRooms);
    assert.deepEqual(await counts(), { store: 1, here: 0 });
    const two = await say(bob, "two", [ada]);
    await say(bob, "three, @ada", [ada]);
    await say(bob, "four", [ada]);
    send(ada, { type: "read", id: two.id });
    const read = (id: number, unread: number, mentions: number) => ({
      type: "read",
      room: "lobby",
      read: id,
      unread,
      mentions,
    });
    assert.deepEqual(await until(ada, isRead), read(two.id, 2, 1));
    assert.deepEqual(await counts(), { store: 1, here: 1 });
    // An edit changed an event the recent ones hold: the store counts
    // (once for the edit after her marker, once for her move).
    const five = await say(bob, "five", [ada]);
    send(bob, { type: "edit", id: five.id, text: "five, ada" });
    await until(ada, (event) => event.type === "edit");
    send(ada, { type: "read", id: two.id + 1 });
    assert.deepEqual(await until(ada, isRead), read(two.id + 1, 2, 1));
    assert.deepEqual(await counts(), { store: 3, here: 1 });
    await closeAll(ada, bob);
  });
});

Deno.test("rooms answers the person's rooms with their counts: JSON, and plain text with a session; /help names it", async () => {
  await withChat(FAST, async (chat) => {
    const ada = await jsonClient(chat, "/", { nick: "ada" }, ADA);
    const bob = await jsonClient(chat, "/", { nick: "bob" });
    const hi = await say(bob, "hi", [ada]);
    send(ada, { type: "read", id: hi.id });
    await until(ada, isRooms);
    await say(bob, "ada?", [ada]);
    await until(ada, isUnread);
    send(ada, { type: "rooms" });
    assert.deepEqual(await until(ada, isRooms), {
      type: "rooms",
      rooms: [{ room: "lobby", read: hi.id, unread: 1, mentions: 1 }],
    });
    // ada's session in plain text is the same person.
    const text = new Peer(chatUrl(chat, "/away"), [
      SESSION_PROTOCOL_PREFIX + ADA,
    ]);
    await text.nextMatching(/^ \.\.\.\. you are \S+ in away; /);
    text.send("/rooms");
    assert.equal(
      await text.next(),
      " .... your rooms: lobby (1 unread, 1 mention)",
    );
    text.send("/help");
    assert.match(await text.next(), /\/rooms \(yours, with what is unread\)/);
    const plain = await textClient(chat, "/", { nick: "cy" });
    plain.send("/rooms");
    assert.equal(await plain.next(), ` .... error: ${NO_MARKERS}`);
    await closeAll(ada, bob, text, plain);
  });
});

Deno.test("a room that started over voids its marker: it leaves the list live, and the welcome there says nothing is read", async () => {
  await withChat(FAST, async (chat) => {
    const ada = await jsonClient(chat, "/", { nick: "ada" }, ADA);
    const inRoom = await jsonClient(chat, "/r", {}, ADA);
    send(inRoom, { type: "read", id: inRoom.welcome.lastId });
    for (const peer of [ada, inRoom]) await until(peer, isRooms);
    // In memory a room ends with its last member; bob makes it again.
    await inRoom.close(1000);
    const bob = await jsonClient(chat, "/r", { nick: "bob" });
    assert.notEqual(bob.welcome.epoch, inRoom.welcome.epoch);
    assert.deepEqual(await until(ada, isRooms), { type: "rooms", rooms: [] });
    const again = await jsonClient(chat, "/r", {}, ADA);
    assert.equal(again.welcome.read, 0);
    assert.deepEqual(again.welcome.rooms, []);
    await closeAll(ada, bob, again);
  });
});

Deno.test("with --data read markers and what they leave unread outlive a restart", async () => {
  const dir = await Deno.makeTempDir({ prefix: "chat-markers-" });
  const data = `${dir}/chat.db`;
  try {
    let read = 0;
    await withChat({ ...FAST, data }, async (chat) => {
      const ada = await jsonClient(chat, "/", { nick: "ada" }, ADA);
      const bob = await jsonClient(chat, "/", { nick: "bob" });
      read = (await say(bob, "hello", [ada])).id;
      send(ada, { type: "read", id: read });
      await until(ada, isRooms);
      await say(bob, "ada, there?", [ada]);
      await until(ada, isUnread);
      await closeAll(ada, bob);
    });
    await withChat({ ...FAST, data }, async (chat) => {
      const away = await jsonClient(chat, "/away", {}, ADA);
      assert.deepEqual(away.welcome.rooms, [
        { room: "lobby", read, unread: 1, mentions: 1 },
      ]);
      const back = await jsonClient(chat, "/", {}, ADA);
      assert.equal(back.welcome.read, read);
      await closeAll(away, back);
    });
  } finally {
    await Deno.remove(dir, { recursive: true });
  }
});

Deno.test({
  name:
    "with Redis a marker set on one process reaches the person's connections on the other; both count alike; a room that expired and started over voids it",
  ignore: !haveRedis && !Deno.env.get("CI"),
  fn: async () => {
    const redis = await startRedis();
    const chats: ChatProcess[] = [];
    try {
      for (let i = 0; i < 2; i++) {
        chats.push(
          await startChatProcess(redis.url, { args: ["--room-ttl", "1"] }),
        );
      }
      const [a, b] = chats.map((chat) => chat.server);
      const onA = await jsonClient(a, "/", { nick: "ada" }, ADA);
      const onB = await jsonClient(b, "/away", {}, ADA);
      const bob = await jsonClient(b, "/", { nick: "bob" });
      const hi = await say(bob, "hi", [onA]);
      send(onA, { type: "read", id: hi.id });
      const read = {
        type: "read",
        room: "lobby",
        read: hi.id,
        unread: 0,
        mentions: 0,
      };
      for (const peer of [onA, onB]) {
        assert.deepEqual(await until(peer, isRead, "the read notice"), read);
      }
      // bob, on b, says ada's name: both count it, each from its own view.
      await say(bob, "ada!", [onA]);
      const count = { type: "unread", room: "lobby", unread: 1, mentions: 1 };
      for (const peer of [onA, onB]) {
        assert.deepEqual(await until(peer, isUnread, "the count"), count);
      }
      const late = await jsonClient(b, "/late", {}, ADA);
      const lateOnA = await jsonClient(a, "/late", {}, ADA);
      for (const peer of [late, lateOnA]) {
        assert.deepEqual(peer.welcome.rooms, [
          { room: "lobby", read: hi.id, unread: 1, mentions: 1 },
        ]);
      }
      await closeAll(late, lateOnA);
      // A room ada marked and left expires (--room-ttl 1) and is made
      // again: her connections on both processes learn the marker is void.
      const inR = await jsonClient(a, "/r", {}, ADA);
      send(inR, { type: "read", id: inR.welcome.lastId });
      for (const peer of [onA, onB]) {
        await until(
          peer,
          (event) => isRooms(event) && event.rooms.length === 2,
        );
      }
      await inR.close(1000);
      await new Promise((resolve) => setTimeout(resolve, 2500));
      const cy = await jsonClient(b, "/r", { nick: "cy" });
      assert.notEqual(cy.welcome.epoch, inR.welcome.epoch);
      for (const peer of [onA, onB]) {
        assert.deepEqual(
          (await until(peer, isRooms, "the list without r")).rooms.map((
            room: Json,
          ) => room.room),
          ["lobby"],
        );
      }
      await closeAll(onA, onB, bob, cy);
    } finally {
      await Promise.all(chats.map((chat) => chat.stop()));
      await redis.kill();
    }
  },
});
