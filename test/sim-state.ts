/**
 * State transfer in the simulator (PROTOCOL.md §8): replicas (test/fixtures/sim.ts SimReplica: a hash chain over
 * the messages applied, and their count, with padding to make states large) join with state hooks at random moments
 * while the others send, under 0–20 % loss, duplication and reordering; replicas crash and new ones take their
 * role (a new id); the donor is crashed while a joiner pulls its snapshot (a slow snapshot source makes the transfer
 * span tens of ms); a joiner's restore is slow while the group sends (its held deliveries stay within
 * maxQueuedBytes). At the end every replica is compared with a reference replica that applied the whole stream:
 * each joiner's state at its state point (its first view) is the reference's there, its messages are the stream's
 * from that view on (none twice, none skipped at the seam), every survivor's final state is the reference's, and
 * the checker finds nothing. Also: ESTATE when no member holds the state, and when stateTimeoutMs runs out.
 * SEQCAST_STATE_SEEDS=N runs more; SEQCAST_STATE_FIRST=S SEQCAST_STATE_SEEDS=1 reruns seed S.
 */
import t from 'tap'
import { Sim, SimReplica, type ReplicaOptions, type SimMember } from './fixtures/sim.js'
import { check } from './fixtures/checker.js'
import { ErrorCodes } from '../lib/errors.js'
import type { StateJoiner } from '../lib/statexfer.js'

const SEEDS = Number(process.env.SEQCAST_STATE_SEEDS ?? 30)
const FIRST = Number(process.env.SEQCAST_STATE_FIRST ?? 1200)

/** The stream as the group ordered it, by seq, and the reference replica's state before any seq. */
class Reference {
  readonly seqs: number[] = []
  readonly bodies: string[] = []
  /** states[i]: after applying the first i messages. */
  readonly states: Array<{ digest: string; count: number }> = [{ digest: Buffer.alloc(32).toString('hex'), count: 0 }]

  /**
   * Built from every survivor's log, and from every other member's log up to its last view: what a member delivered
   * before a view, every member that installed it delivered (virtual synchrony); what a crashed member delivered
   * after its last view may be its alone (agreed delivery is not uniform).
   */
  constructor(ms: SimMember[], survivor: (m: SimMember) => boolean) {
    const bySeq = new Map<number, { sender: string; data: Uint8Array }>()
    for (const m of ms) {
      let end = m.log.length
      if (!survivor(m)) while (end > 0 && m.log[end - 1]!.type !== 'view') end--
      for (const d of m.log.slice(0, end)) if (d.type === 'message') bySeq.set(d.seq, d)
    }
    let digest = Buffer.alloc(32)
    for (const seq of [...bySeq.keys()].sort((a, b) => a - b)) {
      const d = bySeq.get(seq)!
      digest = SimReplica.step(digest, d.sender, d.data)
      this.seqs.push(seq)
      this.bodies.push(Buffer.from(d.data).toString())
      this.states.push({ digest: digest.toString('hex'), count: this.seqs.length })
    }
  }

  /** Index of the first message with a seq above `seq`. */
  after(seq: number): number {
    let lo = 0
    let hi = this.seqs.length
    while (lo < hi) {
      const mid = (lo + hi) >> 1
      if (this.seqs[mid]! <= seq) lo = mid + 1
      else hi = mid
    }
    return lo
  }
}

/** What the replicas tell against the reference; empty when everything holds. */
export function replicaProblems(sim: Sim): string[] {
  const problems: string[] = []
  const ms = [...sim.members.values()]
  const survivor = (m: SimMember): boolean => m.alive && !m.error && m.engine.lifecycle !== 'left'
  const ref = new Reference(ms, survivor)
  const final = ref.states[ref.states.length - 1]!
  for (const m of ms) {
    const r = m.replica
    const first = m.log[0]
    if (!r || !first) continue
    if (first.type !== 'view') {
      problems.push(`${m.id}: first delivery is a message, not its state point's view`)
      continue
    }
    // The state at its first view is the stream's up to that view: every message before, none after.
    const at = ref.after(first.seq)
    const want = ref.states[at]!
    const got = r.atFirstView!
    if (got.digest !== want.digest || got.count !== want.count) {
      problems.push(`${m.id}: state at view ${first.viewId} (seq ${first.seq}) has ${got.count} messages ${got.digest.slice(0, 8)}, the stream's ${want.count} ${want.digest.slice(0, 8)}`)
    }
    // From there, exactly the stream's messages: none twice, none skipped at the seam or later.
    let end = m.log.length
    if (!survivor(m)) while (end > 0 && m.log[end - 1]!.type !== 'view') end--
    let i = at
    for (const d of m.log.slice(0, end)) {
      if (d.type !== 'message') continue
      const body = Buffer.from(d.data).toString()
      if (ref.bodies[i] !== body) {
        problems.push(`${m.id}: after view ${first.viewId} delivered ${body} (seq ${d.seq}) where the stream has ${ref.bodies[i] ?? '(end)'} (seq ${ref.seqs[i]})`)
        break
      }
      i++
    }
    if (survivor(m) && (r.state.digest !== final.digest || r.count !== final.count)) {
      problems.push(`${m.id}: final state ${r.count} messages ${r.state.digest.slice(0, 8)}, the stream's ${final.count} ${final.digest.slice(0, 8)}`)
    }
  }
  return problems
}

function joinerOf(m: SimMember): StateJoiner {
  return (m.state as unknown as { joiner: StateJoiner }).joiner
}

/** The live member numbered `no` in the group. */
function memberNo(sim: Sim, no: number): SimMember | undefined {
  return [...sim.members.values()].find((x) => x.alive && x.engine.me === no)
}

/** Joins members one after the other (each into one view with those before it). */
async function startGroup(sim: Sim, ids: string[], replica: (i: number) => ReplicaOptions): Promise<SimMember[]> {
  const ms: SimMember[] = []
  for (const [i, id] of ids.entries()) {
    ms.push(sim.joinReplica(id, replica(i)))
    await sim.runUntilAsync(() => ms.every((m) => m.joined) && new Set(ms.map((m) => m.engine.view?.viewId)).size === 1, 5000)
  }
  return ms
}

type Event = 'join' | 'crash-rejoin' | 'donor crash' | 'slow join'

/** One seeded schedule; returns what went wrong, or nothing. */
async function schedule(seed: number): Promise<string | undefined> {
  const probe = new Sim(seed)
  const r = probe.random
  const faults = { drop: r() * 0.2, dup: r() * 0.1, minDelay: 0.05, maxDelay: 0.5 + r() * 3 }
  const sim = new Sim(seed, faults)
  const replica = (): ReplicaOptions => ({
    pad: Math.floor(r() * 400_000),
    chunk: r() < 0.5 ? 0 : 8192 + Math.floor(r() * 32768),
    snapshotDelayMs: r() * 2,
  })
  const n = 3 + Math.floor(r() * 2)
  const ms = await startGroup(sim, Array.from({ length: n }, (_, i) => `m${i + 1}`), replica)
  for (const m of ms) m.send(100 + Math.floor(r() * 100))
  const events: string[] = []
  let joined = 0
  const kinds: Event[] = ['join', 'crash-rejoin', 'donor crash', 'slow join']
  for (let k = 2 + Math.floor(r() * 3); k > 0; k--) {
    await sim.runAsync(sim.now + r() * 60)
    const kind = kinds[Math.floor(r() * kinds.length)]!
    const holders = [...sim.members.values()].filter((m) => m.alive && !m.error && m.joined && m.replica)
    const id = `j${++joined}`
    switch (kind) {
      case 'join':
        sim.joinReplica(id, replica()).send(20)
        break
      case 'slow join':
        sim.joinReplica(id, { ...replica(), restoreDelayMs: 1 + r() * 4 }, {}, { maxQueuedBytes: 16_384 + Math.floor(r() * 32_768) }).send(20)
        break
      case 'crash-rejoin': {
        if (holders.length < 2) continue
        const victim = holders[Math.floor(r() * holders.length)]!
        sim.crash(victim.id, r() < 0.8)
        events.push(`crash ${victim.id} at ${sim.now.toFixed(1)}`)
        await sim.runAsync(sim.now + r() * 30)
        sim.joinReplica(id, replica()).send(20)
        break
      }
      case 'donor crash': {
        if (holders.length < 2) continue
        // A slow, large snapshot at the donor: the crash falls in the middle of the transfer.
        const donor = holders.reduce((a, b) => (a.engine.me < b.engine.me ? a : b))
        Object.assign(donor.replica!.opts, { pad: 300_000 + Math.floor(r() * 300_000), chunk: 16_384, snapshotDelayMs: 1 + r() * 2 })
        const j = sim.joinReplica(id, replica())
        j.send(20)
        const pulling = await sim.runUntilAsync(() => j.state!.phase === 'pulling' && joinerOf(j).received > 0, 3000)
        const d = memberNo(sim, joinerOf(j).donor)
        if (!pulling || !d || !d.replica) {
          events.push(`(no transfer under way for ${id})`)
          continue
        }
        await sim.runAsync(sim.now + r() * 20)
        if (j.state!.phase !== 'pulling') {
          events.push(`(${id} done before its donor crashed)`)
          break
        }
        events.push(`donor ${d.id} crashed at ${sim.now.toFixed(1)} (${joinerOf(j).received} bytes received)`)
        sim.crash(d.id, r() < 0.8)
        break
      }
    }
    events.push(`${kind} ${id} at ${sim.now.toFixed(1)}`)
  }
  const ok = await sim.runUntilAsync(() => sim.settled(), 60_000)
  const problems = check(sim.logs())
  problems.push(...replicaProblems(sim))
  for (const m of sim.members.values()) if (m.error) problems.push(`${m.id} failed: ${m.error.message}`)
  if (process.env.SEQCAST_STATE_VERBOSE) {
    const rs = [...sim.members.values()].filter((m) => m.replica).map((m) => `${m.id}${m.alive ? '' : '†'}:${m.replica!.restored}/${m.replica!.restores}`)
    console.error(`seed ${seed} drop ${faults.drop.toFixed(2)} end ${sim.now.toFixed(0)} ms: ${events.join(', ')}; restores ${rs.join(' ')}; max queued ${[...sim.members.values()].map((m) => m.maxQueuedBytes).join(',')}`)
  }
  if (ok && problems.length === 0) return undefined
  const stuck = sim.active().map((m) => `${m.id} ${m.engine.lifecycle}/${m.state?.phase} view ${m.engine.view?.viewId} delivered ${m.engine.delivered}`)
  return `seed ${seed} (${n} members, drop ${faults.drop.toFixed(2)}; ${events.join(', ')}): ${ok ? '' : `did not settle (${stuck.join('; ')}); `}` +
    problems.slice(0, 3).join('; ')
}

t.test(`${SEEDS} schedules of joins, crash–rejoins and donor crashes under loss`, async (t) => {
  const failures: string[] = []
  for (let seed = FIRST; seed < FIRST + SEEDS; seed++) {
    const f = await schedule(seed)
    if (f) failures.push(f)
  }
  t.same(failures, [], 'every replica equals the reference replica; the checker finds nothing')
})

/** Members join as replicas (or plain, without hooks, where `plain` says), each into one view with those before. */
async function group(sim: Sim, specs: Array<ReplicaOptions | 'plain'>): Promise<SimMember[]> {
  const ms: SimMember[] = []
  for (const [i, spec] of specs.entries()) {
    ms.push(spec === 'plain' ? sim.join(`m${i + 1}`) : sim.joinReplica(`m${i + 1}`, spec))
    await sim.runUntilAsync(() => ms.every((m) => m.joined) && new Set(ms.map((m) => m.engine.view?.viewId)).size === 1, 5000)
  }
  return ms
}

t.test('a slow restore while the group sends: held deliveries stay within maxQueuedBytes, then the group waits', async (t) => {
  for (const seed of [31, 32, 33]) {
    const sim = new Sim(seed, { drop: 0.05, dup: 0.05, minDelay: 0.05, maxDelay: 1 })
    const ms = await group(sim, [{ pad: 1 << 20, chunk: 65_536 }, {}, {}])
    for (const m of ms) m.send(3000)
    await sim.runAsync(sim.now + 20)
    const bound = 32_768
    const j = sim.joinReplica('j', { restoreDelayMs: 25 }, {}, { maxQueuedBytes: bound })
    let heldMax = 0
    let readyAt = -1
    await sim.runUntilAsync(() => {
      if (j.state!.phase === 'pulling') heldMax = Math.max(heldMax, joinerOf(j).heldBytes)
      if (j.state!.phase === 'ready' && readyAt < 0) readyAt = ms[0]!.log.length
      return readyAt >= 0
    }, 30_000)
    t.ok(readyAt >= 0, `seed ${seed}: j restored (${j.replica!.restored} of ${j.replica!.restores} restores)`)
    // What m1 delivered after j's state point before j had its state: the group did not wait for the transfer.
    const point = j.log[0]!.seq
    const during = ms[0]!.log.slice(0, readyAt).filter((d) => d.type === 'message' && d.seq > point).length
    t.ok(during > 0, `seed ${seed}: the group delivered ${during} messages while j restored`)
    // push() adds one delivery past the bound before the engine stops: at most one message (its body and 64).
    t.ok(j.maxQueuedBytes >= bound - 100 && j.maxQueuedBytes < bound + 100, `seed ${seed}: j held up to ${j.maxQueuedBytes} bytes of deliveries (bound ${bound})`)
    t.ok(heldMax <= 4 << 20, `seed ${seed}: j held at most ${heldMax} bytes of state not yet restored (window 4 MiB)`)
    t.ok(await sim.runUntilAsync(() => sim.settled(), 60_000), `seed ${seed}: settled`)
    t.same([...check(sim.logs()), ...replicaProblems(sim)], [], `seed ${seed}: every replica equals the reference`)
  }
})

t.test('no member holds the state: the joiner fails with ESTATE, and so does the next; the group goes on', async (t) => {
  for (const seed of [41, 42]) {
    const sim = new Sim(seed, { drop: 0.05, dup: 0.02, minDelay: 0.05, maxDelay: 1 })
    // m1 holds the state (a slow, large snapshot); m2 has no hooks: it holds nothing to start from.
    const [m1, m2] = await group(sim, [{ pad: 1 << 20, chunk: 16_384, snapshotDelayMs: 5 }, 'plain'])
    m2!.send(200)
    const j = sim.joinReplica('j', {})
    t.ok(await sim.runUntilAsync(() => j.state!.phase === 'pulling' && joinerOf(j).received > 0, 3000), `seed ${seed}: j pulls from m1`)
    sim.crash(m1!.id)
    t.ok(await sim.runUntilAsync(() => j.error !== undefined, 5000), `seed ${seed}: j failed`)
    t.equal((j.error as { code?: string } | undefined)?.code, ErrorCodes.STATE, `seed ${seed}: with ESTATE: ${j.error?.message}`)
    const k = sim.joinReplica('k', {})
    t.ok(await sim.runUntilAsync(() => k.error !== undefined, 5000), `seed ${seed}: a later joiner with hooks fails too`)
    t.equal((k.error as { code?: string } | undefined)?.code, ErrorCodes.STATE)
    t.ok(await sim.runUntilAsync(() => sim.settled(), 60_000), `seed ${seed}: m2 settles alone`)
    t.same(check(sim.logs()), [], `seed ${seed}: the checker finds nothing`)
    t.same(j.log, [], `seed ${seed}: j's application got nothing`)
  }
})

t.test('a transfer longer than stateTimeoutMs: ESTATE; the donor forgets the joiner and closes its snapshot', async (t) => {
  for (const seed of [51, 52]) {
    const sim = new Sim(seed, { drop: 0.1, dup: 0.05, minDelay: 0.05, maxDelay: 1 })
    // 1 MiB read 16 KiB every 20 ms: over a second; the joiner gives up after 300 ms.
    const [m1, m2] = await group(sim, [{ pad: 1 << 20, chunk: 16_384, snapshotDelayMs: 20 }, {}])
    for (const m of [m1!, m2!]) m.send(100)
    const j = sim.joinReplica('j', {}, {}, { stateTimeoutMs: 300 })
    t.ok(await sim.runUntilAsync(() => j.error !== undefined, 5000), `seed ${seed}: j failed`)
    t.equal((j.error as { code?: string } | undefined)?.code, ErrorCodes.STATE, `seed ${seed}: with ESTATE: ${j.error?.message}`)
    t.ok(j.replica!.restores >= 1 && j.replica!.restored === 0, `seed ${seed}: restore was called and never completed`)
    t.ok(await sim.runUntilAsync(() => sim.settled(), 60_000), `seed ${seed}: m1 and m2 settle`)
    t.equal(m1!.replica!.openIterables, 0, `seed ${seed}: m1 closed the snapshot it read for j (j left the view)`)
    t.same([...check(sim.logs()), ...replicaProblems(sim)], [], `seed ${seed}: the checker finds nothing; replicas equal the reference`)
  }
})

t.test('the donor crashes while the joiner\'s held deliveries are full: the joiner moves to the next donor', async (t) => {
  for (const seed of [61, 62]) {
    const sim = new Sim(seed, { drop: 0.05, dup: 0.05, minDelay: 0.05, maxDelay: 1 })
    const ms = await group(sim, [{ pad: 1 << 20, chunk: 16_384, snapshotDelayMs: 5 }, { pad: 200_000 }, {}])
    for (const m of ms) m.send(3000)
    await sim.runAsync(sim.now + 20)
    const bound = 16_384
    const j = sim.joinReplica('j', { restoreDelayMs: 5 }, {}, { maxQueuedBytes: bound })
    const full = await sim.runUntilAsync(() => j.state!.phase === 'pulling' && j.inbox.bytes >= bound, 10_000)
    t.ok(full, `seed ${seed}: j's held deliveries reached the bound while it pulls from m1 (${joinerOf(j).received} bytes)`)
    sim.crash(ms[0]!.id)
    t.ok(await sim.runUntilAsync(() => j.joined, 20_000), `seed ${seed}: j restored from m2 (${j.state!.phase}, ${j.error?.message ?? 'no error'})`)
    t.equal(j.replica!.restores, 2, `seed ${seed}: restore called again`)
    t.equal(j.error, undefined, `seed ${seed}: j did not fail`)
    t.ok(await sim.runUntilAsync(() => sim.settled(), 60_000), `seed ${seed}: settled`)
    t.same([...check(sim.logs()), ...replicaProblems(sim)], [], `seed ${seed}: every replica equals the reference`)
  }
})
