/**
 * What a commit lists besides its members (PROTOCOL.md §3.2, §5): the flush sources members fetch missing slots
 * from, and the members as a change from the previous commit for those that hold it.
 */
import type { CommitFrame, MemberEntry } from '../lib/dirproto.js'

/** A participant's answer to a prepare: it holds the slots (low, have]. */
export type Report = { no: number; low: number; have: number }

/** How many disjoint covers a commit lists: a source can be alive yet hear nothing, so members ask another (§4.7). */
const SOURCE_COVERS = 3

/**
 * Few reports that hold every slot some report holds, the holder first, each slot by up to SOURCE_COVERS of them
 * where that many hold it: members ask the holder first, then the others in turn, and call a slot no source holds
 * void (PROTOCOL.md §5) — so only the union of the ranges matters for voids, and a commit listing all 1 000
 * participants' ranges went to all 1 000 members at every view change. Each cover is the fewest ranges from what
 * earlier covers left: its head (the farthest-reaching left), then a greedy sweep below the head's `low`.
 */
export function sourcesCovering(reports: Report[], holder: Report): Report[] {
  const chosen: Report[] = []
  let pool = reports.filter((r) => r.have > r.low || r === holder)
  let head: Report | undefined = holder
  for (let k = 0; k < SOURCE_COVERS && head; k++) {
    const cover = coverFrom(pool, head)
    chosen.push(...cover)
    pool = pool.filter((r) => !cover.includes(r))
    head = [...pool].sort((a, b) => b.have - a.have || a.low - b.low)[0]
  }
  return chosen
}

/** `head`, then the fewest ranges of `pool` that hold every slot below `head.low` that some range of `pool` holds. */
function coverFrom(pool: Report[], head: Report): Report[] {
  const below = pool.filter((r) => r !== head && r.low < head.low && r.have > r.low).sort((a, b) => a.low - b.low)
  const chosen = [head]
  let covered = -1 // every slot ≤ covered is held by a chosen range, or by none at all
  for (let i = 0; i < below.length;) {
    if (below[i]!.low > covered) covered = below[i]!.low // slots up to it are in no range
    let best: Report | null = null
    for (; i < below.length && below[i]!.low <= covered; i++) if (best === null || below[i]!.have > best.have) best = below[i]!
    if (best !== null && best.have > covered) {
      chosen.push(best)
      covered = Math.min(best.have, head.low)
    }
    if (covered >= head.low) break
  }
  return chosen
}

/**
 * A commit's members as a change from the previous commit's (PROTOCOL.md §3.2): `added` also lists changed entries —
 * a new address, or a new state flag (a member that became `holds`, §8.1).
 */
export function commitDelta(base: CommitFrame, list: MemberEntry[]): { base: number; added: MemberEntry[]; removed: number[] } {
  const before = new Map(base.members.map((e) => [e.no, e]))
  const now = new Set(list.map((e) => e.no))
  return {
    base: base.viewId,
    added: list.filter((e) => { const b = before.get(e.no); return !b || b.id !== e.id || b.addr !== e.addr || b.state !== e.state }),
    removed: [...before.keys()].filter((no) => !now.has(no)),
  }
}
