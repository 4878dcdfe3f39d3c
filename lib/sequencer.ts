/**
 * The sequencer role (PROTOCOL.md §4.3): the one member of a view that gives messages their slots. A member holds
 * this object only while it is the installed view's sequencer; on a view change the engine drops it and, if it is
 * still (or newly) the sequencer, makes a fresh one from the stream it has delivered.
 */
import { encodeNack, encodeOrder, runsPerDatagram, SEQ_WINDOW, type Incarnation, type Run } from './wire.js'
import type { SlotLog } from './slotlog.js'
import type { MessageStore } from './msgstore.js'
import { ProgressWatch } from './progress.js'

/** How far above a sender's next msgId the sequencer looks for data that shows the next one missing. */
const GAP_SCAN = 64

export interface SenderState {
  /** Data held for this sender, by msgId: ordered-but-unstable and not-yet-ordered messages. */
  store: MessageStore
  /** Highest msgId of this sender at a slot ≤ the member's `have` (derived from the stream). */
  ordered: number
  /** Of `store.cost`, what is held at msgIds ≤ `ordered`: the rest is bounded per sender (senders.ts). */
  orderedCost: number
}

/** What the role needs from the member that plays it. */
export interface SequencerHost {
  readonly me: number
  readonly inc: Incarnation
  readonly log: SlotLog
  readonly maxDatagram: number
  readonly maxUnstableBytes: number
  /** The highest slot every member has. */
  readonly stable: number
  /** Bytes of data at slots in (stable, have]. */
  readonly retainedBytes: number
  sender(no: number): SenderState | undefined
  multicast(buf: Buffer): void
  unicast(buf: Buffer, no: number): void
  /** Ask the directory to exclude member `no` of this view (PROTOCOL.md §4.7). */
  suspect(viewId: number, no: number, reason: string): void
  now(): number
  /** Highest own msgId multicast so far: own messages are ordered only once the others can have them. */
  readonly transmitted: number
  /** Called for each own message the role orders. */
  ownOrdered(msgId: number): void
}

export class SequencerRole {
  /** The next slot to assign. */
  nextSlot: number
  /** Highest msgId given a slot, per sender. */
  private readonly queued = new Map<number, number>()
  /** Senders that may have orderable data, in the order their data arrived. */
  private readonly dirty = new Set<number>()
  /** What each member of the view acknowledged, and who makes no progress. */
  private readonly watch: ProgressWatch
  lastSentAt = 0
  lastSentStable = -1
  ordered = 0
  private lastProbeAt = -Infinity
  /** Senders whose data arrived since the last tick: where a gap may have opened. */
  private readonly arrived = new Set<number>()
  /** Per sender, the message missing below data already here: since when, and when it was last asked for. */
  private readonly gaps = new Map<number, { msgId: number; since: number; askedAt: number }>()

  constructor(
    private readonly host: SequencerHost,
    readonly viewId: number,
    private readonly start: number,
    private readonly members: readonly number[],
    /** `probeMs`: while the group runs on multicast, every member gets a heartbeat by unicast this often (0: never). */
    private readonly opts: { boundMs: number; keepaliveMs: number; probeMs: number },
  ) {
    this.nextSlot = start + 1
    this.watch = new ProgressWatch(host.me, members, start, host.stable, opts.boundMs, opts.keepaliveMs, host.now())
    for (const no of members) {
      const s = host.sender(no)
      if (!s) continue
      this.queued.set(no, s.ordered)
      if (s.store.size > 0) this.dirty.add(no)
    }
  }

  /** A member of the view may have new data. */
  dataArrived(no: number): void {
    if (this.watch.has(no) || no === this.host.me) this.dirty.add(no)
    if (this.watch.has(no) && no !== this.host.me) this.arrived.add(no)
  }

  /**
   * A sender's next message is missing while later ones are here (a DATA lost on its way to the sequencer): once
   * that has lasted `reorderMs` it is asked of its sender by NACK, again every `intervalMs` while it lasts — instead
   * of waiting for the sender's resend timer (resendMs, 100 ms), which would stall the sender's whole window
   * meanwhile (PROTOCOL.md §4.6). Called at the end of every event-loop turn and every tick; only senders whose data
   * arrived since the last call, or that have a gap open, are looked at, each over GAP_SCAN msgIds. Returns when
   * a gap seen but not asked for yet will have waited out `reorderMs` (Infinity: none waits).
   */
  askGaps(now: number, reorderMs: number, intervalMs: number): number {
    const h = this.host
    let due = Infinity
    if (this.arrived.size === 0 && this.gaps.size === 0) return due
    for (const no of this.gaps.keys()) this.arrived.add(no)
    for (const no of this.arrived) {
      const s = h.sender(no)
      const next = s ? (this.queued.get(no) ?? s.ordered) + 1 : 0
      let above = 0
      if (s && !s.store.has(next)) for (let k = 1; k <= GAP_SCAN && above === 0; k++) if (s.store.has(next + k)) above = k
      if (above === 0 || !this.watch.has(no)) {
        this.gaps.delete(no)
        continue
      }
      const g = this.gaps.get(no)
      if (!g || g.msgId !== next) {
        this.gaps.set(no, { msgId: next, since: now, askedAt: -Infinity })
        due = Math.min(due, now + reorderMs)
        continue
      }
      // Compared as the sum it was asked to wake at (now − since may round below reorderMs).
      if (now < g.since + reorderMs) {
        due = Math.min(due, g.since + reorderMs)
        continue
      }
      if (now - g.askedAt < intervalMs) continue
      g.askedAt = now
      h.unicast(encodeNack({ inc: h.inc, viewId: this.viewId, sender: h.me }, [], [{ sender: no, firstMsgId: next, n: above }]), no)
    }
    this.arrived.clear()
    return due
  }

  /** Records an ACK from a member of the view: what it holds, what it lets become stable, what stable it heard of. */
  ack(no: number, have: number, acked: number, stable: number): void {
    this.watch.ack(no, have, acked, stable, this.host.now())
  }

  /**
   * Whether the group is at rest: everything ordered is stable and every member said it heard so. Until then a lost
   * ORDER or heartbeat holds some member, and so every sender's window: heartbeats come nackIntervalMs apart.
   */
  atRest(): boolean {
    return this.host.stable >= this.nextSlot - 1 && !this.watch.unheard(this.host.stable)
  }

  stableGiven(ownAcked: number): number {
    return this.watch.stable(ownAcked)
  }

  /**
   * Periodic check of the members' progress: a heartbeat by unicast to each member behind what was announced a
   * round ago (it may hear no multicast: this tells it how far to NACK), and a request to the directory to exclude
   * a member that still makes no progress (PROTOCOL.md §4.7).
   */
  watchProgress(): void {
    const now = this.host.now()
    const d = this.watch.tick(now, this.nextSlot - 1, this.host.stable)
    for (const no of d.hint) this.heartbeatTo(no)
    for (const no of d.suspect) this.host.suspect(this.viewId, no, this.watch.reason(no, now))
    // A member that gets these but nothing by multicast cannot hear the group's multicast (§4.8, hearing.ts).
    if (this.opts.probeMs > 0 && now - this.lastProbeAt >= this.opts.probeMs) {
      this.lastProbeAt = now
      for (const no of this.members) if (no !== this.host.me) this.heartbeatTo(no)
    }
  }

  /** A heartbeat by unicast, for a member that may hear no multicast: also the end of every repair it is sent. */
  heartbeatTo(no: number): void {
    const h = this.host
    h.unicast(encodeOrder({ inc: h.inc, viewId: this.viewId, sender: h.me }, this.nextSlot, h.stable, []), no)
  }

  /**
   * Gives slots to every orderable message, FIFO per sender, in arrival order across senders, within the window;
   * multicasts the assignments as ORDER datagrams. Returns how many slots it assigned.
   */
  order(): number {
    const h = this.host
    const first = this.nextSlot
    const runs: Run[] = []
    let bytes = h.retainedBytes
    let blocked = false
    for (const no of this.dirty) {
      const s = h.sender(no)
      if (!s) {
        this.dirty.delete(no)
        continue
      }
      let m = (this.queued.get(no) ?? s.ordered) + 1
      const firstMsgId = m
      const last = no === h.me ? h.transmitted : Infinity
      for (let len = s.store.length(m); len >= 0 && m <= last; len = s.store.length(m)) {
        // Slots skipped by a view change hold nothing: the window counts from the view's start at least.
        if (this.nextSlot - Math.max(h.stable, this.start) >= SEQ_WINDOW || (bytes > 0 && bytes + len > h.maxUnstableBytes)) {
          blocked = true
          break
        }
        h.log.set(this.nextSlot++, no, m, this.viewId)
        bytes += len
        if (no === h.me) h.ownOrdered(m)
        m++
      }
      if (m > firstMsgId) {
        this.queued.set(no, m - 1)
        for (let left = m - firstMsgId, from = firstMsgId; left > 0; ) {
          const count = Math.min(left, 0xffff)
          runs.push({ sender: no, firstMsgId: from, count })
          from += count
          left -= count
        }
      }
      if (blocked) break
      this.dirty.delete(no)
    }
    if (runs.length > 0) this.sendRuns(first, runs)
    this.ordered += this.nextSlot - first
    return this.nextSlot - first
  }

  /** A heartbeat: an ORDER with no runs, announcing the next slot and the stable slot. */
  heartbeat(): void {
    this.sendRuns(this.nextSlot, [])
  }

  private sendRuns(firstSlot: number, runs: Run[]): void {
    const h = this.host
    const header = { inc: h.inc, viewId: this.viewId, sender: h.me }
    const per = runsPerDatagram(h.maxDatagram)
    let slot = firstSlot
    let i = 0
    do {
      const to = Math.min(runs.length, i + per)
      h.multicast(encodeOrder(header, slot, h.stable, runs, i, to))
      for (let k = i; k < to; k++) slot += runs[k]!.count
      i = to
    } while (i < runs.length)
    this.lastSentStable = h.stable
    this.lastSentAt = h.now()
  }
}
