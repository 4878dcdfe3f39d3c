/**
 * Authenticated encryption of every datagram (docs/PROTOCOL.md §2.7): a Transport that wraps another one, so the
 * engine sees exactly the datagrams it would see without a key, and never one a stranger made or replayed.
 *
 * A sealed datagram is the plain one's 24-byte header with flag bit 0 (AUTH) set, then its body encrypted with
 * AES-256-GCM, then a 28-byte trailer: the 12-byte nonce and the 16-byte tag. The header is the associated data
 * (authenticated, not encrypted: the incarnation, view and sender stay readable for routing). The key is derived
 * per group incarnation (HKDF-SHA256 of the group key, salt = the incarnation), so two groups under one key never
 * share one. Nonce = 8 random bytes drawn per sender life (and again every 2^32 datagrams) + a 32-bit counter:
 * a nonce never repeats under a key, across restarts too, with overwhelming probability.
 *
 * Replays: per (incarnation, sender, nonce prefix) a window of the last REPLAY_WINDOW counters; a datagram whose
 * counter was seen, or is older than the window, is dropped and counted. At most MAX_WINDOWS windows are kept
 * (the one silent longest forgotten first); only authentic datagrams create one. A datagram sent to one member is
 * sealed for it (its address authenticated too): the sender's counter runs over all it sends, so the others'
 * windows have gaps where its unicast went.
 */
import { createCipheriv, createDecipheriv, hkdfSync, randomBytes } from 'node:crypto'
import fs from 'node:fs'
import { ArgumentError } from './errors.js'
import type { Transport, Via } from './transport.js'
import type { GroupTransport } from './dirproto.js'

const HEADER = 24
const NONCE = 12
const TAG = 16
/** Bytes a sealed datagram has beyond the plain one: what maxDatagram must leave room for. */
export const SEAL_OVERHEAD = NONCE + TAG
export const KEY_BYTES = 32
const AUTH_FLAG = 1
/**
 * Flag bit 2: sealed for one member, whose address ("ip:port") is authenticated after the header. A sender's
 * counter runs across all it sends, so the other members' replay windows have gaps where its unicast went:
 * without this, a NACK replayed to a member it was not sent to would open there and be served.
 */
const TO_MEMBER_FLAG = 4
const REPLAY_WINDOW = 1024
const MAX_WINDOWS = 4096
const MAX_KEYS = 8
const INFO = Buffer.from('seqcast datagram v3')
/** Datagrams failing authentication, none opening, before a member concludes its key is not the group's. */
const WRONG_KEY_AFTER = 16

/** A fresh group key as a key file holds it: 64 hex digits and a newline (`dir keygen`). */
export function generateKeyText(): string {
  return `${randomBytes(KEY_BYTES).toString('hex')}\n`
}

/**
 * The group key from the `key` option: KEY_BYTES bytes, or the path of a key file (64 hex digits, surrounding
 * whitespace ignored). Throws ArgumentError naming what is wrong; never logs the key.
 */
export function readKey(value: Uint8Array | string): Buffer {
  if (typeof value === 'string') {
    let text: string
    try {
      text = fs.readFileSync(value, 'utf8')
    } catch (err) {
      throw new ArgumentError(`option key: cannot read key file ${value}: ${(err as Error).message}`)
    }
    const hex = text.trim()
    if (!/^[0-9a-fA-F]{64}$/.test(hex)) throw new ArgumentError(`option key: ${value} must hold ${KEY_BYTES * 2} hex digits (make one with \`dir keygen\`)`)
    return Buffer.from(hex, 'hex')
  }
  if (!(value instanceof Uint8Array) || value.length !== KEY_BYTES) throw new ArgumentError(`option key must be ${KEY_BYTES} bytes or a key file path`)
  return Buffer.from(value)
}

export interface SealStats {
  /** Datagrams that opened: authentic, first seen. */
  opened: number
  /** Datagrams that failed authentication: no AUTH flag, too short, another key, or tampered with. */
  rejected: number
  /** Authentic datagrams received a second time (or older than the replay window). */
  replayed: number
}

/** Counters seen for one (incarnation, sender, nonce prefix): the highest, and which of the window below it. */
class ReplayWindow {
  private top = -1
  private readonly seen = new Uint8Array(REPLAY_WINDOW)

  /** True the first time `counter` is offered within the window; false for a repeat or one too old. */
  accept(counter: number): boolean {
    if (counter > this.top) {
      // Slide: counters between the old top and the new one have not been seen.
      for (let c = Math.max(this.top + 1, counter - REPLAY_WINDOW + 1); c < counter; c++) this.seen[c % REPLAY_WINDOW] = 0
      this.top = counter
      this.seen[counter % REPLAY_WINDOW] = 1
      return true
    }
    if (counter <= this.top - REPLAY_WINDOW || this.seen[counter % REPLAY_WINDOW]) return false
    this.seen[counter % REPLAY_WINDOW] = 1
    return true
  }
}

export class SealedTransport implements Transport {
  onDatagram: (buf: Buffer, via: Via) => void = () => {}
  readonly stats: SealStats = { opened: 0, rejected: 0, replayed: 0 }
  private readonly keys = new Map<string, Buffer>()
  private readonly windows = new Map<string, ReplayWindow>()
  private prefix = randomBytes(8)
  private counter = 0

  /** `key`: the group key, KEY_BYTES random bytes (`dir keygen`). */
  constructor(private readonly inner: Transport, private readonly key: Buffer) {
    if (key.length !== KEY_BYTES) throw new RangeError(`a group key is ${KEY_BYTES} bytes, got ${key.length}`)
    inner.onDatagram = (buf, via) => {
      const plain = this.open(buf)
      if (plain) this.onDatagram(plain, via)
    }
  }

  /**
   * This member's key is not its group's: of the datagrams it got, none opened, and at least WRONG_KEY_AFTER failed.
   * (A stranger's junk alone cannot make this true while the group's own datagrams open.)
   */
  wrongKey(): boolean {
    return this.stats.opened === 0 && this.stats.rejected >= WRONG_KEY_AFTER
  }

  get address(): string {
    return this.inner.address
  }

  get sendErrors(): number {
    return this.inner.sendErrors
  }

  channel(mcast: string, mode: GroupTransport): void {
    this.inner.channel(mcast, mode)
  }

  peers(addrs: readonly string[]): void {
    this.inner.peers(addrs)
  }

  toGroup(buf: Buffer): void {
    this.inner.toGroup(this.seal(buf))
  }

  toMember(addr: string, buf: Buffer): void {
    this.inner.toMember(addr, this.seal(buf, addr))
  }

  close(): void {
    this.inner.close()
  }

  /** The key of the incarnation in header bytes 4–11. */
  private keyFor(header: Buffer): Buffer {
    const inc = header.toString('hex', 4, 12)
    let k = this.keys.get(inc)
    if (!k) {
      k = Buffer.from(hkdfSync('sha256', this.key, header.subarray(4, 12), INFO, KEY_BYTES))
      if (this.keys.size >= MAX_KEYS) this.keys.delete(this.keys.keys().next().value!)
      this.keys.set(inc, k)
    }
    return k
  }

  /** `to`: the member address it is sealed for (none: the group). */
  seal(plain: Buffer, to?: string): Buffer {
    if (plain.length < HEADER) return plain // not a datagram of ours; the engine never sends one
    if (this.counter === 0xffff_ffff) {
      this.prefix = randomBytes(8)
      this.counter = 0
    }
    const nonce = Buffer.allocUnsafe(NONCE)
    this.prefix.copy(nonce, 0)
    nonce.writeUInt32BE(this.counter++, 8)
    const out = Buffer.allocUnsafe(plain.length + SEAL_OVERHEAD)
    plain.copy(out, 0, 0, HEADER)
    out[20] = out[20]! | AUTH_FLAG | (to === undefined ? 0 : TO_MEMBER_FLAG)
    const header = out.subarray(0, HEADER)
    const c = createCipheriv('aes-256-gcm', this.keyFor(header), nonce)
    c.setAAD(to === undefined ? header : Buffer.concat([header, Buffer.from(to)]))
    const n = c.update(plain.subarray(HEADER)).copy(out, HEADER)
    c.final()
    nonce.copy(out, HEADER + n)
    c.getAuthTag().copy(out, HEADER + n + NONCE)
    return out
  }

  /** The plain datagram, or null (counted) if it is not authentic or was seen before. Never throws. */
  open(buf: Buffer): Buffer | null {
    if (buf.length < HEADER + SEAL_OVERHEAD || (buf[20]! & AUTH_FLAG) === 0) {
      this.stats.rejected++
      return null
    }
    const header = buf.subarray(0, HEADER)
    const end = buf.length - SEAL_OVERHEAD
    const nonce = buf.subarray(end, end + NONCE)
    let plain: Buffer
    try {
      const d = createDecipheriv('aes-256-gcm', this.keyFor(header), nonce)
      d.setAAD(buf[20]! & TO_MEMBER_FLAG ? Buffer.concat([header, Buffer.from(this.inner.address)]) : header)
      d.setAuthTag(buf.subarray(end + NONCE))
      // GCM deciphers in update(); final() only checks the tag (and throws if it does not match).
      plain = Buffer.concat([header, d.update(buf.subarray(HEADER, end))])
      d.final()
    } catch {
      this.stats.rejected++
      return null
    }
    const id = `${header.toString('hex', 4, 12)}:${header.readUInt32BE(16)}:${nonce.toString('hex', 0, 8)}`
    // The map is kept in order of use, so the window forgotten when one more is needed is the one silent longest —
    // not a busy sender's, whose old datagrams would then open again.
    let w = this.windows.get(id)
    if (w) this.windows.delete(id)
    else {
      if (this.windows.size >= MAX_WINDOWS) this.windows.delete(this.windows.keys().next().value!)
      w = new ReplayWindow()
    }
    this.windows.set(id, w)
    if (!w.accept(nonce.readUInt32BE(8))) {
      this.stats.replayed++
      return null
    }
    this.stats.opened++
    plain[20] = plain[20]! & ~(AUTH_FLAG | TO_MEMBER_FLAG)
    return plain
  }
}
