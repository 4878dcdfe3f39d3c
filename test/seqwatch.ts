/** SequencerWatch (lib/seqwatch.ts): when a member suspects its sequencer of ordering nothing of its — by a stepped clock. */
import t from 'tap'
import { SequencerWatch } from '../lib/seqwatch.js'

const B = 4000

interface Stream {
  waiting: boolean
  announced: number
  stable: number
  top: number
}

/** Runs the clock from `from` to `to` in 10 ms ticks; `each` may change the stream first. Returns when it suspected. */
function run(w: SequencerWatch, s: Stream, from: number, to: number, each?: (now: number) => void): number[] {
  const out: number[] = []
  for (let now = from; now <= to; now += 10) {
    each?.(now)
    if (w.check(now, s.waiting, s.announced, s.stable, s.top) !== null) out.push(now)
  }
  return out
}

t.test('own messages unordered for 2B, everything known stable: suspected at 2B, again every further 2B', async (t) => {
  const w = new SequencerWatch(B)
  w.watch(true)
  const s = { waiting: false, announced: 5, stable: 20, top: 20 }
  t.same(run(w, s, 0, 1000), [], 'nothing waits: nothing suspected')
  s.waiting = true // transmitted at 1010
  t.same(run(w, s, 1010, 8 * B), [1010 + 2 * B, 1010 + 4 * B, 1010 + 6 * B])
  const why = new SequencerWatch(B)
  why.watch(true)
  for (let now = 0; now < 2 * B; now += 10) why.check(now, true, 0, 0, 0)
  t.match(why.check(2 * B, true, 0, 0, 0), /ordered none of this member's messages for 8000 ms in which every slot it knew of was stable \(bound 8000 ms\)/, 'saying why')
})

t.test('any own message ordered restarts the clock; nothing waiting stops it', async (t) => {
  const w = new SequencerWatch(B)
  w.watch(true)
  const s = { waiting: true, announced: 1, stable: 10, top: 10 }
  // Ordered one every 2B − 100 ms: the sequencer is slow, not stopped.
  t.same(run(w, s, 0, 10 * B, (now) => { if (now > 0 && now % (2 * B - 100) === 0) s.announced++ }), [])
  s.waiting = false
  run(w, s, 10 * B + 10, 10 * B + 20)
  s.waiting = true
  t.same(run(w, s, 10 * B + 30, 13 * B), [12 * B + 30], 'the clock starts again when something waits again')
})

t.test('a stable slot below what the member knows exists: the sequencer\'s windows, or a laggard, may hold it: never suspected', async (t) => {
  const w = new SequencerWatch(B)
  w.watch(true)
  const s = { waiting: true, announced: 0, stable: 19, top: 20 }
  t.same(run(w, s, 0, 6 * B), [], 'stable 19 < top 20')
  s.stable = 20
  t.same(run(w, s, 6 * B + 10, 9 * B), [8 * B], 'once it is all stable, 2B of that: the wait before does not count')
  // Stability that keeps falling behind and catching up: only the time all caught up counts.
  const v = new SequencerWatch(B)
  v.watch(true)
  const u = { waiting: true, announced: 0, stable: 20, top: 20 }
  t.same(run(v, u, 0, 5 * B - 10, (now) => { u.stable = now % 1000 < 500 ? 19 : 20 }), [4 * B - 10], 'half the time: suspected after 4B')
})

t.test('not watching (the sequencer itself, flushing, installing): never; watch() restarts the clock', async (t) => {
  const w = new SequencerWatch(B)
  const s = { waiting: true, announced: 0, stable: 0, top: 0 }
  t.same(run(w, s, 0, 3 * B), [], 'before any install')
  w.watch(true)
  t.same(run(w, s, 3 * B + 10, 5 * B), [], 'the clock starts at the install')
  t.same(run(w, s, 5 * B + 10, 5 * B + 10), [5 * B + 10])
  w.watch(false)
  t.same(run(w, s, 5 * B + 20, 9 * B), [], 'a commit: nothing until the next install')
  w.watch(true)
  t.same(run(w, s, 9 * B + 10, 11 * B + 10), [11 * B + 10], 'a new view: suspected anew after 2B, whenever the last was')
})

t.test('time this member did not run counts against nobody', async (t) => {
  const w = new SequencerWatch(B)
  w.watch(true)
  const s = { waiting: true, announced: 0, stable: 0, top: 0 }
  t.same(run(w, s, 0, B), [])
  // Stalled for 3B: the ORDERs that came meanwhile are not read yet.
  t.same(run(w, s, 4 * B, 5 * B - 10), [], 'the stall is not counted')
  t.same(run(w, s, 5 * B, 5 * B), [5 * B], 'what ran is: B before the stall and B after')
})
