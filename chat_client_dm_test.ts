/**
 * Tests of the terminal client's `/msg` (direct messages), which need the
 * server's DM support (protocol additions, issue 12). Kept apart from
 * chat_client_test.ts until the server has it.
 *
 * @module
 */

import assert from "node:assert/strict";
import {
  chatUrl,
  jsonClient,
  WAIT_MS,
  withChat,
  within,
} from "./test_helpers.ts";

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

Deno.test("client: /msg to a nick not in the room shows the server's error", async () => {
  await withChat({}, async (chat) => {
    await withClient([chatUrl(chat), "--nick", "ada"], async (ada) => {
      await ada.welcomed();
      await ada.type("/msg nobody hello?");
      await ada.until(/^ \.\.\.\. error: /);
      await ada.type("/msg nobody");
      await ada.expect(" .... usage: /msg NICK TEXT");
      await ada.closeStdin();
      assert.equal((await ada.exit()).code, 0);
    });
  });
});
