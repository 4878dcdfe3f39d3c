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
import { commit7, INC, rejoin } from './fixtures/rejoin.js'

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

t.test('a connection that neither joins nor asks `ls` within unjoinedTimeoutMs is closed; one that asks has as long again', async (t) => {
  const h = harness({ unjoinedTimeoutMs: 10_000 })
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
  const server = new DirectoryServer({ port: 0, rejoinGraceMs: 0, frameTimeoutMs: 400, unjoinedTimeoutMs: 60_000 })
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

t.test('over TCP: a connection that never joins is closed after unjoinedTimeoutMs', async (t) => {
  const server = new DirectoryServer({ port: 0, rejoinGraceMs: 0, unjoinedTimeoutMs: 300 })
  const { port } = await server.listen()
  t.teardown(() => server.close())
  const s = net.connect(port, '127.0.0.1')
  s.on('error', () => {})
  const closed = new Promise<number>((r) => s.on('close', () => r(performance.now())))
  const at = performance.now()
  t.ok((await closed) - at >= 250, 'closed, not before its time')
})

/** a (the sequencer), b and c in view 3, every commit installed; returns the harness at the time of view 3's commit. */
function threeInstalled(opts: Partial<DirectoryOptions> = {}) {
  const h = harness(opts)
  h.join(1, 'a')
  h.join(2, 'b')
  h.answer({ 1: 10 })
  h.join(3, 'c')
  h.answer({ 1: 20, 2: 20 })
  for (const c of [1, 2, 3]) {
    h.core.frame(c, { t: 'installed', group: 'g', viewId: 3 })
    h.take(c)
  }
  return h
}
const commitOf = (h: ReturnType<typeof harness>, conn: ConnId): Frame | undefined => h.take(conn, 'commit').at(-1)

t.test('prepared: a `have` above the sequencer\'s is a lie: that member is expelled and the flush runs without it', async (t) => {
  const h = threeInstalled()
  h.join(4, 'd')
  const v4 = h.answer({ 1: 70, 2: 60, 3: 1e12 })
  t.match(h.take(3, 'expelled'), [{ reason: /have 1000000000000.*above/ }], 'the liar is told why')
  t.ok(h.closed.includes(3))
  t.match(h.infos, [/c .*have 1000000000000/])
  const v5 = h.answer({ 1: 70, 2: 60 })
  t.ok(v5 > v4, 'a new attempt')
  t.match(commitOf(h, 2), { viewId: v5, cut: 70, start: 71, holder: 1, members: [{ id: 'a' }, { id: 'b' }, { id: 'd' }] })
})

t.test('prepared: a joiner of the latest view may report its start above an uninstalled sequencer\'s `have`', async (t) => {
  // View 3's sequencer a is still fetching up to the cut (20) when b fails; c, a joiner of view 3, installed at
  // once: its `have` is view 3's start.
  const h = threeInstalled()
  h.core.closed(2)
  h.answer({ 1: 15, 3: 21 })
  t.match(commitOf(h, 1), { cut: 21, holder: 3, members: [{ id: 'a' }, { id: 'c' }] }, 'nobody is expelled')
})

t.test('prepared: without the sequencer, no `have` may pass what could be ordered since the latest commit', async (t) => {
  // At most SEQ_WINDOW at once and MAX_ORDER_RATE (10^7) slots a second since view 3's commit at start 21.
  const h = threeInstalled()
  const keep = (ms: number): void => {
    for (let left = ms; left > 0; left -= 500) {
      h.advance(500)
      for (const c of [1, 2, 3]) h.core.frame(c, { t: 'ping' })
    }
  }
  keep(1000)
  h.core.closed(1) // the sequencer dies
  h.answer({ 2: 21 + 9_000_000, 3: 21 + SEQ_WINDOW + 10_000_001 })
  t.match(h.take(3, 'expelled'), [{ reason: /above/ }], 'one slot more than a second can order')
  h.answer({ 2: 21 + 9_000_000 })
  t.match(commitOf(h, 2), { cut: 21 + 9_000_000, start: 21 + 9_000_000 + SEQ_WINDOW + 1, holder: 2 }, '9 × 10^6 in a second is believed')
})

t.test('prepared: a sequencer that lies is bounded the same way', async (t) => {
  const h = threeInstalled()
  h.join(4, 'd')
  h.answer({ 1: 2 ** 40, 2: 20, 3: 20 })
  t.match(h.take(1, 'expelled'), [{ reason: /above/ }])
  h.answer({ 2: 20, 3: 20 })
  t.match(commitOf(h, 2), { cut: 20, start: 22 + SEQ_WINDOW, sequencer: 2, members: [{ id: 'b' }, { id: 'c' }, { id: 'd' }] })
})

t.test('prepared: `low` above `have`, or a slot datagrams cannot carry, is refused', async (t) => {
  const h = threeInstalled()
  h.join(4, 'd')
  const p = h.take(2, 'prepare').at(-1)!
  t.throws(() => h.core.frame(2, { t: 'prepared', group: 'g', viewId: p.viewId, have: 5, low: 6 }), { code: ErrorCodes.BAD_REQUEST, message: /low/ })
  t.throws(() => h.core.frame(2, { t: 'prepared', group: 'g', viewId: p.viewId, have: 2 ** 48, low: 0 }), { code: ErrorCodes.BAD_REQUEST, message: /have/ })
})

t.test('a holder that never installs (nor serves) is expelled at the install deadline, not the members waiting on it', async (t) => {
  const h = threeInstalled()
  h.join(4, 'd')
  h.answer({ 1: 25, 2: 20, 3: 20 }) // a, the holder, will never serve slots 21-25 (nor install)
  t.match(commitOf(h, 2), { holder: 1 })
  for (let ms = 0; ms <= 4000; ms += 500) {
    h.advance(500)
    for (const c of [1, 2, 3, 4]) h.core.frame(c, { t: 'ping' })
  }
  t.same(h.closed, [1], 'only the holder')
  t.match(h.take(1, 'expelled'), [{ reason: /most members could not install/ }])
  h.answer({ 2: 20, 3: 20, 4: 0 })
  t.match(commitOf(h, 2), { members: [{ id: 'b' }, { id: 'c' }, { id: 'd' }] }, 'the group goes on')
})


t.test('a rejoin that would rebuild the group on another network, or past its numbers, is refused, logged, and changes nothing', async (t) => {
  const cases: Array<[string, Frame, RegExp]> = [
    ['a multicast address outside --mcast-range', rejoin('a', 1, { ...commit7, mcast: '239.1.2.3:46100' }), /239\.1\.2\.3:46100 .*239\.255\.0\.0\/16/],
    ['another port than --mcast-port', rejoin('a', 1, { ...commit7, mcast: '239.255.0.9:5353' }), /port 46100/],
    ['a member not in the commit it carries', rejoin('x', 9), /not a member of the commit/],
    ['a view id near the end of the u32 range', rejoin('a', 1, { ...commit7, viewId: 2 ** 32 - 2 }, 2 ** 32 - 2), /viewId/],
    ['a seenViewId far past the commit', rejoin('a', 1, commit7, 2 ** 32 - 1), /seenViewId/],
    ['a nextNo near the end of the member numbers', rejoin('a', 1, { ...commit7, nextNo: 2 ** 32 }), /nextNo/],
    ['a start that leaves no room for the next view', rejoin('a', 1, { ...commit7, cut: 2 ** 48 - 10, start: 2 ** 48 - 9 }), /start/],
  ]
  for (const [what, frame, why] of cases) {
    const h = harness()
    h.core.opened(1)
    h.core.frame(1, frame)
    t.match(h.take(1), [{ t: 'expelled', reason: why }], what)
    t.match(h.infos, [why], 'logged')
    t.same(h.core.status(), [], 'no group rebuilt from it')
  }
})

t.test('a rejoin refused by a running group leaves its view ids and member numbers alone', async (t) => {
  // Before, the refused rejoin's seenViewId (2^32-1) became the group's view counter: the next commit's view id
  // did not fit a datagram and every member failed on it.
  const h = harness()
  h.join(1, 'a')
  h.core.frame(1, { t: 'installed', group: 'g', viewId: 1 })
  h.take(1)
  const { mcast } = h.core.status()[0]!
  h.core.opened(2)
  h.core.frame(2, rejoin('b', 2, { ...commit7, inc: '0000000100000000', mcast, viewId: 1, nextNo: 2 ** 31, members: [{ no: 1, id: 'a', addr: '127.0.0.1:9001' }, { no: 2, id: 'b', addr: '127.0.0.1:9002' }] }, 65_000))
  t.match(h.take(2), [{ t: 'expelled' }])
  h.join(3, 'c')
  t.match(h.take(3, 'welcome'), [{ no: 2 }], 'member numbers go on')
  t.match(h.take(1, 'prepare'), [{ viewId: 2 }], 'view ids go on')
})

t.test('rejoins that disagree about one view: the first adopted wins, the other is refused', async (t) => {
  const h = harness()
  h.core.opened(1)
  h.core.frame(1, rejoin('a', 1))
  t.match(h.take(1), [{ t: 'welcome', no: 1 }])
  const forged = { ...commit7, members: [...commit7.members, { no: 3, id: 'mallory', addr: '127.0.0.1:9003' }] }
  h.core.opened(2)
  h.core.frame(2, rejoin('b', 2, forged))
  t.match(h.take(2), [{ t: 'expelled', reason: /view 7 differs from the one adopted/ }])
  t.match(h.infos, [/differs/])
  h.core.opened(3)
  h.core.frame(3, rejoin('b', 2, { ...commit7, mcast: '239.255.0.10:46100' }))
  t.match(h.take(3), [{ t: 'expelled', reason: /differs/ }], 'another multicast address')
  h.core.opened(4)
  h.core.frame(4, rejoin('b', 2))
  t.match(h.take(4), [{ t: 'welcome', no: 2 }], 'the same commit is welcome')
  t.match(h.core.status(), [{ viewId: 7, mcast: '239.255.0.9:46100', members: [{ id: 'a' }, { id: 'b' }] }])
})

t.test('an address a member could not send to is refused in join and rejoin, never handed to a sequencer', async (t) => {
  // A join from 127.0.0.1:99999, then a NACK, made the sequencer's send throw ERR_SOCKET_BAD_PORT (issue 11).
  const h = harness()
  h.core.opened(1)
  t.throws(() => h.core.frame(1, { t: 'join', proto: 1, group: 'g', member: 'x', addr: '127.0.0.1:99999' }), { code: ErrorCodes.BAD_REQUEST, message: /addr/ })
  h.core.opened(2)
  t.throws(() => h.core.frame(2, { ...rejoin('a', 1), addr: '127.0.0.1:99999' }), { code: ErrorCodes.BAD_REQUEST, message: /addr/ })
  h.core.opened(3)
  const bad = { ...commit7, members: [commit7.members[0], { ...commit7.members[1], addr: '127.0.0.1:0' }] }
  t.throws(() => h.core.frame(3, rejoin('a', 1, bad)), { code: ErrorCodes.BAD_REQUEST, message: /members\[1\]\.addr/ })
  t.same(h.core.status(), [], 'nobody joined')
})
