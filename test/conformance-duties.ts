/**
 * The conformance suite covers the spec: every numbered duty of docs/PROTOCOL.md §5.1 is named by at least one
 * test of test/conformance*.ts (in its title, "[A3, Q2] ..."), and every duty a test names exists.
 */
import { readFileSync, readdirSync } from 'node:fs'
import t from 'tap'
import { ROOT } from './fixtures/procs.js'

const spec = readFileSync(`${ROOT}docs/PROTOCOL.md`, 'utf8')
const from = spec.indexOf('### 5.1 Duties by state')
const to = spec.indexOf('### 5.2', from)
const duties = [...spec.slice(from, to).matchAll(/^- \*\*([A-Z]\d+)\*\*/gm)].map((m) => m[1]!)

/** Duty ids each conformance test names, by file. */
function named(): Map<string, string[]> {
  const byDuty = new Map<string, string[]>()
  for (const file of readdirSync(`${ROOT}test`).filter((f) => /^conformance.*\.ts$/.test(f) && f !== 'conformance-duties.ts')) {
    const src = readFileSync(`${ROOT}test/${file}`, 'utf8')
    for (const m of src.matchAll(/t\.test\(['`"]\[([A-Z0-9, ]+)\]/g)) {
      for (const id of m[1]!.split(',').map((s) => s.trim())) byDuty.set(id, [...(byDuty.get(id) ?? []), file])
    }
  }
  return byDuty
}

t.test('every numbered duty of PROTOCOL.md §5.1 is exercised by a conformance test, and every duty named exists', async (t) => {
  t.ok(from >= 0 && to > from && duties.length >= 40, `§5.1 found, with ${duties.length} duties`)
  t.equal(new Set(duties).size, duties.length, 'each duty id is used once in §5.1')
  const byDuty = named()
  t.same(duties.filter((id) => !byDuty.has(id)), [], 'duties no conformance test names')
  t.same([...byDuty.keys()].filter((id) => !duties.includes(id)), [], 'duties tests name that §5.1 does not have')
})
