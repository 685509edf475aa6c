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
  COMMAND_NAMES,
  JSON_PROTOCOL,
  MAX_ROOM_CHARS,
  PAGE_CONSTANTS,
  parseCommand,
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
