import t from 'tap'
import {
  DataPacker, decode, encodeAck, encodeNack, encodeOrder, fragmentRoom, groupIdOf, HEADER_SIZE, Kind, runsPerDatagram, VERSION,
} from '../lib/wire.js'
import { rng } from './fixtures/sim-rng.js'
import { SlotLog } from '../lib/slotlog.js'
import { MessageStore } from '../lib/msgstore.js'

const G = groupIdOf('lobby')
const H = { groupId: G, viewId: 7, sender: 3 }

t.test('groupId is FNV-1a 32 of the UTF-8 name', async (t) => {
  t.equal(groupIdOf(''), 0x811c9dc5)
  t.equal(groupIdOf('a'), 0xe40c292c)
})

t.test('ACK layout, byte by byte', async (t) => {
  const buf = encodeAck(H, 0x010203040506, 0x0a0b0c0d0e0f, 0x111213141516)
  t.equal(buf.toString('hex'), '5343' + '02' + '03' + G.toString(16).padStart(8, '0') + '00000007' + '00000003' + '00000000' +
    '010203040506' + '0a0b0c0d0e0f' + '111213141516')
  t.same(decode(buf, G), { kind: Kind.ACK, ...H, have: 0x010203040506, acked: 0x0a0b0c0d0e0f, stable: 0x111213141516 })
  t.match(decode(buf.subarray(0, buf.length - 12), G), { kind: 0, reason: 'ACK length mismatch' }, 'the one-field ACK of before is refused')
})

t.test('DATA round trip, fragments flag, payload views', async (t) => {
  const p = new DataPacker(H, 200)
  t.ok(p.add(1, false, Buffer.from('hello')))
  t.ok(p.add(2, true, Buffer.alloc(0)))
  t.notOk(p.add(3, false, Buffer.alloc(500)), 'refuses what does not fit')
  const d = decode(p.finish(), G)
  if (d.kind !== Kind.DATA) throw new Error('not DATA')
  t.equal(d.entries.length, 2)
  t.equal(Buffer.from(d.entries[0]!.payload).toString(), 'hello')
  t.same([d.entries[0]!.more, d.entries[1]!.more], [false, true])
  t.equal(fragmentRoom(16384), 16384 - HEADER_SIZE - 2 - 11)
})

t.test('a packed datagram is exactly its bytes, and the packer\'s own: the next packer does not touch it', async (t) => {
  const p = new DataPacker(H, 60_000)
  p.add(1, false, Buffer.from('first'))
  const first = p.finish()
  t.equal(first.length, HEADER_SIZE + 2 + 11 + 5, 'no 60 000-byte buffer behind a 5-byte message')
  const q = new DataPacker({ ...H, sender: 9 }, 60_000)
  q.add(7, false, Buffer.from('other'))
  q.finish()
  const d = decode(first, G)
  if (d.kind !== Kind.DATA) throw new Error('not DATA')
  t.same([d.sender, d.entries[0]!.msgId, Buffer.from(d.entries[0]!.payload).toString()], [3, 1, 'first'])
  t.throws(() => p.add(2, false, Buffer.from('late')), /another was made/, 'a superseded packer refuses to write')
})

t.test('msgIds are 48-bit everywhere: a sender past its 2^32-th message is not mistaken for a duplicate', async (t) => {
  const big = 2 ** 32 + 7
  const p = new DataPacker(H, 200)
  p.add(big, false, Buffer.from('x'))
  const d = decode(p.finish(), G)
  t.equal(d.kind === Kind.DATA && d.entries[0]!.msgId, big, 'DATA')
  const runs = [{ sender: 1, firstMsgId: 2 ** 48 - 10, count: 3 }]
  t.same(decode(encodeOrder(H, 9, 1, runs), G), { kind: Kind.ORDER, ...H, firstSlot: 9, stable: 1, runs }, 'ORDER')
  const data = [{ sender: 4, firstMsgId: big, n: 2 }]
  t.same(decode(encodeNack(H, [], data), G), { kind: Kind.NACK, ...H, slots: [], data }, 'NACK')
  const log = new SlotLog(8)
  log.set(3, 1, big, 1)
  t.equal(log.msgId(3), big, 'SlotLog')
  const store = new MessageStore()
  store.set(big, false, Buffer.from('y'))
  t.ok(store.has(big) && !store.has(big - 2 ** 32), 'MessageStore')
})

t.test('ORDER and heartbeat round trip', async (t) => {
  const runs = [{ sender: 1, firstMsgId: 10, count: 3 }, { sender: 2, firstMsgId: 1, count: 65535 }]
  t.same(decode(encodeOrder(H, 2 ** 40, 99, runs), G), { kind: Kind.ORDER, ...H, firstSlot: 2 ** 40, stable: 99, runs })
  t.same(decode(encodeOrder(H, 5, 4, []), G), { kind: Kind.ORDER, ...H, firstSlot: 5, stable: 4, runs: [] })
  t.equal(runsPerDatagram(1000), Math.floor((1000 - 20 - 14) / 12))
})

t.test('NACK round trip', async (t) => {
  const slots = [{ firstSlot: 12, n: 3 }]
  const data = [{ sender: 4, firstMsgId: 8, n: 2 }]
  t.same(decode(encodeNack(H, slots, data), G), { kind: Kind.NACK, ...H, slots, data })
})

t.test('rejects, never throws: foreign, truncated, trailing, garbage', async (t) => {
  const good = encodeOrder(H, 5, 4, [{ sender: 1, firstMsgId: 1, count: 2 }])
  t.equal((decode(good, G + 1) as { reason: string }).reason, 'foreign group')
  for (let n = 0; n < good.length; n++) t.equal(decode(good.subarray(0, n), G).kind, 0, `truncated to ${n}`)
  t.equal(decode(Buffer.concat([good, Buffer.from([0])]), G).kind, 0, 'trailing byte')
  const flagged = Buffer.from(good)
  flagged[16] = 1
  t.equal(decode(flagged, G).kind, 0, 'auth flag without key')
  const p = new DataPacker(H, 100)
  p.add(1, false, Buffer.from('x'))
  const data = p.finish()
  for (let n = 0; n < data.length; n++) t.equal(decode(data.subarray(0, n), G).kind, 0, `DATA truncated to ${n}`)
  const r = rng(7)
  let ok = 0
  for (let i = 0; i < 20000; i++) {
    const len = Math.floor(r() * 80)
    const buf = Buffer.alloc(len)
    for (let k = 0; k < len; k++) buf[k] = Math.floor(r() * 256)
    if (len >= 20 && r() < 0.5) { buf.writeUInt16BE(0x5343, 0); buf[2] = VERSION; buf[3] = 1 + Math.floor(r() * 4); buf.writeUInt32BE(G, 4); buf[16] = 0 }
    const d = decode(buf, G)
    if (d.kind !== 0) ok++
  }
  t.pass(`20000 random datagrams decoded without a throw (${ok} happened to be well formed)`)
})
