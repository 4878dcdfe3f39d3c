/**
 * A group with a key (lib/seal.ts), in the simulator: what a stranger on the network can do without one — forge a
 * member's next message, replay a captured datagram — it cannot do to a keyed group, and the keyed group delivers
 * the same complete stream under loss, crashes and a joiner. The unkeyed runs show each attack working, so each
 * keyed run would fail without the seal.
 */
import t from 'tap'
import { randomBytes } from 'node:crypto'
import { Sim, type SimMember } from './fixtures/sim.js'
import { check } from './fixtures/checker.js'
import { DataPacker } from '../lib/wire.js'

/** A DATA datagram in m's name carrying its next message, built as a stranger would from what it heard. */
function forgery(m: SimMember, viewId: number): Buffer {
  const p = new DataPacker({ inc: m.engine.inc, viewId, sender: m.engine.me }, 1400)
  p.add(m.sentCount + 1, true, false, Buffer.from(`${m.id}:FORGED`))
  return Buffer.from(p.finish())
}

function attack(key: Buffer | null): { sim: Sim; ms: SimMember[] } {
  const sim = new Sim(5, { drop: 0.02, dup: 0, minDelay: 0.05, maxDelay: 0.5 })
  sim.key = key
  const ms = sim.startGroup(3)
  const [m1, m2, m3] = ms as [SimMember, SimMember, SimMember]
  m1.send(20)
  sim.runUntil(() => sim.settled(), 5000)
  // The stranger sends every member a DATA in m2's name with m2's next msgId, before m2 sends it.
  const forged = forgery(m2, m2.engine.view!.viewId)
  // From m2's own address: a stranger able to spoof the source (on the LAN, with a raw socket); from its own
  // socket, members drop it without a key too (test/sim-hostile.ts).
  for (const m of [m1, m3]) m.transport.onDatagram(forged, 'group', m2.transport.address)
  m2.send(5)
  sim.runUntil(() => sim.settled(), 10_000)
  return { sim, ms }
}

t.test('without a key a forged next message is delivered as the member\'s, and its real one is lost', async (t) => {
  const { ms } = attack(null)
  t.ok(ms[0]!.messages().includes('m2:FORGED'), 'the forgery is delivered (this is what the key prevents)')
  t.notOk(ms[0]!.messages().includes('m2:1'), 'm2\'s real first message is dropped as a duplicate')
})

t.test('with a key the forgery is rejected and counted; every real message is delivered', async (t) => {
  const { sim, ms } = attack(randomBytes(32))
  t.ok(sim.settled(), 'settles')
  t.notOk(ms.some((m) => m.messages().includes('m2:FORGED')), 'nobody delivers the forgery')
  t.ok(ms.every((m) => m.messages().includes('m2:1')), 'm2\'s real first message is delivered everywhere')
  t.same(check(sim.logs()), [], 'guarantees hold')
  t.ok((ms[0]!.net as unknown as { stats: { rejected: number } }).stats.rejected >= 1, 'the forgery is counted as rejected')
})

t.test('with a key, replaying every datagram a member heard changes nothing and is counted', async (t) => {
  const sim = new Sim(9, { drop: 0.05, dup: 0.05, minDelay: 0.05, maxDelay: 1 })
  sim.key = randomBytes(32)
  const ms = sim.startGroup(3)
  // Each with the address it came from: replayed from there (a spoofed source), the engine would take it.
  const captured: Array<[Buffer, string]> = []
  sim.filter = (from, to, buf) => {
    if (to.id === 'm3' && captured.length < 5000) captured.push([Buffer.from(buf), from.transport.address])
    return true
  }
  for (const m of ms) m.send(100)
  t.ok(sim.runUntil(() => sim.settled(), 20_000), 'settles')
  sim.filter = null
  const before = ms.map((m) => m.log.length)
  // Replayed later, to every member, in the same view and after a view change (a crash and a joiner).
  for (const m of ms) for (const [b, from] of captured) m.transport.onDatagram(b, 'group', from)
  sim.crash('m1')
  const j = sim.join('j')
  j.send(10)
  t.ok(sim.runUntil(() => sim.settled(), 20_000), 'settles after a crash and a join')
  for (const m of [ms[1]!, ms[2]!, j]) for (const [b, from] of captured) m.transport.onDatagram(b, 'group', from)
  sim.run(sim.now + 1000)
  t.same(check(sim.logs()), [], 'guarantees hold: nothing delivered twice or out of place')
  t.ok(ms[1]!.log.length > before[1]!, 'the group went on')
  const replayed = (m: SimMember): number => (m.net as unknown as { stats: { replayed: number } }).stats.replayed
  t.ok(replayed(ms[2]!) >= captured.length, `m3 counted every replay (${replayed(ms[2]!)})`)
})
