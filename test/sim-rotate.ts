/**
 * Key rotation in the simulator (PROTOCOL.md §3.5): a keyed group moved to a new key while it sends, under loss,
 * duplication and reordering, with joins, crashes and a directory restart in the middle — every message is
 * delivered, in one order, and afterwards a datagram sealed with the old key opens nowhere.
 */
import t from 'tap'
import { randomBytes } from 'node:crypto'
import { Sim, type SimMember } from './fixtures/sim.js'
import { check } from './fixtures/checker.js'
import { SealedTransport, type SealStats } from '../lib/seal.js'
import { encodeAck } from '../lib/wire.js'
import type { Transport } from '../lib/transport.js'

const SEEDS = Number(process.env.SEQCAST_SIM_SEEDS ?? 12)

function keyedSim(seed: number, drop: number): { sim: Sim; key: Buffer } {
  const key = randomBytes(32)
  const sim = new Sim(seed, { drop, dup: 0.02, minDelay: 0.05, maxDelay: 2 }, 'g', 10, { key })
  sim.key = key
  return { sim, key }
}

/** An ACK in the name of member 1 of m's view, sealed now with `key`: what a holder of that key could send. */
function sealedWith(key: Buffer, m: SimMember, epoch = 0): Buffer {
  let out: Buffer | null = null
  const inner = { toGroup: (b: Buffer) => void (out = b), toMember: () => {}, onDatagram: () => {} } as unknown as Transport
  new SealedTransport(inner, key, epoch).toGroup(encodeAck({ inc: m.engine.inc, viewId: m.engine.view!.viewId, sender: 1 }, 0, 0, 0))
  return out!
}

const stats = (m: SimMember): SealStats => (m.net as SealedTransport).stats

t.test('a rotation under loss while every member sends: nothing lost, one order, the old key dead after', async (t) => {
  for (let seed = 1; seed <= SEEDS; seed++) {
    const { sim, key } = keyedSim(seed, [0, 0.05, 0.2][seed % 3]!)
    const ms = sim.startGroup(4)
    for (const m of ms) m.send(150)
    sim.run(sim.now + 20 + sim.random() * 200)
    const fresh = randomBytes(32)
    sim.dir.keys!.rotate(-1, fresh)
    sim.key = fresh
    if (seed % 2 === 0) sim.join('j').send(20) // joins during the rotation, with the new key
    if (seed % 4 === 1) sim.crash('m3')
    const done = sim.runUntil(() => sim.settled() && sim.dir.status().every((g) => g.state === 'stable'), 60_000)
    t.ok(done, `seed ${seed}: settles`)
    sim.run(sim.now + 5000) // the drain ends (timeoutMs)
    const problems = check(sim.logs())
    t.same(problems, [], `seed ${seed}: guarantees hold across the rotation`)
    const alive = sim.active()
    for (const m of alive) {
      const before = stats(m).rejected
      m.transport.onDatagram(sealedWith(key, m), 'direct')
      if (stats(m).rejected !== before + 1) t.fail(`seed ${seed}: ${m.id} still opens the old key`)
      const opened = stats(m).opened
      m.transport.onDatagram(sealedWith(fresh, m, 1), 'direct')
      if (stats(m).opened !== opened + 1) t.fail(`seed ${seed}: ${m.id} does not open the new key`)
    }
  }
})

t.test('the directory restarts in the middle of a rotation: it comes back with the new key, the group goes on', async (t) => {
  for (let seed = 1; seed <= Math.ceil(SEEDS / 2); seed++) {
    const { sim } = keyedSim(100 + seed, 0.05)
    const ms = sim.startGroup(3)
    for (const m of ms) m.send(100)
    sim.run(sim.now + 50)
    const fresh = randomBytes(32)
    sim.dir.keys!.rotate(-1, fresh)
    sim.key = fresh
    sim.run(sim.now + sim.random() * 10) // somewhere in add or use
    sim.restartDirectory(300)
    t.ok(sim.runUntil(() => sim.settled() && sim.dirUp && sim.dir.status().every((g) => g.state === 'stable'), 60_000), `seed ${seed}: settles`)
    sim.run(sim.now + 3000)
    t.same(check(sim.logs()), [], `seed ${seed}: guarantees hold`)
    t.equal(sim.active().length, 3, `seed ${seed}: nobody was lost`)
    for (const m of sim.active()) {
      const opened = stats(m).opened
      m.transport.onDatagram(sealedWith(fresh, m), 'direct')
      if (stats(m).opened !== opened + 1) t.fail(`seed ${seed}: ${m.id} does not open the new key`)
    }
  }
})
