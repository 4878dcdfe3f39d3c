/**
 * A keyed directory's group keys and their rotation (PROTOCOL.md §3.5), free of sockets: which keys a link may
 * authenticate with, what each member is told to open and seal with, and the three steps that move every member
 * to a new key without losing a datagram:
 *
 *   steady ──rotate──▶ add (open both) ──all acked──▶ use (seal with the new) ──all acked──▶ drain (timeoutMs)
 *      ▲                                                                                        │
 *      └──────────────────────────── drop (the new one only; `rotated` to who asked) ◀───────────┘
 *
 * A member that has not acknowledged a step within 2 × timeoutMs is expelled: a rotation always ends.
 */
import { ErrorCodes, ProtocolError, RotateError } from '../lib/errors.js'
import type { EpochKey, FromDirectoryWire } from '../lib/dirproto.js'
import { keyId, linkPsk } from '../lib/seal.js'

export type ConnId = number
type Step = 'steady' | 'add' | 'use' | 'drain'

export interface KeyRingHooks {
  send(conn: ConnId, frame: FromDirectoryWire): void
  /** Remove a member that did not take a step in time (the core's expel). */
  expel(conn: ConnId, reason: string): void
  /** Store the new key where a restarted directory reads it; throws if it cannot (the rotation is refused). */
  persist(key: Buffer): void
  /** The rotation asked for on this connection ended (answered `rotated`). */
  rotated(conn: ConnId): void
  now(): number
  info(message: string): void
}

export class KeyRing {
  private keys: EpochKey[]
  private use: number
  /** Number of the latest `keys` frame: every member must acknowledge it before the next step. */
  private seq = 1
  private step: Step = 'steady'
  /** When the step began (add, use: members that have not acknowledged by 2 × timeoutMs later are expelled). */
  private stepAt = 0
  /** Members (connections that joined or rejoined) and the latest `keys` frame each acknowledged. */
  private readonly acked = new Map<ConnId, number>()
  private requester: ConnId | null = null

  constructor(key: Buffer, private readonly timeoutMs: number, private readonly hooks: KeyRingHooks) {
    this.keys = [{ epoch: 0, key }]
    this.use = 0
  }

  /** The link PSK for a TLS identity (a key id), or null: a key this directory does not hold (now). */
  psk(identity: string): Buffer | null {
    const k = this.keys.find((e) => keyId(e.key) === identity)
    return k ? linkPsk(k.key) : null
  }

  /** The id of the key members seal with: the TLS identity hint. */
  get hint(): string {
    return keyId(this.current)
  }

  private get current(): Buffer {
    return this.keys.find((e) => e.epoch === this.use)!.key
  }

  /** A connection joined or rejoined: it is told the keys as they are (before its `welcome`) and must follow. */
  member(conn: ConnId): void {
    this.acked.set(conn, 0)
    this.hooks.send(conn, this.frame())
  }

  closed(conn: ConnId): void {
    this.acked.delete(conn)
    if (this.requester === conn) this.requester = null
    this.advance()
  }

  /** A member applies `keys` frame `seq`. */
  keyed(conn: ConnId, seq: number): void {
    if (!this.acked.has(conn)) throw new ProtocolError(ErrorCodes.BAD_REQUEST, 'frame keyed before join')
    if (seq > this.seq) throw new ProtocolError(ErrorCodes.BAD_REQUEST, `frame keyed: seq ${seq} was never sent (latest ${this.seq})`)
    if (seq > this.acked.get(conn)!) this.acked.set(conn, seq)
    this.advance()
  }

  /** Starts moving every member to `key`; throws RotateError if it cannot. */
  rotate(conn: ConnId, key: Buffer): void {
    if (this.step !== 'steady') throw new RotateError('a key rotation is under way; wait for it to end')
    if (this.keys.some((e) => e.key.equals(key))) throw new RotateError('the new key is the key in use')
    try {
      this.hooks.persist(key)
    } catch (err) {
      throw new RotateError(`cannot store the new key: ${(err as Error).message}`)
    }
    this.requester = conn
    this.keys = [this.keys[0]!, { epoch: this.use + 1, key }]
    this.hooks.info(`key rotation: epoch ${this.use} → ${this.use + 1} (key id ${keyId(key)}), ${this.acked.size} member(s) to move`)
    this.next('add')
  }

  /** Expels members that did not take a step in time; ends the drain. */
  tick(): void {
    const now = this.hooks.now()
    if ((this.step === 'add' || this.step === 'use') && now - this.stepAt > 2 * this.timeoutMs) {
      const late = [...this.acked].filter(([, seq]) => seq < this.seq).map(([conn]) => conn)
      for (const conn of late) this.hooks.expel(conn, `did not take the new key within ${2 * this.timeoutMs} ms`)
      this.advance()
    }
    if (this.step === 'drain' && now - this.stepAt >= this.timeoutMs) {
      // Whatever was sealed with the old key has arrived by now, or is lost and will be resent under the new one.
      this.keys = [this.keys[1]!]
      this.next('steady')
      this.hooks.info(`key rotation done: epoch ${this.use} only`)
      if (this.requester !== null) {
        this.hooks.send(this.requester, { t: 'rotated', epoch: this.use })
        this.hooks.rotated(this.requester)
        this.requester = null
      }
    }
  }

  /** The next step once every member acknowledged the current one. */
  private advance(): void {
    if (this.step !== 'add' && this.step !== 'use') return
    for (const seq of this.acked.values()) if (seq < this.seq) return
    if (this.step === 'add') {
      this.use = this.keys[1]!.epoch
      this.next('use')
    } else {
      this.step = 'drain'
      this.stepAt = this.hooks.now()
    }
  }

  private next(step: Step): void {
    this.step = step
    this.stepAt = this.hooks.now()
    this.seq++
    const f = this.frame()
    for (const conn of this.acked.keys()) this.hooks.send(conn, f)
    this.advance() // no members: nothing to wait for
  }

  private frame(): FromDirectoryWire {
    return { t: 'keys', seq: this.seq, keys: this.keys.map((e) => ({ ...e })), use: this.use }
  }
}
