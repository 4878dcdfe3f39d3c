/**
 * lib/statemember.ts with a fake host: which views a member gives the state at, and when its inbox opens. The
 * real-socket runs are test/state.ts and test/lootbox.ts; these pin down orders of views those hit only sometimes.
 */
import t from 'tap'
import { Inbox } from '../lib/inbox.js'
import type { Delivery } from '../lib/host.js'
import { StateMember } from '../lib/statemember.js'
import { decode, encodeState, encodeStateNone, type StateData, type StateReq } from '../lib/wire.js'

const INC = { hi: 1, lo: 2 }
const view = (viewId: number): Extract<Delivery, { type: 'view' }> =>
  ({ type: 'view', group: 'g', viewId, members: [], sequencer: 'a', seq: viewId } as unknown as Extract<Delivery, { type: 'view' }>)

/** Member `me` with hooks; `views` says who gives and who needs the state in each view. */
function member(me: number, views: Record<number, { donor: number; needs: number[]; members: number[] }>) {
  const snapshots: number[] = []
  const sent: Array<{ to: number; buf: Buffer }> = []
  const ready: boolean[] = []
  const handed: string[] = []
  let sm!: StateMember
  const inbox = new Inbox({
    maxQueuedBytes: 1 << 20,
    listening: () => true,
    emit: (d) => handed.push(d.type === 'view' ? `v${d.viewId}` : 'm'),
    handing: (d) => sm.handing(d),
    room: () => {},
  })
  let lastView = 0
  let restores = 0
  sm = new StateMember(
    {
      snapshot: () => {
        snapshots.push(lastView)
        return Buffer.from('state')
      },
      restore: async (chunks) => {
        restores++
        for await (const _ of chunks) void _
      },
    },
    {
      me: () => me,
      inc: () => INC,
      now: () => 0,
      maxDatagram: 1400,
      stateTimeoutMs: 10_000,
      send: (to, buf) => sent.push({ to, buf }),
      installed: () => lastView || undefined,
      stateOf: (viewId) => views[viewId],
      inbox,
      ready: (sendReady) => ready.push(sendReady),
      fail: (err) => t.fail(`failed: ${err.message}`),
      log: () => {},
    },
  )
  const deliver = (viewId: number): void => {
    lastView = viewId
    const d = view(viewId)
    sm.view(d)
    inbox.push(d)
  }
  /** STATEREQs sent so far, decoded. */
  const requests = (): StateReq[] => sent.map((x) => decode(x.buf, INC) as StateReq)
  return { sm, deliver, snapshots, sent, ready, handed, requests, restores: () => restores }
}

t.test('a first member whose first view already adds joiners gives them the state at that view', async (t) => {
  // Its join view was superseded before it installed it (a prepare came after the commit): the first view it
  // delivers is the one that adds two joiners, where it is the only holder.
  const m = member(1, { 2: { donor: 1, needs: [2, 3], members: [1, 2, 3] } })
  m.deliver(2)
  t.same(m.ready, [false], 'ready at once, as a first member (no state to wait for)')
  t.same(m.handed, ['v2'], 'its application has the view')
  t.same(m.snapshots, [2], 'the snapshot is taken at that view, for its joiners')
  t.equal(m.sm.phase, 'ready')
})

t.test('a first member that saw its own view first gives the state at the next', async (t) => {
  const m = member(1, {
    1: { donor: 1, needs: [], members: [1] },
    2: { donor: 1, needs: [2], members: [1, 2] },
  })
  m.deliver(1)
  m.deliver(2)
  t.same(m.snapshots, [2])
  t.same(m.ready, [false])
})

t.test('a joiner is not a donor of the view it needs the state at', async (t) => {
  const m = member(2, { 2: { donor: 1, needs: [2], members: [1, 2] } })
  m.deliver(2)
  t.same(m.snapshots, [], 'no snapshot')
  t.same(m.handed, [], 'held until restored')
  t.equal(m.sm.phase, 'pulling')
  t.ok(m.sent.length > 0 && m.sent.every((s) => s.to === 1 && (decode(s.buf, INC) as { kind?: number }).kind === 5), 'it asks the donor')
})

t.test('a joiner its donor answers NONE moves to the snapshot the same donor takes at a later view', async (t) => {
  // The donor's snapshot() threw at view 2 (or it forgot the joiner): it holds nothing for it there. At view 3,
  // where it is the donor again and the joiner still needs the state, it takes a snapshot for it.
  const m = member(2, {
    2: { donor: 1, needs: [2], members: [1, 2] },
    3: { donor: 1, needs: [2, 3], members: [1, 2, 3] },
  })
  m.deliver(2)
  t.ok(m.requests().every((r) => r.viewId === 2), 'it asks for the snapshot of view 2')
  m.sm.datagram(decode(encodeStateNone({ inc: INC, viewId: 2, sender: 1 }), INC) as StateData)
  m.deliver(3)
  t.ok(m.requests().some((r) => r.viewId === 3), 'then for the snapshot of view 3, from the same donor')
  t.equal(m.restores(), 2, 'restore is called again for the new state point')
  m.sm.datagram(decode(encodeState({ inc: INC, viewId: 3, sender: 1 }, 0, true, [Buffer.from('state')]), INC) as StateData)
  await new Promise((r) => setTimeout(r, 10))
  t.equal(m.sm.phase, 'ready', 'restored from the snapshot of view 3')
  t.same(m.handed, ['v3'], 'its first delivery is view 3, the state point')
})

t.test('a joiner whose donor is sending goes on at a later view with the same donor', async (t) => {
  const m = member(2, {
    2: { donor: 1, needs: [2], members: [1, 2] },
    3: { donor: 1, needs: [2, 3], members: [1, 2, 3] },
  })
  m.deliver(2)
  // A NONE first (the donor's application had not taken view 2 yet), then bytes: the transfer is under way.
  m.sm.datagram(decode(encodeStateNone({ inc: INC, viewId: 2, sender: 1 }), INC) as StateData)
  m.sm.datagram(decode(encodeState({ inc: INC, viewId: 2, sender: 1 }, 0, false, [Buffer.from('sta')]), INC) as StateData)
  m.deliver(3)
  t.ok(m.requests().every((r) => r.viewId === 2), 'still the snapshot of view 2')
  t.equal(m.restores(), 1)
  m.sm.datagram(decode(encodeState({ inc: INC, viewId: 2, sender: 1 }, 3, true, [Buffer.from('te')]), INC) as StateData)
  await new Promise((r) => setTimeout(r, 10))
  t.equal(m.sm.phase, 'ready')
  t.same(m.handed, ['v2', 'v3'], 'view 2 first (the state point), then view 3')
})
