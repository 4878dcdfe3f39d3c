/**
 * The outbox alone (lib/outbox.ts): the send window, fragments, the bytes in flight, resend backoff and the rewind
 * at a view change — driven through a fake host that records every datagram, with a clock the test moves.
 */
import t from 'tap'
import { Outbox, RESEND_BURST_MIN, type OutboxOptions } from '../lib/outbox.js'
import { ErrorCodes } from '../lib/errors.js'
import { decode, fragmentRoom, Kind, type DataEntry } from '../lib/wire.js'

const INC = { hi: 1, lo: 2 }
const ME = 7
const OPTS: OutboxOptions = { maxDatagram: 1000, maxMessage: 1 << 20, sendWindow: 1024, sendWindowBytes: 1 << 20, resendMs: 10 }

interface Sent { to: number | null; viewId: number; entries: DataEntry[]; len: number }

function outbox(o: Partial<OutboxOptions> = {}) {
  let now = 0
  const sent: Sent[] = []
  const record = (buf: Buffer, to: number | null): void => {
    const d = decode(buf, INC)
    if (d.kind !== Kind.DATA || d.sender !== ME) throw new Error('not a DATA datagram of this member')
    sent.push({ to, viewId: d.viewId, entries: d.entries, len: buf.length })
  }
  const host = {
    me: ME, inc: INC, now: () => now,
    multicast: (buf: Buffer) => record(buf, null),
    unicast: (buf: Buffer, no: number) => record(buf, no),
  }
  const counters = { sent: 0, resent: 0, resentBytes: 0 }
  const ob = new Outbox({ ...OPTS, ...o }, host, counters)
  return {
    ob, sent, counters,
    at: (ms: number) => { now = ms },
    /** Frees own messages up to `upTo` as the engine's gc does once they are stable; returns ob.reopened(). */
    free: (from: number, upTo: number): boolean => {
      for (let m = from; m <= upTo; m++) ob.freed(m, ob.own.store.delete(m))
      return ob.reopened()
    },
    /** The msgIds of the entries sent since the last call, and to whom. */
    take: (): { to: Array<number | null>; msgIds: number[] } => {
      const batch = sent.splice(0)
      return { to: [...new Set(batch.map((s) => s.to))], msgIds: batch.flatMap((s) => s.entries.map((e) => e.msgId)) }
    },
  }
}

const bytes = (n: number, fill = 0x61): Buffer => Buffer.alloc(n, fill)
const payloadBytes = (s: Sent[]): number => s.reduce((a, d) => a + d.entries.reduce((b, e) => b + e.payload.length, 0), 0)

t.test('the window refuses by count, and reports reopening once', async (t) => {
  const { ob, free } = outbox({ sendWindow: 4 })
  for (let i = 0; i < 4; i++) t.ok(ob.submit(bytes(10)), `message ${i + 1} fits`)
  t.notOk(ob.submit(bytes(10)), 'a fifth message does not')
  t.notOk(ob.submit(bytes(10)), 'nor on a second try')
  t.ok(free(1, 1), 'freeing one message reopens the window')
  t.notOk(ob.reopened(), 'and says so once')
  t.ok(ob.submit(bytes(10)), 'there is room for one')
  t.notOk(ob.submit(bytes(10)), 'and only one')
  t.notOk(ob.submit(bytes(10)), 'still full')
  t.ok(free(2, 2))
  t.ok(ob.submit(bytes(10)))
  t.notOk(free(3, 3), 'nothing was refused since: no reopening to report')
})

t.test('the window counts fragments against sendWindow', async (t) => {
  const room = fragmentRoom(OPTS.maxDatagram)
  const { ob } = outbox({ sendWindow: 4 })
  t.ok(ob.submit(bytes(10)))
  t.notOk(ob.submit(bytes(3 * room + 1)), 'four fragments do not fit beside one message')
  t.ok(ob.submit(bytes(3 * room)), 'three do')
})

t.test('the window refuses by bytes, but always admits a message when nothing is outstanding', async (t) => {
  const { ob, free, counters } = outbox({ sendWindowBytes: 1000 })
  t.ok(ob.submit(bytes(600)))
  t.notOk(ob.submit(bytes(401)), '1001 bytes would be unstable')
  t.ok(ob.submit(bytes(400)), 'exactly sendWindowBytes is allowed')
  t.notOk(ob.submit(bytes(1)))
  t.ok(free(1, 1), 'the 600 bytes became stable')
  t.notOk(ob.reopened())
  t.ok(ob.submit(bytes(600)))
  t.notOk(ob.submit(bytes(1)))
  free(2, 3)
  t.ok(ob.submit(bytes(5000)), 'alone, a message larger than the window is admitted')
  t.notOk(ob.submit(bytes(1)), 'and nothing beside it')
  t.equal(counters.sent, 4, 'only accepted messages count as sent')
})

t.test('refuses a message larger than maxMessage, or than the store can hold, without storing anything', async (t) => {
  const { ob, counters } = outbox({ maxMessage: 100 })
  t.throws(() => ob.submit(bytes(101)), { code: ErrorCodes.MESSAGE_TOO_LARGE })
  const small = outbox({ maxDatagram: 512, maxMessage: 1 << 30 })
  t.throws(() => small.ob.submit(bytes(131_073 * fragmentRoom(512))), { code: ErrorCodes.MESSAGE_TOO_LARGE }, 'more fragments than a sender holds')
  t.equal(ob.own.store.size + small.ob.own.store.size, 0)
  t.equal(counters.sent, 0)
})

t.test('a message larger than a datagram goes out as fragments, FIRST on the first, MORE on all but the last', async (t) => {
  const room = fragmentRoom(OPTS.maxDatagram)
  const { ob, sent } = outbox()
  const big = Buffer.alloc(2 * room + 17)
  for (let i = 0; i < big.length; i++) big[i] = i & 0xff
  t.ok(ob.submit(bytes(5, 0x41)))
  t.ok(ob.submit(big))
  t.ok(ob.submit(bytes(5, 0x42)))
  t.ok(ob.transmit(3))
  t.ok(sent.every((s) => s.to === null && s.viewId === 3), 'multicast, in the view given')
  const entries = sent.flatMap((s) => s.entries)
  t.same(entries.map((e) => [e.msgId, e.first, e.more]), [
    [1, true, false],
    [2, true, true], [3, false, true], [4, false, false],
    [5, true, false],
  ])
  t.same(entries.map((e) => e.payload.length), [5, room, room, 17, 5], 'each fragment fills a datagram but the last')
  t.same(Buffer.concat(entries.slice(1, 4).map((e) => e.payload)), big, 'the fragments are the message, in order')
  t.equal(sent.length, 4, 'small messages share a datagram with fragments where they fit')
  t.equal(ob.transmitted, 5)
  t.notOk(ob.transmit(3), 'nothing left to send')
})

t.test('transmit keeps at most sendWindowBytes in flight (or one fragment, when the window is smaller)', async (t) => {
  const room = fragmentRoom(OPTS.maxDatagram)
  const window = 3 * room + 10
  const { ob, sent, free } = outbox({ sendWindowBytes: window })
  t.ok(ob.submit(bytes(10 * room)), 'a 10-fragment message, admitted alone')
  ob.transmit(1)
  t.equal(ob.transmitted, 3, 'three fragments fit in the window, a fourth does not')
  t.equal(ob.inflightBytes, 3 * room)
  t.equal(payloadBytes(sent), ob.inflightBytes, 'in flight is what was multicast')
  ob.transmit(1)
  t.equal(ob.transmitted, 3, 'nothing more until something is stable')
  t.notOk(free(1, 1), 'no submit was refused')
  t.ok(ob.untransmitted)
  ob.transmit(1)
  t.equal(ob.transmitted, 4, 'one fragment stable: one more goes out')
  t.ok(ob.inflightBytes <= window)
  free(2, 4)
  ob.transmit(1)
  t.equal(ob.transmitted, 7)
  free(5, 7)
  ob.transmit(1)
  t.equal(ob.transmitted, 10)
  t.notOk(ob.untransmitted)
  t.equal(payloadBytes(sent), 10 * room, 'every byte went out once')

  const tiny = outbox({ sendWindowBytes: 100 })
  t.ok(tiny.ob.submit(bytes(3 * room)))
  tiny.ob.transmit(1)
  t.equal(tiny.ob.transmitted, 1, 'a window smaller than a fragment still lets one fragment out')
  t.equal(tiny.ob.inflightBytes, room)
})

/** Submits and transmits `n` messages of a quarter datagram's payload: a resend of burst B carries 4·B of them. */
function loaded(n: number) {
  const o = outbox()
  for (let i = 0; i < n; i++) o.ob.submit(bytes(OPTS.maxDatagram / 4))
  o.ob.transmit(1)
  o.take()
  return o
}

t.test('resend: the wait doubles while nothing is ordered, up to 16 × resendMs, and resets when something is', async (t) => {
  const { ob, at, take, counters } = loaded(100)
  const times: number[] = []
  for (let now = 0; now <= 700; now++) {
    at(now)
    ob.resend(now, 1, 2)
    if (take().msgIds.length > 0) times.push(now)
  }
  t.same(times, [10, 30, 70, 150, 310, 470, 630], 'waits of 10, 20, 40, 80, 160, then 160 again')
  t.ok(counters.resent > 0)
  at(700)
  ob.ordered(1)
  for (let now = 700; now <= 730; now++) {
    at(now)
    ob.resend(now, 1, 2)
    if (take().msgIds.length > 0) times.push(now)
  }
  t.same(times.slice(7), [710, 730], 'ordering resets the wait to resendMs')
})

t.test('resentBytes: the bytes of the datagrams sent again, not of those sent the first time', async (t) => {
  const o = outbox()
  for (let i = 0; i < 40; i++) o.ob.submit(bytes(OPTS.maxDatagram / 4))
  o.ob.transmit(1)
  const first = o.sent.splice(0)
  t.ok(first.length > 0)
  t.equal(o.counters.resentBytes, 0, 'a first transmission is not a resend')
  o.at(10)
  o.ob.resend(10, 1, 2)
  const again = o.sent.splice(0)
  t.ok(again.length > 0 && again.every((s) => s.to === 2), 'resent to the sequencer')
  t.equal(o.counters.resentBytes, again.reduce((a, s) => a + s.len, 0), 'every byte of every resent datagram, headers included')
  t.ok(o.counters.resentBytes > payloadBytes(again), 'more than the payload alone')
  o.at(30)
  o.ob.resend(30, 1, 2)
  t.equal(o.counters.resentBytes, [...again, ...o.sent].reduce((a, s) => a + s.len, 0), 'and adds up over resends')
})

t.test('resend: the burst doubles while resends get ordered, halves when not, resets when caught up', async (t) => {
  const { ob, at, take, counters } = loaded(1000)
  const resendAt = (now: number): { to: Array<number | null>; msgIds: number[] } => {
    at(now)
    ob.resend(now, 1, 2)
    return take()
  }
  let r = resendAt(10)
  t.same(r.to, [2], 'to the sequencer, by unicast')
  t.same(r.msgIds, range(1, 4 * RESEND_BURST_MIN), `the first burst: ${RESEND_BURST_MIN} datagrams' worth, from the first unordered`)
  t.equal(counters.resent, 16)
  ob.ordered(16)
  r = resendAt(20)
  t.same(r.msgIds, range(17, 48), 'ordered: the next burst is twice as large')
  ob.ordered(48)
  r = resendAt(30)
  t.same(r.msgIds, range(49, 112), 'and again')
  ob.ordered(112)
  r = resendAt(40)
  t.equal(r.msgIds.length, 128, 'a 32-datagram burst')
  // Not ordered from here: the wait doubles (20, 40, 80, 160 ms), and each resend is half the one before it, since
  // that one went unordered (PROTOCOL.md §4.2): 32 → 16, 8, 4 datagrams, then the smallest burst stays.
  const sizes = [60, 100, 180, 340, 500].map((now) => resendAt(now).msgIds.length)
  t.same(sizes, [64, 32, 16, 16, 16], 'halved after each resend that is not ordered, down to the smallest')
  t.same(resendAt(660).msgIds.slice(0, 1), [113], 'every resend starts at the first unordered message')
  ob.ordered(1000)
  t.same(resendAt(2000).msgIds, [], 'caught up: nothing to resend')
  for (let i = 0; i < 100; i++) ob.submit(bytes(OPTS.maxDatagram / 4))
  at(2000)
  ob.transmit(1)
  take()
  t.equal(resendAt(2010).msgIds.length, 4 * RESEND_BURST_MIN, 'caught up: back to the smallest burst')
})

t.test('after a view change, what the stream did not order goes out again, from the right msgId', async (t) => {
  const { ob, at, take, free } = loaded(10)
  ob.ordered(6) // the old sequencer's ORDERs named 1 … 6
  ob.own.ordered = 4 // but the cut holds only 1 … 4
  free(1, 2)
  ob.forgetUnordered()
  ob.rewind()
  t.equal(ob.transmitted, 4, 'as if 5 … 10 were never sent')
  t.equal(ob.inflightBytes, 2 * (OPTS.maxDatagram / 4), 'in flight: 3 and 4, transmitted and not yet stable')
  ob.transmit(2)
  const r = take()
  t.same(r.to, [null], 'multicast')
  t.same(r.msgIds, range(5, 10), 'from 5 on')
  at(1000)
  ob.resend(1000, 2, 3)
  t.same(take().msgIds.slice(0, 1), [5], 'a resend, too, starts at 5')
})

t.test('all stable: only once every submitted message was freed', async (t) => {
  const { ob, free } = outbox()
  t.ok(ob.allStable, 'nothing submitted')
  ob.submit(bytes(10))
  ob.submit(bytes(10))
  t.notOk(ob.allStable)
  free(1, 1)
  t.notOk(ob.allStable)
  free(2, 2)
  t.ok(ob.allStable)
})

function range(a: number, b: number): number[] {
  return Array.from({ length: b - a + 1 }, (_, i) => a + i)
}
