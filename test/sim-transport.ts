/**
 * How a group's datagrams travel (PROTOCOL.md §2.6, §4.8), in the simulator: a member that cannot hear multicast
 * is detected from the sequencer's unicast probes; `auto` moves the whole group to unicast fan-out at one commit;
 * `multicast` fails that member with ENOMULTICAST instead of leaving it to crawl on repairs; a group whose members
 * all hear multicast never moves, however lossy the network.
 */
import t from 'tap'
import { Sim, type SimMember } from './fixtures/sim.js'
import { check } from './fixtures/checker.js'
import { ErrorCodes } from '../lib/errors.js'

const transportOf = (m: SimMember): string => m.transport.mode

t.test('auto: every member deaf to multicast (a cloud) — the group moves to unicast and delivers everything', async (t) => {
  for (const seed of [1, 2, 3]) {
    const sim = new Sim(seed, { drop: 0.05, dup: 0.02, minDelay: 0.05, maxDelay: 1 }, 'g', 10, { transport: 'auto' })
    const ms: SimMember[] = []
    for (const id of ['m1', 'm2', 'm3']) {
      const m = sim.join(id)
      m.noMulticastIn = true
      ms.push(m)
      sim.runUntil(() => ms.every((x) => x.engine.lifecycle === 'joined'), 5000)
    }
    for (const m of ms) m.send(200)
    t.ok(sim.runUntil(() => sim.settled() && ms.every((m) => transportOf(m) === 'unicast'), 30_000), `seed ${seed}: settles on unicast`)
    t.same(ms.map((m) => m.engine.view?.members.length), [3, 3, 3], 'nobody was excluded for it')
    t.same(check(sim.logs()), [], 'guarantees hold')
    t.ok(ms.every((m) => m.messages().length === 600), 'every member delivered all 600 messages')
    const before = sim.multicastSent
    ms[0]!.send(50)
    t.ok(sim.runUntil(() => sim.settled(), 10_000))
    t.equal(sim.multicastSent, before, 'and nothing goes to the multicast address any more')
  }
})

t.test('auto: one member deaf — the whole group moves at one commit, never split', async (t) => {
  const sim = new Sim(7, { drop: 0.02, dup: 0, minDelay: 0.05, maxDelay: 0.5 }, 'g', 10, { transport: 'auto' })
  const [m1, m2, m3] = sim.startGroup(3)
  const modes = new Map<number, Set<string>>() // view id → the modes its members used
  sim.onFrame = (m, f) => {
    if (f.t !== 'commit') return
    const set = modes.get(f.viewId as number) ?? new Set()
    set.add(String(f.transport))
    modes.set(f.viewId as number, set)
  }
  m3!.noMulticastIn = true
  for (const m of [m1!, m2!, m3!]) m.send(300)
  t.ok(sim.runUntil(() => sim.settled() && [m1!, m2!, m3!].every((m) => transportOf(m) === 'unicast'), 30_000), 'settles on unicast')
  t.ok([...modes.values()].every((s) => s.size === 1), 'every member got the same transport in each commit')
  t.same(check(sim.logs()), [], 'guarantees hold')
})

t.test('multicast only: a deaf member fails with ENOMULTICAST; the others go on without it', async (t) => {
  const sim = new Sim(11, { drop: 0, dup: 0, minDelay: 0.05, maxDelay: 0.5 }, 'g', 10, { transport: 'multicast' })
  const [m1, m2, m3] = sim.startGroup(3)
  m3!.noMulticastIn = true
  m1!.send(100)
  t.ok(sim.runUntil(() => m3!.error !== undefined, 20_000), 'the deaf member fails')
  t.equal((m3!.error as { code?: string }).code, ErrorCodes.MULTICAST_UNREACHABLE, `with a clear code: ${m3!.error?.message}`)
  t.ok(sim.runUntil(() => sim.settled([m1!, m2!]) && m1!.engine.view?.members.length === 2, 20_000), 'the others settle in a view without it')
  t.same([m1!, m2!].map(transportOf), ['multicast', 'multicast'], 'still on multicast')
  t.same(check(sim.logs()), [], 'guarantees hold')
})

t.test('members that hear multicast are never taken for deaf, even at 30 % loss, idle or busy', async (t) => {
  for (const seed of [21, 22, 23, 24]) {
    const sim = new Sim(seed, { drop: 0.3, dup: 0.05, minDelay: 0.05, maxDelay: 2 }, 'g', 10, { transport: 'auto' })
    const ms = sim.startGroup(4)
    const deaf: string[] = []
    sim.onFrame = () => {}
    const orig = ms.map((m) => m.link.send.bind(m.link))
    ms.forEach((m, i) => (m.link.send = (f) => {
      if (f.t === 'deaf') deaf.push(m.id)
      orig[i]!(f)
    }))
    sim.run(sim.now + 10_000) // idle: only heartbeats and probes
    for (const m of ms) m.send(300)
    t.ok(sim.runUntil(() => sim.settled(), 60_000), `seed ${seed}: settles`)
    sim.run(sim.now + 10_000)
    t.same(deaf, [], 'no member reported itself deaf')
    t.same(ms.map(transportOf), ['multicast', 'multicast', 'multicast', 'multicast'])
  }
})

t.test('an idle group whose heartbeatMs is above half the progress bound: nobody is taken for deaf', async (t) => {
  // heartbeatMs 5 000 with timeoutMs 2 000 (bound B = 4 000): the unicast probes come every B/4, so the multicast
  // heartbeat must come within the deaf window B/2 — every keepaliveMs = min(heartbeatMs, B/8), not heartbeatMs.
  const sim = new Sim(7, { drop: 0, dup: 0, minDelay: 0.05, maxDelay: 0.5 }, 'g', 10, { transport: 'auto', timeoutMs: 2000 })
  const ms = sim.startGroup(3, { heartbeatMs: 5000 })
  const deaf: string[] = []
  const toDirectory = sim.toDirectory.bind(sim)
  sim.toDirectory = (m, f) => {
    if (f.t === 'deaf') deaf.push(m.id)
    toDirectory(m, f)
  }
  sim.run(sim.now + 12_000)
  t.same(deaf, [], 'no member reported itself deaf')
  t.same(ms.map(transportOf), ['multicast', 'multicast', 'multicast'], 'still on multicast')
})

t.test('unicast from the start: nothing is ever sent to a multicast address', async (t) => {
  const sim = new Sim(31, { drop: 0.1, dup: 0.05, minDelay: 0.05, maxDelay: 1 }, 'g', 10, { transport: 'unicast' })
  const ms = sim.startGroup(4)
  for (const m of ms) m.send(200)
  sim.run(sim.now + 100)
  sim.crash('m1') // the sequencer
  sim.join('m5').send(50)
  t.ok(sim.runUntil(() => sim.settled(), 60_000), 'settles after a sequencer crash and a join')
  t.equal(sim.multicastSent, 0)
  t.same(check(sim.logs()), [], 'guarantees hold')
})
