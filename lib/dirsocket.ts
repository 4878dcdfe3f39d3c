/**
 * The link to a directory (PROTOCOL.md §3, §3.4): plain TCP, or TLS 1.2 with a pre-shared key derived from the
 * group key when there is one. Used by members (group.ts) and by `dir ls`/`show`/`rotate-key`.
 */
import net from 'node:net'
import tls from 'node:tls'
import { keyId, linkPsk } from './seal.js'

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
  const auth = (): boolean => reached && keys !== null && keys.length > 0
  sock.on('error', (err) => settle(() => on.failed(auth() ? `TLS handshake failed (${err.message.split('\n')[0]})` : err.message, auth())))
  sock.once('close', () => settle(() => on.failed(auth() ? 'the directory closed the link during the TLS handshake' : 'connection closed', auth())))
  return sock
}
