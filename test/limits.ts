/**
 * Limits are refusals, never crashes or evictions (issue 9, item 7): messages larger than a sender can hold,
 * groups larger than the directory's frames can describe, addresses that do not parse.
 */
import t, { type Test } from 'tap'
import net from 'node:net'
import { Sim } from './fixtures/sim.js'
import { ErrorCodes } from '../lib/errors.js'
import { DEFAULT_MAX_MESSAGE, largestMessage, parseJoinOptions } from '../lib/options.js'
import { grp_join, grp_send } from '../lib/index.js'
import { fragmentRoom } from '../lib/wire.js'
import { DirectoryCore, DEFAULT_DIRECTORY_OPTIONS } from '../directory/core.js'
import { DirectoryServer, queryStatus } from '../directory/server.js'
import { encodeFrame, FrameDecoder, type Frame } from '../lib/frame.js'

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
  const bad = ['127.0.0.1:99999', '127.0.0.1:65536', '127.0.0.1:0', '300.1.1.1:5', '127.0.0.01:5', '0.0.0.0:5', '239.1.2.3:5',
    '255.255.255.255:5', '127.0.0.1:', 'localhost:5', '127.0.0.1:05', ' 127.0.0.1:5']
  for (const [i, addr] of bad.entries()) {
    core.opened(i + 1)
    t.throws(() => core.frame(i + 1, { t: 'join', proto: 1, group: 'g', member: 'a', addr }), { code: ErrorCodes.BAD_REQUEST }, addr)
  }
  core.opened(99)
  t.doesNotThrow(() => core.frame(99, { t: 'join', proto: 1, group: 'g', member: 'a', addr: '10.1.255.254:65535' }))
})

t.test('over TCP, a refused request gets an error frame naming EBAD_REQUEST before the connection closes', async (t) => {
  const server = new DirectoryServer({ port: 0 })
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

/** A directory that answers a join with a welcome and the commit `commit(addr)` makes of the joiner's address. */
async function fakeDirectory(t: Test, no: number, commit: (addr: string) => Frame): Promise<string> {
  const server = net.createServer((sock) => {
    const dec = new FrameDecoder()
    sock.on('error', () => {})
    sock.on('data', (b) => {
      for (const f of dec.push(b)) {
        if (f.t === 'join') {
          sock.write(encodeFrame({ t: 'welcome', no, heartbeatMs: 500, timeoutMs: 2000 }))
          sock.write(encodeFrame(commit(f.addr as string)))
        } else if (f.t === 'ping') sock.write(encodeFrame({ t: 'pong' }))
      }
    })
  })
  await new Promise<void>((r) => server.listen(0, '127.0.0.1', () => r()))
  t.teardown(() => new Promise<void>((r) => server.close(() => r())))
  return `127.0.0.1:${(server.address() as net.AddressInfo).port}`
}

const commitFrame = (members: Array<{ no: number; id: string; addr: string }>, mcast = '239.255.77.1:46177'): Frame => ({
  t: 'commit', group: 'g', viewId: 1, members, sequencer: members[0]!.no, cut: 0, start: 1, holder: 0, sources: [], mcast,
})

t.test('a peer with a bad address is a counted send error, never an exception', async (t) => {
  // The sequencer's address has port 99999: every ACK and resend to it fails. dgram throws ERR_SOCKET_BAD_PORT
  // synchronously for such a port — from the member's timer, which used to kill the process.
  const directory = await fakeDirectory(t, 2, (addr) => commitFrame([{ no: 1, id: 'ghost', addr: '127.0.0.1:99999' }, { no: 2, id: 'a', addr }]))
  const a = await grp_join('g', 'a', { directory, iface: '127.0.0.1', heartbeatMs: 20, resendMs: 20 })
  t.teardown(() => a.close())
  await grp_send(a, 'hello')
  await new Promise((r) => setTimeout(r, 300))
  const stats = a.stats()
  t.ok(stats.sendErrors > 0, `ACKs and resends to the bad address counted (${stats.sendErrors})`)
  t.equal(a.engine.lifecycle, 'joined', 'still a member')
})

t.test('every shape of bad address, straight at the send path of a member alone in its view', async (t) => {
  const directory = await fakeDirectory(t, 1, (addr) => commitFrame([{ no: 1, id: 'a', addr }]))
  const a = await grp_join('g', 'a', { directory, iface: '127.0.0.1' })
  t.teardown(() => a.close())
  const send = (a as unknown as { sendDatagram(b: Buffer, to: string | null): void }).sendDatagram.bind(a)
  const bad = ['nowhere', '127.0.0.1:0', '127.0.0.1:-1', '999.1.1.1:5', 'example.invalid:5', '127.0.0.1:5:5', '', '239.1.1.1:5', '127.0.0.1:99999']
  for (const to of bad) t.doesNotThrow(() => send(Buffer.from('x'), to), JSON.stringify(to))
  await new Promise((r) => setTimeout(r, 100))
  t.equal(a.stats().sendErrors, bad.length, 'each counted once')
  t.equal(a.engine.lifecycle, 'joined', 'still a member')
})

t.test('a commit the member cannot use fails that member with EFRAME; the process goes on', async (t) => {
  const cases: Array<[string, (addr: string) => Frame]> = [
    ['a bad multicast address', (addr) => commitFrame([{ no: 1, id: 'a', addr }], '239.255.77.1:99999')],
    ['a unicast "multicast" address', (addr) => commitFrame([{ no: 1, id: 'a', addr }], '127.0.0.1:46177')],
    ['members that are not a list', () => ({ ...commitFrame([{ no: 1, id: 'a', addr: '127.0.0.1:1' }]), members: 'a' })],
    ['a member without an address', () => commitFrame([{ no: 1, id: 'a' } as never])],
    ['a view id that is not a number', (addr) => ({ ...commitFrame([{ no: 1, id: 'a', addr }]), viewId: 'x' })],
  ]
  for (const [what, commit] of cases) {
    const directory = await fakeDirectory(t, 1, commit)
    await t.rejects(grp_join('g', 'a', { directory, iface: '127.0.0.1', joinTimeoutMs: 3000 }), { code: ErrorCodes.FRAME }, what)
  }
})
