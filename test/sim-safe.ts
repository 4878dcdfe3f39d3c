/**
 * Safe delivery is uniform, through any sequence of crashes: what any member delivered — one that crashed right
 * after, or a leaver — every survivor that was in the group when it was ordered delivers too (checker option
 * `uniform`).
 */
import t from 'tap'
import { datagramKind, Sim, type SimMember } from './fixtures/sim.js'
import { check, type MemberLog } from './fixtures/checker.js'
import { Kind } from '../lib/wire.js'
import type { Delivery } from '../lib/engine.js'

type Mode = 'safe' | 'agreed'

function startGroup(sim: Sim, n: number, delivery: Mode): SimMember[] {
  const ms: SimMember[] = []
  for (let i = 0; i < n; i++) {
    ms.push(sim.join(`m${i + 1}`, { delivery }))
    sim.runUntil(() => ms.every((m) => m.engine.lifecycle === 'joined') && new Set(ms.map((m) => m.engine.view?.viewId)).size === 1, 5000)
  }
  return ms
}

/** Members still in the group: not crashed, not failed, not left. */
function active(sim: Sim): SimMember[] {
  return sim.alive().filter((m) => m.engine.lifecycle !== 'left')
}

/**
 * Every view change is over (the directory's view is everyone's), and everyone delivered all it holds: a safe
 * member's cursor lags what it holds until the stable slot passes it.
 */
function settled(sim: Sim): boolean {
  const a = active(sim)
  if (a.some((m) => m.toSend > 0 || m.engine.lifecycle !== 'joined' || m.engine.viewState !== 'active')) return false
  const dir = sim.dir.status()[0]
  if (!dir || dir.state !== 'stable') return false
  const at = a.map((m) => m.engine.delivered)
  const v = a.map((m) => m.engine.view?.viewId)
  return at.every((x) => x === at[0]) && v.every((x) => x === dir.viewId) && a.every((m) => m.engine.have === m.engine.delivered) &&
    a.every((m) => m.log.filter((d) => d.type === 'message' && d.sender === m.id).length >= m.sentCount)
}

function logs(sim: Sim): MemberLog[] {
  return [...sim.members.values()].map((m) => ({
    id: m.id, survivor: m.alive && !m.error && m.engine.lifecycle !== 'left', sent: m.sentCount,
    entries: m.log.map((d) => d.type === 'message'
      ? { type: 'message' as const, sender: d.sender, seq: d.seq, body: Buffer.from(d.data).toString() }
      : { type: 'view' as const, viewId: d.viewId, members: d.members, seq: d.seq }),
  }))
}

/** Calls `fn` on each delivery of `m`, after it is logged (fn may crash the member). */
function onDeliver(m: SimMember, fn: (d: Delivery) => void): void {
  const push = m.log.push.bind(m.log)
  m.log.push = (...ds: Delivery[]) => {
    const n = push(...ds)
    for (const d of ds) fn(d)
    return n
  }
}

/** Drops DATA and ORDER from `from` to everyone but `to`: only they (and `from`) hold what `from` orders. */
function only(sim: Sim, from: SimMember[], to: SimMember[]): void {
  sim.filter = (f, target, buf) => {
    const k = datagramKind(buf)
    return !from.includes(f) || from.includes(target) || to.includes(target) || (k !== Kind.DATA && k !== Kind.ORDER)
  }
}

const bodyOf = (d: Delivery): string => (d.type === 'message' ? Buffer.from(d.data).toString() : '')

/**
 * The sequencer's message reaches only b; the sequencer crashes; b — alone holding the message, the holder of the
 * flush and the new sequencer — installs the new view and crashes as soon as it delivers the message (or, with
 * `crashOnCommit`, 1 ms after the commit reaches it). Returns the checker's findings and what happened.
 */
function sequencerThenHolder(delivery: Mode, crashOnCommit: boolean): { problems: string[]; bDelivered: boolean; settled: boolean; othersLacked: boolean } {
  const sim = new Sim(5)
  const ms = startGroup(sim, 4, delivery)
  const [a, b, c, d] = ms as [SimMember, SimMember, SimMember, SimMember]
  sim.run(sim.now + 50)
  only(sim, [a], [b])
  let bDelivered = false
  onDeliver(b, (x) => {
    if (bodyOf(x) !== 'm1:1') return
    bDelivered = true
    sim.crash('m2')
  })
  const before = b.engine.have
  a.send(1)
  sim.runUntil(() => b.engine.have > before, 1000)
  const othersLacked = b.engine.have > before && c.engine.have === before && d.engine.have === before
  if (crashOnCommit) {
    sim.onFrame = (m, f) => {
      if (m === b && f.t === 'commit') sim.at(sim.now + 1, () => b.alive && sim.crash('m2'))
    }
  }
  sim.crash('m1')
  const ok = sim.runUntil(() => !b.alive && settled(sim), 30_000)
  return { problems: check(logs(sim), { uniform: true }), bDelivered, settled: ok, othersLacked }
}

for (const crashOnCommit of [false, true]) {
  const when = crashOnCommit ? 'right after the commit reaches it' : 'as soon as it delivers the message'
  t.test(`safe: the sequencer's message reached only b; the sequencer crashes, then b ${when}`, async (t) => {
    const r = sequencerThenHolder('safe', crashOnCommit)
    t.ok(r.othersLacked, 'b alone held the message when the sequencer crashed')
    if (!crashOnCommit) t.ok(r.bDelivered, 'b delivered it (and crashed)')
    t.ok(r.settled, 'the survivors settle')
    t.same(r.problems, [], 'what b delivered, the survivors deliver')
  })
}

t.test('agreed delivery is not uniform: the same schedule makes the uniform check fail (it can fail)', async (t) => {
  const r = sequencerThenHolder('agreed', false)
  t.ok(r.bDelivered, 'b delivered the message before anyone else held it')
  t.ok(r.settled, 'the survivors settle')
  t.match(r.problems.join('\n'), /m2 delivered m1:1 \(seq \d+\); survivor m3 .* never did/, 'the checker reports it')
})
