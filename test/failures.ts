/**
 * Failures over real sockets: the directory killed and restarted mid-stream, a member wrongly suspected
 * (paused with SIGSTOP past the failure timeout, then resumed), and a leave the group cannot confirm.
 */
import t from 'tap'
import { check } from './fixtures/checker.js'
import { freePort, MemberProc, startDir, until } from './fixtures/procs.js'
import { ErrorCodes, grp_join, grp_leave, grp_send } from '../lib/index.js'

/** Whether `m` installed a view without `gone` after the view with all three (early views lack late joiners too). */
function dropped(m: MemberProc, gone: string): boolean {
  const full = m.entries.findIndex((e) => e.type === 'view' && e.members.length === 3)
  return full >= 0 && m.entries.slice(full).some((e) => e.type === 'view' && !e.members.includes(gone))
}

t.test('the directory is killed mid-stream: data keeps flowing, a restarted directory rebuilds the group', async (t) => {
  const port = await freePort()
  let dir = await startDir(port)
  const N = 6000
  const ms = ['a', 'b', 'c'].map((id) => new MemberProc(id, dir.addr, 'restart', N, 3))
  t.teardown(async () => {
    for (const m of ms) m.kill()
    await dir.stop()
  })
  await until(() => ms.every((m) => m.messages() > 500), 30_000)
  await dir.stop() // SIGKILL
  const during = ms[1]!.messages()
  t.ok(await until(() => ms[1]!.messages() > during + 1000, 20_000), 'messages still delivered while the directory is down')
  dir = await startDir(port, ['--rejoin-grace-ms', '2500']) // a restart: the default grace
  await new Promise((r) => setTimeout(r, 1500)) // members reconnect and rejoin
  ms[2]!.kill() // a membership change needs the rebuilt directory
  const survivors = ms.slice(0, 2)
  t.ok(await until(() => survivors.every((m) => m.sentDone && m.entries.filter((e) => e.type === 'message' && e.sender === m.id).length >= N) &&
    survivors.every((m) => dropped(m, 'c')), 60_000), 'the restarted directory removes the killed member; survivors deliver all')
  const views = ms[0]!.entries.filter((e) => e.type === 'view').map((e) => (e as { viewId: number }).viewId)
  t.same(views, [...views].sort((x, y) => x - y), 'view ids keep increasing across the restart')
  await new Promise((r) => setTimeout(r, 500))
  t.same(check(ms.map((m, i) => ({ id: m.id, survivor: i < 2, entries: m.entries, sent: N }))), [], 'guarantees hold')
})

t.test('a member paused past the timeout is expelled and told so; the others never wait for it', async (t) => {
  const dir = await startDir(await freePort())
  const N = 4000
  const ms = ['a', 'b', 'c'].map((id) => new MemberProc(id, dir.addr, 'pause', N, 3))
  t.teardown(async () => {
    for (const m of ms) m.kill()
    await dir.stop()
  })
  await until(() => ms.every((m) => m.messages() > 300), 30_000)
  ms[0]!.proc.kill('SIGSTOP') // the sequencer
  t.ok(await until(() => dropped(ms[1]!, 'a'), 10_000), 'the others install a view without it')
  ms[0]!.proc.kill('SIGCONT')
  t.ok(await until(() => ms[0]!.errors.some((e) => e.startsWith('EEXPELLED')), 10_000), 'the paused member gets EEXPELLED')
  const survivors = ms.slice(1)
  t.ok(await until(() => survivors.every((m) => m.sentDone && m.entries.filter((e) => e.type === 'message' && e.sender === m.id).length >= N), 60_000), 'survivors deliver all they sent')
  await new Promise((r) => setTimeout(r, 500))
  // The paused member counts as crashed: whatever it delivered must be consistent with the survivors.
  t.same(check(ms.map((m, i) => ({ id: m.id, survivor: i > 0, entries: m.entries, sent: N }))), [], 'guarantees hold')
})

t.test('a leave the group cannot confirm fails with ELEAVE_TIMEOUT; it does not pass for a clean one', async (t) => {
  const dir = await startDir(await freePort(), ['--timeout-ms', '20000']) // the stopped member stays a member meanwhile
  const other = new MemberProc('a', dir.addr, 'unconfirmed', 0, 2)
  t.teardown(async () => {
    other.proc.kill('SIGCONT')
    other.kill()
    await dir.stop()
  })
  const b = await grp_join('unconfirmed', 'b', { directory: dir.addr, iface: '127.0.0.1', leaveTimeoutMs: 500 })
  t.ok(await until(() => b.view?.members.length === 2, 10_000), 'both in the view')
  other.proc.kill('SIGSTOP') // it will never acknowledge b's message: b's leave cannot complete
  await grp_send(b, 'b:1')
  const errors: string[] = []
  b.on('error', (e) => errors.push(e.code))
  await t.rejects(grp_leave(b), { code: ErrorCodes.LEAVE_TIMEOUT }, 'the leave rejects')
  t.same(errors, [ErrorCodes.LEAVE_TIMEOUT], 'and the error event says the same')
  await t.rejects(grp_send(b, 'b:2'), { code: ErrorCodes.LEAVE_TIMEOUT }, 'the handle is closed with that error')
})
