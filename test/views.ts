/**
 * The views a member knows (lib/views.ts) alone: a commit's view, the lists a view moves through (committed,
 * installed, delivered, forgotten), and who is in each view and where.
 */
import t from 'tap'
import { viewOf, Views, type ViewRec } from '../lib/views.js'
import type { CommitFrame } from '../lib/dirproto.js'

/** A commit of view `viewId` with members numbered `nos` (member n at 10.0.0.n:<viewId>), ending the last at `cut`. */
function commit(viewId: number, nos: number[], cut: number, start = cut + 1): CommitFrame {
  return {
    t: 'commit', group: 'g', viewId, inc: '0000000100000001', mcast: '239.255.0.1:46100', transport: 'multicast',
    members: nos.map((no) => ({ no, id: `m${no}`, addr: `10.0.0.${no}:${viewId}` })), sequencer: nos[0] ?? 0, cut, start,
    holder: nos[0] ?? 0, sources: [{ no: nos[0] ?? 0, low: 0, have: cut }], nextNo: Math.max(0, ...nos) + 1,
  }
}

/** Views with view 1 (members 1, 2; slots from 1) committed and installed. */
function installed(): { views: Views; v1: ViewRec } {
  const views = new Views()
  const v1 = viewOf(commit(1, [1, 2], 0), 1)
  views.add(v1)
  views.install(v1)
  return { views, v1 }
}

t.test('a commit\'s view: its members by number, and whether it leaves this member out', async (t) => {
  const f = commit(3, [2, 5], 40, 45)
  const v = viewOf(f, 5)
  t.match(v, { viewId: 3, sequencer: 2, cut: 40, start: 45, holder: 2, transport: 'multicast', excluded: false })
  t.same(v.members, [{ no: 2, id: 'm2', addr: '10.0.0.2:3' }, { no: 5, id: 'm5', addr: '10.0.0.5:3' }])
  t.equal(v.byNo.get(5), v.members[1])
  t.equal(v.sources, f.sources)
  t.equal(viewOf(f, 7).excluded, true, 'a member the commit does not list is excluded: it is leaving')
})

t.test('a view moves from committed to current when reached, and to delivered when its boundary is passed', async (t) => {
  const views = new Views()
  t.equal(views.none, true, 'nothing committed: joining')
  const v1 = viewOf(commit(1, [1], 0), 1)
  t.equal(views.add(v1), undefined, 'no view before the first')
  t.equal(views.none, false)
  t.equal(views.next, v1)
  t.equal(views.latest, v1)
  t.equal(views.current, null)
  t.equal(views.install(v1), true, 'no later view committed: it becomes current')
  t.equal(views.current, v1)
  t.equal(views.next, undefined)
  t.equal(views.toDeliver, v1, 'its boundary waits for delivery')
  views.delivered()
  t.equal(views.toDeliver, undefined)
})

t.test('views committed one after another are installed in order; only the last becomes current', async (t) => {
  const { views, v1 } = installed()
  views.delivered()
  const v2 = viewOf(commit(2, [1, 2, 3], 10), 1)
  const v3 = viewOf(commit(3, [1, 3], 20), 1)
  t.equal(views.add(v2), v1)
  t.equal(views.add(v3), v2)
  t.equal(views.next, v2)
  t.equal(views.latest, v3)
  t.equal(views.install(v2), false, 'a later view is committed already: v2 is passed through')
  t.equal(views.current, v1, 'the member still works in v1')
  t.equal(views.install(v3), true)
  t.equal(views.current, v3)
  t.equal(views.toDeliver, v2, 'both boundaries are delivered, in order')
  views.delivered()
  t.equal(views.toDeliver, v3)
})

t.test('a commit forgets every view that starts above its cut: one that was committed and never reached', async (t) => {
  const { views, v1 } = installed()
  const v2 = viewOf(commit(2, [1, 2, 3], 30), 1)
  views.add(v2)
  // The flush of v2 was abandoned; v3 cuts at 20, below v2's start: v2 never existed for anyone.
  const v3 = viewOf(commit(3, [1, 2], 20), 1)
  t.equal(views.add(v3), v1, 'the latest view kept before it')
  t.equal(views.byId(2), undefined)
  t.equal(views.next, v3)
  t.equal(views.latest, v3)
  t.equal(views.endOf(v1), 20, 'v1 owns slots up to the new cut')
})

t.test('a view owns the slots up to the next known view\'s cut; the latest is unbounded', async (t) => {
  const { views, v1 } = installed()
  const v2 = viewOf(commit(2, [1, 2], 12, 15), 1)
  views.add(v2)
  t.equal(views.endOf(v1), 12)
  t.equal(views.endOf(v2), Infinity)
  t.equal(views.endOf(viewOf(commit(9, [1], 0), 1)), Infinity, 'a view not known')
  t.equal(views.byId(1), v1)
  t.equal(views.byId(2), v2)
  t.equal(views.byId(4), undefined)
})

t.test('views are forgotten once their slots are freed, the latest never', async (t) => {
  const { views, v1 } = installed()
  const v2 = viewOf(commit(2, [1, 2], 12, 15), 1)
  views.add(v2)
  views.freed(14)
  t.equal(views.byId(1), v1, 'v2 starts at 15: v1 may still own slots in the log')
  views.freed(15)
  t.equal(views.byId(1), undefined)
  t.equal(views.byId(2), v2)
  views.freed(1000)
  t.equal(views.byId(2), v2, 'the latest view stays')
})

t.test('a member\'s address is the latest known view\'s; one gone from it is still found in an older view', async (t) => {
  const { views } = installed()
  views.add(viewOf(commit(2, [1, 3], 12), 1))
  t.equal(views.addrOf(1), '10.0.0.1:2', 'member 1 is in both: the latest address')
  t.equal(views.addrOf(2), '10.0.0.2:1', 'member 2 left: its address in view 1 (it may still serve repairs)')
  t.equal(views.addrOf(3), '10.0.0.3:2')
  t.equal(views.addrOf(4), undefined)
  views.freed(13)
  t.equal(views.addrOf(2), undefined, 'view 1 forgotten: so is member 2')
})

t.test('member numbers and ids stay known for good, even when their views are forgotten', async (t) => {
  const { views } = installed()
  views.add(viewOf(commit(2, [1, 3], 12), 1))
  views.freed(100)
  t.equal(views.knows(2), true)
  t.equal(views.nameOf(2), 'm2')
  t.equal(views.nameOf(3), 'm3')
  t.equal(views.knows(4), false)
  t.equal(views.nameOf(4), undefined)
})

t.test('a leaver: excluded by a committed view, or by the current one', async (t) => {
  const { views } = installed()
  t.equal(views.excludesMe, false)
  const v2 = viewOf(commit(2, [2], 12), 1)
  views.add(v2)
  t.equal(views.excludesMe, true, 'committed, not yet installed')
  views.install(v2)
  t.equal(views.current, v2)
  t.equal(views.excludesMe, true, 'installed')
})

t.test('the highest view id seen only grows', async (t) => {
  const views = new Views()
  views.saw(4)
  views.saw(2)
  t.equal(views.seenViewId, 4)
  views.saw(5)
  t.equal(views.seenViewId, 5)
})

t.test('who sent a datagram: the member an address was given to, the latest holder; anyone else is a stranger', async (t) => {
  const views = new Views()
  views.add(viewOf(commit(1, [1, 2], 0), 1))
  t.equal(views.noAt('10.0.0.2:1'), 2)
  t.equal(views.noAt('10.0.0.2:2'), -1, 'a port no view gives: a stranger')
  t.equal(views.noAt('10.0.0.9:1'), -1, 'an address no view gives')
  // Member 3 gets the address member 2 had (the operating system reuses ports): datagrams from it are 3's.
  const f = commit(2, [1, 3], 5)
  f.members[1]!.addr = '10.0.0.2:1'
  views.add(viewOf(f, 1))
  t.equal(views.noAt('10.0.0.2:1'), 3)
})

t.test('state transfer per known view: each member\'s flag, the donor and who needs the state (PROTOCOL.md §8.1)', async (t) => {
  const views = new Views()
  const f1 = commit(1, [1, 2, 3], 0)
  f1.members[1]!.state = 'holds'
  f1.members[2]!.state = 'needs'
  views.add(viewOf(f1, 1))
  t.match(views.stateOf(1), { donor: 2, needs: [3] }, 'member 1 has no hooks: member 2 is the lowest holder')
  t.equal(views.byId(1)!.byNo.get(3)!.state, 'needs')
  t.notOk('state' in views.byId(1)!.byNo.get(1)!, 'no hooks, no flag')
  // Member 2 left; member 3 became ready: view 2's donor is 3, and nobody needs anything.
  const f2 = commit(2, [1, 3, 4], 10)
  f2.members[1]!.state = 'holds'
  f2.members[2]!.state = 'needs'
  views.add(viewOf(f2, 1))
  t.match(views.stateOf(2), { donor: 3, needs: [4] })
  t.match(views.stateOf(1), { donor: 2, needs: [3] }, 'view 1 as its commit said')
  t.same(viewOf(commit(3, [1], 0), 1).members.map((m) => m.state), [undefined])
  const v3 = commit(3, [4], 20)
  v3.members[0]!.state = 'needs'
  views.add(viewOf(v3, 4))
  t.match(views.stateOf(3), { donor: 0, needs: [4] }, 'no holder: no donor (NO_DONOR)')
  t.equal(views.stateOf(9), undefined, 'a view this member does not know')
})
