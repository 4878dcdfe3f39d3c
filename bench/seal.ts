/**
 * `node dist/bench/seal.js [dist …]`: the seal layer alone (lib/seal.ts), in one process, no sockets. Three members
 * of a multicast group: each seals one datagram to the group and every member receives it, its own included
 * (multicast loopback) — 3 seals and 9 arrivals per round. Prints the CPU time per round (best of 30, user +
 * system) for datagrams of 200 B, 1.5 KB and 16 KB. Then the latency of one hop after the process idled 1 ms (as
 * in W2): from toGroup until the datagram is sent, and from its arrival until it is delivered (150 B, p50 and p90
 * of 800). Given other builds' dist directories (e.g. one built at an older commit), it alternates them with this
 * one in the same process, so all see the same machine.
 */
import { randomBytes } from 'node:crypto'
import { fileURLToPath } from 'node:url'
import type { Transport } from '../lib/transport.js'

interface Sealer extends Transport {
  seal(plain: Buffer): Buffer
}
type SealCtor = new (inner: Transport, key: Buffer) => Sealer

/** A transport that keeps the last datagram sent, and hands the test what "arrives". */
function wire(): Transport & { last: Buffer | null } {
  return {
    address: '127.0.0.1:9', sendErrors: 0, last: null,
    onDatagram: () => {}, channel() {}, peers() {}, close() {},
    toGroup(buf: Buffer) { this.last = buf },
    toMember(_addr: string, buf: Buffer) { this.last = buf },
  }
}

const here = fileURLToPath(new URL('..', import.meta.url))
const builds = [here, ...process.argv.slice(2)]
const key = randomBytes(32)
const ROUNDS = 30
const PER = 500

for (const size of [200, 1500, 16384]) {
  const setups = []
  for (const dir of builds) {
    const { SealedTransport } = (await import(`${dir}/lib/seal.js`)) as { SealedTransport: SealCtor }
    const members = [0, 1, 2].map(() => {
      const w = wire()
      const s = new SealedTransport(w, key)
      s.onDatagram = () => {}
      return { w, s }
    })
    // A header as the engine writes it (magic, version 3, type ACK, incarnation 1/2, view 3), the sender per member.
    const plains = members.map((_, i) => {
      const b = randomBytes(size)
      Buffer.from('534303030000000100000002000000030000000000000000', 'hex').copy(b, 0)
      b.writeUInt32BE(i + 1, 16)
      return b
    })
    setups.push({ dir, members, plains, best: Infinity })
  }
  for (let r = 0; r < ROUNDS; r++) {
    for (const st of setups) {
      const t0 = process.cpuUsage()
      for (let k = 0; k < PER; k++) {
        for (let i = 0; i < 3; i++) {
          const m = st.members[i]!
          m.s.toGroup(st.plains[i]!)
          for (const o of st.members) o.w.onDatagram(m.w.last!, 'group', '127.0.0.1:1')
        }
      }
      const c = process.cpuUsage(t0)
      st.best = Math.min(st.best, (c.user + c.system) / PER)
    }
  }
  console.log(`${String(size).padStart(5)} B: ${setups.map((s) => `${s.best.toFixed(1)} us${setups.length > 1 ? ` (${s.dir})` : ''}`).join('  ')}  per round of 3 seals + 9 arrivals`)
}

const cold = []
for (const dir of builds) {
  const { SealedTransport } = (await import(`${dir}/lib/seal.js`)) as { SealedTransport: SealCtor }
  const out = wire()
  const into = wire()
  let sentAt = 0n
  let gotAt = 0n
  const toGroup = out.toGroup.bind(out)
  out.toGroup = (buf: Buffer) => {
    sentAt = process.hrtime.bigint()
    toGroup(buf)
  }
  const a = new SealedTransport(out, key)
  const b = new SealedTransport(into, key)
  b.onDatagram = () => void (gotAt = process.hrtime.bigint())
  const plain = randomBytes(150)
  Buffer.from('534303030000000100000002000000030000000100000000', 'hex').copy(plain, 0)
  cold.push({ dir, a, b, out, into, plain, seal: [] as number[], open: [] as number[], sent: () => sentAt, got: () => gotAt })
}
const idle = (): Promise<void> => new Promise((resolve) => setTimeout(resolve, 1))
for (let i = 0; i < 800; i++) {
  for (const c of cold) {
    await idle()
    const t0 = process.hrtime.bigint()
    c.a.toGroup(c.plain)
    c.seal.push(Number(c.sent() - t0) / 1000)
    await idle()
    const t1 = process.hrtime.bigint()
    c.into.onDatagram(c.out.last!, 'group', '127.0.0.1:1')
    c.open.push(Number(c.got() - t1) / 1000)
  }
}
const q = (a: number[], p: number): string => a.sort((x, y) => x - y)[Math.floor(p * a.length)]!.toFixed(1)
for (const c of cold) {
  console.log(`after 1 ms idle, 150 B: until sent p50 ${q(c.seal, 0.5)} p90 ${q(c.seal, 0.9)} us, arrival until delivered p50 ${q(c.open, 0.5)} p90 ${q(c.open, 0.9)} us${cold.length > 1 ? ` (${c.dir})` : ''}`)
}
