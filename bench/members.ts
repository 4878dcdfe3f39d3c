/**
 * `npm run bench:members [-- --n 1000 --procs 4 --senders 3 --messages 20 --size 100 --id-bytes 64 --tick-ms 10
 *  --timeout-ms MS --flush-timeout-ms MS --progress --json]`
 *
 * A group of many members on one host: a real `dir` (with the directory timeouts given, else its defaults) and n
 * real Group members on 127.0.0.1 spread over `procs` child processes (multicast interface 127.0.0.1). As root it
 * re-runs itself inside a private network namespace (`unshare -n`), as bench/run.ts does. Phases, each timed with
 * the directory's and the members' CPU time and the longest event-loop delay of any member process:
 *   join      all n members call Group.join at once; until every one has delivered the view of n
 *   change    one more member joins; until all n + 1 have delivered the view of n + 1
 *   messages  `senders` members send `messages` of `size` bytes each; until every member delivered all of them
 *   idle      3 s of nothing (ticks, heartbeats, pings)
 * Then: whether every member delivered the identical stream (a hash of seq, sender and body), counters summed over
 * all members, each process's RSS. Exits 1 if a member failed or the streams differ.
 * SEQCAST_BENCH_PROF=DIR writes a --cpu-prof of every member process; SEQCAST_BENCH_STALLS=1 logs event-loop stalls.
 * Results: docs/PERFORMANCE.md ("Many members").
 */
import { fork, spawn, spawnSync, type ChildProcess } from 'node:child_process'
import { createHash } from 'node:crypto'
import fs from 'node:fs'
import net from 'node:net'
import os from 'node:os'
import { fileURLToPath } from 'node:url'
import { monitorEventLoopDelay } from 'node:perf_hooks'
import { Group } from '../lib/index.js'

const args = process.argv.slice(2)
const self = fileURLToPath(import.meta.url)
const opt = (flag: string, def: number): number => (args.includes(flag) ? Number(args[args.indexOf(flag) + 1]) : def)

// ---------------------------------------------------------------- child: hosts a share of the members

type ToChild =
  | { cmd: 'join'; dir: string; ids: string[]; expect: number; tickMs: number }
  | { cmd: 'expect'; view: number; messages: number; send?: string[]; count?: number; size?: number }
  | { cmd: 'stats' }
  | { cmd: 'exit' }
type FromChild =
  | { ev: 'ready' }
  | { ev: 'done' }
  | { ev: 'failed'; id: string; code: string; message: string }
  | { ev: 'stats'; stats: Record<string, number>; hashes: string[]; cpuMs: number; rssMB: number; lagMs: number }
  | { ev: 'progress'; joined: number; full: number }

async function child(): Promise<void> {
  const send = (m: FromChild): void => void (process.connected && process.send!(m))
  const cpu = (): number => {
    const u = process.cpuUsage()
    return (u.user + u.system) / 1000
  }
  const lag = monitorEventLoopDelay({ resolution: 10 })
  lag.enable()
  if (process.env.SEQCAST_BENCH_STALLS) {
    let last = performance.now()
    setInterval(() => {
      const now = performance.now()
      if (now - last > 600) console.error(`child ${process.pid}: event loop stalled ${Math.round(now - last)} ms at ${new Date().toISOString()}`)
      last = now
    }, 50).unref()
  }
  const groups = new Map<string, Group>()
  const streams = new Map<string, { hash: ReturnType<typeof createHash>; messages: number; view: number }>()
  let want: { view: number; messages: number } | null = null
  let reported = ''
  let checkQueued = false
  /** Once per event-loop turn, not per delivery: 250 members × their deliveries × 250 streams adds up. */
  const check = (): void => {
    if (checkQueued) return
    checkQueued = true
    setImmediate(() => {
      checkQueued = false
      checkNow()
    })
  }
  const checkNow = (): void => {
    if (!want || groups.size === 0) return
    const key = `${want.view}/${want.messages}`
    if (reported === key) return
    for (const s of streams.values()) if (s.view < want.view || s.messages < want.messages) return
    reported = key
    send({ ev: 'done' })
  }
  process.on('message', async (m: ToChild) => {
    if (m.cmd === 'join') {
      want = { view: m.expect, messages: 0 }
      await Promise.all(m.ids.map(async (id) => {
        const s = { hash: createHash('sha256'), messages: 0, view: 0 }
        streams.set(id, s)
        try {
          const g = await Group.join('big', id, { directory: m.dir, iface: '127.0.0.1', joinTimeoutMs: 300_000, tickMs: m.tickMs })
          groups.set(id, g)
          g.on('error', (err) => send({ ev: 'failed', id, code: err.code, message: err.message }))
          const take = (d: Awaited<ReturnType<Group['receive']>>): void => {
            if (!d) return
            if (d.type === 'view') s.view = d.members.length
            else {
              s.messages++
              s.hash.update(`${d.seq} ${d.sender} ${Buffer.from(d.data).toString()}\n`)
            }
          }
          for (let d = await g.receive({ timeoutMs: 0 }); d; d = await g.receive({ timeoutMs: 0 })) take(d)
          g.on('view', (d) => { take(d); check() })
          g.on('message', (d) => { take(d); check() })
          check()
        } catch (err) {
          send({ ev: 'failed', id, code: (err as { code?: string }).code ?? '?', message: (err as Error).message })
        }
      }))
    } else if (m.cmd === 'expect') {
      want = { view: m.view, messages: m.messages }
      for (const id of m.send ?? []) {
        const g = groups.get(id)!
        void (async () => {
          for (let k = 1; k <= (m.count ?? 0); k++) await g.send(Buffer.from(`${id}:${k}:`.padEnd(m.size ?? 0, '.')))
        })().catch((err: Error) => send({ ev: 'failed', id, code: 'send', message: err.message }))
      }
      check()
    } else if (m.cmd === 'stats') {
      const total: Record<string, number> = {}
      for (const g of groups.values()) {
        for (const [k, v] of Object.entries(g.stats())) if (typeof v === 'number' && !['have', 'delivered', 'stable', 'viewId'].includes(k)) total[k] = (total[k] ?? 0) + v
      }
      const hashes = [...streams.values()].map((s) => s.hash.copy().digest('hex').slice(0, 16))
      send({ ev: 'stats', stats: total, hashes, cpuMs: cpu(), rssMB: Math.round(process.memoryUsage().rss / 2 ** 20), lagMs: Math.round(lag.max / 1e6) })
      lag.reset()
    } else if (m.cmd === 'exit') {
      for (const g of groups.values()) g.close()
      setTimeout(() => process.exit(0), 100)
    }
  })
  process.on('disconnect', () => process.exit(0)) // the parent is gone
  if (args.includes('--progress')) {
    setInterval(() => {
      if (!want) return
      let full = 0
      for (const st of streams.values()) if (st.view >= want.view && st.messages >= want.messages) full++
      send({ ev: 'progress', joined: groups.size, full })
    }, 2000).unref()
  }
  send({ ev: 'ready' })
}

// ---------------------------------------------------------------- parent

async function freePort(): Promise<number> {
  return new Promise((resolve) => {
    const s = net.createServer().listen(0, '127.0.0.1', () => {
      const p = (s.address() as net.AddressInfo).port
      s.close(() => resolve(p))
    })
  })
}

/** CPU time (user + system) of a process so far, ms, from /proc (Linux). */
function procCpuMs(pid: number): number {
  try {
    const f = fs.readFileSync(`/proc/${pid}/stat`, 'utf8').split(') ')[1]!.split(' ')
    return ((Number(f[11]) + Number(f[12])) * 1000) / 100 // clock ticks, USER_HZ = 100
  } catch {
    return NaN
  }
}

const children: ChildProcess[] = []

async function parent(): Promise<void> {
  const n = opt('--n', 1000)
  const procs = opt('--procs', 4)
  const senders = opt('--senders', 3)
  const messages = opt('--messages', 20)
  const tickMs = opt('--tick-ms', 10)
  const idBytes = opt('--id-bytes', 64)
  const size = opt('--size', 100)
  const json = args.includes('--json')
  const say = (s: string): void => void (json || console.log(s))
  const port = await freePort()
  const here = fileURLToPath(new URL('.', import.meta.url))
  const timeouts = ['--timeout-ms', '--flush-timeout-ms'].flatMap((f) => (args.includes(f) ? [f, String(opt(f, 0))] : []))
  const dir = spawn(process.execPath, [`${here}../directory/cli.js`, '--host', '127.0.0.1', '--port', String(port), ...timeouts], { stdio: ['ignore', 'pipe', 'inherit'] })
  await new Promise<void>((r) => dir.stdout!.on('data', (b: Buffer) => b.toString().includes('listening') && r()))
  const dirAddr = `127.0.0.1:${port}`
  const progress = new Map<number, { joined: number; full: number }>()
  const stop = (): void => {
    dir.kill('SIGKILL')
    for (const k of children) k.kill('SIGKILL')
  }
  process.once('exit', stop)
  process.once('SIGINT', () => { stop(); process.exit(130) })
  process.once('SIGTERM', () => { stop(); process.exit(143) })
  const ticker = setInterval(() => {
    if (progress.size === 0) return
    const p = [...progress.values()]
    say(`  … ${p.reduce((a, x) => a + x.joined, 0)} joined, ${p.reduce((a, x) => a + x.full, 0)} done`)
    progress.clear()
  }, 5000)
  ticker.unref()
  const failures: string[] = []
  const waiting = new Map<ChildProcess, (m: FromChild) => void>()
  for (let p = 0; p < procs; p++) {
    const prof = process.env.SEQCAST_BENCH_PROF ? ['--cpu-prof', `--cpu-prof-dir=${process.env.SEQCAST_BENCH_PROF}`] : []
    const k = fork(self, ['--child', ...(args.includes('--progress') ? ['--progress'] : [])], { stdio: ['ignore', 'inherit', 'inherit', 'ipc'], execArgv: prof })
    k.on('message', (m: FromChild) => {
      if (m.ev === 'failed') {
        failures.push(`${m.id}: ${m.code} ${m.message}`)
        if (failures.length <= 5) say(`  ${m.id} failed: ${m.code} ${m.message}`)
        for (const w of waiting.values()) w(m) // a phase waiting for everyone will not complete: stop it
      } else if (m.ev === 'progress') {
        progress.set(p, m)
      } else waiting.get(k)?.(m)
    })
    await new Promise<void>((r) => waiting.set(k, (m) => m.ev === 'ready' && r()))
    children.push(k)
  }
  /** Sends a command to every child, waits for each to answer with `ev` (up to limitMs); returns the answers. */
  const all = async <E extends FromChild['ev']>(cmd: (i: number) => ToChild | null, ev: E, limitMs = 600_000): Promise<Array<Extract<FromChild, { ev: E }>>> => {
    const answers = children.map((k, i) => new Promise<Extract<FromChild, { ev: E }>>((resolve, reject) => {
      const timer = setTimeout(() => reject(new Error(`no ${ev} from child ${i} in ${limitMs} ms (failures: ${failures.slice(0, 5).join('; ')})`)), limitMs)
      waiting.set(k, (m) => {
        if (m.ev === 'failed') {
          clearTimeout(timer)
          reject(new Error(`a member failed: ${failures[0]}`))
          return
        }
        if (m.ev !== ev) return
        clearTimeout(timer)
        resolve(m as Extract<FromChild, { ev: E }>)
      })
    }))
    children.forEach((k, i) => { const c = cmd(i); if (c) k.send(c) })
    return Promise.all(answers)
  }
  const cpuAll = async (): Promise<{ dirMs: number; membersMs: number; stats: Record<string, number>; hashes: string[]; rssMB: number[]; lagMs: number }> => {
    const s = await all(() => ({ cmd: 'stats' }), 'stats')
    const stats: Record<string, number> = {}
    for (const x of s) for (const [k, v] of Object.entries(x.stats)) stats[k] = (stats[k] ?? 0) + v
    return {
      dirMs: procCpuMs(dir.pid!), membersMs: s.reduce((a, x) => a + x.cpuMs, 0), stats, hashes: s.flatMap((x) => x.hashes),
      rssMB: s.map((x) => x.rssMB), lagMs: Math.max(...s.map((x) => x.lagMs)),
    }
  }
  const id = (i: number): string => `member-${i}-`.padEnd(idBytes, 'x')
  const share = (i: number, total: number): string[] => Array.from({ length: total }, (_, j) => j).filter((j) => j % procs === i).map(id)

  say(`${n} members with ${idBytes}-byte ids in ${procs} processes, ${senders} × ${messages} messages of ${size} B, directory ${dirAddr} ${timeouts.join(' ')}, tickMs ${tickMs}; load average ${os.loadavg().map((l) => l.toFixed(1)).join(' ')} on ${os.cpus().length} cores`)
  const rows: Record<string, unknown> = { n, procs, tickMs, idBytes, timeouts: timeouts.join(' '), load: os.loadavg()[0] }
  let before = await cpuAll()
  const phase = async (name: string, run: () => Promise<unknown>): Promise<void> => {
    const t0 = Date.now()
    await run()
    const ms = Date.now() - t0
    const after = await cpuAll()
    const row = { ms, dirCpuMs: Math.round(after.dirMs - before.dirMs), membersCpuMs: Math.round(after.membersMs - before.membersMs), maxLoopDelayMs: after.lagMs }
    rows[name] = row
    say(`${name.padEnd(9)} ${String(ms).padStart(7)} ms   cpu: directory ${String(row.dirCpuMs).padStart(6)} ms, members ${String(row.membersCpuMs).padStart(7)} ms; longest member event-loop delay ${row.maxLoopDelayMs} ms`)
    before = after
  }
  await phase('join', () => all((i) => ({ cmd: 'join', dir: dirAddr, ids: share(i, n), expect: n, tickMs }), 'done'))
  await phase('change', () => all((i) => (i === 0 ? { cmd: 'join', dir: dirAddr, ids: [id(n)], expect: n + 1, tickMs } : { cmd: 'expect', view: n + 1, messages: 0 }), 'done'))
  const sending = Array.from({ length: senders }, (_, s) => Math.floor((s * n) / senders))
  await phase('messages', () => all((i) => ({
    cmd: 'expect', view: n + 1, messages: senders * messages, send: sending.filter((j) => j % procs === i).map(id), count: messages, size,
  }), 'done'))
  await phase('idle 3 s', () => new Promise((r) => setTimeout(r, 3000)))
  const end = await cpuAll()
  const same = new Set(end.hashes).size === 1
  rows.ordered = same
  rows.failures = failures.length
  rows.stats = end.stats
  rows.rssMB = end.rssMB
  say(`streams: ${same ? 'identical at every member' : `DIFFER (${new Set(end.hashes).size} distinct)`}; failures ${failures.length}${failures.length ? ': ' + failures.slice(0, 3).join('; ') : ''}`)
  say(`counters over all members: ${Object.entries(end.stats).filter(([k]) => ['sent', 'delivered', 'views', 'dropped', 'foreign', 'nacksSent', 'retransmitted', 'resent', 'violations', 'sendErrors', 'datagramsIn', 'datagramsOut'].includes(k)).map(([k, v]) => `${k} ${v}`).join(', ')}`)
  say(`process RSS MB: ${end.rssMB.join(' ')}`)
  if (json) console.log(JSON.stringify(rows, null, 2))
  for (const k of children) k.send({ cmd: 'exit' })
  dir.kill('SIGKILL')
  setTimeout(() => process.exit(same && failures.length === 0 ? 0 : 1), 500)
}

if (args.includes('--child')) {
  await child()
} else if (args.includes('--help')) {
  console.log(fs.readFileSync(self, 'utf8').split('*/')[0])
} else if (process.getuid?.() === 0 && !process.env.SEQCAST_BENCH_NETNS && !args.includes('--no-netns')) {
  const r = spawnSync('unshare', ['-n', 'sh', '-c', `ip link set lo up && exec "${process.execPath}" "${self}" ${args.join(' ')}`], {
    stdio: 'inherit', env: { ...process.env, SEQCAST_BENCH_NETNS: '1' },
  })
  process.exit(r.status ?? 1)
} else {
  await parent().catch(async (err: Error) => {
    console.error(`bench: ${err.message}`)
    for (const k of children) if (k.connected) k.send({ cmd: 'exit' })
    await new Promise((r) => setTimeout(r, 1500)) // lets them write their CPU profiles
    process.exit(1)
  })
}
