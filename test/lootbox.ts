/** The loot-box demo end to end: concurrent draws from separate processes never share a number; replicas agree. */
import t from 'tap'
import { spawnSync } from 'node:child_process'
import { ROOT } from './fixtures/procs.js'

t.test('4 processes draw concurrently: all numbers distinct, all replicas equal', async (t) => {
  const r = spawnSync(process.execPath, [`${ROOT}dist/demo-app/lootbox.js`, '--clients', '4', '--draws', '100'], { encoding: 'utf8', timeout: 60_000 })
  t.equal(r.status, 0, r.stderr)
  t.match(r.stdout, /400 draws in .* all distinct; replicas agree/)
})
