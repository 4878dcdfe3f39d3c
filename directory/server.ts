/**
 * The directory over TCP: DirectoryCore (core.ts) on `net` sockets with the framing of lib/frame.ts.
 * A malformed or oversized frame closes only the connection that sent it.
 */
import fs from 'node:fs'
import net from 'node:net'
import path from 'node:path'
import tls from 'node:tls'
import { DirectoryCore, DEFAULT_DIRECTORY_OPTIONS, type ConnId, type DirectoryOptions } from './core.js'
import { DirectoryReader, type FromDirectory, type GroupStatus, type ToDirectory } from '../lib/dirproto.js'
import { AuthError, DirectoryError, ErrorCodes, errorFromCode, SeqcastError } from '../lib/errors.js'
import { encodeFrame, FrameDecoder, MAX_FRAME_FROM_DIRECTORY, type Frame } from '../lib/frame.js'
import { LINK_TLS, openLink, TLS_HANDSHAKE_BYTE } from '../lib/dirsocket.js'
import { keyText } from '../lib/seal.js'
import { parseHostPort } from '../lib/options.js'
import { logger } from '../lib/log.js'

const log = logger('dir')
export const DEFAULT_DIRECTORY_PORT = 4720
const TICK_MS = 100
const CLOSE_GRACE_MS = 1000
/**
 * Connections waiting to be accepted: a thousand members starting at once must not wait for SYN retries (1 s, 3 s,
 * 7 s…). The kernel caps it at net.core.somaxconn.
 */
const LISTEN_BACKLOG = 4096
/** A frame begun must be complete within this long (a 192 KB rejoin at 20 KB/s), or its connection is closed. */
export const DEFAULT_FRAME_TIMEOUT_MS = 10_000

export interface DirectoryServerOptions extends Partial<DirectoryOptions> {
  host?: string
  port?: number
  /** Decisions an operator should see (e.g. a group moved to unicast); default: the `seqcast:dir` debug log. */
  info?: (message: string) => void
  /** A frame not complete this long after its first byte closes its connection (default DEFAULT_FRAME_TIMEOUT_MS). */
  frameTimeoutMs?: number
  /**
   * Where the group key (option `key`) was read from: a rotation writes the new key there, so a restarted directory
   * comes back with it. Without it a rotation lives in memory only.
   */
  keyFile?: string
}

interface Connection {
  sock: net.Socket
  decoder: FrameDecoder
  /** When the frame under way began (null between frames). */
  frameSince: number | null
}

export class DirectoryServer {
  readonly core: DirectoryCore
  private readonly server: net.Server
  private readonly sockets = new Map<ConnId, Connection>()
  /** Connections being closed (refused, expelled): nothing more they send is read. */
  private readonly closing = new Set<ConnId>()
  private nextConn = 1
  private ticker: NodeJS.Timeout | null = null
  /** Connections closed for a bad frame. */
  badFrames = 0
  private readonly encoded = new WeakMap<Frame, Buffer>()
  private readonly frameTimeoutMs: number

  constructor(private readonly opts: DirectoryServerOptions = {}) {
    const { host: _host, port: _port, info, frameTimeoutMs, keyFile, ...core } = opts
    this.frameTimeoutMs = frameTimeoutMs ?? DEFAULT_FRAME_TIMEOUT_MS
    if (!Number.isInteger(this.frameTimeoutMs) || this.frameTimeoutMs < 1) throw new Error(`frameTimeoutMs must be an integer of at least 1, got ${frameTimeoutMs}`)
    this.core = new DirectoryCore({ ...DEFAULT_DIRECTORY_OPTIONS, ...stripUndefined(core) }, {
      info,
      now: () => performance.now(),
      send: (conn, frame) => this.send(conn, frame),
      close: (conn, reason) => {
        log('closing connection %d: %s', conn, reason)
        this.endConnection(conn)
      },
      persistKey: (key) => {
        if (keyFile !== undefined) writeKeyFile(keyFile, key)
      },
    })
    this.server = net.createServer((sock) => this.accept(sock))
  }

  /** Starts listening; resolves with the bound address (port 0 picks a free one). */
  listen(): Promise<{ host: string; port: number }> {
    const host = this.opts.host ?? '127.0.0.1'
    const port = this.opts.port ?? DEFAULT_DIRECTORY_PORT
    return new Promise((resolve, reject) => {
      const onError = (err: NodeJS.ErrnoException): void => {
        reject(new Error(err.code === 'EADDRINUSE' ? `${host}:${port} is already in use (another directory running?)` : `cannot listen on ${host}:${port}: ${err.message}`))
      }
      this.server.once('error', onError)
      this.server.listen({ port, host, backlog: LISTEN_BACKLOG }, () => {
        this.server.off('error', onError)
        this.server.on('error', (err) => log('listening socket: %s', err.message))
        // The tick runs after this turn's I/O (setImmediate): when the directory itself was stalled, the pings
        // that arrived meanwhile are read before anyone is judged silent.
        this.ticker = setInterval(() => setImmediate(() => {
          this.closeStalledFrames()
          this.core.tick()
        }), TICK_MS)
        this.ticker.unref()
        const a = this.server.address() as net.AddressInfo
        resolve({ host: a.address, port: a.port })
      })
    })
  }

  close(): Promise<void> {
    if (this.ticker) clearInterval(this.ticker)
    for (const c of this.sockets.values()) c.sock.destroy()
    return new Promise((resolve) => this.server.close(() => resolve()))
  }

  private accept(raw: net.Socket): void {
    const conn = this.nextConn++
    const c: Connection = { sock: raw, decoder: new FrameDecoder(), frameSince: null }
    this.sockets.set(conn, c)
    raw.setNoDelay(true)
    raw.on('error', (err) => log('connection %d: %s', conn, err.message))
    raw.on('close', () => {
      this.sockets.delete(conn)
      this.closing.delete(conn)
      this.core.closed(conn)
    })
    this.core.opened(conn)
    // The first byte tells a TLS client from a plain one (PROTOCOL.md §3.4).
    raw.once('readable', () => {
      const first = raw.read(1) as Buffer | null
      if (first === null || this.closing.has(conn)) return
      raw.unshift(first)
      const keys = this.core.keys
      const isTls = first[0] === TLS_HANDSHAKE_BYTE
      if (keys && isTls) {
        // The PSK options are the server's (tls.createServer), which @types/node leaves out of TLSSocketOptions.
        const server: tls.TlsOptions = {
          ...LINK_TLS, pskIdentityHint: keys.hint,
          pskCallback: (_s, identity) => keys.psk(identity),
        }
        const t = new tls.TLSSocket(raw, { isServer: true, ...server } as tls.TLSSocketOptions)
        t.on('error', (err) => log('connection %d from %s: TLS: %s', conn, raw.remoteAddress, err.message.split('\n')[0]))
        c.sock = t
        return this.read(conn, c)
      }
      if (keys || isTls) {
        // A keyed directory takes no plain frame; an unkeyed one cannot speak TLS. Say why where it is readable.
        const why = keys ? 'this directory requires the group key (join option key, --key-file)' : 'this directory has no key: a member with a key cannot join it'
        log('connection %d from %s: %s; closing it', conn, raw.remoteAddress, why)
        if (keys) this.send(conn, { t: 'error', code: ErrorCodes.AUTH, message: why })
        return this.endConnection(conn)
      }
      this.read(conn, c)
    })
  }

  /** Reads frames from the connection's socket (plain, or TLS once its handshake is done) into the core. */
  private read(conn: ConnId, c: Connection): void {
    const sock = c.sock
    sock.on('data', (chunk: Buffer) => {
      if (this.closing.has(conn)) return
      let frames: Frame[]
      try {
        frames = c.decoder.push(chunk)
        // A frame under way is timed from its first byte: a new one starts its own clock.
        c.frameSince = c.decoder.pending === 0 ? null : frames.length > 0 || c.frameSince === null ? performance.now() : c.frameSince
      } catch (err) {
        // Undecodable or oversized: the stream is out of step, nothing can be answered on it.
        this.badFrames++
        log('connection %d from %s: %s; closing it', conn, sock.remoteAddress, (err as Error).message)
        sock.destroy()
        return
      }
      for (const f of frames) {
        try {
          this.core.frame(conn, f)
        } catch (err) {
          // A well-framed but invalid request: say why (grp_join rejects with that code), then close.
          this.badFrames++
          log('connection %d from %s: %s; refusing it', conn, sock.remoteAddress, (err as Error).message)
          if (err instanceof SeqcastError) this.send(conn, { t: 'error', code: err.code, message: err.message })
          this.endConnection(conn)
          return
        }
      }
    })
  }

  /** Connections with a frame begun more than frameTimeoutMs ago: a stranger's trickle holds no buffer for ever. */
  private closeStalledFrames(): void {
    const now = performance.now()
    for (const [conn, c] of this.sockets) {
      if (c.frameSince === null || now - c.frameSince <= this.frameTimeoutMs || this.closing.has(conn)) continue
      this.badFrames++
      log('connection %d from %s: a frame (%d bytes so far) not complete within %d ms; closing it', conn, c.sock.remoteAddress, c.decoder.pending, this.frameTimeoutMs)
      c.sock.destroy()
    }
  }

  /** Ends a connection after what was written to it; a peer that does not read it is cut off after a grace. */
  private endConnection(conn: ConnId): void {
    const s = this.sockets.get(conn)?.sock
    this.closing.add(conn)
    if (!s) return
    s.end()
    s.setTimeout(CLOSE_GRACE_MS, () => s.destroy())
  }

  private send(conn: ConnId, frame: Frame): void {
    const s = this.sockets.get(conn)?.sock
    if (!s || s.destroyed) return
    // A commit goes to every member as one of two objects (whole, delta): each is encoded once, not per member.
    let bytes = this.encoded.get(frame)
    if (!bytes) {
      try {
        bytes = encodeFrame(frame, MAX_FRAME_FROM_DIRECTORY)
      } catch (err) {
        // Cannot happen within MAX_GROUP_MEMBERS (test/limits.ts encodes the largest frames); the member cannot
        // follow the group without it. Only that member's connection is closed.
        log('connection %d: cannot send %s: %s; closing it', conn, frame.t, (err as Error).message)
        s.destroy()
        return
      }
      this.encoded.set(frame, bytes)
    }
    s.write(bytes)
  }
}

/** Replaces the key file's content at once (a new file renamed over it): never half a key, only its owner reads it. */
function writeKeyFile(file: string, key: Buffer): void {
  const tmp = path.join(path.dirname(file), `.${path.basename(file)}.${process.pid}.new`)
  fs.writeFileSync(tmp, keyText(key), { mode: 0o600 })
  try {
    fs.renameSync(tmp, file)
  } catch (err) {
    fs.rmSync(tmp, { force: true })
    throw err
  }
}

function stripUndefined<T extends object>(o: T): Partial<T> {
  return Object.fromEntries(Object.entries(o).filter(([, v]) => v !== undefined)) as Partial<T>
}

/**
 * One request to a running directory over its link (keyed or not), frame after frame until `step` returns a result:
 * `step` answers each frame from the directory with the next frame to send, a result, or undefined (keep reading).
 * An `error` frame rejects with its code (`EAUTH` for a key the directory refuses).
 */
function ask<T>(hostPort: string, key: Buffer | null, timeoutMs: number, first: ToDirectory, step: (f: FromDirectory) => { send: ToDirectory } | { done: T } | undefined): Promise<T> {
  const { host, port } = parseHostPort(hostPort, 'directory address')
  return new Promise((resolve, reject) => {
    let over = false
    const finish = (err: Error | null, value?: T): void => {
      if (over) return
      over = true
      clearTimeout(timer)
      sock.destroy()
      if (err) reject(err)
      else resolve(value as T)
    }
    const fail = (why: string, cause?: unknown): void => finish(new DirectoryError(ErrorCodes.DIRECTORY_UNREACHABLE, `cannot query the directory at ${hostPort}: ${why}`, cause))
    const timer = setTimeout(() => fail(`no answer in ${timeoutMs} ms`), timeoutMs)
    const decoder = new FrameDecoder(MAX_FRAME_FROM_DIRECTORY)
    const reader = new DirectoryReader()
    const sock = openLink(host, port, key ? [key] : null, {
      ready: () => sock.write(encodeFrame(first)),
      failed: (why, auth) => auth ? finish(new AuthError(`the directory at ${hostPort} refused the key: ${why}`)) : fail(why),
    })
    sock.on('error', (err) => fail(err.message, err))
    sock.on('close', () => fail('the directory closed the connection'))
    sock.on('data', (chunk: Buffer) => {
      try {
        for (const raw of decoder.push(chunk)) {
          const f = reader.read(raw)
          if (f.t === 'error') return finish(errorFromCode(f.code, f.message))
          const next = step(f)
          if (next && 'send' in next) sock.write(encodeFrame(next.send))
          else if (next) return finish(null, next.done)
        }
      } catch (err) {
        fail((err as Error).message, err)
      }
    })
  })
}

/**
 * Asks a running directory for its groups (what `dir ls` prints), or for one (`dir show`): page after page
 * (`ls` with `after`) until a `status` frame has no `next`. `key`: the group key, for a keyed directory.
 */
export function queryStatus(hostPort: string, timeoutMs = 2000, group?: string, key: Buffer | null = null): Promise<GroupStatus[]> {
  const groups: GroupStatus[] = []
  return ask<GroupStatus[]>(hostPort, key, timeoutMs, group === undefined ? { t: 'ls' } : { t: 'ls', group }, (f) => {
    if (f.t !== 'status') return undefined
    groups.push(...f.groups)
    return f.next !== undefined ? { send: { t: 'ls', after: f.next } } : { done: groups }
  })
}

/**
 * `dir rotate-key`: moves a keyed directory and every member of its groups from `key` to `newKey` (PROTOCOL.md §3.5);
 * resolves with the new key's epoch once the old key opens nothing.
 */
export function rotateKey(hostPort: string, key: Buffer, newKey: Buffer, timeoutMs: number): Promise<number> {
  return ask<number>(hostPort, key, timeoutMs, { t: 'rotate', key: newKey }, (f) => f.t === 'rotated' ? { done: f.epoch } : undefined)
}
