/**
 * `Group`: one member of one group — the API front. It wires the protocol engine (engine.ts) to its transport
 * (transport.ts, UDP) and its directory client (dirlink.ts, over a TCP connection opened here), runs the one
 * periodic timer, and hands deliveries (inbox.ts) to events, a pull queue (`receive`) with its byte bound, and async
 * iteration.
 */
import { EventEmitter } from 'eventemitter3'
import fs from 'node:fs'
import os from 'node:os'
import { Engine } from './engine.js'
import type { Delivery, EngineStats, Lifecycle } from './host.js'
import { ArgumentError, AuthError, ErrorCodes, JoinTimeoutError, LeaveTimeoutError, NotJoinedError, SeqcastError } from './errors.js'
import type { GroupTransport, ToDirectoryOf } from './dirproto.js'
import { checkMaxMessage, parseJoinOptions, type JoinOptions, type ResolvedJoinOptions } from './options.js'
import { DirLink } from './dirlink.js'
import { UdpTransport, type Transport } from './transport.js'
import { SealedTransport, SEAL_OVERHEAD, type SealStats } from './seal.js'
import { DirectorySocket } from './dirsocket.js'
import { Inbox, type Taker } from './inbox.js'
import { StateMember } from './statemember.js'
import { logger } from './log.js'

const log = logger('group')
const MAX_NAME_BYTES = 64

/** How many inputs of one event-loop turn are flushed at once (see scheduleFlush); the rest at the turn's end. */
const IMMEDIATE_FLUSHES = 4

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
  /** How the installed view's datagrams travel: 'multicast', or 'unicast' fan-out (PROTOCOL.md §2.6). */
  transport: GroupTransport
  retainedBytes: number
  /** Bytes of own messages sent but not yet stable (at most sendWindowBytes, or one datagram more). */
  inflightBytes: number
  /** Datagrams that could not be sent: a bad peer address (from a view), or an error from the socket. */
  sendErrors: number
  /** With a key: datagrams that failed authentication (a stranger's, another key's, tampered with). 0 without. */
  rejected: number
  /** With a key: authentic datagrams received again (replays, network duplicates). 0 without. */
  replayed: number
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
  private readonly link: DirLink
  /** The directory connection under the link (dirsocket.ts): one at a time, TLS with a key. */
  private readonly dirSocket: DirectorySocket
  private ticker: NodeJS.Timeout | null = null
  private flushQueued = false
  /** Flushes run in this event-loop turn: past IMMEDIATE_FLUSHES, inputs are flushed at its end, together. */
  private flushesThisTurn = 0
  /** The timer of a flush the engine asked for at a time (`flushAt`), if any. */
  private wake: { at: number; timer: NodeJS.Timeout } | null = null
  /** Deliveries on their way to the application: receive(), events, or the bounded queue. */
  private readonly inbox: Inbox
  /** With state hooks: the state transfer this member takes part in (PROTOCOL.md §8). */
  private readonly state: StateMember | null = null
  private readySent = false
  private joinTimer: NodeJS.Timeout | undefined
  private readonly senders: Array<{ data: Uint8Array; resolve: () => void; reject: (e: Error) => void }> = []
  private closed = false
  private failure: SeqcastError | null = null
  private joined!: { resolve: () => void; reject: (e: Error) => void }
  private leftWaiter: { resolve: () => void; reject: (e: Error) => void } | null = null
  private wasJoined = false
  /** With a key: the group keys the directory link may authenticate with, the one in use first. */
  private linkKeys: Buffer[] | null

  private constructor(readonly name: string, readonly memberId: string, opts: ResolvedJoinOptions, private readonly transport: Transport) {
    super()
    this.opts = opts
    this.inbox = new Inbox({
      maxQueuedBytes: opts.maxQueuedBytes,
      listening: () => this.listenerCount('message') + this.listenerCount('view') > 0,
      emit: (d) => (d.type === 'message' ? this.emit('message', d) : this.emit('view', d)),
      handing: (d) => this.state?.handing(d),
      room: () => setImmediate(() => !this.closed && this.engine.flush()),
    })
    this.linkKeys = opts.key ? [opts.key] : null
    const now = (): number => performance.now()
    const { host, port } = opts.directory
    this.dirSocket = new DirectorySocket(host, port, {
      connected: () => this.link.connected(),
      failed: (why, auth) => {
        // A directory that refuses the key will refuse it again: fail now rather than retry for ever.
        if (auth) this.abort(new AuthError(`the directory at ${host}:${port} refused ${memberId}'s key (${why}): it has another key, or none`))
        else this.link.connectFailed(`${host}:${port}: ${why}`)
      },
      frame: (f) => this.link.received(f),
      closed: () => this.link.closed(),
      tooLarge: (err) => this.abort(err),
      log: (fmt, ...args) => log(`%s: ${fmt}`, memberId, ...args),
    })
    this.link = new DirLink({
      now,
      connect: () => this.dirSocket.open(this.linkKeys),
      write: (f) => this.dirSocket.write(f),
      frame: (f) => this.engine.directory(f),
      lifecycle: () => this.engine.lifecycle,
      rejoin: (addr) => this.engine.rejoinFrame(addr),
      directory: (state) => {
        log('%s: directory connection %s', memberId, state === 'lost' ? 'lost; data path continues, reconnecting' : 'restored')
        // A `ready` the lost directory never read is sent again (PROTOCOL.md §8.1); a holder's is ignored.
        if (state === 'restored' && this.readySent) this.sendReady()
        this.emit('directory', state)
      },
      leaseRenewed: () => this.engine.flush(),
      fail: (err) => {
        log('%s: %s', memberId, err.message)
        this.abort(err)
      },
      closeWhileLeaving: () => {
        log('%s: directory gone while leaving; closing', memberId)
        this.finishLeave()
      },
      keys: (keys, use) => {
        if (!(this.transport instanceof SealedTransport)) return
        this.transport.setKeys(keys, use)
        // The next link authenticates with the key in use; the directory hints which one it holds (§3.4).
        this.linkKeys = [keys.find((k) => k.epoch === use)!.key, ...keys.filter((k) => k.epoch !== use).map((k) => k.key)]
      },
    }, transport.address)
    this.engine = new Engine(name, memberId, opts, {
      now,
      transport,
      toDirectory: (f) => this.link.send(f),
      deliver: (d) => {
        if (d.type === 'view') this.state?.view(d)
        this.inbox.push(d)
      },
      state: (d) => this.state?.datagram(d),
      // The first inputs of an event-loop turn (IMMEDIATE_FLUSHES) are each flushed when the callback at hand is
      // done (its microtasks too): the DATA that arrives is ordered, the ORDER that completes a message delivers it,
      // before the loop polls again — no turn on either hop (latency, W2). Inputs after them in the same turn wait
      // for its end and are flushed together (a busy member reads dozens of datagrams a turn: one flush each cost
      // 30 % more CPU per message at W1 1 KB). A run of sends is one flush either way (one microtask drain).
      scheduleFlush: () => {
        if (this.flushQueued) return
        this.flushQueued = true
        const run = (): void => {
          this.flushQueued = false
          if (this.closed) return
          if (this.flushesThisTurn++ === 0) setImmediate(() => (this.flushesThisTurn = 0))
          this.engine.flush()
        }
        if (this.flushesThisTurn >= IMMEDIATE_FLUSHES) setImmediate(run)
        else process.nextTick(run)
      },
      flushAt: (at) => {
        if (this.closed || (this.wake && this.wake.at <= at)) return
        if (this.wake) clearTimeout(this.wake.timer)
        const timer = setTimeout(() => {
          this.wake = null
          if (!this.closed) this.engine.flush()
        }, Math.max(0, at - now()))
        this.wake = { at, timer }
      },
      windowOpened: () => this.pumpSends(),
      leaseValid: () => this.link.leaseValid(),
      // A leaving member drains regardless: its own messages must become stable for the leave to complete.
      deliveryRoom: () => this.inbox.hasRoom() || this.engine.lifecycle === 'leaving',
      lifecycle: (state, err) => this.onLifecycle(state, err),
    })
    if (opts.state) {
      this.state = new StateMember(opts.state, {
        me: () => this.engine.me,
        inc: () => this.engine.inc,
        now,
        maxDatagram: opts.maxDatagram,
        stateTimeoutMs: opts.stateTimeoutMs,
        send: (no, buf) => this.engine.unicast(buf, no),
        installed: () => this.engine.view?.viewId,
        stateOf: (viewId) => this.engine.stateOf(viewId),
        inbox: this.inbox,
        ready: (sendReady) => {
          if (sendReady) this.sendReady()
          // The state can be restored before the engine works in a view: its first view was superseded before it
          // installed it, and it delivers that view while it moves on to the next. Sending waits for 'joined'.
          if (this.engine.lifecycle === 'joined') this.joinedNow()
        },
        fail: (err) => this.abort(err),
        log: (fmt, ...args) => log(`%s: ${fmt}`, memberId, ...args),
      })
    }
    transport.onDatagram = (buf, via, from) => {
      this.engine.datagram(buf, via, from)
      this.link.pingIfDue() // a burst of datagrams keeps timers waiting too
    }
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
    // maxDatagram is the size on the wire: the engine leaves room for the seal.
    if (opts.key) {
      opts.maxDatagram -= SEAL_OVERHEAD
      checkMaxMessage(opts, ' (less the seal of a keyed group)')
    }
    const udp = await UdpTransport.open(opts.iface, opts.ttl)
    const g = new Group(group, memberId, opts, opts.key ? new SealedTransport(udp, opts.key) : udp)
    await g.start()
    return g
  }

  private async start(): Promise<void> {
    const done = new Promise<void>((resolve, reject) => (this.joined = { resolve, reject }))
    // Until the first view; the state transfer after it has its own bound (stateTimeoutMs).
    this.joinTimer = setTimeout(() => this.abort(new JoinTimeoutError(`no view for ${this.memberId} in group ${this.name} after ${this.opts.joinTimeoutMs} ms`)), this.opts.joinTimeoutMs)
    this.ticker = setInterval(() => {
      this.engine.tick()
      this.link.tick()
      this.state?.tick()
      if (this.transport instanceof SealedTransport && this.transport.wrongKey()) {
        this.abort(new AuthError(`the datagrams of group ${this.name} fail authentication at ${this.memberId}: its key is not the group's, or the group has none`))
      }
    }, this.opts.tickMs)
    const join: ToDirectoryOf<'join'> = { t: 'join', proto: 1, group: this.name, member: this.memberId, addr: this.transport.address }
    if (this.state) join.state = true
    this.link.start(join)
    try {
      await done
    } finally {
      clearTimeout(this.joinTimer)
    }
  }

  /** In a view, with the group's state if it has hooks: the join resolves; from now on failures are events. */
  private joinedNow(): void {
    this.wasJoined = true
    this.joined.resolve()
  }

  private sendReady(): void {
    this.readySent = true
    this.link.send({ t: 'ready', group: this.name })
  }

  private onLifecycle(state: Lifecycle, err?: SeqcastError): void {
    if (state === 'joined') {
      clearTimeout(this.joinTimer)
      // With state hooks the join completes once the state is restored too (StateMember's ready).
      if (!this.state || this.state.phase === 'ready') this.joinedNow()
    }
    else if (state === 'left') this.finishLeave()
    else if (state === 'failed' && err) this.abort(err)
  }

  /** Multicasts `data` to the group; resolves once accepted for sending (waits while the send window is full). */
  send(data: Uint8Array | string): Promise<void> {
    // The caller may reuse its buffer at once: the engine stores a copy, made here or by it, never the caller's.
    // A string's bytes are new already (owned: stored without another copy).
    const owned = typeof data === 'string'
    if (typeof data === 'string') data = Buffer.from(data, 'utf8')
    else if (!(data instanceof Uint8Array)) return Promise.reject(new ArgumentError('data must be a Uint8Array or a string'))
    if (this.failure) return Promise.reject(this.failure)
    if (this.closed || this.engine.lifecycle !== 'joined') return Promise.reject(new NotJoinedError())
    if (this.senders.length === 0) {
      try {
        if (this.engine.submit(data, owned)) return Promise.resolve()
      } catch (err) {
        return Promise.reject(err)
      }
    }
    // It waits for window room: its bytes are copied now.
    const copy = owned ? data : Buffer.from(data)
    return new Promise((resolve, reject) => {
      this.senders.push({ data: copy, resolve, reject })
    })
  }

  private pumpSends(): void {
    while (this.senders.length > 0) {
      const s = this.senders[0]!
      try {
        if (!this.engine.submit(s.data, true)) return
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
    const queued = this.inbox.take()
    if (queued) return Promise.resolve(queued)
    if (this.failure) return Promise.reject(this.failure)
    if (this.closed) return Promise.reject(new NotJoinedError())
    return new Promise((resolve, reject) => {
      let timer: NodeJS.Timeout | undefined
      const taker: Taker = {
        resolve: (d) => {
          clearTimeout(timer)
          resolve(d)
        },
        reject: (e) => {
          clearTimeout(timer)
          reject(e)
        },
      }
      if (timeoutMs !== undefined) {
        timer = setTimeout(() => {
          this.inbox.cancel(taker)
          resolve(null)
        }, timeoutMs)
      }
      this.inbox.wait(taker)
    })
  }

  async *[Symbol.asyncIterator](): AsyncGenerator<Delivery> {
    for (;;) {
      if (this.closed && this.inbox.length === 0) return
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
    const seal: SealStats = this.transport instanceof SealedTransport ? this.transport.stats : { opened: 0, rejected: 0, replayed: 0 }
    return { ...this.engine.snapshot(), sendErrors: this.transport.sendErrors, rejected: seal.rejected, replayed: seal.replayed, queued: this.inbox.length, queuedBytes: this.inbox.bytes }
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

  // A listener added while deliveries wait in the queue (nobody listened when they came: a `join` resolves before
  // its caller can attach one) gets them once the call that added it is done, in order — not at the next delivery,
  // which may never come.
  override on<T extends EventEmitter.EventNames<GroupEvents>>(event: T, fn: EventEmitter.EventListener<GroupEvents, T>, context?: unknown): this {
    super.on(event, fn, context)
    return this.listened(event)
  }

  override addListener<T extends EventEmitter.EventNames<GroupEvents>>(event: T, fn: EventEmitter.EventListener<GroupEvents, T>, context?: unknown): this {
    super.addListener(event, fn, context)
    return this.listened(event)
  }

  override once<T extends EventEmitter.EventNames<GroupEvents>>(event: T, fn: EventEmitter.EventListener<GroupEvents, T>, context?: unknown): this {
    super.once(event, fn, context)
    return this.listened(event)
  }

  private listened(event: EventEmitter.EventNames<GroupEvents>): this {
    if ((event === 'message' || event === 'view') && this.inbox.length > 0) queueMicrotask(() => !this.closed && this.inbox.drain())
    return this
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
    if (this.wake) clearTimeout(this.wake.timer)
    this.link.close()
    this.state?.close()
    this.dirSocket.close()
    this.transport.close()
    const err = this.failure ?? new NotJoinedError()
    this.inbox.close(this.failure)
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
