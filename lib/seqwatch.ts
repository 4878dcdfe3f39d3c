/**
 * Whether this member's sequencer orders nothing of its (PROTOCOL.md §4.7, 5). Only the sequencer watches the
 * members' progress (progress.ts); a sequencer that stays connected, hears and ACKs but orders nothing would stall
 * its group for ever, so every other member watches the one thing it can judge alone: its own messages.
 *
 * A member is *starved* when it has own DATA transmitted but not ordered, and none of its own messages was ordered
 * during twice the progress bound of time in which everything it knew to be ordered was stable (the stable slot it
 * heard at least the highest slot it knows exists): neither a laggard holding `stable` back (the sequencer excludes
 * one within twice the bound, §4.7, 2) nor the sequencer's windows (§4.3, counted from `stable`) can be what held
 * its messages then. It asks the directory to exclude the sequencer, again every further twice the bound while it
 * lasts. The clock restarts at each install.
 *
 * Pure: the engine reports its own messages' state and the stream's at each tick, and sends what this decides.
 */
export class SequencerWatch {
  private active = false
  /** Own messages waited unordered at the last check. */
  private waited = false
  /** The highest own msgId seen ordered at the last check: a change is progress. */
  private announced = 0
  /** How long own messages have waited with none ordered, counting only time in which everything known was stable. */
  private starvedMs = 0
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
    this.waited = false
    this.starvedMs = 0
    this.suspectedAt = -Infinity
    this.lastCheck = -Infinity
  }

  /**
   * Called every tick while the view is active. `waiting`: own messages were transmitted and not seen ordered;
   * `announced`: the highest own msgId seen ordered; `stable`: the stable slot this member heard; `top`: the highest
   * slot it knows exists. Returns why to suspect the sequencer now, or null.
   *
   * Time counts only while everything known is stable: a stall that stability explains (a laggard, a stopped reader
   * that fills the sequencer's windows) is no evidence, even once it ends — the sequencer then needs a moment to order.
   */
  check(now: number, waiting: boolean, announced: number, stable: number, top: number): string | null {
    if (!this.active) return null
    const gap = now - this.lastCheck
    this.lastCheck = now
    const ran = gap > this.boundMs / 4 ? 0 : gap
    if (!waiting || !this.waited || announced !== this.announced) this.starvedMs = 0
    else if (stable >= top) this.starvedMs += ran
    this.waited = waiting
    this.announced = announced
    const bound = 2 * this.boundMs
    if (this.starvedMs < bound || now - this.suspectedAt < bound) return null
    this.suspectedAt = now
    return `ordered none of this member's messages for ${Math.round(this.starvedMs)} ms in which every slot it knew of was stable (bound ${bound} ms)`
  }
}
