/**
 * The engine's host (lib/group.ts, or the simulator in test/fixtures): what the engine needs of it (`EngineEnv`) and
 * what it hands it — deliveries, lifecycle changes, counters.
 */
import type { StateData, StateReq } from './wire.js'
import type { ToDirectory } from './dirproto.js'
import type { SeqcastError } from './errors.js'
import type { Transport } from './transport.js'

export type Delivery =
  | { type: 'message'; group: string; sender: string; seq: number; data: Uint8Array }
  | { type: 'view'; group: string; viewId: number; members: string[]; sequencer: string; seq: number }

/** Where the member is in its life. */
export type Lifecycle = 'joining' | 'joined' | 'leaving' | 'left' | 'failed'

export interface EngineEnv {
  now(): number
  /** Where datagrams go (to the group, or to one member's "ip:port"); told the group's channel and peers. */
  readonly transport: Transport
  toDirectory(frame: ToDirectory): void
  deliver(d: Delivery): void
  /** A STATEREQ or STATE datagram from the member it names, at its view address (PROTOCOL.md §8.3). */
  state?(d: StateReq | StateData): void
  /** Ask for `flush()` once the input at hand is handled (group.ts: process.nextTick for a turn's first inputs, else at its end). */
  scheduleFlush(): void
  /**
   * Ask for `flush()` at time `at` (on the `now()` clock), sooner than the next tick: a gap waiting out its reorder
   * allowance is asked for then even if nothing arrives meanwhile (PROTOCOL.md §4.6). A later request while an
   * earlier one is pending may be ignored.
   */
  flushAt(at: number): void
  /** The send window has room again. */
  windowOpened(): void
  /** The lifecycle changed: joined, left or failed (with the error). */
  lifecycle(state: Lifecycle, err?: SeqcastError): void
  /**
   * False while this member cannot be sure it is still a member (its directory lease ran out, e.g. after the
   * process was paused): then it neither orders nor delivers until the directory answers again or expels it.
   */
  leaseValid(): boolean
  /**
   * False while the application's queue of unconsumed deliveries is full: delivery pauses and this member
   * acknowledges only what it delivered, so stability — and with it every sender's window — waits for it.
   */
  deliveryRoom(): boolean
}

export interface EngineStats {
  sent: number
  delivered: number
  datagramsIn: number
  datagramsOut: number
  dropped: number
  foreign: number
  duplicates: number
  nacksSent: number
  nacksServed: number
  retransmitted: number
  /** Bytes of the datagrams (ORDER and DATA) this member sent answering NACKs. */
  retransmittedBytes: number
  resent: number
  /** Bytes of the DATA datagrams this member sent again to the sequencer (`resent` counts their messages). */
  resentBytes: number
  ordered: number
  views: number
  violations: number
  /** Fragments delivered to nobody: pieces of messages begun before this member joined, or never finished. */
  skipped: number
}
