/**
 * Whether this member hears its group's multicast (PROTOCOL.md §4.8). Clouds and some switches drop multicast
 * without a word; a member there still gets the sequencer's unicast heartbeats (sent to every member every
 * `probeMs` while the group runs on multicast), yet nothing on the multicast address. Such a member is deaf: it
 * tells the directory, which moves the group to unicast fan-out (`auto`) or fails the member with ENOMULTICAST.
 *
 * Pure: the engine reports what arrived and asks at each tick.
 */
export class MulticastHearing {
  /** When this view's watch began (install); nothing is judged before a whole window has passed. */
  private since = Infinity
  private lastGroupAt = -Infinity
  private lastDirectAt = -Infinity
  private reported = false
  private active = false

  /** `windowMs`: how long a member must hear the sequencer by unicast and nobody by multicast to be deaf. */
  constructor(private readonly windowMs: number) {}

  /** Set per datagram, folded into times at the next check: no clock read per datagram. */
  private groupHeard = false
  private directHeard = false

  /**
   * A view was installed: watch while it runs on multicast and has a sequencer other than this member. (A
   * sequencer that hears no multicast but is heard is not detected: the senders' resends reach it by unicast.)
   */
  watch(multicast: boolean, sequencerIsMe: boolean, now: number): void {
    this.active = multicast && !sequencerIsMe
    this.since = now
    this.lastGroupAt = -Infinity
    this.lastDirectAt = -Infinity
    this.reported = false
    this.groupHeard = this.directHeard = false
  }

  /** A datagram of the group from another member: on the multicast address, or (from the sequencer) by unicast. */
  heard(via: 'group' | 'direct', fromSequencer: boolean): void {
    if (via === 'group') this.groupHeard = true
    else if (fromSequencer) this.directHeard = true
  }

  /** True once, when the member is deaf: the sequencer reaches it, multicast has not for a whole window. */
  deaf(now: number): boolean {
    if (this.groupHeard) this.lastGroupAt = now
    if (this.directHeard) this.lastDirectAt = now
    this.groupHeard = this.directHeard = false
    if (!this.active || this.reported || now - this.since < this.windowMs) return false
    if (now - this.lastGroupAt < this.windowMs || now - this.lastDirectAt >= this.windowMs) return false
    this.reported = true
    return true
  }
}
