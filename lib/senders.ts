/**
 * The messages this member holds, per sender, by msgId (PROTOCOL.md §4.1, §4.6): stored as DATA arrives, freed once
 * delivered and stable. A sender's `ordered` is its highest msgId at a slot this member has; what it sent up to
 * there is never stored again. This member's own messages are the outbox's sender state, filed under its number.
 */
import { MessageStore } from './msgstore.js'
import type { SenderState } from './sequencer.js'
import type { DataEntry } from './wire.js'

export class Senders {
  private readonly bySender = new Map<number, SenderState>()
  /** A sender may not have more messages stored: twice a send window, plus a message's fragments. */
  private readonly limit: number

  constructor(sendWindow: number, private readonly stats: { duplicates: number; dropped: number }) {
    this.limit = 2 * sendWindow + 0xffff
  }

  get(no: number): SenderState | undefined {
    return this.bySender.get(no)
  }

  /** Files this member's own sender state (the outbox's) under its number. */
  own(no: number, s: SenderState): void {
    if (this.bySender.get(no) !== s) this.bySender.set(no, s)
  }

  /** DATA of sender `no`: stores every entry neither ordered already nor held, while the sender is under its limit. */
  store(no: number, entries: DataEntry[]): void {
    let s = this.bySender.get(no)
    if (!s) {
      s = { store: new MessageStore(), ordered: 0 }
      this.bySender.set(no, s)
    }
    for (const e of entries) {
      if (e.msgId <= s.ordered || s.store.has(e.msgId)) {
        this.stats.duplicates++
        continue
      }
      if (s.store.size >= this.limit || !s.store.set(e.msgId, e.first, e.more, e.payload)) {
        this.stats.dropped++
        continue
      }
    }
  }

  /** Frees message `msgId` of sender `no`: its length, or -1 if it was not held. */
  free(no: number, msgId: number): number {
    const s = this.bySender.get(no)
    return s ? s.store.delete(msgId) : -1
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
