import t from 'tap'
import { Reassembly } from '../lib/reassembly.js'
import { MAX_MESSAGE } from '../lib/wire.js'

const b = (s: string): Buffer => Buffer.from(s)
const str = (x: Uint8Array | undefined): string | undefined => (x === undefined ? undefined : Buffer.from(x).toString())
/** A first fragment: the message's length (u32) in front of its first bytes (PROTOCOL.md §4.5). */
const head = (len: number, s: string): Buffer => {
  const p = Buffer.alloc(4 + s.length)
  p.writeUInt32BE(len, 0)
  p.write(s, 4)
  return p
}

t.test('whole messages come back as copies; fragments are joined at the last one', async (t) => {
  const r = new Reassembly()
  const src = b('one')
  const one = r.push(1, true, false, src)!
  src.fill(0x58)
  t.equal(str(one), 'one', 'a copy, not a view of the datagram')
  t.equal(r.push(1, true, true, head(5, 'he')), undefined)
  t.equal(r.push(2, true, false, b('other sender')) && 'x', 'x', 'senders interleave')
  t.equal(r.push(1, false, true, b('ll')), undefined)
  t.equal(r.bytes, 5, 'the message was allocated at its length')
  t.equal(str(r.push(1, false, false, b('o'))), 'hello')
  t.equal(r.bytes, 0)
  t.equal(r.skipped, 0)
})

t.test('each fragment is written into the message as it comes: no fragment is held until the message ends', async (t) => {
  const r = new Reassembly()
  const first = head(6, 'ab')
  const mid = b('cd')
  r.push(1, true, true, first)
  r.push(1, false, true, mid)
  // The datagrams these fragments came in are free to go (or be overwritten) once pushed.
  first.fill(0x58)
  mid.fill(0x58)
  t.equal(str(r.push(1, false, false, b('ef'))), 'abcdef')
})

t.test('without copying, a whole message is the payload itself; a fragmented one is new memory either way', async (t) => {
  const r = new Reassembly()
  const src = b('view')
  t.equal(r.push(1, true, false, src, false), src, 'the same bytes, not a copy')
  const first = head(4, 'ab')
  r.push(1, true, true, first, false)
  const m = r.push(1, false, false, b('cd'), false)!
  t.equal(str(m), 'abcd')
  t.not(m.buffer, first.buffer, 'not memory of a fragment')
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
  r.push(1, true, true, head(10, 'lost'))
  t.equal(str(r.push(1, true, false, b('fresh'))), 'fresh', 'never glued to the unfinished one')
  t.equal(r.skipped, 1)
  r.push(2, true, true, head(4, 'abc'))
  r.push(3, true, true, head(3, 'de'))
  r.retain((no) => no === 3)
  t.equal(r.bytes, 3, 'sender 2 gone: its partial message freed')
  t.equal(r.push(2, false, false, b('tail')), undefined, 'and its tail is not a message')
  t.equal(r.skipped, 3)
})

t.test('a length no sender could send, or fragments that do not add up to it, drop the message', async (t) => {
  const r = new Reassembly()
  t.equal(r.push(1, true, true, head(2, 'abc')), undefined, 'a fragmented message no longer than its first fragment')
  t.equal(r.push(1, false, false, b('d')), undefined, 'and its tail with it')
  t.equal(r.push(1, true, true, head(MAX_MESSAGE + 1, 'abc')), undefined, 'longer than MAX_MESSAGE: nothing allocated')
  t.equal(r.bytes, 0)
  t.equal(r.push(1, true, true, b('ab')), undefined, 'a first fragment too short for a length')
  t.equal(r.skipped, 4)
  r.push(1, true, true, head(5, 'ab'))
  t.equal(r.push(1, false, true, b('cde')), undefined, 'a fragment that fills the message but says more follow')
  t.equal(r.bytes, 0, 'dropped')
  r.push(1, true, true, head(5, 'ab'))
  t.equal(r.push(1, false, false, b('c')), undefined, 'a last fragment that leaves it short')
  r.push(1, true, true, head(5, 'ab'))
  t.equal(r.push(1, false, false, b('cdef')), undefined, 'or overflows it')
  t.equal(r.skipped, 4 + 2 + 2 + 2)
  t.equal(str(r.push(1, true, true, head(5, 'ab'))), undefined)
  t.equal(str(r.push(1, false, false, b('cde'))), 'abcde', 'the next message is whole')
})
