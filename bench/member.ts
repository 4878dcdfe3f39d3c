/**
 * One benchmark member process. Modes:
 *   seqcast <dir> <id> <members> <sizeBytes> <sendMs> [rate]   join, send for sendMs (at `rate` msg/s if given,
 *                                                                else as fast as flow control allows), receive all
 *   raw <mcast ip:port> <id> <members> <sizeBytes> <sendMs> [burst]   plain dgram multicast, one message per
 *                                                                datagram, `burst` sends per event-loop turn
 * Prints one JSON line: counts, first-send/last-delivery wall times (ms), a hash of the delivered stream, latency
 * samples summary, peak RSS, the longest gap between deliveries.
 * SEQCAST_BENCH_GC=1: a line on stderr per member with its mark-compacts and the Buffer memory alive after them.
 * SEQCAST_BENCH_LOSS=P (the LOSS case of run.ts; benchmark only, no option of the library): this member drops each
 * datagram it receives with probability P, drawn from a PRNG seeded by SEQCAST_BENCH_SEED (default 1) and its id.
 */
import dgram from 'node:dgram'
import { createHash } from 'node:crypto'
import v8 from 'node:v8'
import { PerformanceObserver, constants as perfConstants } from 'node:perf_hooks'
import { Group } from '../lib/index.js'
import { UdpTransport } from '../lib/transport.js'

const wall = (): number => performance.timeOrigin + performance.now()
const [mode, target, id, membersArg, sizeArg, sendMsArg, rateArg] = process.argv.slice(2)
const members = Number(membersArg)
const size = Number(sizeArg)
const sendMs = Number(sendMsArg)
const rate = rateArg ? Number(rateArg) : 0
/** raw: datagrams sent per event-loop turn. Small bursts pace the sender (few losses); large ones flood. */
const BURST = rateArg ? Number(rateArg) : 64
const IDLE_MS = Number(process.env.SEQCAST_BENCH_IDLE_MS ?? 1500) // after everyone stopped sending, wait this long without deliveries before reporting

/** What the loss hook threw away: datagrams and their bytes. */
const lost = { datagrams: 0, bytes: 0 }
const LOSS = Number(process.env.SEQCAST_BENCH_LOSS ?? 0)
if (mode === 'seqcast' && LOSS > 0) dropOnReceive(LOSS, `${process.env.SEQCAST_BENCH_SEED ?? 1}/${id}`)

/**
 * Receive-side loss without root: every UdpTransport this process opens (the Group's, under a SealedTransport if
 * keyed) hands each arriving datagram to the engine only if a seeded draw says so. Own multicast looped back is
 * neither dropped nor counted: the engine ignores it anyway, so dropping it would count loss that costs nothing.
 */
function dropOnReceive(p: number, seed: string): void {
  const rand = mulberry32(createHash('sha1').update(seed).digest().readUInt32BE(0))
  const open = UdpTransport.open
  UdpTransport.open = async (iface, ttl) => {
    const t = await open.call(UdpTransport, iface, ttl)
    let inner = t.onDatagram
    const hook: UdpTransport['onDatagram'] = (buf, via, from) => {
      if (from !== t.address && rand() < p) {
        lost.datagrams++
        lost.bytes += buf.length
        return
      }
      inner(buf, via, from)
    }
    // The Group sets onDatagram after open: keep ours in front of whatever it sets.
    Object.defineProperty(t, 'onDatagram', { get: () => hook, set: (f: UdpTransport['onDatagram']) => { inner = f } })
    return t
  }
}

function mulberry32(a: number): () => number {
  return () => {
    a = (a + 0x6d2b79f5) | 0
    let x = Math.imul(a ^ (a >>> 15), 1 | a)
    x = (x + Math.imul(x ^ (x >>> 7), 61 | x)) ^ x
    return ((x ^ (x >>> 14)) >>> 0) / 4294967296
  }
}

function payload(k: number): Buffer {
  const b = Buffer.alloc(Math.max(size, 16), 0x61)
  b.writeDoubleBE(wall(), 0) // send time, for latency
  b.writeUInt32BE(k, 8)
  return b
}

/**
 * Peak memory by kind, sampled every 250 ms: V8's young generation (grows to 2 × --max-semi-space-size under a high
 * allocation rate), the rest of its heap, and memory outside it (Buffers). Says where a member's RSS goes.
 */
function memorySampler(): { stop: () => { rssMB: number; youngMB: number; oldMB: number; externalMB: number } } {
  const peak = { youngMB: 0, oldMB: 0, externalMB: 0 }
  const MB = 2 ** 20
  const sample = (): void => {
    let young = 0
    let old = 0
    for (const sp of v8.getHeapSpaceStatistics()) {
      if (sp.space_name.startsWith('new_')) young += sp.space_size
      else old += sp.space_size
    }
    peak.youngMB = Math.max(peak.youngMB, Math.round(young / MB))
    peak.oldMB = Math.max(peak.oldMB, Math.round(old / MB))
    peak.externalMB = Math.max(peak.externalMB, Math.round(process.memoryUsage().external / MB))
  }
  const timer = setInterval(sample, 250)
  return {
    stop: () => {
      clearInterval(timer)
      sample()
      return { rssMB: Math.round(process.resourceUsage().maxRSS / 1024), ...peak }
    },
  }
}

/**
 * SEQCAST_BENCH_GC=1: on exit, a line on stderr with this member's mark-compacts and the Buffer memory (`external`)
 * right after each (at the next collection it reports): what was still alive, as opposed to dead Buffers that V8
 * had not yet collected (docs/PERFORMANCE.md, large messages).
 */
function gcWatch(id: string): void {
  const after: number[] = []
  let marked = false
  let peak = 0
  new PerformanceObserver((list) => {
    for (const e of list.getEntries()) {
      const ext = process.memoryUsage().external / 2 ** 20
      peak = Math.max(peak, ext)
      if (marked) after.push(ext)
      marked = (e as PerformanceEntry & { detail?: { kind?: number } }).detail?.kind === perfConstants.NODE_PERFORMANCE_GC_MAJOR
    }
  }).observe({ entryTypes: ['gc'] })
  process.on('exit', () => {
    after.sort((a, b) => a - b)
    const mb = (x: number | undefined): string => (x === undefined ? '-' : x.toFixed(0))
    process.stderr.write(`${id} gc: ${after.length} mark-compacts, external after them median ${mb(after[after.length >> 1])} max ${mb(after.at(-1))} MB, peak ${mb(peak)} MB\n`)
  })
}
if (process.env.SEQCAST_BENCH_GC) gcWatch(id!)

function summary(lat: number[]): { p50: number; p99: number; max: number } | null {
  if (lat.length === 0) return null
  lat.sort((a, b) => a - b)
  const q = (p: number): number => Math.round(lat[Math.min(lat.length - 1, Math.floor(p * lat.length))]! * 1000) / 1000
  return { p50: q(0.5), p99: q(0.99), max: q(1) }
}

async function runSeqcast(): Promise<void> {
  // SEQCAST_BENCH_OPTS='{"sendWindowBytes": 8388608}' tries other join options (docs/PERFORMANCE.md, tuning).
  const extra = JSON.parse(process.env.SEQCAST_BENCH_OPTS ?? '{}') as Record<string, unknown>
  // `--key FILE` of run.ts: the keyed half of each case.
  if (process.env.SEQCAST_BENCH_KEY) extra.key = process.env.SEQCAST_BENCH_KEY
  const memory = memorySampler()
  const g = await Group.join('bench', id!, { directory: target, iface: '127.0.0.1', joinTimeoutMs: 30_000, ...extra })
  while ((g.view?.members.length ?? 0) < members) await new Promise((r) => setTimeout(r, 2))
  const hash = createHash('sha1')
  let firstSend = 0
  /** W1: how long `send` kept this member waiting (its window full) — a window-bound case is near the whole send time. */
  let sendWaitMs = 0
  let delivered = 0
  let bytes = 0
  let lastDelivery = 0
  /** The longest wait for the next delivery since the first send: how long loss stalled this member's stream. */
  let stallMs = 0
  const lat: number[] = []
  g.on('message', (d) => {
    const now = wall()
    if (firstSend > 0) stallMs = Math.max(stallMs, now - Math.max(lastDelivery, firstSend))
    delivered++
    bytes += d.data.length
    lastDelivery = now
    hash.update(d.sender)
    hash.update(d.data.subarray(8, 12))
    if (rate > 0 && d.data.length >= 16) lat.push(now - Buffer.from(d.data.buffer, d.data.byteOffset, 8).readDoubleBE(0))
  })
  await g.receive() // drain the view queued before the listener
  // Resident set every 5 s: the soak case checks it stays flat once warmed up.
  // ... and the young generation's share of it: V8 sizes that up in steps (to 2 x --max-semi-space-size, 32 MB)
  // as objects keep surviving collections, however few — a one-off sizing, bounded, not growth of our data.
  const rssSeries: number[] = []
  const youngSeries: number[] = []
  const sampler = setInterval(() => {
    rssSeries.push(Math.round(process.memoryUsage().rss / 2 ** 20))
    const young = v8.getHeapSpaceStatistics().filter((sp) => sp.space_name.startsWith('new_')).reduce((a, sp) => a + sp.space_size, 0)
    youngSeries.push(Math.round(young / 2 ** 20))
  }, 5000)
  firstSend = wall()
  const cpu0 = process.cpuUsage()
  let sent = 0
  if (rate > 0) {
    if (id === 'm0') {
      const start = performance.now()
      while (performance.now() - start < sendMs) {
        const due = Math.floor(((performance.now() - start) / 1000) * rate)
        while (sent < due) await g.send(payload(++sent))
        // Sleep, not spin: a busy sender would steal the receivers' CPU on a 2-core machine and inflate their tails.
        await new Promise((r) => setTimeout(r, 1))
      }
    }
  } else {
    const start = performance.now()
    while (performance.now() - start < sendMs) {
      for (let i = 0; i < 64; i++) {
        const t0 = performance.now()
        await g.send(payload(++sent))
        sendWaitMs += performance.now() - t0
      }
    }
  }
  // Wait until deliveries stop for IDLE_MS (every member has stopped by then).
  for (;;) {
    const before = delivered
    await new Promise((r) => setTimeout(r, IDLE_MS))
    if (delivered === before) break
  }
  clearInterval(sampler)
  const cpu = process.cpuUsage(cpu0)
  const s = g.stats()
  console.log(JSON.stringify({
    id, sent, delivered, bytes, firstSend, lastDelivery, hash: hash.digest('hex'), latency: summary(lat), cpuMs: (cpu.user + cpu.system) / 1000,
    ...memory.stop(), resent: s.resent, nacks: s.nacksSent, dropped: s.dropped, rssSeries, youngSeries,
    stallMs: Math.round(stallMs * 10) / 10, lost: lost.datagrams, lostBytes: lost.bytes, resentBytes: s.resentBytes,
    retransmittedBytes: s.retransmittedBytes, nacksServed: s.nacksServed, sendWaitMs: Math.round(sendWaitMs),
  }))
  g.close()
  process.exit(0)
}

async function runRaw(): Promise<void> {
  const [host, portStr] = target!.split(':')
  const port = Number(portStr)
  const rx = dgram.createSocket({ type: 'udp4', reuseAddr: true })
  const tx = dgram.createSocket('udp4')
  let delivered = 0
  let bytes = 0
  let lastDelivery = 0
  const memory = memorySampler()
  await new Promise<void>((r) => rx.bind(port, host, () => r()))
  rx.addMembership(host!, '127.0.0.1')
  try { rx.setRecvBufferSize(4 << 20) } catch { /* capped */ }
  rx.on('message', (m) => {
    delivered++
    bytes += m.length
    lastDelivery = wall()
  })
  await new Promise<void>((r) => tx.bind(0, '127.0.0.1', () => r()))
  tx.setMulticastInterface('127.0.0.1')
  tx.setMulticastLoopback(true)
  await new Promise((r) => setTimeout(r, 300)) // let the others bind
  const firstSend = wall()
  let sent = 0
  const start = performance.now()
  const buf = payload(0)
  while (performance.now() - start < sendMs) {
    await new Promise<void>((resolve) => {
      let left = BURST
      for (let i = 0; i < BURST; i++) tx.send(buf, port, host, () => --left === 0 && resolve())
    })
    sent += BURST
    // dgram completes sends without going through the poll phase: yield, or this process never reads its socket.
    await new Promise((r) => setImmediate(r))
  }
  for (;;) {
    const before = delivered
    await new Promise((r) => setTimeout(r, IDLE_MS))
    if (delivered === before) break
  }
  console.log(JSON.stringify({ id, sent, delivered, bytes, firstSend, lastDelivery, ...memory.stop() }))
  process.exit(0)
}

await (mode === 'raw' ? runRaw() : runSeqcast())
