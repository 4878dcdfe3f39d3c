/**
 * lib/seal.ts alone: sealed datagrams open only under the same key and incarnation, untouched, once; a stranger's
 * bytes, a tampered byte anywhere, another key or a replay are dropped and counted, never thrown.
 */
import t from 'tap'
import { randomBytes } from 'node:crypto'
import { SealedTransport, SEAL_OVERHEAD } from '../lib/seal.js'
import { BaseTransport, type Via } from '../lib/transport.js'
import { encodeAck } from '../lib/wire.js'

/** A transport that keeps what is sent, and lets a test hand it what "arrives". */
class Wire extends BaseTransport {
  readonly address = '127.0.0.1:9'
  readonly out: Buffer[] = []
  protected sendTo(buf: Buffer): void {
    this.out.push(Buffer.from(buf))
  }
  arrive(buf: Buffer, via: Via = 'group'): void {
    this.onDatagram(buf, via, '127.0.0.1:8')
  }
  close(): void {}
}

function pair(keyA = randomBytes(32), keyB = keyA) {
  const wa = new Wire()
  const wb = new Wire()
  const a = new SealedTransport(wa, keyA)
  const b = new SealedTransport(wb, keyB)
  const got: Buffer[] = []
  b.onDatagram = (buf) => void got.push(Buffer.from(buf))
  for (const w of [wa, wb]) w.channel('239.255.1.1:5000', 'multicast')
  return { a, b, wa, wb, got }
}

const inc = { hi: 0x01020304, lo: 0x05060708 }
const ack = (have: number): Buffer => encodeAck({ inc, viewId: 3, sender: 2 }, have, have, 0)

t.test('a sealed datagram opens to exactly the plain one; the body is not readable on the wire', async (t) => {
  const { a, wa, wb, got } = pair()
  const plain = ack(123456)
  a.toGroup(plain)
  const sealed = wa.out[0]!
  t.equal(sealed.length, plain.length + SEAL_OVERHEAD)
  t.equal(sealed[20]! & 1, 1, 'the AUTH flag is set')
  t.same(sealed.subarray(0, 20), plain.subarray(0, 20), 'the header travels readable (associated data)')
  t.notSame(sealed.subarray(24, plain.length), plain.subarray(24), 'the body does not')
  wb.arrive(sealed)
  t.same(got, [plain])
})

t.test('every single byte changed anywhere makes it rejected', async (t) => {
  const { a, b, wa, wb, got } = pair()
  a.toGroup(ack(7))
  const sealed = wa.out[0]!
  for (let i = 0; i < sealed.length; i++) {
    const x = Buffer.from(sealed)
    x[i] = x[i]! ^ 0x40
    wb.arrive(x)
  }
  t.same(got, [], 'none opened')
  t.equal(b.stats.rejected, sealed.length)
})

t.test('another key, an unsealed datagram, random bytes: rejected and counted, never thrown', async (t) => {
  const { a, b, wa, wb, got } = pair(randomBytes(32), randomBytes(32))
  a.toGroup(ack(1))
  wb.arrive(wa.out[0]!)
  wb.arrive(ack(1))
  for (let n = 0; n < 200; n++) t.doesNotThrow(() => wb.arrive(randomBytes(n)), { diagnostic: false } as never)
  t.same(got, [])
  t.equal(b.stats.rejected, 202)
})

t.test('a replay is dropped and counted: at once, later, out of order within the window, or older than it', async (t) => {
  const { a, b, wa, wb, got } = pair()
  for (let i = 0; i < 2000; i++) a.toGroup(ack(i + 1))
  const s = wa.out
  wb.arrive(s[0]!)
  wb.arrive(s[0]!)
  t.equal(got.length, 1, 'the copy is dropped')
  // Out of order within the window: each once.
  for (let i = 1500; i >= 1000; i--) wb.arrive(s[i]!)
  for (let i = 1000; i <= 1500; i++) wb.arrive(s[i]!)
  t.equal(got.length, 1 + 501, 'late ones within the window open once each')
  wb.arrive(s[1]!)
  wb.arrive(s[200]!)
  t.equal(got.length, 502, 'counters older than the window are not taken any more')
  t.equal(b.stats.replayed, 1 + 501 + 2)
  t.equal(b.stats.rejected, 0)
})

t.test('keys are per incarnation: a datagram re-headed into another incarnation does not open', async (t) => {
  const { a, b, wa, wb, got } = pair()
  a.toGroup(ack(5))
  const x = Buffer.from(wa.out[0]!)
  x.writeUInt32BE(0x0a0b0c0d, 4)
  wb.arrive(x)
  t.same(got, [])
  t.equal(b.stats.rejected, 1)
})

t.test('two senders never share a nonce: each life draws its own prefix', async (t) => {
  const key = randomBytes(32)
  const nonces = new Set<string>()
  for (let life = 0; life < 50; life++) {
    const w = new Wire()
    w.channel('239.255.1.1:5000', 'multicast')
    const s = new SealedTransport(w, key)
    for (let i = 0; i < 20; i++) s.toGroup(ack(i))
    for (const d of w.out) nonces.add(d.subarray(d.length - SEAL_OVERHEAD, d.length - 16).toString('hex'))
  }
  t.equal(nonces.size, 50 * 20)
})

t.test('a key of the wrong size is refused', async (t) => {
  t.throws(() => new SealedTransport(new Wire(), randomBytes(16)), RangeError)
})
