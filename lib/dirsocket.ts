/**
 * The link to a directory (PROTOCOL.md §3, §3.4): plain TCP, or TLS 1.2 with a pre-shared key derived from the
 * group key when there is one. Used by members (group.ts) and by `dir ls`/`show`/`rotate-key`.
 */
import net from 'node:net'
import tls from 'node:tls'
import { keyId, linkPsk } from './seal.js'
import { encodeFrame, FrameDecoder, MAX_FRAME_FROM_DIRECTORY, type Frame } from './frame.js'
import type { ToDirectory } from './dirproto.js'
import type { SeqcastError } from './errors.js'

/** The only suite offered: PSK with an ephemeral ECDH share (forward secrecy), AEAD records. */
export const LINK_CIPHERS = 'ECDHE-PSK-CHACHA20-POLY1305'
export const LINK_TLS = { minVersion: 'TLSv1.2', maxVersion: 'TLSv1.2', ciphers: LINK_CIPHERS } as const
/** A TLS record's first byte (a handshake); a plain frame starts with its length's high byte, 0. */
export const TLS_HANDSHAKE_BYTE = 22

export interface LinkEvents {
  /** Frames may be written (for TLS: the handshake is done). */
  ready(): void
  /** The link could not be opened; `auth`: the directory was reached but the handshake failed (another key, or none). */
  failed(why: string, auth: boolean): void
}

/**
 * Opens a link to the directory: TLS-PSK with `keys` (the one whose id the directory hints, else the first), plain
 * TCP without. Exactly one of `ready` / `failed` is called; after `ready`, errors and the close are the caller's.
 */
export function openLink(host: string, port: number, keys: readonly Buffer[] | null, on: LinkEvents): net.Socket {
  let reached = false
  let settled = false
  const settle = (f: () => void): void => {
    if (settled) return
    settled = true
    f()
  }
  let sock: net.Socket
  if (!keys || keys.length === 0) {
    sock = net.connect({ host, port })
    sock.once('connect', () => settle(() => on.ready()))
  } else {
    sock = tls.connect({
      host, port, ...LINK_TLS,
      // No certificates: the PSK authenticates both ends. The name check is for certificates only.
      checkServerIdentity: () => undefined,
      pskCallback: (hint) => {
        const key = keys.find((k) => hint !== null && keyId(k) === hint) ?? keys[0]!
        return { psk: linkPsk(key), identity: keyId(key) }
      },
    })
    sock.once('connect', () => (reached = true))
    sock.once('secureConnect', () => settle(() => on.ready()))
  }
  // `reached` is set only on the TLS path: a link reached whose handshake then failed.
  const auth = (): boolean => reached
  sock.on('error', (err) => settle(() => on.failed(auth() ? `TLS handshake failed (${err.message.split('\n')[0]})` : err.message, auth())))
  sock.once('close', () => settle(() => on.failed(auth() ? 'the directory closed the link during the TLS handshake' : 'connection closed', auth())))
  return sock
}

export interface DirectorySocketEvents {
  /** A link is up: frames may be written. */
  connected(): void
  /** An attempt failed; `auth`: the directory refused the key (or has none, or another). */
  failed(why: string, auth: boolean): void
  frame(f: Frame): void
  /** The link that was up closed (either side, or broken). */
  closed(): void
  /** A frame could not be encoded (beyond the documented limits: cannot happen within them). */
  tooLarge(err: SeqcastError): void
  log(fmt: string, ...args: unknown[]): void
}

/**
 * The member's socket under its directory client (dirlink.ts): one link at a time, opened when the client asks,
 * frames decoded from it and written to it. Nothing after close() reaches the client.
 */
export class DirectorySocket {
  private conn: net.Socket | null = null
  private closed = false

  constructor(private readonly host: string, private readonly port: number, private readonly on: DirectorySocketEvents) {}

  /** Opens a link, TLS-PSK with `keys` (the one in use first), plain without. */
  open(keys: readonly Buffer[] | null): void {
    let up = false
    const sock = openLink(this.host, this.port, keys, {
      ready: () => {
        if (this.closed) return void sock.destroy()
        up = true
        sock.setNoDelay(true)
        this.conn = sock
        this.on.connected()
      },
      failed: (why, auth) => {
        if (!this.closed) this.on.failed(why, auth)
      },
    })
    sock.on('error', (err) => {
      if (up) this.on.log('directory connection error %s', err.message)
    })
    const decoder = new FrameDecoder(MAX_FRAME_FROM_DIRECTORY)
    sock.on('data', (chunk: Buffer) => {
      let frames: Frame[]
      try {
        frames = decoder.push(chunk)
      } catch (err) {
        this.on.log('bad frame from directory: %s', (err as Error).message)
        sock.destroy()
        return
      }
      for (const f of frames) if (!this.closed && this.conn === sock) this.on.frame(f)
    })
    sock.on('close', () => {
      // A failed attempt reports through `failed`; only a link that was up is a loss.
      if (!up || this.conn !== sock) return
      this.conn = null
      if (!this.closed) this.on.closed()
    })
  }

  /** Writes a frame on the link; dropped while there is none (the client's rejoin restates what matters). */
  write(f: ToDirectory): void {
    if (!this.conn || this.conn.destroyed) return
    let bytes: Buffer
    try {
      bytes = encodeFrame(f)
    } catch (err) {
      // Cannot happen within the documented limits (test/limits.ts encodes the largest frames).
      return this.on.tooLarge(err as SeqcastError)
    }
    this.conn.write(bytes)
  }

  close(): void {
    this.closed = true
    this.conn?.destroy()
  }
}
