/**
 * The views this member knows (PROTOCOL.md §5): committed, being installed, to be delivered; who is in each and where.
 * Bookkeeping only: when a view is installed or delivered is the engine's decision (engine.ts `advance()`, `deliver()`).
 *
 * A view moves through three lists, each by increasing start: `pending` from its commit until `have` reaches its cut
 * (install), `toDeliver` until `delivered` passes its boundary, and `known` for as long as its slots may be in the log
 * (DATA and ORDER name their view; repairs are served for any of them).
 */
import type { CommitFrame, GroupTransport, MemberState } from './dirproto.js'
import { donorOf, needersOf } from './stateview.js'

export interface MemberRec {
  no: number
  id: string
  addr: string
  /** Its state-transfer flag in this view (PROTOCOL.md §8.1); absent: no state hooks. */
  state?: MemberState
}

export interface ViewRec {
  viewId: number
  members: MemberRec[]
  byNo: Map<number, MemberRec>
  sequencer: number
  /** The last slot of the previous view. */
  cut: number
  /** The view's own slot. */
  start: number
  holder: number
  /** Who can serve which slots while the view is installed: member `no` holds (low, have]. */
  sources: Array<{ no: number; low: number; have: number }>
  /** This member is not in the view: it is leaving, and its stream ends at `cut`. */
  excluded: boolean
  /** How a send to the group travels in this view (PROTOCOL.md §2). */
  transport: GroupTransport
}

/** The view a commit announces, as member `me` sees it. */
export function viewOf(f: CommitFrame, me: number): ViewRec {
  const members = f.members.map((m): MemberRec => m.state === undefined ? { no: m.no, id: m.id, addr: m.addr } : { no: m.no, id: m.id, addr: m.addr, state: m.state })
  const byNo = new Map(members.map((m) => [m.no, m]))
  return {
    viewId: f.viewId, members, byNo, sequencer: f.sequencer, cut: f.cut, start: f.start, holder: f.holder,
    excluded: !byNo.has(me), sources: f.sources, transport: f.transport,
  }
}

export class Views {
  /** The view this member works in: the latest installed, once no later one is committed. */
  current: ViewRec | null = null
  /** The latest commit received, as received: a rejoin carries it back to a restarted directory. */
  lastCommit: CommitFrame | null = null
  /** The highest view id seen in a prepare or a commit. */
  seenViewId = 0
  /** Views committed but not yet reached by `have`. */
  private pending: ViewRec[] = []
  /** Views whose boundary `delivered` has not yet passed. */
  private readonly undelivered: ViewRec[] = []
  /**
   * `have` reached the cut of a view that excludes this member: its stream is over (a leaver waiting for `released`).
   * Set once, where it happens (the engine reads it for every datagram): that view is never delivered, so stays.
   */
  private over = false
  /** Every view whose slots may still be in the log. */
  private known: ViewRec[] = []
  /** Every member number ever in a view, with its id (numbers are never reused within a group). */
  private readonly names = new Map<number, string>()
  /** Which member number each unicast address was given to, the latest holder (PROTOCOL.md §4.1). */
  private readonly at = new Map<string, number>()

  /** No view committed yet: the member is joining. */
  get none(): boolean {
    return !this.current && this.pending.length === 0
  }

  /** The first view committed but not installed. */
  get next(): ViewRec | undefined {
    return this.pending[0]
  }

  /** The latest view committed but not installed. */
  get latest(): ViewRec | undefined {
    return this.pending[this.pending.length - 1]
  }

  /** The first view whose boundary `delivered` has not passed. */
  get toDeliver(): ViewRec | undefined {
    return this.undelivered[0]
  }

  /** The view this member works in, or one it is moving to, excludes it: it is leaving. */
  get excludesMe(): boolean {
    return this.pending.some((v) => v.excluded) || this.current?.excluded === true
  }

  get ended(): boolean {
    return this.over
  }

  saw(viewId: number): void {
    if (viewId > this.seenViewId) this.seenViewId = viewId
  }

  /**
   * A commit's view: every view that starts above its cut is forgotten (its slots are void or reassigned). Returns
   * the latest view known before it.
   */
  add(v: ViewRec): ViewRec | undefined {
    this.pending = this.pending.filter((p) => p.start <= v.cut)
    this.known = this.known.filter((k) => k.start <= v.cut)
    const before = this.known[this.known.length - 1]
    this.known.push(v)
    this.pending.push(v)
    for (const m of v.members) {
      this.names.set(m.no, m.id)
      this.at.set(m.addr, m.no)
    }
    return before
  }

  /**
   * `have` reached the cut of the next view, `v`: it waits to be delivered, and becomes current unless a later view is
   * committed already. Returns whether it did.
   */
  install(v: ViewRec): boolean {
    this.pending.shift()
    this.undelivered.push(v)
    if (v.excluded) this.over = true
    if (this.pending.length > 0) return false
    this.current = v
    return true
  }

  /** `delivered` passed the boundary of the view `toDeliver` named. */
  delivered(): void {
    this.undelivered.shift()
  }

  /** Every slot up to `upTo` is freed: views that own none of the rest are forgotten (the latest is always kept). */
  freed(upTo: number): void {
    while (this.known.length > 1 && this.known[1]!.start <= upTo) this.known.shift()
  }

  /** A view whose slots may still be in the log, by id. */
  byId(viewId: number): ViewRec | undefined {
    for (let i = this.known.length - 1; i >= 0; i--) if (this.known[i]!.viewId === viewId) return this.known[i]
    return undefined
  }

  /** The last slot view `v` may own: the cut of the next known view, or unbounded. */
  endOf(v: ViewRec): number {
    const i = this.known.indexOf(v)
    return i >= 0 && i + 1 < this.known.length ? this.known[i + 1]!.cut : Infinity
  }

  /** Member `no`'s unicast address, from the latest known view that has it. */
  addrOf(no: number): string | undefined {
    for (let i = this.known.length - 1; i >= 0; i--) {
      const m = this.known[i]!.byNo.get(no)
      if (m) return m.addr
    }
    return undefined
  }

  /** Whether member number `no` was ever in a view this member heard of. */
  knows(no: number): boolean {
    return this.names.has(no)
  }

  /**
   * The member whose unicast address is `addr` ("ip:port", where a datagram came from), or -1: a stranger's socket.
   * Every datagram leaves its member from that address, multicast included (PROTOCOL.md §2.6).
   */
  noAt(addr: string): number {
    return this.at.get(addr) ?? -1
  }

  nameOf(no: number): string | undefined {
    return this.names.get(no)
  }

  /**
   * State transfer in the known view `viewId` (PROTOCOL.md §8.1), from its commit's flags: its donor (NO_DONOR when
   * no member holds the state), the members that need the state, and every member's number. Undefined for a view
   * this member does not know. Each member's own flag is `byId(viewId).byNo.get(no).state`.
   */
  stateOf(viewId: number): { donor: number; needs: number[]; members: number[] } | undefined {
    const v = this.byId(viewId)
    return v && { donor: donorOf(v.members), needs: needersOf(v.members), members: v.members.map((m) => m.no) }
  }
}
