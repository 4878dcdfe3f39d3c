/**
 * The directory's part in state transfer (PROTOCOL.md §8.1): each member's flag — `holds` (its application has the
 * group's state), `needs` (it waits for it), or none (no state hooks). A flag is data of the member's entry in every
 * commit, carried back by rejoins like the rest of the view; the donor is computed from the flags by every member
 * alike (lib/stateview.ts), never by the directory, and no flag ever starts a view change.
 */
import type { MemberEntry, MemberState } from '../lib/dirproto.js'

/** What the directory keeps of a member (core.ts's record) that a commit lists. */
export interface Flagged {
  no: number
  id: string
  addr: string
  state?: MemberState | undefined
}

/** A joiner's flag: with hooks it needs the state, until its first commit perhaps says it holds it (settleJoiners). */
export function joinState(hooks: boolean | undefined): MemberState | undefined {
  return hooks === true ? 'needs' : undefined
}

/**
 * The flags of the joiners a commit takes in. With nobody staying from the view before (the group's first view, or
 * one after every member left), nobody has the stream before this view: the empty state is the state, and joiners
 * with hooks hold it. Otherwise they need it.
 */
export function settleJoiners(staying: readonly Flagged[], joiners: readonly Flagged[]): void {
  if (staying.length > 0) return
  for (const j of joiners) if (j.state === 'needs') j.state = 'holds'
}

/** `m`'s entry in a commit or a `status` frame: the flag only when it has one (a member without hooks sends none). */
export function entryOf(m: Flagged): MemberEntry {
  return m.state === undefined ? { no: m.no, id: m.id, addr: m.addr } : { no: m.no, id: m.id, addr: m.addr, state: m.state }
}

/**
 * `ready` from `m`: it restored the state, and holds it from the next commit on. Only a member a commit marked
 * `needs` (one of `committed`, the latest view's members) can be ready; from anyone else — a joiner not yet
 * committed, a holder, a member without hooks — it is ignored. Returns whether the flag changed.
 */
export function markReady(committed: readonly Flagged[], m: Flagged): boolean {
  if (m.state !== 'needs' || !committed.includes(m)) return false
  m.state = 'holds'
  return true
}

/**
 * A rebuilt group's flag for a member from the commit it adopts (PROTOCOL.md §7), given what it knew of the member
 * before (a member that rejoined under an earlier adopted commit). Flags only go from `needs` to `holds`: a member
 * that sent `ready` since it rejoined holds the state even if the newer commit, made before, says it needs it.
 */
export function adoptedState(before: MemberState | undefined, committed: MemberState | undefined): MemberState | undefined {
  return before === 'holds' && committed === 'needs' ? 'holds' : committed
}
