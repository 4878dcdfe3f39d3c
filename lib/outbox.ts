/**
 * This member's own messages (PROTOCOL.md §4.2): fragmenting, the send window, transmission in packed DATA
 * datagrams, and resend with backoff. Pure: it emits datagrams through `OutboxHost` and knows no sockets or timers.
 *
 * Own msgIds 1 … nextMsgId-1 were accepted; ≤ `transmitted` were multicast; ≤ `announced` were seen ordered; ≤ the
 * highest freed one (`stableOwn`) are stable and gone. The engine reports ordering (`ordered`), stability (`freed`)
 * and view changes (`forgetUnordered`, `rewind`); everything else about own messages is decided here.
 */
import { fragmentRoom, packData, type Incarnation } from './wire.js'
import { MAX_CAPACITY, MessageStore } from './msgstore.js'
import type { SenderState } from './sequencer.js'
import type { EngineOptions } from './options.js'
import { MessageTooLargeError } from './errors.js'
import { logger } from './log.js'

const logRepair = logger('repair')

/** Resend bursts, in datagrams: doubled while the sequencer keeps up (each resend ordered), halved when not. */
export const RESEND_BURST_MIN = 4
export const RESEND_BURST_MAX = 256
/** The least a resend waits for an own message to be ordered: the timer looks every tick anyway. */
export const RESEND_MIN_MS = 10

/** What the outbox needs from the member it sends for. */
export interface OutboxHost {
  readonly me: number
  readonly inc: Incarnation
  now(): number
  multicast(buf: Buffer): void
  unicast(buf: Buffer, no: number): void
}

export type OutboxOptions = Pick<EngineOptions, 'maxDatagram' | 'maxMessage' | 'sendWindow' | 'sendWindowBytes' | 'groupWindowBytes' | 'resendMs'>

export class Outbox {
  /** This member as a sender: the engine files it under its own number, and moves `ordered` as `have` passes it. */
  readonly own: SenderState = { store: new MessageStore(), ordered: 0, orderedCost: 0 }
  /** Highest own msgId multicast (read by the sequencer role: it orders only what the others can have). */
  transmitted = 0
  /** Bytes of own messages transmitted but not yet stable: what transmit() may have in flight. */
  inflightBytes = 0
  /** The byte window: this sender's share of the group's (`setMembers`). */
  windowBytes: number
  private nextMsgId = 1
  /** Highest own msgId seen in an accepted ORDER entry. */
  private announced = 0
  private stableOwn = 0
  private unstableBytes = 0
  /** A submit was refused since the window last reopened: the application waits to hear that it has room. */
  private windowWasFull = false
  private lastProgressAt = 0
  private resendWait: number
  private resendBurst = RESEND_BURST_MIN
  private resendOutstanding = false
  /**
   * How long own messages take to be ordered: one transmission timed at a time (`probe`, dropped if anything is
   * resent meanwhile: an answer to a resend says nothing of the first send — Karn's rule), smoothed as TCP's
   * retransmission timer is (RFC 6298): srtt, and rttvar its variation. -1: no sample yet.
   */
  private probe: { msgId: number; at: number } | null = null
  private srtt = -1
  private rttvar = 0
  private readonly emit = (buf: Buffer): void => this.host.multicast(buf)

  constructor(
    private readonly opts: OutboxOptions,
    private readonly host: OutboxHost,
    private readonly counters: { sent: number; resent: number; resentBytes: number } = { sent: 0, resent: 0, resentBytes: 0 },
  ) {
    this.resendWait = opts.resendMs
    this.windowBytes = Math.min(opts.sendWindowBytes, opts.groupWindowBytes)
  }

  /**
   * The installed view has `n` members: every one of them may send, so each takes 1/n of `groupWindowBytes` — what
   * the group has in flight then fits one receiver's socket buffer, whatever n — but at least one datagram and at
   * most `sendWindowBytes`. A smaller share takes effect as stability frees what is out.
   */
  setMembers(n: number): void {
    const share = Math.floor(this.opts.groupWindowBytes / Math.max(1, n))
    this.windowBytes = Math.min(this.opts.sendWindowBytes, Math.max(this.opts.maxDatagram, share))
  }

  /** The highest own msgId accepted: no sequencer orders one above it. */
  get submitted(): number {
    return this.nextMsgId - 1
  }

  /** Some own message was submitted but not yet multicast. */
  get untransmitted(): boolean {
    return this.transmitted < this.nextMsgId - 1
  }

  /** The highest own msgId seen in an accepted ORDER entry (PROTOCOL.md §4.7, 5: a change is progress). */
  get seenOrdered(): number {
    return this.announced
  }

  /** Some own message was multicast and not yet seen ordered. */
  get waiting(): boolean {
    return this.announced < this.transmitted
  }

  /** Every own message submitted is stable (a leave may be asked). */
  get allStable(): boolean {
    return this.stableOwn >= this.nextMsgId - 1
  }

  /**
   * Accepts a message if the send window has room: stores it as fragments of at most one datagram's payload, each
   * its own msgId. False means "wait": `freed` then reports the window open again. `owned`: `data` is a copy
   * nobody else holds, stored without another.
   */
  submit(data: Uint8Array, owned = false): boolean {
    if (data.length > this.opts.maxMessage) throw new MessageTooLargeError(data.length, this.opts.maxMessage)
    const room = fragmentRoom(this.opts.maxDatagram)
    const frags = Math.max(1, Math.ceil(data.length / room))
    // Every fragment is stored now, until stable: the store must hold them all (parseJoinOptions ensures it).
    if (frags > MAX_CAPACITY) throw new MessageTooLargeError(data.length, MAX_CAPACITY * room, `what a sender holds with maxDatagram ${this.opts.maxDatagram}`)
    const outstanding = this.nextMsgId - 1 - this.stableOwn
    if (outstanding > 0 && (outstanding + frags > this.opts.sendWindow || this.unstableBytes + data.length > this.windowBytes)) {
      this.windowWasFull = true
      return false
    }
    // The application may reuse its buffer at once (`owned`: a copy already made for this message, kept as is).
    const copy = owned ? Buffer.from(data.buffer, data.byteOffset, data.length) : Buffer.from(data)
    for (let i = 0; i < frags; i++) {
      const payload = frags === 1 ? copy : copy.subarray(i * room, Math.min(copy.length, (i + 1) * room))
      const msgId = this.nextMsgId++
      this.own.store.set(msgId, i === 0, i < frags - 1, payload)
    }
    this.unstableBytes += data.length
    this.counters.sent++
    return true
  }

  /**
   * Multicasts own messages not yet sent, packed into as few datagrams as possible — at most `windowBytes` of
   * them not yet stable, so a 10 MB message goes out as the receivers keep up instead of in one burst that
   * overruns every receiver's socket buffer. (Smaller messages are held to that already when submitted.)
   * False when nothing was waiting.
   */
  transmit(viewId: number): boolean {
    const last = this.nextMsgId - 1
    if (this.transmitted >= last) return false
    const store = this.own.store
    if (this.announced >= this.transmitted) this.lastProgressAt = this.host.now()
    const first = this.transmitted + 1
    let m = first
    for (; m <= last; m++) {
      const len = store.length(m)
      if (this.inflightBytes > 0 && this.inflightBytes + len > this.windowBytes) break
      this.inflightBytes += len
    }
    if (m > first) packData({ inc: this.host.inc, viewId, sender: this.host.me }, this.opts.maxDatagram, store, first, m - first, this.emit)
    if (m > first && !this.probe) this.probe = { msgId: m - 1, at: this.host.now() }
    this.transmitted = m - 1
    return true
  }

  /** An ORDER (or this member's own sequencer role) gave own message `msgId` a slot. */
  ordered(msgId: number): void {
    if (msgId > this.announced) {
      this.announced = msgId
      const now = this.host.now()
      this.lastProgressAt = now
      if (this.probe && msgId >= this.probe.msgId) {
        this.sample(now - this.probe.at)
        this.probe = null
      }
      this.resendWait = this.baseWait()
      // A resend got ordered: the next may be larger. Caught up: back to the smallest burst.
      if (this.announced >= this.transmitted) this.resendBurst = RESEND_BURST_MIN
      else if (this.resendOutstanding) this.resendBurst = Math.min(2 * this.resendBurst, RESEND_BURST_MAX)
      this.resendOutstanding = false
    }
  }

  private sample(ms: number): void {
    if (this.srtt < 0) {
      this.srtt = ms
      this.rttvar = ms / 2
    } else {
      this.rttvar += (Math.abs(this.srtt - ms) - this.rttvar) / 4
      this.srtt += (ms - this.srtt) / 8
    }
  }

  /**
   * How long to wait, from the last progress, before own messages not seen ordered are sent again: the time they
   * take to be ordered and four times its variation, between RESEND_MIN_MS and `resendMs` (`resendMs` until the
   * first message was timed). A lost last DATA, which nothing after it shows to the sequencer, costs that.
   */
  private baseWait(): number {
    if (this.srtt < 0) return this.opts.resendMs
    return Math.min(this.opts.resendMs, Math.max(RESEND_MIN_MS, this.srtt + 4 * this.rttvar))
  }

  /**
   * Own messages sent but not seen ordered for a while: send the head of them again to the sequencer. A bounded
   * burst (the sequencer orders FIFO, so the first missing message is what blocks the rest) that doubles while
   * resends get ordered and halves when they do not, and a wait that doubles while nothing progresses: an
   * overloaded sequencer is not buried under retransmissions, a large loss is not repaired 4 datagrams at a time.
   */
  resend(now: number, viewId: number, sequencer: number): void {
    if (this.announced >= this.transmitted || now - this.lastProgressAt < this.resendWait) return
    this.lastProgressAt = now
    this.probe = null
    this.resendWait = Math.min(this.resendWait * 2, 16 * this.opts.resendMs)
    const store = this.own.store
    // The previous resend was not ordered within the wait: this one is smaller.
    if (this.resendOutstanding) this.resendBurst = Math.max(RESEND_BURST_MIN, this.resendBurst >> 1)
    this.resendOutstanding = true
    let n = 0
    for (let bytes = 0, m = this.announced + 1; m <= this.transmitted && bytes < this.resendBurst * this.opts.maxDatagram; m++, n++) {
      bytes += Math.max(0, store.length(m))
    }
    const header = { inc: this.host.inc, viewId, sender: this.host.me }
    n = packData(header, this.opts.maxDatagram, store, this.announced + 1, Math.max(1, n), (buf) => {
      this.counters.resentBytes += buf.length
      this.host.unicast(buf, sequencer)
    })
    this.counters.resent += n
    logRepair('resend %d own messages from msgId %d to sequencer %d', n, this.announced + 1, sequencer)
  }

  /** Own message `msgId`, of `len` bytes, became stable and was freed (the engine frees them in msgId order). */
  freed(msgId: number, len: number): void {
    this.stableOwn = msgId
    this.unstableBytes -= len
    this.inflightBytes -= len
  }

  /** After a round of `freed`: true once if a submit was refused since the window last reopened. */
  reopened(): boolean {
    if (this.inflightBytes < 0) this.inflightBytes = 0
    if (!this.windowWasFull) return false
    this.windowWasFull = false
    return true
  }

  /** A commit arrived: ORDER entries above its cut are forgotten, so only what the stream holds counts as announced. */
  forgetUnordered(): void {
    this.announced = Math.min(this.announced, this.own.ordered)
  }

  /** A view is installed: own messages not ordered by the cut go out again, to the new sequencer, from the first. */
  rewind(): void {
    this.transmitted = this.announced = this.own.ordered
    this.probe = null
    this.inflightBytes = 0
    for (let m = this.stableOwn + 1; m <= this.transmitted; m++) this.inflightBytes += Math.max(0, this.own.store.length(m))
    this.resendBurst = RESEND_BURST_MIN
    this.resendOutstanding = false
  }
}
