/**
 * lib/statemember.ts with a fake host: which views a member gives the state at, and when its inbox opens. The
 * real-socket runs are test/state.ts and test/lootbox.ts; these pin down orders of views those hit only sometimes.
 */
import t from 'tap'
import { Inbox } from '../lib/inbox.js'
import type { Delivery } from '../lib/host.js'
import { StateMember } from '../lib/statemember.js'
import { decode } from '../lib/wire.js'

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
  sm = new StateMember(
    {
      snapshot: () => {
        snapshots.push(lastView)
        return Buffer.from('state')
      },
      restore: async () => {},
    },
    {
      me: () => me,
      inc: () => INC,
      now: () => 0,
      maxDatagram: 1400,
      stateTimeoutMs: 10_000,
      send: (to, buf) => sent.push({ to, buf }),
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
  return { sm, deliver, snapshots, sent, ready, handed }
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
