/**
 * `Group`: one member of one group, over real sockets. It wires the protocol engine (engine.ts) to
 * - a TCP connection to the directory (control plane, PROTOCOL.md §3),
 * - a UDP socket bound to the local interface, for unicast and for sending multicast,
 * - a UDP socket joined to the group's multicast address,
 * and turns deliveries into events, a pull queue (`receive`) and async iteration.
 */
import { EventEmitter } from 'eventemitter3'
import dgram from 'node:dgram'
import fs from 'node:fs'
import net from 'node:net'
import os from 'node:os'
import { Engine, type Delivery, type EngineStats, type Lifecycle } from './engine.js'
import { ArgumentError, DirectoryError, ErrorCodes, JoinTimeoutError, LeaveTimeoutError, NotJoinedError, SeqcastError } from './errors.js'
import { DirectoryReader, type FromDirectory } from './dirproto.js'
import { encodeFrame, FrameDecoder, MAX_FRAME_FROM_DIRECTORY, type Frame } from './frame.js'
import { checkMaxMessage, parseJoinOptions, parseMulticastAddr, parseUnicastAddr, type JoinOptions, type ResolvedJoinOptions } from './options.js'
import { logger } from './log.js'

const log = logger('group')
const SOCKET_BUFFER = 4 * 1024 * 1024
const MAX_NAME_BYTES = 64
const RECONNECT_MIN_MS = 250
const RECONNECT_MAX_MS = 2000

export type MessageDelivery = Extract<Delivery, { type: 'message' }>
export type ViewDelivery = Extract<Delivery, { type: 'view' }>

export interface GroupEvents {
  message: (d: MessageDelivery) => void
  view: (d: ViewDelivery) => void
  error: (err: SeqcastError) => void
  /** The directory connection was lost (the data path goes on, membership is frozen) or restored. */
  directory: (state: 'lost' | 'restored') => void
  /** The member left (after leave()) or was closed. */
  close: () => void
}

export interface GroupStats extends EngineStats {
  have: number
  delivered: number
  stable: number
  viewId: number
  sequencer: boolean
  retainedBytes: number
  /** Bytes of own messages sent but not yet stable (at most sendWindowBytes, or one datagram more). */
  inflightBytes: number
  /** Datagrams that could not be sent: a bad peer address (from a view), or an error from the socket. */
  sendErrors: number
  /** Deliveries waiting for receive(). */
  queued: number
  /** What they count against maxQueuedBytes (data + 64 per delivery). */
  queuedBytes: number
}

function checkName(value: unknown, what: string): string {
  if (typeof value !== 'string' || value.length === 0 || Buffer.byteLength(value) > MAX_NAME_BYTES) {
    throw new ArgumentError(`${what} must be a non-empty string of at most ${MAX_NAME_BYTES} bytes`)
  }
  return value
}

export class Group extends EventEmitter<GroupEvents> {
  readonly engine: Engine
  private readonly opts: ResolvedJoinOptions
  private readonly uni: dgram.Socket
  private mcast: dgram.Socket | null = null
  private mcastKey = ''
  private conn: net.Socket | null = null
  private reconnectTimer: NodeJS.Timeout | null = null
  private reconnectDelay = RECONNECT_MIN_MS
  private ticker: NodeJS.Timeout | null = null
  private pinger: NodeJS.Timeout | null = null
  private flushQueued = false
  private readonly reader = new DirectoryReader()
  /** Datagrams that could not be sent (stats().sendErrors). */
  private sendErrors = 0
  /** The last unicast address parsed: ACKs and resends go to the same sequencer again and again. */
  private lastTo = ''
  private lastTarget: { host: string; port: number } | null = null
  private readonly queue: Delivery[] = []
  /** Bytes held by `queue` (data plus a fixed overhead per delivery), bounded by maxQueuedBytes. */
  private queuedBytes = 0
  private readonly takers: Array<{ resolve: (d: Delivery | null) => void; reject: (e: Error) => void; timer?: NodeJS.Timeout }> = []
  private readonly senders: Array<{ data: Uint8Array; resolve: () => void; reject: (e: Error) => void }> = []
  private closed = false
  private failure: SeqcastError | null = null
  private joined!: { resolve: () => void; reject: (e: Error) => void }
  private leftWaiter: { resolve: () => void; reject: (e: Error) => void } | null = null
  private wasJoined = false

  private constructor(readonly name: string, readonly memberId: string, opts: ResolvedJoinOptions) {
    super()
    this.opts = opts
    this.engine = new Engine(name, memberId, opts, {
      now: () => performance.now(),
      send: (buf, to) => this.sendDatagram(buf, to),
      toDirectory: (f) => this.toDirectory(f),
      deliver: (d) => this.onDelivery(d),
      scheduleFlush: () => {
        if (this.flushQueued) return
        this.flushQueued = true
        setImmediate(() => {
          this.flushQueued = false
          if (!this.closed) this.engine.flush()
        })
      },
      windowOpened: () => this.pumpSends(),
      leaseValid: () => this.conn === null || this.conn.destroyed || performance.now() < this.leaseUntil,
      // A leaving member drains regardless: its own messages must become stable for the leave to complete.
      deliveryRoom: () => this.queuedBytes < this.opts.maxQueuedBytes || this.engine.lifecycle === 'leaving',
      lifecycle: (state, err) => this.onLifecycle(state, err),
    })
    this.uni = dgram.createSocket({ type: 'udp4' })
  }

  /** Joins `group` as `memberId`; resolves once the member is in a view (its first delivery is that view). */
  static async join(group: string, memberId: string, options: JoinOptions = {}): Promise<Group> {
    checkName(group, 'group')
    checkName(memberId, 'memberId')
    const opts = parseJoinOptions(options)
    if (options.maxDatagram === undefined) {
      opts.maxDatagram = datagramSizeFor(opts.iface) ?? opts.maxDatagram
      checkMaxMessage(opts, ` (from the MTU of ${opts.iface})`)
    }
    const g = new Group(group, memberId, opts)
    await g.start()
    return g
  }

  private async start(): Promise<void> {
    const done = new Promise<void>((resolve, reject) => (this.joined = { resolve, reject }))
    done.catch(() => {}) // a failure before we await it is thrown from the try below
    const timer = setTimeout(() => this.abort(new JoinTimeoutError(`no view for ${this.memberId} in group ${this.name} after ${this.opts.joinTimeoutMs} ms`)), this.opts.joinTimeoutMs)
    try {
      await this.openUnicast()
      await this.connectDirectory()
      const addr = this.uni.address()
      this.toDirectory({ t: 'join', proto: 1, group: this.name, member: this.memberId, addr: `${addr.address}:${addr.port}` })
      this.ticker = setInterval(() => this.engine.tick(), this.opts.tickMs)
      await done
    } catch (err) {
      this.abort(err as SeqcastError)
      throw err
    } finally {
      clearTimeout(timer)
    }
  }

  private openUnicast(): Promise<void> {
    return new Promise((resolve, reject) => {
      this.uni.once('error', reject)
      this.uni.bind(0, this.opts.iface, () => {
        this.uni.off('error', reject)
        // Errors sending (a send without a callback reports them here): counted, like a lost datagram.
        this.uni.on('error', (err) => this.sendFailed('?', err.message))
        this.uni.setMulticastInterface(this.opts.iface)
        this.uni.setMulticastTTL(this.opts.ttl)
        this.uni.setMulticastLoopback(true)
        tuneBuffers(this.uni)
        this.uni.on('message', (buf) => this.onDatagram(buf))
        resolve()
      })
    })
  }

  /** Joins the group's multicast address (checked by DirectoryReader). */
  private openMulticast(mcast: string): void {
    if (this.mcastKey === mcast) return
    const target = parseMulticastAddr(mcast)
    if (!target) return
    this.mcast?.close()
    const { host, port } = target
    const s = dgram.createSocket({ type: 'udp4', reuseAddr: true })
    s.on('error', (err) => log('%s: multicast socket error %s', this.memberId, err.message))
    s.on('message', (buf) => this.onDatagram(buf))
    s.bind(port, host, () => {
      try {
        s.addMembership(host, this.opts.iface)
        tuneBuffers(s)
      } catch (err) {
        log('%s: cannot join multicast %s on %s: %s', this.memberId, mcast, this.opts.iface, (err as Error).message)
      }
    })
    this.mcast = s
    this.mcastKey = mcast
    this.mcastTarget = { host, port }
  }

  private mcastTarget: { host: string; port: number } | null = null
  private lease = Infinity
  private leaseUntil = Infinity
  private readonly pingsSent: number[] = []
  private heartbeatMs = 0
  private lastPingAt = 0

  /**
   * Never throws: a peer address from a view that is not a unicast "ip:port" (dgram would throw for a port
   * above 65535, or look a name up) and a socket that refuses the datagram are counted in `sendErrors`.
   */
  private sendDatagram(buf: Buffer, to: string | null): void {
    if (this.closed) return
    let target = this.mcastTarget
    if (to !== null) {
      if (to !== this.lastTo) {
        this.lastTo = to
        this.lastTarget = parseUnicastAddr(to)
      }
      target = this.lastTarget
      if (!target) return this.sendFailed(to, 'not a unicast "ip:port"')
    }
    if (!target) return
    try {
      this.uni.send(buf, target.port, target.host)
    } catch (err) {
      this.sendFailed(to ?? this.mcastKey, (err as Error).message)
    }
  }

  private sendFailed(to: string, why: string): void {
    this.sendErrors++
    log('%s: cannot send to %s: %s', this.memberId, to, why)
  }

  private connectDirectory(): Promise<void> {
    const { host, port } = this.opts.directory
    return new Promise((resolve, reject) => {
      const sock = net.connect({ host, port })
      sock.setNoDelay(true)
      let connected = false
      sock.once('connect', () => {
        connected = true
        sock.off('error', onError)
        sock.on('error', (err) => log('%s: directory connection error %s', this.memberId, err.message))
        resolve()
      })
      const onError = (err: Error): void => reject(new DirectoryError(ErrorCodes.DIRECTORY_UNREACHABLE, `cannot reach the directory at ${host}:${port}: ${err.message}`, err))
      sock.once('error', onError)
      const decoder = new FrameDecoder(MAX_FRAME_FROM_DIRECTORY)
      sock.on('data', (chunk) => {
        let frames: Frame[]
        try {
          frames = decoder.push(chunk)
        } catch (err) {
          log('%s: bad frame from directory: %s', this.memberId, (err as Error).message)
          sock.destroy()
          return
        }
        for (const f of frames) this.onFrame(f)
      })
      sock.on('close', () => {
        // A failed reconnection attempt also closes: only a connection that was up is a loss.
        if (connected) this.onDirectoryClosed()
      })
      this.conn = sock
    })
  }

  private onFrame(frame: Frame): void {
    if (this.closed) return
    let f: FromDirectory
    try {
      f = this.reader.read(frame)
    } catch (err) {
      // A frame this member cannot act on: it fails (grp_join rejects, or an `error` event), the process goes on.
      log('%s: %s', this.memberId, (err as Error).message)
      this.abort(err as SeqcastError)
      return
    }
    this.pingIfDue()
    switch (f.t) {
      case 'pong': {
        // The directory had not expelled us when it read that ping: we stay a member for the lease after it.
        const sentAt = this.pingsSent.shift()
        if (sentAt !== undefined) {
          const lease = sentAt + this.lease
          if (lease > this.leaseUntil) {
            const expired = performance.now() >= this.leaseUntil
            this.leaseUntil = lease
            if (expired) this.engine.flush()
          }
        }
        return
      }
      case 'welcome': {
        if (this.pinger) clearInterval(this.pinger)
        this.pingsSent.length = 0 // a new connection owes no pong for pings sent on an old one
        const every = typeof f.heartbeatMs === 'number' && f.heartbeatMs > 0 ? f.heartbeatMs : 500
        const timeout = typeof f.timeoutMs === 'number' && f.timeoutMs > every ? f.timeoutMs : 4 * every
        // Expulsion needs timeoutMs of silence after our last ping that got through; stop well before that.
        this.lease = timeout - every
        this.leaseUntil = performance.now() + this.lease
        this.heartbeatMs = every
        this.pinger = setInterval(() => this.ping(), every)
        break
      }
      case 'commit':
        if (typeof f.mcast === 'string') this.openMulticast(f.mcast)
        break
    }
    this.engine.directory(f)
  }

  private onDatagram(buf: Buffer): void {
    this.engine.datagram(buf)
    this.pingIfDue() // a burst of datagrams keeps timers waiting too
  }

  private ping(): void {
    // Only a ping that goes out is owed a pong: one "sent" while the connection is down would shift every later
    // pong onto an older ping, and the lease would never be renewed again.
    if (!this.conn || this.conn.destroyed) return
    this.lastPingAt = performance.now()
    this.pingsSent.push(this.lastPingAt)
    this.toDirectory({ t: 'ping' })
  }

  /**
   * A ping that is due goes out now, not when its timer gets a turn: when a thousand members of one process take a
   * commit (or a burst of datagrams), that I/O alone keeps the event loop busy for a second or more, timers wait, and
   * the directory would count that as silence.
   */
  private pingIfDue(): void {
    if (this.pinger && !this.closed && performance.now() - this.lastPingAt >= this.heartbeatMs) this.ping()
  }

  private onDirectoryClosed(): void {
    if (this.closed) return
    const lc = this.engine.lifecycle
    if (lc === 'joining') {
      this.abort(new DirectoryError(ErrorCodes.DIRECTORY_LOST, 'the directory closed the connection during join'))
    } else if (lc === 'leaving') {
      log('%s: directory gone while leaving; closing', this.memberId)
      this.finishLeave()
    } else if (lc === 'joined') {
      // The data path goes on without the directory; no membership change can happen meanwhile (PROTOCOL.md §7).
      log('%s: lost the directory connection; data path continues, reconnecting', this.memberId)
      if (this.pinger) clearInterval(this.pinger)
      this.pinger = null
      this.pingsSent.length = 0
      this.emit('directory', 'lost')
      this.scheduleReconnect()
    }
  }

  private scheduleReconnect(): void {
    if (this.closed || this.reconnectTimer) return
    this.reconnectTimer = setTimeout(() => {
      this.reconnectTimer = null
      if (this.closed) return
      this.connectDirectory().then(
        () => {
          if (this.closed) return
          const addr = this.uni.address()
          const rejoin = this.engine.rejoinFrame(`${addr.address}:${addr.port}`)
          this.reconnectDelay = RECONNECT_MIN_MS
          if (!rejoin) {
            this.abort(new DirectoryError(ErrorCodes.DIRECTORY_LOST, 'lost the directory with nothing to rejoin with'))
            return
          }
          this.toDirectory(rejoin)
          log('%s: reconnected to the directory, rejoining with commit %d', this.memberId, (rejoin.commit as { viewId: number }).viewId)
          this.emit('directory', 'restored')
        },
        () => {
          this.reconnectDelay = Math.min(RECONNECT_MAX_MS, this.reconnectDelay * 2)
          this.scheduleReconnect()
        },
      )
    }, this.reconnectDelay)
  }

  private toDirectory(f: Frame): void {
    if (!this.conn || this.conn.destroyed) return
    let bytes: Buffer
    try {
      bytes = encodeFrame(f)
    } catch (err) {
      // Cannot happen within the documented limits (test/limits.ts encodes the largest frames).
      this.abort(err as SeqcastError)
      return
    }
    this.conn.write(bytes)
  }

  private onLifecycle(state: Lifecycle, err?: SeqcastError): void {
    if (state === 'joined') {
      this.wasJoined = true
      this.joined.resolve()
    }
    else if (state === 'left') this.finishLeave()
    else if (state === 'failed' && err) this.abort(err)
  }

  private onDelivery(d: Delivery): void {
    const taker = this.takers.shift()
    if (taker) {
      if (taker.timer) clearTimeout(taker.timer)
      taker.resolve(d)
    } else if (this.listenerCount('message') + this.listenerCount('view') > 0) {
      if (d.type === 'message') this.emit('message', d)
      else this.emit('view', d)
    } else {
      this.queue.push(d)
      this.queuedBytes += queuedSize(d)
    }
  }

  /** Takes the oldest queued delivery; if that made room in a full queue, delivery resumes. */
  private dequeue(): Delivery | undefined {
    const d = this.queue.shift()
    if (d) {
      const full = this.queuedBytes >= this.opts.maxQueuedBytes
      this.queuedBytes -= queuedSize(d)
      if (full && this.queuedBytes < this.opts.maxQueuedBytes && !this.closed) setImmediate(() => !this.closed && this.engine.flush())
    }
    return d
  }

  /** Multicasts `data` to the group; resolves once accepted for sending (waits while the send window is full). */
  send(data: Uint8Array | string): Promise<void> {
    if (typeof data === 'string') data = Buffer.from(data, 'utf8')
    else if (!(data instanceof Uint8Array)) return Promise.reject(new ArgumentError('data must be a Uint8Array or a string'))
    if (this.failure) return Promise.reject(this.failure)
    if (this.closed || this.engine.lifecycle !== 'joined') return Promise.reject(new NotJoinedError())
    if (this.senders.length === 0) {
      try {
        if (this.engine.submit(data)) return Promise.resolve()
      } catch (err) {
        return Promise.reject(err)
      }
    }
    return new Promise((resolve, reject) => {
      this.senders.push({ data: data as Uint8Array, resolve, reject })
    })
  }

  private pumpSends(): void {
    while (this.senders.length > 0) {
      const s = this.senders[0]!
      try {
        if (!this.engine.submit(s.data)) return
        this.senders.shift()
        s.resolve()
      } catch (err) {
        this.senders.shift()
        s.reject(err as Error)
      }
    }
  }

  /** The next delivery in order; null if `timeoutMs` passes first. */
  receive(opts: { timeoutMs?: number } = {}): Promise<Delivery | null> {
    const timeoutMs = opts.timeoutMs
    if (timeoutMs !== undefined && (typeof timeoutMs !== 'number' || !(timeoutMs >= 0))) {
      return Promise.reject(new ArgumentError('timeoutMs must be a non-negative number'))
    }
    const queued = this.dequeue()
    if (queued) return Promise.resolve(queued)
    if (this.failure) return Promise.reject(this.failure)
    if (this.closed) return Promise.reject(new NotJoinedError())
    return new Promise((resolve, reject) => {
      const taker: (typeof this.takers)[number] = { resolve, reject }
      if (timeoutMs !== undefined) {
        taker.timer = setTimeout(() => {
          const i = this.takers.indexOf(taker)
          if (i >= 0) this.takers.splice(i, 1)
          resolve(null)
        }, timeoutMs)
      }
      this.takers.push(taker)
    })
  }

  async *[Symbol.asyncIterator](): AsyncGenerator<Delivery> {
    for (;;) {
      if (this.closed && this.queue.length === 0) return
      let d: Delivery | null
      try {
        d = await this.receive()
      } catch (err) {
        if ((err as SeqcastError).code === ErrorCodes.NOT_JOINED) return
        throw err
      }
      if (d) yield d
    }
  }

  /** The installed view, or null before the first one. */
  get view(): { viewId: number; members: string[]; sequencer: string } | null {
    return this.engine.view
  }

  stats(): GroupStats {
    return { ...this.engine.snapshot(), sendErrors: this.sendErrors, queued: this.queue.length, queuedBytes: this.queuedBytes }
  }

  /** Announces the leave, waits until this member's messages are delivered everywhere, then closes. */
  async leave(): Promise<void> {
    if (this.closed || this.engine.lifecycle !== 'joined') throw this.failure ?? new NotJoinedError()
    const left = new Promise<void>((resolve, reject) => (this.leftWaiter = { resolve, reject }))
    this.engine.leave()
    // Closing without the group's confirmation is a crash to the others: say so rather than resolve.
    const timer = setTimeout(() => {
      log('%s: leave not confirmed after %d ms; closing', this.memberId, this.opts.leaveTimeoutMs)
      this.abort(new LeaveTimeoutError(
        `group ${this.name} did not confirm the leave of ${this.memberId} within ${this.opts.leaveTimeoutMs} ms; closed without it ` +
        '(messages of this member not yet stable may be lost, and what it delivered may not match the others past their stable slot)',
      ))
    }, this.opts.leaveTimeoutMs)
    try {
      await left
    } finally {
      clearTimeout(timer)
    }
  }

  private finishLeave(): void {
    this.shutdown()
    const w = this.leftWaiter
    this.leftWaiter = null
    w?.resolve()
    this.emit('close')
  }

  /** Closes at once, without a leave: to the others it looks like a crash (the directory notices the closed connection). */
  close(): void {
    if (this.closed) return
    this.shutdown()
    this.emit('close')
  }

  private abort(err: SeqcastError): void {
    if (this.closed) return
    this.failure = err
    this.shutdown()
    this.joined?.reject(err)
    this.leftWaiter?.reject(err)
    this.leftWaiter = null
    // Before the join completed, the error rejects grp_join; after, it is an event.
    if (this.wasJoined) this.emit('error', err)
  }

  private shutdown(): void {
    if (this.closed) return
    this.closed = true
    if (this.ticker) clearInterval(this.ticker)
    if (this.reconnectTimer) clearTimeout(this.reconnectTimer)
    if (this.pinger) clearInterval(this.pinger)
    this.conn?.destroy()
    try {
      this.uni.close()
    } catch { /* not bound yet */ }
    this.mcast?.close()
    const err = this.failure ?? new NotJoinedError()
    for (const t of this.takers.splice(0)) {
      if (t.timer) clearTimeout(t.timer)
      if (this.failure) t.reject(err)
      else t.resolve(null)
    }
    for (const s of this.senders.splice(0)) s.reject(err)
  }
}

/** The largest datagram an automatic maxDatagram uses: big batches, and a 16 KiB message in one datagram. */
export const MAX_AUTO_DATAGRAM = 60_000

/**
 * The largest datagram that leaves `iface` without IP fragmentation — its MTU less the IP and UDP headers, at most
 * MAX_AUTO_DATAGRAM (loopback: 60 000; Ethernet: 1 472) — or undefined where the MTU cannot be read (not Linux).
 */
export function datagramSizeFor(iface: string): number | undefined {
  for (const [name, addrs] of Object.entries(os.networkInterfaces())) {
    if (!addrs?.some((a) => a.address === iface)) continue
    try {
      const mtu = Number(fs.readFileSync(`/sys/class/net/${name}/mtu`, 'utf8').trim())
      if (Number.isInteger(mtu) && mtu >= 576) return Math.min(MAX_AUTO_DATAGRAM, mtu - 28)
    } catch {
      log('cannot read the MTU of %s', name)
    }
  }
  return undefined
}

/** What a queued delivery counts against maxQueuedBytes: its data and a fixed share for the object around it. */
function queuedSize(d: Delivery): number {
  return (d.type === 'message' ? d.data.length : 0) + 64
}

function tuneBuffers(s: dgram.Socket): void {
  try {
    s.setRecvBufferSize(SOCKET_BUFFER)
    s.setSendBufferSize(SOCKET_BUFFER)
  } catch (err) {
    log('cannot size socket buffers: %s', (err as Error).message)
  }
}
