/**
 * The reverse of the conformance suite (issue 15), directory side: a scripted raw peer (test/fixtures/breakpeer.ts,
 * the raw member of rawpeer.ts with switches; nothing from lib/) joins a real group beside real members and breaks one duty of
 * docs/PROTOCOL.md §5.1 per test; each test checks what §5.2 says the real directory and members do about it.
 * Titles name the duties broken. Bounds on time are generous: what is asserted is the outcome.
 */
import t from 'tap'
import { B, lastView, sleep, streams, texts, TIMEOUT_MS, traffic, until, world } from './fixtures/breakworld.js'
import type { BreakPeer } from './fixtures/breakpeer.js'

const PORT = 46310

/** The peer's connection is closed by the directory, after the frames it sent. */
const closedWith = async (p: BreakPeer, t: string, code?: string): Promise<void> => {
  await p.until(() => p.closed, 5000, 'the directory to close the connection')
  const f = p.frames.find((x) => x.t === t)
  if (!f || (code !== undefined && f.code !== code)) throw new Error(`expected ${t} ${code ?? ''}, got ${JSON.stringify(p.frames)}`)
}

t.test('[J1, D1] join with proto 2 or an address that is no unicast address: EBAD_REQUEST; proto of the wrong type: EFRAME; a taken id: EDUPLICATE_MEMBER; each closed', async (t) => {
  const w = await world(t, { mcastPort: PORT })
  const a = await w.member('j', 'a')
  const bad: Array<Record<string, unknown>> = [
    { proto: 2 },
    { addr: 'nonsense' },
    { addr: '0.0.0.0:4000' },
    { addr: '239.1.2.3:4000' },
    { addr: '127.0.0.1:0' },
    { addr: '127.0.0.1:70000' },
  ]
  for (const extra of bad) {
    const p = await w.peer('j', 'p')
    p.tell({ t: 'join', proto: 1, group: 'j', member: 'p', addr: p.addr, ...extra })
    await closedWith(p, 'error', 'EBAD_REQUEST')
    t.pass(`join ${JSON.stringify(extra)}: EBAD_REQUEST, closed`)
  }
  const more: Array<[Record<string, unknown>, string]> = [[{ proto: '1' }, 'EFRAME'], [{ member: 'a' }, 'EDUPLICATE_MEMBER']]
  for (const [extra, code] of more) {
    const p = await w.peer('j', 'p')
    p.tell({ t: 'join', proto: 1, group: 'j', member: 'p', addr: p.addr, ...extra })
    await closedWith(p, 'error', code)
    t.pass(`join ${JSON.stringify(extra)}: ${code}, closed`)
  }
  t.same(w.server.core.status()[0]!.members.map((m) => m.id), ['a'], 'nobody joined')
  await traffic([a], [a], 3, 'after')
})

t.test('[D1] frames before join, a second join: error EBAD_REQUEST, closed; a body that is not a map: closed, no frame', async (t) => {
  const w = await world(t, { mcastPort: PORT + 1 })
  await w.member('fb', 'a')
  for (const f of [
    { t: 'prepared', group: 'fb', viewId: 1, have: 1, low: 0 },
    { t: 'installed', group: 'fb', viewId: 1 },
    { t: 'leave', group: 'fb' },
    { t: 'suspect', group: 'fb', viewId: 1, no: 1 },
    { t: 'deaf', group: 'fb', viewId: 1 },
    { t: 'ready', group: 'fb' },
  ]) {
    const p = await w.peer('fb', 'p')
    p.tell(f)
    await closedWith(p, 'error', 'EBAD_REQUEST')
    t.pass(`${f.t} before join: EBAD_REQUEST, closed`)
  }
  const twice = await w.peer('fb', 'p')
  await twice.join()
  twice.tell({ t: 'join', proto: 1, group: 'fb', member: 'q', addr: twice.addr })
  await closedWith(twice, 'error', 'EBAD_REQUEST')
  t.pass('a second join: EBAD_REQUEST, closed')
  const raw = await w.peer('fb', 'r')
  const notMap = Buffer.from([0, 0, 0, 1, 0x2a]) // one MessagePack byte: the integer 42
  raw.sendRaw(notMap)
  await raw.until(() => raw.closed, 5000, 'close')
  t.same(raw.frames, [], 'not a map: closed without a frame')
})

t.test('[E1, D2] stops pinging: expelled after timeoutMs, the others go on without it', async (t) => {
  const w = await world(t, { mcastPort: PORT + 2 })
  const a = await w.member('ping', 'a')
  const b = await w.member('ping', 'b')
  const p = await w.peer('ping', 'p')
  await p.join()
  await until(() => lastView(a)?.length === 3 && lastView(b)?.length === 3, 5000, 'the view with p')
  p.pinging = false
  const stopped = Date.now()
  await p.until(() => p.closed, TIMEOUT_MS + 5000, 'expulsion')
  const after = Date.now() - stopped
  t.match(p.frame('expelled'), { reason: /no heartbeat/ }, 'expelled for silence')
  t.same(p.badFrames, [], 'every frame the directory sent p passes the schema')
  t.ok(after >= TIMEOUT_MS - 100, `not before timeoutMs (${after} ms)`)
  await until(() => lastView(a)?.join() === 'a,b' && lastView(b)?.join() === 'a,b', 5000, 'the view without p')
  await traffic([a, b], [a, b], 5, 'after')
  t.same(streams([a, b])[0], streams([a, b])[1], 'a and b: the same stream')
})

t.test('[F1, D3] never answers prepare: expelled after flushTimeoutMs, the view change completes', async (t) => {
  const w = await world(t, { mcastPort: PORT + 3 })
  const a = await w.member('flush', 'a')
  const b = await w.member('flush', 'b')
  const p = await w.peer('flush', 'p')
  await p.join()
  p.prepared = () => null
  await traffic([a, b], [a, b], 5, 'before')
  const t0 = Date.now()
  const c = await w.member('flush', 'c') // its join starts the flush p does not answer
  const took = Date.now() - t0
  t.match(p.frame('expelled'), { reason: /no answer to prepare/ }, 'expelled for not answering')
  t.ok(took >= TIMEOUT_MS - 100, `the join waited for flushTimeoutMs (${took} ms)`)
  await until(() => [a, b, c].every((m) => lastView(m)?.join() === 'a,b,c'), 5000, 'view a,b,c everywhere')
  await traffic([a, b, c], [a, b, c], 5, 'after')
  const [sa, sb, sc] = streams([a, b, c])
  t.same(sa, sb, 'a and b: the same stream')
  t.same(sa, sc, 'a and c: the same stream')
})

t.test('[F1, D3] prepared with a have above anything ordered: expelled, the view change completes', async (t) => {
  const w = await world(t, { mcastPort: PORT + 4 })
  const a = await w.member('liar', 'a')
  const b = await w.member('liar', 'b')
  const p = await w.peer('liar', 'p')
  await p.join()
  p.prepared = (f) => ({ t: 'prepared', group: 'liar', viewId: f.viewId, have: 2 ** 40, low: 0 })
  await traffic([a, b], [a, b], 5, 'before')
  const c = await w.member('liar', 'c')
  await p.until(() => p.closed, 5000, 'expulsion')
  t.match(p.frame('expelled'), { reason: /above .* the most any member can hold/ }, 'expelled for a have above H')
  await until(() => [a, b, c].every((m) => lastView(m)?.join() === 'a,b,c'), 5000, 'view a,b,c everywhere')
  await traffic([a, b, c], [a, b, c], 5, 'after')
  const [sa, sb, sc] = streams([a, b, c])
  t.same(sa, sb, 'a and b: the same stream')
  t.same(sa, sc, 'a and c: the same stream')
  t.ok(texts(c).length === 15, 'c delivered every message of its views')
})

t.test('[F1, D1] prepared with low > have: error EBAD_REQUEST, closed; the view change completes', async (t) => {
  const w = await world(t, { mcastPort: PORT + 5 })
  const a = await w.member('low', 'a')
  const b = await w.member('low', 'b')
  const p = await w.peer('low', 'p')
  await p.join()
  p.prepared = (f) => ({ t: 'prepared', group: 'low', viewId: f.viewId, have: p.latest!.start, low: p.latest!.start + 5 })
  const c = await w.member('low', 'c')
  await closedWith(p, 'error', 'EBAD_REQUEST')
  t.pass('EBAD_REQUEST, closed')
  await until(() => [a, b, c].every((m) => lastView(m)?.join() === 'a,b,c'), 5000, 'view a,b,c everywhere')
  await traffic([a, b, c], [a, b, c], 3, 'after')
})

t.test('[I4, D4] installed for another view than the commit under way: ignored, so expelled for not installing within B', async (t) => {
  const w = await world(t, { mcastPort: PORT + 6 })
  const a = await w.member('inst', 'a')
  const b = await w.member('inst', 'b')
  const p = await w.peer('inst', 'p')
  p.installedAs = (v) => [
    { t: 'installed', group: 'inst', viewId: v.viewId + 5 },
    { t: 'installed', group: 'inst', viewId: v.viewId - 1 },
  ]
  await p.join()
  const t0 = Date.now()
  await p.until(() => p.closed, B + 5000, 'expulsion')
  const took = Date.now() - t0
  t.notOk(p.frame('error'), 'no error frame: the wrong installed frames are not refused')
  t.match(p.frame('expelled'), { reason: /did not install view/ }, 'expelled as a member that never installed')
  t.ok(took >= B - 200, `not before B (${took} ms)`)
  await until(() => lastView(a)?.join() === 'a,b' && lastView(b)?.join() === 'a,b', 5000, 'the view without p')
  await traffic([a, b], [a, b], 5, 'after')
  t.same(streams([a, b])[0], streams([a, b])[1], 'a and b: the same stream')
})

t.test('[R1, I2, D4] the holder of a commit claims slots it never serves: the members cannot install, the holder is expelled within B, the next view completes', async (t) => {
  const w = await world(t, { mcastPort: PORT + 7 })
  const a = await w.member('holder', 'a') // the sequencer, to crash
  const b = await w.member('holder', 'b')
  const c = await w.member('holder', 'c')
  const p = await w.peer('holder', 'p')
  await p.join()
  await traffic([a, b, c], [a, b, c], 5, 'before')
  // With the sequencer gone, a have up to start + SEQ_WINDOW is believable (§5): p claims 100 slots past the
  // stream, with low 0, so it is the holder and the only source of those slots.
  let claim = 0
  p.prepared = (f) => ({ t: 'prepared', group: 'holder', viewId: f.viewId, have: (claim = p.top + 100), low: 0 })
  const aNo = p.noOf('a')
  a.g.close()
  await p.until(() => p.latest!.holder === p.no && !p.latest!.members.has(aNo), 5000, 'a commit naming p the holder')
  t.equal(p.latest!.cut, claim, 'the cut is what p claimed')
  await p.until(() => p.closed, B + 5000, 'expulsion of the holder')
  t.match(p.frame('expelled'), { reason: /could not install view .* from this holder/ }, 'the holder is expelled, not the members')
  t.same(p.badFrames, [], 'every frame the directory sent p passes the schema')
  t.same([b.errors, c.errors], [[], []], 'b and c are not expelled')
  await until(() => lastView(b)?.join() === 'b,c' && lastView(c)?.join() === 'b,c', 10_000, 'view b,c')
  await traffic([b, c], [b, c], 5, 'after')
  t.same(streams([b, c])[0], streams([b, c])[1], 'b and c: the same stream')
  t.ok(texts(b).filter((x) => x.startsWith('a:')).length === 5, 'a\'s messages delivered by the survivors')
})

t.test('[D5] suspect from a member that is not the sequencer: naming another member, or of an older view, ignored; naming the sequencer, it is expelled', async (t) => {
  const w = await world(t, { mcastPort: PORT + 8 })
  const a = await w.member('sus', 'a')
  const b = await w.member('sus', 'b')
  const p = await w.peer('sus', 'p')
  await p.join()
  p.tell({ t: 'suspect', group: 'sus', viewId: p.latest!.viewId, no: p.noOf('b'), reason: 'a lie' })
  p.tell({ t: 'suspect', group: 'sus', viewId: p.latest!.viewId - 1, no: p.noOf('a') })
  p.tell({ t: 'deaf', group: 'sus', viewId: p.latest!.viewId - 1 })
  await sleep(300)
  await traffic([a, b], [a, b], 5, 'after')
  t.same([a.errors, b.errors], [[], []], 'nobody expelled')
  t.notOk(p.closed, 'the peer is not closed either')
  t.equal(w.server.core.status()[0]!.transport, 'multicast', 'a stale deaf moves nothing')
  t.equal(lastView(a)?.join(), 'a,b,p', 'no view change')
  // §4.7, 5: any member of the current view may suspect its sequencer (a is the sequencer: it joined first).
  p.tell({ t: 'suspect', group: 'sus', viewId: p.latest!.viewId, no: p.noOf('a'), reason: 'ordered none of my messages' })
  await until(() => a.errors.length > 0, 3000, 'the sequencer expelled')
  t.match(a.errors[0]?.message, /excluded for lack of progress: member p reports: ordered none of my messages/, 'a is told who and why')
  await until(() => lastView(b)?.join() === 'b,p', 5000, 'the view without a')
  await traffic([b], [b], 3, 'after a')
  t.same(b.errors, [], 'b goes on')
})
