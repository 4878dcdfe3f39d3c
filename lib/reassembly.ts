/**
 * Joins fragments back into messages, per sender, in stream order (PROTOCOL.md §4.5). Pure and bounded:
 * - a fragmented message's first fragment begins with its length (u32, FRAGMENTED_PREFIX bytes): the message's
 *   buffer is allocated then, and each fragment is written into it once as it is delivered — no fragment (and so no
 *   received datagram) is held until the message ends, and nothing is joined at the end;
 * - a message is delivered whole or not at all: a fragment whose message started before this member's stream
 *   (it joined mid-message) is skipped, and so is every fragment after it up to the next first fragment;
 * - a sender's partial message is dropped when the sender leaves the view (its last fragments will never be
 *   ordered), when its length is not one a sender could send, or when its fragments do not add up to it.
 */
import { FRAGMENTED_PREFIX, MAX_MESSAGE } from './wire.js'

interface Partial {
  /** The message, allocated at its declared length when its first fragment came. */
  buf: Buffer
  /** Bytes written so far. */
  pos: number
  /** Fragments written so far (what `skipped` counts if the message is dropped). */
  parts: number
}

export class Reassembly {
  private readonly partial = new Map<number, Partial>()

  /** `counters.skipped` counts fragments delivered to nobody here: pieces of messages this member cannot have whole. */
  constructor(private readonly counters: { skipped: number } = { skipped: 0 }) {}

  get skipped(): number {
    return this.counters.skipped
  }

  /**
   * The next fragment of `sender`'s stream. Returns the message when this fragment completes one, otherwise
   * undefined. The message is new memory, the caller's to keep and modify — except a whole (unfragmented) message
   * with `copy` false: then it is `payload` itself.
   */
  push(sender: number, first: boolean, more: boolean, payload: Uint8Array, copy = true): Uint8Array | undefined {
    let p = this.partial.get(sender)
    if (first && p) {
      // The previous message never ended (cannot happen with an honest sender): it is dropped, not glued on.
      this.drop(sender, p, 0)
      p = undefined
    }
    if (!first && !p) {
      this.counters.skipped++
      return undefined
    }
    if (!p) {
      if (!more) return copy ? Buffer.from(payload) : payload
      const len = payload.length >= FRAGMENTED_PREFIX ? new DataView(payload.buffer, payload.byteOffset).getUint32(0) : 0
      const data = payload.length - FRAGMENTED_PREFIX
      // A fragmented message is longer than its first fragment's data, and no longer than any sender may send.
      if (data < 0 || len <= data || len > MAX_MESSAGE) {
        this.counters.skipped++
        return undefined
      }
      p = { buf: Buffer.allocUnsafeSlow(len), pos: 0, parts: 0 } // its own memory, not a share of Node's pool
      this.partial.set(sender, p)
      payload = payload.subarray(FRAGMENTED_PREFIX)
    }
    // Every fragment but the last leaves room for more; the last fills the message exactly.
    if (more ? p.pos + payload.length >= p.buf.length : p.pos + payload.length !== p.buf.length) {
      this.drop(sender, p, 1) // the rest of it is skipped too: none of it starts a message
      return undefined
    }
    p.buf.set(payload, p.pos)
    p.pos += payload.length
    p.parts++
    if (more) return undefined
    this.partial.delete(sender)
    return p.buf
  }

  private drop(sender: number, p: Partial, plus: number): void {
    this.counters.skipped += p.parts + plus
    this.partial.delete(sender)
  }

  /** Drops the partial messages of every sender for which `keep` is false. */
  retain(keep: (sender: number) => boolean): void {
    for (const [sender, p] of this.partial) if (!keep(sender)) this.drop(sender, p, 0)
  }

  /** Bytes held in partial messages: their declared lengths (allocated when each began). */
  get bytes(): number {
    let n = 0
    for (const p of this.partial.values()) n += p.buf.length
    return n
  }
}
