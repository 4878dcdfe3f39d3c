/**
 * How a member's datagrams travel (PROTOCOL.md §2): the `Transport` the engine sends through and receives from,
 * and its UDP implementation. A group runs in one of two modes, named by every commit:
 * - `multicast`: a send to the group is one datagram to the group's multicast address;
 * - `unicast`: a send to the group is one datagram to each other member of the installed view (fan-out), for
 *   networks without multicast (clouds).
 * Everything else — ordering, repair, stability, view changes — is the same code above this seam. A wrapping
 * transport (encryption, the simulator's lossy network, a recorder) implements the same interface.
 */
import dgram from 'node:dgram'
import { parseMulticastAddr, parseUnicastAddr } from './options.js'
import { logger } from './log.js'
import type { GroupTransport } from './dirproto.js'

const log = logger('transport')
const SOCKET_BUFFER = 4 * 1024 * 1024

/**
 * Every address this transport sends to is an IPv4 literal (options.ts parses them): it is its own lookup. dgram's
 * default lookup (dns.lookup) answers even a literal on process.nextTick, so a send left only once the whole turn's
 * work was done — for the sequencer, its ORDER after delivering the same messages to its own application: latency
 * on every hop.
 */
function literal(host: string, _family: unknown, done: (err: Error | null, address: string, family: number) => void): void {
  done(null, host, 4)
}

/** How a datagram reached this member: on the group's multicast address, or addressed to this member alone. */
export type Via = 'group' | 'direct'

export interface Transport {
  /** This member's unicast endpoint "ip:port": what the directory, and through it the others, know it by. */
  readonly address: string
  /**
   * Where received datagrams go: set once, before any arrives. `from`: the source "ip:port" — a member's unicast
   * socket, multicast included (everything is sent from it, PROTOCOL.md §2.6); the engine takes a datagram only
   * from the address the view gives its sender (§4.1).
   */
  onDatagram: (buf: Buffer, via: Via, from: string) => void
  /** The group's channel, from a commit: the multicast address (listened on in multicast mode) and the mode. */
  channel(mcast: string, mode: GroupTransport): void
  /** Who a send to the group reaches in unicast mode: the installed view's members but this one, "ip:port" each. */
  peers(addrs: readonly string[]): void
  toGroup(buf: Buffer): void
  toMember(addr: string, buf: Buffer): void
  /** Datagrams that could not be sent: an address that is not a unicast "ip:port", or the socket refused it. */
  readonly sendErrors: number
  close(): void
}

type Target = { host: string; port: number }

/**
 * What every transport shares: the mode, the fan-out list, address parsing and error counting. A subclass only
 * sends one datagram to one address (`sendTo`) and listens.
 */
export abstract class BaseTransport implements Transport {
  abstract readonly address: string
  onDatagram: (buf: Buffer, via: Via, from: string) => void = () => {}
  mode: GroupTransport = 'multicast'
  protected group: Target | null = null
  private fanout: Target[] = []
  sendErrors = 0
  /** The last unicast address parsed: ACKs and resends go to the same sequencer again and again. */
  private lastTo = ''
  private lastTarget: Target | null = null

  /** One datagram to one address; never throws (errors are counted through `failed`). */
  protected abstract sendTo(buf: Buffer, target: Target): void

  channel(mcast: string, mode: GroupTransport): void {
    this.mode = mode
    this.group = parseMulticastAddr(mcast)
  }

  peers(addrs: readonly string[]): void {
    this.fanout = []
    for (const a of addrs) {
      const t = parseUnicastAddr(a)
      if (t) this.fanout.push(t)
      else this.failed(a, 'not a unicast "ip:port"')
    }
  }

  toGroup(buf: Buffer): void {
    if (this.mode === 'unicast') {
      for (const t of this.fanout) this.sendTo(buf, t)
    } else if (this.group) {
      this.sendTo(buf, this.group)
    }
  }

  toMember(addr: string, buf: Buffer): void {
    if (addr !== this.lastTo) {
      this.lastTo = addr
      this.lastTarget = parseUnicastAddr(addr)
    }
    if (this.lastTarget) this.sendTo(buf, this.lastTarget)
    else this.failed(addr, 'not a unicast "ip:port"')
  }

  protected failed(to: string, why: string): void {
    this.sendErrors++
    log('cannot send to %s: %s', to, why)
  }

  abstract close(): void
}

/**
 * UDP: one socket bound to the local interface for everything unicast and for sending multicast, and, in multicast
 * mode, one socket bound to the group's address and port (with address reuse: every member of the host binds it).
 */
export class UdpTransport extends BaseTransport {
  private readonly uni = dgram.createSocket({ type: 'udp4', lookup: literal })
  private mcast: dgram.Socket | null = null
  private mcastKey = ''
  private closed = false
  address = ''

  private constructor(private readonly iface: string) {
    super()
  }

  /** The sender's "ip:port": the last one's string again when it repeats (most datagrams come from the sequencer). */
  private lastFrom = { address: '', port: 0, text: '' }
  private source(r: dgram.RemoteInfo): string {
    const l = this.lastFrom
    if (r.port !== l.port || r.address !== l.address) this.lastFrom = { address: r.address, port: r.port, text: `${r.address}:${r.port}` }
    return this.lastFrom.text
  }

  /** Binds the unicast socket on `iface` (an IPv4 address); multicast goes out of that interface with `ttl`. */
  static open(iface: string, ttl: number): Promise<UdpTransport> {
    const t = new UdpTransport(iface)
    return new Promise((resolve, reject) => {
      t.uni.once('error', reject)
      t.uni.bind(0, iface, () => {
        t.uni.off('error', reject)
        // Errors sending (a send without a callback reports them here): counted, like a lost datagram.
        t.uni.on('error', (err) => t.failed('?', err.message))
        try {
          t.uni.setMulticastInterface(iface)
          t.uni.setMulticastTTL(ttl)
          t.uni.setMulticastLoopback(true)
        } catch (err) {
          log('cannot set multicast options on %s: %s', iface, (err as Error).message)
        }
        tuneBuffers(t.uni)
        t.uni.on('message', (buf, r) => t.onDatagram(buf, 'direct', t.source(r)))
        const a = t.uni.address()
        t.address = `${a.address}:${a.port}`
        resolve(t)
      })
    })
  }

  override channel(mcast: string, mode: GroupTransport): void {
    super.channel(mcast, mode)
    if (mode === 'unicast') this.leaveMulticast()
    else if (this.group && mcast !== this.mcastKey) this.joinMulticast(mcast, this.group)
  }

  private joinMulticast(mcast: string, { host, port }: Target): void {
    this.leaveMulticast()
    const s = dgram.createSocket({ type: 'udp4', reuseAddr: true })
    s.on('error', (err) => log('multicast socket %s: %s', mcast, err.message))
    s.on('message', (buf, r) => this.onDatagram(buf, 'group', this.source(r)))
    s.bind(port, host, () => {
      try {
        s.addMembership(host, this.iface)
        tuneBuffers(s)
      } catch (err) {
        log('cannot join multicast %s on %s: %s', mcast, this.iface, (err as Error).message)
      }
    })
    this.mcast = s
    this.mcastKey = mcast
  }

  private leaveMulticast(): void {
    try {
      this.mcast?.close()
    } catch { /* not bound yet */ }
    this.mcast = null
    this.mcastKey = ''
  }

  protected sendTo(buf: Buffer, t: Target): void {
    if (this.closed) return
    try {
      this.uni.send(buf, t.port, t.host)
    } catch (err) {
      this.failed(`${t.host}:${t.port}`, (err as Error).message)
    }
  }

  override close(): void {
    if (this.closed) return
    this.closed = true
    try {
      this.uni.close()
    } catch { /* already closed */ }
    this.leaveMulticast()
  }
}

function tuneBuffers(s: dgram.Socket): void {
  try {
    s.setRecvBufferSize(SOCKET_BUFFER)
    s.setSendBufferSize(SOCKET_BUFFER)
  } catch (err) {
    log('cannot size socket buffers: %s', (err as Error).message)
  }
}
