/**
 * A stranger on the network, over real sockets (loopback only): while three member processes exchange an ordered
 * stream, a blaster in this process listens to the group's multicast like any host on the LAN could, and sends
 * mutated copies of what it hears — field by field: type, view id, sender, flags, counts, slots, lengths, cut-off
 * and extended datagrams, plus random bytes behind a genuine header — to the multicast address and to every member's
 * unicast port. Afterwards: no process died, and every member delivered the identical, complete stream.
 *
 * Forgeries included: DATA re-numbered into a sender's near future, re-sent in another member's name, or with
 * changed payload bytes; ORDER runs moved to plausible slots (the sequencer's next ones) — datagrams no receiver can
 * tell from real ones by their content without a key. They come from the stranger's own socket, not from the address
 * the view gives the member they name, and members take a datagram only from that address (PROTOCOL.md §4.1). A
 * stranger who spoofs the source address (a raw socket on the LAN) is out of this test's reach; the simulator's
 * fuzzer (test/fuzz-datagrams.ts) sends from the named member's address, and the key stops that one (test/sim-key.ts).
 * SEQCAST_BLAST_SEED=n reruns one seed.
 */
import t from 'tap'
import { check } from './fixtures/checker.js'
import { freePort, MemberProc, startDir, until } from './fixtures/procs.js'
import { rng } from './fixtures/sim-rng.js'
import { stranger } from './fixtures/stranger.js'

const HEADER = 24
const SEED = Number(process.env.SEQCAST_BLAST_SEED ?? 4242)

/** One mutation of a genuine datagram `g` (copied), chosen by `r`. */
function mutate(g: Buffer, r: () => number): Buffer {
  const b = Buffer.from(g)
  const pick = (n: number): number => Math.floor(r() * n)
  const u32 = (): number => [0, 1, 2, 0xffff, 0x7fffffff, 0xffffffff, pick(2 ** 32)][pick(7)]!
  switch (pick(11)) {
    case 0: b[3] = 1 + pick(4); break // another type over the same body
    case 1: b.writeUInt32BE(u32(), 12); break // view id
    case 2: b.writeUInt32BE([u32(), 1, 2, 3, 4][pick(5)]!, 16); break // sender: another member's name, or none
    case 3: b[20] = pick(256); break // flags
    case 4: { // a body field: count, slot, stable, length — whatever lies there, set to an extreme (DATA, ORDER: the count)
      if (b.length <= HEADER + 2) break
      const at = b[3] === 1 ? HEADER : b[3] === 2 ? HEADER + 12 : HEADER + pick(Math.min(16, b.length - HEADER - 1))
      b.writeUInt16BE([0, 1, 0xffff, pick(65536)][pick(4)]!, Math.min(at, b.length - 2))
      break
    }
    case 5: { // a 48-bit slot or msgId far out of range
      if (b.length < HEADER + 8) break
      const at = HEADER + pick(Math.min(12, b.length - HEADER - 6))
      b.writeUIntBE([2 ** 48 - 1, 2 ** 47, 2 ** 40 + pick(1e6)][pick(3)]!, at, 6)
      break
    }
    case 6: return b.subarray(0, HEADER + pick(Math.max(1, b.length - HEADER))) // cut off
    case 7: return Buffer.concat([b, Buffer.alloc(1 + pick(64), pick(256))]) // extended
    case 8: { // random bytes behind the genuine header
      const body = Buffer.alloc(pick(1400))
      for (let i = 0; i < body.length; i++) body[i] = pick(256)
      return Buffer.concat([b.subarray(0, HEADER), body])
    }
    case 9: { // a plausible future: a DATA's first msgId or an ORDER's first slot moved a little ahead
      const at = b[3] === 1 ? HEADER + 2 : b[3] === 2 ? HEADER : -1
      if (at >= 0 && b.length >= at + 6) b.writeUIntBE(Math.min(2 ** 48 - 1, b.readUIntBE(at, 6) + 1 + pick(64)), at, 6)
      break
    }
    case 10: // flip bytes in the body: payloads, runs, ranges
      for (let k = 0; k < 3 && b.length > HEADER; k++) b[HEADER + pick(b.length - HEADER)] = pick(256)
      break
  }
  return b
}

t.test(`a stranger blasts mutated datagrams at every socket of a group during an ordered exchange (seed ${SEED})`, { timeout: 240_000 }, async (t) => {
  const dir = await startDir(await freePort())
  const N = 2000
  const ids = ['a', 'b', 'c']
  // Paced (10 messages every 5 ms): the exchange lasts seconds, the blast runs through it.
  const ms = ids.map((id) => new MemberProc(id, dir.addr, 'blast', N, ids.length, 'agreed', undefined, { SEQCAST_TEST_PAUSE: '10:5' }))
  t.teardown(async () => {
    for (const m of ms) m.kill()
    await dir.stop()
  })
  t.ok(await until(() => ms.every((m) => m.entries.some((e) => e.type === 'view' && e.members.length === 3)), 20_000), 'all three joined')
  const st = await stranger(dir.addr, 'blast', 2000)
  t.teardown(() => st.close())
  const { heard, targets } = st
  t.ok(await until(() => heard.length >= 20, 20_000), 'the stranger hears the group')

  const r = rng(SEED)
  let sent = 0
  const blasting = (async () => {
    while (!ms.every((m) => m.sentDone) && sent < 40_000) {
      for (let k = 0; k < 50; k++) {
        const g = heard[Math.floor(r() * heard.length)]!
        const to = targets[Math.floor(r() * targets.length)]!
        st.send(mutate(g, r), to)
        sent++
      }
      await new Promise((res) => setTimeout(res, 5))
    }
  })()
  const done = await until(() => ms.every((m) => m.sentDone && m.messages() === ids.length * N), 60_000)
  await blasting
  t.ok(sent >= 5000, `the blast ran through the exchange (${sent} datagrams)`)
  t.ok(done, `every member delivered all ${ids.length * N} messages while ${sent} mutated datagrams arrived`,
    { delivered: ms.map((m) => m.messages()), errors: ms.map((m) => m.errors) })
  t.same(ms.map((m) => m.exited), [false, false, false], 'no member process died')
  t.equal(dir.proc.exitCode, null, 'the directory is alive')
  t.same(ms.flatMap((m) => m.errors), [], 'no member failed')
  t.same(check(ms.map((m) => ({ id: m.id, survivor: true, entries: m.entries, sent: N }))), [], 'identical, complete streams')
  ms[0]!.command('stats')
  await until(() => ms[0]!.stats !== null, 5000)
  t.comment(`a's counters: ${JSON.stringify(ms[0]!.stats && { dropped: ms[0]!.stats.dropped, foreign: ms[0]!.stats.foreign, duplicates: ms[0]!.stats.duplicates, violations: ms[0]!.stats.violations })}`)
})
