/**
 * Conformance, first half (issue 15), continued: the duties of PROTOCOL.md §5.1 the other files do not reach — the
 * raw peer (test/fixtures/rawpeer.ts) deaf to the multicast (A8), rejoining a restarted directory (D6), and handed a
 * `prepare` while it installs (I6) — beside real members and a real directory, whose behaviour shows the duty was
 * done right. Duty ids in brackets in each test's name.
 */
import t from 'tap'
import { check } from './fixtures/checker.js'
import { RawPeer, type Frame } from './fixtures/rawpeer.js'
import { DirectoryServer } from '../directory/server.js'
import { body, directory, IFACE, peerLog, real, stream, until, viewsOf, type Real } from './fixtures/conform.js'

const sleep = (ms: number): Promise<void> => new Promise((r) => setTimeout(r, ms))

/** Every member's messages, in the checker's form. */
const logsOf = (reals: Real[], p: RawPeer, sent: Record<string, number>, dead: string[] = []) => [
  ...reals.map((m) => ({ id: m.id, survivor: !dead.includes(m.id), entries: m.entries, sent: sent[m.id] ?? 0 })),
  { id: 'p', survivor: true, entries: peerLog(p), sent: sent.p ?? 0 },
]

t.test('[A8, D5, A6, E3] deaf member: the peer drops every multicast datagram, reports `deaf` once for the view, the directory moves the group to unicast', async (t) => {
  // timeoutMs 1 500: B = 3 s, the deaf window B/2 = 1.5 s.
  const { server, addr } = await directory({ timeoutMs: 1500, pingMs: 300 })
  const a = await real(addr, 'conf-deaf', 'a')
  const b = await real(addr, 'conf-deaf', 'b')
  let deaf = false
  let droppedMc = 0
  const out: Frame[] = []
  const commits: Frame[] = []
  const p = new RawPeer({
    directory: addr, group: 'conf-deaf', id: 'p', seed: 21, hooks: {
      in: (_d, _from, via) => { if (deaf && via === 'multicast') { droppedMc++; return false } },
      frameOut: (f) => void out.push(f),
      frameIn: (f) => void (f.t === 'commit' && commits.push(f)),
    },
  })
  await p.join()
  t.teardown(async () => {
    p.close()
    for (const m of [a, b, c]) m?.g.close()
    await server.close()
  })
  let c: Real | undefined
  t.equal(commits.at(-1)!.transport, 'multicast', 'the group starts on multicast (directory transport auto)')
  const N = 150
  for (let k = 1; k <= 50; k++) p.send(body('p', k))
  await Promise.all([a.sendAll(50, { pauseEvery: 10 }), b.sendAll(50, { pauseEvery: 10 })])
  await sleep(1_900) // more than the deaf window in a view where it hears the multicast
  t.equal(out.filter((f) => f.t === 'deaf').length, 0, 'hearing the multicast, the peer reports nothing')

  deaf = true // from now on every multicast datagram is lost at the peer; a view change starts a new window
  c = await real(addr, 'conf-deaf', 'c')
  const deafView = commits.at(-1)!.viewId as number
  t.equal(commits.at(-1)!.transport, 'multicast', `view ${deafView} (c joined) is on multicast`)
  for (let k = 51; k <= N; k++) p.send(body('p', k))
  const sends = Promise.all([a.sendAll(N - 50, { from: 51, pauseEvery: 10 }), b.sendAll(N - 50, { from: 51, pauseEvery: 10 }), c.sendAll(50, { pauseEvery: 10 })])
  t.ok(await until(() => commits.some((f) => f.transport === 'unicast'), 10_000), 'a commit moves the group to unicast')
  const reports = out.filter((f) => f.t === 'deaf')
  t.same(reports.map((f) => f.viewId), [deafView], 'the peer reported `deaf` once, for the view it could not hear')
  const moved = commits.find((f) => f.transport === 'unicast')!
  t.ok(moved.viewId > deafView, `the directory (auto) moved the group at view ${moved.viewId}, after the report`)
  t.ok(droppedMc > 0, `the peer dropped ${droppedMc} multicast datagrams`)
  await sends
  const total = 3 * N + 50
  const sinceC = 3 * (N - 50) + 50 // c hears from its view on
  t.ok(await until(() => [a, b].every((m) => m.messages() >= total) && c!.messages() >= sinceC && p.messages().length >= total, 20_000), 'everyone delivered every message')
  await until(() => [a, b, c].every((m) => stream(m.entries).at(-1) === stream(peerLog(p)).at(-1)), 5_000)
  await sleep(2_000) // another deaf window: in a unicast view nothing more is reported
  t.equal(p.deafReports, 1, 'no further report once the group is on unicast')
  const from = peerLog(p).find((e) => e.type === 'view')!.seq!
  t.same(stream(peerLog(p), from), stream(a.entries, from), 'the peer\'s stream is a\'s')
  t.same(stream(b.entries, from), stream(a.entries, from), 'b\'s too')
  const cFrom = Number(viewsOf(c.entries)[0]!.split(' ')[0])
  t.same(stream(c.entries, cFrom), stream(a.entries, cFrom), 'and c\'s from its view on')
  t.same(viewsOf(peerLog(p)).slice(-2), viewsOf(a.entries).slice(-2), 'same views at the same slots')
  t.same(check(logsOf([a, b, c], p, { a: N, b: N, c: 50, p: N }), { oneSeqPerMessage: true }), [], 'guarantees hold')
  t.same(p.errors, [], 'peer: no errors')
  t.same([...a.errors, ...b.errors, ...c.errors], [], 'real members: no errors')
})

t.test('[D6, E2, F1, I1, I3, I4] directory restart: the peer rejoins with its latest commit, seenViewId and leaving; the group is rebuilt and a view change follows', async (t) => {
  const opts = { timeoutMs: 1500, pingMs: 300, flushTimeoutMs: 20_000 }
  let { server, addr } = await directory(opts)
  const port = Number(addr.split(':')[1])
  const a = await real(addr, 'conf-restart', 'a')
  let holdPrepared = false
  const out: Frame[] = []
  const commits: Frame[] = []
  const p = new RawPeer({
    directory: addr, group: 'conf-restart', id: 'p', seed: 4, hooks: {
      frameOut: (f) => (f.t === 'prepared' && holdPrepared ? null : void out.push(f)),
      frameIn: (f) => void (f.t === 'commit' && commits.push(f)),
    },
  })
  await p.join()
  const b = await real(addr, 'conf-restart', 'b')
  t.teardown(async () => {
    p.close()
    a.g.close()
    b.g.close()
    await server.close()
  })
  const N = 200
  for (let k = 1; k <= 100; k++) p.send(body('p', k))
  await Promise.all([a.sendAll(100, { pauseEvery: 10 }), b.sendAll(100, { pauseEvery: 10 })])
  t.ok(await until(() => p.messages().length >= 300 && a.messages() >= 300, 10_000), 'the group runs')

  // A flush the directory dies in: c joins, the peer keeps its `prepared`, the directory is stopped.
  const before = commits.at(-1)!
  holdPrepared = true
  const cJoin = real(addr, 'conf-restart', 'c').then((c) => { c.g.close(); return 'joined' }, (e: { code?: string }) => e.code)
  t.ok(await until(() => p.seenViewId > (before.viewId as number), 10_000), `the peer saw prepare ${p.seenViewId} (its latest commit: view ${before.viewId})`)
  await server.close()
  const seenAtLoss = p.seenViewId // what the rejoin must carry (a view change after it raises p.seenViewId)
  // The data path goes on without a directory: the members send, the peer delivers once the flush is gone.
  const sends = Promise.all([a.sendAll(N - 100, { from: 101, pauseEvery: 10 }), b.sendAll(N - 100, { from: 101, pauseEvery: 10 })])
  for (let k = 101; k <= N; k++) p.send(body('p', k))
  await sleep(300)
  server = new DirectoryServer({ host: IFACE, port, rejoinGraceMs: 2500, ...opts })
  await server.listen()
  holdPrepared = false
  t.equal(await cJoin, 'EDIRECTORY_LOST', 'c, which had no commit yet, fails once it reaches a directory')

  t.ok(await until(() => out.some((f) => f.t === 'rejoin'), 10_000), 'the peer sent `rejoin`')
  const rejoin = out.find((f) => f.t === 'rejoin')!
  t.equal(rejoin.no, p.no, 'with its number')
  t.equal(rejoin.addr, p.address, 'and its address')
  t.equal(rejoin.seenViewId, seenAtLoss, `seenViewId: the prepare's view ${seenAtLoss}, above its commit's`)
  t.notOk(rejoin.leaving, 'not leaving')
  const sent = rejoin.commit
  t.same([sent.viewId, sent.inc, sent.cut, sent.start, sent.holder, sent.sequencer, sent.nextNo, sent.mcast, sent.transport, sent.sources],
    [before.viewId, before.inc, before.cut, before.start, before.holder, before.sequencer, before.nextNo, before.mcast, before.transport, before.sources],
    `its latest commit (view ${before.viewId}), as the directory sent it`)
  t.same(sent.members.map((m: { id: string; addr: string }) => m.id), ['a', 'p', 'b'], 'whole: every member of it')
  t.equal(sent.t, undefined, 'a commit map, not a frame')
  const inc = before.inc
  const after = (): Frame | undefined => commits.find((f) => f.viewId > rejoin.seenViewId)
  t.ok(await until(() => after() !== undefined && [a, b].every((m) => viewsOf(m.entries).some((v) => v.includes(`v${after()!.viewId} `))), 15_000),
    'once recovered, the directory starts a view change and every member installs its view')
  const next = after()!
  t.equal(next.inc, inc, 'the group is rebuilt with the same incarnation')
  t.ok(next.viewId > rejoin.seenViewId, `view ids continue above seenViewId (${next.viewId} > ${rejoin.seenViewId})`)
  t.ok(Array.isArray(next.members), 'the first commit on the new connection is whole (E2)')
  t.same(next.members.map((m: { id: string }) => m.id), ['a', 'p', 'b'], 'same members, same numbers order')
  t.same(next.members.map((m: { no: number }) => m.no), sent.members.map((m: { no: number }) => m.no), 'same member numbers')
  await sends
  t.ok(await until(() => [a, b].every((m) => m.messages() >= 3 * N) && p.messages().length >= 3 * N, 20_000), 'everyone delivered every message')
  t.same(stream(peerLog(p), 1), stream(a.entries, 1), 'the peer\'s stream is a\'s')
  t.same(stream(b.entries), stream(a.entries), 'b\'s is a\'s')
  t.same(viewsOf(peerLog(p)).slice(-1), viewsOf(a.entries).slice(-1), 'the same last view at the same slot')
  t.same(check(logsOf([a, b], p, { a: N, b: N, p: N }), { oneSeqPerMessage: true }), [], 'guarantees hold')
  t.same(p.errors, [], 'peer: no errors')
  t.same([...a.errors, ...b.errors], [], 'real members: no errors')
})

t.test('[I6, F1, F2, I2, I3, D3] prepare while installing: the peer reports its frozen have, installs nothing until the next commit, the group converges', async (t) => {
  const { server, addr } = await directory()
  const a = await real(addr, 'conf-reprepare', 'a')
  let behind = false // every datagram to the peer lost: it falls behind the cut of the next commit
  let holdNacks = false // its fetches lost: it stays installing
  const out: Frame[] = []
  const commits: Frame[] = []
  let haveAtNextCommit = -1
  let watch = Infinity // the view whose commit is being installed when the prepare comes
  const late = new Set<number>()
  const p = new RawPeer({
    directory: addr, group: 'conf-reprepare', id: 'p', seed: 8, hooks: {
      in: () => (behind ? false : undefined),
      out: (d) => (holdNacks && d.type === 'NACK' ? null : undefined),
      frameOut: (f) => {
        // The answer to the prepare that comes while installing goes 500 ms late: time in which a peer that went on
        // installing (its fetches are let through from the prepare on) would pass the `have` it reported.
        if (f.t === 'prepared' && f.viewId > watch && !late.has(f.viewId)) {
          late.add(f.viewId)
          holdNacks = false
          setTimeout(() => (p as unknown as { toDirectory(f: Frame): void }).toDirectory(f), 500)
          return null
        }
        out.push(f)
      },
      frameIn: (f) => {
        if (f.t !== 'commit') return
        if (f.viewId > watch && haveAtNextCommit < 0) haveAtNextCommit = p.have
        commits.push(f)
      },
    },
  })
  await p.join()
  const b = await real(addr, 'conf-reprepare', 'b')
  t.teardown(async () => {
    p.close()
    for (const m of [a, b, c]) m?.g.close()
    await server.close()
  })
  let c: Real | undefined
  const N = 150
  await until(() => p.deliveries.some((d) => d.type === 'view' && d.members.length === 3), 10_000)
  behind = true
  await Promise.all([a.sendAll(N, { pauseEvery: 10 }), b.sendAll(N, { pauseEvery: 10 })])
  await until(() => a.messages() >= 2 * N, 10_000)
  holdNacks = true
  c = await real(addr, 'conf-reprepare', 'c') // view V: the peer is below its cut and cannot fetch
  const v = commits.at(-1)!
  watch = v.viewId
  t.ok(await until(() => p.phase === 'installing', 5_000), `the peer is installing view ${v.viewId}`)
  behind = false
  t.ok(p.have < v.cut, `below the cut (have ${p.have}, cut ${v.cut})`)
  b.g.close() // a member fails before every member installed: the directory abandons V and prepares again
  t.ok(await until(() => out.some((f) => f.t === 'prepared' && f.viewId > v.viewId), 5_000), 'a prepare reached the peer while it installed')
  const prepared = out.find((f) => f.t === 'prepared' && f.viewId > v.viewId)!
  const frozen = prepared.have as number
  t.ok(frozen < v.cut, `it reported have ${frozen}, below view ${v.viewId}'s cut`)
  t.ok(await until(() => haveAtNextCommit >= 0, 10_000), 'the next commit came')
  t.equal(haveAtNextCommit, frozen, 'until it, have stayed at the reported value')
  const w = commits.find((f) => f.viewId === prepared.viewId)!
  t.ok(w.cut >= frozen && (w.members ?? w.added).length >= 0 && !(w.removed ?? []).includes(p.no) && (w.members === undefined || w.members.some((m: { no: number }) => m.no === p.no)),
    `the directory took the report and kept the peer: view ${w.viewId}, cut ${w.cut}`)
  t.notOk(out.some((f) => f.t === 'installed' && f.viewId === v.viewId), `no installed for view ${v.viewId}`)
  t.ok(await until(() => out.some((f) => f.t === 'installed' && f.viewId === w.viewId), 10_000), `installed for view ${w.viewId}`)
  t.ok(viewsOf(peerLog(p)).some((x) => x.includes(`v${v.viewId} `)), `view ${v.viewId} is delivered in its place (I3)`)
  t.ok(viewsOf(peerLog(p)).some((x) => x.includes(`v${w.viewId} `) && x.endsWith('a,p,c')), `the peer delivers view ${w.viewId} of a, p, c`)
  for (let k = 1; k <= 50; k++) p.send(body('p', k))
  await Promise.all([a.sendAll(50, { from: N + 1 }), c.sendAll(50)])
  const total = 2 * N + 150
  t.ok(await until(() => a.messages() >= total && c!.messages() >= 150 && p.messages().length >= total, 20_000), 'everyone delivered every message')
  await until(() => stream(peerLog(p)).at(-1) === stream(a.entries).at(-1) && stream(c.entries).at(-1) === stream(a.entries).at(-1), 5_000)
  t.same(stream(peerLog(p), 1), stream(a.entries, 1), 'the peer\'s stream is a\'s')
  const cFrom = viewsOf(c.entries)[0]!.split(' ')[0]
  t.same(stream(c.entries), stream(a.entries, Number(cFrom)), 'c\'s is a\'s from its view on')
  t.same(viewsOf(peerLog(p)).slice(-2), viewsOf(a.entries).slice(-2), 'the same views at the same slots')
  t.same(check(logsOf([a, b, c], p, { a: N + 50, b: N, c: 50, p: 50 }, ['b']), { oneSeqPerMessage: true }), [], 'guarantees hold')
  t.same(p.errors, [], 'peer: no errors')
  t.same([...a.errors, ...c.errors], [], 'real members: no errors')
})
