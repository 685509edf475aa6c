/**
 * The chat's behaviour, tested against a live server with real clients:
 * the tutorial's plain-text chat, the CLI and signals, the JSON protocol,
 * rooms, nicknames, history and resume, and batching order.
 */

import assert from "node:assert/strict";
import {
  flagOf,
  OPTIONS,
  pageHandler,
  parseCommandLine,
  renderPage,
  startChat,
} from "./main.ts";
import { CloseCode, JSON_PROTOCOL, roomFromPath } from "./wire/protocol.ts";
import {
  chatUrl,
  cli,
  closeAll,
  type Json,
  jsonClient,
  MANY_FROM_ONE_ADDRESS,
  metric,
  Peer,
  RawClient,
  rawSocket,
  startCli,
  TEST_OPTIONS,
  textClient,
  withChat,
  within,
} from "./tests/test_helpers.ts";

const NICK = /^user-\d{1,5}$/;

// ---------------------------------------------------------------------------
// The page server
// ---------------------------------------------------------------------------

Deno.test("the page is served on GET and HEAD with the chat port filled in", async () => {
  const handle = pageHandler(await renderPage(4321));
  const get = handle(new Request("http://localhost/"));
  assert.equal(get.status, 200);
  assert.equal(get.headers.get("content-type"), "text/html; charset=utf-8");
  const html = await get.text();
  assert.match(html, /<meta name="chat-port" content="4321">/);
  assert.match(html, /new WebSocket\(/);
  const head = handle(new Request("http://localhost/", { method: "HEAD" }));
  assert.equal(head.status, 200);
  await head.body?.cancel();
});

Deno.test("the page's policy allows its own inline script and nothing injected", async () => {
  const page = await renderPage(1);
  const csp = page.headers["content-security-policy"];
  assert.match(csp, /script-src 'sha256-[A-Za-z0-9+/=]+'/);
  assert.doesNotMatch(csp, /unsafe-inline/);
  // The hash is of the script actually in the page.
  const script = page.html.match(/<script>([\s\S]*?)<\/script>/)![1];
  const digest = await crypto.subtle.digest(
    "SHA-256",
    new TextEncoder().encode(script),
  );
  const hash = btoa(String.fromCharCode(...new Uint8Array(digest)));
  assert.ok(csp.includes(`'sha256-${hash}'`));
});

Deno.test("other paths get 404 and other methods 405 with Allow", async () => {
  const handle = pageHandler(await renderPage(1));
  const missing = handle(new Request("http://localhost/nope"));
  assert.equal(missing.status, 404);
  await missing.body?.cancel();
  const post = handle(
    new Request("http://localhost/", { method: "POST", body: "x" }),
  );
  assert.equal(post.status, 405);
  assert.equal(post.headers.get("allow"), "GET, HEAD");
  await post.body?.cancel();
});

Deno.test("the live page server serves the page with the bound chat port", async () => {
  await withChat({}, async (chat) => {
    const response = await fetch(`http://127.0.0.1:${chat.port}/`);
    assert.equal(response.status, 200);
    assert.match(await response.text(), new RegExp(`content="${chat.wsPort}"`));
  });
});

// ---------------------------------------------------------------------------
// The tutorial's chat, in plain text
// ---------------------------------------------------------------------------

Deno.test("a plain HTTP request to the chat port gets 426, and the chat goes on", async () => {
  await withChat({}, async (chat) => {
    const response = await fetch(`http://127.0.0.1:${chat.wsPort}/`);
    assert.equal(response.status, 426);
    assert.equal(response.headers.get("upgrade"), "websocket");
    await response.body?.cancel();
    const alice = await textClient(chat);
    alice.send("still here");
    assert.equal(await alice.next(), `${alice.nick}: still here`);
    await alice.close();
  });
});

Deno.test("a new connection gets a random nickname user-NNNNN", async () => {
  await withChat({}, async (chat) => {
    const alice = await textClient(chat);
    assert.match(alice.nick, NICK);
    await alice.close();
  });
});

Deno.test("a random nick already taken in the room is drawn again", async () => {
  // Math.random drives the draw; make the second client's first draw clash.
  const draws = [0.5, 0.5, 0.7];
  const random = Math.random;
  Math.random = () => draws.shift() ?? random();
  try {
    await withChat({}, async (chat) => {
      const first = await textClient(chat);
      const second = await textClient(chat);
      assert.equal(first.nick, "user-50000");
      assert.equal(second.nick, "user-70000");
      await closeAll(first, second);
    });
  } finally {
    Math.random = random;
  }
});

Deno.test("a message reaches everyone in the room, the sender included", async () => {
  await withChat({}, async (chat) => {
    const alice = await textClient(chat);
    const bob = await textClient(chat);
    assert.equal(await alice.next(), ` .... ${bob.nick} has joined.`);
    bob.send("hi");
    assert.equal(await bob.next(), `${bob.nick}: hi`);
    assert.equal(await alice.next(), `${bob.nick}: hi`);
    await closeAll(alice, bob);
  });
});

Deno.test("a clean leave is announced exactly once, with the nick", async () => {
  await withChat({}, async (chat) => {
    const alice = await textClient(chat);
    const bob = await textClient(chat);
    const carol = await textClient(chat);
    assert.equal(await alice.next(), ` .... ${bob.nick} has joined.`);
    assert.equal(await alice.next(), ` .... ${carol.nick} has joined.`);
    assert.equal(await bob.next(), ` .... ${carol.nick} has joined.`);
    await carol.close();
    assert.equal(await alice.next(), ` .... ${carol.nick} has left.`);
    assert.equal(await bob.next(), ` .... ${carol.nick} has left.`);
    // Nothing more about carol (no second leave, no "NIL has left"): the next
    // frame alice gets is bob's marker.
    bob.send("marker");
    assert.equal(await alice.next(), `${bob.nick}: marker`);
    assert.equal(await bob.next(), `${bob.nick}: marker`);
    await closeAll(alice, bob);
  });
});

Deno.test("a dropped TCP connection is announced as left exactly once", async () => {
  await withChat({}, async (chat) => {
    const alice = await textClient(chat);
    const raw = await rawSocket(chat);
    const joined = await alice.next();
    const nick = joined.match(/^ \.\.\.\. (\S+) has joined\.$/)![1];
    raw.close(); // no close frame
    assert.equal(await alice.next(), ` .... ${nick} has left.`);
    assert.equal(await metric(chat, 'chat_closes_total{code="1006"}'), 1);
    alice.send("marker");
    assert.equal(await alice.next(), `${alice.nick}: marker`);
    await alice.close();
  });
});

Deno.test("a binary frame closes that connection with 1003 and is not echoed", async () => {
  await withChat({}, async (chat) => {
    const alice = await textClient(chat);
    const mallory = await textClient(chat);
    assert.equal(await alice.next(), ` .... ${mallory.nick} has joined.`);
    mallory.send(new TextEncoder().encode("binary hi"));
    const closed = await within(mallory.closed, "mallory's close");
    assert.equal(closed.code, CloseCode.UnsupportedData);
    assert.equal(await alice.next(), ` .... ${mallory.nick} has left.`);
    alice.send("marker");
    assert.equal(await alice.next(), `${alice.nick}: marker`);
    await alice.close();
  });
});

Deno.test("more than 100 sockets all join and all get every message", async () => {
  const count = 150;
  await withChat({ ...MANY_FROM_ONE_ADDRESS }, async (chat) => {
    const peers = await Promise.all(
      Array.from(
        { length: count },
        (_, i) => textClient(chat, "/", { nick: `p${i}` }),
      ),
    );
    const last = peers[count - 1];
    last.send("to all");
    for (const peer of peers) {
      let line: string;
      do line = await peer.next(); while (line.endsWith("has joined."));
      assert.equal(line, "p149: to all");
    }
    await closeAll(...peers);
  });
});

Deno.test("clients joining at the same moment all get distinct nicks and all messages", async () => {
  const count = 40;
  await withChat({ ...MANY_FROM_ONE_ADDRESS }, async (chat) => {
    const peers = await Promise.all(
      Array.from({ length: count }, () => textClient(chat)),
    );
    const nicks = new Set(peers.map((peer) => peer.nick));
    assert.equal(nicks.size, count);
    for (const nick of nicks) assert.match(nick, NICK);
    // Every peer says one line; every peer sees all of them.
    for (const peer of peers) peer.send(`from ${peer.nick}`);
    for (const peer of peers) {
      const seen = new Set<string>();
      while (seen.size < count) {
        const line = await peer.next();
        if (line.startsWith(" .... ")) continue;
        seen.add(line);
      }
      assert.deepEqual(
        seen,
        new Set(peers.map((p) => `${p.nick}: from ${p.nick}`)),
      );
    }
    await closeAll(...peers);
  });
});

Deno.test("clients closing during a broadcast never break it for the others", async () => {
  await withChat({ rate: 1000, burst: 1000 }, async (chat) => {
    const stayers = await Promise.all(
      Array.from(
        { length: 5 },
        (_, i) => textClient(chat, "/", { nick: `s${i}` }),
      ),
    );
    const leavers = await Promise.all(
      Array.from(
        { length: 20 },
        (_, i) => textClient(chat, "/", { nick: `l${i}` }),
      ),
    );
    // Leavers start closing while s0 sends: some broadcasts hit closing sockets.
    const closing = leavers.map((peer) => peer.close());
    for (let i = 0; i < 50; i++) stayers[0].send(`m${i}`);
    await Promise.all(closing);
    for (const peer of stayers) {
      const got: string[] = [];
      while (got.length < 50) {
        const line = await peer.next();
        if (!line.startsWith(" .... ")) got.push(line);
      }
      assert.deepEqual(got, Array.from({ length: 50 }, (_, i) => `s0: m${i}`));
    }
    await closeAll(...stayers);
  });
});

Deno.test("a start on a port in use fails cleanly, and the next start works", async () => {
  const blocker = Deno.listen({ hostname: "127.0.0.1", port: 0 });
  try {
    await assert.rejects(
      startChat({ ...TEST_OPTIONS, port: blocker.addr.port }),
      Deno.errors.AddrInUse,
    );
  } finally {
    blocker.close();
  }
  await withChat({}, async (chat) => {
    const alice = await textClient(chat);
    await alice.close();
  });
});

Deno.test("a certificate without a key is refused at start", async () => {
  await assert.rejects(
    startChat({ ...TEST_OPTIONS, cert: "-----BEGIN CERTIFICATE-----" }),
    /cert and key go together/,
  );
});

// ---------------------------------------------------------------------------
// The command line and signals
// ---------------------------------------------------------------------------

/** `parseCommandLine` with these environment variables and no others. */
const env = (vars: Record<string, string>) => (name: string) => vars[name];

Deno.test("flags set options", () => {
  assert.deepEqual(
    parseCommandLine(["--port", "3000", "--ws-port", "3001"], env({})),
    {
      port: 3000,
      wsPort: 3001,
    },
  );
});

Deno.test("PORT, WS_PORT and HOST (not HOSTNAME) are fallbacks for their flags", () => {
  assert.deepEqual(
    parseCommandLine(
      [],
      env({ PORT: "81", WS_PORT: "82", HOST: "127.0.0.1", HOSTNAME: "box" }),
    ),
    { port: 81, wsPort: 82, hostname: "127.0.0.1" },
  );
});

Deno.test("a flag beats its environment variable", () => {
  assert.deepEqual(parseCommandLine(["--port", "9"], env({ PORT: "81" })), {
    port: 9,
  });
});

Deno.test("--help parses as a request for the usage", () => {
  assert.equal(parseCommandLine(["--help"], env({})), "help");
});

Deno.test("many flags in one command line each set their option", () => {
  assert.deepEqual(
    parseCommandLine([
      "--max-message-chars=1",
      "--history-size=2",
      "--max-frame-bytes=3",
      "--rate=4",
      "--burst=5",
      "--max-buffered-bytes=6",
      "--max-consecutive-drops=7",
      "--idle-timeout=8",
      "--max-connections=9",
      "--max-connections-per-ip=10",
      "--max-rooms=11",
      "--allow-origin=https://a.example",
      "--allow-origin=https://b.example",
      "--metrics=false",
      "--log-format=json",
      "--quiet",
    ], env({})),
    {
      maxMessageChars: 1,
      historySize: 2,
      maxFrameBytes: 3,
      rate: 4,
      burst: 5,
      maxBufferedBytes: 6,
      maxConsecutiveDrops: 7,
      idleTimeout: 8,
      maxConnections: 9,
      maxConnectionsPerIp: 10,
      maxRooms: 11,
      allowOrigin: ["https://a.example", "https://b.example"],
      metrics: false,
      logFormat: "json",
      quiet: true,
    },
  );
});

/**
 * For every option in OPTIONS, a command line that sets it and what it
 * parses to (`PEM` stands for a file holding `PEM_TEXT`). An option added
 * to OPTIONS without a case here fails its test below.
 */
const FLAG_CASES: Record<
  string,
  [args: string[], parsed: Record<string, unknown>]
> = {
  port: [["--port=1"], { port: 1 }],
  wsPort: [["--ws-port=2"], { wsPort: 2 }],
  hostname: [["--hostname=127.0.0.2"], { hostname: "127.0.0.2" }],
  maxMessageChars: [["--max-message-chars=3"], { maxMessageChars: 3 }],
  historySize: [["--history-size=0"], { historySize: 0 }],
  maxFrameBytes: [["--max-frame-bytes=5"], { maxFrameBytes: 5 }],
  rate: [["--rate=6"], { rate: 6 }],
  burst: [["--burst=7"], { burst: 7 }],
  maxBufferedBytes: [["--max-buffered-bytes=8"], { maxBufferedBytes: 8 }],
  maxConsecutiveDrops: [["--max-consecutive-drops=0"], {
    maxConsecutiveDrops: 0,
  }],
  idleTimeout: [["--idle-timeout=0"], { idleTimeout: 0 }],
  maxConnections: [["--max-connections=11"], { maxConnections: 11 }],
  maxConnectionsPerIp: [["--max-connections-per-ip=12"], {
    maxConnectionsPerIp: 12,
  }],
  maxRooms: [["--max-rooms=13"], { maxRooms: 13 }],
  maxHistoryBytes: [["--max-history-bytes=0"], { maxHistoryBytes: 0 }],
  connectRate: [["--connect-rate=15"], { connectRate: 15 }],
  connectBurst: [["--connect-burst=16"], { connectBurst: 16 }],
  openTimeout: [["--open-timeout=17"], { openTimeout: 17 }],
  sessionGrace: [["--session-grace=0"], { sessionGrace: 0 }],
  editWindow: [["--edit-window", "600"], { editWindow: 600 }],
  allowOrigin: [["--allow-origin", "*"], { allowOrigin: ["*"] }],
  cert: [["--cert", "PEM", "--key", "PEM"], {
    cert: "PEM_TEXT",
    key: "PEM_TEXT",
  }],
  key: [["--key", "PEM", "--cert", "PEM"], {
    cert: "PEM_TEXT",
    key: "PEM_TEXT",
  }],
  metrics: [["--metrics", "false"], { metrics: false }],
  logFormat: [["--log-format", "json"], { logFormat: "json" }],
  redis: [["--redis", "redis://127.0.0.1:6380"], {
    redis: "redis://127.0.0.1:6380",
  }],
  roomTtl: [["--room-ttl=60"], { roomTtl: 60 }],
  redisCoalesceMs: [["--redis-coalesce-ms=0"], { redisCoalesceMs: 0 }],
  redisCluster: [[
    "--redis-cluster",
    "redis://127.0.0.1:7000,redis://127.0.0.1:7001",
  ], { redisCluster: "redis://127.0.0.1:7000,redis://127.0.0.1:7001" }],
  redisWaitReplicas: [["--redis-wait-replicas=1"], { redisWaitReplicas: 1 }],
  redisWaitMs: [["--redis-wait-ms=250"], { redisWaitMs: 250 }],
  data: [["--data", "chat.db"], { data: "chat.db" }],
  retainEvents: [["--retain-events", "500"], { retainEvents: 500 }],
  retainDays: [["--retain-days", "30"], { retainDays: 30 }],
  dataSync: [["--data-sync", "full"], { dataSync: "full" }],
  reusePort: [["--reuse-port"], { reusePort: true }],
  quiet: [["--quiet"], { quiet: true }],
  authSecret: [["--auth-secret=s3cret"], { authSecret: "s3cret" }],
  authPublicKey: [["--auth-public-key", "PEM"], { authPublicKey: "PEM_TEXT" }],
  auth: [["--auth=required", "--auth-secret=s"], {
    auth: "required",
    authSecret: "s",
  }],
  authAudience: [["--auth-audience=chat"], { authAudience: "chat" }],
  authIssuer: [["--auth-issuer=app"], { authIssuer: "app" }],
  opKey: [["--op-key=k"], { opKey: "k" }],
  banByAddress: [["--ban-by-address", "false"], { banByAddress: false }],
  apiKey: [["--api-key", "aaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaa"], {
    apiKey: "aaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaa",
  }],
  apiPort: [["--api-port=9"], { apiPort: 9 }],
  apiHostname: [["--api-hostname=127.0.0.3"], { apiHostname: "127.0.0.3" }],
  apiName: [["--api-name=ci-bot"], { apiName: "ci-bot" }],
  apiRate: [["--api-rate=20"], { apiRate: 20 }],
  webhook: [[
    "--webhook=http://a.example/1",
    "--webhook=https://b.example/2",
    "--webhook-secret=ssssssssssssssssssssssssssssssss",
  ], {
    webhook: ["http://a.example/1", "https://b.example/2"],
    webhookSecret: "ssssssssssssssssssssssssssssssss",
  }],
  webhookEvents: [["--webhook-events=join, message,join"], {
    webhookEvents: ["join", "message"],
  }],
  webhookSecret: [["--webhook-secret=ssssssssssssssssssssssssssssssss"], {
    webhookSecret: "ssssssssssssssssssssssssssssssss",
  }],
  webhookBatch: [["--webhook-batch=50"], { webhookBatch: 50 }],
  webhookRetryHours: [["--webhook-retry-hours=0.5"], {
    webhookRetryHours: 0.5,
  }],
  proxyConnect: [["--proxy-connect=http://app.example/connect"], {
    proxyConnect: "http://app.example/connect",
  }],
  proxyPublish: [["--proxy-publish=https://app.example/publish"], {
    proxyPublish: "https://app.example/publish",
  }],
  proxyTimeoutMs: [["--proxy-timeout-ms=250"], { proxyTimeoutMs: 250 }],
  proxyFail: [["--proxy-fail=open"], { proxyFail: "open" }],
  proxySecret: [["--proxy-secret=pppppppppppppppppppppppppppppppp"], {
    proxySecret: "pppppppppppppppppppppppppppppppp",
  }],
};

for (const name of Object.keys(OPTIONS)) {
  Deno.test(`--${flagOf(name)} parses into its option`, async () => {
    const sample = FLAG_CASES[name];
    assert.ok(sample, `FLAG_CASES needs a case for --${flagOf(name)}`);
    const pem = await Deno.makeTempFile({ suffix: ".pem" });
    try {
      await Deno.writeTextFile(pem, "PEM_TEXT");
      const [args, parsed] = sample;
      const given = args.map((arg) => arg === "PEM" ? pem : arg);
      assert.deepEqual(parseCommandLine(given, env({})), parsed);
    } finally {
      await Deno.remove(pem);
    }
  });
}

Deno.test("every flag case names an option that exists", () => {
  assert.deepEqual(
    Object.keys(FLAG_CASES).filter((name) => !(name in OPTIONS)),
    [],
  );
});

Deno.test("--help prints the usage and exits 0", async () => {
  const { code, stdout } = await cli(["--help"]).output();
  assert.equal(code, 0);
  const text = new TextDecoder().decode(stdout);
  for (
    const flag of [
      "--port",
      "--ws-port",
      "--hostname",
      "--rate",
      "--allow-origin",
    ]
  ) {
    assert.ok(text.includes(flag), `help mentions ${flag}`);
  }
});

for (const signal of ["SIGTERM", "SIGINT"] as const) {
  Deno.test(`${signal} closes every client with 1001 and exits 0 within 2 s`, async () => {
    const { child, lines, wsPort } = await startCli(["--quiet"]);
    const peers = Array.from(
      { length: 3 },
      () => new Peer(`ws://127.0.0.1:${wsPort}/`),
    );
    await Promise.all(peers.map((peer) => within(peer.opened, "open")));
    const sentAt = Date.now();
    child.kill(signal);
    for (const peer of peers) {
      const closed = await within(peer.closed, "the close");
      assert.equal(closed.code, CloseCode.GoingAway);
      assert.equal(closed.reason, "server shutting down");
    }
    const status = await within(child.status, "the exit", 2000);
    assert.equal(status.code, 0);
    assert.ok(Date.now() - sentAt < 2000);
    await lines.cancel();
  });
}

// ---------------------------------------------------------------------------
// Rooms and nicknames
// ---------------------------------------------------------------------------

Deno.test("room names come from the path; bad ones are refused with 400", async () => {
  assert.equal(roomFromPath("/"), "lobby");
  assert.equal(roomFromPath("/Rust-Fans"), "rust-fans");
  assert.equal(roomFromPath("/a_1"), "a_1");
  for (const bad of ["/a/b", "/" + "x".repeat(33), "/sp ace", "/ü", "/%20"]) {
    assert.equal(roomFromPath(bad), undefined, bad);
  }
  await withChat({}, async (chat) => {
    const raw = await RawClient.connect(chat.wsPort);
    const response = await raw.upgrade("/no!good");
    assert.equal(response.status, 400);
    raw.close();
  });
});

Deno.test("nothing crosses rooms", async () => {
  await withChat({}, async (chat) => {
    const lobby = await textClient(chat, "/", { nick: "lob" });
    const rust = await textClient(chat, "/rust-fans", { nick: "rusty" });
    const rustJson = await jsonClient(chat, "/rust-fans", { nick: "jrust" });
    assert.equal(await rust.next(), " .... jrust has joined.");
    rust.send("in rust");
    assert.equal(await rust.next(), "rusty: in rust");
    assert.equal((await rustJson.event()).text, "in rust");
    lobby.send("in lobby");
    assert.equal(await lobby.next(), "lob: in lobby");
    rust.send("/who");
    assert.equal(await rust.next(), " .... in rust-fans: rusty, jrust");
    assert.equal(
      rust.pending + rustJson.pending,
      0,
      "the lobby's message stayed there",
    );
    lobby.send("/who");
    assert.equal(await lobby.next(), " .... in lobby: lob");
    await closeAll(lobby, rust, rustJson);
  });
});

Deno.test("/nick renames, and everyone in the room is told", async () => {
  await withChat({}, async (chat) => {
    const alice = await textClient(chat, "/", { nick: "alice" });
    const bob = await textClient(chat);
    assert.equal(await alice.next(), ` .... ${bob.nick} has joined.`);
    bob.send("/nick Bobby");
    assert.equal(await bob.next(), ` .... ${bob.nick} is now known as Bobby.`);
    assert.equal(
      await alice.next(),
      ` .... ${bob.nick} is now known as Bobby.`,
    );
    await closeAll(alice, bob);
  });
});

Deno.test("/nick refuses a nick taken in the room, ignoring case, telling only the sender", async () => {
  await withChat({}, async (chat) => {
    const alice = await textClient(chat, "/", { nick: "alice" });
    const bob = await textClient(chat, "/", { nick: "Bobby" });
    assert.equal(await alice.next(), " .... Bobby has joined.");
    bob.send("/nick ALICE");
    assert.equal(
      await bob.next(),
      " .... error: that nickname is taken in this room",
    );
    // The error went to bob only: alice's next frame is his next rename.
    bob.send("/nick Rob");
    assert.equal(await bob.next(), " .... Bobby is now known as Rob.");
    assert.equal(await alice.next(), " .... Bobby is now known as Rob.");
    await closeAll(alice, bob);
  });
});

Deno.test("/nick refuses bad nicks (spaces, over 24 characters, punctuation, bidi, tabs), telling only the sender", async () => {
  await withChat({}, async (chat) => {
    const alice = await textClient(chat, "/", { nick: "alice" });
    const bob = await textClient(chat, "/", { nick: "Bobby" });
    assert.equal(await alice.next(), " .... Bobby has joined.");
    for (
      const bad of [
        "a b",
        "x".repeat(25),
        "semi;colon",
        "\u202Eevil",
        "tab\there",
      ]
    ) {
      bob.send(`/nick ${bad}`);
      assert.match(
        await bob.next(),
        /^ \.\.\.\. error: a nickname is 1–24 letters/,
        bad,
      );
    }
    // The errors went to bob only: alice's next frame is his next rename.
    bob.send("/nick Rob");
    assert.equal(await bob.next(), " .... Bobby is now known as Rob.");
    assert.equal(await alice.next(), " .... Bobby is now known as Rob.");
    await closeAll(alice, bob);
  });
});

Deno.test("/nick takes letters and digits of any script, _ and -", async () => {
  await withChat({}, async (chat) => {
    const alice = await textClient(chat, "/", { nick: "alice" });
    const bob = await textClient(chat, "/", { nick: "Bobby" });
    assert.equal(await alice.next(), " .... Bobby has joined.");
    bob.send("/nick Ünïcödé_名前-1");
    assert.equal(
      await bob.next(),
      " .... Bobby is now known as Ünïcödé_名前-1.",
    );
    assert.equal(
      await alice.next(),
      " .... Bobby is now known as Ünïcödé_名前-1.",
    );
    await closeAll(alice, bob);
  });
});

Deno.test("/nick with no name tells only the sender its nick", async () => {
  await withChat({}, async (chat) => {
    const alice = await textClient(chat, "/", { nick: "alice" });
    const bob = await textClient(chat, "/", { nick: "Ünïcödé_名前-1" });
    assert.equal(await alice.next(), " .... Ünïcödé_名前-1 has joined.");
    bob.send("/nick");
    assert.equal(await bob.next(), " .... you are Ünïcödé_名前-1.");
    // The reply went to bob only: alice's next frame is his rename.
    bob.send("/nick Rob");
    assert.equal(await bob.next(), " .... Ünïcödé_名前-1 is now known as Rob.");
    assert.equal(
      await alice.next(),
      " .... Ünïcödé_名前-1 is now known as Rob.",
    );
    await closeAll(alice, bob);
  });
});

Deno.test("nicks may use combining marks after the first character", async () => {
  await withChat({}, async (chat) => {
    const ram = await jsonClient(chat, "/", { nick: "राम" });
    assert.equal(ram.nick, "राम");
    ram.send(JSON.stringify({ type: "nick", nick: "\u0301abc" }));
    assert.equal((await ram.event()).code, "bad_nick");
    await ram.close();
  });
});

Deno.test("?nick= asks for a nick at connect; a taken or bad one gets a random nick and an error", async () => {
  await withChat({}, async (chat) => {
    const first = await jsonClient(chat, "/", { nick: "Sam" });
    assert.equal(first.nick, "Sam");
    const second = await jsonClient(chat, "/", { nick: "sam" });
    assert.match(second.nick, NICK);
    assert.deepEqual(await second.event(), {
      type: "error",
      code: "nick_taken",
      message: "that nickname is taken in this room",
    });
    const third = await jsonClient(chat, "/", { nick: "no spaces" });
    assert.match(third.nick, NICK);
    assert.equal((await third.event()).code, "bad_nick");
    // A nick freed by a leave is free at once.
    await first.close();
    const again = await jsonClient(chat, "/", { nick: "SAM" });
    assert.equal(again.nick, "SAM");
    await closeAll(second, third, again);
  });
});

/**
 * alice and bob in the lobby, plain text, alice told of bob's arrival: `fn`
 * has bob send a command, then the room's next message from bob shows what
 * alice got meanwhile (nothing else, if the reply went to bob only).
 */
async function withAliceAndBob(
  fn: (alice: Peer, bob: Peer) => Promise<void>,
): Promise<void> {
  await withChat({}, async (chat) => {
    const alice = await textClient(chat, "/", { nick: "alice" });
    const bob = await textClient(chat, "/", { nick: "bob" });
    assert.equal(await alice.next(), " .... bob has joined.");
    await fn(alice, bob);
    await closeAll(alice, bob);
  });
}

/** bob's next message is alice's next frame: she got nothing before it. */
async function assertNothingElseReached(alice: Peer, bob: Peer) {
  bob.send("after");
  assert.equal(await bob.next(), "bob: after");
  assert.equal(await alice.next(), "bob: after");
}

Deno.test("/me sends an action to everyone: * NICK text", async () => {
  await withAliceAndBob(async (alice, bob) => {
    bob.send("/me waves");
    assert.equal(await alice.next(), "* bob waves");
    assert.equal(await bob.next(), "* bob waves");
  });
});

Deno.test("/who lists the room's members to the sender only", async () => {
  await withAliceAndBob(async (alice, bob) => {
    bob.send("/who");
    assert.equal(await bob.next(), " .... in lobby: alice, bob");
    await assertNothingElseReached(alice, bob);
  });
});

Deno.test("/help lists the commands to the sender only", async () => {
  await withAliceAndBob(async (alice, bob) => {
    bob.send("/help");
    assert.match(await bob.next(), /^ \.\.\.\. commands: \/nick NAME/);
    await assertNothingElseReached(alice, bob);
  });
});

Deno.test("an unknown command gets an error, to the sender only", async () => {
  await withAliceAndBob(async (alice, bob) => {
    bob.send("/dance");
    assert.equal(
      await bob.next(),
      " .... error: unknown command /dance (try /help)",
    );
    await assertNothingElseReached(alice, bob);
  });
});

Deno.test("// sends a message that starts with /", async () => {
  await withAliceAndBob(async (alice, bob) => {
    bob.send("//dance is a literal");
    assert.equal(await bob.next(), "bob: /dance is a literal");
    assert.equal(await alice.next(), "bob: /dance is a literal");
  });
});

Deno.test("messages are trimmed, empty ones ignored, too long ones refused", async () => {
  await withChat({ maxMessageChars: 10 }, async (chat) => {
    const alice = await textClient(chat, "/", { nick: "alice" });
    alice.send("   ");
    alice.send("  padded  ");
    assert.equal(await alice.next(), "alice: padded");
    alice.send("x".repeat(11));
    assert.equal(
      await alice.next(),
      " .... error: message too long (max 10 characters)",
    );
    alice.send("😀".repeat(10)); // 10 characters, 20 UTF-16 units
    assert.equal(await alice.next(), `alice: ${"😀".repeat(10)}`);
    await alice.close();
  });
});

// ---------------------------------------------------------------------------
// The JSON protocol
// ---------------------------------------------------------------------------

Deno.test("a text client and a JSON client see the same events, each in its form", async () => {
  await withChat({}, async (chat) => {
    const text = await textClient(chat, "/", { nick: "tina" });
    const json = await jsonClient(chat, "/", { nick: "jack" });
    assert.deepEqual(json.welcome.users, ["tina", "jack"]);
    assert.equal(json.welcome.room, "lobby");
    assert.match(json.welcome.epoch, /^[0-9a-f]{8}$/);
    assert.equal(json.welcome.gap, false);
    assert.equal(await text.next(), " .... jack has joined.");
    text.send("hello");
    text.send("/me smiles");
    assert.equal(await text.next(), "tina: hello");
    assert.equal(await text.next(), "* tina smiles");
    json.send(JSON.stringify({ type: "message", text: "hey" }));
    json.send(JSON.stringify({ type: "action", text: "nods" }));
    json.send(JSON.stringify({ type: "nick", nick: "jacky" }));
    assert.equal(await text.next(), "jack: hey");
    assert.equal(await text.next(), "* jack nods");
    assert.equal(await text.next(), " .... jack is now known as jacky.");
    await text.close();
    const events = [];
    for (let i = 0; i < 6; i++) events.push(await json.event());
    const firstId = json.welcome.lastId + 1;
    assert.deepEqual(events.map(({ ts: _, ...rest }) => rest), [
      { type: "message", id: firstId, from: "tina", text: "hello" },
      { type: "action", id: firstId + 1, from: "tina", text: "smiles" },
      { type: "message", id: firstId + 2, from: "jack", text: "hey" },
      { type: "action", id: firstId + 3, from: "jack", text: "nods" },
      { type: "nick", id: firstId + 4, from: "jack", to: "jacky" },
      { type: "leave", id: firstId + 5, nick: "tina" },
    ]);
    for (const event of events) {
      assert.ok(
        Math.abs(event.ts - Date.now()) < 60_000,
        "ts is epoch milliseconds",
      );
    }
    await json.close();
  });
});

Deno.test("JSON clients get a join event when someone arrives", async () => {
  await withChat({}, async (chat) => {
    const ann = await jsonClient(chat, "/", { nick: "ann" });
    const ben = await jsonClient(chat, "/", { nick: "ben" });
    const join = await ann.event();
    assert.equal(join.type, "join");
    assert.equal(join.nick, "ben");
    assert.equal(join.id, ben.welcome.lastId);
    await closeAll(ann, ben);
  });
});

Deno.test("bad JSON frames get error events and the connection stays open", async () => {
  await withChat({ maxMessageChars: 5 }, async (chat) => {
    const ann = await jsonClient(chat, "/", { nick: "ann" });
    const cases: [string, string][] = [
      ["not json", "bad_json"],
      ["[1,2]", "bad_request"],
      ['{"type":"message"}', "bad_request"],
      ['{"type":"message","text":5}', "bad_request"],
      ['{"type":"shout","text":"x"}', "bad_request"],
      ["null", "bad_request"],
      ['{"type":"message","text":"toolong"}', "too_long"],
      ['{"type":"nick","nick":"a b"}', "bad_nick"],
      ['{"type":"nick","nick":""}', "bad_nick"],
    ];
    for (const [frame, code] of cases) {
      ann.send(frame);
      const error = await ann.event();
      assert.equal(error.type, "error", frame);
      assert.equal(error.code, code, frame);
      assert.equal(typeof error.message, "string");
    }
    ann.send(JSON.stringify({ type: "message", text: "ok" }));
    assert.equal((await ann.event()).text, "ok");
    await ann.close();
  });
});

Deno.test("the chat.v1.json subprotocol is selected only when asked for", async () => {
  await withChat({}, async (chat) => {
    const plain = new Peer(chatUrl(chat));
    await within(plain.opened, "open");
    assert.equal(plain.socket.protocol, "");
    const both = new Peer(chatUrl(chat), ["other", JSON_PROTOCOL]);
    await within(both.opened, "open");
    assert.equal(both.socket.protocol, JSON_PROTOCOL);
    assert.equal(JSON.parse(await both.next()).type, "welcome");
    await closeAll(plain, both);
  });
});

// ---------------------------------------------------------------------------
// History and resume
// ---------------------------------------------------------------------------

Deno.test("history keeps the last historySize events and a newcomer gets them", async () => {
  await withChat({ historySize: 5 }, async (chat) => {
    const ann = await textClient(chat, "/", { nick: "ann" });
    for (let i = 1; i <= 8; i++) ann.send(`m${i}`);
    for (let i = 1; i <= 8; i++) assert.equal(await ann.next(), `ann: m${i}`);
    const ben = await jsonClient(chat, "/", { nick: "ben" });
    const history = ben.welcome.history;
    assert.equal(history.length, 5);
    assert.deepEqual(
      history.map((event: { text?: string; type: string }) =>
        event.text ?? event.type
      ),
      ["m5", "m6", "m7", "m8", "join"],
    );
    assert.equal(history.at(-1).nick, "ben");
    assert.equal(ben.welcome.lastId, history.at(-1).id);
    await closeAll(ann, ben);
  });
});

Deno.test("a resuming client gets exactly the events it missed, in order", async () => {
  await withChat({ rate: 1000, burst: 1000 }, async (chat) => {
    const talker = await textClient(chat, "/", { nick: "talker" });
    const reader = await jsonClient(chat, "/", { nick: "reader" });
    const seen: number[] = [reader.welcome.lastId];
    talker.send("before 1");
    talker.send("before 2");
    for (let i = 0; i < 2; i++) seen.push((await reader.event()).id);
    const epoch = reader.welcome.epoch;
    // Forced disconnect while the talker keeps talking.
    const raw = reader.socket;
    const closing = reader.close();
    for (let i = 1; i <= 5; i++) talker.send(`away ${i}`);
    await closing;
    assert.equal(raw.readyState, WebSocket.CLOSED);
    const back = await jsonClient(chat, "/", {
      nick: "reader",
      since: seen.at(-1)!,
      epoch,
    });
    assert.equal(back.welcome.gap, false);
    const missed = back.welcome.history;
    const ids = missed.map((event: { id: number }) => event.id);
    assert.deepEqual(ids, ids.toSorted((a: number, b: number) => a - b));
    assert.equal(ids[0], seen.at(-1)! + 1, "nothing seen comes twice");
    assert.deepEqual(
      missed.filter((e: { type: string }) => e.type === "message").map((
        e: { text: string },
      ) => e.text),
      ["away 1", "away 2", "away 3", "away 4", "away 5"],
    );
    assert.equal(
      ids.at(-1),
      back.welcome.lastId,
      "the history runs up to its own join",
    );
    for (let i = 1; i < ids.length; i++) {
      assert.equal(ids[i], ids[i - 1] + 1, "no gaps");
    }
    await closeAll(talker, back);
  });
});

Deno.test("resuming from before the oldest held event says gap and sends recent history", async () => {
  await withChat({ historySize: 3, rate: 1000, burst: 1000 }, async (chat) => {
    const talker = await textClient(chat, "/", { nick: "talker" });
    const reader = await jsonClient(chat, "/", { nick: "reader" });
    const { epoch, lastId } = reader.welcome;
    await reader.close();
    for (let i = 1; i <= 5; i++) talker.send(`m${i}`);
    for (let i = 1; i <= 5; i++) await talker.next();
    const back = await jsonClient(chat, "/", { since: lastId, epoch });
    assert.equal(back.welcome.gap, true);
    assert.equal(back.welcome.history.length, 3);
    await closeAll(talker, back);
  });
});

Deno.test("a client whose TCP connection dropped resumes with nothing lost or repeated", async () => {
  await withChat({ rate: 1000, burst: 1000 }, async (chat) => {
    const talker = await textClient(chat, "/", { nick: "talker" });
    // The reader speaks JSON over a raw TCP connection, so it can vanish
    // without a close frame, as on a network drop.
    const raw = await rawSocket(chat, "/?nick=reader", {
      "Sec-WebSocket-Protocol": JSON_PROTOCOL,
    });
    const welcome = JSON.parse(await raw.nextText());
    assert.equal(welcome.you, "reader");
    await talker.next();
    talker.send("seen");
    const seen = JSON.parse(await raw.nextText());
    assert.equal(seen.text, "seen");
    raw.close();
    for (let i = 1; i <= 3; i++) talker.send(`away ${i}`);
    const back = await jsonClient(chat, "/", {
      nick: "reader",
      since: seen.id,
      epoch: welcome.epoch,
      token: welcome.token,
    });
    assert.equal(back.nick, "reader");
    assert.equal(back.welcome.gap, false);
    const texts = back.welcome.history
      .filter((event: { type: string }) => event.type === "message")
      .map((event: { text: string }) => event.text);
    // "away" messages sent before the server saw the drop and after: all
    // there, once each, and "seen" not again.
    assert.deepEqual(texts, ["away 1", "away 2", "away 3"]);
    await closeAll(talker, back);
  });
});

Deno.test("a reconnect with its welcome token reclaims its nick from a stale connection", async () => {
  await withChat({}, async (chat) => {
    const watcher = await textClient(chat, "/", { nick: "watcher" });
    const stale = await jsonClient(chat, "/", { nick: "ada" });
    assert.match(stale.welcome.token, /^[A-Za-z0-9_-]{43}$/);
    await watcher.next();
    // Someone without the token cannot take it.
    const thief = await jsonClient(chat, "/", { nick: "ada", token: "guess" });
    assert.notEqual(thief.nick, "ada");
    assert.equal((await thief.event()).code, "nick_taken");
    await watcher.next();
    // The owner, reconnecting before the server noticed the old connection
    // died, gets it back; the old connection is closed and announced.
    const fresh = await jsonClient(chat, "/", {
      nick: "ada",
      token: stale.welcome.token,
    });
    assert.equal(fresh.nick, "ada");
    assert.notEqual(fresh.welcome.token, stale.welcome.token);
    const closed = await within(stale.closed, "the stale connection's close");
    assert.equal(closed.code, CloseCode.Normal);
    assert.equal(closed.reason, "replaced by a new connection");
    assert.equal(await watcher.next(), " .... ada has left.");
    assert.equal(await watcher.next(), " .... ada has joined.");
    await closeAll(watcher, thief, fresh);
  });
});

Deno.test("a resume may recover a whole history's worth of missed events", async () => {
  await withChat({ historySize: 4, rate: 1000, burst: 1000 }, async (chat) => {
    const talker = await textClient(chat, "/", { nick: "talker" });
    const reader = await jsonClient(chat, "/", { nick: "reader" });
    const { epoch } = reader.welcome;
    talker.send("m0");
    const last = await reader.event();
    await reader.close(); // the leave is event 1 of 4 missed
    for (let i = 1; i <= 3; i++) talker.send(`m${i}`);
    for (let i = 0; i <= 3; i++) {
      await talker.nextMatching(new RegExp(`talker: m${i}`));
    }
    const back = await jsonClient(chat, "/", { since: last.id, epoch });
    assert.equal(back.welcome.gap, false, "its own join did not push one out");
    assert.deepEqual(
      back.welcome.history.map((e: { type: string; text?: string }) =>
        e.text ?? e.type
      ),
      ["leave", "m1", "m2", "m3", "join"],
    );
    await closeAll(talker, back);
  });
});

Deno.test("resuming with another epoch (a restart) says gap", async () => {
  let old: { epoch: string; lastId: number } | undefined;
  await withChat({}, async (chat) => {
    const reader = await jsonClient(chat, "/", { nick: "reader" });
    old = { epoch: reader.welcome.epoch, lastId: reader.welcome.lastId };
    await reader.close();
  });
  await withChat({}, async (chat) => {
    const back = await jsonClient(chat, "/", {
      since: old!.lastId,
      epoch: old!.epoch,
    });
    assert.equal(back.welcome.gap, true);
    assert.notEqual(back.welcome.epoch, old!.epoch);
    await back.close();
  });
});

Deno.test("an emptied room is removed, and created again with a new epoch", async () => {
  await withChat({}, async (chat) => {
    const first = await jsonClient(chat, "/tmp");
    await first.close();
    const second = await jsonClient(chat, "/tmp");
    assert.notEqual(second.welcome.epoch, first.welcome.epoch);
    assert.deepEqual(
      second.welcome.history.map((event: { type: string }) => event.type),
      ["join"],
    );
    await second.close();
  });
});

// ---------------------------------------------------------------------------
// Batching keeps order and loses nothing
// ---------------------------------------------------------------------------

Deno.test("many senders, many receivers: every receiver sees every id once, in order", async () => {
  const senders = 6, receivers = 20, perSender = 60;
  await withChat(
    { rate: 10_000, burst: 10_000, historySize: 10 },
    async (chat) => {
      const listening = await Promise.all(
        Array.from(
          { length: receivers },
          (_, i) => jsonClient(chat, "/", { nick: `r${i}` }),
        ),
      );
      const talking = await Promise.all(
        Array.from(
          { length: senders },
          (_, i) => jsonClient(chat, "/", { nick: `s${i}` }),
        ),
      );
      for (let n = 0; n < perSender; n++) {
        for (const peer of talking) {
          peer.send(JSON.stringify({ type: "message", text: `${n}` }));
        }
      }
      let batches = 0;
      for (const peer of listening) {
        const ids: number[] = [];
        const perFrom = new Map<string, number>();
        let last = peer.welcome.lastId;
        while (ids.length < senders * perSender) {
          const before = peer.pending;
          const event = await peer.event();
          if (peer.pending > before) {
            batches++;
          }
          assert.equal(
            event.id,
            last + 1,
            "ids arrive once each, in order, none missing",
          );
          last = event.id;
          if (event.type !== "message") {
            continue;
          }
          ids.push(event.id);
          // Each sender's messages keep their order too.
          const expected = perFrom.get(event.from) ?? 0;
          assert.equal(event.text, String(expected));
          perFrom.set(event.from, expected + 1);
        }
      }
      assert.ok(batches > 0, "some events came batched as arrays");
      await closeAll(...listening, ...talking);
    },
  );
});

Deno.test("JSON clients joining together each get every later join once, in order", async () => {
  // Joins that land in one turn are admitted while the turn's batch is
  // pending: each newcomer gets only the part of it after its welcome.
  await withChat(MANY_FROM_ONE_ADDRESS, async (chat) => {
    const count = 40;
    const peers = await Promise.all(
      Array.from(
        { length: count },
        (_, i) => jsonClient(chat, "/crowd", { nick: `p${i}` }),
      ),
    );
    peers[0].send(JSON.stringify({ type: "message", text: "all in" }));
    const everyone = peers.map((peer) => peer.nick).sort();
    for (const peer of peers) {
      const seen = [...peer.welcome.users] as string[];
      let last = peer.welcome.lastId as number;
      for (;;) {
        const event = await peer.event("the room's events");
        assert.ok(event.id > last, `${peer.nick}: ${event.id} after ${last}`);
        last = event.id;
        if (event.type === "join") seen.push(event.nick);
        if (event.type === "message") break;
      }
      assert.deepEqual(seen.sort(), everyone, `${peer.nick} saw everyone`);
      assert.equal(peer.pending, 0);
    }
    await closeAll(...peers);
  });
});

/** The next JSON event `peer` gets that `test` accepts (those before: skipped). */
async function untilEvent(
  peer: Peer,
  test: (event: Json) => boolean,
): Promise<Json> {
  for (;;) {
    const event = await peer.event();
    if (test(event)) return event;
  }
}

Deno.test("a reply reaches everyone with its quote: JSON gets the id and the start of the message answered, plain text a ↪ line after the seed's prefix", async () => {
  await withChat({}, async (chat) => {
    const ada = await jsonClient(chat, "/", { nick: "ada" });
    const bob = await textClient(chat, "/", { nick: "bob" });
    await untilEvent(ada, (e) => e.type === "join" && e.nick === "bob");
    ada.send(JSON.stringify({ type: "message", text: "lunch at noon?" }));
    const asked = await untilEvent(ada, (e) => e.type === "message");
    assert.equal(await bob.next(), "ada: lunch at noon?");
    bob.send(`/reply ${asked.id} yes, see you`);
    assert.equal(
      await bob.next(),
      'bob: ↪ ada: "lunch at noon?" yes, see you',
    );
    const answer = await untilEvent(ada, (e) => e.type === "message");
    assert.deepEqual(answer.replyTo, {
      id: asked.id,
      from: "ada",
      text: "lunch at noon?",
    });
    assert.equal(answer.text, "yes, see you");
    // JSON replies too; one to an id the room does not keep is refused.
    ada.send(
      JSON.stringify({ type: "message", text: "ok", replyTo: answer.id }),
    );
    assert.equal(await bob.next(), 'ada: ↪ bob: "yes, see you" ok');
    ada.send(JSON.stringify({ type: "message", text: "?", replyTo: 999 }));
    const refused = await untilEvent(ada, (e) => e.type === "error");
    assert.equal(refused.code, "no_such_message");
    ada.send(JSON.stringify({ type: "message", text: "?", replyTo: "one" }));
    assert.equal(
      (await untilEvent(ada, (e) => e.type === "error")).code,
      "bad_request",
    );
    bob.send("/reply nothing");
    assert.equal(
      await bob.next(),
      " .... error: usage: /reply ID TEXT (ID: the message answered)",
    );
    // The welcome's history carries the quote as it was sent.
    const cy = await jsonClient(chat, "/", { nick: "cy" });
    const kept = cy.welcome.history.find((e: Json) => e.id === answer.id);
    assert.deepEqual(kept.replyTo, answer.replyTo);
    await closeAll(ada, bob, cy);
  });
});

Deno.test("an edit reaches everyone live (JSON: the edit event; plain text: '* nick edited: text'), the welcome shows the new text, and another's edit is forbidden", async () => {
  await withChat({}, async (chat) => {
    const ada = await jsonClient(chat, "/", { nick: "ada" });
    assert.equal(ada.welcome.editWindowSeconds, 24 * 60 * 60);
    const bob = await textClient(chat, "/", { nick: "bob" });
    await untilEvent(ada, (e) => e.type === "join" && e.nick === "bob");
    ada.send(JSON.stringify({ type: "message", text: "lunch at 11" }));
    const said = await untilEvent(ada, (e) => e.type === "message");
    assert.equal(await bob.next(), "ada: lunch at 11");
    ada.send(JSON.stringify({ type: "edit", id: said.id, text: "at noon" }));
    const edit = await untilEvent(ada, (e) => e.type === "edit");
    assert.deepEqual(
      [edit.from, edit.target, edit.text],
      ["ada", said.id, "at noon"],
    );
    assert.equal(await bob.next(), "* ada edited: at noon");
    bob.send(`/edit ${said.id} mine now`);
    assert.equal(
      await bob.next(),
      " .... error: only its author may edit a message",
    );
    ada.send(JSON.stringify({ type: "edit", id: said.id, text: "  " }));
    assert.equal(
      (await untilEvent(ada, (e) => e.type === "error")).code,
      "bad_request",
    );
    const cy = await jsonClient(chat, "/", { nick: "cy" });
    const kept = cy.welcome.history.find((e: Json) => e.id === said.id);
    assert.equal(kept.text, "at noon");
    assert.equal(kept.edited, edit.edited);
    await closeAll(ada, bob, cy);
  });
});

Deno.test("--edit-window 0: no message can be edited (edit_window)", async () => {
  await withChat({ editWindow: 0 }, async (chat) => {
    const ada = await jsonClient(chat, "/", { nick: "ada" });
    assert.equal(ada.welcome.editWindowSeconds, 0, "the welcome says so");
    ada.send(JSON.stringify({ type: "message", text: "typo" }));
    const said = await untilEvent(ada, (e) => e.type === "message");
    ada.send(JSON.stringify({ type: "edit", id: said.id, text: "fixed" }));
    const refused = await untilEvent(ada, (e) => e.type === "error");
    assert.equal(refused.code, "edit_window");
    await closeAll(ada);
  });
});
