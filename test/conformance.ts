/**
 * Conformance, first half (issue 15): a member written from docs/PROTOCOL.md alone (test/fixtures/rawpeer.ts, raw
 * sockets and the schema codec) plays each role beside real members and a real directory, and every stream must be
 * the same. Roles here: member, repair source; conformance-roles.ts: joiner, leaver, sequencer after a crash.
 * Duty ids (PROTOCOL.md) in brackets in each test's name.
 */
import t from 'tap'
import { check } from './fixtures/checker.js'
import { body, canNft, directory, peerLog, portOf, PortLoss, real, stream, trio, until, viewsOf } from './fixtures/conform.js'

const N = 300
const BIG = new Set([50, 150]) // fragmented messages (5 000 bytes in 1 400-byte datagrams)

t.test('[E1,E2,E3,J1,J2,J3,I1,I3,I4,A1,A2,A3,A4,A5,A6,A7] member: everyone sends, 20 % loss at the peer; its stream equals every real member\'s', async (t) => {
  const { server, addr } = await directory()
  const { a, p, b } = await trio(t, server, addr, 'conf-member', { lossIn: 0.2, lossOut: 0.05, seed: 7 })
  for (let k = 1; k <= N; k++) p.send(body('p', k, BIG.has(k) ? 5000 : 0))
  await Promise.all([a.sendAll(N, { big: BIG }), b.sendAll(N, { big: BIG })])
  const all = 3 * N
  t.ok(await until(() => a.messages() >= all && b.messages() >= all && p.messages().length >= all, 30_000), 'every member delivered every message')
  const logs = [
    { id: 'a', survivor: true, entries: a.entries, sent: N },
    { id: 'b', survivor: true, entries: b.entries, sent: N },
    { id: 'p', survivor: true, entries: peerLog(p), sent: N },
  ]
  t.same(check(logs, { oneSeqPerMessage: true }), [], 'guarantees hold')
  const from = Math.max(...[a.entries, b.entries].map((e) => e.find((x) => x.type === 'view' && x.members.length === 3)!.seq!))
  t.same(stream(peerLog(p), from), stream(a.entries, from), 'the peer\'s stream is a\'s: same slots, messages, order')
  t.same(stream(b.entries, from), stream(a.entries, from), 'b\'s too')
  t.same(viewsOf(peerLog(p)).slice(-1), viewsOf(a.entries).slice(-1), 'same view at the same slot')
  t.ok(p.counters.lostIn > 0 && p.counters.nacksSent > 0, `the peer lost ${p.counters.lostIn} datagrams and asked ${p.counters.nacksSent} NACKs`)
  t.same(p.errors, [], 'peer: no errors')
  t.same([...a.errors, ...b.errors], [], 'real members: no errors')
})

t.test('[R1,R2,R3,E4,I1,I2,A6] repair source: real members fetch from the peer (holder at a view change, unicast fan-out, loss at b)', { skip: canNft() }, async (t) => {
  const { server, addr } = await directory({ transport: 'unicast' })
  const loss = new PortLoss()
  const { a, p, b } = await trio(t, server, addr, 'conf-repair', { seed: 3 }, () => loss.destroy())
  loss.drop(portOf(b.g), 100) // b hears nothing for a while: the view change below finds it behind
  for (let k = 1; k <= N; k++) p.send(body('p', k))
  const sends = Promise.all([a.sendAll(N, { big: BIG, pauseEvery: 20 }), b.sendAll(N, { pauseEvery: 20 })])
  await until(() => a.messages() > N, 20_000)
  const c = await real(addr, 'conf-repair', 'c') // a view change while b lags: b fetches up to the cut from the holder
  t.teardown(() => c.g.close())
  await new Promise((r) => setTimeout(r, 300))
  loss.clear()
  loss.drop(portOf(b.g), 15)
  await sends
  const all = 3 * N
  t.ok(await until(() => [a, b, c].every((m) => m.messages() >= (m === c ? 1 : all)) && p.messages().length >= all && b.messages() >= all, 30_000), 'every member delivered every message')
  const logs = [a, b, c].map((m) => ({ id: m.id, survivor: true, entries: m.entries, sent: m === c ? 0 : N }))
  logs.push({ id: 'p', survivor: true, entries: peerLog(p), sent: N })
  t.same(check(logs, { oneSeqPerMessage: true }), [], 'guarantees hold')
  t.same(stream(b.entries), stream(a.entries), 'b\'s stream is a\'s')
  t.same(stream(peerLog(p), 1), stream(a.entries, 1), 'and the peer\'s')
  t.ok(p.counters.servedAsSource > 0, `the peer, not the sequencer, answered ${p.counters.servedAsSource} NACKs (${p.counters.repairOrders} ORDERs, ${p.counters.repairData} messages)`)
  t.same(p.errors, [], 'peer: no errors')
  t.same([...a.errors, ...b.errors, ...c.errors], [], 'real members: no errors')
})
