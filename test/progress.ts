/** ProgressWatch (lib/progress.ts): stability from ACKs, and who is stuck, hinted, suspected — by a stepped clock. */
import t from 'tap'
import { ProgressWatch } from '../lib/progress.js'

const BOUND = 2000
const ROUND = 50
const START = 100

/** Sequencer 1 with members 2, 3, 4 (or `others`), view slot START, nothing acknowledged yet, created at time 0. */
const watch = (others = [2, 3, 4]): ProgressWatch => new ProgressWatch(1, [1, ...others], START, 90, BOUND, ROUND, 0)

/**
 * Runs the clock from `from` to `to` in 10 ms ticks, the top growing by `rate` slots a tick; `each` may ACK for
 * members first. Returns every suspicion as [time, member].
 */
function run(w: ProgressWatch, from: number, to: number, top: { v: number }, rate: number, each?: (now: number) => void): Array<[number, number]> {
  const out: Array<[number, number]> = []
  for (let now = from; now <= to; now += 10) {
    top.v += rate
    each?.(now)
    for (const no of w.tick(now, top.v, 0).suspect) out.push([now, no])
  }
  return out
}

/** Member `no` holds (and lets become stable) everything up to `slot`. */
const current = (w: ProgressWatch, no: number, slot: number, now: number): void => w.ack(no, slot, slot, 0, now)

t.test('stable is the least acked slot, own included; acked never exceeds have; nothing goes back', async (t) => {
  const w = watch()
  t.equal(w.stable(500), 90, 'nobody acknowledged: the initial slot')
  w.ack(2, 300, 300, 0, 0)
  w.ack(3, 200, 250, 0, 0) // acked above have: counts as have
  w.ack(4, 400, 150, 0, 0) // a full queue: holds 400, lets 150 become stable
  t.equal(w.stable(500), 150)
  w.ack(4, 350, 120, 0, 0) // an older ACK arriving late
  t.equal(w.stable(500), 150, 'values only grow')
  t.equal(w.stable(140), 140, 'the sequencer counts itself')
  w.ack(9, 1, 1, 0, 0)
  t.notOk(w.has(9), 'an ACK from a non-member is ignored')
  t.notOk(w.has(1), 'the sequencer does not watch itself')
})

t.test('members that keep up, even slowly, are never suspected', async (t) => {
  const w = watch()
  const top = { v: START }
  // Each trails the top: by one tick, by a second, by just under the bound.
  const lag = { 2: 1, 3: 100, 4: 190 } as Record<number, number>
  const history: number[] = []
  const suspects = run(w, 0, 30_000, top, 10, (now) => {
    history.push(top.v)
    for (const no of [2, 3, 4]) current(w, no, history[Math.max(0, history.length - 1 - lag[no]!)]!, now)
  })
  t.same(suspects, [])
})

t.test('a member that makes no progress is suspected between the bound and twice the bound, then once a bound', async (t) => {
  const w = watch()
  const top = { v: START }
  let stuckAt = 0
  let held = 0
  const suspects = run(w, 0, 20_000, top, 5, (now) => {
    for (const no of [2, 3]) current(w, no, top.v, now)
    if (now < 3000) held = top.v
    else if (stuckAt === 0) stuckAt = now
    current(w, 4, held, now) // it still ACKs: only its progress stopped
  })
  t.ok(suspects.length > 0 && suspects.every(([, no]) => no === 4), 'only the stuck member')
  const first = suspects[0]![0] - stuckAt
  t.ok(first >= BOUND && first <= 2 * BOUND, `first suspicion ${first} ms after it stopped`)
  for (let i = 1; i < suspects.length; i++) t.ok(suspects[i]![0] - suspects[i - 1]![0] >= BOUND, 'repeated at most once a bound')
  t.match(w.reason(4, 20_000), /holds slots only up to \d+; slot \d+, ordered at least \d+ ms ago/)
})

t.test('a member silent for the bound is suspected, even in an idle view', async (t) => {
  const w = watch()
  const suspects = run(w, 0, 5000, { v: START }, 0, (now) => {
    for (const no of [2, 3]) current(w, no, START, now)
    if (now < 1000) current(w, 4, START, now)
  })
  t.ok(suspects.length > 0 && suspects.every(([, no]) => no === 4))
  t.ok(suspects[0]![0] - 990 >= BOUND, `not before the bound after its last ACK (${suspects[0]![0]} ms)`)
  t.match(w.reason(4, 5000), /no acknowledgement from it for \d+ ms/)
})

t.test('a reader that stopped (acked frozen, have current) holds stability back but is never suspected', async (t) => {
  const w = watch()
  const top = { v: START }
  const suspects = run(w, 0, 20_000, top, 5, (now) => {
    for (const no of [2, 3]) current(w, no, top.v, now)
    w.ack(4, top.v, 150, 0, now)
  })
  t.same(suspects, [])
  t.equal(w.stable(top.v), 150)
})

t.test('time the sequencer itself did not run counts against nobody', async (t) => {
  const w = watch([2])
  const top = { v: START }
  t.same(run(w, 0, 1500, top, 5), [], 'behind, and silent, for 1.5 s')
  // The sequencer's own process stalls for 1.9 s; the member's ACKs wait in the socket.
  t.same(w.tick(3400, top.v, 0).suspect, [], 'not suspected on the first tick after the stall')
  current(w, 2, top.v, 3400)
  t.same(run(w, 3410, 6000, top, 5, (now) => current(w, 2, top.v, now)), [], 'nor once it is read to be current')
})

t.test('an idle view: members that acknowledge its slot are left alone; one that never installs it is suspected', async (t) => {
  const w = watch()
  const suspects = run(w, 0, 10_000, { v: START }, 0, (now) => {
    for (const no of [2, 3]) current(w, no, START, now)
    w.ack(4, 95, 95, 0, now) // still fetching what precedes the view
  })
  t.ok(suspects.length > 0 && suspects.every(([, no]) => no === 4), 'it holds back what was ordered before the view')
})

t.test('hints: to a member that lacks the top or the stable slot announced a round ago', async (t) => {
  const w = watch([2, 3])
  w.ack(2, 200, 200, 0, 0)
  w.ack(3, 200, 200, 0, 0)
  t.same(w.tick(0, 200, 0).hint, [], 'first round: both have the view\'s slot')
  w.ack(2, 260, 260, 0, 10)
  t.same(w.tick(10, 260, 0).hint, [], 'not a round yet')
  t.same(w.tick(50, 300, 0).hint, [], 'both have what the previous round (top 200) announced')
  w.ack(2, 300, 300, 0, 60)
  t.same(w.tick(100, 300, 0).hint, [3], 'the member still at 200 lacks what was announced a round ago')
  w.ack(3, 300, 300, 0, 110)
  t.same(w.tick(150, 300, 300).hint, [], 'both reached it; stable 300 is announced now')
  w.ack(2, 300, 300, 300, 160) // heard it
  w.ack(3, 300, 300, 0, 160) // did not (it hears no multicast)
  t.same(w.tick(200, 300, 300).hint, [3], 'the one that did not hear the stable slot')
})

t.test('half the view stuck: those are suspected', async (t) => {
  const w = watch()
  const top = { v: START }
  const suspects = run(w, 0, 5000, top, 5, (now) => {
    current(w, 2, top.v, now)
    for (const no of [3, 4]) current(w, no, START, now) // 3 and 4 never progress
  })
  t.same(new Set(suspects.map(([, no]) => no)), new Set([3, 4]))
})

t.test('more than half the view stuck: the sequencer, after another half bound, suspects itself and nobody else', async (t) => {
  const w = watch([2, 3, 4, 5])
  const top = { v: START }
  const suspects = run(w, 0, 8000, top, 5, (now) => current(w, 2, top.v, now)) // 3, 4 and 5 are never heard
  t.ok(suspects.length > 0 && suspects.every(([, no]) => no === 1), `only itself (${JSON.stringify(suspects)})`)
  t.ok(suspects[0]![0] >= 1.5 * BOUND, `not before one and a half bounds (${suspects[0]![0]} ms)`)
  t.match(w.reason(1, 8000), /more than half of the view/)
})

t.test('a sequencer that hears nobody suspects itself, idle or not', async (t) => {
  const w = watch()
  const suspects = run(w, 0, 8000, { v: START }, 0)
  t.ok(suspects.length > 0 && suspects.every(([, no]) => no === 1))
})

t.test('members falling silent a few ms apart (the sequencer stopped hearing) are not picked off one by one', async (t) => {
  const w = watch([2, 3, 4, 5])
  const suspects = run(w, 0, 8000, { v: START }, 0, (now) => {
    // Their last ACKs reached the sequencer at 440, 450, 460 and 470 ms.
    for (const [no, last] of [[2, 440], [3, 450], [4, 460], [5, 470]] as const) if (now <= last) current(w, no, START, now)
  })
  t.ok(suspects.length > 0 && suspects.every(([, no]) => no === 1), `only itself (${JSON.stringify(suspects)})`)
})

t.test('a majority stuck for less than the extra half bound (members that died, removed by the directory meanwhile) costs nothing', async (t) => {
  const w = watch([2, 3, 4, 5])
  const top = { v: START }
  const suspects = run(w, 0, 3500, top, 5, (now) => {
    current(w, 2, top.v, now)
    if (now >= 2900) for (const no of [3, 4, 5]) current(w, no, top.v, now) // caught up (or a new view replaced this watch)
  })
  t.same(suspects, [])
})

t.test('two members: the one that makes no progress is suspected, not the sequencer', async (t) => {
  const w = watch([2])
  const suspects = run(w, 0, 5000, { v: START }, 5, (now) => current(w, 2, START, now))
  t.ok(suspects.length > 0 && suspects.every(([, no]) => no === 2))
})
