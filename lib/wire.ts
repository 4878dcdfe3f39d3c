/**
 * Datagram codec (docs/PROTOCOL.md §2). Pure: bytes in, values out. `decode` never throws: a datagram it cannot
 * read whole is returned as a `Malformed` with the reason, for the caller to count and drop.
 */

export const MAGIC = 0x5343
export const VERSION = 3
export const HEADER_SIZE = 24
export const MAX_DATAGRAM = 65_507
/**
 * The largest application message the protocol carries (1 GiB). A receiver drops a message whose fragments add up
 * to more — a sender whose message never ends cannot grow its reassembly without bound.
 */
export const MAX_MESSAGE = 1 << 30

/** The largest slot or msgId (48 bits). */
export const MAX_U48 = 2 ** 48 - 1

export const Kind = { DATA: 1, ORDER: 2, ACK: 3, NACK: 4, STATEREQ: 5, STATE: 6 } as const
export type Kind = (typeof Kind)[keyof typeof Kind]

export const DATA_ENTRY_OVERHEAD = 11 // u48 msgId, u8 flags, u32 length
const DATA_BODY_OVERHEAD = 2 // u16 count
const RUN_SIZE = 12 // u32 sender, u48 firstMsgId, u16 count
const ORDER_BODY_OVERHEAD = 14 // u48 firstSlot, u48 stable, u16 runCount
const ACK_BODY_SIZE = 18 // u48 have, u48 acked, u48 stable
const NACK_SLOTS_SIZE = 9 // u8 kind, u48 firstSlot, u16 n
const NACK_DATA_SIZE = 13 // u8 kind, u32 sender, u48 firstMsgId, u16 n
const FLAG_MORE = 1
const FLAG_FIRST = 2
const STATEREQ_BODY_SIZE = 16 // u48 acked, u48 from, u32 length
/** What a STATE datagram carries besides its bytes: the header, u48 offset, u8 flags. */
export const STATE_OVERHEAD = HEADER_SIZE + 7
const STATE_LAST = 1
const STATE_NONE = 2

/**
 * How far past `acked` a joiner may ask for state, and how much a request may ask (PROTOCOL.md §8.3): what the
 * joiner holds of the state not yet restored, and what one request may cost the donor in sends.
 */
export const STATE_WINDOW = 4 * 1024 * 1024

/**
 * A group's incarnation: 64 random bits the directory draws when it creates the group (PROTOCOL.md §1), as two
 * u32 halves. Every datagram carries it; a datagram of another incarnation — another directory's group of the
 * same name, or an older life of this one — is dropped.
 */
export interface Incarnation {
  hi: number
  lo: number
}

/** The incarnation as it travels in directory frames: 16 lowercase hex digits, not all zero. */
export function formatIncarnation(inc: Incarnation): string {
  return (inc.hi >>> 0).toString(16).padStart(8, '0') + (inc.lo >>> 0).toString(16).padStart(8, '0')
}

/** Parses 16 hex digits, not all zero; undefined otherwise. */
export function parseIncarnation(s: unknown): Incarnation | undefined {
  if (typeof s !== 'string' || !/^[0-9a-f]{16}$/.test(s) || /^0+$/.test(s)) return undefined
  return { hi: parseInt(s.slice(0, 8), 16), lo: parseInt(s.slice(8), 16) }
}

export interface Header {
  inc: Incarnation
  viewId: number
  sender: number
}

export interface DataEntry {
  msgId: number
  /** Another fragment of the same message follows. */
  more: boolean
  /** This entry starts a message (a whole message, or its first fragment). */
  first: boolean
  payload: Uint8Array
}

/** `count` consecutive slots given to messages firstMsgId … firstMsgId+count-1 of `sender`. */
export interface Run {
  sender: number
  firstMsgId: number
  count: number
}

export interface SlotRange {
  firstSlot: number
  n: number
}

export interface DataRange {
  sender: number
  firstMsgId: number
  n: number
}

/** What a receiver reads of a header: the incarnation was checked against its own. */
export interface Received {
  viewId: number
  sender: number
}

export type Datagram =
  | (Received & { kind: typeof Kind.DATA; entries: DataEntry[] })
  | (Received & { kind: typeof Kind.ORDER; firstSlot: number; stable: number; runs: Run[] })
  | (Received & { kind: typeof Kind.ACK; have: number; acked: number; stable: number })
  | (Received & { kind: typeof Kind.NACK; slots: SlotRange[]; data: DataRange[] })
  | StateReq
  | StateData

/** Joiner → donor: "I hold every byte below `acked`; send me [from, from + length)". Checked: acked ≤ from, within the window. */
export interface StateReq extends Received {
  kind: typeof Kind.STATEREQ
  acked: number
  from: number
  length: number
}

/** Donor → joiner: bytes of the state at `offset`; `last`: they end the state; `none`: no snapshot here (no bytes). */
export interface StateData extends Received {
  kind: typeof Kind.STATE
  offset: number
  last: boolean
  none: boolean
  bytes: Uint8Array
}

export interface Malformed {
  kind: 0
  reason: string
}

/** The reason `decode` gives for a well-formed header of another incarnation (counted apart from garbage). */
export const FOREIGN = 'foreign incarnation'

function writeHeader(buf: Buffer, kind: Kind, h: Header): void {
  buf.writeUInt16BE(MAGIC, 0)
  buf[2] = VERSION
  buf[3] = kind
  buf.writeUInt32BE(h.inc.hi >>> 0, 4)
  buf.writeUInt32BE(h.inc.lo >>> 0, 8)
  buf.writeUInt32BE(h.viewId >>> 0, 12)
  buf.writeUInt32BE(h.sender >>> 0, 16)
  buf.writeUInt32BE(0, 20) // flags, reserved
}

/** Where packers build datagrams: one buffer for the process, reused, so a small datagram costs a small copy. */
let scratch = Buffer.allocUnsafe(0)
let scratchOwner: DataPacker | null = null

/**
 * Packs DATA entries into one datagram of at most `maxDatagram` bytes. The hot path of sending: the payload is
 * copied into a shared scratch buffer, and `finish` copies out exactly the bytes used — allocating a whole
 * `maxDatagram` (60 000 on loopback) per datagram made every small send cost 60 KB of short-lived memory.
 * One packer at a time: making a new one ends the previous one.
 */
export class DataPacker {
  private readonly buf: Buffer
  private off = HEADER_SIZE + DATA_BODY_OVERHEAD
  private count = 0

  constructor(header: Header, readonly maxDatagram: number) {
    if (scratch.length < maxDatagram) scratch = Buffer.allocUnsafe(maxDatagram)
    this.buf = scratch
    scratchOwner = this
    writeHeader(this.buf, Kind.DATA, header)
  }

  /** Room left for one more entry's payload. */
  get room(): number {
    return this.maxDatagram - this.off - DATA_ENTRY_OVERHEAD
  }

  get entries(): number {
    return this.count
  }

  /** Adds the entry if it fits; returns false (and adds nothing) otherwise. */
  add(msgId: number, first: boolean, more: boolean, payload: Uint8Array): boolean {
    if (scratchOwner !== this) throw new Error('DataPacker used after another was made')
    if (payload.length > this.room || this.count === 0xffff) return false
    const buf = this.buf
    let o = this.off
    buf.writeUIntBE(msgId, o, 6)
    buf[o + 6] = (more ? FLAG_MORE : 0) | (first ? FLAG_FIRST : 0)
    buf.writeUInt32BE(payload.length, o + 7)
    o += DATA_ENTRY_OVERHEAD
    buf.set(payload, o)
    this.off = o + payload.length
    this.count++
    return true
  }

  /** The datagram: a copy of exactly the bytes packed, the sender's to keep. */
  finish(): Buffer {
    if (scratchOwner !== this) throw new Error('DataPacker used after another was made')
    this.buf.writeUInt16BE(this.count, HEADER_SIZE)
    return Buffer.from(this.buf.subarray(0, this.off))
  }
}

/** What `packData` reads messages from: a MessageStore. */
export interface HeldMessages {
  has(msgId: number): boolean
  isFirst(msgId: number): boolean
  hasMore(msgId: number): boolean
  payload(msgId: number): Uint8Array
}

/**
 * Packs the messages first … first+n-1 that `held` holds into as few DATA datagrams as possible, handing each
 * datagram to `emit`; returns how many messages it packed.
 */
export function packData(h: Header, maxDatagram: number, held: HeldMessages, first: number, n: number, emit: (buf: Buffer) => void): number {
  let packer = new DataPacker(h, maxDatagram)
  let count = 0
  for (let m = first; m < first + n; m++) {
    if (!held.has(m)) continue
    const payload = held.payload(m)
    if (!packer.add(m, held.isFirst(m), held.hasMore(m), payload)) {
      emit(packer.finish())
      packer = new DataPacker(h, maxDatagram)
      packer.add(m, held.isFirst(m), held.hasMore(m), payload)
    }
    count++
  }
  if (packer.entries > 0) emit(packer.finish())
  return count
}

/** The largest payload one fragment can carry in a datagram of `maxDatagram` bytes. */
export function fragmentRoom(maxDatagram: number): number {
  return maxDatagram - HEADER_SIZE - DATA_BODY_OVERHEAD - DATA_ENTRY_OVERHEAD
}

/** How many runs fit in one ORDER datagram. */
export function runsPerDatagram(maxDatagram: number): number {
  return Math.min(0xffff, Math.floor((maxDatagram - HEADER_SIZE - ORDER_BODY_OVERHEAD) / RUN_SIZE))
}

export function encodeOrder(h: Header, firstSlot: number, stable: number, runs: readonly Run[], from = 0, to = runs.length): Buffer {
  const n = to - from
  const buf = Buffer.allocUnsafe(HEADER_SIZE + ORDER_BODY_OVERHEAD + n * RUN_SIZE)
  writeHeader(buf, Kind.ORDER, h)
  buf.writeUIntBE(firstSlot, HEADER_SIZE, 6)
  buf.writeUIntBE(stable, HEADER_SIZE + 6, 6)
  buf.writeUInt16BE(n, HEADER_SIZE + 12)
  let o = HEADER_SIZE + ORDER_BODY_OVERHEAD
  for (let i = from; i < to; i++) {
    const r = runs[i]!
    buf.writeUInt32BE(r.sender >>> 0, o)
    buf.writeUIntBE(r.firstMsgId, o + 4, 6)
    buf.writeUInt16BE(r.count, o + 10)
    o += RUN_SIZE
  }
  return buf
}

/**
 * `have`: the member's contiguous slots; `acked` (≤ have): what it lets become stable; `stable`: the stable slot it
 * has heard of (PROTOCOL.md §2.3).
 */
export function encodeAck(h: Header, have: number, acked: number, stable: number): Buffer {
  const buf = Buffer.allocUnsafe(HEADER_SIZE + ACK_BODY_SIZE)
  writeHeader(buf, Kind.ACK, h)
  buf.writeUIntBE(have, HEADER_SIZE, 6)
  buf.writeUIntBE(acked, HEADER_SIZE + 6, 6)
  buf.writeUIntBE(stable, HEADER_SIZE + 12, 6)
  return buf
}

export function encodeNack(h: Header, slots: readonly SlotRange[], data: readonly DataRange[]): Buffer {
  const buf = Buffer.allocUnsafe(HEADER_SIZE + 2 + slots.length * NACK_SLOTS_SIZE + data.length * NACK_DATA_SIZE)
  writeHeader(buf, Kind.NACK, h)
  buf.writeUInt16BE(slots.length + data.length, HEADER_SIZE)
  let o = HEADER_SIZE + 2
  for (const s of slots) {
    buf[o] = 1
    buf.writeUIntBE(s.firstSlot, o + 1, 6)
    buf.writeUInt16BE(s.n, o + 7)
    o += NACK_SLOTS_SIZE
  }
  for (const d of data) {
    buf[o] = 2
    buf.writeUInt32BE(d.sender >>> 0, o + 1)
    buf.writeUIntBE(d.firstMsgId, o + 5, 6)
    buf.writeUInt16BE(d.n, o + 11)
    o += NACK_DATA_SIZE
  }
  return buf
}

/**
 * A state request (PROTOCOL.md §8.3): `acked` ≤ `from`, `from + length` ≤ `acked + STATE_WINDOW`. `length` 0 with
 * `acked` = the state's size says "done". viewId = the state point, sender = the joiner.
 */
export function encodeStateReq(h: Header, acked: number, from: number, length: number): Buffer {
  const buf = Buffer.allocUnsafe(HEADER_SIZE + STATEREQ_BODY_SIZE)
  writeHeader(buf, Kind.STATEREQ, h)
  buf.writeUIntBE(acked, HEADER_SIZE, 6)
  buf.writeUIntBE(from, HEADER_SIZE + 6, 6)
  buf.writeUInt32BE(length >>> 0, HEADER_SIZE + 12)
  return buf
}

/**
 * Bytes of the state from `offset`, gathered from `parts` (a datagram may span the snapshot's chunks); `last`: they
 * end the state. viewId = the state point, sender = the donor.
 */
export function encodeState(h: Header, offset: number, last: boolean, parts: readonly Uint8Array[] = []): Buffer {
  let n = 0
  for (const p of parts) n += p.length
  const buf = Buffer.allocUnsafe(STATE_OVERHEAD + n)
  writeHeader(buf, Kind.STATE, h)
  buf.writeUIntBE(offset, HEADER_SIZE, 6)
  buf[HEADER_SIZE + 6] = last ? STATE_LAST : 0
  let o = STATE_OVERHEAD
  for (const p of parts) {
    buf.set(p, o)
    o += p.length
  }
  return buf
}

/** "I hold no snapshot of this view for you": offset 0, no bytes. */
export function encodeStateNone(h: Header): Buffer {
  const buf = encodeState(h, 0, false)
  buf[HEADER_SIZE + 6] = STATE_NONE
  return buf
}

/** The most NACK items that fit in one datagram of `maxDatagram` bytes. */
export function nackItemsPerDatagram(maxDatagram: number): number {
  return Math.min(0xffff, Math.floor((maxDatagram - HEADER_SIZE - 2) / NACK_DATA_SIZE))
}

function bad(reason: string): Malformed {
  return { kind: 0, reason }
}

/**
 * Decodes one datagram of incarnation `inc`. Payloads are views into `buf` (no copy): a caller that keeps one
 * beyond the datagram's life keeps the datagram's memory alive, which is bounded by the windows.
 */
export function decode(buf: Uint8Array, inc: Incarnation): Datagram | Malformed {
  const b = Buffer.isBuffer(buf) ? buf : Buffer.from(buf.buffer, buf.byteOffset, buf.byteLength)
  const len = b.length
  if (len < HEADER_SIZE) return bad('short header')
  if (b.readUInt16BE(0) !== MAGIC) return bad('bad magic')
  if (b[2] !== VERSION) return bad(`unsupported version ${b[2]}`)
  if (b[20] !== 0) return bad('flags set (authentication not supported)')
  if (b[21] !== 0 || b[22] !== 0 || b[23] !== 0) return bad('reserved bytes set')
  const hi = b.readUInt32BE(4)
  const lo = b.readUInt32BE(8)
  // No group has incarnation 0; a member before its first commit compares with 0, and must match nothing.
  if (hi === 0 && lo === 0) return bad('incarnation 0')
  if (hi !== inc.hi || lo !== inc.lo) return bad(FOREIGN)
  const kind = b[3]!
  const h: Received = { viewId: b.readUInt32BE(12), sender: b.readUInt32BE(16) }
  // Member numbers start at 1 (PROTOCOL.md §1): 0 names nobody, wherever it appears.
  if (h.sender === 0) return bad('sender 0')
  let o = HEADER_SIZE
  switch (kind) {
    case Kind.DATA: {
      if (len < o + 2) return bad('short DATA')
      const count = b.readUInt16BE(o)
      o += 2
      const entries: DataEntry[] = new Array(count)
      for (let i = 0; i < count; i++) {
        if (len < o + DATA_ENTRY_OVERHEAD) return bad('truncated DATA entry')
        const msgId = b.readUIntBE(o, 6)
        const flags = b[o + 6]!
        const plen = b.readUInt32BE(o + 7)
        o += DATA_ENTRY_OVERHEAD
        if (flags & ~(FLAG_MORE | FLAG_FIRST)) return bad('unknown DATA flags')
        if (msgId === 0) return bad('msgId 0')
        if (len < o + plen) return bad('truncated DATA payload')
        entries[i] = { msgId, more: (flags & FLAG_MORE) !== 0, first: (flags & FLAG_FIRST) !== 0, payload: b.subarray(o, o + plen) }
        o += plen
      }
      if (o !== len) return bad('trailing bytes')
      return { kind: Kind.DATA, ...h, entries }
    }
    case Kind.ORDER: {
      if (len < o + ORDER_BODY_OVERHEAD) return bad('short ORDER')
      const firstSlot = b.readUIntBE(o, 6)
      const stable = b.readUIntBE(o + 6, 6)
      const n = b.readUInt16BE(o + 12)
      o += ORDER_BODY_OVERHEAD
      if (len !== o + n * RUN_SIZE) return bad('ORDER length mismatch')
      if (firstSlot === 0) return bad('slot 0')
      const runs: Run[] = new Array(n)
      let last = firstSlot - 1
      for (let i = 0; i < n; i++) {
        const r = { sender: b.readUInt32BE(o), firstMsgId: b.readUIntBE(o + 4, 6), count: b.readUInt16BE(o + 10) }
        if (r.count === 0 || r.firstMsgId === 0) return bad('empty run')
        if (r.sender === 0) return bad('sender 0')
        // Slots and msgIds are 48-bit: a run past 2^48 − 1 names numbers no datagram could carry back.
        last += r.count
        if (r.firstMsgId + r.count - 1 > MAX_U48 || last > MAX_U48) return bad('run past 2^48')
        runs[i] = r
        o += RUN_SIZE
      }
      return { kind: Kind.ORDER, ...h, firstSlot, stable, runs }
    }
    case Kind.ACK: {
      if (len !== o + ACK_BODY_SIZE) return bad('ACK length mismatch')
      return { kind: Kind.ACK, ...h, have: b.readUIntBE(o, 6), acked: b.readUIntBE(o + 6, 6), stable: b.readUIntBE(o + 12, 6) }
    }
    case Kind.NACK: {
      if (len < o + 2) return bad('short NACK')
      const count = b.readUInt16BE(o)
      o += 2
      const slots: SlotRange[] = []
      const data: DataRange[] = []
      for (let i = 0; i < count; i++) {
        if (len < o + 1) return bad('truncated NACK')
        if (b[o] === 1) {
          if (len < o + NACK_SLOTS_SIZE) return bad('truncated NACK')
          slots.push({ firstSlot: b.readUIntBE(o + 1, 6), n: b.readUInt16BE(o + 7) })
          o += NACK_SLOTS_SIZE
        } else if (b[o] === 2) {
          if (len < o + NACK_DATA_SIZE) return bad('truncated NACK')
          const sender = b.readUInt32BE(o + 1)
          if (sender === 0) return bad('sender 0')
          data.push({ sender, firstMsgId: b.readUIntBE(o + 5, 6), n: b.readUInt16BE(o + 11) })
          o += NACK_DATA_SIZE
        } else {
          return bad('unknown NACK item')
        }
      }
      if (o !== len) return bad('trailing bytes')
      return { kind: Kind.NACK, ...h, slots, data }
    }
    case Kind.STATEREQ: {
      if (len !== o + STATEREQ_BODY_SIZE) return bad('STATEREQ length mismatch')
      const acked = b.readUIntBE(o, 6)
      const from = b.readUIntBE(o + 6, 6)
      const length = b.readUInt32BE(o + 12)
      // No honest joiner asks below what it holds, or past its window: such a request is garbage whoever sends it.
      if (from < acked || from + length > acked + STATE_WINDOW) return bad('STATEREQ outside its window')
      return { kind: Kind.STATEREQ, ...h, acked, from, length }
    }
    case Kind.STATE: {
      if (len < STATE_OVERHEAD) return bad('short STATE')
      const offset = b.readUIntBE(o, 6)
      const flags = b[o + 6]!
      const bytes = b.subarray(STATE_OVERHEAD)
      if (flags & ~(STATE_LAST | STATE_NONE)) return bad('unknown STATE flags')
      const none = (flags & STATE_NONE) !== 0
      if (none && (flags !== STATE_NONE || offset !== 0 || bytes.length > 0)) return bad('NONE with an offset, bytes or LAST')
      if (offset + bytes.length > MAX_U48) return bad('state past 2^48')
      return { kind: Kind.STATE, ...h, offset, last: (flags & STATE_LAST) !== 0, none, bytes }
    }
    default:
      return bad(`unknown type ${kind}`)
  }
}

/**
 * The most slots a sequencer may have assigned above the group's stable slot (PROTOCOL.md §4.3). A protocol
 * constant, because a view change after a sequencer crash skips this many slots (§5).
 */
export const SEQ_WINDOW = 32_768
