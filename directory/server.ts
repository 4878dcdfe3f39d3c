/**
 * The directory over TCP: DirectoryCore (core.ts) on `net` sockets with the framing of lib/frame.ts.
 * A malformed or oversized frame closes only the connection that sent it.
 */
import net from 'node:net'
import { DirectoryCore, DEFAULT_DIRECTORY_OPTIONS, type ConnId, type DirectoryOptions } from './core.js'
import { DirectoryReader, type GroupStatus } from '../lib/dirproto.js'
import { DirectoryError, ErrorCodes, SeqcastError } from '../lib/errors.js'
import { encodeFrame, FrameDecoder, MAX_FRAME_FROM_DIRECTORY, type Frame } from '../lib/frame.js'
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
    const { host: _host, port: _port, info, frameTimeoutMs, ...core } = opts
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

  private accept(sock: net.Socket): void {
    const conn = this.nextConn++
    const c: Connection = { sock, decoder: new FrameDecoder(), frameSince: null }
    this.sockets.set(conn, c)
    sock.setNoDelay(true)
    sock.on('error', (err) => log('connection %d: %s', conn, err.message))
    sock.on('close', () => {
      this.sockets.delete(conn)
      this.closing.delete(conn)
      this.core.closed(conn)
    })
    this.core.opened(conn)
    sock.on('data', (chunk) => {
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

function stripUndefined<T extends object>(o: T): Partial<T> {
  return Object.fromEntries(Object.entries(o).filter(([, v]) => v !== undefined)) as Partial<T>
}

/**
 * Asks a running directory for its groups (what `dir ls` prints), or for one (`dir show`): page after page
 * (`ls` with `after`) until a `status` frame has no `next`.
 */
export function queryStatus(hostPort: string, timeoutMs = 2000, group?: string): Promise<GroupStatus[]> {
  const { host, port } = parseHostPort(hostPort, 'directory address')
  return new Promise((resolve, reject) => {
    const sock = net.connect({ host, port })
    const fail = (why: string, cause?: unknown): void => {
      sock.destroy()
      reject(new DirectoryError(ErrorCodes.DIRECTORY_UNREACHABLE, `cannot query the directory at ${hostPort}: ${why}`, cause))
    }
    const timer = setTimeout(() => fail(`no answer in ${timeoutMs} ms`), timeoutMs)
    const decoder = new FrameDecoder(MAX_FRAME_FROM_DIRECTORY)
    const reader = new DirectoryReader()
    const groups: GroupStatus[] = []
    sock.once('error', (err) => {
      clearTimeout(timer)
      fail(err.message, err)
    })
    sock.on('connect', () => sock.write(encodeFrame(group === undefined ? { t: 'ls' } : { t: 'ls', group })))
    sock.on('data', (chunk) => {
      try {
        for (const raw of decoder.push(chunk)) {
          const f = reader.read(raw)
          if (f.t !== 'status') continue
          groups.push(...f.groups)
          if (f.next !== undefined) {
            sock.write(encodeFrame({ t: 'ls', after: f.next }))
            continue
          }
          clearTimeout(timer)
          sock.end()
          resolve(groups)
        }
      } catch (err) {
        clearTimeout(timer)
        fail((err as Error).message, err)
      }
    })
  })
}
