/**
 * Groups that are not the same group never mix, over real sockets: two `dir` daemons on one host, each with its
 * own group "lobby" — forced onto the same multicast address and port — and two members each, all sending. Every
 * member delivers exactly its own group's messages; the other group's datagrams are counted as foreign.
 * And a member that joins while others send 2 MB messages (1 400 fragments each at Ethernet's datagram size)
 * delivers each message whole or not at all.
 */
import t from 'tap'
import { check } from './fixtures/checker.js'
import { freePort, MemberProc, startDir, until } from './fixtures/procs.js'

t.test('two directories, one group name, one multicast address: two groups', async (t) => {
  const same = ['--mcast-range', '239.255.77.7/32'] // a one-address range: both groups get 239.255.77.7:46100
  const d1 = await startDir(await freePort(), same)
  const d2 = await startDir(await freePort(), same)
  const N = 200
  const g1 = ['a1', 'b1'].map((id) => new MemberProc(id, d1.addr, 'lobby', N, 2))
  const g2 = ['a2', 'b2'].map((id) => new MemberProc(id, d2.addr, 'lobby', N, 2))
  const all = [...g1, ...g2]
  t.teardown(async () => {
    for (const m of all) m.kill()
    await d1.stop()
    await d2.stop()
  })
  t.ok(await until(() => all.every((m) => m.sentDone && m.messages() >= 2 * N), 30_000), 'each member delivered its group\'s messages')
  await new Promise((r) => setTimeout(r, 300))
  for (const [group, other] of [[g1, g2], [g2, g1]] as const) {
    const ids = group.map((m) => m.id)
    for (const m of group) {
      const senders = new Set(m.entries.flatMap((e) => (e.type === 'message' ? [e.sender] : [])))
      t.same([...senders].sort(), ids, `${m.id} delivered messages of ${ids.join(' and ')} only`)
      t.equal(m.messages(), 2 * N, `${m.id}: exactly ${2 * N} messages`)
    }
    t.same(check(group.map((m) => ({ id: m.id, survivor: true, entries: m.entries, sent: N }))), [], `guarantees hold in ${ids.join('+')}'s group`)
    void other
  }
  for (const m of all) m.command('stats')
  t.ok(await until(() => all.every((m) => m.stats !== null), 5000), 'stats')
  t.ok(all.every((m) => (m.stats!.foreign ?? 0) > 0), `the other group's datagrams were seen and counted as foreign (${all.map((m) => m.stats!.foreign).join(', ')})`)
})

t.test('a member joining during 2 MB messages delivers each whole or not at all', async (t) => {
  const dir = await startDir(await freePort())
  const env = { SEQCAST_TEST_PAD: String(2_000_000), SEQCAST_TEST_MAX_DATAGRAM: '1472' }
  const N = 12
  const senders = ['a', 'b'].map((id) => new MemberProc(id, dir.addr, 'big', N, 2, 'agreed', undefined, env))
  t.teardown(async () => {
    for (const m of [...senders, late]) m.kill()
    await dir.stop()
  })
  let late: MemberProc = senders[0]!
  await until(() => senders.every((m) => m.messages() >= 2), 60_000)
  late = new MemberProc('late', dir.addr, 'big', 0, 1, 'agreed', undefined, env)
  t.ok(await until(() => senders.every((m) => m.sentDone && m.messages() >= 2 * N), 120_000), 'the senders deliver all')
  await new Promise((r) => setTimeout(r, 500))
  const msgs = late.entries.filter((e) => e.type === 'message') as Array<{ body: string; len?: number; whole?: boolean }>
  t.ok(msgs.length > 0, `the joiner delivered ${msgs.length} messages`)
  t.same(msgs.filter((m) => !m.whole), [], 'every one of them whole')
  const theirs = senders[0]!.entries.filter((e) => e.type === 'message').map((e) => (e as { body: string }).body)
  const mine = msgs.map((m) => m.body)
  t.same(theirs.filter((b) => mine.includes(b)), mine, 'in the same order as the others')
  t.ok(theirs.slice(theirs.length - mine.length - 2).filter((b) => !mine.includes(b)).length <= 2, 'missing at most the message of each sender begun before its view')
})
