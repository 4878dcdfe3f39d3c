/**
 * The directory SIGKILLed at random moments of view changes, over real processes: three members send throughout;
 * six times, a member joins (killed 250–650 ms after its process starts) or leaves (0–40 ms later) and the directory is killed, then restarted (with the default
 * rejoin grace) 100–800 ms later. After each restart the group must converge — every live member in one view
 * that holds exactly the live members — and at the end every guarantee holds.
 */
import t from 'tap'
import { check } from './fixtures/checker.js'
import { freePort, MemberProc, startDir, until, type DirProc } from './fixtures/procs.js'
import { rng } from './fixtures/sim-rng.js'

function lastView(m: MemberProc): { viewId: number; members: string[] } | undefined {
  for (let i = m.entries.length - 1; i >= 0; i--) {
    const e = m.entries[i]!
    if (e.type === 'view') return e
  }
  return undefined
}

t.test('the directory killed during view changes and restarted: the group converges every time', async (t) => {
  const r = rng(Number(process.env.SEQCAST_RESTART_SEED ?? 5))
  const port = await freePort()
  let dir: DirProc = await startDir(port)
  const N = 6000
  const originals = ['a', 'b', 'c'].map((id) => new MemberProc(id, dir.addr, 'restart-vc', N, 3))
  const all = [...originals]
  t.teardown(async () => {
    for (const m of all) m.kill()
    await dir.stop()
  })
  const live = (): MemberProc[] => all.filter((m) => !m.exited && !m.left && m.errors.length === 0)
  const converged = (): boolean => {
    const ids = live().map((m) => m.id).sort()
    return live().every((m) => {
      const v = lastView(m)
      return v !== undefined && [...v.members].sort().join() === ids.join()
    })
  }
  t.ok(await until(() => originals.every((m) => m.messages() > 300), 30_000), 'the group runs')
  for (let round = 1; round <= 6; round++) {
    let what: string
    const j = new MemberProc(`j${round}`, dir.addr, 'restart-vc', 50, 1)
    all.push(j)
    if (round % 2 === 0) {
      // A member that is in the view leaves; the directory dies while that change runs.
      await until(() => lastView(j) !== undefined && converged(), 20_000)
      j.command('leave')
      what = `${j.id} leaves`
      await new Promise((res) => setTimeout(res, r() * 40))
    } else {
      what = `${j.id} joins`
      await new Promise((res) => setTimeout(res, 250 + r() * 400)) // the process starts in ~300 ms
    }
    await dir.stop() // SIGKILL
    await new Promise((res) => setTimeout(res, 100 + r() * 700))
    dir = await startDir(port, ['--rejoin-grace-ms', '2500'])
    t.ok(await until(converged, 30_000), `round ${round} (${what}, directory killed): one view of ${live().map((m) => m.id).join(', ')}`)
  }
  t.ok(await until(() => originals.every((m) => m.sentDone && m.entries.filter((e) => e.type === 'message' && e.sender === m.id).length >= N), 60_000),
    'the originals deliver all they sent')
  await new Promise((res) => setTimeout(res, 500))
  const views = originals[0]!.entries.filter((e) => e.type === 'view').map((e) => (e as { viewId: number }).viewId)
  t.same(views, [...views].sort((x, y) => x - y), 'view ids only increase')
  const logs = all.map((m) => ({ id: m.id, survivor: live().includes(m), entries: m.entries, sent: m === originals[0] || originals.includes(m) ? N : m.sentDone ? 50 : 0 }))
  t.same(check(logs, { requireComplete: false }), [], 'guarantees hold')
})
