/**
 * lib/inbox.ts: deliveries reach the application in order — through receive(), events or the queue — each seen by
 * `handing` at the moment the application gets it; held while the member waits for state; bounded in bytes.
 */
import t from 'tap'
import { Inbox } from '../lib/inbox.js'
import type { Delivery } from '../lib/host.js'

const msg = (k: number, size = 10): Delivery => ({ type: 'message', seq: k, sender: 'a', data: Buffer.alloc(size, k) } as unknown as Delivery)
const view = (viewId: number): Delivery => ({ type: 'view', viewId, members: ['a'], sequencer: 'a' } as unknown as Delivery)
const name = (d: Delivery): string => (d.type === 'view' ? `v${(d as { viewId: number }).viewId}` : `m${(d as { seq: number }).seq}`)

function inbox(max = 1000) {
  const handed: string[] = []
  const emitted: string[] = []
  let listening = false
  let rooms = 0
  const ib = new Inbox({
    maxQueuedBytes: max,
    listening: () => listening,
    emit: (d) => emitted.push(name(d)),
    handing: (d) => handed.push(name(d)),
    room: () => rooms++,
  })
  return { ib, handed, emitted, listen: () => (listening = true), rooms: () => rooms }
}

t.test('queued, then taken in order; handing sees each as it is taken', async (t) => {
  const h = inbox()
  h.ib.push(view(1))
  h.ib.push(msg(1))
  t.same(h.handed, [], 'nothing handed while queued')
  t.equal(name(h.ib.take()!), 'v1')
  t.same(h.handed, ['v1'])
  const got: string[] = []
  h.ib.take()
  h.ib.wait({ resolve: (d) => got.push(d ? name(d) : 'null'), reject: () => {} })
  h.ib.push(msg(2))
  t.same(got, ['m2'], 'a waiting receive gets the next at once')
  t.same(h.handed, ['v1', 'm1', 'm2'])
})

t.test('listeners added while deliveries are queued get those first, in order', async (t) => {
  const h = inbox()
  h.ib.push(msg(1))
  h.ib.push(msg(2))
  h.listen()
  h.ib.push(msg(3))
  t.same(h.emitted, ['m1', 'm2', 'm3'])
  t.equal(h.ib.length, 0)
})

t.test('holding: nothing reaches the application until release; dropUntil moves the start', async (t) => {
  const h = inbox()
  h.listen()
  h.ib.hold()
  for (const d of [view(3), msg(1), msg(2), view(4), msg(3)]) h.ib.push(d)
  t.same(h.emitted, [], 'held')
  t.equal(h.ib.take(), undefined, 'receive gets nothing while held')
  h.ib.dropUntil((d) => d.type === 'view' && (d as { viewId: number }).viewId === 4)
  h.ib.release()
  t.same(h.emitted, ['v4', 'm3'], 'from the new state point on')
  t.same(h.handed, ['v4', 'm3'])
})

t.test('dropUntil a view not delivered yet: what is held and what comes before it is dropped, and makes room', async (t) => {
  const h = inbox(300)
  h.listen()
  h.ib.hold()
  for (const d of [view(3), msg(1, 100), msg(2, 100)]) h.ib.push(d)
  t.notOk(h.ib.hasRoom(), 'full')
  h.ib.dropUntil((d) => d.type === 'view' && (d as { viewId: number }).viewId === 5)
  t.equal(h.rooms(), 1, 'room again')
  for (const d of [msg(3, 100), msg(4, 100), view(4), msg(5, 100), view(5), msg(6)]) h.ib.push(d)
  t.equal(h.ib.length, 2, 'only view 5 and what follows are held')
  h.ib.release()
  t.same(h.emitted, ['v5', 'm6'])
})

t.test('bounded: full at maxQueuedBytes, room again once taken below it', async (t) => {
  const h = inbox(300)
  h.ib.push(msg(1, 100))
  t.ok(h.ib.hasRoom())
  h.ib.push(msg(2, 100))
  t.notOk(h.ib.hasRoom(), `full at ${h.ib.bytes} bytes`)
  h.ib.take()
  t.ok(h.ib.hasRoom())
  t.equal(h.rooms(), 1, 'room reported once')
})

t.test('close: waiting receives get null, or the error', async (t) => {
  const h = inbox()
  const got: unknown[] = []
  h.ib.wait({ resolve: (d) => got.push(d), reject: (e) => got.push(e.message) })
  h.ib.close(null)
  h.ib.wait({ resolve: (d) => got.push(d), reject: (e) => got.push(e.message) })
  h.ib.close(new Error('failed'))
  t.same(got, [null, 'failed'])
})
