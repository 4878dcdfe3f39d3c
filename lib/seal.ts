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
 * (the one unused longest forgotten first); only authentic datagrams create one.
 *
 * Key phases, for rotation (like QUIC's key phase bit): each group key has an epoch, and flag bit 1 (KEY_PHASE) of a
 * sealed datagram is its key's epoch mod 2. A member holds one or two group keys (epochs consecutive, the old and
 * the new: setKeys) and seals with one of them; a receiver opens with the key of the datagram's phase, so datagrams
 * in flight under the old key still open while both are held, and none does once the old one is dropped.
 *
 * Cost (docs/PERFORMANCE.md, "Keyed groups"): per datagram, mostly the OpenSSL context, which Node cannot reuse
 * under a new nonce. So a member does not open its own datagrams coming back by loopback, finds windows and keys by
 * numbers, and makes the next contexts ahead while its code is hot (`ready`, `speculate`): made cold, after an idle,
 * a context costs several times more, on the latency path.
 */
import { createCipheriv, createDecipheriv, hkdfSync, randomBytes, type CipherGCM, type DecipherGCM } from 'node:crypto'
import fs from 'node:fs'
import { ArgumentError } from './errors.js'
import type { Transport, Via } from './transport.js'
import type { GroupTransport } from './dirproto.js'
import { MAX_GROUP_MEMBERS } from './frame.js'

const HEADER = 24
const NONCE = 12
const TAG = 16
/** Bytes a sealed datagram has beyond the plain one: what maxDatagram must leave room for. */
export const SEAL_OVERHEAD = NONCE + TAG
export const KEY_BYTES = 32
const AUTH_FLAG = 1
/** Flag bit 1: the epoch of the group key that sealed the datagram, mod 2. */
const PHASE_FLAG = 2
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
const KEY_ID_INFO = Buffer.from('seqcast key id')
const LINK_INFO = Buffer.from('seqcast directory link v1')
const NO_SALT = Buffer.alloc(0)
/** Datagrams failing authentication, none opening, before a member concludes its key is not the group's. */
const WRONG_KEY_AFTER = 16

/** A fresh group key as a key file holds it: 64 hex digits and a newline (`dir keygen`). */
export function generateKeyText(): string {
  return keyText(randomBytes(KEY_BYTES))
}

/** A key as a key file holds it (`readKey` reads it back). */
export function keyText(key: Buffer): string {
  return `${key.toString('hex')}\n`
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

function checkKey(key: unknown): asserts key is Uint8Array {
  if (!(key instanceof Uint8Array) || key.length !== KEY_BYTES) throw new RangeError(`a group key is ${KEY_BYTES} bytes, got ${key instanceof Uint8Array ? key.length : typeof key}`)
}

/**
 * A group key's public fingerprint, 16 hex digits: HKDF-SHA256(ikm = key, no salt, info = "seqcast key id"), 8
 * bytes. Names a key (the directory link's TLS-PSK identity) without revealing it.
 */
export function keyId(key: Uint8Array): string {
  checkKey(key)
  return Buffer.from(hkdfSync('sha256', key, NO_SALT, KEY_ID_INFO, 8)).toString('hex')
}

/**
 * The directory link's pre-shared key for a group key: HKDF-SHA256(ikm = key, no salt, info = "seqcast directory
 * link v1"), 32 bytes — never the group key itself, which also derives the datagram keys.
 */
export function linkPsk(key: Uint8Array): Buffer {
  checkKey(key)
  return Buffer.from(hkdfSync('sha256', key, NO_SALT, LINK_INFO, KEY_BYTES))
}

/** A group key and its epoch (its place in the sequence of keys a group has had: rotations, §2.7). */
export interface GroupKey {
  epoch: number
  key: Uint8Array
}

/** One group key held: its epoch, the key, and the datagram keys derived from it, per incarnation. */
interface Held {
  epoch: number
  key: Buffer
  /** Newest first, at most MAX_KEYS: looked up by the incarnation's two 32-bit halves (no string per datagram). */
  derived: { hi: number; lo: number; key: Buffer }[]
}

export interface SealStats {
  /** Datagrams that opened: authentic, first seen. */
  opened: number
  /** Datagrams that failed authentication: no AUTH flag, too short, another key, a key phase with no key held, or
   *  tampered with. */
  rejected: number
  /** Authentic datagrams received a second time (or older than the replay window). */
  replayed: number
}

/** Counters seen for one (incarnation, sender, nonce prefix): the highest, and which of the window below it. */
class ReplayWindow {
  private top = -1
  private readonly seen = new Uint8Array(REPLAY_WINDOW)
  /** Another window whose identity hashes alike (Windows). */
  next: ReplayWindow | null = null
  /** A decipher made ahead for this sender's next counter (SealedTransport.speculate). */
  ahead: { counter: number; key: Buffer; d: DecipherGCM } | null = null
  /** When an authentic datagram last used it (Windows' clock): the one unused longest is forgotten first. */
  used = 0

  constructor(
    readonly hash: number,
    readonly incHi: number,
    readonly incLo: number,
    readonly sender: number,
    readonly pfxHi: number,
    readonly pfxLo: number,
  ) {}

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

/**
 * The replay windows, found by numbers read from the datagram (a string built per datagram cost more than the
 * window itself): a map from 53 bits of the random nonce prefix to a chain of windows, each compared on its whole
 * identity. At most MAX_WINDOWS, the one unused longest forgotten first — not a busy sender's (often the
 * sequencer's), whose captured datagrams would then open again (test/seal-replay.ts).
 */
class Windows {
  private readonly byHash = new Map<number, ReplayWindow>()
  private readonly all: ReplayWindow[] = []
  private clock = 0

  /** An authentic datagram used window `w`. */
  touch(w: ReplayWindow): void {
    w.used = ++this.clock
  }

  /** The window of this identity, if there is one. */
  find(incHi: number, incLo: number, sender: number, pfxHi: number, pfxLo: number): ReplayWindow | undefined {
    for (let w = this.byHash.get(pfxHi * 0x20_0000 + (pfxLo >>> 11)); w; w = w.next ?? undefined) {
      if (w.pfxLo === pfxLo && w.sender === sender && w.incLo === incLo && w.incHi === incHi && w.pfxHi === pfxHi) return w
    }
    return undefined
  }

  /** The window of this identity, created if new. */
  get(incHi: number, incLo: number, sender: number, pfxHi: number, pfxLo: number): ReplayWindow {
    const found = this.find(incHi, incLo, sender, pfxHi, pfxLo)
    if (found) return found
    const hash = pfxHi * 0x20_0000 + (pfxLo >>> 11)
    const w = new ReplayWindow(hash, incHi, incLo, sender, pfxHi, pfxLo)
    if (this.all.length < MAX_WINDOWS) this.all.push(w)
    else {
      // One scan of MAX_WINDOWS per new sender life once full (only authentic datagrams make one).
      let lru = 0
      for (let i = 1; i < this.all.length; i++) if (this.all[i]!.used < this.all[lru]!.used) lru = i
      this.forget(this.all[lru]!)
      this.all[lru] = w
    }
    w.next = this.byHash.get(hash) ?? null
    this.byHash.set(hash, w)
    return w
  }

  private forget(old: ReplayWindow): void {
    let w: ReplayWindow | null | undefined = this.byHash.get(old.hash)
    if (w === old) {
      if (old.next) this.byHash.set(old.hash, old.next)
      else this.byHash.delete(old.hash)
      return
    }
    for (; w; w = w.next) if (w.next === old) w.next = old.next
  }
}

export class SealedTransport implements Transport {
  onDatagram: (buf: Buffer, via: Via, from: string) => void = () => {}
  readonly stats: SealStats = { opened: 0, rejected: 0, replayed: 0 }
  /** The group keys held, by phase (epoch mod 2). */
  private readonly held: (Held | null)[] = [null, null]
  /** The phase sealed with. */
  private use = 0
  /** Rejected for a reason other than a phase with no key held: what wrongKey() counts. */
  private failed = 0
  private readonly windows = new Windows()
  private prefix = randomBytes(8)
  private pfxHi = this.prefix.readUInt32BE(0)
  private pfxLo = this.prefix.readUInt32BE(4)
  /** This sender life's datagrams come back to it (multicast loopback): which of them did (see open()). */
  private ownSeen = new ReplayWindow(0, 0, 0, 0, 0, 0)
  private counter = 0
  /**
   * The cipher for the next seal, made right after the last one was sent, while this code is hot: made after the
   * process idled it costs several times more (~18 µs against ~3), on the latency path of every hop. Its key is
   * the last one sealed with (used only if the next seal wants the same), its nonce already taken.
   */
  private ready: { key: Buffer; nonce: Buffer; c: CipherGCM } | null = null
  private lastKey: Buffer | null = null
  /** The window (and key) of the datagram last opened, for speculate(). */
  private opened: { w: ReplayWindow; key: Buffer; counter: number } | null = null

  /** `key`: the group key, KEY_BYTES random bytes (`dir keygen`), of epoch `epoch`. */
  constructor(private readonly inner: Transport, key: Uint8Array, epoch = 0) {
    this.setKeys([{ epoch, key }], epoch)
    inner.onDatagram = (buf, via, from) => {
      const plain = this.open(buf)
      if (plain) {
        this.onDatagram(plain, via, from)
        this.speculate()
      }
    }
  }

  /**
   * The group keys this member opens with from now on — one, or two of consecutive epochs (the old and the new
   * during a rotation) — and the epoch it seals with (one of them). Replaces the previous set: a key not listed
   * opens nothing afterwards. Idempotent. The sender's nonces go on where they were (see seal()), and the replay
   * windows are kept: a datagram seen under one key is not taken again under any.
   */
  setKeys(keys: readonly GroupKey[], use: number): void {
    if (!Array.isArray(keys) || keys.length < 1 || keys.length > 2) throw new RangeError(`setKeys: one or two keys, got ${Array.isArray(keys) ? keys.length : typeof keys}`)
    for (const k of keys) {
      if (!Number.isSafeInteger(k?.epoch) || k.epoch < 0) throw new RangeError(`setKeys: an epoch is an integer from 0 to 2^53 - 1, got ${k?.epoch}`)
      checkKey(k.key)
    }
    if (keys.length === 2 && Math.abs(keys[0]!.epoch - keys[1]!.epoch) !== 1) throw new RangeError(`setKeys: two keys must be of consecutive epochs, got ${keys[0]!.epoch} and ${keys[1]!.epoch}`)
    if (!keys.some((k) => k.epoch === use)) throw new RangeError(`setKeys: sealing with epoch ${use}, which is not among the keys given`)
    const next: (Held | null)[] = [null, null]
    for (const { epoch, key } of keys) {
      const was = this.held[epoch % 2]
      // The same key again keeps its derived keys.
      next[epoch % 2] = was && was.epoch === epoch && was.key.equals(key) ? was : { epoch, key: Buffer.from(key), derived: [] }
    }
    this.held[0] = next[0]!
    this.held[1] = next[1]!
    this.use = use % 2
  }

  /**
   * This member's key is not its group's: of the datagrams it got, none opened, and at least WRONG_KEY_AFTER failed.
   * (A stranger's junk alone cannot make this true while the group's own datagrams open.) Datagrams of a key phase
   * it holds no key for are not counted: during a rotation they are the group's own, sealed with a key this member
   * was not (or no longer) given, not a sign of a wrong one.
   */
  wrongKey(): boolean {
    return this.stats.opened === 0 && this.failed >= WRONG_KEY_AFTER
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
    this.prepare()
  }

  toMember(addr: string, buf: Buffer): void {
    this.inner.toMember(addr, this.seal(buf, addr))
    this.prepare()
  }

  /** Makes `ready` for the next seal. */
  private prepare(): void {
    if (this.ready || !this.lastKey) return
    const nonce = this.nextNonce()
    this.ready = { key: this.lastKey, nonce, c: createCipheriv('aes-256-gcm', this.lastKey, nonce) }
  }

  /**
   * One (prefix, counter) sequence per sender life, whatever key seals: a nonce is never used twice by this sender,
   * so never twice under one key — even if setKeys switches back and forth, or two epochs share a key. (A nonce
   * taken for `ready` and dropped with it is simply never used.) Continuing the counter across a switch also keeps
   * the receivers' replay windows (per prefix, not per key) exact: an old-key datagram replayed after the switch is
   * a counter already seen.
   */
  private nextNonce(): Buffer {
    if (this.counter === 0xffff_ffff) {
      this.prefix = randomBytes(8)
      this.pfxHi = this.prefix.readUInt32BE(0)
      this.pfxLo = this.prefix.readUInt32BE(4)
      this.ownSeen = new ReplayWindow(0, 0, 0, 0, 0, 0)
      this.counter = 0
    }
    const nonce = Buffer.allocUnsafe(NONCE)
    this.prefix.copy(nonce, 0)
    nonce.writeUInt32BE(this.counter++, 8)
    return nonce
  }

  close(): void {
    this.inner.close()
  }

  /** The datagram key of group key `g` for the incarnation in header bytes 4–11. */
  private keyFor(g: Held, header: Buffer): Buffer {
    const hi = header.readUInt32BE(4)
    const lo = header.readUInt32BE(8)
    for (const d of g.derived) if (d.lo === lo && d.hi === hi) return d.key
    const key = Buffer.from(hkdfSync('sha256', g.key, header.subarray(4, 12), INFO, KEY_BYTES))
    g.derived.unshift({ hi, lo, key })
    if (g.derived.length > MAX_KEYS) g.derived.pop()
    return key
  }

  /** `to`: the member address it is sealed for (none: the group). */
  seal(plain: Buffer, to?: string): Buffer {
    if (plain.length < HEADER) return plain // not a datagram of ours; the engine never sends one
    // Header, then the body enciphered, then the nonce and the tag, in one buffer.
    const out = Buffer.allocUnsafe(plain.length + SEAL_OVERHEAD)
    plain.copy(out, 0, 0, HEADER)
    out[20] = (out[20]! & ~PHASE_FLAG) | AUTH_FLAG | (this.use << 1) | (to === undefined ? 0 : TO_MEMBER_FLAG)
    const header = out.subarray(0, HEADER)
    const key = this.keyFor(this.held[this.use]!, header)
    let r = this.ready
    this.ready = null
    if (r?.key !== key) {
      const nonce = this.nextNonce()
      r = { key, nonce, c: createCipheriv('aes-256-gcm', key, nonce) }
    }
    this.lastKey = key
    const { c, nonce } = r
    const at = plain.length
    // GCM takes the associated data in pieces: the header, then the member's address — no joined copy per datagram.
    c.setAAD(header)
    if (to !== undefined) c.setAAD(this.addressBytes(to))
    c.update(plain.subarray(HEADER)).copy(out, HEADER) // GCM enciphers byte for byte: as long as the body
    c.final()
    nonce.copy(out, at)
    c.getAuthTag().copy(out, at + NONCE)
    return out
  }

  /**
   * The same for receiving, once the datagram just opened has been handled: a sender's counters mostly come one
   * after another, so the decipher for its next one (same key, counter + 1) is made now, while the code is hot, and
   * used if that is what arrives next from it (W2: the ORDER after the DATA) — otherwise it is replaced, at the
   * cost of one context made in vain.
   */
  private speculate(): void {
    const o = this.opened
    this.opened = null
    if (!o || o.counter === 0xffff_ffff) return
    const nonce = Buffer.allocUnsafe(NONCE)
    nonce.writeUInt32BE(o.w.pfxHi, 0)
    nonce.writeUInt32BE(o.w.pfxLo, 4)
    nonce.writeUInt32BE(o.counter + 1, 8)
    o.w.ahead = { counter: o.counter + 1, key: o.key, d: createDecipheriv('aes-256-gcm', o.key, nonce) }
  }

  /** Members' addresses as TO_MEMBER datagrams authenticate them (ASCII "ip:port"), made once each. */
  private readonly addresses = new Map<string, Buffer>()
  private addressBytes(addr: string): Buffer {
    let b = this.addresses.get(addr)
    if (!b) {
      if (this.addresses.size >= 2 * MAX_GROUP_MEMBERS) this.addresses.clear() // past any view's members: start over
      this.addresses.set(addr, (b = Buffer.from(addr)))
    }
    return b
  }

  /** The plain datagram, or null (counted) if it is not authentic or was seen before. Never throws. */
  open(buf: Buffer): Buffer | null {
    if (buf.length < HEADER + SEAL_OVERHEAD || (buf[20]! & AUTH_FLAG) === 0) {
      this.stats.rejected++
      this.failed++
      return null
    }
    const end = buf.length - SEAL_OVERHEAD
    // This member's own datagrams, back by multicast loopback (a third of what each member of a 3-member group
    // receives), are dropped unopened: the engine drops any datagram of its own sender number unread, and a datagram
    // with this life's nonce prefix was sealed here (or forged: dropped either way). A counter back a second time is
    // a replay, and counted. Not before anything opened: until then, its own datagrams opening are what tells a
    // lone member's wrongKey() that its key is sound.
    if (this.stats.opened > 0 && buf.readUInt32BE(end) === this.pfxHi && buf.readUInt32BE(end + 4) === this.pfxLo) {
      if (!this.ownSeen.accept(buf.readUInt32BE(end + 8))) this.stats.replayed++
      return null
    }
    const g = this.held[(buf[20]! & PHASE_FLAG) >> 1]
    if (!g) {
      this.stats.rejected++ // a phase this member holds no key for: not counted by wrongKey()
      return null
    }
    const header = buf.subarray(0, HEADER)
    const key = this.keyFor(g, header)
    const counter = buf.readUInt32BE(end + 8)
    let w = this.windows.find(buf.readUInt32BE(4), buf.readUInt32BE(8), buf.readUInt32BE(16), buf.readUInt32BE(end), buf.readUInt32BE(end + 4))
    const ahead = w?.ahead
    if (ahead) w!.ahead = null
    let plain: Buffer
    try {
      const d = ahead && ahead.counter === counter && ahead.key === key ? ahead.d : createDecipheriv('aes-256-gcm', key, buf.subarray(end, end + NONCE))
      d.setAAD(header)
      if (buf[20]! & TO_MEMBER_FLAG) d.setAAD(this.addressBytes(this.inner.address))
      d.setAuthTag(buf.subarray(end + NONCE))
      // GCM deciphers in update(); final() only checks the tag (and throws if it does not match).
      // Its own memory, not a slice of Node's shared pool: held messages keep their datagram's memory (msgstore.ts),
      // and a pooled one would pin a slab shared with short-lived buffers.
      plain = Buffer.allocUnsafeSlow(end)
      header.copy(plain, 0)
      d.update(buf.subarray(HEADER, end)).copy(plain, HEADER)
      d.final()
    } catch {
      this.stats.rejected++
      this.failed++
      return null
    }
    w ??= this.windows.get(buf.readUInt32BE(4), buf.readUInt32BE(8), buf.readUInt32BE(16), buf.readUInt32BE(end), buf.readUInt32BE(end + 4))
    if (!w.accept(counter)) {
      this.stats.replayed++
      return null
    }
    this.windows.touch(w)
    this.opened = { w, key, counter }
    this.stats.opened++
    plain[20] = plain[20]! & ~(AUTH_FLAG | PHASE_FLAG | TO_MEMBER_FLAG)
    return plain
  }
}
