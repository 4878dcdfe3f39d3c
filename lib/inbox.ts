/**
 * A member's deliveries on their way to the application: handed to a waiting `receive()`, to event listeners, or
 * queued (bounded by maxQueuedBytes: when full, the engine stops delivering and the group's flow control holds the
 * senders back). While the member waits for the group's state (PROTOCOL.md §8) everything is held in the queue.
 * `handing` sees each delivery at the moment the application gets it: where a donor takes its snapshot (§8.2).
 */
import type { Delivery } from './host.js'

/** What a queued delivery counts against maxQueuedBytes: its data and a fixed share for the object around it. */
export function queuedSize(d: Delivery): number {
  return (d.type === 'message' ? d.data.length : 0) + 64
}

export interface InboxEnv {
  maxQueuedBytes: number
  /** True when the application listens to events (deliveries are emitted, not queued). */
  listening(): boolean
  emit(d: Delivery): void
  /** The delivery is about to reach the application (before the taker resolves or the event fires). */
  handing(d: Delivery): void
  /** The queue was full and has room again: delivery may resume. */
  room(): void
}

export interface Taker {
  resolve(d: Delivery | null): void
  reject(e: Error): void
}

export class Inbox {
  private readonly queue: Delivery[] = []
  private readonly takers: Taker[] = []
  /** Bytes held by the queue (data plus a fixed overhead per delivery). */
  bytes = 0
  /** While true nothing reaches the application: the member waits for the group's state. */
  private holding = false
  /** Deliveries pushed are dropped until one this accepts (dropUntil found none held). */
  private skipping: ((d: Delivery) => boolean) | null = null

  constructor(private readonly env: InboxEnv) {}

  get length(): number {
    return this.queue.length
  }

  /** Room for more deliveries (the engine's deliveryRoom). */
  hasRoom(): boolean {
    return this.bytes < this.env.maxQueuedBytes
  }

  push(d: Delivery): void {
    if (this.skipping) {
      if (!this.skipping(d)) return
      this.skipping = null
    }
    if (!this.holding && this.queue.length === 0) {
      const taker = this.takers.shift()
      if (taker) {
        this.env.handing(d)
        return taker.resolve(d)
      }
      if (this.env.listening()) {
        this.env.handing(d)
        return this.env.emit(d)
      }
    }
    this.queue.push(d)
    this.bytes += queuedSize(d)
    // Listeners added while deliveries were queued: those go first, in order.
    if (!this.holding && this.env.listening()) this.drain()
  }

  /** The oldest queued delivery for the application (undefined: none, or held). */
  take(): Delivery | undefined {
    if (this.holding) return undefined
    const d = this.queue.shift()
    if (d) {
      const full = this.bytes >= this.env.maxQueuedBytes
      this.bytes -= queuedSize(d)
      this.env.handing(d)
      if (full && this.bytes < this.env.maxQueuedBytes) this.env.room()
    }
    return d
  }

  /** A `receive()` waiting for the next delivery. */
  wait(taker: Taker): void {
    this.takers.push(taker)
  }

  /** A waiting `receive()` gave up (its timeout). */
  cancel(taker: Taker): void {
    const i = this.takers.indexOf(taker)
    if (i >= 0) this.takers.splice(i, 1)
  }

  /** Hold everything from now on (the member waits for the group's state). */
  hold(): void {
    this.holding = true
  }

  /**
   * Drops the held deliveries before the first that `keep` accepts (the state point moved past them, §8.2); if none
   * held is, also every delivery pushed until one is — the new state point may be a view not delivered yet, with
   * deliveries before it still to come (they must not fill the queue it has to reach).
   */
  dropUntil(keep: (d: Delivery) => boolean): void {
    const full = this.bytes >= this.env.maxQueuedBytes
    while (this.queue.length > 0 && !keep(this.queue[0]!)) this.bytes -= queuedSize(this.queue.shift()!)
    this.skipping = this.queue.length === 0 ? keep : null
    if (full && this.bytes < this.env.maxQueuedBytes) this.env.room()
  }

  /** The state is restored: what was held goes to the application, in order. */
  release(): void {
    if (!this.holding) return
    this.holding = false
    this.drain()
  }

  /** Hands queued deliveries to waiting takers, or to listeners (those added after deliveries were queued). */
  drain(): void {
    while (this.queue.length > 0 && (this.takers.length > 0 || this.env.listening()) && !this.holding) {
      const d = this.take()!
      const taker = this.takers.shift()
      if (taker) taker.resolve(d)
      else this.env.emit(d)
    }
  }

  /** The member closed: waiting takers get null, or `err` if it failed. */
  close(err: Error | null): void {
    for (const t of this.takers.splice(0)) {
      if (err) t.reject(err)
      else t.resolve(null)
    }
  }
}
