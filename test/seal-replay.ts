/**
 * lib/seal.ts's replay windows where they run out or have gaps: a datagram sealed for one member does not open at
 * another, and a busy sender's window is not forgotten while thousands of others come and go.
 */
import t from 'tap'
import { randomBytes } from 'node:crypto'
import { SealedTransport } from '../lib/seal.js'
import { BaseTransport, type Via } from '../lib/transport.js'
import { encodeAck, encodeNack } from '../lib/wire.js'

/** A transport that keeps what is sent (with where to), and lets a test hand it what "arrives". */
class Wire extends BaseTransport {
  readonly out: Array<{ buf: Buffer; to: string }> = []
  constructor(readonly address: string) {
    super()
  }
  protected sendTo(buf: Buffer, to: { host: string; port: number }): void {
    this.out.push({ buf: Buffer.from(buf), to: `${to.host}:${to.port}` })
  }
  arrive(buf: Buffer, via: Via = 'direct'): void {
    this.onDatagram(buf, via)
  }
  close(): void {}
}

const inc = { hi: 0x01020304, lo: 0x05060708 }

function member(key: Buffer, port: number): { wire: Wire; seal: SealedTransport; got: Buffer[] } {
  const wire = new Wire(`127.0.0.1:${port}`)
  const seal = new SealedTransport(wire, key)
  const got: Buffer[] = []
  seal.onDatagram = (buf) => void got.push(Buffer.from(buf))
  wire.channel('239.255.1.1:5000', 'multicast')
  return { wire, seal, got }
}

t.test('a datagram sealed for one member opens there once, and nowhere else', async (t) => {
  const key = randomBytes(32)
  const [a, b, c] = [member(key, 1001), member(key, 1002), member(key, 1003)]
  const nack = encodeNack({ inc, viewId: 3, sender: 2 }, [{ firstSlot: 10, n: 5 }], [])
  b.seal.toMember(a.wire.address, nack)
  const [{ buf, to }] = b.wire.out as [{ buf: Buffer; to: string }]
  t.equal(to, a.wire.address)
  a.wire.arrive(buf)
  t.same(a.got, [nack], 'a, to whom it was sent, opens it')
  a.wire.arrive(buf)
  t.equal(a.seal.stats.replayed, 1, 'a counts it again as replayed')
  c.wire.arrive(buf)
  c.wire.arrive(buf, 'group')
  t.same(c.got, [], 'c, whose window for b has a gap just there, does not open it')
  t.equal(c.seal.stats.rejected, 2, 'c counts it as rejected')
  b.wire.arrive(buf)
  t.same(b.got, [], 'nor does b, its sender')
  // The group's datagrams still open everywhere.
  b.seal.toGroup(encodeAck({ inc, viewId: 3, sender: 2 }, 7, 7, 0))
  c.wire.arrive(b.wire.out[1]!.buf, 'group')
  t.equal(c.got.length, 1, 'a send to the group opens at any member')
})

t.test('a busy sender\'s replay window outlives thousands of sender lives that come and go', async (t) => {
  const key = randomBytes(32)
  const r = member(key, 2000)
  const busy = member(key, 2001)
  const first = (): Buffer => busy.wire.out.at(-1)!.buf
  busy.seal.toGroup(encodeAck({ inc, viewId: 3, sender: 2 }, 1, 1, 0))
  const captured = first()
  r.wire.arrive(captured, 'group')
  // 5 000 members come and go, one datagram each (more windows than the receiver keeps), while the busy one goes on.
  for (let i = 0; i < 5000; i++) {
    const life = member(key, 3000 + (i % 1000))
    life.seal.toGroup(encodeAck({ inc, viewId: 3, sender: 10 + i }, 1, 1, 0))
    r.wire.arrive(life.wire.out[0]!.buf, 'group')
    if (i % 10 === 0) {
      busy.seal.toGroup(encodeAck({ inc, viewId: 3, sender: 2 }, 2 + i, 2 + i, 0))
      r.wire.arrive(first(), 'group')
    }
  }
  const opened = r.seal.stats.opened
  r.wire.arrive(captured, 'group')
  t.equal(r.seal.stats.opened, opened, 'the busy sender\'s first datagram, replayed, does not open')
  t.equal(r.seal.stats.replayed, 1, 'it is counted as replayed')
})
