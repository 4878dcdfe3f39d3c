/**
 * The ordering log: which message (sender, msgId) — or which view — each slot of the group's stream holds.
 * A ring of fixed capacity over typed arrays: no allocation per slot. A cell remembers its slot number, so a cell
 * left over from an earlier lap, or from slots skipped by a view change, is never mistaken for a live one.
 */

export const VIEW_SENDER = 0 // member numbers start at 1; sender 0 marks a view slot, whose msgId is the viewId
/** Marks a slot a view change declared void: ordered by a sequencer that died before any survivor held it. */
export const VOID_SENDER = 0xffffffff

export class SlotLog {
  private readonly mask: number
  private readonly slotAt: Float64Array
  private readonly senderAt: Uint32Array
  private readonly msgIdAt: Float64Array // msgIds are 48-bit
  private readonly viewAt: Uint32Array

  /** `capacity` must be a power of two. */
  constructor(readonly capacity: number) {
    if (capacity & (capacity - 1)) throw new Error('SlotLog capacity must be a power of two')
    this.mask = capacity - 1
    this.slotAt = new Float64Array(capacity)
    this.senderAt = new Uint32Array(capacity)
    this.msgIdAt = new Float64Array(capacity)
    this.viewAt = new Uint32Array(capacity)
  }

  has(slot: number): boolean {
    return this.slotAt[slot & this.mask] === slot
  }

  /** Stores an entry; the caller guarantees `slot` lies within `capacity` of every slot still in use. */
  set(slot: number, sender: number, msgId: number, viewId: number): void {
    const i = slot & this.mask
    this.slotAt[i] = slot
    this.senderAt[i] = sender
    this.msgIdAt[i] = msgId
    this.viewAt[i] = viewId
  }

  /** Valid only when has(slot). */
  sender(slot: number): number {
    return this.senderAt[slot & this.mask]!
  }

  msgId(slot: number): number {
    return this.msgIdAt[slot & this.mask]!
  }

  viewId(slot: number): number {
    return this.viewAt[slot & this.mask]!
  }

  isView(slot: number): boolean {
    return this.has(slot) && this.senderAt[slot & this.mask] === VIEW_SENDER
  }

  delete(slot: number): void {
    const i = slot & this.mask
    if (this.slotAt[i] === slot) this.slotAt[i] = 0
  }
}
