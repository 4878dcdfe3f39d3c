/**
 * One benchmark member process. Modes:
 *   seqcast <dir> <id> <members> <sizeBytes> <sendMs> [rate]   join, send for sendMs (at `rate` msg/s if given,
 *                                                                else as fast as flow control allows), receive all
 *   raw <mcast ip:port> <id> <members> <sizeBytes> <sendMs> [burst]   plain dgram multicast, one message per
 *                                                                datagram, `burst` sends per event-loop turn
 *   rawrate <mcast ip:port> <id> <members> <sizeBytes> <sendMs> <rate>   W2's baseline: r0 multicasts one message
 *                                                                per datagram at `rate` with W2's pacing loop, every
 *                                                                member (r0 too, by loopback) times each arrival
 * Prints one JSON line: counts, first-send/last-delivery wall times (ms), a hash of the delivered stream, latency
 * samples summary, peak RSS, the longest gap between deliveries.
 * SEQCAST_BENCH_GC=1: a line on stderr per member with its mark-compacts and the Buffer memory alive after them.
 * SEQCAST_BENCH_TRACE=DIR (W2, diagnosis): each member also writes DIR/<id>@<rate>.json: every latency sample (message
 * number, send time, latency), V8's collections (start, duration, kind), the event loop's delay, and the sender's
 * sends that waited over 0.5 ms (its window full).
 * SEQCAST_BENCH_LOSS=P (the LOSS case of run.ts; benchmark only, no option of the library): this member drops each
 * datagram it receives with probability P, drawn from a PRNG seeded by SEQCAST_BENCH_SEED (default 1) and its id.
 */
import dgram from 'node:dgram'
import { createHash } from 'node:crypto'
import v8 from 'node:v8'
import { writeFileSync } from 'node:fs'
import { monitorEventLoopDelay, PerformanceObserver, constants as perfConstants } from 'node:perf_hooks'
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
/** W2: how long the sender sends before the messages that count (see Latencies). */
const WARM_MS = Number(process.env.SEQCAST_BENCH_WARM_MS ?? 3000)
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

/** SEQCAST_BENCH_TRACE: what a member records for a look at where latency comes from (bench only). */
class Trace {
  /** Triples: message number, send time (wall ms), latency (ms). */
  private readonly samples: number[] = []
  /** Triples: start (wall ms), duration (ms), kind (perf_hooks' NODE_PERFORMANCE_GC_*). */
  private readonly gcs: number[] = []
  private readonly eld = monitorEventLoopDelay({ resolution: 1 })
  private readonly obs = new PerformanceObserver((list) => {
    for (const e of list.getEntries()) this.gcs.push(performance.timeOrigin + e.startTime, e.duration, (e as PerformanceEntry & { detail?: { kind?: number } }).detail?.kind ?? 0)
  })

  constructor(private readonly dir: string) {
    this.obs.observe({ entryTypes: ['gc'] })
    this.eld.enable()
  }

  /** Pairs: start (wall ms), duration (ms) of each send that took over 0.5 ms (the sender's window was full). */
  private readonly waits: number[] = []
  waited(t: number, ms: number): void {
    this.waits.push(performance.timeOrigin + t, ms)
  }

  sample(data: Uint8Array, latency: number): void {
    const b = Buffer.from(data.buffer, data.byteOffset, 12)
    this.samples.push(b.readUInt32BE(8), b.readDoubleBE(0), latency)
  }

  write(more: Record<string, unknown>): void {
    this.eld.disable()
    this.obs.disconnect()
    const ms = (ns: number): number => Math.round(ns / 1e3) / 1e3
    const eld = { p50: ms(this.eld.percentile(50)), p99: ms(this.eld.percentile(99)), max: ms(this.eld.max) }
    writeFileSync(`${this.dir}/${id}@${rate}.json`, JSON.stringify({ id, ...more, eld, samples: this.samples, gcs: this.gcs, waits: this.waits }))
  }
}
const trace = process.env.SEQCAST_BENCH_TRACE ? new Trace(process.env.SEQCAST_BENCH_TRACE) : null

function payload(k: number, warm = false): Buffer {
  const b = Buffer.alloc(Math.max(size, 16), 0x61)
  b.writeDoubleBE(wall(), 0) // send time, for latency
  b.writeUInt32BE(k, 8)
  b[12] = warm ? 1 : 0
  return b
}

/**
 * W2's latency samples, send→delivery of each message (same host clock). Messages of the warm-up (payload byte 12)
 * are kept apart: until V8 has optimised the path, a member needs many times the CPU per message (a profile of the
 * first 300 ms at 10 000/s: the sender busy 200 ms of 300, later 10), which is the start of a process, not latency.
 */
class Latencies {
  readonly steady: number[] = []
  readonly warm: number[] = []

  record(data: Uint8Array, now: number): void {
    if (data.length < 16) return
    const b = Buffer.from(data.buffer, data.byteOffset, 16)
    const ms = now - b.readDoubleBE(0)
    if (b[12] === 1) this.warm.push(ms)
    else {
      this.steady.push(ms)
      trace?.sample(b, ms)
    }
  }
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

/**
 * W2's sender: `rate` msg/s for WARM_MS (the warm-up: not in the figures) then sendMs, the messages due so far sent after each sleep of 1 ms, one `send` each —
 * the same loop for seqcast and for its raw baseline, so the pacing is not what differs. Returns how many it sent.
 */
async function paced(send: (b: Buffer) => unknown): Promise<number> {
  let sent = 0
  const start = performance.now()
  while (performance.now() - start < WARM_MS + sendMs) {
    const due = Math.floor(((performance.now() - start) / 1000) * rate)
    const warm = performance.now() - start < WARM_MS
    while (sent < due) {
      const t = trace ? performance.now() : 0
      await send(payload(++sent, warm))
      if (trace && performance.now() - t > 0.5) trace.waited(t, performance.now() - t)
    }
    // Sleep, not spin: a busy sender would steal the receivers' CPU on a 2-core machine and inflate their tails.
    await new Promise((r) => setTimeout(r, 1))
  }
  return sent
}

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
  const lat = new Latencies()
  g.on('message', (d) => {
    const now = wall()
    if (firstSend > 0) stallMs = Math.max(stallMs, now - Math.max(lastDelivery, firstSend))
    delivered++
    bytes += d.data.length
    lastDelivery = now
    hash.update(d.sender)
    hash.update(d.data.subarray(8, 12))
    if (rate > 0) lat.record(d.data, now)
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
    // The sender is never the sequencer: its messages take the path of every other member's — to the sequencer,
    // whose ORDER then reaches everyone: two one-way trips (the sequencer's own need one). Every member sees the
    // same view, so they agree on who sends.
    const v = g.view!
    if (id === v.members.filter((m) => m !== v.sequencer).sort()[0]) sent = await paced((b) => g.send(b))
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
  trace?.write({ sequencer: s.sequencer, sent })
  console.log(JSON.stringify({
    id, sent, delivered, bytes, firstSend, lastDelivery, hash: hash.digest('hex'), latency: summary(lat.steady), warmup: summary(lat.warm), cpuMs: (cpu.user + cpu.system) / 1000,
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
  // W2's baseline sends as the library does (lib/transport.ts): the address is its own lookup, so a datagram leaves
  // when sent rather than on the next tick.
  const tx = mode === 'rawrate' ? dgram.createSocket({ type: 'udp4', lookup: (h, _f, done) => done(null, h, 4) }) : dgram.createSocket('udp4')
  let delivered = 0
  let bytes = 0
  let lastDelivery = 0
  const memory = memorySampler()
  await new Promise<void>((r) => rx.bind(port, host, () => r()))
  rx.addMembership(host!, '127.0.0.1')
  try { rx.setRecvBufferSize(4 << 20) } catch { /* capped */ }
  const lat = new Latencies()
  rx.on('message', (m) => {
    const now = wall()
    delivered++
    bytes += m.length
    lastDelivery = now
    if (mode === 'rawrate') lat.record(m, now)
  })
  await new Promise<void>((r) => tx.bind(0, '127.0.0.1', () => r()))
  tx.setMulticastInterface('127.0.0.1')
  tx.setMulticastLoopback(true)
  await new Promise((r) => setTimeout(r, 300)) // let the others bind
  const firstSend = wall()
  let sent = 0
  if (mode === 'rawrate') {
    if (id === 'r0') sent = await paced((b) => tx.send(b, port, host))
  } else {
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
  }
  for (;;) {
    const before = delivered
    await new Promise((r) => setTimeout(r, IDLE_MS))
    if (delivered === before) break
  }
  trace?.write({ sent })
  console.log(JSON.stringify({ id, sent, delivered, bytes, firstSend, lastDelivery, latency: summary(lat.steady), warmup: summary(lat.warm), ...memory.stop() }))
  process.exit(0)
}

await (mode === 'raw' || mode === 'rawrate' ? runRaw() : runSeqcast())
