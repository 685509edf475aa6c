/**
 * The Lua scripts of the Redis store, each with its typed arguments and its
 * decoded reply. Every change to a room is one script, so ids, history,
 * nicks and the publish of an event move together.
 *
 * A script gets its keys (for room scripts: {@linkcode RoomKeys}) and one
 * argument, the JSON of its `Args`; it answers a value or a JSON text that
 * `decode` turns into its `Reply`. So every field is named once, on both
 * sides, and nothing is passed by position. Costs (what an event weighs in
 * history, by rooms.ts's `eventBytes`) come from TypeScript; Lua only adds
 * them up.
 *
 * @module
 */

import { createHash } from "node:crypto";
import type { RoomEvent } from "./protocol.ts";

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

/** The keys of a room script, in the order Lua reads them as KEYS[1..5]. */
export interface RoomKeys {
  /** Hash: `epoch`, `last` (the last event id), `bytes` (history's cost). */
  meta: string;
  /** Stream of the history: entry `N-0` for event N, fields `e`, `b`. */
  events: string;
  /** Hash: nick key → {@linkcode StoredHolder} JSON. */
  nicks: string;
  /** Hash: owner → nick key (a session's tabs are one member). */
  owners: string;
  /** Set: the rooms this process has connections in (for the reaper). */
  procRooms: string;
}

/** The keys as Lua gets them. */
export function keyList(keys: RoomKeys): string[] {
  return [keys.meta, keys.events, keys.nicks, keys.owners, keys.procRooms];
}

/** What every room script is told about the room's limits. */
export interface RoomArgs {
  /** The room's pub/sub channel: every appended event is published there. */
  channel: string;
  /** Events the history keeps at most. */
  historySize: number;
  /** Bytes of history kept at most. */
  maxHistoryBytes: number;
  /** Seconds an empty room keeps its keys. */
  roomTtl: number;
}

/** A member as Redis keeps it (one per owner; a session's tabs count once). */
export interface StoredHolder {
  /** The nick. */
  n: string;
  /** Its owner, unique across processes. */
  o: string;
  /** Id of its join event (its reconnect token is derived from it). */
  j: number;
  /** Id of the event that gave it the nick (its join or last rename). */
  c: number;
  /** What its leave event will cost in history. */
  lc: number;
  /** Its connections, by process id. */
  k: Record<string, number>;
}

/** A nick a join may take, with what its join and leave events cost. */
export interface NickChoice {
  /** Its nick key (rooms.ts `nickKey`). */
  key: string;
  nick: string;
  joinCost: number;
  leaveCost: number;
}

// Lua 5.1 in Redis. KEYS: meta, events, nicks, owners, procrooms (see
// RoomKeys); ARGV[1]: the script's arguments as JSON (A).
const ROOM_PRELUDE = `
local A = cjson.decode(ARGV[1])
local function now_ms()
  local t = redis.call('TIME')
  return tonumber(t[1]) * 1000 + math.floor(tonumber(t[2]) / 1000)
end
-- Appends and publishes an event (unless unpublished: the caller publishes
-- it with others); history keeps at most A.historySize events and
-- A.maxHistoryBytes bytes (each entry's cost in its field b), oldest out
-- first.
local function append(body, cost, unpublished)
  local id = redis.call('HINCRBY', KEYS[1], 'last', 1)
  local sid = string.format('%d', id)
  local ev = string.sub(body, 1, -2) .. ',"id":' .. sid ..
    ',"ts":' .. string.format('%d', now_ms()) .. '}'
  redis.call('XADD', KEYS[2], sid .. '-0', 'e', ev, 'b', cost)
  local bytes = redis.call('HINCRBY', KEYS[1], 'bytes', cost)
  local count = redis.call('XLEN', KEYS[2])
  while count > 0 and (count > A.historySize or bytes > A.maxHistoryBytes) do
    local first = redis.call('XRANGE', KEYS[2], '-', '+', 'COUNT', 1)[1]
    redis.call('XDEL', KEYS[2], first[1])
    bytes = redis.call('HINCRBY', KEYS[1], 'bytes', -tonumber(first[2][4]))
    count = count - 1
  end
  if not unpublished then redis.call('PUBLISH', A.channel, ev) end
  return ev
end
local function nickevent(kind, nick, cost)
  return append('{"type":"' .. kind .. '","nick":' .. cjson.encode(nick) .. '}',
    cost)
end
local function total(k)
  local n = 0
  for _, c in pairs(k) do n = n + c end
  return n
end
local function holder(key)
  local h = redis.call('HGET', KEYS[3], key)
  if h then return cjson.decode(h) end
  return nil
end
local function keep(key, d)
  redis.call('HSET', KEYS[3], key, cjson.encode(d))
  redis.call('HSET', KEYS[4], d.o, key)
end
-- The member is out: announced if others remain; the last one out starts
-- the room's expiry.
local function drop(key, d, announce)
  redis.call('HDEL', KEYS[3], key)
  redis.call('HDEL', KEYS[4], d.o)
  if redis.call('HLEN', KEYS[3]) == 0 then
    redis.call('EXPIRE', KEYS[1], A.roomTtl)
    redis.call('EXPIRE', KEYS[2], A.roomTtl)
  elseif announce then
    nickevent('leave', d.n, d.lc)
  end
end
local function list(items)
  return '[' .. table.concat(items, ',') .. ']'
end
local function history()
  local out = {}
  for _, e in ipairs(redis.call('XRANGE', KEYS[2], '-', '+')) do
    out[#out + 1] = e[2][2]
  end
  return out
end
`;

/**
 * Appends events to the room (which must exist), in order, and publishes
 * them as one message: a JSON array (a single event is published as
 * itself by the other scripts).
 */
export const APPEND = script<
  RoomArgs & {
    events: {
      /** The event's JSON, without id and ts. */ body: string;
      cost: number;
    }[];
  },
  RoomEvent[]
>(
  `
if redis.call('HEXISTS', KEYS[1], 'epoch') == 0 then
  return redis.error_reply('NOROOM the room is gone')
end
local out = {}
for i, e in ipairs(A.events) do out[i] = append(e.body, e.cost, true) end
local batch = list(out)
redis.call('PUBLISH', A.channel, batch)
return batch
`,
  (reply) => JSON.parse(reply as string),
);

/** What a join asks of Redis. */
export interface JoinArgs extends RoomArgs {
  /** This process. */
  process: string;
  owner: string;
  room: string;
  /** The epoch the room gets if it is new. */
  newEpoch: string;
  /** The nick asked for, if any. */
  wanted?: NickChoice;
  /** A stale holder of `wanted` whose token the client showed. */
  takeover?: { owner: string; joinedId: number };
  /** Resume: the client's last event id and its epoch. */
  since?: number;
  clientEpoch?: string;
  /** Where a takeover tells the stale holder's processes: prefix + process. */
  evictPrefix: string;
  /** Random nicks to try, in order, when `wanted` is absent or taken. */
  candidates: NickChoice[];
}

/** What Redis answers a join ({@linkcode JoinArgs}). */
export interface JoinReply {
  nick: string;
  taken: boolean;
  /** The owner was a member already (another tab). */
  present: boolean;
  epoch: string;
  lastId: number;
  joinedId: number;
  claimedId: number;
  /** A resume that could not be served exactly. */
  gap: boolean;
  /** What the client missed (and its join), or the room's history. */
  history: RoomEvent[];
}

/**
 * Turns a hold into a member: another tab of a member is counted; else a
 * takeover (by token), the nick (asked for or the first free candidate),
 * what a resuming client missed, and the join event. Fails with `NICKS`
 * when every candidate is taken.
 */
export const JOIN = script<JoinArgs, JoinReply>(
  `
redis.call('HSETNX', KEYS[1], 'epoch', A.newEpoch)
redis.call('PERSIST', KEYS[1])
redis.call('PERSIST', KEYS[2])
redis.call('SADD', KEYS[5], A.room)
local epoch = redis.call('HGET', KEYS[1], 'epoch')
local function last()
  return tonumber(redis.call('HGET', KEYS[1], 'last') or '0')
end
-- What a resuming client missed, read before its join is appended.
local function missed()
  if A.since == nil then return nil end
  if A.clientEpoch ~= epoch or A.since > last() then return nil end
  local first = redis.call('XRANGE', KEYS[2], '-', '+', 'COUNT', 1)
  local oldest = last() + 1
  if #first > 0 then oldest = tonumber(string.match(first[1][1], '^(%d+)')) end
  if A.since < oldest - 1 then return nil end
  local out = {}
  local from = string.format('%d', A.since + 1) .. '-0'
  for _, e in ipairs(redis.call('XRANGE', KEYS[2], from, '+')) do
    out[#out + 1] = e[2][2]
  end
  return out
end
local function answer(d, taken, present, got, id)
  local meta = cjson.encode({nick = d.n, taken = taken, present = present,
    epoch = epoch, lastId = id, joinedId = d.j, claimedId = d.c,
    gap = A.since ~= nil and got == nil})
  -- No member list: each process keeps its own (roster.ts), so a join
  -- reads nothing that grows with the room but its bounded history.
  return {meta, list(got or history())}
end
-- One more connection of a member (another tab of its session).
local mine = redis.call('HGET', KEYS[4], A.owner)
if mine then
  local d = holder(mine)
  if d and d.o == A.owner then
    d.k[A.process] = (d.k[A.process] or 0) + 1
    keep(mine, d)
    return answer(d, false, true, missed(), last())
  end
  redis.call('HDEL', KEYS[4], A.owner)
end
if A.takeover and A.wanted then
  local d = holder(A.wanted.key)
  if d and d.o == A.takeover.owner and d.j == A.takeover.joinedId then
    redis.call('HDEL', KEYS[3], A.wanted.key)
    redis.call('HDEL', KEYS[4], d.o)
    nickevent('leave', d.n, d.lc)
    for proc, _ in pairs(d.k) do
      redis.call('PUBLISH', A.evictPrefix .. proc, cjson.encode({A.room, d.o}))
    end
  end
end
local choice = nil
local taken = false
if A.wanted then
  if redis.call('HEXISTS', KEYS[3], A.wanted.key) == 0 then
    choice = A.wanted
  else
    taken = true
  end
end
if not choice then
  for _, c in ipairs(A.candidates) do
    if redis.call('HEXISTS', KEYS[3], c.key) == 0 then
      choice = c
      break
    end
  end
end
if not choice then return redis.error_reply('NICKS every candidate is taken') end
local got = missed()
local joined = nickevent('join', choice.nick, choice.joinCost)
local id = last()
local k = {}
k[A.process] = 1
local d = {n = choice.nick, o = A.owner, j = id, c = id, lc = choice.leaveCost,
  k = k}
keep(choice.key, d)
if got then got[#got + 1] = joined end
return answer(d, taken, false, got, id)
`,
  (reply) => {
    const [meta, history] = reply as [string, string];
    return { ...JSON.parse(meta), history: JSON.parse(history) };
  },
);

/** What a leave asks of Redis. */
export interface LeaveArgs extends RoomArgs {
  /** The member's nick key; absent: found by owner. */
  key?: string;
  process: string;
  owner: string;
  /** Announce the leave if the member is out and others remain. */
  announce: boolean;
  /** This process has no connection left in the room. */
  noneHere: boolean;
  room: string;
  /** How many of the owner's connections here go. */
  connections: number;
}

/** Some of an owner's connections here leave; true if the member is out. */
export const LEAVE = script<LeaveArgs, boolean>(
  `
if A.noneHere then redis.call('SREM', KEYS[5], A.room) end
local key = A.key
if key == nil then
  key = redis.call('HGET', KEYS[4], A.owner)
  if not key then return 0 end
end
local d = holder(key)
if not d or d.o ~= A.owner then return 0 end
local left = (d.k[A.process] or 0) - A.connections
if left > 0 then d.k[A.process] = left else d.k[A.process] = nil end
if total(d.k) > 0 then
  keep(key, d)
  return 0
end
drop(key, d, A.announce)
return 1
`,
  (reply) => reply === 1,
);

/** What a rename asks of Redis. */
export interface RenameArgs extends RoomArgs {
  fromKey: string;
  toKey: string;
  owner: string;
  to: string;
  /** The nick event's JSON (without id and ts) and its cost. */
  body: string;
  cost: number;
  /** What the member's leave will cost under its new nick. */
  leaveCost: number;
}

/** Moves a member to a free nick; the event, or `nick_taken`. */
export const RENAME = script<RenameArgs, RoomEvent | "nick_taken">(
  `
local d = holder(A.fromKey)
if not d or d.o ~= A.owner then return 0 end
if A.toKey ~= A.fromKey and redis.call('HEXISTS', KEYS[3], A.toKey) == 1 then
  return 0
end
redis.call('HDEL', KEYS[3], A.fromKey)
d.n = A.to
d.lc = A.leaveCost
local renamed = append(A.body, A.cost)
d.c = tonumber(redis.call('HGET', KEYS[1], 'last'))
keep(A.toKey, d)
return renamed
`,
  (reply) => typeof reply === "string" ? JSON.parse(reply) : "nick_taken",
);

/**
 * A dead process's connections are gone: members with none left leave,
 * each announced once, in the order they joined. Answers how many left.
 */
export const REAP = script<RoomArgs & { process: string }, number>(
  `
local gone = {}
local all = redis.call('HGETALL', KEYS[3])
for i = 1, #all, 2 do
  local d = cjson.decode(all[i + 1])
  if d.k[A.process] then
    d.k[A.process] = nil
    if total(d.k) == 0 then
      gone[#gone + 1] = {all[i], d}
    else
      keep(all[i], d)
    end
  end
end
table.sort(gone, function(a, b) return a[2].j < b[2].j end)
for _, g in ipairs(gone) do drop(g[1], g[2], true) end
return #gone
`,
  (reply) => reply as number,
);

/** A local member to put back after an outage. */
export interface ReclaimArgs extends RoomArgs, NickChoice {
  process: string;
  owner: string;
  joinedId: number;
  room: string;
  /** The epoch it joined in: a room that started over is not its any more. */
  epoch: string;
  /** Its connections in this process. */
  connections: number;
}

/**
 * After an outage: puts a local member back (its connections here) if it
 * was reaped meanwhile. `ok`: it was still there; `rejoined`: it joined
 * again (announced); `taken`: someone holds its nick; `epoch`: the room
 * started over.
 */
export const RECLAIM = script<
  ReclaimArgs,
  "ok" | "rejoined" | "taken" | "epoch"
>(
  `
if redis.call('HGET', KEYS[1], 'epoch') ~= A.epoch then return 'epoch' end
redis.call('SADD', KEYS[5], A.room)
local current = redis.call('HGET', KEYS[4], A.owner)
if current then
  local d = holder(current)
  if d and d.o == A.owner then
    d.k[A.process] = A.connections
    keep(current, d)
    return 'ok'
  end
end
if redis.call('HEXISTS', KEYS[3], A.key) == 1 then return 'taken' end
redis.call('PERSIST', KEYS[1])
redis.call('PERSIST', KEYS[2])
nickevent('join', A.nick, A.joinCost)
local k = {}
k[A.process] = A.connections
keep(A.key, {n = A.nick, o = A.owner, j = A.joinedId, c = A.joinedId,
  lc = A.leaveCost, k = k})
return 'rejoined'
`,
  (reply) => reply as "ok" | "rejoined" | "taken" | "epoch",
);

/**
 * Forgets a process whose heartbeat expired (after its rooms were reaped).
 * KEYS: its heartbeat, its procrooms set, the set of processes.
 */
export const FORGET = script<{ process: string }, boolean>(
  `
local A = cjson.decode(ARGV[1])
if redis.call('EXISTS', KEYS[1]) == 0 then
  redis.call('DEL', KEYS[2])
  redis.call('SREM', KEYS[3], A.process)
  return 1
end
return 0
`,
  (reply) => reply === 1,
  "",
);

/** Where a process's view of a room starts: {@linkcode BASELINE}'s reply. */
export interface Baseline {
  /** The room's last event id (0 for a room that does not exist yet). */
  last: number;
  /** Its epoch; absent for a room that does not exist yet. */
  epoch?: string;
  /** Its members as of `last`. */
  holders: StoredHolder[];
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
    const [last, epoch, holders] = reply as [string, string, string];
    return {
      last: Number(last),
      epoch: epoch || undefined,
      holders: JSON.parse(holders),
    };
  },
  "",
);
