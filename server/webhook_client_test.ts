/**
 * The webhooks' HTTP/1.1 client against servers that answer byte by byte
 * as each test says (a `Deno.listen` socket): bodies by length, chunked or
 * to the end, interim answers, closed and stale connections, a server that
 * never answers, and one that answers nonsense; and against `Deno.serve`.
 *
 * @module
 */

import assert from "node:assert/strict";
import {
  MAX_RESPONSE_BODY_BYTES,
  WebhookClient,
  WebhookRequestError,
} from "./webhook_client.ts";
import { selfSignedCertificate } from "../tests/test_helpers.ts";

/** What a raw server got: each request's head and body, a char per byte. */
interface RawServer {
  url: string;
  requests: string[];
  /** Connections accepted so far. */
  connections: number;
  close(): Promise<void>;
}

/**
 * A server that reads each request whole (by its Content-Length) and
 * writes what `answer` says for it (then closes if told), on one port.
 */
function rawServer(
  answer: (request: string, n: number) => { bytes: string; close?: boolean },
): RawServer {
  const listener = Deno.listen({ hostname: "127.0.0.1", port: 0 });
  const conns = new Set<Deno.Conn>();
  const server: RawServer = {
    url: `http://127.0.0.1:${listener.addr.port}/hook?x=1`,
    requests: [],
    connections: 0,
    close: async () => {
      listener.close();
      for (const conn of conns) {
        try {
          conn.close();
        } catch {
          // closed
        }
      }
      await accepting;
      await Promise.allSettled(serving);
    },
  };
  const serving: Promise<void>[] = [];
  const accepting = (async () => {
    for await (const conn of listener) {
      server.connections++;
      conns.add(conn);
      serving.push(serve(conn));
    }
  })().catch(() => {});
  // A char per byte, so lengths are the bytes' (Content-Length).
  const bytesAsText = (bytes: Uint8Array) =>
    Array.from(bytes, (byte) => String.fromCharCode(byte)).join("");
  async function serve(conn: Deno.Conn): Promise<void> {
    let text = "";
    const buffer = new Uint8Array(65536);
    try {
      for (;;) {
        const end = text.indexOf("\r\n\r\n");
        const length = Number(/content-length: (\d+)/i.exec(text)?.[1] ?? 0);
        if (end !== -1 && text.length >= end + 4 + length) {
          const request = text.slice(0, end + 4 + length);
          text = text.slice(request.length);
          server.requests.push(request);
          const { bytes, close } = answer(request, server.requests.length);
          if (bytes) await conn.write(new TextEncoder().encode(bytes));
          if (close) break;
          continue;
        }
        const n = await conn.read(buffer);
        if (n === null) break;
        text += bytesAsText(buffer.subarray(0, n));
      }
    } catch {
      // closed by the test
    }
    conns.delete(conn);
    try {
      conn.close();
    } catch {
      // closed
    }
  }
  return server;
}

/** Runs `fn` with a client and a raw server, both closed after. */
async function withRaw(
  answer: Parameters<typeof rawServer>[0],
  fn: (client: WebhookClient, server: RawServer) => Promise<void>,
): Promise<void> {
  const server = rawServer(answer);
  const client = new WebhookClient(server.url);
  try {
    await fn(client, server);
  } finally {
    client.close();
    await server.close();
  }
}

const H = "X-Chat-Delivery: d1\r\n";

Deno.test("a POST is what it says: path and query, Host, Content-Type, the caller's headers, Content-Length in bytes, the body", async () => {
  await withRaw(
    () => ({ bytes: "HTTP/1.1 204 No Content\r\n\r\n" }),
    async (client, server) => {
      const body = '{"text":"héllo 😀"}';
      assert.equal(await client.post(H, body, 1000), 204);
      const [request] = server.requests;
      const [head, sent] = request.split("\r\n\r\n");
      const lines = head.split("\r\n");
      assert.equal(lines[0], "POST /hook?x=1 HTTP/1.1");
      assert.ok(lines.includes(`Host: ${new URL(server.url).host}`));
      assert.ok(lines.includes("Content-Type: application/json"));
      assert.ok(lines.includes("X-Chat-Delivery: d1"));
      assert.ok(
        lines.includes(
          `Content-Length: ${new TextEncoder().encode(body).length}`,
        ),
      );
      assert.equal(
        new TextDecoder().decode(
          Uint8Array.from(sent, (char) => char.charCodeAt(0)),
        ),
        body,
      );
    },
  );
});

Deno.test("answers with a body by length, chunked (with trailers), or none, keep the connection for the next request", async () => {
  const answers = [
    "HTTP/1.1 200 OK\r\nContent-Length: 5\r\n\r\nhello",
    "HTTP/1.1 202 Accepted\r\nTransfer-Encoding: chunked\r\n\r\n3;x=y\r\nabc\r\n2\r\nde\r\n0\r\nX-Trailer: 1\r\n\r\n",
    "HTTP/1.1 100 Continue\r\n\r\nHTTP/1.1 201 Created\r\ncontent-length: 0\r\n\r\n",
    "HTTP/1.1 500 Oops\r\nContent-Length: 2\r\n\r\nno",
    "HTTP/1.1 204 No Content\r\n\r\n",
  ];
  await withRaw(
    (_, n) => ({ bytes: answers[n - 1] }),
    async (client, server) => {
      const statuses = [];
      for (let i = 0; i < answers.length; i++) {
        statuses.push(await client.post(H, "{}", 1000));
      }
      assert.deepEqual(statuses, [200, 202, 201, 500, 204]);
      assert.equal(server.connections, 1, "one kept-alive connection");
    },
  );
});

Deno.test("exchange keeps the body (by length, chunked, to the end), refuses one past its limit or cut short", async () => {
  const answers = [
    'HTTP/1.1 200 OK\r\nContent-Length: 7\r\n\r\n{"a":1}',
    "HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n3;x=y\r\nabc\r\n2\r\nde\r\n0\r\nX-Trailer: 1\r\n\r\n",
    "HTTP/1.1 200 OK\r\nContent-Length: 11\r\n\r\n0123456789a",
    "HTTP/1.1 200 OK\r\nContent-Length: 0\r\n\r\n",
  ];
  await withRaw(
    (_, n) => ({ bytes: answers[n - 1] }),
    async (client, server) => {
      const text = async () => {
        const { status, body } = await client.exchange(H, "{}", 1000, 10);
        return [status, new TextDecoder().decode(body)];
      };
      assert.deepEqual(await text(), [200, '{"a":1}']);
      assert.deepEqual(await text(), [200, "abcde"]);
      await assert.rejects(text(), /longer than 10 bytes/);
      // The long one's connection went; a new one carries the next.
      assert.deepEqual(await text(), [200, ""]);
      assert.equal(server.connections, 2);
    },
  );
  await withRaw(
    () => ({
      bytes: "HTTP/1.0 200 OK\r\n\r\nto the end",
      close: true,
    }),
    async (client) => {
      const { body } = await client.exchange(H, "{}", 1000, 100);
      assert.equal(new TextDecoder().decode(body), "to the end");
    },
  );
  await withRaw(
    () => ({
      bytes: "HTTP/1.1 200 OK\r\nContent-Length: 50\r\n\r\nshort",
      close: true,
    }),
    async (client) => {
      await assert.rejects(
        client.exchange(H, "{}", 1000, 100),
        /cut short/,
      );
    },
  );
});

Deno.test("a connection the server closes (Connection: close, HTTP/1.0, a body to the end) is not used again", async () => {
  const answers = [
    {
      bytes:
        "HTTP/1.1 200 OK\r\nConnection: close\r\nContent-Length: 0\r\n\r\n",
      close: true,
    },
    { bytes: "HTTP/1.0 200 OK\r\nContent-Length: 0\r\n\r\n", close: true },
    { bytes: "HTTP/1.1 200 OK\r\n\r\nuntil the end", close: true },
    { bytes: "HTTP/1.1 204 No Content\r\n\r\n" },
  ];
  await withRaw((_, n) => answers[n - 1], async (client, server) => {
    for (let i = 0; i < answers.length; i++) {
      assert.equal(await client.post(H, "{}", 1000), i === 3 ? 204 : 200);
    }
    assert.equal(server.connections, 4);
  });
});

Deno.test("a kept-alive connection the server closed meanwhile: the request goes again on a new one, once", async () => {
  // The first answer keeps the connection (as far as the client knows),
  // then the server closes it without a word.
  await withRaw(
    (_, n) =>
      n === 1
        ? { bytes: "HTTP/1.1 204 No Content\r\n\r\n", close: true }
        : { bytes: "HTTP/1.1 204 No Content\r\n\r\n" },
    async (client, server) => {
      assert.equal(await client.post(H, "{}", 1000), 204);
      await new Promise((resolve) => setTimeout(resolve, 50));
      assert.equal(await client.post(H, "{}", 1000), 204);
      assert.equal(server.connections, 2);
      assert.equal(
        server.requests.length,
        2,
        "the second sent once it could be",
      );
    },
  );
});

Deno.test("no answer within the timeout, a refused connection, and nonsense are errors, not statuses", async () => {
  await withRaw(() => ({ bytes: "" }), async (client) => {
    const started = performance.now();
    await assert.rejects(
      () => client.post(H, "{}", 300),
      (error) =>
        error instanceof WebhookRequestError &&
        /no answer within 300 ms/.test(error.message),
    );
    assert.ok(performance.now() - started < 2000, "cut off near its timeout");
  });
  const probe = Deno.listen({ hostname: "127.0.0.1", port: 0 });
  const port = probe.addr.port;
  probe.close();
  const refused = new WebhookClient(`http://127.0.0.1:${port}/`);
  await assert.rejects(
    () => refused.post(H, "{}", 1000),
    (error) =>
      error instanceof WebhookRequestError &&
      /cannot connect/.test(error.message),
  );
  refused.close();
  await withRaw(
    () => ({ bytes: "SSH-2.0-OpenSSH\r\n\r\n" }),
    async (client) => {
      await assert.rejects(
        () => client.post(H, "{}", 1000),
        /not an HTTP\/1.x response/,
      );
    },
  );
  await withRaw(
    () => ({ bytes: "HTTP/1.1 200 OK\r\nContent-Length: lots\r\n\r\n" }),
    async (client) => {
      await assert.rejects(() => client.post(H, "{}", 1000), /Content-Length/);
    },
  );
});

Deno.test("a body longer than MAX_RESPONSE_BODY_BYTES is left unread: its status counts, its connection goes", async () => {
  const big = "x".repeat(MAX_RESPONSE_BODY_BYTES + 1);
  await withRaw(
    (_, n) => ({
      bytes: n === 1
        ? `HTTP/1.1 200 OK\r\nContent-Length: ${big.length}\r\n\r\n${big}`
        : "HTTP/1.1 204 No Content\r\n\r\n",
    }),
    async (client, server) => {
      assert.equal(await client.post(H, "{}", 1000), 200);
      assert.equal(await client.post(H, "{}", 1000), 204);
      assert.equal(server.connections, 2);
    },
  );
});

Deno.test("against Deno.serve: many requests, some at once; credentials in the URL become Basic auth", async () => {
  const auth: (string | null)[] = [];
  const server = Deno.serve({
    hostname: "127.0.0.1",
    port: 0,
    onListen: () => {},
  }, async (request) => {
    auth.push(request.headers.get("authorization"));
    await request.text();
    return new Response("ok", { status: 200 });
  });
  const client = new WebhookClient(
    `http://app:s%20ecret@127.0.0.1:${server.addr.port}/in`,
  );
  try {
    const statuses = await Promise.all(
      Array.from({ length: 8 }, () => client.post(H, "{}", 2000)),
    );
    for (let i = 0; i < 20; i++) {
      statuses.push(await client.post(H, "{}", 2000));
    }
    assert.deepEqual(statuses, statuses.map(() => 200));
    assert.equal(auth.length, 28);
    assert.ok(auth.every((a) => a === `Basic ${btoa("app:s ecret")}`));
  } finally {
    client.close();
    await server.shutdown();
  }
});

Deno.test("https: a certificate Deno trusts (DENO_CERT here) carries the POST; an unknown issuer is an error", async () => {
  const { cert, key } = await selfSignedCertificate();
  const dir = await Deno.makeTempDir({ prefix: "chat-webhook-tls-" });
  const server = Deno.serve(
    { hostname: "127.0.0.1", port: 0, cert, key, onListen: () => {} },
    async (request) => {
      await request.text();
      return new Response(null, { status: 204 });
    },
  );
  const url = `https://127.0.0.1:${server.addr.port}/hook`;
  try {
    const untrusted = new WebhookClient(url);
    await assert.rejects(
      () => untrusted.post(H, "{}", 2000),
      (error) =>
        error instanceof WebhookRequestError &&
        /certificate|UnknownIssuer/i.test(error.message),
    );
    untrusted.close();
    await Deno.writeTextFile(`${dir}/ca.pem`, cert);
    const script = `
      const { WebhookClient } = await import(${
      JSON.stringify(new URL("./webhook_client.ts", import.meta.url).href)
    });
      const client = new WebhookClient(${JSON.stringify(url)});
      console.log(await client.post("X-Chat-Delivery: d1\\r\\n", "{}", 2000));
      client.close();
    `;
    const { code, stdout, stderr } = await new Deno.Command(Deno.execPath(), {
      args: ["eval", script],
      env: { DENO_CERT: `${dir}/ca.pem` },
      stdout: "piped",
      stderr: "piped",
    }).output();
    assert.equal(code, 0, new TextDecoder().decode(stderr));
    assert.equal(new TextDecoder().decode(stdout).trim(), "204");
  } finally {
    await server.shutdown();
    await Deno.remove(dir, { recursive: true });
  }
});
