/**
 * Tests of the terminal client: its pure pieces, then the client itself as a
 * child process driven through its pipes, against the real server and real
 * WebSocket peers.
 *
 * @module
 */

import assert from "node:assert/strict";
import {
  BACKOFF_MAX_MS,
  BACKOFF_MIN_MS,
  backoffDelay,
  BELL,
  ChatClient,
  type ChatEvent,
  CLIENT_HELP_TEXT,
  connectUrl,
  EDIT_LAST_USAGE,
  explainFailure,
  inviteLine,
  LineEditor,
  nickColour,
  parseChatUrl,
  parseClientArgs,
  parseInput,
  PLAIN,
  REACT_LAST_USAGE,
  REACTION_NICKS_SHOWN,
  reactionsLine,
  reactionsSummary,
  refusalText,
  render,
  resultTime,
  roomUrl,
  searchLines,
  updateUsers,
} from "./chat_client.ts";
import { type ChatServer, startChat } from "../main.ts";
import {
  CloseCode,
  HELP_TEXT,
  JSON_PROTOCOL,
  MODERATION_HELP,
  printable as sanitize,
  type ReactEvent,
  REACTION_KEY_RULE,
  renderReaction,
  renderText,
  SEARCH_USAGE,
} from "../wire/protocol.ts";
import { hs256, SECRET, signedClient } from "../tests/auth_helpers.ts";
import {
  chatUrl,
  closeAll,
  jsonClient,
  metric,
  TEST_OPTIONS,
  textClient,
  WAIT_MS,
  withChat,
  within,
} from "../tests/test_helpers.ts";

// ---------------------------------------------------------------------------
// sanitize
// ---------------------------------------------------------------------------

Deno.test("sanitize removes whole CSI sequences, 7- and 8-bit", () => {
  assert.equal(sanitize("\x1b[31mred\x1b[0m"), "red");
  assert.equal(sanitize("a\x1b[2J\x1b[1;1Hb"), "ab");
  assert.equal(sanitize("a\x1b[?1049hb"), "ab"); // private parameters
  assert.equal(sanitize("a\x1b[1 qb"), "ab"); // intermediate byte
  assert.equal(sanitize("a\x9b31mb"), "ab"); // C1 CSI
});

Deno.test("sanitize removes OSC, DCS, APC strings up to BEL or ST", () => {
  assert.equal(sanitize("a\x1b]0;pwned\x07b"), "ab"); // title, BEL
  assert.equal(
    sanitize("a\x1b]8;;http://x\x1b\\link\x1b]8;;\x1b\\b"),
    "alinkb",
  );
  assert.equal(sanitize("a\x1bP+q544e\x1b\\b"), "ab"); // DCS
  assert.equal(sanitize("a\x1b_apc\x1b\\b"), "ab"); // APC
  assert.equal(sanitize("a\x9d0;t\x9cb"), "ab"); // 8-bit OSC and ST
  assert.equal(sanitize("a\x1b]0;never ends"), "a"); // unterminated
});

Deno.test("sanitize removes other ESC sequences and every other control", () => {
  assert.equal(sanitize("a\x1bcb"), "ab"); // RIS (reset)
  assert.equal(sanitize("a\x1b(Bb"), "ab"); // designate charset
  assert.equal(sanitize("a\x1b7b\x1b8"), "ab"); // save/restore cursor
  assert.equal(sanitize("a\x1b"), "a"); // a lone ESC at the end
  assert.equal(sanitize("a\x00\x07\x08\x7f\x80\x8fb"), "ab");
  assert.equal(sanitize("a\x85b"), "a b"); // NEL is a line break
  assert.equal(sanitize("a\u202eb\u2066c"), "abc"); // bidi overrides
});

Deno.test("sanitize turns tabs and line breaks into spaces, keeps text", () => {
  assert.equal(sanitize("one\ntwo\r\nthree\tfour"), "one two  three four");
  assert.equal(sanitize("राम: héllo 👋 [31m"), "राम: héllo 👋 [31m");
});

// ---------------------------------------------------------------------------
// render, colours, users
// ---------------------------------------------------------------------------

const TS = new Date(2025, 0, 2, 9, 5).getTime();

Deno.test("render draws each event as the plain-text protocol does", () => {
  const cases: [ChatEvent, string][] = [
    [{ type: "message", id: 1, ts: TS, from: "ada", text: "hi" }, "ada: hi"],
    [
      { type: "action", id: 2, ts: TS, from: "ada", text: "waves" },
      "* ada waves",
    ],
    [{ type: "join", id: 3, ts: TS, nick: "bob" }, " .... bob has joined."],
    [{ type: "leave", id: 4, ts: TS, nick: "bob" }, " .... bob has left."],
    [
      { type: "nick", id: 5, ts: TS, from: "ada", to: "eve" },
      " .... ada is now known as eve.",
    ],
    [
      { type: "dm", id: 6, ts: TS, from: "ada", to: "bob", text: "psst" },
      "[dm] ada -> bob: psst",
    ],
  ];
  for (const [event, line] of cases) assert.equal(render(event), line);
  assert.equal(
    render({ type: "error", code: "too_long", message: "too long" }),
    " .... error: too long",
  );
});

Deno.test("render sanitizes every field and keeps an event on one line", () => {
  const event = {
    type: "message",
    id: 1,
    ts: TS,
    from: "ev\x1b[8mil",
    text: "a\n .... admin has joined.\x1b]0;x\x07",
  } as const;
  assert.equal(render(event), "evil: a  .... admin has joined.");
});

Deno.test("render adds a time and nick colours when asked", () => {
  const event: ChatEvent = {
    type: "message",
    id: 1,
    ts: TS,
    from: "ada",
    text: "hi",
  };
  assert.equal(render(event, { colour: false, time: true }), "09:05 ada: hi");
  const colour = nickColour("ada");
  assert.equal(
    render(event, { colour: true, time: true }),
    `\x1b[2m09:05\x1b[22m \x1b[${colour}mada\x1b[39m: hi`,
  );
});

Deno.test("render shows a reply's quote as the plain-text protocol does, and ids when asked", () => {
  const reply: ChatEvent = {
    type: "message",
    id: 44,
    ts: TS,
    from: "ada",
    text: "yes",
    replyTo: { id: 43, from: "bob", text: "lunch\nat noon?" },
  };
  const action: ChatEvent = {
    type: "action",
    id: 45,
    ts: TS,
    from: "ada",
    text: "nods",
    replyTo: { id: 43, from: "bob", text: "lunch\nat noon?" },
  };
  assert.equal(render(reply), 'ada: ↪ bob: "lunch at noon?" yes');
  assert.equal(render(action), '* ada ↪ bob: "lunch at noon?" nods');
  // Line for line what a plain-text client of the server gets.
  assert.equal(render(reply), renderText(reply));
  assert.equal(render(action), renderText(action));
  const ids = { colour: false, time: true, ids: true };
  assert.equal(
    render(reply, ids),
    '09:05 #44 ada: ↪ bob: "lunch at noon?" yes',
  );
  assert.equal(
    render(action, ids),
    '09:05 #45 * ada ↪ bob: "lunch at noon?" nods',
  );
  // Only what /reply can answer carries an id.
  assert.equal(
    render({ type: "join", id: 46, ts: TS, nick: "cy" }, ids),
    "09:05  .... cy has joined.",
  );
  assert.equal(
    render(
      { type: "dm", id: 47, ts: TS, from: "ada", to: "bob", text: "psst" },
      ids,
    ),
    "09:05 [dm] ada -> bob: psst",
  );
  // The quote is the network's too: no controls get through it.
  assert.equal(
    render({
      ...reply,
      replyTo: { id: 43, from: "b\x1b[2Job", text: "\x1b]0;x\x07hi" },
    }),
    'ada: ↪ bob: "hi" yes',
  );
  const colour = nickColour("ada");
  assert.equal(
    render({ type: "message", id: 44, ts: TS, from: "ada", text: "hi" }, {
      colour: true,
      time: false,
      ids: true,
    }),
    `\x1b[2m#44\x1b[22m \x1b[${colour}mada\x1b[39m: hi`,
  );
});

Deno.test("render shows an edit as the plain-text protocol does, with the message's id when asked", () => {
  const edit: ChatEvent = {
    type: "edit",
    id: 50,
    ts: TS,
    from: "ada",
    target: 43,
    text: "lunch\nat one\x1b[2J",
    edited: TS,
  };
  assert.equal(render(edit), "* ada edited: lunch at one");
  assert.equal(render(edit), renderText(edit).replace("\x1b[2J", ""));
  // The id is the message's, which /edit and /reply take, not the event's.
  assert.equal(
    render(edit, { colour: false, time: true, ids: true }),
    "09:05 * ada edited #43: lunch at one",
  );
  assert.equal(
    render(edit, { colour: true, time: false, ids: true }),
    `* \x1b[${
      nickColour("ada")
    }mada\x1b[39m edited \x1b[2m#43\x1b[22m: lunch at one`,
  );
});

Deno.test("render shows a reaction notice as the plain-text line with the key's count, always with the message's id", () => {
  const on: ReactEvent = {
    type: "react",
    target: 43,
    key: "👍",
    from: "cy",
    on: true,
    count: 2,
  };
  const off: ReactEvent = { ...on, key: ":ship_it:", on: false, count: 0 };
  assert.equal(render(on), "* cy reacted 👍 to #43 (👍 2)");
  assert.equal(render(on), `${renderReaction(on)} (👍 2)`);
  assert.equal(render(off), "* cy took back :ship_it: from #43 (:ship_it: 0)");
  assert.equal(
    render(on, { colour: true, time: false, ids: true }),
    `* \x1b[${
      nickColour("cy")
    }mcy\x1b[39m reacted 👍 to \x1b[2m#43\x1b[22m (👍 2)`,
  );
  // What a server sends is made printable here too.
  assert.equal(
    render({ ...on, from: "c\x1b[2Jy", key: "👍\x1b]0;x\x07\n" }),
    "* cy reacted 👍  to #43 (👍  2)",
  );
});

Deno.test("reactionsLine: a message's reactions under it, counted, with who (the reader as you, first), at most REACTION_NICKS_SHOWN names", () => {
  assert.equal(reactionsLine(undefined, "ada"), undefined);
  assert.equal(reactionsLine([], "ada"), undefined);
  assert.equal(
    reactionsLine([
      { key: "👍", count: 2, nicks: ["ada", "bob"], me: false },
      { key: "🎉", count: 1, nicks: ["cy"], me: true },
    ], "eve"),
    "   👍 2 (ada, bob) 🎉 1 (cy; one is you)",
  );
  // The reader by the nick they have now: `you`, first.
  assert.equal(
    reactionsLine([
      { key: "👍", count: 2, nicks: ["bob", "ada"], me: true },
      { key: "🎉", count: 1, nicks: ["ada"], me: true },
    ], "ada"),
    "   👍 2 (you, bob) 🎉 1 (you)",
  );
  const many = ["a1", "a2", "ada", "a3", "a4", "a5", "a6", "a7"];
  assert.equal(REACTION_NICKS_SHOWN, 5);
  assert.equal(
    reactionsLine([{ key: ":+1:", count: 8, nicks: many, me: true }], "ada"),
    "   :+1: 8 (you, a1, a2, a3, a4 and 3 more)",
  );
  // The server names the first MAX_REACTION_NICKS; the count says the rest.
  assert.equal(
    reactionsLine(
      [{ key: "👍", count: 40, nicks: ["b", "c"], me: false }],
      "ada",
    ),
    "   👍 40 (b, c and 38 more)",
  );
  // Under the text when lines start with the time; nicks coloured.
  assert.equal(
    reactionsLine([{ key: "👍", count: 1, nicks: ["bob"], me: false }], "ada", {
      colour: true,
      time: true,
    }),
    `         👍 1 (\x1b[${nickColour("bob")}mbob\x1b[39m)`,
  );
  assert.equal(
    reactionsLine(
      [{ key: "👍\x1b[2J", count: 1, nicks: ["b\x1b[31mob"] }],
      "x",
    ),
    "   👍 1 (bob)",
  );
});

Deno.test("reactionsSummary: a message's reactions in short, the reader's marked", () => {
  assert.equal(reactionsSummary([]), "no reactions");
  assert.equal(
    reactionsSummary([
      { key: "👍", count: 3, me: true },
      { key: "🎉", count: 1, me: true },
      { key: "🚀", count: 2, me: false },
    ]),
    "👍 3 (you +2) 🎉 1 (you) 🚀 2",
  );
});

Deno.test("nickColour is the same for the same nick, ignoring case", () => {
  assert.equal(nickColour("Ada"), nickColour("ada"));
  const colours = new Set(
    ["ada", "bob", "cy", "dee", "eve", "fay"].map(nickColour),
  );
  assert.ok(colours.size > 1, "different nicks get different colours");
  for (const colour of colours) {
    assert.ok(
      (colour >= 31 && colour <= 36) || (colour >= 91 && colour <= 96),
    );
  }
});

Deno.test("updateUsers follows joins, leaves and renames", () => {
  let users = ["ada"];
  users = updateUsers(users, { type: "join", id: 1, ts: TS, nick: "bob" });
  users = updateUsers(users, { type: "join", id: 2, ts: TS, nick: "BOB" });
  assert.deepEqual(users, ["ada", "bob"]);
  users = updateUsers(users, {
    type: "nick",
    id: 3,
    ts: TS,
    from: "ada",
    to: "eve",
  });
  assert.deepEqual(users, ["eve", "bob"]);
  users = updateUsers(users, { type: "leave", id: 4, ts: TS, nick: "bob" });
  assert.deepEqual(users, ["eve"]);
});

// ---------------------------------------------------------------------------
// parseInput
// ---------------------------------------------------------------------------

Deno.test("parseInput turns lines into frames and local commands", () => {
  const message = (text: string) => ({
    kind: "send",
    frame: { type: "message", text },
  });
  assert.deepEqual(parseInput("hello"), message("hello"));
  assert.deepEqual(parseInput("//etc/passwd"), message("/etc/passwd"));
  assert.deepEqual(parseInput("   "), { kind: "empty" });
  assert.deepEqual(parseInput("/nick ada"), {
    kind: "send",
    frame: { type: "nick", nick: "ada" },
  });
  assert.deepEqual(parseInput("/NICK"), { kind: "whoami" });
  assert.deepEqual(parseInput("/me waves hello"), {
    kind: "send",
    frame: { type: "action", text: "waves hello" },
  });
  assert.deepEqual(parseInput("/msg bob hi there"), {
    kind: "send",
    frame: { type: "dm", to: "bob", text: "hi there" },
  });
  assert.deepEqual(parseInput("/join Rust-Fans"), {
    kind: "join",
    room: "rust-fans",
  });
  assert.deepEqual(parseInput("/reply 43 yes, see you"), {
    kind: "send",
    frame: { type: "message", text: "yes, see you", replyTo: 43 },
  });
  // The id as the client shows it (#43).
  assert.deepEqual(parseInput("/reply #43 yes"), {
    kind: "send",
    frame: { type: "message", text: "yes", replyTo: 43 },
  });
  // /edit with an id (as typed or as shown), and without: my last one.
  for (
    const line of ["/edit 43 at one", "/edit #43 at one", "/EDIT 43  at one"]
  ) {
    assert.deepEqual(parseInput(line), {
      kind: "send",
      frame: { type: "edit", id: 43, text: "at one" },
    }, line);
  }
  assert.deepEqual(parseInput("/edit at one, not noon"), {
    kind: "editLast",
    text: "at one, not noon",
  });
  assert.deepEqual(parseInput("/edit 1pm it is"), {
    kind: "editLast",
    text: "1pm it is",
  });
  // /react with an id (as typed or as shown), and without: the last shown.
  for (
    const line of ["/react 43 👍", "/react #43 👍", "/REACT  43 👍 "]
  ) {
    assert.deepEqual(parseInput(line), {
      kind: "send",
      frame: { type: "react", id: 43, key: "👍" },
    }, line);
  }
  for (const key of ["👍", ":ship_it:", "❤️", "1️⃣", "#️⃣"]) {
    assert.deepEqual(parseInput(`/react ${key}`), { kind: "reactLast", key });
  }
  assert.deepEqual(parseInput("/who"), { kind: "who" });
  assert.deepEqual(parseInput("/help"), { kind: "help" });
  assert.deepEqual(parseInput("/quit"), { kind: "quit" });
  assert.deepEqual(parseInput("/rooms"), { kind: "rooms" });
  assert.deepEqual(parseInput("/ROOMS "), { kind: "rooms" });
  // Private rooms' commands go as their JSON frames.
  const code = "c".repeat(32);
  const frames: [string, unknown][] = [
    ["/private on", { type: "private", on: true }],
    ["/PRIVATE Off", { type: "private", on: false }],
    ["/invite bob", { type: "invite", nick: "bob" }],
    ["/invite link", { type: "invite", link: { uses: 1, hours: 24 } }],
    ["/invite link 3 48", { type: "invite", link: { uses: 3, hours: 48 } }],
    ["/uninvite bob", { type: "uninvite", nick: "bob" }],
    [`/uninvite ${code}`, { type: "uninvite", code }],
    ["/uninvite link Ab3dE5fG", { type: "uninvite", link: "Ab3dE5fG" }],
    ["/invites", { type: "invites" }],
  ];
  for (const [line, frame] of frames) {
    assert.deepEqual(parseInput(line), { kind: "send", frame }, line);
  }
  assert.deepEqual(parseInput("/private maybe"), {
    kind: "usage",
    message: "usage: /private on|off",
  });
  assert.deepEqual(parseInput("/invite link 0"), {
    kind: "usage",
    message: "uses must be a whole number from 1 to 1000",
  });
});

Deno.test("parseInput sends /search as its frame, the text whole; a bad query is explained, not sent", () => {
  assert.deepEqual(parseInput("/search cafe from:bob"), {
    kind: "send",
    frame: { type: "search", q: "cafe from:bob" },
  });
  assert.deepEqual(parseInput('/SEARCH  "new menu" lun*  '), {
    kind: "send",
    frame: { type: "search", q: '"new menu" lun*' },
  });
  assert.deepEqual(parseInput("/search"), {
    kind: "usage",
    message: SEARCH_USAGE,
  });
  const unbalanced = parseInput('/search "cafe');
  assert.equal(unbalanced.kind, "usage");
  assert.match((unbalanced as { message: string }).message, /quote/);
  assert.deepEqual(parseInput("/search from:bob").kind, "usage");
});

Deno.test("searchLines: each result with its id, date and time, then how many, what was searched, and how to read further back", () => {
  const when = resultTime(TS);
  assert.equal(when, "2025-01-02 09:05");
  assert.deepEqual(
    searchLines({
      type: "search_results",
      q: "cafe",
      events: [
        {
          type: "message",
          id: 43,
          ts: TS,
          from: "ada",
          text: "Lunch at the café?",
        },
        { type: "action", id: 12, ts: TS, from: "bob", text: "likes the cafe" },
      ],
      more: true,
      before: 12,
      scope: "window",
    }),
    [
      ` .... #43 ${when} ada: Lunch at the café?`,
      ` .... #12 ${when} * bob likes the cafe`,
      ' .... 2 found for "cafe", newest first, in the recent messages this server keeps (older ones are not searched). Older: /search cafe before:12',
    ],
  );
  assert.deepEqual(
    searchLines({
      type: "search_results",
      q: "tea\x1b[2J before:9",
      events: [],
      more: false,
      scope: "all",
    }),
    [' .... nothing found for "tea before:9" in everything this room keeps.'],
  );
});

Deno.test("parseInput explains a misused command instead of sending it", () => {
  for (
    const line of [
      "/me",
      "/msg bob",
      "/join",
      "/join no spaces",
      "/nick a b",
      "/reply 43",
      "/reply yes",
      "/reply # yes",
    ]
  ) {
    assert.equal(parseInput(line).kind, "usage", line);
  }
  // An id without text, or no text at all: how /edit is used here.
  for (
    const line of ["/edit", "/edit   ", "/edit 43", "/edit #43", "/edit 0 x"]
  ) {
    assert.deepEqual(
      parseInput(line),
      { kind: "usage", message: EDIT_LAST_USAGE },
      line,
    );
  }
  // /react without a key, or with more than one: how it is used here.
  for (
    const line of [
      "/react",
      "/react 43",
      "/react #43",
      "/react 0 👍",
      "/react 👍 43",
      "/react 43 👍 🎉",
    ]
  ) {
    assert.deepEqual(
      parseInput(line),
      { kind: "usage", message: REACT_LAST_USAGE },
      line,
    );
  }
  // A key that is no reaction: the server's rule, before anything is sent.
  for (
    const line of [
      "/react 43 a",
      "/react #43 👍👍",
      "/react ok",
      "/react :no:spaces:",
      `/react :${"x".repeat(31)}:`,
    ]
  ) {
    assert.deepEqual(
      parseInput(line),
      { kind: "usage", message: REACTION_KEY_RULE },
      line,
    );
  }
  assert.deepEqual(parseInput("/dance"), {
    kind: "usage",
    message: "unknown command /dance (try /help)",
  });
});

// ---------------------------------------------------------------------------
// URLs, backoff, failures, arguments
// ---------------------------------------------------------------------------

Deno.test("render shows a room made invite-only or open again as the plain-text protocol does", () => {
  const on = { type: "private", id: 7, ts: TS, by: "mod", on: true } as const;
  assert.equal(render(on), " .... mod made the room invite-only.");
  assert.equal(render(on), renderText(on));
  assert.equal(
    render({ ...on, on: false }),
    " .... mod opened the room to everyone.",
  );
  assert.equal(
    render({ ...on, by: "m\x1b[31mod\nx" }),
    " .... mod x made the room invite-only.",
  );
  assert.equal(
    render(on, { colour: false, time: true }),
    "09:05  .... mod made the room invite-only.",
  );
});

Deno.test("inviteLine: the answers to /invite, /invite link, /uninvite and /invites, the link's URL whole", () => {
  const until = Date.UTC(2030, 0, 2, 3, 4, 5);
  const code = "A".repeat(31) + "b";
  assert.equal(
    inviteLine({ type: "invited", nick: "bob" }),
    " .... bob is invited.",
  );
  assert.equal(
    inviteLine({ type: "invited", user: "42" }),
    " .... user 42 is invited.",
  );
  assert.equal(
    inviteLine({
      type: "invite_link",
      link: "Ab3dE5fG",
      code,
      url: `http://h:8080/#den&invite=${code}`,
      uses: 2,
      until,
    }),
    ` .... invite link Ab3dE5fG (2 uses, until 2030-01-02T03:04:05.000Z): http://h:8080/#den&invite=${code}`,
  );
  assert.equal(
    inviteLine({ type: "uninvited", link: "Ab3dE5fG" }),
    " .... invite link Ab3dE5fG is revoked.",
  );
  assert.equal(
    inviteLine({ type: "uninvited", nick: "bob" }),
    " .... bob is no longer invited.",
  );
  assert.equal(
    inviteLine({
      type: "invites",
      private: true,
      people: [{ nick: "bob", by: "mod" }, { by: "mod", via: "Ab3dE5fG" }],
      links: [{ link: "Ab3dE5fG", uses: 1, until, by: "mod" }],
    }),
    " .... this room is invite-only; invited: bob (by mod), someone (link Ab3dE5fG); links: Ab3dE5fG (1 use left, until 2030-01-02T03:04:05.000Z, by mod).",
  );
  // From the network: made printable, and a field that is not what it
  // should be is no crash.
  assert.equal(
    inviteLine({ type: "invited", nick: "b\x1b]0;x\x07ob\n" }),
    " .... bob  is invited.",
  );
  assert.equal(
    inviteLine({ type: "invite_link", until: "soon" } as never),
    " .... the server's answer could not be read",
  );
});

Deno.test("refusalText: why a room would not let this person in, from a 4003's reason", () => {
  assert.equal(
    refusalText("invite_only", false),
    "this room is invite-only: ask a moderator for an invite (/invite NICK) or an invite link",
  );
  assert.equal(
    refusalText("invite_only", true),
    "this room is invite-only, and the invite link admits nobody now (used up, revoked or expired): ask a moderator for a new one",
  );
  assert.equal(refusalText("banned", false), "you are banned from this room");
  assert.equal(refusalText("\x1b[2Jodd", false), "refused (odd)");
});

Deno.test("connectUrl resumes with since, epoch, token and nick", () => {
  const base = parseChatUrl("ws://chat.example:12345/rust-fans?nick=old");
  assert.equal(
    connectUrl(base, "ada", { lastId: 42, epoch: "3f9c1a2b", token: "t-k_n" }),
    "ws://chat.example:12345/rust-fans?nick=ada&since=42&epoch=3f9c1a2b&token=t-k_n",
  );
  assert.equal(
    connectUrl(base, "ada"),
    "ws://chat.example:12345/rust-fans?nick=ada",
  );
  assert.equal(connectUrl(parseChatUrl("ws://h:1/")), "ws://h:1/");
  assert.equal(
    connectUrl(roomUrl(base, "lobby"), "ada"),
    "ws://chat.example:12345/lobby?nick=ada",
  );
  // An invite code goes with a first connection only: not with a resume,
  // nor to another room.
  const invited = parseChatUrl("http://h:8080/#den&invite=c0de");
  assert.equal(
    connectUrl(invited, "ada"),
    "ws://h:8080/den?invite=c0de&nick=ada",
  );
  assert.equal(
    connectUrl(invited, "ada", { lastId: 4, epoch: "e" }),
    "ws://h:8080/den?nick=ada&since=4&epoch=e",
  );
  assert.equal(connectUrl(roomUrl(invited, "lobby")), "ws://h:8080/lobby");
});

Deno.test("parseChatUrl accepts ws, wss, http(s) and bare host:port", () => {
  assert.equal(parseChatUrl("ws://h:1/r").href, "ws://h:1/r");
  assert.equal(parseChatUrl("https://h/r#x").href, "wss://h/r");
  assert.equal(parseChatUrl("http://h:8/").href, "ws://h:8/");
  assert.equal(
    parseChatUrl("localhost:12345/r").href,
    "ws://localhost:12345/r",
  );
  assert.throws(() => parseChatUrl("ftp://h/"), /not a ws/);
});

Deno.test("parseChatUrl takes the room from a page URL's #ROOM", () => {
  assert.equal(
    parseChatUrl("http://h:8080/#Rust-Fans").href,
    "ws://h:8080/rust-fans",
  );
  assert.equal(parseChatUrl("https://h/#den").href, "wss://h/den");
  assert.equal(parseChatUrl("http://h:8080/#no room!").href, "ws://h:8080/");
  assert.equal(parseChatUrl("http://h:8080/#%E0%A4").href, "ws://h:8080/");
  // A path names the room already.
  assert.equal(parseChatUrl("ws://h:1/r#den").href, "ws://h:1/r");
});

Deno.test("parseChatUrl takes an invite link's code (#ROOM&invite=CODE) into the query, for its room only", () => {
  const code = "Zz09_-" + "a".repeat(26);
  assert.equal(
    parseChatUrl(`http://h:8080/#den&invite=${code}`).href,
    `ws://h:8080/den?invite=${code}`,
  );
  assert.equal(
    parseChatUrl(`https://h/#Den&x=1&invite=${code}`).href,
    `wss://h/den?invite=${code}`,
  );
  // The lobby's link names it: `#lobby&invite=…` is the path /lobby.
  assert.equal(
    parseChatUrl(`http://h:8080/#lobby&invite=${code}`).href,
    `ws://h:8080/lobby?invite=${code}`,
  );
  // No room in the fragment, or another in the path: the code is not sent.
  assert.equal(
    parseChatUrl(`http://h:8080/#&invite=${code}`).href,
    "ws://h:8080/",
  );
  assert.equal(
    parseChatUrl(`ws://h:1/r#den&invite=${code}`).href,
    "ws://h:1/r",
  );
  assert.equal(
    parseChatUrl("http://h:8080/#den&invite=").href,
    "ws://h:8080/den",
  );
});

Deno.test("backoffDelay doubles from 0.5 s to a 10 s cap, with jitter", () => {
  const low = (attempt: number) => backoffDelayOf(attempt, 0);
  const high = (attempt: number) => backoffDelayOf(attempt, 0.999999);
  assert.equal(low(0), BACKOFF_MIN_MS * 0.75);
  assert.equal(high(0), BACKOFF_MIN_MS * 1.25);
  assert.equal(low(1), 750);
  for (let attempt = 0; attempt < 40; attempt++) {
    assert.ok(high(attempt) <= BACKOFF_MAX_MS);
    assert.ok(low(attempt + 1) >= low(attempt));
  }
  assert.equal(high(20), BACKOFF_MAX_MS);
});

function backoffDelayOf(attempt: number, random: number): number {
  return backoffDelay(attempt, () => random);
}

Deno.test("explainFailure names HTTP refusals and refused connections", async () => {
  const url = new URL("ws://127.0.0.1:1/");
  const failure = (status: number) =>
    explainFailure(
      `NetworkError: failed to connect to WebSocket: Invalid status code: ${status}`,
      url,
    );
  assert.deepEqual(await failure(400), {
    reason: "400 bad room (a room is 1-32 of a-z, 0-9, - and _)",
    permanent: true,
  });
  assert.equal((await failure(503)).permanent, false);
  // Too many new connections from this address: back off and come back.
  assert.deepEqual(await failure(429), {
    reason: "429 too many new connections from this address",
    permanent: false,
  });
  // A web server (deno-chat's page server, say), not the chat.
  assert.equal((await failure(200)).web, true);
  assert.equal((await failure(404)).web, true);
  const port = await closedPort();
  assert.deepEqual(
    await explainFailure(
      "NetworkError: failed to connect to WebSocket: tcp connect error",
      new URL(`ws://127.0.0.1:${port}/`),
    ),
    { reason: "connection refused", permanent: false },
  );
});

Deno.test("parseClientArgs: URL, --nick, --retries, --help", () => {
  const args = parseClientArgs(["ws://h:1/r", "--nick", "ada", "--retries=2"]);
  assert.equal(args.url.href, "ws://h:1/r");
  assert.equal(args.nick, "ada");
  assert.equal(args.retries, 2);
  assert.equal(args.ids, false);
  assert.equal(parseClientArgs(["--ids"]).ids, true);
  assert.equal(parseClientArgs([]).url.href, "ws://localhost:12345/");
  assert.equal(parseClientArgs(["-h"]).help, true);
  assert.throws(() => parseClientArgs(["--retries", "x"]), /whole number/);
  assert.throws(() => parseClientArgs(["--bogus"]));
});

// ---------------------------------------------------------------------------
// LineEditor
// ---------------------------------------------------------------------------

Deno.test("LineEditor: an incoming line is printed above what is being typed", () => {
  const editor = new LineEditor("lobby> ");
  assert.deepEqual(editor.feed("hel"), []);
  assert.equal(editor.text, "hel");
  assert.equal(
    editor.printAbove("bob: hi"),
    "\r\x1b[2Kbob: hi\r\n\r\x1b[2Klobby> hel",
  );
  assert.deepEqual(editor.feed("lo\r"), [{ type: "line", line: "hello" }]);
  assert.equal(editor.text, "");
  assert.equal(editor.redraw(), "\r\x1b[2Klobby> ");
});

Deno.test("LineEditor: cursor keys, editing, history, split sequences", () => {
  const editor = new LineEditor("> ");
  editor.feed("helo");
  editor.feed("\x1b[D"); // ←
  editor.feed("l");
  assert.equal(editor.text, "hello");
  assert.equal(editor.redraw(), "\r\x1b[2K> hello\x1b[1D");
  editor.feed("\x1b["); // a sequence split across two reads
  editor.feed("H"); // Home
  editor.feed("\x1b[3~"); // Delete
  assert.equal(editor.text, "ello");
  editor.feed("\x05\x7f"); // End, Backspace
  assert.equal(editor.text, "ell");
  editor.feed("\x15"); // Ctrl-U
  assert.equal(editor.text, "");
  editor.feed("a\x1b[31m\x07\tb\x1bOP"); // controls and keys never enter the line
  assert.equal(editor.text, "ab");
  assert.deepEqual(editor.feed("\n"), [{ type: "line", line: "ab" }]);
  editor.feed("\x1b[A"); // ↑: the last line again
  assert.equal(editor.text, "ab");
  editor.feed("\x1b[B");
  assert.equal(editor.text, "");
});

Deno.test("LineEditor: Ctrl-D ends an empty line, Ctrl-C interrupts", () => {
  const editor = new LineEditor();
  editor.feed("ab\x1b[D");
  assert.deepEqual(editor.feed("\x04"), []); // deletes under the cursor
  assert.equal(editor.text, "a");
  editor.feed("\x7f");
  assert.deepEqual(editor.feed("\x04"), [{ type: "eof" }]);
  assert.deepEqual(editor.feed("\x03"), [{ type: "interrupt" }]);
  assert.deepEqual(editor.feed("x\r\ny\r"), [
    { type: "line", line: "x" },
    { type: "line", line: "y" },
  ]);
});

// ---------------------------------------------------------------------------
// The client as a child process
// ---------------------------------------------------------------------------

const decoder = new TextDecoder();
const encoder = new TextEncoder();

/** The client running in a child process, its stdout read line by line. */
class ClientProcess {
  readonly child: Deno.ChildProcess;
  /** Every stdout line so far. */
  readonly lines: string[] = [];
  readonly stderr: Promise<string>;
  #taken = 0;
  #stdoutDone: Promise<void>;
  #stdin: WritableStreamDefaultWriter<Uint8Array>;
  #stdinOpen = true;
  #wake?: () => void;
  #ended = false;

  constructor(args: string[]) {
    this.child = new Deno.Command(Deno.execPath(), {
      args: ["run", "-A", "chat_client.ts", ...args],
      cwd: import.meta.dirname,
      stdin: "piped",
      stdout: "piped",
      stderr: "piped",
    }).spawn();
    this.#stdin = this.child.stdin.getWriter();
    this.stderr = new Response(this.child.stderr).text();
    this.#stdoutDone = this.#readStdout();
  }

  async #readStdout(): Promise<void> {
    let buffer = "";
    for await (const chunk of this.child.stdout) {
      buffer += decoder.decode(chunk, { stream: true });
      const parts = buffer.split("\n");
      buffer = parts.pop()!;
      this.lines.push(...parts);
      this.#wake?.();
    }
    if (buffer) this.lines.push(buffer);
    this.#ended = true;
    this.#wake?.();
  }

  /**
   * The next line matching `pattern` (a string matches exactly); the lines
   * before it are passed over.
   */
  async until(pattern: string | RegExp, ms = WAIT_MS): Promise<string> {
    const matches = (line: string) =>
      typeof pattern === "string" ? line === pattern : pattern.test(line);
    const deadline = Date.now() + ms;
    for (;;) {
      while (this.#taken < this.lines.length) {
        const line = this.lines[this.#taken++];
        if (matches(line)) return line;
      }
      const left = deadline - Date.now();
      if (this.#ended || left <= 0) {
        throw new Error(
          `no line matching ${pattern}; stdout:\n${this.lines.join("\n")}\n` +
            `stderr:\n${this.#ended ? await this.stderr : "(running)"}`,
        );
      }
      await within(
        new Promise<void>((resolve) => this.#wake = resolve),
        String(pattern),
        left,
      ).catch(() => {});
    }
  }

  /** The next line, which must be `line`. */
  async expect(line: string): Promise<void> {
    await this.until(/[^]*/);
    assert.equal(this.lines[this.#taken - 1], line);
  }

  /** Waits for the welcome line (" .... you are NICK in ROOM; here: …"). */
  welcomed(): Promise<string> {
    return this.until(/^ \.\.\.\. you are \S+ in \S+; here: /, 10_000);
  }

  async type(line: string): Promise<void> {
    await this.#stdin.write(encoder.encode(line + "\n"));
  }

  async closeStdin(): Promise<void> {
    if (!this.#stdinOpen) return;
    this.#stdinOpen = false;
    await this.#stdin.close().catch(() => {});
  }

  /**
   * Waits for the exit (killing the client if it does not exit in time) and
   * for its output to end.
   */
  async exit(ms = WAIT_MS): Promise<{ code: number; stderr: string }> {
    let status: Deno.CommandStatus;
    try {
      status = await within(this.child.status, "the client to exit", ms);
    } catch (error) {
      this.child.kill("SIGKILL");
      await this.child.status;
      await this.closeStdin();
      await this.#stdoutDone;
      throw error;
    }
    await this.closeStdin();
    await this.#stdoutDone;
    return { code: status.code, stderr: await this.stderr };
  }

  /** Ends the client however a test left it (for `finally`). */
  async dispose(): Promise<void> {
    try {
      this.child.kill("SIGKILL");
    } catch {
      // already exited
    }
    await this.child.status;
    await this.closeStdin();
    await this.#stdoutDone;
    await this.stderr;
  }
}

/** Runs `fn` with a client on `url`; always ends the client. */
async function withClient(
  args: string[],
  fn: (client: ClientProcess) => Promise<void>,
): Promise<void> {
  const client = new ClientProcess(args);
  try {
    await fn(client);
  } finally {
    await client.dispose();
  }
}

/** A port that nothing listens on (it was free a moment ago). */
async function closedPort(): Promise<number> {
  const listener = Deno.listen({ hostname: "127.0.0.1", port: 0 });
  const port = (listener.addr as Deno.NetAddr).port;
  listener.close();
  await new Promise((resolve) => setTimeout(resolve, 10));
  return port;
}

Deno.test("client: shows the room's history, then who it is (not its own join), then messages from others", async () => {
  await withChat({}, async (chat) => {
    const bob = await jsonClient(chat, "/", { nick: "bob" });
    bob.send(JSON.stringify({ type: "message", text: "earlier" }));
    await bob.event("bob's own message");
    await withClient([chatUrl(chat), "--nick", "ada"], async (ada) => {
      await ada.welcomed();
      // As the README's example and the plain-text protocol: the `you are`
      // line says ada arrived, after what came before.
      assert.deepEqual(ada.lines, [
        " .... bob has joined.",
        "bob: earlier",
        " .... you are ada in lobby; here: bob, ada",
      ]);
      await bob.event("ada's join");
      // Not naming ada: a mention is a line of its own (a test below).
      bob.send(JSON.stringify({ type: "message", text: "hi all" }));
      bob.send(JSON.stringify({ type: "action", text: "waves" }));
      await ada.expect("bob: hi all");
      await ada.expect("* bob waves");
      await ada.closeStdin();
      assert.equal((await ada.exit()).code, 0);
    });
    await bob.close();
  });
});

Deno.test("client: typed lines, /me, /nick, //text and /who reach the room", async () => {
  await withChat({}, async (chat) => {
    const bob = await jsonClient(chat, "/den", { nick: "bob" });
    await withClient([chatUrl(chat, "/den", { nick: "ada" })], async (ada) => {
      await ada.welcomed();
      assert.equal((await bob.event()).type, "join");
      await ada.type("hello there");
      const said = await bob.event("ada's message");
      assert.deepEqual([said.type, said.from, said.text], [
        "message",
        "ada",
        "hello there",
      ]);
      await ada.type("/me waves");
      assert.deepEqual(
        [(await bob.event()).type, "waves"],
        ["action", "waves"],
      );
      await ada.type("/nick eve");
      const renamed = await bob.event("the rename");
      assert.deepEqual([renamed.type, renamed.from, renamed.to], [
        "nick",
        "ada",
        "eve",
      ]);
      await ada.type("//etc");
      assert.equal((await bob.event()).text, "/etc");
      await ada.expect("ada: hello there");
      await ada.expect("* ada waves");
      await ada.expect(" .... ada is now known as eve.");
      await ada.expect("eve: /etc");
      await ada.type("/who");
      await ada.expect(" .... in den: bob, eve");
      await ada.type("/nick");
      await ada.expect(" .... you are eve.");
      await bob.close();
      await ada.expect(" .... bob has left.");
      await ada.type("/who");
      await ada.expect(" .... in den: eve");
      await ada.type("/dance");
      await ada.expect(" .... error: unknown command /dance (try /help)");
      await ada.type("/quit");
      assert.equal((await ada.exit()).code, 0);
    });
  });
});

Deno.test("client: /join moves it to another room, leaving the first", async () => {
  await withChat({}, async (chat) => {
    const bob = await jsonClient(chat, "/", { nick: "bob" });
    const cy = await jsonClient(chat, "/den", { nick: "cy" });
    await withClient([chatUrl(chat), "--nick", "ada"], async (ada) => {
      await ada.welcomed();
      assert.equal((await bob.event()).type, "join");
      await ada.type("/join nowhere!");
      await ada.expect(
        " .... error: usage: /join ROOM (1-32 of a-z, 0-9, - and _)",
      );
      await ada.type("/join den");
      assert.equal(
        await ada.welcomed(),
        " .... you are ada in den; here: cy, ada",
      );
      const left = await bob.event("ada's leave");
      assert.deepEqual([left.type, left.nick], ["leave", "ada"]);
      assert.deepEqual((await cy.event()).nick, "ada");
      await ada.type("/who");
      await ada.expect(" .... in den: cy, ada");
      await ada.type("here now");
      assert.equal((await cy.event()).text, "here now");
      assert.ok(
        !ada.lines.some((line) => line.includes("reconnect")),
        "a /join is not a reconnect",
      );
      await ada.closeStdin();
      assert.equal((await ada.exit()).code, 0);
    });
    await closeAll(bob, cy);
  });
});

Deno.test("client: what the server passes on is printed without controls, on one line", async () => {
  await withChat({}, async (chat) => {
    const bob = await jsonClient(chat, "/", { nick: "bob" });
    await withClient([chatUrl(chat), "--nick", "ada"], async (ada) => {
      await ada.welcomed();
      await bob.event("ada's join");
      // The server drops escape sequences whole and other controls, but
      // keeps newlines and tabs for JSON clients; the client turns those
      // into spaces.
      bob.send(JSON.stringify({
        type: "message",
        text: "a\x1b[2J\x1b]0;pwned\x07b\n .... admin has joined.\tz\x9b1m",
      }));
      await ada.expect("bob: ab  .... admin has joined. z");
      await ada.closeStdin();
      assert.equal((await ada.exit()).code, 0);
    });
    await bob.close();
  });
});

/**
 * A hostile chat server: it welcomes with escape sequences in every field
 * and sends one event full of them, then closes when the client does.
 */
function hostileServer(): Deno.HttpServer<Deno.NetAddr> {
  return Deno.serve(
    { hostname: "127.0.0.1", port: 0, onListen: () => {} },
    (req) => {
      const { socket, response } = Deno.upgradeWebSocket(req, {
        protocol: JSON_PROTOCOL,
      });
      socket.onopen = () => {
        socket.send(JSON.stringify({
          type: "welcome",
          you: "ada",
          room: "lob\x1b[2Jby",
          epoch: "e",
          users: ["ada", "m\x1b]0;title\x07allory"],
          history: [],
          lastId: 1,
          gap: false,
          token: "t",
        }));
        socket.send(JSON.stringify([
          {
            type: "message",
            id: 2,
            ts: 0,
            from: "m\x1b[31mallory",
            text:
              "\x1b]8;;http://evil\x1b\\click\x1b]8;;\x1b\\ \x1b[1;1H\x1b[2Jgone\x1bc\x9b?25l\x07!",
          },
          { type: "error", code: "x", message: "bad\x1bP+q\x1b\\ th\ring" },
        ]));
      };
      return response;
    },
  );
}

Deno.test("client: whole escape sequences from the network are stripped", async () => {
  const server = hostileServer();
  try {
    const url = `ws://127.0.0.1:${server.addr.port}/`;
    await withClient([url], async (ada) => {
      assert.equal(
        await ada.welcomed(),
        " .... you are ada in lobby; here: ada, mallory",
      );
      await ada.expect("mallory: click gone!");
      await ada.expect(" .... error: bad th ing");
      await ada.closeStdin();
      assert.equal((await ada.exit()).code, 0);
      for (const line of ada.lines) {
        // deno-lint-ignore no-control-regex -- looking for controls
        assert.doesNotMatch(line, /[\x00-\x1f\x7f-\x9f]/);
      }
    });
  } finally {
    await server.shutdown();
  }
});

Deno.test("client: /quit closes cleanly, exits 0, and the room sees the leave", async () => {
  await withChat({}, async (chat) => {
    const bob = await jsonClient(chat, "/", { nick: "bob" });
    await withClient([chatUrl(chat), "--nick", "ada"], async (ada) => {
      await ada.welcomed();
      await bob.event("ada's join");
      await ada.type("/quit");
      const { code, stderr } = await ada.exit();
      assert.equal(code, 0);
      assert.equal(stderr, "");
      const left = await bob.event("ada's leave");
      assert.deepEqual([left.type, left.nick], ["leave", "ada"]);
    });
    await bob.close();
  });
});

Deno.test("client: the end of stdin sends what came before it, then exits 0", async () => {
  await withChat({}, async (chat) => {
    const bob = await jsonClient(chat, "/", { nick: "bob" });
    await withClient([chatUrl(chat), "--nick", "ada"], async (ada) => {
      // Typed before the connection is up: sent once it is.
      await ada.type("first words");
      await ada.closeStdin();
      assert.equal((await ada.exit()).code, 0);
      assert.equal((await bob.event()).type, "join");
      const said = await bob.event("ada's message");
      assert.deepEqual([said.from, said.text], ["ada", "first words"]);
      const left = await bob.event("ada's leave");
      assert.deepEqual([left.type, left.nick], ["leave", "ada"]);
    });
    await bob.close();
  });
});

Deno.test("client: a server restart is announced, then it reconnects and says history was missed", async () => {
  let chat: ChatServer | undefined = await startChat(TEST_OPTIONS);
  const wsPort = chat.wsPort;
  try {
    await withClient([chatUrl(chat), "--nick", "ada"], async (ada) => {
      await ada.welcomed();
      await chat!.shutdown();
      chat = undefined;
      await ada.expect(" .... the server is restarting.");
      await ada.until(/^ \.\.\.\. reconnecting in \d+\.\d s$/);
      chat = await startChat({ ...TEST_OPTIONS, wsPort });
      await ada.until(" .... reconnected.", 15_000);
      await ada.expect(
        " .... some history was missed while disconnected (the server restarted or too much happened).",
      );
      await ada.expect(" .... ada has joined.");
      // Still a working chat, nick kept.
      const bob = await jsonClient(chat, "/", { nick: "bob" });
      assert.deepEqual(bob.welcome.users, ["ada", "bob"]);
      await ada.type("back");
      assert.deepEqual((await bob.event()).text, "back");
      await bob.close();
      await ada.closeStdin();
      assert.equal((await ada.exit()).code, 0);
    });
  } finally {
    await chat?.shutdown();
  }
});

Deno.test("client: after a dropped connection it resumes: nothing lost, nothing twice", async () => {
  // The server drops a peer that does not answer pings for idleTimeout
  // seconds; stopping the client's process (SIGSTOP) makes it that peer.
  // The client presents a session: sessionGrace 0 announces its drop at once.
  await withChat({ idleTimeout: 1, sessionGrace: 0 }, async (chat) => {
    const bob = await jsonClient(chat, "/", { nick: "bob" });
    const say = async (text: string) => {
      bob.send(JSON.stringify({ type: "message", text }));
      const echo = await bob.nextMatching(/"type":"message"/);
      assert.match(echo, new RegExp(text));
    };
    await withClient([chatUrl(chat), "--nick", "ada"], async (ada) => {
      await ada.welcomed();
      await bob.nextMatching(/"type":"join"/);
      await say("one");
      await ada.until("bob: one");
      Deno.kill(ada.child.pid, "SIGSTOP");
      try {
        await say("two"); // sent while the client is stopped
        const left = await within(
          bob.nextMatching(/"type":"leave"/),
          "the server to drop the stopped client",
          10_000,
        );
        assert.match(left, /"nick":"ada"/);
        await say("three"); // sent while the client is disconnected
      } finally {
        Deno.kill(ada.child.pid, "SIGCONT");
      }
      await ada.until(" .... reconnected.", 15_000);
      await ada.until("bob: three");
      await say("four");
      await ada.until("bob: four");
      const said = ada.lines.filter((line) => line.startsWith("bob: "));
      assert.deepEqual(said, [
        "bob: one",
        "bob: two",
        "bob: three",
        "bob: four",
      ]);
      assert.ok(
        !ada.lines.some((line) => line.includes("history was missed")),
        "no gap",
      );
      await ada.closeStdin();
      assert.equal((await ada.exit()).code, 0);
    });
    await bob.close();
  });
});

Deno.test("client: a refused connection exits 1 after its retries, saying why", async () => {
  const port = await closedPort();
  await withClient(
    [`ws://127.0.0.1:${port}/`, "--retries", "1"],
    async (ada) => {
      const { code, stderr } = await ada.exit(10_000);
      assert.equal(code, 1);
      assert.equal(
        stderr,
        `chat_client: cannot connect to ws://127.0.0.1:${port}/: connection refused\n`,
      );
      assert.equal(ada.lines[0], " .... cannot connect: connection refused");
      assert.match(ada.lines[1], /^ \.\.\.\. retrying in 0\.\d s$/);
    },
  );
});

Deno.test("client: a bad room exits 1 at once with the server's 400", async () => {
  await withChat({}, async (chat) => {
    await withClient([chatUrl(chat, "/Not_A_Room!")], async (ada) => {
      const { code, stderr } = await ada.exit();
      assert.equal(code, 1);
      assert.match(stderr, /cannot connect to .*: 400 bad room/);
      assert.deepEqual(ada.lines, []);
    });
  });
});

Deno.test("client: --help prints the usage and exits 0", async () => {
  await withClient(["--help"], async (client) => {
    const { code } = await client.exit();
    assert.equal(code, 0);
    assert.match(client.lines.join("\n"), /Usage: deno task client \[URL\]/);
  });
});

// ---------------------------------------------------------------------------
// Direct messages
// ---------------------------------------------------------------------------

Deno.test("client: /msg sends a DM that only its two parties get", async () => {
  await withChat({}, async (chat) => {
    const bob = await jsonClient(chat, "/", { nick: "bob" });
    const cy = await jsonClient(chat, "/", { nick: "cy" });
    await withClient([chatUrl(chat), "--nick", "ada"], async (ada) => {
      await ada.welcomed();
      assert.equal((await bob.event()).nick, "cy");
      assert.equal((await bob.event()).nick, "ada");
      assert.equal((await cy.event()).nick, "ada");
      await ada.type("/msg bob psst, a secret");
      const dm = await bob.event("the DM");
      assert.deepEqual([dm.type, dm.from, dm.to, dm.text], [
        "dm",
        "ada",
        "bob",
        "psst, a secret",
      ]);
      assert.equal(typeof dm.id, "number");
      await ada.expect("[dm] ada -> bob: psst, a secret");
      // cy's next event is the public message after it: the DM skipped cy.
      await ada.type("public");
      const next = await cy.event("the public message");
      assert.deepEqual([next.type, next.text], ["message", "public"]);
      await ada.expect("ada: public");
      await ada.type("/quit");
      assert.equal((await ada.exit()).code, 0);
    });
    await bob.close();
    await cy.close();
  });
});

Deno.test("client: with --ids it shows message ids; /reply ID TEXT answers one, and the reply is shown with its quote", async () => {
  await withChat({}, async (chat) => {
    const bob = await jsonClient(chat, "/", { nick: "bob" });
    await withClient([chatUrl(chat), "--nick", "ada", "--ids"], async (ada) => {
      await ada.welcomed();
      assert.equal((await bob.event("ada's join")).type, "join");
      bob.send(JSON.stringify({ type: "message", text: "lunch at noon?" }));
      const asked = await bob.event("bob's message");
      await ada.expect(`#${asked.id} bob: lunch at noon?`);
      await ada.type(`/reply ${asked.id} yes, see you`);
      const answer = await bob.event("ada's reply");
      assert.deepEqual(answer.replyTo, {
        id: asked.id,
        from: "bob",
        text: "lunch at noon?",
      });
      assert.equal(answer.text, "yes, see you");
      await ada.expect(
        `#${answer.id} ada: ↪ bob: "lunch at noon?" yes, see you`,
      );
      // As shown (#ID) and as an action; others' replies are shown too.
      bob.send(
        JSON.stringify({ type: "action", text: "nods", replyTo: answer.id }),
      );
      const nod = await bob.event("bob's reply");
      await ada.expect(`#${nod.id} * bob ↪ ada: "yes, see you" nods`);
      await ada.type(`/reply #${nod.id} good`);
      const good = await bob.event("ada's second reply");
      assert.deepEqual([good.text, good.replyTo.id], ["good", nod.id]);
      await ada.expect(`#${good.id} ada: ↪ bob: "nods" good`);
      // An id the room does not keep: the server's refusal, in its words.
      await ada.type("/reply 999 anyone?");
      await ada.expect(
        " .... error: no message 999 to reply to in this room's history",
      );
      await ada.type("/reply 999");
      await ada.expect(
        " .... error: usage: /reply ID TEXT (ID: the message answered)",
      );
      await ada.type("/quit");
      assert.equal((await ada.exit()).code, 0);
    });
    await bob.close();
  });
});

Deno.test("client: /edit TEXT edits its last message, /edit ID TEXT the one named; edits are shown with the message's id; refusals in the server's words", async () => {
  await withChat({}, async (chat) => {
    const bob = await jsonClient(chat, "/", { nick: "bob" });
    await withClient([chatUrl(chat), "--nick", "ada", "--ids"], async (ada) => {
      await ada.welcomed();
      assert.equal((await bob.event("ada's join")).type, "join");
      // Nothing of hers yet: said here, nothing sent.
      await ada.type("/edit too early");
      await ada.expect(
        " .... error: no message of yours here to edit yet (/edit ID TEXT edits one by its id)",
      );
      await ada.type("lunch at noon?");
      const lunch = await bob.event("ada's message");
      await ada.expect(`#${lunch.id} ada: lunch at noon?`);
      await ada.type("/me waves");
      const wave = await bob.event("ada's action");
      await ada.expect(`#${wave.id} * ada waves`);
      // No id: the last of hers the room echoed (an action counts).
      await ada.type("/edit waves back");
      const waved = await bob.event("ada's edit of her action");
      assert.deepEqual(
        [waved.type, waved.from, waved.target, waved.text],
        ["edit", "ada", wave.id, "waves back"],
      );
      await ada.expect(`* ada edited #${wave.id}: waves back`);
      // With the id, as typed and as shown.
      await ada.type(`/edit ${lunch.id} lunch at one?`);
      const one = await bob.event("ada's edit by id");
      assert.deepEqual([one.target, one.text], [lunch.id, "lunch at one?"]);
      await ada.expect(`* ada edited #${lunch.id}: lunch at one?`);
      await ada.type(`/edit #${lunch.id} lunch at two?`);
      assert.equal(
        (await bob.event("ada's edit by #id")).text,
        "lunch at two?",
      );
      await ada.expect(`* ada edited #${lunch.id}: lunch at two?`);
      // Others' edits are shown live too.
      bob.send(JSON.stringify({ type: "message", text: "ok" }));
      const ok = await bob.event("bob's message");
      await ada.expect(`#${ok.id} bob: ok`);
      bob.send(JSON.stringify({ type: "edit", id: ok.id, text: "ok!" }));
      await bob.event("bob's edit");
      await ada.expect(`* bob edited #${ok.id}: ok!`);
      // Not hers: the server's refusal. Still her last one without an id.
      await ada.type(`/edit ${ok.id} mine now`);
      await ada.expect(" .... error: only its author may edit a message");
      await ada.type("/edit waves twice");
      assert.equal((await bob.event("ada's second edit")).target, wave.id);
      await ada.expect(`* ada edited #${wave.id}: waves twice`);
      await ada.type("/edit 5");
      await ada.expect(` .... error: ${EDIT_LAST_USAGE}`);
      // A rename: what she sent before is no longer hers to edit.
      await ada.type("/nick ada2");
      await ada.expect(" .... ada is now known as ada2.");
      await ada.type("/edit after the rename");
      await ada.expect(
        " .... error: no message of yours here to edit yet (/edit ID TEXT edits one by its id)",
      );
      await ada.type("/quit");
      assert.equal((await ada.exit()).code, 0);
    });
    await bob.close();
  });
});

/** Reactions are spent from the message rate: lifted for these tests. */
const FAST = { rate: 1000, burst: 1000 };

Deno.test("client: /react ID EMOJI and /react EMOJI (the last message shown) send the react frame; notices are shown live with the count; a bad key is explained and not sent", async () => {
  await withChat(FAST, async (chat) => {
    const bob = await jsonClient(chat, "/", { nick: "bob" });
    await withClient([chatUrl(chat), "--nick", "ada"], async (ada) => {
      await ada.welcomed();
      assert.equal((await bob.event("ada's join")).type, "join");
      // No message shown yet: said here, nothing sent.
      await ada.type("/react 👍");
      await ada.expect(
        " .... error: no message shown here to react to (/react ID EMOJI reacts to one by its id)",
      );
      bob.send(JSON.stringify({ type: "message", text: "ship it?" }));
      const ship = await bob.event("bob's message");
      await ada.expect("bob: ship it?");
      await ada.type("/me waits");
      const waits = await bob.event("ada's action");
      await ada.expect("* ada waits");
      // By its id, as shown (#ID): the react frame, a toggle.
      await ada.type(`/react #${ship.id} 👍`);
      const notice = {
        type: "react",
        target: ship.id,
        key: "👍",
        from: "ada",
        on: true,
        count: 1,
      };
      assert.deepEqual(await bob.event("ada's reaction"), notice);
      await ada.expect(`* ada reacted 👍 to #${ship.id} (👍 1)`);
      bob.send(JSON.stringify({ type: "react", id: ship.id, key: "👍" }));
      await bob.event("bob's reaction");
      await ada.expect(`* bob reacted 👍 to #${ship.id} (👍 2)`);
      // Bad keys and a missing one: explained here, nothing sent.
      await ada.type(`/react ${ship.id} a`);
      await ada.expect(` .... error: ${REACTION_KEY_RULE}`);
      await ada.type("/react ok");
      await ada.expect(` .... error: ${REACTION_KEY_RULE}`);
      await ada.type(`/react ${ship.id}`);
      await ada.expect(` .... error: ${REACT_LAST_USAGE}`);
      // No id: the last message shown, hers too (her action), by short name.
      await ada.type("/react :hourglass:");
      assert.deepEqual(await bob.event("ada's reaction to the last one"), {
        ...notice,
        target: waits.id,
        key: ":hourglass:",
      });
      await ada.expect(
        `* ada reacted :hourglass: to #${waits.id} (:hourglass: 1)`,
      );
      // Again: taken back.
      await ada.type("/react :hourglass:");
      assert.deepEqual(await bob.event("ada's reaction taken back"), {
        ...notice,
        target: waits.id,
        key: ":hourglass:",
        on: false,
        count: 0,
      });
      await ada.expect(
        `* ada took back :hourglass: from #${waits.id} (:hourglass: 0)`,
      );
      bob.send(JSON.stringify({ type: "react", id: ship.id, key: "👍" }));
      await bob.event("bob's reaction taken back");
      await ada.expect(`* bob took back 👍 from #${ship.id} (👍 1)`);
      // Refused by the server: in its words.
      await ada.type("/react 999 👍");
      await ada.expect(" .... error: no message 999 in this room's history");
      assert.equal(
        await metric(chat, 'chat_messages_refused_total{reason="bad_request"}'),
        0,
        "no bad key reached the server",
      );
      // The last one shown deleted: nothing to react to without an id.
      await ada.type(`/delete ${waits.id}`);
      await bob.event("the delete");
      await ada.expect(` .... ada deleted message ${waits.id}.`);
      await ada.type("/react 👍");
      await ada.expect(
        " .... error: no message shown here to react to (/react ID EMOJI reacts to one by its id)",
      );
      await ada.type("/help");
      await ada.expect(` .... ${HELP_TEXT}; ${CLIENT_HELP_TEXT}`);
      await ada.type("/quit");
      assert.equal((await ada.exit()).code, 0);
    });
    await bob.close();
  });
});

Deno.test("client: the welcome's history shows each message's reactions under it, with who, the reader as you", async () => {
  await withChat(FAST, async (chat) => {
    const bob = await jsonClient(chat, "/", { nick: "bob" });
    const cy = await jsonClient(chat, "/", { nick: "cy" });
    assert.equal((await bob.event("cy's join")).type, "join");
    bob.send(JSON.stringify({ type: "message", text: "ship it?" }));
    const ship = await bob.event("bob's message");
    bob.send(JSON.stringify({ type: "message", text: "no reactions" }));
    await bob.event("bob's second message");
    for (const [peer, key] of [[bob, "👍"], [cy, "👍"], [cy, "🎉"]] as const) {
      peer.send(JSON.stringify({ type: "react", id: ship.id, key }));
      assert.equal((await bob.event(`a ${key}`)).type, "react");
    }
    await withClient([chatUrl(chat), "--nick", "ada"], async (ada) => {
      await ada.welcomed();
      assert.deepEqual(ada.lines, [
        " .... bob has joined.",
        " .... cy has joined.",
        "bob: ship it?",
        "   👍 2 (bob, cy) 🎉 1 (cy)",
        "bob: no reactions",
        " .... you are ada in lobby; here: bob, cy, ada",
      ]);
      await ada.type(`/react ${ship.id} 🎉`);
      await ada.expect(`* ada reacted 🎉 to #${ship.id} (🎉 2)`);
      // Back in the room: a new welcome, ada's reaction hers.
      await ada.type("/join den");
      await ada.welcomed();
      await ada.type("/join lobby");
      await ada.until("bob: ship it?", 10_000);
      await ada.expect("   👍 2 (bob, cy) 🎉 2 (you, cy)");
      await ada.expect("bob: no reactions");
      // Under another nick now: which of them is ada is not known.
      await ada.type("/nick eve");
      await ada.until(" .... ada is now known as eve.");
      await ada.type("/join den");
      await ada.welcomed();
      await ada.type("/join lobby");
      await ada.until("bob: ship it?", 10_000);
      await ada.expect("   👍 2 (bob, cy) 🎉 2 (cy, ada; one is you)");
      await ada.closeStdin();
      assert.equal((await ada.exit()).code, 0);
    });
    await closeAll(bob, cy);
  });
});

Deno.test("client: after a dropped connection, the resume shows the reactions that changed while away, one short line each", async () => {
  // As in the resume test above: SIGSTOP makes the client a peer that does
  // not answer pings, which the server drops after idleTimeout.
  await withChat(
    { ...FAST, idleTimeout: 1, sessionGrace: 0 },
    async (chat) => {
      const bob = await jsonClient(chat, "/", { nick: "bob" });
      const said: number[] = [];
      await withClient([chatUrl(chat), "--nick", "ada"], async (ada) => {
        await ada.welcomed();
        await bob.event("ada's join");
        for (const text of ["a", "b", "c"]) {
          bob.send(JSON.stringify({ type: "message", text }));
          said.push((await bob.event(`message ${text}`)).id);
          await ada.until(`bob: ${text}`);
        }
        const [a, b, c] = said;
        const react = async (id: number, key: string) => {
          bob.send(JSON.stringify({ type: "react", id, key }));
          await bob.event(`bob's ${key}`);
        };
        await ada.type(`/react ${a} 👍`);
        await bob.event("ada's 👍");
        await ada.expect(`* ada reacted 👍 to #${a} (👍 1)`);
        await react(b, "🚀");
        await ada.expect(`* bob reacted 🚀 to #${b} (🚀 1)`);
        await react(c, "🎉");
        await ada.expect(`* bob reacted 🎉 to #${c} (🎉 1)`);
        Deno.kill(ada.child.pid, "SIGSTOP");
        try {
          const left = await within(
            bob.event("the server to drop the stopped client"),
            "ada's leave",
            10_000,
          );
          assert.deepEqual([left.type, left.nick], ["leave", "ada"]);
          // While she is away: one added, one taken back, c's left as is.
          await react(a, "👍");
          await react(b, "🚀");
        } finally {
          Deno.kill(ada.child.pid, "SIGCONT");
        }
        await ada.until(" .... reconnected.", 15_000);
        await ada.expect(` .... #${a} now: 👍 2 (you +1)`);
        await ada.expect(` .... #${b} now: no reactions`);
        await ada.expect(" .... ada has left.");
        // Live again.
        await react(c, "👀");
        await ada.until(`* bob reacted 👀 to #${c} (👀 1)`);
        assert.ok(
          !ada.lines.some((line) => line.includes(`#${c} now`)),
          "c's reactions did not change: no line",
        );
        assert.ok(
          !ada.lines.some((line) => line.includes("history was missed")),
          "no gap",
        );
        await ada.closeStdin();
        assert.equal((await ada.exit()).code, 0);
      });
      await bob.close();
    },
  );
});

/**
 * A chat server that welcomes with one message and answers a history
 * request with two older ones, one with reactions (a store without an
 * archive pages back no further than the welcome's history); it passes on
 * every frame the client sends to `received`.
 */
function pagingServer(received: unknown[]): Deno.HttpServer<Deno.NetAddr> {
  const voters = ["a1", "a2", "ada", "a3", "a4", "a5", "a6"];
  return Deno.serve(
    { hostname: "127.0.0.1", port: 0, onListen: () => {} },
    (req) => {
      const { socket, response } = Deno.upgradeWebSocket(req, {
        protocol: JSON_PROTOCOL,
      });
      socket.onopen = () => {
        socket.send(JSON.stringify({
          type: "welcome",
          you: "ada",
          room: "lobby",
          epoch: "e",
          users: ["ada"],
          history: [{
            type: "message",
            id: 5,
            ts: 0,
            from: "bob",
            text: "now",
          }],
          lastId: 5,
          gap: false,
          token: "t",
        }));
      };
      socket.onmessage = (event) => {
        const frame = JSON.parse(event.data);
        received.push(frame);
        if (frame.type !== "history") return;
        socket.send(JSON.stringify({
          type: "history",
          events: [
            {
              type: "message",
              id: 3,
              ts: 0,
              from: "cy",
              text: "vote",
              reactions: [
                { key: "👍", count: 7, nicks: voters, me: true },
                { key: "👎", count: 1, nicks: ["bob"], me: false },
              ],
            },
            { type: "message", id: 4, ts: 0, from: "cy", text: "plain" },
          ],
          more: false,
        }));
      };
      return response;
    },
  );
}

Deno.test("client: a history page's reactions are shown under their messages; /react EMOJI still goes to the latest message", async () => {
  const received: unknown[] = [];
  const server = pagingServer(received);
  try {
    const url = `ws://127.0.0.1:${server.addr.port}/`;
    await withClient([url], async (ada) => {
      await ada.welcomed();
      await ada.type("/more");
      await ada.expect(" .... earlier:");
      await ada.expect("cy: vote");
      await ada.expect("   👍 7 (you, a1, a2, a3, a4 and 2 more) 👎 1 (bob)");
      await ada.expect("cy: plain");
      await ada.expect(" .... this is the beginning of lobby.");
      await ada.type("/react 🎉");
      await ada.closeStdin();
      assert.equal((await ada.exit()).code, 0);
      assert.deepEqual(received, [
        { type: "history", before: 5, limit: 50 },
        { type: "react", id: 5, key: "🎉" },
      ]);
    });
  } finally {
    await server.shutdown();
  }
});

Deno.test("client: a DM to it is shown as [dm] FROM -> TO: TEXT", async () => {
  await withChat({}, async (chat) => {
    const bob = await jsonClient(chat, "/", { nick: "bob" });
    await withClient([chatUrl(chat), "--nick", "ada"], async (ada) => {
      await ada.welcomed();
      assert.equal((await bob.event()).type, "join");
      bob.send(
        JSON.stringify({ type: "dm", to: "ada", text: "hi\x1b[31m you" }),
      );
      // The server strips the whole escape sequence.
      await ada.expect("[dm] bob -> ada: hi you");
      await ada.closeStdin();
      assert.equal((await ada.exit()).code, 0);
    });
    await bob.close();
  });
});

Deno.test("client: a message over the server's --max-message-chars is refused before it is sent, in the server's words; at the limit it goes", async () => {
  await withChat({ maxMessageChars: 10 }, async (chat) => {
    const bob = await jsonClient(chat, "/", { nick: "bob" });
    await withClient([chatUrl(chat), "--nick", "ada"], async (ada) => {
      await ada.welcomed();
      assert.equal((await bob.event()).type, "join");
      await ada.type("m".repeat(11));
      await ada.until(" .... error: message too long (max 10 characters)");
      await ada.type(`/me ${"w".repeat(11)}`);
      await ada.expect(" .... error: message too long (max 10 characters)");
      await ada.type(`/msg bob ${"d".repeat(11)}`);
      await ada.expect(" .... error: message too long (max 10 characters)");
      await ada.type("m".repeat(10));
      // Nothing of the refused ones reached the server: the next is this.
      const next = await bob.event("ada's message at the limit");
      assert.deepEqual([next.type, next.text], ["message", "m".repeat(10)]);
      assert.equal(
        await metric(chat, 'chat_messages_refused_total{reason="too_long"}'),
        0,
      );
      await ada.closeStdin();
      assert.equal((await ada.exit()).code, 0);
    });
    await bob.close();
  });
});

Deno.test("client: /msg to a nick not in the room shows the server's error", async () => {
  await withChat({}, async (chat) => {
    await withClient([chatUrl(chat), "--nick", "ada"], async (ada) => {
      await ada.welcomed();
      await ada.type("/msg nobody hello?");
      await ada.until(" .... error: nobody here is called nobody");
      await ada.type("/msg nobody");
      await ada.expect(" .... error: usage: /msg NICK TEXT");
      await ada.closeStdin();
      assert.equal((await ada.exit()).code, 0);
    });
  });
});

Deno.test("client: /more and /history N print older events, then the beginning", async () => {
  const dir = await Deno.makeTempDir({ prefix: "chat-client-" });
  try {
    await withChat({ data: `${dir}/chat.db`, historySize: 3 }, async (chat) => {
      const bob = await jsonClient(chat, "/", { nick: "bob" });
      for (let i = 1; i <= 5; i++) {
        bob.send(JSON.stringify({ type: "message", text: `m${i}` }));
        await bob.event(`m${i}`);
      }
      await withClient([chatUrl(chat), "--nick", "ada"], async (ada) => {
        await ada.welcomed();
        // The window of 3: two messages and ada's own join, which the
        // `you are` line says.
        assert.deepEqual(ada.lines, [
          "bob: m4",
          "bob: m5",
          " .... you are ada in lobby; here: bob, ada",
        ]);
        await ada.type("/more 2");
        await ada.expect(" .... earlier:");
        await ada.expect("bob: m2");
        await ada.expect("bob: m3");
        await ada.type("/history");
        await ada.expect(" .... earlier:");
        await ada.expect(" .... bob has joined.");
        await ada.expect("bob: m1");
        await ada.expect(" .... this is the beginning of lobby.");
        await ada.closeStdin();
        assert.equal((await ada.exit()).code, 0);
      });
      await bob.close();
    });
  } finally {
    await Deno.remove(dir, { recursive: true });
  }
});

Deno.test("client: /search prints the results with ids and times, newest first, then what was searched; Older: pages back; from: narrows", async () => {
  const dir = await Deno.makeTempDir({ prefix: "chat-client-" });
  try {
    await withChat({
      data: `${dir}/chat.db`,
      historySize: 3,
      rate: 1000,
      burst: 1000,
    }, async (chat) => {
      const bob = await jsonClient(chat, "/", { nick: "bob" });
      const said = async (text: string) => {
        bob.send(JSON.stringify({ type: "message", text }));
        const event = await bob.event(text);
        assert.equal(event.text, text);
        return event as { id: number; ts: number };
      };
      const cafe = await said("Lunch at the café?");
      const teas: { id: number; ts: number }[] = [];
      for (let i = 1; i <= 21; i++) teas.push(await said(`tea ${i}`));
      await said("filler");
      const line = (event: { id: number; ts: number }, text: string) =>
        ` .... #${event.id} ${resultTime(event.ts)} bob: ${text}`;
      await withClient([chatUrl(chat), "--nick", "ada"], async (ada) => {
        await ada.welcomed();
        // Out of the live window of 3, found in the file's index.
        await ada.type("/search CAFE");
        await ada.expect(line(cafe, "Lunch at the café?"));
        await ada.expect(
          ' .... 1 found for "CAFE", newest first, in everything this room keeps.',
        );
        // 21 teas: a page of 20 (the default), newest first, then the rest.
        await ada.type("/search tea");
        for (let i = 21; i >= 2; i--) {
          await ada.expect(line(teas[i - 1], `tea ${i}`));
        }
        const next = teas[1].id;
        await ada.expect(
          ` .... 20 found for "tea", newest first, in everything this room keeps. Older: /search tea before:${next}`,
        );
        await ada.type(`/search tea before:${next}`);
        await ada.expect(line(teas[0], "tea 1"));
        await ada.expect(
          ` .... 1 found for "tea before:${next}", newest first, in everything this room keeps.`,
        );
        await ada.type("/search tea from:ada");
        await ada.expect(
          ' .... nothing found for "tea from:ada" in everything this room keeps.',
        );
        await ada.closeStdin();
        assert.equal((await ada.exit()).code, 0);
      });
      await bob.close();
    });
  } finally {
    await Deno.remove(dir, { recursive: true });
  }
});

Deno.test("client: /search in memory says it searched the recent messages only; the server's refusal is shown", async () => {
  await withChat({ historySize: 5 }, async (chat) => {
    const bob = await jsonClient(chat, "/", { nick: "bob" });
    bob.send(JSON.stringify({ type: "message", text: "café au lait" }));
    const cafe = await bob.event("the café") as { id: number; ts: number };
    await withClient([chatUrl(chat), "--nick", "ada"], async (ada) => {
      await ada.welcomed();
      await ada.type("/search cafe");
      await ada.expect(
        ` .... #${cafe.id} ${resultTime(cafe.ts)} bob: café au lait`,
      );
      await ada.expect(
        ' .... 1 found for "cafe", newest first, in the recent messages this server keeps (older ones are not searched).',
      );
      // Too many words: the server's bad_request, in its words.
      await ada.type(`/search ${"w ".repeat(11)}`);
      await ada.until(/^ \.\.\.\. error: .*10 words/);
      await ada.closeStdin();
      assert.equal((await ada.exit()).code, 0);
    });
    await bob.close();
  });
});

Deno.test("client: its own complaints read as the server's errors to a plain-text client do", async () => {
  await withChat({}, async (chat) => {
    const bea = await textClient(chat, "/", { nick: "bea" });
    await withClient([chatUrl(chat), "--nick", "ada"], async (ada) => {
      await ada.welcomed();
      // The first is the server's own error; the others the client finds
      // itself, without sending anything.
      for (
        const typed of ["/msg cy hi", "/nick a b", "/me", "/msg cy", "/dance"]
      ) {
        bea.send(typed);
        const server = await bea.nextMatching(/^ \.\.\.\. error: /);
        await ada.type(typed);
        await ada.expect(server);
      }
      await ada.type("/join no!");
      await ada.until(/^ \.\.\.\. error: usage: \/join ROOM /);
      await ada.closeStdin();
      assert.equal((await ada.exit()).code, 0);
    });
    await bea.close();
  });
});

// ---------------------------------------------------------------------------
// The page's URL
// ---------------------------------------------------------------------------

Deno.test("client: given the page's URL, it finds the chat port in the page and connects there", async () => {
  await withChat({}, async (chat) => {
    const bob = await jsonClient(chat, "/den", { nick: "bob" });
    const page = `http://127.0.0.1:${chat.port}/`;
    await withClient([`${page}#den`, "--nick", "ada"], async (ada) => {
      await ada.expect(
        ` .... ${page} is the web page; connecting to its chat at ws://127.0.0.1:${chat.wsPort}/den instead.`,
      );
      assert.equal(
        await ada.welcomed(),
        " .... you are ada in den; here: bob, ada",
      );
      assert.equal((await bob.event("ada's join")).nick, "ada");
      await ada.type("found you");
      assert.equal((await bob.event("ada's message")).text, "found you");
      await ada.closeStdin();
      const { code, stderr } = await ada.exit();
      assert.equal(code, 0);
      assert.equal(stderr, "");
    });
    await bob.close();
  });
});

Deno.test("client: a web page that names no chat port says to give the chat's port", async () => {
  const server = Deno.serve(
    { hostname: "127.0.0.1", port: 0, onListen: () => {} },
    () => new Response("<!doctype html><title>not a chat</title>"),
  );
  try {
    const url = `http://127.0.0.1:${server.addr.port}/`;
    await withClient([url], async (ada) => {
      const { code, stderr } = await ada.exit();
      assert.equal(code, 1);
      assert.equal(
        stderr,
        `chat_client: cannot connect to ws://127.0.0.1:${server.addr.port}/: 200 a web page, not the chat: give the chat's port (12345 by default)\n`,
      );
    });
  } finally {
    await server.shutdown();
  }
});

Deno.test("client: --token signs in; a moderator's typed commands go as frames and their events are shown", async () => {
  await withChat({ authSecret: SECRET }, async (chat) => {
    const bob = await jsonClient(chat, "/", { nick: "bob" });
    const token = await hs256({ sub: "1", name: "mod", roles: ["op"] });
    await withClient([chatUrl(chat), "--token", token], async (mod) => {
      assert.match(await mod.welcomed(), /^ \.\.\.\. you are mod in lobby; /);
      await mod.type("/topic be kind");
      await mod.until(" .... mod set the topic: be kind");
      await mod.type("/mute bob 5");
      await mod.until(" .... bob is muted for 5 min.");
      await mod.type("/kick bob spam");
      await mod.until(" .... bob was kicked by mod (spam).");
      const closed = await within(bob.closed, "bob's close");
      assert.deepEqual([closed.code, closed.reason], [
        CloseCode.Kicked,
        "kicked by mod: spam",
      ]);
      await mod.type("/quit");
      assert.equal((await mod.exit()).code, 0);
    });
  });
});

Deno.test("client: a 429 (connecting too fast) is backed off and retried, then it gets in", async () => {
  // One new connection a second from an address, none saved up.
  await withChat({ connectRate: 1, connectBurst: 1 }, async (chat) => {
    // Another connection from this address takes this second's token.
    const first = await textClient(chat, "/", { nick: "first" });
    await withClient([chatUrl(chat), "--nick", "ada"], async (ada) => {
      await ada.until(/^ \.\.\.\. cannot connect: 429 /);
      assert.match(await ada.welcomed(), /^ \.\.\.\. you are ada in lobby; /);
      await ada.closeStdin();
      assert.equal((await ada.exit()).code, 0);
    });
    await first.close();
  });
});

Deno.test("client: a moderator's /private, /invite link, /invites and /uninvite are answered in system lines; /help lists them", async () => {
  await withChat({ authSecret: SECRET }, async (chat) => {
    const bob = await jsonClient(chat, "/den", { nick: "bob" });
    const token = await hs256({ sub: "1", name: "mod", roles: ["op"] });
    await withClient([chatUrl(chat, "/den"), "--token", token], async (mod) => {
      assert.match(await mod.welcomed(), /^ \.\.\.\. you are mod in den; /);
      await mod.type("/private on");
      await mod.expect(" .... mod made the room invite-only.");
      for (;;) {
        const event = await bob.event("the private event");
        if (event.type !== "private") continue;
        assert.deepEqual([event.by, event.on], ["mod", true]);
        break;
      }
      await mod.type("/invite link 2");
      const line = await mod.until(/invite link/);
      const page = `http://127.0.0.1:${chat.port}/`;
      const match = new RegExp(
        `^ \\.\\.\\.\\. invite link ([\\w-]{8}) \\(2 uses, until (\\S+)\\): ${page}#den&invite=([\\w-]{32})$`,
      ).exec(line);
      assert.ok(match, line);
      const [, link, until] = match;
      await mod.type("/invites");
      await mod.expect(
        ` .... this room is invite-only; invited: nobody; links: ${link} (2 uses left, until ${until}, by mod).`,
      );
      await mod.type(`/uninvite link ${link}`);
      await mod.expect(` .... invite link ${link} is revoked.`);
      await mod.type("/uninvite bob");
      await mod.expect(" .... error: bob is not invited here");
      await mod.type("/help");
      await mod.until(` .... ${HELP_TEXT}; ${CLIENT_HELP_TEXT}`);
      await mod.expect(` .... ${MODERATION_HELP}`);
      await mod.type("/quit");
      assert.equal((await mod.exit()).code, 0);
    });
    await bob.close();
  });
});

Deno.test("client: given an invite link it comes into the private room; a room that will not let it in says why (exit 1), and a refused /join goes back", async () => {
  await withChat({ authSecret: SECRET }, async (chat) => {
    const mod = await signedClient(chat, {
      token: await hs256({ sub: "1", name: "mod", roles: ["op"] }),
    }, "/den");
    /** The moderator's next frame of `type`, others passed over. */
    const next = async (type: string) => {
      for (;;) {
        const event = await mod.event(`a ${type} frame`);
        if (event.type === type) return event;
      }
    };
    mod.send(JSON.stringify({ type: "private", on: true }));
    await next("private");
    // A stranger: refused, in so many words, and not retried.
    await withClient([chatUrl(chat, "/den"), "--nick", "eve"], async (eve) => {
      const { code, stderr } = await eve.exit();
      assert.equal(code, 1);
      assert.equal(
        stderr,
        `chat_client: cannot connect to ws://127.0.0.1:${chat.wsPort}/den: this room is invite-only: ask a moderator for an invite (/invite NICK) or an invite link\n`,
      );
    });
    mod.send(JSON.stringify({ type: "invite", link: { uses: 2 } }));
    const link = await next("invite_link");
    const page = `http://127.0.0.1:${chat.port}/`;
    assert.equal(link.url, `${page}#den&invite=${link.code}`);
    await withClient([link.url, "--nick", "ada"], async (ada) => {
      await ada.expect(
        ` .... ${page} is the web page; connecting to its chat at ws://127.0.0.1:${chat.wsPort}/den?invite=${link.code} instead.`,
      );
      assert.equal(
        await ada.welcomed(),
        " .... you are ada in den; here: mod, ada",
      );
      await ada.expect(" .... this room is invite-only.");
      // Out to the lobby; the moderator takes ada's invite back (the link
      // has a use left): back at den's door, ada brings no code.
      await ada.type("/join lobby");
      assert.equal(
        await ada.welcomed(),
        " .... you are ada in lobby; here: ada",
      );
      mod.send(JSON.stringify({ type: "uninvite", nick: "ada" }));
      assert.deepEqual(await next("uninvited"), {
        type: "uninvited",
        nick: "ada",
      });
      await ada.type("/join den");
      await ada.until(
        " .... error: cannot join den: this room is invite-only: ask a moderator for an invite (/invite NICK) or an invite link.",
      );
      assert.equal(
        await ada.welcomed(),
        " .... you are ada in lobby; here: ada",
      );
      await ada.closeStdin();
      assert.equal((await ada.exit()).code, 0);
    });
    // The link's second use is still there: nobody brought it again.
    mod.send(JSON.stringify({ type: "invites" }));
    const invites = await next("invites");
    assert.deepEqual(
      invites.links.map((entry: { uses: number }) => entry.uses),
      [1],
    );
    // A used-up link says so.
    mod.send(JSON.stringify({ type: "invite", link: {} }));
    const once = await next("invite_link");
    const cal = await jsonClient(chat, "/den", { invite: once.code });
    await cal.close(1000);
    await withClient([once.url, "--nick", "dan"], async (dan) => {
      const { code, stderr } = await dan.exit();
      assert.equal(code, 1);
      assert.match(
        stderr,
        /: this room is invite-only, and the invite link admits nobody now \(used up, revoked or expired\): ask a moderator for a new one\n$/,
      );
    });
    await mod.close();
  });
});

// ---------------------------------------------------------------------------
// Read markers
// ---------------------------------------------------------------------------

/** The next JSON event of `peer` that passes `test` (others skipped). */
async function nextWhere(
  peer: Awaited<ReturnType<typeof jsonClient>>,
  test: (event: Record<string, unknown>) => boolean,
): Promise<Record<string, unknown>> {
  for (;;) {
    const event = await peer.event();
    if (test(event)) return event;
  }
}

Deno.test("client: marks what it has shown as read (its person's other devices hear it), says a mention in a pipe, and /rooms lists the rooms with what is unread", async () => {
  await withChat({ ...FAST, authSecret: SECRET }, async (chat) => {
    // ada signed in: the client and a phone in another room are one person.
    const token = await hs256({ sub: "ada-1", name: "ada" });
    const phone = await signedClient(chat, { token }, "/away");
    const bob = await jsonClient(chat, "/", { nick: "bob" });
    await withClient([chatUrl(chat), "--token", token], async (ada) => {
      await ada.welcomed();
      const isRead = (event: Record<string, unknown>) => event.type === "read";
      // Its own join, the newest event it was shown, read at once.
      const joined = await nextWhere(phone, isRead);
      assert.deepEqual(joined, {
        type: "read",
        room: "lobby",
        read: 2,
        unread: 0,
        mentions: 0,
      });
      bob.send(JSON.stringify({ type: "message", text: "ada: lunch?" }));
      await ada.expect("bob: ada: lunch?");
      await ada.expect(" .... you were mentioned in lobby (1 mention unread)");
      // Shown, so read (within READ_INTERVAL_MS): nothing unread.
      assert.deepEqual(await nextWhere(phone, isRead), {
        ...joined,
        read: 3,
      });
      await ada.type("/rooms");
      await ada.until(" .... your rooms: lobby (all read)");
      await ada.type("/quit");
      assert.equal((await ada.exit()).code, 0);
    });
    await closeAll(phone, bob);
  });
});

Deno.test("client: on a terminal a mention rings the bell; one in another of the person's rooms says where", async () => {
  await withChat({ ...FAST, authSecret: SECRET }, async (chat) => {
    const token = await hs256({ sub: "ada-2", name: "ada" });
    const phone = await signedClient(chat, { token }, "/away");
    const bob = await jsonClient(chat, "/", { nick: "bob" });
    const cy = await jsonClient(chat, "/away", { nick: "cy" });
    const lines: string[] = [];
    let bells = 0;
    let woken: (() => void) | undefined;
    const client = new ChatClient({
      url: new URL(chatUrl(chat)),
      retries: 0,
      token,
      screen: {
        print: (line) => {
          lines.push(line);
          woken?.();
        },
        setPrompt: () => {},
        bell: () => {
          bells++;
          woken?.();
        },
      },
      style: PLAIN,
      bell: true,
      fail: (message) => lines.push(`fail: ${message}`),
    });
    const shown = async (what: string, test: () => boolean) => {
      const deadline = Date.now() + WAIT_MS;
      while (!test()) {
        assert.ok(Date.now() < deadline, `${what}; lines: ${lines.join("\n")}`);
        await new Promise<void>((resolve) => {
          woken = resolve;
          setTimeout(resolve, 50);
        });
      }
    };
    const running = client.run();
    try {
      await shown(
        "the welcome",
        () => lines.some((l) => l.includes("you are")),
      );
      // The phone marks /away read: it is one of ada's rooms from then on.
      const isRead = (event: Record<string, unknown>) => event.type === "read";
      await nextWhere(phone, isRead); // the client's own, of the lobby
      phone.send(JSON.stringify({ type: "read", id: phone.welcome.lastId }));
      await nextWhere(phone, (event) => isRead(event) && event.room === "away");
      bob.send(JSON.stringify({ type: "message", text: "hi ada" }));
      await shown("the bell", () => bells === 1);
      assert.ok(lines.includes("bob: hi ada"));
      assert.ok(
        !lines.some((line) => line.includes("mentioned")),
        "here: the message is on the screen; only the bell",
      );
      cy.send(JSON.stringify({ type: "message", text: "@ada, in away" }));
      await shown("the second bell", () => bells === 2);
      await shown(
        "where",
        () =>
          lines.includes(" .... you were mentioned in away (1 mention unread)"),
      );
      assert.ok(!lines.join("").includes(BELL), "the bell is no line");
    } finally {
      await client.quit();
      assert.equal(await running, 0);
      await closeAll(phone, bob, cy);
    }
  });
});
