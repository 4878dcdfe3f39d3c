/**
 * docs/PROTOCOL.md §9's test vectors (scripts/specvectors.ts): the block is exactly as rendered, and every vector printed
 * there decodes — with seqcast's own decoders and with test/fixtures/schemacodec.ts, which knows only lib/schema.ts —
 * to the values printed beside it; the sealed ones, computed with node:crypto from §2.7, open with lib/seal.ts and
 * are what lib/seal.ts seals. Also the rule operators of docs/protocol-schema.json.
 */
import t from 'tap'
import fs from 'node:fs'
import { renderBlocks } from '../scripts/schemadoc.js'
import {
  datagramVectors, frameVectors, sealedVectors, uint64Prepared, VECTOR_GROUP_KEY, VECTOR_INC, type DatagramVector,
} from '../scripts/specvectors.js'
import { decode, parseIncarnation, Kind, type Datagram } from '../lib/wire.js'
import { FrameDecoder, MAX_FRAME_FROM_DIRECTORY } from '../lib/frame.js'
import { DirectoryReader, parseToDirectory } from '../lib/dirproto.js'
import { SealedTransport } from '../lib/seal.js'
import { BaseTransport } from '../lib/transport.js'
import { decodeDatagram, encodeDatagram, evaluate, frameViolation, type Body } from './fixtures/schemacodec.js'
import { DATAGRAMS, FROM_DIRECTORY, OPERATORS, SCHEMA, TO_DIRECTORY, type Expr, type FrameField, type IntField, type Rule } from '../lib/schema.js'

const protocol = fs.readFileSync(new URL('../docs/PROTOCOL.md', import.meta.url), 'utf8')
const section = protocol.slice(protocol.indexOf('## 9. Test vectors'))
const inc = parseIncarnation(VECTOR_INC)!

/** Every hex string printed in a fenced block of §9 on a line of its own ("Whole:" blocks). */
const printed = new Set([...section.matchAll(/```\n([0-9a-f]+)\n```/g)].map((m) => m[1]!))

t.test('§9 is in docs/PROTOCOL.md exactly as rendered, between its markers', async (t) => {
  const block = protocol.match(/<!-- schema:vectors -->\n([\s\S]*?)\n<!-- \/schema -->/)
  t.ok(block, 'the block is there')
  t.ok(block![1] === renderBlocks().vectors, 'and not stale (npm run spec:gen rewrites it)')
  t.ok(protocol.indexOf('<!-- schema:vectors -->') > protocol.indexOf('## 9. Test vectors'), 'under the heading ## 9. Test vectors')
})

/** The values lib/wire.ts's decode gives for a vector stated in the schema's names. */
function wireForm(v: DatagramVector): Datagram {
  const b = v.body as Record<string, any>
  const h = { viewId: v.header.viewId, sender: v.header.sender }
  switch (v.type) {
    case 'DATA':
      return { kind: Kind.DATA, ...h, entries: b.entries.map((e: any) => ({ msgId: e.msgId, more: (e.flags & 1) !== 0, first: (e.flags & 2) !== 0, payload: e.payload })) }
    case 'ORDER':
      return { kind: Kind.ORDER, ...h, firstSlot: b.firstSlot, stable: b.stable, runs: b.runs }
    case 'ACK':
      return { kind: Kind.ACK, ...h, have: b.have, acked: b.acked, stable: b.stable }
    case 'NACK':
      return {
        kind: Kind.NACK, ...h,
        slots: b.items.filter((i: any) => i.kind === 1).map(({ firstSlot, n }: any) => ({ firstSlot, n })),
        data: b.items.filter((i: any) => i.kind === 2).map(({ sender, firstMsgId, n }: any) => ({ sender, firstMsgId, n })),
      }
    case 'STATEREQ':
      return { kind: Kind.STATEREQ, ...h, acked: b.acked, from: b.from, length: b.length }
    case 'STATE':
      return { kind: Kind.STATE, ...h, offset: b.offset, last: (b.flags & 1) !== 0, none: (b.flags & 2) !== 0, bytes: b.bytes }
  }
}

t.test('every datagram type has a vector, and each printed one decodes to its values with lib/wire.ts and with the schema alone', async (t) => {
  const vs = datagramVectors()
  t.same([...new Set(vs.map((v) => v.type))].sort(), DATAGRAMS.map((d) => d.name).sort(), 'one of each type at least')
  t.ok(vs.some((v) => v.type === 'ORDER' && (v.body.runs as unknown[]).length === 0), 'and an ORDER heartbeat')
  t.ok(vs.some((v) => v.type === 'STATE' && v.body.flags === 2), 'and a STATE NONE')
  for (const v of vs) {
    const hex = v.bytes.toString('hex')
    t.ok(printed.has(hex), `${v.title}: printed whole`)
    const bytes = Buffer.from(hex, 'hex') // what the reader of §9 has
    t.same(decode(bytes, inc), wireForm(v), `${v.type}: lib/wire.ts decodes it to the values printed`)
    const d = decodeDatagram(bytes)
    t.same(d, { ok: true, type: v.type, header: v.header, body: v.body }, `${v.type}: so does a decoder knowing only the schema`)
    t.ok(encodeDatagram({ type: v.type, header: v.header, body: v.body }).equals(bytes), `${v.type}: and the schema's encoder writes the same bytes`)
  }
})

t.test("each datagram's per-field lines are its bytes in order", async (t) => {
  // The lines of a field block, concatenated, are the whole datagram: nothing skipped, nothing reordered.
  const blocks = [...section.matchAll(/```\n(5343[0-9a-f]* +header\.magic[\s\S]*?)```/g)].map((m) => m[1]!)
  t.equal(blocks.length, datagramVectors().length)
  blocks.forEach((b, i) => {
    const hex = b.split('\n').map((l) => l.match(/^([0-9a-f]*)/)![1]).join('')
    t.equal(hex, datagramVectors()[i]!.bytes.toString('hex'), datagramVectors()[i]!.type)
  })
})

/** A transport that only says where it is: what lib/seal.ts needs to open a TO_MEMBER datagram. */
class At extends BaseTransport {
  readonly out: Buffer[] = []
  constructor(readonly address: string) {
    super()
  }
  protected sendTo(buf: Buffer): void {
    this.out.push(Buffer.from(buf))
  }
  close(): void {}
}

t.test('the sealed vectors, made with node:crypto as §2.7 says, open with lib/seal.ts, and are what it seals', async (t) => {
  const vs = sealedVectors()
  t.equal(vs.length, 2)
  t.ok(vs.some((v) => v.to === undefined) && vs.some((v) => v.to !== undefined), 'one to the group, one to a member')
  for (const v of vs) {
    const wire = v.sealed.toString('hex')
    t.ok(printed.has(wire), `${v.title}: printed whole`)
    for (const part of [v.datagramKey, v.nonce, v.aad.subarray(0, 24), v.ciphertext, v.tag]) t.ok(section.includes(part.toString('hex')), 'its parts printed')
    const sealed = Buffer.from(wire, 'hex')
    const rx = new SealedTransport(new At(v.to ?? '10.0.0.9:40009'), VECTOR_GROUP_KEY, v.epoch)
    const opened = rx.open(sealed)
    t.ok(opened?.equals(v.plain), 'lib/seal.ts opens it to the plain datagram')
    t.same(decodeDatagram(opened!).ok, true)
    if (v.to !== undefined) {
      const other = new SealedTransport(new At('10.0.0.3:40003'), VECTOR_GROUP_KEY, v.epoch)
      t.equal(other.open(sealed), null, 'at another address it does not open: the address is in the associated data')
    }
    // lib/seal.ts sealing the same datagram from the same nonce (its prefix and counter set as test/seal.ts does).
    const tx = new SealedTransport(new At('10.0.0.3:40003'), VECTOR_GROUP_KEY, v.epoch)
    Object.assign(tx, { prefix: v.prefix, pfxHi: v.prefix.readUInt32BE(0), pfxLo: v.prefix.readUInt32BE(4), counter: v.counter })
    t.ok(tx.seal(v.plain, v.to).equals(sealed), 'lib/seal.ts seals it to the same bytes')
  }
})

t.test('every frame vector decodes with lib/frame.ts and the dirproto readers to the values printed', async (t) => {
  const vs = frameVectors()
  t.same(vs.map((v) => v.frame.t), ['join', 'welcome', 'prepared', 'commit', 'commit'])
  t.ok(vs[3]!.frame.members && !vs[4]!.frame.members && vs[4]!.frame.base === vs[3]!.frame.viewId, 'a whole commit, then a delta from it')
  const reader = new DirectoryReader() // one connection: the delta is read after the whole commit
  for (const v of vs) {
    const hex = v.bytes.toString('hex')
    t.ok(printed.has(hex), `${v.frame.t}: printed whole`)
    const frames = new FrameDecoder(v.direction === 'toDirectory' ? undefined : MAX_FRAME_FROM_DIRECTORY).push(Buffer.from(hex, 'hex'))
    t.same(frames, [v.frame], `${v.frame.t}: lib/frame.ts decodes the printed bytes to the printed map`)
    const read = v.direction === 'toDirectory' ? parseToDirectory(frames[0]!) : reader.read(frames[0]!)
    t.same(read, v.reads ?? v.frame, `${v.frame.t}: ${v.direction === 'toDirectory' ? 'the directory' : 'a member'} reads it as printed`)
    t.equal(frameViolation(v.direction, frames[0]), null, `${v.frame.t}: valid per the schema`)
  }
  const printedMembers = section.match(/reads it as view 8 with `members` (\[.*\])\./)
  t.same(JSON.parse(printedMembers![1]!), vs[4]!.reads!.members, "the delta's members as printed")
})

t.test('a 64-bit integer format is accepted: the same prepared frame', async (t) => {
  const alt = uint64Prepared()
  t.ok(printed.has(alt.toString('hex')), 'printed')
  const plain = frameVectors().find((v) => v.frame.t === 'prepared')!
  t.not(alt.toString('hex'), plain.bytes.toString('hex'))
  t.ok(alt.includes(Buffer.from('cf0000000100000005', 'hex')), 'have as uint 64')
  const [f] = new FrameDecoder().push(alt)
  t.same(parseToDirectory(f!), plain.frame, 'the directory reads the same frame')
})

// ——— Rule operators (docs/protocol-schema.json `operators`) ———

function ops(e: Expr | undefined, into: Set<string>): Set<string> {
  if (Array.isArray(e)) {
    into.add(e[0])
    for (const x of e.slice(1)) ops(x as Expr, into)
  }
  return into
}

function frameRules(fs: readonly FrameField[], into: Expr[]): void {
  for (const f of fs) {
    if (f.when !== undefined) into.push(f.when)
    for (const r of f.rules ?? []) into.push(r.expr)
    if (f.fields) frameRules(f.fields, into)
    if (f.of) frameRules([f.of], into)
  }
}

t.test('every operator the rules use is described in the schema export', async (t) => {
  const exprs: Expr[] = []
  const rules = (rs: readonly Rule[] | undefined) => rs?.forEach((r) => exprs.push(r.expr))
  for (const d of DATAGRAMS) {
    rules(d.rules)
    for (const f of d.body) if (f.kind === 'list') rules(f.rules)
  }
  for (const ft of [...TO_DIRECTORY, ...FROM_DIRECTORY]) {
    rules(ft.rules)
    frameRules(ft.fields, exprs)
  }
  const used = new Set<string>()
  for (const e of exprs) ops(e, used)
  t.ok(used.size > 5, `the rules use ${[...used].join(' ')}`)
  for (const op of used) t.ok(SCHEMA.operators[op as keyof typeof OPERATORS], `${op} is described`)
  const json = JSON.parse(fs.readFileSync(new URL('../docs/protocol-schema.json', import.meta.url), 'utf8')) as { operators: Record<string, string>; expressions: string }
  t.same(json.operators, OPERATORS, 'docs/protocol-schema.json carries them')
  t.ok(json.expressions.length > 0)
})

t.test('bit takes a bit index, not a mask, as OPERATORS says', async (t) => {
  t.match(OPERATORS.bit, /bit index/)
  const ctx = (obj: Body) => ({ obj, parent: null })
  t.equal(evaluate(['bit', 'flags', 1], ctx({ flags: 2 })), true, 'bit 1 of 2')
  t.equal(evaluate(['bit', 'flags', 2], ctx({ flags: 2 })), false, 'bit 2 of 2')
  t.equal(evaluate(['bit', 'flags', 0], ctx({ flags: 3 })), true)
  // The STATE rule names NONE by its index, as the flags table does (bit 1 NONE): NONE with LAST is malformed.
  const state = DATAGRAMS.find((d) => d.name === 'STATE')!
  const none = (state.body.find((f) => f.name === 'flags') as IntField).flags!.find((b) => b.name === 'NONE')!
  t.same((state.rules![0]!.expr as readonly Expr[])[1], ['bit', 'flags', none.bit])
  const header = { inc: VECTOR_INC, viewId: 7, sender: 2 }
  t.equal(decodeDatagram(encodeDatagram({ type: 'STATE', header, body: { offset: 0, flags: 3, bytes: Buffer.alloc(0) } })).ok, false, 'NONE and LAST: malformed')
  t.equal(decodeDatagram(encodeDatagram({ type: 'STATE', header, body: { offset: 0, flags: 2, bytes: Buffer.alloc(0) } })).ok, true, 'NONE alone: valid')
})
