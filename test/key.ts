/**
 * Keyed groups over real sockets (loopback only): members given the key file `dir keygen` wrote deliver the
 * identical stream; a stranger on the segment who replays and re-sends mutated copies of everything it hears gets
 * nothing delivered and is counted; a member with another key fails with EAUTH instead of stalling.
 */
import t from 'tap'
import fs from 'node:fs'
import { check } from './fixtures/checker.js'
import { keyFile } from './fixtures/keyfile.js'
import { freePort, MemberProc, startDir, until } from './fixtures/procs.js'
import { stranger } from './fixtures/stranger.js'

t.test('a keyed group: a stranger replaying and re-sending what it hears changes nothing, and is counted', { timeout: 120_000 }, async (t) => {
  const key = keyFile(t, 'group.key')
  t.equal(fs.statSync(key).mode & 0o777, 0o600, 'dir keygen writes the key for its owner only')
  const dir = await startDir(await freePort(), ['--key-file', key])
  const N = 1500
  const ids = ['a', 'b', 'c']
  const ms = ids.map((id) => new MemberProc(id, dir.addr, 'keyed', N, ids.length, 'agreed', undefined, { SEQCAST_KEY_FILE: key, SEQCAST_TEST_PAUSE: '10:5' }))
  t.teardown(async () => {
    for (const m of ms) m.kill()
    await dir.stop()
  })
  t.ok(await until(() => ms.every((m) => m.entries.some((e) => e.type === 'view' && e.members.length === 3)), 20_000), 'all three joined')
  const st = await stranger(dir.addr, 'keyed', 500, 20, Buffer.from(fs.readFileSync(key, 'utf8').trim(), 'hex'))
  t.teardown(() => st.close())
  const { heard, targets } = st
  t.ok(await until(() => heard.length >= 20, 20_000), 'the stranger hears the group')
  let sent = 0
  while (!ms.every((m) => m.sentDone) && sent < 30_000) {
    for (let k = 0; k < 40; k++) {
      const g = Buffer.from(heard[sent % heard.length]!)
      // Half replayed as heard, half with one byte changed (a forged field); each target gets both.
      if (Math.floor(sent / targets.length) % 2 === 1) g[24 + (sent % Math.max(1, g.length - 24))] ^= 0x01
      const to = targets[sent % targets.length]!
      st.send(g, to)
      sent++
    }
    await new Promise((r) => setTimeout(r, 5))
  }
  t.ok(await until(() => ms.every((m) => m.messages() === ids.length * N), 60_000), `every member delivered all ${ids.length * N} (${sent} replayed or forged datagrams arrived)`)
  t.same(check(ms.map((m) => ({ id: m.id, survivor: true, entries: m.entries, sent: N }))), [], 'identical, complete streams')
  t.same(ms.flatMap((m) => m.errors), [], 'nobody failed')
  ms[0]!.command('stats')
  t.ok(await until(() => ms[0]!.stats !== null, 5000))
  const s = ms[0]!.stats!
  t.ok(s.rejected > 0 && s.replayed > 0, `a counted them: rejected ${s.rejected}, replayed ${s.replayed}`)
})

t.test('a member with another key fails with EAUTH; the group goes on without it', { timeout: 60_000 }, async (t) => {
  const key = keyFile(t, 'right.key')
  const other = keyFile(t, 'wrong.key')
  const dir = await startDir(await freePort(), ['--key-file', key])
  const a = new MemberProc('a', dir.addr, 'keyed2', 0, 1, 'agreed', undefined, { SEQCAST_KEY_FILE: key })
  t.teardown(async () => { a.kill(); await dir.stop() })
  t.ok(await until(() => a.entries.some((e) => e.type === 'view'), 10_000), 'a joined')
  const b = new MemberProc('b', dir.addr, 'keyed2', 0, 1, 'agreed', undefined, { SEQCAST_KEY_FILE: other })
  t.teardown(() => b.kill())
  t.ok(await until(() => b.errors.length > 0, 20_000), 'b fails')
  t.match(b.errors[0], /^EAUTH: /, b.errors[0])
  t.ok(await until(() => (a.entries.filter((e) => e.type === 'view').at(-1) as { members: string[] }).members.join() === 'a', 20_000), 'a is alone again')
  t.same(a.errors, [], 'a is unharmed')
})
