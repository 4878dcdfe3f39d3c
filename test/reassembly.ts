import t from 'tap'
import { Reassembly } from '../lib/reassembly.js'

const b = (s: string): Buffer => Buffer.from(s)
const str = (x: Uint8Array | undefined): string | undefined => (x === undefined ? undefined : Buffer.from(x).toString())

t.test('whole messages come back as copies; fragments are joined at the last one', async (t) => {
  const r = new Reassembly()
  const src = b('one')
  const one = r.push(1, true, false, src)!
  src.fill(0x58)
  t.equal(str(one), 'one', 'a copy, not a view of the datagram')
  t.equal(r.push(1, true, true, b('he')), undefined)
  t.equal(r.push(2, true, false, b('other sender')) && 'x', 'x', 'senders interleave')
  t.equal(r.push(1, false, true, b('ll')), undefined)
  t.equal(r.bytes, 4)
  t.equal(str(r.push(1, false, false, b('o'))), 'hello')
  t.equal(r.bytes, 0)
  t.equal(r.skipped, 0)
})

t.test('a stream that starts mid-message skips that message whole, up to the next first fragment', async (t) => {
  const r = new Reassembly()
  t.equal(r.push(1, false, true, b('middle')), undefined)
  t.equal(r.push(1, false, false, b('end')), undefined)
  t.equal(r.skipped, 2)
  t.equal(str(r.push(1, true, false, b('next'))), 'next')
})

t.test('a message that never ends is dropped when a new one starts, or when its sender is gone', async (t) => {
  const r = new Reassembly()
  r.push(1, true, true, b('lost'))
  t.equal(str(r.push(1, true, false, b('fresh'))), 'fresh', 'never glued to the unfinished one')
  t.equal(r.skipped, 1)
  r.push(2, true, true, b('abc'))
  r.push(3, true, true, b('de'))
  r.retain((no) => no === 3)
  t.equal(r.bytes, 2, 'sender 2 gone: its partial message freed')
  t.equal(r.push(2, false, false, b('tail')), undefined, 'and its tail is not a message')
  t.equal(r.skipped, 3)
})

t.test('without copying, a whole message is the payload itself; a fragmented one is new memory either way', async (t) => {
  const r = new Reassembly()
  const src = b('view')
  t.equal(r.push(1, true, false, src, false), src, 'the same bytes, not a copy')
  const first = b('ab')
  r.push(1, true, true, first, false)
  const m = r.push(1, false, false, b('cd'), false)!
  first.fill(0x58)
  t.equal(str(m), 'abcd', 'joined into memory of its own')
})
