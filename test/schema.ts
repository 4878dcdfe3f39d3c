/**
 * lib/schema.ts against the code (issue 15: one source the code and the spec are checked against). Seeded:
 * - datagrams: random valid bodies encode to the same bytes through lib/wire.ts and the schema-driven codec
 *   (test/fixtures/schemacodec.ts) and decode alike both ways; every field pushed out of its range, every sentinel
 *   that is malformed and every rule broken is refused by both decoders; random corruptions are accepted by one
 *   exactly when by the other;
 * - frames: random valid frames per schema pass parseToDirectory / DirectoryReader unchanged; every field of the
 *   wrong type, out of range or missing, and every rule broken, is refused by both (to the directory: EFRAME for a
 *   wrong type, EBAD_REQUEST for a value out of range, as the schema says);
 * - every frame and datagram the real directory and members produce (simulator, directory harness) is valid.
 */
import t from 'tap'
import { randomBytes } from 'node:crypto'
import {
  DATAGRAMS, FROM_DIRECTORY, HEADER, MAX_U48, STATE_WINDOW, TO_DIRECTORY,
  type DgField, type FrameField, type FrameType, type IntField,
} from '../lib/schema.js'
import {
  checkFrame, decodeDatagram, encodeDatagram, encodeFrame, evaluate, FrameSplitter, frameViolation, type Body, type DatagramName,
} from './fixtures/schemacodec.js'
import {
  DataPacker, decode, encodeAck, encodeNack, encodeOrder, encodeState, encodeStateNone, encodeStateReq, parseIncarnation, type Datagram,
} from '../lib/wire.js'
import { DirectoryReader, parseToDirectory } from '../lib/dirproto.js'
import { FrameDecoder, type Frame } from '../lib/frame.js'
import { ErrorCodes, ProtocolError } from '../lib/errors.js'
import { rng } from './fixtures/sim-rng.js'
import { datagramKind, Sim } from './fixtures/sim.js'
import { harness } from './fixtures/dirharness.js'

type Rand = () => number
const int = (r: Rand, n: number): number => Math.floor(r() * n)
const pick = <T>(r: Rand, xs: readonly T[]): T => xs[int(r, xs.length)]!
/** Mostly edges: 0/min, max, 2^32 boundaries, else uniform. */
const inRange = (r: Rand, min: number, max: number): number => {
  const edges = [min, max, min + 1, max - 1, 0xffff_ffff, 2 ** 32].filter((x) => x >= min && x <= max)
  return r() < 0.4 ? pick(r, edges) : min + Math.floor(r() * (max - min + 1))
}
const hex = (b: Uint8Array): string => Buffer.from(b).toString('hex')
/** Buffers as hex, so deep comparison does not depend on how a byte view was made. */
const plain = (v: unknown): unknown => {
  if (v instanceof Uint8Array) return hex(v)
  if (Array.isArray(v)) return v.map(plain)
  if (v && typeof v === 'object') return Object.fromEntries(Object.entries(v).filter(([, x]) => x !== undefined).map(([k, x]) => [k, plain(x)]))
  return v
}

// ——— Datagrams ———

const INC = '0123abcdfedc0042'
const H = { inc: parseIncarnation(INC)!, viewId: 7, sender: 3 }

/** A random valid body of each type, in the schema's form. */
function randomBody(r: Rand, name: DatagramName): Body {
  const u48 = () => inRange(r, 0, MAX_U48)
  switch (name) {
    case 'DATA':
      return { entries: Array.from({ length: int(r, 5) }, () => ({ msgId: inRange(r, 1, MAX_U48), flags: int(r, 4), payload: randomBytes(int(r, 40)) })) }
    case 'ORDER': {
      const runs = Array.from({ length: int(r, 5) }, () => {
        const count = inRange(r, 1, 0xffff)
        return { sender: inRange(r, 1, 0xffff_ffff), firstMsgId: inRange(r, 1, MAX_U48 - count + 1), count }
      })
      const total = runs.reduce((s, x) => s + x.count, 0)
      return { firstSlot: inRange(r, 1, Math.min(MAX_U48, MAX_U48 - total + 1)), stable: u48(), runs }
    }
    case 'ACK':
      return { have: u48(), acked: u48(), stable: u48() }
    case 'NACK':
      return {
        items: Array.from({ length: int(r, 6) }, () => r() < 0.5
          ? { kind: 1, firstSlot: u48(), n: inRange(r, 0, 0xffff) }
          : { kind: 2, sender: inRange(r, 1, 0xffff_ffff), firstMsgId: u48(), n: inRange(r, 0, 0xffff) }),
      }
    case 'STATEREQ': {
      const acked = inRange(r, 0, MAX_U48 - 2 * STATE_WINDOW)
      const from = acked + inRange(r, 0, STATE_WINDOW)
      return { acked, from, length: inRange(r, 0, acked + STATE_WINDOW - from) }
    }
    case 'STATE': {
      if (r() < 0.2) return { offset: 0, flags: 2, bytes: Buffer.alloc(0) }
      const bytes = randomBytes(int(r, 40))
      return { offset: inRange(r, 0, MAX_U48 - bytes.length), flags: int(r, 2), bytes }
    }
  }
}

/** The same body through lib/wire.ts's encoders. NACK: wire writes slot items before data items. */
function wireEncode(name: DatagramName, b: Body): Buffer {
  switch (name) {
    case 'DATA': {
      const p = new DataPacker(H, 65_507)
      for (const e of b.entries as Body[]) p.add(e.msgId as number, ((e.flags as number) & 2) !== 0, ((e.flags as number) & 1) !== 0, e.payload as Buffer)
      return p.finish()
    }
    case 'ORDER': return encodeOrder(H, b.firstSlot as number, b.stable as number, b.runs as never)
    case 'ACK': return encodeAck(H, b.have as number, b.acked as number, b.stable as number)
    case 'NACK': {
      const items = b.items as Body[]
      return encodeNack(H, items.filter((i) => i.kind === 1) as never, items.filter((i) => i.kind === 2) as never)
    }
    case 'STATEREQ': return encodeStateReq(H, b.acked as number, b.from as number, b.length as number)
    case 'STATE': return b.flags === 2 ? encodeStateNone(H) : encodeState(H, b.offset as number, b.flags === 1, [b.bytes as Buffer])
  }
}

const strip = (o: Record<string, unknown>, ...keys: string[]): Body => Object.fromEntries(Object.entries(o).filter(([k]) => !keys.includes(k)))
/** What lib/wire.ts decoded, in the schema's form. */
function fromWire(d: Datagram): { type: DatagramName; body: Body } {
  const type = DATAGRAMS.find((x) => x.type === d.kind)!.name
  const body = strip(d as unknown as Body, 'kind', 'viewId', 'sender')
  if (d.kind === 1) body.entries = d.entries.map((e) => ({ msgId: e.msgId, flags: (e.more ? 1 : 0) | (e.first ? 2 : 0), payload: e.payload }))
  if (d.kind === 4) return { type, body: { items: [...d.slots.map((s) => ({ kind: 1, ...s })), ...d.data.map((x) => ({ kind: 2, ...x }))] } }
  if (d.kind === 6) return { type, body: { offset: d.offset, flags: (d.last ? 1 : 0) | (d.none ? 2 : 0), bytes: d.bytes } }
  return { type, body }
}
const slotsFirst = (b: Body): Body => (b.items ? { items: [...(b.items as Body[])].sort((x, y) => (x.kind as number) - (y.kind as number)) } : b)

/** wire.decode with the datagram's own incarnation (so it never answers "foreign"). */
function wireDecode(buf: Buffer) {
  const inc = buf.length >= 12 ? { hi: buf.readUInt32BE(4), lo: buf.readUInt32BE(8) } : H.inc
  return decode(buf, inc)
}

t.test('datagrams: random valid bodies are the same bytes through lib/wire.ts and the schema, and decode alike', async (t) => {
  const r = rng(15)
  for (const d of DATAGRAMS) {
    for (let i = 0; i < 300; i++) {
      const body = randomBody(r, d.name)
      const mine = encodeDatagram({ type: d.name, header: { inc: INC, viewId: 7, sender: 3 }, body: slotsFirst(body) })
      const theirs = wireEncode(d.name, body)
      if (!mine.equals(theirs)) return t.fail(`${d.name}: ${JSON.stringify(plain(body))} encodes differently`)
      const a = decodeDatagram(theirs)
      if (!a.ok) return t.fail(`${d.name}: the schema refuses wire.ts's ${JSON.stringify(plain(body))}: ${a.reason}`)
      t.same(plain({ type: a.type, header: a.header, body: slotsFirst(a.body) }), plain({ type: d.name, header: { inc: INC, viewId: 7, sender: 3, flags: 0 }, body: slotsFirst(body) }))
      // Interleaved NACK items, as a stranger may send them, decode in wire.ts too.
      const w = decode(encodeDatagram({ type: d.name, header: { inc: INC, viewId: 7, sender: 3 }, body }), H.inc)
      if (w.kind === 0) return t.fail(`${d.name}: wire.ts refuses the schema's ${JSON.stringify(plain(body))}: ${w.reason}`)
      t.same(plain(fromWire(w)), plain({ type: d.name, body: slotsFirst(body) }))
      t.same([w.viewId, w.sender], [7, 3])
    }
  }
})

/** Where a list's first entry sits in a body, per field of the schema: the paths mutations aim at. */
function intFields(fields: readonly DgField[], path: (string | number)[] = []): Array<{ f: IntField; path: (string | number)[] }> {
  const out: Array<{ f: IntField; path: (string | number)[] }> = []
  for (const f of fields) {
    if (f.kind === 'int') out.push({ f, path: [...path, f.name] })
    if (f.kind === 'list' && f.fields) out.push(...intFields(f.fields, [...path, f.name, 0]))
    if (f.kind === 'list' && f.tag) {
      f.variants!.forEach((v, i) => {
        out.push({ f: f.tag!, path: [...path, f.name, i, f.tag!.name] })
        out.push(...intFields(v.fields, [...path, f.name, i]))
      })
    }
  }
  return out
}

/** A valid body with one entry per list (one per NACK kind), so every field has a place. */
const BASE: Record<DatagramName, Body> = {
  DATA: { entries: [{ msgId: 5, flags: 3, payload: Buffer.from('abc') }] },
  ORDER: { firstSlot: 10, stable: 4, runs: [{ sender: 2, firstMsgId: 7, count: 3 }] },
  ACK: { have: 9, acked: 8, stable: 7 },
  NACK: { items: [{ kind: 1, firstSlot: 3, n: 2 }, { kind: 2, sender: 4, firstMsgId: 9, n: 1 }] },
  STATEREQ: { acked: 100, from: 200, length: 1000 },
  STATE: { offset: 50, flags: 1, bytes: Buffer.from('state') },
}

/** Each rule of the schema broken, and held at its very edge. */
const RULE_CASES: Record<string, Array<{ bad: Body; edge: Body }>> = {
  'ORDER runs.firstMsgId': [{ bad: { firstSlot: 1, stable: 0, runs: [{ sender: 1, firstMsgId: MAX_U48, count: 2 }] }, edge: { firstSlot: 1, stable: 0, runs: [{ sender: 1, firstMsgId: MAX_U48 - 1, count: 2 }] } }],
  'ORDER runs': [{ bad: { firstSlot: MAX_U48, stable: 0, runs: [{ sender: 1, firstMsgId: 1, count: 2 }] }, edge: { firstSlot: MAX_U48 - 3, stable: 0, runs: [{ sender: 1, firstMsgId: 1, count: 2 }, { sender: 2, firstMsgId: 1, count: 2 }] } }],
  'STATEREQ from': [{ bad: { acked: 10, from: 9, length: 0 }, edge: { acked: 10, from: 10, length: 0 } }],
  'STATEREQ length': [{ bad: { acked: 5, from: 6, length: STATE_WINDOW }, edge: { acked: 5, from: 6, length: STATE_WINDOW - 1 } }],
  'STATE flags': [
    { bad: { offset: 0, flags: 3, bytes: Buffer.alloc(0) }, edge: { offset: 0, flags: 2, bytes: Buffer.alloc(0) } },
    { bad: { offset: 1, flags: 2, bytes: Buffer.alloc(0) }, edge: { offset: 1, flags: 0, bytes: Buffer.alloc(0) } },
    { bad: { offset: 0, flags: 2, bytes: Buffer.alloc(1) }, edge: { offset: 0, flags: 0, bytes: Buffer.alloc(1) } },
  ],
  'STATE bytes': [{ bad: { offset: MAX_U48, flags: 0, bytes: Buffer.alloc(1) }, edge: { offset: MAX_U48 - 1, flags: 1, bytes: Buffer.alloc(1) } }],
}

function setPath(o: Body, path: readonly (string | number)[], v: unknown): Body {
  const copy = structuredClone(o) as Body
  let at: Record<string | number, unknown> = copy
  for (const k of path.slice(0, -1)) at = at[k] as Record<string | number, unknown>
  at[path[path.length - 1]!] = v
  return copy
}

function bothRefuse(t: Pick<typeof import('tap').default, 'fail' | 'pass'>, buf: Buffer, what: string): void {
  const w = wireDecode(buf)
  const s = decodeDatagram(buf)
  if (w.kind !== 0) t.fail(`wire.ts takes ${what}`)
  else if (s.ok) t.fail(`the schema codec takes ${what}`)
  else t.pass(`${what}: refused (${w.reason} / ${s.reason})`)
}

t.test('datagrams: each field out of range, each malformed sentinel, each broken rule is refused by both', async (t) => {
  const header = { inc: INC, viewId: 7, sender: 3 }
  for (const d of DATAGRAMS) {
    const base = BASE[d.name]
    const good = encodeDatagram({ type: d.name, header, body: base })
    t.ok(wireDecode(good).kind !== 0 && decodeDatagram(good).ok, `${d.name}: the base case is valid`)
    // Header fields: written through the raw bytes (the codec writes fixed fields as fixed).
    let at = 0
    for (const f of HEADER) {
      const w = { u8: 1, u16: 2, u24: 3, u32: 4, u48: 6, u64: 8 }[f.type]
      for (const bad of badValues(f)) {
        const buf = Buffer.from(good)
        if (f.type === 'u64') buf.fill(0, at, at + 8)
        else buf.writeUIntBE(bad, at, w)
        bothRefuse(t, buf, `${d.name} header.${f.name} = ${bad}`)
      }
      at += w
    }
    for (const { f, path } of intFields(d.body)) {
      if (f.countOf || f.lengthOf) {
        const n = (f.countOf ? (base[f.countOf] as unknown[]) : (lookupPath(base, [...path.slice(0, -1), f.lengthOf!]) as Buffer)).length
        for (const lie of [n + 1, n - 1].filter((x) => x >= 0)) {
          bothRefuse(t, encodeDatagram({ type: d.name, header, body: setPath(base, path, lie) }), `${d.name} ${path.join('.')} = ${lie} (true: ${n})`)
        }
        continue
      }
      for (const bad of badValues(f)) bothRefuse(t, encodeDatagram({ type: d.name, header, body: setPath(base, path, bad) }), `${d.name} ${path.join('.')} = ${bad}`)
    }
    for (let cut = 0; cut < good.length; cut++) {
      if (d.name === 'STATE' && cut >= 31) continue // a STATE's bytes run to the end: shorter is another STATE
      bothRefuse(t, good.subarray(0, cut), `${d.name} cut to ${cut} bytes`)
    }
    if (d.name !== 'STATE') bothRefuse(t, Buffer.concat([good, Buffer.alloc(1)]), `${d.name} with a trailing byte`)
  }
  for (const d of DATAGRAMS) {
    for (const rule of [...(d.rules ?? []), ...d.body.flatMap((f) => (f.kind === 'list' ? (f.rules ?? []).map((x) => ({ ...x, field: `${f.name}.${x.field}` })) : []))]) {
      const cases = RULE_CASES[`${d.name} ${rule.field}`]
      if (!cases) {
        t.fail(`no test breaks ${d.name}'s rule "${rule.doc}"`)
        continue
      }
      for (const c of cases) {
        bothRefuse(t, encodeDatagram({ type: d.name, header, body: c.bad }), `${d.name} breaking "${rule.doc}"`)
        const edge = encodeDatagram({ type: d.name, header, body: c.edge })
        t.ok(wireDecode(edge).kind !== 0 && decodeDatagram(edge).ok, `${d.name} at the edge of "${rule.doc}": taken by both`)
      }
    }
  }
})

function lookupPath(o: unknown, path: readonly (string | number)[]): unknown {
  return path.reduce((x: unknown, k) => (x as Record<string | number, unknown>)[k], o)
}

/** Values of an int field the schema makes malformed. */
function badValues(f: IntField): number[] {
  const top = { u8: 0xff, u16: 0xffff, u24: 0xffffff, u32: 0xffff_ffff, u48: MAX_U48, u64: 0 }[f.type]
  const out: number[] = []
  if (f.fixed !== undefined) out.push(f.fixed === 0 ? 1 : f.fixed - 1, f.fixed === top ? 0 : top)
  if (f.min !== undefined && f.min > 0) out.push(f.min - 1)
  if (f.max !== undefined && f.max < top) out.push(f.max + 1, top)
  for (const s of f.sentinels ?? []) if (s.malformed && typeof s.value === 'number') out.push(s.value)
  if (f.flags) for (let bit = 0; bit < 8; bit++) if (!f.flags.some((b) => b.bit === bit)) out.push(1 << bit)
  return [...new Set(out)]
}

t.test('datagrams: random corruptions are refused by lib/wire.ts exactly when by the schema, and read alike', async (t) => {
  const r = rng(1515)
  let taken = 0
  let refused = 0
  for (let i = 0; i < 20_000; i++) {
    const d = pick(r, DATAGRAMS)
    const good = wireEncode(d.name, randomBody(r, d.name))
    let buf = Buffer.from(good)
    const how = int(r, 5)
    if (how === 0) buf = buf.subarray(0, int(r, buf.length))
    else if (how === 1) buf = Buffer.concat([buf, randomBytes(1 + int(r, 3))])
    else for (let k = 0, n = 1 + int(r, 3); k < n; k++) buf[int(r, buf.length)] = how === 2 ? int(r, 256) : pick(r, [0, 0xff, buf[int(r, buf.length)]!])
    const w = wireDecode(buf)
    const s = decodeDatagram(buf)
    if ((w.kind !== 0) !== s.ok) return t.fail(`case ${i}: ${hex(buf)}: wire.ts ${w.kind === 0 ? `refuses (${w.reason})` : 'takes'} it, the schema ${s.ok ? 'takes' : `refuses (${s.reason})`} it`)
    if (w.kind === 0 || !s.ok) {
      refused++
      continue
    }
    taken++
    const mine = fromWire(w)
    if (JSON.stringify(plain({ ...mine, body: slotsFirst(mine.body) })) !== JSON.stringify(plain({ type: s.type, body: slotsFirst(s.body) }))) return t.fail(`case ${i}: read differently`)
  }
  t.ok(taken > 1000 && refused > 1000, `both taken (${taken}) and refused (${refused}) cases`)
})

// ——— Frames ———

const NAME_CHARS = ['a', 'z', '0', '-', 'é', '語']
function randomName(r: Rand): string {
  let s = ''
  const target = r() < 0.3 ? 64 : 1 + int(r, 20)
  for (;;) {
    const c = pick(r, NAME_CHARS)
    if (Buffer.byteLength(s + c) > target) break
    s += c
  }
  return s || 'x'
}
const octet = (r: Rand) => int(r, 256)
const port = (r: Rand) => inRange(r, 1, 65535)

/** A random value of the field's schema: in range, of its form. */
function randomValue(r: Rand, f: FrameField): unknown {
  switch (f.type) {
    case 'int': return inRange(r, f.min!, f.max!)
    case 'bool': return r() < 0.5
    case 'bin': return randomBytes(f.bytes!)
    case 'string':
      if (f.enum) return pick(r, f.enum)
      switch (f.form) {
        case 'name': return randomName(r)
        case 'unicast': return `${inRange(r, 1, 223)}.${octet(r)}.${octet(r)}.${octet(r)}:${port(r)}`
        case 'multicast': return `${inRange(r, 224, 239)}.${octet(r)}.${octet(r)}.${octet(r)}:${port(r)}`
        case 'inc': return r() < 0.1 ? '0000000000000001' : randomBytes(8).toString('hex').replace(/^0{16}$/, '0000000000000001')
        default: return pick(r, ['', 'why', 'x'.repeat(300), 'é'])
      }
    case 'map': return randomMap(r, f.fields!)
    case 'list': {
      const n = Math.max(f.minItems ?? 0, int(r, Math.min(f.maxItems ?? 5, 5) + 1))
      return Array.from({ length: n }, () => randomValue(r, f.of!))
    }
  }
}

function randomMap(r: Rand, fields: readonly FrameField[]): Body {
  const o: Body = {}
  for (const f of fields) if (!f.when && (!f.optional || r() < 0.5)) o[f.name] = randomValue(r, f)
  return o
}

/** Makes a commit's random members, sequencer, cut/start and nextNo hold the schema's rules. */
function fixCommit(r: Rand, c: Body): void {
  const ms = new Map<number, Body>()
  for (const m of c.members as Body[]) ms.set(Math.min(m.no as number, 0xffff_fffe), { ...m, no: Math.min(m.no as number, 0xffff_fffe) })
  const members = [...ms.values()].sort((a, b) => (a.no as number) - (b.no as number))
  c.members = members
  const top = members.length ? (members[members.length - 1]!.no as number) : 0
  c.nextNo = top + 1 + int(r, Math.min(10, 2 ** 32 - top))
  c.sequencer = members.length ? pick(r, members).no : 0
  if ((c.start as number) <= (c.cut as number)) {
    c.cut = Math.min(c.cut as number, MAX_U48 - 1)
    c.start = (c.cut as number) + 1 + int(r, Math.min(100, MAX_U48 - (c.cut as number)))
  }
}

/** A random frame of `ft` that holds every rule of the schema. */
function randomFrame(r: Rand, ft: FrameType): Body {
  const f: Body = { t: ft.t, ...randomMap(r, ft.fields) }
  switch (ft.t) {
    case 'commit':
      f.members ??= randomValue(r, ft.fields.find((x) => x.name === 'members')!)
      fixCommit(r, f)
      break
    case 'rejoin': {
      const c = f.commit as Body
      if ((c.members as Body[]).length === 0) c.members = [{ no: 1, id: 'a', addr: '10.0.0.1:1' }]
      fixCommit(r, c)
      c.group = f.group
      if ((f.seenViewId as number) < (c.viewId as number)) f.seenViewId = c.viewId
      break
    }
    case 'prepared': if ((f.low as number) > (f.have as number)) [f.low, f.have] = [f.have, f.low]; break
    case 'welcome':
      if ((f.heartbeatMs as number) >= (f.timeoutMs as number)) {
        f.heartbeatMs = Math.min(f.heartbeatMs as number, 3_599_999)
        f.timeoutMs = (f.heartbeatMs as number) + 1
      }
      break
    case 'keys': {
      const ks = f.keys as Body[]
      const e0 = Math.min(ks[0]!.epoch as number, 0xffff_fffe)
      ks.forEach((k, i) => (k.epoch = e0 + i))
      f.use = pick(r, ks).epoch
      break
    }
  }
  return f
}

/** The frame as its receiver gets it: through MessagePack and lib/frame.ts's decoder. */
function wire(f: unknown): Frame {
  const out = new FrameDecoder(1 << 24).push(encodeFrame(f as object))
  return out[0]!
}

/** What the code says of a frame: null (taken, with what it read), or the ProtocolError's code. */
function codeVerdict(dir: 'toDirectory' | 'fromDirectory', f: Frame, reader = new DirectoryReader()): { read?: unknown; code?: string; message?: string } {
  try {
    return { read: dir === 'toDirectory' ? parseToDirectory(f) : reader.read(f) }
  } catch (err) {
    if (!(err instanceof ProtocolError)) throw err
    return { code: err.code, message: err.message }
  }
}

/** The fields of the frame the schema reads (a delta commit's members come out whole in the reader). */
function schemaRead(ft: FrameType, f: Body): Body {
  const keep = (fields: readonly FrameField[], o: Body, ctx: Body): Body => {
    const out: Body = {}
    for (const x of fields) {
      if (o[x.name] === undefined) continue
      if (x.when !== undefined && evaluate(x.when, { obj: ctx, parent: null }) !== true) continue
      const v = o[x.name]
      out[x.name] = x.type === 'map' ? keep(x.fields!, v as Body, v as Body)
        : x.type === 'list' && x.of!.type === 'map' ? (v as Body[]).map((e) => keep(x.of!.fields!, e, e)) : v
    }
    return out
  }
  return { t: ft.t, ...keep(ft.fields, f, f) }
}

const SEEDS = 4
t.test('frames: random valid frames per schema pass lib/dirproto.ts, read as sent', async (t) => {
  for (const [dir, types] of [['toDirectory', TO_DIRECTORY], ['fromDirectory', FROM_DIRECTORY]] as const) {
    for (const ft of types) {
      for (let seed = 1; seed <= SEEDS; seed++) {
        const r = rng(seed * 100 + ft.t.length)
        for (let i = 0; i < 25; i++) {
          const f = randomFrame(r, ft)
          if (r() < 0.3) f.extra = 'ignored' // fields not of the type are ignored by every reader
          const v = checkFrame(dir, wire(f))
          if (v !== null) return t.fail(`generated ${dir} ${ft.t} is invalid per the schema: ${v}`)
          const got = codeVerdict(dir, wire(f))
          if (got.code) return t.fail(`${dir} ${ft.t}: the schema takes ${JSON.stringify(plain(f)).slice(0, 400)}, lib/dirproto.ts refuses it: ${got.message}`)
          if (JSON.stringify(plain(got.read)) !== JSON.stringify(plain(schemaRead(ft, f)))) {
            return t.same(plain(got.read), plain(schemaRead(ft, f)), `${dir} ${ft.t} read as sent`)
          }
        }
      }
      t.pass(`${dir} ${ft.t}: ${SEEDS * 25} random frames taken and read as sent`)
    }
  }
  // A delta commit: base from the commit read before, members whole after.
  const r = rng(77)
  for (let i = 0; i < 50; i++) {
    const full = randomFrame(r, FROM_DIRECTORY.find((x) => x.t === 'commit')!)
    const reader = new DirectoryReader()
    reader.read(wire(full))
    const next = randomFrame(r, FROM_DIRECTORY.find((x) => x.t === 'commit')!)
    const removed = (full.members as Body[]).filter(() => r() < 0.5).map((m) => m.no as number)
    const added = (next.members as Body[])
    const nos = new Set(added.map((m) => m.no))
    const members = [...(full.members as Body[]).filter((m) => !removed.includes(m.no as number) && !nos.has(m.no)), ...added].sort((a, b) => (a.no as number) - (b.no as number))
    const top = members.length ? (members[members.length - 1]!.no as number) : 0
    const delta: Body = { ...strip(next, 'members'), base: full.viewId, added, removed, nextNo: top + 1, sequencer: members.length ? members[0]!.no : 0 }
    t.equal(checkFrame('fromDirectory', wire(delta)), null, 'the delta is valid per the schema')
    const got = codeVerdict('fromDirectory', wire(delta), reader)
    t.same(plain(got.read), plain({ ...schemaRead(FROM_DIRECTORY.find((x) => x.t === 'commit')!, strip(delta, 'base', 'added', 'removed')), members }), 'the reader makes it whole')
  }
})

/** Values of the wrong type for a field. */
function wrongTypes(f: FrameField): unknown[] {
  const all: Record<FrameField['type'], unknown> = { int: 7, string: 'x', bool: true, bin: Buffer.alloc(f.bytes ?? 32), map: { no: 1 }, list: [] }
  const out = Object.entries(all).filter(([k]) => k !== f.type).map(([, v]) => v)
  out.push(null)
  if (f.type === 'int') out.push(1.5, -0.5, Infinity)
  return out
}

/** Values of the right type out of the field's range or form. */
function outOfRange(r: Rand, f: FrameField): unknown[] {
  switch (f.type) {
    case 'int': return [f.min! - 1, f.max! + 1, 2n ** 60n, -(2n ** 60n)]
    case 'string':
      if (f.enum) return ['other', '', f.enum[0]!.toUpperCase()]
      switch (f.form) {
        case 'name': return ['', 'x'.repeat(65), 'é'.repeat(33)]
        // Never sent anywhere: strings the checks must refuse (only loopback, 10.x and multicast forms in tests).
        case 'unicast': return ['0.0.0.0:5', '224.0.0.1:5', '255.255.255.255:5', '10.1.2.3:0', '10.1.2.3:65536', '10.01.2.3:5', '10.1.2.3', 'nonsense', '10.1.2.256:5', ' 10.1.2.3:5']
        case 'multicast': return ['10.1.1.1:5', '127.0.0.1:5', '255.255.255.255:5', '239.1.1.1:0', '239.1.1.1:070', '239.1.1.1']
        case 'inc': return ['0'.repeat(16), 'ABCDEF0123456789', '0123456789abcde', '0123456789abcdef0', 'g123456789abcdef']
        default: return []
      }
    case 'bin': return [Buffer.alloc(f.bytes! - 1), Buffer.alloc(f.bytes! + 1)]
    case 'list': {
      const out: unknown[] = []
      if (f.maxItems !== undefined && f.maxItems < Infinity) out.push(Array.from({ length: f.maxItems + 1 }, () => randomValue(r, f.of!)))
      if (f.minItems) out.push([])
      return out
    }
    default: return []
  }
}

/** Every field of a frame type with its path, first list entries included (one level of maps and lists down). */
function fieldPaths(fields: readonly FrameField[], frame: Body, path: (string | number)[] = []): Array<{ f: FrameField; path: (string | number)[] }> {
  const out: Array<{ f: FrameField; path: (string | number)[] }> = []
  for (const f of fields) {
    const p = [...path, f.name]
    const v = lookupPath(frame, p)
    if (v === undefined && (f.optional || f.when)) continue
    out.push({ f, path: p })
    if (f.type === 'map') out.push(...fieldPaths(f.fields!, frame, p))
    if (f.type === 'list' && Array.isArray(v) && v.length > 0) {
      out.push({ f: f.of!, path: [...p, 0] })
      if (f.of!.type === 'map') out.push(...fieldPaths(f.of!.fields!, frame, [...p, 0]))
    }
  }
  return out
}

function deletePath(o: Body, path: readonly (string | number)[]): Body {
  const copy = structuredClone(o) as Body
  const at = lookupPath(copy, path.slice(0, -1)) as Record<string | number, unknown>
  delete at[path[path.length - 1]!]
  return copy
}

/** Each rule of each frame broken (applied to a valid frame). */
const FRAME_RULE_CASES: Record<string, (f: Body) => Body> = {
  'toDirectory prepared low': (f) => ({ ...f, low: 10, have: 9 }),
  'toDirectory rejoin commit.members': (f) => setPath(f, ['commit', 'members'], []),
  'toDirectory rejoin commit.group': (f) => setPath(f, ['commit', 'group'], `${f.group as string}x`.slice(-64)),
  'toDirectory rejoin seenViewId': (f) => ({ ...f, seenViewId: (f.commit as Body).viewId as number - 1 }),
  'toDirectory rejoin commit.start': (f) => setPath(f, ['commit', 'start'], (f.commit as Body).cut),
  'toDirectory rejoin commit.members.ascending': (f) => setPath(f, ['commit', 'members'], [...((f.commit as Body).members as Body[]), ((f.commit as Body).members as Body[])[0]]),
  'toDirectory rejoin commit.members.nextNo': (f) => setPath(f, ['commit', 'nextNo'], (((f.commit as Body).members as Body[]).at(-1)!.no as number)),
  'toDirectory rejoin commit.sequencer': (f) => setPath(f, ['commit', 'sequencer'], 0),
  'fromDirectory welcome timeoutMs': (f) => ({ ...f, heartbeatMs: 500, timeoutMs: 500 }),
  'fromDirectory commit start': (f) => ({ ...f, start: f.cut }),
  'fromDirectory commit members.ascending': (f) => ({ ...f, members: [...(f.members as Body[]), (f.members as Body[])[0]] }),
  'fromDirectory commit members.nextNo': (f) => ({ ...f, nextNo: (f.members as Body[]).at(-1)!.no }),
  'fromDirectory commit sequencer': (f) => ({ ...f, sequencer: 0 }),
  'fromDirectory keys keys.1.epoch': (f) => ({ ...f, keys: [{ epoch: 4, key: Buffer.alloc(32) }, { epoch: 6, key: Buffer.alloc(32) }], use: 4 }),
  'fromDirectory keys use': (f) => ({ ...f, keys: [{ epoch: 4, key: Buffer.alloc(32) }], use: 5 }),
}
/** Which case breaks which rule: the rule's field, and for several rules on one field, which. */
function ruleKey(dir: string, ft: FrameType, where: string, rule: { field: string; doc: string }): string {
  const sub = rule.doc.includes('increasing') ? '.ascending' : rule.doc.includes('nextNo') ? '.nextNo' : ''
  return `${dir} ${ft.t} ${where}${rule.field}${sub}`
}

t.test('frames: every field of the wrong type, out of range or missing, and every broken rule, is refused by both', async (t) => {
  const r = rng(1516)
  let cases = 0
  for (const [dir, types] of [['toDirectory', TO_DIRECTORY], ['fromDirectory', FROM_DIRECTORY]] as const) {
    for (const ft of types) {
      let base = randomFrame(r, ft)
      // Lists with an entry, optional fields present: every field gets mutated.
      for (let tries = 0; tries < 50 && fieldPaths(ft.fields, base).length < fieldPaths(ft.fields, base, []).length; tries++) base = randomFrame(r, ft)
      /** `optional`: a field that may be absent, so the schema may take the frame without it. */
      const mutations: Array<{ what: string; frame: Body; optional?: true }> = []
      for (const { f, path } of fieldPaths(ft.fields, base)) {
        const at = path.join('.')
        if (typeof path[path.length - 1] !== 'number') mutations.push({ what: `${at} missing`, frame: deletePath(base, path), ...(f.optional ? { optional: true as const } : {}) })
        for (const v of wrongTypes(f)) mutations.push({ what: `${at} = ${String(v)}`, frame: setPath(base, path, v) })
        for (const v of outOfRange(r, f)) mutations.push({ what: `${at} = ${String(v).slice(0, 40)}`, frame: setPath(base, path, v) })
      }
      const rules = [...(ft.rules ?? []).map((x) => ({ ...x, where: '' })), ...ft.fields.filter((x) => x.type === 'map').flatMap((m) => (m.rules ?? []).map((x) => ({ ...x, where: `${m.name}.` })))]
      for (const rule of rules) {
        const key = ruleKey(dir, ft, rule.where, rule)
        const breakIt = FRAME_RULE_CASES[key]
        if (!breakIt) {
          t.fail(`no test breaks ${key} ("${rule.doc}")`)
          continue
        }
        mutations.push({ what: `breaking "${rule.doc}"`, frame: breakIt(base) })
      }
      for (const m of mutations) {
        cases++
        const frame = wire(m.frame)
        const schema = frameViolation(dir, frame)
        if (schema === null && !m.optional) {
          t.fail(`${dir} ${ft.t} ${m.what}: the schema takes it`)
          continue
        }
        const code = codeVerdict(dir, frame)
        if ((code.code === undefined) !== (schema === null)) {
          t.fail(`${dir} ${ft.t} ${m.what}: lib/dirproto.ts ${code.code ? `refuses it (${code.message})` : 'takes it'}, the schema ${schema ? `refuses it (${schema.message})` : 'takes it'}`)
          continue
        }
        // To the directory, the error code says which: a wrong type is EFRAME, a value out of range EBAD_REQUEST.
        if (schema && dir === 'toDirectory') {
          const want = schema.kind === 'type' ? ErrorCodes.FRAME : ErrorCodes.BAD_REQUEST
          if (code.code !== want) t.fail(`${dir} ${ft.t} ${m.what}: lib/dirproto.ts answers ${code.code} (${code.message}), the schema says ${want} (${schema.message})`)
        }
      }
    }
  }
  t.ok(cases > 500, `${cases} mutated frames agreed`)
})

// ——— What the code itself produces ———

t.test('every frame and datagram the simulator\'s directory and members produce is valid per the schema', async (t) => {
  const seen = { toDirectory: new Set<string>(), fromDirectory: new Set<string>(), datagrams: new Set<string>() }
  let bad = 0
  const checkOne = (dir: 'toDirectory' | 'fromDirectory', f: Frame) => {
    seen[dir].add(f.t)
    const v = checkFrame(dir, wire(f))
    if (v !== null && bad++ < 10) t.fail(`${dir} ${f.t}: ${v}: ${JSON.stringify(plain(f)).slice(0, 300)}`)
  }
  const watch = (sim: Sim) => {
    const toDirectory = sim.toDirectory.bind(sim)
    sim.toDirectory = (m, f) => {
      checkOne('toDirectory', f)
      toDirectory(m, f)
    }
    sim.onFrame = (_m, f) => checkOne('fromDirectory', f)
    const transmit = sim.transmit.bind(sim)
    sim.transmit = (from, buf, to) => {
      if (sim.key === null) {
        const d = decodeDatagram(buf)
        if (!d.ok && bad++ < 10) t.fail(`a member sent a datagram the schema refuses: ${d.reason}`)
        if (d.ok) seen.datagrams.add(d.type)
      }
      transmit(from, buf, to)
    }
  }
  for (const seed of [1, 2]) {
    const sim = new Sim(seed, { drop: 0.1, dup: 0.02, minDelay: 0.05, maxDelay: 1 }, 'g', 10, { transport: 'auto' })
    watch(sim)
    const a = sim.joinReplica('a') // holds the state: the joiner below pulls it (STATEREQ, STATE, ready)
    await sim.runUntilAsync(() => a.joined, 5000)
    const ms = [a, sim.join('b'), sim.join('c')]
    await sim.runUntilAsync(() => ms.every((m) => m.joined), 5000)
    // c misses a third of what goes to the group for a while: it asks for repairs (NACK).
    sim.filter = (_from, to, buf) => to.id !== 'c' || datagramKind(buf) > 2 || sim.random() > 0.3
    for (const m of ms) m.send(60)
    await sim.runAsync(sim.now + 100)
    sim.filter = null
    const j = sim.joinReplica('j', { pad: 5000 })
    await sim.runAsync(sim.now + 300)
    ms[2]!.noMulticastIn = true // deaf: the group moves to unicast
    await sim.runAsync(sim.now + 3000)
    sim.restartDirectory(200) // rejoins
    await sim.runAsync(sim.now + 3000)
    ms[1]!.engine.leave()
    sim.crash('a')
    j.send(10)
    t.ok(await sim.runUntilAsync(() => sim.settled(), 30_000), `seed ${seed}: settles`)
  }
  {
    const key = randomBytes(32)
    const sim = new Sim(3, { drop: 0.02, dup: 0, minDelay: 0.05, maxDelay: 0.5 }, 'g', 10, { key })
    sim.key = key
    watch(sim)
    sim.startGroup(3)
    sim.run(sim.now + 200)
    sim.dir.keys!.rotate(-1, randomBytes(32))
    sim.run(sim.now + 8000)
  }
  // The directory's answers no member triggers in the simulator: status, error, rotated, expelled.
  const h = harness()
  h.three()
  h.core.opened(9)
  h.core.frame(9, { t: 'ls' })
  h.advance(10_000) // silent members are expelled
  for (const { f } of h.sent) checkOne('fromDirectory', f)
  const k = harness({ key: randomBytes(32) } as never)
  k.join(1, 'a')
  k.core.frame(1, { t: 'keyed', seq: 1 })
  k.core.opened(5)
  k.core.frame(5, { t: 'rotate', key: randomBytes(32) })
  for (let i = 0; i < 10; i++) {
    for (const f of k.sent.filter((x) => x.conn === 1 && x.f.t === 'keys')) k.core.frame(1, { t: 'keyed', seq: f.f.seq as number })
    k.core.frame(1, { t: 'ping' })
    k.advance(1000)
  }
  for (const { f } of k.sent) checkOne('fromDirectory', f)
  t.equal(bad, 0, 'nothing refused')
  for (const x of ['join', 'prepared', 'installed', 'leave', 'ping', 'rejoin', 'ready', 'deaf', 'keyed']) t.ok(seen.toDirectory.has(x), `members sent ${x}`)
  for (const x of ['welcome', 'prepare', 'commit', 'released', 'pong', 'status', 'keys', 'rotated', 'expelled']) t.ok(seen.fromDirectory.has(x), `the directory sent ${x}`)
  for (const d of DATAGRAMS) t.ok(seen.datagrams.has(d.name), `members sent ${d.name}`)
})

t.test('FrameSplitter splits what lib/frame.ts encodes, however it is cut', async (t) => {
  const frames = [{ t: 'ping' }, { t: 'prepare', group: 'g', viewId: 3 }, { t: 'keys', seq: 1, keys: [{ epoch: 0, key: Buffer.alloc(32, 7) }], use: 0 }]
  const bytes = Buffer.concat(frames.map((f) => encodeFrame(f)))
  const r = rng(3)
  for (let i = 0; i < 20; i++) {
    const s = new FrameSplitter()
    const got: object[] = []
    for (let at = 0; at < bytes.length;) {
      const n = 1 + int(r, 9)
      got.push(...s.push(bytes.subarray(at, at + n)))
      at += n
    }
    t.same(plain(got), plain(frames))
  }
  t.throws(() => new FrameSplitter().push(Buffer.from([0, 0, 0, 0])), 'a length of 0')
})


t.test('the constants the code keeps are the schema\'s', async (t) => {
  const wire = await import('../lib/wire.js')
  const frame = await import('../lib/frame.js')
  const dirproto = await import('../lib/dirproto.js')
  const seal = await import('../lib/seal.js')
  const schema = await import('../lib/schema.js')
  t.equal(HEADER.reduce((n, f) => n + { u8: 1, u16: 2, u24: 3, u32: 4, u48: 6, u64: 8 }[f.type], 0), wire.HEADER_SIZE, 'header size')
  t.equal(HEADER.find((f) => f.name === 'magic')!.fixed, wire.MAGIC)
  t.equal(HEADER.find((f) => f.name === 'version')!.fixed, wire.VERSION)
  t.same(Object.fromEntries(DATAGRAMS.map((d) => [d.name, d.type])), wire.Kind, 'type numbers')
  t.equal(schema.MAX_U48, wire.MAX_U48)
  t.equal(schema.STATE_WINDOW, wire.STATE_WINDOW)
  t.equal(schema.SCHEMA.constants.maxDatagram, wire.MAX_DATAGRAM)
  t.equal(schema.MAX_GROUP_MEMBERS, frame.MAX_GROUP_MEMBERS)
  t.equal(schema.FRAME_LIMITS.toDirectory, frame.MAX_FRAME_TO_DIRECTORY)
  t.equal(schema.FRAME_LIMITS.fromDirectory, frame.MAX_FRAME_FROM_DIRECTORY)
  t.same(schema.MEMBER_STATES, dirproto.MEMBER_STATES)
  t.same(schema.GROUP_TRANSPORTS, dirproto.GROUP_TRANSPORTS)
  t.same(schema.GROUP_STATES, dirproto.GROUP_STATES)
  t.equal(FROM_DIRECTORY.find((x) => x.t === 'welcome')!.fields.find((x) => x.name === 'timeoutMs')!.max, dirproto.MAX_TIMEOUT_MS)
  t.equal(TO_DIRECTORY.find((x) => x.t === 'rotate')!.fields[0]!.bytes, seal.KEY_BYTES)
  const parts = schema.SEALED.parts
  t.equal(parts.find((p) => p.name === 'nonce')!.bytes as number + (parts.find((p) => p.name === 'tag')!.bytes as number), seal.SEAL_OVERHEAD)
  t.equal(schema.SEALED.minLength, wire.HEADER_SIZE + seal.SEAL_OVERHEAD)
})

t.test('a datagram lib/seal.ts seals opens with nothing but the schema\'s sealed layout', async (t) => {
  const { SealedTransport, keyId, linkPsk } = await import('../lib/seal.js')
  const { SEALED } = await import('../lib/schema.js')
  const { createDecipheriv, hkdfSync } = await import('node:crypto')
  const key = randomBytes(32)
  const hkdf = (salt: Buffer, info: string, n: number) => Buffer.from(hkdfSync('sha256', key, salt, Buffer.from(info), n))
  t.equal(hkdf(Buffer.alloc(0), SEALED.info.keyId, 8).toString('hex'), keyId(key), 'key id')
  t.same(hkdf(Buffer.alloc(0), SEALED.info.linkPsk, 32), linkPsk(key), 'directory link key')
  const plain = encodeAck(H, 9, 8, 7)
  for (const [epoch, to] of [[0, null], [1, '127.0.0.1:4000']] as const) {
    let out: Buffer | null = null
    const inner = { toGroup: (b: Buffer) => void (out = b), toMember: (_a: string, b: Buffer) => void (out = b), onDatagram: () => {} }
    const s = new SealedTransport(inner as never, key, epoch)
    if (to) s.toMember(to, plain)
    else s.toGroup(plain)
    const sealed = out! as Buffer
    const at = (name: string) => SEALED.parts.slice(0, SEALED.parts.findIndex((p) => p.name === name)).reduce((n, p) => n + (p.bytes === 'rest' ? sealed.length - 24 - 28 : p.bytes), 0)
    const header = sealed.subarray(0, 24)
    const flags = header[20]!
    const bit = (name: string) => 1 << SEALED.flags.find((f) => f.name === name)!.bit
    t.ok(flags & bit('AUTH'), 'AUTH set')
    t.equal((flags & bit('KEY_PHASE')) !== 0, epoch % 2 === 1, 'KEY_PHASE = epoch mod 2')
    t.equal((flags & bit('TO_MEMBER')) !== 0, to !== null, 'TO_MEMBER for one member')
    t.same(header.subarray(0, 20), plain.subarray(0, 20), 'the rest of the header as sent')
    const d = createDecipheriv('aes-256-gcm', hkdf(Buffer.from(header.subarray(4, 12)), SEALED.info.datagramKey, 32), sealed.subarray(at('nonce'), at('nonce') + 12))
    d.setAAD(to ? Buffer.concat([header, Buffer.from(to)]) : header)
    d.setAuthTag(sealed.subarray(at('tag')))
    const body = Buffer.concat([d.update(sealed.subarray(24, at('nonce'))), d.final()])
    t.same(body, plain.subarray(24), 'the body, opened')
  }
})
