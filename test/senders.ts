/**
 * The messages a member holds per sender (lib/senders.ts) alone: what is stored, what counts as a duplicate or is
 * dropped, and what is freed or forgotten.
 */
import t from 'tap'
import { Senders } from '../lib/senders.js'
import { MessageStore } from '../lib/msgstore.js'
import type { DataEntry } from '../lib/wire.js'

const entry = (msgId: number, text = `m${msgId}`): DataEntry => ({ msgId, first: true, more: false, payload: Buffer.from(text) })
const stats = () => ({ duplicates: 0, dropped: 0 })

t.test('DATA is stored per sender; held or already ordered messages are duplicates', async (t) => {
  const st = stats()
  const s = new Senders(64, st)
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

t.test('a sender holds at most twice a send window plus one message\'s fragments; the rest is dropped', async (t) => {
  const st = stats()
  const s = new Senders(1, st) // limit 2 + 0xffff
  const limit = 2 + 0xffff
  s.store(1, Array.from({ length: limit + 3 }, (_, i) => entry(i + 1, '')))
  t.equal(s.get(1)!.store.size, limit)
  t.same(st, { duplicates: 0, dropped: 3 })
})

t.test('freeing a message gives its length, or -1 when it is not held', async (t) => {
  const s = new Senders(64, stats())
  s.store(2, [entry(1, 'abc')])
  t.equal(s.free(2, 1), 3)
  t.equal(s.free(2, 1), -1, 'freed already')
  t.equal(s.free(9, 1), -1, 'a sender never heard')
})

t.test('senders gone from the view lose what is not ordered; kept senders keep all', async (t) => {
  const s = new Senders(64, stats())
  for (const no of [1, 2]) {
    s.store(no, [entry(1), entry(2), entry(3)])
    s.get(no)!.ordered = 1
  }
  s.dropUnordered((no) => no === 1)
  t.same([1, 2, 3].map((m) => s.get(1)!.store.has(m)), [true, true, true])
  t.same([1, 2, 3].map((m) => s.get(2)!.store.has(m)), [true, false, false], 'msgId 1 is ordered: it is still delivered')
})

t.test('a number given to a new member forgets everything of the old one', async (t) => {
  const s = new Senders(64, stats())
  s.store(5, [entry(1)])
  s.get(5)!.ordered = 1
  t.equal(s.forget(5), true)
  t.equal(s.get(5), undefined)
  t.equal(s.forget(5), false, 'nothing held')
  s.store(5, [entry(1)])
  t.equal(s.get(5)!.store.has(1), true, 'the newcomer\'s msgId 1 is not a duplicate')
})

t.test('this member\'s own sender state is the one it is given, filed once', async (t) => {
  const s = new Senders(64, stats())
  const own = { store: new MessageStore(), ordered: 0 }
  s.own(7, own)
  s.own(7, own)
  t.equal(s.get(7), own)
})
