/**
 * The UDP transport (lib/transport.ts) over real sockets on loopback: a send to the group reaches every listener
 * on the multicast address in multicast mode, and each peer by unicast in unicast mode; how each datagram arrived
 * and from where (the sender's unicast address, multicast included: PROTOCOL.md §2.6, §4.1) is reported; bad
 * addresses are counted, never thrown.
 */
import dgram from 'node:dgram'
import t from 'tap'
import { UdpTransport, type Via } from '../lib/transport.js'

const IFACE = '127.0.0.1' // always explicit: multicast on lo, nothing leaves the machine

type Got = { body: string; via: Via; from: string }

async function members(n: number): Promise<Array<{ t: UdpTransport; got: Got[] }>> {
  const out = []
  for (let i = 0; i < n; i++) {
    const tr = await UdpTransport.open(IFACE, 0)
    const got: Got[] = []
    tr.onDatagram = (buf, via, from) => got.push({ body: buf.toString(), via, from })
    out.push({ t: tr, got })
  }
  return out
}

const settle = (ms = 150): Promise<void> => new Promise((r) => setTimeout(r, ms))

t.test('unicast mode: a send to the group is one datagram to each peer, arriving as direct', async (t) => {
  const ms = await members(3)
  t.teardown(() => ms.forEach((m) => m.t.close()))
  const [a, b, c] = ms
  for (const m of ms) m.t.channel('239.255.91.1:46191', 'unicast')
  a!.t.peers([b!.t.address, c!.t.address])
  a!.t.toGroup(Buffer.from('one'))
  a!.t.toGroup(Buffer.from('two'))
  await settle()
  const from = a!.t.address
  for (const m of [b!, c!]) t.same(m.got, [{ body: 'one', via: 'direct', from }, { body: 'two', via: 'direct', from }])
  t.same(a!.got, [], 'not to itself')
  t.equal(a!.t.sendErrors, 0)
})

t.test('multicast mode: one datagram to the group address reaches every listener, arriving as group', async (t) => {
  const ms = await members(3)
  t.teardown(() => ms.forEach((m) => m.t.close()))
  for (const m of ms) m.t.channel('239.255.91.2:46192', 'multicast')
  await settle(100) // the multicast sockets bind asynchronously
  ms[0]!.t.peers([ms[1]!.t.address]) // the peer list is not used in multicast mode
  ms[0]!.t.toGroup(Buffer.from('hello'))
  await settle()
  const from = ms[0]!.t.address
  for (const m of ms.slice(1)) t.same(m.got, [{ body: 'hello', via: 'group', from }], 'from the sender\'s unicast socket')
  t.same(ms[0]!.got, [{ body: 'hello', via: 'group', from }], 'the sender hears its own (loopback on): the engine drops it by sender number')
  ms[1]!.t.toMember(ms[2]!.t.address, Buffer.from('just you'))
  await settle()
  t.same(ms[2]!.got.at(-1), { body: 'just you', via: 'direct', from: ms[1]!.t.address })
})

t.test('switching to unicast stops listening on the multicast address', async (t) => {
  const ms = await members(2)
  t.teardown(() => ms.forEach((m) => m.t.close()))
  for (const m of ms) m.t.channel('239.255.91.3:46193', 'multicast')
  await settle(100)
  ms[1]!.t.channel('239.255.91.3:46193', 'unicast')
  ms[0]!.t.toGroup(Buffer.from('after'))
  await settle()
  t.same(ms[1]!.got, [], 'a unicast member hears nothing multicast')
})

t.test('bad addresses are counted, never thrown; a closed transport sends nothing', async (t) => {
  const [a, b] = await members(2)
  t.teardown(() => [a, b].forEach((m) => m!.t.close()))
  a!.t.channel('239.255.91.4:46194', 'unicast')
  a!.t.peers(['127.0.0.1:99999', 'nonsense', b!.t.address])
  t.equal(a!.t.sendErrors, 2, 'two peers that are not unicast "ip:port"')
  a!.t.toMember('224.0.0.1:5000', Buffer.from('x'))
  a!.t.toMember('127.0.0.1:0', Buffer.from('x'))
  t.equal(a!.t.sendErrors, 4, 'a multicast or port-0 address for one member')
  a!.t.toGroup(Buffer.from('still works'))
  await settle()
  t.same(b!.got, [{ body: 'still works', via: 'direct', from: a!.t.address }], 'the good peer is reached')
  a!.t.close()
  a!.t.close()
  a!.t.toGroup(Buffer.from('closed'))
  await settle()
  t.equal(b!.got.length, 1, 'nothing after close')
})

t.test('a datagram leaves when it is sent, not after the rest of the event-loop turn', async (t) => {
  // The engine sends from within a turn that goes on working (an ORDER, then deliveries to the application): a send
  // deferred to the end of the turn is latency on every hop. A connected socket's send goes out at once; one made
  // after ours, in the same turn, must arrive after it.
  const [a, b] = await members(2)
  const other = dgram.createSocket('udp4')
  t.teardown(() => {
    a!.t.close()
    b!.t.close()
    other.close()
  })
  const [host, port] = b!.t.address.split(':')
  await new Promise<void>((r) => other.connect(Number(port), host, () => r()))
  a!.t.channel('239.255.91.5:46195', 'unicast')
  a!.t.peers([b!.t.address])
  a!.t.toMember(b!.t.address, Buffer.from('first'))
  other.send(Buffer.from('second'))
  a!.t.toGroup(Buffer.from('third'))
  other.send(Buffer.from('fourth'))
  await settle()
  t.same(b!.got.map((g) => g.body), ['first', 'second', 'third', 'fourth'])
})
