/**
 * The directory: the core's view-change state machine frame by frame, malformed input over real TCP (closes only
 * that connection), and the `dir` CLI.
 */
import t from 'tap'
import createDebug from 'debug'
import net from 'node:net'
import { format } from 'node:util'
import { spawn, spawnSync } from 'node:child_process'
import { DirectoryCore, DEFAULT_DIRECTORY_OPTIONS, SEQ_WINDOW } from '../directory/core.js'
import { DirectoryServer, queryStatus } from '../directory/server.js'
import { encodeFrame, FrameDecoder, type Frame } from '../lib/frame.js'
import { ErrorCodes, errorFromCode } from '../lib/errors.js'
import { DIR_CLI, freePort } from './fixtures/procs.js'
import { commit7, INC, rejoin } from './fixtures/rejoin.js'
import { harness } from './fixtures/dirharness.js'

t.test('first member: welcome and a commit with itself as sequencer', async (t) => {
  const h = harness()
  h.join(1, 'a')
  const [welcome, commit] = h.take(1)
  t.match(welcome, { t: 'welcome', no: 1, heartbeatMs: 500, timeoutMs: 2000 })
  t.match(commit, { t: 'commit', viewId: 1, sequencer: 1, cut: 0, start: 1, members: [{ no: 1, id: 'a' }], mcast: '239.255.0.1:46100' })
})

t.test('second member: prepare to the first, commit to both with cut, start, holder, sources', async (t) => {
  const h = harness()
  h.join(1, 'a')
  h.take(1)
  h.join(2, 'b')
  t.match(h.take(1, 'prepare'), [{ viewId: 2 }])
  t.same(h.take(2, 'commit'), [], 'no commit before the flush answers')
  h.core.frame(1, { t: 'prepared', group: 'g', viewId: 2, have: 41, low: 0 })
  const [c] = h.take(2, 'commit')
  t.match(c, { viewId: 2, cut: 41, start: 42, holder: 1, sequencer: 1, members: [{ id: 'a' }, { id: 'b' }], sources: [{ no: 1, have: 41, low: 0 }] })
  t.match(h.take(1, 'commit'), [{ viewId: 2 }])
})

t.test('duplicate member id is refused with EDUPLICATE_MEMBER and the connection closed', async (t) => {
  const h = harness()
  h.join(1, 'a')
  h.join(2, 'a')
  t.match(h.take(2, 'error'), [{ code: ErrorCodes.DUPLICATE_MEMBER }])
  t.same(h.closed, [2])
})

t.test('the sequencer crashes: the new view starts SEQ_WINDOW past the cut', async (t) => {
  const h = harness()
  h.three()
  h.take(2)
  h.core.closed(1)
  const [p] = h.take(2, 'prepare')
  h.core.frame(2, { t: 'prepared', group: 'g', viewId: p!.viewId, have: 10, low: 0 })
  h.core.frame(3, { t: 'prepared', group: 'g', viewId: p!.viewId, have: 7, low: 2 })
  const [c] = h.take(3, 'commit').slice(-1)
  t.match(c, { cut: 10, start: 10 + SEQ_WINDOW + 1, holder: 2, sequencer: 2 })
})

t.test('the view after an uninstalled one never starts below it: the dead sequencer\'s slots stay skipped', async (t) => {
  // a (the sequencer) crashes; view 4 skips its window. c dies before anyone installs view 4, so b reports the
  // same `have` again and b — view 4's sequencer — answers. Starting view 5 at cut + 1 would hand out slots a may
  // have ordered (and a's peers delivered) before it died: the sim sweep found exactly that (seeds 1210, 1214).
  const h = harness()
  h.three()
  h.take(2)
  h.core.closed(1)
  const [p4] = h.take(2, 'prepare')
  for (const c of [2, 3]) h.core.frame(c, { t: 'prepared', group: 'g', viewId: p4!.viewId, have: 10, low: 0 })
  const [c4] = h.take(2, 'commit')
  t.match(c4, { cut: 10, start: 10 + SEQ_WINDOW + 1, sequencer: 2 })
  h.core.closed(3)
  const [p5] = h.take(2, 'prepare')
  h.core.frame(2, { t: 'prepared', group: 'g', viewId: p5!.viewId, have: 10, low: 0 })
  const [c5] = h.take(2, 'commit')
  t.match(c5, { viewId: p5!.viewId, cut: 10, members: [{ id: 'b' }] })
  t.ok((c5!.start as number) > (c4!.start as number), `view ${c5!.viewId} starts at ${c5!.start}, after view ${c4!.viewId}'s ${c4!.start}`)
})

t.test('a failure during a flush abandons it: new attempt, new view id, without the failed member', async (t) => {
  const h = harness()
  h.join(1, 'a')
  h.join(2, 'b')
  h.core.frame(1, { t: 'prepared', group: 'g', viewId: 2, have: 1, low: 0 })
  h.join(3, 'c')
  h.take(1)
  h.take(2)
  h.core.closed(3) // a joiner dies: the flush for it goes on, without it
  h.core.closed(2) // a participant dies: that attempt is abandoned
  const prepares = h.take(1, 'prepare')
  t.ok(prepares.length >= 1)
  const last = prepares.at(-1)!
  t.ok((last.viewId as number) > 3, 'a fresh view id')
  h.core.frame(1, { t: 'prepared', group: 'g', viewId: last.viewId, have: 5, low: 0 })
  t.match(h.take(1, 'commit').at(-1), { viewId: last.viewId, members: [{ id: 'a' }] })
})

t.test('leave: excluded by a commit, released once every member installed', async (t) => {
  const h = harness()
  h.join(1, 'a')
  h.join(2, 'b')
  h.core.frame(1, { t: 'prepared', group: 'g', viewId: 2, have: 1, low: 0 })
  h.take(1)
  h.take(2)
  h.core.frame(2, { t: 'leave', group: 'g' })
  for (const c of [1, 2]) h.core.frame(c, { t: 'prepared', group: 'g', viewId: 3, have: 9, low: 0 })
  t.match(h.take(2, 'commit'), [{ viewId: 3, members: [{ id: 'a' }] }], 'the leaver gets the commit that excludes it')
  t.same(h.take(2, 'released'), [], 'not released before the others installed')
  h.core.frame(1, { t: 'installed', group: 'g', viewId: 3 })
  t.match(h.take(2, 'released'), [{ group: 'g' }])
})

t.test('a released leaver closing during the next flush restarts that flush at once', async (t) => {
  // Seen with 8 replicas leaving together: the flush was abandoned and nothing restarted it until timeouts fired.
  const h = harness()
  h.three()
  h.core.frame(3, { t: 'leave', group: 'g' })
  for (const c of [1, 2, 3]) h.core.frame(c, { t: 'prepared', group: 'g', viewId: 4, have: 9, low: 0 })
  t.match(h.take(1, 'commit').at(-1), { viewId: 4, members: [{ id: 'a' }, { id: 'b' }] })
  h.take(3)
  h.core.frame(2, { t: 'leave', group: 'g' }) // the next change starts while c is still installing view 4
  t.match(h.take(3, 'prepare'), [{ viewId: 5 }], 'the leaver still installing is a participant (a repair source)')
  for (const c of [1, 2]) h.core.frame(c, { t: 'installed', group: 'g', viewId: 4 })
  t.match(h.take(3, 'released'), [{ group: 'g' }])
  h.take(1)
  h.core.closed(3) // c, released, goes away: the flush for view 5 loses a participant
  const again = h.take(1, 'prepare')
  t.equal(again.length, 1, 'a new flush starts without waiting for a timeout')
  h.core.frame(1, { t: 'prepared', group: 'g', viewId: again[0]!.viewId, have: 9, low: 0 })
  h.core.frame(2, { t: 'prepared', group: 'g', viewId: again[0]!.viewId, have: 9, low: 0 })
  t.match(h.take(1, 'commit').at(-1), { viewId: again[0]!.viewId, members: [{ id: 'a' }] })
})

t.test('a silent member is expelled after timeoutMs', async (t) => {
  const h = harness()
  h.join(1, 'a')
  h.take(1)
  h.advance(1000)
  t.same(h.take(1, 'expelled'), [])
  h.advance(1500)
  t.match(h.take(1, 'expelled'), [{ group: 'g' }])
  t.same(h.closed, [1])
})

t.test('a suspicion from the sequencer of the current view expels that member; any other is ignored', async (t) => {
  const h = harness()
  h.three()
  for (const c of [1, 2, 3]) h.take(c)
  const suspect = (from: number, viewId: number, no: number): void => h.core.frame(from, { t: 'suspect', group: 'g', viewId, no, reason: 'holds slots only up to 7' })
  suspect(2, 3, 3) // not the sequencer
  suspect(1, 2, 3) // an older view
  suspect(1, 3, 9) // not a member
  t.same([h.take(3, 'expelled'), h.closed], [[], []], 'stale or foreign suspicions change nothing')
  suspect(1, 3, 3)
  t.match(h.take(3, 'expelled'), [{ group: 'g', reason: /lack of progress: holds slots only up to 7/ }], 'the member is told why')
  t.same(h.closed, [3])
  t.match(h.take(1, 'prepare'), [{ viewId: 4 }], 'a view change without it starts')
  suspect(1, 3, 2)
  t.same(h.take(2, 'expelled'), [], 'during the flush, a suspicion waits for the next view\'s sequencer')
  t.throws(() => h.core.frame(1, { t: 'suspect', group: 'g', viewId: 3 }), { code: ErrorCodes.FRAME }, 'one without a member number is malformed')
})

t.test('[D5] any member of the current view may suspect its sequencer: expelled; naming another member, or of another view: ignored', async (t) => {
  const h = harness()
  h.three() // view 3: a (conn 1, no 1) is the sequencer
  for (const c of [1, 2, 3]) h.take(c)
  const suspect = (from: number, viewId: number, no: number): void =>
    h.core.frame(from, { t: 'suspect', group: 'g', viewId, no, reason: 'ordered none of this member\'s messages for 8000 ms' })
  suspect(2, 3, 3) // another member, not the sequencer: only the sequencer judges members
  suspect(3, 2, 1) // the sequencer, but of an older view
  t.same([h.take(1, 'expelled'), h.take(3, 'expelled'), h.closed], [[], [], []], 'both ignored')
  suspect(3, 3, 1)
  t.match(h.take(1, 'expelled'), [{ group: 'g', reason: /lack of progress: member c reports: ordered none of this member's messages/ }], 'the sequencer is told who and why')
  t.same(h.closed, [1])
  const [p] = h.take(2, 'prepare')
  t.match(p, { viewId: 4 }, 'a view change without it starts')
  suspect(2, 3, 1)
  suspect(2, 4, 2)
  t.same([h.take(2, 'expelled'), h.take(3, 'expelled')], [[], []], 'during the flush, nothing is suspected')
  for (const c of [2, 3]) h.core.frame(c, { t: 'prepared', group: 'g', viewId: p!.viewId, have: 5, low: 0 })
  t.match(h.take(2, 'commit'), [{ viewId: 4, members: [{ id: 'b' }, { id: 'c' }], sequencer: 2 }], 'b is the next sequencer')
  suspect(3, 3, 2)
  t.same([h.take(2, 'expelled'), h.closed], [[], [1]], 'a suspicion of the old view does not reach the new sequencer')
  suspect(3, 4, 2)
  t.match(h.take(2, 'expelled'), [{ reason: /member c reports/ }], 'one of the new view does')
})

t.test('a sequencer may suspect itself: it is expelled and the others get a view without it', async (t) => {
  const h = harness()
  h.three()
  for (const c of [1, 2, 3]) h.take(c)
  h.core.frame(1, { t: 'suspect', group: 'g', viewId: 3, no: 1, reason: 'more than half of the view is stuck' })
  t.match(h.take(1, 'expelled'), [{ reason: /more than half/ }])
  const [p] = h.take(2, 'prepare')
  for (const c of [2, 3]) h.core.frame(c, { t: 'prepared', group: 'g', viewId: p!.viewId, have: 5, low: 0 })
  t.match(h.take(2, 'commit'), [{ members: [{ id: 'b' }, { id: 'c' }], sequencer: 2, start: 5 + SEQ_WINDOW + 1 }])
})

t.test('a member that does not install a view within 2 × timeoutMs is expelled; if most do not, the holder is', async (t) => {
  for (const [installed, expected] of [[[1, 2], [3]], [[1], [1]]] as const) {
    const h = harness()
    h.three() // view 3: holder a (conn 1) reported have 2 like b; c joined
    for (const c of [1, 2, 3]) h.take(c)
    for (const c of installed) h.core.frame(c, { t: 'installed', group: 'g', viewId: 3 })
    for (const step of [1000, 1000, 1000, 900]) {
      h.advance(step)
      for (const c of [1, 2, 3]) h.core.frame(c, { t: 'ping' })
    }
    t.same(h.closed, [], 'not before the deadline')
    h.advance(200)
    t.same(h.closed, expected, `installed by ${installed.join(', ')}: ${expected.join(', ')} expelled`)
    t.match(h.take(expected[0]!, 'expelled'), [{ reason: /lack of progress/ }])
  }
})


t.test('restart: a fresh directory rebuilds the group from rejoins and removes who never comes back', async (t) => {
  const h = harness()
  h.core.opened(1)
  h.core.frame(1, rejoin('a', 1))
  t.match(h.take(1, 'welcome'), [{ no: 1 }])
  t.match(h.core.status()[0], { viewId: 7, state: 'recovering', mcast: '239.255.0.9:46100' })
  h.core.opened(3)
  h.core.frame(3, rejoin('x', 9))
  t.match(h.take(3, 'expelled'), [{}], 'a stranger is refused')
  h.advance(1000)
  h.core.frame(1, { t: 'ping' })
  h.advance(1100) // b never rejoins
  const [p] = h.take(1, 'prepare')
  t.ok((p!.viewId as number) > 7, 'view ids keep increasing')
  h.core.frame(1, { t: 'prepared', group: 'g', viewId: p!.viewId, have: 600, low: 0 })
  t.match(h.take(1, 'commit'), [{ members: [{ id: 'a' }], cut: 600, start: 601, inc: INC, mcast: '239.255.0.9:46100' }], 'same incarnation and address')
})

t.test('restart: member numbers continue above every number the group ever gave, not only the view\'s', async (t) => {
  const h = harness()
  h.core.opened(1)
  h.core.frame(1, rejoin('a', 1))
  h.core.opened(2)
  h.core.frame(2, rejoin('b', 2))
  h.take(1)
  h.core.frame(1, { t: 'prepared', group: 'g', viewId: 8, have: 510, low: 0 })
  h.core.frame(2, { t: 'prepared', group: 'g', viewId: 8, have: 510, low: 0 })
  h.join(3, 'c') // numbers 3 and 4 belonged to members that left before the restart
  t.match(h.take(3, 'welcome'), [{ no: 5 }])
})

t.test('restart during a view change: every member back still gets a new view, past any slot a lost commit could use', async (t) => {
  const h = harness()
  // a holds commit 7 and saw prepare 8 (the directory died during that flush); b is back too.
  h.core.opened(1)
  h.core.frame(1, rejoin('a', 1, commit7, 8))
  h.core.opened(2)
  h.core.frame(2, rejoin('b', 2))
  const [p] = h.take(1, 'prepare')
  t.ok(p, 'a view change follows the rebuild even though every member rejoined')
  t.equal(p!.viewId, 9, 'above every view id any member saw')
  h.core.frame(1, { t: 'prepared', group: 'g', viewId: 9, have: 510, low: 0 })
  h.core.frame(2, { t: 'prepared', group: 'g', viewId: 9, have: 505, low: 0 })
  t.match(h.take(2, 'commit'), [{ viewId: 9, cut: 510, start: 510 + 3 * SEQ_WINDOW + 1 }], 'commit 8 may have reached a member that never came back')
})

t.test('restart: a member that missed the latest commit gets it before the next prepare', async (t) => {
  const h = harness()
  const commit6 = { ...commit7, viewId: 6, cut: 300, start: 301 }
  h.core.opened(2)
  h.core.frame(2, rejoin('b', 2, commit6))
  h.core.opened(1)
  h.core.frame(1, rejoin('a', 1, commit7))
  const toB = h.take(2).map((f) => f.t === 'commit' ? `commit ${String(f.viewId)}` : f.t)
  t.same(toB, ['welcome', 'commit 7', 'prepare'], 'b applies commit 7, then the new change')
  t.same(h.take(1).map((f) => f.t), ['welcome', 'prepare'], 'a holds it already')
})

t.test('restart: a rejoin of another incarnation is refused; rejoins beat joins that came first', async (t) => {
  const h = harness({ rejoinGraceMs: 2500 })
  h.join(5, 'newcomer') // within the grace: waits
  t.same(h.take(5, 'commit'), [], 'no view for a group the restarted directory may be about to learn')
  h.core.opened(1)
  h.core.frame(1, rejoin('a', 1))
  t.match(h.take(5, 'welcome'), [{ no: 1 }, { no: 5 }], 'renumbered above the group\'s history')
  h.core.opened(2)
  h.core.frame(2, rejoin('b', 2, { ...commit7, inc: 'c0ffee0000000008' }))
  t.match(h.take(2, 'expelled'), [{}], 'another incarnation of g')
  h.advance(1500)
  h.core.frame(1, { t: 'ping' })
  h.core.frame(5, { t: 'ping' })
  h.advance(1100)
  const [p] = h.take(1, 'prepare')
  h.core.frame(1, { t: 'prepared', group: 'g', viewId: p!.viewId, have: 500, low: 0 })
  t.match(h.take(5, 'commit'), [{ inc: INC, members: [{ id: 'a' }, { id: 'newcomer', no: 5 }] }])
})

t.test('joins to a new group wait out the rejoin grace of a directory that just started', async (t) => {
  const h = harness({ rejoinGraceMs: 2500 })
  h.join(1, 'a')
  t.same(h.take(1, 'commit'), [])
  t.match(h.core.status()[0], { state: 'recovering' })
  h.advance(1500)
  h.core.frame(1, { t: 'ping' })
  h.advance(1100)
  t.match(h.take(1, 'commit'), [{ viewId: 1, members: [{ id: 'a' }] }])
})

t.test('independent directories give the same group different incarnations and, mostly, addresses', async (t) => {
  const addrs = new Set<string>()
  const incs = new Set<string>()
  for (let i = 0; i < 20; i++) {
    const out: Frame[] = []
    const core = new DirectoryCore({ ...DEFAULT_DIRECTORY_OPTIONS, rejoinGraceMs: 0 }, { now: () => 0, send: (_c, f) => out.push(f), close: () => {} })
    core.opened(1)
    core.frame(1, { t: 'join', proto: 1, group: 'lobby', member: 'a', addr: '127.0.0.1:9001' })
    const c = out.find((f) => f.t === 'commit')!
    incs.add(c.inc as string)
    addrs.add(c.mcast as string)
  }
  t.equal(incs.size, 20, 'random incarnations')
  t.ok(addrs.size >= 18, `addresses drawn from the range (${addrs.size} distinct of 20)`)
})

t.test('every commit carries the group\'s transport: unicast only when the directory runs --transport unicast', async (t) => {
  for (const [transport, expected] of [['auto', 'multicast'], ['multicast', 'multicast'], ['unicast', 'unicast']] as const) {
    const h = harness({ transport })
    h.join(1, 'a')
    h.join(2, 'b')
    h.flush([1])
    t.match(h.take(2, 'commit'), [{ viewId: 2, transport: expected }], `--transport ${transport}`)
    t.match(h.core.status(), [{ name: 'g', transport: expected }], 'dir ls shows it')
  }
})

t.test('auto: a member deaf to the multicast moves the whole group to unicast at the next commit, once', async (t) => {
  const h = harness()
  h.three()
  for (const c of [1, 2, 3]) h.take(c)
  h.core.frame(2, { t: 'deaf', group: 'g', viewId: 2 })
  t.same(h.take(1), [], 'a deaf of an older view is stale: nothing happens')
  h.core.frame(2, { t: 'deaf', group: 'g', viewId: 3 })
  t.match(h.infos, [/g: member b .*cannot hear the multicast 239\.255\.0\.1:46100 in view 3.*unicast/], 'the directory says why, at info level')
  t.match(h.core.status(), [{ transport: 'multicast' }], 'dir ls shows what the members use: multicast until the commit')
  h.flush([1, 2, 3])
  for (const c of [1, 2, 3]) {
    t.match(h.take(c, 'commit'), [{ viewId: 4, transport: 'unicast', members: [{ id: 'a' }, { id: 'b' }, { id: 'c' }] }], `member ${c}: same members, now unicast`)
  }
  t.match(h.core.status(), [{ transport: 'unicast' }])
  for (const c of [1, 2, 3]) h.core.frame(c, { t: 'installed', group: 'g', viewId: 4 })
  h.core.frame(3, { t: 'deaf', group: 'g', viewId: 4 })
  t.same([h.take(1), h.closed, h.infos.length], [[], [], 1], 'a second deaf does nothing: the group is unicast already')
  h.join(4, 'd')
  h.flush([1, 2, 3])
  t.match(h.take(4, 'commit'), [{ transport: 'unicast' }], 'and stays so: never back')
})

t.test('--transport multicast: a deaf member is refused with ENOMULTICAST and its connection closed', async (t) => {
  const h = harness({ transport: 'multicast' })
  h.three()
  for (const c of [1, 2, 3]) h.take(c)
  h.core.frame(2, { t: 'deaf', group: 'g', viewId: 3 })
  const [err] = h.take(2, 'error')
  t.match(err, {
    code: ErrorCodes.MULTICAST_UNREACHABLE,
    message: 'member b cannot hear the multicast of group g (239.255.0.1:46100); this directory runs --transport multicast: run it with --transport unicast or auto',
  })
  t.match(errorFromCode(err!.code as string, err!.message as string), { name: 'MulticastUnreachableError', code: 'ENOMULTICAST' }, 'grp_join rejects with it')
  t.same(h.closed, [2])
  h.flush([1, 3])
  t.match(h.take(1, 'commit'), [{ members: [{ id: 'a' }, { id: 'c' }], transport: 'multicast' }], 'the others go on without it, on multicast')
})

t.test('--transport unicast: a deaf is ignored, the group is unicast already', async (t) => {
  const h = harness({ transport: 'unicast' })
  h.three()
  for (const c of [1, 2, 3]) h.take(c)
  h.core.frame(2, { t: 'deaf', group: 'g', viewId: 3 })
  t.same([h.take(1), h.take(2), h.closed], [[], [], []])
})

t.test('a rebuilt directory takes the group\'s transport from the commit it adopts', async (t) => {
  const unicast7 = { ...commit7, transport: 'unicast' }
  for (const [mode, brought, expected] of [
    ['auto', unicast7, 'unicast'], ['multicast', unicast7, 'unicast'], ['auto', commit7, 'multicast'], ['unicast', commit7, 'unicast'],
  ] as const) {
    const h = harness({ transport: mode })
    for (const [conn, id] of [[1, 'a'], [2, 'b']] as const) {
      h.core.opened(conn)
      h.core.frame(conn, rejoin(id, conn, brought))
    }
    h.flush([1, 2])
    t.match(h.take(1, 'commit'), [{ viewId: 8, transport: expected }], `--transport ${mode}, a ${brought.transport} commit: ${expected}`)
  }
})

t.test('malformed frames throw with a code', async (t) => {
  const h = harness()
  h.core.opened(1)
  t.throws(() => h.core.frame(1, { t: 'join', proto: 1, group: '', member: 'a', addr: '127.0.0.4:5' }), { code: ErrorCodes.BAD_REQUEST })
  t.throws(() => h.core.frame(1, { t: 'join', proto: 1, group: 'g', member: 'a', addr: 'nowhere' }), { code: ErrorCodes.BAD_REQUEST })
  t.throws(() => h.core.frame(1, { t: 'join', proto: 2, group: 'g', member: 'a', addr: '127.0.0.4:5' }), { code: ErrorCodes.BAD_REQUEST })
  t.throws(() => h.core.frame(1, { t: 'prepared', group: 'g', viewId: 1, have: 1, low: 0 }), { code: ErrorCodes.BAD_REQUEST }, 'before join')
  t.throws(() => h.core.frame(1, { t: 'join', proto: 1, group: 'g', member: 7, addr: '127.0.0.4:5' }), { code: ErrorCodes.FRAME })
})

t.test('numbers out of range are refused before they reach the state machine, naming the field', async (t) => {
  // Each of these was read as it came (a `typeof number` at most) before the frames had one reader.
  const bad: Array<[Frame, RegExp]> = [
    [{ t: 'prepared', group: 'g', viewId: 2, have: -1, low: 0 }, /have/],
    [{ t: 'prepared', group: 'g', viewId: 2, have: 2 ** 60, low: 0 }, /have/],
    [{ t: 'prepared', group: 'g', viewId: 2, have: 5, low: -3 }, /low/],
    [{ t: 'prepared', group: 'g', viewId: 2 ** 32, have: 5, low: 0 }, /viewId/],
    [{ t: 'installed', group: 'g', viewId: -1 }, /viewId/],
  ]
  for (const [f, field] of bad) {
    const h = harness()
    h.join(1, 'a')
    h.join(2, 'b')
    t.throws(() => h.core.frame(1, f), { code: ErrorCodes.BAD_REQUEST, message: field }, JSON.stringify(f))
    t.same(h.take(2, 'commit'), [], 'no commit came of it')
  }
  const h = harness()
  h.core.opened(1)
  // A number that is not an integer is not an integer at all: the wrong type (PROTOCOL.md §3 "Integers").
  t.throws(() => h.core.frame(1, { t: 'prepared', group: 'g', viewId: 2, have: 1.5, low: 0 }), { code: ErrorCodes.FRAME, message: /have/ })
  t.throws(() => h.core.frame(1, { t: 'suspect', group: 'g', viewId: 2, no: 1.5, reason: 'x' }), { code: ErrorCodes.FRAME, message: /no/ })
  t.throws(() => h.core.frame(1, { t: 'ls', after: 5 }), { code: ErrorCodes.FRAME, message: /after/ }, 'an ls whose `after` is not a name')
  t.throws(() => h.core.frame(1, { t: 'prepared', group: 'g', viewId: 2, have: 5 }), { code: ErrorCodes.FRAME, message: /low/ }, 'a prepared without low')
  t.throws(() => h.core.frame(1, { t: 'deaf', group: 'g', viewId: -1 }), { code: ErrorCodes.BAD_REQUEST, message: /viewId/ }, 'a deaf without a view id')
  t.throws(() => h.core.frame(1, { t: 'deaf', group: 'g' }), { code: ErrorCodes.FRAME, message: /viewId/ })
})

t.test('a rejoin whose commit the members could not use is refused: a rebuilt directory would resend it', async (t) => {
  const members = commit7.members
  const bad: Array<[object, RegExp]> = [
    [{ ...commit7, sources: [{ no: 'x', low: 0, have: 3 }] }, /commit\.sources\[0\]\.no/],
    [{ ...commit7, sources: [{ no: 1, low: 0, have: -3 }] }, /commit\.sources\[0\]\.have/],
    [{ ...commit7, members: [members[0], { ...members[1], id: '' }] }, /commit\.members\[1\]\.id/],
    [{ ...commit7, members: [members[0], { ...members[1], no: 1 }] }, /commit\.members\[1\]\.no/],
    [{ ...commit7, viewId: 2 ** 32 }, /commit\.viewId/],
    [{ ...commit7, transport: 'carrier-pigeon' }, /commit\.transport/],
  ]
  for (const [commit, field] of bad) {
    const h = harness()
    h.core.opened(1)
    t.throws(() => h.core.frame(1, rejoin('a', 1, commit)), { code: /^E(BAD_REQUEST|FRAME)$/, message: field }, field.source)
    t.same(h.core.status(), [], 'nothing rebuilt from it')
  }
})

t.test('over TCP: garbage, oversized and non-map frames close only their own connection', async (t) => {
  const server = new DirectoryServer({ port: 0, rejoinGraceMs: 0 })
  const { port } = await server.listen()
  t.teardown(() => server.close())
  const connect = (): Promise<net.Socket> => new Promise((r) => { const s = net.connect(port, '127.0.0.1', () => r(s)) })
  const closedSoon = (s: net.Socket): Promise<boolean> => new Promise((r) => { s.on('close', () => r(true)); setTimeout(() => r(false), 1000) })
  const good = await connect()
  const dec = new FrameDecoder()
  const frames: Frame[] = []
  good.on('data', (b) => frames.push(...dec.push(b)))
  good.write(encodeFrame({ t: 'join', proto: 1, group: 'tcp', member: 'ok', addr: '127.0.0.1:9999' }))
  const bads = [
    Buffer.from([0, 0, 0, 5, 0xc1, 0xc1, 0xc1, 0xc1, 0xc1]), // 0xc1 is never valid MessagePack
    Buffer.from([0xff, 0xff, 0xff, 0xff]), // 4 GiB length
    Buffer.concat([Buffer.from([0, 0, 0, 2]), Buffer.from([0x92, 0x01]).subarray(0, 2)]), // an array, not a map
    encodeFrame({ t: 'nonsense' }),
  ]
  for (const b of bads) {
    const s = await connect()
    s.on('error', () => {})
    s.resume() // a peer that reads sees the close at once (one that does not is cut off after a grace)
    s.write(b)
    t.ok(await closedSoon(s), `bad frame ${b.subarray(0, 6).toString('hex')} closes its connection`)
  }
  t.equal(server.badFrames, 4)
  good.write(encodeFrame({ t: 'ping' }))
  await new Promise((r) => setTimeout(r, 100))
  t.ok(frames.some((f) => f.t === 'pong'), 'the good connection still works')
  t.match(await queryStatus(`127.0.0.1:${port}`), [{ name: 'tcp', members: [{ id: 'ok' }] }])
  good.destroy()
})

t.test('dir CLI: help, usage errors, unreachable daemon, serve, ls (--json), show, SIGTERM', async (t) => {
  const run = (...args: string[]) => spawnSync(process.execPath, [DIR_CLI, ...args], { encoding: 'utf8' })
  t.equal(run('--help').status, 0)
  t.match(run('--help').stdout, /dir ls/)
  t.match(run('--help').stdout, /--transport MODE/)
  t.equal(run('--bogus').status, 2)
  t.equal(run('serve', '--transport', 'carrier-pigeon').status, 2)
  t.equal(run('serve', '--timeout-ms', 'x').status, 2)
  const slow = run('serve', '--heartbeat-ms', '500', '--timeout-ms', '500')
  t.equal(slow.status, 2, 'a timeout members would refuse in welcome is a usage error')
  t.match(slow.stderr, /timeoutMs/)
  const dead = await freePort()
  const r = run('ls', '--dir', `127.0.0.1:${dead}`)
  t.equal(r.status, 1)
  t.match(r.stderr, /cannot query the directory/)
  const port = await freePort()
  const d = spawn(process.execPath, [DIR_CLI, '--port', String(port), '--transport', 'unicast', '--timeout-ms', '60000', '--rejoin-grace-ms', '0'], { stdio: ['ignore', 'pipe', 'pipe'] })
  await new Promise<void>((res) => d.stdout.on('data', (b: Buffer) => b.toString().includes('listening') && res()))
  t.equal(run('--port', String(port)).status, 1, 'port in use: exit 1')
  const empty = run('ls', '--dir', `127.0.0.1:${port}`, '--json')
  t.equal(empty.status, 0)
  t.same(JSON.parse(empty.stdout), [])
  t.equal(run('show', 'nope', '--dir', `127.0.0.1:${port}`).status, 1)
  // ann (state hooks: the first view, so it holds the state) answers prepares; bob joins with hooks and needs it.
  const member = net.connect(port, '127.0.0.1')
  const annFrames = new FrameDecoder()
  member.on('data', (buf: Buffer) => {
    for (const f of annFrames.push(buf)) if (f.t === 'prepare') member.write(encodeFrame({ t: 'prepared', group: 'lobby', viewId: f.viewId, have: 1, low: 0 }))
  })
  member.write(encodeFrame({ t: 'join', proto: 1, group: 'lobby', member: 'ann', addr: '127.0.0.1:9999', state: true }))
  const lobby = async (n: number): Promise<void> => {
    for (let i = 0; i < 250 && ((await queryStatus(`127.0.0.1:${port}`))[0]?.members.length ?? 0) < n; i++) await new Promise((r) => setTimeout(r, 20))
  }
  await lobby(1)
  const ls = run('ls', '--dir', `127.0.0.1:${port}`)
  t.match(ls.stdout, /^GROUP +VIEW +SEQUENCER +MEMBERS +NEEDS-STATE +MULTICAST +TRANSPORT +STATE\nlobby +\d+ +\S* +ann +- +239\.255\.\d+\.\d+:46100 +unicast +\w+\n$/, 'dir ls has TRANSPORT and NEEDS-STATE columns')
  t.match(JSON.parse(run('ls', '--dir', `127.0.0.1:${port}`, '--json').stdout), [{ name: 'lobby', transport: 'unicast', members: [{ id: 'ann', state: 'holds' }] }])
  t.match(run('show', 'lobby', '--dir', `127.0.0.1:${port}`).stdout, /^group lobby: view \d+, \w+, multicast 239\.255\.\d+\.\d+:46100, transport unicast, sequencer ann\n +1 +ann +127\.0\.0\.1:9999 +\(sequencer, holds state\)\n/)
  const bob = net.connect(port, '127.0.0.1')
  bob.write(encodeFrame({ t: 'join', proto: 1, group: 'lobby', member: 'bob', addr: '127.0.0.1:9998', state: true }))
  await lobby(2)
  t.match(run('ls', '--dir', `127.0.0.1:${port}`).stdout, /\nlobby +\d+ +ann +ann,bob +bob +239\./, 'bob waits for the state')
  t.match(run('show', 'lobby', '--dir', `127.0.0.1:${port}`).stdout, /\n +2 +bob +127\.0\.0\.1:9998 +\(needs state\)\n/)
  bob.destroy()
  member.destroy()
  const code = await new Promise((res) => { d.on('exit', res); d.kill('SIGTERM') })
  t.equal(code, 0, 'SIGTERM stops it cleanly')
})

t.test('a directory given a renamed option by its old name refuses to start, naming the new one', async (t) => {
  const hooks = { now: () => 0, send: () => {}, close: () => {} }
  for (const [old, now] of [['heartbeatMs', 'pingMs'], ['joinTimeoutMs', 'unjoinedTimeoutMs']]) {
    const opts = { ...DEFAULT_DIRECTORY_OPTIONS, [old!]: 100 }
    t.throws(() => new DirectoryCore(opts, hooks), { message: new RegExp(`${old} is now called ${now}`) }, `${old}: use ${now}`)
  }
})

t.test('dir CLI: --ping-ms sets the ping interval members are told in welcome; --heartbeat-ms is its old name', async (t) => {
  const run = (...args: string[]) => spawnSync(process.execPath, [DIR_CLI, ...args], { encoding: 'utf8' })
  const help = run('--help').stdout
  t.match(help, /--ping-ms N/, 'help names --ping-ms')
  t.match(help, /--heartbeat-ms N\s+the old name of --ping-ms/, 'and --heartbeat-ms as its alias')
  const slow = run('serve', '--ping-ms', '500', '--timeout-ms', '500')
  t.equal(slow.status, 2, 'a ping interval not below timeoutMs is a usage error')
  t.match(slow.stderr, /pingMs/)
  const both = run('serve', '--ping-ms', '100', '--heartbeat-ms', '200')
  t.equal(both.status, 2, 'the two names with different values: a usage error')
  t.match(both.stderr, /--ping-ms/)
  for (const flag of ['--ping-ms', '--heartbeat-ms']) {
    const port = await freePort()
    const d = spawn(process.execPath, [DIR_CLI, '--port', String(port), flag, '123', '--rejoin-grace-ms', '0'], { stdio: ['ignore', 'pipe', 'pipe'] })
    t.teardown(() => d.kill('SIGKILL'))
    const up = await new Promise<boolean>((res) => {
      d.stdout.on('data', (b: Buffer) => b.toString().includes('listening') && res(true))
      d.on('exit', () => res(false))
    })
    if (!t.ok(up, `dir ${flag} 123 starts`)) continue
    const s = net.connect(port, '127.0.0.1')
    const dec = new FrameDecoder()
    const welcome = new Promise<Frame>((res) => s.on('data', (b) => {
      for (const f of dec.push(b)) if (f.t === 'welcome') res(f)
    }))
    s.write(encodeFrame({ t: 'join', proto: 1, group: 'g', member: 'a', addr: '127.0.0.1:9999' }))
    t.match(await welcome, { t: 'welcome', heartbeatMs: 123, timeoutMs: 2000 }, `${flag} 123: welcome.heartbeatMs 123`)
    s.destroy()
    d.kill('SIGTERM')
    await new Promise((res) => d.on('exit', res))
  }
})

t.test('dir CLI: --unjoined-timeout-ms closes a connection that never joins; --join-timeout-ms is its old name', async (t) => {
  const run = (...args: string[]) => spawnSync(process.execPath, [DIR_CLI, ...args], { encoding: 'utf8' })
  t.match(run('--help').stdout, /--join-timeout-ms N\s+the old name of --unjoined-timeout-ms/, 'help names both')
  const both = run('serve', '--unjoined-timeout-ms', '100', '--join-timeout-ms', '200')
  t.equal(both.status, 2, 'the two names with different values: a usage error')
  for (const flag of ['--unjoined-timeout-ms', '--join-timeout-ms']) {
    const port = await freePort()
    const d = spawn(process.execPath, [DIR_CLI, '--port', String(port), flag, '200', '--rejoin-grace-ms', '0'], { stdio: ['ignore', 'pipe', 'pipe'] })
    t.teardown(() => d.kill('SIGKILL'))
    const up = await new Promise<boolean>((res) => {
      d.stdout.on('data', (b: Buffer) => b.toString().includes('listening') && res(true))
      d.on('exit', () => res(false))
    })
    if (!t.ok(up, `dir ${flag} 200 starts`)) continue
    // The default is 10 s: closed well before that means the flag took.
    const s = net.connect(port, '127.0.0.1')
    const closed = await new Promise<boolean>((res) => {
      const timer = setTimeout(() => res(false), 5000)
      s.on('close', () => { clearTimeout(timer); res(true) })
      s.on('error', () => {})
    })
    t.ok(closed, `${flag} 200: a connection that sends nothing is closed (not after the default 10 s)`)
    d.kill('SIGTERM')
    await new Promise((res) => d.on('exit', res))
  }
})

t.test('a flush timeout expels the participants that did not answer, and only them', async (t) => {
  const h = harness({ timeoutMs: 10_000, flushTimeoutMs: 2000 })
  h.three()
  for (const c of [1, 2, 3]) h.take(c)
  h.join(4, 'd')
  // a (the first participant) stays silent; b and c answer the prepare of view 4.
  for (const c of [2, 3]) for (const p of h.take(c, 'prepare')) h.core.frame(c, { t: 'prepared', group: 'g', viewId: p.viewId, have: 9, low: 0 })
  h.advance(2001)
  t.same(h.closed, [1], 'only a is expelled (before, expelling it abandoned the flush, and b and c were then judged against the new one)')
  h.flush([2, 3])
  t.match(h.core.status(), [{ name: 'g', members: [{ id: 'b' }, { id: 'c' }, { id: 'd' }] }], 'b, c and d go on')
})

t.test('frames a released leaver sends after its group was deleted are ignored, not refused', async (t) => {
  // A leaver may still be sending `installed`, `prepared` or `ready` when `released` (and, for the last member, the
  // group's deletion) reaches it: the directory used to answer "before join" and close (issue 15).
  const logged: string[] = []
  const was = { namespaces: createDebug.disable(), log: createDebug.log }
  createDebug.enable('seqcast:dir')
  createDebug.log = (...args: unknown[]) => logged.push(args.map(String).join(' '))
  t.teardown(() => {
    createDebug.log = was.log
    createDebug.enable(was.namespaces)
  })
  const h = harness()
  h.join(1, 'a')
  h.take(1)
  h.core.frame(1, { t: 'leave', group: 'g' })
  h.flush([1])
  t.match(h.take(1, 'released'), [{ group: 'g' }])
  for (const f of [{ t: 'installed', group: 'g', viewId: 2 }, { t: 'prepared', group: 'g', viewId: 2, have: 9, low: 0 }, { t: 'ready', group: 'g' }]) {
    t.doesNotThrow(() => h.core.frame(1, f), f.t)
  }
  t.same(h.take(1, 'error'), [])
  t.equal(logged.filter((m) => /empty, deleted/.test(m)).length, 1, 'deleted once, logged once')
  // The last member crashing deletes its group too: once.
  h.join(2, 'b')
  h.core.closed(2)
  t.equal(logged.filter((m) => /empty, deleted/.test(m)).length, 2, 'after a crash: deleted once more, logged once')
})

t.test('a view nobody would receive is not committed; a commit without participants logs where the stream restarts, no cut', async (t) => {
  const logged: string[] = []
  const was = { namespaces: createDebug.disable(), log: createDebug.log }
  createDebug.enable('seqcast:dir')
  createDebug.log = (...args: unknown[]) => logged.push(format(...args))
  t.teardown(() => {
    createDebug.log = was.log
    createDebug.enable(was.namespaces)
  })
  const h = harness()
  h.join(1, 'a')
  t.match(logged.filter((m) => /commit view 1/.test(m)), [/no participants: stream restarts at 1$/], 'the first view: no cut')
  t.notMatch(logged.join('\n'), /cut/, 'no cut in any line so far')
  // a crashes while b's join is being flushed: b alone gets a commit without participants.
  h.join(2, 'b')
  h.core.closed(1)
  const c = h.take(2, 'commit')
  t.match(c, [{ viewId: 3, holder: 0, sources: [], cut: SEQ_WINDOW + 1, start: SEQ_WINDOW + 2 }], 'b gets a commit without participants')
  t.match(logged.filter((m) => /commit view 3/.test(m)), [new RegExp(`no participants: stream restarts at ${SEQ_WINDOW + 2}$`)])
  // b, the last member, crashes: nobody would receive a view without it, and none is committed.
  h.core.frame(2, { t: 'installed', group: 'g', viewId: 3 })
  logged.length = 0
  h.core.closed(2)
  t.same(logged.filter((m) => /commit view|prepare view/.test(m)), [], 'no commit, no prepare')
  t.equal(logged.filter((m) => /empty, deleted/.test(m)).length, 1, 'the group is deleted')
  t.same(h.core.status(), [])
})
