/**
 * Void slots alone (lib/voids.ts): which slots a commit declares held by nobody, and how long they stay void.
 */
import t from 'tap'
import { VoidSlots } from '../lib/voids.js'

const voidIn = (v: VoidSlots, from: number, to: number): number[] => {
  const out: number[] = []
  for (let s = from; s <= to; s++) if (v.has(s)) out.push(s)
  return out
}

t.test('slots up to the cut that no source holds are void; held ones and those past the cut are not', async (t) => {
  const v = new VoidSlots()
  // have 10; sources hold (10, 14] and (17, 20]; cut 22: 15–17 and 21–22 are held by nobody.
  v.record(10, 22, [{ low: 17, have: 20 }, { low: 10, have: 14 }])
  t.same(voidIn(v, 1, 30), [15, 16, 17, 21, 22])
})

t.test('a source that holds nothing (have = low) covers nothing; overlapping sources cover their union', async (t) => {
  const v = new VoidSlots()
  v.record(0, 20, [{ low: 5, have: 5 }, { low: 0, have: 8 }, { low: 6, have: 12 }])
  t.same(voidIn(v, 1, 25), [13, 14, 15, 16, 17, 18, 19, 20])
})

t.test('below have nothing is void: those slots were passed already', async (t) => {
  const v = new VoidSlots()
  v.record(10, 15, [{ low: 0, have: 5 }])
  t.same(voidIn(v, 1, 20), [11, 12, 13, 14, 15])
})

t.test('a commit without sources (the first one) declares nothing void', async (t) => {
  const v = new VoidSlots()
  v.record(0, 10, [])
  t.same(voidIn(v, 1, 20), [])
})

t.test('void slots stay void under later commits whose sources seem to cover them, until have passes them', async (t) => {
  const v = new VoidSlots()
  v.record(10, 20, [{ low: 10, have: 15 }]) // 16–20 void
  // The next commit's sources report a have past 20 (members skipped the void slots): they still are void.
  v.record(12, 25, [{ low: 10, have: 25 }])
  t.same(voidIn(v, 1, 30), [16, 17, 18, 19, 20])
  v.record(18, 30, [{ low: 10, have: 30 }])
  t.same(voidIn(v, 19, 30), [19, 20], 'above have, still void')
  v.record(20, 30, [{ low: 10, have: 30 }])
  t.same(voidIn(v, 1, 30), [], 'have passed them all: forgotten')
})

t.test('a later commit with a lower cut trims the ranges to it', async (t) => {
  const v = new VoidSlots()
  v.record(10, 20, [{ low: 10, have: 12 }]) // 13–20 void
  v.record(10, 16, [{ low: 10, have: 16 }])
  t.same(voidIn(v, 1, 30), [13, 14, 15, 16])
})
