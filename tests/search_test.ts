/**
 * Search (issue 27, point 1) against the real server on every store:
 * memory and Redis search the live window (`scope` "window"), `--data` its
 * FTS5 index of everything retained ("all"). Real clients in both
 * protocols and the HTTP API: words, phrases, prefixes, `cafe` for `café`,
 * `from:`, newest first and paging with `before`/`more`; an edited message
 * by its new text only, a deleted one never, a DM only by its parties;
 * every bad query a `bad_request`, a flood of searches `rate_limited`.
 * With `--data`: across a restart, a file of schema 2 upgraded with its
 * events indexed, retention and this turn's deletions.
 *
 * @module
 */

import assert from "node:assert/strict";
import { DatabaseSync } from "node:sqlite";
import type { ChatOptions, ChatServer } from "../main.ts";
import type { RoomEvent } from "../wire/protocol.ts";
import {
  MAX_SEARCH_CHARS,
  parseSearch,
  type SearchQuery,
} from "../wire/search.ts";
import {
  INDEX_FLUSH_MS,
  SqliteArchive,
  SqliteStore,
} from "../stores/sqlite_store.ts";
import { SEARCH_COST } from "../server/commands.ts";
import {
  closeAll,
  type Json,
  jsonClient,
  type Peer,
  startCli,
  textClient,
  withChat,
  within,
} from "./test_helpers.ts";
import { haveRedis, startRedis } from "./redis_helpers.ts";

/** The API's key on every server here. */
const KEY = "s".repeat(16) + "0123456789abcdef0123";
/** Every server here: the rate out of the way (one test has its own), the API on. */
const OPTIONS: ChatOptions = { rate: 10_000, burst: 10_000, apiKey: KEY };

/** A store the chat runs on, as these tests start it. */
interface Site {
  name: string;
  ignore: boolean;
  /** What its search looks through. */
  scope: "all" | "window";
  /** Starts the chat on it with `options`, runs `fn`, stops everything. */
  run(options: ChatOptions, fn: (chat: ChatServer) => Promise<void>): Promise<
    void
  >;
}

const MEMORY: Site = {
  name: "memory",
  ignore: false,
  scope: "window",
  run: (options, fn) => withChat(options, fn),
};

const DATA: Site = {
  name: "--data",
  ignore: false,
  scope: "all",
  run: (options, fn) =>
    inTempDir((dir) => withChat({ ...options, data: `${dir}/chat.db` }, fn)),
};

const REDIS: Site = {
  name: "--redis",
  ignore: !haveRedis && !Deno.env.get("CI"),
  scope: "window",
  run: async (options, fn) => {
    const redis = await startRedis();
    try {
      await withChat({ ...options, redis: redis.url }, fn);
    } finally {
      await redis.kill();
    }
  },
};

const SITES = [MEMORY, DATA, REDIS];

/** Runs `fn` with a fresh temporary directory, removed afterwards. */
async function inTempDir(
  fn: (dir: string) => void | Promise<void>,
): Promise<void> {
  const dir = await Deno.makeTempDir({ prefix: "chat-search-" });
  try {
    await fn(dir);
  } finally {
    await Deno.remove(dir, { recursive: true });
  }
}

/** Sends a frame and returns the first event of `type` (or an error). */
async function ask(peer: Peer, frame: Json, type: string): Promise<Json> {
  peer.send(JSON.stringify(frame));
  for (;;) {
    const event = await peer.event(`the answer to ${JSON.stringify(frame)}`);
    if (event.type === type || event.type === "error") return event;
  }
}

/** A search and its answer (`search_results`, or an error). */
function searchFor(peer: Peer, fields: Json): Promise<Json> {
  return ask(peer, { type: "search", ...fields }, "search_results");
}

/** The ids of a search's answer. */
async function idsFor(peer: Peer, fields: Json): Promise<number[]> {
  const answer = await searchFor(peer, fields);
  assert.equal(answer.type, "search_results", JSON.stringify(answer));
  return answer.events.map((event: Json) => event.id);
}

/** Posts `frame` (a message by default) and returns its echo. */
async function post(peer: Peer, text: string, type = "message"): Promise<Json> {
  peer.send(JSON.stringify({ type, text }));
  for (;;) {
    const event = await peer.event(`the echo of ${text}`);
    if (event.type === type && event.text === text) return event;
  }
}

/** A call to the HTTP API: its status and body. */
async function api(
  chat: ChatServer,
  method: string,
  body: unknown,
): Promise<{ status: number; body: Json }> {
  const response = await fetch(`http://127.0.0.1:${chat.port}/api/${method}`, {
    method: "POST",
    headers: { authorization: `Bearer ${KEY}` },
    body: JSON.stringify(body),
  });
  return { status: response.status, body: await response.json() };
}

// ---------------------------------------------------------------------------
// On every store
// ---------------------------------------------------------------------------

for (const site of SITES) {
  Deno.test({
    name:
      `${site.name}: words, a phrase, a prefix, cafe for café, from:, newest first, in both protocols`,
    ignore: site.ignore,
    fn: () =>
      site.run(OPTIONS, async (chat) => {
        const ada = await jsonClient(chat, "/", { nick: "ada" });
        const bob = await jsonClient(chat, "/", { nick: "bob" });
        const lunch = await post(ada, "Lunch at the café today");
        const cafeteria = await post(ada, "cafeteria is closed");
        const menu = await post(bob, "the new CAFÉ menu");
        const goes = await post(ada, "goes to the cafe\u0301", "action");
        const york = await post(ada, "New York pizza");
        await post(ada, "york new");
        assert.deepEqual(await searchFor(bob, { q: "cafe" }), {
          type: "search_results",
          q: "cafe",
          events: [goes, menu, lunch],
          more: false,
          scope: site.scope,
        });
        assert.deepEqual(await idsFor(bob, { q: "CAFÉ" }), [
          goes.id,
          menu.id,
          lunch.id,
        ]);
        assert.deepEqual(await idsFor(bob, { q: '"new york"' }), [york.id]);
        assert.deepEqual(await idsFor(bob, { q: "caf*" }), [
          goes.id,
          menu.id,
          cafeteria.id,
          lunch.id,
        ]);
        assert.deepEqual(await idsFor(bob, { q: "new cafe" }), [menu.id]);
        assert.deepEqual(await idsFor(bob, { q: "cafe", from: "bob" }), [
          menu.id,
        ]);
        assert.deepEqual(await idsFor(bob, { q: "cafe from:ADA" }), [
          goes.id,
          lunch.id,
        ]);
        assert.deepEqual(await idsFor(bob, { q: "tea" }), []);
        // Plain text: a line per result with its id, then how many and where.
        const cy = await textClient(chat, "/", { nick: "cy" });
        cy.send("/search cafe");
        assert.equal(
          await cy.next(),
          ` .... #${goes.id} * ada goes to the cafe\u0301`,
        );
        assert.equal(
          await cy.next(),
          ` .... #${menu.id} bob: the new CAFÉ menu`,
        );
        assert.equal(
          await cy.next(),
          ` .... #${lunch.id} ada: Lunch at the café today`,
        );
        const where = site.scope === "all"
          ? "in everything this room keeps"
          : "in the recent events this server keeps (older ones are not searched)";
        assert.equal(
          await cy.next(),
          ` .... 3 found for "cafe", newest first, ${where}.`,
        );
        cy.send("/search tea from:bob");
        assert.equal(
          await cy.next(),
          ` .... nothing found for "tea from:bob" ${where}.`,
        );
        cy.send("/help");
        assert.match(await cy.next(), /, \/search WORDS \[from:NICK\], /);
        await closeAll(ada, bob, cy);
      }),
  });

  Deno.test({
    name:
      `${site.name}: paging with before and more, in JSON and in plain text`,
    ignore: site.ignore,
    fn: () =>
      site.run(OPTIONS, async (chat) => {
        const ada = await jsonClient(chat, "/", { nick: "ada" });
        const teas: number[] = [];
        for (let i = 1; i <= 25; i++) {
          teas.push((await post(ada, `tea ${i}`)).id);
          await post(ada, `coffee ${i}`);
        }
        const newest = teas.toReversed();
        let answer = await searchFor(ada, { q: "tea", limit: 10 });
        assert.deepEqual(
          answer.events.map((e: Json) => e.id),
          newest.slice(0, 10),
        );
        assert.deepEqual([answer.more, answer.before], [true, newest[9]]);
        answer = await searchFor(ada, {
          q: "tea",
          limit: 10,
          before: answer.before,
        });
        assert.deepEqual(
          answer.events.map((e: Json) => e.id),
          newest.slice(10, 20),
        );
        assert.equal(answer.more, true);
        answer = await searchFor(ada, {
          q: `tea before:${answer.before}`,
          limit: 10,
        });
        assert.deepEqual(
          answer.events.map((e: Json) => e.id),
          newest.slice(20),
        );
        assert.deepEqual([answer.more, "before" in answer], [false, false]);
        // Ten matches, ten asked: nothing older, so no more.
        answer = await searchFor(ada, { q: "tea", limit: 5, before: teas[5] });
        assert.deepEqual(
          answer.events.map((e: Json) => e.id),
          newest.slice(20),
        );
        assert.equal(answer.more, false);
        const bob = await textClient(chat, "/", { nick: "bob" });
        bob.send("/search tea");
        for (const id of newest.slice(0, 20)) {
          assert.match(
            await bob.next(),
            new RegExp(`^ \\.\\.\\.\\. #${id} ada: tea \\d+$`),
          );
        }
        const last = await bob.next();
        const again = ` Older: /search tea before:${newest[19]}`;
        assert.ok(
          last.startsWith(' .... 20 found for "tea", newest first, in '),
          last,
        );
        assert.ok(last.endsWith(again), last);
        bob.send(again.slice(" Older: ".length));
        for (const id of newest.slice(20)) {
          assert.match(
            await bob.next(),
            new RegExp(`^ \\.\\.\\.\\. #${id} ada: tea`),
          );
        }
        assert.match(
          await bob.next(),
          /^ \.\.\.\. 5 found for "tea before:\d+", newest first, in [^.]+\.$/,
        );
        await closeAll(ada, bob);
      }),
  });

  Deno.test({
    name:
      `${site.name}: an edited message is found by its new text only, a deleted one never`,
    ignore: site.ignore,
    fn: () =>
      site.run(OPTIONS, async (chat) => {
        const ada = await jsonClient(chat, "/", { nick: "ada" });
        const bob = await jsonClient(chat, "/", { nick: "bob" });
        const meet = await post(ada, "meet at noon");
        const edit = await ask(
          ada,
          { type: "edit", id: meet.id, text: "meet at one" },
          "edit",
        );
        assert.equal(edit.target, meet.id);
        assert.deepEqual(await idsFor(bob, { q: "noon" }), []);
        const found = await searchFor(bob, { q: "one" });
        assert.deepEqual(found.events, [
          { ...meet, text: "meet at one", edited: edit.edited },
        ]);
        const gone = await post(ada, "delete me soon");
        await post(ada, "keep me soon");
        const deleted = await ask(
          ada,
          { type: "delete", id: gone.id },
          "delete",
        );
        assert.equal(deleted.deleted, gone.id);
        assert.deepEqual(
          (await searchFor(bob, { q: "soon" })).events.map((e: Json) => e.text),
          ["keep me soon"],
        );
        assert.deepEqual(await idsFor(bob, { q: "delete" }), []);
        await closeAll(ada, bob);
      }),
  });

  Deno.test({
    name:
      `${site.name}: a DM is found by its two parties only; the API finds none`,
    ignore: site.ignore,
    fn: () =>
      site.run(OPTIONS, async (chat) => {
        const ada = await jsonClient(chat, "/", { nick: "ada" });
        const bob = await jsonClient(chat, "/", { nick: "bob" });
        const cy = await jsonClient(chat, "/", { nick: "cy" });
        const dm = await ask(ada, {
          type: "dm",
          to: "bob",
          text: "secret plan",
        }, "dm");
        const open = await post(cy, "open plan");
        assert.deepEqual(await idsFor(ada, { q: "plan" }), [open.id, dm.id]);
        assert.deepEqual(await idsFor(bob, { q: "secret" }), [dm.id]);
        assert.deepEqual(await idsFor(cy, { q: "secret" }), []);
        assert.deepEqual(await idsFor(cy, { q: "plan" }), [open.id]);
        assert.deepEqual(await idsFor(cy, { q: "plan from:ada" }), []);
        const viaApi = await api(chat, "search", { room: "lobby", q: "plan" });
        assert.deepEqual(viaApi, {
          status: 200,
          body: { result: { events: [open], more: false, scope: site.scope } },
        });
        await closeAll(ada, bob, cy);
      }),
  });

  Deno.test({
    name:
      `${site.name}: the HTTP API's search: results, paging, a bad query, no room`,
    ignore: site.ignore,
    fn: () =>
      site.run(OPTIONS, async (chat) => {
        const ada = await jsonClient(chat, "/", { nick: "ada" });
        const one = await post(ada, "deploy one");
        const two = await post(ada, "deploy two");
        assert.deepEqual(
          await api(chat, "search", { room: "lobby", q: "deploy", limit: 1 }),
          {
            status: 200,
            body: {
              result: {
                events: [two],
                more: true,
                before: two.id,
                scope: site.scope,
              },
            },
          },
        );
        assert.deepEqual(
          (await api(chat, "search", {
            room: "lobby",
            q: "deploy",
            from: "ada",
            before: two.id,
          })).body.result.events,
          [one],
        );
        for (
          const [params, field, code] of [
            [{ q: '"open' }, "q", "bad_request"],
            [{ q: "" }, "q", "bad_request"],
            [{ q: "c*" }, "q", "bad_request"],
            [{ q: "x".repeat(MAX_SEARCH_CHARS + 1) }, "q", "bad_request"],
            [{ q: "a", from: "x y" }, "from", "bad_nick"],
            [{ q: "a from:ada", from: "ada" }, "from", "bad_request"],
            [{ q: "a", limit: 51 }, "limit", "bad_field"],
            [{}, "q", "missing_field"],
          ] as const
        ) {
          const answer = await api(chat, "search", {
            room: "lobby",
            ...params,
          });
          assert.equal(answer.status, 400, JSON.stringify(params));
          assert.equal(answer.body.error.code, code, JSON.stringify(params));
          assert.equal(answer.body.error.field, field, JSON.stringify(params));
        }
        const none = await api(chat, "search", { room: "never-made", q: "x" });
        assert.equal(none.status, 404);
        assert.equal(none.body.error.code, "no_such_room");
        await ada.close();
      }),
  });
}

// ---------------------------------------------------------------------------
// Bad input and abuse
// ---------------------------------------------------------------------------

/** Bad searches as JSON frames, and what each is told. */
const BAD_FRAMES: [Json, RegExp][] = [
  [{ q: "" }, /^nothing to search for/],
  [{ q: "!!!" }, /^nothing to search for/],
  [{ q: '"unbalanced' }, /^unbalanced quotes/],
  [{ q: 'cafe"' }, /^unbalanced quotes/],
  [{ q: "*" }, /^\* ends a word/],
  [{ q: "c*" }, /^\* ends a word/],
  [{ q: "ca*fe" }, /^\* ends a word/],
  [
    { q: "x".repeat(MAX_SEARCH_CHARS + 1) },
    /^a search is at most 200 characters$/,
  ],
  [{ q: "a b c d e f g h i j k" }, /^a search has at most 10 words$/],
  [{ q: "cafe from:" }, /^from: takes a nick/],
  [{ q: "cafe from:x!y" }, /^from: a nickname is/],
  [{ q: "cafe from:ada", from: "ada" }, /^from: given twice$/],
  [{ q: "cafe before:x" }, /^before: takes a message id/],
  [{}, /^expected \{"type":"search"/],
  [{ q: 5 }, /^expected \{"type":"search"/],
  [{ q: "cafe", limit: 0 }, /^expected \{"type":"search"/],
  [{ q: "cafe", limit: 51 }, /^expected \{"type":"search"/],
  [{ q: "cafe", before: -1 }, /^expected \{"type":"search"/],
  [{ q: "cafe", from: 7 }, /^expected \{"type":"search"/],
];

for (const site of SITES) {
  Deno.test({
    name:
      `${site.name}: every bad search is a bad_request saying what is wrong; FTS5's syntax is only words; the connection stays`,
    ignore: site.ignore,
    fn: () =>
      site.run(OPTIONS, async (chat) => {
        const ada = await jsonClient(chat, "/", { nick: "ada" });
        const cafe = await post(ada, "meet near cafe or col");
        for (const [fields, message] of BAD_FRAMES) {
          const answer = await searchFor(ada, fields);
          assert.equal(answer.type, "error", JSON.stringify(fields));
          assert.equal(answer.code, "bad_request", JSON.stringify(fields));
          assert.match(answer.message, message, JSON.stringify(fields));
        }
        // What would be FTS5's syntax is words and punctuation here (words
        // joined by punctuation are a phrase): found as words, never an
        // SQL error.
        for (
          const [q, found] of [
            ["cafe OR x", false],
            ["cafe AND near", false],
            ["NEAR(cafe col)", true],
            ["col:cafe", false],
            ["^cafe -col", true],
            ["{cafe} (near)", true],
            ['"near cafe" OR', true],
            ["cafe*", true],
            ["cafe'; DROP TABLE events; --", false],
          ] as const
        ) {
          const answer = await searchFor(ada, { q });
          assert.equal(answer.type, "search_results", q);
          const ids = answer.events.map((e: Json) => e.id);
          assert.deepEqual(ids, found ? [cafe.id] : [], q);
        }
        const text = await textClient(chat, "/", { nick: "tx" });
        for (
          const [line, reply] of [
            ["/search", / \.\.\.\. error: usage: \/search WORDS: /],
            ["/search   ", / \.\.\.\. error: usage: \/search WORDS: /],
            ['/search "open', / \.\.\.\. error: unbalanced quotes/],
            ["/search *", / \.\.\.\. error: \* ends a word/],
            [
              "/search cafe from:a from:b",
              / \.\.\.\. error: from: given twice/,
            ],
          ] as const
        ) {
          text.send(line);
          assert.match(await text.next(), reply, line);
        }
        // Still served, both.
        assert.deepEqual(await idsFor(ada, { q: "cafe" }), [cafe.id]);
        text.send("/search cafe");
        assert.equal(
          await text.next(),
          ` .... #${cafe.id} ada: meet near cafe or col`,
        );
        await closeAll(ada, text);
      }),
  });
}

Deno.test("a search costs SEARCH_COST tokens of the message rate: a flood of them is refused sooner than posts", async () => {
  assert.equal(SEARCH_COST, 5);
  await withChat(
    { rate: 1, burst: 12, maxConsecutiveDrops: 100 },
    async (chat) => {
      const ada = await jsonClient(chat, "/", { nick: "ada" });
      // 12 tokens: two searches (5 each), the third refused (1 taken, 4
      // more not there), and a message still goes (the last token).
      for (let i = 0; i < 3; i++) {
        ada.send(JSON.stringify({ type: "search", q: "x" }));
      }
      ada.send(JSON.stringify({ type: "message", text: "after" }));
      const kinds = [];
      for (let i = 0; i < 4; i++) {
        const event = await ada.event("an answer");
        kinds.push(
          event.type === "error"
            ? `${event.code}: ${event.message}`
            : event.type,
        );
      }
      assert.deepEqual(kinds.toSorted(), [
        "message",
        "rate_limited: slow down: a search costs 5 messages' worth",
        "search_results",
        "search_results",
      ]);
      await ada.close();
    },
  );
});

Deno.test("results carry their reactions as history does, with me for the reader", async () => {
  for (const site of SITES.filter((site) => !site.ignore)) {
    await site.run(OPTIONS, async (chat) => {
      const ada = await jsonClient(chat, "/", { nick: "ada" });
      const bob = await jsonClient(chat, "/", { nick: "bob" });
      const said = await post(ada, "react to this");
      const notice = await ask(
        bob,
        { type: "react", id: said.id, key: "👍" },
        "react",
      );
      assert.equal(notice.count, 1);
      const reactions = (me: boolean) => [
        { key: "👍", count: 1, nicks: ["bob"], me },
      ];
      assert.deepEqual(
        (await searchFor(ada, { q: "react" })).events,
        [{ ...said, reactions: reactions(false) }],
        site.name,
      );
      assert.deepEqual(
        (await searchFor(bob, { q: "react" })).events,
        [{ ...said, reactions: reactions(true) }],
        site.name,
      );
      await closeAll(ada, bob);
    });
  }
});

// ---------------------------------------------------------------------------
// What is searched: the window, or everything kept
// ---------------------------------------------------------------------------

Deno.test("memory and Redis search the live window, --data everything retained: the answer says which", async () => {
  for (const site of SITES.filter((site) => !site.ignore)) {
    await site.run({ ...OPTIONS, historySize: 5 }, async (chat) => {
      const ada = await jsonClient(chat, "/", { nick: "ada" });
      const old = await post(ada, "old tea");
      for (let i = 0; i < 10; i++) await post(ada, `coffee ${i}`);
      const recent = await post(ada, "new tea");
      const answer = await searchFor(ada, { q: "tea" });
      assert.equal(answer.scope, site.scope, site.name);
      assert.deepEqual(
        answer.events.map((e: Json) => e.id),
        site.scope === "all" ? [recent.id, old.id] : [recent.id],
        site.name,
      );
      await ada.close();
    });
  }
});

// ---------------------------------------------------------------------------
// --data: restart, an older file, retention, this turn's changes
// ---------------------------------------------------------------------------

Deno.test("--data: after a restart the index finds the new text of an edit, never the old one or a deleted message", async () => {
  await inTempDir(async (dir) => {
    const data = `${dir}/chat.db`;
    let ids: Record<string, number> = {};
    await withChat({ ...OPTIONS, data }, async (chat) => {
      const ada = await jsonClient(chat, "/", { nick: "ada" });
      const kept = await post(ada, "café crème");
      const edited = await post(ada, "lunch at noon");
      await ask(
        ada,
        { type: "edit", id: edited.id, text: "lunch at one" },
        "edit",
      );
      const deleted = await post(ada, "café noir");
      await ask(ada, { type: "delete", id: deleted.id }, "delete");
      ids = { kept: kept.id, edited: edited.id };
      await ada.close();
    });
    await withChat({ ...OPTIONS, data, historySize: 1 }, async (chat) => {
      const bob = await jsonClient(chat, "/", { nick: "bob" });
      assert.deepEqual(await idsFor(bob, { q: "cafe" }), [ids.kept]);
      assert.deepEqual(await idsFor(bob, { q: "noon" }), []);
      assert.deepEqual(await idsFor(bob, { q: "lunch one" }), [ids.edited]);
      assert.deepEqual(await idsFor(bob, { q: "noir" }), []);
      await bob.close();
    });
  });
});

Deno.test("--data: kill -9 right after the echoes, before the index is written: the restart indexes them, and search finds them", async () => {
  await inTempDir(async (dir) => {
    const data = ["--data", `${dir}/chat.db`, "--quiet"];
    const first = await startCli(data, [`--allow-write=${dir}`]);
    const ada = await jsonClient({ wsPort: first.wsPort } as ChatServer, "/", {
      nick: "ada",
    });
    const old = await post(ada, "first tea");
    // Written to the index by its close? No: by its timer, well before this.
    await new Promise((resolve) => setTimeout(resolve, INDEX_FLUSH_MS + 300));
    const fresh = [];
    for (let i = 1; i <= 3; i++) fresh.push(await post(ada, `tea ${i}`));
    first.child.kill("SIGKILL"); // right after the last echo
    await within(first.child.status, "the kill");
    await first.lines.cancel();
    await within(ada.closed, "the dropped connection");
    // The index as the kill left it: the first message only.
    const reader = new DatabaseSync(`${dir}/chat.db`, { readOnly: true });
    const rows =
      reader.prepare("SELECT count(*) AS n FROM search_index_docsize")
        .get()!.n;
    reader.close();
    assert.equal(Number(rows), 1, "the three were not written yet");
    const second = await startCli(data, [`--allow-write=${dir}`]);
    const bob = await jsonClient({ wsPort: second.wsPort } as ChatServer, "/", {
      nick: "bob",
    });
    assert.deepEqual(await idsFor(bob, { q: "tea" }), [
      ...fresh.map((event) => event.id).toReversed(),
      old.id,
    ]);
    await bob.close();
    second.child.kill("SIGTERM");
    assert.equal((await within(second.child.status, "the exit")).code, 0);
    await second.lines.cancel();
    const after = new DatabaseSync(`${dir}/chat.db`, { readOnly: true });
    const indexed = after.prepare(
      "SELECT count(*) AS n FROM search_index_docsize",
    ).get()!.n;
    after.close();
    assert.equal(Number(indexed), 4, "indexed at the restart");
  });
});

/** The tables of schema 2 (reactions, before search), verbatim. */
const SCHEMA_2 = `
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
  CREATE TABLE reactions (
    room INTEGER NOT NULL,
    id INTEGER NOT NULL,
    reactions TEXT NOT NULL,
    PRIMARY KEY (room, id)
  ) WITHOUT ROWID;
  PRAGMA application_id = ${0x64636874};
  PRAGMA user_version = 2;
`;

Deno.test("--data: a file of schema 2 is upgraded in place, its events indexed: found by search", async () => {
  await inTempDir(async (dir) => {
    const data = `${dir}/chat.db`;
    const db = new DatabaseSync(data);
    db.exec(SCHEMA_2);
    db.prepare("INSERT INTO rooms VALUES (1, 'lobby', 'old-epoch', 0)").run();
    db.prepare("INSERT INTO rooms VALUES (2, 'other', 'other-epoch', 0)").run();
    const events: [number, RoomEvent][] = [
      [1, { type: "join", id: 1, ts: 1, nick: "ada" }],
      [1, { type: "message", id: 2, ts: 2, from: "ada", text: "Café au lait" }],
      [1, {
        type: "action",
        id: 3,
        ts: 3,
        from: "ada",
        text: "likes the cafe",
      }],
      [1, { type: "dm", id: 4, ts: 4, from: "ada", to: "bob", text: "cafe?" }],
      [1, { type: "topic", id: 5, ts: 5, by: "ada", text: "cafe talk" }],
      [1, { type: "message", id: 6, ts: 6, from: "ada", text: "tea" }],
      [2, {
        type: "message",
        id: 1,
        ts: 1,
        from: "cy",
        text: "cafe elsewhere",
      }],
    ];
    const insert = db.prepare("INSERT INTO events VALUES (?, ?, ?, ?)");
    for (const [room, event] of events) {
      insert.run(room, event.id, event.ts, JSON.stringify(event));
    }
    db.close();
    await withChat({ ...OPTIONS, data }, async (chat) => {
      const bob = await jsonClient(chat, "/", { nick: "bob" });
      assert.equal(bob.welcome.epoch, "old-epoch");
      // Its messages and actions (the DM is ada's and the bob of then's,
      // not this bob's; a topic is no message).
      assert.deepEqual(await idsFor(bob, { q: "cafe" }), [3, 2]);
      assert.deepEqual(await idsFor(bob, { q: "tea" }), [6]);
      await bob.close();
    });
    const reader = new DatabaseSync(data, { readOnly: true });
    const version = reader.prepare("PRAGMA user_version").get()!.user_version;
    const rows =
      reader.prepare("SELECT count(*) AS n FROM search_index_docsize")
        .get()!.n;
    reader.close();
    // Indexed: lobby's 2, 3, 4 and 6, other's 1 (then bob's message-less join).
    // Upgraded through every step since (3: the index; 4: read markers).
    assert.deepEqual([Number(version), Number(rows)], [4, 5]);
  });
});

/** Store options for the archive directly. */
const FILL = {
  historySize: 100,
  maxHistoryBytes: 1 << 20,
  maxRooms: 10,
  onEvict: () => {},
  retainEvents: 100_000,
  retainDays: 0,
};

/** A query that parses. */
function query(q: string): SearchQuery {
  return parseSearch(q) as SearchQuery;
}

Deno.test("--data: retention trims the index with its events, room by room", async () => {
  await inTempDir((dir) => {
    const path = `${dir}/chat.db`;
    const archive = SqliteArchive.open({ ...FILL, path, retainEvents: 2 });
    archive.create("lobby", "e1");
    archive.create("other", "e2");
    for (let id = 1; id <= 4; id++) {
      const event: RoomEvent = {
        type: "message",
        id,
        ts: Date.now(),
        from: "ada",
        text: `tea ${id}`,
      };
      archive.append("lobby", event);
      archive.append("other", event);
    }
    archive.commit();
    const found = (room: string) =>
      archive.search(room, query("tea"), Number.MAX_SAFE_INTEGER, 10)
        .map((event) => event.id);
    assert.deepEqual(found("lobby"), [4, 3, 2, 1]);
    assert.equal(archive.trim(), 4, "2 of each room");
    assert.deepEqual(found("lobby"), [4, 3]);
    assert.deepEqual(found("other"), [4, 3]);
    archive.close();
    const reader = new DatabaseSync(path, { readOnly: true });
    const rows =
      reader.prepare("SELECT count(*) AS n FROM search_index_docsize")
        .get()!.n;
    reader.close();
    assert.equal(Number(rows), 4, "the trimmed events' index rows are gone");
  });
});

Deno.test("--data: edits and deletions reach the index whether their message is written in it or still waits", async () => {
  await inTempDir((dir) => {
    const path = `${dir}/chat.db`;
    const said = (id: number, text: string): RoomEvent => ({
      type: "message",
      id,
      ts: Date.now(),
      from: "ada",
      text,
    });
    let archive = SqliteArchive.open({ ...FILL, path });
    archive.create("lobby", "e1");
    archive.append("lobby", said(1, "one old"));
    archive.append("lobby", said(2, "two old"));
    archive.commit();
    archive.close(); // writes the index: 1 and 2 are in it
    archive = SqliteArchive.open({ ...FILL, path });
    archive.load("lobby", 10);
    archive.append("lobby", said(3, "three old"));
    archive.append("lobby", said(4, "four old"));
    archive.commit(); // 3 and 4 wait for the index
    const found = (q: string) =>
      archive.search("lobby", query(q), Number.MAX_SAFE_INTEGER, 10)
        .map((event) => [event.id, (event as { text: string }).text]);
    assert.deepEqual(found("old"), [
      [4, "four old"],
      [3, "three old"],
      [2, "two old"],
      [1, "one old"],
    ]);
    archive.replace("lobby", said(1, "one new"));
    archive.replace("lobby", said(3, "three new"));
    archive.delete("lobby", 2);
    archive.delete("lobby", 4);
    // Before the commit, as they read now: 2 and 4 gone; 3 waits with its
    // new words; the index still has 1 by its old ones, and gives it with
    // its new text (the store's rule, matchesQuery, then drops it).
    assert.deepEqual(found("old"), [[1, "one new"]]);
    archive.commit();
    // The index holds 1 by its new words; 3 waits with its new words.
    assert.deepEqual(found("new"), [[3, "three new"], [1, "one new"]]);
    // "old" is 1's and 3's no more: the index says no such thing of them.
    assert.deepEqual(found("old"), []);
    archive.close();
    archive = SqliteArchive.open({ ...FILL, path });
    archive.load("lobby", 10);
    assert.deepEqual(found("new"), [[3, "three new"], [1, "one new"]]);
    assert.deepEqual(found("old"), []);
    archive.close();
    const reader = new DatabaseSync(path, { readOnly: true });
    const rows =
      reader.prepare("SELECT count(*) AS n FROM search_index_docsize")
        .get()!.n;
    reader.close();
    assert.equal(Number(rows), 2, "1 and 3; 2 and 4 deleted");
  });
});

Deno.test("--data: a message deleted or edited this turn reads as it is now, before the commit", async () => {
  await inTempDir(async (dir) => {
    const store = await SqliteStore.connect({
      ...FILL,
      path: `${dir}/chat.db`,
    });
    store.hold("lobby");
    const gone = await store.append("lobby", {
      type: "message",
      from: "ada",
      text: "soon gone",
    });
    const changed = await store.append("lobby", {
      type: "message",
      from: "ada",
      text: "soon changed",
    });
    const found = async (q: string) =>
      (await store.search("lobby", {
        query: query(q),
        limit: 10,
        visible: () => true,
      })).events;
    // Not awaited: queued for this turn's commit, and already so for a
    // search (the index still has both by their old words).
    const deleting = store.delete("lobby", gone.id, "mod");
    const editing = store.edit(
      "lobby",
      { nick: "ada", since: 0, keys: [] },
      changed.id,
      "now different",
      60_000,
    );
    assert.deepEqual(await found("soon"), []);
    // The new words are found once committed (as the edit is delivered).
    const edit = await editing as Json;
    await deleting;
    assert.deepEqual(await found("different"), [
      { ...changed, text: "now different", edited: edit.edited },
    ]);
    assert.deepEqual(await found("soon"), []);
    store.release("lobby");
    await store.close!();
  });
});
