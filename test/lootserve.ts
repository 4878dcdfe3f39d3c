/**
 * `lootbox serve` end to end: replicas as separate processes, driven by plain TCP clients written with node:net only
 * (no seqcast code in the client), as a user's `nc` or ten-line script would.
 */
import t from 'tap'
import { spawn, spawnSync, type ChildProcess } from 'node:child_process'
import net from 'node:net'
import { freePort, ROOT, startDir, until, type DirProc } from './fixtures/procs.js'
import { shuffled, SIZE } from '../demo-app/lootstate.js'

const LOOTBOX = `${ROOT}dist/demo-app/lootbox.js`

interface Replica { name: string; proc: ChildProcess; port: number; out: string[] }

async function startReplica(name: string, dir: string, extra: string[] = []): Promise<Replica> {
  const proc = spawn(process.execPath, [LOOTBOX, 'serve', '--port', '0', '--host', '127.0.0.1', '--dir', dir, '--name', name, ...extra], { stdio: ['ignore', 'pipe', 'pipe'] })
  const out: string[] = []
  let buf = ''
  const port = await new Promise<number>((resolve, reject) => {
    proc.stdout!.on('data', (b: Buffer) => {
      buf += b.toString()
      let i
      while ((i = buf.indexOf('\n')) >= 0) {
        out.push(buf.slice(0, i))
        const m = /listening on 127\.0\.0\.1:(\d+)/.exec(buf.slice(0, i))
        buf = buf.slice(i + 1)
        if (m) resolve(Number(m[1]))
      }
    })
    proc.stderr!.on('data', (b: Buffer) => out.push(`stderr: ${b}`))
    proc.once('exit', (code) => reject(new Error(`replica ${name} exited with ${code}: ${out.join('\n')}`)))
  })
  return { name, proc, port, out }
}

async function stopAll(ps: Array<ChildProcess | undefined>): Promise<void> {
  await Promise.all(ps.map((p) => p && p.exitCode === null && p.signalCode === null
    ? new Promise<void>((resolve) => {
      p.once('exit', () => resolve())
      p.kill('SIGKILL')
    })
    : undefined))
}

/** A plain line client: net.Socket, lines in and out. */
class LineClient {
  readonly socket: net.Socket
  readonly lines: string[] = []
  closed = false
  private buf = ''
  private waiters: Array<() => void> = []

  constructor(port: number) {
    this.socket = net.connect(port, '127.0.0.1')
    this.socket.on('data', (b: Buffer) => {
      this.buf += b.toString()
      let i
      while ((i = this.buf.indexOf('\n')) >= 0) {
        this.lines.push(this.buf.slice(0, i))
        this.buf = this.buf.slice(i + 1)
      }
      this.wake()
    })
    this.socket.on('error', () => {})
    this.socket.on('close', () => {
      this.closed = true
      this.wake()
    })
  }

  private wake(): void {
    for (const w of this.waiters.splice(0)) w()
  }

  send(s: string | Buffer): void {
    this.socket.write(s)
  }

  /** The next line; null if the connection closed first. */
  async next(ms = 15_000): Promise<string | null> {
    const end = Date.now() + ms
    while (this.lines.length === 0) {
      if (this.closed) return null
      if (Date.now() > end) throw new Error('no reply')
      await new Promise<void>((r) => {
        this.waiters.push(r)
        setTimeout(r, 100)
      })
    }
    return this.lines.shift()!
  }

  async ask(line: string): Promise<string | null> {
    this.send(`${line}\n`)
    return this.next()
  }

  close(): void {
    this.socket.destroy()
  }
}

const NUMBERS = /^\d+( \d+)*$/
const sleep = (ms: number): Promise<void> => new Promise((r) => setTimeout(r, ms))

function stats(line: string | null): Record<string, string> {
  if (!line?.startsWith('stats ')) throw new Error(`not a stats line: ${line}`)
  return Object.fromEntries(line.slice(6).split(' ').map((kv) => kv.split('=') as [string, string]))
}

function ledger(s: Record<string, string>): Map<string, number> {
  return new Map(s.handed === '-' ? [] : s.handed!.split(',').map((e) => {
    const i = e.lastIndexOf(':')
    return [e.slice(0, i), Number(e.slice(i + 1))]
  }))
}

let dir: DirProc
const procs: Array<ChildProcess | undefined> = []
t.before(async () => {
  dir = await startDir(await freePort())
})
t.teardown(async () => {
  await stopAll(procs)
  await dir?.stop()
})

t.test('serve --help explains it; bad arguments exit 2', async (t) => {
  const h = spawnSync(process.execPath, [LOOTBOX, 'serve', '--help'], { encoding: 'utf8' })
  t.equal(h.status, 0)
  for (const s of ['draw N', 'exhausted', 'stats', 'lost', 'never reissued', 'dies between', '--max-clients']) t.match(h.stdout, s)
  for (const args of [['--port', 'x'], ['--port', '70000'], ['--max-clients', '0'], ['--name', 'a b'], ['--bogus']]) {
    const r = spawnSync(process.execPath, [LOOTBOX, 'serve', ...args], { encoding: 'utf8' })
    t.equal(r.status, 2, args.join(' '))
    t.match(r.stderr, /lootbox serve: /)
  }
})

t.test('bad input: one clear line each, the connection stays usable; bounds; lost and exhausted', async (t) => {
  const r = await startReplica('edge1', dir.addr, ['--group', 'lootedge', '--max-clients', '3'])
  procs.push(r.proc)
  const c = new LineClient(r.port)
  t.match(await c.ask('draw 2'), /^\d+ \d+$/)
  const cases: Array<[string | Buffer, RegExp]> = [
    ['fetch 4\n', /^error: unknown command "fetch"/],
    ['draw\n', /^error: draw needs a count/],
    ['draw 0\n', /^error: N is zero/],
    ['draw -2\n', /^error: N is negative/],
    ['draw 2.5\n', /^error: N is not an integer/],
    ['draw many\n', /^error: N is not an integer/],
    ['draw 1001\n', /^error: N is over the maximum of 1000/],
    ['draw 123456789012345678901234567890\n', /^error: N is over the maximum/],
    ['\n', /^error: empty line/],
    [`${'x'.repeat(300)}\n`, /^error: line too long \(over 256 bytes\)/],
    [Buffer.from([0, 1, 2, 0xff, 0xfe, 13, 10]), /^error: unknown command/],
    ['draw 3\r\n', /^\d+ \d+ \d+$/],
    ['help\n', /^commands: draw N/],
  ]
  for (const [line, re] of cases) {
    c.send(line)
    t.match(await c.next(), re, JSON.stringify(line.toString()))
    t.match(await c.ask('draw 1'), /^\d+$/, 'still usable')
  }
  // An endless line: one error as soon as it is too long, nothing held, then the next line is served.
  for (let i = 0; i < 200; i++) c.send('y'.repeat(5000))
  t.match(await c.next(), /^error: line too long/)
  c.send('\ndraw 2\n')
  t.match(await c.next(), /^\d+ \d+$/)
  // Pipelined requests, good and bad mixed, more than a connection may have waiting: answered in order.
  c.send('draw 1\nbogus\ndraw 2\nstats\n'.repeat(40))
  for (let i = 0; i < 40; i++) {
    t.match(await c.next(), /^\d+$/)
    t.match(await c.next(), /^error: unknown command/)
    t.match(await c.next(), /^\d+ \d+$/)
    t.match(await c.next(), /^stats counter=\d+ /)
  }
  t.equal(c.lines.length, 0, 'one reply per line')
  // A client that does not read while it floods: the replica stops reading it and serves the others.
  const flood = new LineClient(r.port)
  flood.socket.pause()
  flood.send('stats\n'.repeat(200_000))
  t.match(await c.ask('draw 1'), /^\d+$/)
  flood.close()

  // Random bytes, newlines among them, from two connections at once: every reply is one of the protocol's lines.
  const rnd = ((x: number) => () => (x = (Math.imul(x, 1103515245) + 12345) >>> 0) / 2 ** 32)(16)
  const fuzz = [new LineClient(r.port), new LineClient(r.port)]
  for (let k = 0; k < 40; k++) {
    for (const f of fuzz) {
      const b = Buffer.from(Array.from({ length: 1 + Math.floor(rnd() * 600) }, () => rnd() < 0.02 ? 10 : rnd() < 0.3 ? 32 + Math.floor(rnd() * 95) : Math.floor(rnd() * 256)))
      f.send(rnd() < 0.2 ? Buffer.concat([Buffer.from('draw '), b]) : b)
    }
  }
  for (const f of fuzz) {
    f.send('\nfuzzend\n') // ends the last random line; its reply marks the end of the replies to the random ones
    const replies: string[] = []
    for (let l; (l = await f.next()) !== null && !l.includes('"fuzzend"');) replies.push(l)
    t.ok(replies.length > 0 && replies.every((l) => /^(error: |\d+( \d+)*$|stats |commands: |exhausted$)/.test(l)), 'every fuzz reply is a protocol line')
    t.match(await f.ask('draw 3'), /^\d+ \d+ \d+$/, 'and the connection is usable')
    f.close()
  }

  // A half-closed connection (printf 'draw 2\nstats' | nc): its requests are answered, then it is closed.
  const half = new LineClient(r.port)
  half.socket.end('draw 2\nstats')
  t.match(await half.next(), /^\d+ \d+$/)
  t.match(await half.next(), /^stats /)
  t.equal(await half.next(), null, 'closed after the last reply')

  // A client gone mid-draw: its numbers are lost, counted, and harm nobody. (First, the replica has seen the
  // others go: the client limit is 3.)
  let before = stats(await c.ask('stats'))
  for (let i = 0; i < 100 && before.clients !== '1'; i++, await sleep(50)) before = stats(await c.ask('stats'))
  t.equal(before.clients, '1', 'the flooding and half-closed clients are gone')
  const gone = new LineClient(r.port)
  await new Promise<void>((resolve) => gone.socket.write('draw 5\n', () => resolve()))
  gone.socket.resetAndDestroy() // gone at once (RST), before the draw can be delivered
  await sleep(300)
  let after = stats(await c.ask('stats'))
  for (let i = 0; i < 50 && after.counter !== String(Number(before.counter) + 5); i++, await sleep(20)) after = stats(await c.ask('stats'))
  t.equal(Number(after.counter), Number(before.counter) + 5, 'its 5 numbers are handed out (below: never again)')
  const goneNumbers = Array.from(shuffled().subarray(Number(before.counter), Number(before.counter) + 5))
  // Counted lost if the replica saw the connection close before the draw was delivered (a race with the RST here).
  t.ok([0, 5].includes(Number(after.lost) - Number(before.lost)), 'lost counts them or, closed too late, not')

  // Max clients: with 3 open (c and two more), a fourth gets one line and is closed; a slot freed serves again.
  for (let i = 0; i < 100 && after.clients !== '1'; i++, await sleep(50)) after = stats(await c.ask('stats'))
  const c2 = new LineClient(r.port)
  const c3 = new LineClient(r.port)
  t.match(await c2.ask('draw 1'), /^\d+$/)
  t.match(await c3.ask('draw 1'), /^\d+$/)
  const c4 = new LineClient(r.port)
  t.match(await c4.next(), /^error: this replica serves 3 clients already/)
  t.equal(await c4.next(), null)
  c3.close()
  let served = false
  for (let i = 0; i < 20 && !served; i++) {
    await sleep(100)
    const c5 = new LineClient(r.port)
    served = NUMBERS.test((await c5.ask('draw 1')) ?? '')
    c5.close()
  }
  t.ok(served, 'a freed slot serves again')
  c2.close()

  // Exhaustion: draw what is left (the last draw gets fewer numbers), then `exhausted` for every draw after.
  const left = Number(stats(await c.ask('stats')).left)
  const full = Math.floor((left - 1) / 1000)
  const first = left - 1 - full * 1000
  c.send(`draw ${first}\n` + 'draw 1000\n'.repeat(full) + 'draw 1000\ndraw 1\nstats\n')
  const got: number[] = []
  const firstLine = await c.next()
  t.equal(firstLine!.split(' ').length, first)
  got.push(...firstLine!.split(' ').map(Number))
  for (let i = 0; i < full; i++) {
    const line = (await c.next())!
    if (line.split(' ').length !== 1000) t.fail(`draw 1000 got ${line.slice(0, 60)}`)
    got.push(...line.split(' ').map(Number))
  }
  t.match(await c.next(), /^\d+$/, 'the last number: a partial draw')
  t.equal(await c.next(), 'exhausted')
  const end = stats(await c.next())
  t.equal(end.counter, String(SIZE))
  t.equal(end.left, '0')
  t.equal(await c.ask('draw 4'), 'exhausted', 'and again')
  t.equal(new Set(got).size, got.length, 'distinct')
  t.notOk(goneNumbers.some((n) => got.includes(n)), 'the gone client\'s numbers were not handed out again')
  c.close()
})

t.test('3 replicas, many concurrent clients, the sequencer\'s replica killed and another started mid-run', async (t) => {
  const reps = new Map<string, Replica>()
  for (const r of await Promise.all(['r1', 'r2', 'r3'].map((n) => startReplica(n, dir.addr)))) {
    reps.set(r.name, r)
    procs.push(r.proc)
  }
  const received = new Map<string, number[]>() // numbers received, by the replica that answered
  let requests = 0
  let cutLosses = 0
  const problems: string[] = []
  let victim = '' // the replica killed: the one that orders the group's draws, the harder case

  /** One client: draws of 1–10 (some pipelined), a bad line now and then; moves to another replica if its own dies. */
  const client = async (id: number, replica: string, rounds: number): Promise<void> => {
    let at = replica
    let c = new LineClient(reps.get(at)!.port)
    for (let i = 0; i < rounds; i++) {
      const batch = Array.from({ length: 1 + (i % 3) }, (_, k) => ((id * 7 + i * 3 + k) % 10) + 1)
      const bad = i % 10 === 5
      c.send(batch.map((n) => `draw ${n}\n`).join('') + (bad ? 'draw 0\n' : ''))
      requests += batch.length
      for (const n of batch) {
        const line = await c.next()
        if (line === null) {
          if (at !== victim) problems.push(`client ${id}: ${at} closed the connection`)
          cutLosses++
          continue
        }
        if (!NUMBERS.test(line) || line.split(' ').length !== n) problems.push(`client ${id}: draw ${n} on ${at} got ${line}`)
        else {
          if (!received.has(at)) received.set(at, [])
          received.get(at)!.push(...line.split(' ').map(Number))
        }
      }
      if (bad && !c.closed) {
        const line = await c.next()
        if (line !== null && !/^error: N is zero/.test(line)) problems.push(`client ${id}: draw 0 got ${line}`)
      }
      if (c.closed) { // its replica died: go on at a live one, like a user would
        at = [...reps.keys()].find((n) => n !== victim && n !== at)!
        c = new LineClient(reps.get(at)!.port)
      }
    }
    c.close()
  }

  const clients: Array<Promise<void>> = []
  for (const [name] of reps) for (let i = 0; i < 6; i++) clients.push(client(clients.length, name, 40))
  await until(() => requests > 700, 20_000)
  // SIGKILL the sequencer's replica with draws in flight; a new replica joins and its clients start at once.
  const probe = new LineClient(reps.get('r1')!.port)
  const seqr = stats(await probe.ask('stats')).sequencer!
  probe.close()
  t.ok(reps.has(seqr), `the sequencer is ${seqr}`)
  victim = seqr
  reps.get(victim)!.proc.kill('SIGKILL')
  const r4 = await startReplica('r4', dir.addr)
  reps.set('r4', r4)
  procs.push(r4.proc)
  t.match(r4.out.join('\n'), /joined group lootbox at directory .*: [1-9]\d* of 100000 numbers handed out/, 'r4 started from the current state')
  for (let i = 0; i < 6; i++) clients.push(client(clients.length, 'r4', 30))
  // The killed replica comes back under its own name, from the current state too.
  reps.delete(victim)
  const back = await startReplica(victim, dir.addr)
  procs.push(back.proc)
  t.match(back.out.join('\n'), /joined group lootbox at directory .*: [1-9]\d* of 100000 numbers handed out/, `${victim} came back with the current state`)
  reps.set(victim, back)
  for (let i = 0; i < 3; i++) clients.push(client(clients.length, victim, 20))
  await Promise.all(clients)
  t.same(problems, [], 'every reply as expected')

  // Every live replica ends in the same state, with the same ledger.
  const live = [...reps.values()]
  const ctl = live.map((r) => new LineClient(r.port))
  let all: Array<Record<string, string>> = []
  for (let i = 0; i < 100; i++) {
    all = await Promise.all(ctl.map(async (c) => stats(await c.ask('stats'))))
    if (all.every((s) => s.state === all[0]!.state)) break
    await new Promise((r) => setTimeout(r, 50))
  }
  for (const c of ctl) c.close()
  for (const s of all) {
    t.equal(s.state, all[0]!.state, `${s.me}: the same state (counter and hash chain)`)
    t.equal(s.handed, all[0]!.handed, `${s.me}: the same ledger`)
    t.equal(s.replicas!.split(',').sort().join(','), [...reps.keys()].sort().join(','), `${s.me}: the view has the live replicas`)
  }
  const counter = Number(all[0]!.counter)
  const handed = ledger(all[0]!)
  t.equal([...handed.values()].reduce((a, b) => a + b, 0), counter, 'the ledger adds up to the counter')

  const numbers = [...received.values()].flat()
  t.equal(new Set(numbers).size, numbers.length, `all ${numbers.length} numbers handed out are distinct`)
  const drawn = new Set(shuffled().subarray(0, counter))
  t.ok(numbers.every((n) => n >= 1 && n <= SIZE && drawn.has(n)), 'each within 1..100000 and among the first `counter` of the shuffle')
  for (const r of live.filter((r) => r.name !== victim)) {
    const s = all.find((x) => x.me === r.name)!
    t.equal((received.get(r.name) ?? []).length + Number(s.lost), handed.get(r.name), `${r.name}: its clients got what it drew`)
  }
  t.ok((handed.get(victim) ?? 0) >= (received.get(victim) ?? []).length, `${victim} drew at least what its clients got (some of its first life's draws were cut off)`)
  t.comment(`${requests} draws by ${clients.length} clients, ${numbers.length} numbers received, counter ${counter}, ${cutLosses} draws cut off with ${victim}`)
})

t.test('a replica expelled from its group (paused past the timeout) answers its draw in flight with an error and exits 1', async (t) => {
  const quick = await startDir(await freePort(), ['--timeout-ms', '500', '--heartbeat-ms', '100'])
  t.teardown(() => quick.stop())
  const a = await startReplica('xa', quick.addr)
  const b = await startReplica('xb', quick.addr)
  procs.push(a.proc, b.proc)
  const c = new LineClient(b.port)
  t.match(await c.ask('draw 2'), /^\d+ \d+$/)
  const exited = new Promise<number | null>((resolve) => b.proc.once('exit', (code) => resolve(code)))
  b.proc.kill('SIGSTOP')
  c.send('draw 3\n')
  await sleep(2000) // past the directory's timeout: the others go on without it
  const ca = new LineClient(a.port)
  t.match(await ca.ask('draw 1'), /^\d+$/, 'the other replica serves meanwhile')
  b.proc.kill('SIGCONT')
  t.match(await c.next(), /^error: this replica lost its group \(EEXPELLED\)/)
  t.equal(await c.next(), null, 'then the connection is closed')
  t.equal(await exited, 1)
  t.match(b.out.join('\n'), /left the group \(EEXPELLED/)
  t.equal(stats(await ca.ask('stats')).replicas, 'xa', 'the view without it')
  ca.close()
})
