/**
 * The directory's answer to `ls` (PROTOCOL.md §3): the status of its groups, in pages that each fit one frame.
 */
import type { FromDirectoryOf, GroupStatus, ToDirectoryOf } from '../lib/dirproto.js'
import { encodedSize, MAX_FRAME_FROM_DIRECTORY } from '../lib/frame.js'

/** A `status` frame's bytes besides its groups: `t`, the list's header, `next` (a group name). */
const STATUS_PAGE_OVERHEAD = 256

/**
 * Groups by name, after `after` if given (or only `group`), as many as fit in one frame; `next` names the last one
 * when more follow. One group always fits: it has at most MAX_GROUP_MEMBERS members.
 */
export function statusPage<G>(f: ToDirectoryOf<'ls'>, groups: ReadonlyMap<string, G>, statusOf: (g: G) => GroupStatus): FromDirectoryOf<'status'> {
  const { after, group: only } = f
  const names = only !== undefined ? (groups.has(only) ? [only] : []) : [...groups.keys()].sort()
  const page: GroupStatus[] = []
  let room = MAX_FRAME_FROM_DIRECTORY - STATUS_PAGE_OVERHEAD
  for (const n of names) {
    if (after !== undefined && n <= after) continue
    const status = statusOf(groups.get(n)!)
    room -= encodedSize(status)
    if (room < 0 && page.length > 0) return { t: 'status', groups: page, next: page[page.length - 1]!.name }
    page.push(status)
  }
  return { t: 'status', groups: page }
}
