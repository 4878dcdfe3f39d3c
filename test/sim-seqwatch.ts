/**
 * Members watch the sequencer (PROTOCOL.md §4.7, 5), in the simulator: a sequencer that stays connected, hears and
 * heartbeats but orders nothing is suspected by a member within 2B to 3B and expelled, and the next view's sequencer
 * orders everything; a sequencer held back by a laggard or a stopped reader — stability, not the sequencer, is what
 * waits — is never suspected.
 */
import t from 'tap'
import { Sim, type SimMember } from './fixtures/sim.js'
import { check } from './fixtures/checker.js'
import { DEFAULT_DIRECTORY_OPTIONS } from '../directory/core.js'
import { SequencerRole } from '../lib/sequencer.js'
import type { Frame } from '../lib/frame.js'

/** The progress bound: twice the directory's timeoutMs (PROTOCOL.md §4.7). */
const BOUND = 2 * DEFAULT_DIRECTORY_OPTIONS.timeoutMs

/** Engines whose sequencer role orders nothing (it still heartbeats, takes ACKs, answers NACKs). */
const stopped = new Set<object>()
const order = SequencerRole.prototype.order
SequencerRole.prototype.order = function (this: SequencerRole): number {
  return stopped.has((this as unknown as { host: object }).host) ? 0 : order.call(this)
}
t.teardown(() => void (SequencerRole.prototype.order = order))

/** Every `suspect` frame a member sends the directory, with its sender and time. */
function suspicions(sim: Sim): Array<{ at: number; from: string; no: number; reason: string }> {
  const out: Array<{ at: number; from: string; no: number; reason: string }> = []
  const send = sim.toDirectory.bind(sim)
  sim.toDirectory = (m: SimMember, f: Frame) => {
    if (f.t === 'suspect') out.push({ at: sim.now, from: m.id, no: f.no as number, reason: String(f.reason) })
    send(m, f)
  }
  return out
}

const expelled = (m: SimMember): boolean => (m.error as { code?: string } | undefined)?.code === 'EEXPELLED'

for (const delivery of ['agreed', 'safe'] as const) {
  t.test(`[A9, D5] a sequencer that orders nothing is suspected by a member within 2B to 3B and expelled; the next one orders everything (${delivery})`, async (t) => {
    const sim = new Sim(301)
    const ms = sim.startGroup(4, { delivery })
    const [seq, ...rest] = ms as [SimMember, ...SimMember[]]
    t.ok(seq.engine.isSequencer, 'm1 is the sequencer')
    for (const m of ms) m.send(100)
    t.ok(sim.runUntil(() => sim.settled(ms), 30_000), 'the group settles first')
    const seqNo = seq.engine.me
    const heard = suspicions(sim)
    stopped.add(seq.engine)
    const since = sim.now
    for (const m of rest) m.send(300)
    t.ok(sim.runUntil(() => seq.error !== undefined, 10 * BOUND), 'the sequencer fails')
    t.ok(expelled(seq), `with EEXPELLED (${seq.error?.message})`)
    t.match(seq.error?.message, /lack of progress: member m\d reports: ordered none of this member's messages/, 'saying who and why')
    const first = heard[0]!
    t.ok(first.at - since >= 2 * BOUND && first.at - since <= 3 * BOUND, `first suspicion ${Math.round(first.at - since)} ms after the stop, within 2B–3B`)
    t.same(heard.filter((h) => h.no !== seqNo), [], 'nobody but the sequencer is suspected')
    t.ok(rest.every((m) => !m.error), 'nobody else is excluded')
    t.ok(sim.runUntil(() => sim.settled(rest), 60_000), 'the others deliver everything they sent under the next sequencer')
    t.same(rest[0]!.engine.view?.members, ['m2', 'm3', 'm4'])
    t.ok(rest[0]!.engine.isSequencer, 'm2 orders now')
    for (const m of rest) t.equal(m.messages().length, 4 * 100 + 3 * 300, `${m.id} delivered every message once`)
    t.same(check(sim.logs(), { oneSeqPerMessage: true }), [], 'guarantees hold')
  })
}

t.test('[A9] a laggard holds stability back (and the sequencer\'s unstable bytes): it is excluded, the sequencer never suspected', async (t) => {
  const sim = new Sim(302)
  // The sequencer stops ordering for want of room while the laggard holds `stable`: own messages wait unordered.
  const ms = sim.startGroup(4, { maxUnstableBytes: 2000 })
  const heard = suspicions(sim)
  const lag = ms[3]!
  lag.noUdpIn = true
  const since = sim.now
  for (const m of ms.slice(0, 3)) m.send(1000)
  t.ok(sim.runUntil(() => lag.error !== undefined, 10 * BOUND), 'the laggard fails')
  t.ok(expelled(lag), `with EEXPELLED (${lag.error?.message})`)
  t.ok(sim.now - since <= 2 * BOUND + 1000, `within twice the bound (${Math.round(sim.now - since)} ms)`)
  const rest = ms.slice(0, 3)
  t.ok(sim.runUntil(() => sim.settled(rest), 60_000), 'the others deliver everything they sent')
  sim.run(sim.now + 3 * BOUND)
  t.same(heard.filter((h) => h.from !== 'm1'), [], 'no member suspects the sequencer')
  t.ok(rest.every((m) => !m.error), 'the sequencer and the others stay')
  t.same(check(sim.logs()), [], 'guarantees hold')
})

t.test('[A9] a stopped reader holds stability back for 3 × 2B while own messages wait unordered: nobody suspects the sequencer', async (t) => {
  const sim = new Sim(303)
  const ms = sim.startGroup(3, { maxUnstableBytes: 2000 })
  const heard = suspicions(sim)
  const slow = ms[2]!
  slow.consumerPaused = true
  for (const m of ms.slice(0, 2)) m.send(1000)
  sim.run(sim.now + BOUND)
  const own = (m: SimMember) => (m.engine as unknown as { outbox: { waiting: boolean; seenOrdered: number } }).outbox
  const before = ms.slice(0, 2).map((m) => own(m).seenOrdered)
  sim.run(sim.now + 5 * BOUND)
  t.ok(ms.slice(0, 2).every((m, i) => own(m).waiting && own(m).seenOrdered === before[i]), 'each sender has had messages out and none ordered for 5B')
  t.same(heard, [], 'nobody suspects anybody')
  t.ok(ms.every((m) => !m.error), 'nobody is excluded')
  slow.consumerPaused = false
  slow.engine.flush()
  t.ok(sim.runUntil(() => sim.settled(ms), 120_000), 'all delivered once it reads again')
  t.same(check(sim.logs(), { oneSeqPerMessage: true }), [])
})
