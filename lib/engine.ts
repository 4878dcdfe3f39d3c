/**
 * One member of one group: the whole data-path protocol (PROTOCOL.md §4, §5), free of sockets and timers.
 *
 * Inputs: `datagram()` (from the group's UDP sockets), `directory()` (frames from the directory), `tick()` (the one
 * periodic timer), `flush()` (once an input is handled, requested through `env.scheduleFlush`), `submit()`.
 * Outputs go through `EngineEnv` (host.ts). The simulator in test/fixtures drives exactly this class.
 *
 * Reading guide: ordering lives in sequencer.ts, this member's own messages (window, transmission, resend) in
 * outbox.ts, what to ask for and whom when something is missing (and answering such requests) in repair.ts, the
 * views this member knows in views.ts, each sender's messages it holds in senders.ts, whether the sequencer orders
 * this member's messages in seqwatch.ts; here,
 * `advance()` is the hold-back queue (what may be delivered), `onCommit()`/`install()` when a view is taken on
 * (slots it declares void: voids.ts), `gc()` stability, `nack()`/`serveNack()` when repair may ask or answer.
 */
import { decode, encodeAck, FOREIGN, Kind, parseIncarnation, SEQ_WINDOW, type Datagram, type Incarnation } from './wire.js'
import { SlotLog, VIEW_SENDER, VOID_SENDER } from './slotlog.js'
import { Outbox } from './outbox.js'
import { NACK_REORDER_MS, Repair } from './repair.js'
import { VoidSlots } from './voids.js'
import { Senders, unorderedBound } from './senders.js'
import { viewOf, Views, type ViewRec } from './views.js'
import { Reassembly } from './reassembly.js'
import { MulticastHearing } from './hearing.js'
import { SequencerWatch } from './seqwatch.js'
import { SequencerRole, type SenderState, type SequencerHost } from './sequencer.js'
import type { EngineOptions } from './options.js'
import type { CommitFrame, FromDirectory, GroupTransport, ToDirectoryOf } from './dirproto.js'
import type { Via } from './transport.js'
import { ErrorCodes, errorFromCode, ExpelledError, NotJoinedError, ProtocolError, type SeqcastError } from './errors.js'
import { logger } from './log.js'
import type { EngineEnv, EngineStats, Lifecycle } from './host.js'

const logView = logger('view')
const logRepair = logger('repair')

/** Where the member is in the view-change protocol. */
export type ViewState = 'none' | 'active' | 'flushing' | 'installing'

const LOG_CAPACITY = 4 * SEQ_WINDOW

export class Engine implements SequencerHost {
  /** The group's incarnation, learnt from the first commit (0 until then: no datagram matches it). */
  inc: Incarnation = { hi: 0, lo: 0 }
  me = 0
  lifecycle: Lifecycle = 'joining'
  viewState: ViewState = 'none'
  readonly log = new SlotLog(LOG_CAPACITY)
  readonly stats: EngineStats = {
    sent: 0, delivered: 0, datagramsIn: 0, datagramsOut: 0, dropped: 0, foreign: 0, duplicates: 0, nacksSent: 0,
    nacksServed: 0, retransmitted: 0, retransmittedBytes: 0, resent: 0, resentBytes: 0, ordered: 0, views: 0, violations: 0,
    skipped: 0,
  }

  /** Contiguous slots held (ordering and data). */
  have = 0
  /** Last slot delivered to the application. */
  delivered = 0
  /** Highest slot every member has, as announced by the sequencer. */
  stable = 0
  /** Slots ≤ this are freed. */
  private gcDone = 0
  /** Highest slot known to exist. */
  private knownTop = 0
  /** While flushing, `have` may not pass this (the value reported in `prepared`). */
  private frozenAt = 0
  retainedBytes = 0

  private readonly views = new Views()
  /** Slots skipped whatever this member holds for them, recorded from every commit (PROTOCOL.md §5 "Void slots"). */
  private readonly voids = new VoidSlots()
  /** Slots no survivor holds: never asked for (one closure for every NACK round). */
  private readonly isVoid = (slot: number): boolean => this.voids.has(slot)
  private readonly senders: Senders
  private readonly reassembly = new Reassembly(this.stats)
  private role: SequencerRole | null = null
  private readonly outbox: Outbox
  private readonly repair: Repair

  private lastAckSent = 0
  private lastHaveAcked = 0
  private bytesSinceAck = 0
  private lastAckAt = 0
  private leaveRequested = false
  /** The directory released this leaver: every remaining member holds all of its stream. */
  private released = false
  /**
   * How long a member may lack an ordered slot, or be silent (PROTOCOL.md §4.7): twice the directory's timeoutMs
   * (from `welcome`), so that a member that only waits on one that died (its repair source) is never taken for
   * stuck — the directory removes the dead one first.
   */
  private progressBoundMs = 4000
  /** Whether this member hears the group's multicast: judged over half the progress bound (§4.8). */
  private hearing = new MulticastHearing(this.progressBoundMs / 2)
  /** Whether the sequencer orders nothing of this member's (§4.7, 5). */
  private seqWatch = new SequencerWatch(this.progressBoundMs)

  constructor(
    readonly group: string,
    readonly memberId: string,
    readonly opts: EngineOptions,
    private readonly env: EngineEnv,
  ) {
    this.outbox = new Outbox(opts, this, this.stats)
    this.senders = new Senders(unorderedBound(opts.sendWindowBytes), this.stats)
    this.repair = new Repair(opts, this, this.stats)
  }

  get maxDatagram(): number { return this.opts.maxDatagram }
  get maxUnstableBytes(): number { return this.opts.maxUnstableBytes }
  stateOf(viewId: number): ReturnType<Views['stateOf']> { return this.views.stateOf(viewId) } // PROTOCOL.md §8.1

  get view(): { viewId: number; members: string[]; sequencer: string } | null {
    const v = this.views.current
    if (!v) return null
    return { viewId: v.viewId, members: v.members.map((m) => m.id), sequencer: this.views.nameOf(v.sequencer) ?? '' }
  }

  /**
   * The `rejoin` frame this member sends a directory it reconnected to (PROTOCOL.md §7): the latest commit it
   * received, installed or not, and the highest view id it saw. Null when it has nothing to rejoin with.
   */
  rejoinFrame(addr: string): ToDirectoryOf<'rejoin'> | null {
    const c = this.views.lastCommit
    if (!c || this.views.excludesMe || (this.lifecycle !== 'joined' && this.lifecycle !== 'leaving')) return null
    const { t: _t, ...commit } = c
    // A leave asked while the directory was away was lost with it: the rejoin asks again.
    const leaving = this.lifecycle === 'leaving'
    return { t: 'rejoin', proto: 1, group: this.group, member: this.memberId, no: this.me, addr, seenViewId: this.views.seenViewId, leaving, commit }
  }

  /** How often ACKs repeat, and the sequencer's rounds of hints: often enough that silence for the bound means something. */
  private get keepaliveMs(): number {
    return Math.min(this.opts.heartbeatMs, this.progressBoundMs / 8)
  }

  get isSequencer(): boolean {
    return this.role !== null
  }

  now(): number { return this.env.now() }

  sender(no: number): SenderState | undefined { return this.senders.get(no) }

  multicast(buf: Buffer): void {
    this.stats.datagramsOut++
    this.env.transport.toGroup(buf)
  }

  /** Highest own msgId multicast (read by the sequencer role). */
  get transmitted(): number {
    return this.outbox.transmitted
  }

  ownOrdered(msgId: number): void {
    this.outbox.ordered(msgId)
  }

  unicast(buf: Buffer, no: number): void {
    const addr = this.views.addrOf(no)
    if (addr === undefined) return
    this.stats.datagramsOut++
    this.env.transport.toMember(addr, buf)
  }

  suspect(viewId: number, no: number, reason: string): void {
    logRepair('asking the directory to exclude %d: %s', no, reason)
    this.env.toDirectory({ t: 'suspect', group: this.group, viewId, no, reason })
  }

  // ---------------------------------------------------------------- sending

  /** Accepts a message if the send window has room; false means "wait for windowOpened". */
  submit(data: Uint8Array, owned = false): boolean {
    if (this.lifecycle !== 'joined') throw new NotJoinedError()
    if (!this.outbox.submit(data, owned)) return false
    // Own messages are this member's sender state: ordered, delivered, served and freed like anyone's.
    this.senders.own(this.me, this.outbox.own)
    this.env.scheduleFlush()
    return true
  }

  private transmit(): void {
    const v = this.views.current
    if (this.viewState !== 'active' || !v) return
    if (this.outbox.transmit(v.viewId)) this.role?.dataArrived(this.me)
  }

  private resend(now: number): void {
    const v = this.views.current
    if (this.viewState !== 'active' || !v || this.role) return
    this.outbox.resend(now, v.viewId, v.sequencer)
  }

  // ---------------------------------------------------------------- receiving

  /** `via`: on the group's multicast address, or addressed to this member; `from`: its source "ip:port". */
  datagram(buf: Uint8Array, via: Via, from: string): void {
    this.stats.datagramsIn++
    if (this.lifecycle === 'left' || this.lifecycle === 'failed' || this.me === 0) return
    const d = decode(buf, this.inc)
    if (d.kind === 0) {
      if (d.reason === FOREIGN) this.stats.foreign++
      else this.stats.dropped++
      return
    }
    if (d.sender === this.me) return // our own multicast, looped back
    // Only from the socket the views give its sender; DATA also from a repair source asked (PROTOCOL.md §4.1).
    const src = this.views.noAt(from)
    if (src !== d.sender && (d.kind !== Kind.DATA || !this.repair.asked(src))) return void this.stats.foreign++
    this.hearing.heard(via, src === this.views.current?.sequencer)
    if (this.views.ended && d.kind !== Kind.NACK) return // a leaver past its last slot only serves repairs
    switch (d.kind) {
      case Kind.DATA: this.onData(d, src !== d.sender); break
      case Kind.ORDER: this.onOrder(d); break
      case Kind.ACK: this.onAck(d); break
      case Kind.NACK: this.serveNack(d); break
      case Kind.STATEREQ: case Kind.STATE: this.env.state?.(d); break
    }
    this.env.scheduleFlush()
  }

  private onData(d: Extract<Datagram, { kind: 1 }>, repair: boolean): void {
    // A view whose slots may still be in the log, and an author in one of them: a repair names the NACK's view, and
    // its author may have left or crashed since.
    if (!this.views.byId(d.viewId) || this.views.addrOf(d.sender) === undefined) {
      this.stats.foreign++
      return
    }
    // From another member than its author, DATA is a repair: only what this member can have asked for is taken.
    const entries = repair ? this.repair.askedFor(d.sender, d.entries) : d.entries
    if (repair && entries.length === 0) return void this.stats.dropped++
    // The message this member needs next of this sender: the one at the slot after `have`, or the one after `ordered`.
    const s = this.have + 1
    const st = this.senders.get(d.sender)
    const next = this.log.has(s) && this.log.sender(s) === d.sender ? this.log.msgId(s) : st ? st.ordered + 1 : 0
    this.senders.store(d.sender, entries, next)
    this.role?.dataArrived(d.sender)
  }

  private onOrder(d: Extract<Datagram, { kind: 2 }>): void {
    const v = this.views.byId(d.viewId)
    if (!v || !v.byNo.has(d.sender)) {
      this.stats.foreign++
      return
    }
    // `lo` … `hi`: what of the view's range this member still needs and can hold. The log holds slots below
    // `ceiling` only; and no sequencer assigns a slot SEQ_WINDOW past the stable slot (≤ every member's `have`) or
    // its view's start.
    const ceiling = this.gcDone + LOG_CAPACITY
    const lo = Math.max(this.have, v.start) + 1
    const hi = Math.min(this.views.endOf(v), ceiling - 1, lo - 1 + SEQ_WINDOW)
    if (!this.acceptable(d, v, lo, hi)) {
      this.stats.dropped++
      return
    }
    if (d.stable > this.stable) this.stable = Math.min(d.stable, this.have)
    // Only the slots in lo … hi are visited: at most SEQ_WINDOW, whatever the counts say.
    let slot = d.firstSlot
    for (const r of d.runs) {
      const from = Math.max(slot, lo)
      const to = Math.min(slot + r.count - 1, hi)
      for (let s = from; s <= to; s++) {
        const m = r.firstMsgId + (s - slot)
        const held = this.log.has(s)
        if (held && this.log.sender(s) === r.sender && this.log.msgId(s) === m) {
          this.stats.duplicates++
          continue
        }
        // Two assignments for a slot not passed yet: no sequencer makes them, the later stands (a forgery at a slot
        // the sequencer had not used yet came first; PROTOCOL.md §4.1).
        if (held) this.stats.violations++
        this.log.set(s, r.sender, m, v.viewId)
        if (r.sender === this.me) this.ownOrdered(m)
      }
      slot += r.count
    }
    const top = Math.min(slot - 1, hi)
    if (top > this.knownTop && top > v.start) this.knownTop = top
  }

  /**
   * Whether an ORDER of view `v` could have been sent by an honest member (PROTOCOL.md §4.1): by the view's
   * sequencer, or by a member this member asked for repair; naming no slot past `hi`; every run for a
   * member of the view, and, where it reaches past `have` (slots `lo` on), for msgIds that fit the sender's stream:
   * its msgIds are consecutive in slot order, so the message at slot s > have is at most `ordered` + (s − have), and
   * more than `ordered`; own messages at most the last one submitted.
   */
  private acceptable(d: Extract<Datagram, { kind: 2 }>, v: ViewRec, lo: number, hi: number): boolean {
    if (d.sender !== v.sequencer && !this.repair.asked(d.sender)) return false
    if (d.firstSlot > hi + 1) return false
    let slot = d.firstSlot
    for (const r of d.runs) {
      if (!v.byNo.has(r.sender)) return false
      const last = slot + r.count - 1
      if (last >= lo) {
        const st = this.senders.get(r.sender)
        const first = Math.max(slot, lo)
        const m = r.firstMsgId + (first - slot)
        if (st && st.ordered > 0 && (m <= st.ordered || m - first > st.ordered - this.have)) return false
        if (r.sender === this.me && r.firstMsgId + r.count - 1 > this.outbox.submitted) return false
      }
      slot = last + 1
    }
    return true
  }

  private onAck(d: Extract<Datagram, { kind: 3 }>): void {
    const v = this.views.current
    if (!this.role || !v || d.viewId !== v.viewId || !v.byNo.has(d.sender)) return
    // No member holds a slot this sequencer did not order, lets more become stable than it holds, or heard of a
    // stable slot above what it holds: such an ACK would free data a lagging member still needs (PROTOCOL.md §4.1).
    if (d.have >= this.role.nextSlot || d.acked > d.have || d.stable > d.have) {
      this.stats.dropped++
      return
    }
    this.role.ack(d.sender, d.have, d.acked, d.stable)
  }

  // ---------------------------------------------------------------- the hold-back queue

  /** Advances `have` over every slot now complete, then delivers what the mode allows. */
  private advance(): void {
    const limit = this.viewState === 'flushing' ? this.frozenAt : Infinity
    for (;;) {
      const next = this.views.next
      if (next && this.have === next.cut) {
        // A prepare came after that commit: `have` is frozen at what we reported; the next commit decides.
        if (this.viewState === 'flushing') break
        this.install(next)
        continue
      }
      const s = this.have + 1
      if (s > limit) break
      if (this.voids.has(s)) {
        this.log.set(s, VOID_SENDER, 0, 0)
        this.have = s
        continue
      }
      if (!this.log.has(s)) break
      const author = this.log.sender(s)
      const st = this.senders.get(author)
      const m = this.log.msgId(s)
      const len = st ? st.store.length(m) : -1
      if (len < 0) break
      // A sender's messages take consecutive slots: anything else is an assignment no sequencer made (a forged ORDER
      // that fit the bounds when it came). Asked again, the repair source sends the real one.
      if (st!.ordered > 0 && m !== st!.ordered + 1) {
        this.log.delete(s)
        this.stats.dropped++
        break
      }
      this.have = s
      // First message of this sender since we joined: what it sent before was ordered before our view.
      if (st!.ordered === 0 && m > 1) st!.store.deleteBelow(m)
      Senders.ordered(st!, m, len)
      this.retainedBytes += len
      this.bytesSinceAck += len
    }
    if (this.role) this.setStable(this.role.stableGiven(this.ackable()))
    this.deliver()
  }

  private deliver(): void {
    if (!this.env.leaseValid()) return
    let limit = this.have
    if (this.opts.delivery === 'safe' && !this.released) {
      // Only what every member has: the announced stable slot — across a view change too, since the holder of
      // the slots up to the cut may die before the others fetch them. A leaver need not ever hear a stable slot
      // past its stream's end; `released` tells it that every member installed the views since, so holds it all.
      limit = Math.min(this.have, this.stable)
    }
    while (this.delivered < limit && this.env.deliveryRoom()) {
      const b = this.views.toDeliver
      if (b && this.delivered === b.cut) {
        if (b.excluded) break // a leaver's stream ends at the cut
        this.views.delivered()
        this.delivered = b.start
        this.stats.views++
        // A sender gone from the view will never send the rest of a message it had begun.
        this.reassembly.retain((no) => b.byNo.has(no))
        this.env.deliver({
          type: 'view', group: this.group, viewId: b.viewId, members: b.members.map((m) => m.id),
          sequencer: b.byNo.get(b.sequencer)!.id, seq: b.start,
        })
        continue
      }
      const s = ++this.delivered
      const author = this.log.sender(s)
      if (author === VOID_SENDER) continue
      const store = this.senders.get(author)!.store
      const m = this.log.msgId(s)
      // The application gets its own bytes (what the store holds is also what repairs are served from), unless it
      // promised not to write into them (copyDeliveries false).
      const data = this.reassembly.push(author, store.isFirst(m), store.hasMore(m), store.payload(m), this.opts.copyDeliveries)
      if (!data) continue
      this.stats.delivered++
      this.env.deliver({ type: 'message', group: this.group, sender: this.views.nameOf(author) ?? String(author), seq: s, data })
    }
    this.gc()
  }

  private setStable(stable: number): void {
    if (stable > this.stable) {
      this.stable = stable
      this.gc()
    }
  }

  /** Frees every slot both stable and delivered: its ordering, its data, and for own messages, window room. */
  private gc(): void {
    const upTo = Math.min(this.stable, this.delivered)
    if (upTo <= this.gcDone) return
    let freedOwn = false
    for (let s = this.gcDone + 1; s <= upTo; s++) {
      if (!this.log.has(s)) continue
      const author = this.log.sender(s)
      if (author !== VIEW_SENDER && author !== VOID_SENDER) {
        const m = this.log.msgId(s)
        const len = this.senders.free(author, m)
        if (len >= 0) {
          this.retainedBytes -= len
          if (author === this.me) {
            this.outbox.freed(m, len)
            freedOwn = true
          }
        }
      }
      this.log.delete(s)
    }
    this.gcDone = upTo
    this.views.freed(upTo)
    if (freedOwn) {
      const reopened = this.outbox.reopened()
      if (this.outbox.untransmitted) this.env.scheduleFlush()
      if (this.lifecycle === 'leaving') this.maybeRequestLeave()
      if (reopened) this.env.windowOpened()
    }
  }

  // ---------------------------------------------------------------- repair (lib/repair.ts)

  /** Ask for what is missing once it has been for NACK_REORDER_MS, again every nackIntervalMs (lib/repair.ts). */
  private nack(now: number): void {
    // A leaver past its last slot takes nothing but NACKs: asking would be for nothing (PROTOCOL.md §5).
    if (this.views.ended) return this.repair.caughtUp(now)
    const { next, latest, current } = this.views
    const top = this.viewState === 'flushing' ? Math.min(this.knownTop, this.frozenAt) : Math.max(this.knownTop, next ? next.cut : 0)
    // Called after every input: when nothing is missing (the usual case), nothing is built.
    if (top <= this.have) return this.repair.caughtUp(now)
    // Named by the view the repair source is sure to know: while installing, the latest commit's (a source may have
    // joined after this member's current view, and drops NACKs of views it never saw).
    const viewId = (latest ?? current)!.viewId
    const gap = { top, end: next ? next.cut : Infinity, viewId, change: latest ?? null, sequencer: current?.sequencer }
    this.repair.nack(now, gap, this.isVoid)
  }

  /** Answers a NACK of a known member about a known view with what this member holds. */
  private serveNack(d: Extract<Datagram, { kind: 4 }>): void {
    if (!this.views.knows(d.sender) || !this.views.byId(d.viewId)) {
      this.stats.foreign++
      return
    }
    this.repair.serve(d)
    // A member that hears no multicast learns from this where the stream ends, and asks again (§4.7).
    if (this.role?.viewId === d.viewId) this.role.heartbeatTo(d.sender)
  }

  // ---------------------------------------------------------------- periodic work

  /** The periodic timer: resends, heartbeats, progress, ACKs; then a flush (which also asks for what is missing). */
  tick(): void {
    if (this.lifecycle === 'left' || this.lifecycle === 'failed' || this.views.none) return
    const now = this.env.now()
    this.resend(now)
    if (this.role && this.viewState === 'active') {
      // Every keepaliveMs at rest (within the deaf window B/2, §4.8, whatever heartbeatMs says); until then sooner: a
      // member that lost the last ORDER learns from it what to ask for, one that lost the last stable slot announced,
      // that its window is open (PROTOCOL.md §4.6).
      const quiet = this.role.atRest() ? this.keepaliveMs : this.opts.nackIntervalMs
      if (this.role.lastSentStable !== this.stable || now - this.role.lastSentAt >= quiet) {
        this.stats.datagramsOut++
        this.role.heartbeat()
      }
      if (this.env.leaseValid()) this.role.watchProgress()
    }
    // ACKs are not acknowledged: repeat ours every keepaliveMs (the last one may be lost, and silence would tell the
    // sequencer that this member cannot be heard, §4.7) — every nackIntervalMs while what it acknowledged is not yet
    // stable: a lost ACK holds stability, and so every sender's window (§4.6).
    const acked = this.ackable()
    const repeatMs = acked > this.stable ? Math.min(this.opts.nackIntervalMs, this.keepaliveMs) : this.keepaliveMs
    if (acked !== this.lastAckSent || this.have !== this.lastHaveAcked || now - this.lastAckAt >= repeatMs) this.sendAck()
    if (this.lifecycle === 'leaving') this.maybeRequestLeave()
    const v = this.views.current
    if (v && this.hearing.deaf(now)) {
      logView('view %d: the sequencer reaches this member by unicast, the group\'s multicast does not', v.viewId)
      this.env.toDirectory({ t: 'deaf', group: this.group, viewId: v.viewId })
    }
    if (v && this.viewState === 'active' && !this.role) {
      const why = this.seqWatch.check(now, this.outbox.waiting, this.outbox.seenOrdered, this.stable, Math.max(this.knownTop, this.have))
      if (why) this.suspect(v.viewId, v.sequencer, why)
    }
    this.flush()
  }

  /** After an input (a datagram, a run of submits, a tick): send, order, deliver, acknowledge — once for all it brought. */
  flush(): void {
    if (this.lifecycle === 'left' || this.lifecycle === 'failed') return
    this.transmit()
    if (this.role && this.viewState === 'active' && this.env.leaseValid() && this.role.order() > 0) this.knownTop = this.role.nextSlot - 1
    this.advance()
    // Gaps are asked for once they have waited out their reorder allowance: a wake-up then, if nothing comes sooner.
    const now = this.env.now()
    if (!this.views.none) this.nack(now)
    let due = this.repair.dueAt
    if (this.role && this.viewState === 'active') due = Math.min(due, this.role.askGaps(now, NACK_REORDER_MS, this.opts.nackIntervalMs))
    if (due < Infinity) this.env.flushAt(due)
    // Every ackEvery slots, or sooner for large messages: senders' windows open only as fast as stability moves.
    const acked = this.ackable()
    if (acked - this.lastAckSent >= this.opts.ackEvery || (acked > this.lastAckSent && this.bytesSinceAck >= this.outbox.windowBytes >> 2)) this.sendAck()
    // The sequencer announces stability as soon as it moves, not only on the next ORDER or tick.
    if (this.role && this.viewState === 'active' && this.role.lastSentStable < this.stable) {
      this.stats.datagramsOut++
      this.role.heartbeat()
    }
  }

  /**
   * What this member acknowledges: every slot it has — or, while the application's queue is full, only what it
   * delivered (consumer backpressure: stability, and so the senders, wait for a slow consumer; memory stays bounded).
   */
  private ackable(): number {
    return this.env.deliveryRoom() ? this.have : Math.min(this.have, this.delivered)
  }

  private sendAck(): void {
    const v = this.views.current
    if (!v || this.viewState !== 'active' || v.excluded) return
    const acked = this.ackable()
    this.lastAckSent = acked
    this.lastHaveAcked = this.have
    this.lastAckAt = this.env.now()
    this.bytesSinceAck = 0
    if (v.sequencer === this.me) return
    this.unicast(encodeAck({ inc: this.inc, viewId: v.viewId, sender: this.me }, this.have, acked, this.stable), v.sequencer)
  }

  // ---------------------------------------------------------------- membership (PROTOCOL.md §5)

  /** A frame from the directory, checked by DirectoryReader (lib/dirproto.ts). */
  directory(f: FromDirectory): void {
    switch (f.t) {
      case 'welcome':
        this.me = f.no
        this.progressBoundMs = 2 * f.timeoutMs
        this.hearing = new MulticastHearing(this.progressBoundMs / 2)
        this.seqWatch = new SequencerWatch(this.progressBoundMs)
        break
      case 'prepare':
        this.views.saw(f.viewId)
        this.viewState = 'flushing'
        this.frozenAt = this.have
        this.env.toDirectory({ t: 'prepared', group: this.group, viewId: f.viewId, have: this.have, low: this.gcDone })
        logView('prepare view %d: have %d', f.viewId, this.have)
        break
      case 'commit':
        this.onCommit(f)
        break
      case 'released':
        this.released = true
        this.deliver()
        this.finish('left')
        break
      case 'expelled':
        this.fail(new ExpelledError(`expelled from group ${this.group}: ${f.reason}`))
        break
      case 'error':
        this.fail(errorFromCode(f.code, f.message))
        break
    }
    this.env.scheduleFlush()
  }

  private onCommit(f: CommitFrame): void {
    // A restarted directory resends its latest commit to whoever rejoined without it; one already held is ignored.
    const views = this.views
    if (views.lastCommit && f.viewId <= views.lastCommit.viewId) return
    const inc = parseIncarnation(f.inc)! // 16 hex digits: checked by the reader
    if (views.lastCommit && (inc.hi !== this.inc.hi || inc.lo !== this.inc.lo)) {
      this.fail(new ProtocolError(ErrorCodes.PROTOCOL, `commit ${f.viewId} of group ${this.group} has another incarnation`))
      return
    }
    this.inc = inc
    views.lastCommit = f
    views.saw(f.viewId)
    const v = viewOf(f, this.me)
    if (v.excluded && this.lifecycle !== 'leaving') {
      this.fail(new ExpelledError(`view ${v.viewId} of group ${this.group} excludes this member`))
      return
    }
    if (views.none) {
      // A joiner: its stream starts at the view.
      this.have = this.delivered = this.gcDone = this.knownTop = v.cut
    }
    if (this.have > v.cut) {
      this.stats.violations++
      logView('commit %d has cut %d below have %d', v.viewId, v.cut, this.have)
    }
    // Forget every slot above the cut, and every view that starts above it. The log holds no slot at or past
    // gcDone + LOG_CAPACITY (≤ cut + LOG_CAPACITY): the loop never runs further, whatever knownTop says.
    for (let s = v.cut + 1, end = Math.min(this.knownTop, v.cut + LOG_CAPACITY); s <= end; s++) this.log.delete(s)
    this.knownTop = v.cut
    // Slots up to the cut that none of its sources holds are void (lib/voids.ts).
    this.voids.record(this.have, v.cut, v.sources)
    const before = views.add(v)
    // A number new to the group starts from nothing: no counters or data of anyone who had it before apply.
    for (const m of v.members) {
      if (before?.byNo.has(m.no) || m.no === this.me) continue
      if (this.senders.forget(m.no)) this.stats.violations++
    }
    this.outbox.forgetUnordered()
    // From this commit on, the group's datagrams travel as it says: a joiner hears the new view's first ones.
    this.env.transport.channel(f.mcast as string, v.transport)
    this.viewState = 'installing'
    this.role = null
    this.seqWatch.watch(false)
    logView('commit view %d: members %o, sequencer %d, cut %d, start %d, holder %d', v.viewId, v.members.map((m) => m.id), v.sequencer, v.cut, v.start, v.holder)
  }

  /** `have` reached the view's cut: the view takes its slot, and the member works in it. */
  private install(v: ViewRec): void {
    const current = this.views.install(v)
    this.have = v.start
    this.log.set(v.start, VIEW_SENDER, v.viewId, v.viewId)
    if (!current) return // a later view is committed already: go on to its cut
    this.viewState = 'active'
    // A leaver does not install the view that excludes it: it waits for `released` (PROTOCOL.md §5).
    if (v.excluded) return
    this.env.toDirectory({ t: 'installed', group: this.group, viewId: v.viewId })
    this.env.transport.peers(v.members.filter((m) => m.no !== this.me).map((m) => m.addr))
    this.hearing.watch(v.transport === 'multicast', v.sequencer === this.me, this.env.now())
    this.seqWatch.watch(v.sequencer !== this.me)
    this.lastAckSent = this.lastHaveAcked = this.have
    this.repair.forgetAsked()
    this.outbox.setMembers(v.members.length)
    this.outbox.rewind()
    this.senders.dropUnordered((no) => v.byNo.has(no))
    this.role = v.sequencer === this.me
      ? new SequencerRole(this, v.viewId, v.start, v.members.map((m) => m.no), {
        boundMs: this.progressBoundMs, keepaliveMs: this.keepaliveMs, probeMs: v.transport === 'multicast' ? this.progressBoundMs / 4 : 0,
      })
      : null
    if (this.lifecycle === 'joining') {
      this.lifecycle = 'joined'
      this.env.lifecycle('joined')
    }
    logView('installed view %d at slot %d%s', v.viewId, v.start, this.role ? ' (sequencer)' : '')
  }

  /** Starts a graceful leave: own messages become stable first, then the directory is asked. */
  leave(): void {
    if (this.lifecycle !== 'joined') throw new NotJoinedError()
    this.lifecycle = 'leaving'
    this.maybeRequestLeave()
  }

  private maybeRequestLeave(): void {
    if (this.leaveRequested || !this.outbox.allStable) return
    this.leaveRequested = true
    this.env.toDirectory({ t: 'leave', group: this.group })
  }

  private finish(state: 'left'): void {
    this.lifecycle = state
    this.role = null
    this.env.lifecycle(state)
  }

  /** The member cannot go on: tell the application once. */
  fail(err: SeqcastError): void {
    if (this.lifecycle === 'left' || this.lifecycle === 'failed') return
    this.lifecycle = 'failed'
    this.role = null
    this.env.lifecycle('failed', err)
  }

  /** Counters and positions, for group.stats(). */
  snapshot(): EngineStats & { have: number; deliveredSlot: number; stable: number; viewId: number; sequencer: boolean; transport: GroupTransport; retainedBytes: number; inflightBytes: number } {
    // `delivered` is the message count (EngineStats); the stream position is `deliveredSlot`, beside have and stable.
    return {
      ...this.stats, ordered: this.role?.ordered ?? this.stats.ordered, have: this.have, deliveredSlot: this.delivered,
      stable: this.stable, viewId: this.views.current?.viewId ?? 0, sequencer: this.role !== null, transport: this.views.current?.transport ?? 'multicast',
      retainedBytes: this.retainedBytes, inflightBytes: this.outbox.inflightBytes,
    }
  }
}
