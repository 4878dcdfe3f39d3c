/**
 * Conformance, first half (issue 15), continued: the raw peer (test/fixtures/rawpeer.ts, written from
 * docs/PROTOCOL.md) as a joiner, a leaver, and the sequencer after the real one crashed. Duty ids (PROTOCOL.md §5.1)
 * in brackets in each test's name.
 */
import t from 'tap'
import { check } from './fixtures/checker.js'
import { MemberProc } from './fixtures/procs.js'
import { RawPeer, type Frame } from './fixtures/rawpeer.js'
import { body, directory, peerLog, real, stream, trio, until, viewsOf } from './fixtures/conform.js'

t.test('[J1,J2,J3,J4,I1,I3,I4,A1,A4,A6] joiner: the peer joins a running group and delivers its stream from its view on', async (t) => {
  const { server, addr } = await directory()
  const a = await real(addr, 'conf-join', 'a')
  const b = await real(addr, 'conf-join', 'b')
  const p = new RawPeer({ directory: addr, group: 'conf-join', id: 'p', lossIn: 0.1, seed: 11 })
  t.teardown(async () => {
    p.close()
    a.g.close()
    b.g.close()
    await server.close()
  })
  const N = 600
  const big = new Set([100, 250, 260, 400]) // fragmented: the peer may join mid-message (J4)
  const sends = Promise.all([a.sendAll(N, { big, pauseEvery: 20 }), b.sendAll(N, { big, pauseEvery: 20 })])
  await until(() => a.messages() > 200, 20_000)
  await p.join()
  const M = 100
  for (let k = 1; k <= M; k++) p.send(body('p', k))
  await sends
  t.ok(await until(() => [a, b].every((m) => m.messages() >= 2 * N + M) && p.messages().filter((d) => d.sender === 'p').length >= M, 30_000), 'everyone delivered everything sent')
  await until(() => stream(peerLog(p)).length > 0 && stream(peerLog(p)).at(-1) === stream(a.entries).at(-1), 10_000)
  const first = peerLog(p).find((e) => e.type === 'view')!
  t.equal(viewsOf(a.entries).find((v) => v.startsWith(`${first.seq} `)), viewsOf([first])[0], 'the peer\'s first view is at the same slot in a\'s stream')
  const from = first.seq!
  t.same(stream(peerLog(p), from), stream(a.entries, from), 'from its view on, the peer\'s stream is a\'s')
  t.same(stream(b.entries), stream(a.entries), 'b\'s is a\'s')
  const logs = [
    { id: 'a', survivor: true, entries: a.entries, sent: N },
    { id: 'b', survivor: true, entries: b.entries, sent: N },
    { id: 'p', survivor: true, entries: peerLog(p), sent: M },
  ]
  t.same(check(logs, { oneSeqPerMessage: true }), [], 'guarantees hold')
  t.same(p.errors, [], 'peer: no errors')
  t.same([...a.errors, ...b.errors], [], 'real members: no errors')
})

t.test('[L1,L2,L3,L4,F1,F2,I1,I2,E4,D3,D4] leaver: the peer leaves mid-stream, is released, its stream is a prefix of the others\'', async (t) => {
  const { server, addr } = await directory()
  const out: Frame[] = []
  const { a, p, b } = await trio(t, server, addr, 'conf-leave', { lossIn: 0.1, seed: 5, hooks: { frameOut: (f) => void out.push(f) } })
  const N = 600
  const M = 200
  for (let k = 1; k <= M; k++) p.send(body('p', k))
  const sends = Promise.all([a.sendAll(N, { pauseEvery: 20 }), b.sendAll(N, { pauseEvery: 20 })])
  await until(() => a.messages() > 300, 20_000)
  await p.leave()
  t.equal(p.phase, 'left', 'released: the peer closed')
  await sends
  // The view that excludes the peer: the first without it after one with it.
  const exclusionOf = (es: typeof a.entries) => es.find((e, i) => e.type === 'view' && !e.members.includes('p') && es.slice(0, i).some((x) => x.type === 'view' && x.members.includes('p')))
  const without = (es: typeof a.entries): boolean => exclusionOf(es) !== undefined
  t.ok(await until(() => [a, b].every((m) => m.messages() >= 2 * N + M && without(m.entries)), 30_000), 'a and b go on: every message, and the view without the peer')
  const ps = stream(peerLog(p))
  t.ok(ps.length > 0, `the peer delivered ${ps.length} messages`)
  t.same(ps, stream(a.entries).slice(0, ps.length), 'the peer\'s stream is a prefix of a\'s')
  t.same(stream(b.entries), stream(a.entries), 'b\'s is a\'s')
  const exclusion = exclusionOf(a.entries)!
  t.notOk(viewsOf(peerLog(p)).some((v) => v.includes(`v${(exclusion as { viewId: number }).viewId} `)), 'the peer never delivers the view that excludes it')
  t.notOk(out.some((f) => f.t === 'installed' && f.viewId >= (exclusion as { viewId: number }).viewId), 'nor sends installed for it (L2)')
  const logs = [
    { id: 'a', survivor: true, entries: a.entries, sent: N },
    { id: 'b', survivor: true, entries: b.entries, sent: N },
    { id: 'p', survivor: false, entries: peerLog(p), sent: M },
  ]
  t.same(check(logs, { oneSeqPerMessage: true }), [], 'guarantees hold (the leaver\'s messages delivered by all)')
  t.same(p.errors, [], 'peer: no errors')
  t.same([...a.errors, ...b.errors], [], 'real members: no errors')
})

t.test('[Q1,Q2,Q3,Q4,Q5,R1,R2,R3,R4,F1,I2,I5,A2,A5,D2,D3] sequencer after a crash: the real sequencer is killed, the peer orders for the rest', async (t) => {
  const { server, addr } = await directory()
  const N = 1500
  const a = new MemberProc('a', addr, 'conf-seq', N, 4, 'agreed', undefined, { SEQCAST_TEST_PAUSE: '50:10' })
  t.teardown(() => a.kill())
  t.ok(await until(() => a.entries.some((e) => e.type === 'view'), 15_000), 'a (a process) joined first: the sequencer')
  const p = new RawPeer({ directory: addr, group: 'conf-seq', id: 'p', lossIn: 0.05, seed: 9 })
  await p.join()
  const b = await real(addr, 'conf-seq', 'b')
  const c = await real(addr, 'conf-seq', 'c')
  t.teardown(async () => {
    p.close()
    b.g.close()
    c.g.close()
    await server.close()
  })
  for (let k = 1; k <= N; k++) p.send(body('p', k))
  const sends = Promise.all([b.sendAll(N, { pauseEvery: 50 }), c.sendAll(N, { pauseEvery: 50 })])
  await until(() => b.messages() > 1500, 30_000)
  a.kill()
  const ordered = p.counters.slotsOrdered
  const without = (es: typeof b.entries): boolean => es.some((e) => e.type === 'view' && !e.members.includes('a'))
  t.ok(await until(() => without(b.entries), 15_000), 'a view without a')
  await sends
  const survivors = [
    { id: 'b', entries: b.entries },
    { id: 'c', entries: c.entries },
    { id: 'p', entries: peerLog(p) },
  ]
  const own = (s: { id: string; entries: typeof b.entries }): number => s.entries.filter((e) => e.type === 'message' && e.sender === s.id).length
  const done = await until(() => (survivors[2]!.entries = peerLog(p)) && survivors.every((s) => own(s) >= N && without(s.entries)) && stream(b.entries).length === stream(peerLog(p)).length && stream(c.entries).length === stream(b.entries).length, 30_000)
  t.ok(done, 'every survivor delivered everything it sent')
  if (!done) t.comment(JSON.stringify({ own: survivors.map(own), len: survivors.map((s) => stream(s.entries).length), peer: { have: p.have, stable: p.stable, phase: p.phase, counters: p.counters }, b: b.g.stats(), c: c.g.stats() }))
  t.ok(p.isSequencer(), 'the peer is the sequencer (the smallest number left)')
  t.ok(p.counters.slotsOrdered > ordered, `the peer ordered ${p.counters.slotsOrdered - ordered} slots after the crash`)
  survivors[2]!.entries = peerLog(p) // a fresh copy: the one above was taken before the wait
  const logs = [
    { id: 'a', survivor: false, entries: a.entries, sent: N },
    ...survivors.map((s) => ({ ...s, survivor: true, sent: N })),
  ]
  const problems = check(logs)
  t.same(problems, [], 'guarantees hold: each message once, same order everywhere, nothing of a survivor lost')
  if (problems.length > 0) t.comment(JSON.stringify({ pv: viewsOf(peerLog(p)), bv: viewsOf(b.entries), p: stream(peerLog(p)).slice(-5), b: stream(b.entries).slice(-5), c: stream(c.entries).slice(-5), pHave: p.have, counters: p.counters }))
  t.same(stream(peerLog(p)), stream(b.entries), 'the peer\'s stream is b\'s')
  t.same(stream(c.entries), stream(b.entries), 'c\'s is b\'s')
  t.same(p.errors, [], 'peer: no errors')
  t.same([...b.errors, ...c.errors], [], 'real members: no errors')
})
