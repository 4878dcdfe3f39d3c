/**
 * Fragmented messages in the simulator: a member that joins while others are sending large messages delivers each
 * message whole or not at all (the FIRST flag says where a message starts), under loss and reordering; a sender
 * that crashes mid-message leaves no partial message held anywhere.
 */
import t from 'tap'
import { Sim, type SimMember } from './fixtures/sim.js'
import { check, type MemberLog } from './fixtures/checker.js'

const LOSSY = { drop: 0.1, dup: 0.05, minDelay: 0.05, maxDelay: 2 }
/** 512-byte datagrams: a 6 000-byte message is 13 fragments. */
const OPTS = { maxDatagram: 512 }

/** Bodies are "<id>:<k>|<pad>|x…": whole iff the padding has its announced length. */
function whole(body: string): boolean {
  const [, pad, xs] = body.split('|')
  return xs !== undefined && xs.length === Number(pad)
}

function logs(sim: Sim): MemberLog[] {
  return [...sim.members.values()].map((m) => ({
    id: m.id, survivor: m.alive && !m.error, sent: m.sentCount,
    entries: m.log.map((d) => d.type === 'message'
      ? { type: 'message' as const, sender: d.sender, seq: d.seq, body: Buffer.from(d.data).toString().split('|')[0]! }
      : { type: 'view' as const, viewId: d.viewId, members: d.members }),
  }))
}

for (const seed of [1, 2, 3, 4, 5, 6]) {
  t.test(`a member joining mid-message delivers every message whole or not at all (seed ${seed})`, async (t) => {
    const sim = new Sim(seed, LOSSY)
    const ms = sim.startGroup(3, OPTS)
    for (const m of ms) {
      m.pad = 6000
      m.send(60)
    }
    sim.run(sim.now + 5 + sim.random() * 20)
    const late = sim.join('late', OPTS)
    t.ok(sim.runUntil(() => sim.settled(), 60_000), 'settles')
    const bodies = (m: SimMember): string[] => m.messages()
    for (const m of [...ms, late]) t.same(bodies(m).filter((b) => !whole(b)), [], `${m.id} delivered only whole messages`)
    t.same(check(logs(sim).filter((l) => l.id !== 'late')), [], 'every guarantee holds among the old members')
    // The joiner's stream is the others' from its view on, less at most the first message of each sender there:
    // the one whose first fragments were ordered before the view (PROTOCOL.md §4.5).
    const after = (m: SimMember): string[] => {
      const view = m.log.findIndex((d) => d.type === 'view' && d.members.includes('late'))
      return m.log.slice(view).filter((d) => d.type === 'message').map((d) => Buffer.from((d as { data: Uint8Array }).data).toString())
    }
    const theirs = after(ms[0]!)
    const mine = after(late)
    const missing = theirs.filter((x) => !mine.includes(x))
    t.same(theirs.filter((x) => mine.includes(x)), mine, 'the same messages in the same order')
    const firstOf = new Map<string, string>()
    for (const x of theirs) if (!firstOf.has(x.split(':')[0]!)) firstOf.set(x.split(':')[0]!, x)
    t.ok(missing.every((x) => firstOf.get(x.split(':')[0]!) === x), `only messages begun before the view are missing (${missing.length})`)
    t.equal(late.engine.snapshot().skipped > 0, missing.length > 0, `their fragments were counted as skipped (${late.engine.snapshot().skipped})`)
  })
}

t.test('a sender that crashes mid-message: nobody delivers a piece of it, nobody keeps its fragments', async (t) => {
  const sim = new Sim(9, { drop: 0, dup: 0, minDelay: 0.05, maxDelay: 0.2 })
  const ms = sim.startGroup(3, OPTS)
  const [a, b, c] = ms as [SimMember, SimMember, SimMember]
  const partial = (m: SimMember): number => (m.engine as unknown as { reassembly: { bytes: number } }).reassembly.bytes
  c.pad = 2_000_000 // 4 000 fragments: more than the send byte window lets out at once
  c.send(1)
  a.send(20)
  const until = sim.now + 5000
  while (partial(b) === 0 && sim.now < until) sim.run(sim.now + 0.1)
  t.ok(partial(b) > 0, 'b holds part of c\'s message')
  sim.crash(c.id)
  t.ok(sim.runUntil(() => sim.settled() && !c.alive, 30_000), 'the survivors settle')
  for (const m of [a, b]) {
    t.same(m.messages().filter((x) => x.startsWith('m3:')), [], `${m.id} delivered nothing of m3's`)
    t.equal(partial(m), 0, `${m.id} holds no partial message`)
    t.ok(m.engine.snapshot().skipped > 0, `${m.id} counted the abandoned fragments`)
  }
})
