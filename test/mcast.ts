/**
 * Multicast addresses for groups (directory/mcast.ts) alone: the range option, and an address per incarnation.
 */
import t from 'tap'
import { mcastAddress, parseRange } from '../directory/mcast.js'

const inc = (lo: number): string => `00000001${lo.toString(16).padStart(8, '0')}`

t.test('a range is its first address and its size; host bits are ignored', async (t) => {
  t.same(parseRange('239.255.0.0/16'), { base: 0xefff0000, size: 65536 })
  t.same(parseRange('239.255.7.9/16'), { base: 0xefff0000, size: 65536 })
  t.same(parseRange('224.0.0.0/4'), { base: 0xe0000000, size: 2 ** 28 })
  t.same(parseRange('239.1.2.3/32'), { base: 0xef010203, size: 1 })
})

t.test('a range that does not parse, or is not multicast, is refused naming it', async (t) => {
  for (const bad of ['239.255.0.0', '239.255.0/16', '239.255.0.0/', 'x.1.2.3/8', '239.256.0.0/16', '239.255.0.0/33', '239.255.0.0/3']) {
    t.throws(() => parseRange(bad), { message: new RegExp(`bad multicast range ${bad.replace(/[./]/g, '\\$&')} `) }, bad)
  }
  for (const unicast of ['10.0.0.0/8', '127.255.255.0/24', '224.0.0.0/3']) {
    t.throws(() => parseRange(unicast), { message: /must lie in 224\.0\.0\.0\/4/ }, unicast)
  }
})

t.test('the address follows the incarnation, never the range\'s first or last, and is the next free one if taken', async (t) => {
  const r = parseRange('239.1.2.0/29') // 8 addresses: .1 … .6 usable
  t.equal(mcastAddress(r, 4000, inc(0), new Set()), '239.1.2.1:4000')
  t.equal(mcastAddress(r, 4000, inc(3), new Set()), '239.1.2.4:4000')
  t.equal(mcastAddress(r, 4000, inc(6), new Set()), '239.1.2.1:4000', 'wraps within the usable addresses')
  t.equal(mcastAddress(r, 4000, inc(5), new Set(['239.1.2.6:4000'])), '239.1.2.1:4000', 'taken: the next, wrapping')
  t.equal(mcastAddress(r, 4000, inc(5), new Set(['239.1.2.6:4001'])), '239.1.2.6:4000', 'another port is another address')
  const used = new Set<string>()
  for (let k = 0; k < 6; k++) used.add(mcastAddress(r, 4000, inc(2), used))
  t.same([...used].sort(), [1, 2, 3, 4, 5, 6].map((n) => `239.1.2.${n}:4000`), 'every usable address once')
  t.equal(mcastAddress(r, 4000, inc(2), used), '239.1.2.3:4000', 'all taken: the incarnation\'s own is shared')
})

t.test('ranges of one or two addresses use every address', async (t) => {
  t.equal(mcastAddress(parseRange('239.9.9.9/32'), 1, inc(77), new Set()), '239.9.9.9:1')
  const two = parseRange('239.9.9.8/31')
  t.equal(mcastAddress(two, 1, inc(0), new Set()), '239.9.9.8:1')
  t.equal(mcastAddress(two, 1, inc(1), new Set()), '239.9.9.9:1')
})
