/**
 * `handshake.ts` on its own: header lists as RFC 7230 spells them, and which
 * subprotocol is answered. (interop_test.ts shows the same through the
 * server with real clients.)
 *
 * @module
 */

import assert from "node:assert/strict";
import {
  chooseProtocol,
  hasToken,
  listElements,
  offeredProtocols,
  readHandshake,
} from "./handshake.ts";

const JSON_NAME = "chat.v1.json";
const SESSION = "chat.session.ada-secret-0123456789abcdefghij";

Deno.test("a header list splits on commas with any whitespace, empty elements dropped", () => {
  for (
    const value of [
      "a,b",
      "a , b",
      "a, b",
      "a\t,\tb",
      ", a,,b ,",
      " a ,\t, b\t",
    ]
  ) {
    assert.deepEqual(listElements(value), ["a", "b"], JSON.stringify(value));
  }
  assert.deepEqual(listElements(null), []);
  assert.deepEqual(listElements(""), []);
  assert.deepEqual(listElements(" , ,"), []);
});

Deno.test("repeated header lines are one list, in order (Headers joins them with ', ')", () => {
  const headers = new Headers();
  headers.append("Sec-WebSocket-Protocol", "a,b");
  headers.append("sec-websocket-protocol", "c");
  assert.equal(headers.get("sec-websocket-protocol"), "a,b, c");
  assert.deepEqual(offeredProtocols(headers), ["a", "b", "c"]);
});

Deno.test("Connection and Upgrade tokens are found in lists, ignoring case", () => {
  const headers = new Headers({
    connection: "keep-alive, Upgrade",
    upgrade: "WebSocket",
  });
  assert.ok(hasToken(headers, "Connection", "upgrade"));
  assert.ok(hasToken(headers, "upgrade", "websocket"));
  assert.ok(!hasToken(headers, "connection", "close"));
  assert.ok(
    !hasToken(new Headers({ connection: "upgraded" }), "connection", "upgrade"),
  );
  assert.ok(!hasToken(new Headers(), "connection", "upgrade"));
});

Deno.test("chat.v1.json is chosen wherever it is offered; a session is never answered", () => {
  for (
    const offered of [
      [JSON_NAME],
      [JSON_NAME, SESSION],
      [SESSION, JSON_NAME],
      ["chat.v2.xml", JSON_NAME, SESSION],
    ]
  ) {
    assert.equal(chooseProtocol(offered, [JSON_NAME]), JSON_NAME);
  }
  assert.equal(chooseProtocol([SESSION], [JSON_NAME]), undefined);
  assert.equal(chooseProtocol(["chat.v2.xml"], [JSON_NAME]), undefined);
  assert.equal(chooseProtocol([], [JSON_NAME]), undefined);
  // Names are compared exactly: another case is another protocol.
  assert.equal(chooseProtocol(["CHAT.V1.JSON"], [JSON_NAME]), undefined);
});

Deno.test("our order of preference decides between two supported protocols", () => {
  assert.equal(chooseProtocol(["b", "a"], ["a", "b"]), "a");
});

Deno.test("readHandshake: websocket, what was offered and what is answered", () => {
  assert.deepEqual(
    readHandshake(
      new Headers({
        upgrade: "websocket",
        "sec-websocket-protocol": `${JSON_NAME},${SESSION}`,
      }),
      [JSON_NAME],
    ),
    { websocket: true, offered: [JSON_NAME, SESSION], protocol: JSON_NAME },
  );
  assert.deepEqual(
    readHandshake(
      new Headers({ "sec-websocket-protocol": SESSION }),
      [JSON_NAME],
    ),
    { websocket: false, offered: [SESSION], protocol: undefined },
  );
});
