/**
 * The reverse of the conformance suite (issue 15), data plane: a scripted raw peer (test/fixtures/breakpeer.ts, the
 * raw member of rawpeer.ts with switches; nothing from lib/) is a member of a real group and breaks one duty of docs/PROTOCOL.md §5.1 per
 * test with the datagrams it sends; each test checks what §5.2 says the real members do (dropped or foreign and
 * counted, delivered once, expelled), and that their streams stay identical and complete.
 */
import t, { type Test } from 'tap'
import { B, lastView, sleep, streams, texts, traffic, until, world, type Member } from './fixtures/breakworld.js'
import type { BreakPeer } from './fixtures/breakpeer.js'

const PORT = 46330

/** A real group a (the sequencer), b and the peer p, after some traffic. */
async function setup(t: Test, name: string, port: number) {
  const w = await world(t, { mcastPort: port })
  const a = await w.member(name, 'a')
  const b = await w.member(name, 'b')
  const p = await w.peer(name, 'p')
  await p.join()
  await until(() => lastView(a)?.length === 3 && lastView(b)?.length === 3, 5000, 'the view with p')
  await traffic([a, b], [a, b], 5, 'before')
  return { w, a, b, p }
}

const whole = (msgId: number, text: string) => ({ msgId, flags: 2, payload: Buffer.from(text) }) // FIRST, not MORE
const same = (t: Test, ms: Member[]): void => {
  const s = streams(ms)
  for (let i = 1; i < s.length; i++) t.same(s[i], s[0], `${ms[i]!.id} and ${ms[0]!.id}: the same stream`)
}

t.test('[A5, Q6] never ACKs: the sequencer suspects it within 2B, it is expelled, the others go on', async (t) => {
  const { a, b, p } = await setup(t, 'noack', PORT)
  p.acking = false
  const t0 = Date.now()
  await p.until(() => p.closed, 2 * B + 5000, 'expulsion')
  const took = Date.now() - t0
  t.match(p.frame('expelled'), { reason: /lack of progress/ }, 'expelled for lack of progress')
  t.ok(took >= B - 200, `not before B (${took} ms)`)
  await until(() => lastView(a)?.join() === 'a,b' && lastView(b)?.join() === 'a,b', 5000, 'the view without p')
  await traffic([a, b], [a, b], 5, 'after')
  same(t, [a, b])
})

t.test('[Q2, A3] ORDER from a member that is not the sequencer: dropped and counted, the stream unaffected', async (t) => {
  const { a, b, p } = await setup(t, 'order', PORT + 1)
  const before = [a.g.stats().dropped, b.g.stats().dropped]
  const next = p.top + 1
  const forged = p.dgram('ORDER', { firstSlot: next, stable: 0, runs: [{ sender: p.noOf('b'), firstMsgId: 6, count: 1 }, { sender: p.no, firstMsgId: 1, count: 1 }] })
  p.toMcast(forged)
  p.to(p.noOf('a'), forged)
  p.to(p.noOf('b'), forged)
  await until(() => a.g.stats().dropped >= before[0]! + 2 && b.g.stats().dropped >= before[1]! + 2, 3000, 'the forged ORDERs counted')
  t.pass('dropped and counted at a and b')
  await traffic([a, b], [a, b], 5, 'after')
  same(t, [a, b])
  t.equal(a.g.stats().violations + b.g.stats().violations, 0, 'no slot assigned twice')
})

t.test('[E3, A1] DATA under another member\'s number from its own address: foreign, never delivered', async (t) => {
  const { a, b, p } = await setup(t, 'spoof', PORT + 2)
  const before = b.g.stats().foreign
  const forged = p.dgram('DATA', { entries: [whole(6, 'forged'), whole(7, 'forged')] }, { sender: p.noOf('a') })
  p.toMcast(forged)
  p.to(p.noOf('b'), forged)
  await until(() => b.g.stats().foreign >= before + 2, 3000, 'the forged DATA counted at b')
  t.pass('foreign at b')
  await traffic([a, b], [a, b], 5, 'after')
  t.notOk([...texts(a), ...texts(b)].some((x) => x.includes('forged')), 'nobody delivered the forged messages')
  same(t, [a, b])
})

t.test('[A1, A3] replayed DATA and reused msgIds: each message delivered once, the first text', async (t) => {
  const { a, b, p } = await setup(t, 'replay', PORT + 3)
  const one = p.dgram('DATA', { entries: [whole(1, 'p-1')] })
  p.toMcast(one)
  await until(() => [a, b].every((m) => texts(m).includes('p:p-1')), 3000, 'p-1 delivered')
  p.toMcast(one)
  p.toMcast(p.dgram('DATA', { entries: [whole(1, 'p-1-again')] }))
  p.toMcast(p.dgram('DATA', { entries: [whole(2, 'p-2'), whole(2, 'p-2-twice'), whole(1, 'p-1-third')] }))
  p.to(p.noOf('a'), one) // as a resend to the sequencer
  await until(() => [a, b].every((m) => texts(m).includes('p:p-2')), 3000, 'p-2 delivered')
  await traffic([a, b], [a, b], 5, 'after')
  for (const m of [a, b]) t.same(texts(m).filter((x) => x.startsWith('p:')), ['p:p-1', 'p:p-2'], `${m.id}: p's messages once each`)
  same(t, [a, b])
})

t.test('[Q3] ACKs no member can send (have past the next slot, acked > have, stable > have): dropped and counted, stability held by the true ACK', async (t) => {
  const { a, b, p } = await setup(t, 'ack', PORT + 4)
  await until(() => p.have === a.g.stats().have && a.g.stats().stable >= p.have, 3000, 'stable caught up')
  const held = p.have
  p.acking = false // its last honest ACK says `held`
  await traffic([a, b], [a, b], 5, 'unstable')
  const dropped = a.g.stats().dropped
  const top = a.g.stats().have
  p.to(p.noOf('a'), p.dgram('ACK', { have: top + 1000, acked: top + 1000, stable: 0 }))
  p.to(p.noOf('a'), p.dgram('ACK', { have: top, acked: top + 1, stable: 0 }))
  p.to(p.noOf('a'), p.dgram('ACK', { have: held, acked: held, stable: held + 1 }))
  await until(() => a.g.stats().dropped >= dropped + 3, 3000, 'the three ACKs counted')
  t.pass('dropped and counted at the sequencer')
  await sleep(100)
  t.ok(a.g.stats().stable <= held, `stable (${a.g.stats().stable}) not past what p acknowledged (${held})`)
  p.acking = true
  await until(() => a.g.stats().stable >= top, 3000, 'stable past everything once p acknowledges')
  same(t, [a, b])
})

t.test('[L2] a leaver that sends DATA after the commit excluding it: never delivered; it is released', async (t) => {
  const { a, b, p } = await setup(t, 'leaver', PORT + 5)
  const old = p.latest!.viewId
  p.askLeave()
  await p.until(() => p.excludedBy !== null, 5000, 'the commit excluding p')
  const nv = p.excludedBy!.viewId
  for (const viewId of [old, nv]) {
    const d = p.dgram('DATA', { entries: [whole(1, `late-${viewId}`), whole(2, `late2-${viewId}`)] }, { viewId })
    p.toMcast(d)
    p.to(p.noOf('a'), d)
  }
  await p.until(() => p.frame('released') !== undefined, 5000, 'released')
  t.pass('released')
  await traffic([a, b], [a, b], 5, 'after')
  t.notOk([...texts(a), ...texts(b)].some((x) => x.startsWith('p:')), 'nothing of the leaver delivered')
  t.equal(lastView(a)?.join(), 'a,b', 'the view without p')
  same(t, [a, b])
})

t.test('[E3] malformed datagrams of every type: dropped and counted, the group unaffected', async (t) => {
  const { a, b, p } = await setup(t, 'malformed', PORT + 6)
  const ok = {
    DATA: p.dgram('DATA', { entries: [whole(1, 'x')] }),
    ORDER: p.dgram('ORDER', { firstSlot: 1, stable: 0, runs: [] }),
    ACK: p.dgram('ACK', { have: 1, acked: 1, stable: 0 }),
    NACK: p.dgram('NACK', { items: [{ kind: 1, firstSlot: 1, n: 1 }] }),
  }
  const mutate = (buf: Buffer, f: (b: Buffer) => void): Buffer => { const c = Buffer.from(buf); f(c); return c }
  const bad: Array<[string, Buffer]> = []
  for (const [type, buf] of Object.entries(ok)) {
    bad.push([`${type} cut short`, buf.subarray(0, buf.length - 1)])
    bad.push([`${type} with a trailing byte`, Buffer.concat([buf, Buffer.from([0])])])
    bad.push([`${type} with a bad magic`, mutate(buf, (c) => { c[0] = 0x54 })])
    bad.push([`${type} of version 2`, mutate(buf, (c) => { c[2] = 2 })])
    bad.push([`${type} with a reserved byte set`, mutate(buf, (c) => { c[22] = 1 })])
    bad.push([`${type} with flags set (unsealed)`, mutate(buf, (c) => { c[20] = 1 })])
  }
  bad.push(['unknown type 9', mutate(ok.ACK, (c) => { c[3] = 9 })])
  bad.push(['DATA entry with an unknown flag bit', p.dgram('DATA', { entries: [{ msgId: 1, flags: 2 | 4, payload: Buffer.from('x') }] })])
  bad.push(['DATA msgId 0', p.dgram('DATA', { entries: [whole(0, 'x')] })])
  bad.push(['ORDER run of count 0', p.dgram('ORDER', { firstSlot: 1, stable: 0, runs: [{ sender: p.no, firstMsgId: 1, count: 0 }] })])
  bad.push(['ORDER run of firstMsgId 0', p.dgram('ORDER', { firstSlot: 1, stable: 0, runs: [{ sender: p.no, firstMsgId: 0, count: 1 }] })])
  bad.push(['ORDER firstSlot 0', p.dgram('ORDER', { firstSlot: 0, stable: 0, runs: [] })])
  bad.push(['NACK item of kind 3', mutate(ok.NACK, (c) => { c[26] = 3 })])
  bad.push(['STATEREQ of 15 bytes', p.dgram('STATEREQ', { acked: 0, from: 0, length: 16 }).subarray(0, 24 + 15)])
  bad.push(['STATEREQ past its window', p.dgram('STATEREQ', { acked: 0, from: 5 * 1024 * 1024, length: 16 })])
  bad.push(['STATE with NONE and LAST', p.dgram('STATE', { offset: 0, flags: 3, bytes: Buffer.alloc(0) })])
  bad.push(['a header alone', ok.ACK.subarray(0, 24)])
  bad.push(['three bytes', Buffer.from([0x53, 0x43, 3])])
  const before = [a.g.stats().dropped, b.g.stats().dropped]
  for (const [, buf] of bad) for (const m of ['a', 'b']) p.to(p.noOf(m), buf)
  await until(() => a.g.stats().dropped - before[0]! >= bad.length && b.g.stats().dropped - before[1]! >= bad.length, 3000,
    `${bad.length} malformed datagrams counted at a and b (a ${a.g.stats().dropped - before[0]!}, b ${b.g.stats().dropped - before[1]!})`)
  t.pass(`${bad.length} kinds dropped and counted at a and b: ${bad.map(([what]) => what).join('; ')}`)
  await traffic([a, b], [a, b], 5, 'after')
  t.same([a.errors, b.errors], [[], []], 'nobody failed')
  same(t, [a, b])
  t.same(p.badFrames, [], 'every frame the directory sent p passes the schema')
})

t.test('[Q5, A2] a sender that skips msgIds and never answers the sequencer\'s NACK: nothing of it delivered, the others go on', async (t) => {
  const { a, b, p } = await setup(t, 'gap', PORT + 7)
  p.toMcast(p.dgram('DATA', { entries: [whole(2, 'p-2'), whole(3, 'p-3')] }))
  await p.until(() => p.datagrams.some((d) => d.ok && d.type === 'NACK' && d.header.sender === p.noOf('a')), 3000, 'the sequencer\'s NACK for msgId 1')
  t.pass('the sequencer asks p for its missing message')
  await traffic([a, b], [a, b], 5, 'after')
  t.notOk([...texts(a), ...texts(b)].some((x) => x.startsWith('p:')), 'nothing of p delivered out of FIFO order')
  same(t, [a, b])
})

t.test('[R4, E4] a NACK for far more than a source may answer: answered within the budget, the group unaffected', async (t) => {
  const { a, b, p } = await setup(t, 'bignack', PORT + 8)
  const n = p.datagrams.length
  p.to(p.noOf('a'), p.dgram('NACK', { items: [{ kind: 1, firstSlot: 1, n: 65_535 }, { kind: 2, sender: p.noOf('b'), firstMsgId: 1, n: 65_535 }] }))
  await sleep(300)
  const answers = p.datagrams.slice(n).filter((d) => d.ok && d.header.sender !== p.no && d.from === p.latest!.members.get(p.noOf('a'))!.addr)
  t.ok(answers.length > 0 && answers.length < 100, `answered with ${answers.length} datagrams`)
  await traffic([a, b], [a, b], 5, 'after')
  same(t, [a, b])
})
