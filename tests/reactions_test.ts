/**
 * Reactions with real clients on a real server (the memory store; the
 * contract tests hold `--data` and Redis to the same rules): the live
 * notice in both protocols, one per person per key, the welcome's, a
 * history page's and a resume's aggregated form with `me`, the limits and
 * refusals, a deleted message taking its reactions, rate limits, and
 * reactions taking no place in history.
 *
 * @module
 */

import assert from "node:assert/strict";
import {
  MAX_REACTION_KEYS,
  MAX_REACTION_NICKS,
  OP_PROTOCOL_PREFIX,
  REACTION_KEY_RULE,
} from "../wire/protocol.ts";
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
const CY = "cy-session-secret-01234567890";
const FAST = { rate: 1000, burst: 1000 };

/** The next event that passes `test` (others before it are skipped). */
async function until(peer: Peer, test: (event: Json) => boolean) {
  for (;;) {
    const event = await peer.event();
    if (test(event)) return event;
  }
}

function send(peer: Peer, frame: Json): void {
  peer.send(JSON.stringify(frame));
}

const isReact = (event: Json) => event.type === "react";
const isError = (event: Json) => event.type === "error";

Deno.test("a reaction reaches everyone live (JSON: the react notice with the count; plain text: a line), one per person per key, toggled back", async () => {
  await withChat(FAST, async (chat) => {
    const ada = await jsonClient(chat, "/", { nick: "ada" }, ADA);
    const bob = await textClient(chat, "/", { nick: "bob" });
    const cy = await jsonClient(chat, "/", { nick: "cy" }, CY);
    await until(ada, (e) => e.type === "join" && e.nick === "cy");
    send(ada, { type: "message", text: "ship it?" });
    const said = await until(ada, (e) => e.type === "message");
    assert.equal(await bob.next(), " .... cy has joined.");
    assert.equal(await bob.next(), "ada: ship it?");
    await until(cy, (e) => e.type === "message");

    send(cy, { type: "react", id: said.id, key: "👍" });
    const expected = {
      type: "react",
      target: said.id,
      key: "👍",
      from: "cy",
      on: true,
      count: 1,
    };
    assert.deepEqual(await ada.event(), expected);
    assert.deepEqual(await cy.event(), expected);
    assert.equal(await bob.next(), `* cy reacted 👍 to #${said.id}`);

    // A second tab of cy's session is the same person: setting it on again
    // changes nothing and tells nobody.
    const cy2 = await jsonClient(chat, "/", {}, CY);
    send(cy2, { type: "react", id: said.id, key: "👍", on: true });
    // bob, in plain text, reacts with a short name; ada's count is 2.
    bob.send(`/react ${said.id} 👍`);
    assert.deepEqual(await ada.event(), {
      ...expected,
      from: "bob",
      count: 2,
    });
    assert.equal(await bob.next(), `* bob reacted 👍 to #${said.id}`);
    bob.send(`/react ${said.id} :ship_it:`);
    assert.deepEqual(await ada.event(), {
      ...expected,
      key: ":ship_it:",
      from: "bob",
      count: 1,
    });
    assert.equal(await bob.next(), `* bob reacted :ship_it: to #${said.id}`);
    // cy toggles 👍 back.
    send(cy, { type: "react", id: said.id, key: "👍" });
    assert.deepEqual(await ada.event(), {
      ...expected,
      on: false,
      count: 1,
    });
    assert.equal(await bob.next(), `* cy took back 👍 from #${said.id}`);
    assert.equal(ada.pending, 0, "the repeated `on` sent nothing");
    // Counted once each: the repeated `on` changed nothing.
    assert.equal(await metric(chat, 'chat_reactions_total{change="added"}'), 3);
    assert.equal(
      await metric(chat, 'chat_reactions_total{change="taken_back"}'),
      1,
    );
    assert.equal(await metric(chat, 'chat_said_total{kind="message"}'), 1);
    await closeAll(ada, bob, cy, cy2);
  });
});

Deno.test("the welcome and a history page carry each message's reactions, counted, with who and `me`", async () => {
  await withChat(FAST, async (chat) => {
    const ada = await jsonClient(chat, "/", { nick: "ada" }, ADA);
    send(ada, { type: "message", text: "first" });
    const first = await until(ada, (e) => e.type === "message");
    send(ada, { type: "message", text: "second" });
    const second = await until(ada, (e) => e.type === "message");
    const bob = await jsonClient(chat, "/", { nick: "bob" });
    for (const key of ["🎉", "👍"]) {
      send(bob, { type: "react", id: first.id, key });
      await until(bob, isReact);
    }
    send(ada, { type: "react", id: first.id, key: "👍" });
    await until(ada, (e) => isReact(e) && e.from === "ada");
    await closeAll(ada);

    // ada comes back (her session): `me` on her 👍 only.
    const back = await jsonClient(chat, "/", {}, ADA);
    const kept = back.welcome.history.find((e: Json) => e.id === first.id);
    assert.deepEqual(kept.reactions, [
      { key: "🎉", count: 1, nicks: ["bob"], me: false },
      { key: "👍", count: 2, nicks: ["bob", "ada"], me: true },
    ]);
    const plain = back.welcome.history.find((e: Json) => e.id === second.id);
    assert.equal("reactions" in plain, false, "none: no field");
    // A history page says the same, to bob with his `me`.
    send(bob, { type: "history", before: second.id, limit: 10 });
    const page = await until(bob, (e) => e.type === "history");
    const paged = page.events.find((e: Json) => e.id === first.id);
    assert.deepEqual(paged.reactions, [
      { key: "🎉", count: 1, nicks: ["bob"], me: true },
      { key: "👍", count: 2, nicks: ["bob", "ada"], me: true },
    ]);
    assert.equal(
      JSON.stringify(page).includes("s."),
      false,
      "no owner is ever sent",
    );
    await closeAll(back, bob);
  });
});

Deno.test("a welcome names the first MAX_REACTION_NICKS who reacted with a key and counts them all; `me` holds for one past them", async () => {
  await withChat(FAST, async (chat) => {
    const ada = await jsonClient(chat, "/", { nick: "ada" });
    send(ada, { type: "message", text: "vote" });
    const vote = await until(ada, (e) => e.type === "message");
    const voters: Peer[] = [];
    const everyone = MAX_REACTION_NICKS + 2;
    const sessionOf = (i: number) =>
      `voter-session-${String(i).padStart(16, "0")}`;
    for (let i = 0; i < everyone; i++) {
      const session = sessionOf(i);
      const voter = await jsonClient(chat, "/", { nick: `v${i}` }, session);
      send(voter, { type: "react", id: vote.id, key: "👍" });
      await until(voter, (e) => isReact(e) && e.from === `v${i}`);
      voters.push(voter);
    }
    await closeAll(...voters);
    const names = Array.from({ length: MAX_REACTION_NICKS }, (_, i) => `v${i}`);
    const reactions = (me: boolean) => [
      { key: "👍", count: everyone, nicks: names, me },
    ];
    const of = (peer: { welcome: Json }) =>
      peer.welcome.history.find((e: Json) => e.id === vote.id).reactions;
    const newcomer = await jsonClient(chat, "/", { nick: "cy" });
    assert.deepEqual(of(newcomer), reactions(false));
    // The last voter, back with their session: not named, but theirs.
    const back = await jsonClient(chat, "/", {}, sessionOf(everyone - 1));
    assert.deepEqual(of(back), reactions(true));
    await closeAll(ada, newcomer, back);
  });
});

Deno.test("a resume learns the reactions now on messages it had (`reacted`), taken back ones too", async () => {
  await withChat(FAST, async (chat) => {
    const ada = await jsonClient(chat, "/", { nick: "ada" }, ADA);
    const bob = await jsonClient(chat, "/", { nick: "bob" });
    send(ada, { type: "message", text: "vote" });
    const vote = await until(ada, (e) => e.type === "message");
    send(ada, { type: "message", text: "other" });
    const other = await until(ada, (e) => e.type === "message");
    send(bob, { type: "react", id: other.id, key: "🚀" });
    await until(ada, isReact);
    const { epoch } = ada.welcome;
    await closeAll(ada);
    // While ada is away: a reaction added to one, the other's taken back.
    send(bob, { type: "react", id: vote.id, key: "✅" });
    await until(bob, (e) => isReact(e) && e.key === "✅");
    send(bob, { type: "react", id: other.id, key: "🚀" });
    await until(bob, (e) => isReact(e) && !e.on);
    const back = await jsonClient(chat, "/", { since: other.id, epoch }, ADA);
    assert.equal(back.welcome.gap, false);
    assert.deepEqual(
      back.welcome.reacted.sort((a: Json, b: Json) => a.id - b.id),
      [
        {
          id: vote.id,
          reactions: [{ key: "✅", count: 1, nicks: ["bob"], me: false }],
        },
        { id: other.id, reactions: [] },
      ],
    );
    await closeAll(back, bob);
  });
});

Deno.test("bad reactions: a key that is not one emoji or :short_name: (bad_request), no such message, not a message, the key limit, a mute; nothing stored", async () => {
  await withChat({ ...FAST, opKey: "op-key" }, async (chat) => {
    const ada = await jsonClient(chat, "/", { nick: "ada" });
    send(ada, { type: "message", text: "react to me" });
    const said = await until(ada, (e) => e.type === "message");
    for (
      const key of ["a", "👍👍", ":no spaces:", ":" + "x".repeat(31) + ":", ""]
    ) {
      send(ada, { type: "react", id: said.id, key });
      assert.deepEqual(await until(ada, isError), {
        type: "error",
        code: "bad_request",
        message: REACTION_KEY_RULE,
      }, `key ${JSON.stringify(key)}`);
    }
    send(ada, { type: "react", id: said.id });
    assert.equal((await until(ada, isError)).code, "bad_request");
    send(ada, { type: "react", id: said.id + 100, key: "👍" });
    assert.deepEqual(await until(ada, isError), {
      type: "error",
      code: "no_such_message",
      message: `no message ${said.id + 100} in this room's history`,
    });
    // Ada's join is an event, not a message.
    const join = ada.welcome.history.find((e: Json) => e.type === "join");
    send(ada, { type: "react", id: join.id, key: "👍" });
    assert.equal((await until(ada, isError)).code, "no_such_message");
    // Twenty keys, then a twenty-first is refused; another person may still
    // add themselves to one of the twenty.
    for (let i = 0; i < MAX_REACTION_KEYS; i++) {
      send(ada, { type: "react", id: said.id, key: `:k${i}:` });
      await until(ada, isReact);
    }
    send(ada, { type: "react", id: said.id, key: ":one_more:" });
    assert.equal((await until(ada, isError)).code, "reaction_limit");
    const bob = await jsonClient(chat, "/", { nick: "bob" });
    const kept = bob.welcome.history.find((e: Json) => e.id === said.id);
    assert.equal(kept.reactions.length, MAX_REACTION_KEYS);
    assert.equal(
      kept.reactions.some((r: Json) => r.key === ":one_more:"),
      false,
    );
    send(bob, { type: "react", id: said.id, key: ":k0:" });
    assert.equal((await until(bob, isReact)).count, 2);
    // A muted person reacts to nothing (nor takes a reaction back).
    const keeper = new Peer(chatUrl(chat, "/", { nick: "keeper" }), [
      OP_PROTOCOL_PREFIX + "op-key",
    ]);
    await keeper.nextMatching(/^ \.\.\.\. you are /);
    keeper.send("/mute bob 5");
    await keeper.nextMatching(/bob/);
    send(bob, { type: "react", id: said.id, key: ":k0:" });
    assert.deepEqual(await until(bob, isError), {
      type: "error",
      code: "muted",
      message: "you are muted in this room",
    });
    const dee = await jsonClient(chat, "/", { nick: "dee" });
    const still = dee.welcome.history.find((e: Json) => e.id === said.id);
    assert.equal(still.reactions.find((r: Json) => r.key === ":k0:").count, 2);
    await closeAll(ada, bob, keeper, dee);
  });
});

Deno.test("a deleted message takes its reactions with it; reactions take no place in history", async () => {
  await withChat({ ...FAST, historySize: 5 }, async (chat) => {
    const ada = await jsonClient(chat, "/", { nick: "ada" }, ADA);
    const said: Json[] = [];
    for (let i = 1; i <= 5; i++) {
      send(ada, { type: "message", text: `m${i}` });
      said.push(await until(ada, (e) => e.type === "message"));
    }
    // 200 reactions (100 toggled on and off twice) in a room keeping 5 events.
    for (let i = 0; i < 200; i++) {
      send(ada, { type: "react", id: said[i % 5].id, key: "👀" });
    }
    for (let i = 0; i < 200; i++) await until(ada, isReact);
    const bob = await jsonClient(chat, "/", { nick: "bob" });
    assert.deepEqual(
      bob.welcome.history.filter((e: Json) => e.type === "message")
        .map((e: Json) => e.text),
      ["m2", "m3", "m4", "m5"],
      "bob's join pushed m1 out; the reactions pushed nothing",
    );
    // ada deletes m5 (her own): bob sees it go; its reactions are gone.
    send(ada, { type: "react", id: said[4].id, key: "👀" });
    await until(bob, isReact);
    ada.send(JSON.stringify({ type: "delete", id: said[4].id }));
    await until(bob, (e) => e.type === "delete");
    send(bob, { type: "react", id: said[4].id, key: "👀" });
    assert.equal((await until(bob, isError)).code, "no_such_message");
    const cy = await jsonClient(chat, "/", { nick: "cy" });
    assert.equal(
      cy.welcome.history.some((e: Json) => e.id === said[4].id),
      false,
    );
    assert.equal(cy.welcome.reacted, undefined);
    await closeAll(ada, bob, cy);
  });
});

Deno.test("with --data, a connection after a restart is nobody who reacted before it (no `me` on, no taking back, another's reaction)", async () => {
  const dir = await Deno.makeTempDir();
  const data = `${dir}/chat.db`;
  try {
    let id = 0;
    await withChat({ data }, async (chat) => {
      const ada = await jsonClient(chat, "/", { nick: "ada" });
      send(ada, { type: "message", text: "keep me" });
      id = (await until(ada, (e) => e.type === "message")).id;
      send(ada, { type: "react", id, key: "👍" });
      await until(ada, isReact);
      await closeAll(ada);
    });
    await withChat({ data }, async (chat) => {
      const bob = await jsonClient(chat, "/", { nick: "bob" });
      const kept = bob.welcome.history.find((e: Json) => e.id === id);
      assert.deepEqual(kept.reactions, [
        { key: "👍", count: 1, nicks: ["ada"], me: false },
      ]);
      send(bob, { type: "react", id, key: "👍" });
      assert.equal((await until(bob, isReact)).count, 2, "his own, added");
      await closeAll(bob);
    });
  } finally {
    await Deno.remove(dir, { recursive: true });
  }
});

Deno.test("reactions spend the message rate: past the burst they are dropped with rate_limited", async () => {
  await withChat({ rate: 1, burst: 3 }, async (chat) => {
    const ada = await jsonClient(chat, "/", { nick: "ada" });
    send(ada, { type: "message", text: "x" });
    const said = await until(ada, (e) => e.type === "message");
    for (const key of ["👍", "🎉", "🚀", "👀"]) {
      send(ada, { type: "react", id: said.id, key });
    }
    const got: Json[] = [];
    for (let i = 0; i < 4; i++) got.push(await ada.event());
    // An error goes at once, the room's notices at the end of the turn.
    assert.deepEqual(
      got.map((e) => e.type === "react" ? e.key : e.code).sort(),
      ["rate_limited", "rate_limited", "🎉", "👍"].sort(),
    );
    await closeAll(ada);
  });
});
