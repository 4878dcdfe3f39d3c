/**
 * The loot-box demo end to end (real processes): concurrent draws never share a number and replicas agree — also
 * with replicas that join while others draw and replicas killed with SIGKILL that come back as new processes, each
 * starting from the group's state at its first view (state transfer). The run's report (--report) is checked here
 * on its own, not only the demo's verdict.
 */
import t from 'tap'
import { spawn, spawnSync } from 'node:child_process'
import { mkdtempSync, readFileSync } from 'node:fs'
import os from 'node:os'
import path from 'node:path'
import { ROOT } from './fixtures/procs.js'
import { shuffled } from '../demo-app/lootstate.js'

const LOOTBOX = `${ROOT}dist/demo-app/lootbox.js`

interface Row {
  label: string
  role: 'initial' | 'late' | 'rejoined'
  killed: boolean
  joined: { counter: number; state: string; othersDrawing: number } | null
  final: { counter: number; applied: number; state: string } | null
  views: Record<string, string>
  sent: Record<string, number>
  got: Record<string, number[]>
}

/** Runs the demo (asynchronously: the test's own timers go on) and returns its exit code, output and report. */
async function run(args: string[]): Promise<{ code: number | null; out: string; procs: Row[] }> {
  const report = path.join(mkdtempSync(path.join(os.tmpdir(), 'lootbox-')), 'report.json')
  const p = spawn(process.execPath, [LOOTBOX, ...args, '--report', report], { stdio: ['ignore', 'pipe', 'pipe'] })
  let out = ''
  p.stdout!.on('data', (b: Buffer) => (out += b.toString()))
  p.stderr!.on('data', (b: Buffer) => (out += b.toString()))
  const code = await new Promise<number | null>((resolve) => p.on('close', resolve))
  let procs: Row[] = []
  try {
    procs = (JSON.parse(readFileSync(report, 'utf8')) as { procs: Row[] }).procs
  } catch {
    // no report: the run failed before its end (the exit code says so)
  }
  return { code, out, procs }
}

t.test('4 processes draw concurrently: all numbers distinct, all replicas equal', async (t) => {
  const r = spawnSync(process.execPath, [LOOTBOX, '--clients', '4', '--draws', '100'], { encoding: 'utf8', timeout: 60_000 })
  t.equal(r.status, 0, r.stderr)
  t.match(r.stdout, /400 draws in .* all distinct; replicas agree/)
})

t.test('late joiners and crash-rejoin: every number distinct across the run, every replica the same state', { timeout: 150_000 }, async (t) => {
  const { code, out, procs } = await run(['--clients', '3', '--draws', '300', '--late-joiners', '2', '--crash-rejoin', '3'])
  t.equal(code, 0, out)
  t.match(out, /all distinct; replicas agree; 5 joiners started from the state at their first view/)
  t.equal(procs.filter((p) => p.role === 'late').length, 2, 'two late joiners')
  t.equal(procs.filter((p) => p.killed).length, 3, 'three replicas killed')
  t.equal(procs.filter((p) => p.role === 'rejoined').length, 3, 'each came back as a new process')

  // Every number handed out to any process — killed ones included, as they reported it — is distinct.
  const all = procs.flatMap((p) => Object.values(p.got).flat())
  t.equal(new Set(all).size, all.length, `${all.length} numbers reported, all distinct`)
  t.ok(procs.filter((p) => p.killed).every((p) => Object.keys(p.got).length > 0), 'the killed replicas had drawn before they died')

  // Every replica alive at the end is in the same state, and the numbers reported are exactly the history's.
  const finals = procs.filter((p) => !p.killed)
  t.ok(finals.every((p) => p.final), 'every replica not killed reported its final state')
  const f = finals[0]!.final!
  for (const p of finals) t.same(p.final, f, `${p.label}: state ${p.final?.state}`)
  const history = new Set(shuffled().subarray(0, f.counter))
  t.ok(all.every((x) => history.has(x)), 'every number reported was handed out by the common history')
  // The numbers of the history nobody reported went to draws a killed process sent and died before it saw applied.
  const unseen = procs.filter((p) => p.killed).reduce((n, p) => n + Object.entries(p.sent).filter(([k]) => !p.got[k]).reduce((m, [, x]) => m + x, 0), 0)
  t.ok(f.counter - all.length >= 0 && f.counter - all.length <= unseen, `${f.counter - all.length} numbers unreported, at most the ${unseen} asked by draws in flight at a kill`)
  // Each draw got what it asked for (the box is far from empty): nothing handed out twice or skipped.
  for (const p of procs) {
    for (const [k, nums] of Object.entries(p.got)) if (nums.length !== p.sent[k]) t.fail(`${p.label} draw ${k}: asked ${p.sent[k]}, got ${nums.length}`)
  }

  // Every joiner started from the state at its first view: the same state every other replica had at that view.
  const at = new Map<string, Set<string>>()
  for (const p of procs) for (const [v, s] of Object.entries(p.views)) at.set(v, (at.get(v) ?? new Set()).add(s))
  t.ok([...at.values()].every((s) => s.size === 1), `at each of ${at.size} views, every replica that took it was in the same state`)
  for (const p of procs.filter((p) => p.role !== 'initial')) {
    t.ok(p.joined && p.joined.counter > 0, `${p.label} started from history (counter ${p.joined?.counter})`)
    const first = Object.keys(p.views).map(Number).sort((a, b) => a - b)[0]
    const others = procs.filter((o) => o !== p && o.views[String(first)] !== undefined)
    t.ok(first !== undefined && others.length > 0 && others.every((o) => o.views[String(first)] === p.joined!.state),
      `${p.label}: restored ${p.joined?.state}, the state ${others.map((o) => o.label).join(', ')} had at view ${first}`)
  }
  const overlapped = procs.filter((p) => p.role !== 'initial' && (p.joined?.othersDrawing ?? 0) > 0).length
  t.comment(`${overlapped} of 5 joiners joined while others were drawing`)
})

t.test('--help and arguments', async (t) => {
  const help = spawnSync(process.execPath, [LOOTBOX, '--help'], { encoding: 'utf8' })
  t.equal(help.status, 0)
  t.match(help.stdout, /--late-joiners N/)
  t.match(help.stdout, /--crash-rejoin N/)
  t.notMatch(help.stdout, /must join before/)
  const one = spawnSync(process.execPath, [LOOTBOX, '--clients', '1', '--crash-rejoin', '1'], { encoding: 'utf8' })
  t.equal(one.status, 2, 'a kill with one replica would lose the state: refused')
  t.match(one.stderr, /--crash-rejoin needs --clients 2 or more/)
})
