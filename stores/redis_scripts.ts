/**
 * The Lua scripts of the Redis store, each with its typed arguments and its
 * decoded reply. They hold no room rule: the rules are room_rules.ts's, run
 * in TypeScript on what {@linkcode READ} found; {@linkcode COMMIT} then
 * writes what they decided, appends their events (ids, history, trim) and
 * publishes them in one step, if what they were decided on is unchanged
 * (else it answers `behind`, and the store reads and decides again). The
 * others read ({@linkcode BASELINE}) or forget a dead process
 * ({@linkcode FORGET}).
 *
 * A script gets its keys (for room scripts: {@linkcode RoomKeys}) and one
 * argument, the JSON of its `Args`; it answers a value that `decode` turns
 * into its `Reply`. So every field is named once, on both sides, and
 * nothing is passed by position. Costs (what an event weighs in history, by
 * rooms.ts's `eventBytes`) come from TypeScript; Lua only adds them up.
 *
 * @module
 */

import { createHash } from "node:crypto";
import type { ReactEvent, RoomEvent } from "../wire/protocol.ts";
import type { Member } from "./room_rules.ts";

/** A Redis reply as node-redis gives it for RESP2. */
export type Reply = string | number | null | Reply[];

/** One script: its text, its SHA-1 (for EVALSHA), and its reply's decoder. */
export interface Script<Args, Answer> {
  text: string;
  sha: string;
  /** Marks the argument type; never read. */
  readonly args?: Args;
  decode(reply: Reply): Answer;
}

function script<Args, Answer>(
  body: string,
  decode: (reply: Reply) => Answer,
  prelude = ROOM_PRELUDE,
): Script<Args, Answer> {
  const text = prelude + body;
  return { text, sha: createHash("sha1").update(text).digest("hex"), decode };
}

/** The keys of a room script, in the order Lua reads them as KEYS[1..12]. */
export interface RoomKeys {
  /**
   * Hash: `epoch`, `last` (the last event id), `bytes` (history's cost),
   * `ctrl` (the members' version: every change to `nicks`, `owners` or
   * `reserved` adds one).
   */
  meta: string;
  /** Stream of the history: entry `N-0` for event N, fields `e`, `b`. */
  events: string;
  /** Hash: nick key → the member's JSON (room_rules.ts `Member`). */
  nicks: string;
  /** Hash: owner → nick key (a session's tabs are one member). */
  owners: string;
  /** Set: the rooms this process has connections in (for the reaper). */
  procRooms: string;
  /**
   * Hash, kept when the room empties: `topic`, `slow` (seconds), `private`
   * (`1`: invite-only), `v` (its version: every change adds one), and the
   * sanctions `b:NICKKEY` (bans) and `m:NICKKEY` (mutes), each a rules
   * `Sanction` JSON.
   */
  moderation: string;
  /** Hash, kept: nick key → the verified owner that holds or held it. */
  reserved: string;
  /** Hash: owner → when they last posted (ms), for slow mode; expires. */
  posted: string;
  /**
   * Hash: nick key → `{nick, joinedId}` of each member who is a moderator
   * (a subset of `nicks`, kept with it): a join lists the moderators from
   * it without reading every member.
   */
  ops: string;
  /**
   * Hash: event id → the event's JSON as edited (rules `edit`): a stream
   * entry cannot be rewritten, so every read of history takes an entry's
   * event from here when it is here. Trimmed and expiring with `events`.
   */
  edits: string;
  /**
   * Hash: message id → the JSON of its reactions (rules `KeptReaction[]`;
   * `[]`: it had some, all taken back). Beside the stream, not in it: a
   * reaction takes no history slot. Trimmed, deleted and expiring with its
   * message, as `edits`.
   */
  reactions: string;
  /**
   * Hash, kept when the room empties: invite key (a person's key, or
   * `link:` and a code's hash; never a code) → rules `Invite` JSON, and `v`
   * (its version: every change adds one). Apart from `moderation`, so that
   * what posts read does not grow with the invites, and a code's use is
   * decided on its own field (two processes spending one: the second finds
   * it changed), not on a version every admission moves.
   */
  invites: string;
}

/** A room key by name, as the scripts' arguments name it. */
export type KeyName = keyof RoomKeys;

/** Where each key is in `KEYS` (1-based, as Lua counts). */
export const KEY_INDEX: Record<KeyName, number> = {
  meta: 1,
  events: 2,
  nicks: 3,
  owners: 4,
  procRooms: 5,
  moderation: 6,
  reserved: 7,
  posted: 8,
  ops: 9,
  edits: 10,
  reactions: 11,
  invites: 12,
};

/** The keys as Lua gets them. */
export function keyList(keys: RoomKeys): string[] {
  return [
    keys.meta,
    keys.events,
    keys.nicks,
    keys.owners,
    keys.procRooms,
    keys.moderation,
    keys.reserved,
    keys.posted,
    keys.ops,
    keys.edits,
    keys.reactions,
    keys.invites,
  ];
}

/** What every room script is told about the room's limits. */
export interface RoomArgs {
  /** The room's pub/sub channel: every appended event is published there. */
  channel: string;
  /**
   * The channel is sharded (Redis Cluster: `SPUBLISH`, in the room's slot);
   * other channels (`publish`'s evictions) are plain `PUBLISH` either way.
   */
  sharded?: boolean;
  /** Events the history keeps at most. */
  historySize: number;
  /** Bytes of history kept at most. */
  maxHistoryBytes: number;
  /** Seconds an empty room keeps its keys. */
  roomTtl: number;
}

// Lua 5.1 in Redis. KEYS: meta, events, nicks, owners, procrooms, mod,
// reserved, posted, ops, edits, reactions, invites (see RoomKeys); ARGV[1]: the
// script's arguments as JSON (A).
const ROOM_PRELUDE = `
local A = cjson.decode(ARGV[1])
-- History as it reads now: a range of the stream (XRANGE or XREVRANGE),
-- each entry's event as edited where an edit replaced it (KEYS[10]).
local function range(command, ...)
  local entries = redis.call(command, KEYS[2], ...)
  if redis.call('EXISTS', KEYS[10]) == 1 then
    for _, entry in ipairs(entries) do
      local e = redis.call('HGET', KEYS[10], string.match(entry[1], '^(%d+)'))
      if e then entry[2][2] = e end
    end
  end
  return entries
end
`;

// ---------------------------------------------------------------------------
// Reading a room
// ---------------------------------------------------------------------------

/** What the rules may read of a room: {@linkcode READ}'s arguments. */
export interface ReadPlan {
  /** Members by nick key. */
  members?: string[];
  /** Members by owner (their nick key, then the member). */
  owners?: string[];
  /** Nick keys reserved for a verified owner. */
  reserved?: string[];
  /** The whole moderation hash. */
  moderation?: boolean;
  /** When these owners last posted (slow mode). */
  posted?: string[];
  /** Kept events by id (for a deletion). */
  kept?: number[];
  /** Kept messages' reactions by id (`reactions` fields, as stored). */
  reactions?: number[];
  /** Every member (a reap). */
  all?: boolean;
  /** Invites by their key (`invites` fields, as stored). */
  invites?: string[];
  /** The whole invites hash (moderators' invite commands). */
  allInvites?: boolean;
}

/** What {@linkcode READ} found, as Redis answers (decoded by the store). */
export type ReadReply = [
  meta: (string | null)[],
  members: (string | null)[],
  ownerKeys: (string | null)[],
  owners: (string | null)[],
  reserved: (string | null)[],
  moderation: string[],
  posted: (string | null)[],
  kept: ([string, string[]] | null)[],
  all: string[],
  count: number,
  reactions: (string | null)[],
  invites: (string | null)[],
  allInvites: string[],
];

/**
 * Reads what a rule may read of a room, at one instant: meta (`epoch`,
 * `last`, `ctrl`), the members asked for by key and by owner, reserved
 * names, the moderation hash, slow mode's clocks, kept events, every
 * member, how many members there are, kept messages' reactions, and
 * invites (by key, or all of them).
 */
export const READ = script<ReadPlan, ReadReply>(
  `
local function hmget(key, fields)
  if not fields or #fields == 0 then return {} end
  return redis.call('HMGET', key, unpack(fields))
end
local ownerKeys = hmget(KEYS[4], A.owners)
local owners = {}
for i = 1, #(A.owners or {}) do
  owners[i] = ownerKeys[i] and redis.call('HGET', KEYS[3], ownerKeys[i]) or false
end
local kept = {}
for i, id in ipairs(A.kept or {}) do
  local sid = string.format('%d', id) .. '-0'
  kept[i] = range('XRANGE', sid, sid)[1] or false
end
return {
  redis.call('HMGET', KEYS[1], 'epoch', 'last', 'ctrl'),
  hmget(KEYS[3], A.members), ownerKeys, owners, hmget(KEYS[7], A.reserved),
  A.moderation and redis.call('HGETALL', KEYS[6]) or {},
  hmget(KEYS[8], A.posted), kept,
  A.all and redis.call('HVALS', KEYS[3]) or {},
  redis.call('HLEN', KEYS[3]), hmget(KEYS[11], A.reactions),
  hmget(KEYS[12], A.invites),
  A.allInvites and redis.call('HGETALL', KEYS[12]) or {}}
`,
  (reply) => reply as ReadReply,
);

// ---------------------------------------------------------------------------
// Committing what the rules decided
// ---------------------------------------------------------------------------

/**
 * A value a write or a publish sends: text, the id of this commit's event
 * `id` (1-based), the room's last id once `last` of this commit's events
 * are appended (0: the last id before them), or pieces of those joined (a
 * member's JSON with the ids of its join).
 */
export type CommitValue =
  | string
  | { id: number }
  | { last: number }
  | { concat: CommitValue[] };

/** A command run on one of the room's keys: name, key, then its arguments. */
export type KeyCommand = [command: string, key: number, ...args: CommitValue[]];

/** What {@linkcode COMMIT} is told. */
export interface CommitArgs extends RoomArgs {
  /**
   * Fields that must still hold what was read (`null`: absent), else
   * nothing is done and the answer is `behind`.
   */
  unchanged: [key: number, field: string, value: string | null][];
  /** Stream entries (`N-0`) that must still be kept. */
  entries: string[];
  /**
   * After the writes, a room nobody is in (`nicks` empty) keeps its `meta`
   * and `events` for `roomTtl` seconds from now.
   */
  retain: boolean;
  /** Read before anything is written (a resuming member's missed events). */
  before: KeyCommand[];
  /**
   * Events to append, each its JSON without id and ts, its cost, and its
   * type (for the webhooks' outbox).
   */
  events: { body: string; cost: number; type: string }[];
  /** What to write, in order. */
  writes: KeyCommand[];
  /**
   * Notices for the room's subscribers (rules `announce`), each after the
   * first `at` of this commit's events, as it was announced: those between
   * two events are published as one {@linkcode PublishedNotices}.
   */
  notices: { at: number; notice: string }[];
  /**
   * `edits` or `reactions` were written: in a room left to expire they
   * expire with its `meta`.
   */
  beside: boolean;
  /** Messages to publish after the events: channel and message. */
  publish: [channel: string, message: CommitValue][];
  /**
   * This process's id: the events are published as one `{from, events}`
   * batch (a turn's posts); without it each on its own.
   */
  from?: string;
  /**
   * Not published here: the store publishes the `{from, events}` batch
   * itself once replicas have it (`waitReplicas`, redis_store.ts).
   */
  hold?: boolean;
  /** Read after everything is written (what a welcome says). */
  after: KeyCommand[];
  /**
   * The webhooks' outbox (redis_outbox.ts): each appended event of a type
   * in `types` is added to every stream of `streams` (fields `r`, the room,
   * and `e`, the event), in the order appended. `persist`: the streams may
   * have been given a TTL while empty (a cluster's, redis_outbox.ts), which
   * an entry takes away.
   */
  outbox?: {
    room: string;
    streams: string[];
    types: Record<string, true>;
    persist?: boolean;
  };
}

/** What a commit came to. */
export type CommitReply =
  | { behind: true }
  | { events: RoomEvent[]; before: Reply[]; after: Reply[] };

/**
 * Commits a rule's decision, if what it read is unchanged: appends its
 * events (the next ids, the time, the history trimmed to its bounds, oldest
 * first, with their edits and reactions), runs its writes, publishes its
 * events, notices and messages, and answers the events and what it asked to
 * read before and after.
 */
export const COMMIT = script<CommitArgs, CommitReply>(
  `
for _, u in ipairs(A.unchanged) do
  local v = redis.call('HGET', KEYS[u[1]], u[2])
  if (u[3] == cjson.null and v) or (u[3] ~= cjson.null and v ~= u[3]) then
    return {'behind'}
  end
end
for _, sid in ipairs(A.entries) do
  if #redis.call('XRANGE', KEYS[2], sid, sid) == 0 then return {'behind'} end
end
local ids, events = {}, {}
local base = tonumber(redis.call('HGET', KEYS[1], 'last') or '0')
local function value(v)
  if type(v) ~= 'table' then return v end
  if v.id then return ids[v.id] end
  if v.last then return string.format('%d', base + v.last) end
  local parts = {}
  for i, p in ipairs(v.concat) do parts[i] = value(p) end
  return table.concat(parts)
end
local function run(commands)
  local out = {}
  for i, c in ipairs(commands) do
    local args = {}
    for j = 3, #c do args[#args + 1] = value(c[j]) end
    if c[2] == 2 and (c[1] == 'XRANGE' or c[1] == 'XREVRANGE') then
      out[i] = range(c[1], unpack(args))
    else
      out[i] = redis.call(c[1], KEYS[c[2]], unpack(args))
    end
  end
  return out
end
local before = run(A.before)
if #A.events > 0 then
  local t = redis.call('TIME')
  local ts = string.format('%d',
    tonumber(t[1]) * 1000 + math.floor(tonumber(t[2]) / 1000))
  for i, e in ipairs(A.events) do
    ids[i] = string.format('%d', redis.call('HINCRBY', KEYS[1], 'last', 1))
    events[i] = string.sub(e.body, 1, -2) .. ',"id":' .. ids[i] ..
      ',"ts":' .. ts .. '}'
    redis.call('XADD', KEYS[2], ids[i] .. '-0', 'e', events[i], 'b', e.cost)
    redis.call('HINCRBY', KEYS[1], 'bytes', e.cost)
  end
end
run(A.writes)
if #A.events > 0 then
  -- History keeps at most A.historySize events and A.maxHistoryBytes bytes
  -- (each entry's cost in its field b), oldest out first, a chunk at a time.
  local count = redis.call('XLEN', KEYS[2])
  local bytes = tonumber(redis.call('HGET', KEYS[1], 'bytes'))
  local freed = 0
  while count > 0 and (count > A.historySize or bytes > A.maxHistoryBytes) do
    local want = math.min(math.max(count - A.historySize, 1), 256)
    local gone = {}
    for _, e in ipairs(redis.call('XRANGE', KEYS[2], '-', '+', 'COUNT', want)) do
      if count <= A.historySize and bytes <= A.maxHistoryBytes then break end
      gone[#gone + 1] = e[1]
      bytes = bytes - tonumber(e[2][4])
      freed = freed + tonumber(e[2][4])
      count = count - 1
    end
    if #gone == 0 then break end
    redis.call('XDEL', KEYS[2], unpack(gone))
    for j, sid in ipairs(gone) do gone[j] = string.match(sid, '^(%d+)') end
    redis.call('HDEL', KEYS[10], unpack(gone))
    redis.call('HDEL', KEYS[11], unpack(gone))
  end
  if freed > 0 then redis.call('HINCRBY', KEYS[1], 'bytes', -freed) end
end
-- The webhooks' outbox: each wanted event to every endpoint's stream.
if A.outbox then
  for i, e in ipairs(events) do
    if A.outbox.types[A.events[i].type] then
      for _, stream in ipairs(A.outbox.streams) do
        redis.call('XADD', stream, '*', 'r', A.outbox.room, 'e', e)
        if A.outbox.persist then redis.call('PERSIST', stream) end
      end
    end
  end
end
-- The events, each notice after those appended before it was announced
-- (the notices between two events as one message), or (A.from) the events
-- as one batch and then the notices.
local PUB = A.sharded and 'SPUBLISH' or 'PUBLISH'
local notices, n = A.notices or {}, 1
local function publishNotices(upTo)
  local group = {}
  while notices[n] and notices[n].at <= upTo do
    group[#group + 1] = notices[n].notice
    n = n + 1
  end
  if #group == 0 then return end
  redis.call(PUB, A.channel, '{"after":' ..
    string.format('%d', base + upTo) .. ',"notices":[' ..
    table.concat(group, ',') .. ']}')
end
if A.from and #events > 0 then
  if not A.hold then
    redis.call(PUB, A.channel, '{"from":' .. cjson.encode(A.from) ..
      ',"events":[' .. table.concat(events, ',') .. ']}')
  end
else
  publishNotices(0)
  for i, e in ipairs(events) do
    redis.call(PUB, A.channel, e)
    publishNotices(i)
  end
end
publishNotices(#events)
if A.retain and redis.call('HLEN', KEYS[3]) == 0 then
  redis.call('EXPIRE', KEYS[1], A.roomTtl)
  redis.call('EXPIRE', KEYS[2], A.roomTtl)
  redis.call('EXPIRE', KEYS[10], A.roomTtl)
  redis.call('EXPIRE', KEYS[11], A.roomTtl)
elseif A.beside then
  -- Written while the room is left to expire: they go with it, not after
  -- it (a room made again starts its ids at 1).
  local ttl = redis.call('PTTL', KEYS[1])
  if ttl > 0 then
    redis.call('PEXPIRE', KEYS[10], ttl)
    redis.call('PEXPIRE', KEYS[11], ttl)
  end
end
for _, p in ipairs(A.publish) do
  redis.call(p[1] == A.channel and PUB or 'PUBLISH', p[1], value(p[2]))
end
return {'ok', '[' .. table.concat(events, ',') .. ']', before, run(A.after)}
`,
  (reply) => {
    const [status, events, before, after] = reply as [
      string,
      string,
      Reply[],
      Reply[],
    ];
    if (status === "behind") return { behind: true };
    return { events: JSON.parse(events), before, after };
  },
);

/** What {@linkcode RANGE} is told. */
export interface RangeArgs {
  command: "XRANGE" | "XREVRANGE";
  /** The command's arguments after the key. */
  range: string[];
  /** Answer the reactions on the events too (a history page). */
  reactions?: boolean;
}

/** What {@linkcode RANGE} found. */
export interface RangeReply {
  events: RoomEvent[];
  /**
   * The `reactions` fields of those events that have one, as stored (when
   * asked for): id, JSON.
   */
  reactions: [id: number, json: string][];
}

/**
 * Events of the room's history as they read now (edits applied): a range
 * of the stream by `command` (XRANGE or XREVRANGE) and its arguments; and,
 * read at the same instant, their reactions.
 */
export const RANGE = script<RangeArgs, RangeReply>(
  `
local out, reacted = {}, {}
local reactions = A.reactions and redis.call('EXISTS', KEYS[11]) == 1
for i, entry in ipairs(range(A.command, unpack(A.range))) do
  out[i] = entry[2][2]
  if reactions then
    local id = string.match(entry[1], '^(%d+)')
    local r = redis.call('HGET', KEYS[11], id)
    if r then
      reacted[#reacted + 1] = id
      reacted[#reacted + 1] = r
    end
  end
end
return {'[' .. table.concat(out, ',') .. ']', reacted}
`,
  (reply) => {
    const [events, reacted] = reply as [string, string[]];
    const reactions: RangeReply["reactions"] = [];
    for (let i = 0; i < reacted.length; i += 2) {
      reactions.push([Number(reacted[i]), reacted[i + 1]]);
    }
    return { events: JSON.parse(events), reactions };
  },
);

// ---------------------------------------------------------------------------
// Read markers
// ---------------------------------------------------------------------------

/** One marker to write: see {@linkcode MarkArgs}. */
export interface MarkItem {
  /** Its person's markers hash: the index in KEYS (1-based). */
  key: number;
  /** The room. */
  field: string;
  /** What the field must still hold (`null`: absent), else it is not written. */
  expected: string | null;
  /** The marker's JSON from now on. */
  value: string;
  /** Rooms whose markers the person keeps no more. */
  forget: string[];
  /** What every process hears of it (JSON). */
  message: string;
}

/**
 * What {@linkcode MARK} is told: markers moved on this process lately, each
 * one field of a person's markers hash (KEYS: room → the marker's JSON), to
 * write if it still holds what the rule (markers.ts `markRead`) decided on.
 */
export interface MarkArgs {
  items: MarkItem[];
  /** Seconds a person's markers are kept from now. */
  ttl: number;
  /** Where every process hears of those written, as one JSON array. */
  channel: string;
}

/**
 * Sets each marker whose field still holds what was read (a compare-and-
 * set: the rule is markers.ts's), forgets what the rule said, keeps the
 * hash for `ttl`, and tells every process of all of them in one publish;
 * answers which were written (the others are read and decided again).
 */
export const MARK = script<MarkArgs, boolean[]>(
  `
local done, told = {}, {}
for i, it in ipairs(A.items) do
  local k = KEYS[it.key]
  local v = redis.call('HGET', k, it.field)
  if (it.expected == cjson.null and v) or (it.expected ~= cjson.null and v ~= it.expected) then
    done[i] = 0
  else
    redis.call('HSET', k, it.field, it.value)
    if #it.forget > 0 then redis.call('HDEL', k, unpack(it.forget)) end
    redis.call('EXPIRE', k, A.ttl)
    done[i] = 1
    told[#told + 1] = it.message
  end
end
if #told > 0 then
  redis.call('PUBLISH', A.channel, '[' .. table.concat(told, ',') .. ']')
end
return done
`,
  (reply) => (reply as number[]).map((done) => done === 1),
  "local A = cjson.decode(ARGV[1])\n",
);

// ---------------------------------------------------------------------------
// Processes
// ---------------------------------------------------------------------------

/**
 * Forgets a process whose heartbeat expired (after its rooms were reaped).
 * KEYS: its heartbeat, its procrooms set, the set of processes.
 */
export const FORGET = script<{ process: string }, boolean>(
  `
if redis.call('EXISTS', KEYS[1]) == 0 then
  redis.call('DEL', KEYS[2])
  redis.call('SREM', KEYS[3], A.process)
  return 1
end
return 0
`,
  (reply) => reply === 1,
);

/** What {@linkcode KEEP_LAST} is told: the room as a process delivered it. */
export interface KeepLastArgs {
  epoch: string;
  /** The last id the process delivered. */
  last: number;
}

/**
 * After an outage: a room whose last id went back behind what a process
 * delivered (a failover lost its last writes: a replica is behind its
 * master) gets that id back as its last, so that no id is given out twice
 * (a process drops an id it delivered already). The lost events stay lost:
 * processes that had not delivered them see a gap. Answers the last id as
 * it was, or -1 if the room is another epoch (or gone). KEYS: meta.
 */
export const KEEP_LAST = script<KeepLastArgs, number>(
  `
if redis.call('HGET', KEYS[1], 'epoch') ~= A.epoch then return -1 end
local last = tonumber(redis.call('HGET', KEYS[1], 'last') or '0')
if last < A.last then
  redis.call('HSET', KEYS[1], 'last', string.format('%d', A.last))
end
return last
`,
  (reply) => reply as number,
  "local A = cjson.decode(ARGV[1])\n",
);

/** Where a process's view of a room starts: {@linkcode BASELINE}'s reply. */
export interface Baseline {
  /** The room's last event id (0 for a room that does not exist yet). */
  last: number;
  /** Its epoch; absent for a room that does not exist yet. */
  epoch?: string;
  /** Its members as of `last` (room_rules.ts `Member` JSON). */
  members: Member[];
}

/**
 * The room's last id, epoch and members, read at one instant (a script), so
 * that the members are those as of that id: a process subscribes first,
 * reads this, and from then on keeps the members from the events it
 * delivers. O(members), once per process and room. KEYS: meta, nicks.
 */
export const BASELINE = script<Record<string, never>, Baseline>(
  `
local m = redis.call('HMGET', KEYS[1], 'last', 'epoch')
return {m[1] or '0', m[2] or '',
  '[' .. table.concat(redis.call('HVALS', KEYS[2]), ',') .. ']'}
`,
  (reply) => {
    const [last, epoch, members] = reply as [string, string, string];
    return {
      last: Number(last),
      epoch: epoch || undefined,
      members: JSON.parse(members),
    };
  },
);

/** What a batch of a turn's appends publishes on the room's channel. */
export interface PublishedBatch {
  /** The id of the process that appended them. */
  from: string;
  events: RoomEvent[];
}

/**
 * What a commit's notices (rules `announce`: reactions) publish on the
 * room's channel, after the events appended before them: each process's
 * subscribers get them once it has delivered event `after`.
 */
export interface PublishedNotices {
  /** The room's last id when they were announced. */
  after: number;
  notices: ReactEvent[];
}

/**
 * Published on a room's channel (and kept nowhere) when a member is out
 * without an event: the members of a process that shuts down (their leaves
 * are not announced). Each process's
 * member list (roster.ts) takes it after event `after`.
 */
export interface GoneNotice {
  type: "gone";
  nick: string;
  after: number;
}
