/**
 * `deno run -A bench/search.ts`: what search costs where issue 27 sets its
 * targets, on a data file written here in a tmp dir (removed at the end):
 *
 * - `--part query`: a file of `--events` messages (default 1,000,000, in
 *   `--rooms` rooms) written through the archive directly; then `--queries`
 *   two-word searches (words drawn as the messages' are, so common words
 *   come up as often as people use them) in the biggest room through the
 *   store (`MemoryStore` over the file: the index, each match's event, the
 *   rule), 20 results each: p50 / p99 / max; the same for the "hard" pairs
 *   (two of the 100 commonest words, whose doclists are the longest), a
 *   phrase and a prefix; the index's size against the events' (SQLite's
 *   `dbstat`, pages of each table); and how long an upgrade from schema 2
 *   takes to build the index of that file.
 * - `--part posting --base DIR`: server CPU per delivery of bench scenario
 *   (a) and (b) with `--data`, this build (which indexes every message)
 *   against DIR's `main.ts` (another build: one without search), alternating
 *   `--runs` rounds per scenario and protocol on fresh files; `--scale N`
 *   sends N times the messages, for steadier figures on a busy machine.
 *
 * Usage: deno run -A bench/search.ts [--part query,posting] [--events 1000000]
 *          [--rooms 1] [--queries 2000] [--text-words 10] [--base DIR]
 *          [--runs 3] [--scale 1] [--scenario a,b]
 *
 * @module
 */

import { parseArgs } from "node:util";
import { DatabaseSync } from "node:sqlite";
import { SqliteArchive, SqliteStore } from "../stores/sqlite_store.ts";
import type { RoomStore } from "../stores/rooms.ts";
import type { RoomEvent } from "../wire/protocol.ts";
import { parseSearch, type SearchQuery } from "../wire/search.ts";
import { freePort } from "../tests/ws_frames.ts";
import type { LoadReport } from "./load.ts";

/** Events written per transaction while the file is made. */
const FILL_BATCH = 10_000;
/** Distinct words the messages are made of. */
const VOCABULARY = 30_000;
/** Results a search asks for (the default of the frame). */
const LIMIT = 20;
/** A server must serve within this after being spawned. */
const READY_TIMEOUT_MS = 60_000;

const repoDir = new URL("..", import.meta.url).pathname;
const benchDir = new URL(".", import.meta.url).pathname;

function log(text: string): void {
  console.error(`[search] ${text}`);
}

/** Percentile (nearest rank) of `values`. */
function percentile(values: number[], p: number): number {
  const sorted = values.toSorted((a, b) => a - b);
  return sorted[Math.min(sorted.length - 1, Math.ceil(p * sorted.length) - 1)];
}

/** A small seeded PRNG (mulberry32), so every run writes the same file. */
function prng(seed: number): () => number {
  return () => {
    seed = (seed + 0x6d2b79f5) | 0;
    let t = Math.imul(seed ^ (seed >>> 15), 1 | seed);
    t = (t + Math.imul(t ^ (t >>> 7), 61 | t)) ^ t;
    return ((t ^ (t >>> 14)) >>> 0) / 4294967296;
  };
}

/**
 * Words as people use them: made of syllables, some with an accent (so the
 * index folds them), drawn by Zipf's law (the n-th commonest about 1/n as
 * often as the first).
 */
class Words {
  readonly words: string[] = [];
  #cdf: Float64Array;
  #random: () => number;

  constructor(random: () => number) {
    this.#random = random;
    const syllables = ["ka", "lo", "mi", "ne", "ru", "sa", "to", "vi", "de"]
      .flatMap((a) => ["", "n", "r", "s"].map((b) => a + b));
    const seen = new Set<string>();
    while (this.words.length < VOCABULARY) {
      const length = 1 + Math.floor(random() * 3);
      let word = "";
      for (let i = 0; i < length; i++) {
        word += syllables[Math.floor(random() * syllables.length)];
      }
      if (random() < 0.05) word = word.replace("e", "é");
      if (seen.has(word)) continue;
      seen.add(word);
      this.words.push(word);
    }
    this.#cdf = new Float64Array(VOCABULARY);
    let sum = 0;
    for (let i = 0; i < VOCABULARY; i++) this.#cdf[i] = sum += 1 / (i + 1);
    for (let i = 0; i < VOCABULARY; i++) this.#cdf[i] /= sum;
  }

  /** A word drawn by Zipf's law. */
  draw(): string {
    const x = this.#random();
    let low = 0;
    let high = VOCABULARY - 1;
    while (low < high) {
      const middle = (low + high) >> 1;
      if (this.#cdf[middle] < x) low = middle + 1;
      else high = middle;
    }
    return this.words[low];
  }

  /** A message of about `count` words, a capital to start and a full stop. */
  message(count: number): string {
    const n = Math.max(1, count - 3 + Math.floor(this.#random() * 7));
    const text = Array.from({ length: n }, () => this.draw()).join(" ");
    return text[0].toUpperCase() + text.slice(1) + ".";
  }
}

/** Opens a data file for writing it directly (no server). */
function openArchive(path: string): SqliteArchive {
  return SqliteArchive.open({
    path,
    historySize: 100,
    maxHistoryBytes: 1 << 20,
    maxRooms: 1_000,
    onEvict: () => {},
    retainEvents: Number.MAX_SAFE_INTEGER,
    retainDays: 0,
  });
}

/** Bytes of each table (and its indexes) in the file, by `dbstat`. */
function tableBytes(path: string): Map<string, number> {
  const db = new DatabaseSync(path, { readOnly: true });
  try {
    const bytes = new Map<string, number>();
    for (
      const row of db.prepare(
        "SELECT name, sum(pgsize) AS bytes FROM dbstat GROUP BY name",
      ).iterate()
    ) {
      bytes.set(String(row.name), Number(row.bytes));
    }
    return bytes;
  } finally {
    db.close();
  }
}

const mib = (bytes: number) => `${(bytes / 2 ** 20).toFixed(1)} MiB`;

/** p50 / p99 / max of `times` (ms), as a line. */
function timing(label: string, times: number[]): string {
  return `${label}: p50 ${percentile(times, 0.5).toFixed(2)} ms, p99 ${
    percentile(times, 0.99).toFixed(2)
  } ms, max ${Math.max(...times).toFixed(2)} ms (${times.length} searches)`;
}

/** Runs `queries` through the store; the time of each, in ms, and results. */
async function timeSearches(
  store: RoomStore,
  room: string,
  queries: string[],
): Promise<{ times: number[]; found: number }> {
  const times: number[] = [];
  let found = 0;
  for (const q of queries) {
    const query = parseSearch(q) as SearchQuery;
    const started = performance.now();
    const page = await store.search(room, {
      query,
      limit: LIMIT,
      visible: () => true,
    });
    times.push(performance.now() - started);
    found += page.events.length;
  }
  return { times, found };
}

async function queryPart(
  dir: string,
  n: (name: string) => number,
  out: string[],
): Promise<void> {
  const path = `${dir}/search.db`;
  const random = prng(27);
  const words = new Words(random);
  const events = n("events");
  const rooms = n("rooms");
  let started = performance.now();
  const archive = openArchive(path);
  const names = Array.from({ length: rooms }, (_, i) => `room-${i}`);
  for (const name of names) archive.create(name, "bench");
  const ids = new Array(rooms).fill(0);
  let textBytes = 0;
  for (let i = 1; i <= events; i++) {
    const r = i % rooms;
    const text = words.message(n("text-words"));
    textBytes += text.length;
    const event: RoomEvent = {
      type: "message",
      id: ++ids[r],
      ts: 1_700_000_000_000 + i,
      from: `user-${i % 97}`,
      text,
    };
    archive.append(names[r], event);
    if (i % FILL_BATCH === 0) archive.commit();
  }
  archive.close();
  const writeS = (performance.now() - started) / 1000;
  log(`wrote ${events} events in ${writeS.toFixed(1)} s`);
  // Fold the WAL into the file, so that dbstat and the size see it all.
  const db = new DatabaseSync(path);
  db.exec("PRAGMA wal_checkpoint(TRUNCATE)");
  db.close();

  const bytes = tableBytes(path);
  const of = (prefix: string) =>
    [...bytes].filter(([name]) => name.startsWith(prefix))
      .reduce((sum, [, size]) => sum + size, 0);
  const eventBytes = bytes.get("events") ?? 0;
  const indexBytes = of("search_index");
  out.push(
    `file: ${events.toLocaleString("en-US")} messages in ${rooms} room(s), ${
      (textBytes / events).toFixed(0)
    } characters of text each on average, written in ${writeS.toFixed(1)} s`,
    `size: events ${mib(eventBytes)}, search index ${mib(indexBytes)} (${
      [...bytes].filter(([name]) => name.startsWith("search_index"))
        .map(([name, size]) => `${name.slice(13) || "table"} ${mib(size)}`)
        .join(", ")
    }): index/events = ${(indexBytes / eventBytes).toFixed(2)}×; file ${
      mib(Deno.statSync(path).size)
    }`,
  );

  const store = await SqliteStore.connect({
    path,
    historySize: 100,
    maxHistoryBytes: 1 << 20,
    maxRooms: 1_000,
    onEvict: () => {},
    retainEvents: Number.MAX_SAFE_INTEGER,
    retainDays: 0,
  });
  const room = names[0];
  store.hold(room);
  const count = n("queries");
  const pairs = Array.from(
    { length: count },
    () => `${words.draw()} ${words.draw()}`,
  );
  const top = words.words.slice(0, 100);
  const pick = () => top[Math.floor(random() * top.length)];
  const hard = Array.from({ length: count }, () => `${pick()} ${pick()}`);
  const phrases = Array.from(
    { length: count },
    () => `"${words.draw()} ${words.draw()}"`,
  );
  const prefixes = Array.from({ length: count }, () => {
    const word = words.draw();
    return `${word.slice(0, Math.max(2, word.length - 2))}*`;
  });
  // A first pass warms SQLite's page cache (and V8), as a running server is.
  await timeSearches(store, room, pairs.slice(0, 200));
  for (
    const [label, queries] of [
      ["two words (drawn as in the messages)", pairs],
      ["two words of the 100 commonest", hard],
      ['a two-word "phrase"', phrases],
      ["a prefix*", prefixes],
    ] as const
  ) {
    const { times, found } = await timeSearches(store, room, [...queries]);
    out.push(
      `${timing(label, times)}; ${(found / times.length).toFixed(1)} results`,
    );
  }
  store.release(room);
  await store.close!();

  // The upgrade of a file of schema 2: the index built from its events.
  const old = new DatabaseSync(path);
  old.exec("DROP TABLE search_index; PRAGMA user_version = 2");
  old.close();
  started = performance.now();
  openArchive(path).close();
  out.push(
    `upgrade from schema 2 (building the index of ${
      events.toLocaleString("en-US")
    } events): ${((performance.now() - started) / 1000).toFixed(1)} s`,
  );
}

/** A main.ts of `dir` with `--data` on a new file, serving. */
async function startServer(
  dir: string,
  data: string,
): Promise<{ pid: number; wsPort: number; stop: () => Promise<void> }> {
  const port = freePort();
  const wsPort = freePort();
  const child = new Deno.Command(Deno.execPath(), {
    args: [
      "run",
      "-A",
      `${dir}main.ts`,
      "--port",
      String(port),
      "--ws-port",
      String(wsPort),
      "--hostname",
      "127.0.0.1",
      "--data",
      data,
      "--rate",
      "1000000",
      "--burst",
      "1000000",
      "--max-connections",
      "100000",
      "--max-connections-per-ip",
      "100000",
      "--max-buffered-bytes",
      "1073741824",
      "--connect-rate",
      "1000000",
      "--connect-burst",
      "1000000",
      "--quiet",
    ],
    cwd: dir,
    stdin: "null",
    stdout: "null",
    stderr: "inherit",
  }).spawn();
  const stop = async () => {
    try {
      child.kill("SIGTERM");
    } catch { /* gone */ }
    await child.status;
  };
  const deadline = Date.now() + READY_TIMEOUT_MS;
  for (;;) {
    if (Date.now() > deadline) {
      await stop();
      throw new Error(`${dir}main.ts not ready`);
    }
    try {
      const res = await fetch(`http://127.0.0.1:${port}/healthz`);
      await res.body?.cancel();
      if (res.ok) break;
    } catch { /* not up yet */ }
    await new Promise((resolve) => setTimeout(resolve, 20));
  }
  return { pid: child.pid, wsPort, stop };
}

/** Scenario (a) and (b) of bench/run.ts, as load.ts flags (`--scale`d). */
const SCENARIOS = {
  a: { clients: 100, senders: 4, messages: 2000 },
  b: { clients: 1000, senders: 2, messages: 200 },
};

/** One run of `scenario` against a fresh `--data` server of `dir`. */
async function oneRun(
  dir: string,
  scenario: keyof typeof SCENARIOS,
  protocol: string,
  scale: number,
): Promise<number> {
  const { clients, senders, messages } = SCENARIOS[scenario];
  const tmp = await Deno.makeTempDir({ prefix: "chat-bench-post-" });
  const server = await startServer(dir, `${tmp}/chat.db`);
  try {
    const out = await new Deno.Command(Deno.execPath(), {
      args: [
        "run",
        "-A",
        `${benchDir}load.ts`,
        `--url=ws://127.0.0.1:${server.wsPort}/bench`,
        `--pid=${server.pid}`,
        `--protocol=${protocol}`,
        "--json",
        "--quiet",
        "--workers=2",
        `--clients=${clients}`,
        `--senders=${senders}`,
        `--messages=${messages * scale}`,
      ],
      stdout: "piped",
      stderr: "inherit",
    }).output();
    const text = new TextDecoder().decode(out.stdout).trim();
    const report = text ? JSON.parse(text) as LoadReport : undefined;
    if (!report || report.status !== "ok") {
      // A run that could not connect everyone or lost messages (the machine
      // overloaded): left out, and said.
      log(`${dir}: (${scenario}) ${protocol} run failed: not counted`);
      return NaN;
    }
    return report.server.cpuUsPerDelivery;
  } finally {
    await server.stop();
    await Deno.remove(tmp, { recursive: true });
  }
}

async function postingPart(
  base: string,
  scenarios: (keyof typeof SCENARIOS)[],
  runs: number,
  scale: number,
  out: string[],
): Promise<void> {
  const median = (values: number[]) =>
    percentile(values.filter(Number.isFinite), 0.5);
  for (const scenario of scenarios) {
    for (const protocol of ["text", "json"]) {
      const with_: number[] = [];
      const without: number[] = [];
      for (let i = 0; i < runs; i++) {
        without.push(await oneRun(base, scenario, protocol, scale));
        with_.push(await oneRun(repoDir, scenario, protocol, scale));
        log(
          `(${scenario}) ${protocol}: without ${
            without.at(-1)!.toFixed(2)
          }, with ${with_.at(-1)!.toFixed(2)} µs/deliv`,
        );
      }
      const ratio = median(with_) / median(without);
      out.push(
        `(${scenario}) ${protocol}: server CPU µs per delivery with --data, with the index ${
          median(with_).toFixed(2)
        } (runs ${with_.map((v) => v.toFixed(2)).join(", ")}), without ${
          median(without).toFixed(2)
        } (runs ${without.map((v) => v.toFixed(2)).join(", ")}): ${
          ratio.toFixed(2)
        }× ${ratio <= 1.15 ? "(≤ 1.15×)" : "(over 1.15×)"}`,
      );
    }
  }
}

async function main(): Promise<void> {
  const { values } = parseArgs({
    args: Deno.args,
    options: {
      part: { type: "string", default: "query" },
      events: { type: "string", default: "1000000" },
      rooms: { type: "string", default: "1" },
      queries: { type: "string", default: "2000" },
      "text-words": { type: "string", default: "10" },
      base: { type: "string" },
      runs: { type: "string", default: "3" },
      scale: { type: "string", default: "1" },
      scenario: { type: "string", default: "a,b" },
    },
  });
  const n = (name: string) => Number(values[name as keyof typeof values]);
  const parts = values.part.split(",");
  const out: string[] = [];
  if (parts.includes("query")) {
    const dir = await Deno.makeTempDir({ prefix: "chat-bench-search-" });
    try {
      await queryPart(dir, n, out);
    } finally {
      await Deno.remove(dir, { recursive: true });
    }
  }
  if (parts.includes("posting")) {
    if (!values.base) throw new Error("--part posting needs --base DIR");
    const base = `${Deno.realPathSync(values.base)}/`;
    Deno.statSync(`${base}main.ts`);
    const scenarios = values.scenario.split(",").filter((id) =>
      id in SCENARIOS
    ) as (keyof typeof SCENARIOS)[];
    await postingPart(base, scenarios, n("runs"), n("scale"), out);
  }
  console.log(out.join("\n"));
}

if (import.meta.main) await main();
