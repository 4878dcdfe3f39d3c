/**
 * What a delivery's data is (docs/API.md, Deliveries): the application's own copy by default; with
 * `copyDeliveries: false`, a message that came in one datagram is a view of that datagram (the application promised
 * never to write into it); a fragmented message is new memory of its own either way.
 */
import t from 'tap'
import { Sim, type SimMember } from './fixtures/sim.js'
import { ErrorCodes } from '../lib/errors.js'
import { parseJoinOptions } from '../lib/options.js'
import { fragmentRoom } from '../lib/wire.js'

const data = (m: SimMember): Uint8Array[] => m.log.flatMap((d) => (d.type === 'message' ? [d.data] : []))

/** b delivers two 5 000-byte messages a sent in one turn (one DATA datagram), then one of three datagrams. */
function run(copyDeliveries: boolean): { small: Uint8Array[]; big: Uint8Array; served: () => Buffer[] } {
  const sim = new Sim(11)
  const [a, b] = sim.startGroup(2, { maxDatagram: 16_384, copyDeliveries })
  const bodies = [Buffer.alloc(5000, 0x41), Buffer.alloc(5000, 0x42), Buffer.alloc(2 * fragmentRoom(16_384) + 100, 0x43)]
  for (const body of bodies.slice(0, 2)) t.ok(a!.engine.submit(body))
  sim.run(sim.now + 50)
  t.ok(a!.engine.submit(bodies[2]!))
  t.ok(sim.runUntil(() => data(b!).length === 3, 5000), 'delivered')
  const [x, y, big] = data(b!)
  t.same([Buffer.from(x!), Buffer.from(y!), Buffer.from(big!)], bodies, 'the messages as sent')
  return { small: [x!, y!], big: big!, served: () => data(b!).map((d) => Buffer.from(d)) }
}

t.test('by default every delivery is a copy of its own', async (t) => {
  const { small, big } = run(true)
  t.not(small[0]!.buffer, small[1]!.buffer, 'two messages of one datagram: two separate copies')
  t.equal(small[0]!.byteLength, small[0]!.buffer.byteLength, 'each exactly its message')
  t.equal(big.byteLength, big.buffer.byteLength, 'a fragmented message: its own buffer')
})

t.test('copyDeliveries false: a message of one datagram is a view of it, a fragmented one still its own memory', async (t) => {
  const { small, big } = run(false)
  t.equal(small[0]!.buffer, small[1]!.buffer, 'two messages of one datagram: views of the same memory')
  t.ok(small[0]!.buffer.byteLength > 10_000, 'the datagram, not a copy of one message')
  t.equal(big.byteLength, big.buffer.byteLength, 'a fragmented message: its own buffer, exactly its size')
})

t.test('copyDeliveries is a boolean option, true by default', async (t) => {
  t.equal(parseJoinOptions({}).copyDeliveries, true)
  t.equal(parseJoinOptions({ copyDeliveries: false }).copyDeliveries, false)
  t.throws(() => parseJoinOptions({ copyDeliveries: 0 as unknown as boolean }), { code: ErrorCodes.BAD_ARGUMENT, message: /copyDeliveries/ })
})
