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
import type { RoomEvent } from "../wire/protocol.ts";

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

/** The keys of a room script, in the order Lua reads them as KEYS[1..9]. */
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
  /**
   * Hash, kept when the room empties: `topic`, `slow` (seconds), and the
   * sanctions `b:NICKKEY` (bans) and `m:NICKKEY` (mutes), each a
   * {@linkcode StoredSanction} JSON.
   */
  moderation: string;
  /** Hash, kept: nick key → the verified owner that holds or held it. */
  reserved: string;
  /** Hash: owner → when they last posted (ms), for slow mode; expires. */
  posted: string;
  /**
   * Hash: nick key → `{n, j}` of each member who is a moderator (a subset
   * of `nicks`, kept with it): a join lists the moderators from it without
   * reading every member.
   */
  ops: string;
}

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
  ];
}

/** A ban or mute as Redis keeps it (rooms.ts `Sanction`). */
export interface StoredSanction {
  nick: string;
  keys: string[];
  /** Ms since the epoch; absent: until lifted. */
  until?: number;
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
  /** Verified by a login token. */
  v?: boolean;
  /** A moderator. */
  op?: boolean;
  /** What a ban or mute of it holds against (rooms.ts `JoinRequest.keys`). */
  ks?: string[];
  /** A verified person's user id (rooms.ts `JoinRequest.user`). */
  u?: string;
}

/** A nick a join may take, with what its join and leave events cost. */
export interface NickChoice {
  /** Its nick key (rooms.ts `nickKey`). */
  key: string;
  nick: string;
  joinCost: number;
  leaveCost: number;
}

// Lua 5.1 in Redis. KEYS: meta, events, nicks, owners, procrooms, mod,
// reserved, posted, ops (see RoomKeys); ARGV[1]: the script's arguments as
// JSON (A).
const ROOM_PRELUDE = `
local A = cjson.decode(ARGV[1])
-- Read once: every event a script appends has the same ts.
local clock
local function now_ms()
  if not clock then
    local t = redis.call('TIME')
    clock = tonumber(t[1]) * 1000 + math.floor(tonumber(t[2]) / 1000)
  end
  return clock
end
-- History keeps at most A.historySize events and A.maxHistoryBytes bytes
-- (each entry's cost in its field b, bytes their sum), oldest out first:
-- read and deleted TRIM_CHUNK at a time, not one by one.
local TRIM_CHUNK = 256
local function trim(bytes)
  local count = redis.call('XLEN', KEYS[2])
  local freed = 0
  while count > 0 and (count > A.historySize or bytes > A.maxHistoryBytes) do
    local want = math.min(math.max(count - A.historySize, 1), TRIM_CHUNK)
    local ids = {}
    for _, e in ipairs(redis.call('XRANGE', KEYS[2], '-', '+', 'COUNT', want)) do
      if count <= A.historySize and bytes <= A.maxHistoryBytes then break end
      ids[#ids + 1] = e[1]
      bytes = bytes - tonumber(e[2][4])
      freed = freed + tonumber(e[2][4])
      count = count - 1
    end
    if #ids == 0 then break end
    redis.call('XDEL', KEYS[2], unpack(ids))
  end
  if freed > 0 then redis.call('HINCRBY', KEYS[1], 'bytes', -freed) end
end
-- Appends an event, trims the history and publishes the event, unless
-- batched: then the caller trims and publishes once for all its events.
local function append(body, cost, batched)
  local id = redis.call('HINCRBY', KEYS[1], 'last', 1)
  local sid = string.format('%d', id)
  local ev = string.sub(body, 1, -2) .. ',"id":' .. sid ..
    ',"ts":' .. string.format('%d', now_ms()) .. '}'
  redis.call('XADD', KEYS[2], sid .. '-0', 'e', ev, 'b', cost)
  local bytes = redis.call('HINCRBY', KEYS[1], 'bytes', cost)
  if not batched then
    trim(bytes)
    redis.call('PUBLISH', A.channel, ev)
  end
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
  if d.op then redis.call('HSET', KEYS[9], key, cjson.encode({n = d.n, j = d.j})) end
end
-- The holder of a nick key is no longer (its owner's entry is the caller's).
local function unhold(key)
  redis.call('HDEL', KEYS[3], key)
  redis.call('HDEL', KEYS[9], key)
end
-- The member is out: announced unless told not to (a process shutting
-- down), the last one out too; the last one out starts the room's expiry.
-- Out without an event, it is still published (not kept) for the
-- processes' member lists (roster.ts), in its place: after the room's last
-- event.
local function drop(key, d, announce)
  unhold(key)
  redis.call('HDEL', KEYS[4], d.o)
  local empty = redis.call('HLEN', KEYS[3]) == 0
  if empty then
    redis.call('EXPIRE', KEYS[1], A.roomTtl)
    redis.call('EXPIRE', KEYS[2], A.roomTtl)
  end
  -- The last one's leave is kept too: the history outlives the members,
  -- and a later visitor must not read two joins in a row.
  if announce then
    nickevent('leave', d.n, d.lc)
  else
    redis.call('PUBLISH', A.channel, cjson.encode({type = 'gone', nick = d.n,
      after = tonumber(redis.call('HGET', KEYS[1], 'last') or '0')}))
  end
end
local function list(items)
  return '[' .. table.concat(items, ',') .. ']'
end
-- Is this nick key free for A.owner: held by nobody, and reserved for no
-- other verified person (KEYS[7])?
local function free(key)
  if redis.call('HEXISTS', KEYS[3], key) == 1 then return false end
  local r = redis.call('HGET', KEYS[7], key)
  return (not r) or r == A.owner
end
-- The sanction ('b:' bans, 'm:' mutes in KEYS[6]) holding any of keys at
-- now; expired ones are deleted on the way.
local moderation -- read once per script
local function sanction(prefix, keys, now)
  moderation = moderation or redis.call('HGETALL', KEYS[6])
  local all = moderation
  for i = 1, #all, 2 do
    if string.sub(all[i], 1, 2) == prefix then
      local s = cjson.decode(all[i + 1])
      if s['until'] and s['until'] <= now then
        redis.call('HDEL', KEYS[6], all[i])
      else
        for _, a in ipairs(s.keys) do
          for _, b in ipairs(keys) do
            if a == b then return s end
          end
        end
      end
    end
  end
  return nil
end
-- What an event costs, roughly (rooms.ts eventBytes, in bytes not UTF-16
-- units); each history entry keeps its own cost, so trimming stays exact.
local function cost(...)
  local n = 64
  for _, s in ipairs({...}) do n = n + 2 * #s end
  return n
end
-- Why a person's post (A.items[i].post: owner, keys, op) may not be
-- appended at now (ms): muted, or slow mode says it is too early
-- (moderators are not slowed); nil when it may, its time then noted for
-- slow mode.
local function refusal(post, now)
  local muted = sanction('m:', post.keys, now)
  if muted then
    return cjson.encode({refused = 'muted', ['until'] = muted['until']})
  end
  local slow = 0
  for i = 1, #moderation, 2 do -- read by sanction just now
    if moderation[i] == 'slow' then slow = tonumber(moderation[i + 1]) end
  end
  if slow > 0 and not post.op then
    local last = tonumber(redis.call('HGET', KEYS[8], post.owner) or '-1')
    if last >= 0 and now < last + slow * 1000 then
      return cjson.encode({refused = 'slow_mode', ['until'] = last + slow * 1000})
    end
    redis.call('HSET', KEYS[8], post.owner, now)
    redis.call('PEXPIRE', KEYS[8], slow * 1000)
  end
  return nil
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
 * Who posts a person's message or action, for the checks of rooms.ts
 * `RoomStore.post` (mutes, slow mode); an API publish or a direct message
 * has none.
 */
export interface PostCheck {
  owner: string;
  /** The poster's keys (for mutes) and whether they are a moderator. */
  keys: string[];
  op: boolean;
}

/** What {@linkcode APPEND} publishes on the room's channel. */
export interface PublishedBatch {
  /** The id of the process that appended them. */
  from: string;
  events: RoomEvent[];
}

/** One event of a batch ({@linkcode APPEND}). */
export interface BatchItem {
  /** The event's JSON, without id and ts, and its cost. */
  body: string;
  cost: number;
  /** A person's post: appended unless they are muted or slowed. */
  post?: PostCheck;
}

/**
 * A process's appends to one room in one turn, in order: each post unless
 * its poster is muted or slow mode says it is too early (moderators are not
 * slowed), the other events as they are. The events are published as one
 * {@linkcode PublishedBatch}, so the other processes parse one message per
 * batch and know whose batch it is. The reply has each item's event or
 * refusal, in order.
 */
export const APPEND = script<
  RoomArgs & {
    items: BatchItem[];
    /** The appending process's id, published with the batch. */
    process: string;
    /** The time (ms) mutes and slow mode are judged at. */
    now: number;
  },
  PostReply[]
>(
  `
if redis.call('HEXISTS', KEYS[1], 'epoch') == 0 then
  return redis.error_reply('NOROOM the room is gone')
end
local out, events = {}, {}
for i, item in ipairs(A.items) do
  local refused = item.post and refusal(item.post, A.now)
  if refused then
    out[i] = refused
  else
    out[i] = append(item.body, item.cost, true)
    events[#events + 1] = out[i]
  end
end
if #events > 0 then
  trim(tonumber(redis.call('HGET', KEYS[1], 'bytes')))
  redis.call('PUBLISH', A.channel,
    '{"from":' .. cjson.encode(A.process) .. ',"events":' .. list(events) .. '}')
end
return list(out)
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
  /**
   * The process keeps the room's recent events: a join that is not a
   * resume is answered the history's bounds (`historyFirst`,
   * `historyCount`) instead of its events.
   */
  historyHere?: boolean;
  /** Resume: the client's last event id and its epoch. */
  since?: number;
  clientEpoch?: string;
  /** Where a takeover tells the stale holder's processes: prefix + process. */
  evictPrefix: string;
  /** Random nicks to try, in order, when `wanted` is absent or taken. */
  candidates: NickChoice[];
  /** Signed in: `wanted` is theirs (reserved, taken from an anonymous holder). */
  verified?: boolean;
  op?: boolean;
  /** What a ban or mute of them holds against. */
  keys?: string[];
  /** A verified person's user id. */
  user?: string;
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
  /**
   * What the client missed (and its join), or the room's history; empty
   * when `historyFirst` is there.
   */
  history: RoomEvent[];
  /**
   * With `historyHere`: the history is the `historyCount` events with ids
   * from `historyFirst` to `lastId` (some ids in between may be deleted).
   */
  historyFirst?: number;
  historyCount?: number;
  /**
   * How many members the room has just after the join (the process checks
   * the member list it keeps against it).
   */
  members: number;
  /** The members who are moderators, in join order (from `ops`). */
  moderators: string[];
  /** The room's topic ("" for none) and slow mode (0: off). */
  topic: string;
  slowSeconds: number;
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
  local mod = redis.call('HMGET', KEYS[6], 'topic', 'slow')
  local meta = {nick = d.n, taken = taken, present = present,
    epoch = epoch, lastId = id, joinedId = d.j, claimedId = d.c,
    gap = A.since ~= nil and got == nil, topic = mod[1] or '',
    slowSeconds = tonumber(mod[2] or '0'),
    members = redis.call('HLEN', KEYS[3])}
  local events = got
  if not got and A.historyHere then
    -- The process has the events: only which of them the history holds.
    local first = redis.call('XRANGE', KEYS[2], '-', '+', 'COUNT', 1)[1]
    meta.historyFirst = first and tonumber(string.match(first[1], '^(%d+)'))
      or id + 1
    meta.historyCount = redis.call('XLEN', KEYS[2])
    events = {}
  end
  -- No member list: each process keeps its own (roster.ts), so a join
  -- reads nothing that grows with the room but its bounded history, and
  -- its moderators.
  return {cjson.encode(meta), list(events or history()),
    list(redis.call('HVALS', KEYS[9]))}
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
    unhold(A.wanted.key)
    redis.call('HDEL', KEYS[4], d.o)
    nickevent('leave', d.n, d.lc)
    for proc, _ in pairs(d.k) do
      redis.call('PUBLISH', A.evictPrefix .. proc, cjson.encode({A.room, d.o}))
    end
  end
end
-- A verified person's name: an anonymous holder is renamed to a random
-- free nick (a nick event), so the name is free for them.
if A.verified and A.wanted then
  local d = holder(A.wanted.key)
  if d and d.o ~= A.owner and not d.v then
    for _, c in ipairs(A.candidates) do
      if free(c.key) and redis.call('HEXISTS', KEYS[7], c.key) == 0 then
        unhold(A.wanted.key)
        append('{"type":"nick","from":' .. cjson.encode(d.n) .. ',"to":' ..
          cjson.encode(c.nick) .. '}', cost('nick', d.n, c.nick))
        d.n = c.nick
        d.lc = c.leaveCost
        d.c = last()
        keep(c.key, d)
        break
      end
    end
  end
end
local choice = nil
local taken = false
if A.wanted then
  if free(A.wanted.key) then
    choice = A.wanted
  else
    taken = true
  end
end
if not choice then
  for _, c in ipairs(A.candidates) do
    if free(c.key) then
      choice = c
      break
    end
  end
end
if not choice then return redis.error_reply('NICKS every candidate is taken') end
local got = missed()
local joined
if A.verified then
  joined = append('{"type":"join","nick":' .. cjson.encode(choice.nick) ..
    ',"verified":true}', choice.joinCost + 16)
  redis.call('HSET', KEYS[7], choice.key, A.owner)
else
  joined = nickevent('join', choice.nick, choice.joinCost)
end
local id = last()
local k = {}
k[A.process] = 1
local d = {n = choice.nick, o = A.owner, j = id, c = id, lc = choice.leaveCost,
  k = k, v = A.verified or false, op = A.op or false, ks = A.keys or {},
  u = A.user}
keep(choice.key, d)
if got then got[#got + 1] = joined end
return answer(d, taken, false, got, id)
`,
  (reply) => {
    const [meta, history, ops] = reply as [string, string, string];
    return {
      ...JSON.parse(meta),
      history: JSON.parse(history),
      moderators: (JSON.parse(ops) as { n: string; j: number }[])
        .sort((a, b) => a.j - b.j).map((op) => op.n),
    };
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
local reserved = redis.call('HGET', KEYS[7], A.toKey)
if reserved and reserved ~= A.owner then return 0 end
unhold(A.fromKey)
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

// ---------------------------------------------------------------------------
// Identity and moderation
// ---------------------------------------------------------------------------

/** What a post came to: the event, or why not and until when. */
export type PostReply =
  | RoomEvent
  | { refused: "muted"; until?: number }
  | { refused: "slow_mode"; until: number };

/** What a kick or ban asks of Redis. */
export interface ExpelArgs extends RoomArgs {
  room: string;
  /** The nick key of the member to expel. */
  key: string;
  by: string;
  reason?: string;
  /** A ban: until when (absent: until lifted), and its minutes for the event. */
  ban?: { until?: number; minutes?: number };
  /** The close reason every process gives the member's connections. */
  closeReason: string;
  /** Where each process holding them is told: prefix + process. */
  evictPrefix: string;
}

/**
 * Kicks (or bans) a member: out at once, the `kick` event appended, and
 * every process holding its connections told to close them (with the
 * reason). `no_such_nick` when nobody holds the nick.
 */
export const EXPEL = script<ExpelArgs, RoomEvent | "no_such_nick">(
  `
local d = holder(A.key)
if not d then return 0 end
if A.ban then
  redis.call('HSET', KEYS[6], 'b:' .. A.key,
    cjson.encode({nick = d.n, keys = d.ks or {}, ['until'] = A.ban['until']}))
end
unhold(A.key)
redis.call('HDEL', KEYS[4], d.o)
local ev = {type = 'kick', nick = d.n, by = A.by, reason = A.reason}
if A.ban then
  ev.ban = true
  ev.minutes = A.ban.minutes
end
local kicked = append(cjson.encode(ev), cost('kick', d.n, A.by, A.reason or ''))
if redis.call('HLEN', KEYS[3]) == 0 then
  redis.call('EXPIRE', KEYS[1], A.roomTtl)
  redis.call('EXPIRE', KEYS[2], A.roomTtl)
end
for proc, _ in pairs(d.k) do
  redis.call('PUBLISH', A.evictPrefix .. proc,
    cjson.encode({A.room, d.o, A.closeReason}))
end
return kicked
`,
  (reply) => typeof reply === "string" ? JSON.parse(reply) : "no_such_nick",
);

/** Mutes the member holding a nick key until `until`. */
export const MUTE = script<
  { key: string; until?: number },
  "muted" | "no_such_nick"
>(
  `
local d = holder(A.key)
if not d then return 'no_such_nick' end
redis.call('HSET', KEYS[6], 'm:' .. A.key,
  cjson.encode({nick = d.n, keys = d.ks or {}, ['until'] = A['until']}))
return 'muted'
`,
  (reply) => reply as "muted" | "no_such_nick",
);

/** Lifts a ban (`b:KEY`) or mute (`m:KEY`); true if one was in force. */
export const LIFT = script<{ field: string; now: number }, boolean>(
  `
local s = redis.call('HGET', KEYS[6], A.field)
if not s then return 0 end
redis.call('HDEL', KEYS[6], A.field)
local u = cjson.decode(s)['until']
if u and u <= A.now then return 0 end
return 1
`,
  (reply) => reply === 1,
);

/** The ban holding any of `keys` out of the room now, if any. */
export const BANNED = script<
  { keys: string[]; now: number },
  StoredSanction | undefined
>(
  `
local s = sanction('b:', A.keys, A.now)
if s then return cjson.encode(s) end
return false
`,
  (reply) => typeof reply === "string" ? JSON.parse(reply) : undefined,
);

/** Sets the topic or slow mode and appends its event. */
export const CONFIGURE = script<
  RoomArgs & {
    /** `topic` or `slow`, and its value. */
    field: "topic" | "slow";
    value: string;
    body: string;
    cost: number;
  },
  RoomEvent
>(
  `
if redis.call('HEXISTS', KEYS[1], 'epoch') == 0 then
  return redis.error_reply('NOROOM the room is gone')
end
redis.call('HSET', KEYS[6], A.field, A.value)
if A.field == 'slow' then redis.call('DEL', KEYS[8]) end
return append(A.body, A.cost)
`,
  (reply) => JSON.parse(reply as string),
);

/** What a deletion asks of Redis. */
export interface RemoveArgs extends RoomArgs {
  id: number;
  /** Only if this nick sent it, holding the nick since before `since`. */
  author?: { nick: string; since: number };
  /** The `delete` event's JSON (without id and ts) and its cost. */
  body: string;
  cost: number;
}

/**
 * Deletes a message or action from the history stream and appends the
 * `delete` event; `no_such_message` or `forbidden` when it may not.
 */
export const REMOVE = script<
  RemoveArgs,
  RoomEvent | "no_such_message" | "forbidden"
>(
  `
local sid = string.format('%d', A.id) .. '-0'
local entry = redis.call('XRANGE', KEYS[2], sid, sid)[1]
if not entry then return 'no_such_message' end
local ev = cjson.decode(entry[2][2])
if ev.type ~= 'message' and ev.type ~= 'action' then
  return 'no_such_message'
end
if A.author and (ev.from ~= A.author.nick or A.author.since >= A.id) then
  return 'forbidden'
end
redis.call('XDEL', KEYS[2], sid)
redis.call('HINCRBY', KEYS[1], 'bytes', -tonumber(entry[2][4]))
return append(A.body, A.cost)
`,
  (reply) =>
    reply === "no_such_message" || reply === "forbidden"
      ? reply
      : JSON.parse(reply as string),
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
