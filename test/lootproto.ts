/** The loot box's client protocol, pure: every kind of line, and the bounded line splitter. */
import t from 'tap'
import { LineSplitter, MAX_DRAW, MAX_LINE, OVERLONG, parseLine, type Piece } from '../demo-app/lootproto.js'

t.test('parseLine: draws, stats, help, and one error line for everything else', async (t) => {
  t.same(parseLine('draw 4'), { kind: 'draw', n: 4 })
  t.same(parseLine('  DRAW\t007 '), { kind: 'draw', n: 7 })
  t.same(parseLine(`draw ${MAX_DRAW}`), { kind: 'draw', n: MAX_DRAW })
  t.same(parseLine('stats'), { kind: 'stats' })
  t.same(parseLine('help'), { kind: 'help' })
  const errors: Array<[string, RegExp]> = [
    ['', /^error: empty line/],
    ['   ', /^error: empty line/],
    ['draw', /^error: draw needs a count/],
    ['draw 0', /^error: N is zero/],
    ['draw 000', /^error: N is zero/],
    ['draw -3', /^error: N is negative/],
    ['draw 1.5', /^error: N is not an integer/],
    ['draw 1e3', /^error: N is not an integer/],
    ['draw +4', /^error: N is not an integer/],
    ['draw four', /^error: N is not an integer/],
    ['draw 0x10', /^error: N is not an integer/],
    [`draw ${MAX_DRAW + 1}`, /^error: N is over the maximum of 1000/],
    ['draw 99999999999999999999999999999', /^error: N is over the maximum/],
    ['draw 4 5', /^error: draw takes one count/],
    ['stats now', /^error: stats takes no arguments/],
    ['fetch 4', /^error: unknown command "fetch"/],
    ['\u0000\u0001', /^error: unknown command "\\u0000\\u0001"/],
  ]
  for (const [line, re] of errors) {
    const r = parseLine(line)
    t.equal(r.kind, 'error', JSON.stringify(line))
    if (r.kind === 'error') {
      t.match(r.message, re, JSON.stringify(line))
      t.notOk(r.message.includes('\n'), 'one line')
    }
  }
  // What is echoed back is bounded.
  const r = parseLine(`${'x'.repeat(200)}`)
  t.ok(r.kind === 'error' && r.message.length < 150)
})

function drain(s: LineSplitter): Piece[] {
  const out: Piece[] = []
  for (let p; (p = s.next()) !== null;) out.push(p)
  return out
}

t.test('LineSplitter: lines across chunks, \\r\\n, the last line at the end, overlong lines dropped whole', async (t) => {
  const s = new LineSplitter(10)
  s.push(Buffer.from('dr'))
  t.same(drain(s), [])
  s.push(Buffer.from('aw 4\r\nstats\n\nhe'))
  t.same(drain(s), ['draw 4', 'stats', ''])
  s.push(Buffer.from('lp'))
  s.end()
  t.same(drain(s), ['help'])

  const o = new LineSplitter(10)
  o.push(Buffer.from('0123456789\n01234567890\n')) // exactly the bound; one over
  t.same(drain(o), ['0123456789', OVERLONG])
  o.push(Buffer.from('0123456789\r\n')) // the \r does not count
  t.same(drain(o), ['0123456789'])
  // An endless line is reported once, as soon as it is too long, and nothing of it is held.
  o.push(Buffer.from('x'.repeat(12)))
  t.same(drain(o), [OVERLONG])
  for (let i = 0; i < 100; i++) o.push(Buffer.from('y'.repeat(1000)))
  t.same(drain(o), [])
  t.equal(o.held, 0)
  o.push(Buffer.from('yyy\ndraw 1\n'))
  t.same(drain(o), ['draw 1'])
  // The end of the stream in the middle of an overlong line adds nothing.
  o.push(Buffer.from('z'.repeat(50)))
  o.end()
  t.same(drain(o), [OVERLONG])
})

t.test('LineSplitter: holds only what was pushed while the reader does not pull', async (t) => {
  const s = new LineSplitter(MAX_LINE)
  s.push(Buffer.from('draw 1\n'.repeat(1000)))
  t.equal(s.next(), 'draw 1')
  t.equal(s.held, 7 * 999)
  t.equal(drain(s).length, 999)
  t.equal(s.held, 0)
})
