/**
 * One sender's messages held by a member, by msgId: not yet ordered, or ordered but not yet stable and delivered.
 *
 * A ring over typed arrays, like the SlotLog, so holding a message allocates nothing on the JavaScript heap: a
 * payload is kept as (ArrayBuffer, offset, length) — the received datagram's memory, or the sender's copy — and a
 * Buffer view is made only when the payload is read. Why it matters: messages live for milliseconds, across
 * several young-generation collections; one heap object each made V8 grow its young generation to the maximum
 * (32 MB) under load, a third of a member's memory (docs/PERFORMANCE.md, RSS).
 *
 * The live msgIds of a sender span less than its window plus the group's ordering window, so a ring indexed by
 * `msgId & mask` that doubles when two live msgIds collide stays small. It stops doubling at MAX_CAPACITY: a
 * collision there means a msgId no honest sender could send yet, and `set` refuses it.
 */

const MIN_CAPACITY = 256
/**
 * More than SEQ_WINDOW (32 768) ordered-but-unstable plus the largest send window (16 384) unordered messages.
 * Also the most fragments one message may have: a sender stores all of a message's fragments when it is submitted.
 */
export const MAX_CAPACITY = 1 << 17
/** What holding a message costs besides its payload (its ring cell and bookkeeping), in the bytes `cost` counts. */
export const ENTRY_COST = 64

export class MessageStore {
  private mask = MIN_CAPACITY - 1
  /** msgId held in each cell, 0 when empty (msgIds start at 1). */
  private ids = new Float64Array(MIN_CAPACITY)
  /** Per cell: bit 0 MORE (another fragment follows), bit 1 FIRST (starts a message). */
  private flags = new Uint8Array(MIN_CAPACITY)
  private offsets = new Uint32Array(MIN_CAPACITY)
  private lengths = new Uint32Array(MIN_CAPACITY)
  private buffers: (ArrayBufferLike | undefined)[] = new Array(MIN_CAPACITY).fill(undefined)
  /** Messages held. */
  size = 0
  /** Bytes held: every message's payload length plus ENTRY_COST. */
  cost = 0

  has(msgId: number): boolean {
    return msgId !== 0 && this.ids[msgId & this.mask] === msgId
  }

  /** Payload length in bytes, or -1 when the message is not held. */
  length(msgId: number): number {
    const i = msgId & this.mask
    return msgId !== 0 && this.ids[i] === msgId ? this.lengths[i]! : -1
  }

  /** Another fragment of the same message follows. Valid only when has(msgId). */
  hasMore(msgId: number): boolean {
    return (this.flags[msgId & this.mask]! & 1) !== 0
  }

  /** This message starts an application message (whole, or its first fragment). Valid only when has(msgId). */
  isFirst(msgId: number): boolean {
    return (this.flags[msgId & this.mask]! & 2) !== 0
  }

  /** A view of the payload (no copy). Valid only when has(msgId). */
  payload(msgId: number): Buffer {
    const i = msgId & this.mask
    return Buffer.from(this.buffers[i]!, this.offsets[i]!, this.lengths[i]!)
  }

  /** A copy of the payload, the caller's to keep and to modify. Valid only when has(msgId). */
  copy(msgId: number): Buffer {
    const i = msgId & this.mask
    const out = Buffer.allocUnsafe(this.lengths[i]!) // pooled below 4 KiB
    out.set(new Uint8Array(this.buffers[i]!, this.offsets[i]!, this.lengths[i]!))
    return out
  }

  /** Holds a message (keeping `payload`'s memory, not a copy). False if it cannot be held: see MAX_CAPACITY. */
  set(msgId: number, first: boolean, more: boolean, payload: Uint8Array): boolean {
    if (msgId === 0) return false
    let i = msgId & this.mask
    while (this.ids[i] !== 0 && this.ids[i] !== msgId) {
      if (this.ids.length >= MAX_CAPACITY) return false
      this.grow()
      i = msgId & this.mask
    }
    if (this.ids[i] === 0) this.size++
    else this.cost -= this.lengths[i]! + ENTRY_COST
    this.cost += payload.byteLength + ENTRY_COST
    this.ids[i] = msgId
    this.flags[i] = (more ? 1 : 0) | (first ? 2 : 0)
    this.offsets[i] = payload.byteOffset
    this.lengths[i] = payload.byteLength
    this.buffers[i] = payload.buffer
    return true
  }

  /** Frees a message; returns its payload length, or -1 if it was not held. */
  delete(msgId: number): number {
    const i = msgId & this.mask
    if (msgId === 0 || this.ids[i] !== msgId) return -1
    this.ids[i] = 0
    this.buffers[i] = undefined
    this.size--
    this.cost -= this.lengths[i]! + ENTRY_COST
    return this.lengths[i]!
  }

  /**
   * If message `msgId` is held as a view of `payload`'s memory, holds a copy instead: a message kept from a datagram
   * whose other entries were not kept would keep the whole datagram's memory for its few bytes.
   */
  detach(msgId: number, payload: Uint8Array): void {
    const i = msgId & this.mask
    if (msgId === 0 || this.ids[i] !== msgId || this.buffers[i] !== payload.buffer || this.offsets[i] !== payload.byteOffset) return
    this.buffers[i] = new Uint8Array(payload).buffer
    this.offsets[i] = 0
  }

  /** Frees every message with msgId < `msgId`. */
  deleteBelow(msgId: number): void {
    for (let i = 0; i < this.ids.length; i++) if (this.ids[i] !== 0 && this.ids[i]! < msgId) this.delete(this.ids[i]!)
  }

  /** Frees every message with msgId > `msgId`. */
  deleteAbove(msgId: number): void {
    for (let i = 0; i < this.ids.length; i++) if (this.ids[i]! > msgId) this.delete(this.ids[i]!)
  }

  private grow(): void {
    const { ids, flags, offsets, lengths, buffers } = this
    const capacity = ids.length * 2
    this.mask = capacity - 1
    this.ids = new Float64Array(capacity)
    this.flags = new Uint8Array(capacity)
    this.offsets = new Uint32Array(capacity)
    this.lengths = new Uint32Array(capacity)
    this.buffers = new Array(capacity).fill(undefined)
    for (let j = 0; j < ids.length; j++) {
      const id = ids[j]!
      if (id === 0) continue
      const i = id & this.mask
      this.ids[i] = id
      this.flags[i] = flags[j]!
      this.offsets[i] = offsets[j]!
      this.lengths[i] = lengths[j]!
      this.buffers[i] = buffers[j]
    }
  }
}

