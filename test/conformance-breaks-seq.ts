/**
 * The reverse of the conformance suite (issue 15), the roles a member trusts: the scripted raw peer
 * (test/fixtures/breakpeer.ts over rawpeer.ts) is the group's sequencer (it joins first: the smallest member number),
 * a repair source, a flushing or an installing member, and breaks one duty of docs/PROTOCOL.md §5.1 per test; each
 * test checks what §4.1 and §5.2 say the real members and directory do.
 */
import t, { type Test } from 'tap'
import { B, lastView, sleep, streams, texts, traffic, until, world, type Member } from './fixtures/breakworld.js'
import { BreakPeer } from './fixtures/breakpeer.js'
import { SEQ_WINDOW, type Datagram, type Frame, type RawPeerOptions } from './fixtures/rawpeer.js'

const PORT = 46350

const same = (t: Test, ms: Member[]): void => {
  const s = streams(ms)
  for (let i = 1; i < s.length; i++) t.same(s[i], s[0], `${ms[i]!.id} and ${ms[0]!.id}: the same stream`)
}
/** `m`'s messages from `sender` with `tag`, as delivered. */
const of = (m: Member, sender: string, tag: string): string[] => texts(m).filter((x) => x.startsWith(`${sender}:${sender}-${tag}-`))

/** The peer p joins first (the sequencer), then real a and b; some traffic. */
async function seqGroup<P extends BreakPeer>(t: Test, name: string, port: number, o: { transport?: 'unicast'; peer?: Partial<RawPeerOptions>; Peer?: new (o: RawPeerOptions) => P } = {}) {
  const w = await world(t, { mcastPort: port, transport: o.transport })
  const p = await w.peer(name, 'p', o.peer ?? {}, o.Peer ?? (BreakPeer as never))
  await p.join()
  const a = await w.member(name, 'a')
  const b = await w.member(name, 'b')
  await until(() => lastView(a)?.length === 3 && lastView(b)?.length === 3, 5000, 'the view with a and b')
  await traffic([a, b], [a, b], 5, 'before')
  t.ok(p.isSequencer(), 'the peer is the sequencer')
  return { w, p, a, b }
}

/** A sequencer whose ordering and heartbeats a test can switch off or bend. */
class Sequencer extends BreakPeer {
  /** Order nothing. */
  stopped = false
  /** Send no heartbeat of any kind (group, laggards, probes) and no data NACK. */
  quiet = false
  /** Skip the next msgId of this sender once (order its next-but-one in its place). */
  skip: number | null = null

  protected override order(): void {
    if (this.stopped) return
    const q = this.seq
    if (q && this.skip !== null && this.data.has(`${this.skip}/${(q.next.get(this.skip) ?? 0) + 1}`)) {
      q.next.set(this.skip, (q.next.get(this.skip) ?? 0) + 1)
      this.skip = null
    }
    super.order()
  }

  protected override heartbeat(now: number): void {
    if (!this.quiet) super.heartbeat(now)
  }

  next(): number {
    return this.seq!.nextSlot
  }
}

t.test('[Q2] the sequencer gives a slot to two messages: the later ORDER replaces the first (violation counted), the stream stays one', async (t) => {
  let armed = false
  const hooks = {
    out(d: Datagram, to: string) {
      if (!armed || d.type !== 'ORDER' || d.body.runs.length === 0 || to !== p.latest!.members.get(p.noOf('b'))!.addr) return
      armed = false
      // First the same slot for another message (the peer's own msgId 1, never sent), then the real assignment.
      p.to(p.noOf('b'), p.dgram('ORDER', { firstSlot: d.body.firstSlot, stable: d.body.stable, runs: [{ sender: p.no, firstMsgId: 1, count: 1 }] }, { viewId: d.header.viewId }))
    },
  }
  const { p, a, b } = await seqGroup(t, 'twice', PORT, { transport: 'unicast', peer: { hooks } })
  const before = [a.g.stats().violations, b.g.stats().violations]
  armed = true
  await traffic([a], [a, b], 1, 'one')
  t.notOk(armed, 'the slot was given twice')
  t.equal(b.g.stats().violations, before[1]! + 1, 'b took both and counted the second as a violation')
  t.equal(a.g.stats().violations, before[0]!, 'a saw one assignment')
  // Once delivered, a slot given again to another message is ignored, and not counted.
  const s = a.g.stats().have
  await until(() => b.g.stats().have >= s, 3000, 'b at a\'s have')
  for (const m of ['a', 'b']) p.to(p.noOf(m), p.dgram('ORDER', { firstSlot: s, stable: 0, runs: [{ sender: p.no, firstMsgId: 1, count: 1 }] }))
  await traffic([a, b], [a, b], 3, 'after')
  t.same([a.g.stats().violations, b.g.stats().violations], [before[0]!, before[1]! + 1], 'a slot below have given again: ignored, not counted')
  t.notOk([...texts(a), ...texts(b)].some((x) => x.startsWith('p:')), 'nothing of the peer delivered')
  same(t, [a, b])
})

t.test('[Q2] the sequencer skips a msgId (orders out of FIFO): the ORDER is dropped, nothing is delivered out of order; the stall lasts until the sequencer is gone', async (t) => {
  const { p, a, b } = await seqGroup(t, 'skip', PORT + 1, { Peer: Sequencer })
  const dropped = [a.g.stats().dropped, b.g.stats().dropped]
  p.skip = p.noOf('a')
  for (let i = 0; i < 3; i++) await a.g.send(`a-skip-${i}`)
  await until(() => a.g.stats().dropped > dropped[0]! && b.g.stats().dropped > dropped[1]!, 3000, 'the out-of-order ORDER dropped at a and b')
  await sleep(300)
  t.same([of(a, 'a', 'skip'), of(b, 'a', 'skip')], [[], []], 'a-skip-1 and -2 are not delivered without a-skip-0')
  // A member would suspect the sequencer after 2B (A9, the test below); end the stall sooner by crashing it.
  p.close()
  await until(() => [a, b].every((m) => lastView(m)?.join() === 'a,b'), 5000, 'the view without the peer')
  await until(() => [a, b].every((m) => of(m, 'a', 'skip').length === 3), 5000, 'a\'s messages delivered under the new sequencer')
  for (const m of [a, b]) t.same(of(m, 'a', 'skip'), ['a:a-skip-0', 'a:a-skip-1', 'a:a-skip-2'], `${m.id}: a's messages once each, in FIFO order`)
  same(t, [a, b])
})

t.test('[Q2] an ORDER (and a heartbeat) past max(stable, start) + SEQ_WINDOW: dropped and counted, the stream unaffected', async (t) => {
  const { p, a, b } = await seqGroup(t, 'window', PORT + 2)
  const dropped = [a.g.stats().dropped, b.g.stats().dropped]
  const far = Math.max(a.g.stats().have, b.g.stats().have) + SEQ_WINDOW + 2
  for (const m of ['a', 'b']) {
    p.to(p.noOf(m), p.dgram('ORDER', { firstSlot: far, stable: 0, runs: [{ sender: p.no, firstMsgId: 1, count: 1 }] }))
    p.to(p.noOf(m), p.dgram('ORDER', { firstSlot: far, stable: 0, runs: [] }))
  }
  await until(() => a.g.stats().dropped >= dropped[0]! + 2 && b.g.stats().dropped >= dropped[1]! + 2, 3000, 'both dropped at a and b')
  t.pass('dropped and counted at a and b')
  await traffic([a, b], [a, b], 5, 'after')
  same(t, [a, b])
})

t.test('[Q4] a sequencer that sends no heartbeat, and the last ORDER lost at b: b learns the slot only from the next ORDER, then catches up', async (t) => {
  let dropToB = false
  const hooks = {
    out(d: Datagram, to: string) {
      if (dropToB && d.type === 'ORDER' && d.body.runs.length > 0 && to === p.latest!.members.get(p.noOf('b'))!.addr) { dropToB = false; return null }
    },
  }
  const { p, a, b } = await seqGroup(t, 'quiet', PORT + 3, { transport: 'unicast', Peer: Sequencer, peer: { hooks } })
  p.quiet = true
  dropToB = true
  await a.g.send('a-last-0')
  await until(() => texts(a).includes('a:a-last-0'), 3000, 'a delivers its message')
  await sleep(500) // 25 × nackIntervalMs, 10 × keepaliveMs: an honest sequencer's heartbeat would have shown the slot
  t.notOk(texts(b).includes('a:a-last-0'), 'b has not delivered it: nothing but a heartbeat (Q4) tells it the slot exists')
  await a.g.send('a-last-1')
  await until(() => ['a:a-last-0', 'a:a-last-1'].every((x) => texts(b).includes(x)), 3000, 'b catches up on the next ORDER')
  t.pass('the next ORDER shows the gap, b asks for it and delivers both')
  same(t, [a, b])
})

t.test('[A9, D5] a sequencer that stops ordering (it still ACKs, pings and heartbeats): a member suspects it once 2B passed, the directory expels it, the members go on with one stream', async (t) => {
  const { w, p, a, b } = await seqGroup(t, 'stop', PORT + 4, { Peer: Sequencer })
  const resent = [a.g.stats().resent, b.g.stats().resent]
  p.stopped = true
  const since = Date.now()
  for (let i = 0; i < 3; i++) for (const m of [a, b]) await m.g.send(`${m.id}-stuck-${i}`)
  await until(() => a.g.stats().resent > resent[0]! && b.g.stats().resent > resent[1]!, 3000, 'a and b resend to the sequencer')
  t.pass('a and b resend their unordered messages to the sequencer (A2)')
  t.same([...texts(a), ...texts(b)].filter((x) => x.includes('-stuck-')), [], 'nothing delivered while nothing is ordered')
  // §4.7, 5: a member whose own messages go unordered for 2B while all it knows is stable suspects the sequencer.
  await until(() => p.closed, 3 * B + 2000, 'the peer expelled')
  const took = Date.now() - since
  t.ok(took >= 2 * B, `not before 2B (${took} ms)`)
  t.match(p.frame('expelled'), { reason: /lack of progress: member [ab] reports: ordered none of this member's messages/ }, 'expelled on a member\'s suspicion (A9, D5)')
  await until(() => [a, b].every((m) => lastView(m)?.join() === 'a,b'), 5000, 'the view without the peer')
  await until(() => [a, b].every((m) => texts(m).filter((x) => x.includes('-stuck-')).length === 6), 5000, 'the stuck messages delivered under the new sequencer')
  for (const m of [a, b]) for (const s of ['a', 'b']) t.same(of(m, s, 'stuck'), [0, 1, 2].map((i) => `${s}:${s}-stuck-${i}`), `${m.id}: ${s}'s messages once each, in FIFO order`)
  t.same([a.errors, b.errors], [[], []], 'a and b do not fail')
  t.same(w.server.core.status()[0]!.members.map((m) => m.id), ['a', 'b'], 'the directory\'s view: a, b')
  await traffic([a, b], [a, b], 3, 'after')
  same(t, [a, b])
})

t.test('[Q3, A7] a sequencer that announces a stable slot above what members hold: each takes min(stable, have), never more', async (t) => {
  let dropToB = false
  const hooks = {
    out(d: Datagram, to: string) {
      if (dropToB && d.type === 'ORDER' && to === p.latest!.members.get(p.noOf('b'))!.addr) return null
    },
  }
  const { p, a, b } = await seqGroup(t, 'stable', PORT + 5, { transport: 'unicast', Peer: Sequencer, peer: { hooks } })
  dropToB = true // b hears no ORDER (nor repair ORDER, nor heartbeat) for now: it lags
  for (let i = 0; i < 3; i++) await a.g.send(`a-lag-${i}`)
  await until(() => of(a, 'a', 'lag').length === 3, 3000, 'a delivers')
  const lie = (): Buffer => p.dgram('ORDER', { firstSlot: p.next(), stable: 2 ** 40, runs: [] })
  p.to(p.noOf('a'), lie())
  dropToB = false
  const bHave = b.g.stats().have
  p.to(p.noOf('b'), lie())
  await until(() => b.g.stats().stable >= bHave, 3000, 'b takes the announced stable')
  t.ok(a.g.stats().stable <= a.g.stats().have, `a: stable ${a.g.stats().stable} ≤ have ${a.g.stats().have}`)
  t.ok(b.g.stats().stable <= b.g.stats().have, `b: stable ${b.g.stats().stable} ≤ have ${b.g.stats().have}`)
  t.ok(b.g.stats().stable < a.g.stats().have || of(b, 'a', 'lag').length === 3, 'b\'s stable is not past what it holds')
  await until(() => of(b, 'a', 'lag').length === 3, 3000, 'b catches up by repair')
  await traffic([a, b], [a, b], 3, 'after')
  same(t, [a, b])
})

t.test('[R3] a repair source answers a NACK for its DATA with DATA in another member\'s name: only what was asked is taken (dropped, counted)', async (t) => {
  let dropDataToB = true
  let forged = 0
  class Forger extends BreakPeer {
    protected override serveNack(d: Datagram): void {
      const aNo = this.noOf('a')
      if (forged === 0 && d.header.sender === this.noOf('b')) {
        forged++
        // a's next msgId (it sent 5): a message a has not sent yet, in a's name, from the peer.
        this.sendTo({ type: 'DATA', header: this.header(d.header.viewId, aNo), body: { entries: [{ msgId: 6, flags: 2, payload: Buffer.from('a-forged') }] } }, this.latest!.members.get(d.header.sender)!.addr)
      }
      super.serveNack(d)
    }
  }
  const hooks = {
    out(d: Datagram, to: string) {
      if (dropDataToB && d.type === 'DATA' && d.header.sender === p.no && to === p.latest!.members.get(p.noOf('b'))!.addr) return null
    },
  }
  const { p, a, b } = await seqGroup(t, 'forge', PORT + 6, { transport: 'unicast', Peer: Forger, peer: { hooks } })
  const dropped = b.g.stats().dropped
  p.send('p-own-0') // b lacks its DATA: it asks the sequencer, the peer
  await until(() => forged > 0, 3000, 'b\'s NACK answered')
  dropDataToB = false
  for (let i = 0; i < 3; i++) await a.g.send(`a-after-${i}`)
  await until(() => [a, b].every((m) => texts(m).filter((x) => x.startsWith('a:')).length >= 8), 3000, 'a\'s three messages delivered')
  t.ok(forged > 0, 'the peer answered b\'s NACK with a message in a\'s name')
  t.ok(b.g.stats().dropped > dropped, 'dropped and counted at b')
  t.notOk(texts(b).includes('a:a-forged'), 'b does not deliver a message a never sent')
  same(t, [a, b])
})

t.test('[F2, D4] a sequencer that goes on ordering its own messages after `prepared`: nobody delivers past the cut; it cannot install, is expelled within B, the rest go on', async (t) => {
  class Eager extends Sequencer {
    eager = false
    protected override onPrepare(f: Frame): void {
      if (!this.eager) return super.onPrepare(f)
      this.eager = false
      this.toDirectory({ t: 'prepared', group: this.o.group, viewId: f.viewId, have: this.have, low: this.low })
      for (let i = 0; i < 3; i++) this.send(`p-late-${i}`) // still active: sent and ordered at once
    }
  }
  const { w, p, a, b } = await seqGroup(t, 'eager', PORT + 7, { Peer: Eager })
  p.eager = true
  const c = await w.member('eager', 'c')
  t.ok(p.counters.slotsOrdered > 0 && p.have > p.latest!.cut, `the peer ordered and delivered past the cut it reported (have ${p.have}, cut ${p.latest!.cut})`)
  await until(() => p.closed, 2 * B + 3000, 'the peer expelled')
  t.match(p.frame('expelled'), { reason: /did not install view/ }, 'expelled for not installing (D4)')
  await until(() => [a, b, c].every((m) => lastView(m)?.join() === 'a,b,c'), 5000, 'view a,b,c')
  await traffic([a, b, c], [a, b, c], 3, 'after')
  t.notOk([a, b, c].some((m) => texts(m).some((x) => x.startsWith('p:'))), 'nothing the peer sent after `prepared` is delivered (ordered above the cut; its sender gone)')
  t.same([a.errors, b.errors, c.errors], [[], [], []], 'nobody else fails')
  same(t, [a, b, c])
})

t.test('[I4, Q1, Q3] a member that ACKs the new view while still installing it: the sequencer\'s stable never passes what that member holds', async (t) => {
  class Early extends BreakPeer {
    deaf = false
    early = 0
    protected override receive(buf: Buffer, from: string): void {
      if (!this.deaf) super.receive(buf, from)
    }
    protected override tick(): void {
      super.tick()
      const v = this.latest
      if (this.phase === 'installing' && v && v.members.has(this.no) && v.sequencer !== this.no) {
        this.early++
        this.sendTo({ type: 'ACK', header: this.header(v.viewId), body: { have: this.have, acked: this.have, stable: this.stable } }, v.members.get(v.sequencer)!.addr)
      }
    }
  }
  const w = await world(t, { mcastPort: PORT + 8 })
  const a = await w.member('early', 'a')
  const b = await w.member('early', 'b')
  const p = await w.peer('early', 'p', {}, Early)
  await p.join()
  await until(() => lastView(a)?.length === 3, 5000, 'the view with p')
  p.deaf = true // from here p hears nothing: it lags, and at the next commit it has to fetch up to the cut
  await traffic([a, b], [a, b], 5, 'unheard')
  const c = await w.member('early', 'c')
  await until(() => p.early >= 10 && lastView(a)?.length === 4, 3000, 'p ACKing the new view while installing it')
  let worst = 0
  for (let i = 0; i < 20; i++, await sleep(10)) worst = Math.max(worst, a.g.stats().stable - p.have)
  t.ok(worst <= 0, `a's stable never passed p's have while p installs (by ${worst})`)
  p.deaf = false
  await until(() => p.phase === 'active' && p.latest!.members.size === 4, 5000, 'p installs')
  await traffic([a, b, c], [a, b, c], 3, 'after')
  t.same([a.errors, b.errors, c.errors, p.errors], [[], [], [], []], 'nobody fails')
  same(t, [a, b])
  t.same(streams([a, c])[1], streams([a, c])[0], 'c and a: the same stream')
})
