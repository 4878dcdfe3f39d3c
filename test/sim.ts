/**
 * Seeded simulations: 3–5 members, concurrent senders, loss / duplication / reordering, crashes of members and of
 * the sequencer. Every run is checked for every guarantee by the checker. Fails print the seed to rerun.
 */
import t, { type Test } from 'tap'
import { datagramKind, Sim, type Faults, type SimMember } from './fixtures/sim.js'
import { Kind } from '../lib/wire.js'
import { DEFAULT_NACK_INTERVAL_MS, DEFAULT_RESEND_MS } from '../lib/options.js'
import { NACK_REORDER_MS } from '../lib/repair.js'
import { RESEND_MIN_MS } from '../lib/outbox.js'
import { check } from './fixtures/checker.js'
import type { Frame } from '../lib/frame.js'

const LOSSY: Faults = { drop: 0.2, dup: 0.1, minDelay: 0.05, maxDelay: 3 }

t.test('no faults: 3 members, concurrent senders, identical streams', async (t) => {
  const sim = new Sim(1)
  const ms = sim.startGroup(3)
  t.ok(ms.every((m) => m.engine.lifecycle === 'joined'), 'all joined')
  for (const m of ms) m.send(200)
  t.ok(sim.runUntil(() => sim.settled(), 10_000), 'settles')
  t.same(check(sim.logs()), [])
  t.equal(ms[0]!.engine.stats.delivered, 600)
})

for (const seed of [11, 12, 13, 14, 15, 16]) {
  t.test(`20% loss, 10% duplication, reordering: 4 members (seed ${seed})`, async (t) => {
    const sim = new Sim(seed, LOSSY)
    const ms = sim.startGroup(4)
    for (const m of ms) m.send(300)
    t.ok(sim.runUntil(() => sim.settled(), 60_000), 'settles')
    t.same(check(sim.logs()), [], 'guarantees hold')
    t.ok(ms.some((m) => m.engine.stats.nacksSent > 0), 'repair was exercised')
  })
}

for (const seed of [21, 22, 23, 24]) {
  t.test(`a member crashes mid-stream under loss (seed ${seed})`, async (t) => {
    const sim = new Sim(seed, LOSSY)
    const ms = sim.startGroup(4)
    for (const m of ms) m.send(400)
    sim.run(sim.now + 30 + (seed % 5) * 7)
    sim.crash('m3')
    t.ok(sim.runUntil(() => sim.settled(), 60_000), 'settles')
    t.same(check(sim.logs()), [], 'guarantees hold')
    t.notOk(ms[0]!.engine.view!.members.includes('m3'), 'crashed member left the view')
  })
}

for (const seed of [31, 32, 33, 34, 35, 36]) {
  t.test(`the sequencer crashes mid-stream under loss (seed ${seed})`, async (t) => {
    const sim = new Sim(seed, LOSSY)
    const ms = sim.startGroup(5)
    for (const m of ms) m.send(300)
    sim.run(sim.now + 20 + (seed % 7) * 9)
    t.ok(ms[0]!.engine.isSequencer, 'm1 is the sequencer')
    sim.crash('m1')
    t.ok(sim.runUntil(() => sim.settled(), 60_000), 'settles')
    t.same(check(sim.logs()), [], 'guarantees hold')
    t.equal(ms[1]!.engine.view!.sequencer, 'm2', 'the next oldest member orders')
  })
}

t.test('an application that overwrites delivered data cannot corrupt what others are sent', async (t) => {
  // Every member scribbles over each message it is handed, after logging a copy. Repairs are served from what
  // members hold: if a delivery shared memory with that, other members would get the scribble and the checker
  // would see messages nobody sent.
  const sim = new Sim(41, LOSSY)
  const ms = sim.startGroup(4)
  for (const m of ms) {
    const push = m.log.push.bind(m.log)
    m.log.push = (...ds) => {
      for (const d of ds) {
        if (d.type !== 'message') push(d)
        else {
          push({ ...d, data: Buffer.from(d.data) })
          d.data.fill(0x58)
        }
      }
      return m.log.length
    }
  }
  for (const m of ms) m.send(300)
  t.ok(sim.runUntil(() => sim.settled(), 60_000), 'settles')
  t.same(check(sim.logs()), [], 'guarantees hold')
  t.ok(ms.reduce((a, m) => a + m.engine.stats.retransmitted, 0) > 0, 'repairs were served')
})

t.test('a member joins mid-stream and delivers from its view on', async (t) => {
  const sim = new Sim(41, LOSSY)
  const ms = sim.startGroup(3)
  for (const m of ms) m.send(300)
  sim.run(sim.now + 40)
  const late = sim.join('late')
  late.send(50)
  t.ok(sim.runUntil(() => sim.settled(), 60_000), 'settles')
  t.same(check(sim.logs()), [])
  t.equal(late.log[0]!.type, 'view', 'first delivery is the joining view')
})

t.test('a member leaves gracefully; its messages are all delivered', async (t) => {
  const sim = new Sim(51, LOSSY)
  const ms = sim.startGroup(3)
  for (const m of ms) m.send(200)
  sim.runUntil(() => ms[2]!.toSend === 0, 10_000)
  const leaverSent: Frame[] = []
  const toDirectory = sim.toDirectory.bind(sim)
  sim.toDirectory = (m, f) => {
    if (m === ms[2]) leaverSent.push(f)
    toDirectory(m, f)
  }
  ms[2]!.engine.leave()
  t.ok(sim.runUntil(() => ms[2]!.engine.lifecycle === 'left', 10_000), 'leave completes')
  // The view that excludes it is not the leaver's to install (PROTOCOL.md §5, a leaver's duties): no `installed`.
  t.same(leaverSent.filter((f) => f.t === 'installed'), [], 'the leaver sends no installed after its leave')
  ms[2]!.alive = false
  t.ok(sim.runUntil(() => sim.settled(), 60_000), 'settles')
  const ls = sim.logs().map((l) => (l.id === 'm3' ? { ...l, survivor: false } : l))
  t.same(check(ls), [])
  const got = ms[0]!.messages().filter((b) => b.startsWith('m3:'))
  t.equal(got.length, 200, 'every message of the leaver delivered')
})

t.test('a leaver past its last slot sends no NACKs, even for later views committed before its release', async (t) => {
  // m3 leaves; m2's `installed` frames are held, so m3 is not released, while m1 orders more and m4's join commits
  // another view whose cut is past m3's stream. m2's ACKs are lost, so m1 still holds those slots (freed, they
  // would be void). m3 cannot fetch them (it takes only NACKs now): asking for them was traffic for nothing
  // (issue 15, A11: 25 NACKs in the 500 ms below).
  const sim = new Sim(52)
  const [m1, m2, m3] = sim.startGroup(3)
  const held: Frame[] = []
  const toDirectory = sim.toDirectory.bind(sim)
  sim.toDirectory = (m, f) => {
    if (m === m2 && f.t === 'installed') held.push(f)
    else toDirectory(m, f)
  }
  m3!.engine.leave()
  const out = (): boolean => m3!.engine.view !== null && !m3!.engine.view.members.includes('m3')
  t.ok(sim.runUntil(out, 5000), 'm3 reached the view that excludes it')
  const nacks = m3!.engine.stats.nacksSent
  sim.filter = (from, _to, buf) => !(from === m2 && datagramKind(buf) === Kind.ACK)
  m1!.send(50)
  sim.run(sim.now + 50)
  sim.join('m4')
  sim.run(sim.now + 500)
  t.equal(m3!.engine.lifecycle, 'leaving', 'm3 not released yet (m2 has not said it installed)')
  t.equal(m3!.engine.stats.nacksSent - nacks, 0, 'no NACK from m3 since')
  sim.toDirectory = toDirectory
  sim.filter = null
  for (const f of held.splice(0)) toDirectory(m2!, f)
  t.ok(sim.runUntil(() => m3!.engine.lifecycle === 'left' && sim.settled(), 10_000), 'm3 released, the others settle')
  t.equal(m3!.engine.stats.nacksSent - nacks, 0, 'no NACK from m3 at all')
  t.same(check(sim.logs().map((l) => (l.id === 'm3' ? { ...l, survivor: false } : l))), [])
})

t.test('a repair answered after its source moved to a view the asker has not heard of yet is still taken', async (t) => {
  // m3 misses m2's message and asks the sequencer m1; the NACK is delayed in the network while m4's join commits a
  // view, which m1 installs at once and m3 hears of only 300 ms later (its directory link is slow). Repair DATA
  // named m1's current view, unknown to m3: dropped, the message fetched again only after the commit came
  // (issue 15, A17). Named by the NACK's view, m3 takes it at once.
  const sim = new Sim(53)
  const [m1, m2, m3] = sim.startGroup(3)
  sim.filter = (from, to, buf) => !(from === m2 && to === m3 && datagramKind(buf) === Kind.DATA)
  const held: Buffer[] = []
  const transmit = sim.transmit.bind(sim)
  sim.transmit = (from, buf, to) => {
    if (from === m3 && datagramKind(buf) === Kind.NACK) held.push(Buffer.from(buf))
    else transmit(from, buf, to)
  }
  m2!.send(1)
  t.ok(sim.runUntil(() => held.length > 0, 1000), 'm3 asked for the message')
  t.equal(m3!.engine.view!.members.length, 3)
  sim.filter = null
  const toDirectory = sim.toDirectory.bind(sim)
  sim.toDirectory = (m, f) => {
    if (m === m3 && f.t === 'prepared') m3.framesHeldUntil = sim.now + 300
    toDirectory(m, f)
  }
  const viewId = m1!.engine.view!.viewId
  sim.join('m4')
  t.ok(sim.runUntil(() => m1!.engine.view!.viewId > viewId, 1000), 'm1 installed the new view')
  t.equal(m3!.engine.viewState, 'flushing', 'm3 has not heard of it')
  const foreign = m3!.engine.stats.foreign
  for (const buf of held.splice(0, 1)) transmit(m3!, buf, m1!.addr)
  sim.run(sim.now + 5)
  t.equal(m3!.engine.viewState, 'flushing', 'm3 still has not heard of it')
  t.ok(m3!.engine.sender(m2!.engine.me)?.store.has(1), 'm3 holds the message')
  t.equal(m3!.engine.stats.foreign, foreign, 'nothing dropped as foreign')
  sim.transmit = transmit
  t.ok(sim.runUntil(() => sim.settled(), 10_000), 'settles')
  t.same(check(sim.logs()), [])
})

t.test('large messages are fragmented and delivered whole, in total order, under loss', async (t) => {
  const sim = new Sim(61, LOSSY)
  const ms = sim.startGroup(3, { maxDatagram: 1200 })
  const big = (id: string, k: number): Buffer => Buffer.alloc(50_000 + k * 1000, `${id}${k}`)
  for (const m of ms) for (let k = 1; k <= 5; k++) t.ok(m.engine.submit(big(m.id, k)) || true)
  t.ok(sim.runUntil(() => ms.every((m) => m.engine.stats.delivered === 15) && new Set(ms.map((m) => m.engine.delivered)).size === 1, 60_000), 'all delivered')
  const streams = ms.map((m) => m.log.filter((d) => d.type === 'message').map((d) => (d as { seq: number }).seq))
  t.same(streams[1], streams[0], 'same order')
  t.same(streams[2], streams[0], 'same order')
  for (const d of ms[1]!.log) {
    if (d.type !== 'message') continue
    const k = d.data.length - 50_000
    t.ok(Buffer.from(d.data).equals(big(d.sender, k / 1000)), `${d.sender} message of ${d.data.length} bytes intact`)
  }
})

t.test('a message larger than the byte window goes out as stability allows, from the sequencer too', async (t) => {
  const sim = new Sim(67, LOSSY)
  const window = 64 * 1024
  const ms = sim.startGroup(3, { maxDatagram: 1200, sendWindowBytes: window })
  const big = (id: string, k: number): Buffer => Buffer.alloc(300_000 + k, `${id}${k}`)
  let queued = 0
  const offer = (m: SimMember, k: number): void => {
    if (k > 3) return
    if (m.engine.submit(big(m.id, k))) {
      queued++
      offer(m, k + 1)
    } else sim.at(sim.now + 10, () => offer(m, k)) // window full: try again
  }
  for (const m of ms) sim.at(20, () => offer(m, 1))
  let peak = 0
  const done = sim.runUntil(() => {
    for (const m of ms) peak = Math.max(peak, m.engine.snapshot().inflightBytes)
    return queued === 9 && ms.every((m) => m.engine.stats.delivered === 9)
  }, 120_000)
  t.ok(done, 'all 9 delivered')
  t.ok(peak <= window + 1200, `in flight stayed within the window (peak ${peak} bytes)`)
  const streams = ms.map((m) => m.messages())
  t.same(streams[1], streams[0], 'same order')
  t.same(streams[2], streams[0], 'same order')
})

t.test('safe delivery: a message is delivered only once every member has it', async (t) => {
  const sim = new Sim(71, LOSSY)
  const ms = sim.startGroup(3, { delivery: 'safe' })
  let violations = 0
  for (const m of ms) {
    const inner = m.log.push.bind(m.log)
    m.log.push = (d) => {
      // At delivery time, every member must already hold the slot.
      if (d.type === 'message' && !ms.every((o) => o.engine.have >= d.seq)) violations++
      return inner(d)
    }
  }
  for (const m of ms) m.send(200)
  t.ok(sim.runUntil(() => sim.settled(), 60_000), 'settles')
  t.same(check(sim.logs()), [])
  t.equal(violations, 0, 'no message delivered before all members held it')
})

t.test('agreed delivery does deliver before every member has the message (the safe test can fail)', async (t) => {
  const sim = new Sim(71, LOSSY)
  const ms = sim.startGroup(3)
  let early = 0
  for (const m of ms) {
    const inner = m.log.push.bind(m.log)
    m.log.push = (d) => {
      if (d.type === 'message' && !ms.every((o) => o.engine.have >= d.seq)) early++
      return inner(d)
    }
  }
  for (const m of ms) m.send(200)
  t.ok(sim.runUntil(() => sim.settled(), 60_000), 'settles')
  t.ok(early > 0, `${early} deliveries ran ahead of some member`)
})

t.test('flow control bounds memory: a slow member holds everyone back, nobody buffers without limit', async (t) => {
  const sim = new Sim(81, { drop: 0.3, dup: 0, minDelay: 0.05, maxDelay: 2 })
  const ms = sim.startGroup(3, { sendWindow: 64 })
  for (const m of ms) m.send(3000)
  let peak = 0
  const n = ms.length
  while (!sim.settled() && sim.now < 120_000) {
    sim.run(sim.now + 5)
    for (const m of ms) {
      let held = 0
      for (const no of [1, 2, 3]) held += m.engine.sender(no)?.store.size ?? 0
      peak = Math.max(peak, held)
    }
  }
  t.ok(sim.settled(), 'settles')
  t.same(check(sim.logs()), [])
  t.ok(peak <= n * 64 * 2, `peak messages held by a member (${peak}) stays within the windows`)
})

for (const delivery of ['agreed', 'safe'] as const) {
  t.test(`a consumer that stops reading holds the group back instead of buffering without bound (${delivery})`, async (t) => {
    const sim = new Sim(83, LOSSY)
    const ms = sim.startGroup(3, { sendWindow: 64, delivery })
    const slow = ms[2]!
    sim.run(sim.now + 50)
    slow.consumerPaused = true
    const before = slow.engine.stats.delivered
    for (const m of ms.slice(0, 2)) m.send(5000)
    sim.run(sim.now + 10_000)
    t.ok(slow.engine.stats.delivered - before <= 1, 'the paused member delivered nothing more')
    for (const m of ms.slice(0, 2)) t.ok(m.sentCount <= 64 + 1, `${m.id} was held to its window (${m.sentCount} sent)`)
    let held = 0
    for (const no of [1, 2, 3]) held += slow.engine.sender(no)?.store.size ?? 0
    t.ok(held <= 3 * 64 * 2, `the paused member holds ${held} messages`)
    slow.consumerPaused = false
    slow.engine.flush()
    t.ok(sim.runUntil(() => ms.every((m) => m.messages().length === 10_000), 300_000), 'all delivered once it reads again')
    t.same(check(sim.logs()), [])
  })
}

for (const seed of [91, 92, 93, 94]) {
  t.test(`a failure during a flush: the sequencer crashes, then another member while the directory flushes (seed ${seed})`, async (t) => {
    const sim = new Sim(seed, LOSSY)
    const ms = sim.startGroup(5)
    for (const m of ms) m.send(300)
    sim.run(sim.now + 25)
    sim.crash('m1')
    const until = sim.now + 5000
    while (sim.dir.status()[0]?.state !== 'flushing' && sim.now < until) sim.run(sim.now + 0.1)
    t.equal(sim.dir.status()[0]?.state, 'flushing', 'a flush is under way')
    sim.crash(seed % 2 === 0 ? 'm2' : 'm4') // the next sequencer, or a plain member
    t.ok(sim.runUntil(() => sim.settled(), 60_000), 'settles')
    t.same(check(sim.logs()), [], 'guarantees hold')
    t.equal(ms[2]!.engine.view!.members.length, 3)
  })
}

t.test('a DATA lost on its way to the sequencer is asked of its sender at once, not left to the resend timer', async (t) => {
  {
    const sim = new Sim(7)
    const ms = sim.startGroup(3)
    const [m1, m2] = ms as [SimMember, SimMember]
    sim.run(sim.now + 50)
    // The sequencer (m1) loses m2's first DATA; the later ones arrive.
    let lost = 0
    sim.filter = (from, to, buf) => !(from === m2 && to === m1 && datagramKind(buf) === Kind.DATA && lost++ === 0)
    const sentAt = sim.now
    m2.send(1)
    sim.run(sim.now + 2)
    m2.send(20)
    t.ok(sim.runUntil(() => m1.messages().includes('m2:1'), 5000), 'ordered in the end')
    const waited = sim.now - sentAt
    t.ok(lost >= 2, 'the first DATA was lost at the sequencer, later ones arrived')
    t.ok(waited < DEFAULT_RESEND_MS / 2, `the sequencer had it ${waited.toFixed(1)} ms after it was sent (the resend timer: ${DEFAULT_RESEND_MS} ms)`)
    t.ok(sim.runUntil(() => sim.settled(), 5000))
    t.same(check(sim.logs()), [])
  }
})

/**
 * Time to repair, in virtual time, while the group keeps sending (a drumbeat of messages, one a millisecond, keeps
 * the event loop turning): a gap is asked for once it has been seen for NACK_REORDER_MS — so repaired within that
 * plus a beat and a round trip (2 ms) — not on the first tick after a whole tick without progress (5–9 ms in these
 * runs before), nor nackIntervalMs after it was first seen (the sequencer: 27–31 ms before). One NACK each.
 */
function drumbeat(sim: Sim, m: SimMember, ms: number): void {
  for (let k = 1; k <= ms; k++) sim.at(sim.now + k, () => m.send(1))
}

/** Runs in steps of 0.1 ms of virtual time until `done()` holds (runUntil looks every 10 ms); whether it held. */
function runUntilFine(sim: Sim, done: () => boolean, limit: number): boolean {
  for (const end = sim.now + limit; sim.now < end && !done(); ) sim.run(sim.now + 0.1)
  return done()
}

type Members = [SimMember, SimMember, SimMember]

/**
 * One loss, timed: for each seed a quiet group of three (m1 the sequencer) in which `prepare` may set things going;
 * then the first datagram of `kind` from `from` to `to` (ORDERs: only those with runs, longer than a heartbeat) is
 * lost, `act` sends, and the test waits until `done`. Checks the loss happened, it was over within `boundMs` of
 * the send, `also` (counts), that the group settles and the guarantees hold.
 */
function timedLoss(name: string, c: {
  kind: Kind
  from: (ms: Members) => SimMember
  to: (ms: Members) => SimMember
  prepare?: (sim: Sim, ms: Members) => void
  act: (sim: Sim, ms: Members) => void
  done: (ms: Members) => boolean
  boundMs: (sim: Sim) => number
  also?: (t: Test, ms: Members) => void
}): void {
  t.test(name, async (t) => {
    for (const seed of [7, 8, 9]) {
      const sim = new Sim(seed)
      const ms = sim.startGroup(3) as Members
      sim.run(sim.now + 50)
      c.prepare?.(sim, ms)
      const [from, to] = [c.from(ms), c.to(ms)]
      let lost = 0
      sim.filter = (f, d, buf) => !(f === from && d === to && datagramKind(buf) === c.kind && (c.kind !== Kind.ORDER || buf.length > 40) && lost++ === 0)
      const sentAt = sim.now
      c.act(sim, ms)
      t.ok(runUntilFine(sim, () => c.done(ms), 5000), 'repaired in the end')
      const waited = sim.now - sentAt
      t.ok(lost > 0, 'the datagram was lost')
      t.ok(waited < c.boundMs(sim), `seed ${seed}: over ${waited.toFixed(2)} ms after the send (bound ${c.boundMs(sim)} ms)`)
      c.also?.(t, ms)
      t.ok(sim.runUntil(() => sim.settled(), 5000))
      t.same(check(sim.logs()), [])
    }
  })
}

/**
 * Time to repair, in virtual time, while the group keeps sending (a drumbeat of messages, one a millisecond, keeps
 * the event loop turning): a gap is asked for once it has been seen for NACK_REORDER_MS — so repaired within that
 * plus a beat and a round trip (2 ms) — not on the first tick after a whole tick without progress (5–9 ms in these
 * runs before), nor nackIntervalMs after it was first seen (the sequencer: 27–31 ms before). One NACK each.
 */
timedLoss('a DATA lost at one receiver is asked for as soon as the gap is seen', {
  kind: Kind.DATA, from: (ms) => ms[1], to: (ms) => ms[2],
  act: (sim, ms) => {
    drumbeat(sim, ms[0], 30)
    ms[1].send(1)
  },
  done: (ms) => ms[2].messages().includes('m2:1'),
  boundMs: () => NACK_REORDER_MS + 2,
  also: (t, ms) => t.equal(ms[2].engine.stats.nacksSent, 1, 'one NACK'),
})

timedLoss('an ORDER lost at one receiver is asked for as soon as the gap is seen', {
  kind: Kind.ORDER, from: (ms) => ms[0], to: (ms) => ms[2],
  act: (sim, ms) => {
    drumbeat(sim, ms[0], 30)
    ms[1].send(1)
  },
  done: (ms) => ms[2].messages().includes('m2:1'),
  boundMs: () => 1 + NACK_REORDER_MS + 2, // the gap shows when the next ORDER arrives, a beat later
  also: (t, ms) => t.equal(ms[2].engine.stats.nacksSent, 1, 'one NACK'),
})

timedLoss('a DATA lost at the sequencer is asked of its sender as soon as the gap is seen', {
  kind: Kind.DATA, from: (ms) => ms[1], to: (ms) => ms[0],
  act: (sim, ms) => {
    ms[1].send(1)
    drumbeat(sim, ms[1], 30)
  },
  done: (ms) => ms[0].messages().includes('m2:1'),
  boundMs: () => 1 + NACK_REORDER_MS + 2, // the gap shows when m2's next DATA arrives, a beat later
  also: (t, ms) => t.equal(ms[1].engine.stats.nacksServed, 1, 'one NACK'),
})

/**
 * Losses that leave nothing behind them to show the gap — the last ORDER before the group goes quiet, the last ACK —
 * hold stability, so every sender's window: they are found within nackIntervalMs (the sequencer's heartbeat while
 * something is unstable, the member's ACK repeated while what it acknowledged is not yet stable), not after
 * heartbeatMs (55–69 ms in these runs before).
 */
timedLoss('the last ORDER lost at one receiver: found by the next heartbeat, nackIntervalMs on', {
  kind: Kind.ORDER, from: (ms) => ms[0], to: (ms) => ms[2],
  act: (_sim, ms) => ms[1].send(1),
  done: (ms) => ms[2].messages().includes('m2:1'),
  // nackIntervalMs of quiet, a tick for the sequencer to notice it, NACK_REORDER_MS for m3, a round trip.
  boundMs: (sim) => DEFAULT_NACK_INTERVAL_MS + sim.tickMs + NACK_REORDER_MS + 2,
})

timedLoss('the last ACK lost: repeated nackIntervalMs on, while not yet stable', {
  kind: Kind.ACK, from: (ms) => ms[2], to: (ms) => ms[0],
  act: (_sim, ms) => ms[1].send(1),
  // Delivered at m3, then stable at the sender: m3's ACK of it is what was lost.
  done: (ms) => ms[2].messages().includes('m2:1') && ms[1].engine.stable >= ms[2].engine.delivered,
  boundMs: (sim) => DEFAULT_NACK_INTERVAL_MS + sim.tickMs + 2, // nackIntervalMs after the lost ACK, at m3's next tick
})

/**
 * A sender's last DATA lost at the sequencer leaves nothing after it to show the gap: only the sender's own resend
 * timer repairs it. That timer follows how long the sender's messages take to be ordered (a smoothed round trip and
 * its variation, as TCP's retransmission timeout, RFC 6298), at least RESEND_MIN_MS, at most resendMs — not a fixed
 * resendMs (100 ms, 101–108 ms here before), which stalled every 100-byte sender whose window is a couple of datagrams.
 */
timedLoss('a sender\'s last DATA lost at the sequencer is sent again as soon as it is overdue, not resendMs later', {
  kind: Kind.DATA, from: (ms) => ms[1], to: (ms) => ms[0],
  prepare: (sim, ms) => {
    drumbeat(sim, ms[1], 30) // its messages' time to be ordered, measured
    sim.run(sim.now + 40)
  },
  act: (_sim, ms) => ms[1].send(1),
  done: (ms) => ms[0].messages().length === 31,
  boundMs: (sim) => RESEND_MIN_MS + 2 * sim.tickMs + 0.01,
})
