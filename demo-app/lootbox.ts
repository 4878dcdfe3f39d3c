#!/usr/bin/env node
/**
 * The loot box: a replicated state machine on seqcast, where order is the whole point.
 *
 * Every process is a replica of the same shuffled list of 1..100 000 and a draw counter. A draw is a group message
 * `draw N`; every replica applies draws in the delivered order, so the N numbers a draw gets are the same at every
 * replica, no number is ever handed out twice, and all replicas agree — with no lock server. A replica that joins a
 * group with history starts from the group's state at its first view (state transfer, LootBox.hooks()), so replicas
 * may join at any time, and one that crashed comes back as a new process.
 *
 *   npm run lootbox -- [--clients 4] [--draws 200] [--late-joiners 0] [--crash-rejoin 0] [--dir host:port]
 *
 * forks `clients` processes that draw from the moment each has joined (1–5 numbers per draw, at random moments);
 * `--late-joiners N` starts N more while the others draw, `--crash-rejoin N` kills a replica with SIGKILL N times
 * and starts it again under its name. Each process draws `draws` times. Once all have drawn, one sends `end`; every
 * replica reports its state there. Checked: every number handed out to any process — those killed included, as
 * they reported each draw the moment they applied it — is distinct; every replica ends in the same state; at every
 * view, every replica that had it was in the same state (a joiner's first view is the state it restored).
 */
import { fork, type ChildProcess } from 'node:child_process'
import { writeFileSync } from 'node:fs'
import readline from 'node:readline'
import { fileURLToPath } from 'node:url'
import { parseArgs } from 'node:util'
import { ErrorCodes, Group, type SeqcastError } from '../lib/index.js'
import { DirectoryServer } from '../directory/server.js'
import { readKey } from '../lib/seal.js'
import { drawMessage, LootBox, shuffled } from './lootstate.js'

// `lootbox serve ...`: the loot box as replicated TCP servers that clients draw from (lootserve.ts).
if (process.argv[2] === 'serve') process.exit(await (await import('./lootserve.js')).main(process.argv.slice(3)))

const USAGE = `usage: npm run lootbox -- [--clients N] [--draws N] [--late-joiners N] [--crash-rejoin N] [--dir HOST:PORT]
  --clients N       replicas started at once (default 4)
  --draws N         draws each replica process makes (default 200)
  --late-joiners N  replicas started while the others draw (default 0)
  --crash-rejoin N  times a replica is killed (SIGKILL) and started again as a new process (default 0; needs 2+ clients)
  --dir H:P         a directory to use (default: one started here)
  --report FILE     write what every replica process reported (JSON; test/lootbox.ts checks it)
Replicas draw as soon as each has joined: one that joins later starts from the group's state at its first view.

       npm run lootbox -- serve --help   the loot box as replicated TCP servers plain clients draw from`

/** What a replica process tells the runner, one JSON line each on stdout. */
type Line =
  | { t: 'joined'; counter: number; state: string; ms: number }
  | { t: 'view'; viewId: number; state: string }
  | { t: 'sent'; k: number; n: number }
  | { t: 'got'; k: number; numbers: number[] }
  | { t: 'drawn' }
  | { t: 'final'; counter: number; applied: number; state: string }

/** stdout is a pipe, written synchronously (Linux): a line is out even if SIGKILL comes the next instant. */
function tell(l: Line): void {
  process.stdout.write(JSON.stringify(l) + '\n')
}

const sleep = (ms: number): Promise<void> => new Promise((r) => setTimeout(r, ms))

/** One replica: joins (with the state hooks), draws `draws` times, applies everything until `end`, leaves. */
async function replica(name: string, label: string, dir: string, draws: number): Promise<void> {
  const box = new LootBox()
  const key = process.env.SEQCAST_KEY_FILE || undefined
  let g: Group
  for (let tries = 0; ; tries++) {
    try {
      g = await Group.join('lootbox', name, { directory: dir, iface: '127.0.0.1', key, state: box.hooks() })
      break
    } catch (err) {
      // Back after a crash: the directory may not have removed the killed process yet.
      if ((err as SeqcastError).code !== ErrorCodes.DUPLICATE_MEMBER || tries >= 50) throw err
      await sleep(100)
    }
  }
  tell({ t: 'joined', counter: box.counter, state: box.state, ms: Math.round(performance.now()) })

  // The state machine: one loop applies every delivery in the total order, one at a time (the snapshot for a
  // joiner is taken when this loop takes the view). Own draws are recognised by their tag, `label.k`.
  let mine = 0
  const apply = (async () => {
    for await (const d of g) {
      if (d.type === 'view') {
        tell({ t: 'view', viewId: d.viewId, state: box.state })
        continue
      }
      const body = Buffer.from(d.data).toString()
      if (body === 'end') return
      const r = box.apply(body)
      const dot = r ? r.tag.lastIndexOf('.') : -1
      if (r && r.tag.slice(0, dot) === label) {
        tell({ t: 'got', k: Number(r.tag.slice(dot + 1)), numbers: r.numbers })
        if (++mine === draws) tell({ t: 'drawn' })
      }
    }
  })()
  process.on('message', (m) => {
    if (m === 'end') g.send('end').catch((err) => console.error(`${label}: cannot send end: ${(err as Error).message}`))
  })
  for (let k = 0; k < draws; k++) {
    const n = 1 + Math.floor(Math.random() * 5)
    tell({ t: 'sent', k, n })
    await g.send(drawMessage(n, `${label}.${k}`))
    await sleep(Math.random() * 4)
  }
  await apply
  tell({ t: 'final', counter: box.counter, applied: box.applied, state: box.state })
  await g.leave()
}

let values: Record<string, string | boolean | undefined>
try {
  values = parseArgs({
    options: {
      clients: { type: 'string', default: '4' }, draws: { type: 'string', default: '200' },
      'late-joiners': { type: 'string', default: '0' }, 'crash-rejoin': { type: 'string', default: '0' },
      dir: { type: 'string' }, report: { type: 'string' }, child: { type: 'string' }, label: { type: 'string' }, help: { type: 'boolean', short: 'h' },
    },
  }).values
} catch (err) {
  console.error(`lootbox: ${(err as Error).message}\n${USAGE}`)
  process.exit(2)
}
if (values.help) {
  console.log(USAGE)
  process.exit(0)
}
const clients = Number(values.clients)
const draws = Number(values.draws)
const late = Number(values['late-joiners'])
const crashes = Number(values['crash-rejoin'])
if (!(Number.isInteger(clients) && clients >= 1 && clients <= 32 && Number.isInteger(draws) && draws >= 1 && draws <= 10_000)) {
  console.error('lootbox: --clients must be 1-32 and --draws 1-10000')
  process.exit(2)
}
if (!(Number.isInteger(late) && late >= 0 && clients + late <= 32 && Number.isInteger(crashes) && crashes >= 0 && crashes <= 100)) {
  console.error('lootbox: --late-joiners must be 0 or more (clients + late joiners at most 32), --crash-rejoin 0-100')
  process.exit(2)
}
if (crashes > 0 && clients < 2) {
  // With one replica a kill leaves nobody holding the state: the next one would start the box afresh.
  console.error('lootbox: --crash-rejoin needs --clients 2 or more')
  process.exit(2)
}

if (values.child) {
  try {
    await replica(values.child as string, values.label as string, values.dir as string, draws)
    process.exit(0)
  } catch (err) {
    console.error(`${values.label}: ${(err as SeqcastError).code ?? ''} ${(err as Error).message}`, process.env.LOOTBOX_DEBUG ? (err as Error).stack : '')
    process.exit(1)
  }
}

/** A replica process as the runner sees it. */
interface Proc {
  label: string
  name: string
  role: 'initial' | 'late' | 'rejoined'
  child: ChildProcess
  joined?: { counter: number; state: string; ms: number; othersDrawing: number }
  views: Map<number, string>
  /** Draw k asked for n numbers / got these. */
  sent: Map<number, number>
  got: Map<number, number[]>
  drawn: boolean
  final?: { counter: number; applied: number; state: string }
  killed: boolean
  exited: boolean
  closed: Promise<void>
}

let server: DirectoryServer | undefined
let dir = values.dir as string | undefined
if (!dir) {
  // With SEQCAST_KEY_FILE the directory is keyed too (a directory and its members share one key).
  const key = process.env.SEQCAST_KEY_FILE ? readKey(process.env.SEQCAST_KEY_FILE) : null
  server = new DirectoryServer({ host: '127.0.0.1', port: 0, rejoinGraceMs: 0, key }) // on a fresh port no directory ran before
  const a = await server.listen()
  dir = `${a.host}:${a.port}`
}
const extra = [late ? `, ${late} join${late === 1 ? 's' : ''} late` : '', crashes ? `, ${crashes} killed and back` : ''].join('')
console.log(`${clients} replicas draw ${draws} times each, concurrently${extra} (directory ${dir})`)
const self = fileURLToPath(import.meta.url)
const started = performance.now()
const procs: Proc[] = []
let failure = ''
let ending = false
let done!: () => void
const finished = new Promise<void>((r) => (done = r))
const watchdog = setTimeout(() => stop('the run did not end within 120 s'), 120_000)

function stop(why: string): void {
  if (!failure) failure = why
  for (const p of procs) if (!p.exited) p.child.kill('SIGKILL')
  done()
}

function start(name: string, role: Proc['role']): void {
  const label = role === 'rejoined' ? `${name}#${procs.filter((p) => p.name === name).length + 1}` : name
  const child = fork(self, ['--child', name, '--label', label, '--dir', dir!, '--draws', String(draws)], { stdio: ['ignore', 'pipe', 'inherit', 'ipc'] })
  const p: Proc = { label, name, role, child, views: new Map(), sent: new Map(), got: new Map(), drawn: false, killed: false, exited: false, closed: Promise.resolve() }
  p.closed = new Promise((r) => child.once('close', () => r()))
  readline.createInterface({ input: child.stdout! }).on('line', (s) => {
    let l: Line
    try {
      l = JSON.parse(s) as Line
    } catch {
      return
    }
    if (l.t === 'joined') p.joined = { ...l, othersDrawing: procs.filter((o) => o !== p && o.joined && !o.drawn && !o.exited).length }
    else if (l.t === 'view') p.views.set(l.viewId, l.state)
    else if (l.t === 'sent') p.sent.set(l.k, l.n)
    else if (l.t === 'got') p.got.set(l.k, l.numbers)
    else if (l.t === 'drawn') p.drawn = true
    else if (l.t === 'final') p.final = l
    step()
  })
  child.once('exit', (code, signal) => {
    p.exited = true
    if (p.killed && !failure) start(name, 'rejoined')
    else if (code !== 0) return stop(`${label} exited with ${code ?? signal}`)
    step()
  })
  procs.push(p)
}

/** Starts late joiners and kills replicas as the draws progress, then ends the run once every live replica drew. */
let lateDone = 0
let crashDone = 0
function step(): void {
  if (failure) return
  const live = procs.filter((p) => !p.exited && !p.killed)
  if (ending) {
    if (live.length === 0) done()
    return
  }
  const total = clients * draws
  const got = procs.reduce((n, p) => n + p.got.size, 0)
  // Spread over the first 40 % of the first replicas' draws (they go on drawing meanwhile), joins and kills by turns.
  const events = late + crashes
  for (let e = lateDone + crashDone; e < events && got >= Math.floor((total * 0.4 * (e + 1)) / (events + 1)); e = lateDone + crashDone) {
    const crashTurn = crashDone < crashes && (lateDone >= late || e % 2 === 1)
    if (!crashTurn) {
      start(`client${clients + ++lateDone}`, 'late')
      continue
    }
    // Kill a replica that has joined while another that has joined lives on (it holds the state for the next one).
    const joined = live.filter((p) => p.joined && p.got.size > 0)
    if (joined.length < 2) break
    const drawing = joined.filter((p) => !p.drawn)
    const pool = drawing.length > 0 ? drawing : joined
    const victim = pool[Math.floor(Math.random() * pool.length)]!
    victim.killed = true
    victim.child.kill('SIGKILL')
    crashDone++
    live.splice(live.indexOf(victim), 1)
  }
  const pending = lateDone < late || crashDone < crashes || procs.some((p) => p.killed && !p.exited)
  if (!pending && live.every((p) => p.drawn) && live.length > 0) {
    ending = true
    live[0]!.child.send('end')
  }
}

for (let i = 0; i < clients; i++) start(`client${i + 1}`, 'initial')
await finished
clearTimeout(watchdog)
await Promise.all(procs.map((p) => p.closed))
const secs = (performance.now() - started) / 1000
await server?.close()
if (failure) {
  console.error(`lootbox: ${failure}`)
  process.exit(1)
}

const finals = procs.filter((p) => p.final)
const first = finals[0]!.final!
const agree = finals.every((p) => p.final!.state === first.state && p.final!.applied === first.applied) && finals.length === procs.filter((p) => !p.killed).length
// Every number reported by any process, killed ones included; all must be among the numbers the history handed out.
const all = procs.flatMap((p) => [...p.got.values()].flat())
const distinct = new Set(all).size === all.length
const handedOut = new Set(shuffled().subarray(0, first.counter))
const inHistory = all.every((x) => handedOut.has(x))
// Draws a killed process sent but never saw applied may have been ordered anyway: their numbers went to
// nobody alive. At most what those draws asked for; none without kills.
const unseen = procs.filter((p) => p.killed).reduce((n, p) => n + [...p.sent].filter(([k]) => !p.got.has(k)).reduce((m, [, x]) => m + x, 0), 0)
const orphans = first.counter - all.length
const accounted = orphans >= 0 && orphans <= unseen
// At every view, every replica that took it was in the same state: a joiner's first view holds the state it restored.
const atView = new Map<number, string>()
let consistent = true
for (const p of procs) {
  for (const [v, s] of p.views) {
    if ((atView.get(v) ?? s) !== s) consistent = false
    atView.set(v, s)
  }
}
// And each joiner's first view was taken by another replica too: the state it restored is compared, not assumed.
for (const p of procs) {
  const v = p.role === 'initial' || !p.joined || p.views.size === 0 ? undefined : Math.min(...p.views.keys())
  if (v !== undefined && !procs.some((o) => o !== p && o.views.has(v))) consistent = false
}
for (const p of procs) {
  const nums = [...p.got.values()].flat()
  const from = p.joined && p.role !== 'initial' ? `joined at counter ${p.joined.counter} (${p.joined.ms} ms after it started) while ${p.joined.othersDrawing} others drew; ` : ''
  const fate = p.killed ? 'killed (SIGKILL)' : `state ${p.final?.state}, counter ${p.final?.counter}`
  const role = p.role === 'initial' ? '' : ` (${p.role})`
  console.log(`  ${p.label}${role}: ${from}got ${nums.length} numbers (first ${nums.slice(0, 5).join(', ')} …), ${fate}`)
}
if (values.report) {
  const rows = procs.map((p) => ({
    label: p.label, name: p.name, role: p.role, killed: p.killed, joined: p.joined ?? null, final: p.final ?? null,
    views: Object.fromEntries(p.views), sent: Object.fromEntries(p.sent), got: Object.fromEntries(p.got),
  }))
  writeFileSync(values.report as string, JSON.stringify({ clients, draws, late, crashes, procs: rows }))
}
const ok = distinct && agree && inHistory && accounted && consistent
const note = orphans > 0 ? ` (${orphans} in draws of killed replicas that died before they saw them)` : ''
console.log(
  `${first.applied} draws in ${secs.toFixed(2)} s; ${first.counter} numbers handed out${note}: ${distinct && inHistory && accounted ? 'all distinct' : 'DUPLICATES OR LOST'}; ` +
  `replicas ${agree ? 'agree' : 'DISAGREE'}${consistent ? '' : '; STATES DIFFER AT A VIEW'}` +
  (late + crashes > 0 ? `; ${procs.filter((p) => p.role !== 'initial' && p.joined).length} joiners started from the state at their first view` : ''),
)
process.exit(ok ? 0 : 1)
