/**
 * Real sockets: the `dir` daemon and member processes over UDP multicast on 127.0.0.1. The same checker as the
 * simulator verifies the delivery logs.
 */
import t from 'tap'
import { check } from './fixtures/checker.js'
import { freePort, MemberProc, startDir, until } from './fixtures/procs.js'

t.test('dir + 3 member processes, all sending: identical total order', async (t) => {
  const dir = await startDir(await freePort())
  const N = 2000
  const ms = ['a', 'b', 'c'].map((id) => new MemberProc(id, dir.addr, 'e2e', N, 3))
  t.teardown(async () => {
    for (const m of ms) m.kill()
    await dir.stop()
  })
  t.ok(await until(() => ms.every((m) => m.messages() >= 3 * N), 60_000), 'every member delivered every message')
  const logs = ms.map((m) => ({ id: m.id, survivor: true, entries: m.entries, sent: N }))
  t.same(check(logs), [], 'guarantees hold')
  t.same(ms.flatMap((m) => m.errors), [], 'no errors')
})

t.test('a member is killed mid-stream; the others go on', async (t) => {
  const dir = await startDir(await freePort())
  const N = 3000
  const ms = ['a', 'b', 'c'].map((id) => new MemberProc(id, dir.addr, 'e2e-kill', N, 3))
  t.teardown(async () => {
    for (const m of ms) m.kill()
    await dir.stop()
  })
  await until(() => ms[0]!.messages() > 500, 30_000)
  ms[0]!.kill() // a is the sequencer (first to join): the hardest case
  const survivors = ms.slice(1)
  // Every survivor delivered all it sent and the view without a. (Not "the last entry is a message": a fast group
  // may have delivered everything before that view, which then stays the last entry.)
  const withoutA = (m: MemberProc): boolean => m.entries.some((e) => e.type === 'view' && e.members.length > 0 && !e.members.includes('a'))
  t.ok(await until(() => survivors.every((m) => m.sentDone && m.messages() >= 2 * N && withoutA(m)), 60_000), 'survivors deliver everything they sent')
  await until(() => false, 300)
  const logs = ms.map((m, i) => ({ id: m.id, survivor: i > 0, entries: m.entries, sent: N }))
  const problems = check(logs)
  t.same(problems, [], 'guarantees hold')
})

t.test('safe delivery, cascading kills: the sequencer, then the next one as the view without it shows', async (t) => {
  const dir = await startDir(await freePort())
  const N = 3000
  const ms = ['a', 'b', 'c', 'd'].map((id) => new MemberProc(id, dir.addr, 'e2e-safe', N, 4, 'safe'))
  t.teardown(async () => {
    for (const m of ms) m.kill()
    await dir.stop()
  })
  await until(() => ms[0]!.messages() > 1000, 30_000)
  ms[0]!.kill() // a, the sequencer
  const without = (m: MemberProc, id: string): boolean => m.entries.some((e) => e.type === 'view' && e.members.length > 0 && !e.members.includes(id))
  await until(() => ms.slice(1).some((m) => without(m, 'a')), 20_000)
  ms[1]!.kill() // b, the new sequencer, as soon as a view without a is delivered anywhere
  const survivors = ms.slice(2)
  t.ok(await until(() => survivors.every((m) => m.sentDone && m.entries.filter((e) => e.type === 'message' && e.sender === m.id).length >= N && without(m, 'b')), 60_000), 'survivors deliver everything they sent')
  await until(() => false, 300)
  const logs = ms.map((m, i) => ({ id: m.id, survivor: i > 1, entries: m.entries, sent: N }))
  t.same(check(logs, { uniform: true }), [], 'what any member delivered, both survivors delivered')
})
