/**
 * Tests run once per store a real server can have: in memory, with a
 * `--data` file (in a temporary directory) and with `--redis` (a private
 * redis-server; skipped without one, except under CI), each with login
 * tokens on (`AUTH_OPTIONS`).
 *
 * @module
 */

import type { ChatOptions, ChatServer } from "../main.ts";
import { AUTH_OPTIONS } from "./auth_helpers.ts";
import { haveRedis, startRedis } from "./redis_helpers.ts";
import { withChat } from "./test_helpers.ts";

/** A store a real server runs on: its options, made and cleaned up. */
export interface StoreUnderTest {
  name: string;
  ignore: boolean;
  run(fn: (options: ChatOptions) => Promise<void>): Promise<void>;
}

/** Memory, `--data` and `--redis`. */
export const STORES: StoreUnderTest[] = [
  { name: "memory", ignore: false, run: (fn) => fn({}) },
  {
    name: "--data",
    ignore: false,
    run: async (fn) => {
      const dir = await Deno.makeTempDir({ prefix: "chat-store-" });
      try {
        await fn({ data: `${dir}/chat.db` });
      } finally {
        await Deno.remove(dir, { recursive: true });
      }
    },
  },
  {
    name: "--redis",
    ignore: !haveRedis && !Deno.env.get("CI"),
    run: async (fn) => {
      const redis = await startRedis();
      try {
        await fn({ redis: redis.url });
      } finally {
        await redis.kill();
      }
    },
  },
];

/** One test per store, each on a real server with `options` and auth on. */
export function onEveryStore(
  name: string,
  options: ChatOptions,
  fn: (chat: ChatServer) => Promise<void>,
): void {
  for (const store of STORES) {
    Deno.test({
      name: `${name} (${store.name})`,
      ignore: store.ignore,
      fn: () =>
        store.run((storeOptions) =>
          withChat({ ...AUTH_OPTIONS, ...options, ...storeOptions }, fn)
        ),
    });
  }
}
