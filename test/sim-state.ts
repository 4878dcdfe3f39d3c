/**
 * State transfer in the simulator (PROTOCOL.md §8): replicas (test/fixtures/sim.ts SimReplica: a hash chain over
 * the messages applied, and their count, with padding to make states large) join with state hooks at random moments
 * while the others send, under 0–20 % loss, duplication and reordering; replicas crash and new ones take their
 * role (a new id); the donor is crashed while a joiner pulls its snapshot (a slow snapshot source makes the transfer
 * span tens of ms); a joiner's restore is slow while the group sends (its held deliveries stay within
 * maxQueuedBytes); the directory restarted during transfers. At the end: every joiner's state at its state point
 * (its first view) is its donor application's state when it took that view; against a reference replica that
 * applied the survivors' whole stream from the oldest survivor's first view, every survivor's state at its first
 * view is the reference's there, its messages are the stream's from that view on (none twice, none skipped at the
 * seam), and its final state is the reference's; the checker finds nothing. Also: ESTATE when no member holds the
 * state, and when stateTimeoutMs runs out; a donor crash while the joiner's held deliveries are full.
 * SEQCAST_STATE_VERBOSE=1 prints each schedule and every member's views.
 * SEQCAST_STATE_SEEDS=N runs more; SEQCAST_STATE_FIRST=S SEQCAST_STATE_SEEDS=1 reruns seed S.
 */
import t from 'tap'
import { Sim, SimReplica, type ReplicaOptions, type ReplicaState, type SimMember } from './fixtures/sim.js'
import { check } from './fixtures/checker.js'
import { ErrorCodes } from '../lib/errors.js'
import type { StateJoiner } from '../lib/statexfer.js'

const SEEDS = Number(process.env.SEQCAST_STATE_SEEDS ?? 30)
const FIRST = Number(process.env.SEQCAST_STATE_FIRST ?? 9000)

/**
 * The reference replica: it starts from the state of the survivor that has been in the group longest, at its first
 * view, and applies the stream the survivors delivered from there (the union of their logs, by seq). Only the
 * survivors' stream is the group's: a member that crashed may have delivered messages no survivor ever delivers
 * (agreed delivery; GUARANTEES.md), even before a view it installed with the survivors (the holder of the cut died
 * before the others fetched from it).
 */
class Reference {
  readonly seqs: number[] = []
  readonly bodies: string[] = []
  /** states[i]: after the first i messages of the stream since `from`. */
  readonly states: ReplicaState[]

  constructor(survivors: SimMember[], readonly from: number, base: ReplicaState) {
    const bySeq = new Map<number, { sender: string; data: Uint8Array }>()
    for (const m of survivors) for (const d of m.log) if (d.type === 'message' && d.seq > from) bySeq.set(d.seq, d)
    this.states = [base]
    let digest: Buffer = Buffer.from(base.digest, 'hex')
    for (const seq of [...bySeq.keys()].sort((a, b) => a - b)) {
      const d = bySeq.get(seq)!
      digest = SimReplica.step(digest, d.sender, d.data)
      this.seqs.push(seq)
      this.bodies.push(Buffer.from(d.data).toString())
      this.states.push({ digest: digest.toString('hex'), count: base.count + this.seqs.length })
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

const same = (a: ReplicaState | undefined, b: ReplicaState | undefined): boolean => !!a && !!b && a.digest === b.digest && a.count === b.count
const show = (s: ReplicaState | undefined): string => (s ? `${s.count} messages ${s.digest.slice(0, 8)}` : 'none')

/** What the replicas tell against the reference and their donors; empty when everything holds. */
export function replicaProblems(sim: Sim): string[] {
  const problems: string[] = []
  const ms = [...sim.members.values()].filter((m) => m.replica && m.log.length > 0)
  for (const m of ms) {
    if (m.log[0]!.type !== 'view') problems.push(`${m.id}: first delivery is a message, not its state point's view`)
    // A joiner's state is its donor application's at the state point: the view it first delivers.
    const from = m.stateFrom
    if (!from) continue
    const donor = sim.members.get(from.donor)!
    const first = m.replica!.atFirstView!
    if (first.viewId !== from.viewId) problems.push(`${m.id}: first view ${first.viewId}, but its state is of view ${from.viewId}`)
    const want = donor.replica?.atView.get(from.viewId)
    if (!same(first, want)) problems.push(`${m.id}: state at view ${from.viewId} is ${show(first)}; ${donor.id}'s there ${show(want)}`)
  }
  const survivors = ms.filter((m) => m.alive && !m.error && m.engine.lifecycle !== 'left' && m.log[0]!.type === 'view')
  if (survivors.length === 0) return problems
  const oldest = survivors.reduce((a, b) => (a.replica!.atFirstView!.seq <= b.replica!.atFirstView!.seq ? a : b))
  const ref = new Reference(survivors, oldest.replica!.atFirstView!.seq, oldest.replica!.atFirstView!)
  const final = ref.states[ref.states.length - 1]!
  for (const m of survivors) {
    const r = m.replica!
    const first = r.atFirstView!
    // Its state at its first view is the stream's there: every message before, none after.
    const at = ref.after(first.seq)
    if (!same(first, ref.states[at])) problems.push(`${m.id}: state at view ${first.viewId} (seq ${first.seq}) is ${show(first)}, the stream's ${show(ref.states[at])}`)
    // From there, exactly the stream's messages: none twice, none skipped at the seam or later.
    let i = at
    for (const d of m.log) {
      if (d.type !== 'message') continue
      const body = Buffer.from(d.data).toString()
      if (ref.bodies[i] !== body) {
        problems.push(`${m.id}: after view ${first.viewId} delivered ${body} (seq ${d.seq}) where the stream has ${ref.bodies[i] ?? '(end)'} (seq ${ref.seqs[i]})`)
        break
      }
      i++
    }
    if (!same(r.state, final)) problems.push(`${m.id}: final state ${show(r.state)}, the stream's ${show(final)}`)
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

type Event = 'join' | 'crash-rejoin' | 'donor crash' | 'slow join' | 'directory restart'

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
  const kinds: Event[] = ['join', 'crash-rejoin', 'donor crash', 'slow join', 'directory restart']
  // A slow restore with a small bound: the joiner's held deliveries fill while it pulls.
  const slow = (): { replica: ReplicaOptions; host: { maxQueuedBytes: number } } =>
    ({ replica: { ...replica(), restoreDelayMs: 1 + r() * 4 }, host: { maxQueuedBytes: 8192 + Math.floor(r() * 32_768) } })
  for (let k = 2 + Math.floor(r() * 3); k > 0; k--) {
    await sim.runAsync(sim.now + r() * 60)
    const kind = kinds[Math.floor(r() * kinds.length)]!
    const holders = [...sim.members.values()].filter((m) => m.alive && !m.error && m.joined && m.replica)
    const id = `j${++joined}`
    switch (kind) {
      case 'join':
        sim.joinReplica(id, replica()).send(20)
        break
      case 'slow join': {
        const { replica: ro, host } = slow()
        sim.joinReplica(id, ro, {}, host).send(20)
        break
      }
      case 'directory restart': {
        // Joiners may be in a transfer, or have sent `ready` the dying directory never read (sent again on rejoin).
        sim.joinReplica(id, replica()).send(20)
        await sim.runAsync(sim.now + r() * 20)
        const down = 50 + r() * 1000
        sim.restartDirectory(down)
        events.push(`directory killed at ${sim.now.toFixed(1)} for ${down.toFixed(0)} ms`)
        break
      }
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
        const { replica: ro, host } = r() < 0.5 ? slow() : { replica: replica(), host: {} }
        const j = sim.joinReplica(id, ro, {}, host)
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
  const ok = await sim.runUntilAsync(() => sim.dirUp && sim.settled(), 60_000)
  const problems = check(sim.logs())
  problems.push(...replicaProblems(sim))
  for (const m of sim.members.values()) {
    // A joiner not yet in a view when the directory dies fails with it (GUARANTEES.md, Failures); nothing else may fail.
    const code = (m.error as { code?: string } | undefined)?.code
    if (!m.engine.view && (code === ErrorCodes.DIRECTORY_LOST || code === ErrorCodes.DIRECTORY_UNREACHABLE)) continue
    if (m.error) problems.push(`${m.id} failed: ${m.error.message}`)
  }
  if (process.env.SEQCAST_STATE_VERBOSE) {
    for (const m of sim.members.values()) {
      const parts: string[] = []
      let n = 0
      for (const d of m.log) {
        if (d.type === 'view') {
          if (n) parts.push(`${n} msgs`)
          n = 0
          parts.push(`v${d.viewId}@${d.seq}[${d.members.join(',')}]`)
        } else n++
      }
      if (n) parts.push(`${n} msgs`)
      console.error(`  ${m.id}${m.alive ? '' : '†'}: ${parts.join(' ')}`)
    }
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

/**
 * Found by these schedules, not a state-transfer fault (it fails alike without this branch's changes to
 * statemember.ts and inbox.ts): after the donor crashed, another member crashed silently and the directory restarted,
 * the members of the rebuilt view drop the sequencer's datagrams for its own messages ("a sender's messages take
 * consecutive slots", engine.ts), so they lack its slots until the sequencer and then a joiner are excluded for lack
 * of progress. Left to the engine's owner.
 */
t.test('seed 1214: the sequencer\'s own messages dropped after a directory restart', { todo: 'engine: msgId continuity after a rebuilt view' }, async (t) => {
  t.equal(await schedule(1214), undefined)
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
    // Enough that the group still sends when j's view comes (repair within milliseconds finishes 3 × 3 000 first).
    for (const m of ms) m.send(10_000)
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
    // Enough that the stream still runs when j's held deliveries fill (faster repair finished 3 000 before that).
    for (const m of ms) m.send(10_000)
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
