/**
 * Limits are refusals, never crashes or evictions (issue 9, item 7): messages larger than a sender can hold,
 * groups larger than the directory's frames can describe, addresses that do not parse.
 */
import t from 'tap'
import { Sim } from './fixtures/sim.js'
import { ErrorCodes } from '../lib/errors.js'
import { DEFAULT_MAX_MESSAGE, largestMessage, parseJoinOptions } from '../lib/options.js'
import { grp_join } from '../lib/index.js'
import { fragmentRoom } from '../lib/wire.js'

t.test('a message with more fragments than a sender can hold is refused at submit, before anything is stored', async (t) => {
  const sim = new Sim(7)
  const a = sim.join('a', { maxDatagram: 512, maxMessage: 1 << 30 })
  t.ok(sim.runUntil(() => a.engine.lifecycle === 'joined', 5000), 'joined')
  // 479 bytes per fragment: 64 MiB needs about 140 000 fragments, more than the store's 131 072.
  const big = Buffer.alloc(64 * 1024 * 1024, 0x61)
  t.throws(() => a.engine.submit(big), { code: ErrorCodes.MESSAGE_TOO_LARGE })
  sim.run(sim.now + 200)
  t.equal(a.engine.stats.sent, 0, 'nothing was accepted')
  a.send(3)
  t.ok(sim.runUntil(() => a.messages().length === 3, 5000), 'the member goes on sending')
})

t.test('maxMessage is refused when a sender could not hold it at that maxDatagram, naming the largest allowed', async (t) => {
  t.equal(largestMessage(1472), 131_072 * fragmentRoom(1472), 'Ethernet: about 188 MB')
  t.equal(largestMessage(512), 131_072 * fragmentRoom(512), 'the smallest datagram: about 62 MB')
  t.equal(largestMessage(60_000), 1 << 30, 'loopback: the 1 GiB cap')
  t.throws(() => parseJoinOptions({ maxDatagram: 1472, maxMessage: 1 << 30 }), {
    code: ErrorCodes.BAD_ARGUMENT, message: new RegExp(`maxMessage must be at most ${largestMessage(1472)} with maxDatagram 1472`),
  })
  t.throws(() => parseJoinOptions({ maxDatagram: 512, maxMessage: largestMessage(512) + 1 }), { code: ErrorCodes.BAD_ARGUMENT })
  t.equal(parseJoinOptions({ maxDatagram: 512, maxMessage: largestMessage(512) }).maxMessage, largestMessage(512))
  t.equal(parseJoinOptions({ maxDatagram: 512 }).maxMessage, DEFAULT_MAX_MESSAGE, 'the default fits the smallest datagram')
  await t.rejects(grp_join('g', 'a', { maxDatagram: 1472, maxMessage: 1 << 30 }), { code: ErrorCodes.BAD_ARGUMENT })
})

t.test('the largest allowed message goes through the smallest datagrams', async (t) => {
  // Not the whole 62 MB in the simulator: the store's bound is on fragments, so a small datagram size shows it.
  const sim = new Sim(8)
  const a = sim.join('a', { maxDatagram: 512, maxMessage: largestMessage(512) })
  const b = sim.join('b', { maxDatagram: 512 })
  t.ok(sim.runUntil(() => [a, b].every((m) => m.engine.view?.members.length === 2), 5000), 'joined')
  const msg = Buffer.alloc(8 * 1024 * 1024, 0x62)
  t.ok(a.engine.submit(msg), 'an 8 MiB message (over 17 000 fragments, more than sendWindow) is admitted alone')
  t.ok(sim.runUntil(() => b.messages().length === 1, 120_000), 'delivered')
  t.equal(b.log.filter((d) => d.type === 'message').map((d) => (d as { data: Uint8Array }).data.length)[0], msg.length)
})
