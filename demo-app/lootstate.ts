/**
 * The loot box's replicated state machine: the same shuffled list of 1..100 000 at every replica and a counter of
 * numbers handed out. A draw is a group message `draw N`; applied in the delivered (total) order, the N numbers a
 * draw gets are the same at every replica and never handed out twice — no lock server. `snapshot`/`restore` are the
 * state-transfer hooks (docs/API.md "State transfer"): a replica that joins late or comes back starts from the
 * counter at its first view.
 */
import { createHash } from 'node:crypto'
import type { StateHooks } from '../lib/index.js'

export const SIZE = 100_000
export const SEED = 42

/** The same shuffle everywhere: Fisher–Yates driven by a fixed-seed PRNG. */
export function shuffled(seed = SEED): Uint32Array {
  const a = new Uint32Array(SIZE)
  for (let i = 0; i < SIZE; i++) a[i] = i + 1
  let s = seed >>> 0
  const rnd = (): number => {
    s = (s + 0x6d2b79f5) >>> 0
    let t = Math.imul(s ^ (s >>> 15), s | 1)
    t ^= t + Math.imul(t ^ (t >>> 7), t | 61)
    return ((t ^ (t >>> 14)) >>> 0) / 4294967296
  }
  for (let i = SIZE - 1; i > 0; i--) {
    const j = Math.floor(rnd() * (i + 1))
    const x = a[i]!
    a[i] = a[j]!
    a[j] = x
  }
  return a
}

/** A draw request as it travels in the group: `draw N`, with an optional tag the drawing replica recognises. */
export function drawMessage(n: number, tag = ''): string {
  return tag ? `draw ${n} ${tag}` : `draw ${n}`
}

export class LootBox {
  readonly box = shuffled()
  /** Numbers handed out so far: the next draw starts at box[counter]. */
  counter = 0
  /** Draws applied (including those that found the box empty). */
  applied = 0
  /** A hash chain over every draw applied, in order: equal chains, equal histories (and it travels in the state). */
  chain = ''

  /**
   * Applies one delivered message; returns the draw's numbers ([] when the box is empty), or null for anything
   * that is not a draw. `tag` is the optional third word.
   */
  apply(body: string): { numbers: number[]; tag: string } | null {
    const m = /^draw (\d+)(?: (\S+))?$/.exec(body)
    if (!m) return null
    const n = Math.min(Number(m[1]), SIZE - this.counter)
    const numbers = Array.from(this.box.subarray(this.counter, this.counter + n))
    this.counter += n
    this.applied++
    this.chain = createHash('sha256').update(`${this.chain};${numbers.join(',')}`).digest('hex')
    return { numbers, tag: m[2] ?? '' }
  }

  /** A short fingerprint of the history applied (the counter and every draw's numbers, in order). */
  get state(): string {
    return `${this.counter}/${this.chain.slice(0, 16)}`
  }

  /** The state-transfer hooks: the counter, the draws applied and the hash chain travel; the list is rebuilt. */
  hooks(): StateHooks {
    return {
      snapshot: () => Buffer.from(JSON.stringify({ counter: this.counter, applied: this.applied, chain: this.chain })),
      restore: async (chunks) => {
        const parts: Buffer[] = []
        for await (const c of chunks) parts.push(Buffer.from(c))
        const s = JSON.parse(Buffer.concat(parts).toString()) as { counter: number; applied: number; chain: string }
        if (!Number.isInteger(s.counter) || s.counter < 0 || s.counter > SIZE) throw new Error(`bad loot box state: counter ${s.counter}`)
        this.counter = s.counter
        this.applied = s.applied
        this.chain = s.chain
      },
    }
  }
}
