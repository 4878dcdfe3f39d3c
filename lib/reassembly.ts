/**
 * Joins fragments back into messages, per sender, in stream order (PROTOCOL.md §4.5). Pure and bounded:
 * - a message is delivered whole or not at all: a fragment whose message started before this member's stream
 *   (it joined mid-message) is skipped, and so is every fragment after it up to the next first fragment;
 * - a sender's partial message is dropped when the sender leaves the view (its last fragments will never be ordered)
 *   or when it would grow past MAX_MESSAGE.
 */
import { MAX_MESSAGE } from './wire.js'

interface Partial {
  parts: Uint8Array[]
  bytes: number
}

export class Reassembly {
  private readonly partial = new Map<number, Partial>()

  /** `counters.skipped` counts fragments delivered to nobody here: pieces of messages this member cannot have whole. */
  constructor(private readonly counters: { skipped: number } = { skipped: 0 }) {}

  get skipped(): number {
    return this.counters.skipped
  }

  /**
   * The next fragment of `sender`'s stream. Returns the message when this fragment completes one (new memory, the
   * caller's to keep and modify — except a whole, unfragmented message with `copy` false: then it is `payload`
   * itself), otherwise undefined. A fragment is kept as given until its message is complete: a view of a received
   * datagram, which nothing overwrites.
   */
  push(sender: number, first: boolean, more: boolean, payload: Uint8Array, copy = true): Uint8Array | undefined {
    let p = this.partial.get(sender)
    if (first && p) {
      // The previous message never ended (cannot happen with an honest sender): it is dropped, not glued on.
      this.counters.skipped += p.parts.length
      this.partial.delete(sender)
      p = undefined
    }
    if (!first && !p) {
      this.counters.skipped++
      return undefined
    }
    if (!more && !p) return copy ? Buffer.from(payload) : payload
    if (!p) this.partial.set(sender, (p = { parts: [], bytes: 0 }))
    if (p.bytes + payload.length > MAX_MESSAGE) {
      this.counters.skipped += p.parts.length + 1
      this.partial.delete(sender) // the rest of it is skipped too: none of it starts a message
      return undefined
    }
    p.parts.push(payload)
    p.bytes += payload.length
    if (more) return undefined
    this.partial.delete(sender)
    return Buffer.concat(p.parts, p.bytes)
  }

  /** Drops the partial messages of every sender for which `keep` is false. */
  retain(keep: (sender: number) => boolean): void {
    for (const [sender, p] of this.partial) {
      if (keep(sender)) continue
      this.counters.skipped += p.parts.length
      this.partial.delete(sender)
    }
  }

  /** Bytes held in partial messages. */
  get bytes(): number {
    let n = 0
    for (const p of this.partial.values()) n += p.bytes
    return n
  }
}
