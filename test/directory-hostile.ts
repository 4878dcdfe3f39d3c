/**
 * What a stranger can send the directory (issue 11, part 1): connections that never join, partial frames,
 * `prepared` answers and rejoins that lie. Each is refused or bounded; the group goes on.
 */
import t from 'tap'
import net from 'node:net'
import { DirectoryCore, DEFAULT_DIRECTORY_OPTIONS, SEQ_WINDOW, type ConnId, type DirectoryOptions } from '../directory/core.js'
import { DirectoryServer } from '../directory/server.js'
import { DirectoryReader } from '../lib/dirproto.js'
import { encodeFrame, FrameDecoder, MAX_FRAME_FROM_DIRECTORY, type Frame } from '../lib/frame.js'
import { ErrorCodes } from '../lib/errors.js'
import { until } from './fixtures/procs.js'

function harness(opts: Partial<DirectoryOptions> = {}) {
  let now = 0
  const out: Array<{ conn: ConnId; f: Frame }> = []
  const closed: ConnId[] = []
  const infos: string[] = []
  const readers = new Map<ConnId, DirectoryReader>()
  const core = new DirectoryCore({ ...DEFAULT_DIRECTORY_OPTIONS, rejoinGraceMs: 0, ...opts }, {
    now: () => now,
    send: (conn, f) => {
      if (!readers.has(conn)) readers.set(conn, new DirectoryReader())
      out.push({ conn, f: readers.get(conn)!.read(f) })
    },
    close: (conn) => {
      closed.push(conn)
      core.closed(conn) // as the server does once the socket is gone
    },
    randomIncarnation: () => '0000000100000000',
    info: (message) => infos.push(message),
  })
  const take = (conn: ConnId, type?: string): Frame[] => {
    const mine = out.filter((o) => o.conn === conn && (type === undefined || o.f.t === type)).map((o) => o.f)
    for (let i = out.length - 1; i >= 0; i--) if (out[i]!.conn === conn && (type === undefined || out[i]!.f.t === type)) out.splice(i, 1)
    return mine
  }
  const join = (conn: ConnId, member: string, group = 'g'): void => {
    core.opened(conn)
    core.frame(conn, { t: 'join', proto: 1, group, member, addr: `127.0.0.1:${9000 + conn}` })
  }
  /** Every listed member answers the latest prepare it got with the `have` given for it (low 0). */
  const answer = (haves: Record<number, number>): number => {
    let viewId = 0
    for (const [c, have] of Object.entries(haves)) {
      const p = take(Number(c), 'prepare').at(-1)
      if (!p) continue
      viewId = p.viewId as number
      core.frame(Number(c), { t: 'prepared', group: 'g', viewId, have, low: 0 })
    }
    return viewId
  }
  return { core, take, join, answer, closed, infos, advance: (ms: number) => { now += ms; core.tick() }, get now() { return now } }
}

t.test('a connection that neither joins nor asks `ls` within joinTimeoutMs is closed; one that asks has as long again', async (t) => {
  const h = harness({ joinTimeoutMs: 10_000 })
  h.core.opened(1) // silent
  h.core.opened(2) // pings, never joins
  h.core.opened(3) // dir ls, paging slowly
  h.join(4, 'a')
  h.core.frame(4, { t: 'installed', group: 'g', viewId: 1 })
  /** `ms` pass in steps of a second; the member pings at each. */
  const pass = (ms: number): void => {
    for (let left = ms; left > 0; left -= 1000) {
      h.advance(Math.min(1000, left))
      h.core.frame(4, { t: 'ping' })
    }
  }
  pass(5000)
  h.core.frame(2, { t: 'ping' })
  h.core.frame(3, { t: 'ls' })
  pass(5000)
  t.same(h.closed, [], 'nothing before the time')
  pass(100)
  t.same(h.closed, [1, 2], 'the silent and the pinging stranger are closed')
  pass(5000)
  t.same(h.closed, [1, 2, 3], 'the `ls` connection 10 s after its last `ls`')
  t.match(h.core.status(), [{ name: 'g', members: [{ id: 'a' }] }], 'a member is judged by its heartbeats only')
})

t.test('connections beyond maxConnections are refused with an error, logged; room frees as others close', async (t) => {
  const h = harness({ maxConnections: 3 })
  h.join(1, 'a')
  h.core.opened(2)
  h.core.opened(3)
  h.core.opened(4)
  h.core.opened(5)
  t.same(h.closed, [4, 5])
  t.match(h.take(4), [{ t: 'error', code: ErrorCodes.DIRECTORY_UNREACHABLE, message: /3 connections/ }])
  t.match(h.infos, [/refus.*connection/])
  h.core.closed(2)
  h.join(6, 'b')
  t.match(h.take(6, 'welcome'), [{ no: 2 }], 'a join once there is room')
  t.throws(() => new DirectoryCore({ ...DEFAULT_DIRECTORY_OPTIONS, maxConnections: 0 }, { now: () => 0, send: () => {}, close: () => {} }), /maxConnections/)
})

t.test('over TCP: a partial frame not completed within frameTimeoutMs closes that connection; a slow whole one does not', async (t) => {
  const server = new DirectoryServer({ port: 0, rejoinGraceMs: 0, frameTimeoutMs: 400, joinTimeoutMs: 60_000 })
  const { port } = await server.listen()
  t.teardown(() => server.close())
  const open = async (): Promise<{ s: net.Socket; frames: Frame[]; closed: () => boolean }> => {
    const s = net.connect(port, '127.0.0.1')
    await new Promise((r) => s.once('connect', r))
    const dec = new FrameDecoder(MAX_FRAME_FROM_DIRECTORY)
    const frames: Frame[] = []
    let isClosed = false
    s.on('data', (b) => frames.push(...dec.push(b)))
    s.on('error', () => {})
    s.on('close', () => { isClosed = true })
    return { s, frames, closed: () => isClosed }
  }
  const stuck = await open()
  stuck.s.write(encodeFrame({ t: 'ls' }).subarray(0, 3)) // never completed
  const slow = await open()
  const ls = encodeFrame({ t: 'ls' })
  slow.s.write(ls.subarray(0, 3))
  await new Promise((r) => setTimeout(r, 200))
  slow.s.write(ls.subarray(3)) // completed within the time
  t.ok(await until(() => stuck.closed(), 3000), 'the stuck one is closed')
  t.ok(await until(() => slow.frames.some((f) => f.t === 'status'), 1000), 'the slow one is answered')
  await new Promise((r) => setTimeout(r, 600))
  t.notOk(slow.closed(), 'and kept: nothing of a frame is pending on it')
  slow.s.destroy()
})

t.test('over TCP: a connection that never joins is closed after joinTimeoutMs', async (t) => {
  const server = new DirectoryServer({ port: 0, rejoinGraceMs: 0, joinTimeoutMs: 300 })
  const { port } = await server.listen()
  t.teardown(() => server.close())
  const s = net.connect(port, '127.0.0.1')
  s.on('error', () => {})
  const closed = new Promise<number>((r) => s.on('close', () => r(performance.now())))
  const at = performance.now()
  t.ok((await closed) - at >= 250, 'closed, not before its time')
})
