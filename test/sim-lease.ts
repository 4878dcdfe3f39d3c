/**
 * The simulator runs the member's real directory client (lib/dirlink.ts): a member whose directory answers late
 * cannot be sure it is still a member once its lease runs out, and must stop delivering until an answer renews it
 * (PROTOCOL.md §7). The others go on; when the answers arrive it catches up and delivers the same sequence.
 */
import t from 'tap'
import { Sim } from './fixtures/sim.js'
import { check } from './fixtures/checker.js'

for (const seed of [1, 2, 3]) {
  t.test(`a member whose directory link stalls for 1.8 s stops delivering when its 1.5 s lease runs out (seed ${seed})`, async (t) => {
    const sim = new Sim(seed)
    const [m1, m2, m3] = sim.startGroup(3)
    m1!.send(2000)
    sim.run(sim.now + 200)
    // For 1.8 s nothing from the directory reaches m3: its pings still arrive (it is not silent to the directory,
    // timeout 2 s), but nothing tells it that it was not expelled meanwhile. Then the held frames arrive.
    m3!.framesHeldUntil = sim.now + 1800
    let stalledAt = -1
    let othersMoved = false
    let resumed = false
    let deliveredWhileOut = 0
    for (let step = 0; step < 600 && !resumed; step++) {
      const before = { m3: m3!.engine.delivered, m2: m2!.engine.delivered }
      sim.run(sim.now + 10)
      m1!.send(5)
      if (stalledAt < 0 && !m3!.link.leaseValid()) stalledAt = m3!.engine.delivered
      if (stalledAt >= 0 && !m3!.link.leaseValid()) {
        if (m3!.engine.delivered !== stalledAt) deliveredWhileOut++
        if (m2!.engine.delivered > before.m2) othersMoved = true
      }
      if (stalledAt >= 0 && m3!.link.leaseValid() && m3!.engine.delivered > before.m3) resumed = true
    }
    t.ok(stalledAt >= 0, 'm3\'s lease ran out')
    t.equal(deliveredWhileOut, 0, 'm3 delivered nothing while its lease was out')
    t.ok(othersMoved, 'the others kept delivering meanwhile')
    t.ok(resumed, 'a late pong renewed the lease and m3 delivered again')
    t.ok(sim.runUntil(() => sim.settled(), 20_000), 'settles')
    t.same(check(sim.logs()), [], 'guarantees hold')
    t.same(sim.active().map((m) => m.id), ['m1', 'm2', 'm3'], 'nobody was expelled')
  })
}
