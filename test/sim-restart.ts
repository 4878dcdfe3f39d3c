/**
 * The directory killed at random moments — in the middle of view changes above all — and restarted, in the
 * simulator: 3–5 members sending under loss, 1–3 membership events (join, leave, crash), the directory dying 0–5 ms
 * after one of them (a prepare, a commit or an install in flight) and coming back 50 ms – 3 s later, then another
 * membership change that only the rebuilt directory can make. Every run must converge — one view, everyone
 * delivering, nothing lost — and pass the checker; view ids and slots are never reused (the checker's "seq names
 * one message" and increasing view ids). SEQCAST_RESTART_SEEDS=N runs more; SEQCAST_RESTART_FIRST=S reruns seed S.
 */
import t from 'tap'
import { Sim } from './fixtures/sim.js'
import { check } from './fixtures/checker.js'

const SEEDS = Number(process.env.SEQCAST_RESTART_SEEDS ?? 150)
const FIRST = Number(process.env.SEQCAST_RESTART_FIRST ?? 20_000)

export function schedule(seed: number): string | undefined {
  const probe = new Sim(seed)
  const r = probe.random
  const sim = new Sim(seed, { drop: r() * 0.15, dup: r() * 0.1, minDelay: 0.05, maxDelay: 0.5 + r() * 2 })
  const n = 3 + Math.floor(r() * 3)
  const delivery = r() < 0.3 ? 'safe' : 'agreed'
  const ms = sim.startGroup(n, { delivery })
  for (const m of ms) m.send(150)
  const events: string[] = []
  let joined = 0
  const event = (): void => {
    const candidates = ms.filter((m) => m.alive && m.engine.lifecycle === 'joined')
    const kind = ['join', 'leave', 'crash'][Math.floor(r() * 3)]!
    if (kind === 'join' || candidates.length < 2) {
      sim.join(`j${++joined}`, { delivery }).send(20)
      events.push(`join j${joined} at ${sim.now.toFixed(1)}`)
      return
    }
    const m = candidates[Math.floor(r() * candidates.length)]!
    if (kind === 'leave') {
      m.toSend = 0
      m.engine.leave()
    } else {
      sim.crash(m.id)
    }
    events.push(`${kind} ${m.id} at ${sim.now.toFixed(1)}`)
  }
  for (let k = 1 + Math.floor(r() * 3); k > 0; k--) {
    sim.run(sim.now + r() * 30)
    event()
    if (r() < 0.6) {
      sim.run(sim.now + r() * 5)
      const down = 50 + r() * 2950
      sim.restartDirectory(down)
      events.push(`directory killed at ${sim.now.toFixed(1)} for ${down.toFixed(0)} ms`)
    }
  }
  if (!events.some((e) => e.startsWith('directory'))) {
    sim.restartDirectory(50 + r() * 500)
    events.push(`directory killed at ${sim.now.toFixed(1)}`)
  }
  // A membership change after the restart: the rebuilt directory must be able to make it.
  sim.run(sim.now + 4000)
  event()
  // Settled: also the directory up, and done with every view change.
  const ok = sim.runUntil(() => sim.dirUp && sim.settled() && sim.dir.status().every((g) => g.state === 'stable'), 60_000)
  const logs = sim.logs()
  const problems = check(logs, { uniform: delivery === 'safe' })
  for (const l of logs) {
    const views = l.entries.filter((e) => e.type === 'view').map((e) => (e as { viewId: number }).viewId)
    if (views.some((v, i) => i > 0 && v <= views[i - 1]!)) problems.push(`${l.id}: view ids not increasing: ${views.join(',')}`)
  }
  if (ok && problems.length === 0) return undefined
  const stuck = sim.active().map((m) => `${m.id} ${m.engine.lifecycle}/${m.engine.viewState} view ${m.engine.view?.viewId} delivered ${m.engine.delivered}`)
  return `seed ${seed} (${n} members, ${delivery}; ${events.join(', ')}): ${ok ? '' : `did not settle (${stuck.join('; ')}; directory ${JSON.stringify(sim.dir.status().map((g) => [g.viewId, g.state]))}); `}` +
    problems.slice(0, 2).join('; ')
}

t.test(`${SEEDS} schedules with the directory killed and restarted`, async (t) => {
  const failures: string[] = []
  for (let seed = FIRST; seed < FIRST + SEEDS; seed++) {
    const f = schedule(seed)
    if (f) failures.push(f)
  }
  t.same(failures, [], 'every schedule converges and keeps every guarantee')
})

t.test('a member number is never reused after a restart: a newcomer\'s first messages reach everyone', async (t) => {
  const sim = new Sim(3)
  const ms = sim.startGroup(4)
  for (const m of ms) m.send(50)
  sim.run(sim.now + 200)
  ms[3]!.engine.leave() // m4 (number 4) leaves: the view's largest number is 3 again
  t.ok(sim.runUntil(() => ms[3]!.engine.lifecycle === 'left', 5000), 'm4 left')
  sim.restartDirectory(300)
  sim.run(sim.now + 3000)
  const e = sim.join('e')
  e.send(50)
  t.ok(sim.runUntil(() => ['m1', 'm2', 'm3', 'e'].every((id) => sim.members.get(id)!.messages().filter((x) => x.startsWith('e:')).length === 50), 20_000),
    'every member delivers all 50 of e\'s messages')
  t.not(e.engine.me, 4, `e got a fresh number (${e.engine.me})`)
})
