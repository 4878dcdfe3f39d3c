/**
 * Void slots (PROTOCOL.md §5 "Void slots"): the slots up to a commit's cut that none of its sources holds — the
 * sequencer that ordered them died before any survivor had them (the holder can die before the others fetch from
 * it). Every member that still has to pass such a slot saw that commit, and skips the slot whatever late datagrams
 * it holds; so does it under every later commit, whose sources may count the slot in their `have` without holding
 * it. The senders of its messages resend them, since `ordered` never passed them.
 */

/** Who held what in a commit: member `no` holds slots (low, have]. */
export type HeldRanges = ReadonlyArray<{ low: number; have: number }>

export class VoidSlots {
  /** Ranges [first, last], kept only above the member's `have` and up to the newest cut. */
  private ranges: Array<[number, number]> = []

  /** A commit with `cut` and `sources` arrived while the member holds every slot up to `have`. */
  record(have: number, cut: number, sources: HeldRanges): void {
    this.ranges = this.ranges.flatMap(([a, b]) => (b > have && a <= cut ? [[a, Math.min(b, cut)] as [number, number]] : []))
    if (sources.length === 0) return
    const held = sources.filter((r) => r.have > r.low).sort((x, y) => x.low - y.low)
    let next = have + 1 // the first slot not yet known to be held
    for (const r of held) {
      if (next > cut) break
      if (r.low + 1 > next) this.ranges.push([next, Math.min(r.low, cut)])
      next = Math.max(next, r.have + 1)
    }
    if (next <= cut) this.ranges.push([next, cut])
  }

  /** On the per-slot path of the engine's advance(): usually no range at all, so no closure, no call beyond this. */
  has(slot: number): boolean {
    for (let i = 0; i < this.ranges.length; i++) {
      const [a, b] = this.ranges[i]!
      if (a <= slot && slot <= b) return true
    }
    return false
  }
}
