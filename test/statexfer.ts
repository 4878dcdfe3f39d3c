/**
 * State transfer's data path alone (lib/statexfer.ts, PROTOCOL.md §8.3): donors and joiners through a seeded
 * lossy, duplicating, reordering channel (test/fixtures/statenet.ts), with a clock the test moves.
 */
import t from 'tap'
import { MAX_AHEAD, RETRY_ASKS, STATE_RETRY_MS, STATE_WINDOW, StateJoiner } from '../lib/statexfer.js'
import { ErrorCodes, StateError } from '../lib/errors.js'
import { decode, encodeState, encodeStateReq, Kind, STATE_OVERHEAD, type StateData, type StateReq } from '../lib/wire.js'
import { chunked, INC, joined, stateBytes, StateWorld, type Faults } from './fixtures/statenet.js'

const LOSSY: Faults = { loss: 0.1, dup: 0.05, reorder: true }
const ROOM = 1472 - STATE_OVERHEAD

const req = (viewId: number, sender: number, acked: number, from: number, length: number): StateReq =>
  ({ kind: Kind.STATEREQ, viewId, sender, acked, from, length })
const st = (viewId: number, sender: number, offset: number, bytes: Uint8Array, last = false, none = false): StateData =>
  ({ kind: Kind.STATE, viewId, sender, offset, bytes, last, none })

t.test('states of every shape arrive whole, in order, once, through loss, duplicates and reordering', async (t) => {
  const sizes = [0, 1, ROOM - 1, ROOM, ROOM + 1, 3 * 1024 * 1024 + 17]
  let seed = 1
  for (const size of sizes) {
    for (const kind of ['bytes', 'iterable', 'odd chunks'] as const) {
      const w = new StateWorld(seed++, LOSSY)
      const state = stateBytes(size, seed)
      const donor = w.donor(1)
      const j = w.joiner(9)
      const src = kind === 'bytes' ? state : chunked(state, kind === 'iterable' ? [64 * 1024] : [1, 7, 1000, 65_537, 3, 200_001])
      donor.take(5, src, [9])
      const r = w.start(j, 5, 1)!
      t.ok(await w.run(() => j.done > 0 && r.ended), `${size} bytes from ${kind}: done`)
      t.ok(joined(r).equals(state), `${size} bytes from ${kind}: every byte, in order, once`)
      t.equal(j.done, 1, 'done reported once')
      t.equal(j.failed, null)
      // On "done" — or, if the channel lost it, stateTimeoutMs after the joiner fell silent.
      await w.run(() => donor.snapshots === 0, w.opts.stateTimeoutMs + 10)
      t.equal(donor.snapshots, 0, 'the donor forgot the snapshot')
      t.ok(w.maxAheadOfConsumed <= STATE_WINDOW, 'never sent past the window')
    }
  }
})

t.test('exactly one datagram\'s room is one STATE with LAST; an empty state one empty STATE with LAST', async (t) => {
  for (const size of [ROOM, 0]) {
    const w = new StateWorld(3)
    w.donor(1).take(2, stateBytes(size), [4])
    const j = w.joiner(4)
    const r = w.start(j, 2, 1)!
    await w.run(() => r.ended)
    const data = w.states.filter((s) => s.to === 4)
    t.same(data, [{ from: 1, to: 4, offset: 0, length: size, last: true, none: false }], `${size} bytes`)
    t.same(w.requests.map((q) => [q.acked, q.at, q.length]), [[0, 0, STATE_WINDOW], [size, size, 0]], 'one request, then "done"')
  }
})

t.test('a snapshot iterable that ends after a chunk was sent: an empty LAST at the size ends the state', async (t) => {
  const w = new StateWorld(4)
  const state = stateBytes(10)
  w.donor(1).take(2, chunked(state, [10]), [4])
  const j = w.joiner(4)
  const r = w.start(j, 2, 1)!
  await w.run(() => r.ended)
  t.ok(joined(r).equals(state))
  t.same(w.states.map((s) => [s.offset, s.length, s.last]), [[0, 10, false], [10, 0, true]])
})

t.test('a slow restore: the joiner stops asking, the donor never sends more than the window beyond what was consumed', async (t) => {
  for (const faults of [{}, LOSSY]) {
    const w = new StateWorld(11, faults, { stateTimeoutMs: 60_000 })
    const state = stateBytes(12 * 1024 * 1024, 2)
    const donor = w.donor(1)
    donor.take(3, chunked(state, [100_000]), [7])
    const j = w.joiner(7)
    // One chunk (a datagram's bytes) per ms of world time: about 1.4 MB/s, far slower than the channel.
    const r = w.start(j, 3, 1, 1)!
    let maxDonorHeld = 0
    t.ok(await w.run(() => { maxDonorHeld = Math.max(maxDonorHeld, donor.heldBytes); return r.ended }))
    t.ok(joined(r).equals(state), 'the whole state')
    const sent = w.states.reduce((n, s) => n + s.length, 0)
    t.ok(w.maxAheadOfConsumed <= STATE_WINDOW, `sent at most the window past consumed (max ${w.maxAheadOfConsumed}, window ${STATE_WINDOW})`)
    t.ok(w.maxJoinerHeld <= STATE_WINDOW, `the joiner held at most the window (max ${w.maxJoinerHeld})`)
    t.ok(maxDonorHeld <= STATE_WINDOW + 2 * 100_000, `the donor held at most the window and two chunks (max ${maxDonorHeld})`)
    t.comment(`${JSON.stringify(faults)}: ${sent} bytes sent for ${state.length}; ahead of consumed max ${w.maxAheadOfConsumed}; joiner held max ${w.maxJoinerHeld}; donor held max ${maxDonorHeld}`)
    if (!faults.loss) t.equal(sent, state.length, 'without loss, each byte sent once')
  }
})

t.test('restart to another donor mid-transfer: the old stream errors, the new one gives the whole new state from byte 0', async (t) => {
  const w = new StateWorld(21, LOSSY)
  const old = stateBytes(6 * 1024 * 1024, 3)
  const fresh = stateBytes(5 * 1024 * 1024 + 3, 4)
  const a = w.donor(1)
  const b = w.donor(2)
  a.take(10, old, [8])
  const j = w.joiner(8)
  const r1 = w.start(j, 10, 1, 1)!
  await w.run(() => r1.total > 2 * 1024 * 1024)
  t.ok(r1.total > 0 && !r1.ended, 'the first transfer is under way')
  t.equal(w.start(j, 11, 1), null, 'a later view with the same donor changes nothing')
  b.take(12, fresh, [8])
  const r2 = w.start(j, 12, 2)!
  await w.step()
  await r1.finished
  t.match(r1.error, { code: ErrorCodes.STATE, message: /restarted from member 2 at view 12/ }, 'the old stream ends with ESTATE')
  t.ok(r1.error instanceof StateError)
  t.ok(await w.run(() => r2.ended))
  t.ok(joined(r2).equals(fresh), 'the new state, whole, from its first byte')
  t.equal(j.done, 1)
  await w.run(() => a.snapshots === 0, 6000)
  t.equal(a.snapshots, 0, 'the old donor forgets its snapshot once the joiner is silent for stateTimeoutMs')
  t.equal(w.start(j, 13, 1), null, 'a complete state does not restart')
})

t.test('two joiners of one snapshot at different speeds: the donor reads no further than the window past the slower', async (t) => {
  const w = new StateWorld(31, LOSSY, { stateTimeoutMs: 60_000 })
  const state = stateBytes(10 * 1024 * 1024, 5)
  const src = chunked(state, [50_000])
  const donor = w.donor(1)
  donor.take(4, src, [5, 6])
  const fast = w.joiner(5)
  const slow = w.joiner(6)
  const rf = w.start(fast, 4, 1)!
  const rs = w.start(slow, 4, 1, 3)!
  let maxHeld = 0
  let maxLead = 0
  t.ok(await w.run(() => {
    maxHeld = Math.max(maxHeld, donor.heldBytes)
    maxLead = Math.max(maxLead, src.yielded - slow.joiner.received)
    return rf.ended && rs.ended
  }))
  t.ok(joined(rf).equals(state) && joined(rs).equals(state), 'both get the whole state')
  // The chunk holding the slower joiner's acked, the window past it, and the chunk read last that crossed the window's end.
  t.ok(maxHeld <= STATE_WINDOW + 2 * 50_000, `the donor held at most the window and two chunks (max ${maxHeld})`)
  t.ok(maxLead <= STATE_WINDOW + 50_000, `read at most the window and a chunk past the slow joiner (max ${maxLead})`)
  await w.run(() => donor.snapshots === 0, 1000)
  t.equal(donor.snapshots, 0)
  t.equal(src.returned, 1, 'the iterable ran to its end once')
})

t.test('a snapshot iterable that throws midway: its joiners get NONE, nothing is left unhandled, the joiner fails at its bound', async (t) => {
  const w = new StateWorld(41, {}, { stateTimeoutMs: 2000 })
  const state = stateBytes(2 * 1024 * 1024, 6)
  const failures: Array<[number, unknown]> = []
  const donor = w.donor(1, {}, (v, err) => failures.push([v, err]))
  donor.take(7, chunked(state, [100_000], 600_000), [3])
  const j = w.joiner(3)
  const r = w.start(j, 7, 1)!
  t.ok(await w.run(() => j.failed !== null, 5000))
  t.equal(failures.length, 1)
  t.match(failures[0], [7, { message: 'snapshot broke' }])
  t.equal(donor.snapshots, 0, 'the snapshot is dropped')
  t.ok(w.states.some((s) => s.none && s.to === 3), 'the joiner got NONE')
  t.match(j.failed, { code: ErrorCodes.STATE, message: /stateTimeoutMs \(2000 ms\).*holds no snapshot of view 7/ })
  t.ok(w.now >= 2000 && w.now < 2100, `failed at its bound (${w.now} ms)`)
  await r.finished
  t.match(r.error, { code: ErrorCodes.STATE }, 'restore\'s stream ends with the error')
  t.ok(r.total < state.length)
  t.equal(j.done, 0)
})

t.test('timeouts: a snapshot no joiner asks for, a joiner that goes silent, a donor that never answers', async (t) => {
  const w = new StateWorld(51, {}, { stateTimeoutMs: 1000 })
  const donor = w.donor(1)
  const src = chunked(stateBytes(100), [10])
  donor.take(1, src, [2])
  await w.run(() => false, 999)
  t.equal(donor.snapshots, 1, 'held until stateTimeoutMs after the take')
  await w.step()
  t.equal(donor.snapshots, 0, 'forgotten then')
  await w.run(() => false, 5)
  t.equal(src.returned, 0, 'never read, so nothing to close')

  const read = chunked(stateBytes(8 * 1024 * 1024), [64 * 1024])
  donor.take(2, read, [3])
  const j = w.joiner(3)
  const r = w.start(j, 2, 1)!
  await w.run(() => r.total > 0)
  // The joiner's process stops: its datagrams no longer leave.
  w.filter = (from) => from !== 3
  const stoppedAt = w.now
  await w.run(() => donor.snapshots === 0, 2000)
  t.equal(donor.snapshots, 0, 'a joiner silent for stateTimeoutMs is forgotten, and its snapshot with it')
  t.ok(w.now - stoppedAt >= 1000 && w.now - stoppedAt < 1100, `after ${w.now - stoppedAt} ms`)
  await w.run(() => read.returned > 0, 50)
  t.equal(read.returned, 1, 'the half-read iterable is closed (return())')

  w.filter = () => true
  const lonely = w.joiner(4)
  const r4 = w.start(lonely, 9, 77)!
  t.ok(await w.run(() => lonely.failed !== null, 2000))
  t.match(lonely.failed, { code: ErrorCodes.STATE, message: /within stateTimeoutMs/ })
  const asks = w.requests.filter((q) => q.from === 4).length
  t.ok(asks >= 15 && asks <= 25, `asked again every ${STATE_RETRY_MS} ms meanwhile (${asks} requests in 1 s)`)
  await r4.finished
  t.match(r4.error, { code: ErrorCodes.STATE })
  t.equal(w.start(lonely, 10, 78), null, 'a failed joiner does not start again')
})

t.test('member left: the donor forgets it at once', async (t) => {
  const w = new StateWorld(52)
  const donor = w.donor(1)
  donor.take(1, stateBytes(10), [2, 3])
  donor.left(2)
  t.equal(donor.snapshots, 1)
  donor.left(3)
  t.equal(donor.snapshots, 0)
  donor.take(2, stateBytes(10), [])
  t.equal(donor.snapshots, 0, 'a snapshot for nobody is not held')
  const src = chunked(stateBytes(10), [10])
  donor.take(3, stateBytes(10), [4])
  t.notOk(donor.take(3, src, [4]), 'a second snapshot of one view is refused')
  await w.run(() => src.returned > 0, 10)
  t.equal(donor.snapshots, 1)
  donor.close()
  t.equal(donor.snapshots, 0)
})

t.test('hostile requests cost bounded work', async (t) => {
  const w = new StateWorld(61)
  const donor = w.donor(1)
  const state = stateBytes(64 * 1024 * 1024, 7)
  donor.take(5, state, [2])
  const sent = (): { n: number; bytes: number } => {
    const s = w.states.splice(0)
    return { n: s.length, bytes: s.reduce((a, x) => a + x.length, 0) }
  }
  donor.onRequest(req(5, 2, 0, 0, 2 ** 32 - 1))
  t.same(sent(), { n: 0, bytes: 0 }, 'length 2^32 − 1: dropped')
  donor.onRequest(req(5, 2, 0, STATE_WINDOW, 100))
  t.same(sent(), { n: 0, bytes: 0 }, 'past the window: dropped')
  donor.onRequest(req(5, 2, 10, 5, 100))
  t.same(sent(), { n: 0, bytes: 0 }, 'below its own acked: dropped')
  donor.onRequest(req(5, 2, 2 ** 48 - 1, 2 ** 48 - 1, 1))
  t.same(sent(), { n: 0, bytes: 0 }, 'acked past the state: dropped')
  donor.onRequest(req(5, 3, 0, 0, 100))
  t.match(w.states.splice(0), [{ to: 3, none: true, length: 0 }], 'not a joiner of it: NONE')
  donor.onRequest(req(6, 2, 0, 0, 100))
  t.match(w.states.splice(0), [{ to: 2, none: true, length: 0 }], 'an unknown view: NONE')
  donor.onRequest(req(5, 2, 0, 0, STATE_WINDOW))
  const full = sent()
  t.same(full, { n: Math.ceil(STATE_WINDOW / ROOM), bytes: STATE_WINDOW }, 'a whole window: one window of sends')
  donor.onRequest(req(5, 2, 3 * 1024 * 1024, 3 * 1024 * 1024, STATE_WINDOW))
  t.equal(sent().bytes, STATE_WINDOW, 'acked moves the window: still one window per request')
  donor.onRequest(req(5, 2, 0, 0, STATE_WINDOW))
  t.equal(sent().bytes, STATE_WINDOW - 3 * 1024 * 1024, 'a stale request: only what lies past the acked the joiner said before')
  t.equal(donor.counters.dropped, 4)
  // The same through the codec: garbage never reaches the donor.
  t.equal(decode(encodeStateReq({ inc: INC, viewId: 5, sender: 2 }, 0, 0, 2 ** 32 - 1), INC).kind, 0)
})

t.test('hostile answers: wrong sender or view, outside what was asked, contradictory LAST — and a flood of tiny pieces', async (t) => {
  const w = new StateWorld(71, {}, { stateTimeoutMs: 60_000 })
  const state = stateBytes(3 * 1024 * 1024, 8)
  const donor = w.donor(1)
  donor.take(5, state, [2])
  const j = w.joiner(2)
  const r = w.start(j, 5, 1, 0)!
  w.filter = (from) => from !== 1 // hold the real donor back while the forger talks
  w.deliver()
  const jj = j.joiner
  const before = jj.counters.dropped
  jj.onState(st(5, 3, 0, Buffer.from('forged')))
  jj.onState(st(4, 1, 0, Buffer.from('forged')))
  jj.onState(st(5, 1, STATE_WINDOW, Buffer.from('past the window')))
  jj.onState(st(5, 1, 2 ** 48 - 20, Buffer.from('far away'), true))
  jj.onState(st(5, 1, STATE_WINDOW + 5, Buffer.alloc(0), true))
  t.equal(jj.counters.dropped - before, 5, 'each refused')
  t.equal(jj.heldBytes, 0, 'nothing held')
  // A flood of 1-byte pieces above a gap: at most MAX_AHEAD of them are kept.
  for (let o = 2; o < 40_000; o += 2) jj.onState(st(5, 1, o, state.subarray(o, o + 1)))
  t.ok(jj.heldBytes <= MAX_AHEAD, `tiny pieces held: ${jj.heldBytes}`)
  jj.onState(st(5, 1, 100, Buffer.alloc(0), true))
  t.ok(jj.counters.dropped - before >= 6, 'a LAST below bytes held is refused')
  // The real donor's bytes fill every gap: the state is whole and right.
  w.filter = () => true
  t.ok(await w.run(() => r.ended))
  t.ok(joined(r).equals(state), 'the real state, whole')
  t.ok(r.bytes.length < 40_000, `restore got ${r.bytes.length} chunks: tiny pieces are joined`)
})

t.test('retries ask for the gaps only, at most RETRY_ASKS requests at a time', async (t) => {
  const w = new StateWorld(81)
  const state = stateBytes(STATE_WINDOW, 9)
  w.donor(1).take(5, state, [2])
  const j = w.joiner(2)
  let n = 0
  w.filter = (from) => from !== 1 || n++ % 20 !== 3 // every 20th STATE lost
  w.start(j, 5, 1, 0, false)
  await w.run(() => w.requests.length > 1)
  w.requests.length = 0
  await w.run(() => w.requests.length > 0, 200)
  const gaps = w.requests.filter((q) => q.from === 2)
  t.ok(gaps.length > 1 && gaps.length <= RETRY_ASKS, `${gaps.length} requests`)
  t.ok(gaps.every((q) => q.length === ROOM), 'each for one lost datagram')
})

t.test('restore that stops reading early fails the transfer; a second concurrent next() is refused', async (t) => {
  const w = new StateWorld(91)
  w.donor(1).take(5, stateBytes(100_000), [2])
  const j = w.joiner(2)
  const it = j.joiner.start(5, 1)!
  await w.run(() => j.joiner.received === 100_000)
  const iter = it[Symbol.asyncIterator]()
  const first = await iter.next()
  t.notOk(first.done)
  await iter.return!()
  t.match(j.failed, { code: ErrorCodes.STATE, message: /stopped reading/ })
  const w2 = new StateWorld(92)
  const j2 = w2.joiner(2)
  const it2 = j2.joiner.start(5, 1)![Symbol.asyncIterator]()
  const pending = it2.next()
  await t.rejects(it2.next(), { code: ErrorCodes.STATE })
  j2.joiner.close()
  await t.rejects(pending, { code: ErrorCodes.STATE, message: /closed/ })
})

t.test('a done joiner says "done" again when its donor goes on sending', async (t) => {
  const w = new StateWorld(93)
  const donor = w.donor(1)
  donor.take(5, stateBytes(10), [2])
  const j = w.joiner(2)
  const r = w.start(j, 5, 1)!
  w.filter = (from, _to, buf) => !(from === 2 && (decode(buf, INC) as StateReq).length === 0) // "done" lost
  await w.run(() => r.ended)
  w.filter = () => true
  t.equal(donor.snapshots, 1)
  j.joiner.onState(st(5, 1, 0, stateBytes(10)))
  await w.step()
  t.equal(donor.snapshots, 1, 'not again at once')
  await w.run(() => false, STATE_RETRY_MS)
  j.joiner.onState(st(5, 1, 0, stateBytes(10)))
  await w.step()
  t.equal(donor.snapshots, 0, 'the second "done" got through')
  const asked = w.requests.length
  await w.run(() => false, STATE_RETRY_MS)
  j.joiner.onState(st(5, 1, 0, new Uint8Array(0), false, true))
  t.equal(w.requests.length, asked, 'NONE after "done" is not answered')
})

t.test('throughput: 100 MB from a Uint8Array through the pure units, no loss', async (t) => {
  for (const maxDatagram of [1472, 60_000]) {
    const w = new StateWorld(101, {}, { maxDatagram, stateTimeoutMs: 600_000 })
    w.record = false
    const state = stateBytes(100 * 1024 * 1024, 10)
    w.donor(1).take(5, state, [2])
    const j = w.joiner(2)
    const t0 = process.hrtime.bigint()
    const r = w.start(j, 5, 1, 0, false)!
    t.ok(await w.run(() => r.ended, 1e9))
    const ms = Number(process.hrtime.bigint() - t0) / 1e6
    t.equal(r.total, state.length)
    t.comment(`maxDatagram ${maxDatagram}: 100 MB in ${ms.toFixed(0)} ms = ${(100 * 1024 * 1024 / 1e6 / (ms / 1000)).toFixed(0)} MB/s`)
  }
})

t.test('a joiner takes nothing before start, and offsets past 2^48 from a direct call are refused', async (t) => {
  const sent: Buffer[] = []
  const j = new StateJoiner({ stateTimeoutMs: 100 }, { me: 2, inc: INC, now: () => 0, send: (_to, b) => sent.push(b), done: () => {}, failed: () => {} })
  j.onState(st(0, 0, 0, Buffer.from('x'), true))
  t.equal(j.counters.dropped, 1)
  j.tick()
  t.equal(sent.length, 0)
  t.ok(encodeState({ inc: INC, viewId: 1, sender: 1 }, 0, true).length === STATE_OVERHEAD)
})
