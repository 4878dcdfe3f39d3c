/**
 * What the sequencer knows of each member's progress (PROTOCOL.md §4.7), and what it does about a member that
 * makes none. Pure: ACKs and the clock in, decisions out; the sequencer role (sequencer.ts) owns one per view.
 *
 * Each ACK carries three slots: `have`, what the member holds; `acked` (≤ have), what it lets become stable — less
 * than `have` only while its application's queue is full; and the stable slot it heard of. Stability is the minimum
 * of `acked`; progress is judged on `have` alone, so a reader that stopped holds the group back (flow control) but
 * is never excluded.
 *
 * A member is *stuck* when a slot this sequencer ordered at least `boundMs` ago is still above its `have`, or when
 * no ACK came from it for `boundMs` (members ACK at least every `keepaliveMs`, so that silence means a broken path,
 * not an idle group). Lag is found with one mark per member: the top slot at the moment it was first seen behind,
 * and that moment; reaching the mark moves it to the then top. So a member is reported between `boundMs` and
 * `2 × boundMs` after the oldest slot it lacks was ordered, and never while it keeps reaching slots younger than
 * `boundMs`.
 */

/** One round of decisions. */
export interface WatchDecision {
  /** Members to send a heartbeat to by unicast: they lack what was announced a round ago (slots, or `stable`). */
  hint: number[]
  /** Members to ask the directory to exclude (at most once per `boundMs` each); may name this sequencer itself. */
  suspect: number[]
}

interface Progress {
  have: number
  acked: number
  /** The slot it must reach, and since when; -1 while it has everything ordered. */
  markSlot: number
  markAt: number
  /** The stable slot it last said it heard of. */
  knownStable: number
  suspectedAt: number
  /** When its last ACK came (the watch's creation before the first). */
  heardAt: number
}

export class ProgressWatch {
  private readonly members = new Map<number, Progress>()
  /** The top slot and the stable slot at the previous hint round, and when that was. */
  private roundTop: number
  private roundStable = 0
  private roundAt = -Infinity
  /** Since when more than half of the view is stuck (null: not so). */
  private majoritySince: number | null = null
  private selfSuspectedAt = -Infinity
  private lastTick = -Infinity

  /**
   * @param me the sequencer's own member number
   * @param others the other members of the view
   * @param start the view's own slot: the first top (a member that never installs the view lacks it)
   * @param initial what the sequencer assumes each member has until it ACKs (its own stable slot)
   * @param boundMs how long a slot may stay unacknowledged, or a member silent (twice the directory's timeoutMs)
   * @param roundMs how often laggards are sent a heartbeat (keepaliveMs: heartbeatMs, at most boundMs / 8)
   */
  constructor(
    readonly me: number,
    others: readonly number[],
    start: number,
    initial: number,
    readonly boundMs: number,
    private readonly roundMs: number,
    now: number,
  ) {
    this.roundTop = start
    for (const no of others) {
      if (no === me) continue
      this.members.set(no, { have: initial, acked: initial, markSlot: -1, markAt: 0, knownStable: initial, suspectedAt: -Infinity, heardAt: now })
    }
  }

  has(no: number): boolean {
    return this.members.has(no)
  }

  /** Records an ACK; `stable` is the stable slot the member heard of. Values only grow; acked never exceeds have. */
  ack(no: number, have: number, acked: number, stable: number, now: number): void {
    const p = this.members.get(no)
    if (!p) return
    p.heardAt = now
    const a = Math.min(acked, have)
    if (have > p.have) p.have = have
    if (a > p.acked) p.acked = a
    if (stable > p.knownStable) p.knownStable = stable
  }

  /** The highest slot every member lets become stable, given the sequencer's own. */
  stable(own: number): number {
    let min = own
    for (const p of this.members.values()) if (p.acked < min) min = p.acked
    return min
  }

  /** Whether some member has not said (in its last ACK) that it heard of stable slot `stable`. */
  unheard(stable: number): boolean {
    for (const p of this.members.values()) if (p.knownStable < stable) return true
    return false
  }

  /** Called every tick while the view is active, with the last slot ordered so far and the stable slot. */
  tick(now: number, top: number, stable: number): WatchDecision {
    // Time this sequencer did not run (a stalled event loop, an expired lease) counts against nobody: the ACKs that
    // came meanwhile are not even read yet.
    const gap = now - this.lastTick
    this.lastTick = now
    if (gap > 2 * this.roundMs && gap !== Infinity) {
      for (const p of this.members.values()) {
        p.markAt += gap
        p.heardAt += gap
      }
      if (this.majoritySince !== null) this.majoritySince += gap
    }
    const hint: number[] = []
    const stuck: number[] = []
    let troubled = 0
    const round = now - this.roundAt >= this.roundMs
    for (const [no, p] of this.members) {
      if (round && (p.have < this.roundTop || p.knownStable < this.roundStable)) hint.push(no)
      if (p.have >= top) p.markSlot = -1
      else if (p.markSlot < 0 || p.have >= p.markSlot) {
        p.markSlot = top
        p.markAt = now
      }
      const age = Math.max(p.markSlot >= 0 ? now - p.markAt : 0, now - p.heardAt)
      if (age >= this.boundMs / 2) troubled++
      if (age >= this.boundMs) stuck.push(no)
    }
    if (round) {
      this.roundTop = top
      this.roundStable = stable
      this.roundAt = now
    }
    return { hint, suspect: this.judge(now, stuck, troubled) }
  }

  /**
   * Stuck members are excluded while the troubled ones (lagging or silent for half the bound) are at most half the
   * view: when the fault is the sequencer's, members cross the bound a few milliseconds apart, and the first must
   * not look like a lone laggard. More than half stuck points at the sequencer (its own sending or receiving fails):
   * after another half bound of that it asks to exclude itself.
   */
  private judge(now: number, stuck: number[], troubled: number): number[] {
    const view = this.members.size + 1
    if (2 * troubled <= view) {
      this.majoritySince = null
      const due = stuck.filter((no) => now - this.members.get(no)!.suspectedAt >= this.boundMs)
      for (const no of due) this.members.get(no)!.suspectedAt = now
      return due
    }
    if (2 * stuck.length <= view) {
      this.majoritySince = null
      return []
    }
    this.majoritySince ??= now
    if (now - this.majoritySince < this.boundMs / 2 || now - this.selfSuspectedAt < this.boundMs) return []
    this.selfSuspectedAt = now
    return [this.me]
  }

  /** Why `no` is suspected, for the directory's log and the member's EEXPELLED message. */
  reason(no: number, now: number): string {
    const p = this.members.get(no)
    if (!p) return `more than half of the view has been silent, or has lacked what this sequencer ordered, for ${this.boundMs} ms`
    if (now - p.heardAt >= this.boundMs) return `no acknowledgement from it for ${Math.round(now - p.heardAt)} ms (bound ${this.boundMs} ms)`
    return `holds slots only up to ${p.have}; slot ${p.markSlot}, ordered at least ${Math.round(now - p.markAt)} ms ago, is still missing (bound ${this.boundMs} ms)`
  }
}
