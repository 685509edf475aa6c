/**
 * Verified identity: login tokens (HS256 and ES256, minted here with
 * `jose`) at the handshake, refusals with 401 and a log line that never
 * holds the token, names reserved for verified people, and what stays the
 * same without auth flags.
 */

import assert from "node:assert/strict";
import { parseCommandLine } from "../main.ts";
import { AUTH_PROTOCOL_PREFIX, JSON_PROTOCOL } from "../wire/protocol.ts";
import {
  AUTH_OPTIONS,
  es256Keys,
  hs256,
  logLines,
  SECRET,
  signedClient,
} from "./auth_helpers.ts";
import {
  chatUrl,
  closeAll,
  jsonClient,
  Peer,
  RawClient,
  textClient,
  withChat,
  within,
} from "./test_helpers.ts";

const NICK = /^user-\d{1,5}$/;

Deno.test("a valid HS256 token as a subprotocol: verified, named by the token, told to the room", async () => {
  await withChat(AUTH_OPTIONS, async (chat) => {
    const bob = await jsonClient(chat);
    const ada = await signedClient(chat, {
      token: await hs256({ sub: "42", name: "ada" }),
    });
    assert.equal(ada.welcome.you, "ada");
    assert.equal(ada.welcome.verified, true);
    assert.equal(ada.welcome.op, false);
    assert.deepEqual(ada.welcome.verifiedUsers, ["ada"]);
    assert.equal(ada.socket.protocol, JSON_PROTOCOL); // the token is not echoed
    const join = await bob.event("ada's join");
    assert.deepEqual(
      { type: join.type, nick: join.nick, verified: join.verified },
      { type: "join", nick: "ada", verified: true },
    );
    ada.send(JSON.stringify({ type: "message", text: "hi" }));
    const message = await bob.event("ada's message");
    assert.deepEqual(
      [message.from, message.text, message.verified],
      ["ada", "hi", true],
    );
    await closeAll(ada, bob);
  });
});

Deno.test("plain text: a verified person's lines are the tutorial's", async () => {
  await withChat(AUTH_OPTIONS, async (chat) => {
    const text = await textClient(chat);
    const ada = await signedClient(chat, {
      token: await hs256({ sub: "42", name: "ada" }),
    });
    assert.equal(await text.next(), " .... ada has joined.");
    ada.send(JSON.stringify({ type: "message", text: "hi" }));
    assert.equal(await text.next(), "ada: hi");
    await closeAll(ada, text);
  });
});

Deno.test("a token as Authorization: Bearer; the name falls back to the id, then a random nick", async () => {
  await withChat(AUTH_OPTIONS, async (chat) => {
    const byHeader = await signedClient(chat, {
      bearer: await hs256({ sub: "grace", name: "not a nick!" }),
    });
    assert.equal(byHeader.welcome.you, "grace");
    assert.equal(byHeader.welcome.verified, true);
    const noName = await signedClient(chat, {
      bearer: await hs256({ sub: "user@example.com" }),
    });
    assert.match(noName.welcome.you, NICK);
    assert.equal(noName.welcome.verified, true);
    await closeAll(byHeader, noName);
  });
});

Deno.test("an ES256 token checked with --auth-public-key; an HS256 one is refused there", async () => {
  const keys = await es256Keys();
  await withChat({ authPublicKey: keys.publicPem }, async (chat) => {
    const ada = await signedClient(chat, {
      token: await keys.sign({ sub: "42", name: "ada", roles: ["op"] }),
    });
    assert.equal(ada.welcome.you, "ada");
    assert.equal(ada.welcome.op, true);
    const raw = await RawClient.connect(chat.wsPort);
    const response = await raw.upgrade("/", {
      Authorization: `Bearer ${await hs256({ sub: "42" })}`,
    });
    assert.equal(response.status, 401);
    raw.close();
    await ada.close();
  });
});

Deno.test("bad tokens get 401 with a reason in the log and never the token", async () => {
  const now = Math.floor(Date.now() / 1000);
  const wrongKey = await es256Keys();
  // Right audience and issuer unless the case is about them.
  const good = { aud: "deno-chat", iss: "https://app.example" };
  const cases: [string, Promise<string> | string][] = [
    [
      "bad_signature",
      hs256({ ...good, sub: "42" }, "another-secret-another-secret!!"),
    ],
    ["expired", hs256({ ...good, sub: "42", exp: now - 3600 })],
    ["not_yet_valid", hs256({ ...good, sub: "42", nbf: now + 3600 })],
    ["bad_audience", hs256({ ...good, sub: "42", aud: "someone-else" })],
    ["bad_issuer", hs256({ ...good, sub: "42", iss: "https://evil.example" })],
    ["missing_claim", hs256({ ...good, name: "ada" })],
    ["missing_claim", hs256({ ...good, sub: "42", exp: undefined })],
    ["bad_algorithm", wrongKey.sign({ ...good, sub: "42" })],
    ["malformed", "not.a.token"],
    // Just under the 64 KB that Deno's HTTP server takes for a request's
    // head (a bigger one is answered 400 before any handler sees it).
    ["too_long", "a".repeat(60 * 1024)],
  ];
  const log = logLines();
  await withChat(
    {
      ...AUTH_OPTIONS,
      ...log.options,
      authAudience: "deno-chat",
      authIssuer: "https://app.example",
    },
    async (chat) => {
      for (const [reason, made] of cases) {
        const token = await made;
        const raw = await RawClient.connect(chat.wsPort);
        const response = await raw.upgrade("/", {
          Authorization: `Bearer ${token}`,
        });
        raw.close();
        assert.equal(response.status, 401, reason);
        assert.match(response.body, /login token/);
        const line = log.lines.at(-1)!;
        assert.match(
          line,
          new RegExp(`upgrade_refused reason=unauthorized problem=${reason} `),
        );
        for (const part of token.split(".")) {
          if (part.length > 8) assert.ok(!line.includes(part), reason);
        }
      }
      // A 100 KB token never reaches the chat: Deno refuses the head.
      const lines = log.lines.length;
      const raw = await RawClient.connect(chat.wsPort);
      const huge = await raw.upgrade("/", {
        Authorization: `Bearer ${"a".repeat(100 * 1024)}`,
      });
      raw.close();
      assert.equal(huge.status, 400);
      assert.equal(log.lines.length, lines);
      // The same as a subprotocol, as a browser sends it.
      const expired = await hs256({ sub: "42", exp: now - 3600 });
      const peer = new Peer(chatUrl(chat), [
        JSON_PROTOCOL,
        AUTH_PROTOCOL_PREFIX + expired,
      ]);
      await assert.rejects(peer.opened);
      await within(peer.closed, "the refused socket's close");
      assert.ok(log.lines.every((line) => !line.includes(expired)));
    },
  );
});

Deno.test("with the right audience and issuer a token gets in", async () => {
  await withChat(
    { ...AUTH_OPTIONS, authAudience: "deno-chat", authIssuer: "app" },
    async (chat) => {
      const ada = await signedClient(chat, {
        token: await hs256({
          sub: "1",
          name: "ada",
          aud: "deno-chat",
          iss: "app",
        }),
      });
      assert.equal(ada.welcome.verified, true);
      await ada.close();
    },
  );
});

Deno.test("--auth required: no token is 401; optional: no token is anonymous", async () => {
  const log = logLines();
  await withChat(
    { ...AUTH_OPTIONS, ...log.options, auth: "required" },
    async (chat) => {
      const raw = await RawClient.connect(chat.wsPort);
      assert.equal((await raw.upgrade("/")).status, 401);
      raw.close();
      assert.match(log.lines.at(-1)!, /reason=unauthorized problem=no_token/);
      const ada = await signedClient(chat, {
        token: await hs256({ sub: "42", name: "ada" }),
      });
      await ada.close();
    },
  );
  await withChat(AUTH_OPTIONS, async (chat) => {
    const anonymous = await jsonClient(chat, "/", { nick: "bob" });
    assert.equal(anonymous.welcome.you, "bob");
    assert.equal(anonymous.welcome.verified, false);
    await anonymous.close();
  });
});

Deno.test("a verified name is reserved: no anonymous look-alike, now or after they left", async () => {
  await withChat(AUTH_OPTIONS, async (chat) => {
    const token = await hs256({ sub: "42", name: "ada" });
    const ada = await signedClient(chat, { token });
    const witness = await jsonClient(chat);
    // Case, Cyrillic а, fullwidth: the skeleton rules make them all "ada".
    for (const nick of ["ada", "ADA", "\u0430da", "\uff41\uff44\uff41"]) {
      const other = await jsonClient(chat, "/", { nick });
      assert.match(other.welcome.you, NICK, nick);
      const error = await other.event("nick_taken");
      assert.equal(error.code, "nick_taken");
      await other.close();
    }
    await ada.close();
    // Held, not only holding: ada has left and the name is still hers.
    const later = await jsonClient(chat, "/", { nick: "Ada" });
    assert.match(later.welcome.you, NICK);
    later.send(JSON.stringify({ type: "nick", nick: "ada" }));
    assert.equal(
      (await later.nextMatching(/"error"/)).includes("nick_taken"),
      true,
    );
    // She comes back and has it.
    const back = await signedClient(chat, { token });
    assert.equal(back.welcome.you, "ada");
    await closeAll(back, later, witness);
  });
});

Deno.test("a verified person takes their name from an anonymous holder, who is renamed", async () => {
  await withChat(AUTH_OPTIONS, async (chat) => {
    const squatter = await jsonClient(chat, "/", { nick: "ada" });
    assert.equal(squatter.welcome.you, "ada");
    const ada = await signedClient(chat, {
      token: await hs256({ sub: "42", name: "ada" }),
    });
    assert.equal(ada.welcome.you, "ada");
    const renamed = await squatter.event("the rename");
    assert.equal(renamed.type, "nick");
    assert.equal(renamed.from, "ada");
    assert.match(renamed.to, NICK);
    const join = await squatter.event("ada's join");
    assert.deepEqual([join.type, join.nick], ["join", "ada"]);
    // The renamed one speaks under its new nick.
    squatter.send(JSON.stringify({ type: "message", text: "hello" }));
    const said = await ada.event("the message");
    assert.equal(said.from, renamed.to);
    assert.equal(said.verified, undefined);
    await closeAll(ada, squatter);
  });
});

Deno.test("a verified person's tabs are one member, and /nick is refused", async () => {
  await withChat(AUTH_OPTIONS, async (chat) => {
    const witness = await textClient(chat);
    const token = await hs256({ sub: "42", name: "ada" });
    const tab1 = await signedClient(chat, { token });
    assert.equal(await witness.next(), " .... ada has joined.");
    const tab2 = await signedClient(chat, { bearer: token });
    assert.equal(tab2.welcome.you, "ada");
    tab2.send(JSON.stringify({ type: "nick", nick: "eve" }));
    const error = await tab2.event("the refusal");
    assert.equal(error.code, "forbidden");
    witness.send("/who");
    assert.equal(
      await witness.next(),
      ` .... in lobby: ${witness.nick}, ada; verified: ada`,
    );
    await closeAll(tab1, tab2, witness);
  });
});

Deno.test("without auth flags a token is not looked at, and nothing changes", async () => {
  await withChat({}, async (chat) => {
    const peer = await signedClient(
      chat,
      {
        token: await hs256({ sub: "42", name: "ada" }),
      },
      "/",
      { nick: "bob" },
    );
    assert.equal(peer.welcome.you, "bob");
    assert.equal(peer.welcome.verified, false);
    await peer.close();
  });
});

Deno.test("the command line: --auth-secret or AUTH_SECRET, one key, required needs a key", () => {
  assert.deepEqual(parseCommandLine(["--auth-secret", "s"]), {
    authSecret: "s",
  });
  assert.deepEqual(
    parseCommandLine([], (name) => name === "AUTH_SECRET" ? SECRET : undefined),
    { authSecret: SECRET },
  );
  assert.throws(() => parseCommandLine(["--auth", "required"]), /needs/);
  assert.throws(() => parseCommandLine(["--auth", "maybe"]), /optional/);
});
