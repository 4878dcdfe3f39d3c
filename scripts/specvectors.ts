/**
 * docs/PROTOCOL.md §9, test vectors: one example of every datagram type, two sealed datagrams and the main directory
 * frames, as bytes. The bytes come from the code's own encoders (lib/wire.ts, lib/frame.ts; the sealed ones from
 * node:crypto exactly as §2.7 says), the byte layout per field from lib/schema.ts. scripts/schemadoc.ts puts the block
 * in PROTOCOL.md; test/vectors.ts decodes every printed vector with the code and with the schema-only codec, and
 * opens the sealed ones with lib/seal.ts, so the examples cannot drift from what members send.
 */
import { createCipheriv, hkdfSync } from 'node:crypto'
import { Packr } from 'msgpackr'
import { DATAGRAMS, HEADER, SEALED, WIDTH, type DgField, type IntField } from '../lib/schema.js'
import {
  DataPacker, encodeAck, encodeNack, encodeOrder, encodeState, encodeStateNone, encodeStateReq, parseIncarnation,
  MAX_DATAGRAM, type Header,
} from '../lib/wire.js'
import { encodeFrame, MAX_FRAME_FROM_DIRECTORY, type Frame } from '../lib/frame.js'

/** The incarnation every vector uses (as in §2.7's key derivation vectors). */
export const VECTOR_INC = '0102030405060708'
const inc = parseIncarnation(VECTOR_INC)!
const h = (viewId: number, sender: number): Header => ({ inc, viewId, sender })

/** A datagram vector: its values as the schema names them (count and length fields derived), and its bytes. */
export interface DatagramVector {
  title: string
  type: (typeof DATAGRAMS)[number]['name']
  header: { inc: string; viewId: number; sender: number; flags: number }
  body: Record<string, unknown>
  bytes: Buffer
}

const ascii = (s: string): Buffer => Buffer.from(s, 'ascii')

function dgram(title: string, type: DatagramVector['type'], viewId: number, sender: number, body: Record<string, unknown>, bytes: Buffer): DatagramVector {
  return { title, type, header: { inc: VECTOR_INC, viewId, sender, flags: 0 }, body, bytes }
}

function data(): Buffer {
  const p = new DataPacker(h(7, 2), MAX_DATAGRAM)
  p.add(300, true, false, ascii('hi'))
  p.add(301, true, true, ascii('frag'))
  return p.finish()
}

/** Every datagram vector, in the order §9 prints them. */
export function datagramVectors(): DatagramVector[] {
  return [
    dgram('DATA: a whole message (msgId 300, FIRST) and the first fragment of another (msgId 301, FIRST and MORE)', 'DATA', 7, 2, {
      entries: [{ msgId: 300, flags: 2, payload: ascii('hi') }, { msgId: 301, flags: 3, payload: ascii('frag') }],
    }, data()),
    dgram('ORDER from the sequencer, member 1, in view 7 (the whole `commit` of §9.3: the view itself takes slot 70000): two runs, slots 70001–70002 to msgIds 300–301 of member 2, slot 70003 to msgId 9 of member 3', 'ORDER', 7, 1, {
      firstSlot: 70001, stable: 69990, runs: [{ sender: 2, firstMsgId: 300, count: 2 }, { sender: 3, firstMsgId: 9, count: 1 }],
    }, encodeOrder(h(7, 1), 70001, 69990, [{ sender: 2, firstMsgId: 300, count: 2 }, { sender: 3, firstMsgId: 9, count: 1 }])),
    dgram('ORDER heartbeat: no runs; slots below 70004 exist, 70002 is stable', 'ORDER', 7, 1, { firstSlot: 70004, stable: 70002, runs: [] },
      encodeOrder(h(7, 1), 70004, 70002, [])),
    dgram('ACK from member 3: it holds up to 70003, lets 70002 become stable (its reader is behind), heard of 70000 as stable', 'ACK', 7, 3,
      { have: 70003, acked: 70002, stable: 70000 }, encodeAck(h(7, 3), 70003, 70002, 70000)),
    dgram('NACK from member 3: one slot item (2 slots from 69998), one data item (2 messages of member 2 from msgId 298)', 'NACK', 7, 3, {
      items: [{ kind: 1, firstSlot: 69998, n: 2 }, { kind: 2, sender: 2, firstMsgId: 298, n: 2 }],
    }, encodeNack(h(7, 3), [{ firstSlot: 69998, n: 2 }], [{ sender: 2, firstMsgId: 298, n: 2 }])),
    dgram('STATEREQ from joiner 4: the first window of the state of view 7', 'STATEREQ', 7, 4, { acked: 0, from: 0, length: 4_194_304 },
      encodeStateReq(h(7, 4), 0, 0, 4_194_304)),
    dgram('STATE from donor 2: the whole state, 5 bytes, LAST', 'STATE', 7, 2, { offset: 0, flags: 1, bytes: ascii('state') },
      encodeState(h(7, 2), 0, true, [ascii('state')])),
    dgram('STATE NONE from member 2: no snapshot here', 'STATE', 7, 2, { offset: 0, flags: 2, bytes: Buffer.alloc(0) }, encodeStateNone(h(7, 2))),
  ]
}

// ——— Laying bytes out per field, from the schema ———

interface Line {
  hex: string
  name: string
  value: string
}

const TYPE_NAMES = new Map(DATAGRAMS.map((d) => [d.type, d.name]))

function show(b: Buffer): string {
  if (b.length === 0) return '(none)'
  return /^[\x20-\x7e]*$/.test(b.toString('latin1')) ? JSON.stringify(b.toString('latin1')) : `${b.length} bytes`
}

function flagNames(f: IntField, v: number): string {
  const names = (f.flags ?? []).filter((b) => Math.floor(v / 2 ** b.bit) % 2 === 1).map((b) => b.name)
  return names.length ? ` (${names.join(' | ')})` : ''
}

/** The datagram's bytes, one line per field, as the schema lays them out. Throws if they do not fill it exactly. */
export function layout(buf: Buffer): Line[] {
  const lines: Line[] = []
  let o = 0
  const take = (n: number): Buffer => {
    if (o + n > buf.length) throw new Error('vector shorter than its layout')
    return buf.subarray((o += n) - n, o)
  }
  const ints = new Map<string, number>()
  const int = (f: IntField, path: string): number => {
    const b = take(WIDTH[f.type])
    const v = f.type === 'u64' ? NaN : b.readUIntBE(0, b.length)
    const value = f.type === 'u64' ? b.toString('hex') : f.fixed !== undefined && f.fixed > 0xff ? `0x${v.toString(16)}` : `${v}${path === 'header.type' ? ` (${TYPE_NAMES.get(v)})` : flagNames(f, v)}`
    lines.push({ hex: b.toString('hex'), name: path, value })
    return v
  }
  const fields = (fs: readonly DgField[], prefix: string): void => {
    for (const f of fs) {
      const path = prefix + f.name
      if (f.kind === 'int') ints.set(f.name, int(f, path))
      else if (f.kind === 'bytes') {
        const b = take(f.length === undefined ? buf.length - o : ints.get(f.length)!)
        lines.push({ hex: b.toString('hex'), name: path, value: show(b) })
      } else {
        const n = ints.get(f.count)!
        for (let i = 0; i < n; i++) {
          const p = `${path}[${i}].`
          if (f.tag) {
            const tag = int(f.tag, `${p}${f.tag.name}`)
            fields(f.variants!.find((v) => v.tag === tag)!.fields, p)
          } else fields(f.fields!, p)
        }
      }
    }
  }
  fields(HEADER, 'header.') // named apart from body fields of the same name (STATE's flags)
  const d = DATAGRAMS.find((x) => x.type === buf[3])!
  fields(d.body, '')
  if (o !== buf.length) throw new Error('vector longer than its layout')
  return lines
}

function block(lines: Line[]): string {
  const w = Math.min(34, Math.max(...lines.map((l) => l.hex.length)))
  const nw = Math.max(...lines.map((l) => l.name.length))
  return ['```', ...lines.map((l) => `${l.hex.padEnd(w)}  ${l.name.padEnd(nw)}  ${l.value}`.trimEnd()), '```'].join('\n')
}

const whole = (b: Buffer): string => ['```', b.toString('hex'), '```'].join('\n')

// ——— Sealed (§2.7) ———

/** The group key of §2.7's derivation vectors, and the fixed nonce parts the sealed vectors use. */
export const VECTOR_GROUP_KEY = Buffer.from('00112233445566778899aabbccddeeff'.repeat(2), 'hex')

export interface SealedVector {
  title: string
  /** The plain datagram (a vector above). */
  plain: Buffer
  /** The addressee's address for TO_MEMBER, else undefined (a send to the group). */
  to?: string
  epoch: number
  prefix: Buffer
  counter: number
  datagramKey: Buffer
  nonce: Buffer
  aad: Buffer
  ciphertext: Buffer
  tag: Buffer
  sealed: Buffer
}

/** Seals `plain` exactly as §2.7 says, with node:crypto alone. */
export function sealVector(title: string, plain: Buffer, epoch: number, prefix: Buffer, counter: number, to?: string): SealedVector {
  const header = Buffer.from(plain.subarray(0, 24))
  header[20] = 1 | ((epoch % 2) << 1) | (to === undefined ? 0 : 4)
  const datagramKey = Buffer.from(hkdfSync('sha256', VECTOR_GROUP_KEY, header.subarray(4, 12), SEALED.info.datagramKey, 32))
  const nonce = Buffer.alloc(12)
  prefix.copy(nonce, 0)
  nonce.writeUInt32BE(counter, 8)
  const aad = to === undefined ? header : Buffer.concat([header, Buffer.from(to, 'ascii')])
  const c = createCipheriv('aes-256-gcm', datagramKey, nonce)
  c.setAAD(aad)
  const ciphertext = Buffer.concat([c.update(plain.subarray(24)), c.final()])
  const tag = c.getAuthTag()
  return { title, plain, to, epoch, prefix, counter, datagramKey, nonce, aad, ciphertext, tag, sealed: Buffer.concat([header, ciphertext, nonce, tag]) }
}

export function sealedVectors(): SealedVector[] {
  const [dataV, , , , nackV] = datagramVectors()
  return [
    sealVector('the DATA above, sent to the group by member 2 (its first datagram: counter 0)', dataV!.bytes, 0, Buffer.from('a0a1a2a3a4a5a6a7', 'hex'), 0),
    sealVector("the NACK above, sent by member 3 to member 2 at 10.0.0.2:40002 (TO_MEMBER; member 3's 6th datagram: counter 5)",
      nackV!.bytes, 0, Buffer.from('b0b1b2b3b4b5b6b7', 'hex'), 5, '10.0.0.2:40002'),
  ]
}

function renderSealed(v: SealedVector): string {
  const lines: Line[] = [
    { hex: VECTOR_GROUP_KEY.toString('hex'), name: 'group key', value: `epoch ${v.epoch}` },
    { hex: v.datagramKey.toString('hex'), name: 'datagram key', value: 'HKDF-SHA256(group key, salt = inc, "seqcast datagram v3")' },
    { hex: v.nonce.toString('hex'), name: 'nonce', value: `prefix ${v.prefix.toString('hex')}, counter ${v.counter}` },
    { hex: v.aad.subarray(0, 24).toString('hex'), name: 'associated data: header', value: `flags ${v.aad[20]} (${flagText(v.aad[20]!)})` },
    ...(v.to === undefined ? [] : [{ hex: v.aad.subarray(24).toString('hex'), name: 'associated data: address', value: JSON.stringify(v.to) }]),
    { hex: v.plain.subarray(24).toString('hex'), name: 'plain body', value: '' },
    { hex: v.ciphertext.toString('hex'), name: 'ciphertext', value: '' },
    { hex: v.tag.toString('hex'), name: 'tag', value: '' },
  ]
  const nw = Math.max(...lines.map((l) => l.name.length))
  return [
    `**Sealed: ${v.title}.**`, '',
    '```', ...lines.map((l) => `${l.name.padEnd(nw)}  ${l.hex}${l.value ? `  ${l.value}` : ''}`), '```', '',
    'On the wire (header | ciphertext | nonce | tag):', '', whole(v.sealed),
  ].join('\n')
}

function flagText(flags: number): string {
  return SEALED.flags.filter((b) => (flags >> b.bit) & 1).map((b) => b.name).join(' | ')
}

// ——— Frames (§3) ———

// lib/frame.ts's encoding of a single value, to cut a frame's bytes per field (checked to add up to the frame).
const packr = new Packr({ useRecords: false, mapsAsObjects: true })

export interface FrameVector {
  title: string
  direction: 'toDirectory' | 'fromDirectory'
  frame: Frame
  bytes: Buffer
  /** What the member reads (DirectoryReader), when it differs from `frame`: a delta commit read as a whole one. */
  reads?: Frame
}

const MEMBERS = [
  { no: 1, id: 'a', addr: '10.0.0.1:40001' },
  { no: 2, id: 'b', addr: '10.0.0.2:40002' },
  { no: 3, id: 'c', addr: '10.0.0.3:40003', state: 'holds' },
]
const COMMON = { group: 'lobby', inc: VECTOR_INC, mcast: '239.255.1.1:5000', transport: 'multicast' }

export function frameVectors(): FrameVector[] {
  const to = (title: string, frame: Frame): FrameVector => ({ title, direction: 'toDirectory', frame, bytes: encodeFrame(frame) })
  const from = (title: string, frame: Frame, reads?: Frame): FrameVector =>
    ({ title, direction: 'fromDirectory', frame, bytes: encodeFrame(frame, MAX_FRAME_FROM_DIRECTORY), ...(reads ? { reads } : {}) })
  const whole = { t: 'commit', ...COMMON, viewId: 7, sequencer: 1, cut: 69_999, start: 70_000, holder: 1, sources: [{ no: 1, low: 69_950, have: 69_999 }], nextNo: 4, members: MEMBERS }
  const delta = {
    t: 'commit', ...COMMON, viewId: 8, sequencer: 1, cut: 70_010, start: 70_011, holder: 1,
    sources: [{ no: 1, low: 70_000, have: 70_010 }, { no: 3, low: 69_990, have: 70_010 }], nextNo: 5,
    base: 7, added: [{ no: 4, id: 'd', addr: '10.0.0.4:40004', state: 'needs' }], removed: [2],
  }
  const { base: _b, added: _a, removed: _r, ...deltaFields } = delta
  return [
    to('`join`: member "c" asks to join group "lobby", with state hooks', { t: 'join', proto: 1, group: 'lobby', member: 'c', addr: '10.0.0.3:40003', state: true }),
    from('`welcome`: it is member 3; ping every 1 000 ms, expelled after 5 000 ms of silence', { t: 'welcome', no: 3, heartbeatMs: 1000, timeoutMs: 5000 }),
    to('`prepared` (numbers of its own, to show a large integer): for the prepare of view 9, slots (4294967296, 4294967301] held', {
      t: 'prepared', group: 'lobby', viewId: 9, have: 2 ** 32 + 5, low: 2 ** 32,
    }),
    from('`commit`, whole: view 7 of members 1, 2, 3; the old view ended at slot 69999, this one takes 70000', whole),
    from('`commit`, delta from view 7 (the commit above, the last sent on this connection): view 8 without member 2, with member 4', delta,
      { ...deltaFields, members: [MEMBERS[0]!, MEMBERS[2]!, { no: 4, id: 'd', addr: '10.0.0.4:40004', state: 'needs' }] }),
  ]
}

/** The `prepared` vector with `have` written as a MessagePack uint 64 (0xcf) instead of float 64: the same frame. */
export function uint64Prepared(): Buffer {
  const v = frameVectors().find((x) => x.frame.t === 'prepared')!
  const at = v.bytes.indexOf(Buffer.from('a468617665cb', 'hex')) + 5 // "have" then its float 64 marker
  const out = Buffer.from(v.bytes)
  out[at] = 0xcf
  out.writeBigUInt64BE(BigInt(v.frame.have as number), at + 1)
  return out
}

function frameLines(v: FrameVector): string {
  const body = v.bytes.subarray(4)
  const keys = Object.keys(v.frame)
  const parts = keys.map((k) => Buffer.concat([packr.pack(k), packr.pack(v.frame[k])]))
  const head = body.subarray(0, body.length - parts.reduce((n, p) => n + p.length, 0))
  if (!Buffer.concat([head, ...parts]).equals(body)) throw new Error(`frame ${v.frame.t}: its fields do not add up to its encoding`)
  const lines: Line[] = [
    { hex: v.bytes.subarray(0, 4).toString('hex'), name: 'length', value: String(body.length) },
    { hex: head.toString('hex'), name: 'map', value: `${keys.length} keys` },
  ]
  keys.forEach((k, i) => {
    const val = v.frame[k]
    if (Array.isArray(val) && val.length > 0) {
      const items = val.map((x) => packr.pack(x))
      const key = packr.pack(k)
      const arrHead = parts[i]!.subarray(key.length, parts[i]!.length - items.reduce((n, p) => n + p.length, 0))
      lines.push({ hex: Buffer.concat([key, arrHead]).toString('hex'), name: k, value: `array of ${val.length}` })
      items.forEach((it, j) => lines.push({ hex: it.toString('hex'), name: `${k}[${j}]`, value: JSON.stringify(val[j]) }))
    } else lines.push({ hex: parts[i]!.toString('hex'), name: k, value: JSON.stringify(val) })
  })
  const nw = Math.max(...lines.map((l) => l.name.length))
  return ['```', ...lines.map((l) => `${l.name.padEnd(nw)}  ${l.hex}  ${l.value}`), '```'].join('\n')
}

// ——— The block ———

/** §9's text between its markers. */
export function renderVectors(): string {
  const out: string[] = [
    `Every example uses the incarnation \`${VECTOR_INC}\`. They are what seqcast's encoders (lib/wire.ts, lib/frame.ts) ` +
    'write, laid out one field per line (bytes in hex, the field, its value); test/vectors.ts decodes each with seqcast and with a ' +
    'decoder written from lib/schema.ts alone.',
    '',
    '### 9.1 Datagrams',
  ]
  for (const v of datagramVectors()) out.push('', `**${v.title}.**`, '', block(layout(v.bytes)), '', 'Whole:', '', whole(v.bytes))
  out.push('', '### 9.2 Sealed datagrams', '',
    `Group key \`${VECTOR_GROUP_KEY.toString('hex')}\` (§2.7's), epoch 0 (KEY_PHASE clear). The associated data is the header as sent ` +
    '(AUTH set; TO_MEMBER too when sent to one member, then followed by the addressee\'s `ip:port` in ASCII); the body is encrypted ' +
    'with AES-256-GCM under the datagram key and the nonce, and the tag is 16 bytes.')
  for (const v of sealedVectors()) out.push('', renderSealed(v))
  out.push('', '### 9.3 Frames', '',
    'Each frame: the u32 big-endian length, then one MessagePack map, as lib/frame.ts (msgpackr) writes it: a map 16 header ' +
    '(`de` and a u16 count) even for a few keys, strings as fixstr or str 8, integers in the smallest format below 2³², float 64 ' +
    'from 2³² on. A reader accepts **any** valid MessagePack encoding of the same map (§3, "Integers"): keys in any order, a ' +
    'fixmap, any integer width; only the values count. Each line: the key and its value\'s bytes (an array\'s header on the key\'s line, ' +
    'one line per entry).')
  for (const v of frameVectors()) {
    out.push('', `**${v.title}.**`, '', frameLines(v), '', 'Whole:', '', whole(v.bytes))
    if (v.reads) out.push('', `A member that read the whole commit above reads it as view 8 with \`members\` ${JSON.stringify(v.reads.members)}.`)
  }
  out.push('', '**A 64-bit integer a reader must accept.** The `prepared` above with `have` written as uint 64 ' +
    '(`cf 0000000100000005`) instead of float 64 (`cb 41f0000000500000`) is the same frame:', '', whole(uint64Prepared()))
  return out.join('\n')
}
