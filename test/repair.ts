/**
 * Repair alone (lib/repair.ts): whom a blocked member asks, what its NACKs list, and how a NACK is answered —
 * driven through a fake host over a real SlotLog and MessageStores, every datagram decoded.
 */
import t from 'tap'
import { NACK_REORDER_MS, NACK_SCAN, nackReplyBytes, Repair, repairSource, type Gap, type RepairHost } from '../lib/repair.js'
import { SlotLog, VIEW_SENDER } from '../lib/slotlog.js'
import { MessageStore } from '../lib/msgstore.js'
import type { SenderState } from '../lib/sequencer.js'
import { decode, encodeNack, Kind, nackItemsPerDatagram, runsPerDatagram, type DataRange, type Datagram, type SlotRange } from '../lib/wire.js'

const INC = { hi: 3, lo: 4 }
const ME = 1
const OPTS = { maxDatagram: 1400, nackIntervalMs: 20, sendWindowBytes: 64 * 1024 }

type Out = { to: number; d: Datagram; len: number }

function member(have: number, maxDatagram = OPTS.maxDatagram) {
  const senders = new Map<number, SenderState>()
  const out: Out[] = []
  const host: RepairHost & { have: number } = {
    me: ME, inc: INC, log: new SlotLog(1 << 14), have, stable: 0,
    sender: (no) => senders.get(no),
    unicast: (buf, to) => {
      const d = decode(buf, INC)
      if (d.kind === 0) throw new Error(d.reason)
      out.push({ to, d, len: buf.length })
    },
  }
  const counters = { nacksSent: 0, nacksServed: 0, retransmitted: 0, retransmittedBytes: 0 }
  const repair = new Repair({ ...OPTS, maxDatagram }, host, counters)
  const hold = (no: number, msgId: number, bytes = 3): void => {
    let s = senders.get(no)
    if (!s) senders.set(no, (s = { store: new MessageStore(), ordered: 0, orderedCost: 0 }))
    s.store.set(msgId, true, false, Buffer.alloc(bytes, msgId))
  }
  /** Ordering known for `slot`: message `msgId` of `sender`, in view `viewId`. */
  const order = (slot: number, sender: number, msgId: number, viewId = 1): void => host.log.set(slot, sender, msgId, viewId)
  const nacks = (): Array<{ to: number; viewId: number; slots: SlotRange[]; data: DataRange[] }> =>
    out.splice(0).map(({ to, d }) => {
      if (d.kind !== Kind.NACK) throw new Error('not a NACK')
      return { to, viewId: d.viewId, slots: d.slots, data: d.data }
    })
  return { host, repair, counters, out, hold, order, nacks }
}

const gap = (top: number, o: Partial<Gap> = {}): Gap => ({ top, end: Infinity, viewId: 1, change: null, sequencer: 9, ...o })
const never = (): boolean => false

t.test('repairSource: the sequencer, unless a view change is being installed', async (t) => {
  t.equal(repairSource(null, 9, 0)(5), 9)
  t.equal(repairSource(null, 9, 3)(5000), 9, 'whatever the slot or round')
  t.equal(repairSource(null, undefined, 0)(5), undefined, 'no view: nobody')
})

t.test('repairSource: the holder first, then each round the next source covering the slot', async (t) => {
  // Member 2 holds (5, 10], member 1 (0, 10], member 3 (0, 20]; 2 is the holder.
  const change = { holder: 2, sources: [{ no: 1, low: 0, have: 10 }, { no: 2, low: 5, have: 10 }, { no: 3, low: 0, have: 20 }] }
  const ask = (slot: number, rounds: number): number[] => Array.from({ length: rounds }, (_, turn) => repairSource(change, 9, turn)(slot)!)
  t.same(ask(8, 4), [2, 1, 3, 2], 'a slot all three hold: holder, then the others in turn, then round again')
  t.same(ask(3, 3), [1, 3, 1], 'a slot the holder lacks: only those that cover it')
  t.same(ask(15, 3), [3, 3, 3], 'one source covers it')
  t.same(ask(25, 2), [2, 2], 'nobody reported it: the holder')
  t.same(change.sources.map((s) => s.no), [1, 2, 3], "the commit's list is left as it was")
})

t.test('a NACK lists missing orderings as slot ranges and missing data as message ranges', async (t) => {
  const { repair, hold, order, nacks, counters } = member(10)
  order(11, 2, 5)
  hold(2, 5) // 11: complete
  order(12, 2, 6)
  order(13, 2, 7) // 12, 13: ordered, data missing
  // 14, 15: ordering missing
  order(16, 3, 8) // 16: data missing, another sender (its msgId follows 2's: still a range of its own)
  // 17: void, 18: ordering missing
  order(19, 2, 9)
  hold(2, 9) // 19: complete
  const skip = (s: number): boolean => s === 17
  repair.nack(0, gap(19), skip)
  t.same(nacks(), [], 'slots just known to exist wait NACK_REORDER_MS (their datagrams may come a little apart)')
  repair.nack(NACK_REORDER_MS - 1, gap(19), skip)
  t.same(nacks(), [])
  repair.nack(10, gap(19), skip)
  t.same(nacks(), [{
    to: 9, viewId: 1,
    slots: [{ firstSlot: 14, n: 2 }, { firstSlot: 18, n: 1 }],
    data: [{ sender: 2, firstMsgId: 6, n: 2 }, { sender: 3, firstMsgId: 8, n: 1 }],
  }], 'one NACK to the sequencer: consecutive slots and consecutive msgIds of a sender merged, void slots left out')
  t.equal(counters.nacksSent, 1)
  repair.nack(29, gap(19), skip)
  t.same(nacks(), [], 'not again within nackIntervalMs')
  repair.nack(30, gap(19), skip)
  t.equal(nacks().length, 1, 'again after it, while still blocked')
})

t.test('no NACK for what came within NACK_REORDER_MS, when nothing is missing, or when the source is this member', async (t) => {
  const { host, repair, nacks, order, hold } = member(10)
  repair.nack(0, gap(12), never)
  order(11, 2, 5)
  hold(2, 5)
  host.have = 11
  repair.nack(NACK_REORDER_MS - 1, gap(12), never)
  t.same(nacks(), [], 'slot 11 came in time, slot 12 has not waited long enough')
  repair.nack(NACK_REORDER_MS, gap(12), never)
  t.same(nacks().map((n) => n.slots), [[{ firstSlot: 12, n: 1 }]], 'only what is still missing')
  repair.nack(200, gap(11), never)
  t.same(nacks(), [], 'have is at the top')
  repair.nack(300, gap(20, { sequencer: ME }), never)
  t.same(nacks(), [], 'this member is the sequencer')
  repair.nack(400, gap(20, { sequencer: undefined }), never)
  t.same(nacks(), [], 'nobody to ask')
  repair.nack(500, gap(20), never)
  t.same(nacks().map((n) => n.slots), [[{ firstSlot: 12, n: 9 }]])
})

t.test('a slot asked for is asked again only nackIntervalMs later; slots known later are asked at once, alone', async (t) => {
  const { repair, nacks, order } = member(10)
  repair.nack(0, gap(12), never)
  repair.nack(NACK_REORDER_MS, gap(12), never)
  t.same(nacks().map((n) => n.slots), [[{ firstSlot: 11, n: 2 }]])
  repair.nack(5, gap(15), never)
  repair.nack(5 + NACK_REORDER_MS, gap(15), never)
  t.same(nacks().map((n) => n.slots), [[{ firstSlot: 13, n: 3 }]], 'the new ones only: the answer for 11–12 may be on its way')
  order(12, 2, 5)
  repair.nack(NACK_REORDER_MS + OPTS.nackIntervalMs - 1, gap(15), never)
  t.same(nacks(), [], 'not within nackIntervalMs')
  repair.nack(NACK_REORDER_MS + OPTS.nackIntervalMs, gap(15), never)
  t.same(nacks().map((n) => n.slots), [[{ firstSlot: 11, n: 1 }]], 'then 11 again (12 came)')
  repair.nack(5 + NACK_REORDER_MS + OPTS.nackIntervalMs, gap(15), never)
  t.same(nacks().map((n) => n.slots), [[{ firstSlot: 13, n: 3 }]], 'and 13–15 again, in their own time')
  t.equal(repair.dueAt, Infinity, 'nothing waits')
  repair.nack(30, gap(16), never)
  t.equal(repair.dueAt, 30 + NACK_REORDER_MS, 'slot 16 waits until then')
})

t.test('a NACK looks no further than the next cut, nor than NACK_SCAN slots', async (t) => {
  const { repair, nacks } = member(10)
  repair.nack(0, gap(100, { end: 50 }), never)
  repair.nack(100, gap(100, { end: 50 }), never)
  t.same(nacks().map((n) => n.slots), [[{ firstSlot: 11, n: 40 }]], 'up to the cut of the view to install')
  repair.nack(200, gap(100_000), never)
  t.same(nacks().map((n) => n.slots), [[{ firstSlot: 11, n: 40 }]], 'the slots past the cut wait NACK_REORDER_MS')
  repair.nack(300, gap(100_000), never)
  t.same(nacks().map((n) => n.slots), [[{ firstSlot: 11, n: NACK_SCAN }]])
})

t.test('while installing, slots are asked of the sources that hold them, rotating each round', async (t) => {
  const { repair, nacks } = member(10)
  const change = { holder: 4, sources: [{ no: 4, low: 0, have: 15 }, { no: 5, low: 0, have: 30 }] }
  const g = gap(30, { change, viewId: 7, sequencer: 9 })
  repair.nack(0, g, never)
  repair.nack(100, g, never)
  t.same(nacks(), [
    { to: 4, viewId: 7, slots: [{ firstSlot: 11, n: 5 }], data: [] },
    { to: 5, viewId: 7, slots: [{ firstSlot: 16, n: 15 }], data: [] },
  ], 'the holder for what it has, the other for the rest, each NACK naming the latest view')
  repair.nack(200, g, never)
  t.same(nacks(), [{ to: 5, viewId: 7, slots: [{ firstSlot: 11, n: 20 }], data: [] }], 'the next round asks the next source')
})

t.test('a NACK carries what fits one datagram, slots first', async (t) => {
  const maxDatagram = 200
  const per = nackItemsPerDatagram(maxDatagram)
  const { repair, order, nacks } = member(0, maxDatagram)
  for (let s = 1; s <= 4 * per; s++) if (s % 2 === 0) order(s, 2 + (s % 4), s) // every other slot missing
  repair.nack(0, gap(4 * per), never)
  repair.nack(100, gap(4 * per), never)
  const [n] = nacks()
  t.equal(n!.slots.length, per, 'as many slot ranges as fit')
  t.same(n!.data, [], 'no room left for data')
  t.same(n!.slots[0], { firstSlot: 1, n: 1 })
})

t.test('serving a NACK: ORDER runs per view for the slots held, DATA for the messages held, named by the NACK\'s view', async (t) => {
  const { host, repair, hold, order, out, counters } = member(7)
  for (let s = 1; s <= 3; s++) order(s, 2, s) // view 1: 2's msgIds 1 … 3
  host.log.set(4, VIEW_SENDER, 2, 2) // view 2 starts
  order(5, 3, 1, 2)
  order(6, 3, 2, 2)
  order(7, 2, 4, 2)
  order(8, 2, 5, 2) // above have: not served
  hold(2, 1)
  hold(2, 3, 5)
  const nack = decode(encodeNack({ inc: INC, viewId: 2, sender: 6 }, [{ firstSlot: 1, n: 8 }], [{ sender: 2, firstMsgId: 1, n: 3 }, { sender: 8, firstMsgId: 1, n: 1 }]), INC)
  if (nack.kind !== Kind.NACK) throw new Error('not a NACK')
  repair.serve(nack)
  t.ok(out.every((o) => o.to === 6), 'all to the asker')
  const orders = out.filter((o) => o.d.kind === Kind.ORDER).map((o) => o.d.kind === Kind.ORDER && { viewId: o.d.viewId, firstSlot: o.d.firstSlot, runs: o.d.runs })
  t.same(orders, [
    { viewId: 1, firstSlot: 1, runs: [{ sender: 2, firstMsgId: 1, count: 3 }] },
    { viewId: 2, firstSlot: 5, runs: [{ sender: 3, firstMsgId: 1, count: 2 }, { sender: 2, firstMsgId: 4, count: 1 }] },
  ], 'one ORDER per view, the view slot itself skipped, nothing above have')
  const data = out.filter((o) => o.d.kind === Kind.DATA).map((o) => o.d.kind === Kind.DATA && { viewId: o.d.viewId, sender: o.d.sender, msgIds: o.d.entries.map((e) => e.msgId) })
  t.same(data, [{ viewId: 2, sender: 2, msgIds: [1, 3] }], 'the messages held, named by the NACK\'s view; unknown senders skipped')
  t.equal(counters.retransmitted, 6 + 2)
  t.equal(counters.retransmittedBytes, out.reduce((a, o) => a + o.len, 0), 'retransmittedBytes: every byte of every ORDER and DATA datagram of the answer')
  t.equal(counters.nacksServed, 1)
  const before = counters.retransmittedBytes
  out.splice(0)
  // The asker may not know the view this member works in (or it has none installed): the NACK's view it knows.
  const older = decode(encodeNack({ inc: INC, viewId: 1, sender: 6 }, [], [{ sender: 2, firstMsgId: 1, n: 1 }]), INC)
  if (older.kind !== Kind.NACK) throw new Error('not a NACK')
  repair.serve(older)
  t.equal(counters.retransmittedBytes - before, out.reduce((a, o) => a + o.len, 0), 'and adds up over answers')
  t.same(out.map((o) => o.d.kind === Kind.DATA && o.d.viewId), [1], 'DATA named by that NACK\'s view, 1')
})

t.test('serving a NACK looks at most at NACK_SCAN slots and messages, and sends at most nackReplyBytes', async (t) => {
  const have = 10_000
  const { repair, hold, order, out } = member(have)
  for (let s = 1; s <= have; s++) order(s, 2, s)
  for (let m = 1; m <= 3000; m++) hold(3, m, 1000)
  const ask = (slots: SlotRange[], data: DataRange[]): Datagram => {
    const d = decode(encodeNack({ inc: INC, viewId: 1, sender: 6 }, slots, data), INC)
    if (d.kind !== Kind.NACK) throw new Error('not a NACK')
    return d
  }
  const many = <T>(n: number, x: T): T[] => Array.from({ length: n }, () => x)
  repair.serve(ask(many(3000, { firstSlot: 1, n: 0xffff }), []) as Extract<Datagram, { kind: 4 }>)
  const slots = out.splice(0).reduce((a, o) => a + (o.d.kind === Kind.ORDER ? o.d.runs.reduce((b, r) => b + r.count, 0) : 0), 0)
  t.equal(slots, NACK_SCAN, 'slots: NACK_SCAN, whatever the ranges asked')
  repair.serve(ask([{ firstSlot: have + 1, n: 0xffff }, { firstSlot: 2 ** 48 - 2, n: 0xffff }], []) as Extract<Datagram, { kind: 4 }>)
  t.same(out.splice(0), [], 'slots above have: nothing')
  repair.serve(ask([], many(3000, { sender: 3, firstMsgId: 1, n: 0xffff })) as Extract<Datagram, { kind: 4 }>)
  const bytes = out.splice(0).reduce((a, o) => a + (o.d.kind === Kind.DATA ? o.d.entries.reduce((b, e) => b + e.payload.length, 0) : 0), 0)
  t.ok(bytes <= nackReplyBytes(OPTS.sendWindowBytes) + 1000, `data: ${bytes} bytes, at most the reply budget and one message`)
  t.ok(bytes >= nackReplyBytes(OPTS.sendWindowBytes), 'and the budget is used')
})

t.test('serving: slots of two views never share an ORDER, even with no view slot between them', async (t) => {
  const { repair, order, out } = member(2)
  order(1, 2, 1, 1)
  order(2, 2, 2, 3) // e.g. view 3's slot already freed here
  const nack = decode(encodeNack({ inc: INC, viewId: 3, sender: 6 }, [{ firstSlot: 1, n: 2 }], []), INC)
  if (nack.kind !== Kind.NACK) throw new Error('not a NACK')
  repair.serve(nack)
  t.same(out.map((o) => o.d.kind === Kind.ORDER && [o.d.viewId, o.d.firstSlot, o.d.runs.length]), [[1, 1, 1], [3, 2, 1]])
})

t.test('serving many runs: ORDER datagrams of at most runsPerDatagram runs, each from the right slot', async (t) => {
  const maxDatagram = 120
  const per = runsPerDatagram(maxDatagram)
  const { repair, order, out } = member(3 * per + 1, maxDatagram)
  for (let s = 1; s <= 3 * per + 1; s++) order(s, 2 + (s % 2), s) // alternating senders: one run per slot
  const nack = decode(encodeNack({ inc: INC, viewId: 1, sender: 6 }, [{ firstSlot: 1, n: 3 * per + 1 }], []), INC)
  if (nack.kind !== Kind.NACK) throw new Error('not a NACK')
  repair.serve(nack)
  const orders = out.map((o) => (o.d.kind === Kind.ORDER ? o.d : null)!)
  t.same(orders.map((o) => o.firstSlot), [1, per + 1, 2 * per + 1, 3 * per + 1])
  t.same(orders.map((o) => o.runs.length), [per, per, per, 1])
  t.same(orders.flatMap((o) => o.runs.map((r) => r.firstMsgId)), Array.from({ length: 3 * per + 1 }, (_, i) => i + 1))
})
