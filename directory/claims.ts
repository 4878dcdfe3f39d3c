/**
 * What the directory believes of what members claim (PROTOCOL.md §5, §7): how high a `prepared` answer's `have` can
 * truthfully be, and whether a rejoin can come from a member of a group of this directory. Without a key a
 * consistent lie passes; these checks keep a lie from crashing, freezing or exhausting a group.
 */
import { MAX_SLOT, type Commit, type ToDirectoryOf } from '../lib/dirproto.js'
import { parseMulticastAddr } from '../lib/options.js'
import { SEQ_WINDOW } from '../lib/wire.js'
import { inRange, type McastRange } from './mcast.js'

/** A commit whose history a rebuilt directory cannot see may have skipped this many slots (§7). */
export const UNKNOWN_COMMIT_SLOTS = 3 * SEQ_WINDOW
/**
 * The fastest a sequencer can give out slots, per second: 50 × the best measured (docs/PERFORMANCE.md, ~200 000
 * messages a second). A `prepared` claiming more since the latest commit is a lie (PROTOCOL.md §5).
 */
export const MAX_ORDER_RATE = 10_000_000
/** The highest `have` a flush accepts: the start computed from it, after the largest skip, is still a slot. */
export const MAX_HAVE = MAX_SLOT - UNKNOWN_COMMIT_SLOTS - 1
/**
 * A rejoin's commit may not bring a group past half the view ids and member numbers (u32 in datagrams): a group
 * rebuilt from it has 2^31 view changes and joins left, not a handful.
 */
const MAX_REJOIN_VIEW_ID = 2 ** 31
const MAX_REJOIN_NEXT_NO = 2 ** 31
/** View ids a member may see in prepares (abandoned flushes, each a failure) above its latest commit. */
const MAX_UNCOMMITTED_VIEWS = 65_536

/**
 * The highest `have` a participant can truthfully report in a flush of the view that starts at `start`
 * (PROTOCOL.md §5): every slot above `start` was given by that view's sequencer, which holds all it gave — so
 * nobody holds more than `sequencerHave`, when it answered (and no unknown commit may exist, §7); and no sequencer
 * gives more than SEQ_WINDOW slots at once plus MAX_ORDER_RATE a second, over `sinceCommitMs` (null: unknown).
 */
export function haveBound(start: number, sinceCommitMs: number | null, sequencerHave: number | undefined): number {
  let bound = MAX_HAVE
  if (sinceCommitMs !== null) bound = Math.min(bound, start + SEQ_WINDOW + Math.floor(sinceCommitMs * MAX_ORDER_RATE / 1000))
  if (sequencerHave !== undefined) bound = Math.min(bound, Math.max(sequencerHave, start))
  return bound
}

/**
 * Why a rejoin cannot be from a member of a group of this directory (PROTOCOL.md §7), or null: its commit must
 * list it, use this directory's multicast `range` and port, leave the group room to go on, and equal `adopted`
 * (the commit a rebuilding group of that incarnation adopted already) if it is of the same view.
 */
export function implausibleRejoin(f: ToDirectoryOf<'rejoin'>, range: McastRange, opts: { mcastRange: string; mcastPort: number }, adopted: Commit | null): string | null {
  const c = f.commit
  if (!c.members.some((e) => e.no === f.no && e.id === f.member)) return `member ${f.member} (no ${f.no}) is not a member of the commit it carries`
  const mcast = parseMulticastAddr(c.mcast)! // checked by parseToDirectory
  if (mcast.port !== opts.mcastPort) return `its multicast address ${c.mcast} is not on this directory's port ${opts.mcastPort} (--mcast-port)`
  if (!inRange(range, mcast.host)) return `its multicast address ${c.mcast} is not in this directory's range ${opts.mcastRange} (--mcast-range)`
  if (c.viewId > MAX_REJOIN_VIEW_ID) return `commit.viewId ${c.viewId} is above ${MAX_REJOIN_VIEW_ID}`
  if (f.seenViewId > c.viewId + MAX_UNCOMMITTED_VIEWS) return `seenViewId ${f.seenViewId} is more than ${MAX_UNCOMMITTED_VIEWS} above its commit's view ${c.viewId}`
  if (c.nextNo > MAX_REJOIN_NEXT_NO) return `commit.nextNo ${c.nextNo} is above ${MAX_REJOIN_NEXT_NO}`
  if (c.start > MAX_HAVE) return `commit.start ${c.start} leaves no room for the next view (at most ${MAX_HAVE})`
  if (adopted && adopted.viewId === c.viewId && commitKey(adopted) !== commitKey(c)) {
    return `its commit of view ${c.viewId} differs from the one adopted from an earlier rejoin`
  }
  return null
}

/** A commit's content, for comparing two claims about one view (members' state flags included: data of the view). */
function commitKey(c: Commit): string {
  return JSON.stringify([c.group, c.viewId, c.inc, c.mcast, c.transport, c.sequencer, c.cut, c.start, c.holder, c.nextNo,
    c.members.map((m) => [m.no, m.id, m.addr, m.state ?? null]), c.sources.map((s) => [s.no, s.low, s.have])])
}
