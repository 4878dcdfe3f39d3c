/**
 * Repair (PROTOCOL.md §4.6): what to ask for and whom to ask when slots or data are missing, and answering such
 * requests from what this member holds. Pure: it reads the member's log and stores through `RepairHost` and sends
 * by unicast through it; the engine decides when a member may ask (its `have`, the views it knows).
 */
import { encodeNack, encodeOrder, nackItemsPerDatagram, packData, runsPerDatagram, type DataRange, type Datagram, type Incarnation, type Run, type SlotRange } from './wire.js'
import { VOID_SENDER, type SlotLog } from './slotlog.js'
import type { SenderState } from './sequencer.js'
import type { EngineOptions } from './options.js'
import { logger } from './log.js'

const logRepair = logger('repair')

/**
 * How far past `have` one NACK round looks. So an honest NACK asks for at most this many slots and messages in all,
 * and a NACK is answered for at most this many (the rest of a forged one is ignored).
 */
export const NACK_SCAN = 4096

/** The most payload bytes one NACK is answered with: 1 MiB, or two send windows if more (PROTOCOL.md §2.5). */
export function nackReplyBytes(sendWindowBytes: number): number {
  return Math.max(1 << 20, 2 * sendWindowBytes)
}

/** What repair needs from the member it repairs for. */
export interface RepairHost {
  readonly me: number
  readonly inc: Incarnation
  readonly log: SlotLog
  /** Contiguous slots held (ordering and data). */
  readonly have: number
  readonly stable: number
  sender(no: number): SenderState | undefined
  unicast(buf: Buffer, no: number): void
}

/** Who held what in a view change being installed: member `no` holds slots (low, have]. */
export interface Sources {
  holder: number
  sources: ReadonlyArray<{ no: number; low: number; have: number }>
}

/** Where a blocked member stands, as the engine sees it. */
export interface Gap {
  /** The highest slot worth asking for. */
  top: number
  /** No slot past this is asked for in this round: the cut of the next view to install (or Infinity). */
  end: number
  /** The view the NACK names: one the repair source is sure to know. */
  viewId: number
  /** While a view change is being installed, the latest commit's sources; null otherwise. */
  change: Sources | null
  /** The installed view's sequencer, asked when no view change is under way. */
  sequencer: number | undefined
}

/**
 * Who to ask for a slot: while a view change is being installed, a participant of the latest flush whose
 * reported range covers it — the holder first, then each round (`turn`) the next one (a source may receive
 * nothing, PROTOCOL.md §4.7); otherwise the sequencer.
 */
export function repairSource(change: Sources | null, sequencer: number | undefined, turn: number): (slot: number) => number | undefined {
  if (!change) return () => sequencer
  const { holder } = change
  const sources = [...change.sources].sort((a, b) => Number(b.no === holder) - Number(a.no === holder))
  return (slot) => {
    let covering = 0
    for (const r of sources) if (r.low < slot && slot <= r.have) covering++
    if (covering === 0) return holder
    let k = turn % covering
    for (const r of sources) if (r.low < slot && slot <= r.have && k-- === 0) return r.no
    return holder
  }
}

export class Repair {
  private lastTickHave = -1
  private lastNackAt = -Infinity
  /** NACK rounds sent: while installing, each asks the next source that covers a slot (one may hear nothing). */
  private turn = 0
  /** Members asked since the current view was installed: an ORDER from one of them is a repair (§4.1). */
  private readonly askedOf = new Set<number>()

  constructor(
    private readonly opts: Pick<EngineOptions, 'maxDatagram' | 'nackIntervalMs' | 'sendWindowBytes'>,
    private readonly host: RepairHost,
    private readonly counters: { nacksSent: number; nacksServed: number; retransmitted: number; retransmittedBytes: number },
  ) {}

  /**
   * Called every tick: if `have` has not moved since the last one, ask for what is missing up to the gap's end —
   * each slot's ordering, or its data when the ordering is known — one NACK per repair source. `skip` names slots
   * not to ask for (void slots).
   */
  nack(now: number, gap: Gap, skip: (slot: number) => boolean): void {
    const h = this.host
    const blocked = h.have === this.lastTickHave
    this.lastTickHave = h.have
    if (!blocked || h.have >= gap.top || now - this.lastNackAt < this.opts.nackIntervalMs) return
    const source = repairSource(gap.change, gap.sequencer, this.turn)
    const requests = new Map<number, { slots: SlotRange[]; data: DataRange[] }>()
    const scanTo = Math.min(gap.top, h.have + NACK_SCAN, gap.end)
    for (let s = h.have + 1; s <= scanTo; s++) {
      const from = source(s)
      if (from === undefined || from === h.me || skip(s)) continue
      let req = requests.get(from)
      if (!req) requests.set(from, (req = { slots: [], data: [] }))
      if (!h.log.has(s)) {
        const last = req.slots[req.slots.length - 1]
        if (last && last.firstSlot + last.n === s && last.n < 0xffff) last.n++
        else req.slots.push({ firstSlot: s, n: 1 })
        continue
      }
      const author = h.log.sender(s)
      const m = h.log.msgId(s)
      if (h.sender(author)?.store.has(m)) continue
      const last = req.data[req.data.length - 1]
      if (last && last.sender === author && last.firstMsgId + last.n === m && last.n < 0xffff) last.n++
      else req.data.push({ sender: author, firstMsgId: m, n: 1 })
    }
    const per = nackItemsPerDatagram(this.opts.maxDatagram)
    const header = { inc: h.inc, viewId: gap.viewId, sender: h.me }
    for (const [to, { slots, data }] of requests) {
      if (slots.length + data.length === 0) continue
      this.lastNackAt = now
      this.askedOf.add(to)
      h.unicast(encodeNack(header, slots.slice(0, per), data.slice(0, Math.max(0, per - slots.length))), to)
      this.counters.nacksSent++
      logRepair('nack to %d: %d slot ranges, %d data ranges (have %d, top %d)', to, slots.length, data.length, h.have, gap.top)
    }
    this.turn++
  }

  /** Whether member `no` was sent a NACK since the current view was installed. */
  asked(no: number): boolean {
    return this.askedOf.has(no)
  }

  /** A view is installed: the repairs asked before it are over. */
  forgetAsked(): void {
    this.askedOf.clear()
  }

  /**
   * Answers a NACK (already checked to come from a known member about a known view) with what this member holds:
   * ORDER per view for slots, DATA — named by `viewId`, the installed view, if any — for messages. At most
   * NACK_SCAN slots and messages are looked at, slots only where the log can hold them, and at most
   * `nackReplyBytes` of payload sent: the cost of one NACK is bounded whatever its ranges say.
   */
  serve(d: Extract<Datagram, { kind: 4 }>, viewId: number | undefined): void {
    this.counters.nacksServed++
    let budget = NACK_SCAN
    const oldest = this.host.have - this.host.log.capacity + 1
    for (const r of d.slots) {
      if (budget <= 0) break
      const first = Math.max(r.firstSlot, oldest)
      const last = Math.min(r.firstSlot + r.n - 1, this.host.have, first + budget - 1)
      if (last < first) continue
      budget -= last - first + 1
      this.sendSlots(first, last, d.sender)
    }
    if (viewId === undefined) return
    let bytes = nackReplyBytes(this.opts.sendWindowBytes)
    for (const r of d.data) {
      if (budget <= 0 || bytes <= 0) break
      const s = this.host.sender(r.sender)
      if (!s) continue
      // How many of the asked messages fit the budgets (a message not held costs a look only).
      let n = 0
      for (const end = Math.min(r.n, budget); n < end && bytes > 0; n++) bytes -= Math.max(0, s.store.length(r.firstMsgId + n))
      budget -= n
      const header = { inc: this.host.inc, viewId, sender: r.sender }
      this.counters.retransmitted += packData(header, this.opts.maxDatagram, s.store, r.firstMsgId, n, (buf) => this.answer(buf, d.sender))
    }
  }

  /** One datagram of a NACK's answer, counted in bytes: what repair costs the network, beside what it repaired. */
  private answer(buf: Buffer, to: number): void {
    this.counters.retransmittedBytes += buf.length
    this.host.unicast(buf, to)
  }

  /** Unicasts the ordering of slots first … last held here, as ORDER runs, one view at a time. */
  private sendSlots(first: number, last: number, to: number): void {
    const h = this.host
    let runs: Run[] = []
    let runFirst = 0
    let runView = -1
    const flush = (): void => {
      if (runs.length === 0) return
      const per = runsPerDatagram(this.opts.maxDatagram)
      const header = { inc: h.inc, viewId: runView, sender: h.me }
      let slot = runFirst
      for (let i = 0; i < runs.length; i += per) {
        const chunk = runs.slice(i, i + per)
        this.answer(encodeOrder(header, slot, h.stable, chunk), to)
        for (const r of chunk) slot += r.count
      }
      this.counters.retransmitted += runs.reduce((a, r) => a + r.count, 0)
      runs = []
    }
    for (let s = first; s <= last; s++) {
      if (!h.log.has(s) || h.log.isView(s) || h.log.sender(s) === VOID_SENDER) {
        flush()
        continue
      }
      const v = h.log.viewId(s)
      const author = h.log.sender(s)
      const m = h.log.msgId(s)
      const r = runs[runs.length - 1]
      if (v !== runView) flush()
      if (runs.length === 0) {
        runFirst = s
        runView = v
        runs.push({ sender: author, firstMsgId: m, count: 1 })
      } else if (r && r.sender === author && r.firstMsgId + r.count === m && r.count < 0xffff) {
        r.count++
      } else {
        runs.push({ sender: author, firstMsgId: m, count: 1 })
      }
    }
    flush()
  }
}
