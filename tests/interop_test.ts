/**
 * The client matrix (issue 16): one conversation (join, a message, a session
 * on two connections that is one member, a DM, a resume with since/epoch)
 * driven by every kind of client we know of, each of which must see exactly
 * the same events: Deno's `WebSocket` (as browsers send the handshake), npm
 * `ws` (as most Node tools send it), Python's `websocket-client`, and the raw
 * frame client with the handshake's headers spelled the ways RFC 7230 allows.
 *
 * @module
 */

import assert from "node:assert/strict";
import NodeWebSocket from "ws";
import type { ChatServer } from "../main.ts";
import { JSON_PROTOCOL, SESSION_PROTOCOL_PREFIX } from "../wire/protocol.ts";
import {
  chatUrl,
  closeAll,
  type Json,
  jsonClient,
  Peer,
  RawClient,
  type RawResponse,
  withChat,
  within,
} from "./test_helpers.ts";
import { Opcode } from "./ws_frames.ts";

const ADA = "ada-secret-0123456789abcdefghij";
const ADA_SESSION = SESSION_PROTOCOL_PREFIX + ADA;

const encoder = new TextEncoder();

/** One connection of the client under test: text frames in and out. */
interface Connection {
  /** The subprotocol the client was answered with ("" for none). */
  protocol: string;
  send(text: string): Promise<void>;
  /** The next text frame. */
  next(): Promise<string>;
  /** Closes with 1000; resolves with the close code the server answered. */
  close(): Promise<number | undefined>;
}

/** How one kind of client opens a connection to `url` offering `protocols`. */
type Dial = (url: string, protocols: string[]) => Promise<Connection>;

// ---------------------------------------------------------------------------
// The clients
// ---------------------------------------------------------------------------

/** Deno's `WebSocket`: the header as browsers send it (`a, b`). */
const denoClient: Dial = async (url, protocols) => {
  const peer = new Peer(url, protocols);
  await within(peer.opened, "the connection to open");
  return {
    protocol: peer.socket.protocol,
    send: (text) => Promise.resolve(peer.send(text)),
    next: () => peer.next(),
    close: async () => (await peer.close(1000)).code,
  };
};

/** npm `ws`'s client: the header as it sends it (`a,b`). */
const nodeWsClient: Dial = async (url, protocols) => {
  const socket = new NodeWebSocket(url, protocols);
  const frames: string[] = [];
  let wake: (() => void) | undefined;
  let ended = false;
  const closed = new Promise<number>((resolve) =>
    socket.on("close", (code: number) => {
      ended = true;
      wake?.();
      resolve(code);
    })
  );
  socket.on("message", (data: Uint8Array, isBinary: boolean) => {
    assert.equal(isBinary, false, "expected a text frame");
    frames.push(String(data));
    wake?.();
  });
  await within(
    new Promise<void>((resolve, reject) => {
      socket.once("open", () => resolve());
      socket.once("error", reject);
    }),
    "the connection to open",
  );
  return {
    protocol: socket.protocol,
    send: (text) =>
      new Promise((resolve, reject) =>
        socket.send(text, (error?: Error) => error ? reject(error) : resolve())
      ),
    next: async () => {
      while (frames.length === 0) {
        if (ended) throw new Error("closed while waiting for a frame");
        await within(new Promise<void>((resolve) => wake = resolve), "a frame");
      }
      return frames.shift()!;
    },
    close: async () => {
      socket.close(1000);
      return await within(closed, "the close handshake");
    },
  };
};

/**
 * Python's `websocket-client` (Debian's python3-websocket), which sends the
 * header as `a,b` too. A child per connection: it answers each command line
 * on stdin (`["send", text]`, `["next"]`, `["close"]`) with one JSON line,
 * after a first line with the subprotocol it was answered with.
 */
const PYTHON_CLIENT = `
import json, sys, websocket
ws = websocket.create_connection(sys.argv[1], subprotocols=json.loads(sys.argv[2]))
def reply(value):
    print(json.dumps(value), flush=True)
reply(ws.getsubprotocol() or "")
for line in sys.stdin:
    command = json.loads(line)
    if command[0] == "send":
        ws.send(command[1])
        reply(None)
    elif command[0] == "next":
        reply(ws.recv())
    elif command[0] == "close":
        ws.send_close(websocket.STATUS_NORMAL)
        frame = ws.recv_frame()
        while frame.opcode != websocket.ABNF.OPCODE_CLOSE:
            frame = ws.recv_frame()
        reply(int.from_bytes(frame.data[:2], "big") if len(frame.data) >= 2 else None)
        ws.shutdown()
        break
`;

/** Debian's Python, where apt puts python3-websocket (not a pyenv one). */
const PYTHON = "/usr/bin/python3";

/** Can {@linkcode PYTHON} import `websocket`? */
function havePythonClient(): boolean {
  try {
    const { success } = new Deno.Command(PYTHON, {
      args: ["-c", "import websocket"],
      stdout: "null",
      stderr: "null",
    }).outputSync();
    return success;
  } catch {
    return false;
  }
}

/** Each line of `stream`, parsed as JSON. */
async function* jsonLines(
  stream: ReadableStream<Uint8Array<ArrayBuffer>>,
): AsyncGenerator<Json> {
  let buffered = "";
  for await (const chunk of stream.pipeThrough(new TextDecoderStream())) {
    buffered += chunk;
    for (let end; (end = buffered.indexOf("\n")) !== -1;) {
      yield JSON.parse(buffered.slice(0, end));
      buffered = buffered.slice(end + 1);
    }
  }
}

const pythonClient: Dial = async (url, protocols) => {
  const child = new Deno.Command(PYTHON, {
    args: ["-c", PYTHON_CLIENT, url, JSON.stringify(protocols)],
    stdin: "piped",
    stdout: "piped",
  }).spawn();
  const stdin = child.stdin.getWriter();
  const replies = jsonLines(child.stdout);
  const reply = async (what: string): Promise<Json> => {
    const { value, done } = await within(replies.next(), what);
    if (done) throw new Error(`the Python client ended before ${what}`);
    return value;
  };
  const ask = async (command: Json[], what: string): Promise<Json> => {
    await stdin.write(encoder.encode(JSON.stringify(command) + "\n"));
    return await reply(what);
  };
  /** Lets the child go: its stdin closed, its stdout read to the end. */
  const end = async () => {
    await stdin.close();
    for await (const _ of replies); // the rest, if it failed
    await child.status;
  };
  let protocol: string;
  try {
    protocol = await reply("the connection to open");
  } catch (error) {
    await end();
    throw error;
  }
  return {
    protocol,
    send: async (text) => void await ask(["send", text], "the send"),
    next: () => ask(["next"], "a frame"),
    close: async () => {
      const code = await ask(["close"], "the close handshake");
      await end();
      return code;
    },
  };
};

/** How a raw handshake spells its headers, given the path and protocols. */
type Spelling = (path: string, protocols: string[]) => string[];

/**
 * The head of a handshake request in `lines` (the request line and Host
 * first): unlike `upgradeRequest`, every header line is the caller's, since
 * how they are spelled is what these tests vary.
 */
function handshakeHead(path: string, lines: string[]): string {
  return [`GET ${path} HTTP/1.1`, "Host: 127.0.0.1", ...lines].join("\r\n") +
    "\r\n\r\n";
}

/** The usual key and version lines, as `upgradeRequest` sends them. */
const KEY_AND_VERSION = [
  "Sec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==",
  "Sec-WebSocket-Version: 13",
];

/** A spelling with usual `Upgrade`/`Connection` and these protocol lines. */
function protocolLines(
  lines: (protocols: string[]) => string[],
): Spelling {
  return (_path, protocols) => [
    "Upgrade: websocket",
    "Connection: Upgrade",
    ...KEY_AND_VERSION,
    ...lines(protocols),
  ];
}

/** Each way of spelling the handshake the raw client tries. */
const SPELLINGS: Record<string, Spelling> = {
  "a,b": protocolLines((p) => [`Sec-WebSocket-Protocol: ${p.join(",")}`]),
  "a , b": protocolLines((p) => [`Sec-WebSocket-Protocol: ${p.join(" , ")}`]),
  "a, b": protocolLines((p) => [`Sec-WebSocket-Protocol: ${p.join(", ")}`]),
  "two header lines": protocolLines((p) =>
    p.map((name) => `Sec-WebSocket-Protocol: ${name}`)
  ),
  "empty elements and tabs": protocolLines((p) => [
    `Sec-WebSocket-Protocol: ,\t${p.join(" ,, \t")}\t,`,
  ]),
  "mixed case names and values, Connection: keep-alive, Upgrade": (
    _path,
    p,
  ) => [
    "upgrade: WebSocket",
    "CONNECTION: keep-alive, Upgrade",
    "sec-websocket-key: dGhlIHNhbXBsZSBub25jZQ==",
    "SEC-WEBSOCKET-VERSION: 13",
    // ", " as Deno itself splits: this spelling passed before issue 16,
    // showing that Deno reads Connection and Upgrade as token lists already.
    `sec-WebSocket-PROTOCOL: ${p.join(", ")}`,
  ],
};

/** Opens a raw connection with the handshake spelled `spelling`. */
async function rawHandshake(
  url: string,
  protocols: string[],
  spelling: Spelling,
): Promise<{ raw: RawClient; response: RawResponse }> {
  const { port, pathname, search } = new URL(url);
  const raw = await RawClient.connect(Number(port));
  const path = pathname + search;
  const response = await raw.request(
    handshakeHead(path, spelling(path, protocols)),
  );
  return { raw, response };
}

/** The raw frame client, its handshake spelled `spelling`. */
function rawClient(spelling: Spelling): Dial {
  return async (url, protocols) => {
    const { raw, response } = await rawHandshake(url, protocols, spelling);
    if (response.status !== 101) {
      raw.close();
      throw new Error(`handshake answered ${response.status}`);
    }
    return {
      protocol: response.headers.get("sec-websocket-protocol") ?? "",
      send: (text) => raw.sendFrame(Opcode.Text, encoder.encode(text)),
      next: () => within(raw.nextText(), "a frame"),
      close: async () => {
        await raw.sendFrame(Opcode.Close, new Uint8Array([0x03, 0xe8]));
        const code = await within(raw.readUntilClose(), "the close frame");
        raw.close();
        return code;
      },
    };
  };
}

const CLIENTS: Record<string, Dial> = {
  "Deno WebSocket": denoClient,
  "npm ws": nodeWsClient,
  "Python websocket-client": pythonClient,
  ...Object.fromEntries(
    Object.entries(SPELLINGS).map((
      [name, spelling],
    ) => [`raw frames, Sec-WebSocket-Protocol ${name}`, rawClient(spelling)]),
  ),
};

// ---------------------------------------------------------------------------
// The conversation
// ---------------------------------------------------------------------------

/** A JSON connection that takes events, one at a time, from its frames. */
class Speaker {
  readonly events: Json[] = [];
  #queued: Json[] = [];
  constructor(readonly connection: Connection) {}

  /** The next event (a batch frame yields its events in order). */
  async event(): Promise<Json> {
    if (this.#queued.length === 0) {
      const parsed = JSON.parse(await this.connection.next());
      this.#queued.push(...(Array.isArray(parsed) ? parsed : [parsed]));
    }
    const event = this.#queued.shift();
    this.events.push(event);
    return event;
  }

  send(event: Json): Promise<void> {
    return this.connection.send(JSON.stringify(event));
  }
}

/**
 * Every connection's events, with what differs from run to run (times,
 * epochs, tokens) replaced by its kind, after checking it is there.
 */
function comparable(events: Json[]): Json[] {
  return events.map((event) => {
    const copy = { ...event };
    if ("ts" in copy) {
      assert.equal(typeof copy.ts, "number");
      copy.ts = "<ts>";
    }
    if (copy.type === "welcome") {
      assert.match(copy.epoch, /^\w+$/);
      copy.epoch = "<epoch>";
      assert.match(copy.token, /^[\w-]+$/);
      copy.token = "<token>";
      copy.history = comparable(copy.history);
    }
    return copy;
  });
}

/**
 * The conversation, every connection made by `dial`: ada on two connections
 * of one session, bob, a message, a DM, ada's second connection leaving and
 * resuming. Returns each connection's events and the close codes.
 */
async function converse(
  chat: ChatServer,
  dial: Dial,
): Promise<{ events: Record<string, Json[]>; closes: (number | undefined)[] }> {
  const open = async (
    query: Record<string, string | number>,
    protocols: string[],
  ) => {
    const connection = await dial(chatUrl(chat, "/", query), protocols);
    assert.equal(connection.protocol, JSON_PROTOCOL);
    return new Speaker(connection);
  };
  const ada1 = await open({ nick: "ada" }, [JSON_PROTOCOL, ADA_SESSION]);
  const { epoch } = await ada1.event();
  const ada2 = await open({}, [JSON_PROTOCOL, ADA_SESSION]);
  await ada2.event();
  const bob = await open({ nick: "bob" }, [JSON_PROTOCOL]);
  await bob.event();
  await ada1.event(); // bob joined
  await ada2.event();
  await bob.send({ type: "message", text: "hi" });
  for (const speaker of [ada1, ada2, bob]) await speaker.event();
  await ada2.send({ type: "dm", to: "bob", text: "psst" });
  for (const speaker of [ada1, ada2, bob]) await speaker.event();
  const seen = ada2.events.at(-1).id;
  const closes = [await ada2.connection.close()];
  await bob.send({ type: "message", text: "while away" });
  await ada1.event();
  await bob.event();
  const back = await open({ since: seen, epoch }, [JSON_PROTOCOL, ADA_SESSION]);
  await back.event();
  // No join or leave came for ada's second connection: the next event
  // everyone gets is this message.
  await back.send({ type: "message", text: "back" });
  for (const speaker of [ada1, back, bob]) await speaker.event();
  for (const speaker of [ada1, back, bob]) {
    closes.push(await speaker.connection.close());
  }
  return {
    events: Object.fromEntries(
      Object.entries({ ada1, ada2, bob, back }).map((
        [name, speaker],
      ) => [name, comparable(speaker.events)]),
    ),
    closes,
  };
}

const JOIN_ADA = { type: "join", id: 1, ts: "<ts>", nick: "ada" };
const JOIN_BOB = { type: "join", id: 2, ts: "<ts>", nick: "bob" };
const HI = { type: "message", id: 3, ts: "<ts>", from: "bob", text: "hi" };
const PSST = {
  type: "dm",
  id: 4,
  ts: "<ts>",
  from: "ada",
  to: "bob",
  text: "psst",
};
const AWAY = {
  type: "message",
  id: 5,
  ts: "<ts>",
  from: "bob",
  text: "while away",
};
const BACK = { type: "message", id: 6, ts: "<ts>", from: "ada", text: "back" };

/**
 * A welcome as `comparable` leaves it; a person's (a session's) names their
 * read marker here and their rooms too (none in this conversation).
 */
function welcome(fields: Json): Json {
  const made = {
    type: "welcome",
    you: "ada",
    room: "lobby",
    epoch: "<epoch>",
    gap: false,
    maxMessageChars: 2000,
    editWindowSeconds: 24 * 60 * 60,
    token: "<token>",
    session: true,
    // Identity and moderation (none here: the server has no auth flags).
    verified: false,
    op: false,
    verifiedUsers: [],
    moderators: [],
    topic: "",
    slowSeconds: 0,
    private: false,
    ...fields,
  };
  return made.session ? { ...made, read: 0, rooms: [] } : made;
}

/** What every kind of client must see, event for event. */
const EXPECTED = {
  events: {
    ada1: [
      welcome({ users: ["ada"], history: [JOIN_ADA], lastId: 1 }),
      JOIN_BOB,
      HI,
      PSST,
      AWAY,
      BACK,
    ],
    ada2: [
      welcome({ users: ["ada"], history: [JOIN_ADA], lastId: 1 }),
      JOIN_BOB,
      HI,
      PSST,
    ],
    bob: [
      welcome({
        you: "bob",
        users: ["ada", "bob"],
        history: [JOIN_ADA, JOIN_BOB],
        lastId: 2,
        session: false,
      }),
      HI,
      PSST,
      AWAY,
      BACK,
    ],
    back: [
      welcome({ users: ["ada", "bob"], history: [AWAY], lastId: 5 }),
      BACK,
    ],
  },
  closes: [1000, 1000, 1000, 1000],
};

/** Without python3-websocket the Python client is skipped, except in CI. */
const skipPython = !havePythonClient() && !Deno.env.get("CI");
if (skipPython) {
  console.error(
    "interop_test.ts: no websocket module for /usr/bin/python3; the Python " +
      "client is skipped (install it: apt-get install python3-websocket)",
  );
}

for (const [name, dial] of Object.entries(CLIENTS)) {
  Deno.test({
    name: `${name}: the conversation reaches exactly the same events`,
    ignore: dial === pythonClient && skipPython,
    fn: async () => {
      await withChat({}, async (chat) => {
        assert.deepEqual(await converse(chat, dial), EXPECTED);
      });
    },
  });
}

// ---------------------------------------------------------------------------
// What the handshake answers
// ---------------------------------------------------------------------------

Deno.test("chat.v1.json,chat.session.S (no space, as npm ws sends it) gets 101 with chat.v1.json only", async () => {
  await withChat({}, async (chat) => {
    const { raw, response } = await rawHandshake(
      chatUrl(chat, "/", { nick: "ada" }),
      [JSON_PROTOCOL, ADA_SESSION],
      SPELLINGS["a,b"],
    );
    assert.equal(response.status, 101, response.body);
    assert.equal(response.headers.get("sec-websocket-protocol"), JSON_PROTOCOL);
    for (const [, value] of response.headers) assert.ok(!value.includes(ADA));
    const welcome = JSON.parse(await within(raw.nextText(), "the welcome"));
    assert.deepEqual([welcome.type, welcome.you, welcome.session], [
      "welcome",
      "ada",
      true,
    ]);
    await raw.sendFrame(Opcode.Close, new Uint8Array([0x03, 0xe8]));
    assert.equal(await within(raw.readUntilClose(), "the close"), 1000);
    raw.close();
  });
});

Deno.test("a client offering only unknown subprotocols gets in as plain text, answered with none", async () => {
  await withChat({}, async (chat) => {
    for (const spelling of Object.values(SPELLINGS)) {
      const { raw, response } = await rawHandshake(
        chatUrl(chat, "/", { nick: "tim" }),
        ["chat.v2.xml", "chat.v1.JSON"],
        spelling,
      );
      assert.equal(response.status, 101, response.body);
      assert.equal(response.headers.get("sec-websocket-protocol"), null);
      assert.equal(
        await within(raw.nextText(), "the welcome line"),
        " .... you are tim in lobby; here: tim",
      );
      await raw.sendFrame(Opcode.Close, new Uint8Array([0x03, 0xe8]));
      assert.equal(await within(raw.readUntilClose(), "the close"), 1000);
      raw.close();
    }
  });
});

Deno.test("a session offered without chat.v1.json speaks plain text as that session, never echoed", async () => {
  await withChat({}, async (chat) => {
    const tab = await jsonClient(chat, "/", { nick: "ada" }, ADA);
    for (const spelling of Object.values(SPELLINGS)) {
      const { raw, response } = await rawHandshake(
        chatUrl(chat, "/"),
        ["chat.v2.xml", ADA_SESSION],
        spelling,
      );
      assert.equal(response.status, 101, response.body);
      assert.equal(response.headers.get("sec-websocket-protocol"), null);
      assert.equal(
        await within(raw.nextText(), "the welcome line"),
        " .... you are ada in lobby; here: ada",
      );
      // Same person as the JSON tab: what it says comes from ada, and no
      // join came before it.
      await raw.sendFrame(Opcode.Text, encoder.encode("from the terminal"));
      assert.equal(
        await within(raw.nextText(), "the message"),
        "ada: from the terminal",
      );
      const event = await tab.event();
      assert.deepEqual([event.type, event.from, event.text], [
        "message",
        "ada",
        "from the terminal",
      ]);
      await raw.sendFrame(Opcode.Close, new Uint8Array([0x03, 0xe8]));
      assert.equal(await within(raw.readUntilClose(), "the close"), 1000);
      raw.close();
    }
    await closeAll(tab);
  });
});
