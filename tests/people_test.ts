/**
 * People, not connections (issue 12): sessions shared by tabs, direct
 * messages, typing notices, and what terminals get (the welcome line,
 * /join, /msg, /quit, escape sequences). Against a live server with real
 * clients, like the rest.
 *
 * @module
 */

import assert from "node:assert/strict";
import { CloseCode } from "../wire/protocol.ts";
import {
  chatUrl,
  closeAll,
  type Json,
  jsonClient,
  Peer,
  textClient,
  withChat,
  within,
} from "./test_helpers.ts";
import type { ChatServer } from "../main.ts";

const ADA = "ada-secret-0123456789abcdefghij";
const BOB = "bob-secret-0123456789abcdefghij";

/** A tab of a browser whose session is `secret`, and its welcome. */
function tab(
  chat: ChatServer,
  secret: string,
  query: Record<string, string | number> = {},
  path = "/",
): Promise<Peer & { welcome: Json; nick: string }> {
  return jsonClient(chat, path, query, secret);
}

/** Sends a marker message from `from` and returns each peer's next event. */
async function marker(from: Peer, ...peers: Peer[]): Promise<Json[]> {
  from.send(JSON.stringify({ type: "message", text: "marker" }));
  return await Promise.all(peers.map((peer) => peer.event("the marker")));
}

// ---------------------------------------------------------------------------
// Sessions
// ---------------------------------------------------------------------------

Deno.test("two tabs of one session share a nick and one online entry", async () => {
  await withChat({}, async (chat) => {
    const first = await tab(chat, ADA, { nick: "ada" });
    assert.equal(first.welcome.session, true);
    const second = await tab(chat, ADA, { nick: "someone-else" });
    assert.equal(second.nick, "ada");
    assert.equal(second.welcome.session, true);
    assert.deepEqual(second.welcome.users, ["ada"]);
    // No join for the second tab: the first tab's next event is the marker.
    const [atFirst, atSecond] = await marker(second, first, second);
    assert.equal(atFirst.text, "marker");
    assert.equal(atFirst.from, "ada");
    assert.equal(atSecond.id, atFirst.id);
    await closeAll(first, second);
  });
});

Deno.test("a second browser (another session) is another person", async () => {
  await withChat({}, async (chat) => {
    const ada = await tab(chat, ADA, { nick: "ada" });
    const bob = await tab(chat, BOB, { nick: "ada" });
    assert.notEqual(bob.nick, "ada");
    assert.equal((await bob.event()).code, "nick_taken");
    assert.deepEqual(await ada.event(), {
      ...(await Promise.resolve({})),
      type: "join",
      id: bob.welcome.lastId,
      ts: bob.welcome.history.at(-1).ts,
      nick: bob.nick,
    });
    await closeAll(ada, bob);
  });
});

Deno.test("a reload within sessionGrace makes no leave and no join", async () => {
  await withChat({ sessionGrace: 1 }, async (chat) => {
    const watcher = await jsonClient(chat, "/", { nick: "watcher" });
    const ada = await tab(chat, ADA, { nick: "ada" });
    assert.equal((await watcher.event()).nick, "ada"); // joined once
    await ada.close();
    const again = await tab(chat, ADA, {
      since: ada.welcome.lastId,
      epoch: ada.welcome.epoch,
    });
    assert.equal(again.nick, "ada");
    assert.equal(again.welcome.gap, false);
    assert.deepEqual(again.welcome.history, []);
    const [seen] = await marker(again, watcher);
    assert.equal(seen.text, "marker", "no leave or join came first");
    // Past the grace period still nothing: the person never left.
    await new Promise((resolve) => setTimeout(resolve, 1200));
    const [later] = await marker(again, watcher);
    assert.equal(later.text, "marker");
    await closeAll(watcher, again);
  });
});

Deno.test("a session's last tab gone for sessionGrace is announced as left once", async () => {
  await withChat({ sessionGrace: 1 }, async (chat) => {
    const watcher = await textClient(chat, "/", { nick: "watcher" });
    const first = await tab(chat, ADA, { nick: "ada" });
    const second = await tab(chat, ADA);
    assert.equal(await watcher.next(), " .... ada has joined.");
    const closedAt = Date.now();
    await closeAll(first, second);
    assert.equal(
      await within(watcher.next(), "the leave", 3000),
      " .... ada has left.",
    );
    assert.ok(Date.now() - closedAt >= 900, "not before the grace period");
    watcher.send("/who");
    assert.equal(await watcher.next(), " .... in lobby: watcher");
    await watcher.close();
  });
});

Deno.test("a rename from one tab renames the person in every tab", async () => {
  await withChat({}, async (chat) => {
    const first = await tab(chat, ADA, { nick: "ada" });
    const second = await tab(chat, ADA);
    const watcher = await jsonClient(chat, "/", { nick: "watcher" });
    await first.event(); // watcher joined
    await second.event();
    first.send(JSON.stringify({ type: "nick", nick: "lovelace" }));
    for (const peer of [first, second, watcher]) {
      const event = await peer.event();
      assert.deepEqual([event.type, event.from, event.to], [
        "nick",
        "ada",
        "lovelace",
      ]);
    }
    const [seen] = await marker(second, watcher);
    assert.equal(seen.from, "lovelace", "the other tab speaks as lovelace");
    await closeAll(first, second, watcher);
  });
});

Deno.test("the session secret is in no frame another client gets and no log", async () => {
  const lines: string[] = [];
  await withChat(
    { quiet: false, logFormat: "json", logSink: (line) => lines.push(line) },
    async (chat) => {
      const watcher = await jsonClient(chat, "/", { nick: "watcher" });
      const ada = await tab(chat, ADA, { nick: "ada" });
      const frames = [JSON.stringify(await watcher.event())];
      frames.push(JSON.stringify(await marker(ada, watcher)));
      frames.push(JSON.stringify(ada.welcome));
      await closeAll(watcher, ada);
      for (const text of [...frames, ...lines]) {
        assert.ok(!text.includes(ADA), text);
      }
    },
  );
});

// ---------------------------------------------------------------------------
// Direct messages
// ---------------------------------------------------------------------------

Deno.test("a DM reaches every connection of its two parties and nobody else", async () => {
  await withChat({}, async (chat) => {
    const ada1 = await tab(chat, ADA, { nick: "ada" });
    const ada2 = await tab(chat, ADA);
    const bob = await textClient(chat, "/", { nick: "bob" });
    const cy = await textClient(chat, "/", { nick: "cy" });
    const dan = await jsonClient(chat, "/", { nick: "dan" });
    for (const peer of [ada1, ada2]) {
      for (const nick of ["bob", "cy", "dan"]) {
        assert.equal((await peer.event()).nick, nick);
      }
    }
    assert.equal(await bob.next(), " .... cy has joined.");
    assert.equal(await bob.next(), " .... dan has joined.");
    assert.equal(await cy.next(), " .... dan has joined.");
    ada1.send(JSON.stringify({ type: "dm", to: "BOB", text: "psst" }));
    for (const peer of [ada1, ada2]) {
      const dm = await peer.event();
      assert.deepEqual(
        [dm.type, dm.from, dm.to, dm.text],
        ["dm", "ada", "bob", "psst"],
      );
      assert.equal(typeof dm.id, "number");
    }
    assert.equal(await bob.next(), "[dm] ada -> bob: psst");
    bob.send("/msg ada back at you");
    assert.equal(await bob.next(), "[dm] bob -> ada: back at you");
    for (const peer of [ada1, ada2]) {
      assert.equal((await peer.event()).text, "back at you");
    }
    // The others got neither: their next frame is this message.
    bob.send("after");
    assert.equal(await cy.next(), "bob: after");
    assert.equal((await dan.event()).text, "after");
    await closeAll(ada1, ada2, bob, cy, dan);
  });
});

Deno.test("a DM to nobody here is refused with no_such_nick, in both protocols", async () => {
  await withChat({}, async (chat) => {
    const json = await jsonClient(chat, "/", { nick: "ada" });
    const text = await textClient(chat, "/", { nick: "bob" });
    await json.event(); // bob joined
    json.send(JSON.stringify({ type: "dm", to: "nobody", text: "hi" }));
    assert.deepEqual(await json.event(), {
      type: "error",
      code: "no_such_nick",
      message: "nobody here is called nobody",
    });
    text.send("/msg nobody hi");
    assert.equal(
      await text.next(),
      " .... error: nobody here is called nobody",
    );
    await closeAll(json, text);
  });
});

Deno.test("missed DMs come back on resume to their parties only, never to a third", async () => {
  await withChat({}, async (chat) => {
    const ada = await jsonClient(chat, "/", { nick: "ada" });
    const bob = await jsonClient(chat, "/", { nick: "bob" });
    const cy = await jsonClient(chat, "/", { nick: "cy" });
    const since = cy.welcome.lastId;
    const epoch = cy.welcome.epoch;
    await cy.close();
    await bob.close();
    await ada.event(); // bob joined
    await ada.event(); // cy joined
    await ada.event(); // cy left
    await ada.event(); // bob left
    // bob comes back as a session (as the page and the terminal client do).
    const bob2 = await tab(chat, BOB, { nick: "bob" });
    await ada.event(); // bob joined again
    ada.send(JSON.stringify({ type: "dm", to: "bob", text: "secret" }));
    assert.equal((await ada.event()).text, "secret");
    assert.equal((await bob2.event()).text, "secret");
    const cyBack = await jsonClient(chat, "/", { nick: "cy", since, epoch });
    assert.equal(cyBack.welcome.gap, false);
    assert.ok(
      !cyBack.welcome.history.some((event: Json) => event.type === "dm"),
      JSON.stringify(cyBack.welcome.history),
    );
    const newcomer = await jsonClient(chat, "/", { nick: "dan" });
    assert.ok(!JSON.stringify(newcomer.welcome).includes("secret"));
    await bob2.close(); // a reload: bob is the same person within the grace
    const bobBack = await tab(chat, BOB, { since: bob2.welcome.lastId, epoch });
    const dms = bobBack.welcome.history.filter((e: Json) => e.type === "dm");
    assert.deepEqual(dms.map((e: Json) => e.text), ["secret"]);
    await closeAll(ada, cyBack, newcomer, bobBack);
  });
});

// ---------------------------------------------------------------------------
// Typing
// ---------------------------------------------------------------------------

Deno.test("typing reaches the other JSON clients at most every 2 s, using no message tokens", async () => {
  await withChat({ rate: 1, burst: 1 }, async (chat) => {
    const ada = await jsonClient(chat, "/", { nick: "ada" });
    const bob = await jsonClient(chat, "/", { nick: "bob" });
    const cy = await textClient(chat, "/", { nick: "cy" });
    await ada.event(); // bob
    await ada.event(); // cy
    await bob.event(); // cy
    for (let i = 0; i < 3; i++) ada.send(JSON.stringify({ type: "typing" }));
    assert.deepEqual(await bob.event(), { type: "typing", nick: "ada" });
    // Its one message token is still there: the message goes through.
    ada.send(JSON.stringify({ type: "message", text: "typed" }));
    assert.equal((await ada.event()).text, "typed", "no typing echo to ada");
    assert.equal((await bob.event()).text, "typed", "one typing notice only");
    assert.equal(await cy.next(), "ada: typed", "text clients get none");
    await closeAll(ada, bob, cy);
  });
});

// ---------------------------------------------------------------------------
// Terminals: the welcome line and the text commands
// ---------------------------------------------------------------------------

Deno.test("a text client is told its nick, its room and who is here", async () => {
  await withChat({}, async (chat) => {
    const ada = await textClient(chat, "/rust", { nick: "ada" });
    const bob = new Peer(chatUrl(chat, "/rust", { nick: "bob" }));
    assert.equal(await bob.next(), " .... you are bob in rust; here: ada, bob");
    await closeAll(ada, bob);
  });
});

Deno.test("/join moves a text client: left in the old room, joined in the new", async () => {
  await withChat({}, async (chat) => {
    const ada = await textClient(chat, "/", { nick: "ada" });
    const lobby = await textClient(chat, "/", { nick: "stays" });
    const rust = await textClient(chat, "/rust", { nick: "rusty" });
    await ada.next(); // stays joined
    ada.send("/join rust");
    assert.equal(
      await ada.next(),
      " .... you are ada in rust; here: rusty, ada",
    );
    assert.equal(await lobby.next(), " .... ada has left.");
    assert.equal(await rust.next(), " .... ada has joined.");
    ada.send("hello rust");
    assert.equal(await rust.next(), "ada: hello rust");
    assert.equal(await ada.next(), "ada: hello rust");
    ada.send("/join Not A Room");
    assert.match(await ada.next(), /^ \.\.\.\. error: A room name is 1-32/);
    await closeAll(ada, lobby, rust);
  });
});

Deno.test("/quit closes with 1000 and the room hears the leave", async () => {
  await withChat({}, async (chat) => {
    const ada = await textClient(chat, "/", { nick: "ada" });
    const bob = await textClient(chat, "/", { nick: "bob" });
    ada.send("/quit");
    const closed = await within(ada.closed, "the close");
    assert.equal(closed.code, CloseCode.Normal);
    assert.equal(await bob.next(), " .... ada has left.");
    await bob.close();
  });
});

Deno.test("terminal escape sequences are stripped whole, not only their ESC", async () => {
  await withChat({}, async (chat) => {
    const ada = await textClient(chat, "/", { nick: "ada" });
    ada.send(
      "\x1b[31mred\x1b[0m \x1b]0;owned\x07title \x1b]8;;http://x\x1b\\link \x9b2Jok",
    );
    assert.equal(await ada.next(), "ada: red title link ok");
    await ada.close();
  });
});

// ---------------------------------------------------------------------------
// Who a person is, when nicks change hands
// ---------------------------------------------------------------------------

Deno.test("whoever takes a nick later does not get the DMs its last holder got", async () => {
  await withChat({}, async (chat) => {
    const ada = await jsonClient(chat, "/", { nick: "ada" });
    const bob = await jsonClient(chat, "/", { nick: "bob" });
    await ada.event(); // bob joined
    ada.send(JSON.stringify({ type: "dm", to: "bob", text: "for bob only" }));
    assert.equal((await bob.event()).text, "for bob only");
    const since = bob.welcome.lastId;
    await bob.close(1000);
    const eve = await jsonClient(chat, "/", {
      nick: "bob",
      since,
      epoch: bob.welcome.epoch,
    });
    assert.equal(eve.nick, "bob");
    assert.ok(!JSON.stringify(eve.welcome).includes("for bob only"));
    const fresh = await jsonClient(chat, "/", { nick: "cy" });
    assert.ok(!JSON.stringify(fresh.welcome).includes("for bob only"));
    await closeAll(ada, eve, fresh);
  });
});

Deno.test("a session renamed while one of its tabs waits out the grace still leaves", async () => {
  await withChat({ sessionGrace: 1 }, async (chat) => {
    const watcher = await textClient(chat, "/", { nick: "watcher" });
    const first = await tab(chat, ADA, { nick: "ada" });
    const second = await tab(chat, ADA);
    assert.equal(await watcher.next(), " .... ada has joined.");
    await first.close(4000); // goes into its grace period
    second.send(JSON.stringify({ type: "nick", nick: "lovelace" }));
    assert.equal(await watcher.next(), " .... ada is now known as lovelace.");
    await new Promise((resolve) => setTimeout(resolve, 1500));
    await second.close(1000);
    assert.equal(await watcher.next(), " .... lovelace has left.");
    watcher.send("/who");
    assert.equal(await watcher.next(), " .... in lobby: watcher");
    await watcher.close();
  });
});

Deno.test("a token takeover of a session's nick closes every tab of it", async () => {
  await withChat({}, async (chat) => {
    const first = await tab(chat, ADA, { nick: "ada" });
    const second = await tab(chat, ADA);
    const taker = await jsonClient(chat, "/", {
      nick: "ada",
      token: first.welcome.token,
    });
    assert.equal(taker.nick, "ada");
    for (const old of [first, second]) {
      const closed = await within(old.closed, "the replaced tab's close");
      assert.equal(closed.code, CloseCode.Normal);
    }
    await taker.close();
  });
});

Deno.test("a DM stays its recipient's after a rename and a reload (issue 17: 4)", async () => {
  await withChat({}, async (chat) => {
    const ada = await tab(chat, ADA, { nick: "ada" });
    const bob = await tab(chat, BOB, { nick: "bob" });
    await ada.event("bob's join");
    bob.send(JSON.stringify({ type: "dm", to: "ada", text: "first secret" }));
    const dm = await ada.event("the DM");
    assert.equal(dm.text, "first secret");
    ada.send(JSON.stringify({ type: "nick", nick: "ada_l" }));
    assert.equal((await ada.event("the rename")).to, "ada_l");
    // A reload: the tab goes (not a goodbye), and the same browser comes
    // back asking for the name it had, as the page does.
    await ada.close(4000);
    const back = await tab(chat, ADA, { nick: "ada_l" });
    assert.equal(back.nick, "ada_l");
    const kept = back.welcome.history.filter((e: Json) => e.type === "dm");
    assert.deepEqual(kept.map((e: Json) => [e.id, e.text]), [
      [dm.id, "first secret"],
    ]);
    // Someone who takes "ada" now does not get it.
    const eve = await jsonClient(chat, "/", { nick: "ada" });
    assert.equal(eve.nick, "ada");
    assert.ok(!JSON.stringify(eve.welcome).includes("first secret"));
    await closeAll(back, bob, eve);
  });
});
