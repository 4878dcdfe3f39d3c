/**
 * The directory's part in state transfer (PROTOCOL.md §8.1), frame by frame: the `state` flags of a commit's members
 * (first view, later joins, `ready`, deltas, rejoins after a restart), and the donor every member computes from them
 * (lib/stateview.ts).
 */
import t from 'tap'
import { ErrorCodes } from '../lib/errors.js'
import type { Frame } from '../lib/frame.js'
import { donorOf, needersOf, NO_DONOR } from '../lib/stateview.js'
import { commitDelta } from '../directory/commits.js'
import { commit7, rejoin } from './fixtures/rejoin.js'
import { harness } from './fixtures/dirharness.js'

type Entry = { no: number; id: string; addr: string; state?: string }
const members = (c: Frame | undefined): Entry[] => (c?.members ?? []) as Entry[]
/** Each member's flag by id ('-': none), as a commit or a status lists them. */
const flags = (ms: Entry[]): Record<string, string> => Object.fromEntries(ms.map((m) => [m.id, m.state ?? '-']))
const last = (fs: Frame[]): Frame | undefined => fs[fs.length - 1]

/** a (hooks) founds g; b (hooks) and c (none) join, one view change each, answered: view 3 holds all three. */
function abc() {
  const h = harness()
  h.join(1, 'a', { state: true })
  h.join(2, 'b', { state: true })
  h.flush([1])
  h.join(3, 'c')
  h.flush([1, 2])
  for (const c of [1, 2, 3]) h.core.frame(c, { t: 'installed', group: 'g', viewId: 3 })
  return h
}

t.test('the members of a group\'s first view hold the state; later joiners with hooks need it; no hooks, no flag', async (t) => {
  const h = harness()
  h.join(1, 'a', { state: true })
  const [c1] = h.take(1, 'commit')
  t.same(flags(members(c1)), { a: 'holds' }, 'nothing was delivered before the first view: the empty state is the state')
  h.join(2, 'b', { state: true })
  h.flush([1])
  h.join(3, 'c')
  h.flush([1, 2])
  const c3 = last(h.take(3, 'commit'))
  t.same(flags(members(c3)), { a: 'holds', b: 'needs', c: '-' })
  t.notOk('state' in members(c3)[2]!, 'a member without hooks has no flag at all on the wire')
  t.equal(donorOf(members(c3) as never), 1, 'the donor: the lowest-numbered holder')
  t.same(flags(h.core.status()[0]!.members), { a: 'holds', b: 'needs', c: '-' }, '`status` (dir ls) shows the flags')
  h.core.opened(9)
  h.core.frame(9, { t: 'ls' })
  t.same(flags(h.take(9, 'status')[0]!.groups![0 as never]['members']), { a: 'holds', b: 'needs', c: '-' }, 'a status frame a member reads carries them')
})

t.test('join `state: false` is no hooks; a join whose `state` is not a boolean is refused', async (t) => {
  const h = harness()
  h.join(1, 'a', { state: false })
  t.same(flags(members(h.take(1, 'commit')[0])), { a: '-' })
  h.core.opened(2)
  t.throws(() => h.core.frame(2, { t: 'join', proto: 1, group: 'g', member: 'b', addr: '127.0.0.1:9002', state: 'yes' }), { code: ErrorCodes.FRAME, message: /state must be true or false/ })
})

t.test('ready from a member marked needs: it holds from the next commit on, and no view change starts for it', async (t) => {
  const h = abc()
  for (const c of [1, 2, 3]) h.take(c)
  h.sent.length = 0
  h.core.frame(2, { t: 'ready', group: 'g' })
  t.same(h.sent, [], 'nothing is sent: no prepare, no commit')
  t.same(flags(h.core.status()[0]!.members), { a: 'holds', b: 'holds', c: '-' }, 'dir ls shows it at once')
  h.join(4, 'd', { state: true })
  h.flush([1, 2, 3])
  const delta = h.sent.find((s) => s.conn === 1 && s.f.t === 'commit')!.f
  t.match(delta, { base: 3, removed: [] }, 'a member that has view 3 gets a delta')
  t.same(flags(delta.added as Entry[]), { b: 'holds', d: 'needs' }, 'the delta lists b, whose flag changed, with the new joiner')
  t.same(flags(members(last(h.take(1, 'commit')))), { a: 'holds', b: 'holds', c: '-', d: 'needs' }, 'read whole from the delta')
  t.same(flags(members(last(h.take(4, 'commit')))), { a: 'holds', b: 'holds', c: '-', d: 'needs' }, 'the joiner gets the full list')
})

t.test('a delta lists a member whose flag changed, and only those of the others', async (t) => {
  const e = (no: number, state?: 'holds' | 'needs') => ({ no, id: `m${no}`, addr: `127.0.0.1:${9000 + no}`, ...(state ? { state } : {}) })
  const base = { ...commit7, t: 'commit' as const, transport: 'multicast' as const, members: [e(1, 'holds'), e(2, 'needs'), e(3), e(4, 'needs')] }
  t.same(commitDelta(base, [e(1, 'holds'), e(2, 'holds'), e(3), e(4, 'needs'), e(5, 'needs')]), { base: 7, added: [e(2, 'holds'), e(5, 'needs')], removed: [] })
  t.same(commitDelta(base, [e(1, 'holds'), e(3)]).removed, [2, 4])
})

t.test('ready from anyone not marked needs is ignored: a holder, a member without hooks, a joiner before its commit', async (t) => {
  const h = abc()
  h.join(4, 'd', { state: true }) // waits for the flush: not in a commit yet
  const before = h.sent.length
  for (const c of [1, 3, 4]) h.core.frame(c, { t: 'ready', group: 'g' })
  t.equal(h.sent.length, before, 'nothing sent')
  h.flush([1, 2, 3])
  t.same(flags(members(last(h.take(4, 'commit')))), { a: 'holds', b: 'needs', c: '-', d: 'needs' }, 'no flag moved; d needs the state')
  t.throws(() => h.core.frame(2, { t: 'ready', group: 'h' }), { code: ErrorCodes.BAD_REQUEST, message: /another group/ })
  t.throws(() => h.core.frame(2, { t: 'ready' }), { code: ErrorCodes.FRAME, message: /group/ })
  h.core.opened(9)
  t.throws(() => h.core.frame(9, { t: 'ready', group: 'g' }), { code: ErrorCodes.BAD_REQUEST, message: /before join/ })
})

t.test('every holder gone: the others keep needing, joiners need, the donor is none', async (t) => {
  const h = abc()
  for (const c of [1, 2, 3]) h.take(c)
  h.core.closed(1) // a, the only holder, crashes
  h.join(4, 'd', { state: true })
  h.flush([2, 3])
  const c = last(h.take(4, 'commit'))
  t.same(flags(members(c)), { b: 'needs', c: '-', d: 'needs' })
  t.equal(donorOf(members(c) as never), NO_DONOR, 'nobody can give the state (members that need it fail with ESTATE)')
  t.same(needersOf(members(c) as never), [2, 4])
})

t.test('every member gone while a joiner waits: its view has nobody from before, and it holds the (empty) state', async (t) => {
  const h = abc()
  for (const c of [1, 2, 3]) h.take(c)
  h.join(4, 'd', { state: true })
  for (const c of [1, 2, 3]) h.core.closed(c)
  const c = last(h.take(4, 'commit'))
  t.same(flags(members(c)), { d: 'holds' }, 'nothing of the stream before its view reaches anyone: the empty state is the state')
})

t.test('a directory restart: rejoins carry the flags, the rebuilt group keeps them, ready still works', async (t) => {
  const flagged = { ...commit7, members: [{ ...commit7.members[0]!, state: 'holds' }, { ...commit7.members[1]!, state: 'needs' }] }
  const h = harness()
  for (const [conn, id] of [[1, 'a'], [2, 'b']] as const) {
    h.core.opened(conn)
    h.core.frame(conn, rejoin(id, conn, flagged))
  }
  t.same(flags(h.core.status()[0]!.members), { a: 'holds', b: 'needs' }, 'adopted with the commit')
  h.flush([1, 2])
  t.same(flags(members(last(h.take(2, 'commit')))), { a: 'holds', b: 'needs' }, 'the view change that settles the rebuild keeps them')
  h.core.frame(2, { t: 'ready', group: 'g' })
  h.join(3, 'c', { state: true })
  h.flush([1, 2])
  t.same(flags(members(last(h.take(3, 'commit')))), { a: 'holds', b: 'holds', c: 'needs' })
})

t.test('a restart: a member that sent ready since it rejoined keeps holding when a newer commit adopted says needs', async (t) => {
  const entries = (b: string) => [{ ...commit7.members[0]!, state: 'holds' }, { ...commit7.members[1]!, state: b }]
  const h = harness()
  h.core.opened(2)
  h.core.frame(2, rejoin('b', 2, { ...commit7, members: entries('needs') }))
  h.core.frame(2, { t: 'ready', group: 'g' })
  t.same(flags(h.core.status()[0]!.members), { a: 'holds', b: 'holds' })
  h.core.opened(1)
  h.core.frame(1, rejoin('a', 1, { ...commit7, viewId: 8, cut: 600, start: 601, members: entries('needs') }, 8))
  h.flush([1, 2])
  t.same(flags(members(last(h.take(1, 'commit')))), { a: 'holds', b: 'holds' }, 'view 8 was made before the ready: flags only go from needs to holds')
})

t.test('a rejoin whose flags are not flags is refused; one whose flags differ from the adopted commit of that view too', async (t) => {
  const h = harness()
  h.core.opened(1)
  const odd = { ...commit7, members: [commit7.members[0]!, { ...commit7.members[1]!, state: 'maybe' }] }
  t.throws(() => h.core.frame(1, rejoin('a', 1, odd)), { code: ErrorCodes.BAD_REQUEST, message: /commit\.members\[1\]\.state must be one of holds, needs/ })
  t.throws(() => h.core.frame(1, rejoin('a', 1, { ...odd, members: [commit7.members[0]!, { ...commit7.members[1]!, state: 1 }] })), { code: ErrorCodes.FRAME })
  t.same(h.core.status(), [], 'nothing rebuilt from them')
  h.core.frame(1, rejoin('a', 1, { ...commit7, members: [{ ...commit7.members[0]!, state: 'holds' }, { ...commit7.members[1]!, state: 'needs' }] }))
  h.core.opened(2)
  h.core.frame(2, rejoin('b', 2, { ...commit7, members: [{ ...commit7.members[0]!, state: 'holds' }, { ...commit7.members[1]!, state: 'holds' }] }))
  t.match(h.take(2, 'expelled'), [{ reason: /differs from the one adopted/ }], 'one view, one commit: the flags are part of it')
})

t.test('the donor is the lowest-numbered holder, whatever the order listed; none without one', async (t) => {
  t.equal(donorOf([{ no: 9, state: 'holds' }, { no: 3, state: 'needs' }, { no: 5, state: 'holds' }, { no: 4 }]), 5)
  t.equal(donorOf([{ no: 3, state: 'needs' }, { no: 4 }]), NO_DONOR)
  t.equal(donorOf([]), NO_DONOR)
  t.same(needersOf([{ no: 9, state: 'holds' }, { no: 3, state: 'needs' }, { no: 4 }, { no: 7, state: 'needs' }]), [3, 7])
})
