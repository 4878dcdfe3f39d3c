/**
 * The messages this member holds, per sender, by msgId (PROTOCOL.md §4.1, §4.6): stored as DATA arrives, freed once
 * delivered and stable. A sender's `ordered` is its highest msgId at a slot this member has; what it sent up to
 * there is never stored again. This member's own messages are the outbox's sender state, filed under its number.
 *
 * What is held above `ordered` is bounded per sender, in bytes and in msgIds (PROTOCOL.md §2.5): a stranger can
 * send DATA above a gap that never fills, and nothing frees it but a bound. The message this member needs next
 * (`next`) always gets in: it pushes out whatever is held above `ordered` — any of that is needed later than it,
 * and comes back through repair — so a full store can delay this member but never block it.
 */
import { ENTRY_COST, MessageStore } from './msgstore.js'
import type { SenderState } from './sequencer.js'
import { DATA_ENTRY_OVERHEAD, type DataEntry } from './wire.js'

/** The highest msgId held of a sender is at most its `ordered` plus this (once anything of it was ordered). */
export const MSGID_WINDOW = 65_536

/** Bytes (payloads plus ENTRY_COST each) held of one sender above its `ordered`: 4 MiB or two send windows. */
export function unorderedBound(sendWindowBytes: number): number {
  return Math.max(4 << 20, 2 * sendWindowBytes)
}

export class Senders {
  private readonly bySender = new Map<number, SenderState>()

  constructor(readonly bound: number, private readonly stats: { duplicates: number; dropped: number }) {}

  get(no: number): SenderState | undefined {
    return this.bySender.get(no)
  }

  /** Files this member's own sender state (the outbox's) under its number. */
  own(no: number, s: SenderState): void {
    if (this.bySender.get(no) !== s) this.bySender.set(no, s)
  }

  /**
   * DATA of sender `no`: stores every entry neither ordered already nor held, within the sender's bounds; `next` is
   * the msgId this member needs next of it (0 if it does not know).
   */
  store(no: number, entries: DataEntry[], next = 0): void {
    let s = this.bySender.get(no)
    if (!s) {
      s = { store: new MessageStore(), ordered: 0, orderedCost: 0 }
      this.bySender.set(no, s)
    }
    let size = 0
    let kept = 0
    for (const e of entries) {
      size += e.payload.length + DATA_ENTRY_OVERHEAD
      if (e.msgId <= s.ordered || s.store.has(e.msgId)) {
        this.stats.duplicates++
        continue
      }
      if (s.ordered > 0 && e.msgId > s.ordered + MSGID_WINDOW) {
        this.stats.dropped++
        continue
      }
      const full = s.store.cost - s.orderedCost + e.payload.length + ENTRY_COST > this.bound
      if ((full || !s.store.set(e.msgId, e.first, e.more, e.payload)) && !this.makeRoom(s, e, next)) {
        this.stats.dropped++
        continue
      }
      kept += e.payload.length + DATA_ENTRY_OVERHEAD
    }
    // Held payloads keep their datagram's memory: when most of it was not kept, hold copies instead.
    if (kept > 0 && 2 * kept < size) for (const e of entries) s.store.detach(e.msgId, e.payload)
  }

  /** The message needed next gets in by freeing everything held above `ordered`; any other is dropped. */
  private makeRoom(s: SenderState, e: DataEntry, next: number): boolean {
    if (e.msgId !== next) return false
    s.store.deleteAbove(s.ordered)
    return s.store.set(e.msgId, e.first, e.more, e.payload)
  }

  /** `have` passed message `msgId` of `s`, of `len` bytes: it is ordered (its cost no longer counts to the bound). */
  static ordered(s: SenderState, msgId: number, len: number): void {
    s.ordered = msgId
    s.orderedCost += len + ENTRY_COST
  }

  /** Frees message `msgId` of sender `no` (an ordered one): its length, or -1 if it was not held. */
  free(no: number, msgId: number): number {
    const s = this.bySender.get(no)
    if (!s) return -1
    const len = s.store.delete(msgId)
    if (len >= 0) s.orderedCost -= len + ENTRY_COST
    return len
  }

  /** Data of senders not kept (gone from the view) that is not ordered yet will never be. */
  dropUnordered(keep: (no: number) => boolean): void {
    for (const [no, s] of this.bySender) {
      if (keep(no)) continue
      s.store.deleteAbove(s.ordered)
    }
  }

  /** Forgets all of sender `no` (its number now names another member); false if nothing was held. */
  forget(no: number): boolean {
    return this.bySender.delete(no)
  }
}
