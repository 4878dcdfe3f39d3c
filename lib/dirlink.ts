/**
 * The member's directory client (PROTOCOL.md §3, §7), free of sockets and timers: the join, pings and the lease,
 * reconnecting with backoff when the connection is lost, and the rejoin. The socket shell (group.ts) or the
 * simulator opens connections when asked and reports what happens to them; `tick()` is driven by the member's
 * periodic timer.
 *
 *   idle ──start──▶ connecting ──connected──▶ up ──closed──▶ waiting ──retry due──▶ reconnecting ──connected──▶ up
 *                        │ failed: join fails               ▲        (backoff 250 ms doubling to 2 s) │ failed
 *                        ▼                                   └────────────────────────────────────────┘
 * A connection lost while joining fails the join; while leaving, the member closes (PROTOCOL.md §7).
 */
import { DirectoryError, ErrorCodes, type SeqcastError } from './errors.js'
import { DirectoryReader, type EpochKey, type FromDirectory, type ToDirectory, type ToDirectoryOf } from './dirproto.js'
import type { Frame } from './frame.js'
import type { Lifecycle } from './host.js'

export const RECONNECT_MIN_MS = 250
export const RECONNECT_MAX_MS = 2000

export type LinkState = 'idle' | 'connecting' | 'up' | 'waiting' | 'reconnecting' | 'closed'

export interface DirLinkEnv {
  now(): number
  /** Open a connection to the directory; answer later with connected() or connectFailed(). */
  connect(): void
  /** Write a frame on the open connection. */
  write(f: ToDirectory): void
  /** A frame from the directory, read and checked: for the engine. */
  frame(f: FromDirectory): void
  /** Where the member is in its life (the engine's lifecycle). */
  lifecycle(): Lifecycle
  /** The rejoin this member sends a directory it reconnected to, or null if it has nothing to rejoin with. */
  rejoin(address: string): ToDirectoryOf<'rejoin'> | null
  /** The connection was lost (the data path goes on, membership is frozen) or restored by a rejoin. */
  directory(state: 'lost' | 'restored'): void
  /** The lease had run out and is valid again: held-back delivery may go on. */
  leaseRenewed(): void
  /** The member cannot go on (join refused or lost, a frame it cannot act on, nothing to rejoin with). */
  fail(err: SeqcastError): void
  /** The directory went away while this member was leaving: it closes without the release. */
  closeWhileLeaving(): void
  /**
   * A keyed directory's `keys` frame (§3.5): open datagrams with `keys`, seal with `use`, and authenticate the next
   * link with them. The link acknowledges it once this returns.
   */
  keys(keys: EpochKey[], use: number): void
}

export class DirLink {
  state: LinkState = 'idle'
  private join: ToDirectoryOf<'join'> | null = null
  private readonly reader = new DirectoryReader()
  private retryDelay = RECONNECT_MIN_MS
  private retryAt = 0
  /** Send times of pings not yet answered, oldest first (the directory answers in order). */
  private readonly pingsSent: number[] = []
  private pingMs = Infinity
  private lastPingAt = -Infinity
  private lease = Infinity
  private leaseUntil = Infinity
  private welcomed = false

  constructor(private readonly env: DirLinkEnv, private readonly address: string) {}

  /** Connects and sends `join` once connected. */
  start(join: ToDirectoryOf<'join'>): void {
    if (this.state !== 'idle') return
    this.join = join
    this.state = 'connecting'
    this.env.connect()
  }

  connected(): void {
    if (this.state === 'connecting') {
      this.state = 'up'
      this.send(this.join!)
    } else if (this.state === 'reconnecting') {
      const rejoin = this.env.rejoin(this.address)
      this.retryDelay = RECONNECT_MIN_MS
      if (!rejoin) return this.fail(new DirectoryError(ErrorCodes.DIRECTORY_LOST, 'lost the directory with nothing to rejoin with'))
      this.state = 'up'
      this.send(rejoin)
      this.env.directory('restored')
    }
  }

  connectFailed(why: string): void {
    if (this.state === 'connecting') {
      this.fail(new DirectoryError(ErrorCodes.DIRECTORY_UNREACHABLE, `cannot reach the directory: ${why}`))
    } else if (this.state === 'reconnecting') {
      this.state = 'waiting'
      this.retryDelay = Math.min(RECONNECT_MAX_MS, this.retryDelay * 2)
      this.retryAt = this.env.now() + this.retryDelay
    }
  }

  /** The open connection closed (either side, or broken). */
  closed(): void {
    if (this.state !== 'up') return
    this.pingsSent.length = 0
    this.welcomed = false
    const lc = this.env.lifecycle()
    if (lc === 'joining') {
      this.fail(new DirectoryError(ErrorCodes.DIRECTORY_LOST, 'the directory closed the connection during join'))
    } else if (lc === 'leaving') {
      this.state = 'closed'
      this.env.closeWhileLeaving()
    } else if (lc === 'joined') {
      // The data path goes on without the directory; no membership change can happen meanwhile (PROTOCOL.md §7).
      this.state = 'waiting'
      this.retryAt = this.env.now() + this.retryDelay
      this.env.directory('lost')
    } else {
      this.state = 'closed'
    }
  }

  /** A frame decoded from the connection. */
  received(raw: Frame): void {
    if (this.state !== 'up') return
    let f: FromDirectory
    try {
      f = this.reader.read(raw)
    } catch (err) {
      // A frame this member cannot act on: it fails (grp_join rejects, or an `error` event), the process goes on.
      return this.fail(err as SeqcastError)
    }
    const now = this.env.now()
    this.pingIfDue(now)
    if (f.t === 'pong') return this.pong(now)
    if (f.t === 'keys') {
      this.env.keys(f.keys, f.use)
      return this.send({ t: 'keyed', seq: f.seq })
    }
    if (f.t === 'rotated') return // an answer for `dir rotate-key`, never sent to a member
    if (f.t === 'welcome') this.welcome(f, now)
    this.env.frame(f)
  }

  /** The directory had not expelled us when it read that ping: we stay a member for the lease after it. */
  private pong(now: number): void {
    const sentAt = this.pingsSent.shift()
    if (sentAt === undefined) return
    const lease = sentAt + this.lease
    if (lease <= this.leaseUntil) return
    const expired = now >= this.leaseUntil
    this.leaseUntil = lease
    if (expired) this.env.leaseRenewed()
  }

  private welcome(f: FromDirectory & { t: 'welcome' }, now: number): void {
    this.pingsSent.length = 0 // a new connection owes no pong for pings sent on an old one
    // Checked by the reader: 1 ≤ heartbeatMs < timeoutMs. Expulsion needs timeoutMs of silence after our last ping
    // that got through; stop well before that.
    this.lease = f.timeoutMs - f.heartbeatMs
    this.leaseUntil = now + this.lease
    this.pingMs = f.heartbeatMs
    this.welcomed = true
  }

  /** To the directory; dropped while there is no connection (a rejoin restates what matters). */
  send(f: ToDirectory): void {
    if (this.state === 'up') this.env.write(f)
  }

  /** The member's periodic work: a ping when due, a reconnection attempt when its backoff has passed. */
  tick(): void {
    const now = this.env.now()
    if (this.state === 'waiting' && now >= this.retryAt) {
      this.state = 'reconnecting'
      this.env.connect()
      return
    }
    this.pingIfDue(now)
  }

  /**
   * A ping that is due goes out now, not when a timer gets a turn: when a thousand members of one process take a
   * commit (or a burst of datagrams), that I/O alone keeps the event loop busy for a second or more, timers wait,
   * and the directory would count that as silence. Only a ping that goes out is owed a pong: one "sent" while the
   * connection is down would shift every later pong onto an older ping, and the lease would never be renewed.
   */
  pingIfDue(now = this.env.now()): void {
    if (this.state !== 'up' || !this.welcomed || now - this.lastPingAt < this.pingMs) return
    this.lastPingAt = now
    this.pingsSent.push(now)
    this.send({ t: 'ping' })
  }

  /**
   * False while this member cannot be sure it is still a member: its lease ran out on an open connection (the
   * process was paused, or the directory is slow to answer). Without a connection the data path goes on (§7).
   */
  leaseValid(): boolean {
    return this.state !== 'up' || this.env.now() < this.leaseUntil
  }

  close(): void {
    this.state = 'closed'
  }

  private fail(err: SeqcastError): void {
    this.state = 'closed'
    this.env.fail(err)
  }
}
