/**
 * The store contract (rooms.ts `RoomStore`), one suite run against every
 * store: `MemoryStore` always, the same writing through to a SQLite file
 * (`--data`, sqlite_store.ts) always, `RedisStore` where redis-server is
 * present (and always under CI, where a missing server fails the Redis
 * cases). Each case is one rule; the stores may differ only where a case
 * says so.
 *
 * @module
 */

import assert from "node:assert/strict";
import { haveRedis, startRedis } from "../tests/redis_helpers.ts";
import { redisCli, startCluster } from "../tests/cluster_helpers.ts";
import { RedisStore } from "./redis_store.ts";
import { SqliteStore } from "./sqlite_store.ts";
import {
  type LiveEvent,
  MAX_REACTION_KEYS,
  MAX_ROOM_INVITES,
  type NewEvent,
  type RoomEvent,
} from "../wire/protocol.ts";
import {
  type Entrant,
  type HistoryPage,
  MAX_MY_ROOMS,
  MAX_UNREAD_COUNTED,
  MemoryStore,
  NICK_CANDIDATES,
  NoNickLeft,
  NoSuchRoom,
  type PostRefusal,
  type ReadMarker,
  type RoomStore,
  type StoreOptions,
} from "./rooms.ts";
import { eventually } from "../tests/test_helpers.ts";
import { parseSearch, type SearchQuery } from "../wire/search.ts";

/** A store under test, with what it reported to main.ts. */
interface Subject {
  store: RoomStore;
  /** `onEvict` calls: (room, owner). */
  evicted: [string, string][];
  /** `onExpel` calls: (room, owner, reason). */
  expelled: [string, string, string][];
  /** `onRead` calls: (person, marker). */
  marked: [string, ReadMarker][];
  /**
   * Closes the store and opens it again on what it kept (a restart of the
   * process); absent for a store that keeps nothing past its process.
   */
  reopen?(): Promise<void>;
  close(): Promise<void>;
}

interface StoreKind {
  name: string;
  ignore: boolean;
  /**
   * An empty room keeps its history and epoch (Redis, for `--room-ttl`;
   * a data file for good); in memory it ends with its last member.
   */
  keepsEmptyRooms: boolean;
  /**
   * `history` reads every event kept, past the live window (a data file);
   * in memory and in Redis it reads the live window (`historySize`) only.
   */
  pagesPastWindow: boolean;
  open(options: Partial<StoreOptions>): Promise<Subject>;
}

const DEFAULTS = {
  historySize: 100,
  maxHistoryBytes: 256 * 1024,
  maxRooms: 10,
};

/** What a store tells main.ts, kept for the test, and the hooks that keep it. */
function recorder() {
  const evicted: [string, string][] = [];
  const expelled: [string, string, string][] = [];
  const marked: [string, ReadMarker][] = [];
  const hooks = {
    onEvict: (room: string, owner: string) => evicted.push([room, owner]),
    onExpel: (room: string, owner: string, reason: string) =>
      expelled.push([room, owner, reason]),
    onRead: (person: string, marker: ReadMarker) =>
      marked.push([person, marker]),
  };
  return { evicted, expelled, marked, hooks };
}

const KINDS: StoreKind[] = [
  {
    name: "memory",
    ignore: false,
    keepsEmptyRooms: false,
    pagesPastWindow: false,
    open: (options) => {
      const { evicted, expelled, marked, hooks } = recorder();
      const store = new MemoryStore({
        ...DEFAULTS,
        ...hooks,
        ...options,
      });
      return Promise.resolve({
        store,
        evicted,
        expelled,
        marked,
        close: () => Promise.resolve(),
      });
    },
  },
  {
    name: "sqlite",
    ignore: false,
    keepsEmptyRooms: true,
    pagesPastWindow: true,
    open: async (options) => {
      const dir = await Deno.makeTempDir({ prefix: "chat-contract-" });
      const { evicted, expelled, marked, hooks } = recorder();
      const connect = () =>
        SqliteStore.connect({
          ...DEFAULTS,
          ...hooks,
          ...options,
          path: `${dir}/chat.db`,
          retainEvents: 100_000,
          retainDays: 0,
        });
      try {
        const subject: Subject = {
          store: await connect(),
          evicted,
          expelled,
          marked,
          reopen: async () => {
            await subject.store.close!();
            subject.store = await connect();
          },
          close: async () => {
            try {
              await subject.store.close!();
            } finally {
              await Deno.remove(dir, { recursive: true });
            }
          },
        };
        return subject;
      } catch (error) {
        await Deno.remove(dir, { recursive: true });
        throw error;
      }
    },
  },
  {
    name: "redis",
    ignore: !haveRedis && !Deno.env.get("CI"),
    keepsEmptyRooms: true,
    pagesPastWindow: false,
    open: async (options) => {
      const redis = await startRedis();
      const { evicted, expelled, marked, hooks } = recorder();
      const connect = () =>
        RedisStore.connect({
          ...DEFAULTS,
          ...hooks,
          ...options,
          url: redis.url,
          roomTtl: 60,
        });
      try {
        const subject: Subject = {
          store: await connect(),
          evicted,
          expelled,
          marked,
          reopen: async () => {
            await subject.store.close!();
            subject.store = await connect();
          },
          close: async () => {
            await subject.store.close!();
            await redis.kill();
          },
        };
        return subject;
      } catch (error) {
        await redis.kill();
        throw error;
      }
    },
  },
];

/** A contract's rule, as registered (run again on Redis Cluster). */
interface Rule {
  rule: string;
  fn: (subject: Subject, kind: StoreKind) => Promise<void>;
  options: Partial<StoreOptions>;
  applies: (kind: StoreKind) => boolean;
}

/**
 * Every rule, for the Redis Cluster run at the end of the file: one cluster
 * for all of them (made in seconds, not per rule), emptied between rules.
 */
const RULES: Rule[] = [];

/**
 * Registers one rule as a test for every store (to which it `applies`: the
 * others show it as ignored).
 */
function contract(
  rule: string,
  fn: (subject: Subject, kind: StoreKind) => Promise<void>,
  options: Partial<StoreOptions> = {},
  applies: (kind: StoreKind) => boolean = () => true,
): void {
  RULES.push({ rule, fn, options, applies });
  for (const kind of KINDS) {
    Deno.test({
      name: `${kind.name} store: ${rule}`,
      ignore: kind.ignore || !applies(kind),
      fn: async () => {
        const subject = await kind.open(options);
        try {
          await fn(subject, kind);
        } finally {
          await subject.close();
        }
      },
    });
  }
}

/** Holds a place and joins: what main.ts does for each connection. */
function join(
  store: RoomStore,
  room: string,
  request: Parameters<RoomStore["join"]>[1],
) {
  assert.ok(store.hold(room), "hold");
  return store.join(room, request);
}

/** Events without their time, which no test can predict. */
function timeless(event: LiveEvent): unknown {
  if (event.type === "typing" || event.type === "react") return event;
  const { ts: _, ...rest } = event;
  return rest;
}

/**
 * Collects what a subscriber gets. As main.ts does, the room is held first
 * (a store subscribes to held rooms only), and a join follows before
 * anything is expected: a shared store's subscription is ready once a join
 * has been answered, not at once.
 */
function listen(store: RoomStore, room: string) {
  const seen: unknown[] = [];
  assert.ok(store.hold(room));
  const unsubscribe = store.subscribe(
    room,
    (event) => seen.push(timeless(event)),
  );
  const stop = () => {
    unsubscribe();
    store.release(room);
  };
  return { seen, stop };
}

contract(
  "a join takes the nick asked for and appends the join",
  async ({ store }) => {
    const { seen, stop } = listen(store, "r");
    const ann = await join(store, "r", { owner: "1", nick: "ann" });
    assert.equal(ann.nick, "ann");
    assert.equal(ann.nickTaken, false);
    assert.equal(ann.present, false);
    assert.equal(ann.gap, false);
    assert.deepEqual(ann.users, ["ann"]);
    assert.deepEqual(ann.history.map(timeless), [
      { type: "join", nick: "ann", id: 1 },
    ]);
    assert.equal(ann.lastId, 1);
    assert.equal(ann.claimedId, 1);
    await eventually("the join delivered", () => seen.length === 1);
    assert.deepEqual(seen, [{ type: "join", nick: "ann", id: 1 }]);
    stop();
  },
);

contract(
  "a nick held by another, by case or look-alike, is taken: a random one instead",
  async ({ store }) => {
    await join(store, "r", { owner: "1", nick: "ann" });
    for (
      const [owner, wanted] of [["2", "ANN"], ["3", "аnn"], ["4", "ａｎｎ"]]
    ) {
      const other = await join(store, "r", { owner, nick: wanted });
      assert.equal(other.nickTaken, true, wanted);
      assert.match(other.nick, /^user-\d+$/);
    }
    assert.equal((await store.members("r")).length, 4);
  },
);

contract(
  `a join tries ${NICK_CANDIDATES} random nicks, then fails with NoNickLeft`,
  async ({ store }) => {
    // The draw always gives user-1 (see the options below).
    const first = await join(store, "r", { owner: "1" });
    assert.equal(first.nick, "user-1");
    await assert.rejects(join(store, "r", { owner: "2" }), NoNickLeft);
    store.release("r"); // the failed join's place, as main.ts gives it back
    assert.deepEqual(await store.members("r"), ["user-1"]);
  },
  { randomNick: () => "user-1" },
);

contract(
  "another connection of a member is the same member: no join, same nick",
  async ({ store }) => {
    const { seen, stop } = listen(store, "r");
    const first = await join(store, "r", { owner: "s.ada", nick: "ada" });
    const second = await join(store, "r", { owner: "s.ada", nick: "whatever" });
    assert.equal(second.nick, "ada");
    assert.equal(second.present, true);
    assert.equal(second.lastId, first.lastId);
    assert.equal(second.claimedId, first.claimedId);
    assert.deepEqual(second.users, ["ada"]);
    // One of its two connections leaves: still a member, nothing announced.
    await join(store, "r", { owner: "2", nick: "bob" });
    await store.leave("r", "s.ada", true);
    assert.deepEqual(await store.members("r"), ["ada", "bob"]);
    await store.leave("r", "s.ada", true);
    assert.deepEqual(await store.members("r"), ["bob"]);
    await eventually("the leave delivered", () => seen.length === 3);
    assert.deepEqual(seen, [
      { type: "join", nick: "ada", id: 1 },
      { type: "join", nick: "bob", id: 2 },
      { type: "leave", nick: "ada", id: 3 },
    ]);
    stop();
  },
);

contract(
  "a resume gets exactly what it missed, then its join; too old or another epoch is a gap",
  async ({ store }) => {
    const ann = await join(store, "r", { owner: "1", nick: "ann" });
    for (const text of ["a", "b", "c"]) {
      await store.append("r", { type: "message", from: "ann", text });
    }
    const back = await join(store, "r", {
      owner: "2",
      nick: "bob",
      since: 2,
      epoch: ann.epoch,
    });
    assert.equal(back.gap, false);
    assert.deepEqual(back.history.map(timeless), [
      { type: "message", from: "ann", text: "b", id: 3 },
      { type: "message", from: "ann", text: "c", id: 4 },
      { type: "join", nick: "bob", id: 5 },
    ]);
    for (
      const [since, epoch] of [[1, "other"], [99, ann.epoch]] as const
    ) {
      const lost = await join(store, "r", { owner: `x${since}`, since, epoch });
      assert.equal(lost.gap, true, `since ${since} in ${epoch}`);
      assert.equal(lost.history.at(-1)?.type, "join");
      assert.equal(lost.history[0].id, 1, "the whole history instead");
    }
  },
);

contract(
  "history keeps at most historySize events and maxHistoryBytes",
  async ({ store }) => {
    const ann = await join(store, "r", { owner: "1", nick: "ann" });
    for (let i = 0; i < 6; i++) {
      await store.append("r", { type: "message", from: "ann", text: `m${i}` });
    }
    const bob = await join(store, "r", { owner: "2", nick: "bob" });
    assert.deepEqual(bob.history.map((event) => event.id), [4, 5, 6, 7, 8]);
    // Resuming from before the oldest kept event is a gap.
    const late = await join(store, "r", {
      owner: "3",
      since: 2,
      epoch: ann.epoch,
    });
    assert.equal(late.gap, true);
    // A long message pushes out more than one.
    assert.deepEqual(await longOneThenJoin(store), [10, 11]);
  },
  { historySize: 5, maxHistoryBytes: 600 },
);

contract(
  "appends of one turn (one batch in Redis) are trimmed as if one by one",
  async ({ store }, kind) => {
    await join(store, "r", { owner: "1", nick: "ann" });
    const texts = ["a", "b", "c", "d", "e", "x".repeat(200), "f", "g"];
    const ids = (await Promise.all(
      texts.map((text) =>
        store.append("r", { type: "message", from: "ann", text })
      ),
    )).map((event) => event.id);
    assert.deepEqual(ids, [2, 3, 4, 5, 6, 7, 8, 9]);
    // 5 events at most, then 600 bytes: the long one (7) takes 5 to 7 out.
    if (!kind.pagesPastWindow) {
      const page = await store.history("r", {
        before: 10,
        limit: 10,
        visible: () => true,
      });
      assert.deepEqual(page.events.map((event) => event.id), [8, 9]);
    }
    const bob = await join(store, "r", { owner: "2", nick: "bob" });
    assert.deepEqual(bob.history.map((event) => event.id), [8, 9, 10]);
    // The history's byte count stayed exact: one more long one leaves two.
    assert.deepEqual(await longOneThenJoin(store), [11, 12]);
  },
  { historySize: 5, maxHistoryBytes: 600 },
);

/** ann posts 200 characters to room r, then cy joins: cy's history's ids. */
async function longOneThenJoin(store: RoomStore): Promise<number[]> {
  await store.append("r", {
    type: "message",
    from: "ann",
    text: "x".repeat(200),
  });
  const cy = await join(store, "r", { owner: "cy", nick: "cy" });
  return cy.history.map((event) => event.id);
}

contract(
  "a token from an earlier welcome takes the nick from its stale holder, who is evicted",
  async ({ store, evicted }) => {
    const { seen, stop } = listen(store, "r");
    const old = await join(store, "r", { owner: "1", nick: "ann" });
    await join(store, "r", { owner: "2", nick: "bob" });
    // A wrong token takes nothing.
    const wrong = await join(store, "r", {
      owner: "3",
      nick: "ann",
      token: "x",
    });
    assert.equal(wrong.nickTaken, true);
    const back = await join(store, "r", {
      owner: "4",
      nick: "ann",
      token: old.token,
    });
    assert.equal(back.nick, "ann");
    assert.equal(back.nickTaken, false);
    await eventually("the eviction", () => evicted.length === 1);
    assert.deepEqual(evicted, [["r", "1"]]);
    await eventually("four events", () => seen.length === 5);
    assert.deepEqual(seen.slice(3), [
      { type: "leave", nick: "ann", id: 4 },
      { type: "join", nick: "ann", id: 5 },
    ]);
    stop();
  },
);

contract(
  "a rename moves the nick and the claim; a taken nick or another's is refused",
  async ({ store }) => {
    await join(store, "r", { owner: "1", nick: "ann" });
    await join(store, "r", { owner: "2", nick: "bob" });
    assert.equal(await store.rename("r", "1", "ann", "BOB"), "nick_taken");
    assert.equal(await store.rename("r", "2", "ann", "zed"), "nick_taken");
    const renamed = await store.rename("r", "1", "ann", "Anna") as RoomEvent;
    assert.deepEqual(timeless(renamed), {
      type: "nick",
      from: "ann",
      to: "Anna",
      id: 3,
    });
    assert.deepEqual(await store.members("r"), ["Anna", "bob"]);
    // Another tab of the renamed member sees the claim of the rename.
    const tab = await join(store, "r", { owner: "1" });
    assert.equal(tab.nick, "Anna");
    assert.equal(tab.claimedId, 3);
    // The leave names the new nick.
    await store.leave("r", "1", true);
    await store.leave("r", "1", true);
    const cy = await join(store, "r", { owner: "3", nick: "cy" });
    assert.deepEqual(timeless(cy.history.at(-2)!), {
      type: "leave",
      nick: "Anna",
      id: 4,
    });
  },
);

contract(
  "a leave is announced when asked and others remain; not otherwise",
  async ({ store }) => {
    await join(store, "r", { owner: "1", nick: "ann" });
    await join(store, "r", { owner: "2", nick: "bob" });
    await join(store, "r", { owner: "3", nick: "cy" });
    await store.leave("r", "2", false);
    await store.leave("r", "1", true);
    const dee = await join(store, "r", { owner: "4", nick: "dee" });
    assert.deepEqual(dee.history.map(timeless).slice(-2), [
      { type: "leave", nick: "ann", id: 4 },
      { type: "join", nick: "dee", id: 5 },
    ]);
    // Leaving twice, or a stranger leaving, changes nothing.
    await store.leave("r", "1", true);
    await store.leave("r", "nobody", true);
    assert.deepEqual(await store.members("r"), ["cy", "dee"]);
  },
);

contract(
  "holds: at most maxRooms rooms; a released hold ends an empty room",
  async ({ store }, kind) => {
    assert.equal(store.hold("a"), true);
    assert.equal(store.hold("b"), true);
    assert.equal(store.hold("c"), false, "a third room");
    assert.equal(store.hold("a"), true, "an existing room");
    store.release("a");
    store.release("a");
    assert.equal(store.roomCount(), 1);
    assert.equal(store.hold("c"), true);
    store.release("b");
    store.release("c");
    assert.equal(store.roomCount(), 0);
    // The last member out: the room ends here (its history and epoch go with
    // it in memory; Redis keeps them for --room-ttl).
    const first = await join(store, "a", { owner: "1", nick: "ann" });
    await store.leave("a", "1", true);
    assert.equal(store.roomCount(), 0);
    const again = await join(store, "a", { owner: "2", nick: "bob" });
    if (kind.keepsEmptyRooms) {
      // The last one's leave is kept with the rest: join, leave, join.
      assert.equal(again.epoch, first.epoch);
      assert.equal(again.lastId, 3);
      assert.deepEqual(again.history.map((event) => event.type), [
        "join",
        "leave",
        "join",
      ]);
    } else {
      assert.notEqual(again.epoch, first.epoch);
      assert.equal(again.lastId, 1);
    }
  },
  { maxRooms: 2 },
);

contract(
  "a subscriber gets every event in id order, its own included, and typing notices",
  async ({ store }) => {
    const { seen, stop } = listen(store, "r");
    await join(store, "r", { owner: "1", nick: "ann" });
    await Promise.all(
      ["a", "b", "c"].map((text) =>
        store.append("r", { type: "message", from: "ann", text })
      ),
    );
    await store.append("r", { type: "dm", from: "ann", to: "ann", text: "d" });
    store.notify("r", { type: "typing", nick: "ann" });
    await eventually("six deliveries", () => seen.length === 6);
    assert.deepEqual(
      seen.map((event) => (event as { id?: number }).id),
      [1, 2, 3, 4, 5, undefined],
    );
    assert.deepEqual(seen[5], { type: "typing", nick: "ann" });
    stop();
    // Typing notices are kept nowhere.
    const bob = await join(store, "r", { owner: "2", nick: "bob" });
    assert.deepEqual(
      bob.history.map((event) => event.type),
      ["join", "message", "message", "message", "dm", "join"],
    );
  },
);

contract(
  "roster: members in join order, with their connections and user id",
  async ({ store }) => {
    await join(store, "r", { owner: "s.ada", nick: "ada" });
    await join(store, "r", { owner: "s.ada" });
    await join(store, "r", {
      owner: "u.42",
      nick: "bob",
      verified: true,
      user: "42",
      keys: ["u.42"],
    });
    assert.deepEqual(await store.roster("r"), [
      {
        nick: "ada",
        verified: false,
        op: false,
        user: undefined,
        connections: 2,
      },
      { nick: "bob", verified: true, op: false, user: "42", connections: 1 },
    ]);
  },
);

contract("rooms: the rooms with members, with how many", async ({ store }) => {
  await join(store, "a", { owner: "1", nick: "ann" });
  await join(store, "a", { owner: "2", nick: "bob" });
  await join(store, "b", { owner: "3", nick: "cy" });
  assert.ok(store.hold("c")); // held, nobody in it yet
  const rooms = await store.rooms();
  assert.deepEqual(
    rooms.sort((x, y) => x.room.localeCompare(y.room)),
    [
      { room: "a", members: 2, private: false },
      { room: "b", members: 1, private: false },
    ],
  );
  store.release("c");
});

contract(
  "disconnect: by nick in a room, or by owner in every room; nothing appended",
  async ({ store, expelled }) => {
    await join(store, "a", { owner: "u.7", nick: "ann" });
    await join(store, "b", { owner: "u.7", nick: "ann" });
    await join(store, "a", { owner: "2", nick: "bob" });
    assert.equal(await store.disconnect({ room: "a", nick: "BOB" }, "bye"), 1);
    assert.equal(await store.disconnect({ owner: "u.7" }, "later"), 2);
    assert.equal(await store.disconnect({ room: "a", nick: "nobody" }, "x"), 0);
    await eventually("three dismissals", () => expelled.length === 3);
    assert.deepEqual(
      expelled.map((entry) => entry.join(" ")).sort(),
      ["a 2 bye", "a u.7 later", "b u.7 later"],
    );
    const cy = await join(store, "a", { owner: "3", nick: "cy" });
    assert.deepEqual(cy.history.map((event) => event.type), [
      "join",
      "join",
      "join",
    ]);
  },
);

contract(
  "once: one call per key within its time; a failed call frees the key",
  async ({ store }) => {
    let calls = 0;
    const produce = () => Promise.resolve(++calls * 10);
    const [a, b] = await Promise.all([
      store.once("k", 60_000, produce),
      store.once("k", 60_000, produce),
    ]);
    assert.deepEqual([a, b, calls], [10, 10, 1]);
    assert.equal(await store.once("other", 60_000, produce), 20);
    await assert.rejects(
      store.once("bad", 60_000, () => Promise.reject(new Error("no"))),
    );
    assert.equal(await store.once("bad", 60_000, produce), 30);
    // Expired: runs again.
    assert.equal(await store.once("short", 1, produce), 40);
    await new Promise((resolve) => setTimeout(resolve, 20));
    assert.equal(await store.once("short", 1, produce), 50);
  },
);

contract(
  "an append to a room that does not exist is NoSuchRoom",
  async ({ store }) => {
    await assert.rejects(
      store.append("nowhere", { type: "message", from: "api", text: "hi" }),
      NoSuchRoom,
    );
  },
);

contract(
  "visit: holds a room for a call with no connection: one with members, one nobody is in where kept; makes a new one only with create, where kept; full past maxRooms",
  async ({ store }, kind) => {
    const post = (room: string, text: string) =>
      store.append(room, { type: "message", from: "api", text });
    await join(store, "r", { owner: "1", nick: "ann" }); // id 1
    assert.equal(await store.visit("r", false), "held");
    store.release("r");
    await store.leave("r", "1", true); // id 2
    const keeps = kind.keepsEmptyRooms;
    assert.equal(await store.visit("r", false), keeps ? "held" : "absent");
    if (keeps) {
      assert.equal((await post("r", "into the quiet")).id, 3);
      store.release("r");
    }
    assert.equal(await store.visit("new", false), "absent");
    assert.equal(await store.visit("new", true), keeps ? "held" : "absent");
    if (keeps) {
      assert.equal((await post("new", "first")).id, 1);
      store.release("new");
    }
    assert.equal(store.roomCount(), 0, "every visit given back");
    // What was posted is the room's, for the next to join.
    const bea = await join(store, "r", { owner: "2", nick: "bea" });
    assert.deepEqual(
      bea.history.map(timeless),
      keeps
        ? [
          { type: "join", nick: "ann", id: 1 },
          { type: "leave", nick: "ann", id: 2 },
          { type: "message", from: "api", text: "into the quiet", id: 3 },
          { type: "join", nick: "bea", id: 4 },
        ]
        : [{ type: "join", nick: "bea", id: 1 }],
    );
    // maxRooms (2): bea's room and one held; a third is one too many.
    assert.ok(store.hold("x"));
    assert.equal(await store.visit("new", false), keeps ? "full" : "absent");
    assert.equal(await store.visit("r", false), "held");
    store.release("r");
    store.release("x");
  },
  { maxRooms: 2 },
);

contract(
  "a mute holds the one key that names its person (login, else session, else address); a ban holds all their keys; both after a restart",
  async (subject) => {
    // Three people at three addresses, and others arriving at each.
    await join(subject.store, "r", {
      owner: "s.bob",
      nick: "bob",
      keys: ["s.bob", "ip:10.0.0.1"],
    });
    await join(subject.store, "r", {
      owner: "7",
      nick: "ann",
      keys: ["ip:10.0.0.2"],
    });
    await join(subject.store, "r", {
      owner: "s.cy",
      nick: "cy",
      keys: ["s.cy", "ip:10.0.0.3"],
    });
    await join(subject.store, "r", {
      owner: "u.1",
      nick: "ada",
      keys: ["u.1"],
    });
    assert.equal(await subject.store.mute("r", "bob"), "muted");
    assert.equal(await subject.store.mute("r", "ann"), "muted");
    assert.equal(await subject.store.mute("r", "ada"), "muted");
    const banned = await subject.store.kick("r", {
      nick: "cy",
      by: "mod",
      ban: {},
    });
    assert.equal((banned as RoomEvent).type, "kick");
    const body: NewEvent = { type: "message", from: "x", text: "hi" };
    const muted = async (keys: string[]) => {
      const poster = { owner: `o.${keys.join()}`, keys, op: false };
      return "refused" in await subject.store.post("r", poster, body);
    };
    const check = async () => {
      assert.deepEqual(
        await Promise.all([
          muted(["s.bob", "ip:10.0.0.1"]), // bob
          muted(["s.bob", "ip:10.9.9.9"]), // bob, elsewhere
          muted(["s.eve", "ip:10.0.0.1"]), // another session at bob's address
          muted(["ip:10.0.0.1"]), // no session at bob's address
          muted(["ip:10.0.0.2"]), // no session at ann's: one to her mute
          muted(["s.eve", "ip:10.0.0.2"]), // a session at ann's address
          muted(["u.1"]), // ada
          muted(["s.eve", "ip:10.0.0.9"]), // ada's address is not hers
        ]),
        [true, true, false, false, true, false, true, false],
      );
      const ban = await subject.store.banned("r", ["s.new", "ip:10.0.0.3"]);
      assert.deepEqual([ban?.nick, ban?.keys], ["cy", ["s.cy", "ip:10.0.0.3"]]);
      assert.equal(
        (await subject.store.banned("r", ["ip:10.0.0.3"]))?.nick,
        "cy",
      );
      assert.equal(
        (await subject.store.banned("r", ["s.cy", "ip:10.9.9.9"]))?.nick,
        "cy",
      );
      assert.equal(
        await subject.store.banned("r", ["s.new", "ip:10.9.9.9"]),
        undefined,
      );
    };
    await check();
    if (subject.reopen) {
      await subject.reopen();
      await join(subject.store, "r", { owner: "mod", nick: "mod" });
      await check();
    }
  },
);

// ---------------------------------------------------------------------------
// Reading back (`history`): the paging rules, on every store
// ---------------------------------------------------------------------------

/** Everyone may see everything: the filter of a reader who is party to all. */
const EVERYTHING = () => true;

/** A page's ids, and whether it says more. */
function idsOf(page: HistoryPage): [number[], boolean] {
  return [page.events.map((event) => event.id), page.more];
}

/** `n` messages from `from`, appended one after another; their ids. */
async function say(
  store: RoomStore,
  room: string,
  n: number,
  from = "ann",
): Promise<number[]> {
  const ids = [];
  for (let i = 1; i <= n; i++) {
    ids.push(
      (await store.append(room, { type: "message", from, text: `m${i}` }))
        .id,
    );
  }
  return ids;
}

contract(
  "history: pages oldest first, each before the last one's first, more until the oldest",
  async ({ store }) => {
    await join(store, "r", { owner: "1", nick: "ann" }); // id 1
    await say(store, "r", 10); // ids 2 to 11
    const page = (before: number, limit: number) =>
      store.history("r", { before, limit, visible: EVERYTHING });
    assert.deepEqual(idsOf(await page(12, 4)), [[8, 9, 10, 11], true]);
    assert.deepEqual(idsOf(await page(8, 4)), [[4, 5, 6, 7], true]);
    assert.deepEqual(idsOf(await page(4, 4)), [[1, 2, 3], false]);
    assert.deepEqual(idsOf(await page(1, 4)), [[], false]);
    // Exactly the rest: no more, and no empty page after it.
    assert.deepEqual(idsOf(await page(5, 4)), [[1, 2, 3, 4], false]);
    // A `before` far past the last id reads from the newest.
    assert.deepEqual(idsOf(await page(1000, 2)), [[10, 11], true]);
    // The events are the ones appended, whole.
    const [first] = (await page(3, 1)).events;
    assert.deepEqual(timeless(first), {
      type: "message",
      from: "ann",
      text: "m1",
      id: 2,
    });
  },
);

contract(
  "history: what the reader may not see is skipped, not counted (pages fill past it)",
  async ({ store }) => {
    await join(store, "r", { owner: "1", nick: "ann" }); // id 1
    // ids 2 to 13: a DM to bob, then a message, six times.
    for (let i = 1; i <= 6; i++) {
      await store.append("r", {
        type: "dm",
        from: "ann",
        to: "bob",
        text: "psst",
      });
      await store.append("r", { type: "message", from: "ann", text: `m${i}` });
    }
    // cy is party to no DM: main.ts's `visibleTo` says so by this filter.
    const cy = (event: RoomEvent) => event.type !== "dm";
    const page = (before: number) =>
      store.history("r", { before, limit: 3, visible: cy });
    assert.deepEqual(idsOf(await page(14)), [[9, 11, 13], true]);
    assert.deepEqual(idsOf(await page(9)), [[3, 5, 7], true]);
    assert.deepEqual(idsOf(await page(3)), [[1], false]);
    // bob, a party, gets them all.
    const bob = await store.history("r", {
      before: 14,
      limit: 4,
      visible: EVERYTHING,
    });
    assert.deepEqual(
      bob.events.map((event) => event.type),
      ["dm", "message", "dm", "message"],
    );
  },
);

contract(
  "history never returns a deleted message, on any page; the delete event is there",
  async ({ store }) => {
    await join(store, "r", { owner: "1", nick: "ann" }); // id 1
    const [m1, m2, m3, m4] = await say(store, "r", 4); // ids 2 to 5
    const removed = await store.delete("r", m2, "ann") as RoomEvent;
    assert.equal(removed.type, "delete");
    await store.delete("r", m4, "mod");
    const all = await store.history("r", {
      before: removed.id + 10,
      limit: 200,
      visible: EVERYTHING,
    });
    assert.deepEqual(
      all.events.map((event) =>
        event.type === "delete" ? `delete ${event.deleted}` : event.id
      ),
      [1, m1, m3, `delete ${m2}`, `delete ${m4}`],
    );
    // Paged from below the delete events, one at a time: never either.
    const seen: number[] = [];
    for (let before = m4 + 1;;) {
      const page = await store.history("r", {
        before,
        limit: 1,
        visible: EVERYTHING,
      });
      seen.push(...page.events.map((event) => event.id));
      if (!page.more) break;
      before = page.events[0].id;
    }
    assert.deepEqual(seen, [m3, m1, 1]);
  },
);

contract(
  "history reads past the live window where the store keeps more (a data file)",
  async ({ store }, kind) => {
    await join(store, "r", { owner: "1", nick: "ann" }); // id 1
    await say(store, "r", 12); // ids 2 to 13; historySize 5 keeps 9 to 13
    const page = await store.history("r", {
      before: 14,
      limit: 200,
      visible: EVERYTHING,
    });
    const ids = page.events.map((event) => event.id);
    if (kind.pagesPastWindow) {
      assert.deepEqual(ids, Array.from({ length: 13 }, (_, i) => i + 1));
    } else {
      assert.deepEqual(ids, [9, 10, 11, 12, 13]);
    }
    assert.equal(page.more, false);
    // A message older than the window, deleted where it is kept: gone.
    const old = await store.delete("r", 3, "mod");
    if (!kind.pagesPastWindow) {
      assert.equal(old, "no_such_message");
      return;
    }
    assert.equal((old as RoomEvent).type, "delete");
    const after = await store.history("r", {
      before: 5,
      limit: 200,
      visible: EVERYTHING,
    });
    assert.deepEqual(idsOf(after), [[1, 2, 4], false]);
  },
  { historySize: 5 },
);

/** A parsed search (wire/search.ts) with `limit`, for everyone. */
function searching(
  q: string,
  limit = 20,
  visible: (event: RoomEvent) => boolean = EVERYTHING,
) {
  return { query: parseSearch(q) as SearchQuery, limit, visible };
}

contract(
  "search: matches newest first, in pages by before and more, through what the store keeps (scope)",
  async ({ store }, kind) => {
    await join(store, "r", { owner: "1", nick: "ann" }); // id 1
    // ids 2 to 13: "tea N" and "coffee N" by turns; historySize 5 keeps 9 to 13.
    for (let i = 1; i <= 6; i++) {
      await store.append("r", {
        type: "message",
        from: "ann",
        text: `Tea ${i}`,
      });
      await store.append("r", {
        type: "action",
        from: "ann",
        text: `coffee ${i}`,
      });
    }
    const page = await store.search("r", searching("tea", 2));
    const ids = (found: { events: RoomEvent[] }) =>
      found.events.map((event) => event.id);
    assert.equal(page.scope, kind.pagesPastWindow ? "all" : "window");
    // The window holds these two only: nothing older to say `more` about.
    assert.deepEqual(
      [ids(page), page.more, page.before],
      kind.pagesPastWindow
        ? [[12, 10], true, 10]
        : [[12, 10], false, undefined],
    );
    const next = await store.search("r", searching("tea before:10", 2));
    assert.deepEqual([ids(next), next.more], [
      kind.pagesPastWindow ? [8, 6] : [],
      kind.pagesPastWindow,
    ]);
    const all = await store.search("r", searching("coffee"));
    assert.deepEqual(
      ids(all),
      kind.pagesPastWindow ? [13, 11, 9, 7, 5, 3] : [13, 11, 9],
    );
    assert.equal(all.more, false);
    assert.deepEqual(timeless(all.events[0]), {
      type: "action",
      from: "ann",
      text: "coffee 6",
      id: 13,
    });
    assert.deepEqual(
      ids(await store.search("r", searching("tea from:bob"))),
      [],
    );
  },
  { historySize: 5 },
);

contract(
  "search: never a deleted message, an edited one by its new text only, a DM only where visible",
  async ({ store }) => {
    await join(store, "r", { owner: "1", nick: "ann" }); // id 1
    const said = (text: string) =>
      store.append("r", { type: "message", from: "ann", text });
    const gone = await said("plan one"); // 2
    const edited = await said("plan two"); // 3
    await store.append("r", {
      type: "dm",
      from: "ann",
      to: "bob",
      text: "plan",
    }); // 4
    await store.delete("r", gone.id, "ann");
    const edit = await store.edit(
      "r",
      { nick: "ann", since: 0, keys: [] },
      edited.id,
      "changed",
      60_000,
    ) as RoomEvent & { type: "edit" };
    const ids = async (
      q: string,
      visible: (event: RoomEvent) => boolean = EVERYTHING,
    ) =>
      (await store.search("r", searching(q, 20, visible))).events.map((
        event,
      ) => event.id);
    assert.deepEqual(await ids("plan"), [4]);
    assert.deepEqual(await ids("plan", (event) => event.type !== "dm"), []);
    assert.deepEqual(await ids("two"), []);
    const found = await store.search("r", searching("changed"));
    assert.deepEqual(found.events.map(timeless), [
      { ...timeless(edited) as object, text: "changed", edited: edit.edited },
    ]);
  },
);

// ---------------------------------------------------------------------------
// A restart: what a store that keeps rooms past its process keeps
// ---------------------------------------------------------------------------

contract(
  "a restart keeps bans, mutes, topic, slow mode, reserved names; a deleted message stays deleted",
  async (subject) => {
    const before = subject.store;
    await join(before, "r", {
      owner: "u.1",
      nick: "ada",
      verified: true,
      keys: ["u.1"],
    });
    await before.leave("r", "u.1", true); // ada's name stays hers
    await join(before, "r", { owner: "mod", nick: "mod", op: true });
    await join(before, "r", { owner: "s.bob", nick: "bob", keys: ["s.bob"] });
    await join(before, "r", { owner: "s.cy", nick: "cy", keys: ["s.cy"] });
    assert.equal(await before.mute("r", "bob"), "muted");
    const kicked = await before.kick("r", { nick: "cy", by: "mod", ban: {} });
    assert.equal((kicked as RoomEvent).type, "kick");
    await before.topic("r", { type: "topic", by: "mod", text: "kept" });
    await before.slow("r", { type: "slow", by: "mod", seconds: 30 });
    const [gone, kept] = await say(before, "r", 2, "mod");
    await before.delete("r", gone, "mod");

    await subject.reopen!();
    const after = subject.store;
    const ban = await after.banned("r", ["s.cy"]);
    assert.deepEqual([ban?.nick, ban?.keys, ban?.until], [
      "cy",
      ["s.cy"],
      undefined,
    ]);
    assert.equal(await after.banned("r", ["s.bob"]), undefined);
    const dee = await join(after, "r", { owner: "s.dee", nick: "ada" });
    assert.equal(dee.nickTaken, true, "a reserved name is still reserved");
    assert.equal(dee.topic, "kept");
    assert.equal(dee.slowSeconds, 30);
    assert.ok(!dee.history.some((event) => event.id === gone));
    assert.ok(dee.history.some((event) => event.id === kept));
    const bob = { owner: "s.bob2", keys: ["s.bob"], op: false };
    const body: NewEvent = { type: "message", from: "bob", text: "hi" };
    const refusal = await after.post("r", bob, body) as PostRefusal;
    assert.deepEqual(refusal, { refused: "muted" });
    const page = await after.history("r", {
      before: dee.lastId + 1,
      limit: 200,
      visible: EVERYTHING,
    });
    const ids = page.events.map((event) => event.id);
    assert.ok(!ids.includes(gone) && ids.includes(kept));
    // And lifted, it stays lifted.
    assert.equal(await after.unmute("r", "bob"), true);
    await subject.reopen!();
    await join(subject.store, "r", { owner: "s.bob2", keys: ["s.bob"] });
    assert.ok(!("refused" in await subject.store.post("r", bob, body)));
  },
  {},
  // In memory, a restart forgets it all.
  (kind) => kind.name !== "memory",
);

contract(
  "a reply quotes the message it answers (its start); a reply to a deleted, unknown or non-message id is refused, nothing appended",
  async ({ store }) => {
    await join(store, "r", { owner: "1", nick: "ann" }); // id 1
    const ann = { owner: "1", keys: ["1"], op: false };
    const say = (text: string, replyTo?: number) =>
      store.post("r", ann, { type: "message", from: "ann", text }, replyTo);
    const long = "a".repeat(99) + "bcd";
    const first = await say(long) as RoomEvent; // id 2
    const reply = await say("yes", first.id) as RoomEvent; // id 3
    assert.deepEqual(timeless(reply), {
      type: "message",
      from: "ann",
      text: "yes",
      replyTo: { id: 2, from: "ann", text: "a".repeat(99) + "b…" },
      id: 3,
    });
    const short = await say("short", reply.id) as RoomEvent; // id 4
    assert.deepEqual(
      (short as { replyTo?: unknown }).replyTo,
      { id: 3, from: "ann", text: "yes" },
    );
    await store.delete("r", first.id, "ann"); // id 5
    assert.deepEqual(await say("late", first.id), {
      refused: "no_such_message",
    });
    assert.deepEqual(await say("nowhere", 99), { refused: "no_such_message" });
    assert.deepEqual(await say("to a join", 1), {
      refused: "no_such_message",
    });
    const page = await store.history("r", {
      before: Number.MAX_SAFE_INTEGER,
      limit: 50,
      visible: () => true,
    });
    assert.deepEqual(page.events.map((event) => event.id), [1, 3, 4, 5]);
  },
);

contract(
  "an edit replaces its author's message within the window: every read serves the new text with edited, and the old text nowhere; another's, a gone one, a late one or a muted author's is refused",
  async (subject) => {
    const store = () => subject.store;
    await join(store(), "r", { owner: "1", nick: "ann", keys: ["s.ann"] }); // 1
    await join(store(), "r", { owner: "2", nick: "bob", keys: ["2"] }); // 2
    const ann = { nick: "ann", since: 1, keys: ["s.ann"] };
    const said = await store().post(
      "r",
      { owner: "1", keys: ["1"], op: false },
      {
        type: "message",
        from: "ann",
        text: "lunch at 11",
      },
    ) as RoomEvent; // 3
    const DAY = 24 * 60 * 60 * 1000;
    const edit = await store().edit("r", ann, said.id, "lunch at noon", DAY);
    const event = edit as RoomEvent & { type: "edit" };
    assert.equal(event.type, "edit");
    assert.deepEqual(
      [event.from, event.target, event.text, event.id],
      ["ann", said.id, "lunch at noon", 4],
    );
    assert.equal(typeof event.edited, "number");
    const check = async () => {
      const page = await store().history("r", {
        before: Number.MAX_SAFE_INTEGER,
        limit: 50,
        visible: () => true,
      });
      const kept = page.events.find((e) => e.id === said.id) as RoomEvent & {
        type: "message";
      };
      assert.equal(kept.text, "lunch at noon");
      assert.equal(kept.edited, event.edited);
      assert.ok(!JSON.stringify(page).includes("lunch at 11"), "old text gone");
      // A welcome's history and a resume serve it edited too.
      const cy = await join(store(), "r", { owner: `3-${Math.random()}` });
      const welcome = cy.history.find((e) => e.id === said.id) as {
        text: string;
      };
      assert.equal(welcome.text, "lunch at noon");
      const back = await join(store(), "r", {
        owner: `4-${Math.random()}`,
        since: said.id - 1,
        epoch: cy.epoch,
      });
      assert.equal(back.gap, false);
      assert.equal(
        (back.history.find((e) => e.id === said.id) as { text: string }).text,
        "lunch at noon",
      );
    };
    await check();
    // A reply quotes the text as it is now.
    const reply = await store().post(
      "r",
      { owner: "2", keys: ["2"], op: false },
      { type: "message", from: "bob", text: "ok" },
      said.id,
    ) as RoomEvent & { type: "message" };
    assert.equal(reply.replyTo?.text, "lunch at noon");
    // Refusals, nothing appended.
    const bob = { nick: "bob", since: 2, keys: ["2"] };
    assert.deepEqual(await store().edit("r", bob, said.id, "mine now", DAY), {
      refused: "forbidden",
    });
    assert.deepEqual(await store().edit("r", ann, 999, "x", DAY), {
      refused: "no_such_message",
    });
    assert.deepEqual(await store().edit("r", ann, said.id, "x", 0), {
      refused: "edit_window",
    });
    await new Promise((resolve) => setTimeout(resolve, 5));
    assert.deepEqual(await store().edit("r", ann, said.id, "x", 1), {
      refused: "edit_window",
    });
    assert.equal(await store().mute("r", "ann"), "muted");
    assert.deepEqual(await store().edit("r", ann, said.id, "x", DAY), {
      refused: "muted",
    });
    await store().unmute("r", "ann");
    const stays = await store().post("r", {
      owner: "1",
      keys: ["s.ann"],
      op: false,
    }, { type: "message", from: "ann", text: "typo" }) as RoomEvent;
    assert.equal(
      ((await store().edit("r", ann, stays.id, "fixed", DAY)) as RoomEvent)
        .type,
      "edit",
    );
    await store().delete("r", said.id, "mod");
    assert.deepEqual(await store().edit("r", ann, said.id, "x", DAY), {
      refused: "no_such_message",
    });
    if (subject.reopen) {
      // Kept as edited across a restart; the deleted one stays deleted.
      await subject.reopen();
      await join(store(), "r", { owner: "5", nick: "dee" });
      const page = await store().history("r", {
        before: Number.MAX_SAFE_INTEGER,
        limit: 50,
        visible: () => true,
      });
      assert.ok(!page.events.some((e) => e.id === said.id));
      assert.equal(
        (page.events.find((e) => e.id === stays.id) as { text: string }).text,
        "fixed",
      );
    }
  },
);

// ---------------------------------------------------------------------------
// Reactions: beside the history, never in it
// ---------------------------------------------------------------------------

/** The whole history, read back. */
function everything(store: RoomStore, room: string): Promise<HistoryPage> {
  return store.history(room, {
    before: Number.MAX_SAFE_INTEGER,
    limit: 200,
    visible: EVERYTHING,
  });
}

contract(
  "react: adds, takes back or toggles (`on`: as asked, and nothing announced when it is so already); one per person per key; every read has the result",
  async (subject) => {
    const store = () => subject.store;
    const { seen, stop } = listen(store(), "r");
    // People by session: a connection's number is its process's alone
    // (a shared store keeps it with the process's id), gone on a restart.
    await join(store(), "r", { owner: "s.ann", nick: "ann" }); // 1
    await join(store(), "r", { owner: "s.bob", nick: "bob" }); // 2
    const said = await store().append("r", {
      type: "message",
      from: "ann",
      text: "lunch?",
    }); // 3
    const ann = { owner: "s.ann", nick: "ann", keys: ["s.ann"] };
    const bob = { owner: "s.bob", nick: "bob", keys: ["s.bob"] };
    const notice = (from: string, on: boolean, count: number) => ({
      type: "react",
      target: said.id,
      key: "👍",
      from,
      on,
      count,
    });
    const react = (who: typeof ann, on?: boolean) =>
      store().react("r", who, said.id, "👍", on);
    assert.deepEqual(await react(ann), notice("ann", true, 1));
    const unchanged = (on: boolean, count: number) => ({
      unchanged: true,
      on,
      count,
    });
    assert.deepEqual(await react(ann, true), unchanged(true, 1)); // so already
    assert.deepEqual(await react(bob), notice("bob", true, 2)); // two people: 2
    // The same person under another nick is still one.
    assert.deepEqual(
      await react({ ...ann, nick: "ann2" }, true),
      unchanged(true, 2),
    );
    assert.deepEqual(await react(ann, false), notice("ann", false, 1));
    assert.deepEqual(await react(ann, false), unchanged(false, 1)); // so already
    assert.deepEqual(await react(ann), notice("ann", true, 2)); // toggled back
    await eventually("the notices delivered", () => seen.length === 7);
    // After the events, and only what changed.
    assert.deepEqual(seen, [
      { type: "join", nick: "ann", id: 1 },
      { type: "join", nick: "bob", id: 2 },
      { type: "message", from: "ann", text: "lunch?", id: 3 },
      notice("ann", true, 1),
      notice("bob", true, 2),
      notice("ann", false, 1),
      notice("ann", true, 2),
    ]);
    stop();
    // Kept as who reacted, in order (ann took hers back and came again).
    const kept = new Map([[said.id, [{
      key: "👍",
      by: [["s.bob", "bob"], ["s.ann", "ann"]] as [string, string][],
    }]]]);
    const check = async (owner: string) => {
      const cy = await join(store(), "r", { owner });
      assert.deepEqual(cy.reactions, kept);
      assert.deepEqual((await everything(store(), "r")).reactions, kept);
      // Reactions take no id: the next event's is the next one.
      return cy;
    };
    const cy = await check("c1");
    assert.equal(cy.lastId, 4, "only cy's join appended");
    // A resume has them too (for the messages it had).
    const back = await join(store(), "r", {
      owner: "c2",
      since: cy.lastId,
      epoch: cy.epoch,
    });
    assert.equal(back.gap, false);
    assert.deepEqual(back.reactions, kept);
    if (subject.reopen) {
      await subject.reopen();
      await check("c3");
    }
    // All taken back: a record with none (it had some).
    await store().react("r", ann, said.id, "👍", false);
    await store().react("r", bob, said.id, "👍", false);
    const dee = await join(store(), "r", { owner: "c4" });
    assert.deepEqual(dee.reactions, new Map([[said.id, []]]));
  },
);

contract(
  `react: a message takes at most MAX_REACTION_KEYS (${MAX_REACTION_KEYS}) keys, a new one past them is reaction_limit; adding oneself to one there is not`,
  async ({ store }) => {
    await join(store, "r", { owner: "1", nick: "ann" });
    const said = await store.append("r", {
      type: "message",
      from: "ann",
      text: "vote",
    });
    const ann = { owner: "1", nick: "ann", keys: ["1"] };
    const bob = { owner: "2", nick: "bob", keys: ["2"] };
    for (let i = 0; i < MAX_REACTION_KEYS; i++) {
      const answer = await store.react("r", ann, said.id, `:k${i}:`);
      assert.equal((answer as { count?: number }).count, 1, `:k${i}:`);
    }
    const past = `:k${MAX_REACTION_KEYS}:`;
    assert.deepEqual(await store.react("r", bob, said.id, past), {
      refused: "reaction_limit",
    });
    assert.deepEqual(await store.react("r", bob, said.id, ":k0:"), {
      type: "react",
      target: said.id,
      key: ":k0:",
      from: "bob",
      on: true,
      count: 2,
    });
    // A key nobody holds any more frees its place.
    await store.react("r", ann, said.id, ":k1:", false);
    assert.equal(
      (await store.react("r", bob, said.id, past) as { count?: number }).count,
      1,
    );
    const joined = await join(store, "r", { owner: "3" });
    const keys = joined.reactions.get(said.id)!.map((reaction) => reaction.key);
    assert.equal(keys.length, MAX_REACTION_KEYS);
    assert.ok(!keys.includes(":k1:") && keys.at(-1) === past);
  },
);

contract(
  "react: a muted person is refused; an unknown, deleted or non-message id is no_such_message; a deleted message's reactions go with it",
  async ({ store }) => {
    await join(store, "r", { owner: "1", nick: "ann" }); // 1
    await join(store, "r", { owner: "s.bob", nick: "bob", keys: ["s.bob"] }); // 2
    const ann = { owner: "1", nick: "ann", keys: ["1"] };
    const bob = { owner: "s.bob", nick: "bob", keys: ["s.bob"] };
    const said = await store.append("r", {
      type: "message",
      from: "ann",
      text: "hi",
    }); // 3
    const did = await store.append("r", {
      type: "action",
      from: "ann",
      text: "waves",
    }); // 4
    assert.equal(
      (await store.react("r", ann, did.id, "👋") as { count?: number }).count,
      1,
      "an action takes reactions",
    );
    assert.equal(await store.mute("r", "bob"), "muted");
    assert.deepEqual(await store.react("r", bob, said.id, "👍"), {
      refused: "muted",
    });
    await store.unmute("r", "bob");
    await store.react("r", bob, said.id, "👍");
    for (const id of [999, 1]) {
      assert.deepEqual(await store.react("r", ann, id, "👍"), {
        refused: "no_such_message",
      }, `id ${id}`);
    }
    await store.delete("r", said.id, "ann");
    assert.deepEqual(await store.react("r", ann, said.id, "👍"), {
      refused: "no_such_message",
    });
    const cy = await join(store, "r", { owner: "3" });
    assert.deepEqual([...cy.reactions.keys()], [did.id]);
    assert.deepEqual(
      [...(await everything(store, "r")).reactions?.keys() ?? []],
      [did.id],
    );
  },
);

contract(
  "reactions take no history slot; a message trimmed out of the live window takes its reactions with it",
  async ({ store }, kind) => {
    await join(store, "r", { owner: "1", nick: "ann" }); // 1
    const ids = await say(store, "r", 4); // 2 to 5: the window is full
    for (let i = 0; i < 30; i++) {
      await store.react(
        "r",
        { owner: `p${i}`, nick: `p${i}`, keys: [`p${i}`] },
        ids[i % 4],
        `:k${i % 7}:`,
      );
    }
    const window = [1, ...ids];
    assert.deepEqual(
      (await everything(store, "r")).events.map((event) => event.id),
      window,
    );
    // Another connection of ann's appends nothing: the history is as kept.
    const tab = await join(store, "r", { owner: "1" });
    assert.equal(tab.present, true);
    assert.deepEqual(tab.history.map((event) => event.id), window);
    assert.deepEqual([...tab.reactions.keys()].sort(), ids);
    // Three more messages and a join: the reacted ones but the last are out.
    await say(store, "r", 3); // 6 to 8
    const late = await join(store, "r", { owner: "2", nick: "bob" }); // 9
    assert.deepEqual(late.history.map((event) => event.id), [5, 6, 7, 8, 9]);
    assert.deepEqual([...late.reactions.keys()], [ids[3]]);
    if (!kind.pagesPastWindow) {
      assert.deepEqual([...(await everything(store, "r")).reactions!.keys()], [
        ids[3],
      ]);
    }
  },
  { historySize: 5 },
);

// ---------------------------------------------------------------------------
// Private rooms
// ---------------------------------------------------------------------------

contract(
  "admit: an open room admits all but the banned; a private one a moderator, a member's other tab, the invited by their key, and a code while it has uses (then its bringer by their key)",
  async ({ store }) => {
    const door = (entrant: Partial<Entrant>) =>
      store.admit("r", { keys: [], op: false, ...entrant });
    assert.deepEqual(await door({ keys: ["s.bob"] }), { admitted: "open" });
    await join(store, "r", { owner: "mod", nick: "mod", op: true });
    await join(store, "r", { owner: "s.bob", nick: "bob", keys: ["s.bob"] });
    await join(store, "r", {
      owner: "s.cy",
      nick: "cy",
      keys: ["s.cy", "ip:9"],
    });
    await store.kick("r", { nick: "cy", by: "mod", ban: {} });
    assert.deepEqual(await door({ keys: ["s.new", "ip:9"] }), {
      refused: "banned",
    });
    const on = await store.private("r", {
      type: "private",
      by: "mod",
      on: true,
    });
    assert.deepEqual(timeless(on), {
      type: "private",
      id: on.id,
      by: "mod",
      on: true,
    });
    assert.deepEqual(await door({ keys: ["s.eve"] }), {
      refused: "invite_only",
    });
    assert.deepEqual(await door({ keys: ["s.eve"], op: true }), {
      admitted: "op",
    });
    assert.deepEqual(await door({ owner: "s.bob", keys: ["s.bob"] }), {
      admitted: "member",
    });
    // Bob invited by his key (his session: the one an invite holds), out,
    // and back with that session from another address: in.
    assert.equal(
      await store.invite("r", { by: "mod", nick: "bob" }),
      "invited",
    );
    await store.leave("r", "s.bob", true);
    assert.deepEqual(await door({ owner: "s.bob", keys: ["s.bob", "ip:2"] }), {
      admitted: "invite",
    });
    assert.deepEqual(await door({ keys: ["s.eve", "ip:2"] }), {
      refused: "invite_only",
    });
    // A link of two uses.
    assert.equal(
      await store.invite("r", {
        by: "mod",
        link: { hash: "h".repeat(43), uses: 2, until: Date.now() + 60_000 },
      }),
      "invited",
    );
    const code = "h".repeat(43);
    for (const person of ["s.amy", "s.dan"]) {
      assert.deepEqual(await door({ keys: [person], code, nick: "x" }), {
        admitted: "code",
      });
    }
    assert.deepEqual(await door({ keys: ["s.fay"], code }), {
      refused: "invite_only",
    });
    // Amy comes back without it; a wrong code is no code.
    assert.deepEqual(await door({ keys: ["s.amy"] }), { admitted: "invite" });
    assert.deepEqual(await door({ keys: ["s.fay"], code: "g".repeat(43) }), {
      refused: "invite_only",
    });
    const listed = await store.invites("r");
    assert.deepEqual(listed, {
      private: true,
      people: [
        { nick: "bob", by: "mod" },
        { nick: "x", by: "mod", via: "hhhhhhhh" },
        { nick: "x", by: "mod", via: "hhhhhhhh" },
      ],
      links: [],
    });
    // Open again: anyone but the banned.
    await store.private("r", { type: "private", by: "mod", on: false });
    assert.deepEqual(await door({ keys: ["s.fay"] }), { admitted: "open" });
    assert.equal((await join(store, "r", { owner: "s.fay" })).private, false);
  },
);

contract(
  "invite and uninvite: by a member's nick, a verified name not here (its login), a user, a link (by code or id); expired links are no invite and are forgotten; at most MAX_ROOM_INVITES",
  async ({ store }) => {
    const door = (entrant: Partial<Entrant>) =>
      store.admit("r", { keys: [], op: false, ...entrant });
    await join(store, "r", { owner: "mod", nick: "mod", op: true });
    await join(store, "r", {
      owner: "u.ada",
      nick: "ada",
      verified: true,
      keys: ["u.ada"],
    });
    await store.leave("r", "u.ada", true);
    await store.private("r", { type: "private", by: "mod", on: true });
    assert.equal(
      await store.invite("r", { by: "mod", nick: "nobody" }),
      "no_such_nick",
    );
    assert.equal(
      await store.invite("r", { by: "mod", nick: "ADA" }),
      "invited",
    );
    assert.deepEqual(await door({ owner: "u.ada", keys: ["u.ada"] }), {
      admitted: "invite",
    });
    assert.equal(
      await store.invite("r", { by: "api", user: "42", owner: "u.42" }),
      "invited",
    );
    assert.deepEqual(await door({ keys: ["u.42"] }), { admitted: "invite" });
    const soon = Date.now() + 60_000;
    await store.invite("r", {
      by: "mod",
      link: { hash: "a".repeat(43), uses: 1, until: soon },
    });
    await store.invite("r", {
      by: "mod",
      link: { hash: "b".repeat(43), uses: 1, until: soon },
    });
    // Given an hour ago for an hour: over already.
    await store.invite("r", {
      by: "mod",
      link: { hash: "c".repeat(43), uses: 1, until: Date.now() - 1 },
    });
    assert.deepEqual(await door({ keys: ["s.x"], code: "c".repeat(43) }), {
      refused: "invite_only",
    });
    assert.deepEqual((await store.invites("r")).links.map((l) => l.link), [
      "aaaaaaaa",
      "bbbbbbbb",
    ]);
    assert.equal(await store.uninvite("r", { hash: "a".repeat(43) }), 1);
    assert.equal(await store.uninvite("r", { link: "bbbbbbbb" }), 1);
    assert.equal(await store.uninvite("r", { link: "bbbbbbbb" }), 0);
    assert.deepEqual(await door({ keys: ["s.x"], code: "a".repeat(43) }), {
      refused: "invite_only",
    });
    assert.equal(await store.uninvite("r", { nick: "ada" }), 1);
    assert.deepEqual(await door({ owner: "u.ada", keys: ["u.ada"] }), {
      refused: "invite_only",
    });
    assert.equal(await store.uninvite("r", { owner: "u.42" }), 1);
    assert.deepEqual(await store.invites("r"), {
      private: true,
      people: [],
      links: [],
    });
    // The limit: a new invite past it is refused, renewing one is not.
    for (let i = 0; i < MAX_ROOM_INVITES; i++) {
      await store.invite("r", {
        by: "mod",
        user: String(i),
        owner: `u.${i}`,
      });
    }
    assert.equal(
      await store.invite("r", { by: "mod", user: "x", owner: "u.x" }),
      "invite_limit",
    );
    assert.equal(
      await store.invite("r", { by: "mod", user: "0", owner: "u.0" }),
      "invited",
    );
  },
);

// ---------------------------------------------------------------------------
// Read markers
// ---------------------------------------------------------------------------

/**
 * What a marker leaves unread once counted through event `through`: a
 * shared store counts what its process has taken (later events are the
 * counter's to add as they come), which may be a moment behind.
 */
async function unreadThrough(
  store: RoomStore,
  marker: ReadMarker,
  through: number,
) {
  let found;
  await eventually(
    `counted through ${through}`,
    async () => (found = await store.unread(marker))?.through === through,
  );
  return found;
}

/** A marker with its time left out (`at`: when it moved, not predictable). */
function untimed(marker: unknown): unknown {
  if (typeof marker !== "object" || marker === null) return marker;
  const { at, ...rest } = marker as ReadMarker;
  assert.equal(typeof at, "number");
  return rest;
}

contract(
  "a read marker moves forward only, within the ids the room gave out, and every process hears of it",
  async ({ store, marked }) => {
    const ann = await join(store, "r", { owner: "s.ann", nick: "ann" }); // 1
    await store.append("r", { type: "message", from: "ann", text: "hi" }); // 2
    assert.equal(await store.markRead("r", "s.ann", 3, "ann"), "past_newest");
    const first = await store.markRead("r", "s.ann", 1, "ann");
    const expected = { room: "r", epoch: ann.epoch, id: 1, nick: "ann" };
    assert.deepEqual(untimed(first), expected);
    const moved = await store.markRead("r", "s.ann", 2, "ann") as ReadMarker;
    assert.deepEqual(untimed(moved), { ...expected, id: 2 });
    for (const id of [2, 1]) {
      assert.equal(await store.markRead("r", "s.ann", id, "ann"), "unchanged");
    }
    await eventually("both moves heard", () => marked.length === 2);
    assert.deepEqual(marked, [["s.ann", first], ["s.ann", moved]]);
    assert.deepEqual(await store.markers("s.ann"), [moved]);
    assert.deepEqual(await store.markers("s.bob"), [], "one person's");
    assert.equal(
      await store.markRead("nowhere", "s.ann", 1, "ann"),
      "past_newest",
      "a room never made",
    );
  },
);

contract(
  `a person keeps markers in at most ${MAX_MY_ROOMS} rooms: the least recently moved is forgotten`,
  async ({ store }) => {
    // Marked from the last name down: the first marked is the oldest, and
    // (in the same millisecond) the last by name.
    const rooms = Array.from(
      { length: MAX_MY_ROOMS + 1 },
      (_, i) => `r${String(MAX_MY_ROOMS - i).padStart(3, "0")}`,
    );
    for (const room of rooms) {
      await join(store, room, { owner: "s.ann", nick: "ann" });
      assert.notEqual(
        typeof await store.markRead(room, "s.ann", 1, "ann"),
        "string",
      );
    }
    const kept = (await store.markers("s.ann")).map((marker) => marker.room);
    assert.equal(kept.length, MAX_MY_ROOMS);
    assert.ok(!kept.includes(rooms[0]), "the first marked is forgotten");
    assert.deepEqual(new Set(kept), new Set(rooms.slice(1)));
  },
  { maxRooms: MAX_MY_ROOMS + 1 },
);

contract(
  "unread counts others' messages and actions and DMs to the reader after the marker; mentions are the reader's nick as a word (by nick key) and DMs; deletions and edits as history reads now",
  async ({ store }) => {
    const ann = await join(store, "r", { owner: "s.ann", nick: "ann" }); // 1
    await join(store, "r", { owner: "s.bob", nick: "bob" }); // 2
    const said: [string, string, string?][] = [
      ["message", "hello"], // 3: unread
      ["action", "waves at ANN"], // 4: a mention, by nick key
      ["dm", "psst", "ann"], // 5: a DM to ann: a mention
      ["dm", "psst", "cy"], // 6: another's DM: nothing
      ["message", "annabel is here"], // 7: unread, not a mention
      ["message", "@\u0430nn: look"], // 8: Cyrillic а: a mention
      ["message", "ann-like"], // 9: one word, not ann's nick
    ];
    for (const [type, text, to] of said) {
      await store.append(
        "r",
        (to
          ? { type, from: "bob", to, text }
          : { type, from: "bob", text }) as NewEvent,
      );
    }
    await store.append("r", { type: "message", from: "ann", text: "@ann" }); // 10: hers
    const marker = await store.markRead("r", "s.ann", 2, "ann") as ReadMarker;
    assert.deepEqual(await unreadThrough(store, marker, 10), {
      unread: 6,
      mentions: 3,
      through: 10,
    });
    assert.deepEqual(
      await store.unread({ ...marker, id: 5 }),
      { unread: 3, mentions: 1, through: 10 },
      "after a later marker",
    );
    await store.delete("r", 7, "bob"); // 11
    await store.edit(
      "r",
      { nick: "bob", since: 2, keys: [] },
      3,
      "hi ann",
      60_000,
    ); // 12
    assert.deepEqual(await unreadThrough(store, marker, 12), {
      unread: 5,
      mentions: 4,
      through: 12,
    });
    assert.equal(await store.unread({ ...marker, epoch: "other" }), undefined);
    assert.equal(
      await store.unread({ ...marker, room: "nowhere" }),
      undefined,
      "a room never made",
    );
    assert.equal(ann.epoch, marker.epoch);
  },
);

contract(
  `unread stops counting at ${MAX_UNREAD_COUNTED}`,
  async ({ store }) => {
    await join(store, "r", { owner: "s.ann", nick: "ann" }); // 1
    const marker = await store.markRead("r", "s.ann", 1, "ann") as ReadMarker;
    for (let i = 0; i < MAX_UNREAD_COUNTED + 2; i++) {
      await store.append("r", { type: "message", from: "bob", text: "ann?" });
    }
    assert.deepEqual(
      await unreadThrough(store, marker, MAX_UNREAD_COUNTED + 3),
      {
        unread: MAX_UNREAD_COUNTED,
        mentions: MAX_UNREAD_COUNTED,
        through: MAX_UNREAD_COUNTED + 3,
      },
    );
  },
  { historySize: MAX_UNREAD_COUNTED + 10, maxHistoryBytes: 1 << 20 },
);

contract(
  "read markers and what they leave unread outlive a restart",
  async (subject) => {
    const { store } = subject;
    await join(store, "r", { owner: "s.ann", nick: "ann" }); // 1
    await store.append("r", { type: "message", from: "bob", text: "ann!" }); // 2
    const marker = await store.markRead("r", "s.ann", 1, "ann") as ReadMarker;
    await subject.reopen!();
    const again = subject.store;
    assert.deepEqual(await again.markers("s.ann"), [marker]);
    assert.deepEqual(await again.unread(marker), {
      unread: 1,
      mentions: 1,
      through: 2,
    });
  },
  {},
  (kind) => kind.keepsEmptyRooms,
);

contract(
  "in memory a marker of a room that ended is void, and one of another epoch",
  async ({ store }) => {
    await join(store, "r", { owner: "s.ann", nick: "ann" }); // 1
    const marker = await store.markRead("r", "s.ann", 1, "ann") as ReadMarker;
    await store.leave("r", "s.ann", true);
    assert.equal(await store.unread(marker), undefined, "the room ended");
    const again = await join(store, "r", { owner: "s.bob", nick: "bob" });
    assert.notEqual(again.epoch, marker.epoch);
    assert.equal(await store.unread(marker), undefined, "another epoch");
    const moved = await store.markRead("r", "s.ann", 1, "ann") as ReadMarker;
    assert.equal(moved.epoch, again.epoch, "any id of the new epoch moves it");
  },
  {},
  (kind) => !kind.keepsEmptyRooms,
);

contract(
  "a subscriber of a room nobody holds gets its events once it is held",
  async ({ store }) => {
    const seen: unknown[] = [];
    const unsubscribe = store.subscribe(
      "r",
      (event) => seen.push(timeless(event)),
    );
    await join(store, "r", { owner: "1", nick: "ann" });
    await store.append("r", { type: "message", from: "ann", text: "hi" });
    await eventually("both delivered", () => seen.length === 2);
    assert.deepEqual(seen, [
      { type: "join", nick: "ann", id: 1 },
      { type: "message", from: "ann", text: "hi", id: 2 },
    ]);
    unsubscribe();
  },
);

contract(
  "unread counts what the store keeps: the live window in memory and in Redis, every event retained with a data file (a room nobody is in too)",
  async ({ store }, kind) => {
    await join(store, "r", { owner: "s.ann", nick: "ann" }); // 1
    const marker = await store.markRead("r", "s.ann", 1, "ann") as ReadMarker;
    await say(store, "r", 8, "bob"); // 2 to 9: the window keeps 5 to 9
    const counted = kind.pagesPastWindow ? 8 : 5;
    assert.deepEqual(await unreadThrough(store, marker, 9), {
      unread: counted,
      mentions: 0,
      through: 9,
    });
    // The leave (10) pushes 5 out of the window; in memory the room ends.
    await store.leave("r", "s.ann", true);
    assert.deepEqual(
      await store.unread(marker),
      kind.pagesPastWindow
        ? { unread: 8, mentions: 0, through: 10 }
        : kind.keepsEmptyRooms
        ? { unread: 4, mentions: 0, through: 10 }
        : undefined,
    );
  },
  { historySize: 5 },
);

Deno.test({
  name:
    "redis-cluster store: every rule of the contract, on one cluster of 3 masters (emptied between rules)",
  ignore: !haveRedis && !Deno.env.get("CI"),
  fn: async (t) => {
    const cluster = await startCluster({ masters: 3, replicas: 0 });
    const kind: StoreKind = {
      name: "redis-cluster",
      ignore: false,
      keepsEmptyRooms: true,
      pagesPastWindow: false,
      open: async (options) => {
        const { evicted, expelled, marked, hooks } = recorder();
        const connect = () =>
          RedisStore.connect({
            ...DEFAULTS,
            ...hooks,
            ...options,
            url: cluster.urls[0],
            cluster: cluster.urls,
            roomTtl: 60,
          });
        const subject: Subject = {
          store: await connect(),
          evicted,
          expelled,
          marked,
          reopen: async () => {
            await subject.store.close!();
            subject.store = await connect();
          },
          close: async () => {
            await subject.store.close!();
            await Promise.all(
              cluster.nodes.map((node) =>
                redisCli(["-p", String(node.port), "FLUSHALL"])
              ),
            );
          },
        };
        return subject;
      },
    };
    try {
      for (const { rule, fn, options, applies } of RULES) {
        if (!applies(kind)) continue;
        await t.step(rule, async () => {
          const subject = await kind.open(options);
          try {
            await fn(subject, kind);
          } finally {
            await subject.close();
          }
        });
      }
    } finally {
      await cluster.stop();
    }
  },
});
