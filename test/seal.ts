/**
 * lib/seal.ts alone: sealed datagrams open only under the same key and incarnation, untouched, once; a stranger's
 * bytes, a tampered byte anywhere, another key or a replay are dropped and counted, never thrown.
 */
import t from 'tap'
import { randomBytes } from 'node:crypto'
import { SealedTransport, SEAL_OVERHEAD, keyId, linkPsk } from '../lib/seal.js'
import { createDecipheriv, hkdfSync } from 'node:crypto'
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

const phase = (d: Buffer): number => (d[20]! >> 1) & 1

t.test('key rotation: both phases open during the transition, sealing switches, then the old key opens nothing', async (t) => {
  const k0 = randomBytes(32)
  const k1 = randomBytes(32)
  const { a, b, wa, wb, got } = pair(k0)
  a.toGroup(ack(1))
  const old = wa.out[0]!
  t.equal(phase(old), 0, 'epoch 0 seals with phase 0')
  // Everyone learns the new key first, still sealing with the old; then a switches.
  b.setKeys([{ epoch: 0, key: k0 }, { epoch: 1, key: k1 }], 0)
  a.setKeys([{ epoch: 0, key: k0 }, { epoch: 1, key: k1 }], 1)
  a.toGroup(ack(2))
  const next = wa.out[1]!
  t.equal(phase(next), 1, 'sealing switched to epoch 1')
  wb.arrive(next)
  wb.arrive(old) // in flight under the old key, arriving late
  t.same(got, [ack(2), ack(1)], 'both phases open; the engine gets the plain datagram, phase bit cleared')
  // A datagram sealed under the new key alone does not open under the old: the phase picks the key.
  const onlyOld = pair(k0)
  onlyOld.wb.arrive(next)
  t.equal(onlyOld.got.length, 0)
  t.equal(onlyOld.b.stats.rejected, 1)
  t.notOk(onlyOld.b.wrongKey())

  a.toGroup(ack(3))
  const old2 = pair(k0)
  old2.a.toGroup(ack(4))
  b.setKeys([{ epoch: 1, key: k1 }], 1)
  b.setKeys([{ epoch: 1, key: k1 }], 1) // idempotent
  wb.arrive(wa.out[2]!)
  wb.arrive(old2.wa.out[0]!)
  t.same(got, [ack(2), ack(1), ack(3)], 'after dropping the old key, its datagrams are rejected')
  t.equal(b.stats.rejected, 1)
  // Epoch 2 reuses phase 0, under another key: epoch 0's datagrams fail its tag.
  const k2 = randomBytes(32)
  b.setKeys([{ epoch: 1, key: k1 }, { epoch: 2, key: k2 }], 1)
  wb.arrive(old)
  t.equal(b.stats.rejected, 2)
  t.equal(got.length, 3)
})

t.test('an old-key datagram replayed after the switch is dropped and counted, whether or not the old key is still held', async (t) => {
  const k0 = randomBytes(32)
  const k1 = randomBytes(32)
  const { a, b, wa, wb, got } = pair(k0)
  a.toGroup(ack(1))
  b.setKeys([{ epoch: 0, key: k0 }, { epoch: 1, key: k1 }], 0)
  a.setKeys([{ epoch: 0, key: k0 }, { epoch: 1, key: k1 }], 1)
  a.toGroup(ack(2))
  const [old, next] = wa.out as [Buffer, Buffer]
  t.not(old.subarray(old.length - 28, old.length - 16).toString('hex'), next.subarray(next.length - 28, next.length - 16).toString('hex'), 'the nonce counter went on across the switch')
  wb.arrive(old)
  wb.arrive(next)
  wb.arrive(old)
  t.equal(got.length, 2)
  t.equal(b.stats.replayed, 1, 'replayed while both keys are held: opens, and the window (per sender life, not per key) has it')
  b.setKeys([{ epoch: 1, key: k1 }], 1)
  wb.arrive(old)
  wb.arrive(next)
  t.equal(got.length, 2)
  t.equal(b.stats.rejected, 1, 'after the old key is dropped: rejected')
  t.equal(b.stats.replayed, 2)
})

t.test('the phase bit is authenticated: flipped, the datagram does not open under the other key', async (t) => {
  const k0 = randomBytes(32)
  const k1 = randomBytes(32)
  const both = [{ epoch: 0, key: k0 }, { epoch: 1, key: k1 }]
  const { a, b, wa, wb, got } = pair(k0)
  a.setKeys(both, 1)
  b.setKeys(both, 0)
  a.toGroup(ack(1))
  a.setKeys(both, 0)
  a.toGroup(ack(2))
  for (const d of wa.out) {
    const x = Buffer.from(d)
    x[20] = x[20]! ^ 2
    wb.arrive(x)
  }
  t.same(got, [])
  t.equal(b.stats.rejected, 2)
  for (const d of wa.out) wb.arrive(d)
  t.equal(got.length, 2, 'untouched, both open')
})

t.test('wrongKey(): not for datagrams of a phase with no key held (a rotation), yes for a key that fails', async (t) => {
  const k0 = randomBytes(32)
  const k1 = randomBytes(32)
  // The group has moved to epoch 1; a joiner given only epoch 0 ... and one given epoch 1 hearing epoch 0 stragglers.
  const sender = pair(k0)
  sender.a.setKeys([{ epoch: 0, key: k0 }, { epoch: 1, key: k1 }], 0)
  for (let i = 0; i < 40; i++) sender.a.toGroup(ack(i + 1))
  const late = new SealedTransport(new Wire(), k1, 1)
  for (const d of sender.wa.out) late.open(d)
  t.equal(late.stats.rejected, 40)
  t.notOk(late.wrongKey(), 'stragglers of the old phase are not a wrong key')
  // Same phase, another key: that is a wrong key.
  const wrong = new SealedTransport(new Wire(), randomBytes(32), 0)
  for (const d of sender.wa.out) wrong.open(d)
  t.ok(wrong.wrongKey())
})

t.test('setKeys refuses bad input with RangeError, and leaves the keys as they were', async (t) => {
  const k0 = randomBytes(32)
  const { a, b, wa, wb, got } = pair(k0)
  const k = randomBytes(32)
  const bad: [unknown, unknown][] = [
    [[], 0],
    [[{ epoch: 0, key: k }, { epoch: 1, key: k }, { epoch: 2, key: k }], 0],
    [[{ epoch: 0, key: k }, { epoch: 2, key: k }], 0],
    [[{ epoch: 1, key: k }, { epoch: 1, key: k }], 1],
    [[{ epoch: -1, key: k }], -1],
    [[{ epoch: 1.5, key: k }], 1.5],
    [[{ epoch: 2 ** 53, key: k }], 2 ** 53],
    [[{ epoch: 0, key: randomBytes(31) }], 0],
    [[{ epoch: 0, key: 'x'.repeat(32) }], 0],
    [[{ epoch: 0, key: k }], 1],
    [[null], 0],
    [null, 0],
  ]
  for (const [keys, use] of bad) t.throws(() => a.setKeys(keys as never, use as never), RangeError, JSON.stringify(keys))
  a.toGroup(ack(1))
  wb.arrive(wa.out[0]!)
  t.equal(got.length, 1, 'still sealing with the key it had')
  t.equal(b.stats.rejected, 0)
  const ok = new SealedTransport(new Wire(), k, 7)
  t.doesNotThrow(() => ok.setKeys([{ epoch: 8, key: k0 }, { epoch: 7, key: k }], 8), 'in either order')
})

t.test('keyId and linkPsk: fixed derivations, distinct from each other and from the key', async (t) => {
  const key = Buffer.from('00112233445566778899aabbccddeeff00112233445566778899aabbccddeeff', 'hex')
  const id = keyId(key)
  t.match(id, /^[0-9a-f]{16}$/)
  t.equal(id, Buffer.from(hkdfSync('sha256', key, Buffer.alloc(0), 'seqcast key id', 32)).toString('hex', 0, 8), 'the first 8 bytes of the 32-byte HKDF output')
  const psk = linkPsk(key)
  t.equal(psk.length, 32)
  t.same(psk, Buffer.from(hkdfSync('sha256', key, Buffer.alloc(0), 'seqcast directory link v1', 32)))
  t.notSame(psk, key)
  t.not(psk.toString('hex', 0, 8), id)
  t.equal(keyId(key), id, 'deterministic')
  t.not(keyId(randomBytes(32)), id)
  t.throws(() => keyId(randomBytes(16)), RangeError)
  t.throws(() => linkPsk(randomBytes(33)), RangeError)
})

t.test('the documented derivations (PROTOCOL.md §2.7 test vectors) open a sealed datagram without lib/seal.ts', async (t) => {
  const key = Buffer.from('00112233445566778899aabbccddeeff'.repeat(2), 'hex')
  t.equal(keyId(key), '79ba8aa5c38cd290')
  t.equal(linkPsk(key).toString('hex'), '47e431b271a219e13cbf82faf6f285ffb0ba1441c4ff38b9f77e80c93e70dbff')
  const dk = Buffer.from(hkdfSync('sha256', key, Buffer.from('0102030405060708', 'hex'), 'seqcast datagram v3', 32))
  t.equal(dk.toString('hex'), 'eb3acf2bca456b4f410fc73fb4ddf009ce8996cb84c659640dbd2fcb5afd1933')
  const w = new Wire()
  w.channel('239.255.1.1:5000', 'multicast')
  const s = new SealedTransport(w, key, 5)
  const plain = ack(99)
  s.toGroup(plain)
  const d = w.out[0]!
  t.equal(d[20], 0b11, 'AUTH, and KEY_PHASE = 5 mod 2')
  const end = d.length - 28
  const dec = createDecipheriv('aes-256-gcm', dk, d.subarray(end, end + 12))
  dec.setAAD(d.subarray(0, 24))
  dec.setAuthTag(d.subarray(end + 12))
  const body = Buffer.concat([dec.update(d.subarray(24, end)), dec.final()])
  t.same(body, plain.subarray(24))
  t.equal(d.readUInt32BE(end + 8), 0, 'the counter starts at 0')
})

t.test("a member's own datagrams coming back (multicast loopback) are dropped unopened once anything opened; a second time, counted as a replay", async (t) => {
  const { a, b, wa, wb } = pair()
  const mine: Buffer[] = []
  a.onDatagram = (buf) => void mine.push(buf)
  a.toGroup(ack(1))
  wa.arrive(wa.out[0]!)
  t.equal(mine.length, 1, 'before anything opened, its own datagram opens (a lone member learns its key is sound)')
  t.equal(a.stats.opened, 1)
  a.toGroup(ack(2))
  a.toGroup(ack(3))
  wa.arrive(wa.out[1]!)
  t.equal(mine.length, 1, 'after: dropped unopened')
  t.same(a.stats, { opened: 1, rejected: 0, replayed: 0 }, 'and not counted')
  wa.arrive(wa.out[1]!)
  t.equal(a.stats.replayed, 1, 'the same one again: a replay')
  // Forged with this member's nonce prefix: dropped all the same, and another member still checks it.
  const forged = Buffer.from(wa.out[2]!)
  forged[30] = forged[30]! ^ 1
  wa.arrive(forged)
  t.equal(mine.length, 1)
  wb.arrive(forged)
  t.equal(b.stats.rejected, 1)
  wb.arrive(wa.out[2]!)
  t.equal(b.stats.opened, 1, "the others open it as ever")
})

t.test('replay windows: one per sender life, even when two prefixes share the bits they are looked up by; the oldest of 4 096 forgotten', async (t) => {
  const key = randomBytes(32)
  const w = new Wire()
  const rx = new SealedTransport(w, key)
  let got = 0
  rx.onDatagram = () => void got++
  const life = (prefix?: Buffer) => {
    const wire = new Wire()
    wire.channel('239.255.1.1:5000', 'multicast')
    const s = new SealedTransport(wire, key)
    if (prefix) Object.assign(s, { prefix, pfxHi: prefix.readUInt32BE(0), pfxLo: prefix.readUInt32BE(4) })
    return { s, out: wire.out }
  }
  const p1 = randomBytes(8)
  const p2 = Buffer.from(p1)
  p2[7] = p2[7]! ^ 0x01 // the low 11 bits differ only: the same lookup hash
  const l1 = life(p1)
  const l2 = life(p2)
  for (let i = 0; i < 3; i++) {
    l1.s.toGroup(ack(i + 1))
    l2.s.toGroup(ack(i + 1))
  }
  for (const d of [...l1.out, ...l2.out]) w.arrive(d)
  t.equal(got, 6, 'the same counters from two lives: each opens')
  for (const d of [...l1.out, ...l2.out]) w.arrive(d)
  t.equal(rx.stats.replayed, 6, 'and each is a replay the second time')
  // 4 096 windows are kept: 4 095 newer lives make 4 097.
  for (let i = 0; i < 4095; i++) {
    const l = life()
    l.s.toGroup(ack(1))
    w.arrive(l.out[0]!)
  }
  // 4 097 created: the first, l1's, is forgotten.
  w.arrive(l2.out[0]!)
  t.equal(got, 6 + 4095, "the next oldest, l2's, is still there (forgetting l1 unlinked l1 from the chain, not l2)")
  t.equal(rx.stats.replayed, 7)
  w.arrive(l1.out[0]!)
  t.equal(got, 6 + 4095 + 1, "the oldest window was forgotten: its sender life's datagram opens again")
})

t.test('deciphers made ahead for a sender\'s next counter are used only for exactly that counter and key', async (t) => {
  const k0 = randomBytes(32)
  const k1 = randomBytes(32)
  const { a, b, wa, wb, got } = pair(k0)
  for (let i = 0; i < 4; i++) a.toGroup(ack(i + 1))
  const s = wa.out
  wb.arrive(s[0]!) // made ahead: counter 1
  wb.arrive(s[2]!) // counter 2 instead
  wb.arrive(s[1]!) // then 1, late
  t.same(got, [ack(1), ack(3), ack(2)], 'out of order: each opens')
  const bad = Buffer.from(s[3]!)
  bad[bad.length - 1] = bad[bad.length - 1]! ^ 1
  wb.arrive(bad) // the predicted counter, forged: rejected, and the one made ahead is spent
  wb.arrive(s[3]!)
  t.equal(got.length, 4, 'the genuine one still opens')
  t.equal(b.stats.rejected, 1)
  // A sender switches key between two consecutive counters (seal() alone makes nothing ahead, so its counters
  // follow): the decipher made ahead under the old key is not used for the new one.
  const c = new SealedTransport(new Wire(), k0)
  const both = [{ epoch: 0, key: k0 }, { epoch: 1, key: k1 }]
  b.setKeys(both, 0)
  wb.arrive(c.seal(ack(5)))
  c.setKeys(both, 1)
  const next = c.seal(ack(6))
  t.equal(next.readUInt32BE(next.length - 20), 1, 'counter 1, right after 0')
  wb.arrive(next)
  t.same(got.slice(4), [ack(5), ack(6)], 'the next counter under the new key opens')
  t.equal(b.stats.rejected, 1)
})
