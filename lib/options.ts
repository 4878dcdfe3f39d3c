import { ArgumentError } from './errors.js'
import { MAX_CAPACITY } from './msgstore.js'
import { fragmentRoom, MAX_DATAGRAM } from './wire.js'
import { readKey } from './seal.js'

export const DEFAULT_DIRECTORY = '127.0.0.1:4720'
export const DEFAULT_IFACE = '127.0.0.1'
/**
 * Largest datagram a member sends, bytes, where the interface's MTU cannot be read; otherwise a Group uses the
 * MTU less 28 (at most 60 000), so nothing is IP-fragmented (group.ts, datagramSizeFor).
 */
export const DEFAULT_MAX_DATAGRAM = 16_384
/** Largest application message, bytes; larger ones are refused with EMESSAGE_TOO_LARGE. */
export const DEFAULT_MAX_MESSAGE = 16 * 1024 * 1024
/** The largest maxMessage accepted at all. */
export const MAX_MESSAGE_LIMIT = 1 << 30
/** Own messages (fragments) sent but not yet stable before grp_send waits. */
export const DEFAULT_SEND_WINDOW = 1024
/** Own bytes sent but not yet stable before grp_send waits: the most a sender may take of `groupWindowBytes`. */
export const DEFAULT_SEND_WINDOW_BYTES = 2 * 1024 * 1024
/**
 * Bytes all senders together keep sent but not yet stable: each sender's window is this divided by the members of
 * the view (PROTOCOL.md §4.2). The receive buffer every member asks for (transport.ts): what the whole group has in
 * flight fits it, even while a receiver does not read.
 */
export const DEFAULT_GROUP_WINDOW_BYTES = 4 * 1024 * 1024
/** Bytes the sequencer lets be ordered but unstable before it pauses ordering. */
export const DEFAULT_MAX_UNSTABLE_BYTES = 32 * 1024 * 1024
export const DEFAULT_TICK_MS = 10
export const DEFAULT_RESEND_MS = 100
export const DEFAULT_NACK_INTERVAL_MS = 20
export const DEFAULT_HEARTBEAT_MS = 50
export const DEFAULT_ACK_EVERY = 256
export const DEFAULT_JOIN_TIMEOUT_MS = 10_000
export const DEFAULT_LEAVE_TIMEOUT_MS = 5_000
export const DEFAULT_MAX_QUEUED_BYTES = 16 * 1024 * 1024
export const DEFAULT_MCAST_TTL = 1
export const DEFAULT_STATE_TIMEOUT_MS = 60_000

export type DeliveryMode = 'agreed' | 'safe'

/** Protocol tuning shared by every transport (the engine's options). */
export interface EngineOptions {
  /** 'agreed' (default): deliver as soon as ordered. 'safe': deliver only once every member has the message. */
  delivery: DeliveryMode
  maxDatagram: number
  maxMessage: number
  sendWindow: number
  sendWindowBytes: number
  /** What the whole group keeps unstable: each sender's byte window is this / members (at most sendWindowBytes). */
  groupWindowBytes: number
  maxUnstableBytes: number
  resendMs: number
  nackIntervalMs: number
  /** The sequencer multicasts a heartbeat ORDER after this long without sending one. */
  heartbeatMs: number
  ackEvery: number
  /**
   * true (default): every delivery's data is the application's own copy. false: the application promises never to
   * write into a delivery's data, and a message that came in one datagram is delivered as a view of it — memory this
   * member also serves repairs from (a fragmented message is new memory either way).
   */
  copyDeliveries: boolean
}

export interface JoinOptions extends Partial<EngineOptions> {
  /** Directory address "host:port". Default 127.0.0.1:4720. */
  directory?: string
  /** Local IPv4 address for multicast and unicast. Default 127.0.0.1. */
  iface?: string
  /** Multicast TTL. Default 1 (one subnet). */
  ttl?: number
  tickMs?: number
  joinTimeoutMs?: number
  leaveTimeoutMs?: number
  /**
   * Deliveries waiting for receive() may hold this many bytes (data + 64 per delivery); beyond it delivery pauses
   * and the group waits for this member (consumer backpressure). Default 16 MiB.
   */
  maxQueuedBytes?: number
  /**
   * The group key: 32 bytes, or the path of a key file (`dir keygen`). Every datagram is then authenticated and
   * encrypted, and a stranger's or a replayed one is dropped (PROTOCOL.md §2.7). Every member of a group needs the
   * same key. Default: none.
   */
  key?: Uint8Array | string
  /**
   * The application's state, for members that join later or come back (PROTOCOL.md §8, docs/API.md "State
   * transfer"): `snapshot()` is called on one member (the donor) at the moment its application takes the view that
   * adds a joiner, and must capture the state then — return the bytes, or an async iterable of chunks over a capture
   * that later messages do not change; `restore(chunks)` builds the joiner's state from nothing (it may be called
   * again, from the first byte, if the donor fails: the previous stream then ends with an `ESTATE` error). The join
   * resolves once `restore` has; the joiner's first delivery is the view its state was taken at. Default: none.
   */
  state?: StateHooks
  /** A joiner that has not restored the state this long after its first view fails its join with ESTATE. */
  stateTimeoutMs?: number
}

export interface StateHooks {
  snapshot(): Uint8Array | AsyncIterable<Uint8Array>
  restore(state: AsyncIterable<Uint8Array>): Promise<void> | void
}

export interface ResolvedJoinOptions extends EngineOptions {
  directory: { host: string; port: number }
  iface: string
  ttl: number
  tickMs: number
  joinTimeoutMs: number
  leaveTimeoutMs: number
  maxQueuedBytes: number
  key: Buffer | null
  state: StateHooks | null
  stateTimeoutMs: number
}

export const DEFAULT_ENGINE_OPTIONS: EngineOptions = {
  delivery: 'agreed',
  maxDatagram: DEFAULT_MAX_DATAGRAM,
  maxMessage: DEFAULT_MAX_MESSAGE,
  sendWindow: DEFAULT_SEND_WINDOW,
  sendWindowBytes: DEFAULT_SEND_WINDOW_BYTES,
  groupWindowBytes: DEFAULT_GROUP_WINDOW_BYTES,
  maxUnstableBytes: DEFAULT_MAX_UNSTABLE_BYTES,
  resendMs: DEFAULT_RESEND_MS,
  nackIntervalMs: DEFAULT_NACK_INTERVAL_MS,
  heartbeatMs: DEFAULT_HEARTBEAT_MS,
  ackEvery: DEFAULT_ACK_EVERY,
  copyDeliveries: true,
}

export function parseHostPort(value: string, what: string): { host: string; port: number } {
  const m = /^([^:\s]+):(\d{1,5})$/.exec(value)
  const port = m ? Number(m[2]) : NaN
  if (!m || port < 1 || port > 65535) throw new ArgumentError(`${what} must be "host:port", got ${JSON.stringify(value)}`)
  return { host: m[1]!, port }
}

const OCTET = '(25[0-5]|2[0-4]\\d|1\\d\\d|[1-9]?\\d)'
const IP_PORT = new RegExp(`^${OCTET}\\.${OCTET}\\.${OCTET}\\.${OCTET}:([1-9]\\d{0,4})$`)

/** "a.b.c.d:port", octets 0–255 without leading zeros, port 1–65535; with the first octet, or null. */
function parseIpPort(value: unknown): { host: string; port: number; first: number } | null {
  const m = typeof value === 'string' ? IP_PORT.exec(value) : null
  const port = m ? Number(m[5]) : 0
  if (!m || port > 65535) return null
  return { host: `${m[1]}.${m[2]}.${m[3]}.${m[4]}`, port, first: Number(m[1]) }
}

/**
 * A member's unicast address "a.b.c.d:port", with a host one can send to: not 0.0.0.0/8, multicast
 * (224.0.0.0/4), reserved or broadcast (240.0.0.0/4). Null otherwise.
 */
export function parseUnicastAddr(value: unknown): { host: string; port: number } | null {
  const a = parseIpPort(value)
  return a && a.first !== 0 && a.first < 224 ? { host: a.host, port: a.port } : null
}

/** A group's multicast address "a.b.c.d:port" (224.0.0.0/4), or null. */
export function parseMulticastAddr(value: unknown): { host: string; port: number } | null {
  const a = parseIpPort(value)
  return a && a.first >= 224 && a.first <= 239 ? { host: a.host, port: a.port } : null
}

function stateHooks(v: unknown): StateHooks {
  const h = v as Partial<StateHooks> | null
  if (typeof h !== 'object' || h === null || typeof h.snapshot !== 'function' || typeof h.restore !== 'function') {
    throw new ArgumentError('option state must be an object with functions snapshot() and restore(chunks)')
  }
  return h as StateHooks
}

function int(opts: Record<string, unknown>, name: string, def: number, min: number, max: number): number {
  const v = opts[name]
  if (v === undefined) return def
  if (typeof v !== 'number' || !Number.isInteger(v) || v < min || v > max) {
    throw new ArgumentError(`option ${name} must be an integer from ${min} to ${max}, got ${String(v)}`)
  }
  return v
}

const IPV4 = /^(\d{1,3})\.(\d{1,3})\.(\d{1,3})\.(\d{1,3})$/

/** Validates every option eagerly and names the bad one. */
export function parseJoinOptions(opts: JoinOptions = {}): ResolvedJoinOptions {
  if (typeof opts !== 'object' || opts === null) throw new ArgumentError('options must be an object')
  const o = opts as Record<string, unknown>
  const known = new Set(['directory', 'iface', 'ttl', 'tickMs', 'joinTimeoutMs', 'leaveTimeoutMs', 'maxQueuedBytes', 'key', 'state', 'stateTimeoutMs', ...Object.keys(DEFAULT_ENGINE_OPTIONS)])
  for (const k of Object.keys(o)) if (!known.has(k)) throw new ArgumentError(`unknown option ${k}`)
  if (o.directory !== undefined && typeof o.directory !== 'string') throw new ArgumentError('option directory must be a string "host:port"')
  const directory = parseHostPort((o.directory as string | undefined) ?? DEFAULT_DIRECTORY, 'option directory')
  const iface = (o.iface as string | undefined) ?? DEFAULT_IFACE
  if (typeof iface !== 'string' || !IPV4.test(iface) || iface.split('.').some((p) => Number(p) > 255)) {
    throw new ArgumentError(`option iface must be an IPv4 address, got ${String(iface)}`)
  }
  if (o.delivery !== undefined && o.delivery !== 'agreed' && o.delivery !== 'safe') {
    throw new ArgumentError(`option delivery must be 'agreed' or 'safe', got ${String(o.delivery)}`)
  }
  if (o.copyDeliveries !== undefined && typeof o.copyDeliveries !== 'boolean') {
    throw new ArgumentError(`option copyDeliveries must be true or false, got ${String(o.copyDeliveries)}`)
  }
  const maxDatagram = int(o, 'maxDatagram', DEFAULT_MAX_DATAGRAM, 512, MAX_DATAGRAM)
  const resolved: ResolvedJoinOptions = {
    directory,
    iface,
    ttl: int(o, 'ttl', DEFAULT_MCAST_TTL, 0, 255),
    tickMs: int(o, 'tickMs', DEFAULT_TICK_MS, 1, 1000),
    joinTimeoutMs: int(o, 'joinTimeoutMs', DEFAULT_JOIN_TIMEOUT_MS, 1, 600_000),
    leaveTimeoutMs: int(o, 'leaveTimeoutMs', DEFAULT_LEAVE_TIMEOUT_MS, 1, 600_000),
    maxQueuedBytes: int(o, 'maxQueuedBytes', DEFAULT_MAX_QUEUED_BYTES, 1024, 1 << 30),
    key: o.key === undefined ? null : readKey(o.key as Uint8Array | string),
    state: o.state === undefined ? null : stateHooks(o.state),
    stateTimeoutMs: int(o, 'stateTimeoutMs', DEFAULT_STATE_TIMEOUT_MS, 1, 24 * 3_600_000),
    delivery: (o.delivery as DeliveryMode | undefined) ?? 'agreed',
    maxDatagram,
    maxMessage: int(o, 'maxMessage', DEFAULT_MAX_MESSAGE, 1, MAX_MESSAGE_LIMIT),
    sendWindow: int(o, 'sendWindow', DEFAULT_SEND_WINDOW, 1, 16_384),
    sendWindowBytes: int(o, 'sendWindowBytes', DEFAULT_SEND_WINDOW_BYTES, 1, 1 << 30),
    groupWindowBytes: int(o, 'groupWindowBytes', DEFAULT_GROUP_WINDOW_BYTES, 1, 1 << 30),
    maxUnstableBytes: int(o, 'maxUnstableBytes', DEFAULT_MAX_UNSTABLE_BYTES, 1, 1 << 30),
    resendMs: int(o, 'resendMs', DEFAULT_RESEND_MS, 1, 60_000),
    nackIntervalMs: int(o, 'nackIntervalMs', DEFAULT_NACK_INTERVAL_MS, 1, 60_000),
    heartbeatMs: int(o, 'heartbeatMs', DEFAULT_HEARTBEAT_MS, 1, 60_000),
    ackEvery: int(o, 'ackEvery', DEFAULT_ACK_EVERY, 1, 16_384),
    copyDeliveries: (o.copyDeliveries as boolean | undefined) ?? true,
  }
  checkMaxMessage(resolved)
  return resolved
}

/**
 * The largest message a sender can send with datagrams of `maxDatagram` bytes: it holds every fragment of a
 * message from submit until stable, and its store holds at most MAX_CAPACITY (131 072) of them — 188 MB with
 * Ethernet's 1 472-byte datagrams, 62 MB with 512-byte ones.
 */
export function largestMessage(maxDatagram: number): number {
  return Math.min(MAX_MESSAGE_LIMIT, MAX_CAPACITY * fragmentRoom(maxDatagram))
}

/** Refuses a maxMessage a sender could not hold at this maxDatagram; `why` says where maxDatagram came from. */
export function checkMaxMessage(o: { maxMessage: number; maxDatagram: number }, why = ''): void {
  const max = largestMessage(o.maxDatagram)
  if (o.maxMessage > max) {
    throw new ArgumentError(
      `option maxMessage must be at most ${max} with maxDatagram ${o.maxDatagram}${why} (at most ${MAX_CAPACITY} fragments ` +
      `of ${fragmentRoom(o.maxDatagram)} bytes), got ${o.maxMessage}`,
    )
  }
}
