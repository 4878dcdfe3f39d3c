/**
 * The messages a member holds per sender (lib/senders.ts) alone: what is stored, what counts as a duplicate or is
 * dropped, and what is freed or forgotten.
 */
import t from 'tap'
import { MSGID_WINDOW, Senders } from '../lib/senders.js'
import { ENTRY_COST, MessageStore } from '../lib/msgstore.js'
import type { DataEntry } from '../lib/wire.js'

const entry = (msgId: number, text = `m${msgId}`): DataEntry => ({ msgId, first: true, more: false, payload: Buffer.from(text) })
const stats = () => ({ duplicates: 0, dropped: 0 })

t.test('DATA is stored per sender; held or already ordered messages are duplicates', async (t) => {
  const st = stats()
  const s = new Senders(1 << 20, st)
  t.equal(s.get(3), undefined)
  s.store(3, [entry(1), entry(2)])
  s.store(4, [entry(1, 'other')])
  t.equal(s.get(3)!.store.payload(2).toString(), 'm2')
  t.equal(s.get(4)!.store.payload(1).toString(), 'other')
  s.store(3, [entry(2), entry(3)])
  t.same(st, { duplicates: 1, dropped: 0 })
  s.get(3)!.ordered = 5
  s.store(3, [entry(4), entry(5), entry(6)])
  t.same(st, { duplicates: 3, dropped: 0 }, 'msgIds up to `ordered` were delivered already')
  t.equal(s.get(3)!.store.has(6), true)
})

t.test('above what is ordered, a sender holds at most `bound` bytes; the message needed next always gets in', async (t) => {
  const st = stats()
  const bound = 10 * (100 + ENTRY_COST)
  const s = new Senders(bound, st)
  const big = (msgId: number): DataEntry => ({ msgId, first: true, more: false, payload: Buffer.alloc(100, msgId) })
  s.store(1, Array.from({ length: 15 }, (_, i) => big(100 + i)))
  t.equal(s.get(1)!.store.size, 10, 'ten fit')
  t.same(st, { duplicates: 0, dropped: 5 })
  s.store(1, [big(5)], 7)
  t.equal(s.get(1)!.store.has(5), false, 'a message not needed next does not get in')
  s.store(1, [big(7)], 7)
  t.equal(s.get(1)!.store.has(7), true, 'the one needed next does')
  t.equal(s.get(1)!.store.size, 1, 'pushing out what was held above it')
  t.equal(s.get(1)!.store.cost, 100 + ENTRY_COST)
})

t.test('what is ordered no longer counts to the bound, and is freed with its cost', async (t) => {
  const s = new Senders(2 * (3 + ENTRY_COST), stats())
  s.store(1, [entry(1, 'abc'), entry(2, 'def')])
  const st = s.get(1)!
  Senders.ordered(st, 1, 3)
  Senders.ordered(st, 2, 3)
  s.store(1, [entry(3, 'ghi'), entry(4, 'jkl')])
  t.equal(st.store.size, 4, 'two ordered, two above')
  t.equal(s.free(1, 1), 3)
  t.equal(st.orderedCost, 3 + ENTRY_COST)
})

t.test('once anything of a sender is ordered, a msgId more than MSGID_WINDOW past it is dropped', async (t) => {
  const st = stats()
  const s = new Senders(1 << 20, st)
  s.store(1, [entry(1)])
  Senders.ordered(s.get(1)!, 1, 2)
  s.store(1, [entry(1 + MSGID_WINDOW), entry(2 + MSGID_WINDOW)])
  t.equal(s.get(1)!.store.has(1 + MSGID_WINDOW), true)
  t.same(st, { duplicates: 0, dropped: 1 })
})

t.test('a message kept from a datagram mostly not kept is copied out of it', async (t) => {
  const s = new Senders(1 << 20, stats())
  s.store(1, [entry(1)])
  const datagram = Buffer.alloc(1000, 0x41)
  const entries = [1, 2].map((msgId, i) => ({ msgId, first: true, more: false, payload: datagram.subarray(i * 500, i * 500 + (i ? 10 : 490)) }))
  s.store(1, entries)
  t.not(s.get(1)!.store.payload(2).buffer, datagram.buffer, 'msgId 2 (10 of 1 000 bytes) holds a copy')
  t.equal(s.get(1)!.store.payload(2).toString(), 'A'.repeat(10))
  const whole = Buffer.alloc(100, 0x42)
  s.store(1, [{ msgId: 3, first: true, more: false, payload: whole.subarray(0, 90) }])
  t.equal(s.get(1)!.store.payload(3).buffer, whole.buffer, 'a datagram kept whole is not copied')
})

t.test('freeing a message gives its length, or -1 when it is not held', async (t) => {
  const s = new Senders(1 << 20, stats())
  s.store(2, [entry(1, 'abc')])
  t.equal(s.free(2, 1), 3)
  t.equal(s.free(2, 1), -1, 'freed already')
  t.equal(s.free(9, 1), -1, 'a sender never heard')
})

t.test('senders gone from the view lose what is not ordered; kept senders keep all', async (t) => {
  const s = new Senders(1 << 20, stats())
  for (const no of [1, 2]) {
    s.store(no, [entry(1), entry(2), entry(3)])
    s.get(no)!.ordered = 1
  }
  s.dropUnordered((no) => no === 1)
  t.same([1, 2, 3].map((m) => s.get(1)!.store.has(m)), [true, true, true])
  t.same([1, 2, 3].map((m) => s.get(2)!.store.has(m)), [true, false, false], 'msgId 1 is ordered: it is still delivered')
})

t.test('a number given to a new member forgets everything of the old one', async (t) => {
  const s = new Senders(1 << 20, stats())
  s.store(5, [entry(1)])
  s.get(5)!.ordered = 1
  t.equal(s.forget(5), true)
  t.equal(s.get(5), undefined)
  t.equal(s.forget(5), false, 'nothing held')
  s.store(5, [entry(1)])
  t.equal(s.get(5)!.store.has(1), true, 'the newcomer\'s msgId 1 is not a duplicate')
})

t.test('this member\'s own sender state is the one it is given, filed once', async (t) => {
  const s = new Senders(1 << 20, stats())
  const own = { store: new MessageStore(), ordered: 0, orderedCost: 0 }
  s.own(7, own)
  s.own(7, own)
  t.equal(s.get(7), own)
})
