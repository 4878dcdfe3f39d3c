/**
 * Limits are refusals, never crashes or evictions (issue 9, item 7): messages larger than a sender can hold,
 * groups larger than the directory's frames can describe, addresses that do not parse.
 */
import t, { type Test } from 'tap'
import net from 'node:net'
import { Sim } from './fixtures/sim.js'
import { check } from './fixtures/checker.js'
import { ErrorCodes, errorFromCode } from '../lib/errors.js'
import { DEFAULT_MAX_MESSAGE, largestMessage, parseJoinOptions } from '../lib/options.js'
import { grp_join, grp_send } from '../lib/index.js'
import { fragmentRoom } from '../lib/wire.js'
import { DirectoryCore, DEFAULT_DIRECTORY_OPTIONS } from '../directory/core.js'
import { DirectoryServer, queryStatus } from '../directory/server.js'
import { DirectoryReader, parseToDirectory } from '../lib/dirproto.js'
import { encodeFrame, FrameDecoder, MAX_FRAME_FROM_DIRECTORY, MAX_FRAME_TO_DIRECTORY, MAX_GROUP_MEMBERS, type Frame } from '../lib/frame.js'
import { until } from './fixtures/procs.js'
import type { Transport } from '../lib/transport.js'

t.test('a message with more fragments than a sender can hold is refused at submit, before anything is stored', async (t) => {
  const sim = new Sim(7)
  const a = sim.join('a', { maxDatagram: 512, maxMessage: 1 << 30 })
  t.ok(sim.runUntil(() => a.engine.lifecycle === 'joined', 5000), 'joined')
  // 479 bytes per fragment: 64 MiB needs about 140 000 fragments, more than the store's 131 072.
  const big = Buffer.alloc(64 * 1024 * 1024, 0x61)
  t.throws(() => a.engine.submit(big), { code: ErrorCodes.MESSAGE_TOO_LARGE })
  sim.run(sim.now + 200)
  t.equal(a.engine.stats.sent, 0, 'nothing was accepted')
  a.send(3)
  t.ok(sim.runUntil(() => a.messages().length === 3, 5000), 'the member goes on sending')
})

t.test('maxMessage is refused when a sender could not hold it at that maxDatagram, naming the largest allowed', async (t) => {
  t.equal(largestMessage(1472), 131_072 * fragmentRoom(1472), 'Ethernet: about 188 MB')
  t.equal(largestMessage(512), 131_072 * fragmentRoom(512), 'the smallest datagram: about 62 MB')
  t.equal(largestMessage(60_000), 1 << 30, 'loopback: the 1 GiB cap')
  t.throws(() => parseJoinOptions({ maxDatagram: 1472, maxMessage: 1 << 30 }), {
    code: ErrorCodes.BAD_ARGUMENT, message: new RegExp(`maxMessage must be at most ${largestMessage(1472)} with maxDatagram 1472`),
  })
  t.throws(() => parseJoinOptions({ maxDatagram: 512, maxMessage: largestMessage(512) + 1 }), { code: ErrorCodes.BAD_ARGUMENT })
  t.equal(parseJoinOptions({ maxDatagram: 512, maxMessage: largestMessage(512) }).maxMessage, largestMessage(512))
  t.equal(parseJoinOptions({ maxDatagram: 512 }).maxMessage, DEFAULT_MAX_MESSAGE, 'the default fits the smallest datagram')
  await t.rejects(grp_join('g', 'a', { maxDatagram: 1472, maxMessage: 1 << 30 }), { code: ErrorCodes.BAD_ARGUMENT })
})

t.test('the largest allowed message goes through the smallest datagrams', async (t) => {
  // Not the whole 62 MB in the simulator: the store's bound is on fragments, so a small datagram size shows it.
  const sim = new Sim(8)
  const a = sim.join('a', { maxDatagram: 512, maxMessage: largestMessage(512) })
  const b = sim.join('b', { maxDatagram: 512 })
  t.ok(sim.runUntil(() => [a, b].every((m) => m.engine.view?.members.length === 2), 5000), 'joined')
  const msg = Buffer.alloc(8 * 1024 * 1024, 0x62)
  t.ok(a.engine.submit(msg), 'an 8 MiB message (over 17 000 fragments, more than sendWindow) is admitted alone')
  t.ok(sim.runUntil(() => b.messages().length === 1, 120_000), 'delivered')
  t.equal(b.log.filter((d) => d.type === 'message').map((d) => (d as { data: Uint8Array }).data.length)[0], msg.length)
})

t.test('the directory refuses a join whose address is not a unicast "ip:port" with EBAD_REQUEST', async (t) => {
  const core = new DirectoryCore(DEFAULT_DIRECTORY_OPTIONS, { now: () => 0, send: () => {}, close: () => {} })
  const bad = ['127.0.0.1:99999', '127.0.0.1:65536', '127.0.0.1:0', '127.0.0.300:5', '127.0.0.01:5', '0.0.0.0:5', '239.1.2.3:5',
    '255.255.255.255:5', '127.0.0.1:', 'localhost:5', '127.0.0.1:05', ' 127.0.0.1:5']
  for (const [i, addr] of bad.entries()) {
    core.opened(i + 1)
    t.throws(() => core.frame(i + 1, { t: 'join', proto: 1, group: 'g', member: 'a', addr }), { code: ErrorCodes.BAD_REQUEST }, addr)
  }
  core.opened(99)
  t.doesNotThrow(() => core.frame(99, { t: 'join', proto: 1, group: 'g', member: 'a', addr: '10.1.255.254:65535' }))
})

t.test('over TCP, a refused request gets an error frame naming EBAD_REQUEST before the connection closes', async (t) => {
  const server = new DirectoryServer({ port: 0, rejoinGraceMs: 0 })
  const { port } = await server.listen()
  t.teardown(() => server.close())
  const s = net.connect(port, '127.0.0.1')
  const dec = new FrameDecoder()
  const frames: Frame[] = []
  s.on('data', (b) => frames.push(...dec.push(b)))
  const closed = new Promise<void>((r) => s.on('close', () => r()))
  s.write(encodeFrame({ t: 'join', proto: 1, group: 'g', member: 'a', addr: '127.0.0.1:99999' }))
  // Anything after the refusal is ignored, even a good join on the same connection.
  s.write(encodeFrame({ t: 'join', proto: 1, group: 'g', member: 'a', addr: '127.0.0.1:9999' }))
  await closed
  t.match(frames, [{ t: 'error', code: ErrorCodes.BAD_REQUEST, message: /addr/ }])
  t.same(await queryStatus(`127.0.0.1:${port}`), [], 'nobody joined')
})

/** A directory that answers a join with the frames `answer` makes of the joiner's address, and pings with pongs. */
async function fakeDirectory(t: Test, answer: (addr: string) => Frame[]): Promise<string> {
  const server = net.createServer((sock) => {
    const dec = new FrameDecoder()
    sock.on('error', () => {})
    sock.on('data', (b) => {
      for (const f of dec.push(b)) {
        if (f.t === 'join') for (const a of answer(f.addr as string)) sock.write(encodeFrame(a, MAX_FRAME_FROM_DIRECTORY))
        else if (f.t === 'ping') sock.write(encodeFrame({ t: 'pong' }))
      }
    })
  })
  await new Promise<void>((r) => server.listen(0, '127.0.0.1', () => r()))
  t.teardown(() => new Promise<void>((r) => server.close(() => r())))
  return `127.0.0.1:${(server.address() as net.AddressInfo).port}`
}

/** Welcomes the joiner as member `no` and commits the view `commit` makes of its address. */
const welcomed = (no: number, commit: (addr: string) => Frame) => (addr: string): Frame[] => [
  { t: 'welcome', no, heartbeatMs: 500, timeoutMs: 2000 }, commit(addr),
]

const commitFrame = (members: Array<{ no: number; id: string; addr: string }>, mcast = '239.255.77.1:46177'): Frame => ({
  t: 'commit', group: 'g', viewId: 1, members, sequencer: members[0]!.no, cut: 0, start: 1, holder: 0, sources: [], mcast,
  inc: '00000000000000a1', nextNo: Math.max(...members.map((m) => m.no)) + 1, transport: 'multicast',
})

t.test('every shape of bad address, straight at the send path of a member alone in its view', async (t) => {
  const directory = await fakeDirectory(t, welcomed(1, (addr) => commitFrame([{ no: 1, id: 'a', addr }])))
  const a = await grp_join('g', 'a', { directory, iface: '127.0.0.1' })
  t.teardown(() => a.close())
  const transport = (a as unknown as { transport: Transport }).transport
  const send = (buf: Buffer, to: string): void => transport.toMember(to, buf)
  const bad = ['nowhere', '127.0.0.1:0', '127.0.0.1:-1', '127.0.0.999:5', 'example.invalid:5', '127.0.0.1:5:5', '', '239.1.1.1:5', '127.0.0.1:99999']
  for (const to of bad) t.doesNotThrow(() => send(Buffer.from('x'), to), JSON.stringify(to))
  await new Promise((r) => setTimeout(r, 100))
  t.equal(a.stats().sendErrors, bad.length, 'each counted once')
  t.equal(a.engine.lifecycle, 'joined', 'still a member')
})

t.test('a frame the member cannot use fails that member with EFRAME; the process goes on', async (t) => {
  const commit = (addr: string): Frame => commitFrame([{ no: 1, id: 'a', addr }])
  const cases: Array<[string, (addr: string) => Frame[]]> = [
    ['a bad multicast address', welcomed(1, (addr) => commitFrame([{ no: 1, id: 'a', addr }], '239.255.77.1:99999'))],
    ['a unicast "multicast" address', welcomed(1, (addr) => commitFrame([{ no: 1, id: 'a', addr }], '127.0.0.1:46177'))],
    ['members that are not a list', welcomed(1, () => ({ ...commitFrame([{ no: 1, id: 'a', addr: '127.0.0.1:1' }]), members: 'a' }))],
    ['a member without an address', welcomed(1, () => commitFrame([{ no: 1, id: 'a' } as never]))],
    ['a view id that is not a number', welcomed(1, (addr) => ({ ...commit(addr), viewId: 'x' }))],
    // Each of these was taken as it came (cast, or read with a fallback) before the frames had one reader.
    ['a peer address that is not a unicast "ip:port"', welcomed(2, (addr) => commitFrame([{ no: 1, id: 'ghost', addr: '127.0.0.1:99999' }, { no: 2, id: 'a', addr }]))],
    ['a member id of 65 bytes', welcomed(1, (addr) => commitFrame([{ no: 1, id: 'a'.repeat(65), addr }]))],
    ['two members with one number', welcomed(1, (addr) => commitFrame([{ no: 1, id: 'a', addr }, { no: 1, id: 'b', addr: '127.0.0.1:7' }]))],
    ['a start not above the cut', welcomed(1, (addr) => ({ ...commit(addr), cut: 5, start: 5 }))],
    ['a cut that is not a slot', welcomed(1, (addr) => ({ ...commit(addr), cut: -1 }))],
    ['no nextNo', welcomed(1, (addr) => ({ ...commit(addr), nextNo: undefined }))],
    ['an incarnation that is not 16 hex digits', welcomed(1, (addr) => ({ ...commit(addr), inc: 'c0ffee' }))],
    ['no transport', welcomed(1, (addr) => ({ ...commit(addr), transport: undefined }))],
    ['a transport that is neither multicast nor unicast', welcomed(1, (addr) => ({ ...commit(addr), transport: 'carrier-pigeon' }))],
    ['sources that are not {no, low, have}', welcomed(1, (addr) => ({ ...commit(addr), sources: [{ no: 1, low: 'x', have: 3 }] }))],
    ['a welcome whose timeoutMs is not above heartbeatMs', (addr) => [{ t: 'welcome', no: 1, heartbeatMs: 500, timeoutMs: 500 }, commit(addr)]],
    ['a welcome without heartbeatMs', (addr) => [{ t: 'welcome', no: 1, timeoutMs: 2000 }, commit(addr)]],
    ['a welcome whose member number is not an integer', (addr) => [{ t: 'welcome', no: 1.5, heartbeatMs: 500, timeoutMs: 2000 }, commit(addr)]],
    ['an error without a code', () => [{ t: 'error', message: 'no' }]],
    ['an expelled whose reason is not a string', () => [{ t: 'expelled', group: 'g', reason: 7 }]],
    ['a frame type no directory sends', (addr) => [{ t: 'welcome', no: 1, heartbeatMs: 500, timeoutMs: 2000 }, { t: 'surprise' }, commit(addr)]],
  ]
  for (const [what, answer] of cases) {
    const directory = await fakeDirectory(t, answer)
    await t.rejects(grp_join('g', 'a', { directory, iface: '127.0.0.1', joinTimeoutMs: 3000 }), { code: ErrorCodes.FRAME }, what)
  }
})

const id64 = (i: number): string => `member-${i}-`.padEnd(64, 'x')

t.test('over TCP: 1 024 members with 64-byte ids all get the commit; the 1 025th is refused with EGROUP_FULL', async (t) => {
  const server = new DirectoryServer({ port: 0, timeoutMs: 60_000, flushTimeoutMs: 60_000, rejoinGraceMs: 0 })
  const { port } = await server.listen()
  t.teardown(() => server.close())
  // Raw members: answer every prepare and commit at once, remember the last commit.
  const member = (i: number) => {
    const s = net.connect(port, '127.0.0.1')
    const dec = new FrameDecoder(MAX_FRAME_FROM_DIRECTORY)
    const reader = new DirectoryReader()
    const m = { s, closed: false, lastCommit: null as Frame | null, error: null as Frame | null }
    s.on('error', () => {})
    s.on('close', () => (m.closed = true))
    s.on('data', (b) => {
      for (const f of dec.push(b).map((x) => reader.read(x))) {
        if (f.t === 'prepare') s.write(encodeFrame({ t: 'prepared', group: 'big', viewId: f.viewId, have: 0, low: 0 }))
        else if (f.t === 'commit') {
          m.lastCommit = f
          s.write(encodeFrame({ t: 'installed', group: 'big', viewId: f.viewId }))
        } else if (f.t === 'error') m.error = f
      }
    })
    s.write(encodeFrame({ t: 'join', proto: 1, group: 'big', member: id64(i), addr: `127.0.0.1:${10_000 + i}` }))
    return m
  }
  const ms = Array.from({ length: MAX_GROUP_MEMBERS }, (_, i) => member(i))
  const full = (): boolean => ms.every((m) => (m.lastCommit?.members as unknown[] | undefined)?.length === MAX_GROUP_MEMBERS)
  t.ok(await until(() => full() || ms.some((m) => m.closed), 60_000), 'every member got a commit listing all, or someone was closed')
  t.equal(ms.filter((m) => m.closed).length, 0, 'no member was closed')
  t.ok(full(), `every member has the view of ${MAX_GROUP_MEMBERS}`)
  const late = member(MAX_GROUP_MEMBERS)
  t.ok(await until(() => late.closed, 5000), 'the newcomer is closed')
  t.match(late.error, { t: 'error', code: ErrorCodes.GROUP_FULL })
  await new Promise((r) => setTimeout(r, 200))
  t.equal(ms.filter((m) => m.closed).length, 0, 'nobody else was closed')
  const [g] = await queryStatus(`127.0.0.1:${port}`)
  t.equal(g?.members.length, MAX_GROUP_MEMBERS, 'dir ls lists them all')
  for (const m of ms) m.s.destroy()
})

t.test('the largest frames fit their limits: a commit and a rejoin of MAX_GROUP_MEMBERS with state flags, a status page', async (t) => {
  const slot = 2 ** 48 - 1
  // Every member with a state flag (PROTOCOL.md §8.1), the longer one: 12 bytes each.
  const members = Array.from({ length: MAX_GROUP_MEMBERS }, (_, i) => ({ no: 0xffff_ffff - MAX_GROUP_MEMBERS + 1 + i, id: id64(i), addr: '127.255.255.254:65535', state: 'needs' }))
  const sources = members.map((m) => ({ no: m.no, low: slot, have: slot }))
  const group = 'g'.repeat(64)
  const commit: Frame = {
    t: 'commit', group, viewId: 0xffff_ffff, members, sequencer: members[0]!.no, cut: slot - 1, start: slot, holder: members[0]!.no,
    sources, mcast: '239.255.255.255:65535', inc: 'ffffffffffffffff', nextNo: 2 ** 32, transport: 'multicast',
  }
  const bytes = encodeFrame(commit, MAX_FRAME_FROM_DIRECTORY)
  t.ok(bytes.length < MAX_FRAME_FROM_DIRECTORY, `a commit of ${MAX_GROUP_MEMBERS} members and as many sources: ${bytes.length} bytes`)
  t.match(new DirectoryReader().read(new FrameDecoder(MAX_FRAME_FROM_DIRECTORY).push(bytes)[0]!), { t: 'commit', members }, 'a member reads it whole')
  // Multi-byte ids: 64 bytes of UTF-8 are fewer characters, never more bytes.
  t.ok(encodeFrame({ ...commit, members: members.map((m) => ({ ...m, id: '\u{1F600}'.repeat(16) })) }, MAX_FRAME_FROM_DIRECTORY).length <= bytes.length)
  const { t: _t, ...fields } = commit
  const rejoin: Frame = {
    t: 'rejoin', proto: 1, group, member: id64(0), no: 0xffff_ffff, addr: '127.255.255.254:65535', seenViewId: 0xffff_ffff,
    leaving: false, commit: fields,
  }
  const r = encodeFrame(rejoin, MAX_FRAME_TO_DIRECTORY)
  t.ok(r.length < MAX_FRAME_TO_DIRECTORY, `a rejoin carrying that commit back: ${r.length} bytes`)
  const [decoded] = new FrameDecoder(MAX_FRAME_TO_DIRECTORY).push(r)
  t.match(parseToDirectory(decoded!), { t: 'rejoin', commit: { members } }, 'a directory reads it')
  const tooLong = Buffer.alloc(4)
  tooLong.writeUInt32BE(MAX_FRAME_TO_DIRECTORY + 1)
  t.throws(() => new FrameDecoder(MAX_FRAME_TO_DIRECTORY).push(tooLong), { code: ErrorCodes.FRAME }, 'a directory refuses a longer frame from its length alone')
})

/** The core with `groups` full groups of members with 64-byte ids and state hooks (joins answered at once). */
function fullDirectory(groups: number, size = MAX_GROUP_MEMBERS) {
  const out: Array<{ conn: number; f: Frame }> = []
  const core = new DirectoryCore({ ...DEFAULT_DIRECTORY_OPTIONS, rejoinGraceMs: 0 }, { now: () => 0, send: (conn, f) => out.push({ conn, f }), close: () => {} })
  let conn = 0
  for (let g = 0; g < groups; g++) {
    const first = ++conn
    for (let i = 0; i < size; i++) {
      if (i > 0) ++conn
      core.opened(conn)
      core.frame(conn, { t: 'join', proto: 1, group: `group-${g}`.padEnd(64, '.'), member: id64(i), addr: `127.0.0.1:${1 + (conn % 65535)}`, state: true })
    }
    const prepare = out.find((o) => o.conn === first && o.f.t === 'prepare')
    if (prepare) core.frame(first, { t: 'prepared', group: `group-${g}`.padEnd(64, '.'), viewId: prepare.f.viewId, have: 1, low: 0 })
    out.length = 0
  }
  return { core, out, conns: conn }
}

t.test('dir ls pages: every status frame fits, and paging lists every group once', async (t) => {
  const { core, out, conns } = fullDirectory(5)
  t.equal(core.status().every((g) => g.members.length === MAX_GROUP_MEMBERS && g.members.every((m) => m.state !== undefined)), true, '5 full groups, every member flagged')
  t.comment(`one full group's status: ${encodeFrame({ t: 'status', groups: [core.status()[0]!] }, MAX_FRAME_FROM_DIRECTORY).length} bytes`)
  const ls = conns + 1
  core.opened(ls)
  const names: string[] = []
  let after: string | undefined
  let pages = 0
  for (;;) {
    core.frame(ls, after === undefined ? { t: 'ls' } : { t: 'ls', after })
    const page = out.pop()!.f
    pages++
    t.ok(encodeFrame(page, MAX_FRAME_FROM_DIRECTORY).length <= MAX_FRAME_FROM_DIRECTORY)
    t.match(new DirectoryReader().read(page), { t: 'status' }, '`dir ls` reads it')
    names.push(...(page.groups as Array<{ name: string }>).map((g) => g.name))
    if (typeof page.next !== 'string') break
    after = page.next
  }
  t.ok(pages >= 3, `${pages} pages`)
  t.same(names, core.status().map((g) => g.name).sort(), 'every group once, by name')
  core.frame(ls, { t: 'ls', group: names[2] })
  t.match(out.pop()!.f, { t: 'status', groups: [{ name: names[2] }] }, 'one group by name')
  t.notOk(out.length, 'nothing else sent')
})

t.test('the directory refuses the 1 025th member with EGROUP_FULL and keeps the others', async (t) => {
  const { core, out, conns } = fullDirectory(1)
  const late = conns + 1
  core.opened(late)
  core.frame(late, { t: 'join', proto: 1, group: 'group-0'.padEnd(64, '.'), member: 'late', addr: '127.0.0.1:7' })
  t.match(out, [{ conn: late, f: { t: 'error', code: ErrorCodes.GROUP_FULL } }], 'only the newcomer hears of it')
  t.equal(core.status()[0]!.members.length, MAX_GROUP_MEMBERS)
  t.match(errorFromCode(ErrorCodes.GROUP_FULL, 'x'), { code: ErrorCodes.GROUP_FULL, name: 'GroupFullError' }, 'grp_join rejects with it')
})

t.test('simulated: 1 000 members join at once under 2% loss, all install the view of 1 000 and deliver the same stream', async (t) => {
  const N = 1000
  const sim = new Sim(1000, { drop: 0.02, dup: 0.01, minDelay: 0.05, maxDelay: 1 })
  const ms = Array.from({ length: N }, (_, i) => sim.join(id64(i)))
  const inView = (): boolean => ms.every((m) => m.engine.lifecycle === 'joined' && m.engine.view?.members.length === N)
  t.ok(sim.runUntil(inView, 60_000), `every member installed the view of ${N}`)
  t.comment(`joined in ${sim.now.toFixed(0)} ms of simulated time, view ${ms[0]!.engine.view!.viewId}`)
  t.equal(ms.filter((m) => m.error).length, 0, 'nobody failed')
  const senders = [ms[0]!, ms[1]!, ms[N - 1]!]
  for (const s of senders) s.send(20)
  const top = (): number => ms[0]!.engine.delivered
  t.ok(sim.runUntil(() => ms.every((m) => m.messages().length === 60) && ms.every((m) => m.engine.delivered === top()), 60_000), 'every member delivered all 60 messages')
  // One more view change: a member leaves, another crashes.
  ms[5]!.engine.leave()
  sim.crash(ms[6]!.id)
  t.ok(sim.runUntil(() => ms.every((m, i) => i === 5 || i === 6 || m.engine.view?.members.length === N - 2), 60_000), 'every other member installs the view of 998')
  const logs = ms.map((m, i) => ({
    id: m.id, survivor: i !== 5 && i !== 6, sent: m.sentCount,
    entries: m.log.map((d) => d.type === 'message'
      ? { type: 'message' as const, sender: d.sender, seq: d.seq, body: Buffer.from(d.data).toString() }
      : { type: 'view' as const, viewId: d.viewId, members: d.members }),
  }))
  t.same(check(logs), [], 'every guarantee holds')
})

t.test('a directory that was stalled reads what its members sent meanwhile before it judges them silent', async (t) => {
  // A thousand members' commits can keep a directory's event loop (or its CPU) busy for a while; the pings that
  // arrived meanwhile wait in its sockets. Judging silence before reading them expelled innocent members.
  const server = new DirectoryServer({ port: 0, pingMs: 100, timeoutMs: 300, rejoinGraceMs: 0 })
  const { port } = await server.listen()
  t.teardown(() => server.close())
  const s = net.connect(port, '127.0.0.1')
  const dec = new FrameDecoder(MAX_FRAME_FROM_DIRECTORY)
  const frames: Frame[] = []
  s.on('data', (b) => frames.push(...dec.push(b)))
  s.write(encodeFrame({ t: 'join', proto: 1, group: 'g', member: 'a', addr: '127.0.0.1:9' }))
  const ping = setInterval(() => s.write(encodeFrame({ t: 'ping' })), 50)
  t.teardown(() => clearInterval(ping))
  t.ok(await until(() => frames.some((f) => f.t === 'commit'), 2000), 'joined')
  s.write(encodeFrame({ t: 'installed', group: 'g', viewId: frames.find((f) => f.t === 'commit')!.viewId })) // or it is overdue (§5)
  await new Promise((r) => setTimeout(r, 200))
  s.write(encodeFrame({ t: 'ping' }))
  const end = performance.now() + 500 // the directory (this process) is stalled for longer than timeoutMs
  while (performance.now() < end);
  await new Promise((r) => setTimeout(r, 300))
  t.same(frames.filter((f) => f.t === 'expelled'), [], 'not expelled')
  t.notOk(s.destroyed || s.readableEnded, 'still connected')
  s.destroy()
})

t.test('a member that got the previous commit gets only what changed; a joiner gets the whole list', async (t) => {
  const out: Array<{ conn: number; f: Frame }> = []
  const core = new DirectoryCore({ ...DEFAULT_DIRECTORY_OPTIONS, rejoinGraceMs: 0 }, { now: () => 0, send: (conn, f) => out.push({ conn, f }), close: () => {} })
  const join = (conn: number): void => {
    core.opened(conn)
    core.frame(conn, { t: 'join', proto: 1, group: 'g', member: id64(conn), addr: `127.0.0.1:${9000 + conn}` })
  }
  const answer = (conns: number[]): void => {
    const p = out.filter((o) => o.f.t === 'prepare').at(-1)!.f
    for (const c of conns) core.frame(c, { t: 'prepared', group: 'g', viewId: p.viewId, have: 5, low: 0 })
  }
  const commits = (conn: number): Frame[] => out.filter((o) => o.conn === conn && o.f.t === 'commit').map((o) => o.f)
  join(1)
  for (let c = 2; c <= 50; c++) join(c)
  answer([1])
  t.match(commits(1), [{ viewId: 1, members: [{ no: 1 }] }, { viewId: 2, base: 1, removed: [] }], 'the first member: the view of 1 whole, then a delta')
  t.equal((commits(1)[1]!.added as unknown[]).length, 49)
  t.equal((commits(2)[0]!.members as unknown[]).length, 50, 'a joiner gets the view of 50 whole')
  out.length = 0
  join(51)
  answer(Array.from({ length: 50 }, (_, i) => i + 1))
  const delta = commits(1)[0]!
  t.notOk('members' in delta, 'an old member gets a delta')
  t.match(delta, { base: 2, added: [{ no: 51, id: id64(51) }], removed: [] })
  t.ok(encodeFrame(delta, MAX_FRAME_FROM_DIRECTORY).length < 400, `of ${encodeFrame(delta, MAX_FRAME_FROM_DIRECTORY).length} bytes`)
  t.equal((commits(51)[0]!.members as unknown[]).length, 51, 'the joiner gets the whole list')
  const reader = new DirectoryReader()
  reader.read({ ...commits(51)[0]!, viewId: 2, members: (commits(51)[0]!.members as Array<{ no: number }>).filter((m) => m.no !== 51) })
  t.match(reader.read(delta), { t: 'commit', members: commits(51)[0]!.members }, 'the delta applied to view 2 is view 3')
  t.throws(() => new DirectoryReader().read(delta), { code: ErrorCodes.FRAME }, 'a delta without its base is refused')
  out.length = 0
  core.closed(7)
  answer(Array.from({ length: 51 }, (_, i) => i + 1).filter((c) => c !== 7))
  t.match(commits(1)[0], { removed: [7], added: [] }, 'a failure: one number removed')
})

t.test('grp_join rejects with the directory\'s EGROUP_FULL', async (t) => {
  const directory = await fakeDirectory(t, () => [{ t: 'error', code: ErrorCodes.GROUP_FULL, message: 'group g has 1024 members, the most a group may have' }])
  await t.rejects(grp_join('g', 'late', { directory, iface: '127.0.0.1' }), { code: ErrorCodes.GROUP_FULL, name: 'GroupFullError' })
})

t.test('a member whose event loop is busy with frames pings when a ping is due, not when its timer gets a turn', async (t) => {
  // A thousand members in one process taking a commit keep its event loop in I/O for a second or more; timers wait.
  let sock: net.Socket | null = null
  let pings = 0
  const server = net.createServer((s) => {
    sock = s
    const dec = new FrameDecoder()
    s.on('error', () => {})
    s.on('data', (b) => {
      for (const f of dec.push(b)) {
        if (f.t === 'ping') pings++
        if (f.t !== 'join') continue
        // Pings every minute by the timer: any ping within this test comes from the frame path.
        s.write(encodeFrame({ t: 'welcome', no: 1, heartbeatMs: 60_000, timeoutMs: 120_000 }))
        s.write(encodeFrame(commitFrame([{ no: 1, id: 'a', addr: f.addr as string }]), MAX_FRAME_FROM_DIRECTORY))
      }
    })
  })
  await new Promise<void>((r) => server.listen(0, '127.0.0.1', () => r()))
  t.teardown(() => new Promise<void>((r) => server.close(() => r())))
  const a = await grp_join('g', 'a', { directory: `127.0.0.1:${(server.address() as net.AddressInfo).port}`, iface: '127.0.0.1' })
  t.teardown(() => a.close())
  await new Promise((r) => setTimeout(r, 50))
  // Checked synchronously, within the one call that handles the frame or the datagram: no timer can have run.
  const link = (a as unknown as { link: { lastPingAt: number; received(f: Frame): void } }).link
  const transport = (a as unknown as { transport: Transport }).transport
  const before = pings
  link.lastPingAt = performance.now() - 60_000 // as if the loop was busy for a minute
  link.received({ t: 'pong' })
  t.ok(link.lastPingAt > performance.now() - 1000, 'a frame from the directory with a ping due sends it')
  link.lastPingAt = performance.now() - 60_000
  transport.onDatagram(Buffer.from('not a datagram of ours'), 'direct', '127.0.0.1:9')
  t.ok(link.lastPingAt > performance.now() - 1000, 'so does a datagram')
  t.ok(await until(() => pings === before + 2, 2000), 'the directory got both pings')
})
