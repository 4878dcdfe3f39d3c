import t from 'tap'
import {
  DataPacker, decode, encodeAck, encodeNack, encodeOrder, encodeState, encodeStateNone, encodeStateReq, FOREIGN, formatIncarnation,
  fragmentRoom, HEADER_SIZE, Kind, MAX_U48, parseIncarnation, runsPerDatagram, STATE_OVERHEAD, STATE_WINDOW, VERSION,
} from '../lib/wire.js'
import { rng } from './fixtures/sim-rng.js'
import { SlotLog } from '../lib/slotlog.js'
import { MessageStore } from '../lib/msgstore.js'

const G = { hi: 0x0123abcd, lo: 0xfedc0042 }
const H = { inc: G, viewId: 7, sender: 3 }
const R = { viewId: 7, sender: 3 } // what a receiver reads of H

t.test('incarnations travel as 16 hex digits, never all zero', async (t) => {
  t.equal(formatIncarnation(G), '0123abcdfedc0042')
  t.same(parseIncarnation('0123abcdfedc0042'), G)
  for (const bad of ['0000000000000000', '0123abcdfedc004', '0123ABCDFEDC0042', 'x123abcdfedc0042', 42, null]) {
    t.equal(parseIncarnation(bad), undefined, `refuses ${String(bad)}`)
  }
})

t.test('a datagram of incarnation 0 is malformed, even to a member that knows no incarnation yet', async (t) => {
  const zero = { hi: 0, lo: 0 }
  const buf = encodeAck({ inc: zero, viewId: 1, sender: 3 }, 5, 5, 5)
  // A member before its first commit decodes with incarnation 0: the datagram must not match it.
  t.match(decode(buf, zero), { kind: 0, reason: 'incarnation 0' })
  t.match(decode(buf, G), { kind: 0, reason: 'incarnation 0' }, 'not counted as another group\'s (foreign): it is no group\'s')
  t.match(decode(encodeAck({ inc: { hi: 0, lo: 1 }, viewId: 1, sender: 3 }, 5, 5, 5), { hi: 0, lo: 1 }), { kind: Kind.ACK }, 'one half 0 is fine')
})

t.test('ACK layout, byte by byte', async (t) => {
  const buf = encodeAck(H, 0x010203040506, 0x0a0b0c0d0e0f, 0x111213141516)
  t.equal(buf.toString('hex'), '5343' + '03' + '03' + '0123abcd' + 'fedc0042' + '00000007' + '00000003' + '00000000' +
    '010203040506' + '0a0b0c0d0e0f' + '111213141516')
  t.same(decode(buf, G), { kind: Kind.ACK, ...R, have: 0x010203040506, acked: 0x0a0b0c0d0e0f, stable: 0x111213141516 })
  t.match(decode(buf.subarray(0, buf.length - 12), G), { kind: 0, reason: 'ACK length mismatch' }, 'a one-field ACK is refused')
})

t.test('DATA round trip, fragments flag, payload views', async (t) => {
  const p = new DataPacker(H, 200)
  t.ok(p.add(1, true, false, Buffer.from('hello')))
  t.ok(p.add(2, true, true, Buffer.alloc(0)))
  t.ok(p.add(3, false, false, Buffer.from('!')))
  t.notOk(p.add(4, true, false, Buffer.alloc(500)), 'refuses what does not fit')
  const buf = p.finish()
  t.equal(buf.toString('hex', HEADER_SIZE + 2 + 6, HEADER_SIZE + 2 + 7), '02', 'a whole message: FIRST (bit 1), not MORE')
  const d = decode(buf, G)
  if (d.kind !== Kind.DATA) throw new Error('not DATA')
  t.equal(d.entries.length, 3)
  t.equal(Buffer.from(d.entries[0]!.payload).toString(), 'hello')
  t.same(d.entries.map((e) => [e.first, e.more]), [[true, false], [true, true], [false, false]])
  const unknownFlag = Buffer.from(buf)
  unknownFlag[HEADER_SIZE + 2 + 6] = 4
  t.equal(decode(unknownFlag, G).kind, 0, 'an unknown DATA flag is refused')
  t.equal(fragmentRoom(16384), 16384 - HEADER_SIZE - 2 - 11)
})

t.test('a packed datagram is exactly its bytes, and the packer\'s own: the next packer does not touch it', async (t) => {
  const p = new DataPacker(H, 60_000)
  p.add(1, true, false, Buffer.from('first'))
  const first = p.finish()
  t.equal(first.length, HEADER_SIZE + 2 + 11 + 5, 'no 60 000-byte buffer behind a 5-byte message')
  const q = new DataPacker({ ...H, sender: 9 }, 60_000)
  q.add(7, true, false, Buffer.from('other'))
  q.finish()
  const d = decode(first, G)
  if (d.kind !== Kind.DATA) throw new Error('not DATA')
  t.same([d.sender, d.entries[0]!.msgId, Buffer.from(d.entries[0]!.payload).toString()], [3, 1, 'first'])
  t.throws(() => p.add(2, true, false, Buffer.from('late')), /another was made/, 'a superseded packer refuses to write')
})

t.test('msgIds are 48-bit everywhere: a sender past its 2^32-th message is not mistaken for a duplicate', async (t) => {
  const big = 2 ** 32 + 7
  const p = new DataPacker(H, 200)
  p.add(big, true, false, Buffer.from('x'))
  const d = decode(p.finish(), G)
  t.equal(d.kind === Kind.DATA && d.entries[0]!.msgId, big, 'DATA')
  const runs = [{ sender: 1, firstMsgId: 2 ** 48 - 10, count: 3 }]
  t.same(decode(encodeOrder(H, 9, 1, runs), G), { kind: Kind.ORDER, ...R, firstSlot: 9, stable: 1, runs }, 'ORDER')
  const data = [{ sender: 4, firstMsgId: big, n: 2 }]
  t.same(decode(encodeNack(H, [], data), G), { kind: Kind.NACK, ...R, slots: [], data }, 'NACK')
  const log = new SlotLog(8)
  log.set(3, 1, big, 1)
  t.equal(log.msgId(3), big, 'SlotLog')
  const store = new MessageStore()
  store.set(big, true, false, Buffer.from('y'))
  t.ok(store.has(big) && !store.has(big - 2 ** 32), 'MessageStore')
})

t.test('ORDER and heartbeat round trip', async (t) => {
  const runs = [{ sender: 1, firstMsgId: 10, count: 3 }, { sender: 2, firstMsgId: 1, count: 65535 }]
  t.same(decode(encodeOrder(H, 2 ** 40, 99, runs), G), { kind: Kind.ORDER, ...R, firstSlot: 2 ** 40, stable: 99, runs })
  t.same(decode(encodeOrder(H, 5, 4, []), G), { kind: Kind.ORDER, ...R, firstSlot: 5, stable: 4, runs: [] })
  t.equal(runsPerDatagram(1000), Math.floor((1000 - HEADER_SIZE - 14) / 12))
})

t.test('an ORDER whose runs pass 2^48 − 1, in msgIds or in slots, is malformed', async (t) => {
  const max = 2 ** 48 - 1
  t.match(decode(encodeOrder(H, 5, 0, [{ sender: 1, firstMsgId: max - 1, count: 3 }]), G), { kind: 0, reason: 'run past 2^48' }, 'msgIds')
  t.match(decode(encodeOrder(H, max - 1, 0, [{ sender: 1, firstMsgId: 1, count: 2 }, { sender: 1, firstMsgId: 3, count: 1 }]), G), { kind: 0, reason: 'run past 2^48' }, 'slots')
  t.match(decode(encodeOrder(H, max - 1, 0, [{ sender: 1, firstMsgId: max - 1, count: 2 }]), G), { kind: Kind.ORDER }, 'up to 2^48 − 1 exactly')
})

t.test('NACK round trip', async (t) => {
  const slots = [{ firstSlot: 12, n: 3 }]
  const data = [{ sender: 4, firstMsgId: 8, n: 2 }]
  t.same(decode(encodeNack(H, slots, data), G), { kind: Kind.NACK, ...R, slots, data })
})

t.test('STATEREQ layout, byte by byte, and its window', async (t) => {
  const buf = encodeStateReq(H, 0x010203040506, 0x010203040507, 0x003fffff)
  t.equal(buf.toString('hex'), '5343' + '03' + '05' + '0123abcd' + 'fedc0042' + '00000007' + '00000003' + '00000000' +
    '010203040506' + '010203040507' + '003fffff')
  t.same(decode(buf, G), { kind: Kind.STATEREQ, ...R, acked: 0x010203040506, from: 0x010203040507, length: 0x3fffff })
  t.same(decode(encodeStateReq(H, 9, 9, 0), G), { kind: Kind.STATEREQ, ...R, acked: 9, from: 9, length: 0 }, '"done"')
  t.same(decode(encodeStateReq(H, 0, STATE_WINDOW - 1, 1), G), { kind: Kind.STATEREQ, ...R, acked: 0, from: STATE_WINDOW - 1, length: 1 }, 'up to the window\'s end')
  const refused = [
    [10, 9, 1, 'from below acked'], [0, 0, STATE_WINDOW + 1, 'longer than the window'], [0, 1, STATE_WINDOW, 'past the window'],
    [0, 0, 2 ** 32 - 1, 'length 2^32 − 1'], [MAX_U48, MAX_U48, 2 ** 32 - 1, 'at 2^48 − 1'],
  ] as const
  for (const [acked, from, length, what] of refused) {
    t.match(decode(encodeStateReq(H, acked, from, length), G), { kind: 0, reason: 'STATEREQ outside its window' }, what)
  }
  t.match(decode(buf.subarray(0, buf.length - 1), G), { kind: 0, reason: 'STATEREQ length mismatch' }, 'short')
  t.match(decode(Buffer.concat([buf, Buffer.from([0])]), G), { kind: 0, reason: 'STATEREQ length mismatch' }, 'trailing byte')
})

t.test('STATE layout, LAST, NONE, gathered parts', async (t) => {
  const buf = encodeState(H, 0x0a0b0c0d0e0f, true, [Buffer.from('ab'), Buffer.alloc(0), Buffer.from('c')])
  t.equal(buf.length, STATE_OVERHEAD + 3)
  t.equal(buf.toString('hex'), '5343' + '03' + '06' + '0123abcd' + 'fedc0042' + '00000007' + '00000003' + '00000000' +
    '0a0b0c0d0e0f' + '01' + '616263')
  const d = decode(buf, G)
  if (d.kind !== Kind.STATE) throw new Error('not STATE')
  t.same([d.offset, d.last, d.none, Buffer.from(d.bytes).toString()], [0x0a0b0c0d0e0f, true, false, 'abc'])
  t.same(decode(encodeState(H, 5, false), G), { kind: Kind.STATE, ...R, offset: 5, last: false, none: false, bytes: Buffer.alloc(0) }, 'empty, not LAST')
  t.same(decode(encodeStateNone(H), G), { kind: Kind.STATE, ...R, offset: 0, last: false, none: true, bytes: Buffer.alloc(0) }, 'NONE')
  const flag = (f: number, body = encodeState(H, 0, false)): Buffer => { const b = Buffer.from(body); b[HEADER_SIZE + 6] = f; return b }
  t.match(decode(flag(4), G), { kind: 0, reason: 'unknown STATE flags' })
  t.match(decode(flag(0x80), G), { kind: 0, reason: 'unknown STATE flags' })
  t.match(decode(flag(3), G), { kind: 0, reason: 'NONE with an offset, bytes or LAST' }, 'NONE and LAST')
  t.match(decode(flag(2, encodeState(H, 0, false, [Buffer.from('x')])), G), { kind: 0, reason: 'NONE with an offset, bytes or LAST' }, 'NONE with bytes')
  t.match(decode(flag(2, encodeState(H, 1, false)), G), { kind: 0, reason: 'NONE with an offset, bytes or LAST' }, 'NONE with an offset')
  t.match(decode(encodeState(H, MAX_U48, false, [Buffer.from('x')]), G), { kind: 0, reason: 'state past 2^48' })
  t.match(decode(encodeState(H, MAX_U48, true), G), { kind: Kind.STATE, offset: MAX_U48 }, 'an empty LAST at 2^48 − 1')
  for (let n = 0; n < STATE_OVERHEAD; n++) t.equal(decode(buf.subarray(0, n), G).kind, 0, `truncated to ${n}`)
})

t.test('incarnation 0 and member number 0 are malformed wherever they appear (a member before its first commit has incarnation 0)', async (t) => {
  const none = { hi: 0, lo: 0 }
  const zero = encodeAck({ inc: none, viewId: 7, sender: 3 }, 1, 1, 1)
  t.equal((decode(zero, none) as { reason: string }).reason, 'incarnation 0')
  t.equal((decode(encodeAck({ ...H, sender: 0 }, 1, 1, 1), G) as { reason: string }).reason, 'sender 0', 'header sender 0')
  t.equal((decode(encodeOrder(H, 5, 4, [{ sender: 0, firstMsgId: 1, count: 2 }]), G) as { reason: string }).reason, 'sender 0', 'a run of sender 0')
  t.equal((decode(encodeNack(H, [], [{ sender: 0, firstMsgId: 1, n: 2 }]), G) as { reason: string }).reason, 'sender 0', 'a NACK item of sender 0')
  t.equal(decode(encodeOrder(H, 5, 4, [{ sender: 0xffffffff, firstMsgId: 1, count: 2 }]), G).kind, 2, 'every other number is a member number')
})

t.test('rejects, never throws: foreign, truncated, trailing, garbage', async (t) => {
  const good = encodeOrder(H, 5, 4, [{ sender: 1, firstMsgId: 1, count: 2 }])
  t.equal((decode(good, { ...G, lo: G.lo + 1 }) as { reason: string }).reason, FOREIGN, 'another incarnation (low half)')
  t.equal((decode(good, { ...G, hi: G.hi + 1 }) as { reason: string }).reason, FOREIGN, 'another incarnation (high half)')
  for (let n = 0; n < good.length; n++) t.equal(decode(good.subarray(0, n), G).kind, 0, `truncated to ${n}`)
  t.equal(decode(Buffer.concat([good, Buffer.from([0])]), G).kind, 0, 'trailing byte')
  const flagged = Buffer.from(good)
  flagged[20] = 1
  t.equal(decode(flagged, G).kind, 0, 'auth flag without key')
  for (const at of [21, 22, 23]) {
    const reserved = Buffer.from(good)
    reserved[at] = 1
    t.equal(decode(reserved, G).kind, 0, `reserved byte ${at} set`)
  }
  const p = new DataPacker(H, 100)
  p.add(1, true, false, Buffer.from('x'))
  const data = p.finish()
  for (let n = 0; n < data.length; n++) t.equal(decode(data.subarray(0, n), G).kind, 0, `DATA truncated to ${n}`)
  const r = rng(7)
  let ok = 0
  for (let i = 0; i < 20000; i++) {
    const len = Math.floor(r() * 80)
    const buf = Buffer.alloc(len)
    for (let k = 0; k < len; k++) buf[k] = Math.floor(r() * 256)
    if (len >= HEADER_SIZE && r() < 0.5) { buf.writeUInt16BE(0x5343, 0); buf[2] = VERSION; buf[3] = 1 + Math.floor(r() * 6); buf.writeUInt32BE(G.hi, 4); buf.writeUInt32BE(G.lo, 8); buf.writeUInt32BE(0, 20) }
    const d = decode(buf, G)
    if (d.kind !== 0) ok++
  }
  t.pass(`20000 random datagrams decoded without a throw (${ok} happened to be well formed)`)
})
