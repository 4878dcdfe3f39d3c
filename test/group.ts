/**
 * The public API over real sockets: argument errors with their codes, join errors, garbage datagrams at a live
 * member, leave, async iteration and events.
 */
import t from 'tap'
import dgram from 'node:dgram'
import { Group, grp_join, grp_leave, grp_receive, grp_send, ErrorCodes, type Delivery } from '../lib/index.js'
import { datagramSizeFor } from '../lib/group.js'
import { freePort, startDir } from './fixtures/procs.js'

const iface = '127.0.0.1'

t.test('bad arguments are rejected with EBAD_ARGUMENT', async (t) => {
  await t.rejects(grp_join('', 'a'), { code: ErrorCodes.BAD_ARGUMENT })
  await t.rejects(grp_join('g', 'x'.repeat(65)), { code: ErrorCodes.BAD_ARGUMENT })
  await t.rejects(grp_join('g', 'a', { directory: 'nope' }), { code: ErrorCodes.BAD_ARGUMENT })
  await t.rejects(grp_join('g', 'a', { iface: '127.0.0.999' }), { code: ErrorCodes.BAD_ARGUMENT })
  await t.rejects(grp_join('g', 'a', { sendWindow: 0 }), { code: ErrorCodes.BAD_ARGUMENT })
  await t.rejects(grp_join('g', 'a', { delivery: 'fast' as never }), { code: ErrorCodes.BAD_ARGUMENT })
  await t.rejects(grp_join('g', 'a', { bogus: 1 } as never), { code: ErrorCodes.BAD_ARGUMENT })
  await t.rejects(grp_send({} as Group, 'x'), { code: ErrorCodes.BAD_ARGUMENT })
  await t.rejects(grp_receive(null as unknown as Group), { code: ErrorCodes.BAD_ARGUMENT })
})

t.test('an unreachable directory fails the join with EDIRECTORY_UNREACHABLE', async (t) => {
  const port = await freePort()
  await t.rejects(grp_join('g', 'a', { directory: `127.0.0.1:${port}`, iface }), { code: ErrorCodes.DIRECTORY_UNREACHABLE })
})

t.test('a live group: API contract, duplicate ids, garbage datagrams, leave', async (t) => {
  const dir = await startDir(await freePort())
  t.teardown(() => dir.stop())
  const opts = { directory: dir.addr, iface }
  const a = await grp_join('api', 'alice', opts)
  const first = await grp_receive(a, { timeoutMs: 2000 })
  t.match(first, { type: 'view', group: 'api', members: ['alice'], sequencer: 'alice' }, 'first delivery is the joining view')
  t.equal(await grp_receive(a, { timeoutMs: 50 }), null, 'null when nothing arrives in time')

  await t.rejects(grp_join('api', 'alice', opts), { code: ErrorCodes.DUPLICATE_MEMBER }, 'duplicate member id')

  const b = await grp_join('api', 'bob', opts)
  t.match(await grp_receive(b, { timeoutMs: 2000 }), { type: 'view', members: ['alice', 'bob'] })
  t.match(await grp_receive(a, { timeoutMs: 2000 }), { type: 'view', members: ['alice', 'bob'] })

  // Garbage at both of bob's sockets: random bytes, truncated and foreign datagrams. Bob must survive and count them.
  const sock = dgram.createSocket('udp4')
  await new Promise<void>((r) => sock.bind(0, iface, () => r()))
  const stats0 = b.stats()
  const addr = { port: Number((b as unknown as { transport: { address: string } }).transport.address.split(':')[1]) }
  for (let i = 0; i < 200; i++) {
    const junk = Buffer.alloc(1 + (i % 60), i)
    if (i % 3 === 0) junk.write('SC\x01\x02', 0, 'latin1')
    await new Promise<void>((r) => sock.send(junk, addr.port, iface, () => r()))
  }
  sock.close()
  await new Promise((r) => setTimeout(r, 100))

  await grp_send(a, 'hello')
  await grp_send(b, new Uint8Array([1, 2, 3]))
  const got: Delivery[] = []
  for (let i = 0; i < 2; i++) got.push((await grp_receive(b, { timeoutMs: 2000 }))!)
  const mine: Delivery[] = []
  for (let i = 0; i < 2; i++) mine.push((await grp_receive(a, { timeoutMs: 2000 }))!)
  t.same(got.map((d) => d.type === 'message' && d.seq), mine.map((d) => d.type === 'message' && d.seq), 'same order at both')
  t.match(got.find((d) => d.type === 'message' && d.sender === 'alice'), { data: Buffer.from('hello') })
  t.ok(b.stats().dropped - stats0.dropped >= 150, `garbage counted as dropped (${b.stats().dropped - stats0.dropped})`)

  await t.rejects(grp_send(a, 42 as never), { code: ErrorCodes.BAD_ARGUMENT })
  await t.rejects(grp_send(a, Buffer.alloc(a.stats().sent >= 0 ? 17 * 1024 * 1024 : 0)), { code: ErrorCodes.MESSAGE_TOO_LARGE })

  await grp_leave(b)
  await t.rejects(grp_send(b, 'x'), { code: ErrorCodes.NOT_JOINED }, 'unusable after leave')
  t.match(await grp_receive(a, { timeoutMs: 3000 }), { type: 'view', members: ['alice'] }, 'the others see the leave')
  a.close()
})

t.test('events and async iteration', async (t) => {
  const dir = await startDir(await freePort())
  t.teardown(() => dir.stop())
  const opts = { directory: dir.addr, iface }
  const a = await Group.join('it', 'a', opts)
  const seen: string[] = []
  const iter = (async () => {
    for await (const d of a) {
      seen.push(d.type === 'message' ? Buffer.from(d.data).toString() : `view ${d.members.length}`)
      if (seen.length === 4) break
    }
  })()
  for (const s of ['1', '2', '3']) await a.send(s)
  await iter
  t.same(seen, ['view 1', '1', '2', '3'])
  const b = await Group.join('it', 'b', opts)
  const msgs: string[] = []
  b.on('message', (d) => msgs.push(Buffer.from(d.data).toString()))
  await b.receive() // its view
  await a.send('x')
  await new Promise((r) => setTimeout(r, 300))
  t.same(msgs, ['x'], 'message event')
  t.equal(b.stats().queued, 0, 'nothing queued when listeners consume')
  a.close()
  b.close()
})

t.test('the datagram that completes a message delivers it in its own callback, not a turn later', async (t) => {
  // Every event-loop turn between a datagram's arrival and the next send or delivery is latency, on each of the two
  // hops (sender -> sequencer's ORDER -> members). Each member's log: 'd' when a datagram arrives, 'e' when the turn
  // it arrived in has ended (an immediate queued before the member sees it), 'm' for a delivery.
  const dir = await startDir(await freePort())
  t.teardown(() => dir.stop())
  const opts = { directory: dir.addr, iface }
  const a = await Group.join('turns', 'a', opts) // the sequencer
  const b = await Group.join('turns', 'b', opts)
  t.teardown(() => {
    a.close()
    b.close()
  })
  while ((a.view?.members.length ?? 0) < 2) await new Promise((r) => setTimeout(r, 5))
  await a.receive()
  await a.receive()
  await b.receive()
  const logs = [a, b].map((g) => {
    const log: string[] = []
    const tr = (g as unknown as { transport: { onDatagram: (buf: Buffer, via: string, from: string) => void } }).transport
    const inner = tr.onDatagram
    tr.onDatagram = (buf, via, from) => {
      log.push('d')
      setImmediate(() => log.push('e'))
      inner(buf, via, from)
    }
    g.on('message', () => log.push('m'))
    return log
  })
  for (let i = 0; i < 5; i++) {
    await b.send(`x${i}`) // a orders it as its DATA arrives; b delivers it as the ORDER arrives
    await new Promise((r) => setTimeout(r, 20))
  }
  await new Promise((r) => setTimeout(r, 100))
  for (const [i, log] of logs.entries()) {
    const text = log.join('')
    t.equal(text.split('m').length - 1, 5, `${'ab'[i]} delivered all five`)
    // A delivery in its datagram's turn: after a 'd' with no 'e' since. Flushed at the end of the turn (the old
    // way), every delivery came after its 'e'. Not all five must be in their turn: past IMMEDIATE_FLUSHES inputs in
    // one turn (a loaded machine reads several datagrams a turn), a turn's later inputs are flushed at its end.
    let last = ''
    let inTurn = 0
    for (const c of text) {
      if (c === 'm') inTurn += last === 'd' ? 1 : 0
      else last = c
    }
    t.ok(inTurn >= 1, `${'ab'[i]}: ${inTurn} of 5 delivered in their datagram's turn (${text})`)
  }
})

t.test('a member that does not read holds the sender back; its queue stays under maxQueuedBytes', async (t) => {
  const dir = await startDir(await freePort())
  t.teardown(() => dir.stop())
  const reader = await Group.join('bp', 'reader', { directory: dir.addr, iface, maxQueuedBytes: 64 * 1024 })
  const writer = await Group.join('bp', 'writer', { directory: dir.addr, iface, sendWindow: 32 })
  await writer.receive({ timeoutMs: 2000 })
  const total = 2000
  const body = Buffer.alloc(1000, 0x61)
  let sent = 0
  const sending = (async () => {
    for (; sent < total; sent++) await writer.send(body)
  })()
  await new Promise((r) => setTimeout(r, 1500))
  const { queued, queuedBytes } = reader.stats()
  t.ok(queuedBytes <= 64 * 1024 + 1064, `the reader's queue stays bounded (${queued} deliveries, ${queuedBytes} bytes)`)
  t.ok(sent < total, `the writer waits for the reader (${sent} of ${total} accepted)`)
  let messages = 0
  while (messages < total) {
    const d = await reader.receive({ timeoutMs: 5000 })
    if (!d) break
    if (d.type === 'message') messages++
  }
  await sending
  t.equal(messages, total, 'every message arrives once the reader reads')
  reader.close()
  writer.close()
})

t.test('the default datagram size follows the interface MTU, so nothing is IP-fragmented', async (t) => {
  t.equal(datagramSizeFor('127.0.0.1'), 60_000, 'loopback (MTU 65 536): capped at 60 000')
  t.equal(datagramSizeFor('10.254.254.254'), undefined, 'an address no interface has: unknown, the 16 384 fallback applies')
})

t.test('a send waiting for window room has its bytes copied at the call: the buffer may be reused at once', async (t) => {
  const dir = await startDir(await freePort())
  t.teardown(() => dir.stop())
  // A window of 4 messages: the later sends wait for room, holding what they were given.
  const a = await Group.join('reuse', 'a', { directory: dir.addr, iface, sendWindow: 4 })
  await a.receive() // its view
  const buf = Buffer.alloc(8)
  const sends: Promise<void>[] = []
  for (let i = 0; i < 20; i++) {
    buf.writeUInt32BE(i, 0)
    sends.push(a.send(buf)) // not awaited: the caller reuses its buffer at once
  }
  buf.fill(0xff)
  await Promise.all(sends)
  const got: number[] = []
  for (let i = 0; i < 20; i++) got.push(Buffer.from((await a.receive({ timeoutMs: 5000 }))!.data as Uint8Array).readUInt32BE(0))
  t.same(got, Array.from({ length: 20 }, (_, i) => i), 'every message as it was when sent')
  a.close()
})

t.test('a listener added after deliveries were queued gets them, even if nothing more arrives', async (t) => {
  // A member that joins, then attaches its listener (Group.join resolves first): what was delivered in between sat
  // in the queue until the next delivery pushed it out — for the group's last messages, for ever.
  const dir = await startDir(await freePort())
  t.teardown(() => dir.stop())
  const opts = { directory: dir.addr, iface }
  const a = await Group.join('late-listener', 'a', opts)
  const b = await Group.join('late-listener', 'b', opts)
  t.teardown(() => {
    a.close()
    b.close()
  })
  for (const s of ['1', '2', '3']) await a.send(s)
  const until = Date.now() + 5000
  while (b.stats().queued < 4 && Date.now() < until) await new Promise((r) => setTimeout(r, 10)) // its view and the three
  const got: string[] = []
  b.on('message', (d) => got.push(Buffer.from(d.data).toString()))
  await new Promise((r) => setTimeout(r, 200))
  t.same(got, ['1', '2', '3'], 'the queued messages reach the listener')
})

t.test('stats(): delivered counts messages; the stream positions are have, deliveredSlot, stable', async (t) => {
  // The delivered position used to overwrite the message count (issue 15): a chat's "/stats" showed a slot.
  const dir = await startDir(await freePort())
  t.teardown(() => dir.stop())
  const a = await Group.join('stats', 'a', { directory: dir.addr, iface })
  t.teardown(() => a.close())
  await a.receive() // its view, at slot 1
  for (const s of ['1', '2', '3']) await a.send(s)
  for (let i = 0; i < 3; i++) await a.receive({ timeoutMs: 5000 })
  const s = a.stats()
  t.equal(s.sent, 3)
  t.equal(s.delivered, 3, 'messages delivered')
  t.equal(s.deliveredSlot, 4, 'the stream position: the view at 1, the messages at 2-4')
  t.ok(s.have >= 4 && s.stable <= s.have)
})
