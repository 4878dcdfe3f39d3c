/**
 * State transfer's data path (PROTOCOL.md §8.3), free of sockets and timers: the donor answers STATEREQ with STATE
 * datagrams from the snapshots it took; the joiner pulls one snapshot and hands it, in order, to the application's
 * `restore`. The joiner's requests are both the flow control and the retransmission: the donor keeps no timer but
 * its forgetting, and sends only what is asked.
 *
 * Byte positions: the joiner holds every byte below `acked`; it handed every byte below `consumed` to `restore`;
 * it asked for everything below `asked`. consumed ≤ acked ≤ asked ≤ consumed + STATE_WINDOW: what it holds and
 * what it may receive are bounded by the window, whatever the donor sends. The donor holds what it read of a
 * snapshot from the lowest `acked` of its joiners on.
 */
import { StateError } from './errors.js'
import { StateStream } from './statestream.js'
import {
  encodeState, encodeStateNone, encodeStateReq, MAX_U48, STATE_OVERHEAD, STATE_WINDOW, type Header, type Incarnation,
  type StateData, type StateReq,
} from './wire.js'

export { STATE_WINDOW }

/** A joiner that received nothing new for this long asks again for what it lacks (also after NONE). */
export const STATE_RETRY_MS = 50
/** A joiner asks for more once `restore` made this much room: a few large requests, not one per chunk consumed. */
const ASK_STEP = STATE_WINDOW / 4
/** Requests one retry sends at most, one per missing range, lowest first. */
export const RETRY_ASKS = 64
/**
 * Pieces a joiner holds above a gap, at most (a 4 MiB window of 512-byte datagrams is about 8 700). Bytes that
 * would make one more are dropped, and asked again once the gap filled; the bytes at the gap always get in.
 */
export const MAX_AHEAD = 8192

export interface StateOptions {
  /** The largest datagram this member sends: a STATE carries at most maxDatagram − 31 bytes of state. */
  maxDatagram: number
  /** How long a donor keeps a snapshot or a joiner nobody hears from; how long a joiner tries before it fails. */
  stateTimeoutMs: number
}

export interface StateDonorEnv {
  readonly me: number
  readonly inc: Incarnation
  now(): number
  /** Unicast to member `to` at its view address. Must not throw (a send error is counted by the transport). */
  send(to: number, buf: Buffer): void
  /** The application's snapshot iterable threw or yielded something other than bytes: its joiners got NONE. */
  snapshotFailed?(viewId: number, err: unknown): void
}

export interface StateJoinerEnv {
  readonly me: number
  readonly inc: Incarnation
  now(): number
  /** Unicast to the donor at its view address. Must not throw. */
  send(to: number, buf: Buffer): void
  /** Every byte of the state was handed to `restore` (the "done" request went to the donor). */
  done(): void
  /** No state within `stateTimeoutMs` of the first start, or `restore` stopped reading before the end. */
  failed(err: StateError): void
}

export type Snapshot = Uint8Array | AsyncIterable<Uint8Array>

/** A joiner of one snapshot, as the donor sees it. */
interface Peer {
  /** The highest `acked` it sent (never above what the donor read). */
  acked: number
  heardAt: number
  /** What it asked for beyond what was read, not served yet: [wantFrom, wantTo); empty when equal. */
  wantFrom: number
  wantTo: number
}

interface Held {
  readonly viewId: number
  readonly peers: Map<number, Peer>
  /** Chunks read and not yet acked by every joiner, with their offsets; `head` is the first still held. */
  chunks: Uint8Array[]
  at: number[]
  head: number
  /** Bytes read so far; the size once the source ended (-1 before). */
  end: number
  size: number
  /** The application's iterator, while it has more to give; null for bytes, or once it ended. */
  it: AsyncIterator<Uint8Array> | null
  reading: boolean
  gone: boolean
}

/**
 * The donor's side: the snapshots this member took, by state point (view id), each with the joiners it is for.
 * A snapshot given as bytes is kept by reference (no copy); one given as an async iterable is read as joiners
 * ask, while the donor holds less than STATE_WINDOW beyond the lowest `acked` of its joiners (a fast joiner
 * waits for a slow one). Chunks read are kept by reference until every joiner has them: the iterable must
 * yield a fresh buffer each time (as Node's streams do), and one chunk larger than the window is held whole.
 */
export class StateDonor {
  readonly counters = { requests: 0, none: 0, dropped: 0, bytesSent: 0 }
  private readonly held = new Map<number, Held>()

  constructor(private readonly opts: StateOptions, private readonly env: StateDonorEnv) {}

  /**
   * The application's snapshot at view `viewId`, for `joiners` (the members marked "needs" in it). False when a
   * snapshot of that view is held already (the new one is closed unread).
   */
  take(viewId: number, snapshot: Snapshot, joiners: readonly number[]): boolean {
    const now = this.env.now()
    if (this.held.has(viewId)) {
      if (!(snapshot instanceof Uint8Array)) closeIterable(snapshot)
      return false
    }
    const h: Held = {
      viewId, peers: new Map(), chunks: [], at: [], head: 0, end: 0, size: -1, it: null, reading: false, gone: false,
    }
    for (const no of joiners) h.peers.set(no, { acked: 0, heardAt: now, wantFrom: 0, wantTo: 0 })
    this.held.set(viewId, h)
    if (snapshot instanceof Uint8Array) {
      if (snapshot.length > 0) this.append(h, snapshot)
      h.size = snapshot.length
    } else {
      try {
        h.it = snapshot[Symbol.asyncIterator]()
      } catch (err) {
        this.fail(h, err)
        return true
      }
    }
    if (h.peers.size === 0) this.forget(h)
    return true
  }

  /** Snapshots held (for stats and tests). */
  get snapshots(): number {
    return this.held.size
  }

  /** Bytes of snapshots held: read and not yet acked by every joiner (by reference). */
  get heldBytes(): number {
    let n = 0
    for (const h of this.held.values()) n += h.end - (h.head < h.at.length ? h.at[h.head]! : h.end)
    return n
  }

  /**
   * A STATEREQ from member `req.sender`, at its view address (the caller checked). Answered with the bytes held
   * of what it asks, or NONE when this member holds no snapshot of that view for it.
   */
  onRequest(req: StateReq): void {
    this.counters.requests++
    const h = this.held.get(req.viewId)
    const p = h?.peers.get(req.sender)
    if (!h || !p) {
      this.counters.none++
      return this.env.send(req.sender, encodeStateNone(this.header(req.viewId)))
    }
    // decode() refused these already; checked again because nothing else stands between a number and a loop.
    if (req.from < req.acked || req.from + req.length > req.acked + STATE_WINDOW || req.acked > h.end) {
      this.counters.dropped++
      return
    }
    p.heardAt = this.env.now()
    if (req.acked > p.acked) {
      p.acked = req.acked
      this.release(h)
    }
    if (req.length === 0 && req.acked === h.size) {
      h.peers.delete(req.sender) // "done"
      return this.release(h)
    }
    if (req.length === 0) return
    const from = Math.max(req.from, p.acked)
    const to = Math.min(req.from + req.length, p.acked + STATE_WINDOW)
    this.serve(h, req.sender, from, Math.min(to, h.end), to)
    if (h.size < 0 && to > h.end) {
      // Not read yet: served as the reads come in.
      const wantFrom = Math.max(from, h.end)
      if (p.wantTo > p.wantFrom) {
        p.wantFrom = Math.min(p.wantFrom, wantFrom)
        p.wantTo = Math.max(p.wantTo, to)
      } else {
        p.wantFrom = wantFrom
        p.wantTo = to
      }
      this.read(h)
    }
  }

  /** Member `no` left the group: it needs no snapshot any more. */
  left(no: number): void {
    for (const h of [...this.held.values()]) {
      if (h.peers.delete(no)) this.release(h)
    }
  }

  /** Forgets joiners silent for stateTimeoutMs (from the take for one that never asked), and snapshots nobody needs. */
  tick(): void {
    if (this.held.size === 0) return // every member's every tick: nothing to do but this look
    const now = this.env.now()
    for (const h of [...this.held.values()]) {
      let changed = false
      for (const [no, p] of h.peers) {
        if (now - p.heardAt >= this.opts.stateTimeoutMs) {
          h.peers.delete(no)
          changed = true
        }
      }
      if (changed) this.release(h)
    }
  }

  /** The member closes: every snapshot is dropped, iterables are closed. */
  close(): void {
    for (const h of [...this.held.values()]) this.forget(h)
  }

  private header(viewId: number): Header {
    return { inc: this.env.inc, viewId, sender: this.env.me }
  }

  /**
   * Sends [from, to) of what is read (to ≤ end), in datagrams of at most maxDatagram; the one that ends the state
   * carries LAST. `asked`: the request's end — a request that reaches past a known size gets LAST even when it
   * asked for no byte the state has (an empty STATE at the size).
   */
  private serve(h: Held, no: number, from: number, to: number, asked: number): void {
    const room = Math.max(1, this.opts.maxDatagram - STATE_OVERHEAD)
    const header = this.header(h.viewId)
    for (let o = from; o < to;) {
      const n = Math.min(room, to - o)
      this.env.send(no, encodeState(header, o, o + n === h.size, this.gather(h, o, n)))
      this.counters.bytesSent += n
      o += n
    }
    if (h.size >= 0 && asked > h.size && from >= h.size) {
      this.env.send(no, encodeState(header, h.size, true))
    }
  }

  /** Views of [o, o + n) across the chunks held. */
  private gather(h: Held, o: number, n: number): Uint8Array[] {
    let lo = h.head
    let hi = h.at.length - 1
    while (lo < hi) {
      const mid = (lo + hi + 1) >> 1
      if (h.at[mid]! <= o) lo = mid
      else hi = mid - 1
    }
    const parts: Uint8Array[] = []
    for (let i = lo; n > 0 && i < h.chunks.length; i++) {
      const c = h.chunks[i]!
      const start = o - h.at[i]!
      const take = Math.min(n, c.length - start)
      parts.push(c.subarray(start, start + take))
      o += take
      n -= take
    }
    return parts
  }

  private append(h: Held, chunk: Uint8Array): void {
    h.chunks.push(chunk)
    h.at.push(h.end)
    h.end += chunk.length
  }

  /** The lowest `acked` moved (or a joiner went): frees chunks every joiner has, reads on, or forgets the snapshot. */
  private release(h: Held): void {
    if (h.peers.size === 0) return this.forget(h)
    const low = this.lowAcked(h)
    while (h.head < h.chunks.length && h.at[h.head]! + h.chunks[h.head]!.length <= low) {
      h.chunks[h.head++] = EMPTY
    }
    if (h.head > 1024 && h.head * 2 > h.chunks.length) {
      h.chunks.splice(0, h.head)
      h.at.splice(0, h.head)
      h.head = 0
    }
    this.read(h)
  }

  private lowAcked(h: Held): number {
    let low = Infinity
    for (const p of h.peers.values()) low = Math.min(low, p.acked)
    return low
  }

  /** Reads the next chunk if a joiner wants bytes not read yet and the window beyond the slowest joiner has room. */
  private read(h: Held): void {
    if (h.gone || h.reading || !h.it || h.end >= this.lowAcked(h) + STATE_WINDOW) return
    let wanted = false
    for (const p of h.peers.values()) if (p.wantTo > p.wantFrom) wanted = true
    if (!wanted) return
    h.reading = true
    let next: Promise<IteratorResult<Uint8Array>>
    try {
      next = Promise.resolve(h.it.next())
    } catch (err) {
      return this.fail(h, err)
    }
    next.then((r) => this.chunk(h, r), (err) => this.fail(h, err)).catch((err) => this.fail(h, err))
  }

  private chunk(h: Held, r: IteratorResult<Uint8Array>): void {
    h.reading = false
    if (h.gone) return
    if (r.done) {
      h.it = null
      h.size = h.end
    } else {
      const c: unknown = r.value
      if (!(c instanceof Uint8Array)) return this.fail(h, new TypeError('a snapshot yielded something other than a Uint8Array'))
      if (h.end + c.length > MAX_U48) return this.fail(h, new RangeError('a snapshot larger than 2^48 − 1 bytes'))
      if (c.length > 0) this.append(h, c)
    }
    for (const [no, p] of h.peers) {
      if (p.wantTo <= p.wantFrom) continue
      const from = Math.max(p.wantFrom, p.acked)
      const to = Math.min(p.wantTo, h.end)
      this.serve(h, no, from, to, p.wantTo)
      p.wantFrom = h.size >= 0 ? p.wantTo : Math.max(from, to)
    }
    this.read(h)
  }

  /** The snapshot cannot be read: its joiners get NONE (they wait for another donor or their bound). */
  private fail(h: Held, err: unknown): void {
    if (h.gone) return
    const header = this.header(h.viewId)
    for (const no of h.peers.keys()) {
      this.counters.none++
      this.env.send(no, encodeStateNone(header))
    }
    this.forget(h)
    try {
      this.env.snapshotFailed?.(h.viewId, err)
    } catch {
      // a reporting hook cannot undo the failure
    }
  }

  private forget(h: Held): void {
    if (h.gone) return
    h.gone = true
    if (this.held.get(h.viewId) === h) this.held.delete(h.viewId)
    h.chunks = []
    h.at = []
    h.head = 0
    if (h.it) {
      const it = h.it
      h.it = null
      closeIterator(it)
    }
  }
}

const EMPTY = new Uint8Array(0)

/** A copy of bytes [from, to): never a view (Buffer's slice is one), so a datagram is not kept alive by a piece of it. */
function copyOf(bytes: Uint8Array, from: number, to: number): Uint8Array {
  const c = Buffer.allocUnsafe(to - from)
  c.set(bytes.subarray(from, to))
  return c
}

/** Lets the application's iterable release what it holds (a file, say); its errors change nothing now. */
function closeIterable(source: AsyncIterable<Uint8Array>): void {
  try {
    closeIterator(source[Symbol.asyncIterator]())
  } catch {
    // nothing to close
  }
}

function closeIterator(it: AsyncIterator<Uint8Array>): void {
  try {
    const r = it.return?.()
    if (r) Promise.resolve(r).catch(() => {})
  } catch {
    // nothing to close
  }
}

type JoinerState = 'idle' | 'running' | 'done' | 'failed' | 'closed'

interface Piece {
  offset: number
  bytes: Uint8Array
}

/**
 * One joiner's side: pulls the snapshot of the state point from its donor and hands it to `restore` as an async
 * iterable, in order, each byte once. It asks for at most STATE_WINDOW beyond what `restore` consumed: when
 * `restore` is slow, the joiner stops asking, and the donor stops sending.
 *
 *   idle ──start──▶ running ──last byte consumed──▶ done
 *                    │  ▲ start with another donor: the stream restarts from byte 0 (the old one errors)
 *                    └──┘
 *   running ──stateTimeoutMs after the first start, or restore stops reading──▶ failed
 *   any ──close──▶ closed (a stream under way errors)
 */
export class StateJoiner {
  state: JoinerState = 'idle'
  /** The state point (the snapshot's view) and its donor. */
  viewId = 0
  donor = 0
  readonly counters = { requests: 0, retries: 0, dropped: 0, none: 0 }
  private stream: StateStream | null = null
  private startedAt = 0
  private progressAt = 0
  private doneSentAt = -Infinity
  private acked = 0
  private consumed = 0
  private asked = 0
  /** The state's size, once a LAST told it (-1 before). */
  private size = -1
  /** Pieces received above a gap, sorted by offset and disjoint, all within [acked, asked). */
  private ahead: Piece[] = []
  private lastError = ''
  /** The donor's latest word was NONE (no bytes since): it holds nothing for this state point. */
  private refused = false

  constructor(private readonly opts: Pick<StateOptions, 'stateTimeoutMs'>, private readonly env: StateJoinerEnv) {}

  /**
   * Pulls the snapshot of view `viewId` from member `donorNo`; returns the bytes for `restore`, or null when nothing
   * changes: a transfer from this donor is under way (a later view with the same donor), or the state is complete
   * or failed. A transfer from another donor — or from the same one whose latest answer was NONE (its snapshot
   * failed, or it forgot this joiner; at `viewId` it takes a new one) — ends (its stream errors with ESTATE) and
   * this one starts from byte 0.
   */
  start(viewId: number, donorNo: number): AsyncIterable<Uint8Array> | null {
    if (this.state === 'running' && donorNo === this.donor && !this.refused) return null
    if (this.state !== 'idle' && this.state !== 'running') return null
    const now = this.env.now()
    if (this.state === 'idle') this.startedAt = now
    this.stream?.fail(new StateError(`state transfer restarted from member ${donorNo} at view ${viewId}`))
    this.state = 'running'
    this.viewId = viewId
    this.donor = donorNo
    this.acked = this.consumed = this.asked = 0
    this.size = -1
    this.ahead = []
    this.lastError = ''
    this.refused = false
    this.progressAt = now
    const stream: StateStream = new StateStream((n) => this.taken(stream, n), () => this.stopped(stream))
    this.stream = stream
    this.ask()
    return stream
  }

  /** Bytes received and not yet handed to `restore` (at most STATE_WINDOW). */
  get heldBytes(): number {
    let n = this.acked - this.consumed
    for (const p of this.ahead) n += p.bytes.length
    return n
  }

  /** Every byte below this was received. */
  get received(): number {
    return this.acked
  }

  /** A STATE datagram from `d.sender` at its view address (the caller checked). */
  onState(d: StateData): void {
    if (d.sender !== this.donor || d.viewId !== this.viewId || this.state === 'idle') return void this.counters.dropped++
    // Bytes after "done": the donor did not hear it (NONE: it forgot us anyway).
    if (this.state === 'done') return d.none ? undefined : this.sendDone(false)
    if (this.state !== 'running') return
    if (d.none) {
      this.counters.none++
      this.refused = true
      this.lastError = ` (member ${this.donor} holds no snapshot of view ${this.viewId} for it)`
      return
    }
    const end = d.offset + d.bytes.length
    if (d.last) {
      const highest = this.ahead.length > 0 ? this.ahead[this.ahead.length - 1]!.offset + this.ahead[this.ahead.length - 1]!.bytes.length : this.acked
      // A size below what it sent before, past what was asked, or a second different one: not this state's end.
      if (end < highest || end > this.asked || (this.size >= 0 && end !== this.size)) return void this.counters.dropped++
      this.size = end
    }
    const limit = this.size >= 0 ? this.size : this.asked
    const from = Math.max(d.offset, this.acked)
    const to = Math.min(end, limit)
    if (d.bytes.length > 0 && (d.offset >= limit || end <= this.acked)) return void this.counters.dropped++
    if (from < to && this.insert(d.bytes, d.offset, from, to)) {
      this.progressAt = this.env.now()
      this.refused = false
    }
    if (this.state !== 'running') return
    if (this.size >= 0 && this.consumed === this.size) return this.finish()
    this.ask()
  }

  /** Asks again for what is missing when nothing came for STATE_RETRY_MS; fails stateTimeoutMs after the first start. */
  tick(): void {
    if (this.state !== 'running') return
    const now = this.env.now()
    if (now - this.startedAt >= this.opts.stateTimeoutMs) {
      return this.fail(new StateError(`no state received within stateTimeoutMs (${this.opts.stateTimeoutMs} ms)${this.lastError}`))
    }
    if (now - this.progressAt < STATE_RETRY_MS) return
    this.progressAt = now
    const top = this.size >= 0 ? Math.min(this.size, this.asked) : this.asked
    let asks = 0
    let gap = this.acked
    for (let i = 0; i <= this.ahead.length && asks < RETRY_ASKS; i++) {
      const next = i < this.ahead.length ? this.ahead[i]!.offset : top
      if (next > gap) {
        this.request(gap, next - gap)
        asks++
      }
      if (i < this.ahead.length) gap = next + this.ahead[i]!.bytes.length
    }
    // Everything asked arrived but the end is unknown and nothing more may be asked (restore is slow): nothing to do.
    if (asks > 0) this.counters.retries++
  }

  /** The member closes or gives up the state: the stream errors with `err`. */
  close(err = new StateError('the member closed during state transfer')): void {
    if (this.state === 'closed') return
    if (this.state === 'running' || this.state === 'idle') this.stream?.fail(err)
    this.state = 'closed'
    this.ahead = []
  }

  private header(): Header {
    return { inc: this.env.inc, viewId: this.viewId, sender: this.env.me }
  }

  private request(from: number, length: number): void {
    this.counters.requests++
    this.env.send(this.donor, encodeStateReq(this.header(), this.acked, from, length))
  }

  /** Asks for more when restore made room for ASK_STEP, or for the rest of a state whose size is known. */
  private ask(): void {
    if (this.state !== 'running') return
    let limit = this.consumed + STATE_WINDOW
    if (this.size >= 0) limit = Math.min(limit, this.size)
    if (limit <= this.asked) return
    if (limit - this.asked < ASK_STEP && limit !== this.size) return
    const from = this.asked
    this.asked = limit
    this.request(from, limit - from)
  }

  /**
   * Takes bytes [from, to) of a datagram whose first byte is at `offset`. Bytes at `acked` go to the stream (copied
   * into its pages) with the pieces held above them that are now contiguous; bytes above a gap are copied into
   * pieces (a datagram is never kept alive by a piece of it) filling the gaps between those held. True if any byte
   * was new.
   */
  private insert(bytes: Uint8Array, offset: number, from: number, to: number): boolean {
    const ahead = this.ahead
    if (from === this.acked) {
      const ready = [bytes.subarray(from - offset, to - offset)]
      this.acked = to
      let n = 0
      for (; n < ahead.length && ahead[n]!.offset <= this.acked; n++) {
        const p = ahead[n]!
        const end = p.offset + p.bytes.length
        if (end > this.acked) {
          ready.push(p.bytes.subarray(this.acked - p.offset))
          this.acked = end
        }
      }
      if (n > 0) ahead.splice(0, n)
      // Last, with acked settled: handing bytes to a waiting reader may ask for more, or finish.
      for (const r of ready) this.stream!.write(r)
      return true
    }
    let lo = 0
    let hi = ahead.length
    while (lo < hi) {
      const mid = (lo + hi) >> 1
      const p = ahead[mid]!
      if (p.offset + p.bytes.length <= from) lo = mid + 1
      else hi = mid
    }
    // One pass over the pieces this range covers, one splice: a datagram over many tiny gaps costs O(pieces held).
    const merged: Piece[] = []
    let room = MAX_AHEAD - ahead.length
    let i = lo
    let cur = from
    while (cur < to) {
      const p = ahead[i]
      if (p && p.offset <= cur) {
        merged.push(p)
        cur = p.offset + p.bytes.length
        i++
        continue
      }
      if (room-- <= 0) break
      const gapEnd = p ? Math.min(to, p.offset) : to
      merged.push({ offset: cur, bytes: copyOf(bytes, cur - offset, gapEnd - offset) })
      cur = gapEnd
    }
    if (merged.length === i - lo) return false
    ahead.splice(lo, i - lo, ...merged)
    return true
  }

  /** `restore` took `n` bytes from the stream. */
  private taken(stream: StateStream, n: number): void {
    if (stream !== this.stream || this.state !== 'running') return
    this.consumed += n
    if (this.size >= 0 && this.consumed === this.size) return this.finish()
    this.ask()
  }

  /** `restore` stopped reading (returned from its loop) before the end. */
  private stopped(stream: StateStream): void {
    if (stream !== this.stream || this.state !== 'running') return
    this.fail(new StateError('restore stopped reading the state before its end'))
  }

  private finish(): void {
    if (this.state !== 'running') return
    this.state = 'done'
    this.ahead = []
    this.sendDone(true)
    this.stream!.end()
    this.env.done()
  }

  /** "done": length 0, acked = the size. Again (at most every STATE_RETRY_MS) if the donor goes on sending. */
  private sendDone(first: boolean): void {
    const now = this.env.now()
    if (!first && now - this.doneSentAt < STATE_RETRY_MS) return
    this.doneSentAt = now
    this.request(this.size, 0)
  }

  private fail(err: StateError): void {
    this.state = 'failed'
    this.ahead = []
    this.stream?.fail(err)
    this.env.failed(err)
  }
}
