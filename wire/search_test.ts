/**
 * The search language and its matching rule (wire/search.ts): what a query
 * parses to, what each bad one is told, what matches, and that the
 * `--data` index (SQLite FTS5 over the same words) finds exactly what the
 * rule says, so every store answers alike.
 *
 * @module
 */

import assert from "node:assert/strict";
import { DatabaseSync } from "node:sqlite";
import {
  ftsMatch,
  matchesQuery,
  MAX_SEARCH_CHARS,
  MAX_SEARCH_WORDS,
  parseSearch,
  QueryProblem,
  type SearchQuery,
  searchWords,
} from "./search.ts";
import { parseCommand, parseJsonCommand } from "./protocol.ts";

/** A query that must parse. */
function parsed(q: string): SearchQuery {
  const query = parseSearch(q);
  assert.ok(!(query instanceof QueryProblem), `${q}: ${JSON.stringify(query)}`);
  return query;
}

Deno.test("searchWords folds case, diacritics and compatibility forms, and cuts at punctuation", () => {
  assert.deepEqual(searchWords("Café CAFÉ cafe\u0301"), [
    "cafe",
    "cafe",
    "cafe",
  ]);
  assert.deepEqual(searchWords("ﬁne Ｆｕｌｌ ½"), ["fine", "full", "1", "2"]);
  assert.deepEqual(searchWords("don't stop-me now!"), [
    "don",
    "t",
    "stop",
    "me",
    "now",
  ]);
  assert.deepEqual(searchWords("ΟΔΟΣ οδος"), ["οδοσ", "οδοσ"]);
  assert.deepEqual(searchWords("Łódź Straße"), ["łodz", "straße"]);
  assert.deepEqual(searchWords("👍 🇫🇷 ..."), []);
  assert.deepEqual(searchWords("user_42 राम"), ["user", "42", "रम"]);
});

Deno.test("parseSearch: words, phrases, prefixes, from: and before:", () => {
  assert.deepEqual(parsed("Lunch CAFÉ"), {
    terms: [
      { words: ["lunch"], prefix: false },
      { words: ["cafe"], prefix: false },
    ],
  });
  assert.deepEqual(parsed('"New York" caf* from:Ada before:120'), {
    terms: [
      { words: ["new", "york"], prefix: false },
      { words: ["caf"], prefix: true },
    ],
    from: "Ada",
    before: 120,
  });
  assert.deepEqual(parsed('"new yo"* x'), {
    terms: [
      { words: ["new", "yo"], prefix: true },
      { words: ["x"], prefix: false },
    ],
  });
  // FTS5's operators are words or punctuation here, nothing more.
  assert.deepEqual(
    parsed("cafe OR NEAR(lunch) -x ^y col:z {a b}").terms.map((t) => t.words),
    [["cafe"], ["or"], ["near", "lunch"], ["x"], ["y"], ["col", "z"], ["a"], [
      "b",
    ]],
  );
  // Punctuation alone, and an empty phrase, are nothing.
  assert.deepEqual(parsed('cafe !!! ""').terms.length, 1);
  assert.equal(parsed("x".repeat(MAX_SEARCH_CHARS)).terms.length, 1);
  assert.equal(
    parsed(Array(MAX_SEARCH_WORDS).fill("w").join(" ")).terms.length,
    MAX_SEARCH_WORDS,
  );
});

/** Every bad query, and what it is told. */
const BAD_QUERIES: [string, RegExp][] = [
  ["", /nothing to search for/],
  ["   ", /nothing to search for/],
  ["!!! ...", /nothing to search for/],
  ['"unbalanced', /unbalanced quotes/],
  ['cafe "new york', /unbalanced quotes/],
  ['a"b', /unbalanced quotes/],
  ["*", /\* ends a word/],
  ["cafe *", /\* ends a word/],
  ["c*", /\* ends a word/],
  ["ca*fe", /\* ends a word/],
  ["*cafe", /\* ends a word/],
  ["ca**", /\* ends a word/],
  ['"new york"**', /\* ends a word/],
  ["x".repeat(MAX_SEARCH_CHARS + 1), /at most 200 characters/],
  [Array(MAX_SEARCH_WORDS + 1).fill("w").join(" "), /at most 10 words/],
  ['"a b c d e f" g h i j k', /at most 10 words/],
  ["from: cafe", /from: takes a nick/],
  ["from:a from:b cafe", /from: given twice/],
  ["before:x cafe", /before: takes a message id/],
  ["before:1 before:2 cafe", /before: given twice/],
  ["from:ada", /nothing to search for/],
];

Deno.test("parseSearch refuses each bad query with what is wrong", () => {
  for (const [q, message] of BAD_QUERIES) {
    const query = parseSearch(q);
    assert.ok(query instanceof QueryProblem, JSON.stringify(q));
    assert.match(query.message, message, JSON.stringify(q));
  }
});

Deno.test("matchesQuery: all words as whole words, a phrase in a row, a prefix at a word's start", () => {
  const text = "Lunch at the Café Rouge, then New York pizza";
  const yes = [
    "cafe",
    "CAFÉ lunch",
    '"cafe rouge"',
    "caf*",
    '"new yo"*',
    "piz*",
  ];
  const no = [
    "caf",
    "cafes",
    '"rouge cafe"',
    "cafe tea",
    '"york new"',
    "ouge*",
  ];
  for (const q of yes) assert.ok(matchesQuery(parsed(q), text), q);
  for (const q of no) assert.ok(!matchesQuery(parsed(q), text), q);
});

Deno.test("the JSON frame and the typed line make the same search command; bad ones are bad_request", () => {
  assert.deepEqual(
    parseJsonCommand(
      JSON.stringify({ type: "search", q: "cafe", from: "ada", limit: 5 }),
    ),
    {
      type: "search",
      q: "cafe",
      query: { terms: [{ words: ["cafe"], prefix: false }], from: "ada" },
      limit: 5,
    },
  );
  assert.deepEqual(parseCommand("/search cafe from:ada"), {
    type: "search",
    q: "cafe from:ada",
    query: { terms: [{ words: ["cafe"], prefix: false }], from: "ada" },
    limit: 20,
  });
  assert.deepEqual(parseCommand("/SEARCH   x  ").type, "search");
  const bad = (command: ReturnType<typeof parseJsonCommand>) =>
    command.type === "invalid" ? command.code : command.type;
  for (
    const frame of [
      {},
      { q: 5 },
      { q: "cafe", limit: 0 },
      { q: "cafe", limit: 51 },
      { q: "cafe", limit: "5" },
      { q: "cafe", before: -1 },
      { q: "cafe", before: 1.5 },
      { q: "cafe", from: 5 },
      { q: "cafe", from: "not a nick" },
      { q: "cafe from:ada", from: "ada" },
      { q: "cafe before:3", before: 3 },
      { q: '"open' },
    ]
  ) {
    assert.equal(
      bad(parseJsonCommand(JSON.stringify({ type: "search", ...frame }))),
      "bad_request",
      JSON.stringify(frame),
    );
  }
  for (const line of ["/search", "/search   ", '/search "open', "/search *"]) {
    assert.equal(bad(parseCommand(line)), "bad_request", line);
  }
  // Other lines are parseCommand's.
  assert.deepEqual(parseCommand("/searching"), {
    type: "invalid",
    code: "unknown_command",
    message: "unknown command /searching (try /help)",
  });
  assert.deepEqual(parseCommand("hi"), { type: "message", text: "hi" });
});

/**
 * Texts and queries where a tokenizer could differ: case, diacritics
 * precomposed and combining, compatibility forms, scripts, digits, joiners.
 */
const CORPUS = [
  "Lunch at the café",
  "CAFE\u0301 au lait",
  "cafeteria closed",
  "ﬁne dining at Ｔｈｅ Ｃａｆé",
  "New York, New York",
  "york new",
  "don't stop",
  "Straße und Strasse",
  "Łódź in 2024",
  "ΟΔΟΣ Αθηνάς",
  "राम और श्याम",
  "東京 tokyo",
  "user_42 said hi",
  "naïve résumé",
  "x²",
  "emoji 👍 only",
];
const QUERIES = [
  "cafe",
  "café",
  "caf*",
  '"new york"',
  '"york new"',
  "fine",
  "the cafe",
  "don t",
  '"don t"',
  "strasse",
  "straße",
  "lodz",
  "łodz",
  "οδος",
  "αθη*",
  "राम",
  "tokyo",
  "東京",
  "user 42",
  "naive resume",
  "x2",
  "emoji only",
  "2024",
];

Deno.test("the --data index (FTS5 over searchWords, queried by ftsMatch) finds what matchesQuery does", () => {
  const db = new DatabaseSync(":memory:");
  // As stores/sqlite_store.ts makes it: prefixes of 2 and 3 characters kept.
  db.exec(`CREATE VIRTUAL TABLE s USING fts5(words, content='',
    contentless_delete=1, tokenize='unicode61 remove_diacritics 2',
    prefix='2 3')`);
  const insert = db.prepare("INSERT INTO s (rowid, words) VALUES (?, ?)");
  CORPUS.forEach((text, i) => insert.run(i + 1, searchWords(text).join(" ")));
  const find = db.prepare("SELECT rowid FROM s WHERE s MATCH ? ORDER BY rowid");
  for (const q of [...QUERIES, "cafet*", "naiv*", '"new yor"*', "αθην*"]) {
    const query = parsed(q);
    const byRule = CORPUS.flatMap((text, i) =>
      matchesQuery(query, text) ? [i + 1] : []
    );
    // Exact, and with a prefix cut to 3 characters: more, never fewer,
    // and exactly the rule's once held to it.
    const exact = find.all(ftsMatch(query)).map((row) => Number(row.rowid));
    assert.deepEqual(exact, byRule, q);
    const cut = find.all(ftsMatch(query, 3)).map((row) => Number(row.rowid));
    assert.ok(byRule.every((id) => cut.includes(id)), q);
    assert.deepEqual(
      cut.filter((id) => matchesQuery(query, CORPUS[id - 1])),
      byRule,
      q,
    );
  }
  assert.equal(
    ftsMatch(parsed('cafet* "new yor"* ab*'), 3),
    '"caf"* "new yor"* "ab"*',
  );
  db.close();
});
