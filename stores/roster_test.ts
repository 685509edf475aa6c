import assert from "node:assert/strict";
import { Roster, type RosterAt } from "./roster.ts";
import { nickKey } from "./rooms.ts";
import type { RoomEvent } from "../wire/protocol.ts";

const join = (id: number, nick: string, verified?: boolean): RoomEvent => ({
  type: "join",
  id,
  ts: 0,
  nick,
  ...(verified ? { verified } : {}),
});
const leave = (id: number, nick: string): RoomEvent => ({
  type: "leave",
  id,
  ts: 0,
  nick,
});
const rename = (id: number, from: string, to: string): RoomEvent => ({
  type: "nick",
  id,
  ts: 0,
  from,
  to,
});
const kick = (id: number, nick: string): RoomEvent => ({
  type: "kick",
  id,
  ts: 0,
  nick,
  by: "mod",
});
const member = (nick: string, order: number, verified = false) => ({
  nick,
  order,
  verified,
});
/** The nicks of an `at` answer (undefined stays undefined). */
const nicks = (members: RosterAt | undefined) => members?.nicks;

Deno.test("roster: members in join order, a rename keeps its place", () => {
  const roster = new Roster(4, [member("bob", 3), member("ann", 1)]);
  assert.deepEqual(roster.nicks(), ["ann", "bob"]);
  roster.apply(join(5, "cy"));
  roster.apply(rename(6, "ann", "anna"));
  roster.apply({ type: "message", id: 7, ts: 0, from: "cy", text: "hi" });
  roster.apply(leave(8, "bob"));
  roster.apply(join(3, "old")); // in the baseline already: ignored
  assert.deepEqual(roster.nicks(), ["anna", "cy"]);
  assert.equal(roster.id, 8);
});

Deno.test("roster: who was in the room just after an earlier event", () => {
  const roster = new Roster(2, [member("ann", 1), member("bob", 2)]);
  roster.apply(join(3, "cy"));
  roster.apply(leave(4, "ann"));
  roster.apply(rename(5, "bob", "rob"));
  roster.apply(join(6, "dee"));
  assert.deepEqual(nicks(roster.at(6)), ["rob", "cy", "dee"]);
  assert.deepEqual(nicks(roster.at(5)), ["rob", "cy"]);
  assert.deepEqual(nicks(roster.at(4)), ["bob", "cy"]);
  assert.deepEqual(nicks(roster.at(3)), ["ann", "bob", "cy"], "ann back");
  assert.deepEqual(nicks(roster.at(2)), ["ann", "bob"]);
  assert.equal(roster.at(1), undefined, "before the baseline");
  assert.equal(roster.at(7), undefined, "not there yet");
  roster.forgetBefore(4);
  assert.equal(roster.at(3), undefined, "forgotten");
  assert.deepEqual(nicks(roster.at(4)), ["bob", "cy"]);
  roster.forgetBefore(100);
  assert.deepEqual(nicks(roster.at(6)), ["rob", "cy", "dee"]);
  assert.equal(roster.at(5), undefined);
});

Deno.test("roster: someone renamed, then left, comes back under the old nick", () => {
  const roster = new Roster(2, [member("ann", 1), member("bob", 2)]);
  roster.apply(rename(3, "bob", "rob"));
  roster.apply(join(4, "cy"));
  roster.apply(rename(5, "rob", "robert"));
  roster.apply(leave(6, "robert"));
  roster.apply(leave(7, "ann"));
  assert.deepEqual(nicks(roster.at(2)), ["ann", "bob"]);
  assert.deepEqual(nicks(roster.at(4)), ["ann", "rob", "cy"]);
  assert.deepEqual(nicks(roster.at(5)), ["ann", "robert", "cy"]);
  assert.deepEqual(nicks(roster.at(6)), ["ann", "cy"]);
  assert.deepEqual(roster.nicks(), ["cy"]);
});

Deno.test("roster: a kick removes the member, and at() puts it back before", () => {
  const roster = new Roster(1, [member("ann", 1)]);
  roster.apply(join(2, "bob"));
  roster.apply(kick(3, "bob"));
  assert.deepEqual(roster.nicks(), ["ann"]);
  assert.deepEqual(nicks(roster.at(2)), ["ann", "bob"]);
});

Deno.test("roster: verified members, from the baseline and from join events", () => {
  const roster = new Roster(1, [member("ann", 1, true)]);
  roster.apply(join(2, "bob"));
  roster.apply(join(3, "cy", true));
  roster.apply(rename(4, "bob", "rob")); // a verified person's takeover
  assert.deepEqual(roster.at(4), {
    nicks: ["ann", "rob", "cy"],
    verified: ["ann", "cy"],
  });
  roster.apply(leave(5, "cy"));
  assert.deepEqual(roster.at(3), {
    nicks: ["ann", "bob", "cy"],
    verified: ["ann", "cy"],
  });
});

Deno.test("roster: a member gone without an event is out after the event it followed", () => {
  const roster = new Roster(2, [member("ann", 1), member("bob", 2)]);
  roster.apply(join(3, "cy"));
  roster.gone("bob", 3);
  roster.apply(join(4, "dee"));
  assert.deepEqual(roster.nicks(), ["ann", "cy", "dee"]);
  assert.deepEqual(nicks(roster.at(4)), ["ann", "cy", "dee"]);
  assert.deepEqual(nicks(roster.at(3)), ["ann", "bob", "cy"], "just after 3");
  // A later holder of the nick is someone else: a late notice spares it.
  roster.apply(join(5, "bob"));
  roster.gone("bob", 4);
  assert.deepEqual(roster.nicks(), ["ann", "cy", "dee", "bob"]);
  // The rest shut down with their process: the room is empty.
  for (const nick of ["ann", "cy", "dee", "bob"]) roster.gone(nick, roster.id);
  assert.equal(roster.size, 0);
});

Deno.test("roster: held by nick key; a join of a held key replaces a holder gone unseen", () => {
  const roster = new Roster(2, [member("Ann", 1), member("bob", 2)], nickKey);
  roster.apply(rename(3, "ANN", "Anna")); // found by key, whatever the case
  assert.deepEqual(roster.nicks(), ["Anna", "bob"]);
  // bob went without this roster seeing it (say, a missed notice): the
  // store never has two holders of one key, so the join replaces him.
  roster.apply(join(4, "BOB"));
  assert.deepEqual(roster.nicks(), ["Anna", "BOB"]);
  assert.deepEqual(nicks(roster.at(3)), ["Anna", "bob"]);
  roster.apply(leave(5, "bob"));
  assert.deepEqual(roster.nicks(), ["Anna"]);
});
