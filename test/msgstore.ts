import t from 'tap'
import { MessageStore } from '../lib/msgstore.js'
import { rng } from './fixtures/sim-rng.js'

const bytes = (id: number, n = 5): Buffer => Buffer.alloc(n, id & 0xff)

t.test('holds payloads as views of the given memory, and frees them', async (t) => {
  const s = new MessageStore()
  const datagram = Buffer.from('..hello..world')
  t.ok(s.set(1, true, true, datagram.subarray(2, 7)))
  t.ok(s.set(2, false, false, datagram.subarray(9, 14)))
  t.equal(s.size, 2)
  t.equal(s.payload(1).toString(), 'hello')
  t.equal(s.payload(2).toString(), 'world')
  t.equal(s.payload(1).buffer, datagram.buffer, 'no copy')
  const mine = s.copy(1)
  mine.fill(0x58)
  t.equal(s.payload(1).toString(), 'hello', 'a copy is independent of what the store holds')
  t.ok(s.hasMore(1))
  t.notOk(s.hasMore(2))
  t.ok(s.isFirst(1), "a first fragment starts its message")
  t.notOk(s.isFirst(2), "a last fragment does not")
  t.equal(s.length(2), 5)
  t.equal(s.delete(1), 5)
  t.equal(s.delete(1), -1, 'already freed')
  t.notOk(s.has(1))
  t.equal(s.length(1), -1)
  t.equal(s.size, 1)
  t.notOk(s.has(0), 'msgId 0 is never held, not even in an empty cell')
  t.notOk(s.set(0, true, false, bytes(0)))
})

t.test('msgIds that share a cell grow the ring instead of overwriting each other', async (t) => {
  const s = new MessageStore()
  // 256 apart: the same cell of the initial ring.
  for (const id of [1, 257, 513, 100_001]) t.ok(s.set(id, true, false, bytes(id)))
  for (const id of [1, 257, 513, 100_001]) t.same(s.payload(id), bytes(id), `msgId ${id} intact`)
  t.equal(s.size, 4)
})

t.test('a sliding window of live msgIds, as a sender produces them, against a Map', async (t) => {
  const s = new MessageStore()
  const ref = new Map<number, Buffer>()
  const r = rng(7)
  let next = 1
  let oldest = 1
  let wrong = 0
  for (let step = 0; step < 200_000; step++) {
    if (r() < 0.55 && next - oldest < 3000) {
      const id = next++
      if (r() < 0.9) { // some msgIds never arrive
        s.set(id, true, (id & 3) === 0, bytes(id, 1 + (id % 40)))
        ref.set(id, bytes(id, 1 + (id % 40)))
      }
    } else if (oldest < next) {
      const id = oldest++
      if (s.delete(id) !== (ref.has(id) ? ref.get(id)!.length : -1)) wrong++
      ref.delete(id)
    }
  }
  t.equal(s.size, ref.size)
  for (const [id, b] of ref) if (!s.payload(id).equals(b) || s.hasMore(id) !== ((id & 3) === 0)) wrong++
  t.equal(wrong, 0, 'every delete freed what was held, every held message intact')
})

t.test('deleteBelow and deleteAbove free exactly their side', async (t) => {
  const s = new MessageStore()
  for (let id = 10; id < 20; id++) s.set(id, true, false, bytes(id))
  s.deleteBelow(13)
  s.deleteAbove(16)
  t.same([...Array(30).keys()].filter((id) => s.has(id)), [13, 14, 15, 16])
  t.equal(s.size, 4)
})

t.test('a msgId no honest sender could have yet is refused, not grown for', async (t) => {
  const s = new MessageStore()
  t.ok(s.set(1, true, false, bytes(1)))
  t.notOk(s.set(1 + 2 ** 17, true, false, bytes(2)), 'collides at the largest ring')
  t.ok(s.has(1), 'the held message is kept')
  t.equal(s.size, 1)
})
