/**
 * `ls` pages (directory/status.ts) alone: which groups a page lists, and where it stops. (Full-size pages against the
 * frame limit: test/limits.ts.)
 */
import t from 'tap'
import { statusPage } from '../directory/status.js'
import type { GroupStatus } from '../lib/dirproto.js'
import { encodeFrame, MAX_FRAME_FROM_DIRECTORY } from '../lib/frame.js'

/** A group's status with `n` members whose ids are `pad` characters long. */
const status = (name: string, n = 1, pad = 8): GroupStatus => ({
  name, viewId: 1, sequencer: 'm', mcast: '239.255.0.1:46100', transport: 'multicast', state: 'stable',
  members: Array.from({ length: n }, (_, i) => ({ no: i + 1, id: `${i}`.padStart(pad, 'm'), addr: '127.0.0.1:9000' })),
})

t.test('every group by name; after a name, only those after it; or one group by name', async (t) => {
  const groups = new Map(['b', 'c', 'a'].map((n) => [n, status(n)]))
  const names = (f: Parameters<typeof statusPage>[0]): unknown => statusPage(f, groups, (g) => g).groups.map((g) => g.name)
  t.same(names({ t: 'ls' }), ['a', 'b', 'c'])
  t.same(names({ t: 'ls', after: 'a' }), ['b', 'c'])
  t.same(names({ t: 'ls', after: 'aa' }), ['b', 'c'], 'after a name no group has')
  t.same(names({ t: 'ls', after: 'c' }), [])
  t.same(names({ t: 'ls', group: 'b' }), ['b'])
  t.same(names({ t: 'ls', group: 'x' }), [], 'a group not here')
  t.same(statusPage({ t: 'ls' }, groups, (g) => g), { t: 'status', groups: [status('a'), status('b'), status('c')] }, 'no `next`: nothing follows')
  t.same(statusPage({ t: 'ls' }, new Map(), (g) => g), { t: 'status', groups: [] })
})

t.test('a page stops before the group that would not fit, and names its last group as `next`', async (t) => {
  // Each about 70 KB: a few per page.
  const groups = new Map(['g1', 'g2', 'g3', 'g4', 'g5'].map((n) => [n, status(n, 700, 64)]))
  const seen: string[] = []
  let after: string | undefined
  for (let pages = 1; ; pages++) {
    const page = statusPage(after === undefined ? { t: 'ls' } : { t: 'ls', after }, groups, (g) => g)
    t.ok(encodeFrame(page, MAX_FRAME_FROM_DIRECTORY).length <= MAX_FRAME_FROM_DIRECTORY, `page ${pages} fits a frame`)
    t.ok(page.groups.length >= 1)
    seen.push(...page.groups.map((g) => g.name))
    if (page.next === undefined) break
    t.equal(page.next, page.groups[page.groups.length - 1]!.name)
    after = page.next
  }
  t.same(seen, ['g1', 'g2', 'g3', 'g4', 'g5'], 'every group once')
})

t.test('a page lists at least one group, even one larger than the room (a group of MAX_GROUP_MEMBERS fits in fact)', async (t) => {
  const big = status('big', 3000, 100)
  const page = statusPage({ t: 'ls' }, new Map([['big', big], ['z', status('z')]]), (g) => g)
  t.equal(page.groups[0], big)
  t.equal(page.next, 'big', 'the next group waits for the next page')
})
