/**
 * Whether this member's sequencer orders nothing of its (PROTOCOL.md §4.7, 5). Only the sequencer watches the
 * members' progress (progress.ts); a sequencer that stays connected, hears and ACKs but orders nothing would stall
 * its group for ever, so every other member watches the one thing it can judge alone: its own messages.
 *
 * A member is *starved* when it has own DATA transmitted but not ordered, none of its own messages was ordered for
 * twice the progress bound, and everything it knows to be ordered is stable (the stable slot it heard is at least the
 * highest slot it knows exists): then neither a laggard holding `stable` back (the sequencer excludes one within
 * twice the bound, §4.7, 2) nor the sequencer's windows (§4.3, counted from `stable`) can be what holds its
 * messages. It then asks the directory to exclude the sequencer, again every further twice the bound while it
 * lasts. The clock restarts at each install.
 *
 * Pure: the engine reports its own messages' state and the stream's at each tick, and sends what this decides.
 */
export class SequencerWatch {
  private active = false
  /** Since when own messages wait to be ordered and none was (null: none waits). */
  private since: number | null = null
  /** The highest own msgId seen ordered at the last check: a change is progress. */
  private announced = 0
  private suspectedAt = -Infinity
  private lastCheck = -Infinity

  /**
   * @param boundMs the progress bound B (twice the directory's timeoutMs): starved after 2B. A gap between two checks
   * longer than B/4 (two rounds of the longest keepaliveMs, B/8) is time this member did not run: it counts against
   * nobody (its queued ORDERs are not even read yet).
   */
  constructor(readonly boundMs: number) {}

  /** A view was installed (or a commit arrived: `watching` false): watch its sequencer unless it is this member. */
  watch(watching: boolean): void {
    this.active = watching
    this.since = null
    this.suspectedAt = -Infinity
    this.lastCheck = -Infinity
  }

  /**
   * Called every tick while the view is active. `waiting`: own messages were transmitted and not seen ordered;
   * `announced`: the highest own msgId seen ordered; `stable`: the stable slot this member heard; `top`: the highest
   * slot it knows exists. Returns why to suspect the sequencer now, or null.
   */
  check(now: number, waiting: boolean, announced: number, stable: number, top: number): string | null {
    if (!this.active) return null
    const gap = now - this.lastCheck
    this.lastCheck = now
    if (this.since !== null && gap > this.boundMs / 4 && gap !== Infinity) this.since += gap
    if (!waiting) {
      this.since = null
      this.announced = announced
      return null
    }
    if (this.since === null || announced !== this.announced) this.since = now
    this.announced = announced
    const bound = 2 * this.boundMs
    if (now - this.since < bound || stable < top || now - this.suspectedAt < bound) return null
    this.suspectedAt = now
    return `ordered none of this member's messages for ${Math.round(now - this.since)} ms (bound ${bound} ms), every slot it knows of being stable`
  }
}
