/**
 * The room as the rules (room_rules.ts) see it in Redis: a
 * {@linkcode RedisTxn} answers their reads from what {@linkcode READ} found
 * and records their changes as the writes, events and messages of one
 * {@linkcode COMMIT}, with what they were decided on as its conditions: the
 * members' version (`ctrl`) for any member or reserved name read or
 * changed, the moderation's (`v`) for any ban, mute, topic, slow mode or
 * private read, the epoch for any append, slow mode's clocks, kept events,
 * kept messages' reactions and invites as read (each by its own field, or
 * the invites' version `v` when all were read). A message posted by another process changes
 * none of them, so busy posting does not make joins decide again, nor joins
 * posts.
 *
 * It knows no rule and no connection: redis_store.ts reads, runs a rule on
 * it, commits, and on `behind` reads and runs the rule again.
 *
 * @module
 */

import type { NewEvent, ReactEvent, RoomEvent } from "../wire/protocol.ts";
import {
  type Invite,
  type KeptReaction,
  type Member,
  nickKey,
  type RoomTxn,
  type Sanction,
  type SanctionKind,
} from "./room_rules.ts";
import { eventBytes, NoSuchRoom } from "./rooms.ts";
import {
  type CommitArgs,
  type CommitValue,
  KEY_INDEX,
  type KeyCommand,
  type KeyName,
  type ReadPlan,
  type ReadReply,
} from "./redis_scripts.ts";

/** A room's moderation as read: the whole `mod` hash, decoded. */
export interface ModerationRead {
  /** Its version (`null`: never changed). */
  v: string | null;
  topic: string;
  slow: number;
  bans: Map<string, Sanction>;
  mutes: Map<string, Sanction>;
  /** Invite-only. */
  private: boolean;
}

/** What a {@linkcode READ} found, decoded: the room as of one instant. */
export interface Snapshot {
  /** `null`: the room is not kept (never made, or expired). */
  epoch: string | null;
  last: number;
  /** The members' version (`null`: never changed). */
  ctrl: string | null;
  /** Members by nick key, as read (`null`: nobody holds it). */
  members: Map<string, Member | null>;
  /** Owner → its member's nick key, as read (`null`: not a member). */
  owners: Map<string, string | null>;
  reserved: Map<string, string | null>;
  moderation?: ModerationRead;
  /** Owner → when it last posted (ms, as text), as read. */
  posted: Map<string, string | null>;
  /** Kept events by id, with their cost in history (`null`: not kept). */
  kept: Map<number, { event: RoomEvent; cost: number } | null>;
  /**
   * Kept messages' `reactions` fields by id, as Redis has them (`null`:
   * none): a decision on a message's reactions holds only while its field
   * is unchanged.
   */
  rawReactions: Map<number, string | null>;
  /** Every member was read (`members` holds them all). */
  all: boolean;
  /**
   * The `nicks` and `owners` fields as read, as Redis has them: a
   * decision on a member holds only while its fields are unchanged.
   */
  rawMembers: Map<string, string | null>;
  rawOwners: Map<string, string | null>;
  /** How many members the room has. */
  count: number;
  /** Invites' fields by key, as Redis has them (`null`: none). */
  rawInvites: Map<string, string | null>;
  /** Every invite and the hash's version `v`, when all were read. */
  allInvites?: { v: string | null; invites: Map<string, Invite> };
}

/** Decodes what {@linkcode READ} answered for `plan`. */
export function snapshotOf(reply: ReadReply, plan: ReadPlan): Snapshot {
  const [
    meta,
    members,
    ownerKeys,
    owners,
    reserved,
    mod,
    posted,
    kept,
    all,
    count,
    reactions,
    invites,
    allInvites,
  ] = reply;
  const snapshot: Snapshot = {
    epoch: meta[0] ?? null,
    last: Number(meta[1] ?? 0),
    ctrl: meta[2] ?? null,
    members: new Map(),
    owners: new Map(),
    reserved: new Map(),
    posted: new Map(),
    kept: new Map(),
    rawReactions: new Map(),
    all: plan.all === true,
    rawMembers: new Map(),
    rawOwners: new Map(),
    count,
    rawInvites: new Map(),
  };
  const member = (text: string | null) =>
    text === null ? null : JSON.parse(text) as Member;
  plan.members?.forEach((key, i) => {
    snapshot.members.set(key, member(members[i]));
    snapshot.rawMembers.set(key, members[i] ?? null);
  });
  plan.owners?.forEach((owner, i) => {
    const found = member(owners[i]);
    // A key whose member is another owner's: this owner is not a member.
    const key = found?.owner === owner ? ownerKeys[i] : null;
    snapshot.owners.set(owner, key);
    snapshot.rawOwners.set(owner, ownerKeys[i] ?? null);
    if (key !== null) {
      snapshot.members.set(key, found);
      snapshot.rawMembers.set(key, owners[i] ?? null);
    }
  });
  for (const text of all) {
    const found = JSON.parse(text) as Member;
    snapshot.members.set(nickKey(found.nick), found);
    snapshot.owners.set(found.owner, nickKey(found.nick));
  }
  plan.reserved?.forEach((key, i) =>
    snapshot.reserved.set(key, reserved[i] ?? null)
  );
  plan.posted?.forEach((owner, i) =>
    snapshot.posted.set(owner, posted[i] ?? null)
  );
  plan.kept?.forEach((id, i) => {
    const entry = kept[i];
    snapshot.kept.set(
      id,
      entry
        ? { event: JSON.parse(entry[1][1]), cost: Number(entry[1][3]) }
        : null,
    );
  });
  plan.reactions?.forEach((id, i) =>
    snapshot.rawReactions.set(id, reactions[i] ?? null)
  );
  plan.invites?.forEach((key, i) =>
    snapshot.rawInvites.set(key, invites[i] ?? null)
  );
  if (plan.allInvites) {
    const read = {
      v: null as string | null,
      invites: new Map<string, Invite>(),
    };
    for (let i = 0; i < allInvites.length; i += 2) {
      if (allInvites[i] === "v") read.v = allInvites[i + 1];
      else read.invites.set(allInvites[i], JSON.parse(allInvites[i + 1]));
    }
    snapshot.allInvites = read;
  }
  if (plan.moderation) snapshot.moderation = moderationOf(mod);
  return snapshot;
}

/** A snapshot of only a room's epoch and moderation (what posts read). */
export function viewOf(epoch: string, moderation: ModerationRead): Snapshot {
  return {
    epoch,
    last: 0,
    ctrl: null,
    members: new Map(),
    owners: new Map(),
    reserved: new Map(),
    moderation,
    posted: new Map(),
    kept: new Map(),
    rawReactions: new Map(),
    all: false,
    rawMembers: new Map(),
    rawOwners: new Map(),
    count: 0,
    rawInvites: new Map(),
  };
}

/** The `mod` hash (HGETALL: field, value, …) decoded. */
export function moderationOf(fields: string[]): ModerationRead {
  const read: ModerationRead = {
    v: null,
    topic: "",
    slow: 0,
    bans: new Map(),
    mutes: new Map(),
    private: false,
  };
  for (let i = 0; i < fields.length; i += 2) {
    const [field, value] = [fields[i], fields[i + 1]];
    if (field === "v") read.v = value;
    else if (field === "topic") read.topic = value;
    else if (field === "slow") read.slow = Number(value);
    else if (field === "private") read.private = value === "1";
    else if (field.startsWith("b:")) {
      read.bans.set(field.slice(2), JSON.parse(value));
    } else if (field.startsWith("m:")) {
      read.mutes.set(field.slice(2), JSON.parse(value));
    }
  }
  return read;
}

/**
 * An appended event's id before Redis gives it one: {@linkcode STAND_IN}
 * plus its place in the commit (1-based). Far above any real id.
 */
const STAND_IN = 2 ** 52;

/** Where a transaction's room is, for what it publishes. */
export interface TxnRoom {
  name: string;
  /** The room's pub/sub channel. */
  channel: string;
  /** Where a process is told to close connections: prefix + process id. */
  evictPrefix: string;
  /** Seconds an empty room keeps its keys. */
  roomTtl: number;
}

/** The rules' view of a room in Redis: reads from a snapshot, writes recorded. */
export class RedisTxn implements RoomTxn {
  readonly now = Date.now();
  #s: Snapshot;
  #room: TxnRoom;
  #events: NewEvent[] = [];
  #writes: KeyCommand[] = [];
  #publish: [string, CommitValue][] = [];
  #notices: CommitArgs["notices"] = [];
  /** Stream entries (`N-0`) read as kept: the commit's conditions. */
  #entries = new Set<string>();
  /** Every member was read (a reap): `ctrl` is the condition. */
  #readCtrl = false;
  /** Members read by nick key and by owner: their fields are conditions. */
  #readFields = new Set<string>();
  #readOwners = new Set<string>();
  #wroteCtrl = false;
  #wroteMod = false;
  #readEpoch = false;
  #created = false;
  /**
   * Reserved names as read: kept when the room expires (and `ctrl` with
   * it), they are the commit's conditions of their own.
   */
  #reservedAsRead: Map<string, string | null>;
  /** Slow mode's clocks as read (the commit's conditions). */
  #postedAsRead: Map<string, string | null>;
  /**
   * Reactions as changed so far (by id; `undefined`: none): a batch's
   * later toggles of one message build on its earlier ones.
   */
  #reactions = new Map<number, KeptReaction[] | undefined>();
  /** The `reactions` fields the rules read, as read (the commit's conditions). */
  #reactionsRead = new Set<number>();
  /**
   * Reactions to write, by id: a storm of toggles on one message in one
   * batch writes its field once, as the last one left it.
   */
  #reactionWrites = new Map<number, KeptReaction[]>();
  /** `edits` or `reactions` were written. */
  #wroteBeside = false;
  /** Invites as changed so far (by key; `undefined`: revoked). */
  #invites = new Map<string, Invite | undefined>();
  /** Invite fields the rules read by key (the commit's conditions). */
  #invitesRead = new Set<string>();
  /** Every invite was read: the invites' version is a condition. */
  #readAllInvites = false;
  #wroteInvites = false;
  /** Marks stand-in ids in a member's JSON (random: no text can guess it). */
  #marker = crypto.randomUUID();

  constructor(snapshot: Snapshot, room: TxnRoom) {
    this.#s = snapshot;
    this.#room = room;
    this.#postedAsRead = new Map(snapshot.posted);
    this.#reservedAsRead = new Map(snapshot.reserved);
  }

  /** How many events were appended so far. */
  get appendedCount(): number {
    return this.#events.length;
  }

  /** How many members the room has now (as read, and as changed since). */
  get count(): number {
    return this.#s.count;
  }

  /** Makes the room (it was not kept) with this epoch. */
  create(epoch: string): void {
    if (this.#created) return;
    this.#s.epoch = epoch;
    this.#created = true;
    this.#write("meta", "HSET", "epoch", epoch);
    // Its ids start again at 1: nothing kept beside an earlier room's
    // events may stay (they expire with them; this is in case not).
    this.#write("edits", "DEL");
    this.#write("reactions", "DEL");
  }

  /** Another write of the store's own (its bookkeeping of processes). */
  plumb(key: KeyName, command: string, ...args: string[]): void {
    this.#write(key, command, ...args);
  }

  get epoch(): string | undefined {
    this.#readEpoch = true;
    return this.#s.epoch ?? undefined;
  }

  member(key: string): Member | undefined {
    this.#readFields.add(key);
    const found = this.#s.members.get(key);
    if (found === undefined && !this.#s.all) throw unread("member", key);
    return found ?? undefined;
  }

  memberOf(owner: string): Member | undefined {
    this.#readOwners.add(owner);
    const key = this.#s.owners.get(owner);
    if (key === undefined && !this.#s.all) throw unread("owner", owner);
    return key ? this.member(key) : undefined;
  }

  members(): Member[] {
    this.#readCtrl = true;
    if (!this.#s.all) throw unread("members", "all");
    return [...this.#s.members.values()].filter((m): m is Member => !!m);
  }

  reservedBy(key: string): string | undefined {
    const owner = this.#s.reserved.get(key);
    if (owner === undefined) throw unread("reserved", key);
    return owner ?? undefined;
  }

  #moderation(): ModerationRead {
    if (!this.#s.moderation) throw unread("moderation", "all");
    return this.#s.moderation;
  }

  sanction(kind: SanctionKind, key: string): Sanction | undefined {
    const all = this.#moderation();
    return (kind === "ban" ? all.bans : all.mutes).get(key);
  }

  sanctions(kind: SanctionKind): [string, Sanction][] {
    const all = this.#moderation();
    return [...(kind === "ban" ? all.bans : all.mutes)];
  }

  get topic(): string {
    return this.#moderation().topic;
  }

  get slowSeconds(): number {
    return this.#moderation().slow;
  }

  get private(): boolean {
    return this.#moderation().private;
  }

  invite(key: string): Invite | undefined {
    if (this.#invites.has(key)) return this.#invites.get(key);
    const all = this.#s.allInvites;
    if (all) {
      this.#readAllInvites = true;
      return all.invites.get(key);
    }
    const raw = this.#s.rawInvites.get(key);
    if (raw === undefined) throw unread("invite", key);
    this.#invitesRead.add(key);
    return raw === null ? undefined : JSON.parse(raw) as Invite;
  }

  invites(): [string, Invite][] {
    const all = this.#s.allInvites;
    if (!all) throw unread("invites", "all");
    this.#readAllInvites = true;
    const now = new Map(all.invites);
    for (const [key, invite] of this.#invites) {
      if (invite) now.set(key, invite);
      else now.delete(key);
    }
    return [...now];
  }

  postedAt(owner: string): number | undefined {
    const at = this.#s.posted.get(owner);
    if (at === undefined) throw unread("posted", owner);
    return at === null ? undefined : Number(at);
  }

  kept(id: number): RoomEvent | undefined {
    this.#readEpoch = true;
    if (this.#s.epoch === null) {
      throw new NoSuchRoom(`no room ${this.#room.name}`);
    }
    const entry = this.#s.kept.get(id);
    if (entry === undefined) throw unread("kept", String(id));
    if (entry) this.#entries.add(`${id}-0`);
    return entry?.event;
  }

  append(body: NewEvent): number {
    this.#readEpoch = true;
    if (this.#s.epoch === null) {
      throw new NoSuchRoom(`no room ${this.#room.name}`);
    }
    this.#events.push(body);
    return STAND_IN + this.#events.length;
  }

  putMember(member: Member, from?: string): void {
    this.#wroteCtrl = true;
    const key = nickKey(member.nick);
    if (!this.#present(member.owner)) this.#s.count++;
    if (from !== undefined && from !== key) {
      this.#write("nicks", "HDEL", from);
      this.#write("ops", "HDEL", from);
      this.#s.members.set(from, null);
    }
    this.#write("nicks", "HSET", key, this.#encode(member));
    this.#write("owners", "HSET", member.owner, key);
    if (member.op) {
      this.#write(
        "ops",
        "HSET",
        key,
        this.#encode({ nick: member.nick, joinedId: member.joinedId }),
      );
    }
    this.#s.members.set(key, member);
    this.#s.owners.set(member.owner, key);
  }

  /** Whether `owner` is a member now (as read, and as changed since). */
  #present(owner: string): boolean {
    const key = this.#s.owners.get(owner);
    if (key) return true;
    for (const member of this.#s.members.values()) {
      if (member?.owner === owner) return true;
    }
    return false;
  }

  dropMember(member: Member): void {
    this.#wroteCtrl = true;
    const key = nickKey(member.nick);
    this.#write("nicks", "HDEL", key);
    this.#write("ops", "HDEL", key);
    this.#write("owners", "HDEL", member.owner);
    this.#s.members.set(key, null);
    this.#s.owners.set(member.owner, null);
    this.#s.count--;
  }

  unannounced(member: Member): void {
    // Placed after the room's last event when it went (roster.ts takes it
    // there), though published after the whole commit's events.
    this.#publish.push([this.#room.channel, {
      concat: [
        `{"type":"gone","nick":${JSON.stringify(member.nick)},"after":`,
        { last: this.#events.length },
        "}",
      ],
    }]);
  }

  reserve(key: string, owner: string): void {
    this.#wroteCtrl = true;
    this.#write("reserved", "HSET", key, owner);
    this.#s.reserved.set(key, owner);
  }

  setSanction(kind: SanctionKind, key: string, sanction?: Sanction): void {
    this.#wroteMod = true;
    const field = `${kind === "ban" ? "b" : "m"}:${key}`;
    if (sanction) {
      this.#write("moderation", "HSET", field, JSON.stringify(sanction));
    } else this.#write("moderation", "HDEL", field);
    const all = this.#s.moderation;
    const sanctions = kind === "ban" ? all?.bans : all?.mutes;
    if (sanction) sanctions?.set(key, sanction);
    else sanctions?.delete(key);
  }

  setTopic(text: string): void {
    this.#wroteMod = true;
    this.#write("moderation", "HSET", "topic", text);
    if (this.#s.moderation) this.#s.moderation.topic = text;
  }

  setPrivate(on: boolean): void {
    this.#wroteMod = true;
    this.#write("moderation", "HSET", "private", on ? "1" : "0");
    if (this.#s.moderation) this.#s.moderation.private = on;
  }

  setInvite(key: string, invite?: Invite): void {
    this.#wroteInvites = true;
    this.#invites.set(key, invite);
    if (invite) this.#write("invites", "HSET", key, JSON.stringify(invite));
    else this.#write("invites", "HDEL", key);
  }

  setSlow(seconds: number): void {
    this.#wroteMod = true;
    this.#write("moderation", "HSET", "slow", String(seconds));
    this.#write("posted", "DEL");
    for (const owner of this.#s.posted.keys()) this.#s.posted.set(owner, null);
    if (this.#s.moderation) this.#s.moderation.slow = seconds;
  }

  setPosted(owner: string, at: number): void {
    this.#write("posted", "HSET", owner, String(at));
    // Forgotten once it can no longer slow anyone down.
    this.#write("posted", "PEXPIRE", String(this.slowSeconds * 1000));
    this.#s.posted.set(owner, String(at));
  }

  deleteEvent(event: RoomEvent): void {
    const cost = this.#s.kept.get(event.id)?.cost ?? 0;
    this.#s.kept.set(event.id, null); // a second deletion finds nothing
    this.#write("events", "XDEL", `${event.id}-0`);
    this.#write("edits", "HDEL", String(event.id));
    this.#write("reactions", "HDEL", String(event.id));
    // Gone with it (and no later write of the batch brings them back).
    this.#reactions.set(event.id, undefined);
    this.#reactionWrites.delete(event.id);
    this.#write("meta", "HINCRBY", "bytes", String(-cost));
  }

  replaceEvent(event: RoomEvent): void {
    const entry = this.#s.kept.get(event.id);
    if (entry) this.#s.kept.set(event.id, { ...entry, event });
    this.#wroteBeside = true;
    this.#write("edits", "HSET", String(event.id), JSON.stringify(event));
  }

  reactions(id: number): KeptReaction[] | undefined {
    if (this.#reactions.has(id)) return this.#reactions.get(id);
    const raw = this.#s.rawReactions.get(id);
    if (raw === undefined) throw unread("reactions", String(id));
    this.#reactionsRead.add(id);
    const kept = raw === null ? undefined : JSON.parse(raw) as KeptReaction[];
    this.#reactions.set(id, kept);
    return kept;
  }

  setReactions(id: number, reactions: KeptReaction[]): void {
    this.#reactions.set(id, reactions);
    this.#reactionWrites.set(id, reactions);
    this.#wroteBeside = true;
  }

  announce(notice: ReactEvent): void {
    this.#notices.push({
      at: this.#events.length,
      notice: JSON.stringify(notice),
    });
  }

  evict(member: Member, reason?: string): void {
    const message = JSON.stringify(
      reason === undefined
        ? [this.#room.name, member.owner]
        : [this.#room.name, member.owner, reason],
    );
    for (const process of Object.keys(member.connections)) {
      this.#publish.push([this.#room.evictPrefix + process, message]);
    }
  }

  /**
   * The room's epoch and moderation once this transaction is committed
   * (what posts are decided on next), if it read the moderation.
   */
  viewAfter(): Snapshot | undefined {
    const moderation = this.#s.moderation;
    if (!moderation || this.#s.epoch === null) return undefined;
    return viewOf(this.#s.epoch, {
      ...moderation,
      v: this.#wroteMod ? String(Number(moderation.v ?? 0) + 1) : moderation.v,
    });
  }

  /** The event `id` stands in for, once the commit has answered its `events`. */
  appended(id: number, events: RoomEvent[]): RoomEvent {
    return events[id - STAND_IN - 1];
  }

  /** The real id of `id` once the commit has answered its `events`. */
  resolve(id: number, events: RoomEvent[]): number {
    return id > STAND_IN ? events[id - STAND_IN - 1].id : id;
  }

  /**
   * The commit of what was decided: unless what it was decided on has
   * changed, with the members' and the moderation's version moved on when
   * they changed, and the room's keys kept (or, emptied, left to expire).
   */
  commit(): Pick<
    CommitArgs,
    | "unchanged"
    | "retain"
    | "entries"
    | "events"
    | "writes"
    | "notices"
    | "beside"
    | "publish"
  > {
    const unchanged: CommitArgs["unchanged"] = [];
    const writes = [...this.#writes];
    if (this.#reactionWrites.size > 0) {
      writes.push([
        "HSET",
        KEY_INDEX.reactions,
        ...[...this.#reactionWrites].flatMap(([id, reactions]) => [
          String(id),
          JSON.stringify(reactions),
        ]),
      ]);
    }
    const meta = KEY_INDEX.meta;
    // `ctrl` goes with the room's keys when it expires: with the epoch, a
    // room made again since is not taken for the one read.
    if (
      this.#readEpoch || this.#readCtrl || this.#wroteCtrl || this.#created ||
      this.#readFields.size > 0 || this.#readOwners.size > 0
    ) {
      unchanged.push([meta, "epoch", this.#created ? null : this.#s.epoch]);
    }
    for (const [key, owner] of this.#reservedAsRead) {
      unchanged.push([KEY_INDEX.reserved, key, owner]);
    }
    // A member read is a condition by its own fields, so changes to other
    // members (another process's joins) make nobody decide again; a rule
    // that read every member has `ctrl`, which every change moves on.
    if (this.#readCtrl) unchanged.push([meta, "ctrl", this.#s.ctrl]);
    for (const key of this.#readFields) {
      const raw = this.#s.rawMembers.get(key);
      if (raw !== undefined) unchanged.push([KEY_INDEX.nicks, key, raw]);
    }
    for (const owner of this.#readOwners) {
      const raw = this.#s.rawOwners.get(owner);
      if (raw !== undefined) unchanged.push([KEY_INDEX.owners, owner, raw]);
    }
    if (this.#wroteCtrl) {
      writes.push(["HINCRBY", meta, "ctrl", "1"]);
      if (this.#s.count > 0) {
        writes.push(
          ["PERSIST", meta],
          ["PERSIST", KEY_INDEX.events],
          ["PERSIST", KEY_INDEX.edits],
          ["PERSIST", KEY_INDEX.reactions],
        );
      }
    }
    // Read, it is a condition whether used or not: the process may keep
    // what it read, changed as decided, for its next posts (`viewAfter`).
    if (this.#s.moderation) {
      unchanged.push([KEY_INDEX.moderation, "v", this.#s.moderation.v]);
    }
    if (this.#wroteMod) {
      writes.push(["HINCRBY", KEY_INDEX.moderation, "v", "1"]);
    }
    for (const [owner, at] of this.#postedAsRead) {
      unchanged.push([KEY_INDEX.posted, owner, at]);
    }
    // Two processes toggling reactions on one message: the second to
    // commit finds the field changed and decides again on the first's.
    for (const id of this.#reactionsRead) {
      unchanged.push([
        KEY_INDEX.reactions,
        String(id),
        this.#s.rawReactions.get(id)!,
      ]);
    }
    // A code's use is decided on its link's field: two processes spending
    // its last use, the second finds the field changed and decides again.
    for (const key of this.#invitesRead) {
      unchanged.push([
        KEY_INDEX.invites,
        key,
        this.#s.rawInvites.get(key) ?? null,
      ]);
    }
    if (this.#readAllInvites) {
      unchanged.push([KEY_INDEX.invites, "v", this.#s.allInvites!.v]);
    }
    if (this.#wroteInvites) {
      writes.push(["HINCRBY", KEY_INDEX.invites, "v", "1"]);
    }
    return {
      unchanged,
      // A room nobody is in is kept for roomTtl from its last change (the
      // last one out, an app's post, its making).
      retain: this.#wroteCtrl || this.#created || this.#events.length > 0,
      entries: [...this.#entries],
      events: this.#events.map((body) => ({
        body: JSON.stringify(body),
        cost: eventBytes(body as RoomEvent),
        type: body.type,
      })),
      writes,
      notices: this.#notices,
      beside: this.#wroteBeside,
      publish: this.#publish,
    };
  }

  #write(key: KeyName, command: string, ...args: CommitValue[]): void {
    this.#writes.push([command, KEY_INDEX[key], ...args]);
  }

  /** JSON whose stand-in ids Redis fills in (see {@linkcode CommitValue}). */
  #encode(value: unknown): CommitValue {
    const marker = this.#marker;
    const text = JSON.stringify(
      value,
      (_key, v) =>
        typeof v === "number" && v > STAND_IN ? marker + (v - STAND_IN) : v,
    );
    const parts: CommitValue[] = [];
    let at = 0;
    for (const found of text.matchAll(new RegExp(`"${marker}(\\d+)"`, "g"))) {
      parts.push(text.slice(at, found.index), { id: Number(found[1]) });
      at = found.index + found[0].length;
    }
    if (parts.length === 0) return text;
    parts.push(text.slice(at));
    return { concat: parts };
  }
}

/** A rule read what its store did not read for it: a bug in the read plan. */
function unread(what: string, key: string): Error {
  return new Error(`the rule read ${what} ${key}, which was not read for it`);
}
