/**
 * Randomized failure schedules over many seeds: 3–5 members all sending under 20 % loss, 10 % duplication and
 * reordering; one or two crashes at random moments (the sequencer among the candidates); on some seeds a member
 * joins in the middle of the failures; every third schedule uses safe delivery. Every run must settle and pass the checker. A failure names its seed.
 */
import t from 'tap'
import { Sim, type SimMember } from './fixtures/sim.js'
import { check } from './fixtures/checker.js'

const LOSSY = { drop: 0.2, dup: 0.1, minDelay: 0.05, maxDelay: 3 }
const SEEDS = Number(process.env.SEQCAST_SWEEP_SEEDS ?? 600) // 150 missed a bug that 400 found (see test/directory.ts)
/** Rerun one failing seed: SEQCAST_SWEEP_FIRST=1210 SEQCAST_SWEEP_SEEDS=1 npx tap test/sim-sweep.ts */
const FIRST = Number(process.env.SEQCAST_SWEEP_FIRST ?? 1000)

function settled(sim: Sim): boolean {
  const a = sim.alive()
  if (a.some((m) => m.toSend > 0 || m.engine.lifecycle !== 'joined' || m.engine.viewState !== 'active')) return false
  const at = a.map((m) => m.engine.delivered)
  const v = a.map((m) => m.engine.view?.viewId)
  // Everyone delivered all it holds: a safe member's cursor waits for the stable slot (the uniform check needs it).
  return at.every((x) => x === at[0]) && v.every((x) => x === v[0]) && a.every((m) => m.engine.delivered === m.engine.have) &&
    a.every((m) => m.log.filter((d) => d.type === 'message' && d.sender === m.id).length >= m.sentCount)
}

t.test(`${SEEDS} random failure schedules`, async (t) => {
  const failures: string[] = []
  for (let seed = FIRST; seed < FIRST + SEEDS; seed++) {
    const sim = new Sim(seed, LOSSY)
    const ms: SimMember[] = []
    const n = 3 + (seed % 3)
    const delivery = seed % 3 === 0 ? 'safe' : 'agreed' // every third schedule with uniform delivery
    for (let i = 0; i < n; i++) {
      ms.push(sim.join(`m${i + 1}`, { delivery }))
      sim.runUntil(() => ms.every((m) => m.engine.lifecycle === 'joined') && new Set(ms.map((m) => m.engine.view?.viewId)).size === 1, 5000)
    }
    for (const m of ms) m.send(200)
    const r = sim.random
    sim.run(sim.now + r() * 60)
    const victim = `m${1 + Math.floor(r() * n)}`
    sim.crash(victim)
    if (seed % 2 === 0) {
      sim.run(sim.now + r() * 10)
      const v2 = `m${1 + Math.floor(r() * n)}`
      if (v2 !== victim) sim.crash(v2)
    }
    if (seed % 5 === 0) sim.join('late').send(30)
    const ok = sim.runUntil(() => settled(sim), 60_000)
    const logs = [...sim.members.values()].map((m) => ({
      id: m.id, survivor: m.alive && !m.error, sent: m.sentCount,
      entries: m.log.map((d) => d.type === 'message'
        ? { type: 'message' as const, sender: d.sender, seq: d.seq, body: Buffer.from(d.data).toString() }
        : { type: 'view' as const, viewId: d.viewId, members: d.members, seq: d.seq }),
    }))
    const problems = check(logs, { uniform: delivery === 'safe' })
    // Nobody here is cut off: an exclusion for lack of progress (PROTOCOL.md §4.7) would be a wrong one.
    for (const m of sim.members.values()) if (/lack of progress/.test(m.error?.message ?? '')) problems.push(`${m.id} ${m.error!.message}`)
    if (!ok || problems.length > 0) failures.push(`seed ${seed}: ${ok ? '' : 'did not settle; '}${problems.slice(0, 2).join('; ')}`)
  }
  t.same(failures, [], 'every schedule keeps every guarantee')
})
