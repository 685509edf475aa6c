/**
 * Limits, abuse and operations, against a live server: oversized and invalid
 * frames, floods, clients that stop reading or vanish, connection limits,
 * origins, TLS, health, metrics, logs, and shutdown under load. After each
 * abuse, a well-behaved pair in the same room must still chat with nothing
 * lost.
 */

import assert from "node:assert/strict";
import net from "node:net";
import { upgradeRequest } from "./ws_frames.ts";
import { CloseCode, JSON_PROTOCOL } from "../wire/protocol.ts";
import { MemoryStore } from "../stores/rooms.ts";
import {
  chatUrl,
  closeAll,
  eventually,
  health,
  type Json,
  jsonClient,
  MANY_FROM_ONE_ADDRESS,
  metric,
  Peer,
  RawClient,
  rawSocket,
  selfSignedCertificate,
  startCli,
  textClient,
  upgradeFrom,
  withChat,
  within,
} from "./test_helpers.ts";
import type { ChatServer } from "../main.ts";

/** Limits lifted so a test can send many 16 KB messages quickly. */
const BULK = { rate: 10_000, burst: 10_000, maxMessageChars: 20_000 };

/** Two fresh clients in `path` exchange messages; every frame is checked. */
async function assertPairChats(chat: ChatServer, path = "/"): Promise<void> {
  const one = await textClient(chat, path, { nick: "good-one" });
  const two = await textClient(chat, path, { nick: "good-two" });
  assert.equal(
    await one.nextMatching(/good-two has joined/),
    " .... good-two has joined.",
  );
  for (let i = 0; i < 3; i++) {
    one.send(`ping ${i}`);
    two.send(`pong ${i}`);
  }
  for (const peer of [one, two]) {
    const got: string[] = [];
    while (got.length < 6) {
      const line = await peer.next();
      if (!line.startsWith(" .... ")) got.push(line);
    }
    assert.deepEqual(got.filter((line) => line.startsWith("good-one")), [
      "good-one: ping 0",
      "good-one: ping 1",
      "good-one: ping 2",
    ]);
    assert.deepEqual(got.filter((line) => line.startsWith("good-two")), [
      "good-two: pong 0",
      "good-two: pong 1",
      "good-two: pong 2",
    ]);
  }
  await closeAll(one, two);
}

async function healthzConnections(chat: ChatServer): Promise<number> {
  return (await healthz(chat)).connections;
}

async function healthz(chat: ChatServer) {
  const { status, body } = await health(chat);
  assert.equal(status, 200);
  return body as Json;
}

// ---------------------------------------------------------------------------
// Frames
// ---------------------------------------------------------------------------

Deno.test("a frame over maxFrameBytes closes that connection with 1009", async () => {
  await withChat(
    { maxFrameBytes: 1000, maxMessageChars: 5000 },
    async (chat) => {
      const alice = await textClient(chat, "/", { nick: "alice" });
      const big = await textClient(chat, "/", { nick: "big" });
      await alice.next();
      big.send("é".repeat(501)); // 1002 bytes in UTF-8, 501 characters
      assert.equal(
        (await within(big.closed, "the close")).code,
        CloseCode.MessageTooBig,
      );
      assert.equal(await alice.next(), " .... big has left.");
      // Just under the limit is fine: 1000 bytes.
      alice.send("é".repeat(500));
      assert.equal(await alice.next(), `alice: ${"é".repeat(500)}`);
      assert.equal(await metric(chat, 'chat_closes_total{code="1009"}'), 1);
      await alice.close();
      await assertPairChats(chat);
    },
  );
});

Deno.test("text over the length limit but under the frame limit is refused, the connection stays", async () => {
  await withChat({ maxMessageChars: 100 }, async (chat) => {
    const json = await jsonClient(chat, "/", { nick: "j" });
    json.send(JSON.stringify({ type: "message", text: "x".repeat(101) }));
    assert.equal((await json.event()).code, "too_long");
    json.send(JSON.stringify({ type: "message", text: "fine" }));
    assert.equal((await json.event()).text, "fine");
    assert.equal(
      await metric(chat, 'chat_messages_refused_total{reason="too_long"}'),
      1,
    );
    await json.close();
    await assertPairChats(chat);
  });
});

Deno.test("invalid UTF-8 in a text frame ends only that connection, announced once", async () => {
  await withChat({}, async (chat) => {
    const alice = await textClient(chat, "/", { nick: "alice" });
    const raw = await rawSocket(chat);
    const nick =
      (await alice.next()).match(/^ \.\.\.\. (\S+) has joined\.$/)![1];
    await raw.sendFrame(0x1, new Uint8Array([0x68, 0x69, 0xff, 0xfe]));
    // Deno (2.9) rejects the frame itself and drops the TCP connection without
    // a close frame, so 1007 never reaches the peer and the frame never
    // reaches us. If Deno starts sending 1007, this line tells us.
    assert.equal(
      await within(raw.readUntilClose(), "the connection to end"),
      undefined,
    );
    raw.close();
    assert.equal(await alice.next(), ` .... ${nick} has left.`);
    alice.send("after");
    assert.equal(await alice.next(), "alice: after");
    await alice.close();
    await assertPairChats(chat);
  });
});

Deno.test("control characters are stripped from messages; tab and newline stay", async () => {
  await withChat({}, async (chat) => {
    const json = await jsonClient(chat, "/", { nick: "jo" });
    const alice = await textClient(chat, "/", { nick: "alice" });
    alice.send("a\x00b\x1bc\x7fd\u0085e\u009bf\tg\nh");
    // Plain text keeps one line per frame, so the newline shows as a space.
    // ESC c (a terminal reset) and CSI f (8-bit) go whole, not just the ESC.
    assert.equal(await alice.next(), "alice: abde\tg h");
    assert.equal((await json.event()).type, "join");
    assert.equal((await json.event()).text, "abde\tg\nh");
    alice.send("\x07\x08");
    alice.send("marker");
    assert.equal(
      await alice.next(),
      "alice: marker",
      "an all-control message is empty",
    );
    assert.equal((await json.event()).text, "marker");
    await closeAll(alice, json);
    await assertPairChats(chat);
  });
});

Deno.test("a newline cannot fake a system line for plain-text clients", async () => {
  await withChat({}, async (chat) => {
    const alice = await textClient(chat, "/", { nick: "alice" });
    const mallory = await textClient(chat, "/", { nick: "mallory" });
    await alice.next();
    mallory.send("hi\n .... alice has left.\nadmin: trust me");
    const line = await alice.next();
    assert.equal(line, "mallory: hi  .... alice has left. admin: trust me");
    assert.ok(!line.includes("\n"));
    mallory.send("/me waves\nadmin: hello");
    assert.equal(await alice.next(), "* mallory waves admin: hello");
    await closeAll(alice, mallory);
  });
});

Deno.test("nicknames with controls, bidi overrides or isolates are refused", async () => {
  await withChat({}, async (chat) => {
    const json = await jsonClient(chat, "/", { nick: "plain" });
    for (
      const bad of [
        "ab\u202Ecd",
        "ab\u202A",
        "\u2066x",
        "x\u2069",
        "a\x00",
        "a\u0085",
        "a\u200Fb",
      ]
    ) {
      json.send(JSON.stringify({ type: "nick", nick: bad }));
      assert.equal((await json.event()).code, "bad_nick", JSON.stringify(bad));
    }
    const spoof = await jsonClient(chat, "/", { nick: "plain\u202E" });
    assert.notEqual(spoof.nick, "plain\u202E");
    assert.equal((await spoof.event()).code, "bad_nick");
    await closeAll(json, spoof);
    await assertPairChats(chat);
  });
});

// ---------------------------------------------------------------------------
// Floods
// ---------------------------------------------------------------------------

Deno.test("over the rate, messages are dropped with rate_limited; the bucket refills", async () => {
  await withChat({ rate: 5, burst: 4 }, async (chat) => {
    const json = await jsonClient(chat, "/", { nick: "fast" });
    for (let i = 0; i < 6; i++) {
      json.send(JSON.stringify({ type: "message", text: `m${i}` }));
    }
    const got = [];
    for (let i = 0; i < 6; i++) {
      const event = await json.event();
      got.push(event.type === "error" ? event.code : event.text);
    }
    // Errors go out at once; messages at the end of the turn.
    assert.deepEqual(got.toSorted(), [
      "m0",
      "m1",
      "m2",
      "m3",
      "rate_limited",
      "rate_limited",
    ]);
    // After a pause (5 per second), the sender may talk again.
    await eventually("the bucket to refill", async () => {
      json.send(JSON.stringify({ type: "message", text: "later" }));
      const event = await json.event();
      return event.text === "later";
    });
    assert.ok(
      await metric(
        chat,
        'chat_messages_refused_total{reason="rate_limited"}',
      ) >= 2,
    );
    assert.equal(json.isClosed, false);
    await json.close();
    await assertPairChats(chat);
  });
});

Deno.test("a sender that keeps going after 50 drops in a row is closed with 1008", async () => {
  await withChat({ rate: 1, burst: 5 }, async (chat) => {
    const alice = await textClient(chat, "/", { nick: "alice" });
    const flood = await textClient(chat, "/", { nick: "flood" }); // 1 token
    await alice.next();
    // 4 tokens left: 4 messages pass, 50 drops are told, and the 51st drop in
    // a row closes. (Exactly that many, so no frame is left unread when the
    // server closes: unread data would turn the close into a TCP reset and
    // the client would never see 1008.)
    for (let i = 0; i < 55; i++) flood.send(`spam ${i}`);
    for (let i = 0; i < 4; i++) {
      assert.equal(await flood.next(), `flood: spam ${i}`);
    }
    for (let i = 0; i < 50; i++) {
      assert.equal(
        await flood.next(),
        " .... error: slow down: message dropped",
      );
    }
    assert.equal(
      (await within(flood.closed, "the close")).code,
      CloseCode.PolicyViolation,
    );
    assert.equal(await metric(chat, 'chat_closes_total{code="1008"}'), 1);
    for (let i = 0; i < 4; i++) {
      assert.equal(await alice.next(), `flood: spam ${i}`);
    }
    assert.equal(await alice.next(), " .... flood has left.");
    await alice.close();
    await assertPairChats(chat);
  });
});

Deno.test("only drops in a row count: a message that gets through resets the count", async () => {
  await withChat(
    { rate: 2, burst: 1, maxConsecutiveDrops: 3 },
    async (chat) => {
      const json = await jsonClient(chat, "/", { nick: "j" });
      const send = () =>
        json.send(JSON.stringify({ type: "message", text: "x" }));
      for (let i = 0; i < 4; i++) send(); // 1 passes, 3 dropped in a row
      const codes = [];
      for (let i = 0; i < 4; i++) codes.push((await json.event()).code ?? "ok");
      assert.deepEqual(codes.toSorted(), [
        "ok",
        "rate_limited",
        "rate_limited",
        "rate_limited",
      ]);
      // The bucket refills at 2 a second: after 600 ms one more gets through
      // and resets the count. (Asking sooner would itself be a drop.)
      await new Promise((resolve) => setTimeout(resolve, 600));
      send();
      assert.equal((await json.event()).type, "message");
      // ...so 3 more drops do not close it; a 4th in a row does.
      for (let i = 0; i < 3; i++) send();
      for (let i = 0; i < 3; i++) {
        assert.equal(
          (await json.event()).code,
          "rate_limited",
        );
      }
      assert.equal(json.isClosed, false);
      send();
      assert.equal(
        (await within(json.closed, "the close")).code,
        CloseCode.PolicyViolation,
      );
    },
  );
});

Deno.test("out of the box, every documented default is in effect", async () => {
  const lines: string[] = [];
  await withChat(
    { logFormat: "json", quiet: false, logSink: (line) => lines.push(line) },
    async (chat) => {
      const start = JSON.parse(lines[0]);
      assert.equal(start.event, "start");
      const {
        ts: _,
        level: __,
        event: ___,
        page: ____,
        chat: _____,
        store,
        ...limits
      } = start;
      assert.equal(store, "memory");
      assert.deepEqual(limits, {
        maxConnections: 10_000,
        maxConnectionsPerIp: 100,
        maxRooms: 1000,
        maxFrameBytes: 65_536,
        maxMessageChars: 2000,
        rate: 10,
        burst: 20,
        maxBufferedBytes: 1_048_576,
        maxConsecutiveDrops: 50,
        idleTimeout: 30,
        maxHistoryBytes: 262_144,
        connectRate: 2,
        connectBurst: 30,
        openTimeout: 5,
      });
      // And they act: one byte over the frame limit closes with 1009.
      const big = await textClient(chat, "/", { nick: "big" });
      big.send("x".repeat(65_537));
      assert.equal(
        (await within(big.closed, "the close")).code,
        CloseCode.MessageTooBig,
      );
      const json = await jsonClient(chat);
      assert.equal(json.welcome.maxMessageChars, 2000);
      assert.ok(json.welcome.history.length <= 100);
      await json.close();
    },
  );
});

// ---------------------------------------------------------------------------
// Slow consumers and dead peers
// ---------------------------------------------------------------------------

Deno.test("Deno's server-side bufferedAmount grows when the peer stops reading", async () => {
  // The slow-consumer limit relies on this; if Deno ever stops counting queued
  // bytes, this test says so before the limit silently stops working.
  let server: WebSocket | undefined;
  const opened = Promise.withResolvers<void>();
  const http = Deno.serve({
    hostname: "127.0.0.1",
    port: 0,
    onListen: () => {},
  }, (req) => {
    const { socket, response } = Deno.upgradeWebSocket(req);
    server = socket;
    socket.onopen = () => opened.resolve();
    return response;
  });
  const raw = await RawClient.connect(http.addr.port);
  assert.equal((await raw.upgrade("/")).status, 101);
  await opened.promise;
  const chunk = "x".repeat(64 * 1024);
  let peak = 0;
  for (let i = 0; i < 400 && peak <= 4 * 1024 * 1024; i++) {
    server!.send(chunk);
    await new Promise((resolve) => setTimeout(resolve, 1));
    peak = Math.max(peak, server!.bufferedAmount);
  }
  assert.ok(peak > 4 * 1024 * 1024, `bufferedAmount peaked at ${peak}`);
  raw.close();
  await http.shutdown();
});

Deno.test("a client that stops reading is dropped with 1013 and nobody else is slowed", async () => {
  const maxBufferedBytes = 256 * 1024;
  await withChat({ ...BULK, maxBufferedBytes }, async (chat) => {
    const alice = await textClient(chat, "/", { nick: "alice" });
    const bob = await textClient(chat, "/", { nick: "bob" });
    await alice.next();
    const raw = await rawSocket(chat); // completes the handshake, then never reads
    const nick =
      (await alice.next()).match(/^ \.\.\.\. (\S+) has joined\.$/)![1];
    await bob.next();
    // alice sends 10 MB in 16 KB messages: more than the loopback's kernel
    // buffers and the limit hold, so the non-reader's queue passes the
    // limit while alice and bob read every message, in order.
    const text = "y".repeat(16 * 1024);
    const leaveLine = ` .... ${nick} has left.`;
    const count = 640;
    for (let i = 0; i < count; i++) alice.send(`${i} ${text}`);
    let left = 0;
    for (const peer of [alice, bob]) {
      for (let i = 0; i < count; i++) {
        let line = await peer.next();
        if (line === leaveLine) {
          left++;
          line = await peer.next();
        }
        assert.ok(
          line === `alice: ${i} ${text}`,
          `message ${i} arrived in order`,
        );
      }
    }
    if (left < 2) {
      const line = await alice.next();
      assert.equal(line, leaveLine);
      left++;
    }
    assert.equal(await metric(chat, "chat_slow_consumer_drops_total"), 1);
    assert.equal(await metric(chat, 'chat_closes_total{code="1013"}'), 1);
    // Its queue ends in a close frame with 1013 once it reads again.
    assert.equal(
      await within(raw.readUntilClose(), "the close frame"),
      CloseCode.TryAgainLater,
    );
    // Deno cannot abort a socket whose peer does not read: it stays open
    // (holding what was queued) until the peer goes, and is then released
    // once, though Deno fires two close events for it.
    assert.equal(await metric(chat, "chat_sockets_open"), 3);
    raw.close();
    await eventually(
      "the dropped socket to be released",
      async () => await metric(chat, "chat_sockets_open") === 2,
    );
    await closeAll(alice, bob);
    await eventually(
      "every socket to be released",
      async () => await metric(chat, "chat_sockets_open") === 0,
    );
    await assertPairChats(chat);
  });
});

Deno.test("a dropped non-reader that then vanishes is released exactly once", async () => {
  await withChat({ ...BULK, maxBufferedBytes: 64 * 1024 }, async (chat) => {
    const alice = await textClient(chat, "/", { nick: "alice" });
    const raw = await rawSocket(chat);
    const nick =
      (await alice.next()).match(/^ \.\.\.\. (\S+) has joined\.$/)![1];
    const text = "w".repeat(16 * 1024);
    for (let i = 0; i < 640; i++) alice.send(text);
    let line;
    do line = await alice.next(); while (line !== ` .... ${nick} has left.`);
    // It never read a byte; now it drops the connection without a close.
    raw.close();
    await eventually(
      "the socket to be released",
      async () => await metric(chat, "chat_sockets_open") <= 1,
    );
    await alice.close();
    await eventually(
      "alice's socket to be released",
      async () =>
        await healthzConnections(chat) === 0 &&
        await metric(chat, "chat_sockets_open") <= 0,
    );
    assert.equal(
      await metric(chat, "chat_sockets_open"),
      0,
      "released once each",
    );
    await assertPairChats(chat);
  });
});

Deno.test("a healthy reader of a big burst is not mistaken for a slow one", async () => {
  await withChat({ ...BULK, maxBufferedBytes: 64 * 1024 }, async (chat) => {
    const reader = await jsonClient(chat, "/", { nick: "reader" });
    const talker = await textClient(chat, "/", { nick: "talker" });
    await reader.event();
    // 40 × 16 KB in one go: far more than the limit is queued within a turn.
    const text = "z".repeat(16 * 1024);
    for (let i = 0; i < 40; i++) talker.send(`${i} ${text}`);
    for (let i = 0; i < 40; i++) {
      assert.equal((await reader.event()).text, `${i} ${text}`);
    }
    assert.equal(await metric(chat, "chat_slow_consumer_drops_total"), 0);
    await closeAll(reader, talker);
  });
});

Deno.test("a peer that never answers pings is dropped after idleTimeout and announced", async () => {
  await withChat({ idleTimeout: 1 }, async (chat) => {
    const raw = await rawSocket(chat, "/quiet");
    const alice = new Peer(
      chatUrl(chat, "/quiet", { nick: "alice" }),
      JSON_PROTOCOL,
    );
    const welcome = await alice.event();
    const ghost = welcome.users.find((nick: string) => nick !== "alice");
    // alice answers pings (the WebSocket client does); the raw peer does not.
    const left = await within(alice.event(), "the ghost's leave", 5000);
    assert.deepEqual([left.type, left.nick], ["leave", ghost]);
    raw.close();
    await alice.close();
    await assertPairChats(chat, "/quiet");
  });
});

// ---------------------------------------------------------------------------
// Connections and origins
// ---------------------------------------------------------------------------

Deno.test("connections over maxConnections get 503 before any room sees them", async () => {
  await withChat({ maxConnections: 2 }, async (chat) => {
    const one = await textClient(chat, "/", { nick: "one" });
    const two = await textClient(chat, "/", { nick: "two" });
    await one.next();
    const raw = await RawClient.connect(chat.wsPort);
    const refused = await raw.upgrade("/");
    assert.equal(refused.status, 503);
    raw.close();
    one.send("/who");
    assert.equal(await one.next(), " .... in lobby: one, two");
    assert.equal(
      await metric(
        chat,
        'chat_upgrades_refused_total{reason="max_connections"}',
      ),
      1,
    );
    await two.close();
    assert.equal(await one.next(), " .... two has left.");
    const three = await textClient(chat, "/", { nick: "three" });
    await closeAll(one, three);
    await assertPairChats(chat);
  });
});

Deno.test("connections over maxConnectionsPerIp get 503", async () => {
  await withChat({ maxConnectionsPerIp: 2 }, async (chat) => {
    const one = await textClient(chat);
    const two = await textClient(chat);
    const raw = await RawClient.connect(chat.wsPort);
    const refused = await raw.upgrade("/");
    assert.equal(refused.status, 503);
    assert.match(refused.body, /Too many connections/);
    raw.close();
    // The limit is per address: 127.0.0.2 still gets in.
    const other = await upgradeFrom("127.0.0.2", chat.wsPort);
    assert.equal(other.status, 101);
    await other.close();
    await one.close();
    await eventually(
      "the slots to free",
      async () => await metric(chat, "chat_sockets_open") === 1,
    );
    const three = await textClient(chat);
    await closeAll(two, three);
    await assertPairChats(chat);
  });
});

Deno.test("a new room beyond maxRooms gets 503; existing rooms still take joins", async () => {
  await withChat({ maxRooms: 2 }, async (chat) => {
    const one = await textClient(chat, "/one", { nick: "one" });
    const two = await textClient(chat, "/two", { nick: "two" });
    const raw = await RawClient.connect(chat.wsPort);
    const refused = await raw.upgrade("/three");
    assert.equal(refused.status, 503);
    assert.match(refused.body, /Too many rooms/);
    raw.close();
    assert.equal(
      await metric(chat, 'chat_upgrades_refused_total{reason="max_rooms"}'),
      1,
    );
    const again = await textClient(chat, "/one", { nick: "again" });
    assert.equal(await one.next(), " .... again has joined.");
    // An emptied room frees its place.
    await two.close();
    const three = await textClient(chat, "/three", { nick: "three" });
    await closeAll(one, again, three);
    await assertPairChats(chat, "/one");
  });
});

/** `PAGE` stands for the page's own origin, `http://127.0.0.1:PORT`. */
const PAGE = "PAGE";

/**
 * Origins, by `--allow-origin` setting: what each `Origin` header gets (no
 * header: a tool, not a browser).
 */
const ORIGIN_CASES: {
  what: string;
  allowOrigin: string[];
  cases: [origin: string | undefined, status: number][];
}[] = [
  {
    what:
      "by default, another site is refused with 403; same host (any port or scheme) and no Origin pass",
    allowOrigin: [],
    cases: [
      ["http://evil.example", 403],
      ["null", 403],
      ["http://127.0.0.1.evil.example", 403],
      [PAGE, 101],
      ["https://127.0.0.1", 101],
      [undefined, 101],
    ],
  },
  {
    what: "with --allow-origin, only the origins named pass (and no Origin)",
    allowOrigin: ["https://chat.example"],
    cases: [["https://chat.example", 101], [PAGE, 403], [undefined, 101]],
  },
  {
    what: "with --allow-origin '*', any origin passes",
    allowOrigin: ["*"],
    cases: [["http://anywhere.example", 101]],
  },
];

for (const { what, allowOrigin, cases } of ORIGIN_CASES) {
  Deno.test(`origins: ${what}`, async () => {
    await withChat({ allowOrigin }, async (chat) => {
      for (const [origin, status] of cases) {
        const raw = await RawClient.connect(chat.wsPort);
        const page = `http://127.0.0.1:${chat.port}`;
        const headers: Record<string, string> = origin === undefined
          ? {}
          : { Origin: origin === PAGE ? page : origin };
        const response = await raw.upgrade("/", headers);
        raw.close();
        assert.equal(response.status, status, `Origin: ${origin ?? "none"}`);
      }
      const refused = cases.filter(([, status]) => status === 403).length;
      assert.equal(
        await metric(chat, 'chat_upgrades_refused_total{reason="origin"}'),
        refused,
      );
      await assertPairChats(chat);
    });
  });
}

Deno.test("a bad handshake gets 400, never a 500, and the server goes on", async () => {
  await withChat({}, async (chat) => {
    const raw = await RawClient.connect(chat.wsPort);
    const response = await raw.request(
      "GET / HTTP/1.1\r\nHost: 127.0.0.1\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n\r\n",
    );
    assert.equal(response.status, 400);
    raw.close();
    await assertPairChats(chat);
  });
});

Deno.test("500 clients connect at once, all get their welcome, all leave, the gauge returns to 0", async () => {
  await withChat({ ...MANY_FROM_ONE_ADDRESS }, async (chat) => {
    const peers = await Promise.all(
      Array.from({ length: 500 }, () => jsonClient(chat, "/burst")),
    );
    assert.equal(new Set(peers.map((peer) => peer.nick)).size, 500);
    assert.equal((await healthz(chat)).connections, 500);
    await closeAll(...peers);
    await eventually("the gauge to return to 0", async () => {
      const health = await healthz(chat);
      return health.connections === 0 && health.rooms === 0;
    });
    assert.equal(await metric(chat, "chat_connections"), 0);
  });
});

// ---------------------------------------------------------------------------
// TLS
// ---------------------------------------------------------------------------

Deno.test("with a certificate, the page is https and the chat is wss", async () => {
  const { cert, key } = await selfSignedCertificate();
  await withChat({ cert, key }, async (chat) => {
    const client = Deno.createHttpClient({ caCerts: [cert] });
    try {
      const page = await fetch(`https://127.0.0.1:${chat.port}/`, { client });
      assert.equal(page.status, 200);
      assert.match(
        await page.text(),
        /location\.protocol === "https:" \? "wss:"/,
      );
      const plain = await fetch(`https://127.0.0.1:${chat.wsPort}/`, {
        client,
      });
      assert.equal(plain.status, 426);
      await plain.body?.cancel();
    } finally {
      client.close();
    }
    // A wss client that trusts the certificate: handshake and a message.
    const conn = await Deno.connectTls({
      hostname: "127.0.0.1",
      port: chat.wsPort,
      caCerts: [cert],
    });
    const raw = new RawClient(conn);
    assert.equal((await raw.upgrade("/?nick=secure")).status, 101);
    await raw.sendFrame(0x1, new TextEncoder().encode("over tls"));
    await raw.sendFrame(0x8, new Uint8Array([0x03, 0xe8]));
    assert.equal(
      await within(raw.readUntilClose(), "the echo and close"),
      CloseCode.Normal,
    );
    assert.deepEqual(raw.texts, [
      " .... you are secure in lobby; here: secure",
      "secure: over tls",
    ]);
    raw.close();
    // A client that does not trust it is refused by TLS.
    await assert.rejects(fetch(`https://127.0.0.1:${chat.port}/`));
  });
});

// ---------------------------------------------------------------------------
// Health, metrics and logs
// ---------------------------------------------------------------------------

Deno.test("/healthz reports status, connections, rooms and uptime", async () => {
  await withChat({}, async (chat) => {
    const a = await textClient(chat, "/one");
    const b = await textClient(chat, "/two");
    const health = await healthz(chat);
    assert.deepEqual(Object.keys(health), [
      "status",
      "connections",
      "rooms",
      "uptimeSeconds",
    ]);
    assert.equal(health.status, "ok");
    assert.equal(health.connections, 2);
    assert.equal(health.rooms, 2);
    assert.ok(
      Number.isInteger(health.uptimeSeconds) && health.uptimeSeconds >= 0,
    );
    await closeAll(a, b);
  });
});

Deno.test("/metrics counts messages, frames, refusals, closes and refused upgrades", async () => {
  await withChat({}, async (chat) => {
    const a = await textClient(chat, "/", { nick: "a" });
    const b = await textClient(chat, "/", { nick: "b" });
    await a.next();
    a.send("one");
    await a.next();
    await b.next();
    b.send("/nick a");
    await b.next();
    const response = await fetch(`http://127.0.0.1:${chat.wsPort}/`);
    await response.body?.cancel();
    const text = await (await fetch(`http://127.0.0.1:${chat.port}/metrics`))
      .text();
    for (
      const type of ["chat_connections gauge", "chat_frames_sent_total counter"]
    ) {
      assert.ok(text.includes(`# TYPE ${type}`), type);
    }
    assert.equal(await metric(chat, "chat_connections"), 2);
    assert.equal(await metric(chat, "chat_rooms"), 1);
    // Two /nick queries, "one" and "/nick a".
    assert.equal(await metric(chat, "chat_messages_received_total"), 4);
    // Each welcome line (2), /nick reply (2), join of b to a (1), "one" to
    // both (2), error (1).
    assert.equal(await metric(chat, "chat_frames_sent_total"), 8);
    assert.equal(
      await metric(chat, 'chat_messages_refused_total{reason="nick_taken"}'),
      1,
    );
    assert.equal(
      await metric(chat, 'chat_upgrades_refused_total{reason="not_websocket"}'),
      1,
    );
    await a.close(1000);
    await b.nextMatching(/has left/);
    assert.equal(await metric(chat, 'chat_closes_total{code="1000"}'), 1);
    await b.close();
  });
});

Deno.test("metrics: false turns /metrics off", async () => {
  await withChat({ metrics: false }, async (chat) => {
    const response = await fetch(`http://127.0.0.1:${chat.port}/metrics`);
    assert.equal(response.status, 404);
    await response.body?.cancel();
  });
});

Deno.test("logs are JSON lines with events worth knowing and never message content", async () => {
  const lines: string[] = [];
  await withChat(
    {
      quiet: false,
      logFormat: "json",
      logSink: (line) => lines.push(line),
      rate: 1,
      burst: 1,
    },
    async (chat) => {
      const alice = await textClient(chat, "/room", { nick: "alice" });
      alice.send("the secret is swordfish");
      assert.match(await alice.next(), /^ \.\.\.\. error: slow down/);
      await alice.close();
    },
  );
  const records = lines.map((line) => JSON.parse(line));
  const events = records.map((record) => record.event);
  assert.deepEqual(events, [
    "start",
    "connect",
    "rate_limited",
    "leave",
    "shutdown",
  ]);
  assert.match(records[0].page, /^http:\/\/127\.0\.0\.1:\d+\/$/);
  assert.match(records[0].chat, /^ws:\/\/127\.0\.0\.1:\d+\/$/);
  assert.equal(records[0].maxConnections, 10_000);
  assert.deepEqual(
    [records[1].room, records[1].nick, records[1].peer],
    ["room", "alice", "127.0.0.1"],
  );
  assert.equal(records[2].level, "warn");
  for (const record of records) assert.ok(typeof record.ts === "string");
  assert.ok(
    !lines.some((line) => line.includes("swordfish")),
    "no message content",
  );
});

Deno.test("--quiet logs warnings only; text logs are one readable line each", async () => {
  const lines: string[] = [];
  await withChat(
    { quiet: true, logSink: (line) => lines.push(line), maxFrameBytes: 10 },
    async (chat) => {
      const alice = await textClient(chat, "/", { nick: "alice" });
      alice.send("far too long for ten bytes");
      await within(alice.closed, "the close");
    },
  );
  assert.equal(lines.length, 1);
  assert.match(
    lines[0],
    /^\d{4}-\d\d-\d\dT[\d:.]+Z WARN frame_too_big nick=alice peer=127\.0\.0\.1 bytes=26$/,
  );
});

// ---------------------------------------------------------------------------
// Shutdown under load
// ---------------------------------------------------------------------------

Deno.test("SIGTERM with 1,000 clients closes them all with 1001 and exits within 2 s", async () => {
  const { child, lines, wsPort } = await startCli([
    "--max-connections-per-ip",
    "2000",
    "--connect-burst",
    "2000",
    "--quiet",
  ]);
  const peers: Peer[] = [];
  for (let batch = 0; batch < 10; batch++) {
    const opened = Array.from(
      { length: 100 },
      () => new Peer(`ws://127.0.0.1:${wsPort}/load`, JSON_PROTOCOL),
    );
    await Promise.all(opened.map((peer) => within(peer.opened, "open")));
    peers.push(...opened);
  }
  // Everyone has been welcomed: the server has them all in the room.
  await Promise.all(peers.map((peer) => peer.event()));
  const sentAt = Date.now();
  child.kill("SIGTERM");
  const codes = await Promise.all(
    peers.map(async (peer) => (await within(peer.closed, "close")).code),
  );
  assert.deepEqual(new Set(codes), new Set([CloseCode.GoingAway]));
  const status = await within(child.status, "the exit", 2000);
  assert.equal(status.code, 0);
  assert.ok(Date.now() - sentAt < 2000, "exited within 2 s");
  await lines.cancel();
});

// ---------------------------------------------------------------------------
// Second round: what an attacker found after the first
// ---------------------------------------------------------------------------

/** Sends a valid upgrade request from `localAddress`, then resets at once. */
function upgradeAndReset(localAddress: string, port: number): Promise<void> {
  return new Promise((resolve, reject) => {
    const socket = net.connect({ host: "127.0.0.1", port, localAddress });
    socket.once("error", reject);
    socket.once("connect", () => {
      socket.write(upgradeRequest(), () => {
        socket.once("close", () => resolve());
        socket.resetAndDestroy();
      });
    });
  });
}

Deno.test({
  name:
    "an upgrade reset before it opens gives its slot back after openTimeout",
  // Deno keeps such a socket (no event ever fires for it) until the process
  // ends; that is what chat_sockets_stuck shows, and why ops may leak here.
  sanitizeOps: false,
  sanitizeResources: false,
  fn: async () => {
    await withChat(
      { maxConnectionsPerIp: 10, openTimeout: 1 },
      async (chat) => {
        for (let i = 0; i < 10; i++) {
          await upgradeAndReset("127.0.0.3", chat.wsPort);
        }
        await eventually(
          "the reset sockets' slots to come back",
          async () => await metric(chat, "chat_sockets_open") === 0,
        );
        const stuck = await metric(chat, "chat_sockets_stuck");
        assert.ok(stuck > 0 && stuck <= 10, `stuck: ${stuck}`);
        // The address is not locked out: a real client from it gets in.
        const again = await upgradeFrom("127.0.0.3", chat.wsPort);
        assert.equal(again.status, 101);
        await again.close();
        await assertPairChats(chat);
      },
    );
  },
});

Deno.test("concurrent upgrades to new rooms cannot make more than maxRooms", async () => {
  await withChat({ maxRooms: 5, ...MANY_FROM_ONE_ADDRESS }, async (chat) => {
    const raws = await Promise.all(
      Array.from({ length: 60 }, () => RawClient.connect(chat.wsPort)),
    );
    const responses = await Promise.all(
      raws.map((raw, i) => raw.upgrade(`/room-${i}`)),
    );
    const statuses = responses.map((response) => response.status);
    assert.equal(statuses.filter((status) => status === 101).length, 5);
    assert.equal(statuses.filter((status) => status === 503).length, 55);
    for (const raw of raws) raw.close();
    await eventually(
      "the rooms to empty",
      async () => await metric(chat, "chat_rooms") === 0,
    );
    await assertPairChats(chat);
  });
});

Deno.test("a lone member who resumes with its token keeps the room's history", async () => {
  await withChat({}, async (chat) => {
    const first = await jsonClient(chat, "/solo", { nick: "solo" });
    first.send(JSON.stringify({ type: "message", text: "remember me" }));
    const said = await first.event();
    assert.equal(said.text, "remember me");
    // The network blips: the old socket still looks open to the server.
    const again = await jsonClient(chat, "/solo", {
      nick: "solo",
      token: first.welcome.token,
      since: said.id,
      epoch: first.welcome.epoch,
    });
    assert.equal(again.nick, "solo");
    assert.equal(again.welcome.gap, false);
    assert.equal(again.welcome.epoch, first.welcome.epoch);
    assert.deepEqual(
      again.welcome.history.map((event: Json) => [event.type, event.nick]),
      [["leave", "solo"], ["join", "solo"]],
    );
    assert.equal(again.welcome.history[0].id, said.id + 1);
    const closed = await within(first.closed, "the stale socket's close");
    assert.equal(closed.code, CloseCode.Normal);
    await again.close();
  });
});

for (const host of ["a b", "x:99999", "[", "%", "@"]) {
  Deno.test(`Host: ${host} gets 400 on both ports and one log line`, async () => {
    const lines: string[] = [];
    await withChat(
      { quiet: false, logFormat: "json", logSink: (line) => lines.push(line) },
      async (chat) => {
        for (const port of [chat.port, chat.wsPort]) {
          const raw = await RawClient.connect(port);
          const response = await raw.request(
            `GET / HTTP/1.1\r\nHost: ${host}\r\nUpgrade: websocket\r\n` +
              "Connection: Upgrade\r\nSec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\n" +
              "Sec-WebSocket-Version: 13\r\n\r\n",
          );
          raw.close();
          assert.equal(response.status, 400, `port ${port}`);
        }
        await assertPairChats(chat);
      },
    );
    for (const line of lines) {
      assert.doesNotThrow(() => JSON.parse(line), line);
      assert.ok(!line.includes("\n"));
    }
    assert.equal(lines.filter((line) => line.includes('"error"')).length, 0);
  });
}

Deno.test("Unicode line breaks cannot fake a system line for plain-text clients", async () => {
  await withChat({}, async (chat) => {
    const text = await textClient(chat, "/", { nick: "reader" });
    const json = await jsonClient(chat, "/", { nick: "writer" });
    await text.next(); // writer has joined
    const fake = "hi\u2028 .... admin has joined.\u2029 .... x has left.";
    json.send(JSON.stringify({ type: "message", text: fake }));
    assert.equal(
      await text.next(),
      "writer: hi  .... admin has joined.  .... x has left.",
    );
    assert.equal((await json.event()).text, fake); // JSON keeps them
    await closeAll(text, json);
  });
});

Deno.test("close codes the server does not know are counted as other", async () => {
  await withChat({}, async (chat) => {
    for (const code of [4001, 4002, 3999]) {
      const peer = await textClient(chat);
      await peer.close(code);
    }
    const one = await textClient(chat);
    await one.close(1000);
    await eventually(
      "the closes to be counted",
      async () => await metric(chat, 'chat_closes_total{code="other"}') === 3,
    );
    assert.equal(await metric(chat, 'chat_closes_total{code="1000"}'), 1);
    const text = await (await fetch(`http://127.0.0.1:${chat.port}/metrics`))
      .text();
    assert.ok(!text.includes('code="4001"'));
  });
});

Deno.test("a room's history is bounded by maxHistoryBytes, oldest first", async () => {
  await withChat(
    { maxHistoryBytes: 4000, rate: 1000, burst: 1000 },
    async (chat) => {
      const writer = await jsonClient(chat, "/", { nick: "w" });
      for (let i = 0; i < 20; i++) {
        writer.send(
          JSON.stringify({ type: "message", text: `${i} ${"x".repeat(500)}` }),
        );
      }
      for (let i = 0; i < 20; i++) await writer.event();
      const reader = await jsonClient(chat, "/", { nick: "r" });
      const history: Json[] = reader.welcome.history;
      // Each message costs 64 + 2 * (its text, nick and type) bytes.
      const bytes = history.reduce(
        (sum: number, event: Json) =>
          sum + 64 + 2 * Object.values(event)
              .filter((value) => typeof value === "string")
              .reduce((n: number, value) => n + (value as string).length, 0),
        0,
      );
      assert.ok(bytes <= 4000, `history holds ${bytes} bytes`);
      assert.ok(
        history.length >= 3 && history.length < 10,
        `${history.length}`,
      );
      // What is kept is the newest: the reader's own join is last.
      assert.equal(history.at(-1).type, "join");
      assert.match(history.at(-2).text, /^19 /);
      await closeAll(writer, reader);
    },
  );
});

Deno.test("one address opening connections fast gets 429 past connectBurst", async () => {
  await withChat({ connectBurst: 5, connectRate: 2 }, async (chat) => {
    const watcher = await upgradeFrom("127.0.0.4", chat.wsPort);
    const statuses: number[] = [];
    for (let i = 0; i < 8; i++) {
      const raw = await RawClient.connect(chat.wsPort);
      const response = await raw.upgrade("/");
      statuses.push(response.status);
      if (response.status === 429) {
        assert.equal(response.headers.get("retry-after"), "1");
      }
      raw.close();
    }
    assert.deepEqual(statuses, [101, 101, 101, 101, 101, 429, 429, 429]);
    assert.equal(
      await metric(chat, 'chat_upgrades_refused_total{reason="connect_rate"}'),
      3,
    );
    await watcher.close();
    // The bucket refills: a second later the address may connect again.
    await new Promise((resolve) => setTimeout(resolve, 1000));
    await assertPairChats(chat);
  });
});

Deno.test("look-alike nicknames (other scripts, fullwidth, case) count as taken", async () => {
  await withChat({}, async (chat) => {
    const ada = await jsonClient(chat, "/", { nick: "ada" });
    for (const lookAlike of ["аda", "ａｄａ", "ADA", "𝐚𝐝𝐚"]) {
      const other = await jsonClient(chat, "/", { nick: lookAlike });
      assert.notEqual(other.nick, lookAlike);
      assert.equal((await other.event()).code, "nick_taken", lookAlike);
      other.send(JSON.stringify({ type: "nick", nick: lookAlike }));
      assert.equal((await other.event()).code, "nick_taken", lookAlike);
      await other.close();
    }
    const bob = await jsonClient(chat, "/", { nick: "bob" });
    assert.equal(bob.nick, "bob");
    await closeAll(ada, bob);
  });
});

/** A store whose next hold stalls the event loop past the open timeout. */
class StallingStore extends MemoryStore {
  stallNext = false;
  override hold(room: string): boolean {
    const held = super.hold(room);
    if (this.stallNext) {
      this.stallNext = false;
      queueMicrotask(() => {
        const until = Date.now() + 1500;
        while (Date.now() < until) { /* a long GC pause, say */ }
      });
    }
    return held;
  }
}

Deno.test("a socket that opens after openTimeout is closed, not joined", async () => {
  const store = new StallingStore({
    historySize: 100,
    maxHistoryBytes: 256 * 1024,
    maxRooms: 1000,
    onEvict: () => {},
  });
  await withChat({ openTimeout: 1, store }, async (chat) => {
    const ada = await jsonClient(chat, "/", { nick: "ada" });
    store.stallNext = true;
    const late = new Peer(chatUrl(chat, "/", { nick: "late" }), JSON_PROTOCOL);
    const closed = await within(late.closed, "the late socket's close");
    assert.equal(closed.code, CloseCode.PolicyViolation);
    assert.equal(await metric(chat, "chat_connections"), 1);
    ada.send(JSON.stringify({ type: "message", text: "alone" }));
    assert.equal((await ada.event()).text, "alone", "no join or leave of late");
    await ada.close();
    await eventually(
      "the stuck socket to be counted out",
      async () => await metric(chat, "chat_sockets_stuck") === 0,
    );
  });
});
