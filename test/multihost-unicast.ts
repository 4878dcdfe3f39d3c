/**
 * A network without multicast (AWS, GCP, Azure): hosts in network namespaces on a bridge, every host dropping all
 * multicast it receives with nftables (`meta pkttype multicast drop`), and 10–25 % of UDP besides. With the
 * directory on `--transport unicast` the group passes the same failure tests as on multicast (a member, the
 * sequencer, the directory killed); on `auto` (the default) it detects the lack of multicast and moves to unicast;
 * on `multicast` members fail with ENOMULTICAST instead of hanging. Needs root (CI runs it).
 */
import t from 'tap'
import { execFileSync } from 'node:child_process'
import { check } from './fixtures/checker.js'
import { DIR_CLI, MemberProc, startDir, until } from './fixtures/procs.js'
import { canRunNetns, TestNet, type Host } from './fixtures/netns.js'

const skip = canRunNetns()

/** `dir ls --json`, asked from `host`. */
function groups(host: Host, dir: string): Array<{ name: string; transport: string; members: unknown[] }> {
  const out = execFileSync('ip', ['netns', 'exec', host.netns, process.execPath, DIR_CLI, 'ls', '--dir', dir, '--json'], { encoding: 'utf8' })
  return JSON.parse(out)
}

/** The sequencer of the latest view `m` delivered (members start at once: any of them may have joined first). */
function sequencerOf(ms: MemberProc[], m: MemberProc): MemberProc {
  const v = m.entries.filter((e) => e.type === 'view').at(-1) as { sequencer: string }
  return ms.find((x) => x.id === v.sequencer)!
}

/** Hosts 2…n drop all multicast and `10 + 5i` % of UDP; host 1 runs the directory. */
function cloud(tag: string, n: number): TestNet {
  const net = new TestNet(tag, n)
  for (const [i, h] of net.hosts.slice(1).entries()) {
    net.noMulticast(h)
    net.loss(h, 10 + i * 5)
  }
  return net
}

t.test('unicast, no multicast anywhere, 10–25 % loss: a member and then the sequencer killed', { skip }, async (t) => {
  const net = cloud('squa', 5)
  t.teardown(() => net.destroy())
  const [dirHost, ...hosts] = net.hosts
  const dir = await startDir(4720, ['--transport', 'unicast'], dirHost)
  const N = 1000
  const ids = ['a', 'b', 'c', 'd']
  const ms = ids.map((id, i) => new MemberProc(id, dir.addr, 'cloud', N, ids.length, 'agreed', hosts[i]))
  t.teardown(async () => {
    for (const m of ms) m.kill()
    await dir.stop()
  })
  t.ok(await until(() => ms.every((m) => m.messages() > 300), 60_000), 'traffic flows')
  t.match(groups(dirHost!, dir.addr), [{ name: 'cloud', transport: 'unicast' }], 'dir ls shows the transport')
  const member = ms.find((m) => m !== sequencerOf(ms, ms[0]!))!
  member.kill()
  const watcher = ms.find((m) => m !== member)!
  // It goes on: more messages, and a view without the killed member (not "the last entry is a message": a fast
  // group may have delivered every message before that view, which then stays the last entry).
  const without = (): boolean => watcher.entries.some((e) => e.type === 'view' && !(e as { members: string[] }).members.includes(member.id))
  t.ok(await until(() => watcher.messages() > 1200 && without(), 60_000), 'goes on')
  t.ok(await until(() => (watcher.entries.filter((e) => e.type === 'view').at(-1) as { members: string[] }).members.length === 3, 30_000), 'in a view without it')
  const seq = sequencerOf(ms, watcher)
  seq.kill()
  const survivors = ms.filter((m) => m !== member && m !== seq)
  t.ok(await until(() => survivors.every((m) => m.sentDone && m.entries.filter((e) => e.type === 'message' && e.sender === m.id).length >= N), 120_000), 'survivors deliver all they sent')
  await new Promise((r) => setTimeout(r, 1000))
  t.same(check(ms.map((m) => ({ id: m.id, survivor: survivors.includes(m), entries: m.entries, sent: N }))), [], 'guarantees hold')
})

t.test('unicast, no multicast anywhere: the directory killed and restarted mid-stream, then the sequencer killed', { skip }, async (t) => {
  const net = cloud('squb', 4)
  t.teardown(() => net.destroy())
  const [dirHost, ...hosts] = net.hosts
  let dir = await startDir(4720, ['--transport', 'unicast'], dirHost)
  const N = 1000
  const ids = ['a', 'b', 'c']
  // Paced (10 messages every 10 ms): still sending while the directory is down and after it is back.
  const ms = ids.map((id, i) => new MemberProc(id, dir.addr, 'cloud', N, ids.length, 'agreed', hosts[i], { SEQCAST_TEST_PAUSE: '10:10' }))
  t.teardown(async () => {
    for (const m of ms) m.kill()
    await dir.stop()
  })
  t.ok(await until(() => ms.every((m) => m.messages() > 200), 60_000), 'traffic flows')
  await dir.stop()
  const during = ms[1]!.messages()
  t.ok(await until(() => ms[1]!.messages() > during + 200, 30_000), 'data flows while the directory is down')
  dir = await startDir(4720, ['--transport', 'unicast', '--rejoin-grace-ms', '2500'], dirHost)
  t.ok(await until(() => groups(dirHost!, dir.addr).some((g) => g.members.length === 3), 20_000), 'the group is rebuilt from the rejoins')
  t.match(groups(dirHost!, dir.addr), [{ transport: 'unicast' }], 'still on unicast')
  const seq = sequencerOf(ms, ms[0]!)
  seq.kill() // the rebuilt directory must run the flush
  const survivors = ms.filter((m) => m !== seq)
  t.ok(await until(() => survivors.every((m) => m.sentDone && m.entries.filter((e) => e.type === 'message' && e.sender === m.id).length >= N), 120_000), 'survivors deliver all they sent')
  await new Promise((r) => setTimeout(r, 1000))
  t.same(check(ms.map((m) => ({ id: m.id, survivor: m !== seq, entries: m.entries, sent: N }))), [], 'guarantees hold')
})

t.test('auto (the default), no multicast anywhere: the group finds out and moves to unicast', { skip }, async (t) => {
  const net = cloud('squc', 4)
  t.teardown(() => net.destroy())
  const [dirHost, ...hosts] = net.hosts
  const dir = await startDir(4720, [], dirHost)
  const N = 500
  const ids = ['a', 'b', 'c']
  const ms = ids.map((id, i) => new MemberProc(id, dir.addr, 'auto', N, ids.length, 'agreed', hosts[i]))
  t.teardown(async () => {
    for (const m of ms) m.kill()
    await dir.stop()
  })
  t.ok(await until(() => groups(dirHost!, dir.addr).some((g) => g.transport === 'unicast'), 30_000), 'dir ls: the group moved to unicast')
  t.ok(await until(() => ms.every((m) => m.sentDone) && ms.every((m) => m.messages() === ids.length * N), 90_000), 'every member delivers every message')
  t.same(ms.flatMap((m) => m.errors), [], 'no member failed')
  t.same(check(ms.map((m) => ({ id: m.id, survivor: true, entries: m.entries, sent: N }))), [], 'guarantees hold')
})

t.test('multicast only, no multicast anywhere: joiners fail with ENOMULTICAST instead of hanging', { skip }, async (t) => {
  const net = cloud('squd', 4)
  t.teardown(() => net.destroy())
  const [dirHost, ...hosts] = net.hosts
  const dir = await startDir(4720, ['--transport', 'multicast'], dirHost)
  const ms = ['a', 'b', 'c'].map((id, i) => new MemberProc(id, dir.addr, 'mc', 10, 3, 'agreed', hosts[i]))
  t.teardown(async () => {
    for (const m of ms) m.kill()
    await dir.stop()
  })
  // They start at once: the first to join is alone in its view (its sequencer) and has nothing to hear; the two
  // others hear its probes, not its multicast.
  const deaf = (): MemberProc[] => ms.filter((m) => m.errors.some((e) => e.startsWith('ENOMULTICAST')))
  t.ok(await until(() => deaf().length === 2, 30_000), 'all but the first fail with ENOMULTICAST', { errors: ms.map((m) => m.errors) })
  const first = ms.find((m) => !deaf().includes(m))!
  t.same(first.errors, [], 'the first is unharmed')
  t.comment(deaf()[0]?.errors[0] ?? '')
  t.match(groups(dirHost!, dir.addr), [{ transport: 'multicast' }])
})
