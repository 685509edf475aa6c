/**
 * A webhook endpoint for tests and the bench: a real HTTP server
 * (`Deno.serve`) that keeps every request it gets and answers as told
 * (a status, or never, to play a dead endpoint).
 *
 * @module
 */

import assert from "node:assert/strict";
import { createHmac } from "node:crypto";
import type { ChatServer } from "../main.ts";
import { eventually, metric } from "./test_helpers.ts";

/** The secret the tests' chats sign with. */
export const HOOK_SECRET = "test-webhook-secret-0123456789-abcdef";

/** One request the receiver got. */
export interface Received {
  /** `X-Chat-Delivery`. */
  id: string;
  /** `X-Chat-Timestamp`. */
  timestamp: string;
  /** `X-Chat-Signature`. */
  signature: string;
  contentType: string;
  body: string;
  // deno-lint-ignore no-explicit-any
  json: any;
  /** What it was answered (0: never, the endpoint was dead). */
  status: number;
}

/** How the receiver answers a request: a status, or `hang` (never). */
export type Answer = number | "hang";

/** The signature a delivery must carry (as README.md's receiver checks it). */
export function expectedSignature(
  secret: string,
  timestamp: string,
  body: string,
): string {
  return "sha256=" +
    createHmac("sha256", secret).update(`${timestamp}.${body}`).digest("hex");
}

/** A webhook endpoint on a free loopback port. */
export class Receiver {
  /** Every request, in the order they came. */
  readonly requests: Received[] = [];
  /** How the next request is answered (change it at any time). */
  answer: (request: Received) => Answer = () => 200;
  #server: Deno.HttpServer<Deno.NetAddr>;
  #hung = new Set<() => void>();
  #wake = new Set<() => void>();

  constructor(port = 0) {
    this.#server = Deno.serve(
      { port, hostname: "127.0.0.1", onListen: () => {} },
      async (request) => {
        const body = await request.text();
        const received: Received = {
          id: request.headers.get("x-chat-delivery") ?? "",
          timestamp: request.headers.get("x-chat-timestamp") ?? "",
          signature: request.headers.get("x-chat-signature") ?? "",
          contentType: request.headers.get("content-type") ?? "",
          body,
          json: JSON.parse(body),
          status: 0,
        };
        const answer = this.answer(received);
        this.requests.push(received);
        for (const wake of this.#wake) wake();
        if (answer === "hang") {
          // Until the receiver closes (a request the chat gave up on
          // included: the server cannot tell).
          await new Promise<void>((resolve) => this.#hung.add(resolve));
          return new Response(null, { status: 503 });
        }
        received.status = answer;
        return new Response(null, { status: answer });
      },
    );
  }

  /** Where it listens. */
  get url(): string {
    return `http://127.0.0.1:${this.#server.addr.port}/hook`;
  }

  /** The requests answered 2xx, in order. */
  accepted(): Received[] {
    return this.requests.filter((r) => r.status >= 200 && r.status < 300);
  }

  /** Waits until `check` holds, re-checked at each request and every 100 ms. */
  async until(
    what: string,
    check: () => boolean,
    ms = 20_000,
  ): Promise<void> {
    const deadline = Date.now() + ms;
    while (!check()) {
      const left = deadline - Date.now();
      if (left <= 0) throw new Error(`timed out after ${ms} ms: ${what}`);
      await new Promise<void>((resolve) => {
        const done = () => {
          clearTimeout(timer);
          this.#wake.delete(done);
          resolve();
        };
        const timer = setTimeout(done, Math.min(100, left));
        this.#wake.add(done);
      });
    }
  }

  /** Lets hung requests go and stops. */
  async close(): Promise<void> {
    for (const release of this.#hung) release();
    await this.#server.shutdown();
  }
}

/**
 * Waits until the chats have nothing left to deliver: the receiver answers
 * before the chat counts, so counters are read after this.
 */
export async function drained(...chats: { port: number }[]): Promise<void> {
  await eventually("the webhooks' queue empty", async () => {
    for (const chat of chats) {
      if (await metric(chat as ChatServer, "chat_webhook_queue") !== 0) {
        return false;
      }
    }
    return true;
  });
}

/**
 * Every event was accepted once, with one delivery id, and no event was
 * tried before every earlier one of its room (among those sent) had been
 * accepted: in order per room, a failing event holding its room back.
 */
export function assertOrderedOnce(requests: Received[]): void {
  const tried = new Map<string, Set<number>>();
  for (const { json } of requests) {
    if (!tried.has(json.room)) tried.set(json.room, new Set());
    tried.get(json.room)!.add(json.event.id);
  }
  const accepted = new Map<string, Set<number>>();
  const ids = new Set<string>();
  for (const request of requests) {
    const { room, event } = request.json;
    if (!accepted.has(room)) accepted.set(room, new Set());
    const done = accepted.get(room)!;
    for (const earlier of tried.get(room)!) {
      if (earlier < event.id) {
        assert.ok(
          done.has(earlier),
          `${room}: ${event.id} tried before ${earlier} was accepted`,
        );
      }
    }
    assert.ok(
      !done.has(event.id),
      `${room}: ${event.id} tried again after it was accepted`,
    );
    if (request.status < 200 || request.status >= 300) continue;
    assert.ok(!ids.has(request.id), `${request.id} accepted twice`);
    ids.add(request.id);
    done.add(event.id);
  }
}
