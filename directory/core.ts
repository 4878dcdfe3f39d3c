/**
 * The directory's state machine (PROTOCOL.md §3, §5, §7), free of sockets: frames in, frames out, through hooks.
 * The TCP server (server.ts) and the test simulator both drive this class.
 *
 * Per group, one view change at a time:
 *   stable ──change needed──▶ flushing (prepare sent, collecting `prepared`) ──all answered──▶ commit
 *   commit ──▶ installing (until every new member sent `installed`; leavers are released then)
 * A failure during a flush abandons it and starts another with a new view id. A change may start while the
 * previous view is still installing: members apply commits in order whatever their state.
 */
import { ErrorCodes, ProtocolError } from '../lib/errors.js'
import { encodedSize, field, MAX_FRAME_FROM_DIRECTORY, MAX_GROUP_MEMBERS, type Frame } from '../lib/frame.js'
import { logger } from '../lib/log.js'
import { parseUnicastAddr } from '../lib/options.js'
import { SEQ_WINDOW } from '../lib/wire.js'

const log = logger('dir')

export { SEQ_WINDOW }
export type ConnId = number

export interface DirectoryHooks {
  /** Deliver a frame on that connection (reliable, FIFO). */
  send(conn: ConnId, frame: Frame): void
  /** Close that connection; the host then calls closed(). */
  close(conn: ConnId, reason: string): void
  now(): number
}

export interface DirectoryOptions {
  /** Multicast addresses are handed out from this IPv4 range, e.g. '239.255.0.0/16'. */
  mcastRange: string
  mcastPort: number
  heartbeatMs: number
  timeoutMs: number
  flushTimeoutMs: number
}

export const DEFAULT_DIRECTORY_OPTIONS: DirectoryOptions = {
  mcastRange: '239.255.0.0/16',
  mcastPort: 46100,
  heartbeatMs: 500,
  timeoutMs: 2000,
  flushTimeoutMs: 2000,
}

const MAX_NAME_BYTES = 64
/** A `status` frame's bytes besides its groups: `t`, the list's header, `next` (a group name). */
const STATUS_PAGE_OVERHEAD = 256

interface Member {
  no: number
  id: string
  addr: string
  /** null: known from a rejoined view, not (yet) connected. */
  conn: ConnId | null
  dead: boolean
  leaving: boolean
}

type MemberEntry = { no: number; id: string; addr: string }

interface Flush {
  viewId: number
  participants: Member[]
  reports: Map<number, { have: number; low: number }>
  deadline: number
}

interface Group {
  name: string
  mcast: string
  nextNo: number
  /** The last view id handed out (also for abandoned attempts). */
  viewCounter: number
  viewId: number
  members: Member[]
  sequencer: number
  lastStart: number
  lastCut: number
  joiners: Member[]
  /** Excluded by a commit, not yet released; with the view that excluded them. */
  leavers: Array<{ m: Member; viewId: number }>
  flush: Flush | null
  installing: { viewId: number; waiting: Set<number> } | null
  changeNeeded: boolean
  /** After a directory restart: members of the rebuilt view that have not rejoined yet, until the deadline. */
  recovering: { deadline: number } | null
  /** The member list of the last commit this directory sent, by member number (what a delta is taken from). */
  committed?: { viewId: number; members: Map<number, MemberEntry> }
}

interface Conn {
  lastSeen: number
  /** The view id of the last commit sent on this connection: the next may be sent as a delta from it. */
  seenView?: number
  group?: string
  member?: Member
}

export interface GroupStatus {
  name: string
  viewId: number
  members: Array<{ no: number; id: string; addr: string }>
  sequencer: string
  mcast: string
  state: 'stable' | 'flushing' | 'installing' | 'recovering'
}

function parseRange(range: string): { base: number; size: number } {
  const m = /^(\d{1,3})\.(\d{1,3})\.(\d{1,3})\.(\d{1,3})\/(\d{1,2})$/.exec(range)
  if (!m) throw new Error(`bad multicast range ${range} (want a.b.c.d/prefix)`)
  const octets = m.slice(1, 5).map(Number)
  const prefix = Number(m[5])
  if (octets.some((o) => o > 255) || prefix < 4 || prefix > 30 || octets[0]! < 224 || octets[0]! > 239) {
    throw new Error(`bad multicast range ${range} (must lie in 224.0.0.0/4, prefix 4-30)`)
  }
  const size = 2 ** (32 - prefix)
  const base = ((octets[0]! * 2 ** 24 + octets[1]! * 2 ** 16 + octets[2]! * 2 ** 8 + octets[3]!) >>> 0) & ~(size - 1)
  return { base: base >>> 0, size }
}

function ipOf(n: number): string {
  return [n >>> 24, (n >>> 16) & 255, (n >>> 8) & 255, n & 255].join('.')
}

function name(f: Frame, key: string): string {
  const v = field(f, key, 'string')
  if (v.length === 0 || Buffer.byteLength(v) > MAX_NAME_BYTES) {
    throw new ProtocolError(ErrorCodes.BAD_REQUEST, `${key} must be 1-${MAX_NAME_BYTES} bytes`)
  }
  return v
}

function addrField(f: Frame): string {
  const a = field(f, 'addr', 'string')
  if (!parseUnicastAddr(a)) throw new ProtocolError(ErrorCodes.BAD_REQUEST, `addr must be a unicast IPv4 "ip:port" (port 1-65535), got ${JSON.stringify(a.slice(0, 64))}`)
  return a
}

type Report = { no: number; low: number; have: number }

/**
 * The fewest reports that hold every slot some report holds, the holder first: members ask the holder for every
 * slot it has and call a slot no source holds void (PROTOCOL.md §5), so only the union of the ranges matters —
 * and a commit listing all 1 000 participants' ranges went to all 1 000 members at every view change.
 * The holder has the highest `have` (the cut), so only the ranges starting below its `low` add anything: below it,
 * a greedy sweep takes, at each uncovered slot, the range reaching farthest.
 */
export function sourcesCovering(reports: Report[], holder: Report): Report[] {
  const below = reports.filter((r) => r !== holder && r.low < holder.low && r.have > r.low).sort((a, b) => a.low - b.low)
  const chosen = [holder]
  let covered = -1 // every slot ≤ covered is held by a chosen range, or by none at all
  for (let i = 0; i < below.length;) {
    if (below[i]!.low > covered) covered = below[i]!.low // slots up to it are in no range
    let best: Report | null = null
    for (; i < below.length && below[i]!.low <= covered; i++) if (best === null || below[i]!.have > best.have) best = below[i]!
    if (best !== null && best.have > covered) {
      chosen.push(best)
      covered = Math.min(best.have, holder.low)
    }
    if (covered >= holder.low) break
  }
  return chosen
}

/** A commit's members as a change from the previous commit's (PROTOCOL.md §3.2): `added` also lists changed entries. */
function commitDelta(base: { viewId: number; members: Map<number, MemberEntry> }, list: MemberEntry[]): { base: number; added: MemberEntry[]; removed: number[] } {
  const now = new Set(list.map((e) => e.no))
  return {
    base: base.viewId,
    added: list.filter((e) => { const b = base.members.get(e.no); return !b || b.id !== e.id || b.addr !== e.addr }),
    removed: [...base.members.keys()].filter((no) => !now.has(no)),
  }
}

export class DirectoryCore {
  private readonly groups = new Map<string, Group>()
  private readonly conns = new Map<ConnId, Conn>()
  private readonly range: { base: number; size: number }

  constructor(readonly opts: DirectoryOptions, private readonly hooks: DirectoryHooks) {
    this.range = parseRange(opts.mcastRange)
  }

  opened(conn: ConnId): void {
    this.conns.set(conn, { lastSeen: this.hooks.now() })
  }

  /** Handles one frame; throws ProtocolError on a malformed or invalid one (the host then closes the connection). */
  frame(conn: ConnId, f: Frame): void {
    const c = this.conns.get(conn)
    if (!c) return
    c.lastSeen = this.hooks.now()
    switch (f.t) {
      case 'ping':
        this.hooks.send(conn, { t: 'pong' })
        return
      case 'ls':
        this.hooks.send(conn, this.statusPage(f))
        return
      case 'join':
        return this.onJoin(conn, c, f)
      case 'rejoin':
        return this.onRejoin(conn, c, f)
    }
    const m = c.member
    const g = c.group === undefined ? undefined : this.groups.get(c.group)
    if (!m || !g) throw new ProtocolError(ErrorCodes.BAD_REQUEST, `frame ${f.t} before join`)
    if (name(f, 'group') !== g.name) throw new ProtocolError(ErrorCodes.BAD_REQUEST, `frame ${f.t} names another group`)
    switch (f.t) {
      case 'leave':
        if (!m.leaving) {
          m.leaving = true
          log('%s: %s asks to leave', g.name, m.id)
          this.needChange(g)
        }
        return
      case 'prepared': {
        const viewId = field(f, 'viewId', 'number')
        const have = field(f, 'have', 'number')
        const low = typeof f.low === 'number' ? f.low : 0
        if (g.flush && g.flush.viewId === viewId && g.flush.participants.includes(m)) {
          g.flush.reports.set(m.no, { have, low })
          this.maybeCommit(g)
        }
        return
      }
      case 'installed': {
        const viewId = field(f, 'viewId', 'number')
        if (g.installing && viewId >= g.installing.viewId) {
          g.installing.waiting.delete(m.no)
          this.maybeInstalled(g)
        }
        return
      }
      default:
        throw new ProtocolError(ErrorCodes.FRAME, `unknown frame type ${JSON.stringify(f.t)}`)
    }
  }

  /** The connection is gone: its member, if any, failed. Idempotent. */
  closed(conn: ConnId): void {
    const c = this.conns.get(conn)
    if (!c) return
    this.conns.delete(conn)
    const g = c.group === undefined ? undefined : this.groups.get(c.group)
    if (g && c.member) this.memberFailed(g, c.member, 'connection closed')
  }

  /** Timeouts: silent members, participants that do not answer a prepare, members that never rejoined. */
  tick(): void {
    const now = this.hooks.now()
    for (const [conn, c] of this.conns) {
      if (c.member && now - c.lastSeen > this.opts.timeoutMs) this.expel(conn, `no heartbeat for ${this.opts.timeoutMs} ms`)
    }
    for (const g of [...this.groups.values()]) {
      if (g.flush && now > g.flush.deadline) {
        for (const p of g.flush.participants) {
          if (!g.flush.reports.has(p.no) && p.conn !== null) this.expel(p.conn, `no answer to prepare within ${this.opts.flushTimeoutMs} ms`)
        }
      }
      if (g.recovering && now > g.recovering.deadline) {
        for (const m of g.members) if (m.conn === null) m.dead = true
        g.recovering = null
        log('%s: rebuilt; members that did not rejoin are removed', g.name)
        this.needChange(g)
      }
    }
  }

  status(): GroupStatus[] {
    return [...this.groups.values()].map((g) => this.groupStatus(g))
  }

  private groupStatus(g: Group): GroupStatus {
    return {
      name: g.name,
      viewId: g.viewId,
      members: g.members.filter((m) => !m.dead).map((m) => ({ no: m.no, id: m.id, addr: m.addr })),
      sequencer: g.members.find((m) => m.no === g.sequencer)?.id ?? '',
      mcast: g.mcast,
      state: g.recovering ? 'recovering' : g.flush ? 'flushing' : g.installing ? 'installing' : 'stable',
    }
  }

  /**
   * The answer to `ls`: groups by name, after `after` if given (or only `group`), as many as fit in one frame;
   * `next` names the last one when more follow (PROTOCOL.md §3). One group always fits: it has at most
   * MAX_GROUP_MEMBERS members.
   */
  private statusPage(f: Frame): Frame {
    const after = typeof f.after === 'string' ? f.after : undefined
    const only = typeof f.group === 'string' ? f.group : undefined
    const names = only !== undefined ? (this.groups.has(only) ? [only] : []) : [...this.groups.keys()].sort()
    const groups: GroupStatus[] = []
    let room = MAX_FRAME_FROM_DIRECTORY - STATUS_PAGE_OVERHEAD
    for (const n of names) {
      if (after !== undefined && n <= after) continue
      const status = this.groupStatus(this.groups.get(n)!)
      room -= encodedSize(status)
      if (room < 0 && groups.length > 0) return { t: 'status', groups, next: groups[groups.length - 1]!.name }
      groups.push(status)
    }
    return { t: 'status', groups }
  }

  // ---------------------------------------------------------------- joining

  private onJoin(conn: ConnId, c: Conn, f: Frame): void {
    if (c.member) throw new ProtocolError(ErrorCodes.BAD_REQUEST, 'this connection has joined already')
    if (field(f, 'proto', 'number') !== 1) throw new ProtocolError(ErrorCodes.BAD_REQUEST, 'unsupported protocol version')
    const groupName = name(f, 'group')
    const id = name(f, 'member')
    const addr = addrField(f)
    let g = this.groups.get(groupName)
    if (g && [...g.members, ...g.joiners].some((m) => m.id === id && !m.dead && !m.leaving)) {
      this.hooks.send(conn, { t: 'error', code: ErrorCodes.DUPLICATE_MEMBER, message: `member id ${id} is already in group ${groupName}` })
      this.hooks.close(conn, 'duplicate member id')
      return
    }
    if (g && g.members.filter((m) => !m.dead).length + g.joiners.filter((m) => !m.dead).length + g.leavers.length >= MAX_GROUP_MEMBERS) {
      // Refused, not admitted: a commit listing more would not fit the members' frames (lib/frame.ts).
      this.hooks.send(conn, { t: 'error', code: ErrorCodes.GROUP_FULL, message: `group ${groupName} has ${MAX_GROUP_MEMBERS} members, the most a group may have` })
      this.hooks.close(conn, 'group full')
      return
    }
    g ??= this.createGroup(groupName, this.allocateMcast())
    const m: Member = { no: g.nextNo++, id, addr, conn, dead: false, leaving: false }
    c.group = g.name
    c.member = m
    g.joiners.push(m)
    this.hooks.send(conn, { t: 'welcome', no: m.no, heartbeatMs: this.opts.heartbeatMs, timeoutMs: this.opts.timeoutMs })
    log('%s: %s joins as no %d from %s', g.name, id, m.no, addr)
    this.needChange(g)
  }

  /** A member of a view this directory may not know (it restarted) reattaches (PROTOCOL.md §7). */
  private onRejoin(conn: ConnId, c: Conn, f: Frame): void {
    if (c.member) throw new ProtocolError(ErrorCodes.BAD_REQUEST, 'this connection has joined already')
    if (field(f, 'proto', 'number') !== 1) throw new ProtocolError(ErrorCodes.BAD_REQUEST, 'unsupported protocol version')
    const groupName = name(f, 'group')
    const id = name(f, 'member')
    const no = field(f, 'no', 'number')
    const view = f.view as { viewId?: unknown; members?: unknown; sequencer?: unknown; start?: unknown } | null
    const valid = view !== null && typeof view === 'object' && typeof view.viewId === 'number' && typeof view.sequencer === 'number' &&
      typeof view.start === 'number' && Array.isArray(view.members) &&
      view.members.every((m: { no?: unknown; id?: unknown; addr?: unknown }) => typeof m?.no === 'number' && typeof m.id === 'string' && typeof m.addr === 'string')
    if (!valid) throw new ProtocolError(ErrorCodes.BAD_REQUEST, 'rejoin needs a view {viewId, members, sequencer, start}')
    const v = view as { viewId: number; members: Array<{ no: number; id: string; addr: string }>; sequencer: number; start: number }
    let g = this.groups.get(groupName)
    if (!g) {
      g = this.createGroup(groupName, field(f, 'mcast', 'string'))
      g.recovering = { deadline: this.hooks.now() + this.opts.timeoutMs }
      this.adoptView(g, v)
      log('%s: rebuilding from %s\'s view %d', g.name, id, v.viewId)
    } else if (g.recovering && v.viewId > g.viewId) {
      this.adoptView(g, v)
    }
    const m = g.members.find((x) => x.no === no && x.id === id && !x.dead && x.conn === null)
    if (!m) {
      this.hooks.send(conn, { t: 'expelled', group: groupName, reason: `not a member of view ${g.viewId}` })
      this.hooks.close(conn, 'rejoin refused')
      return
    }
    m.conn = conn
    m.addr = addrField(f)
    c.group = g.name
    c.member = m
    this.hooks.send(conn, { t: 'welcome', no: m.no, heartbeatMs: this.opts.heartbeatMs, timeoutMs: this.opts.timeoutMs })
    if (g.recovering && g.members.every((x) => x.conn !== null || x.dead)) {
      g.recovering = null
      log('%s: rebuilt, every member rejoined', g.name)
      this.startChangeIfNeeded(g)
    }
  }

  private adoptView(g: Group, v: { viewId: number; members: Array<{ no: number; id: string; addr: string }>; sequencer: number; start: number }): void {
    const attached = new Map(g.members.filter((m) => m.conn !== null).map((m) => [m.no, m]))
    g.members = v.members.map((m) => attached.get(m.no) ?? { no: m.no, id: m.id, addr: m.addr, conn: null, dead: false, leaving: false })
    g.viewId = v.viewId
    g.viewCounter = Math.max(g.viewCounter, v.viewId)
    g.sequencer = v.sequencer
    g.lastStart = v.start
    g.lastCut = v.start - 1
    g.nextNo = Math.max(g.nextNo, ...v.members.map((m) => m.no + 1))
  }

  private createGroup(groupName: string, mcast: string): Group {
    const g: Group = {
      name: groupName, mcast, nextNo: 1, viewCounter: 0, viewId: 0, members: [], sequencer: 0, lastStart: 0, lastCut: 0,
      joiners: [], leavers: [], flush: null, installing: null, changeNeeded: false, recovering: null,
    }
    this.groups.set(groupName, g)
    return g
  }

  private allocateMcast(): string {
    const used = new Set([...this.groups.values()].map((g) => g.mcast))
    for (let i = 1; i < this.range.size - 1; i++) {
      const a = `${ipOf((this.range.base + i) >>> 0)}:${this.opts.mcastPort}`
      if (!used.has(a)) return a
    }
    // More groups than addresses: share one; the groupId in every datagram keeps them apart.
    return `${ipOf((this.range.base + 1) >>> 0)}:${this.opts.mcastPort}`
  }

  // ---------------------------------------------------------------- failures

  private expel(conn: ConnId, reason: string): void {
    const c = this.conns.get(conn)
    if (c?.member && c.group !== undefined) this.hooks.send(conn, { t: 'expelled', group: c.group, reason })
    log('expelling connection %d: %s', conn, reason)
    this.hooks.close(conn, reason)
    this.closed(conn)
  }

  private memberFailed(g: Group, m: Member, reason: string): void {
    if (m.dead) return
    m.dead = true
    m.conn = null
    log('%s: member %s (no %d) failed: %s', g.name, m.id, m.no, reason)
    g.joiners = g.joiners.filter((x) => x !== m)
    const wasLeaver = g.leavers.some((l) => l.m === m)
    g.leavers = g.leavers.filter((l) => l.m !== m)
    g.installing?.waiting.delete(m.no)
    const abandoned = g.flush !== null && g.flush.participants.includes(m)
    if (abandoned) {
      log('%s: abandoning view %d: participant %s failed', g.name, g.flush!.viewId, m.id)
      g.flush = null
    }
    // An abandoned flush is retried at once with whoever is left. A leaver still installing may have been the
    // holder: the next change gives the others a new one.
    if (abandoned || g.members.includes(m) || (wasLeaver && g.installing)) this.needChange(g)
    else this.maybeInstalled(g)
    this.maybeDelete(g)
  }

  // ---------------------------------------------------------------- view changes

  private needChange(g: Group): void {
    g.changeNeeded = true
    this.startChangeIfNeeded(g)
  }

  private startChangeIfNeeded(g: Group): void {
    if (!g.changeNeeded || g.flush || g.recovering) return
    g.changeNeeded = false
    const viewId = ++g.viewCounter
    const participants = [...g.members.filter((m) => !m.dead && m.conn !== null), ...g.leavers.map((l) => l.m)]
    if (participants.length === 0) {
      // Nobody holds the old stream: the new view starts past anything its sequencer could have assigned.
      const start = g.viewId === 0 ? 1 : Math.max(g.lastCut, g.lastStart) + SEQ_WINDOW + 1
      this.commit(g, viewId, start - 1, start, 0)
      return
    }
    g.flush = { viewId, participants, reports: new Map(), deadline: this.hooks.now() + this.opts.flushTimeoutMs }
    for (const p of participants) this.hooks.send(p.conn!, { t: 'prepare', group: g.name, viewId })
    log('%s: prepare view %d to %o', g.name, viewId, participants.map((p) => p.id))
  }

  private maybeCommit(g: Group): void {
    const f = g.flush
    if (!f || f.reports.size < f.participants.length) return
    const reports = [...f.reports.entries()].map(([no, r]) => ({ no, ...r }))
    const cut = Math.max(...reports.map((r) => r.have))
    // Every participant can serve the slots in (low, have]; a recovering member asks one whose range covers the
    // slot it lacks. The holder is the one that covers the most: the lowest `low` among those with have = cut.
    const holder = reports.filter((r) => r.have === cut).sort((a, b) => a.low - b.low || a.no - b.no)[0]!
    // If the old sequencer answered, it reported everything it assigned; otherwise skip past its window. Never
    // below the last committed view's slot either: when nobody installed that view (a participant failed right
    // after its commit), `cut` is older than it, and the slots it skipped may still hold what a dead sequencer
    // ordered and dead members delivered.
    const seqAnswered = f.participants.some((p) => p.no === g.sequencer)
    const start = seqAnswered ? Math.max(cut, g.lastStart) + 1 : Math.max(cut, g.lastStart) + SEQ_WINDOW + 1
    g.flush = null
    this.commit(g, f.viewId, cut, start, holder.no, sourcesCovering(reports, holder))
  }

  private commit(g: Group, viewId: number, cut: number, start: number, holder: number, sources: Array<{ no: number; low: number; have: number }> = []): void {
    const staying = g.members.filter((m) => !m.dead && !m.leaving && m.conn !== null)
    const joiners = g.joiners.filter((m) => !m.dead)
    const members = [...staying, ...joiners].sort((a, b) => a.no - b.no)
    const excluded = g.members.filter((m) => !m.dead && m.leaving && m.conn !== null)
    const list: MemberEntry[] = members.map((m) => ({ no: m.no, id: m.id, addr: m.addr }))
    const common = { t: 'commit', group: g.name, viewId, sequencer: members[0]?.no ?? 0, cut, start, holder, sources, mcast: g.mcast }
    const full: Frame = { ...common, members: list }
    // A member that has the previous commit gets only what changed: a full list to each of 1 000 members at every
    // view change was 1 000 × 110 KB, and a join storm runs dozens of view changes.
    const base = g.committed
    let delta: Frame | null = null
    const to = new Set<Member>([...members, ...excluded, ...g.leavers.map((l) => l.m)])
    for (const m of to) {
      const c = m.conn === null ? undefined : this.conns.get(m.conn)
      if (!c) continue
      if (base && c.seenView === base.viewId) this.hooks.send(m.conn!, (delta ??= { ...common, ...commitDelta(base, list) }))
      else this.hooks.send(m.conn!, full)
      c.seenView = viewId
    }
    g.committed = { viewId, members: new Map(list.map((e) => [e.no, e])) }
    for (const m of excluded) g.leavers.push({ m, viewId })
    g.members = members
    g.joiners = []
    g.viewId = viewId
    g.sequencer = members[0]?.no ?? 0
    g.lastCut = cut
    g.lastStart = start
    g.installing = { viewId, waiting: new Set(members.map((m) => m.no)) }
    // This commit took in every join, leave and failure so far (a failed participant abandons the flush instead).
    g.changeNeeded = false
    log('%s: commit view %d %o sequencer %d cut %d start %d holder %d', g.name, viewId, members.map((m) => m.id), g.sequencer, cut, start, holder)
    this.maybeInstalled(g)
    this.startChangeIfNeeded(g)
  }

  /** Every member installed the latest view: leavers excluded by it (or before) may go. */
  private maybeInstalled(g: Group): void {
    if (g.installing && g.installing.waiting.size > 0) return
    const upTo = g.installing?.viewId ?? g.viewId
    g.installing = null
    for (const l of g.leavers.filter((x) => x.viewId <= upTo)) {
      if (l.m.conn !== null) this.hooks.send(l.m.conn, { t: 'released', group: g.name })
    }
    g.leavers = g.leavers.filter((x) => x.viewId > upTo)
    this.maybeDelete(g)
  }

  private maybeDelete(g: Group): void {
    if (g.members.length === 0 && g.joiners.length === 0 && g.leavers.length === 0 && !g.flush && !g.recovering) {
      this.groups.delete(g.name)
      log('%s: empty, deleted', g.name)
    }
  }
}
