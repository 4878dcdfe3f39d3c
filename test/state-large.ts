/**
 * A 100 MiB state over real processes (PROTOCOL.md §8, docs/PERFORMANCE.md "State transfer"): a donor whose snapshot
 * is an async iterable over a buffer it built (never copied), a joiner whose restore hashes and drops what it reads,
 * and a third member sending all the while. Checked: the joiner restores exactly the donor's bytes and the state
 * point (the sender's messages before it in the state, every one after it delivered, none twice); the sender's
 * messages keep being delivered during the transfer; the donor's peak RSS stays below its buffer plus 100 MB (it
 * does not hold the state twice), the joiner's below its baseline plus 100 MB. The numbers are printed.
 * STATE_MB=n for another size; STATE_SNAPSHOT=bytes for a snapshot given as one buffer instead of an iterable.
 */
import t from 'tap'
import { spawn, type ChildProcess } from 'node:child_process'
import { DirectoryServer } from '../directory/server.js'
import { ROOT, until } from './fixtures/procs.js'

const CHILD = `${ROOT}test/fixtures/statebig.mjs`
const MB = Number(process.env.STATE_MB ?? 100)
const SIZE = MB * (1 << 20)

type Line = Record<string, unknown> & { t: string }

class Proc {
  readonly lines: Line[] = []
  readonly p: ChildProcess
  err = ''
  private buf = ''
  constructor(readonly role: string, dir: string) {
    this.p = spawn(process.execPath, [CHILD, dir, role], { stdio: ['pipe', 'pipe', 'pipe'], env: { ...process.env, STATE_MB: String(MB) } })
    this.p.on('error', (err) => (this.err += err.message))
    this.p.stdout!.on('data', (b: Buffer) => {
      this.buf += b.toString()
      for (let i = this.buf.indexOf('\n'); i >= 0; i = this.buf.indexOf('\n')) {
        this.lines.push(JSON.parse(this.buf.slice(0, i)) as Line)
        this.buf = this.buf.slice(i + 1)
      }
    })
    this.p.stderr!.on('data', (b: Buffer) => (this.err += b.toString()))
  }
  line(t: string): Line | undefined {
    return this.lines.find((l) => l.t === t)
  }
  async wait(t: string, ms: number): Promise<Line | undefined> {
    await until(() => this.line(t) !== undefined || this.line('error') !== undefined, ms)
    return this.line(t)
  }
  command(cmd: string): void {
    this.p.stdin!.write(cmd + '\n')
  }
}

const mib = (n: unknown): string => ((n as number) / (1 << 20)).toFixed(1)

t.test(`a ${MB} MiB state to a joiner while a third member sends`, { timeout: 120_000 }, async (t) => {
  const server = new DirectoryServer({ host: '127.0.0.1', port: 0, rejoinGraceMs: 0 })
  const a = await server.listen()
  const dir = `${a.host}:${a.port}`
  const procs: Proc[] = []
  t.teardown(async () => {
    for (const p of procs) p.p.kill('SIGKILL')
    await server.close()
  })
  const start = (role: string): Proc => {
    const p = new Proc(role, dir)
    procs.push(p)
    return p
  }

  const donor = start('donor')
  const dj = await donor.wait('joined', 30_000)
  t.ok(dj, `the donor built its state and joined ${donor.err}${JSON.stringify(donor.line('error') ?? '')}`)
  const sender = start('sender')
  t.ok(await sender.wait('joined', 30_000), `the sender joined ${sender.err}`)
  await new Promise((r) => setTimeout(r, 300)) // the group is busy before the joiner comes
  const joiner = start('joiner')
  const jj = await joiner.wait('joined', 90_000)
  t.ok(jj, `the joiner joined ${joiner.err}${JSON.stringify(joiner.line('error') ?? '')}`)
  if (!dj || !jj) return
  await new Promise((r) => setTimeout(r, 300)) // and stays busy after
  sender.command('stop')
  const stopped = await sender.wait('stopped', 30_000)
  t.ok(stopped, 'the sender stopped')
  const last = stopped!.last as number
  const reports = new Map<string, Line>()
  // Each reports once it has applied the sender's last message.
  for (const p of procs) p.command(`report ${last}`)
  for (const p of procs) {
    const r = await p.wait('report', 30_000)
    t.ok(r, `${p.role} reported ${p.err}`)
    if (r) reports.set(p.role, r)
  }
  const [d, s, j] = ['donor', 'sender', 'joiner'].map((r) => reports.get(r)!)
  if (!d || !s || !j) return

  // The state: exactly the donor's bytes, and exactly at the state point.
  t.equal(jj.bytes, SIZE, `the joiner restored ${SIZE} bytes`)
  t.equal(jj.hash, dj.hash, 'the sha-256 of the bytes restored is the donor\'s')
  t.equal(jj.restores, 1, 'restore ran once (the donor lived)')
  const snap = donor.line('snapshot')
  t.equal(jj.startK, snap?.applied, `the state holds the sender's messages up to ${snap?.applied} (the donor's at the snapshot)`)
  t.equal(j.first, (jj.startK as number) + 1, 'the joiner\'s first message is the first after the state point')
  for (const r of [d, s, j]) {
    t.equal(r.gaps, 0, `${r.role}: the sender's messages in order, none missing or twice`)
    t.equal(r.last, last, `${r.role}: applied the sender's last message (${last})`)
  }

  // The rest of the group went on: the sender's messages kept being delivered while the state travelled.
  const from = jj.firstAt as number
  const to = jj.lastAt as number
  const secs = (to - from) / 1000
  const during = (r: Line): number => (r.times as number[]).filter((x) => x >= from && x <= to).length
  // For comparison: the sender's own rate outside the transfer (from its first delivery to its last).
  const st = s.times as number[]
  const outside = (st.length - during(s)) / Math.max(0.001, (st.at(-1)! - st[0]! - (to - from)) / 1000)
  t.ok(during(d) > 0 && during(s) > 0, `during the ${secs.toFixed(2)} s transfer the donor delivered ${during(d)} of the sender's messages, the sender ${during(s)}`)

  // Memory: the donor holds its buffer once (plus the 4 MiB window and datagrams in flight), the joiner what it reads.
  const donorPeak = d.hwm as number
  const donorBase = dj.baseline as number
  const joinerPeak = j.hwm as number
  const joinerBase = jj.baseline as number
  t.ok(donorPeak < donorBase + SIZE + 100 * (1 << 20), `donor peak RSS ${mib(donorPeak)} MiB < baseline ${mib(donorBase)} + state ${MB} + 100 MiB`)
  t.ok(joinerPeak < joinerBase + 100 * (1 << 20), `joiner peak RSS ${mib(joinerPeak)} MiB < baseline ${mib(joinerBase)} + 100 MiB`)
  t.comment(
    `${MB} MiB in ${secs.toFixed(2)} s (first byte to last) = ${(MB / secs).toFixed(0)} MiB/s; join ${((jj.joinEnd as number) - (jj.joinStart as number)) / 1000} s; ` +
    `donor RSS: baseline ${mib(donorBase)}, with its buffer ${mib(dj.built)}, peak ${mib(donorPeak)} MiB (sampled ${mib(d.sampled)}); ` +
    `joiner RSS: baseline ${mib(joinerBase)}, peak ${mib(joinerPeak)} MiB (sampled ${mib(j.sampled)}); ` +
    `sender's messages delivered during the transfer: donor ${during(d)}, sender ${during(s)} (${(during(s) / secs).toFixed(0)}/s; ${outside.toFixed(0)}/s outside it)`,
  )
})
