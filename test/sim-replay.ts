/**
 * Replays against a keyed group in the simulator, minutes of virtual time long. Every datagram of the first
 * exchange — DATA, ORDER, ACK, NACK, repairs; multicast and unicast — is captured, and sent again to every member:
 * at once, after a join, a leave, the sequencer's crash, a member's restart (a new process with the same key: its
 * replay windows start empty), and a directory restart. The oracle is the same seeded run without the replays:
 * if they change nothing, every member delivers exactly the same and the network carries exactly the same
 * datagrams. And each replay is counted: by the seal (`replayed`; `rejected`: a unicast one sent to a member it was
 * not sealed for), or, where it opens — at a member that never received it: a joiner, a restarted member, one
 * whose copy was lost — by the engine (`foreign`: a view the member never had; `duplicates`: held already). The one exception, checked to change nothing: a member's own
 * datagram, which the simulator, unlike a multicast socket, never loops back to it (see the last test).
 * SEQCAST_REPLAY_SEED=n reruns one seed.
 */
import t from 'tap'
import { randomBytes } from 'node:crypto'
import { Sim, type SimMember } from './fixtures/sim.js'
import { check } from './fixtures/checker.js'
import type { SealedTransport } from '../lib/seal.js'
import type { EngineStats } from '../lib/host.js'

const SEED = Number(process.env.SEQCAST_REPLAY_SEED ?? 31)
const KINDS = ['?', 'DATA', 'ORDER', 'ACK', 'NACK']

const seal = (m: SimMember): SealedTransport['stats'] => (m.net as SealedTransport).stats

/** What one opened replay did to the engine's counters (names that changed, datagramsIn aside). */
function changed(before: EngineStats, after: EngineStats): string[] {
  return (Object.keys(after) as Array<keyof EngineStats>).filter((k) => k !== 'datagramsIn' && after[k] !== before[k])
}

interface Opened {
  member: string
  what: string
  /** The member's own datagram. */
  own: boolean
  /** Engine counters it changed. */
  counters: string[]
}

interface Run {
  sim: Sim
  /** Datagrams the network carried after the capture. */
  carried: number
  /** Datagrams replayed, per member id. */
  injected: Map<string, number>
  /** Of them, the member's own, replayed to it the first time (not counted: see the test). */
  ownFirst: Map<string, number>
  /** Replays that opened (passed the seal). */
  opened: Opened[]
  steps: string[]
  /** The kinds of datagram captured. */
  kinds: string[]
}

function run(key: Buffer, replay: boolean): Run {
  const sim = new Sim(SEED, { drop: 0, dup: 0, minDelay: 0.05, maxDelay: 0.8 })
  sim.key = key
  const captured: Buffer[] = []
  const sealedBy = new Map<Buffer, SimMember>()
  let capturing = true
  let carried = 0
  const injected = new Map<string, number>()
  const ownFirst = new Map<string, number>()
  const opened: Opened[] = []
  const steps: string[] = []
  const ms = sim.startGroup(3)
  const [, m2, m3] = ms as [SimMember, SimMember, SimMember]
  // m2 misses m3's first three DATA datagrams and asks for them: NACKs and repairs are captured too. (No random
  // loss: a replay of a datagram lost on the way would be its first copy, and rightly taken.)
  let missed = 0
  sim.filter = (from, to, buf) => {
    if (capturing && to === m2 && from === m3 && buf[3] === 1 && missed < 3) return (missed++, false)
    if (!capturing) carried++
    else if (captured.at(-1) !== buf) { // a multicast reaches each listener as one buffer
      captured.push(buf)
      sealedBy.set(buf, from)
    }
    return true
  }
  for (const m of ms) m.send(60)
  sim.runUntil(() => sim.settled(), 30_000)
  capturing = false
  const again = (what: string): void => {
    steps.push(`${what} at ${(sim.now / 1000).toFixed(0)} s`)
    if (!replay) return
    for (const m of sim.active()) {
      const inner = m.net.onDatagram
      m.net.onDatagram = (b, via) => {
        const before = { ...m.engine.stats }
        inner(b, via)
        opened.push({ member: m.id, what: `${what}: ${KINDS[b[3]!]} of ${b.readUInt32BE(16)} in view ${b.readUInt32BE(12)}`, own: b.readUInt32BE(16) === m.engine.me, counters: changed(before, m.engine.stats) })
      }
      for (const b of captured) m.transport.onDatagram(b, 'group')
      m.net.onDatagram = inner
      if (!injected.has(m.id)) ownFirst.set(m.id, captured.filter((b) => sealedBy.get(b) === m).length)
      injected.set(m.id, (injected.get(m.id) ?? 0) + captured.length)
    }
  }
  const settle = (idleMs: number): void => {
    sim.runUntil(() => sim.settled(), 60_000)
    sim.run(sim.now + idleMs)
  }
  again('at once')
  settle(1000)
  sim.join('j1').send(20)
  settle(30_000)
  again('after j1 joined')
  settle(1000)
  m2.engine.leave()
  settle(30_000)
  again('after m2 left')
  settle(1000)
  sim.crash('m1') // the sequencer
  for (const m of sim.active()) m.send(10)
  settle(30_000)
  again('after the sequencer crashed')
  settle(1000)
  sim.crash('m3') // m3 restarts: a new process with the same key, a new member number, empty replay windows
  settle(5000)
  sim.join('m3r').send(20)
  settle(30_000)
  again('after m3 restarted')
  settle(1000)
  sim.restartDirectory(800)
  settle(30_000)
  for (const m of sim.active()) m.send(10)
  settle(60_000)
  again('after the directory restarted')
  settle(60_000)
  return { sim, carried, injected, ownFirst, opened, steps, kinds: [...new Set(captured.map((b) => KINDS[b[3]!]!))].sort() }
}

t.test(`a keyed group: datagrams captured early and replayed minutes later, after view changes and restarts, change nothing and are counted (seed ${SEED})`, async (t) => {
  const key = randomBytes(32)
  const quiet = run(key, false)
  const loud = run(key, true)
  t.comment(loud.steps.join('; '))
  t.ok(loud.sim.now > 4 * 60_000, `minutes of virtual time (${(loud.sim.now / 60_000).toFixed(1)} min)`)
  t.ok(loud.sim.settled(), 'settles')
  t.same(check(loud.sim.logs(), { requireComplete: false }), [], 'guarantees hold')
  for (const m of quiet.sim.alive()) {
    const other = loud.sim.alive().find((x) => x.id === m.id)
    t.same(other?.log, m.log, `${m.id} delivered exactly what it delivers without the replays`)
  }
  t.equal(loud.carried, quiet.carried, `the network carried exactly the same datagrams (${loud.carried})`)
  const own = loud.opened.filter((o) => o.own)
  const others = loud.opened.filter((o) => !o.own)
  t.same(others.filter((o) => !['foreign', 'dropped', 'duplicates'].some((c) => o.counters.includes(c))), [],
    `each of the ${others.length} replays that opened (at a member that never received the datagram) was counted by the engine`)
  t.comment(`opened: ${others.map((o) => `${o.member} ${o.what} (${o.counters.join()})`).join('; ')}`)
  t.same(own.filter((o) => o.counters.length > 0), [], `the ${own.length} own datagrams that opened changed nothing`)
  for (const m of loud.sim.alive()) {
    const q = quiet.sim.alive().find((x) => x.id === m.id)!
    const byEngine = loud.opened.filter((o) => o.member === m.id).length
    const bySeal = seal(m).replayed + seal(m).rejected - seal(q).replayed - seal(q).rejected
    // A member's own datagrams, the first time they come back, may also be dropped unopened and uncounted: a
    // transport that drops its own (multicast loopback) cannot tell a replay of one from its first return.
    const all = loud.injected.get(m.id) ?? 0
    const own = loud.ownFirst.get(m.id) ?? 0
    t.ok(bySeal + byEngine >= all - own && bySeal + byEngine <= all, `${m.id}: ${all} replayed to it (${own} its own, the first time), ${bySeal} counted by the seal (replayed +${seal(m).replayed - seal(q).replayed}, rejected +${seal(m).rejected - seal(q).rejected}), ${byEngine} opened`)
  }
  t.same(loud.kinds, ['ACK', 'DATA', 'NACK', 'ORDER'], 'every kind of datagram was captured and replayed')
})

t.test('a keyed group: a unicast datagram replayed to a member it was not sent to is rejected, not served', async (t) => {
  const sim = new Sim(SEED, { drop: 0, dup: 0, minDelay: 0.05, maxDelay: 0.3 })
  sim.key = randomBytes(32)
  const ms = sim.startGroup(3)
  const [m1, m2, m3] = ms as [SimMember, SimMember, SimMember]
  // m2 misses m3's first DATA datagrams, so it asks for them: a NACK by unicast, which the stranger captures.
  let nack: { buf: Buffer; to: SimMember } | null = null
  let missed = 0
  sim.filter = (from, to, buf) => {
    if (to === m2 && from === m3 && buf[3] === 1 && missed < 3) return (missed++, false)
    if (from === m2 && buf[3] === 4 && !nack) nack = { buf, to }
    return true
  }
  m3.send(30)
  t.ok(sim.runUntil(() => sim.settled(), 20_000), 'settles')
  t.ok(nack, 'm2 sent a NACK')
  const { buf, to } = nack!
  const other = [m1, m3].find((m) => m !== to)!
  const served = other.engine.stats.nacksServed
  const repaired = other.engine.stats.retransmitted
  const before = seal(other).rejected
  // At once, to the member it was not sent to. The sender's nonce counter runs over all it sends, so this
  // member's replay window for it has a gap just there: only the destination sealed into it stops the replay.
  other.transport.onDatagram(buf, 'direct')
  sim.run(sim.now + 100)
  t.equal(other.engine.stats.nacksServed, served, `${other.id} did not serve ${to.id}'s NACK again`)
  t.equal(other.engine.stats.retransmitted, repaired, `${other.id} retransmitted nothing for it`)
  t.equal(seal(other).rejected, before + 1, `${other.id} counted it as rejected`)
})
