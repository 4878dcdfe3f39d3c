/**
 * Real kernel networking across hosts: `dir` on one network namespace, members on others, joined by veth pairs to a
 * bridge; UDP multicast across it; nftables drops 10–30 % of incoming UDP on every member host. Members, and the
 * sequencer, are SIGKILLed mid-stream; the checker verifies the delivery logs.
 */
import t from 'tap'
import { check } from './fixtures/checker.js'
import { MemberProc, startDir, until } from './fixtures/procs.js'
import { canRunNetns, TestNet } from './fixtures/netns.js'

const skip = canRunNetns()

t.test('4 hosts, 20 % UDP loss, a member and then the sequencer killed', { skip }, async (t) => {
  const net = new TestNet('sqc', 5)
  t.teardown(() => net.destroy())
  const [dirHost, ...memberHosts] = net.hosts
  for (const [i, h] of memberHosts.entries()) net.loss(h, 10 + i * 5)
  const dir = await startDir(4720, [], dirHost)
  const N = 1500
  const ids = ['a', 'b', 'c', 'd']
  const ms = ids.map((id, i) => new MemberProc(id, dir.addr, 'hosts', N, ids.length, 'agreed', memberHosts[i]))
  t.teardown(async () => {
    for (const m of ms) m.kill()
    await dir.stop()
  })
  t.ok(await until(() => ms.every((m) => m.messages() > 300), 60_000), 'traffic flows')
  ms[3]!.kill() // a member
  t.ok(await until(() => ms[1]!.messages() > 1500, 60_000), 'goes on')
  ms[0]!.kill() // the sequencer
  const survivors = ms.slice(1, 3)
  t.ok(await until(() => survivors.every((m) => m.sentDone) && survivors.every((m) => m.entries.filter((e) => e.type === 'message' && e.sender === m.id).length >= N), 120_000), 'survivors deliver all they sent')
  await new Promise((r) => setTimeout(r, 1000))
  const logs = ms.map((m, i) => ({ id: m.id, survivor: i === 1 || i === 2, entries: m.entries, sent: N }))
  t.same(check(logs), [], 'guarantees hold')
})

t.test('4 hosts, 10–25 % UDP loss, the directory killed and restarted mid-stream, then a member killed', { skip }, async (t) => {
  const net = new TestNet('sqd', 5)
  t.teardown(() => net.destroy())
  const [dirHost, ...memberHosts] = net.hosts
  for (const [i, h] of memberHosts.entries()) net.loss(h, 10 + i * 5)
  let dir = await startDir(4720, [], dirHost)
  const N = 1500
  const ids = ['a', 'b', 'c', 'd']
  const ms = ids.map((id, i) => new MemberProc(id, dir.addr, 'hosts', N, ids.length, 'agreed', memberHosts[i]))
  t.teardown(async () => {
    for (const m of ms) m.kill()
    await dir.stop()
  })
  t.ok(await until(() => ms.every((m) => m.messages() > 300), 60_000), 'traffic flows')
  await dir.stop()
  const during = ms[1]!.messages()
  t.ok(await until(() => ms[1]!.messages() > during + 300, 30_000), 'data flows while the directory is down')
  dir = await startDir(4720, ['--rejoin-grace-ms', '2500'], dirHost) // a restart: the default grace
  await new Promise((r) => setTimeout(r, 2000))
  ms[0]!.kill() // the sequencer: the rebuilt directory must run the flush
  const survivors = ms.slice(1)
  t.ok(await until(() => survivors.every((m) => m.sentDone && m.entries.filter((e) => e.type === 'message' && e.sender === m.id).length >= N), 120_000), 'survivors deliver all they sent')
  // Then the same point everywhere: under 25 % loss a member may still be installing the last view.
  const last = (m: MemberProc): string => JSON.stringify(m.entries.at(-1))
  t.ok(await until(() => survivors.every((m) => last(m) === last(survivors[0]!)), 30_000), 'survivors reach the same point')
  t.same(check(ms.map((m, i) => ({ id: m.id, survivor: i > 0, entries: m.entries, sent: N }))), [], 'guarantees hold')
})
