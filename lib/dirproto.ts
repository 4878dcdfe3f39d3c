/**
 * The directory protocol's frames (docs/PROTOCOL.md §3): their types, and their validation in both directions —
 * `parseToDirectory` in the directory, `DirectoryReader` in the member. Each field has one check, whichever side
 * reads it; a parsed frame holds exactly the fields of its type, nothing the sender added.
 */
import { ErrorCodes, ProtocolError } from './errors.js'
import { MAX_GROUP_MEMBERS, type Frame } from './frame.js'
import { parseMulticastAddr, parseUnicastAddr } from './options.js'
import { MAX_U48, parseIncarnation } from './wire.js'
import { KEY_BYTES } from './seal.js'

/** Group names and member ids: 1 to 64 bytes of UTF-8. */
export const MAX_NAME_BYTES = 64
/** Slots travel in datagrams as 48-bit numbers (lib/wire.ts). */
export const MAX_SLOT = MAX_U48
/** The longest heartbeat and timeout a directory may announce in `welcome` (an hour). */
export const MAX_TIMEOUT_MS = 3_600_000

/**
 * A member's part in state transfer (PROTOCOL.md §8.1): `holds` — its application has the group's state; `needs` —
 * it waits for it. Absent: the member gave no state hooks and takes no part.
 */
export type MemberState = 'holds' | 'needs'
export const MEMBER_STATES: readonly MemberState[] = ['holds', 'needs']
export type MemberEntry = { no: number; id: string; addr: string; state?: MemberState }
/** A group key and its epoch (the datagram's KEY_PHASE bit is the epoch's parity). */
export type EpochKey = { epoch: number; key: Buffer }
/** Group keys are 32 bytes (lib/seal.ts). */
export const GROUP_KEY_BYTES = KEY_BYTES
/** A flush participant that holds the slots (low, have]. */
export type Source = { no: number; low: number; have: number }
/** How a group's DATA and ORDER datagrams travel: to its multicast address, or to each member's unicast address. */
export type GroupTransport = 'multicast' | 'unicast'
export const GROUP_TRANSPORTS: readonly GroupTransport[] = ['multicast', 'unicast']

/** A view, as the directory commits it and a member carries it back in `rejoin`. */
export type Commit = {
  group: string
  viewId: number
  /** The group's incarnation: 16 hex digits. */
  inc: string
  mcast: string
  /** Every member sends and listens this way from this view on: the whole group switches at a commit. */
  transport: GroupTransport
  members: MemberEntry[]
  sequencer: number
  /** The old view ends at slot `cut`; this view takes slot `start`. */
  cut: number
  start: number
  holder: number
  sources: Source[]
  /** Every member number the group ever gave is below it. */
  nextNo: number
}
export type CommitFrame = { t: 'commit' } & Commit
/** A commit as sent to a member that has the commit of view `base`: its members are base's less `removed`, plus `added`. */
export type CommitDelta = { t: 'commit' } & Omit<Commit, 'members'> & { base: number; added: MemberEntry[]; removed: number[] }

export type GroupState = 'stable' | 'flushing' | 'installing' | 'recovering'
export const GROUP_STATES: readonly GroupState[] = ['stable', 'flushing', 'installing', 'recovering']

/** One group in a `status` frame (what `dir ls` prints). */
export type GroupStatus = {
  name: string
  viewId: number
  members: MemberEntry[]
  /** The sequencer's member id ('' before the first view). */
  sequencer: string
  mcast: string
  transport: GroupTransport
  state: GroupState
}

export type ToDirectory =
  /** `state`: the member has state hooks (it takes part in state transfer, §8). */
  | { t: 'join'; proto: 1; group: string; member: string; addr: string; state?: boolean }
  | { t: 'rejoin'; proto: 1; group: string; member: string; no: number; addr: string; seenViewId: number; leaving?: boolean; commit: Commit }
  | { t: 'ping' }
  | { t: 'ls'; after?: string; group?: string }
  | { t: 'leave'; group: string }
  | { t: 'prepared'; group: string; viewId: number; have: number; low: number }
  | { t: 'installed'; group: string; viewId: number }
  | { t: 'suspect'; group: string; viewId: number; no: number; reason?: string }
  /** The member hears the sequencer by unicast but not the group's multicast, in view `viewId`. */
  | { t: 'deaf'; group: string; viewId: number }
  /** The member applies the `keys` frame `seq` (and every earlier one). Keyed directories only (§3.5). */
  | { t: 'keyed'; seq: number }
  /** Start a key rotation to `key` (`dir rotate-key`). Keyed directories only (§3.5). */
  | { t: 'rotate'; key: Buffer }
  /** The member restored the group's state: it holds it from the next commit on (§8.1). */
  | { t: 'ready'; group: string }

export type FromDirectory =
  | { t: 'welcome'; no: number; heartbeatMs: number; timeoutMs: number }
  | { t: 'pong' }
  | { t: 'prepare'; group: string; viewId: number }
  | CommitFrame
  | { t: 'released'; group: string }
  | { t: 'expelled'; group: string; reason: string }
  | { t: 'error'; code: string; message: string }
  | { t: 'status'; groups: GroupStatus[]; next?: string }
  /** The group keys to open datagrams with (1 or 2, consecutive epochs), and the one to seal with (§3.5). */
  | { t: 'keys'; seq: number; keys: EpochKey[]; use: number }
  /** The rotation asked for is done: only the key of `epoch` opens anything now. */
  | { t: 'rotated'; epoch: number }

/** A frame as the directory sends it: a commit may be a delta (the member's reader makes it whole). */
export type FromDirectoryWire = FromDirectory | CommitDelta

/** One kind of frame: `ToDirectoryOf<'rejoin'>`. */
export type ToDirectoryOf<T extends ToDirectory['t']> = Extract<ToDirectory, { t: T }>
export type FromDirectoryOf<T extends FromDirectory['t']> = Extract<FromDirectory, { t: T }>

type RangeCode = typeof ErrorCodes.BAD_REQUEST | typeof ErrorCodes.FRAME
const MAX_U32 = 0xffff_ffff
const MEMBER_NO = 'a member number (an integer 1 … 2^32-1)'

/**
 * The fields of one frame (or of an object inside it) as their reader checks them. A field of the wrong type is
 * EFRAME; a value of the right type out of its range is `range`: EBAD_REQUEST in the directory (a refused request),
 * EFRAME in a member (a directory it cannot follow). Errors name the field by its path in the frame.
 */
class Fields {
  constructor(
    private readonly v: Record<string, unknown>,
    private readonly where: string,
    readonly range: RangeCode,
    /** Where this object sits in the frame: its parent's fields and its key there (named only in errors). */
    private readonly at: { parent: Fields; key: string; index?: number } | null = null,
  ) {}

  private get path(): string {
    const at = this.at
    return at ? `${at.parent.path}${at.key}${at.index === undefined ? '' : `[${at.index}]`}.` : ''
  }

  fail(code: RangeCode, key: string, what: string): never {
    throw new ProtocolError(code, `${this.where}: ${this.path}${key} ${what}`)
  }

  has(key: string): boolean {
    return this.v[key] !== undefined
  }

  private typed(key: string, type: 'string' | 'number' | 'boolean' | 'object', what: string): unknown {
    const x = this.v[key]
    if (typeof x !== type || x === null) this.fail(ErrorCodes.FRAME, key, `must be ${what}`)
    return x
  }

  string(key: string): string {
    return this.typed(key, 'string', 'a string') as string
  }

  bool(key: string): boolean {
    return this.typed(key, 'boolean', 'true or false') as boolean
  }

  /** A group name or member id. */
  name(key: string): string {
    const s = this.string(key)
    if (s.length === 0 || (s.length * 3 > MAX_NAME_BYTES && Buffer.byteLength(s) > MAX_NAME_BYTES)) {
      this.fail(this.range, key, `must be 1-${MAX_NAME_BYTES} bytes`)
    }
    return s
  }

  int(key: string, min: number, max: number, what: string): number {
    return this.checkInt(this.v[key], key, min, max, what)
  }

  private checkInt(n: unknown, key: string, min: number, max: number, what: string): number {
    // A BigInt is an integer past 2^53 in a 64-bit format: of the right type, out of every range.
    if (typeof n === 'bigint') this.fail(this.range, key, `must be ${what}`)
    // A float that is not an integer (1.5, NaN, Infinity) is not an integer at all: the wrong type (§3 "Integers").
    if (typeof n !== 'number' || !Number.isInteger(n)) this.fail(ErrorCodes.FRAME, key, `must be ${what}`)
    if (n < min || n > max) this.fail(this.range, key, `must be ${what}`)
    return n
  }

  /** View ids travel in every datagram as u32. */
  viewId(key: string): number {
    return this.int(key, 0, MAX_U32, 'a view id (an integer 0 … 2^32-1)')
  }

  /** A member number (datagrams carry it as u32; 0 is nobody). */
  memberNo(key: string): number {
    return this.int(key, 1, MAX_U32, MEMBER_NO)
  }

  /** A member number, or 0 for none (the holder of a view nobody flushed, the sequencer of an empty view). */
  memberNoOrNone(key: string): number {
    return this.int(key, 0, MAX_U32, 'a member number or 0')
  }

  slot(key: string): number {
    return this.int(key, 0, MAX_SLOT, 'a slot (an integer 0 … 2^48-1)')
  }

  ms(key: string): number {
    return this.int(key, 1, MAX_TIMEOUT_MS, `a duration in ms (1 … ${MAX_TIMEOUT_MS})`)
  }

  unicastAddr(key: string): string {
    const a = this.string(key)
    if (!knownUnicast.has(a) && !rememberUnicast(a)) this.fail(this.range, key, `must be a unicast IPv4 "ip:port" (port 1-65535), got ${JSON.stringify(a.slice(0, 64))}`)
    return a
  }

  multicastAddr(key: string): string {
    const a = this.string(key)
    if (!parseMulticastAddr(a)) this.fail(this.range, key, `must be a multicast IPv4 "ip:port" (224.0.0.0/4, port 1-65535), got ${JSON.stringify(a.slice(0, 64))}`)
    return a
  }

  incarnation(key: string): string {
    const s = this.string(key)
    if (!parseIncarnation(s)) this.fail(this.range, key, 'must be 16 lowercase hex digits, not all zero')
    return s
  }

  oneOf<T extends string>(key: string, values: readonly T[]): T {
    const s = this.string(key)
    if (!(values as readonly string[]).includes(s)) this.fail(this.range, key, `must be one of ${values.join(', ')}`)
    return s as T
  }

  /** A byte string of exactly `length` bytes (MessagePack bin). */
  bytes(key: string, length: number): Buffer {
    const x = this.v[key]
    if (!(x instanceof Uint8Array)) this.fail(ErrorCodes.FRAME, key, 'must be bytes')
    if (x.length !== length) this.fail(this.range, key, `must be ${length} bytes`)
    return Buffer.from(x)
  }

  /** The fields of the object in `key`. */
  sub(key: string): Fields {
    const x = this.typed(key, 'object', 'a map')
    if (Array.isArray(x)) this.fail(ErrorCodes.FRAME, key, 'must be a map')
    return new Fields(x as Record<string, unknown>, this.where, this.range, { parent: this, key })
  }

  /** The list in `key`, each element read by `each` (with the element's own fields if `each` takes Fields). */
  list<T>(key: string, max: number, each: (f: Fields) => T): T[] {
    const x = this.v[key]
    if (!Array.isArray(x)) this.fail(ErrorCodes.FRAME, key, 'must be a list')
    if (x.length > max) this.fail(this.range, key, `must have at most ${max} entries`)
    const out: T[] = new Array(x.length)
    for (let i = 0; i < x.length; i++) {
      const e: unknown = x[i]
      if (typeof e !== 'object' || e === null || Array.isArray(e)) this.fail(ErrorCodes.FRAME, `${key}[${i}]`, 'must be a map')
      out[i] = each(new Fields(e as Record<string, unknown>, this.where, this.range, { parent: this, key, index: i }))
    }
    return out
  }

  /** The list of member numbers in `key`. */
  memberNos(key: string, max: number): number[] {
    const x = this.v[key]
    if (!Array.isArray(x)) this.fail(ErrorCodes.FRAME, key, 'must be a list')
    if (x.length > max) this.fail(this.range, key, `must have at most ${max} entries`)
    return x.map((n: unknown, i) => this.checkInt(n, `${key}[${i}]`, 1, MAX_U32, MEMBER_NO))
  }
}

/**
 * Addresses that parsed as unicast: a commit lists every member's, and each of a thousand members in one process
 * (or a directory taking a thousand rejoins) would parse the same thousand again — 0.35 µs each, most of a commit's
 * reading. Bounded: cleared when it holds more than a few groups' worth.
 */
const knownUnicast = new Set<string>()
function rememberUnicast(a: string): boolean {
  if (!parseUnicastAddr(a)) return false
  if (knownUnicast.size >= 4 * MAX_GROUP_MEMBERS) knownUnicast.clear()
  knownUnicast.add(a)
  return true
}

function memberEntry(f: Fields): MemberEntry {
  const e: MemberEntry = { no: f.memberNo('no'), id: f.name('id'), addr: f.unicastAddr('addr') }
  if (f.has('state')) e.state = f.oneOf('state', MEMBER_STATES)
  return e
}
const source = (f: Fields): Source => ({ no: f.memberNo('no'), low: f.slot('low'), have: f.slot('have') })

/** Everything of a commit but its members (which a delta gives as a change). */
function commitFields(f: Fields): Omit<Commit, 'members'> {
  return {
    group: f.name('group'), viewId: f.viewId('viewId'), inc: f.incarnation('inc'), mcast: f.multicastAddr('mcast'),
    transport: f.oneOf('transport', GROUP_TRANSPORTS),
    sequencer: f.memberNoOrNone('sequencer'), cut: f.slot('cut'), start: f.slot('start'), holder: f.memberNoOrNone('holder'),
    sources: f.list('sources', MAX_GROUP_MEMBERS, source), nextNo: f.int('nextNo', 1, MAX_U32 + 1, 'a member number above all (1 … 2^32)'),
  }
}

/**
 * What holds between a commit's fields: a view id, a slot after the cut, members by increasing number (so each
 * once) below nextNo, a sequencer among them.
 */
function checkCommit(f: Fields, c: Commit): Commit {
  if (c.viewId === 0) f.fail(f.range, 'viewId', 'must be at least 1')
  if (c.start <= c.cut) f.fail(f.range, 'start', `must be above the cut (${c.cut})`)
  const ms = c.members
  if (ms.length > MAX_GROUP_MEMBERS) f.fail(f.range, 'members', `must have at most ${MAX_GROUP_MEMBERS} entries`)
  let sequencer = false
  for (let i = 0; i < ms.length; i++) {
    const no = ms[i]!.no
    if (i > 0 && no <= ms[i - 1]!.no) f.fail(f.range, `members[${i}].no`, `must be above the previous member's (${ms[i - 1]!.no})`)
    if (no >= c.nextNo) f.fail(f.range, `members[${i}].no`, `must be below nextNo (${c.nextNo})`)
    if (no === c.sequencer) sequencer = true
  }
  if (ms.length > 0 && !sequencer) f.fail(f.range, 'sequencer', 'must be a member of the view')
  return c
}

const clip = (t: string): string => JSON.stringify(t.slice(0, 32))

/**
 * A frame a member (or `dir ls`) sent the directory, checked: throws ProtocolError naming the bad field — EFRAME for
 * an unknown `t` or a field of the wrong type, EBAD_REQUEST for a value out of range. Run before anything else.
 */
export function parseToDirectory(f: Frame): ToDirectory {
  const r = new Fields(f, `frame ${clip(f.t)}`, ErrorCodes.BAD_REQUEST)
  switch (f.t) {
    case 'ping':
      return { t: 'ping' }
    case 'ls': {
      const ls: ToDirectoryOf<'ls'> = { t: 'ls' }
      if (r.has('after')) ls.after = r.name('after')
      if (r.has('group')) ls.group = r.name('group')
      return ls
    }
    case 'join': {
      const join: ToDirectoryOf<'join'> = { t: 'join', proto: proto(r), group: r.name('group'), member: r.name('member'), addr: r.unicastAddr('addr') }
      if (r.has('state')) join.state = r.bool('state')
      return join
    }
    case 'rejoin': {
      const rejoin: ToDirectoryOf<'rejoin'> = {
        t: 'rejoin', proto: proto(r), group: r.name('group'), member: r.name('member'), no: r.memberNo('no'), addr: r.unicastAddr('addr'),
        seenViewId: r.viewId('seenViewId'), commit: readCommit(r.sub('commit')),
      }
      if (r.has('leaving')) rejoin.leaving = r.bool('leaving')
      // A rejoin is from a member of the commit it carries: that view has members, and it is the latest it saw.
      if (rejoin.commit.members.length === 0) r.fail(ErrorCodes.BAD_REQUEST, 'commit.members', 'must not be empty')
      if (rejoin.commit.group !== rejoin.group) r.fail(ErrorCodes.BAD_REQUEST, 'commit.group', 'must be the group rejoined')
      if (rejoin.seenViewId < rejoin.commit.viewId) r.fail(ErrorCodes.BAD_REQUEST, 'seenViewId', 'must not be below the commit\'s viewId')
      return rejoin
    }
    case 'leave':
      return { t: 'leave', group: r.name('group') }
    case 'prepared': {
      const p: ToDirectoryOf<'prepared'> = { t: 'prepared', group: r.name('group'), viewId: r.viewId('viewId'), have: r.slot('have'), low: r.slot('low') }
      // A member frees only what it delivered.
      if (p.low > p.have) r.fail(ErrorCodes.BAD_REQUEST, 'low', `must not be above have (${p.have})`)
      return p
    }
    case 'installed':
      return { t: 'installed', group: r.name('group'), viewId: r.viewId('viewId') }
    case 'suspect': {
      const s: ToDirectoryOf<'suspect'> = { t: 'suspect', group: r.name('group'), viewId: r.viewId('viewId'), no: r.memberNo('no') }
      if (r.has('reason')) s.reason = r.string('reason')
      return s
    }
    case 'deaf':
      return { t: 'deaf', group: r.name('group'), viewId: r.viewId('viewId') }
    case 'keyed':
      return { t: 'keyed', seq: r.int('seq', 1, MAX_U32, 'a keys frame number (1 … 2^32-1)') }
    case 'rotate':
      return { t: 'rotate', key: r.bytes('key', GROUP_KEY_BYTES) }
    case 'ready':
      return { t: 'ready', group: r.name('group') }
    default:
      return r.fail(ErrorCodes.FRAME, 't', `${clip(f.t)} is not a frame a directory reads`)
  }
}

function proto(r: Fields): 1 {
  return r.int('proto', 1, 1, 'protocol version 1') as 1
}

function readCommit(f: Fields): Commit {
  return checkCommit(f, { ...commitFields(f), members: f.list('members', MAX_GROUP_MEMBERS, memberEntry) })
}

/**
 * A member's reading of its directory's frames (PROTOCOL.md §3.2): checks every field before the member acts on a
 * frame, and turns a delta commit (`base`, `added`, `removed`) back into a whole one from the last commit read.
 * Throws ProtocolError(EFRAME) naming the bad field; the member then fails (a directory it cannot follow).
 */
export class DirectoryReader {
  private last: { viewId: number; members: MemberEntry[] } | null = null

  read(f: Frame): FromDirectory {
    const r = new Fields(f, `frame ${clip(f.t)} from the directory`, ErrorCodes.FRAME)
    switch (f.t) {
      case 'pong':
        return { t: 'pong' }
      case 'welcome': {
        const w = { t: 'welcome' as const, no: r.memberNo('no'), heartbeatMs: r.ms('heartbeatMs'), timeoutMs: r.ms('timeoutMs') }
        // Expulsion takes timeoutMs of silence; members ping every heartbeatMs, and need some pongs in between.
        if (w.timeoutMs <= w.heartbeatMs) r.fail(ErrorCodes.FRAME, 'timeoutMs', `must be above heartbeatMs (${w.heartbeatMs})`)
        return w
      }
      case 'prepare':
        return { t: 'prepare', group: r.name('group'), viewId: r.viewId('viewId') }
      case 'commit':
        return this.commit(r)
      case 'released':
        return { t: 'released', group: r.name('group') }
      case 'expelled':
        return { t: 'expelled', group: r.name('group'), reason: r.string('reason') }
      case 'error':
        return { t: 'error', code: r.string('code'), message: r.string('message') }
      case 'status': {
        const s: FromDirectoryOf<'status'> = { t: 'status', groups: r.list('groups', Infinity, groupStatus) }
        if (r.has('next')) s.next = r.name('next')
        return s
      }
      case 'keys':
        return readKeys(r)
      case 'rotated':
        return { t: 'rotated', epoch: r.int('epoch', 0, MAX_U32, 'a key epoch (0 … 2^32-1)') }
      default:
        return r.fail(ErrorCodes.FRAME, 't', `${clip(f.t)} is not a frame a directory sends`)
    }
  }

  private commit(r: Fields): CommitFrame {
    const fields = commitFields(r)
    let members: MemberEntry[]
    if (r.has('members')) {
      members = r.list('members', MAX_GROUP_MEMBERS, memberEntry)
    } else {
      const base = r.viewId('base')
      const last = this.last
      if (last === null || base !== last.viewId) return r.fail(ErrorCodes.FRAME, 'base', `is view ${base}, but the last commit read was view ${last?.viewId}`)
      const added = r.list('added', MAX_GROUP_MEMBERS, memberEntry)
      const gone = new Set([...r.memberNos('removed', MAX_GROUP_MEMBERS), ...added.map((e) => e.no)])
      members = [...last.members.filter((e) => !gone.has(e.no)), ...added].sort((a, b) => a.no - b.no)
    }
    const c = checkCommit(r, { ...fields, members })
    this.last = { viewId: c.viewId, members }
    return { t: 'commit', ...c }
  }
}

const epochKey = (f: Fields): EpochKey => ({ epoch: f.int('epoch', 0, MAX_U32, 'a key epoch (0 … 2^32-1)'), key: f.bytes('key', GROUP_KEY_BYTES) })

/** One or two keys of consecutive epochs, and `use` among them. */
function readKeys(r: Fields): FromDirectoryOf<'keys'> {
  const k: FromDirectoryOf<'keys'> = {
    t: 'keys', seq: r.int('seq', 1, MAX_U32, 'a keys frame number (1 … 2^32-1)'), keys: r.list('keys', 2, epochKey),
    use: r.int('use', 0, MAX_U32, 'a key epoch (0 … 2^32-1)'),
  }
  if (k.keys.length === 0) r.fail(ErrorCodes.FRAME, 'keys', 'must not be empty')
  if (k.keys.length === 2 && k.keys[1]!.epoch !== k.keys[0]!.epoch + 1) r.fail(ErrorCodes.FRAME, 'keys[1].epoch', 'must follow keys[0].epoch')
  if (!k.keys.some((e) => e.epoch === k.use)) r.fail(ErrorCodes.FRAME, 'use', 'must be the epoch of one of the keys')
  return k
}

function groupStatus(f: Fields): GroupStatus {
  return {
    name: f.name('name'), viewId: f.viewId('viewId'), members: f.list('members', MAX_GROUP_MEMBERS, memberEntry),
    sequencer: f.string('sequencer'), mcast: f.multicastAddr('mcast'), transport: f.oneOf('transport', GROUP_TRANSPORTS),
    state: f.oneOf('state', GROUP_STATES),
  }
}
