/**
 * The directory's state machine (PROTOCOL.md §3, §5, §7), free of sockets: frames in, frames out, through hooks.
 * The TCP server (server.ts) and the test simulator both drive this class.
 * It owns the connections and the groups (group.ts, the records), answers joins, rejoins, leaves and `ls`, and
 * judges members' liveness; where each piece lives:
 *   viewchange.ts  a group's view changes: prepare, collect `prepared`, commit, track the install, expel the overdue,
 *                  and end a rebuilt group's recovery after a restart (§5, §7)
 *   commits.ts     what a commit lists besides its members: flush sources, member deltas
 *   claims.ts      which `prepared` and `rejoin` claims are believed
 *   state.ts       members' state-transfer flags (§8.1)
 *   keys.ts        a keyed directory's keys and their rotation (§3.5)
 *   mcast.ts       groups' addresses;  status.ts  `ls` pages
 */
import { randomBytes } from 'node:crypto'
import { ErrorCodes, ProtocolError, RotateError } from '../lib/errors.js'
import { MAX_TIMEOUT_MS, parseToDirectory, type Commit, type FromDirectoryWire, type GroupStatus, type ToDirectoryOf } from '../lib/dirproto.js'
import { MAX_GROUP_MEMBERS, type Frame } from '../lib/frame.js'
import { logger } from '../lib/log.js'
import { parseIncarnation, SEQ_WINDOW } from '../lib/wire.js'
import { implausibleRejoin } from './claims.js'
import type { ConnId, Group, Member } from './group.js'
import { mcastAddress, parseRange, type McastRange } from './mcast.js'
import { statusPage } from './status.js'
import { adoptedState, entryOf, joinState, markReady } from './state.js'
import { KeyRing } from './keys.js'
import { ViewChanges } from './viewchange.js'

const log = logger('dir')

export { SEQ_WINDOW }
export type { ConnId }

export interface DirectoryHooks {
  /** Deliver a frame on that connection (reliable, FIFO). */
  send(conn: ConnId, frame: FromDirectoryWire): void
  /** Close that connection; the host then calls closed(). */
  close(conn: ConnId, reason: string): void
  now(): number
  /** 64 random bits, not all zero, as 16 hex digits: a new group's incarnation. Default: crypto.randomBytes. */
  randomIncarnation?(): string
  /** What an operator sees at the default log level (`dir` prints it); without it, the `seqcast:dir` debug log. */
  info?(message: string): void
  /** A keyed directory rotates to this key: store it for a restart (throws if it cannot: the rotation is refused). */
  persistKey?(key: Buffer): void
}

/**
 * How the directory's groups send DATA and ORDER: `multicast` and `unicast` for every group; `auto` starts each group
 * on multicast and moves it to unicast when a member cannot hear it (a `deaf` frame).
 */
export type TransportMode = 'multicast' | 'unicast' | 'auto'
const TRANSPORT_MODES: readonly TransportMode[] = ['multicast', 'unicast', 'auto']

export interface DirectoryOptions {
  /** Multicast addresses are handed out from this IPv4 range, e.g. '239.255.0.0/16'. */
  mcastRange: string
  mcastPort: number
  /** Members ping this often (sent to them as `welcome.heartbeatMs`, the wire's name for it). */
  pingMs: number
  timeoutMs: number
  flushTimeoutMs: number
  /**
   * A directory that starts cannot know whether it restarted: for this long after its start, a group it does not
   * know waits for rejoins (which bring the group's identity and history) before a join may create it afresh.
   */
  rejoinGraceMs: number
  transport: TransportMode
  /**
   * A connection that has not joined (or rejoined) is closed this long after it opened or after its last `ls`:
   * a stranger's connections are not kept for ever. A member is judged by its heartbeats (timeoutMs) instead.
   */
  unjoinedTimeoutMs: number
  /** Connections beyond this many are refused (an `error` frame, then closed) and logged. */
  maxConnections: number
  /** The group key (32 bytes): links must authenticate with it, and the keys frames hand it out (§3.4, §3.5). */
  key: Buffer | null
}

export const DEFAULT_DIRECTORY_OPTIONS: DirectoryOptions = {
  mcastRange: '239.255.0.0/16',
  mcastPort: 46100,
  pingMs: 500,
  timeoutMs: 2000,
  flushTimeoutMs: 2000,
  rejoinGraceMs: 2500,
  transport: 'auto',
  unjoinedTimeoutMs: 10_000,
  // Ten full groups with room for their members' reconnections; each costs a socket and a frame buffer.
  maxConnections: 10_000,
  key: null,
}

/** Refused connections are logged at most this often (a flood would otherwise be a flood of log lines). */
const REFUSAL_LOG_MS = 10_000

interface Conn {
  lastSeen: number
  /** Until it joins: when it is closed unless it joins (or asks `ls`) before. */
  joinBy: number
  /** The view id of the last commit sent on this connection: the next may be sent as a delta from it. */
  seenView?: number
  group?: string
  member?: Member
}

export class DirectoryCore {
  private readonly groups = new Map<string, Group>()
  private readonly conns = new Map<ConnId, Conn>()
  private readonly range: McastRange
  private readonly startedAt: number
  /** Connections refused since the last log line about them, and when that was. */
  private refused = { count: 0, loggedAt: -Infinity }
  /** A keyed directory's keys and their rotation (keys.ts); null without a key. */
  readonly keys: KeyRing | null
  private readonly changes: ViewChanges

  constructor(readonly opts: DirectoryOptions, private readonly hooks: DirectoryHooks) {
    this.range = parseRange(opts.mcastRange)
    // Renamed options (one name per timer, PROTOCOL.md §6): a program still passing an old name would otherwise run
    // with the default, silently.
    for (const [old, now] of [['heartbeatMs', 'pingMs'], ['joinTimeoutMs', 'unjoinedTimeoutMs']] as const) {
      if (old in opts) throw new Error(`the directory option ${old} is now called ${now}`)
    }
    // What every `welcome` announces: members refuse one they could not keep (lib/dirproto.ts).
    const { pingMs: ping, timeoutMs: to } = opts
    if (!Number.isInteger(ping) || !Number.isInteger(to) || ping < 1 || to <= ping || to > MAX_TIMEOUT_MS) {
      throw new Error(`pingMs (${ping}) and timeoutMs (${to}) must be integers with 1 <= pingMs < timeoutMs <= ${MAX_TIMEOUT_MS}`)
    }
    if (!TRANSPORT_MODES.includes(opts.transport)) throw new Error(`transport must be one of ${TRANSPORT_MODES.join(', ')}, got ${String(opts.transport)}`)
    for (const k of ['unjoinedTimeoutMs', 'maxConnections'] as const) {
      if (!Number.isInteger(opts[k]) || opts[k] < 1) throw new Error(`${k} must be an integer of at least 1, got ${opts[k]}`)
    }
    this.startedAt = hooks.now()
    this.keys = opts.key === null ? null : new KeyRing(opts.key, opts.timeoutMs, {
      send: (conn, f) => hooks.send(conn, f),
      expel: (conn, reason) => this.expel(conn, reason),
      persist: (key) => hooks.persistKey?.(key),
      rotated: (conn) => {
        const c = this.conns.get(conn)
        if (c && !c.member) c.joinBy = hooks.now() + opts.unjoinedTimeoutMs
      },
      now: () => hooks.now(),
      info: (message) => this.info(message),
    })
    this.changes = new ViewChanges(opts, {
      send: (conn, f) => hooks.send(conn, f),
      expel: (conn, reason) => this.expel(conn, reason),
      info: (message) => this.info(message),
      now: () => hooks.now(),
      conn: (conn) => this.conns.get(conn),
      maybeDelete: (g) => this.maybeDelete(g),
    })
  }

  /** A new connection; beyond maxConnections it is refused (told why, closed: the host then calls closed()). */
  opened(conn: ConnId): void {
    const now = this.hooks.now()
    if (this.conns.size >= this.opts.maxConnections) {
      this.refused.count++
      if (now - this.refused.loggedAt >= REFUSAL_LOG_MS) {
        this.info(`refused ${this.refused.count} connection(s): this directory has ${this.opts.maxConnections} connections, the most it takes (maxConnections)`)
        this.refused = { count: 0, loggedAt: now }
      }
      this.hooks.send(conn, { t: 'error', code: ErrorCodes.DIRECTORY_UNREACHABLE, message: `the directory has ${this.opts.maxConnections} connections, the most it takes` })
      this.hooks.close(conn, 'too many connections')
      return
    }
    this.conns.set(conn, { lastSeen: now, joinBy: now + this.opts.unjoinedTimeoutMs })
  }

  /**
   * Handles one frame; throws ProtocolError on a malformed or invalid one (the host then closes the connection).
   * Every field is checked (lib/dirproto.ts) before anything acts on it.
   */
  frame(conn: ConnId, raw: Frame): void {
    const c = this.conns.get(conn)
    if (!c) return
    const f = parseToDirectory(raw)
    c.lastSeen = this.hooks.now()
    switch (f.t) {
      case 'ping':
        this.hooks.send(conn, { t: 'pong' })
        return
      case 'ls':
        if (!c.member) c.joinBy = c.lastSeen + this.opts.unjoinedTimeoutMs
        this.hooks.send(conn, statusPage(f, this.groups, (g) => this.groupStatus(g)))
        return
      case 'join':
        return this.onJoin(conn, c, f)
      case 'rejoin':
        return this.onRejoin(conn, c, f)
      case 'keyed':
        if (!this.keys) throw new ProtocolError(ErrorCodes.BAD_REQUEST, 'frame keyed: this directory has no key')
        return this.keys.keyed(conn, f.seq)
      case 'rotate':
        if (!this.keys) throw new RotateError('this directory has no key to rotate (start it with --key-file)')
        this.keys.rotate(conn, f.key)
        // The connection waits for `rotated`: the join timeout does not apply meanwhile.
        if (!c.member) c.joinBy = Infinity
        return
    }
    const m = c.member
    const g = c.group === undefined ? undefined : this.groups.get(c.group)
    if (!m) throw new ProtocolError(ErrorCodes.BAD_REQUEST, `frame ${f.t} before join`)
    // A member released from a group since deleted may still be sending what it sent before `released` reached it.
    if (!g) return void log('%s: %s from %s after its group was deleted; ignored', c.group, f.t, m.id)
    if (f.group !== g.name) throw new ProtocolError(ErrorCodes.BAD_REQUEST, `frame ${f.t} names another group`)
    switch (f.t) {
      case 'leave':
        if (!m.leaving) {
          m.leaving = true
          log('%s: %s asks to leave', g.name, m.id)
          this.changes.need(g)
        }
        return
      case 'prepared':
        return this.changes.prepared(g, m, f.viewId, f.have, f.low)
      case 'installed':
        return this.changes.installed(g, m, f.viewId)
      case 'suspect':
        return this.onSuspect(g, m, f)
      case 'deaf':
        return this.onDeaf(conn, g, m, f)
      case 'ready':
        if (markReady(g.members, m)) log('%s: %s (no %d) holds the state from the next commit on', g.name, m.id, m.no)
        return
    }
  }

  /** The connection is gone: its member, if any, failed. Idempotent. */
  closed(conn: ConnId): void {
    const c = this.conns.get(conn)
    if (!c) return
    this.conns.delete(conn)
    this.keys?.closed(conn)
    const g = c.group === undefined ? undefined : this.groups.get(c.group)
    if (g && c.member) this.memberFailed(g, c.member, 'connection closed')
  }

  /**
   * Timeouts: connections that do not join, silent members; and the view changes' deadlines (viewchange.ts):
   * participants that do not answer a prepare, members that do not install, members that never rejoined.
   */
  tick(): void {
    const now = this.hooks.now()
    for (const [conn, c] of this.conns) {
      if (c.member && now - c.lastSeen > this.opts.timeoutMs) this.expel(conn, `no heartbeat for ${this.opts.timeoutMs} ms`)
      else if (!c.member && now > c.joinBy) {
        this.conns.delete(conn)
        this.hooks.close(conn, `no join within ${this.opts.unjoinedTimeoutMs} ms`)
      }
    }
    this.keys?.tick()
    for (const g of [...this.groups.values()]) this.changes.tick(g, now)
  }

  status(): GroupStatus[] {
    return [...this.groups.values()].map((g) => this.groupStatus(g))
  }

  private groupStatus(g: Group): GroupStatus {
    return {
      name: g.name,
      viewId: g.viewId,
      members: g.members.filter((m) => !m.dead).map(entryOf),
      sequencer: g.members.find((m) => m.no === g.sequencer)?.id ?? '',
      mcast: g.mcast,
      // What the members use: the latest commit's, until the next commit carries a change.
      transport: g.lastCommit?.transport ?? g.transport,
      state: g.recovering ? 'recovering' : g.flush ? 'flushing' : g.installing ? 'installing' : 'stable',
    }
  }

  // ---------------------------------------------------------------- joining

  private onJoin(conn: ConnId, c: Conn, f: ToDirectoryOf<'join'>): void {
    if (c.member) throw new ProtocolError(ErrorCodes.BAD_REQUEST, 'this connection has joined already')
    const { group: groupName, member: id, addr } = f
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
    if (!g) {
      g = this.createGroup(groupName, this.newIncarnation())
      // Just started: this may be a restart, and the group's members may be about to rejoin (§7).
      const graceEnd = this.startedAt + this.opts.rejoinGraceMs
      if (this.hooks.now() < graceEnd) g.recovering = { deadline: graceEnd }
    }
    const m: Member = { no: g.nextNo++, id, addr, conn, dead: false, leaving: false, commitSeen: 0, state: joinState(f.state) }
    c.group = g.name
    c.member = m
    g.joiners.push(m)
    this.welcome(conn, m.no)
    log('%s: %s joins as no %d from %s', g.name, id, m.no, addr)
    this.changes.need(g)
  }

  /**
   * A member that lost its directory connection (not expelled) reattaches with the latest commit it received
   * (PROTOCOL.md §7). A directory that restarted rebuilds the group from these: identity, the latest commit any
   * member holds, member numbers and view ids above anything any member saw.
   */
  private onRejoin(conn: ConnId, c: Conn, f: ToDirectoryOf<'rejoin'>): void {
    if (c.member) throw new ProtocolError(ErrorCodes.BAD_REQUEST, 'this connection has joined already')
    const { group: groupName, member: id, no, addr, seenViewId: seen, commit } = f
    let g = this.groups.get(groupName)
    const refuse = (reason: string): void => {
      this.hooks.send(conn, { t: 'expelled', group: groupName, reason })
      this.hooks.close(conn, 'rejoin refused')
    }
    const adopted = g?.recovering && g.inc === commit.inc ? g.lastCommit : null
    const wrong = implausibleRejoin(f, this.range, this.opts, adopted)
    if (wrong !== null) {
      this.info(`${groupName}: rejoin of ${id} (no ${no}) refused: ${wrong}`)
      return refuse(wrong)
    }
    if (g && g.inc !== commit.inc) {
      // Only joiners that arrived before the rejoins (no view committed yet): the group with a history wins.
      if (g.viewId !== 0 || g.members.length > 0) return refuse(`group ${groupName} here is another incarnation`)
      g.inc = commit.inc
      g.mcast = commit.mcast
      g.recovering ??= { deadline: this.hooks.now() + this.recoveryMs }
      this.adopt(g, commit)
      for (const j of g.joiners) {
        j.no = g.nextNo++ // numbers of the group's history are taken
        if (j.conn !== null) this.welcome(j.conn, j.no)
      }
    } else if (!g) {
      g = this.createGroup(groupName, commit.inc, commit.mcast)
      g.recovering = { deadline: this.hooks.now() + this.recoveryMs }
      this.adopt(g, commit)
      log('%s: rebuilding from %s\'s commit of view %d', g.name, id, commit.viewId)
    } else if (g.recovering && (commit.viewId) > g.viewId) {
      this.adopt(g, commit)
    }
    const m = g.members.find((x) => x.no === no && x.id === id && !x.dead && x.conn === null)
    if (!m || !g.recovering) return refuse(`not a member of view ${g.viewId}`)
    // Only an accepted rejoin moves the group's counters: a refused one changes nothing.
    g.viewCounter = Math.max(g.viewCounter, seen)
    g.nextNo = Math.max(g.nextNo, commit.nextNo)
    m.conn = conn
    m.addr = addr
    m.commitSeen = commit.viewId
    m.leaving = f.leaving === true
    c.group = g.name
    c.member = m
    this.welcome(conn, m.no)
    if (g.members.every((x) => x.conn !== null || x.dead)) this.changes.recovered(g, 'every member rejoined')
  }

  /** Takes a commit a rejoin brought back as the group's latest: members that rejoined but are not in it are expelled. */
  private adopt(g: Group, commit: Commit): void {
    const members = commit.members
    const attached = new Map(g.members.filter((m) => m.conn !== null).map((m) => [m.no, m]))
    g.members = members.map((e) => {
      const m = attached.get(e.no) ?? { no: e.no, id: e.id, addr: e.addr, conn: null, dead: false, leaving: false, commitSeen: 0, state: undefined }
      m.state = adoptedState(m.state, e.state)
      return m
    })
    g.viewId = commit.viewId
    g.viewCounter = Math.max(g.viewCounter, g.viewId)
    g.sequencer = commit.sequencer
    g.lastStart = commit.start
    g.lastCut = commit.cut
    g.committedAt = null
    // The group's transport as its members use it; a unicast directory moves it at the next commit. Never back.
    g.transport = commit.transport === 'unicast' || this.opts.transport === 'unicast' ? 'unicast' : 'multicast'
    g.nextNo = Math.max(g.nextNo, commit.nextNo, ...members.map((m) => m.no + 1))
    g.lastCommit = { t: 'commit', ...commit }
    for (const m of attached.values()) {
      if (!members.some((x) => x.no === m.no) && m.conn !== null) this.expel(m.conn, `view ${g.viewId} excludes this member`)
    }
  }

  /**
   * How long a rebuilt group waits for its members after the first rejoin: members retry every 250 ms doubling to
   * 2 s while the directory is down, so the last may come 2 s after the first — the rejoin grace covers that.
   */
  private get recoveryMs(): number {
    return Math.max(this.opts.timeoutMs, this.opts.rejoinGraceMs)
  }

  private createGroup(groupName: string, inc: string, mcast = this.allocateMcast(inc)): Group {
    const g: Group = {
      name: groupName, inc, mcast, transport: this.opts.transport === 'unicast' ? 'unicast' : 'multicast', nextNo: 1, viewCounter: 0,
      viewId: 0, members: [], sequencer: 0, lastStart: 0, lastCut: 0, committedAt: null,
      joiners: [], leavers: [], flush: null, installing: null, changeNeeded: false, recovering: null, lastCommit: null,
      unknownCommit: false,
    }
    this.groups.set(groupName, g)
    return g
  }

  private newIncarnation(): string {
    for (;;) {
      const inc = this.hooks.randomIncarnation?.() ?? randomBytes(8).toString('hex')
      if (parseIncarnation(inc)) return inc
    }
  }

  /** An address for a new group of incarnation `inc` (mcast.ts), one no other group here has if the range allows. */
  private allocateMcast(inc: string): string {
    return mcastAddress(this.range, this.opts.mcastPort, inc, new Set([...this.groups.values()].map((g) => g.mcast)))
  }

  // ---------------------------------------------------------------- failures

  /**
   * A member that makes no progress is reported (PROTOCOL.md §4.7): it is expelled like a member that stopped
   * pinging. Heeded from the sequencer of the current view about any member of it (itself included), and from any
   * other member of the current view about the sequencer only (it orders none of that member's messages, §4.7, 5) —
   * one member's word is enough: it could force a view change anyway, by leaving and joining again. Only outside a
   * flush: a report from an older view, or one that crossed a view change, is stale and dropped (the new sequencer
   * judges afresh, and is watched afresh).
   */
  private onSuspect(g: Group, from: Member, f: ToDirectoryOf<'suspect'>): void {
    const { viewId, no } = f
    const reason = f.reason?.slice(0, 200) ?? 'no progress'
    const target = g.members.find((x) => x.no === no && !x.dead)
    const bySequencer = from.no === g.sequencer
    const byMember = !bySequencer && no === g.sequencer && g.members.some((x) => x.no === from.no && !x.dead)
    if (viewId !== g.viewId || !(bySequencer || byMember) || g.flush || !target || target.conn === null) {
      log('%s: stale or unauthorised suspicion of %d by %s in view %d (current view %d) ignored', g.name, no, from.id, viewId, g.viewId)
      return
    }
    if (bySequencer) {
      log('%s: sequencer %s reports %s (no %d): %s', g.name, from.id, target.id, no, reason)
      this.expel(target.conn, `excluded for lack of progress: ${reason}`)
    } else {
      log('%s: %s (no %d) reports the sequencer %s (no %d): %s', g.name, from.id, from.no, target.id, no, reason)
      this.expel(target.conn, `excluded for lack of progress: member ${from.id} reports: ${reason}`)
    }
  }

  /**
   * A member of the current view hears the sequencer by unicast but not the group's multicast (PROTOCOL.md §3.3).
   * `auto`: the whole group moves to unicast at the commit of a view change (same members) started now — never one
   * member alone, and never back. `multicast`: that member cannot be served; it is told why (ENOMULTICAST) and
   * closed. A group on unicast already, or a report of an older view, changes nothing.
   */
  private onDeaf(conn: ConnId, g: Group, m: Member, f: ToDirectoryOf<'deaf'>): void {
    if (f.viewId !== g.viewId || g.transport === 'unicast') {
      log('%s: deaf report by %s in view %d ignored (view %d, %s)', g.name, m.id, f.viewId, g.viewId, g.transport)
      return
    }
    if (this.opts.transport === 'multicast') {
      const message = `member ${m.id} cannot hear the multicast of group ${g.name} (${g.mcast}); this directory runs --transport multicast: run it with --transport unicast or auto`
      this.info(`${g.name}: ${message}`)
      this.hooks.send(conn, { t: 'error', code: ErrorCodes.MULTICAST_UNREACHABLE, message })
      this.hooks.close(conn, 'cannot hear the multicast')
      this.closed(conn)
      return
    }
    g.transport = 'unicast'
    this.info(`${g.name}: member ${m.id} (no ${m.no}) cannot hear the multicast ${g.mcast} in view ${g.viewId}; the group moves to unicast at the next commit`)
    this.changes.need(g)
  }

  private info(message: string): void {
    if (this.hooks.info) this.hooks.info(message)
    else log('%s', message)
  }

  /** A member's connection is accepted as member `no`: with a key, first the keys it seals and opens with. */
  private welcome(conn: ConnId, no: number): void {
    this.keys?.member(conn)
    this.hooks.send(conn, { t: 'welcome', no, heartbeatMs: this.opts.pingMs, timeoutMs: this.opts.timeoutMs })
  }

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
    this.changes.failed(g, m)
    this.maybeDelete(g)
  }

  private maybeDelete(g: Group): void {
    if (this.groups.get(g.name) === g && g.members.length === 0 && g.joiners.length === 0 && g.leavers.length === 0 && !g.flush && !g.recovering) {
      this.groups.delete(g.name)
      log('%s: empty, deleted', g.name)
    }
  }
}

