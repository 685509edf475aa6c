/**
 * History that outlives the process (issue 19): the `--data` store through
 * real servers and real sockets (kill -9 and restart of the CLI, resume,
 * moderation and deletions across a restart, a bad data file), and reading
 * back with `history` on every store (paging, DMs, deleted messages,
 * retention, bad input, floods).
 *
 * @module
 */

import assert from "node:assert/strict";
import { DatabaseSync } from "node:sqlite";
import { CloseCode, type NewEvent, type RoomEvent } from "../wire/protocol.ts";
import type { ChatServer } from "../main.ts";
import { DataFileError, SqliteArchive, SqliteStore } from "./sqlite_store.ts";
import {
  type KeptReaction,
  MARKERS_COMMIT_MS,
  MAX_UNREAD_COUNTED,
  MAX_UNREAD_READ,
  reconnectToken,
  type RoomStore,
} from "./rooms.ts";
import {
  chatUrl,
  cli,
  closeAll,
  eventually,
  type Json,
  jsonClient,
  Peer,
  RawClient,
  startCli,
  textClient,
  withChat,
  within,
} from "../tests/test_helpers.ts";
import { haveRedis, startRedis } from "../tests/redis_helpers.ts";
import { hs256, OP_KEY, SECRET, signedClient } from "../tests/auth_helpers.ts";

/** Bob's session secret, so that he is the same person after a restart. */
const BOB_SESSION = "bob-session-secret-0123456789";
/** Ada's, likewise. */
const ADA_SESSION = "ada-session-secret-0123456789";

/** What a spawned CLI needs to write its data file (and nothing else). */
function writeTo(dir: string): string[] {
  return [`--allow-write=${dir}`];
}

/** Store options for filling a data file directly. */
const FILL = {
  historySize: 100,
  maxHistoryBytes: 1 << 20,
  maxRooms: 10,
  onEvict: () => {},
  retainEvents: 100_000,
  retainDays: 0,
};

/** Appends `events` to `room` in the data file at `path` (one commit). */
async function fill(
  path: string,
  room: string,
  events: NewEvent[],
): Promise<void> {
  const store = await SqliteStore.connect({ ...FILL, path });
  store.hold(room);
  await Promise.all(events.map((event) => store.append(room, event)));
  store.release(room);
  await store.close!();
}

/** `n` messages from `from`, numbered from 1. */
function messages(n: number, from = "old"): NewEvent[] {
  return Array.from(
    { length: n },
    (_, i) => ({ type: "message", from, text: `m${i + 1}` }),
  );
}

/** Sends a `history` read and returns the answer. */
async function readBack(
  peer: Peer,
  before: number,
  limit?: number,
): Promise<Json> {
  peer.send(JSON.stringify({ type: "history", before, limit }));
  for (;;) {
    const answer = await peer.event("the history answer");
    assert.notEqual(answer.type, "error", JSON.stringify(answer));
    if (answer.type === "history") return answer; // room events may come first
  }
}

/** Every page back from `before` to the beginning, in the order read. */
async function allPages(
  peer: Peer,
  before: number,
  limit: number,
): Promise<Json[][]> {
  const pages: Json[][] = [];
  for (;;) {
    const answer = await readBack(peer, before, limit);
    pages.push(answer.events);
    if (!answer.more) return pages;
    assert.equal(answer.events.length, limit, "a page with more is full");
    before = answer.events[0].id;
  }
}

/** Lets a test use a fresh temporary directory, removed afterwards. */
async function inTempDir(
  fn: (dir: string) => void | Promise<void>,
): Promise<void> {
  const dir = await Deno.makeTempDir({ prefix: "chat-data-" });
  try {
    await fn(dir);
  } finally {
    await Deno.remove(dir, { recursive: true });
  }
}

/** A message sent by `peer`, and its echo (the server has it on disk). */
async function sendAndEcho(peer: Peer, text: string): Promise<Json> {
  peer.send(JSON.stringify({ type: "message", text }));
  for (;;) {
    const event = await peer.event(`the echo of ${text}`);
    if (event.type === "message" && event.text === text) return event;
  }
}

// ---------------------------------------------------------------------------
// Durability: kill -9 and restart
// ---------------------------------------------------------------------------

Deno.test("kill -9 right after an echo loses nothing: JSON resume after restart has no gap", async () => {
  await inTempDir(async (dir) => {
    const data = ["--data", `${dir}/chat.db`, "--quiet"];
    const first = await startCli(data, writeTo(dir));
    const server = { wsPort: first.wsPort } as ChatServer;
    const ada = await jsonClient(server, "/", { nick: "ada" });
    const joinedAt = ada.welcome.lastId;
    const sent = [];
    for (let i = 1; i <= 5; i++) sent.push(await sendAndEcho(ada, `n${i}`));
    first.child.kill("SIGKILL"); // right after the last echo
    await within(first.child.status, "the kill");
    await first.lines.cancel();
    await within(ada.closed, "the dropped connection");

    const second = await startCli(data, writeTo(dir));
    const again = { wsPort: second.wsPort } as ChatServer;
    const back = await jsonClient(again, "/", {
      nick: "ada",
      since: joinedAt,
      epoch: ada.welcome.epoch,
    });
    assert.equal(back.welcome.epoch, ada.welcome.epoch, "same epoch");
    assert.equal(back.welcome.gap, false);
    assert.equal(back.nick, "ada");
    const history = back.welcome.history;
    assert.deepEqual(history.slice(0, 5), sent, "every echoed message");
    assert.deepEqual(history.slice(5).map((e: Json) => [e.type, e.nick]), [
      ["join", "ada"],
    ]);
    assert.equal(back.welcome.lastId, sent[4].id + 1, "ids go on");
    await back.close();
    second.child.kill("SIGTERM");
    assert.equal((await within(second.child.status, "the exit")).code, 0);
    await second.lines.cancel();
  });
});

Deno.test("kill -9 right after the echo of an edit loses nothing: the message is kept edited, its old text nowhere", async () => {
  await inTempDir(async (dir) => {
    const data = ["--data", `${dir}/chat.db`, "--quiet"];
    const first = await startCli(data, writeTo(dir));
    const server = { wsPort: first.wsPort } as ChatServer;
    const ada = await jsonClient(server, "/", { nick: "ada" });
    const said = await sendAndEcho(ada, "lunch at 11");
    ada.send(JSON.stringify({ type: "edit", id: said.id, text: "at noon" }));
    let edit: Json;
    do edit = await ada.event("the edit's echo"); while (edit.type !== "edit");
    first.child.kill("SIGKILL"); // right after the edit's echo
    await within(first.child.status, "the kill");
    await first.lines.cancel();
    await within(ada.closed, "the dropped connection");

    const second = await startCli(data, writeTo(dir));
    const again = { wsPort: second.wsPort } as ChatServer;
    const back = await jsonClient(again, "/", { nick: "bea" });
    const history = back.welcome.history;
    const kept = history.find((e: Json) => e.id === said.id);
    assert.equal(kept.text, "at noon");
    assert.equal(kept.edited, edit.edited);
    assert.ok(history.some((e: Json) => e.id === edit.id && e.type === "edit"));
    assert.ok(!JSON.stringify(history).includes("lunch at 11"));
    await back.close();
    second.child.kill("SIGTERM");
    assert.equal((await within(second.child.status, "the exit")).code, 0);
    await second.lines.cancel();
  });
});

Deno.test("kill -9 right after the notice of a reaction loses nothing: the welcome after the restart shows it, with `me` for its person", async () => {
  await inTempDir(async (dir) => {
    const data = ["--data", `${dir}/chat.db`, "--quiet"];
    const first = await startCli(data, writeTo(dir));
    const server = { wsPort: first.wsPort } as ChatServer;
    const ada = await jsonClient(server, "/", { nick: "ada" }, ADA_SESSION);
    const said = await sendAndEcho(ada, "ship it?");
    ada.send(JSON.stringify({ type: "react", id: said.id, key: "👍" }));
    let notice: Json;
    do notice = await ada.event("the reaction's notice"); while (
      notice.type !== "react"
    );
    first.child.kill("SIGKILL"); // right after the notice
    await within(first.child.status, "the kill");
    await first.lines.cancel();
    await within(ada.closed, "the dropped connection");
    assert.deepEqual(notice, {
      type: "react",
      target: said.id,
      key: "👍",
      from: "ada",
      on: true,
      count: 1,
    });

    const second = await startCli(data, writeTo(dir));
    const again = { wsPort: second.wsPort } as ChatServer;
    const bea = await jsonClient(again, "/", { nick: "bea" });
    const seen = bea.welcome.history.find((e: Json) => e.id === said.id);
    assert.deepEqual(seen, {
      ...said,
      reactions: [{ key: "👍", count: 1, nicks: ["ada"], me: false }],
    });
    // Her session is the same person: `me` for her.
    const back = await jsonClient(again, "/", { nick: "ada" }, ADA_SESSION);
    assert.deepEqual(
      back.welcome.history.find((e: Json) => e.id === said.id).reactions,
      [{ key: "👍", count: 1, nicks: ["ada"], me: true }],
    );
    await closeAll(bea, back);
    second.child.kill("SIGTERM");
    assert.equal((await within(second.child.status, "the exit")).code, 0);
    await second.lines.cancel();
  });
});

Deno.test("kill -9 right after a plain-text echo loses nothing: /history after restart shows it", async () => {
  await inTempDir(async (dir) => {
    const data = ["--data", `${dir}/chat.db`, "--quiet"];
    const first = await startCli(data, writeTo(dir));
    const server = { wsPort: first.wsPort } as ChatServer;
    const ada = await textClient(server, "/", { nick: "ada" });
    ada.send("before the crash");
    assert.equal(await ada.next(), "ada: before the crash");
    first.child.kill("SIGKILL");
    await within(first.child.status, "the kill");
    await first.lines.cancel();
    await within(ada.closed, "the dropped connection");

    const second = await startCli(data, writeTo(dir));
    const again = { wsPort: second.wsPort } as ChatServer;
    const back = await textClient(again, "/", { nick: "ada" });
    back.send("/history 3");
    assert.equal(await back.next(), " .... ada has joined.");
    assert.equal(await back.next(), "ada: before the crash");
    assert.equal(await back.next(), " .... this is the beginning of lobby.");
    // JSON resume across the restart from before the message: no gap.
    const json = await jsonClient(again, "/", { since: 1, epoch: "x" });
    assert.equal(json.welcome.gap, true, "a wrong epoch is a gap");
    const epoch = json.welcome.epoch;
    const exact = await jsonClient(again, "/", { since: 1, epoch });
    assert.equal(exact.welcome.gap, false);
    assert.equal(exact.welcome.history[0].text, "before the crash");
    await closeAll(back, json, exact);
    second.child.kill("SIGTERM");
    await within(second.child.status, "the exit");
    await second.lines.cancel();
  });
});

Deno.test("reconnect tokens outlive a restart: the same token for the same join", async () => {
  await inTempDir(async (dir) => {
    const path = `${dir}/chat.db`;
    let token = "";
    let epoch = "";
    await withChat({ data: path }, async (chat) => {
      const ada = await jsonClient(chat, "/", { nick: "ada" });
      token = ada.welcome.token;
      epoch = ada.welcome.epoch;
      await ada.close();
    });
    // A store reopened computes tokens with the kept key.
    const archive = SqliteArchive.open({ ...FILL, path });
    assert.equal(reconnectToken(archive.tokenKey, "lobby", epoch, 1), token);
    archive.close();
  });
});

// ---------------------------------------------------------------------------
// Moderation and deletions across a restart
// ---------------------------------------------------------------------------

/** Sends a JSON frame and returns the first frame matching `pattern`. */
async function ask(peer: Peer, frame: Json, pattern: RegExp): Promise<Json> {
  peer.send(JSON.stringify(frame));
  return JSON.parse(await peer.nextMatching(pattern));
}

Deno.test("kill -9 right after the moderator's answers: bans, mutes, topic, slow mode, reserved names and deletions survive the restart", async () => {
  await inTempDir(async (dir) => {
    const args = [
      "--data",
      `${dir}/chat.db`,
      "--quiet",
      "--auth-secret",
      SECRET,
      "--op-key",
      OP_KEY,
      "--history-size",
      "20",
      // The 28 messages below in a row, within the rate limit.
      "--burst",
      "100",
    ];
    const first = await startCli(args, writeTo(dir));
    const server = { wsPort: first.wsPort } as ChatServer;
    const adaToken = await hs256({ sub: "1", name: "ada" });
    const cyToken = await hs256({ sub: "3", name: "cy" });
    const modToken = await hs256({ sub: "op", name: "mod", roles: ["op"] });
    const ada = await signedClient(server, { token: adaToken });
    await ada.close(); // her name stays hers in this room
    const mod = await signedClient(server, { token: modToken });
    const bob = await jsonClient(server, "/", { nick: "bob" }, BOB_SESSION);
    const cy = await signedClient(server, { token: cyToken });
    // One deleted message beyond the live window (only in the file), one
    // in it too, and one kept.
    const old = await sendAndEcho(mod, "old and rude");
    for (let i = 1; i <= 25; i++) await sendAndEcho(mod, `filler ${i}`);
    const recent = await sendAndEcho(mod, "recent and rude");
    const kept = await sendAndEcho(mod, "kept");
    for (const { id } of [old, recent]) {
      const deleted = await ask(mod, { type: "delete", id }, /"delete"/);
      assert.deepEqual([deleted.by, deleted.deleted], ["mod", id]);
    }
    assert.deepEqual(
      await ask(mod, { type: "mute", nick: "bob" }, /"moderated"/),
      { type: "moderated", action: "mute", nick: "bob" },
    );
    const kick = await ask(mod, { type: "ban", nick: "cy" }, /"kick"/);
    assert.deepEqual([kick.nick, kick.ban], ["cy", true]);
    assert.equal(
      (await within(cy.closed, "cy's close")).code,
      CloseCode.Kicked,
    );
    await ask(mod, { type: "topic", text: "kept topic" }, /"topic"/);
    const slow = await ask(mod, { type: "slow", seconds: 30 }, /"slow"/);
    assert.equal(slow.seconds, 30);
    first.child.kill("SIGKILL"); // right after the last answer
    await within(first.child.status, "the kill");
    await first.lines.cancel();
    await closeAll(mod, bob);

    const second = await startCli(args, writeTo(dir));
    const again = { wsPort: second.wsPort } as ChatServer;
    // The ban: cy's login is refused at the handshake.
    const raw = await RawClient.connect(again.wsPort);
    const refused = await raw.upgrade("/", {
      Authorization: `Bearer ${cyToken}`,
    });
    raw.close();
    assert.equal(refused.status, 403);
    // The mute, the topic and slow mode: bob's session comes back to them.
    const back = await jsonClient(again, "/", { nick: "bob" }, BOB_SESSION);
    assert.equal(back.welcome.topic, "kept topic");
    assert.equal(back.welcome.slowSeconds, 30);
    back.send(JSON.stringify({ type: "message", text: "let me speak" }));
    const muted = JSON.parse(await back.nextMatching(/"error"/));
    assert.deepEqual([muted.code, muted.retryAfter], ["muted", undefined]);
    // The reserved name: nobody anonymous gets "ada".
    const other = await jsonClient(again, "/", { nick: "ada" });
    assert.notEqual(other.welcome.you, "ada");
    // Deleted stays deleted: not in the welcome, not in a resume, not in
    // any page (the delete events are).
    const ids = (events: Json[]) => events.map((event: Json) => event.id);
    assert.ok(!ids(back.welcome.history).includes(recent.id));
    assert.ok(ids(back.welcome.history).includes(kept.id));
    const resumed = await jsonClient(again, "/", {
      since: recent.id - 1,
      epoch: mod.welcome.epoch,
    });
    assert.equal(resumed.welcome.gap, false);
    assert.deepEqual(
      resumed.welcome.history.slice(0, 2).map((event: Json) => event.text),
      ["kept", undefined],
    );
    assert.ok(!ids(resumed.welcome.history).includes(recent.id));
    // Oldest first: the pages come newest first, each oldest first.
    const paged = (await allPages(back, back.welcome.lastId, 7)).toReversed()
      .flat();
    assert.ok(!ids(paged).includes(old.id) && !ids(paged).includes(recent.id));
    assert.ok(ids(paged).includes(kept.id) && ids(paged).includes(old.id + 1));
    assert.deepEqual(
      paged.filter((event: Json) => event.type === "delete")
        .map((event: Json) => event.deleted),
      [old.id, recent.id],
    );
    assert.equal(
      paged.filter((event: Json) => event.type === "slow").length,
      1,
    );
    // Plain text: the topic after the welcome line, and /history without
    // the deleted lines.
    const text = new Peer(chatUrl(again));
    await text.nextMatching(/^ \.\.\.\. you are /, "the welcome line");
    assert.equal(await text.next(), " .... topic: kept topic");
    text.send("/history 200");
    const lines = [];
    for (;;) {
      const line = await text.next();
      if (line === " .... this is the beginning of lobby.") break;
      lines.push(line);
    }
    assert.ok(lines.includes("mod: kept"));
    assert.ok(lines.includes(`mod: filler 1`));
    assert.ok(
      !lines.some((line) => line.endsWith("and rude")),
      lines.join("\n"),
    );
    assert.ok(lines.includes(` .... mod deleted message ${old.id}.`));
    await closeAll(back, other, resumed, text);
    second.child.kill("SIGTERM");
    assert.equal((await within(second.child.status, "the exit")).code, 0);
    await second.lines.cancel();
  });
});

Deno.test("a message deleted this turn is gone from pages read before the commit", async () => {
  await inTempDir(async (dir) => {
    const path = `${dir}/chat.db`;
    await fill(path, "lobby", messages(30));
    const store = await SqliteStore.connect({ ...FILL, path, historySize: 5 });
    store.hold("lobby");
    // Id 3 is far below the live window (26 to 30): only the file has it.
    const removed = store.delete("lobby", 3, "mod");
    const everything = { before: 31, limit: 200, visible: () => true };
    const early = await store.history("lobby", everything);
    const texts = early.events.map((event) =>
      event.type === "message" ? event.text : event.type
    );
    assert.deepEqual(
      texts,
      messages(30).map((event) => (event as { text: string }).text)
        .filter((text) => text !== "m3"),
      "read before the commit",
    );
    assert.equal(early.more, false);
    assert.equal((await removed as { type: string }).type, "delete");
    const late = await store.history("lobby", { ...everything, before: 10 });
    assert.deepEqual(late.events.map((event) => event.id), [
      1,
      2,
      4,
      5,
      6,
      7,
      8,
      9,
    ]);
    store.release("lobby");
    await store.close!();
    // And in the file: the row is gone.
    const reader = new DatabaseSync(path, { readOnly: true });
    const row = reader.prepare("SELECT count(*) AS n FROM events WHERE id = 3")
      .get();
    reader.close();
    assert.equal(Number(row!.n), 0);
  });
});

// ---------------------------------------------------------------------------
// A data file that cannot be used
// ---------------------------------------------------------------------------

/** Runs the CLI with `--data path` and returns its exit code and stderr. */
async function startFails(
  path: string,
  permissions: string[],
): Promise<{ code: number; stderr: string }> {
  const output = await cli(
    [
      "--port",
      "0",
      "--ws-port",
      "0",
      "--hostname",
      "127.0.0.1",
      "--data",
      path,
    ],
    "piped",
    permissions,
  ).output();
  return {
    code: output.code,
    stderr: new TextDecoder().decode(output.stderr),
  };
}

Deno.test("a corrupt, foreign or unwritable data file: one line at start, non-zero exit", async () => {
  await inTempDir(async (dir) => {
    const garbage = `${dir}/garbage.db`;
    await Deno.writeTextFile(garbage, "this is not a database\n".repeat(100));
    const foreign = `${dir}/foreign.db`;
    await Deno.mkdir(`${dir}/sub`);
    const db = new DatabaseSync(foreign);
    db.exec("CREATE TABLE accounts (id INTEGER)");
    db.close();
    const cases: [string, string[], RegExp][] = [
      [garbage, writeTo(dir), /file is not a database/],
      [foreign, writeTo(dir), /not deno-chat's/],
      [`${dir}/sub`, writeTo(dir), /unable to open database file/],
      [`${garbage}/chat.db`, writeTo(dir), /File exists|Not a directory/],
      [`${dir}/new.db`, [], /write access/], // no --allow-write
    ];
    for (const [path, permissions, why] of cases) {
      const { code, stderr } = await startFails(path, permissions);
      assert.notEqual(code, 0, path);
      const lines = stderr.trimEnd().split("\n");
      assert.equal(lines.length, 1, stderr);
      assert.match(lines[0], /^deno-chat: cannot use --data /);
      assert.match(lines[0], why);
    }
    // The garbage is left as it was: nothing was written over it.
    assert.match(await Deno.readTextFile(garbage), /^this is not a database/);
  });
});

Deno.test("--data with --redis: one-line error, exit 2", async () => {
  const output = await cli(["--data", "x.db", "--redis", "redis://127.0.0.1:1"])
    .output();
  assert.equal(output.code, 2);
  const stderr = new TextDecoder().decode(output.stderr);
  assert.match(
    stderr.split("\n")[0],
    /^deno-chat: --data and --redis cannot be used together/,
  );
});

// ---------------------------------------------------------------------------
// Reading back
// ---------------------------------------------------------------------------

const FAST = { rate: 10_000, burst: 10_000, historySize: 20 };

Deno.test("paging back through 1,000 events returns each exactly once, in order", async () => {
  await inTempDir(async (dir) => {
    const path = `${dir}/chat.db`;
    await fill(path, "lobby", messages(1000));
    await withChat({ data: path, ...FAST }, async (chat) => {
      const ada = await jsonClient(chat, "/", { nick: "ada" });
      const joinId = ada.welcome.lastId;
      assert.equal(joinId, 1001);
      assert.equal(ada.welcome.history.length, 20, "the welcome: the window");
      for (const limit of [200, 37, 1]) {
        const pages = await allPages(ada, joinId, limit);
        // Each page is oldest first; pages go back in time.
        const backward = pages.flatMap((page) => page.map((e: Json) => e.id));
        const forward = pages.toReversed().flat().map((e: Json) => e.id);
        const all = Array.from({ length: 1000 }, (_, i) => i + 1);
        assert.deepEqual(forward, all, `limit ${limit}: in order, once each`);
        for (const page of pages) {
          const ids = page.map((e: Json) => e.id);
          assert.deepEqual(ids, ids.toSorted((a: number, b: number) => a - b));
        }
        assert.equal(new Set(backward).size, 1000);
        assert.equal(pages.at(-1)!.at(0).text, "m1");
      }
      // New events while paging do not move the pages.
      const first = await readBack(ada, 501, 100);
      await sendAndEcho(ada, "meanwhile");
      const again = await readBack(ada, 501, 100);
      assert.deepEqual(again, first);
      assert.deepEqual(first.events.map((e: Json) => e.id).slice(0, 2), [
        401,
        402,
      ]);
      // Before the first event: nothing, and no more.
      assert.deepEqual(await readBack(ada, 1), {
        type: "history",
        events: [],
        more: false,
      });
      assert.deepEqual(await readBack(ada, 0), {
        type: "history",
        events: [],
        more: false,
      });
      await ada.close();
    });
  });
});

Deno.test("direct messages never leak through paging; their parties page them", async () => {
  await inTempDir(async (dir) => {
    const path = `${dir}/chat.db`;
    await withChat({ data: path, ...FAST }, async (chat) => {
      const ada = await jsonClient(chat, "/", { nick: "ada" });
      const bob = await jsonClient(chat, "/", { nick: "bob" });
      await ada.event("bob's join");
      for (let i = 1; i <= 60; i++) {
        ada.send(
          JSON.stringify({ type: "dm", to: "bob", text: `secret ${i}` }),
        );
        ada.send(JSON.stringify({ type: "message", text: `public ${i}` }));
      }
      let lastId = 0;
      for (let seen = 0; seen < 120;) {
        const event = await ada.event("ada's events");
        if (event.type === "message" || event.type === "dm") seen++;
        lastId = event.id;
      }
      const cy = await jsonClient(chat, "/", { nick: "cy" });
      const seenByCy = (await allPages(cy, cy.welcome.lastId, 50)).flat();
      assert.equal(seenByCy.filter((e: Json) => e.type === "dm").length, 0);
      assert.equal(
        seenByCy.filter((e: Json) => e.type === "message").length,
        60,
        "pages are filled past the DMs",
      );
      for (const party of [ada, bob]) {
        const seen = (await allPages(party, lastId + 1, 50)).flat();
        const dms = seen.filter((e: Json) => e.type === "dm");
        assert.equal(dms.length, 60, "each party sees its DMs");
      }
      // Someone who takes bob's nick after bob left does not get his DMs.
      await bob.close();
      await ada.event("bob's leave");
      const newBob = await jsonClient(chat, "/", { nick: "bob" });
      assert.equal(newBob.nick, "bob");
      const seenByNewBob = (await allPages(newBob, newBob.welcome.lastId, 200))
        .flat();
      assert.equal(seenByNewBob.filter((e: Json) => e.type === "dm").length, 0);
      await closeAll(ada, cy, newBob);
    });
  });
});

/** Paging on a store that keeps only its live window: `more` ends there. */
async function pagesTheWindow(chat: ChatServer): Promise<void> {
  const ada = await jsonClient(chat, "/", { nick: "ada" });
  for (let i = 1; i <= 30; i++) await sendAndEcho(ada, `w${i}`);
  const cy = await jsonClient(chat, "/", { nick: "cy" });
  const pages = await allPages(cy, cy.welcome.lastId, 7);
  const ids = pages.toReversed().flat().map((e: Json) => e.id);
  // historySize 20: cy's join and the 19 events before it.
  const end = cy.welcome.lastId;
  assert.deepEqual(ids, Array.from({ length: 19 }, (_, i) => end - 19 + i));
  await closeAll(ada, cy);
}

Deno.test("in memory, history pages through the live window, then more is false", async () => {
  await withChat(FAST, pagesTheWindow);
});

Deno.test({
  name: "with --redis, history pages through the stream, then more is false",
  ignore: !haveRedis && !Deno.env.get("CI"),
  fn: async () => {
    const redis = await startRedis();
    try {
      await withChat({ ...FAST, redis: redis.url }, pagesTheWindow);
    } finally {
      await redis.kill();
    }
  },
});

Deno.test("/history and /more in plain text: the tutorial's lines, back from the join", async () => {
  await withChat(FAST, async (chat) => {
    const ada = await textClient(chat, "/", { nick: "ada" });
    for (let i = 1; i <= 4; i++) {
      ada.send(`t${i}`);
      assert.equal(await ada.next(), `ada: t${i}`);
    }
    const bob = await textClient(chat, "/", { nick: "bob" });
    assert.equal(await ada.next(), " .... bob has joined.");
    bob.send("/history 2");
    assert.equal(await bob.next(), "ada: t3");
    assert.equal(await bob.next(), "ada: t4");
    bob.send("/more 2");
    assert.equal(await bob.next(), "ada: t1");
    assert.equal(await bob.next(), "ada: t2");
    bob.send("/history");
    assert.equal(await bob.next(), " .... ada has joined.");
    assert.equal(await bob.next(), " .... this is the beginning of lobby.");
    for (
      const bad of ["/history 0", "/history 201", "/more x", "/history -1"]
    ) {
      bob.send(bad);
      assert.match(
        await bob.next(),
        /^ \.\.\.\. error: usage: \/history \[N\]/,
      );
    }
    await closeAll(ada, bob);
  });
});

Deno.test("bad history reads get bad_request; a flood gets rate_limited", async () => {
  await withChat({}, async (chat) => {
    const ada = await jsonClient(chat, "/", { nick: "ada" });
    const bad = [
      { before: "5" },
      { before: -1 },
      { before: 1.5 },
      { before: null },
      {},
      { before: 5, limit: 0 },
      { before: 5, limit: 1e9 },
      { before: 5, limit: "10" },
      { before: 2 ** 60 },
    ];
    for (const fields of bad) {
      ada.send(JSON.stringify({ type: "history", ...fields }));
      const answer = await ada.event("the refusal");
      assert.equal(answer.code, "bad_request", JSON.stringify(fields));
    }
    await ada.close();
  });
  await withChat(
    { burst: 5, rate: 1, maxConsecutiveDrops: 100 },
    async (chat) => {
      const ada = await jsonClient(chat, "/", { nick: "ada" });
      // History reads share the message bucket: a flood of them is refused,
      // and so is the message after it.
      for (let i = 0; i < 10; i++) {
        ada.send(JSON.stringify({ type: "history", before: 10 }));
      }
      ada.send(JSON.stringify({ type: "message", text: "after the flood" }));
      const answers = [];
      for (let i = 0; i < 11; i++) answers.push(await ada.event("an answer"));
      // (Refusals are sent at once, answers after the read: they interleave.)
      const kinds = answers.map((a) => a.type === "error" ? a.code : a.type);
      assert.deepEqual(kinds.toSorted(), [
        ...Array(5).fill("history"),
        ...Array(6).fill("rate_limited"),
      ]);
      await ada.close();
    },
  );
});

// ---------------------------------------------------------------------------
// Retention
// ---------------------------------------------------------------------------

/** Every event id of `room` a reader can page back to. */
async function keptIds(path: string): Promise<number[]> {
  let ids: number[] = [];
  await withChat({ data: path, ...FAST }, async (chat) => {
    const reader = await jsonClient(chat, "/", { nick: "reader" });
    const pages = await allPages(reader, reader.welcome.lastId, 200);
    ids = pages.toReversed().flat().map((e: Json) => e.id);
    await reader.close();
  });
  return ids;
}

Deno.test("retention trims by count per room and by age", async () => {
  await inTempDir(async (dir) => {
    const path = `${dir}/chat.db`;
    await fill(path, "lobby", messages(300));
    // By count: the last 100 of the 300 stay; small steps take several.
    let archive = SqliteArchive.open({ ...FILL, path, retainEvents: 100 });
    let deleted = 0;
    for (let step; (step = archive.trim(Date.now(), 64)) > 0;) {
      assert.ok(step <= 64, "a step deletes at most its budget");
      deleted += step;
    }
    archive.close();
    assert.equal(deleted, 200);
    assert.deepEqual(
      await keptIds(path),
      Array.from({ length: 100 }, (_, i) => 201 + i),
    );
    // The room goes on: same epoch, ids after the last one given out.
    // (keptIds added the reader's join, 301, and its leave, 302: the last
    // one's leave is kept too, so a later visitor reads no two joins in a
    // row.)
    // By age: as if 3 days later, with 2 days kept, every event is old,
    // but the room's epoch and last id stay.
    archive = SqliteArchive.open({ ...FILL, path, retainDays: 2 });
    assert.equal(archive.trim(Date.now() + 3 * 24 * 60 * 60 * 1000), 102);
    archive.close();
    assert.deepEqual(await keptIds(path), []);
    // Only the expired part goes: events from "now" stay a day later.
    await fill(path, "lobby", messages(5, "new"));
    archive = SqliteArchive.open({ ...FILL, path, retainDays: 2 });
    assert.equal(archive.trim(Date.now() + 24 * 60 * 60 * 1000), 0);
    archive.close();
    const kept = await keptIds(path);
    assert.equal(
      kept.length,
      7,
      "the last reader's join and leave, and the 5 messages",
    );
    assert.ok(kept[0] > 301, "ids never start over");
  });
});

// ---------------------------------------------------------------------------
// The store API itself
// ---------------------------------------------------------------------------

Deno.test("a room emptied and made again keeps its epoch and ids with --data", async () => {
  await inTempDir(async (dir) => {
    await withChat({ data: `${dir}/chat.db` }, async (chat) => {
      const ada = await jsonClient(chat, "/room", { nick: "ada" });
      const echo = await sendAndEcho(ada, "kept");
      await ada.close();
      const bob = new Peer(chatUrl(chat, "/room"), "chat.v1.json");
      const welcome = await bob.event("the welcome");
      assert.equal(welcome.epoch, ada.welcome.epoch);
      assert.ok(welcome.history.some((e: Json) => e.id === echo.id));
      await bob.close();
    });
  });
});

Deno.test("the store answers an append only once it is committed", async () => {
  await inTempDir(async (dir) => {
    const path = `${dir}/chat.db`;
    const store: RoomStore = await SqliteStore.connect({ ...FILL, path });
    store.hold("lobby");
    const seen: number[] = [];
    const unsubscribe = store.subscribe("lobby", (event) => {
      if (event.type !== "typing" && event.type !== "react") {
        seen.push(event.id);
      }
    });
    const appended = store.append("lobby", messages(1)[0]);
    assert.deepEqual(seen, [], "not delivered before the commit");
    const event = await appended;
    assert.deepEqual(seen, [event.id]);
    // Another connection to the file sees it already.
    const reader = new DatabaseSync(path, { readOnly: true });
    const row = reader.prepare("SELECT count(*) AS n FROM events").get();
    reader.close();
    assert.equal(Number(row!.n), 1);
    unsubscribe();
    store.release("lobby");
    await store.close!();
  });
});

// ---------------------------------------------------------------------------
// Reactions
// ---------------------------------------------------------------------------

/** A message event as the archive is given it. */
function said(id: number, text = `m${id}`): RoomEvent {
  return { type: "message", id, ts: Date.now(), from: "ada", text };
}

/** `key` by these people, as a store keeps it (owner `o-NICK`). */
function by(key: string, ...nicks: string[]): KeptReaction {
  return { key, by: nicks.map((nick) => [`o-${nick}`, nick]) };
}

/** The `reactions` rows of the file at `path`, by id (another connection). */
function reactionRows(path: string): Map<number, KeptReaction[]> {
  const reader = new DatabaseSync(path, { readOnly: true });
  try {
    return new Map(
      reader.prepare("SELECT id, reactions FROM reactions ORDER BY id").all()
        .map((row) => [Number(row.id), JSON.parse(String(row.reactions))]),
    );
  } finally {
    reader.close();
  }
}

Deno.test("the archive keeps reactions beside their messages: queued then stored, through a reopen, gone with a deleted message", async () => {
  await inTempDir((dir) => {
    const path = `${dir}/chat.db`;
    let archive = SqliteArchive.open({ ...FILL, path });
    archive.create("lobby", "e1");
    for (let id = 1; id <= 4; id++) archive.append("lobby", said(id));
    // Message 1: the latest list wins; 2: had some, all taken back; 3:
    // deleted in the turn it got them; 4: deleted after they were kept.
    archive.react("lobby", 1, [by("👍", "ada")]);
    archive.react("lobby", 1, [by("👍", "ada", "bob"), by(":tada:", "cy")]);
    archive.react("lobby", 2, [by("👀", "bob")]);
    archive.react("lobby", 2, []);
    archive.react("lobby", 4, [by("👍", "cy")]);
    const expected = new Map([
      [1, [by("👍", "ada", "bob"), by(":tada:", "cy")]],
      [2, []],
      [4, [by("👍", "cy")]],
    ]);
    assert.deepEqual(
      archive.reactions("lobby", [1, 2, 3, 4, 99]),
      expected,
      "queued: read back before the commit",
    );
    assert.deepEqual(reactionRows(path), new Map(), "nothing written yet");
    archive.commit();
    assert.deepEqual(reactionRows(path), expected, "one row each");
    assert.deepEqual(
      archive.reactions("lobby", [4, 3, 2, 1]),
      expected,
      "stored",
    );
    assert.deepEqual(archive.reactions("lobby", []), new Map());
    assert.deepEqual(archive.reactions("nowhere", [1]), new Map());
    archive.react("lobby", 3, [by("😂", "ada")]);
    archive.delete("lobby", 3);
    archive.delete("lobby", 4);
    assert.deepEqual(
      archive.reactions("lobby", [1, 2, 3, 4]),
      new Map([...expected].filter(([id]) => id < 3)),
      "deleted this turn: gone for every reader already",
    );
    archive.commit();
    assert.deepEqual(
      [...reactionRows(path).keys()],
      [1, 2],
      "the deleted messages' rows are gone",
    );
    archive.close();

    // Reopened: the room's recent events come with their reactions, the
    // `[]` record included, and only theirs.
    archive = SqliteArchive.open({ ...FILL, path });
    const kept = archive.load("lobby", 10)!;
    assert.deepEqual(kept.recent.map((event) => event.id), [1, 2]);
    assert.deepEqual(kept.reactions, new Map([...expected].slice(0, 2)));
    assert.deepEqual(
      archive.load("lobby", 1)!.reactions,
      new Map([[2, []]]),
      "those of the events loaded",
    );
    assert.deepEqual(
      archive.reactions("lobby", [1, 2, 3, 4]),
      new Map([...expected].slice(0, 2)),
    );
    // A reaction after the reopen replaces the row.
    archive.react("lobby", 2, [by("👀", "dee")]);
    archive.close(); // commits what is queued
    assert.deepEqual(reactionRows(path).get(2), [by("👀", "dee")]);
  });
});

Deno.test("retention trims a message's reactions with it", async () => {
  await inTempDir((dir) => {
    const path = `${dir}/chat.db`;
    let archive = SqliteArchive.open({ ...FILL, path, retainEvents: 2 });
    archive.create("lobby", "e1");
    archive.create("other", "e2");
    for (let id = 1; id <= 5; id++) archive.append("lobby", said(id));
    archive.append("other", said(1));
    for (const id of [1, 3, 4, 5]) archive.react("lobby", id, [by("👍", "a")]);
    archive.react("other", 1, [by("👍", "a")]);
    archive.commit();
    assert.equal(archive.trim(), 3, "lobby's 1 to 3");
    assert.deepEqual(
      archive.reactions("lobby", [1, 2, 3, 4, 5]),
      new Map([[4, [by("👍", "a")]], [5, [by("👍", "a")]]]),
    );
    assert.deepEqual(
      archive.reactions("other", [1]),
      new Map([[1, [by("👍", "a")]]]),
      "another room's are its own",
    );
    archive.close();
    // By age: everything expires, reactions too.
    archive = SqliteArchive.open({ ...FILL, path, retainDays: 1 });
    assert.equal(archive.trim(Date.now() + 2 * 24 * 60 * 60 * 1000), 3);
    archive.close();
    assert.deepEqual(reactionRows(path), new Map());
  });
});

/** The schema deno-chat wrote before reactions (version 1), verbatim. */
const SCHEMA_1 = `
  CREATE TABLE meta (key TEXT PRIMARY KEY, value BLOB NOT NULL);
  CREATE TABLE rooms (
    key INTEGER PRIMARY KEY,
    name TEXT NOT NULL UNIQUE,
    epoch TEXT NOT NULL,
    last_id INTEGER NOT NULL
  );
  CREATE TABLE events (
    room INTEGER NOT NULL,
    id INTEGER NOT NULL,
    ts INTEGER NOT NULL,
    event TEXT NOT NULL,
    PRIMARY KEY (room, id)
  ) WITHOUT ROWID;
  CREATE TABLE moderation (
    room TEXT NOT NULL,
    kind TEXT NOT NULL,
    key TEXT NOT NULL,
    value TEXT NOT NULL,
    until INTEGER,
    PRIMARY KEY (room, kind, key)
  ) WITHOUT ROWID;
  PRAGMA application_id = ${0x64636874};
  PRAGMA user_version = 1;
`;

/** A file as a deno-chat of schema `version` left it: lobby, 2 messages. */
function oldFile(path: string, version: number): void {
  const db = new DatabaseSync(path);
  db.exec(SCHEMA_1);
  db.exec(`PRAGMA user_version = ${version}`);
  db.prepare("INSERT INTO rooms VALUES (1, 'lobby', 'old-epoch', 0)").run();
  const insert = db.prepare("INSERT INTO events VALUES (1, ?, ?, ?)");
  for (const event of [said(1), said(2)]) {
    insert.run(event.id, event.ts, JSON.stringify(event));
  }
  db.close();
}

Deno.test("a data file made before reactions opens, keeps its history and keeps reactions from then on", async () => {
  await inTempDir(async (dir) => {
    const path = `${dir}/chat.db`;
    oldFile(path, 1);
    let archive = SqliteArchive.open({ ...FILL, path });
    const kept = archive.load("lobby", 10)!;
    assert.equal(kept.epoch, "old-epoch");
    assert.deepEqual(kept.recent.map((event) => event.id), [1, 2]);
    assert.deepEqual(kept.reactions, new Map());
    assert.deepEqual(archive.reactions("lobby", [1, 2]), new Map());
    archive.react("lobby", 2, [by("👍", "ada")]);
    archive.close();
    const reader = new DatabaseSync(path, { readOnly: true });
    const version = reader.prepare("PRAGMA user_version").get()!.user_version;
    reader.close();
    assert.equal(Number(version), 4, "upgraded in place");
    archive = SqliteArchive.open({ ...FILL, path });
    assert.deepEqual(
      archive.load("lobby", 10)!.reactions,
      new Map([[2, [by("👍", "ada")]]]),
    );
    archive.close();
    // Through the store and a real server too: the old file's messages in
    // the welcome.
    const old = `${dir}/old.db`;
    oldFile(old, 1);
    await withChat({ data: old }, async (chat) => {
      const ada = await jsonClient(chat, "/", { nick: "ada" });
      assert.equal(ada.welcome.epoch, "old-epoch");
      assert.deepEqual(
        ada.welcome.history.map((event: Json) => event.text),
        ["m1", "m2", undefined],
      );
      await ada.close();
    });
  });
});

Deno.test("a data file of schema 2 or 3 opens, and keeps read markers from then on (schema 4)", async () => {
  await inTempDir((dir) => {
    for (const version of [2, 3]) {
      const path = `${dir}/chat-${version}.db`;
      oldFile(path, version);
      const db = new DatabaseSync(path);
      db.exec(`CREATE TABLE reactions (
        room INTEGER NOT NULL, id INTEGER NOT NULL, reactions TEXT NOT NULL,
        PRIMARY KEY (room, id)) WITHOUT ROWID`);
      // Schema 3 is the search index's (its table as sqlite_store.ts makes it).
      if (version === 3) {
        db.exec(`CREATE VIRTUAL TABLE search_index USING fts5(words,
          content = '', contentless_delete = 1,
          tokenize = 'unicode61 remove_diacritics 2', prefix = '2 3')`);
      }
      db.close();
      let archive = SqliteArchive.open({ ...FILL, path });
      assert.deepEqual(archive.markers("s.ada"), []);
      const marker = {
        room: "lobby",
        epoch: "old-epoch",
        id: 1,
        nick: "ada",
        at: 1,
      };
      archive.mark("s.ada", marker);
      assert.deepEqual(archive.markers("s.ada"), [marker], "queued");
      archive.close();
      archive = SqliteArchive.open({ ...FILL, path });
      assert.deepEqual(archive.markers("s.ada"), [marker], `from ${version}`);
      assert.deepEqual(
        archive.newer("lobby", 1, Infinity, 10).map((event) => event.id),
        [2],
      );
      archive.unmark("s.ada", "lobby");
      archive.close();
      archive = SqliteArchive.open({ ...FILL, path });
      assert.deepEqual(archive.markers("s.ada"), [], "forgotten");
      archive.close();
      const reader = new DatabaseSync(path, { readOnly: true });
      const upgraded = reader.prepare("PRAGMA user_version").get()!;
      reader.close();
      assert.equal(Number(upgraded.user_version), 4);
    }
  });
});

Deno.test(`a count of what a marker leaves reads at most MAX_UNREAD_READ messages of the file: past them it is MAX_UNREAD_COUNTED`, async () => {
  await inTempDir(async (dir) => {
    const path = `${dir}/chat.db`;
    const events: NewEvent[] = [
      { type: "join", nick: "ada" },
      ...Array.from(
        { length: 50 },
        () => ({ type: "join", nick: "x" }) as NewEvent,
      ),
      ...messages(MAX_UNREAD_READ, "bob"),
      { type: "message", from: "bob", text: "ada?" },
    ];
    await fill(path, "lobby", events);
    const store = await SqliteStore.connect({ ...FILL, path });
    const epoch = SqliteArchive.open({ ...FILL, path });
    const kept = epoch.load("lobby", 0)!;
    epoch.close();
    const marker = {
      room: "lobby",
      epoch: kept.epoch,
      id: 1,
      nick: "ada",
      at: 1,
    };
    // Joins are not read: the messages after the marker are one too many.
    assert.deepEqual(await store.unread(marker), {
      unread: MAX_UNREAD_COUNTED,
      mentions: 0,
      through: events.length,
    });
    assert.deepEqual(await store.unread({ ...marker, id: 52 }), {
      unread: MAX_UNREAD_COUNTED,
      mentions: 1,
      through: events.length,
    }, "one fewer: all read, the last a mention");
    await store.close!();
  });
});

Deno.test("a read marker is written with the next commit, or within MARKERS_COMMIT_MS when none comes", async () => {
  await inTempDir(async (dir) => {
    const path = `${dir}/chat.db`;
    const store = await SqliteStore.connect({ ...FILL, path });
    try {
      store.hold("lobby");
      await store.join("lobby", { owner: "s.ada", nick: "ada" });
      const rows = () => {
        const reader = new DatabaseSync(path, { readOnly: true });
        try {
          return reader.prepare("SELECT person, room, id FROM markers").all()
            .map((row) => [row.person, row.room, row.id]);
        } finally {
          reader.close();
        }
      };
      const moved = Date.now();
      await store.markRead("lobby", "s.ada", 1, "ada");
      assert.deepEqual(rows(), [], "no commit of its own at once");
      await eventually("the marker in the file", () => rows().length === 1);
      assert.ok(Date.now() - moved >= MARKERS_COMMIT_MS - 50);
      assert.deepEqual(rows(), [["s.ada", "lobby", 1]]);
      // With an event, in the same commit.
      await store.append("lobby", { type: "message", from: "ada", text: "hi" });
      await store.markRead("lobby", "s.ada", 2, "ada");
      await store.append("lobby", { type: "message", from: "ada", text: "hm" });
      assert.deepEqual(rows(), [["s.ada", "lobby", 2]]);
    } finally {
      await store.close!();
    }
  });
});

Deno.test("a data file of a newer schema is refused, and left as it was", async () => {
  await inTempDir((dir) => {
    const path = `${dir}/chat.db`;
    oldFile(path, 5);
    assert.throws(
      () => SqliteArchive.open({ ...FILL, path }),
      (error: Error) =>
        error instanceof DataFileError &&
        /^cannot use --data .*: made by another version of deno-chat \(schema 5, this one reads 4\)$/
          .test(error.message),
    );
    const reader = new DatabaseSync(path, { readOnly: true });
    const version = reader.prepare("PRAGMA user_version").get()!.user_version;
    const tables = reader.prepare(
      "SELECT count(*) AS n FROM sqlite_schema WHERE name = 'reactions'",
    ).get()!.n;
    reader.close();
    assert.deepEqual([Number(version), Number(tables)], [5, 0]);
  });
});

Deno.test("a reaction storm is one row write per message per commit", async () => {
  await inTempDir(async (dir) => {
    const path = `${dir}/chat.db`;
    await fill(path, "lobby", messages(3));
    // Counts the archive's writes to `reactions` (a trigger in the file,
    // fired by the archive's own connection).
    const setup = new DatabaseSync(path);
    setup.exec(`
      CREATE TABLE reaction_writes (n INTEGER NOT NULL);
      INSERT INTO reaction_writes VALUES (0);
      CREATE TRIGGER count_reaction_writes AFTER INSERT ON reactions
        BEGIN UPDATE reaction_writes SET n = n + 1; END;
    `);
    setup.close();
    const writes = () => {
      const reader = new DatabaseSync(path, { readOnly: true });
      const n = reader.prepare("SELECT n FROM reaction_writes").get()!.n;
      reader.close();
      return Number(n);
    };
    const store = await SqliteStore.connect({ ...FILL, path });
    store.hold("lobby");
    // One turn: 300 people thumb message 1 up, one of them toggles message
    // 2 two hundred times (ending where it started: none, a `[]` record).
    const reactors = Array.from({ length: 300 }, (_, i) => ({
      owner: `o${i}`,
      nick: `p${i}`,
      keys: [],
    }));
    const answers = [];
    for (const reactor of reactors) {
      answers.push(store.react("lobby", reactor, 1, "👍"));
    }
    for (let i = 0; i < 200; i++) {
      answers.push(store.react("lobby", reactors[0], 2, "🎉"));
    }
    const done = await Promise.all(answers);
    assert.deepEqual(done.at(299), {
      type: "react",
      target: 1,
      key: "👍",
      from: "p299",
      on: true,
      count: 300,
    });
    assert.deepEqual(done.at(-1), {
      type: "react",
      target: 2,
      key: "🎉",
      from: "p0",
      on: false,
      count: 0,
    });
    assert.equal(writes(), 2, "one row write for each message");
    const rows = reactionRows(path);
    assert.deepEqual(rows.get(1), [
      { key: "👍", by: reactors.map(({ owner, nick }) => [owner, nick]) },
    ]);
    assert.deepEqual(rows.get(2), []);
    // The next turn's toggle is the next commit's one write.
    await store.react("lobby", reactors[5], 1, "👍");
    assert.equal(writes(), 3);
    assert.equal(reactionRows(path).get(1)![0].by.length, 299);
    store.release("lobby");
    await store.close!();
  });
});

Deno.test("reactions to messages below the live window are read from and written to the file, and a page of history carries them", async () => {
  await inTempDir(async (dir) => {
    const path = `${dir}/chat.db`;
    await fill(path, "lobby", messages(8));
    const reactor = (nick: string) => ({ owner: `o-${nick}`, nick, keys: [] });
    const page = { before: 9, limit: 200, visible: () => true };
    for (const nick of ["ada", "bob"]) {
      // Reopened each time: the first reaction is only in the file.
      const store = await SqliteStore.connect({
        ...FILL,
        path,
        historySize: 3,
      });
      store.hold("lobby");
      assert.equal(
        (await store.react("lobby", reactor(nick), 2, "👍") as Json).count,
        nick === "ada" ? 1 : 2,
      );
      store.release("lobby");
      await store.close!();
    }
    const store = await SqliteStore.connect({ ...FILL, path, historySize: 3 });
    store.hold("lobby");
    const read = await store.history("lobby", page);
    assert.deepEqual(read.events.map((event) => event.id), [
      1,
      2,
      3,
      4,
      5,
      6,
      7,
      8,
    ]);
    assert.deepEqual(read.reactions, new Map([[2, [by("👍", "ada", "bob")]]]));
    store.release("lobby");
    await store.close!();
  });
});

Deno.test("a room loaded into a live window smaller in bytes than its events keeps no reaction records of the events left out", async () => {
  await inTempDir(async (dir) => {
    const path = `${dir}/chat.db`;
    await fill(
      path,
      "lobby",
      messages(6).map((m) => ({ ...m, text: "x".repeat(100) })),
    );
    const reactor = (nick: string) => ({ owner: `o-${nick}`, nick, keys: [] });
    let store = await SqliteStore.connect({ ...FILL, path });
    store.hold("lobby");
    await store.react("lobby", reactor("ada"), 1, "👍");
    store.release("lobby");
    await store.close!();
    // Loaded again with room for 2 of the 6 in memory: message 1 is only in
    // the file, so are its reactions, each new one on top of the last.
    store = await SqliteStore.connect({ ...FILL, path, maxHistoryBytes: 300 });
    store.hold("lobby");
    const counts = [];
    for (const nick of ["bob", "cy"]) {
      counts.push(
        (await store.react("lobby", reactor(nick), 1, "👍") as Json).count,
      );
    }
    assert.deepEqual(counts, [2, 3]);
    const page = await store.history("lobby", {
      before: 7,
      limit: 10,
      visible: () => true,
    });
    assert.deepEqual(page.reactions?.get(1), [by("👍", "ada", "bob", "cy")]);
    store.release("lobby");
    await store.close!();
  });
});
