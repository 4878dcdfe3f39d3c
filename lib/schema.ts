/**
 * The protocol's machine-readable schema (docs/PROTOCOL.md §2, §3, §8.3): every datagram's bytes and every
 * directory frame's fields, with widths, ranges, sentinels and one short doc string each. Pure data: lib/wire.ts and
 * lib/dirproto.ts are checked against it (test/schema.ts), the spec's field tables are rendered from it
 * (scripts/schemadoc.ts), and docs/protocol-schema.json is this file as JSON, for implementers in other languages.
 *
 * Doc strings are the spec's table cells: short, exact, enough to implement from.
 */

// ——— Shared vocabulary ———

/** Fixed-width unsigned big-endian integers. u64 (the incarnation) travels as 16 lowercase hex digits in JSON. */
export type UInt = 'u8' | 'u16' | 'u24' | 'u32' | 'u48' | 'u64'
export const WIDTH: Readonly<Record<UInt, number>> = { u8: 1, u16: 2, u24: 3, u32: 4, u48: 6, u64: 8 }

export const MAX_U16 = 0xffff
export const MAX_U32 = 0xffff_ffff
export const MAX_U48 = 2 ** 48 - 1
/** How far past `acked` a STATEREQ may ask (§8.3). */
export const STATE_WINDOW = 4 * 1024 * 1024

/** A value with a meaning of its own. `malformed`: a datagram or frame carrying it is refused. */
export interface Sentinel {
  readonly value: number | string
  readonly doc: string
  readonly malformed?: true
}

/** One defined bit of a flags field; a bit not listed makes the datagram malformed. */
export interface FlagBit {
  readonly bit: number
  readonly name: string
  readonly doc: string
}

/**
 * A condition between fields, as data: a number, a field path (dotted, list indices as numbers: `keys.1.epoch`;
 * `^x` is field x of the object enclosing the list being walked), or an operator applied to expressions:
 * each operator as OPERATORS says (docs/protocol-schema.json carries it, for readers of the rules in other languages).
 */
export type Expr = number | string | readonly [Op, ...Expr[]]
export type Op = '+' | '-' | '<' | '<=' | '==' | 'and' | 'or' | 'not' | 'implies' | 'has' | 'len' | 'sum' | 'every' | 'some' | 'ascending' | 'bit'

/** How a rule's expression reads (OPERATORS: its operators). */
export const EXPRESSIONS =
  'A rule holds when its expression is true. An expression is a number (itself), a string (the value of the field at that path: dotted names, list indices as numbers, e.g. keys.1.epoch; ^x is field x of the object holding the list being walked), or an array [op, operand, …] whose operands are expressions, read as operators says. Datagram rules see the body\'s fields, count and length fields excluded; frame rules see the map.'

/** What each operator of a rule means: `[op, a, b, …]` applied to the values of its operands. */
export const OPERATORS: Readonly<Record<Op, string>> = {
  '+': '[+, a, b, …]: the sum of its operands (integers; no operand overflows, sums are exact up to 2⁵³)',
  '-': '[-, a, b]: a minus b',
  '<': '[<, a, b]: a is less than b',
  '<=': '[<=, a, b]: a is less than or equal to b',
  '==': '[==, a, b]: a equals b (numbers or strings)',
  and: '[and, e, …]: every e holds',
  or: '[or, e, …]: at least one e holds',
  not: '[not, e]: e does not hold',
  implies: '[implies, a, b]: a does not hold, or b holds',
  has: '[has, p]: field p is present (its key is in the map; for a frame field only)',
  len: '[len, p]: the number of entries of list p, or of bytes of bytes field p; 0 if p is absent',
  sum: '[sum, list, f]: the sum of field f over the entries of list',
  every: '[every, list, e]: e holds for each entry of list (paths in e relative to the entry; ^x is field x of the object holding list); true for an empty list',
  some: '[some, list, e]: e holds for at least one entry of list (paths as in every); false for an empty list',
  ascending: '[ascending, list, f]: field f strictly increases from each entry of list to the next',
  bit: '[bit, p, i]: bit i of integer p is set, i a bit index (0 = the least significant bit, value 1), not a mask: [bit, flags, 1] tests the value 2',
}

/** A condition that must hold; `field` is the path named when it does not. */
export interface Rule {
  readonly field: string
  readonly expr: Expr
  readonly doc: string
}

// ——— Datagrams (§2) ———

/** A fixed-width integer of a datagram. */
export interface IntField {
  readonly kind: 'int'
  readonly name: string
  readonly type: UInt
  readonly doc: string
  /** The only value allowed (another is malformed). */
  readonly fixed?: number
  readonly min?: number
  readonly max?: number
  readonly sentinels?: readonly Sentinel[]
  /** A flags field: the defined bits. Any other bit set makes the datagram malformed. */
  readonly flags?: readonly FlagBit[]
  /** Derived, not carried in a body object: the number of entries of this list. */
  readonly countOf?: string
  /** Derived: the byte length of this bytes field. */
  readonly lengthOf?: string
}

/** Bytes: `length` bytes after a length field, or (`rest`) everything to the end of the datagram. */
export interface BytesField {
  readonly kind: 'bytes'
  readonly name: string
  readonly doc: string
  /** The IntField holding the length; absent: to the end of the datagram. */
  readonly length?: string
}

/** One alternative of a tagged list entry. */
export interface Variant {
  readonly tag: number
  readonly name: string
  readonly doc: string
  readonly fields: readonly DgField[]
}

/** `count` entries (count: an earlier IntField), each `fields`, or (`tag`) a tag byte choosing one of `variants`. */
export interface ListField {
  readonly kind: 'list'
  readonly name: string
  readonly doc: string
  readonly count: string
  readonly fields?: readonly DgField[]
  readonly tag?: IntField
  readonly variants?: readonly Variant[]
  readonly rules?: readonly Rule[]
}

export type DgField = IntField | BytesField | ListField

export interface DatagramType {
  readonly name: 'DATA' | 'ORDER' | 'ACK' | 'NACK' | 'STATEREQ' | 'STATE'
  readonly type: number
  readonly doc: string
  /** What the header's viewId and sender are in this type. */
  readonly viewId: string
  readonly sender: string
  readonly body: readonly DgField[]
  readonly rules?: readonly Rule[]
}

const int = (name: string, type: UInt, doc: string, more: Partial<IntField> = {}): IntField => ({ kind: 'int', name, type, doc, ...more })

/** The 24-byte header every datagram starts with. */
export const HEADER: readonly IntField[] = [
  int('magic', 'u16', '"SC"; any other value is malformed', { fixed: 0x5343 }),
  int('version', 'u8', 'the wire version; any other is malformed', { fixed: 3 }),
  int('type', 'u8', 'the datagram type: 1 DATA, 2 ORDER, 3 ACK, 4 NACK, 5 STATEREQ, 6 STATE; any other is malformed', { min: 1, max: 6 }),
  int('inc', 'u64', "the group's incarnation (§1): the 16 hex digits of the commits' `inc` read as one big-endian 64-bit number", {
    sentinels: [{ value: 0, doc: 'never an incarnation', malformed: true }],
  }),
  int('viewId', 'u32', 'the view the datagram belongs to (per type, below)'),
  int('sender', 'u32', "member number of the datagram's author", { min: 1, sentinels: [{ value: 0, doc: 'nobody', malformed: true }] }),
  int('flags', 'u8', 'a sealed datagram (§2.7) sets bit 0 AUTH, bit 1 KEY_PHASE, bit 2 TO_MEMBER; only a keyed member\'s transport opens it, and clears them. A datagram that reaches the engine with any bit set is malformed', { fixed: 0 }),
  int('reserved', 'u24', 'written 0; non-zero is malformed', { fixed: 0 }),
]
export const HEADER_SIZE = 24

const MSG_ID = 'u48'
const member = (doc: string): Partial<IntField> => ({ min: 1, sentinels: [{ value: 0, doc, malformed: true }] })

export const DATAGRAMS: readonly DatagramType[] = [
  {
    name: 'DATA', type: 1, doc: 'application payload, sender → group (multicast), or repair (unicast)',
    viewId: "the view its sender had installed when it sent it; a repair by another member: the NACK's viewId",
    sender: "the message's author, even when another member retransmits it",
    body: [
      int('count', 'u16', 'number of entries', { countOf: 'entries' }),
      {
        kind: 'list', name: 'entries', count: 'count', doc: 'one message or fragment each',
        fields: [
          int('msgId', MSG_ID, "the author's message counter, from 1", member('no message')),
          int('flags', 'u8', 'fragment bits', {
            flags: [
              { bit: 0, name: 'MORE', doc: 'another fragment of the message follows, with msgId + 1' },
              { bit: 1, name: 'FIRST', doc: 'this entry starts a message' },
            ],
          }),
          int('length', 'u32', 'payload bytes', { lengthOf: 'payload' }),
          { kind: 'bytes', name: 'payload', length: 'length', doc: 'the payload' },
        ],
      },
    ],
  },
  {
    name: 'ORDER', type: 2, doc: 'slot assignments, sequencer → group (multicast), or repair (unicast); runCount 0: a heartbeat',
    viewId: 'the view in which these slots were assigned (a repairer sends one datagram per view)',
    sender: 'the sequencer, or the repair source',
    body: [
      int('firstSlot', 'u48', 'slot of the first run; a heartbeat: the next slot to be assigned', {
        min: 1, sentinels: [{ value: 0, doc: 'no slot is 0', malformed: true }],
      }),
      int('stable', 'u48', "the highest slot the sender knows to be stable", { sentinels: [{ value: 0, doc: 'none known yet' }] }),
      int('runCount', 'u16', 'number of runs', { countOf: 'runs' }),
      {
        kind: 'list', name: 'runs', count: 'runCount', doc: 'fill consecutive slots from firstSlot, in order',
        fields: [
          int('sender', 'u32', 'member number of the messages\' author', member('nobody')),
          int('firstMsgId', MSG_ID, 'msgId of the run\'s first message', member('no message')),
          int('count', 'u16', 'consecutive slots and msgIds', { min: 1, sentinels: [{ value: 0, doc: 'empty run', malformed: true }] }),
        ],
        rules: [{ field: 'firstMsgId', expr: ['<=', ['+', 'firstMsgId', 'count'], MAX_U48 + 1], doc: 'firstMsgId + count − 1 ≤ 2⁴⁸−1' }],
      },
    ],
    rules: [{ field: 'runs', expr: ['<=', ['+', 'firstSlot', ['sum', 'runs', 'count']], MAX_U48 + 1], doc: 'firstSlot + (sum of the runs\' counts) − 1 ≤ 2⁴⁸−1' }],
  },
  {
    name: 'ACK', type: 3, doc: 'member → sequencer (unicast)',
    viewId: 'the view the member installed and works in', sender: 'the member',
    body: [
      int('have', 'u48', "the member's highest contiguous slot: its progress"),
      int('acked', 'u48', 'what it lets become stable (≤ have)'),
      int('stable', 'u48', 'the stable slot this member has heard of', { sentinels: [{ value: 0, doc: 'none yet' }] }),
    ],
  },
  {
    name: 'NACK', type: 4, doc: 'member → repair source (unicast)',
    viewId: "the requester's current view, or while it installs, the latest commit's view", sender: 'the requester',
    body: [
      int('count', 'u16', 'number of items', { countOf: 'items' }),
      {
        kind: 'list', name: 'items', count: 'count', doc: 'what the requester lacks',
        tag: int('kind', 'u8', 'item kind; another value is malformed'),
        variants: [
          {
            tag: 1, name: 'slots', doc: 'send me ORDER for these slots',
            fields: [int('firstSlot', 'u48', 'first slot asked'), int('n', 'u16', 'slots asked')],
          },
          {
            tag: 2, name: 'data', doc: 'send me DATA for these messages',
            fields: [int('sender', 'u32', 'the author', member('nobody')), int('firstMsgId', MSG_ID, 'first msgId asked'), int('n', 'u16', 'messages asked')],
          },
        ],
      },
    ],
  },
  {
    name: 'STATEREQ', type: 5, doc: 'joiner → donor (unicast, §8.3)',
    viewId: 'the state point', sender: 'the joiner',
    body: [
      int('acked', 'u48', 'the joiner holds every byte of the state below it'),
      int('from', 'u48', 'first byte asked'),
      int('length', 'u32', 'bytes asked; 0 with acked = the size: "done"', { max: STATE_WINDOW }),
    ],
    rules: [
      { field: 'from', expr: ['<=', 'acked', 'from'], doc: 'from ≥ acked' },
      { field: 'length', expr: ['<=', ['+', 'from', 'length'], ['+', 'acked', STATE_WINDOW]], doc: 'from + length ≤ acked + STATE_WINDOW (4 194 304)' },
    ],
  },
  {
    name: 'STATE', type: 6, doc: 'donor → joiner (unicast, §8.3)',
    viewId: 'the state point', sender: 'the donor',
    body: [
      int('offset', 'u48', 'position of the first byte in the state'),
      int('flags', 'u8', 'state bits', {
        flags: [
          { bit: 0, name: 'LAST', doc: 'these bytes end the state: its size is offset + their length' },
          { bit: 1, name: 'NONE', doc: 'no snapshot here for the joiner' },
        ],
      }),
      { kind: 'bytes', name: 'bytes', doc: 'state bytes, to the end of the datagram' },
    ],
    rules: [
      { field: 'flags', expr: ['implies', ['bit', 'flags', 1], ['and', ['==', 'flags', 2], ['==', 'offset', 0], ['==', ['len', 'bytes'], 0]]], doc: 'NONE comes alone: no LAST, offset 0, no bytes' },
      { field: 'bytes', expr: ['<=', ['+', 'offset', ['len', 'bytes']], MAX_U48], doc: 'offset + (bytes\' length) ≤ 2⁴⁸−1' },
    ],
  },
]

/** A keyed group's datagram on the wire (§2.7): the plain header, the body encrypted, nonce and tag. */
export const SEALED = {
  doc: 'AES-256-GCM; the header (followed by the addressee\'s "ip:port" when TO_MEMBER is set) is the associated data',
  parts: [
    { name: 'header', bytes: 24, doc: 'the plain header, flags set as below' },
    { name: 'ciphertext', bytes: 'rest', doc: 'the body, encrypted (as long as the plain body)' },
    { name: 'nonce', bytes: 12, doc: '8 random bytes per sender life, then a u32 counter' },
    { name: 'tag', bytes: 16, doc: 'the GCM tag' },
  ],
  flags: [
    { bit: 0, name: 'AUTH', doc: 'the datagram is sealed' },
    { bit: 1, name: 'KEY_PHASE', doc: "the sealing key's epoch mod 2" },
    { bit: 2, name: 'TO_MEMBER', doc: "sealed for one member: its address follows the header in the associated data" },
  ] as readonly FlagBit[],
  minLength: 52,
  info: { datagramKey: 'seqcast datagram v3', keyId: 'seqcast key id', linkPsk: 'seqcast directory link v1' },
} as const

// ——— Frames (§3) ———

/**
 * A string's form: `name` is 1–64 bytes of UTF-8; the others are exactly their pattern (JavaScript/PCRE syntax).
 */
export interface StringForm {
  readonly doc: string
  readonly minBytes?: number
  readonly maxBytes?: number
  readonly pattern?: string
}

const PORT = '(6553[0-5]|655[0-2][0-9]|65[0-4][0-9]{2}|6[0-4][0-9]{3}|[1-5][0-9]{4}|[1-9][0-9]{0,3})'
const OCTET = '(25[0-5]|2[0-4][0-9]|1[0-9]{2}|[1-9]?[0-9])'

export const FORMS = {
  name: { doc: '1–64 bytes of UTF-8', minBytes: 1, maxBytes: 64 },
  unicast: {
    doc: '"a.b.c.d:port": dotted IPv4 without leading zeros, first octet 1–223, port 1–65535',
    pattern: `^(22[0-3]|2[01][0-9]|1[0-9]{2}|[1-9][0-9]?)\\.${OCTET}\\.${OCTET}\\.${OCTET}:${PORT}$`,
  },
  multicast: {
    doc: '"a.b.c.d:port": dotted IPv4 in 224.0.0.0/4 without leading zeros, port 1–65535',
    pattern: `^(23[0-9]|22[4-9])\\.${OCTET}\\.${OCTET}\\.${OCTET}:${PORT}$`,
  },
  inc: { doc: '16 lowercase hex digits, not all zero', pattern: '^(?!0{16})[0-9a-f]{16}$' },
} as const satisfies Record<string, StringForm>
export type FormName = keyof typeof FORMS

/**
 * A field of a frame (a MessagePack map). `int`: any MessagePack integer format, or a float 64 of integral value;
 * `min`/`max` inclusive. A field is required unless `optional`; with `when`, it is read (and required) only when
 * the condition holds, and ignored otherwise. A present field is one whose key is in the map (nil is present).
 */
export interface FrameField {
  readonly name: string
  readonly type: 'int' | 'string' | 'bool' | 'bin' | 'map' | 'list'
  readonly doc: string
  readonly optional?: true
  readonly when?: Expr
  readonly min?: number
  readonly max?: number
  readonly sentinels?: readonly Sentinel[]
  readonly form?: FormName
  readonly enum?: readonly string[]
  /** bin: exactly this many bytes. */
  readonly bytes?: number
  /** map: its fields; list: the entries' shape. */
  readonly fields?: readonly FrameField[]
  readonly of?: FrameField
  readonly minItems?: number
  readonly maxItems?: number
  readonly rules?: readonly Rule[]
  /** A shared shape (`member`, `source`, `commit`): the spec describes it once and refers to it by name. */
  readonly shape?: string
}

export interface FrameType {
  readonly t: string
  readonly doc: string
  readonly fields: readonly FrameField[]
  readonly rules?: readonly Rule[]
}

export const MAX_GROUP_MEMBERS = 1024
export const FRAME_LIMITS = {
  doc: 'u32 big-endian length, then that many bytes of one MessagePack map with a string field t',
  toDirectory: 196_608,
  fromDirectory: 262_144,
  minLength: 1,
} as const

const f = (name: string, type: FrameField['type'], doc: string, more: Partial<FrameField> = {}): FrameField => ({ name, type, doc, ...more })
const name = (n: string, doc: string, more: Partial<FrameField> = {}) => f(n, 'string', doc, { form: 'name', ...more })
const viewId = (n: string, doc: string, more: Partial<FrameField> = {}) => f(n, 'int', doc, { min: 0, max: MAX_U32, ...more })
const memberNo = (n: string, doc: string) => f(n, 'int', doc, { min: 1, max: MAX_U32 })
const slot = (n: string, doc: string, more: Partial<FrameField> = {}) => f(n, 'int', doc, { min: 0, max: MAX_U48, ...more })
const ms = (n: string, doc: string) => f(n, 'int', doc, { min: 1, max: 3_600_000 })
const group = name('group', 'the group')
const epoch = (n: string, doc: string) => f(n, 'int', doc, { min: 0, max: MAX_U32 })
const keyBytes = f('key', 'bin', 'a group key', { bytes: 32 })

export const MEMBER_STATES = ['holds', 'needs'] as const
export const GROUP_TRANSPORTS = ['multicast', 'unicast'] as const
export const GROUP_STATES = ['stable', 'flushing', 'installing', 'recovering'] as const

/** A member of a view: in commits, rejoins and status. */
export const MEMBER_ENTRY: FrameField = f('', 'map', 'a member of a view', {
  shape: 'member',
  fields: [
    memberNo('no', 'its member number'),
    name('id', 'its member id'),
    f('addr', 'string', 'its unicast UDP address', { form: 'unicast' }),
    f('state', 'string', 'its part in state transfer (§8.1); absent: no state hooks', { optional: true, enum: MEMBER_STATES }),
  ],
})

export const SOURCE: FrameField = f('', 'map', 'a flush participant, and the slots it holds', {
  shape: 'source',
  fields: [memberNo('no', 'its member number'), slot('low', 'it freed every slot ≤ low'), slot('have', 'it holds every slot in (low, have]')],
})

const members = (more: Partial<FrameField> = {}) => f('members', 'list', 'the view\'s members by increasing number', { of: MEMBER_ENTRY, maxItems: MAX_GROUP_MEMBERS, ...more })

/** A commit's fields but its members. */
const COMMIT_FIELDS: readonly FrameField[] = [
  group,
  viewId('viewId', 'the new view', { min: 1 }),
  f('inc', 'string', "the group's incarnation; a member fails with `EPROTOCOL` if it changes", { form: 'inc' }),
  f('mcast', 'string', "the group's multicast address", { form: 'multicast' }),
  f('transport', 'string', "how the group's DATA and ORDER travel from this view on (§3.3)", { enum: GROUP_TRANSPORTS }),
  f('sequencer', 'int', 'member number of the sequencer: the smallest of `members`', { min: 0, max: MAX_U32, sentinels: [{ value: 0, doc: 'the view has no members' }] }),
  slot('cut', 'the old view ends at this slot', { sentinels: [{ value: 0, doc: "the group's first view" }] }),
  slot('start', 'the slot the view itself takes; above `cut`'),
  f('holder', 'int', 'the source a member asks first', { min: 0, max: MAX_U32, sentinels: [{ value: 0, doc: 'no flush participant (then `sources` is empty)' }] }),
  f('sources', 'list',
    'few flush participants whose ranges hold every slot any participant holds: each slot by up to three of them where that many hold it (three disjoint covers, each the fewest ranges), the holder first',
    { of: SOURCE, maxItems: MAX_GROUP_MEMBERS }),
  f('nextNo', 'int', 'every member number the group ever gave is below it', { min: 1, max: MAX_U32 + 1 }),
]

/** What holds between a commit's fields once its members are known. */
const COMMIT_RULES: readonly Rule[] = [
  { field: 'start', expr: ['<', 'cut', 'start'], doc: 'start > cut' },
  { field: 'members', expr: ['ascending', 'members', 'no'], doc: 'members by strictly increasing number' },
  { field: 'members', expr: ['every', 'members', ['<', 'no', '^nextNo']], doc: 'every member number below nextNo' },
  {
    field: 'sequencer', expr: ['implies', ['<', 0, ['len', 'members']], ['some', 'members', ['==', 'no', '^sequencer']]],
    doc: 'a view with members has its sequencer among them',
  },
]

const whenFull = (r: Rule): Rule => (r.field === 'start' ? r : { ...r, expr: ['implies', ['has', 'members'], r.expr] })
const delta: Expr = ['not', ['has', 'members']]
const proto = f('proto', 'int', 'the version of this frame protocol, 1 (not the datagram version)', { min: 1, max: 1 })
const addr = f('addr', 'string', "the member's unicast UDP address", { form: 'unicast' })

export const TO_DIRECTORY: readonly FrameType[] = [
  {
    t: 'join', doc: 'ask to join; the answer is `welcome` then, once the view is installed, a `commit` that includes the member; or `error`',
    fields: [proto, group, name('member', 'the member id'), addr,
      f('state', 'bool', 'true: the member has state hooks and takes part in state transfer (§8.1); absent or false: it does not', { optional: true })],
  },
  { t: 'leave', doc: 'ask to leave; answered by a `commit` that excludes the member and, once it may go, `released`', fields: [group] },
  {
    t: 'prepared',
    doc: 'answer to `prepare`: this member holds slots (low, have]. A `have` above what any member can hold expels the member that sent it (§5)',
    fields: [group, viewId('viewId', 'the view of the `prepare` answered'), slot('have', "the member's have (§1), frozen from now on"),
      slot('low', 'the highest slot it freed (it frees only what it delivered), or the cut of its first commit if it freed none')],
    rules: [{ field: 'low', expr: ['<=', 'low', 'have'], doc: 'low ≤ have' }],
  },
  {
    t: 'installed', doc: 'the member installed the view: it holds every slot up to the cut (§5.1 I3, I4). A leaver sends none for the view that excludes it (nor any later one): it waits for `released`',
    fields: [group, viewId('viewId', 'the view installed')],
  },
  {
    t: 'deaf',
    doc: "this member hears the sequencer of view viewId by unicast but not the group's multicast; handled by the directory's transport mode (§3.3). Ignored when viewId is not the group's current view (stale)",
    fields: [group, viewId('viewId', 'the view whose sequencer it hears')],
  },
  {
    t: 'suspect',
    doc: "member no of view viewId makes no progress (§4.7): from that view's sequencer, about any member of it (possibly itself, §4.7, 2–3); from any other member of it, about the sequencer only (it orders none of the sender's messages, §4.7, 5). The directory expels no like a member that stopped pinging (`expelled` with the reason, connection closed, view change) — only if viewId is the current view, the sender is its sequencer or (naming the sequencer) a member of it, no is a connected member of it, and no flush is running; otherwise the frame is stale or unauthorised and ignored",
    fields: [group, viewId('viewId', "the sender's view"), memberNo('no', 'the member suspected'),
      f('reason', 'string', 'for logs and the expelled member; the directory cuts it to 200 characters', { optional: true })],
  },
  {
    t: 'ping',
    doc: 'heartbeat, every `pingMs` (`welcome.heartbeatMs`) — and at once when a frame from the directory or a datagram finds one due, so a member whose event loop is busy with I/O does not fall silent; answered by `pong`',
    fields: [],
  },
  {
    t: 'ls', doc: 'status request (`dir ls`); answered by `status`. A connection that sends `ls` need not join',
    fields: [name('after', 'list the groups named after this one (by name)', { optional: true }), name('group', 'list only this group', { optional: true })],
  },
  {
    t: 'ready',
    doc: 'this member restored the group\'s state (§8.2): the directory marks it `"holds"` from the next commit on, without starting a view change. Ignored unless the member\'s entry in the latest commit is marked `"needs"` (§8.1)',
    fields: [group],
  },
  {
    t: 'rejoin',
    doc: 'after losing the directory connection (not expelled): "I am member no; this is the latest commit I received (installed or not), the highest view id I saw in a `prepare` or `commit`, and whether I asked to leave". Then checked against this directory and the group (§7). Answered by `welcome` (same no) or `expelled` (§7)',
    fields: [proto, group, name('member', 'the member id'), memberNo('no', 'its member number'), addr,
      viewId('seenViewId', 'the highest view id it saw in a `prepare` or `commit`'),
      f('leaving', 'bool', 'true: it asked to leave', { optional: true }),
      f('commit', 'map', 'the latest commit it received, whole (`members`, with their `state` flags), checked as a member checks a commit', {
        shape: 'commit', fields: [...COMMIT_FIELDS, members()], rules: COMMIT_RULES,
      })],
    rules: [
      { field: 'commit.members', expr: ['<', 0, ['len', 'commit.members']], doc: 'the commit lists members' },
      { field: 'commit.group', expr: ['==', 'commit.group', 'group'], doc: 'the commit is of the group rejoined' },
      { field: 'seenViewId', expr: ['<=', 'commit.viewId', 'seenViewId'], doc: "seenViewId ≥ the commit's viewId" },
    ],
  },
  {
    t: 'keyed', doc: 'the member applies the `keys` frame seq (and every earlier one); keyed directories (§3.5)',
    fields: [f('seq', 'int', 'the `keys` frame applied', { min: 1, max: MAX_U32 })],
  },
  {
    t: 'rotate', doc: 'from `dir rotate-key`: start a rotation to this key; answered by `rotated` when the old key is gone, or `error` (§3.5)',
    fields: [{ ...keyBytes, doc: 'the new group key' }],
  },
]

export const FROM_DIRECTORY: readonly FrameType[] = [
  {
    t: 'welcome', doc: "the member's number, and the liveness contract (2 × timeoutMs is also the progress bound B of §4.7)",
    fields: [memberNo('no', "the member's number"), ms('heartbeatMs', 'the member pings every this many ms: the directory\'s `pingMs` (§6)'), ms('timeoutMs', 'a member silent this long is expelled')],
    rules: [{ field: 'timeoutMs', expr: ['<', 'heartbeatMs', 'timeoutMs'], doc: 'heartbeatMs < timeoutMs' }],
  },
  { t: 'pong', doc: 'heartbeat answer', fields: [] },
  {
    t: 'prepare', doc: 'a view change starts: stop sending and ordering, answer `prepared`',
    fields: [group, viewId('viewId', 'the view being prepared')],
  },
  {
    t: 'commit',
    doc: 'the new view: the old view ends at slot cut, the view itself takes slot start; fetch each missing slot ≤ cut from a source whose (low, have] covers it, the holder first, then each other covering source in turn (§4.6, §5.1 I2). Whole (`members`), or, to a member that got the commit of view base (the previous one sent on its connection), only what changed (`base`, `added`, `removed`). A member ignores a commit whose viewId is not above the last one it applied',
    fields: [...COMMIT_FIELDS, members({ optional: true, doc: "the view's members by increasing number; absent: a change from `base`" }),
      viewId('base', 'the view of the previous commit sent on this connection; members = its members less `removed`, plus `added`, by number', { when: delta }),
      f('added', 'list', 'new members, and members whose id, address or `state` flag changed', { of: MEMBER_ENTRY, maxItems: MAX_GROUP_MEMBERS, when: delta }),
      f('removed', 'list', 'member numbers of the members gone', { of: memberNo('', 'a member number'), maxItems: MAX_GROUP_MEMBERS, when: delta })],
    rules: COMMIT_RULES.map(whenFull),
  },
  {
    t: 'released',
    doc: 'every member has installed the view that excluded this leaver (so holds its whole stream): it may close; a `safe` leaver delivers the end of its stream first (§4.4)',
    fields: [group],
  },
  {
    t: 'expelled', doc: 'the directory removed this member (timeout, failed flush, no progress); then it closes the connection',
    fields: [group, f('reason', 'string', 'why, for people')],
  },
  {
    t: 'error', doc: 'a refused request; the connection closes',
    fields: [f('code', 'string', 'an error code of docs/API.md, e.g. `EDUPLICATE_MEMBER`, `EGROUP_FULL`, `EBAD_REQUEST`'), f('message', 'string', 'for people')],
  },
  {
    t: 'status',
    doc: 'answer to `ls`: as many groups as fit in one frame (at least one: a group of 1 024 members with 64-byte ids and a `state` flag each is 122 KB)',
    fields: [
      f('groups', 'list', 'the groups of this page, by name', {
        of: f('', 'map', 'a group', {
          fields: [name('name', 'the group'), viewId('viewId', 'its latest commit', { sentinels: [{ value: 0, doc: 'no commit yet' }] }),
            members({ doc: 'as in its latest commit, `state` flags included' }),
            f('sequencer', 'string', "the sequencer's member id", { sentinels: [{ value: '', doc: 'no members, or no commit yet' }] }),
            f('mcast', 'string', 'its multicast address', { form: 'multicast' }),
            f('transport', 'string', 'as in its latest commit: what its members use', { enum: GROUP_TRANSPORTS }),
            f('state', 'string', '`stable` (no change under way), `flushing` (`prepare` sent), `installing` (`commit` sent, not every member installed), `recovering` (rebuilding after a restart, §7)', { enum: GROUP_STATES })],
        }),
      }),
      name('next', 'more groups follow: ask again with `after` = next', { optional: true }),
    ],
  },
  {
    t: 'keys',
    doc: 'the keys this member opens datagrams with and the one it seals with; sent right before `welcome` (the state as it is) and at every step of a rotation (§3.5)',
    fields: [f('seq', 'int', 'increases with every `keys` frame of this directory', { min: 1, max: MAX_U32 }),
      f('keys', 'list', '1 or 2 keys, of consecutive epochs', { of: f('', 'map', 'a key', { fields: [epoch('epoch', "the key's epoch"), keyBytes] }), minItems: 1, maxItems: 2 }),
      epoch('use', 'the epoch of the key to seal with')],
    rules: [
      { field: 'keys.1.epoch', expr: ['implies', ['==', ['len', 'keys'], 2], ['==', 'keys.1.epoch', ['+', 'keys.0.epoch', 1]]], doc: 'epochs consecutive' },
      { field: 'use', expr: ['some', 'keys', ['==', 'epoch', '^use']], doc: 'use is the epoch of one of the keys' },
    ],
  },
  { t: 'rotated', doc: 'answer to `rotate`: the old key is gone', fields: [epoch('epoch', 'the epoch of the only key left')] },
]

/** Shapes described once (§3): the entries of `members`, `added` and `sources`. */
export const SHAPES: readonly FrameField[] = [MEMBER_ENTRY, SOURCE]

/** Everything above, as docs/protocol-schema.json carries it. */
export const SCHEMA = {
  protocol: 'seqcast',
  datagramVersion: 3,
  frameProto: 1,
  constants: { MAX_U48, STATE_WINDOW, MAX_GROUP_MEMBERS, maxDatagram: 65_507 },
  header: HEADER,
  headerSize: HEADER_SIZE,
  datagrams: DATAGRAMS,
  sealed: SEALED,
  expressions: EXPRESSIONS,
  operators: OPERATORS,
  frames: { limits: FRAME_LIMITS, forms: FORMS, shapes: SHAPES, toDirectory: TO_DIRECTORY, fromDirectory: FROM_DIRECTORY },
} as const
