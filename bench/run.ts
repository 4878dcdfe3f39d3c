/**
 * `npm run bench [-- --json] [-- --quick] [-- --case W1|W2|LARGE|SOAK]` (SOAK, 60 s, runs only when asked);
 * `--n N --size BYTES` narrow W1 to one case; `--transport multicast|unicast|both` (default multicast) runs the
 * seqcast cases over that transport (unicast: fan-out, as on clouds; both: each case on both, unicast rows
 * named `…/u` with their ratio to the multicast row); `--key FILE` runs each W1 and W2 case twice, without and then
 * with that group key (`dir keygen FILE`), the keyed rows named `…/k` with their cost beside the unkeyed one.
 * `--case W2 --rate R`: W2 at that rate only (default 1 000 and 10 000 msg/s).
 * `--case LOSS [--loss P]`: W1 (3 members; 100 B and 16 KB, or `--n`, `--size`) lossless, then with every member
 * dropping each datagram it receives with probability 1 % and 5 % (or P alone), compared in the same run.
 * SEQCAST_BENCH_PROF=DIR writes a --cpu-prof of every member there.: seqcast against raw dgram multicast, on loopback.
 * As root it re-runs itself inside a private network namespace (`unshare -n`), as CI does; otherwise it uses
 * 127.0.0.1 as is. Results are described in docs/PERFORMANCE.md.
 */
import { spawn, spawnSync } from 'node:child_process'
import net from 'node:net'
import { readFileSync } from 'node:fs'
import { fileURLToPath } from 'node:url'

const args = process.argv.slice(2)
const json = args.includes('--json')
const quick = args.includes('--quick')
const only = args.includes('--case') ? args[args.indexOf('--case') + 1] : undefined
const transportArg = args.includes('--transport') ? args[args.indexOf('--transport') + 1] : 'multicast'
if (!['multicast', 'unicast', 'both'].includes(transportArg!)) {
  console.error(`--transport must be multicast, unicast or both, got ${transportArg}`)
  process.exit(2)
}
type Mode = 'multicast' | 'unicast'
const transports: Mode[] = transportArg === 'both' ? ['multicast', 'unicast'] : [transportArg as Mode]
const tag = (name: string, mode: Mode): string => (mode === 'unicast' ? `${name}/u` : name)
const keyFile = args.includes('--key') ? args[args.indexOf('--key') + 1] : undefined
/** Each seqcast case without a key, then (with --key) with it: interleaved, so both see the same machine. */
const keyings: (string | undefined)[] = keyFile ? [undefined, keyFile] : [undefined]
const keyTag = (name: string, key: string | undefined): string => (key ? `${name}/k` : name)

if (process.getuid?.() === 0 && !process.env.SEQCAST_BENCH_NETNS && !args.includes('--no-netns')) {
  const self = fileURLToPath(import.meta.url)
  const r = spawnSync('unshare', ['-n', 'sh', '-c', `ip link set lo up && exec "${process.execPath}" "${self}" ${args.join(' ')}`], {
    stdio: 'inherit', env: { ...process.env, SEQCAST_BENCH_NETNS: '1' },
  })
  process.exit(r.status ?? 1)
}

const here = fileURLToPath(new URL('.', import.meta.url))
const MEMBER = `${here}member.js`
const DIR = `${here}../directory/cli.js`
const SEND_MS = quick ? 1000 : 3000
/** W2: the sender's warm-up before the messages that count (bench/member.ts, Latencies). */
const WARM_MS = Number(process.env.SEQCAST_BENCH_WARM_MS ?? 3000)

interface Report {
  id: string; sent: number; delivered: number; bytes: number; firstSend: number; lastDelivery: number
  rssMB: number; youngMB: number; oldMB: number; externalMB: number
  hash?: string; latency?: { p50: number; p99: number; max: number } | null; resent?: number; nacks?: number
  /** W2: the messages of the warm-up (the sender's first second), not in `latency`. */
  warmup?: { p50: number; p99: number; max: number } | null
  /** LOSS: datagrams (and bytes) the member's drop hook threw away; bytes it sent again; its longest delivery gap. */
  lost?: number; lostBytes?: number; resentBytes?: number; retransmittedBytes?: number; nacksServed?: number; stallMs?: number
  /** CPU time the member used from its first send until deliveries stopped. */
  cpuMs?: number
  /** W1: time this member's sends waited for window room. */
  sendWaitMs?: number
  rssSeries?: number[]
  youngSeries?: number[]
}

async function freePort(): Promise<number> {
  return new Promise((resolve) => {
    const s = net.createServer().listen(0, '127.0.0.1', () => {
      const p = (s.address() as net.AddressInfo).port
      s.close(() => resolve(p))
    })
  })
}

function runMembers(argv: (i: number) => string[], key?: string, more: Record<string, string> = {}): Promise<Report[]> {
  return Promise.all(Array.from({ length: Number(argv(0)[3]) }, (_, i) => new Promise<Report>((resolve, reject) => {
    const prof = process.env.SEQCAST_BENCH_PROF ? ['--cpu-prof', `--cpu-prof-dir=${process.env.SEQCAST_BENCH_PROF}`] : []
    const env = { ...process.env, ...(key ? { SEQCAST_BENCH_KEY: key } : {}), ...more }
    const p = spawn(process.execPath, [...prof, MEMBER, ...argv(i)], { stdio: ['ignore', 'pipe', 'inherit'], env })
    let out = ''
    p.stdout.on('data', (b: Buffer) => (out += b.toString()))
    p.on('exit', (code) => (code === 0 ? resolve(JSON.parse(out.trim().split('\n').pop()!)) : reject(new Error(`member ${i} exited ${code}`))))
  })))
}

async function withDir<T>(fn: (addr: string) => Promise<T>, mode: Mode = 'multicast'): Promise<T> {
  const port = await freePort()
  // A fresh port: no directory ran there before, so no rejoin grace. The mode is fixed: `auto` never switches mid-case.
  const d = spawn(process.execPath, [DIR, '--host', '127.0.0.1', '--port', String(port), '--rejoin-grace-ms', '0', '--transport', mode], { stdio: ['ignore', 'pipe', 'inherit'] })
  await new Promise<void>((r) => d.stdout.on('data', (b: Buffer) => b.toString().includes('listening') && r()))
  try {
    return await fn(`127.0.0.1:${port}`)
  } finally {
    d.kill('SIGKILL')
  }
}

interface Memory { rssMB: number; youngMB?: number; oldMB?: number; externalMB?: number }
interface Row extends Memory { case: string; n: number; size: number; perMember: number; mbps: number; ratio?: number; ok: boolean; extra: string }

/** The peak RSS of a case, broken down (young generation / rest of the V8 heap / Buffers) for the member it is. */
function memoryOf(rs: Report[]): Memory {
  const top = rs.reduce((a, r) => (r.rssMB > a.rssMB ? r : a))
  return { rssMB: top.rssMB, youngMB: top.youngMB, oldMB: top.oldMB, externalMB: top.externalMB }
}
const rows: Row[] = []

function throughput(rs: Report[]): { perMember: number; mbps: number; secs: number } {
  const start = Math.min(...rs.map((r) => r.firstSend))
  const end = Math.max(...rs.map((r) => r.lastDelivery))
  const secs = (end - start) / 1000
  const perMember = rs.reduce((a, r) => a + r.delivered, 0) / rs.length / secs
  const mbps = rs.reduce((a, r) => a + r.bytes, 0) / rs.length / secs / 1e6
  return { perMember, mbps, secs }
}

/** CPU a member spent per message it delivered (its own included), averaged over the members: the cost of a case
 *  that a busy machine disturbs less than throughput, since time the member waited for a core is not in it. */
function cpuPerMessage(rs: Report[]): string {
  const delivered = rs.reduce((a, r) => a + r.delivered, 0)
  return delivered ? (rs.reduce((a, r) => a + (r.cpuMs ?? 0), 0) * 1000 / delivered).toFixed(2) : '-'
}

function emit(row: Row): void {
  rows.push(row)
  if (!json) {
    const ratio = row.ratio === undefined ? '' : row.case.startsWith('LOSS') ? `  ${(row.ratio * 100).toFixed(0)}% of lossless` : `  ${row.ratio.toFixed(2)}x raw`
    const memory = `rss ${row.rssMB} MB (young ${row.youngMB}, heap ${row.oldMB}, buffers ${row.externalMB})`
    console.log(`${row.case.padEnd(6)} n=${row.n} ${String(row.size).padStart(8)} B  ${Math.round(row.perMember).toLocaleString('en').padStart(9)} msg/s/member  ${row.mbps.toFixed(1).padStart(7)} MB/s${ratio}  ${memory}  ${row.case.startsWith('RAW') ? '' : row.ok ? 'verified ' : 'MISMATCH '}${row.extra}`)
  }
}

/**
 * The raw ceiling: plain dgram multicast, no reliability or order. How fast a sender may go decides what arrives:
 * flooding (64 sends per event-loop turn) overruns the receivers, a burst of 4 paces them. Both are run; the
 * better delivered rate is the ceiling our figures are divided by.
 */
async function raw(n: number, size: number): Promise<{ perMember: number; loss: number }> {
  let best = { perMember: 0, loss: 1 }
  for (const burst of [4, 64]) {
    const port = await freePort()
    const rs = await runMembers((i) => ['raw', `239.255.77.${1 + (port % 200)}:${port}`, `r${i}`, String(n), String(size), String(SEND_MS), String(burst)])
    const t = throughput(rs)
    const sent = rs.reduce((a, r) => a + r.sent, 0)
    const loss = 1 - rs.reduce((a, r) => a + r.delivered, 0) / (sent * n)
    emit({ case: `RAW/${burst}`, n, size, perMember: t.perMember, mbps: t.mbps, ok: true, ...memoryOf(rs), extra: `loss ${(loss * 100).toFixed(1)}%` })
    if (t.perMember > best.perMember) best = { perMember: t.perMember, loss }
  }
  return best
}

async function w1(n: number, size: number, ceiling?: number, name = 'W1', sendMs = SEND_MS, mode: Mode = 'multicast', key?: string): Promise<Report[]> {
  const kernel0 = rcvbufErrors()
  const rs = await withDir((dir) => runMembers((i) => ['seqcast', dir, `m${i}`, String(n), String(size), String(sendMs)], key), mode)
  const kernel = rcvbufErrors() - kernel0
  const t = throughput(rs)
  // Flow control at a glance: the members' CPU as cores busy over the case, how much of the send time `send` waited
  // for window room, and the kernel's receive-buffer drops (docs/PERFORMANCE.md "Flow control").
  const cores = (rs.reduce((a, r) => a + (r.cpuMs ?? 0), 0) / 1000 / t.secs).toFixed(2)
  const waited = Math.round((100 * rs.reduce((a, r) => a + (r.sendWaitMs ?? 0), 0)) / rs.length / sendMs)
  const total = rs.reduce((a, r) => a + r.sent, 0)
  const ok = rs.every((r) => r.hash === rs[0]!.hash && r.delivered === total)
  emit({
    case: name, n, size, perMember: t.perMember, mbps: t.mbps, ratio: ceiling ? t.perMember / ceiling : undefined, ok,
    ...memoryOf(rs),
    extra: `(${total} msgs in ${t.secs.toFixed(1)} s, resent ${rs.reduce((a, r) => a + (r.resent ?? 0), 0)}, cpu ${cpuPerMessage(rs)} us/msg, ${cores} cores, window wait ${waited}%, rcvbuf drops ${kernel})` +
      (ok ? '' : ` delivered ${rs.map((r) => r.delivered).join('/')} of ${total}, hashes ${rs.map((r) => r.hash?.slice(0, 8)).join('/')}`),
  })
  return rs
}

/**
 * LOSS: W1 with every member dropping each datagram it receives with probability `p` (bench/member.ts's hook, a
 * seeded PRNG per member), beside the same case lossless in the same run. Verified as W1 is. Reports the throughput
 * as a share of lossless, what was dropped, what was sent again for it (own DATA resent to the sequencer plus
 * ORDER and DATA served for NACKs, datagram bytes both), their ratio, and the longest gap between two deliveries
 * at any member.
 */
/** The kernel's UDP receive-buffer drops in this network namespace (/proc/net/snmp): loss nobody injected. */
function rcvbufErrors(): number {
  try {
    const udp = readFileSync('/proc/net/snmp', 'utf8').split('\n').filter((l) => l.startsWith('Udp:')).map((l) => l.trim().split(/\s+/))
    return Number(udp[1]![udp[0]!.indexOf('RcvbufErrors')])
  } catch {
    return NaN
  }
}

async function loss(n: number, size: number, p: number, lossless?: number): Promise<number> {
  const kernel0 = rcvbufErrors()
  const seed = process.env.SEQCAST_BENCH_SEED ?? '1'
  const rs = await withDir((dir) => runMembers((i) => ['seqcast', dir, `m${i}`, String(n), String(size), String(SEND_MS)], undefined,
    p > 0 ? { SEQCAST_BENCH_LOSS: String(p), SEQCAST_BENCH_SEED: seed } : {}))
  const kernel = rcvbufErrors() - kernel0
  const t = throughput(rs)
  const total = rs.reduce((a, r) => a + r.sent, 0)
  const ok = rs.every((r) => r.hash === rs[0]!.hash && r.delivered === total)
  const sum = (f: (r: Report) => number | undefined): number => rs.reduce((a, r) => a + (f(r) ?? 0), 0)
  const lostBytes = sum((r) => r.lostBytes)
  const resentBytes = sum((r) => r.resentBytes)
  const servedBytes = sum((r) => r.retransmittedBytes)
  const MB = (b: number): string => (b / 1e6).toFixed(2)
  emit({
    case: `LOSS@${+(p * 100).toFixed(2)}%`, n, size, perMember: t.perMember, mbps: t.mbps, ratio: lossless ? t.perMember / lossless : undefined, ok,
    ...memoryOf(rs),
    extra: `(${total} msgs in ${t.secs.toFixed(1)} s) dropped ${sum((r) => r.lost)} datagrams ${MB(lostBytes)} MB (and ${kernel} by full socket buffers), sent again ${MB(resentBytes + servedBytes)} MB ` +
      `(resent ${MB(resentBytes)}, served ${MB(servedBytes)}), again/lost ${lostBytes ? ((resentBytes + servedBytes) / lostBytes).toFixed(2) : '-'}, ` +
      `nacks ${sum((r) => r.nacks)} sent ${sum((r) => r.nacksServed)} served, longest stall ${Math.max(...rs.map((r) => r.stallMs ?? 0))} ms ` +
      `(${rs.map((r) => r.stallMs).join('/')}), cpu ${cpuPerMessage(rs)} us/msg` +
      (ok ? '' : ` delivered ${rs.map((r) => r.delivered).join('/')} of ${total}, hashes ${rs.map((r) => r.hash?.slice(0, 8)).join('/')}`),
  })
  return t.perMember
}

/**
 * W1 with 3 members and 100-byte messages for 60 s: resident memory sampled every 5 s must stay flat once warmed
 * up. Judged on RSS less V8's young generation, which V8 sizes up in steps to a fixed maximum whenever objects keep
 * surviving collections (both series are printed): what must not grow is everything else — our data.
 */
async function soak(): Promise<void> {
  const rs = await w1(3, 100, undefined, 'SOAK', 60_000)
  for (const r of rs) {
    const series = r.rssSeries ?? []
    const young = r.youngSeries ?? series.map(() => 0)
    const rest = series.map((v, i) => v - (young[i] ?? 0))
    const warm = rest[1] ?? rest[0] ?? 0 // after 10 s
    const growth = Math.max(...rest.slice(1)) - warm
    const text = `rss MB every 5 s: ${series.join(' ')}; young generation: ${young.join(' ')}; rest grew ${growth} MB after 10 s`
    rows.push({ case: `SOAK/${r.id}`, n: 3, size: 100, perMember: 0, mbps: 0, ok: growth <= 10, rssMB: Math.max(...series), extra: text })
    if (!json) console.log(`SOAK   ${r.id}: ${text}`)
  }
}

type Latency = { p50: number; p99: number; max: number }

/** Send→delivery at the worst receiver: the highest p50, p99 and max over the members (of the warm-up with `warm`). */
function worstLatency(rs: Report[], warm = false): Latency {
  const lat = rs.map((r) => (warm ? r.warmup : r.latency)).filter((l): l is NonNullable<typeof l> => !!l)
  return { p50: Math.max(...lat.map((l) => l.p50)), p99: Math.max(...lat.map((l) => l.p99)), max: Math.max(...lat.map((l) => l.max)) }
}

/** What the warm-up (not counted) cost: V8 optimising the path, a joiner's first datagrams. */
const warmText = (rs: Report[]): string => `warm-up ${(WARM_MS / 1000).toFixed(1)} s not counted (its p99 ${worstLatency(rs, true).p99.toFixed(2)} ms)`

const us = (ms: number): string => `${(ms * 1000).toFixed(0)} us`

/**
 * W2's one-way floor: raw dgram multicast of the same 100 B messages at the same rate, sent by the same pacing loop
 * (bench/member.ts `paced`), one datagram each; send→arrival at the worst receiver (the sender's loopback copy
 * included, as W2 counts the sender's own delivery). Total order needs two such trips.
 */
async function rawW2(rate: number, n: number): Promise<Latency> {
  const port = await freePort()
  const rs = await runMembers((i) => ['rawrate', `239.255.77.${1 + (port % 200)}:${port}`, `r${i}`, String(n), '100', String(SEND_MS), String(rate)])
  const l = worstLatency(rs)
  const sent = rs.reduce((a, r) => a + r.sent, 0)
  const loss = 1 - rs.reduce((a, r) => a + r.delivered, 0) / (sent * n)
  rows.push({ case: `RAW@${rate}`, n, size: 100, perMember: rate, mbps: 0, ok: true, ...memoryOf(rs), extra: `p50 ${l.p50} ms p99 ${l.p99} ms max ${l.max} ms loss ${(loss * 100).toFixed(1)}%` })
  if (!json) console.log(`RAW    n=${n} at ${rate} msg/s, 100 B: send->arrival  p50 ${us(l.p50)}, p99 ${us(l.p99)}, max ${l.max.toFixed(2)} ms (worst receiver)  loss ${(loss * 100).toFixed(1)}%  ${warmText(rs)}`)
  return l
}

async function w2(rate: number, mode: Mode, n = 3, key?: string, raw?: Latency): Promise<void> {
  const rs = await withDir((dir) => runMembers((i) => ['seqcast', dir, `m${i}`, String(n), '100', String(SEND_MS), String(rate)], key), mode)
  const ok = rs.every((r) => r.hash === rs[0]!.hash)
  const { p50, p99, max } = worstLatency(rs)
  const ratio = raw && raw.p50 > 0 ? p50 / raw.p50 : undefined
  const vsRaw = raw ? `, raw p50 ${raw.p50} ms p99 ${raw.p99} ms` : ''
  rows.push({ case: keyTag(tag(`W2@${rate}`, mode), key), n, size: 100, perMember: rate, mbps: 0, ratio, ok, ...memoryOf(rs), extra: `p50 ${p50} ms p99 ${p99} ms max ${max} ms${vsRaw}` })
  if (!json) {
    const beside = raw ? `  ${ratio === undefined ? '-' : ratio.toFixed(2)}x raw p50 (raw p99 ${us(raw.p99)})` : ''
    console.log(`${keyTag(tag('W2', mode), key).padEnd(6)} n=${n} at ${rate} msg/s, 100 B: send->delivery p50 ${us(p50)}, p99 ${us(p99)}, max ${max.toFixed(2)} ms (worst receiver)  ${ok ? 'verified' : 'MISMATCH'}${beside}  ${warmText(rs)}`)
  }
}

const pick = (flag: string): number[] | undefined => (args.includes(flag) ? [Number(args[args.indexOf(flag) + 1])] : undefined)
const sizes = pick('--size') ?? (quick ? [100] : [100, 1024, 16384])
const ns = pick('--n') ?? (quick ? [3] : [3, 5, 8])
if (!only || only === 'W1') {
  for (const n of ns) {
    for (const size of sizes) {
      const ceiling = await raw(n, size)
      for (const mode of transports) for (const key of keyings) await w1(n, size, ceiling.perMember, keyTag(tag('W1', mode), key), SEND_MS, mode, key)
    }
  }
}
// W2 at 3 members, and at every --n when the transports are compared (how fan-out cost grows with N).
const w2ns = transports.length > 1 ? ns : [pick('--n')?.[0] ?? 3]
if (!only || only === 'W2') {
  for (const n of w2ns) {
    for (const rate of pick('--rate') ?? [1000, 10000]) {
      const floor = await rawW2(rate, n)
      for (const mode of transports) for (const key of keyings) await w2(rate, mode, n, key, floor)
    }
  }
}
if (!only || only === 'LARGE') for (const size of pick('--size') ?? (quick ? [1 << 20] : [1 << 20, 10 << 20])) await w1(3, size, undefined, 'LARGE')
if (only === 'SOAK') await soak()
if (only === 'LOSS') {
  const losses = pick('--loss') ?? [0.01, 0.05]
  for (const n of pick('--n') ?? [3]) {
    for (const size of pick('--size') ?? [100, 16384]) {
      const lossless = await loss(n, size, 0)
      for (const p of losses) await loss(n, size, p, lossless)
    }
  }
}
if (!json && rows.length > 1) {
  console.log('\nsummary')
  console.log(`${'case'.padEnd(10)} ${'n'.padStart(2)} ${'size'.padStart(9)} ${'msg/s/member'.padStart(13)} ${'MB/s'.padStart(8)} ${'ratio'.padStart(7)} ${'rss MB'.padStart(7)}  result`)
  for (const r of rows) {
    const ratio = r.ratio === undefined ? '' : r.case.startsWith('LOSS') ? `${(r.ratio * 100).toFixed(0)}%` : `${r.ratio.toFixed(2)}x`
    const multicast = r.case.endsWith('/u') ? rows.find((m) => m.case === r.case.slice(0, -2) && m.n === r.n && m.size === r.size) : undefined
    if (multicast && r.case.startsWith('W1')) r.extra += ` ${(r.perMember / multicast.perMember * 100).toFixed(0)}% of multicast`
    const unkeyed = r.case.endsWith('/k') ? rows.find((m) => m.case === r.case.slice(0, -2) && m.n === r.n && m.size === r.size) : undefined
    if (unkeyed && r.case.startsWith('W1')) r.extra += ` ${(r.perMember / unkeyed.perMember * 100).toFixed(0)}% of without a key`
    if (unkeyed && r.case.startsWith('W2')) r.extra += ` p50 ${Math.round((p50Of(r) - p50Of(unkeyed)) * 1000) >= 0 ? '+' : ''}${Math.round((p50Of(r) - p50Of(unkeyed)) * 1000)} us with the key`
    console.log(`${r.case.padEnd(10)} ${String(r.n).padStart(2)} ${String(r.size).padStart(9)} ${Math.round(r.perMember).toLocaleString('en').padStart(13)} ${r.mbps.toFixed(1).padStart(8)} ${ratio.padStart(7)} ${String(r.rssMB).padStart(7)}  ${r.case.startsWith('RAW') ? r.extra : r.ok ? 'verified' : 'MISMATCH'}${r.case.startsWith('W2') || r.case.startsWith('LOSS') || multicast || unkeyed ? ' ' + r.extra : ''}`)
  }
}
function p50Of(r: Row): number {
  return Number(/p50 ([\d.]+) ms/.exec(r.extra)?.[1] ?? NaN)
}
if (json) console.log(JSON.stringify({ sendMs: SEND_MS, rows }, null, 2))
