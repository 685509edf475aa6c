/**
 * The CLI as a new user meets it: every start-up failure is one line on
 * stderr naming the cause, the flag or value and what to do, with a non-zero
 * exit and no stack trace; a bad flag adds `see --help` (not the usage) and
 * suggests the nearest flag. Each case spawns `deno run -A main.ts …`.
 *
 * @module
 */

import assert from "node:assert/strict";
import { editDistance, nearestFlag } from "../server/cli_errors.ts";
import { haveRedis, startRedis } from "./redis_helpers.ts";
import { freePort } from "./ws_frames.ts";
import { selfSignedCertificate, within } from "./test_helpers.ts";

/** What the cases may refer to: files, a port held open, a port nobody holds. */
interface Fixtures {
  dir: string;
  /** A port on 127.0.0.1 that a listener of this test holds. */
  busy: number;
  /** A port on 127.0.0.1 that nothing listens on. */
  free: number;
}

/** One start-up failure: the command line, the one stderr line, the exit. */
interface Case {
  name: string;
  args: (fx: Fixtures) => string[];
  env?: Record<string, string>;
  line: (fx: Fixtures) => string;
  code: number;
}

/** Loopback and free ports unless a case says otherwise. */
const LOOPBACK = ["--hostname", "127.0.0.1"];

const CASES: Case[] = [
  {
    name: "the page port in use",
    args: (fx) => [...LOOPBACK, "--port", `${fx.busy}`, "--ws-port", "0"],
    line: (fx) =>
      `deno-chat: --port ${fx.busy} is in use (another deno-chat?): choose another with --port N or stop the other process`,
    code: 1,
  },
  {
    name: "the chat port in use",
    args: (fx) => [...LOOPBACK, "--port", "0", "--ws-port", `${fx.busy}`],
    line: (fx) =>
      `deno-chat: --ws-port ${fx.busy} is in use (another deno-chat?): choose another with --ws-port N or stop the other process`,
    code: 1,
  },
  {
    name: "an address that is not this machine's",
    // TEST-NET-1: never a local address; binding to it sends nothing.
    args: () => ["--hostname", "192.0.2.1", "--port", "0", "--ws-port", "0"],
    line: () =>
      "deno-chat: --hostname 192.0.2.1 is not an address of this machine: give one of its addresses, or 0.0.0.0 for all",
    code: 1,
  },
  {
    name: "--redis without a scheme",
    args: () => ["--redis", "localhost:6379"],
    line: () =>
      "deno-chat: --redis localhost:6379 is not a Redis URL: write it as redis://localhost:6379 (see --help)",
    code: 2,
  },
  {
    name: "REDIS_URL with another scheme",
    args: () => [],
    env: { REDIS_URL: "http://127.0.0.1:6379" },
    line: () =>
      "deno-chat: REDIS_URL: --redis http://127.0.0.1:6379 is not a Redis URL (redis://, rediss:// or redis+sentinel://): write it as redis://127.0.0.1:6379 (see --help)",
    code: 2,
  },
  {
    name: "a Redis nobody listens for",
    args: (fx) => [
      ...LOOPBACK,
      "--port",
      "0",
      "--ws-port",
      "0",
      "--redis",
      `redis://127.0.0.1:${fx.free}`,
    ],
    line: (fx) =>
      `deno-chat: cannot reach Redis at redis://127.0.0.1:${fx.free} (connect ECONNREFUSED 127.0.0.1:${fx.free}): start redis-server there, or correct --redis`,
    code: 1,
  },
  {
    name: "a Sentinel URL without its master's name",
    args: () => ["--redis", "redis+sentinel://127.0.0.1:26379"],
    line: () =>
      "deno-chat: --redis redis+sentinel://127.0.0.1:26379 names no master: write it as redis+sentinel://HOST:PORT,HOST:PORT/MASTER (a password as redis+sentinel://:PASSWORD@HOST:PORT/MASTER) (see --help)",
    code: 2,
  },
  {
    name: "a Sentinel URL with a bad address, its password left out",
    args: () => ["--redis", "redis+sentinel://:pw@127.0.0.1:26379,h:x/m"],
    line: () =>
      'deno-chat: --redis redis+sentinel://:***@127.0.0.1:26379,h:x/m has a Sentinel address "h:x" that is not HOST:PORT: write it as redis+sentinel://HOST:PORT,HOST:PORT/MASTER (a password as redis+sentinel://:PASSWORD@HOST:PORT/MASTER) (see --help)',
    code: 2,
  },
  {
    name: "Sentinels nobody listens for",
    args: (fx) => [
      ...LOOPBACK,
      "--port",
      "0",
      "--ws-port",
      "0",
      "--redis",
      `redis+sentinel://127.0.0.1:${fx.free}/chat`,
    ],
    line: (fx) =>
      `deno-chat: cannot reach Redis at redis+sentinel://127.0.0.1:${fx.free}/chat (no Sentinel said where master "chat" is: 127.0.0.1:${fx.free}: connect ECONNREFUSED 127.0.0.1:${fx.free}): start redis-server there, or correct --redis`,
    code: 1,
  },
  {
    name: "--redis-cluster with a node that is not a Redis URL",
    args: () => ["--redis-cluster", "redis://127.0.0.1:7000,localhost:7001"],
    line: () =>
      "deno-chat: --redis-cluster localhost:7001 is not a Redis URL: write it as redis://localhost:7001 (see --help)",
    code: 2,
  },
  {
    name: "--redis-cluster with a Sentinel URL",
    args: () => ["--redis-cluster", "redis+sentinel://127.0.0.1:26379/m"],
    line: () =>
      "deno-chat: --redis-cluster redis+sentinel://127.0.0.1:26379/m is a Sentinel URL: a cluster's nodes are redis://HOST:PORT (Sentinel goes with --redis) (see --help)",
    code: 2,
  },
  {
    name: "--redis and --redis-cluster together",
    args: () => [
      "--redis",
      "redis://127.0.0.1:6379",
      "--redis-cluster",
      "redis://127.0.0.1:7000",
    ],
    line: () =>
      "deno-chat: --redis and --redis-cluster cannot be used together: give one (--redis-cluster for a Redis Cluster's nodes) (see --help)",
    code: 2,
  },
  {
    name: "--redis-wait-replicas with --redis-cluster",
    args: () => [
      "--redis-cluster",
      "redis://127.0.0.1:7000",
      "--redis-wait-replicas",
      "1",
    ],
    line: () =>
      "deno-chat: --redis-wait-replicas does not work with --redis-cluster yet (WAIT is per master): use --redis (see --help)",
    code: 2,
  },
  {
    name: "a Redis Cluster nobody listens for",
    args: (fx) => [
      ...LOOPBACK,
      "--port",
      "0",
      "--ws-port",
      "0",
      "--redis-cluster",
      `redis://127.0.0.1:${fx.free}`,
    ],
    line: (fx) =>
      `deno-chat: cannot reach Redis Cluster at redis://127.0.0.1:${fx.free} (All the root nodes are unavailable): start the cluster there, or correct --redis-cluster`,
    code: 1,
  },
  {
    // Webhooks work on a cluster: their outbox is the first to find none.
    name: "--webhook with a Redis Cluster nobody listens for",
    args: (fx) => [
      ...LOOPBACK,
      "--port",
      "0",
      "--ws-port",
      "0",
      "--redis-cluster",
      `redis://127.0.0.1:${fx.free}`,
      "--webhook",
      "http://127.0.0.1:9/hook",
      "--webhook-secret",
      "0123456789abcdef0123456789abcdef",
    ],
    line: (fx) =>
      `deno-chat: cannot reach Redis Cluster at redis://127.0.0.1:${fx.free} (All the root nodes are unavailable): start the cluster there, or correct --redis-cluster`,
    code: 1,
  },
  {
    name: "--cert and --key swapped",
    args: (fx) => [
      ...LOOPBACK,
      "--port",
      "0",
      "--ws-port",
      "0",
      "--cert",
      `${fx.dir}/key.pem`,
      "--key",
      `${fx.dir}/cert.pem`,
    ],
    line: () =>
      "deno-chat: --cert holds a private key and --key a certificate: swap the two files",
    code: 1,
  },
  {
    name: "a --key of another certificate",
    args: (fx) => [
      ...LOOPBACK,
      "--port",
      "0",
      "--ws-port",
      "0",
      "--cert",
      `${fx.dir}/cert.pem`,
      "--key",
      `${fx.dir}/other-key.pem`,
    ],
    line: () =>
      "deno-chat: --key is not the private key of the --cert certificate: give the key made with it",
    code: 1,
  },
  {
    name: "a --cert that is no PEM at all",
    args: (fx) => [
      ...LOOPBACK,
      "--port",
      "0",
      "--ws-port",
      "0",
      "--cert",
      `${fx.dir}/notes.txt`,
      "--key",
      `${fx.dir}/key.pem`,
    ],
    line: () =>
      "deno-chat: --cert holds no PEM certificate (-----BEGIN CERTIFICATE-----): give the certificate file",
    code: 1,
  },
  {
    name: "a --cert file that does not exist",
    args: (fx) => [
      "--cert",
      `${fx.dir}/missing.pem`,
      "--key",
      `${fx.dir}/key.pem`,
    ],
    line: (fx) =>
      `deno-chat: --cert ${fx.dir}/missing.pem: no such file: give the path of a readable PEM file (see --help)`,
    code: 2,
  },
  {
    name: "a --key file that does not exist",
    args: (fx) => [
      "--cert",
      `${fx.dir}/cert.pem`,
      "--key",
      `${fx.dir}/missing.pem`,
    ],
    line: (fx) =>
      `deno-chat: --key ${fx.dir}/missing.pem: no such file: give the path of a readable PEM file (see --help)`,
    code: 2,
  },
  {
    name: "--cert without --key",
    args: (fx) => ["--cert", `${fx.dir}/cert.pem`],
    line: () =>
      "deno-chat: --cert and --key go together: give both, the certificate and its private key (see --help)",
    code: 2,
  },
  {
    name: "a misspelt flag",
    args: () => ["--portt", "3000"],
    line: () =>
      "deno-chat: unknown flag --portt: did you mean --port? (see --help)",
    code: 2,
  },
  {
    name: "two letters swapped in a flag",
    args: () => ["--ws-prot=3001"],
    line: () =>
      "deno-chat: unknown flag --ws-prot: did you mean --ws-port? (see --help)",
    code: 2,
  },
  {
    name: "a flag like none",
    args: () => ["--bogus"],
    line: () => "deno-chat: unknown flag --bogus (see --help)",
    code: 2,
  },
  {
    name: "a bad value",
    args: () => ["--port", "abc"],
    line: () =>
      'deno-chat: --port must be a whole number from 0 to 65535, got "abc" (see --help)',
    code: 2,
  },
  {
    name: "an API key too short",
    args: () => ["--api-key", "short"],
    line: () =>
      "deno-chat: --api-key must be at least 32 characters (got 5): make one with `openssl rand -hex 32` (see --help)",
    code: 2,
  },
  {
    name: "a value out of range",
    args: () => ["--port", "70000"],
    line: () =>
      'deno-chat: --port must be a whole number from 0 to 65535, got "70000" (see --help)',
    code: 2,
  },
  {
    name: "a bad value from the environment",
    args: () => [],
    env: { WS_PORT: "abc" },
    line: () =>
      'deno-chat: WS_PORT: --ws-port must be a whole number from 0 to 65535, got "abc" (see --help)',
    code: 2,
  },
  {
    name: "a flag without its value",
    args: () => ["--port", "--quiet"],
    line: () => "deno-chat: --port needs a value: --port N (see --help)",
    code: 2,
  },
  {
    name: "a switch given a value",
    args: () => ["--quiet=yes"],
    line: () => "deno-chat: --quiet takes no value (see --help)",
    code: 2,
  },
  {
    name: "a bare port number",
    args: () => ["3000"],
    line: () =>
      'deno-chat: unexpected argument "3000": did you mean --port 3000? (see --help)',
    code: 2,
  },
];

/**
 * Runs `deno run -A main.ts ARGS` to its exit. `--quiet` is Deno's: it keeps
 * Deno's own "Download …" lines (a first run) out of the CLI's stderr. A
 * case that starts a server instead of failing is killed and fails.
 */
async function run(
  args: string[],
  env: Record<string, string> = {},
): Promise<{ code: number; stdout: string; stderr: string }> {
  const child = new Deno.Command(Deno.execPath(), {
    args: ["run", "--quiet", "-A", "main.ts", ...args],
    // The repository, where main.ts is.
    cwd: new URL("..", import.meta.url),
    env,
    stdin: "null",
    stdout: "piped",
    stderr: "piped",
  }).spawn();
  const output = child.output();
  try {
    await within(child.status, "the CLI to exit", 15_000);
  } catch (error) {
    child.kill("SIGKILL");
    await output;
    throw error;
  }
  const { code, stdout, stderr } = await output;
  const decoder = new TextDecoder();
  return {
    code,
    stdout: decoder.decode(stdout),
    stderr: decoder.decode(stderr),
  };
}

Deno.test("each start-up failure is one line naming the flag and what to do, no stack", async (t) => {
  const dir = await Deno.makeTempDir();
  const listener = Deno.listen({ hostname: "127.0.0.1", port: 0 });
  try {
    const mine = await selfSignedCertificate();
    const other = await selfSignedCertificate();
    await Deno.writeTextFile(`${dir}/cert.pem`, mine.cert);
    await Deno.writeTextFile(`${dir}/key.pem`, mine.key);
    await Deno.writeTextFile(`${dir}/other-key.pem`, other.key);
    await Deno.writeTextFile(`${dir}/notes.txt`, "not a certificate\n");
    const fx: Fixtures = { dir, busy: listener.addr.port, free: freePort() };
    for (const testCase of CASES) {
      await t.step(testCase.name, async () => {
        const args = testCase.args(fx);
        const { code, stdout, stderr } = await run(args, testCase.env);
        const what = `deno-chat ${args.join(" ")}`;
        assert.equal(stderr, testCase.line(fx) + "\n", what);
        assert.equal(code, testCase.code, `exit code of ${what}`);
        assert.equal(stdout, "", `nothing on stdout from ${what}`);
        assert.doesNotMatch(stderr, /^ {4}at /m, `no stack from ${what}`);
      });
    }
  } finally {
    listener.close();
    await Deno.remove(dir, { recursive: true });
  }
});

Deno.test("--help shows each default once in parentheses, never doubled", async () => {
  const { code, stdout } = await run(["--help"]);
  assert.equal(code, 0);
  assert.doesNotMatch(stdout, /\(default \(/);
  assert.match(stdout, /\[REDIS_URL\] \(default in memory\)$/m);
  assert.match(stdout, /or \* for any \(default same host\)$/m);
});

Deno.test("the nearest flag is a typo's (edit distance), never a stretch", () => {
  assert.equal(editDistance("portt", "port"), 1);
  assert.equal(editDistance("prot", "port"), 1); // two letters swapped
  assert.equal(editDistance("kitten", "sitting"), 3);
  const flags = ["port", "ws-port", "hostname", "max-rooms", "quiet"];
  assert.equal(nearestFlag("portt", flags), "port");
  assert.equal(nearestFlag("ws_port", flags), "ws-port");
  assert.equal(nearestFlag("max-room", flags), "max-rooms");
  assert.equal(nearestFlag("Quiet", flags), "quiet");
  assert.equal(nearestFlag("x", flags), undefined);
  assert.equal(nearestFlag("bogus", flags), undefined);
});

/**
 * Starts the CLI on free loopback ports and returns its `start` log line,
 * then stops it (SIGTERM) and waits for the exit.
 */
async function startLine(extra: string[]): Promise<string> {
  const child = new Deno.Command(Deno.execPath(), {
    args: [
      "run",
      "--quiet",
      "-A",
      "main.ts",
      ...LOOPBACK,
      "--port",
      "0",
      "--ws-port",
      "0",
      ...extra,
    ],
    // The repository, where main.ts is.
    cwd: new URL("..", import.meta.url),
    stdin: "null",
    stdout: "null",
    stderr: "piped",
  }).spawn();
  const lines = child.stderr.pipeThrough(new TextDecoderStream()).getReader();
  let text = "";
  try {
    while (!/ start .*\n/.test(text)) {
      const { value, done } = await within(lines.read(), "the start line");
      if (done) break;
      text += value;
    }
  } finally {
    child.kill("SIGTERM");
    await lines.cancel();
    await child.status;
  }
  const line = text.split("\n").find((line) => / INFO start /.test(line));
  assert.ok(line, `a start line in: ${text}`);
  return line;
}

Deno.test("the start log line says the store is in memory", async () => {
  assert.match(await startLine([]), / store=memory /);
});

Deno.test({
  name: "the start log line says the store is Redis with --redis",
  // In CI a missing redis-server fails the test instead of skipping it.
  ignore: !haveRedis && !Deno.env.get("CI"),
  fn: async () => {
    const redis = await startRedis();
    try {
      assert.match(await startLine(["--redis", redis.url]), / store=redis /);
    } finally {
      await redis.kill();
    }
  },
});
