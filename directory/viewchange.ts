/**
 * A group's view changes at the directory (PROTOCOL.md §5, §7), free of sockets: the core (core.ts) hands it the
 * frames and failures that concern them, and it sends prepares and commits through hooks. One change at a time:
 *
 *   stable ──change needed──▶ flushing (prepare sent, collecting `prepared`) ──all answered──▶ commit
 *   commit ──▶ installing (until every new member sent `installed`; leavers are released then; members that have
 *              not within 2 × timeoutMs are expelled — or the holder, if that is most of them)
 *
 * A failure during a flush abandons it and starts another with a new view id. A change may start while the
 * previous view is still installing: members apply commits in order whatever their state. A group rebuilt after a
 * directory restart (`recovering`) starts none until its members rejoined or its deadline passed.
 */
import type { CommitDelta, CommitFrame, FromDirectoryWire } from '../lib/dirproto.js'
import { logger } from '../lib/log.js'
import { SEQ_WINDOW } from '../lib/wire.js'
import { commitDelta, sourcesCovering } from './commits.js'
import { haveBound, UNKNOWN_COMMIT_SLOTS } from './claims.js'
import type { ConnId, Group, Member } from './group.js'
import { entryOf, settleJoiners } from './state.js'

const log = logger('dir')

export interface ViewChangeHooks {
  send(conn: ConnId, frame: FromDirectoryWire): void
  /** Remove a member (the core's expel: the member fails, which may abandon the flush under way). */
  expel(conn: ConnId, reason: string): void
  info(message: string): void
  now(): number
  /** That connection's record, where the view of the last commit sent on it is kept; undefined: it is closed. */
  conn(conn: ConnId): { seenView?: number } | undefined
  /** The group may be empty now: the core forgets it if so. */
  maybeDelete(g: Group): void
}

export class ViewChanges {
  constructor(private readonly opts: { flushTimeoutMs: number; timeoutMs: number }, private readonly hooks: ViewChangeHooks) {}

  /** Something changed the view (a join, a leave, a failure, a move to unicast): a change starts when it can. */
  need(g: Group): void {
    g.changeNeeded = true
    this.startIfNeeded(g)
  }

  /** `prepared` from `m`: counted if it answers the flush under way, of which `m` is a participant. */
  prepared(g: Group, m: Member, viewId: number, have: number, low: number): void {
    if (g.flush && g.flush.viewId === viewId && g.flush.participants.includes(m)) {
      g.flush.reports.set(m.no, { have, low })
      this.maybeCommit(g)
    }
  }

  /**
   * `installed` from `m`: it holds the view `viewId`. Only the commit under way counts (PROTOCOL.md §5.2): one of a
   * view not committed yet comes from no member that holds it, and must not spare it the install deadline.
   */
  installed(g: Group, m: Member, viewId: number): void {
    if (g.installing && viewId === g.installing.viewId) {
      g.installing.waiting.delete(m.no)
      this.maybeInstalled(g)
    }
  }

  /** Member `m` (marked dead already) failed: whatever waited for it does not any more. */
  failed(g: Group, m: Member): void {
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
    if (abandoned || g.members.includes(m) || (wasLeaver && g.installing)) this.need(g)
    else this.maybeInstalled(g)
  }

  /** Deadlines: participants that do not answer a prepare, members that do not install, members that never rejoined. */
  tick(g: Group, now: number): void {
    const f = g.flush
    if (f && now > f.deadline) {
      // Judged against this flush only: expelling the first silent one abandons it and starts another, whose
      // (still empty) answers must not condemn those who answered this one.
      const silent = f.participants.filter((p) => !f.reports.has(p.no) && p.conn !== null)
      for (const p of silent) if (p.conn !== null) this.hooks.expel(p.conn, `no answer to prepare within ${this.opts.flushTimeoutMs} ms`)
    }
    if (g.installing && !g.flush && now > g.installing.deadline) this.installOverdue(g)
    if (g.recovering && now > g.recovering.deadline) this.recovered(g, 'members that did not rejoin are removed')
  }

  /** A rebuilt group is complete (or its deadline passed): the absent are failed, and a view change settles it. */
  recovered(g: Group, why: string): void {
    g.recovering = null
    // A member saw a view id above the adopted commit: a commit nobody here holds may exist.
    g.unknownCommit = g.viewCounter > g.viewId
    for (const m of g.members) if (m.conn === null) m.dead = true
    // Members that had not received the latest commit get it first: they apply commits in order.
    for (const m of g.members) {
      if (m.dead || m.conn === null || !g.lastCommit || m.commitSeen >= g.viewId) continue
      this.hooks.send(m.conn, g.lastCommit)
      m.commitSeen = g.viewId
    }
    log('%s: rebuilt (%s); a view change settles it', g.name, why)
    // Always: whatever was under way when the directory died (a flush, an install) is ended by a new change.
    if (g.viewId !== 0) g.changeNeeded = true
    this.startIfNeeded(g)
    this.hooks.maybeDelete(g)
  }

  private startIfNeeded(g: Group): void {
    if (!g.changeNeeded || g.flush || g.recovering) return
    g.changeNeeded = false
    const participants = [...g.members.filter((m) => !m.dead && m.conn !== null), ...g.leavers.map((l) => l.m)]
    if (participants.length === 0 && !g.joiners.some((m) => !m.dead)) {
      // Nobody left to receive a view (every member failed, no joiner waits): no commit, the group is over.
      g.members = []
      g.installing = null
      this.hooks.maybeDelete(g)
      return
    }
    const viewId = ++g.viewCounter
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
    const seq = g.unknownCommit ? undefined : f.reports.get(g.sequencer)
    const bound = haveBound(g.lastStart, g.committedAt === null ? null : this.hooks.now() - g.committedAt, seq?.have)
    const liars = f.participants.filter((p) => f.reports.get(p.no)!.have > bound)
    if (liars.length > 0) {
      // Each expulsion abandons this attempt; the next runs without the liars.
      for (const p of liars) {
        const why = `prepared view ${f.viewId} with have ${f.reports.get(p.no)!.have}, above ${bound}, the most any member can hold`
        this.hooks.info(`${g.name}: ${p.id} (no ${p.no}) ${why}; expelling it`)
        if (p.conn !== null) this.hooks.expel(p.conn, why)
      }
      return
    }
    const reports = [...f.reports.entries()].map(([no, r]) => ({ no, ...r }))
    const cut = Math.max(...reports.map((r) => r.have))
    // Every participant can serve the slots in (low, have]; a recovering member asks one whose range covers the
    // slot it lacks. The holder is the one that covers the most: the lowest `low` among those with have = cut.
    const holder = reports.filter((r) => r.have === cut).sort((a, b) => a.low - b.low || a.no - b.no)[0]!
    // If the old sequencer answered, it reported everything it assigned; otherwise skip past its window. Never
    // below the last committed view's slot either: when nobody installed that view (a participant failed right
    // after its commit), `cut` is older than it, and the slots it skipped may still hold what a dead sequencer
    // ordered and dead members delivered.
    // After a restart in which a member saw a view id this directory cannot see, a commit may have reached only
    // members that never came back, and its sequencer ordered slots nobody here knows of (PROTOCOL.md §7).
    const seqAnswered = f.participants.some((p) => p.no === g.sequencer)
    const skip = g.unknownCommit ? UNKNOWN_COMMIT_SLOTS : seqAnswered ? 0 : SEQ_WINDOW
    g.unknownCommit = false
    const start = Math.max(cut, g.lastStart) + skip + 1
    g.flush = null
    this.commit(g, f.viewId, cut, start, holder.no, sourcesCovering(reports, holder))
  }

  private commit(g: Group, viewId: number, cut: number, start: number, holder: number, sources: Array<{ no: number; low: number; have: number }> = []): void {
    const staying = g.members.filter((m) => !m.dead && !m.leaving && m.conn !== null)
    const joiners = g.joiners.filter((m) => !m.dead)
    const members = [...staying, ...joiners].sort((a, b) => a.no - b.no)
    const excluded = g.members.filter((m) => !m.dead && m.leaving && m.conn !== null)
    settleJoiners(staying, joiners)
    const list = members.map(entryOf)
    const common = {
      t: 'commit' as const, group: g.name, viewId, sequencer: members[0]?.no ?? 0, cut, start, holder, sources, mcast: g.mcast, inc: g.inc,
      nextNo: g.nextNo, transport: g.transport,
    }
    const full: CommitFrame = { ...common, members: list }
    // A member that has the previous commit gets only what changed: a full list to each of 1 000 members at every
    // view change was 1 000 × 110 KB, and a join storm runs dozens of view changes.
    const base = g.lastCommit
    g.lastCommit = full
    let delta: CommitDelta | null = null
    const to = new Set<Member>([...members, ...excluded, ...g.leavers.map((l) => l.m)])
    for (const m of to) {
      const c = m.conn === null ? undefined : this.hooks.conn(m.conn)
      if (!c) continue
      if (base && c.seenView === base.viewId) this.hooks.send(m.conn!, (delta ??= { ...common, ...commitDelta(base, list) }))
      else this.hooks.send(m.conn!, full)
      c.seenView = viewId
      m.commitSeen = viewId
    }
    for (const m of excluded) g.leavers.push({ m, viewId })
    g.members = members
    g.joiners = []
    g.viewId = viewId
    g.sequencer = members[0]?.no ?? 0
    g.lastCut = cut
    g.lastStart = start
    g.committedAt = this.hooks.now()
    g.installing = { viewId, waiting: new Set(members.map((m) => m.no)), holder, deadline: this.hooks.now() + 2 * this.opts.timeoutMs }
    // This commit took in every join, leave and failure so far (a failed participant abandons the flush instead).
    g.changeNeeded = false
    // Holder 0: no participant (the first view, or every member failed); its cut is start − 1 by construction.
    if (holder === 0) log('%s: commit view %d %o sequencer %d, no participants: stream restarts at %d', g.name, viewId, members.map((m) => m.id), g.sequencer, start)
    else log('%s: commit view %d %o sequencer %d cut %d start %d holder %d', g.name, viewId, members.map((m) => m.id), g.sequencer, cut, start, holder)
    this.maybeInstalled(g)
    this.startIfNeeded(g)
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
    this.hooks.maybeDelete(g)
  }

  /**
   * Members that did not install the latest view within 2 × timeoutMs of its commit (PROTOCOL.md §4.7): nothing
   * else would notice — its sequencer may be one of them, and watches nobody until it has installed. They cannot
   * fetch up to the cut (they receive nothing), and are expelled; unless they are most of the view, which points at
   * the one they fetch from first, the holder: then it is expelled instead.
   */
  private installOverdue(g: Group): void {
    const inst = g.installing!
    inst.deadline = Infinity // one verdict per commit: the view change it starts judges afresh
    const late = g.members.filter((m) => inst.waiting.has(m.no) && !m.dead && m.conn !== null)
    // The holder holds every slot up to the cut, so it installs at once: one that has not is paused or lies.
    const holder = [...g.members, ...g.leavers.map((l) => l.m)].find((m) => m.no === inst.holder && !m.dead && m.conn !== null)
    const blameHolder = 2 * late.length > g.members.length && holder !== undefined
    const blamed = blameHolder ? [holder] : late
    const why = blameHolder
      ? `most members could not install view ${inst.viewId} within ${2 * this.opts.timeoutMs} ms from this holder`
      : `did not install view ${inst.viewId} within ${2 * this.opts.timeoutMs} ms`
    for (const m of blamed) if (m.conn !== null) this.hooks.expel(m.conn, `excluded for lack of progress: ${why}`)
  }
}
