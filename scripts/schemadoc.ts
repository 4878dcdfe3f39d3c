/**
 * The spec's field tables, rendered from lib/schema.ts: docs/PROTOCOL.md holds each between
 * `<!-- schema:NAME -->` and `<!-- /schema -->`, `npm run spec:gen` rewrites them, and test/schemadoc.ts fails when
 * one is stale. So the tables a stranger implements from are the schema the code is checked against.
 */
import {
  DATAGRAMS, FORMS, FROM_DIRECTORY, HEADER, MAX_U32, MAX_U48, SCHEMA, SHAPES, TO_DIRECTORY, WIDTH,
  type DgField, type FrameField, type FrameType, type IntField, type Rule, type Sentinel, type UInt,
} from '../lib/schema.js'
import { renderVectors } from './specvectors.js'

const TYPE_MAX: Record<UInt, number> = { u8: 0xff, u16: 0xffff, u24: 0xffffff, u32: MAX_U32, u48: MAX_U48, u64: Infinity }

/** 2⁴⁸−1 and friends as the spec writes them; other large numbers grouped by thousands. */
export function num(n: number): string {
  const named: Record<number, string> = { [MAX_U48]: '2⁴⁸−1', [MAX_U48 + 1]: '2⁴⁸', [MAX_U32]: '2³²−1', [MAX_U32 + 1]: '2³²' }
  if (named[n]) return named[n]!
  return n >= 10_000 ? n.toLocaleString('en-US').replace(/,/g, ' ') : String(n)
}

const cell = (s: string): string => s.replace(/\|/g, '\\|').replace(/\n/g, ' ')
const row = (cells: string[]): string => `| ${cells.map(cell).join(' | ')} |`
const table = (head: string[], rows: string[][]): string => [row(head), row(head.map(() => '---')), ...rows.map(row)].join('\n')

function sentinels(ss: readonly Sentinel[] | undefined): string[] {
  return (ss ?? []).map((s) => `${typeof s.value === 'string' ? JSON.stringify(s.value) : num(s.value)}: ${s.doc}${s.malformed ? ' (malformed)' : ''}`)
}

/** What a datagram integer may hold. */
function intValues(f: IntField): string {
  const parts: string[] = []
  if (f.fixed !== undefined) parts.push(`= ${f.fixed > 0xff ? `0x${f.fixed.toString(16)}` : f.fixed}`)
  else if (f.countOf) parts.push(`entries of \`${f.countOf}\``)
  else if (f.lengthOf) parts.push(`bytes of \`${f.lengthOf}\``)
  else if (f.flags) parts.push(...f.flags.map((b) => `bit ${b.bit} ${b.name}: ${b.doc}`), 'other bits: malformed')
  else if (f.type === 'u64') parts.push('any')
  else parts.push(`${num(f.min ?? 0)} … ${num(f.max ?? TYPE_MAX[f.type])}`)
  parts.push(...sentinels(f.sentinels))
  return parts.join('; ')
}

const ruleText = (rules: readonly Rule[] | undefined, what: string): string =>
  rules?.length ? `\n\n${what}: ${rules.map((r) => r.doc).join('; ')}.` : ''

/** The 24-byte header: offset, size, field, values, meaning. */
export function renderHeader(): string {
  let at = 0
  const rows = HEADER.map((f) => {
    const r = [String(at), String(WIDTH[f.type]), `\`${f.name}\``, intValues(f), f.doc]
    at += WIDTH[f.type]
    return r
  })
  return table(['offset', 'size', 'field', 'values', 'meaning'], rows)
}

/** Rows for datagram fields; `note` goes before each meaning (a tagged entry's kind). */
function dgRows(fields: readonly DgField[], prefix: string, note = ''): string[][] {
  const rows: string[][] = []
  for (const f of fields) {
    const name = `\`${prefix}${f.name}\``
    if (f.kind === 'int') rows.push([name, f.type, intValues(f), note + f.doc])
    else if (f.kind === 'bytes') rows.push([name, f.length ? `\`${f.length}\` bytes` : 'bytes to the end', '', note + f.doc])
    else {
      const rules = f.rules?.length ? `; malformed unless ${f.rules.map((r) => r.doc).join('; ')}` : ''
      rows.push([`\`${prefix}${f.name}[]\``, `\`${f.count}\` ×`, '', `${f.doc}${f.tag ? `: a \`${f.tag.name}\`, then the fields of that kind` : ''}${rules}`])
      if (f.tag) {
        rows.push([`\`${prefix}${f.name}[].${f.tag.name}\``, f.tag.type, [...f.variants!.map((v) => `${v.tag}: ${v.name}, "${v.doc}"`), 'other: malformed'].join('; '), f.tag.doc])
        for (const v of f.variants!) rows.push(...dgRows(v.fields, `${prefix}${f.name}[].`, `${f.tag.name} ${v.tag}: `))
      } else {
        rows.push(...dgRows(f.fields!, `${prefix}${f.name}[].`))
      }
    }
  }
  return rows
}

/** One datagram type's body, in order, after the header. */
export function renderDatagram(name: string): string {
  const d = DATAGRAMS.find((x) => x.name === name)
  if (!d) throw new Error(`no datagram ${name}`)
  const rows: string[][] = [
    ['header `viewId`', 'u32', '', d.viewId],
    ['header `sender`', 'u32', '', d.sender],
    ...dgRows(d.body, ''),
  ]
  return table(['field', 'type', 'values', 'meaning'], rows) + ruleText(d.rules, `Malformed unless`)
}

// ——— Frames ———

function frameType(f: FrameField): string {
  switch (f.type) {
    case 'int': return 'int'
    case 'string': return 'str'
    case 'bool': return 'bool'
    case 'bin': return `bin ${f.bytes}`
    case 'map': return f.shape ? `map: *${f.shape}*` : 'map'
    case 'list': {
      const of = f.of!
      const count = f.maxItems !== undefined ? ` (${f.minItems ? `${f.minItems}–` : '≤ '}${num(f.maxItems)})` : ''
      return `array of ${of.shape ? `*${of.shape}*` : of.type === 'map' ? 'map' : frameType(of)}${count}`
    }
  }
}

function frameValues(f: FrameField): string {
  const parts: string[] = []
  if (f.type === 'int') parts.push(f.min === f.max ? num(f.min!) : `${num(f.min!)} … ${num(f.max!)}`)
  if (f.form) parts.push(FORMS[f.form].doc)
  if (f.enum) parts.push(f.enum.map((e) => `\`"${e}"\``).join(' or '))
  if (f.type === 'list' && f.of!.type === 'int') parts.push(`each ${frameValues(f.of!)}`)
  parts.push(...sentinels(f.sentinels))
  if (f.optional) parts.push('optional')
  if (f.when) parts.push('only when `members` is absent')
  return parts.join('; ')
}

function frameRows(fields: readonly FrameField[], prefix: string): string[][] {
  const rows: string[][] = []
  for (const f of fields) {
    rows.push([`\`${prefix}${f.name}\``, frameType(f), frameValues(f), f.doc])
    // A shape is described once (schema:shapes); a map of its own is described here, field by field.
    if (f.type === 'map' && !f.shape) rows.push(...frameRows(f.fields!, `${prefix}${f.name}.`))
    if (f.type === 'list' && f.of!.type === 'map' && !f.of!.shape) rows.push(...frameRows(f.of!.fields!, `${prefix}${f.name}[].`))
  }
  return rows
}

function renderFrames(types: readonly FrameType[]): string {
  const rows: string[][] = []
  for (const ft of types) {
    const rules = ft.rules?.length ? ` Refused unless ${ft.rules.map((r) => r.doc).join('; ')}.` : ''
    rows.push([`**\`${ft.t}\`**`, '', '', `${ft.doc}.${rules}`])
    rows.push(...frameRows(ft.fields, ''))
  }
  return table(['`t` / field', 'type', 'values', 'meaning'], rows)
}

/** The shapes frames share: *member*, *source*, and *commit* (a whole `commit` frame's fields, without `t`). */
export function renderShapes(): string {
  const rows: string[][] = []
  for (const s of SHAPES) {
    rows.push([`*${s.shape}*`, 'map', '', `${s.doc}.${ruleText(s.rules, 'Refused unless').trim()}`])
    rows.push(...frameRows(s.fields!, ''))
  }
  rows.push(['*commit*', 'map', '', 'the fields of a whole `commit` frame (§3.2) but `t` and `base`/`added`/`removed`, `members` required; checked as a member checks a commit.'])
  return table(['shape / field', 'type', 'values', 'meaning'], rows)
}

/** Every block docs/PROTOCOL.md holds, by marker name. */
export function renderBlocks(): Record<string, string> {
  const out: Record<string, string> = {
    header: renderHeader(),
    toDirectory: renderFrames(TO_DIRECTORY),
    fromDirectory: renderFrames(FROM_DIRECTORY),
    shapes: renderShapes(),
    vectors: renderVectors(),
  }
  for (const d of DATAGRAMS) out[d.name] = renderDatagram(d.name)
  return out
}

const BLOCK = /<!-- schema:(\w+) -->\n[\s\S]*?<!-- \/schema -->/g

/** `markdown` with every schema block rewritten; throws on a block of an unknown name. */
export function applyBlocks(markdown: string, blocks = renderBlocks()): string {
  return markdown.replace(BLOCK, (_m, name: string) => {
    const body = blocks[name]
    if (body === undefined) throw new Error(`PROTOCOL.md: no schema block named ${name}`)
    return `<!-- schema:${name} -->\n${body}\n<!-- /schema -->`
  })
}

/** The names of the blocks `markdown` holds. */
export function blockNames(markdown: string): string[] {
  return [...markdown.matchAll(BLOCK)].map((m) => m[1]!)
}

/** docs/protocol-schema.json's text. */
export function schemaJson(): string {
  return `${JSON.stringify(SCHEMA, null, 2)}\n`
}
