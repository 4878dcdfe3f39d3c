/**
 * What a commit lists besides its members (directory/commits.ts) alone: the flush sources, and the members as a
 * change from the previous commit.
 */
import t from 'tap'
import { commitDelta, sourcesCovering } from '../directory/commits.js'
import type { CommitFrame, MemberEntry } from '../lib/dirproto.js'
import { MAX_GROUP_MEMBERS } from '../lib/frame.js'
import { rng } from './fixtures/sim-rng.js'

t.test('a commit lists few flush sources that hold every slot any participant holds, three times over where they can, the holder first', async (t) => {
  const random = rng(99)
  const holds = (rs: Array<{ low: number; have: number }>, s: number): boolean => rs.some((r) => r.low < s && s <= r.have)
  let checked = 0
  for (let run = 0; run < 500; run++) {
    const n = 1 + Math.floor(random() * 12)
    const reports = Array.from({ length: n }, (_, i) => {
      const low = Math.floor(random() * 40)
      return { no: i + 1, low, have: low + Math.floor(random() * 30) }
    })
    const cut = Math.max(...reports.map((r) => r.have))
    const holder = reports.filter((r) => r.have === cut).sort((a, b) => a.low - b.low || a.no - b.no)[0]!
    const chosen = sourcesCovering(reports, holder)
    t.equal(chosen[0], holder)
    for (let s = 0; s <= cut + 1; s++) {
      if (holds(reports, s) !== holds(chosen, s)) t.fail(`run ${run}: slot ${s} held by ${holds(reports, s) ? 'some report' : 'no report'} but not so by the chosen`)
    }
    // Each slot held by k reports is held by at least min(k, 3) chosen: a source that hears nothing has stand-ins.
    const holders = (rs: Array<{ low: number; have: number }>, s: number): number => rs.filter((r) => r.low < s && s <= r.have).length
    for (let s = 0; s <= cut; s++) {
      if (holders(chosen, s) < Math.min(3, holders(reports, s))) t.fail(`run ${run}: slot ${s} held by ${holders(chosen, s)} chosen of ${holders(reports, s)}`)
    }
    if (new Set(chosen).size !== chosen.length) t.fail(`run ${run}: a source listed twice`)
    checked++
  }
  t.equal(checked, 500)
  const all = Array.from({ length: MAX_GROUP_MEMBERS }, (_, i) => ({ no: i + 1, low: 100 + (i % 7), have: 5000 }))
  t.same(sourcesCovering(all, all[0]!).length, 3, 'a thousand caught-up members: three sources, not a thousand')
})

t.test('a holder that holds everything is a cover alone; later covers are stand-ins, the farthest-reaching first', async (t) => {
  const holder = { no: 2, low: 0, have: 50 }
  const r1 = { no: 1, low: 10, have: 50 }
  const r3 = { no: 3, low: 20, have: 40 }
  const r4 = { no: 4, low: 30, have: 35 }
  t.same(sourcesCovering([r3, r1, holder, r4], holder), [holder, r1, r3], 'three covers: r4 is left out')
  t.same(sourcesCovering([holder], holder), [holder], 'alone')
  const empty = { no: 1, low: 7, have: 7 }
  t.same(sourcesCovering([empty, { no: 2, low: 3, have: 3 }], empty), [empty], 'a holder that holds nothing is still listed; other empty ranges are not')
})

t.test('a gap below the holder\'s range is filled by the fewest ranges that reach into it', async (t) => {
  const holder = { no: 1, low: 30, have: 40 }
  const a = { no: 2, low: 0, have: 12 }
  const b = { no: 3, low: 5, have: 31 } // reaches furthest from below 12: chosen over c
  const c = { no: 4, low: 10, have: 20 }
  const chosen = sourcesCovering([holder, a, b, c], holder)
  t.same(chosen.slice(0, 3), [holder, a, b], 'the first cover: holder, then a sweep from the lowest slot')
  t.ok(chosen.includes(c), 'c is listed by a later cover: a stand-in for the slots it holds')
})

const entry = (no: number, id = `m${no}`, addr = `127.0.0.1:${9000 + no}`): MemberEntry => ({ no, id, addr })
const commitOf = (viewId: number, members: MemberEntry[]): CommitFrame => ({
  t: 'commit', group: 'g', viewId, inc: '0000000100000001', mcast: '239.255.0.1:46100', transport: 'multicast', members,
  sequencer: members[0]!.no, cut: 0, start: 1, holder: members[0]!.no, sources: [], nextNo: 10,
})

t.test('a commit\'s members as a change from the previous commit: new and changed entries added, the gone removed', async (t) => {
  const base = commitOf(4, [entry(1), entry(2), entry(3)])
  t.same(commitDelta(base, [entry(1), entry(3), entry(5)]), { base: 4, added: [entry(5)], removed: [2] })
  t.same(commitDelta(base, [entry(1), entry(2, 'm2', '127.0.0.1:1'), entry(3, 'x')]), { base: 4, added: [entry(2, 'm2', '127.0.0.1:1'), entry(3, 'x')], removed: [] },
    'a new address or id for a number is sent again')
  t.same(commitDelta(base, [entry(1), entry(2), entry(3)]), { base: 4, added: [], removed: [] }, 'same members: an empty change')
  t.same(commitDelta(base, []), { base: 4, added: [], removed: [1, 2, 3] })
})
