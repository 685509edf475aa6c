/**
 * The room's rules, written once for every store: who may take which nick,
 * what another tab, a reconnect token or a verified name does to the
 * members, resume, leave, rename, a dead process's members, and moderation
 * (bans, mutes and when they run out, slow mode, kicks, topic, who may
 * delete a message).
 *
 * Each rule is a function over a {@linkcode RoomTxn}: it reads the room
 * through it and says what changes through it, never touching a store. The
 * memory store (rooms.ts) gives it its own maps and applies each change at
 * once; the Redis store (redis_store.ts) gives it what it read from Redis,
 * records the changes, and commits them with one generic script if nothing
 * they were decided on has changed meanwhile (else it reads again and the
 * rule decides again). So a new rule is a change here, and every store
 * follows it.
 *
 * A leaf: it imports only the wire contract (protocol.ts) and the nick key.
 *
 * @module
 */

import {
  type InvitedPerson,
  type InviteLinkEntry,
  MAX_REACTION_KEYS,
  MAX_REACTION_NICKS,
  MAX_ROOM_INVITES,
  type NewEvent,
  quoteOf,
  type ReactEvent,
  type Reaction,
  type RoomEvent,
} from "../wire/protocol.ts";
import unhomoglyph from "unhomoglyph";

/** A member of a room: one per owner (a session's tabs are one member). */
export interface Member {
  nick: string;
  /** Who holds the nick: a session, a verified user, or one connection. */
  owner: string;
  /** Id of its join event: its reconnect token is derived from it. */
  joinedId: number;
  /** Id of the event that gave it its nick (its join or last rename). */
  claimedId: number;
  /** Signed in by a login token. */
  verified: boolean;
  /** A moderator. */
  op: boolean;
  /** A verified person's user id (their token's `sub`). */
  user?: string;
  /** Its keys ({@linkcode personKeys}); a ban or mute holds some of them. */
  keys: string[];
  /** Its connections, by process (the memory store has one, `""`). */
  connections: Record<string, number>;
}

/** A ban or mute, kept by the nick key it was given to. */
export interface Sanction {
  /** The nick its target had. */
  nick: string;
  /**
   * Whom it holds against ({@linkcode sanctionKeys} of its target's keys):
   * anyone arriving (a ban) or posting (a mute) whose keys, by the same
   * rule, share one.
   */
  keys: string[];
  /** When it ends (ms since the epoch); absent: until lifted. */
  until?: number;
}

/**
 * An invitation into a private room, kept by the key it admits: a person's
 * (one of their keys, by {@linkcode sanctionKeys}' rule for an invite) or
 * a link's ({@linkcode LINK_KEY} and its code's hash: the code itself is
 * kept nowhere).
 */
export interface Invite {
  /** The nick it was given to (a person's), or asked for with a code. */
  nick?: string;
  /** The verified user id it was given to (the API's `user`). */
  user?: string;
  /** The moderator who gave it (a link's, for those who came with it). */
  by: string;
  /** When it ends (ms since the epoch); absent: until revoked. */
  until?: number;
  /** A link's uses left. */
  uses?: number;
  /** A person's: they came in with this link (its id). */
  via?: string;
}

/** Who posts a message, for mutes and slow mode. */
export interface Poster {
  owner: string;
  /** Their keys, as {@linkcode JoinRequest.keys}. */
  keys: string[];
  /** Moderators are not slowed down. */
  op: boolean;
}

/** Why a message was not posted, and until when. */
export type PostRefusal =
  | { refused: "muted"; until?: number }
  | { refused: "slow_mode"; until: number }
  /** It replies to an id that is no message the room keeps. */
  | { refused: "no_such_message" };

/** A kick, or a ban (with `ban`), of the member holding `nick`. */
export interface Kick {
  nick: string;
  /** The moderator's nick. */
  by: string;
  reason?: string;
  /** Also keep them out until `until` (absent: until unbanned). */
  ban?: { until?: number; minutes?: number };
}

/** What a connection asks for when it joins a room. */
export interface JoinRequest {
  /**
   * Who will hold the nick: a person's session (every tab of it is one
   * member) or else the connection itself; unique across processes.
   */
  owner: string;
  /** A valid nick to claim; without it (or when taken) a random one. */
  nick?: string;
  /** The token of an earlier welcome: takes `nick` from a stale holder. */
  token?: string;
  /** Resume: the last event id the client has, and its room epoch. */
  since?: number;
  epoch?: string;
  /**
   * Signed in by a login token: `nick` is theirs. It is reserved in the room
   * from then on (no anonymous person may take it), and an anonymous holder
   * of it is renamed to a random nick (with a `nick` event) to give it up.
   */
  verified?: boolean;
  /** A moderator: `/who` and the welcome say so. */
  op?: boolean;
  /** A verified person's user id (their token's `sub`), for `presence`. */
  user?: string;
  /**
   * This person's keys ({@linkcode personKeys}): a login (`u.…`) for
   * verified people, a session (`s.…`) and an address (`ip:…`) for others.
   * Which of them a ban or a mute holds is {@linkcode sanctionKeys}'s rule.
   */
  keys?: string[];
}

/**
 * A room as a rule sees it, and the changes it makes. Reads see the
 * changes made before them in the same rule.
 */
export interface RoomTxn {
  /** The time the rule is judged at (ms since the epoch). */
  readonly now: number;
  /** The room's epoch; undefined for a room that is not kept. */
  readonly epoch: string | undefined;
  /** The member holding this nick key. */
  member(key: string): Member | undefined;
  /** The member this owner is. */
  memberOf(owner: string): Member | undefined;
  /** Every member (read only by {@linkcode reap}). */
  members(): Member[];
  /** The verified owner that holds or held this nick key here. */
  reservedBy(key: string): string | undefined;
  /** The ban or mute given to this nick key, expired or not. */
  sanction(kind: SanctionKind, key: string): Sanction | undefined;
  /** Every ban or mute of the room, expired or not. */
  sanctions(kind: SanctionKind): [key: string, sanction: Sanction][];
  /** "" for none. */
  readonly topic: string;
  /** 0: off. */
  readonly slowSeconds: number;
  /** Invite-only: only the invited may come in (see {@linkcode admit}). */
  readonly private: boolean;
  /** The invite kept under this key (a person's key, or a link's), if any. */
  invite(key: string): Invite | undefined;
  /** Every invite of the room, expired or not (moderators' commands). */
  invites(): [key: string, invite: Invite][];
  /** When this owner last posted (for slow mode). */
  postedAt(owner: string): number | undefined;
  /** A kept message or other event of the room, by id. */
  kept(id: number): RoomEvent | undefined;

  /** Appends an event; its id (a stand-in the store fills in, in Redis). */
  append(body: NewEvent): number;
  /** Puts a member under its nick's key (`from`: the key it held before). */
  putMember(member: Member, from?: string): void;
  /** Takes a member out (its nick and owner). */
  dropMember(member: Member): void;
  /** A member out without an event: other processes' member lists learn it. */
  unannounced(member: Member): void;
  /** The nick key is this verified owner's from now on. */
  reserve(key: string, owner: string): void;
  /** Gives (or with `undefined` lifts) a ban or mute. */
  setSanction(kind: SanctionKind, key: string, sanction?: Sanction): void;
  setTopic(text: string): void;
  /** Makes the room invite-only, or open again. */
  setPrivate(on: boolean): void;
  /** Gives (or with `undefined` revokes) the invite under this key. */
  setInvite(key: string, invite?: Invite): void;
  /** Sets slow mode, and forgets when everyone last posted. */
  setSlow(seconds: number): void;
  setPosted(owner: string, at: number): void;
  /** Deletes a kept event from history. */
  deleteEvent(event: RoomEvent): void;
  /** A kept event is this from now on (an edited message). */
  replaceEvent(event: RoomEvent): void;
  /**
   * A kept message's reactions (`undefined`: it never had any; `[]`: it
   * had, all taken back). Deleting the message forgets them.
   */
  reactions(id: number): KeptReaction[] | undefined;
  /** A kept message's reactions from now on. */
  setReactions(id: number, reactions: KeptReaction[]): void;
  /**
   * Passes a notice on to the room's subscribers once the change is
   * committed, after its events: kept nowhere, no id.
   */
  announce(notice: ReactEvent): void;
  /**
   * Closes the member's connections on every process: a token takeover
   * (no reason) or a kick or ban (with the close reason).
   */
  evict(member: Member, reason?: string): void;
}

/**
 * One key's reactions to a message as a store keeps them: who reacted, as
 * `[owner, nick]` (the owner is the person, for "one each" and `me`; it is
 * never sent to anyone), first one first.
 */
export interface KeptReaction {
  key: string;
  by: [owner: string, nick: string][];
}

/** Bans and mutes. */
export type SanctionKind = "ban" | "mute";

/** What the rules need beyond the room. */
export interface RuleContext {
  /** The process deciding (whose connection joins or leaves). */
  process: string;
  /** Random nicks to try, in order (see {@linkcode nickCandidates}). */
  candidates: Iterable<string>;
  /** Whether `token` is the member's reconnect token. */
  tokenMatches(member: Member, token: string): boolean;
}

// ---------------------------------------------------------------------------
// Nicks
// ---------------------------------------------------------------------------

/** `user-NNNNN`. */
export function randomNick(): string {
  return `user-${Math.floor(Math.random() * 100_000)}`;
}

/**
 * How many random nicks a join tries before it gives up (the join fails and
 * the client is told to come back). With 100,000 names, a room of 10,000
 * members fails one join in 10^8.
 */
export const NICK_CANDIDATES = 8;

/**
 * The random nicks a join may take, in the order it tries them, drawn as
 * they are asked for (a store that must send them all spreads them).
 */
export function* nickCandidates(
  draw: () => string = randomNick,
): Generator<string> {
  for (let i = 0; i < NICK_CANDIDATES; i++) yield draw();
}

/** Every random nick a join tried was taken. */
export class NoNickLeft extends Error {
  constructor() {
    super(`all ${NICK_CANDIDATES} random nicks tried were taken`);
  }
}

/**
 * Two nicks are one when their keys are equal: case-insensitive and by
 * confusable skeleton (Unicode TR39, from `unhomoglyph`'s copy of
 * confusables.txt), so `аda` (Cyrillic а), `ａｄａ` and `ADA` are `ada`.
 * NFKC first (fullwidth and maths letters), then upper case (via lower, for
 * ẞ and ß): TR39 maps capitals (В → B, 0 → O, I → l), and caseless
 * comparison needs one case; then again (l → L), at most four rounds, which
 * is more than any mapping chain in confusables.txt needs. So `alice` and
 * `allce` are one nick: the price of `I` looking like `l`. The key is
 * compared, never shown.
 */
export function nickKey(nick: string): string {
  let key = nick;
  let previous = "";
  for (let round = 0; round < 4 && key !== previous; round++) {
    previous = key;
    key = skeleton(key.normalize("NFKC").toLowerCase().toUpperCase());
  }
  return key;
}

/** UTS #39 skeleton: NFD, no default-ignorables, confusables mapped, NFD. */
function skeleton(text: string): string {
  return unhomoglyph(
    text.normalize("NFD").replace(/\p{Default_Ignorable_Code_Point}/gu, ""),
  ).normalize("NFD");
}

/**
 * A nick is free for `owner` when nobody holds it and no other verified
 * person holds or held it here.
 */
function free(txn: RoomTxn, nick: string, owner: string): boolean {
  const key = nickKey(nick);
  const reservedBy = txn.reservedBy(key);
  return txn.member(key) === undefined &&
    (reservedBy === undefined || reservedBy === owner);
}

/** The first of `values` that `test` accepts. */
function first<T>(
  values: Iterable<T>,
  test: (value: T) => boolean,
): T | undefined {
  for (const value of values) if (test(value)) return value;
  return undefined;
}

// ---------------------------------------------------------------------------
// Joining and leaving
// ---------------------------------------------------------------------------

/** What {@linkcode join} decided. */
export interface JoinDecision {
  /** The member as it now is (its nick, ids and connections). */
  member: Member;
  /** The nick asked for was taken (a random one was given). */
  taken: boolean;
  /** The owner was in the room already (another tab): nothing appended. */
  present: boolean;
}

/**
 * Turns a connection into a member: another tab of a member is counted;
 * else a reconnect token takes the nick from its stale holder, a verified
 * person's name is taken from an anonymous holder (renamed to a random free
 * nick), and the nick asked for (or the first free candidate) is claimed
 * with a join event. Throws {@linkcode NoNickLeft} when every candidate is
 * taken.
 */
export function join(
  txn: RoomTxn,
  request: JoinRequest,
  ctx: RuleContext,
): JoinDecision {
  const present = txn.memberOf(request.owner);
  if (present) {
    const member = withConnections(present, ctx.process, 1);
    txn.putMember(member);
    return { member, taken: false, present: true };
  }
  const wanted = request.nick;
  if (wanted !== undefined && request.token !== undefined) {
    const stale = txn.member(nickKey(wanted));
    if (stale && ctx.tokenMatches(stale, request.token)) {
      txn.dropMember(stale);
      txn.append({ type: "leave", nick: stale.nick });
      txn.evict(stale);
    }
  }
  if (request.verified && wanted !== undefined) {
    displace(txn, wanted, request.owner, ctx);
  }
  const taken = wanted !== undefined && !free(txn, wanted, request.owner);
  const nick = wanted !== undefined && !taken
    ? wanted
    : first(ctx.candidates, (candidate) => free(txn, candidate, request.owner));
  if (nick === undefined) throw new NoNickLeft();
  const id = txn.append(
    request.verified
      ? { type: "join", nick, verified: true }
      : { type: "join", nick },
  );
  const member: Member = {
    nick,
    owner: request.owner,
    joinedId: id,
    claimedId: id,
    verified: request.verified ?? false,
    op: request.op ?? false,
    ...(request.user !== undefined ? { user: request.user } : {}),
    keys: request.keys ?? [],
    connections: { [ctx.process]: 1 },
  };
  txn.putMember(member);
  const key = nickKey(nick);
  if (member.verified && txn.reservedBy(key) !== request.owner) {
    txn.reserve(key, request.owner);
  }
  return { member, taken, present: false };
}

/**
 * A verified person arrives with `nick`: an anonymous holder of it is
 * renamed to a random nick nobody holds or reserved (the `nick` event tells
 * everyone, its own tabs included), so the name is free for its owner.
 */
function displace(
  txn: RoomTxn,
  nick: string,
  owner: string,
  ctx: RuleContext,
): void {
  const holder = txn.member(nickKey(nick));
  if (!holder || holder.verified || holder.owner === owner) return;
  const to = first(
    ctx.candidates,
    (candidate) =>
      txn.member(nickKey(candidate)) === undefined &&
      txn.reservedBy(nickKey(candidate)) === undefined,
  );
  if (to === undefined) return; // then the newcomer gets a random one
  const id = txn.append({ type: "nick", from: holder.nick, to });
  txn.putMember({ ...holder, nick: to, claimedId: id }, nickKey(holder.nick));
}

/** The member with `count` more (or fewer) connections on `process`. */
function withConnections(
  member: Member,
  process: string,
  count: number,
): Member {
  const connections = { ...member.connections };
  const left = (connections[process] ?? 0) + count;
  if (left > 0) connections[process] = left;
  else delete connections[process];
  return { ...member, connections };
}

/** A member's connections on every process. */
export function connectionCount(member: Member): number {
  let count = 0;
  for (const n of Object.values(member.connections)) count += n;
  return count;
}

/**
 * `connections` of `owner`'s connections on `process` leave (found by
 * owner: its nick may have changed since). With its last connection the
 * member is out: announced when `announce`, else only its leaving noted.
 * True when the member is out.
 */
export function leave(
  txn: RoomTxn,
  owner: string,
  process: string,
  connections: number,
  announce: boolean,
): boolean {
  const member = txn.memberOf(owner);
  if (!member) return false;
  const left = withConnections(member, process, -connections);
  if (connectionCount(left) > 0) {
    txn.putMember(left);
    return false;
  }
  out(txn, member, announce);
  return true;
}

/**
 * The member is out. The last one's leave is announced too (the history
 * outlives the members: a later visitor must not read two joins in a row).
 */
function out(txn: RoomTxn, member: Member, announce: boolean): void {
  txn.dropMember(member);
  if (announce) txn.append({ type: "leave", nick: member.nick });
  else txn.unannounced(member);
}

/**
 * A dead process's connections are gone: members with none left leave,
 * each announced once, in the order they joined. How many left.
 */
export function reap(txn: RoomTxn, process: string): number {
  const gone: Member[] = [];
  for (const member of txn.members()) {
    if (!(process in member.connections)) continue;
    const left = withConnections(member, process, -Infinity);
    if (connectionCount(left) > 0) txn.putMember(left);
    else gone.push(member);
  }
  gone.sort((a, b) => a.joinedId - b.joinedId);
  for (const member of gone) out(txn, member, true);
  return gone.length;
}

/** A local member to put back after an outage ({@linkcode reclaim}). */
export interface Reclaimed {
  owner: string;
  nick: string;
  joinedId: number;
  /** The epoch it joined in: a room that started over is not its any more. */
  epoch: string;
  /** Its connections on this process. */
  connections: number;
}

/**
 * After an outage, puts a member of this process back if it was reaped
 * meanwhile. `ok`: it was still there; `rejoined`: it joined again
 * (announced); `taken`: someone holds its nick; `epoch`: the room started
 * over.
 */
export function reclaim(
  txn: RoomTxn,
  kept: Reclaimed,
  process: string,
): "ok" | "rejoined" | "taken" | "epoch" {
  if (txn.epoch !== kept.epoch) return "epoch";
  const member = txn.memberOf(kept.owner);
  if (member) {
    txn.putMember({
      ...member,
      connections: { ...member.connections, [process]: kept.connections },
    });
    return "ok";
  }
  if (txn.member(nickKey(kept.nick))) return "taken";
  txn.append({ type: "join", nick: kept.nick });
  txn.putMember({
    nick: kept.nick,
    owner: kept.owner,
    joinedId: kept.joinedId,
    claimedId: kept.joinedId,
    verified: false,
    op: false,
    keys: [],
    connections: { [process]: kept.connections },
  });
  return "rejoined";
}

/** Moves `owner` from nick `from` to a free `to`: the nick event's id. */
export function rename(
  txn: RoomTxn,
  owner: string,
  from: string,
  to: string,
): number | "nick_taken" {
  const member = txn.member(nickKey(from));
  const other = txn.member(nickKey(to));
  const reservedBy = txn.reservedBy(nickKey(to));
  if (
    !member || member.owner !== owner ||
    (other && other.owner !== member.owner) ||
    (reservedBy !== undefined && reservedBy !== owner)
  ) {
    return "nick_taken";
  }
  const id = txn.append({ type: "nick", from, to });
  txn.putMember({ ...member, nick: to, claimedId: id }, nickKey(from));
  return id;
}

/**
 * Whether a client resuming after `since` in `epoch` can be given exactly
 * what it missed: the same epoch, an id the room has given out, and every
 * event after it still kept (`oldest`: the oldest kept id, if any).
 */
export function canResume(
  room: { epoch: string; lastId: number; oldest?: number },
  since: number,
  epoch: string,
): boolean {
  if (epoch !== room.epoch || since > room.lastId) return false;
  return since >= (room.oldest ?? room.lastId + 1) - 1;
}

// ---------------------------------------------------------------------------
// Posting and moderation
// ---------------------------------------------------------------------------

/**
 * A person's keys, as {@linkcode JoinRequest.keys}: a verified person's
 * login (`u.…`, their owner) alone; else their session (`s.…`) if they have
 * one, and the connection's address (`ip:…`) unless `byAddress` is false
 * (`--ban-by-address false`) and a session names them; with neither a login
 * nor a session, the address alone, whatever `byAddress` says.
 */
export function personKeys(
  person: { login?: string; session?: string; address: string },
  byAddress = true,
): string[] {
  if (person.login !== undefined) return [person.login];
  const address = ADDRESS_KEY + person.address;
  if (person.session === undefined) return [address];
  return byAddress ? [person.session, address] : [person.session];
}

/** An address as a key of {@linkcode personKeys}. */
const ADDRESS_KEY = "ip:";

/**
 * The one rule of whom a sanction (or an invite) holds, from a person's
 * keys ({@linkcode personKeys}): every store keeps a ban, mute or invite by
 * the keys of its target this gives, and checks an arriving or posting
 * person by theirs.
 *
 * - A ban holds all of them: a banned anonymous person is kept out by their
 *   session and their address, so a new session from the same address does
 *   not get back in. Behind a NAT (a school's, an office's, a mobile
 *   carrier's), that keeps out everyone there with them:
 *   `--ban-by-address false` leaves the address out of the keys when a
 *   session names the person.
 * - A mute holds one key, the one that names the person: their login, else
 *   their session, else (no session) their address. Muting one anonymous
 *   person silences nobody else behind their address; only people there
 *   without a session are one to it (nothing tells them apart).
 * - An invite holds as a mute does, by the one key that names the person:
 *   inviting one anonymous person lets in nobody else behind their address
 *   (but those there without a session, whom nothing tells apart).
 */
export function sanctionKeys(
  kind: SanctionKind | "invite",
  keys: readonly string[],
): string[] {
  if (kind === "ban") return [...keys];
  for (const prefix of PERSON_PREFIXES) {
    const key = keys.find((k) => k.startsWith(prefix));
    if (key !== undefined) return [key];
  }
  return [];
}

/**
 * Key prefixes from the most to the least particular: a login (auth.ts
 * `ownerOf`), a session (main.ts `sessionOf`), an address.
 */
const PERSON_PREFIXES = ["u.", "s.", ADDRESS_KEY];

/**
 * The ban (or mute) in force that holds a person with these keys
 * ({@linkcode personKeys}), judged by {@linkcode sanctionKeys}.
 */
export function sanctionOn(
  txn: RoomTxn,
  kind: SanctionKind,
  keys: readonly string[],
): Sanction | undefined {
  let held: string[] | undefined; // most rooms sanction nobody: not made
  for (const [, sanction] of txn.sanctions(kind)) {
    if (!live(sanction, txn.now)) continue;
    held ??= sanctionKeys(kind, keys);
    if (sanction.keys.some((key) => held!.includes(key))) return sanction;
  }
  return undefined;
}

/**
 * Forgets the bans and mutes that have run out: each moderator's command
 * tidies them up, so that what a room keeps of them does not grow for ever.
 */
function forgetExpired(txn: RoomTxn): void {
  for (const kind of ["ban", "mute"] as const) {
    for (const [key, sanction] of txn.sanctions(kind)) {
      if (!live(sanction, txn.now)) txn.setSanction(kind, key);
    }
  }
}

/** A sanction still in force at `now`. */
function live(sanction: Sanction, now: number): boolean {
  return sanction.until === undefined || sanction.until > now;
}

/** The refusal of what a muted person asks (with until when, if it ends). */
function muteOf(
  txn: RoomTxn,
  keys: readonly string[],
): { refused: "muted"; until?: number } | undefined {
  const mute = sanctionOn(txn, "mute", keys);
  if (!mute) return undefined;
  return mute.until === undefined
    ? { refused: "muted" }
    : { refused: "muted", until: mute.until };
}

/** A kept message or action (what a reply, an edit, a reaction names). */
function keptSaid(
  txn: RoomTxn,
  id: number,
): (RoomEvent & { type: "message" | "action" }) | undefined {
  const event = txn.kept(id);
  return event?.type === "message" || event?.type === "action"
    ? event
    : undefined;
}

/**
 * A person's message or action: appended unless they are muted (by any of
 * their keys) or slow mode says it is too early (moderators excepted). A
 * reply (`replyTo`) quotes the message it answers, which must be one the
 * room keeps (not deleted).
 */
export function post(
  txn: RoomTxn,
  poster: Poster,
  body: NewEvent,
  replyTo?: number,
): number | PostRefusal {
  const muted = muteOf(txn, poster.keys);
  if (muted) return muted;
  if (txn.slowSeconds > 0 && !poster.op) {
    const next = (txn.postedAt(poster.owner) ?? -Infinity) +
      txn.slowSeconds * 1000;
    if (txn.now < next) return { refused: "slow_mode", until: next };
  }
  let quoted = body;
  if (replyTo !== undefined) {
    const target = keptSaid(txn, replyTo);
    if (!target) return { refused: "no_such_message" };
    quoted = {
      ...body,
      replyTo: { id: target.id, from: target.from, text: quoteOf(target.text) },
    } as NewEvent;
  }
  if (txn.slowSeconds > 0 && !poster.op) txn.setPosted(poster.owner, txn.now);
  return txn.append(quoted);
}

/**
 * Kicks (or bans) the member holding `nick`: out at once, the `kick` event
 * appended, their connections closed everywhere; a ban keeps their keys
 * out. The kick event's id.
 */
export function kick(
  txn: RoomTxn,
  expulsion: Kick,
): number | "no_such_nick" {
  forgetExpired(txn);
  const member = txn.member(nickKey(expulsion.nick));
  if (!member) return "no_such_nick";
  if (expulsion.ban) {
    txn.setSanction("ban", nickKey(member.nick), {
      nick: member.nick,
      keys: sanctionKeys("ban", member.keys),
      ...(expulsion.ban.until !== undefined
        ? { until: expulsion.ban.until }
        : {}),
    });
  }
  txn.dropMember(member);
  const id = txn.append(kickEvent(member.nick, expulsion));
  txn.evict(member, kickReason(expulsion));
  return id;
}

/** Mutes the member holding `nick` (by its keys) until `until`. */
export function mute(
  txn: RoomTxn,
  nick: string,
  until?: number,
): "muted" | "no_such_nick" {
  forgetExpired(txn);
  const member = txn.member(nickKey(nick));
  if (!member) return "no_such_nick";
  txn.setSanction("mute", nickKey(member.nick), {
    nick: member.nick,
    keys: sanctionKeys("mute", member.keys),
    ...(until !== undefined ? { until } : {}),
  });
  return "muted";
}

/** Lifts the ban given to `nick`; false when none was in force. */
export function unban(txn: RoomTxn, nick: string): boolean {
  return lift(txn, "ban", nick);
}

/** Lifts the mute given to `nick`; false when none was in force. */
export function unmute(txn: RoomTxn, nick: string): boolean {
  return lift(txn, "mute", nick);
}

/** Lifts the ban or mute given to `nick`; false when none was in force. */
function lift(txn: RoomTxn, kind: SanctionKind, nick: string): boolean {
  const sanction = txn.sanction(kind, nickKey(nick));
  forgetExpired(txn);
  if (sanction === undefined) return false;
  txn.setSanction(kind, nickKey(nick));
  return live(sanction, txn.now);
}

/** Sets the topic and appends its event. */
export function topic(
  txn: RoomTxn,
  change: NewEvent & { type: "topic" },
): number {
  forgetExpired(txn);
  txn.setTopic(change.text);
  return txn.append(change);
}

/** Sets slow mode (forgetting who posted when) and appends its event. */
export function slow(
  txn: RoomTxn,
  change: NewEvent & { type: "slow" },
): number {
  forgetExpired(txn);
  txn.setSlow(change.seconds);
  return txn.append(change);
}

/**
 * Deletes a message or action and appends a `delete` event. With `author`,
 * only when that nick sent it and held the nick since before it (`since`:
 * the event that gave them the nick).
 */
function deleteMessage(
  txn: RoomTxn,
  id: number,
  by: string,
  author?: { nick: string; since: number },
): number | "no_such_message" | "forbidden" {
  const event = keptSaid(txn, id);
  if (!event) return "no_such_message";
  if (author && (event.from !== author.nick || author.since >= id)) {
    return "forbidden";
  }
  txn.deleteEvent(event);
  return txn.append({ type: "delete", by, deleted: id });
}

// `delete` names the rule as `/delete` names the command (a reserved word
// as a function's own name).
export { deleteMessage as delete };

/** Who edits: as {@linkcode edit} says. */
export interface Author {
  nick: string;
  /** The id of the event that gave them the nick (0: theirs for good). */
  since: number;
  /** Their keys, for a mute. */
  keys: readonly string[];
  /** Signed in: only messages sent signed in are theirs. */
  verified?: boolean;
}

/** Why an edit was refused. */
export type EditRefusal =
  | { refused: "muted"; until?: number }
  | { refused: "no_such_message" | "forbidden" | "edit_window" };

/**
 * The author replaces the text of their message or action `id`: only its
 * author (the nick that sent it, held since before it: `since`, as for a
 * deletion; a `verified` author's only what they sent signed in), not
 * while muted, and only within `windowMs` of it being sent (0: never). The message is kept with the new text and `edited`, and an
 * `edit` event tells the room. The edit event's id.
 */
export function edit(
  txn: RoomTxn,
  author: Author,
  id: number,
  text: string,
  windowMs: number,
): number | EditRefusal {
  const muted = muteOf(txn, author.keys);
  if (muted) return muted;
  const event = keptSaid(txn, id);
  if (!event) return { refused: "no_such_message" };
  if (
    event.from !== author.nick || author.since >= id ||
    (author.verified && !event.verified)
  ) {
    return { refused: "forbidden" };
  }
  if (windowMs === 0 || txn.now - event.ts > windowMs) {
    return { refused: "edit_window" };
  }
  txn.replaceEvent({ ...event, text, edited: txn.now });
  return txn.append({
    type: "edit",
    from: event.from,
    target: id,
    text,
    edited: txn.now,
    ...(event.verified ? { verified: true } : {}),
  });
}

/** Why a reaction was refused. */
export type ReactRefusal =
  | { refused: "muted"; until?: number }
  | { refused: "no_such_message" | "reaction_limit" };

/** A reaction set to what it was already: nothing changed, nobody told. */
export interface ReactUnchanged {
  unchanged: true;
  on: boolean;
  /** How many people react to the message with the key. */
  count: number;
}

/** Who reacts: the person (`owner`), the nick shown, the keys a mute holds. */
export interface Reactor {
  owner: string;
  nick: string;
  keys: readonly string[];
}

/**
 * A person's reaction `key` to message or action `id`: added, or taken
 * back (`on`; absent: the other of what it is). One each per key; a
 * message carries at most {@linkcode MAX_REACTION_KEYS} keys; not while
 * muted. The notice (with the key's count after it) is announced and is
 * the answer; setting what is already so changes nothing.
 */
export function react(
  txn: RoomTxn,
  reactor: Reactor,
  id: number,
  key: string,
  on?: boolean,
): ReactEvent | ReactRefusal | ReactUnchanged {
  const muted = muteOf(txn, reactor.keys);
  if (muted) return muted;
  const event = keptSaid(txn, id);
  if (!event) return { refused: "no_such_message" };
  const reactions = txn.reactions(id) ?? [];
  const index = reactions.findIndex((reaction) => reaction.key === key);
  const by = index < 0 ? [] : reactions[index].by;
  const mine = by.findIndex(([owner]) => owner === reactor.owner);
  const adding = on ?? mine < 0;
  const notice: ReactEvent = {
    type: "react",
    target: id,
    key,
    from: reactor.nick,
    on: adding,
    count: by.length,
  };
  if (adding === mine >= 0) {
    return { unchanged: true, on: adding, count: by.length };
  }
  if (adding && index < 0 && reactions.length >= MAX_REACTION_KEYS) {
    return { refused: "reaction_limit" };
  }
  const now = adding
    ? [...by, [reactor.owner, reactor.nick] as [string, string]]
    : by.filter((_, i) => i !== mine);
  const next = index < 0
    ? [...reactions, { key, by: now }]
    : reactions.map((reaction, i) => i === index ? { key, by: now } : reaction)
      .filter((reaction) => reaction.by.length > 0);
  txn.setReactions(id, next);
  notice.count = now.length;
  txn.announce(notice);
  return notice;
}

/**
 * A message's reactions as `reader` (an owner) sees them: counts, the
 * first {@linkcode MAX_REACTION_NICKS} nicks, and whether the reader is
 * among them (all of them). Owners stay in the store.
 */
export function reactionsFor(
  kept: readonly KeptReaction[],
  reader: string | undefined,
): Reaction[] {
  return kept.map(({ key, by }) => ({
    key,
    count: by.length,
    nicks: by.slice(0, MAX_REACTION_NICKS).map(([, nick]) => nick),
    me: reader !== undefined && by.some(([owner]) => owner === reader),
  }));
}

/** The `kick` event of an expulsion. */
export function kickEvent(nick: string, expulsion: Kick): NewEvent {
  return {
    type: "kick",
    nick,
    by: expulsion.by,
    ...(expulsion.reason ? { reason: expulsion.reason } : {}),
    ...(expulsion.ban
      ? {
        ban: true,
        ...(expulsion.ban.minutes ? { minutes: expulsion.ban.minutes } : {}),
      }
      : {}),
  };
}

/** The close reason an expelled person's connections get (code 4000). */
export function kickReason(expulsion: Kick): string {
  const what = expulsion.ban ? "banned" : "kicked";
  return `${what} by ${expulsion.by}${
    expulsion.reason ? ": " + expulsion.reason : ""
  }`;
}

// ---------------------------------------------------------------------------
// Private rooms
// ---------------------------------------------------------------------------

/**
 * The key prefix of a link's invite: `link:` and its code's hash
 * (base64url SHA-256), which a person's keys (`u.`, `s.`, `ip:`) never are.
 */
export const LINK_KEY = "link:";

/** A link's id (`/invites`, `/uninvite link ID`): its hash's start. */
export function linkId(hash: string): string {
  return hash.slice(0, 8);
}

/** The one key a person is invited by ({@linkcode sanctionKeys}' rule). */
export function inviteKeyOf(keys: readonly string[]): string | undefined {
  return sanctionKeys("invite", keys)[0];
}

/** Someone at a room's door: the handshake, or a `/join`. */
export interface Entrant {
  /** Who they would be in the room (another tab of a member gets in). */
  owner?: string;
  /** Their keys ({@linkcode personKeys}). */
  keys: readonly string[];
  /** A moderator comes into any room. */
  op: boolean;
  /** The hash of the invite code they bring, if any. */
  code?: string;
  /** The nick they ask for (an invite a code turns into keeps it). */
  nick?: string;
}

/** What {@linkcode admit} decided. */
export type Admission =
  /**
   * In: the room is open, or they are a moderator, a member already (another
   * tab), invited (by their keys), or brought a code (one use spent).
   */
  | { admitted: "open" | "op" | "member" | "invite" | "code" }
  | { refused: "banned" | "invite_only" };

/** An invite still in force at `now` (a link's: with uses left). */
function valid(invite: Invite, now: number): boolean {
  return (invite.until === undefined || invite.until > now) &&
    (invite.uses === undefined || invite.uses > 0);
}

/**
 * Whether someone may come in: not while a ban holds them; into a private
 * room only a moderator, a member already in, the invited (by the one key
 * an invite holds), or someone with a valid code. A code spends one of its
 * link's uses (the last one ends the link) and invites its bringer by
 * their key from then on, so that a reload or a reconnect needs no code.
 */
export function admit(txn: RoomTxn, entrant: Entrant): Admission {
  if (sanctionOn(txn, "ban", entrant.keys)) return { refused: "banned" };
  if (!txn.private) return { admitted: "open" };
  if (entrant.op) return { admitted: "op" };
  if (entrant.owner !== undefined && txn.memberOf(entrant.owner)) {
    return { admitted: "member" };
  }
  const key = inviteKeyOf(entrant.keys);
  const held = key === undefined ? undefined : txn.invite(key);
  if (held && valid(held, txn.now)) return { admitted: "invite" };
  if (entrant.code === undefined) return { refused: "invite_only" };
  const linkKey = LINK_KEY + entrant.code;
  const link = txn.invite(linkKey);
  if (!link || !valid(link, txn.now)) return { refused: "invite_only" };
  const uses = link.uses! - 1;
  txn.setInvite(linkKey, uses > 0 ? { ...link, uses } : undefined);
  if (key !== undefined) {
    txn.setInvite(key, {
      ...(entrant.nick !== undefined ? { nick: entrant.nick } : {}),
      by: link.by,
      via: linkId(entrant.code),
    });
  }
  return { admitted: "code" };
}

/** Makes the room invite-only (or open again) and appends its event. */
function makePrivate(
  txn: RoomTxn,
  change: NewEvent & { type: "private" },
): number {
  forgetExpired(txn);
  txn.setPrivate(change.on);
  return txn.append(change);
}

// `private` names the rule as `/private` names the command (a reserved
// word as a function's own name).
export { makePrivate as private };

/** Whom an invite is for, and who gives it. */
export type Invitation =
  /** A member holding the nick (by their key), or a verified person who holds or held it here (by their login). */
  | { by: string; nick: string }
  /** A verified user id, with its owner (auth.ts `ownerOfUser`). */
  | { by: string; user: string; owner: string }
  /** A link: its code's hash, uses and end (ms since the epoch). */
  | { by: string; link: { hash: string; uses: number; until: number } };

/**
 * Gives an invite: to a member by nick (by the one key an invite holds);
 * to a verified person not here by the name they hold or held here (by
 * their login, lasting); to a verified user id; or a link. At most
 * {@linkcode MAX_ROOM_INVITES} in force at once (a new one past them is
 * `invite_limit`; renewing one is not).
 */
export function invite(
  txn: RoomTxn,
  invitation: Invitation,
): "invited" | "no_such_nick" | "invite_limit" {
  forgetExpiredInvites(txn);
  let key: string;
  let given: Invite;
  if ("nick" in invitation) {
    const member = txn.member(nickKey(invitation.nick));
    const login = member ? undefined : txn.reservedBy(nickKey(invitation.nick));
    if (member) {
      key = inviteKeyOf(member.keys) ?? member.owner;
      given = {
        nick: member.nick,
        by: invitation.by,
        ...(member.user !== undefined ? { user: member.user } : {}),
      };
    } else if (login !== undefined) {
      key = login;
      given = { nick: invitation.nick, by: invitation.by };
    } else return "no_such_nick";
  } else if ("user" in invitation) {
    key = invitation.owner;
    given = { user: invitation.user, by: invitation.by };
  } else {
    key = LINK_KEY + invitation.link.hash;
    given = {
      by: invitation.by,
      uses: invitation.link.uses,
      until: invitation.link.until,
    };
  }
  if (!txn.invite(key) && txn.invites().length >= MAX_ROOM_INVITES) {
    return "invite_limit";
  }
  txn.setInvite(key, given);
  return "invited";
}

/** Whose invite `uninvite` revokes. */
export type Uninvitation =
  /** Every invite given to (or asked for under) the nick, and its holder's. */
  | { nick: string }
  /** A verified user's (by their owner, auth.ts `ownerOfUser`). */
  | { owner: string }
  /** A link, by its code's hash. */
  | { hash: string }
  /** Links, by their id (`/invites`). */
  | { link: string };

/**
 * Revokes invites: a nick's (those given to it, or taken with a code under
 * it, and the one of the member holding it now, or of the verified person
 * who holds the name here), a user's, or a link's (by its code, or its
 * id). How many; 0: there was none.
 */
export function uninvite(txn: RoomTxn, target: Uninvitation): number {
  forgetExpiredInvites(txn);
  const keys = new Set<string>();
  if ("nick" in target) {
    const wanted = nickKey(target.nick);
    for (const [key, invite] of txn.invites()) {
      if (invite.nick !== undefined && nickKey(invite.nick) === wanted) {
        keys.add(key);
      }
    }
    const member = txn.member(wanted);
    const key = member
      ? inviteKeyOf(member.keys) ?? member.owner
      : txn.reservedBy(wanted);
    if (key !== undefined && txn.invite(key)) keys.add(key);
  } else if ("owner" in target) {
    if (txn.invite(target.owner)) keys.add(target.owner);
  } else if ("hash" in target) {
    if (txn.invite(LINK_KEY + target.hash)) keys.add(LINK_KEY + target.hash);
  } else {
    for (const [key] of txn.invites()) {
      if (
        key.startsWith(LINK_KEY) &&
        linkId(key.slice(LINK_KEY.length)) === target.link
      ) {
        keys.add(key);
      }
    }
  }
  for (const key of keys) txn.setInvite(key);
  return keys.size;
}

/** The room's invites in force, as `/invites` lists them (no keys, no codes). */
export function invitesOf(
  txn: RoomTxn,
): { private: boolean; people: InvitedPerson[]; links: InviteLinkEntry[] } {
  const people: InvitedPerson[] = [];
  const links: InviteLinkEntry[] = [];
  for (const [key, invite] of txn.invites()) {
    if (!valid(invite, txn.now)) continue;
    if (key.startsWith(LINK_KEY)) {
      links.push({
        link: linkId(key.slice(LINK_KEY.length)),
        uses: invite.uses ?? 0,
        until: invite.until ?? 0,
        by: invite.by,
      });
    } else {
      people.push({
        ...(invite.nick !== undefined ? { nick: invite.nick } : {}),
        ...(invite.user !== undefined ? { user: invite.user } : {}),
        by: invite.by,
        ...(invite.via !== undefined ? { via: invite.via } : {}),
      });
    }
  }
  return { private: txn.private, people, links };
}

/**
 * Forgets the invites that ran out (links past their hours): each
 * moderator's invite command tidies them up, so they do not pile up.
 */
function forgetExpiredInvites(txn: RoomTxn): void {
  for (const [key, invite] of txn.invites()) {
    if (!valid(invite, txn.now)) txn.setInvite(key);
  }
}
