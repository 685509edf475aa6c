/**
 * The wire contract holds its copies to it: the one slash-command parser
 * knows exactly the names in `COMMAND_NAMES`, the page's parser handles the
 * same names, and the page takes its names and rules from the contract the
 * server writes into it, with no copy of its own.
 *
 * @module
 */

import assert from "node:assert/strict";
import { renderPage } from "../server/page.ts";
import {
  checkMessage,
  checkMinutes,
  checkNick,
  checkReason,
  checkTopic,
  COMMAND_NAMES,
  FieldRefusal,
  frameBytes,
  JSON_PROTOCOL,
  MAX_ROOM_CHARS,
  PAGE_CONSTANTS,
  parseCommand,
  parseJsonCommand,
  READ_FORM,
  roomsText,
  SESSION_PROTOCOL_PREFIX,
} from "./protocol.ts";
import { pageScript } from "../tools/check_page.ts";

const html = await Deno.readTextFile(
  new URL("../client.html", import.meta.url),
);

Deno.test("parseCommand knows every name in COMMAND_NAMES, and no other", () => {
  for (const name of COMMAND_NAMES) {
    const command = parseCommand(`/${name} x y`);
    assert.ok(
      !(command.type === "invalid" && command.code === "unknown_command"),
      `/${name}`,
    );
  }
  assert.deepEqual(parseCommand("/dance"), {
    type: "invalid",
    code: "unknown_command",
    message: "unknown command /dance (try /help)",
  });
});

Deno.test("the page's parser handles exactly the commands of COMMAND_NAMES", () => {
  const { code } = pageScript(html);
  const body = code.slice(code.indexOf("function submit("));
  const handled = new Set(
    [...body.slice(0, body.indexOf("default:")).matchAll(/case "([a-z]+)":/g)]
      .map((match) => match[1]),
  );
  assert.deepEqual(handled, new Set(COMMAND_NAMES));
});

Deno.test("the page keeps no copy of the contract's names and rules", () => {
  const { code } = pageScript(html);
  for (
    const copy of [
      `"${JSON_PROTOCOL}"`,
      `"${SESSION_PROTOCOL_PREFIX}`,
      `{1,${MAX_ROOM_CHARS}}`,
      "[\\p{L}",
      "commands: /nick",
    ]
  ) {
    assert.ok(!code.includes(copy), `the page's script has a copy: ${copy}`);
  }
});

Deno.test("renderPage writes the contract into the page as JSON the page can read", async () => {
  const page = await renderPage(4321);
  const attribute = /<meta name="chat-contract" content="([^"]*)">/.exec(
    page.html,
  );
  assert.ok(attribute, "the chat-contract meta");
  const text = attribute[1].replaceAll("&quot;", '"').replaceAll("&lt;", "<")
    .replaceAll("&amp;", "&");
  assert.deepEqual(
    JSON.parse(text),
    JSON.parse(JSON.stringify(PAGE_CONSTANTS)),
  );
  assert.match(page.html, /<meta name="chat-port" content="4321">/);
});

Deno.test("frameBytes is the UTF-8 size whenever a frame could be over the limit, and over when it is", () => {
  const euro = "\u20ac"; // 3 bytes in UTF-8, 1 UTF-16 unit
  const smile = "\u{1f600}"; // 4 bytes in UTF-8, 2 UTF-16 units
  // Near the limit, exact: these would pass as their UTF-16 length.
  assert.equal(frameBytes(euro.repeat(4), 10), 12);
  assert.equal(frameBytes(smile.repeat(3), 10), 12);
  assert.equal(frameBytes("a".repeat(8) + euro, 10), 11);
  assert.equal(frameBytes("a".repeat(10), 10), 10);
  // Short enough that it cannot be over: its length, under the limit.
  assert.equal(frameBytes(euro.repeat(3), 9), 3);
  // More UTF-16 units than the limit has bytes: over, without encoding.
  assert.equal(frameBytes(euro.repeat(11), 10), 11);
  for (const text of [euro.repeat(3), smile, "a".repeat(11) + euro]) {
    const bytes = new TextEncoder().encode(text).byteLength;
    const max = 10;
    assert.equal(frameBytes(text, max) > max, bytes > max, text);
  }
});

Deno.test("each field's check keeps a value at its limit, counted in characters as kept, and refuses one past it", () => {
  const refused = (code: string, message: string) =>
    new FieldRefusal(code as FieldRefusal["code"], message);
  // Characters are code points, counted after cleaning: 😀 is one, and the
  // escape sequence and control characters are not kept.
  assert.equal(checkTopic("😀".repeat(300)), "😀".repeat(300));
  assert.equal(checkTopic(`\x1b[31m${"t".repeat(300)}\x07`), "t".repeat(300));
  assert.equal(checkTopic("a\nb"), "a b", "a topic is one line");
  assert.deepEqual(
    checkTopic("t".repeat(301)),
    refused("too_long", "topic too long (max 300 characters)"),
  );
  assert.deepEqual(checkTopic(5), refused("bad_request", "a topic is text"));
  assert.equal(checkReason("😀".repeat(80)), "😀".repeat(80));
  assert.equal(checkReason("  "), undefined, "an empty reason is none");
  assert.deepEqual(
    checkReason("r".repeat(81)),
    refused("too_long", "reason too long (max 80 characters)"),
  );
  const minutes = refused(
    "bad_request",
    "minutes must be a whole number from 1 to 527040",
  );
  assert.equal(checkMinutes(527040), 527040);
  assert.equal(checkMinutes(undefined), undefined, "until lifted");
  for (const bad of [527041, 0, 1.5, "5", null]) {
    assert.deepEqual(checkMinutes(bad), minutes, String(bad));
  }
  assert.equal(checkMessage(" 😀😀 ", 2), "😀😀");
  assert.deepEqual(
    checkMessage("abc", 2),
    refused("too_long", "message too long (max 2 characters)"),
  );
  assert.equal(checkNick("n".repeat(24)), "n".repeat(24));
  assert.equal(checkNick("re\u0301"), "r\u00e9", "NFC");
  for (const bad of ["n".repeat(25), "", "a b", 7]) {
    assert.deepEqual(
      checkNick(bad),
      refused("bad_nick", 'a nickname is 1–24 letters, digits, "_" or "-"'),
      String(bad),
    );
  }
});

Deno.test("/reply ID TEXT and a JSON replyTo are a message answering ID; a bad id is bad_request", () => {
  assert.deepEqual(parseCommand("/reply 12 sounds good"), {
    type: "message",
    text: "sounds good",
    replyTo: 12,
  });
  assert.equal(parseCommand("/reply twelve ok").type, "invalid");
  assert.deepEqual(
    parseJsonCommand('{"type":"action","text":"nods","replyTo":3}'),
    { type: "action", text: "nods", replyTo: 3 },
  );
  for (const bad of ['"3"', "0", "1.5", "-2"]) {
    const command = parseJsonCommand(
      `{"type":"message","text":"x","replyTo":${bad}}`,
    );
    assert.equal(command.type === "invalid" && command.code, "bad_request");
  }
});

Deno.test("read and rooms: the JSON frames, /rooms in plain text, and the rooms line", () => {
  assert.deepEqual(parseJsonCommand('{"type":"read","id":42}'), {
    type: "read",
    id: 42,
  });
  for (const id of ["0", "-1", "1.5", '"42"', "null", "1e300"]) {
    assert.deepEqual(parseJsonCommand(`{"type":"read","id":${id}}`), {
      type: "invalid",
      code: "bad_request",
      message: READ_FORM,
    }, id);
  }
  assert.deepEqual(parseJsonCommand('{"type":"read"}'), {
    type: "invalid",
    code: "bad_request",
    message: READ_FORM,
  });
  assert.deepEqual(parseJsonCommand('{"type":"rooms"}'), { type: "rooms" });
  assert.deepEqual(parseCommand("/rooms"), { type: "rooms" });
  assert.deepEqual(parseCommand("/ROOMS please"), { type: "rooms" });
  assert.deepEqual(parseCommand("/roomsx"), {
    type: "invalid",
    code: "unknown_command",
    message: "unknown command /roomsx (try /help)",
  });
  assert.equal(
    roomsText([]),
    "your rooms: none yet (a room is listed once you have read in it)",
  );
  assert.equal(
    roomsText([
      { room: "lobby", read: 3, unread: 0, mentions: 0 },
      { room: "rust", read: 9, unread: 3, mentions: 1 },
      { room: "ops", read: 1, unread: 999, mentions: 2 },
    ]),
    "your rooms: lobby (all read), rust (3 unread, 1 mention), ops (999+ unread, 2 mentions)",
  );
});
