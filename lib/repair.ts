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

/**
 * How long a missing slot or message must stay missing before it is asked for: datagrams on two paths (a DATA from
 * its sender, its ORDER through the sequencer) or reordered on one may arrive a little apart. On a LAN that is far
 * below a millisecond; a gap asked for too early costs one duplicate, never a second NACK within nackIntervalMs.
 */
export const NACK_REORDER_MS = 2

/**
 * Slots asked for together, and when: the slots above the previous band's `top` up to this one's. Asked again only
 * once its answer could have come — three round trips of the answers so far, at least NACK_REORDER_MS, at most
 * nackIntervalMs — with the next repair source in turn while installing.
 */
interface Band {
  top: number
  /** When it was last looked at; when first asked for (a round trip is measured from there). */
  at: number
  askedAt: number
  tries: number
}

/**
 * After this many askings of a band, a slot whose ordering is held but whose data still has not come is asked for
 * with its ordering too: the ordering held may be a forgery (spoofed from the sequencer's address, or served by a
 * lying repair source) naming a message nobody has, and asking for the data alone would never end; the real
 * assignment replaces it (PROTOCOL.md §4.1, §4.6). An honest loss costs one ORDER more.
 */
export const REASK_ORDER_AFTER = 3

/** Adds slot `s` to a NACK's slot items, extending the last range when `s` follows it. */
function askSlot(slots: SlotRange[], s: number): void {
  const last = slots[slots.length - 1]
  if (last && last.firstSlot + last.n === s && last.n < 0xffff) last.n++
  else slots.push({ firstSlot: s, n: 1 })
}

export class Repair {
  /** Slots asked for, in bands from `have` up; a band below `have` is over. */
  private bands: Band[] = []
  /** Slots up to `top`, known to exist since `at`, not asked for yet: asked once NACK_REORDER_MS has passed. */
  private pending: { top: number; at: number } | null = null
  /** Members asked since the current view was installed: an ORDER from one of them is a repair (§4.1). */
  private readonly askedOf = new Set<number>()
  /**
   * From a NACK to the end of what it asked for, smoothed over the bands asked once (as TCP's SRTT, RFC 6298):
   * a repeat waits three of it, so it goes out about when the answer is overdue, not a fixed nackIntervalMs later.
   */
  private srtt: number

  constructor(
    private readonly opts: Pick<EngineOptions, 'maxDatagram' | 'nackIntervalMs' | 'sendWindowBytes'>,
    private readonly host: RepairHost,
    private readonly counters: { nacksSent: number; nacksServed: number; retransmitted: number; retransmittedBytes: number },
  ) {
    this.srtt = opts.nackIntervalMs / 3
  }

  /** How long a NACK's answer may take before what it asked for is asked again. */
  get repeatMs(): number {
    return Math.min(this.opts.nackIntervalMs, Math.max(NACK_REORDER_MS, 3 * this.srtt))
  }

  /**
   * Called at the end of every event-loop turn and every tick: a slot up to the gap's top that is still missing
   * NACK_REORDER_MS after it was first known to exist is asked for — its ordering, or its data when the ordering is
   * known — one NACK per repair source; one already asked, again each `repeatMs` while it is missing. `skip`
   * names slots not to ask for (void slots).
   */
  nack(now: number, gap: Gap, skip: (slot: number) => boolean): void {
    const h = this.host
    this.settle(now)
    const scanTo = Math.min(gap.top, h.have + NACK_SCAN, gap.end)
    if (scanTo <= h.have) return this.caughtUp(now)
    const askedTop = Math.max(h.have, this.bands.length > 0 ? this.bands[this.bands.length - 1]!.top : 0)
    if (this.pending && this.pending.top <= askedTop) this.pending = null
    // Slots known since now: they wait their reorder allowance (one pending range at a time; later ones after it).
    if (!this.pending && scanTo > askedTop) this.pending = { top: scanTo, at: now }
    const interval = this.repeatMs
    const fresh = this.pending && now >= this.dueAt ? this.pending : null
    if (!fresh && !this.bands.some((b) => now - b.at >= interval)) return
    if (fresh) {
      this.bands.push({ top: Math.min(fresh.top, scanTo), at: -Infinity, askedAt: now, tries: 0 })
      this.pending = null
    }
    const requests = new Map<number, { slots: SlotRange[]; data: DataRange[] }>()
    let lo = h.have
    for (const band of this.bands) {
      const from = lo + 1
      lo = band.top
      if (now - band.at < interval) continue
      // A band with nothing missing (what came late) is looked at again only when it would be repeated.
      if (this.collect(requests, from, Math.min(band.top, scanTo), repairSource(gap.change, gap.sequencer, band.tries), skip, band.tries >= REASK_ORDER_AFTER) > 0) {
        if (band.tries === 0) band.askedAt = now
        band.tries++
      }
      band.at = now
    }
    const per = nackItemsPerDatagram(this.opts.maxDatagram)
    const header = { inc: h.inc, viewId: gap.viewId, sender: h.me }
    for (const [to, { slots, data }] of requests) {
      if (slots.length + data.length === 0) continue
      this.askedOf.add(to)
      h.unicast(encodeNack(header, slots.slice(0, per), data.slice(0, Math.max(0, per - slots.length))), to)
      this.counters.nacksSent++
      logRepair('nack to %d: %d slot ranges, %d data ranges (have %d, top %d)', to, slots.length, data.length, h.have, gap.top)
    }
  }

  /** Nothing is missing up to the highest slot known (or worth asking for): no band, nothing pending. */
  caughtUp(now: number): void {
    this.settle(now)
    this.bands.length = 0
    this.pending = null
  }

  /** Drops the bands `have` has passed; one asked once and now complete is a round trip of an answer. */
  private settle(now: number): void {
    const h = this.host
    while (this.bands.length > 0 && this.bands[0]!.top <= h.have) {
      const done = this.bands.shift()!
      // An upper bound: an earlier band may have held `have`.
      if (done.tries === 1) this.srtt += (now - done.askedAt - this.srtt) / 8
    }
  }

  /** When slots known but not asked for yet will have waited out NACK_REORDER_MS (Infinity: none wait). */
  get dueAt(): number {
    return this.pending ? this.pending.at + NACK_REORDER_MS : Infinity
  }

  /**
   * Adds what is missing at slots first … last to the NACKs, by repair source; returns how many items it added.
   * `reorder`: a slot whose data is still missing is asked for with its ordering too (see REASK_ORDER_AFTER).
   */
  private collect(requests: Map<number, { slots: SlotRange[]; data: DataRange[] }>, first: number, last: number, source: (slot: number) => number | undefined, skip: (slot: number) => boolean, reorder: boolean): number {
    const h = this.host
    let items = 0
    for (let s = first; s <= last; s++) {
      const from = source(s)
      if (from === undefined || from === h.me || skip(s)) continue
      let req = requests.get(from)
      if (!req) requests.set(from, (req = { slots: [], data: [] }))
      if (!h.log.has(s)) {
        items++
        askSlot(req.slots, s)
        continue
      }
      const author = h.log.sender(s)
      const m = h.log.msgId(s)
      if (h.sender(author)?.store.has(m)) continue
      items++
      if (reorder) askSlot(req.slots, s)
      const last = req.data[req.data.length - 1]
      if (last && last.sender === author && last.firstMsgId + last.n === m && last.n < 0xffff) last.n++
      else req.data.push({ sender: author, firstMsgId: m, n: 1 })
    }
    return items
  }

  /**
   * Of a repair's DATA entries (sent by another member than their `author`), those this member can have asked for:
   * messages its log names at a slot in (have, have + NACK_SCAN] (PROTOCOL.md §4.1). A repair source puts nothing
   * else in anyone's name. The slots asked for are the lowest missing ones: the scan ends when every entry is found.
   */
  askedFor<E extends { msgId: number }>(author: number, entries: E[]): E[] {
    const log = this.host.log
    const wanted = new Set(entries.map((e) => e.msgId))
    const named = new Set<number>()
    for (let s = this.host.have + 1, end = this.host.have + NACK_SCAN; s <= end && named.size < wanted.size; s++) {
      if (log.has(s) && log.sender(s) === author && wanted.has(log.msgId(s))) named.add(log.msgId(s))
    }
    return entries.filter((e) => named.has(e.msgId))
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
   * ORDER per view for slots, DATA for messages — named by the NACK's view, which both sides know (this member's
   * own may be one the asker has not heard of yet, or none while it installs its first). At most NACK_SCAN slots
   * and messages are looked at, slots only where the log can hold them, and at most `nackReplyBytes` of payload
   * sent: the cost of one NACK is bounded whatever its ranges say.
   */
  serve(d: Extract<Datagram, { kind: 4 }>): void {
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
    let bytes = nackReplyBytes(this.opts.sendWindowBytes)
    for (const r of d.data) {
      if (budget <= 0 || bytes <= 0) break
      const s = this.host.sender(r.sender)
      if (!s) continue
      // How many of the asked messages fit the budgets (a message not held costs a look only).
      let n = 0
      for (const end = Math.min(r.n, budget); n < end && bytes > 0; n++) bytes -= Math.max(0, s.store.length(r.firstMsgId + n))
      budget -= n
      const header = { inc: this.host.inc, viewId: d.viewId, sender: r.sender }
      const sent = packData(header, this.opts.maxDatagram, s.store, r.firstMsgId, n, (buf) => this.answer(buf, d.sender))
      this.counters.retransmitted += sent
      logRepair('serve %d: %d of %d messages of %d from msgId %d', d.sender, sent, r.n, r.sender, r.firstMsgId)
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
