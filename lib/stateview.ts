/**
 * Who gives the group's state in a view, and to whom (PROTOCOL.md §8.1), from the view's member entries alone: every
 * member of the view computes the same answer from the same commit, without a message.
 */
import type { MemberState } from './dirproto.js'

type Flagged = { readonly no: number; readonly state?: MemberState | undefined }

/** No member of the view holds the state: members that need it cannot get it (they fail with ESTATE). */
export const NO_DONOR = 0

/** The donor of a view: its lowest-numbered member marked `holds`, or NO_DONOR. */
export function donorOf(members: Iterable<Flagged>): number {
  let donor = NO_DONOR
  for (const m of members) if (m.state === 'holds' && (donor === NO_DONOR || m.no < donor)) donor = m.no
  return donor
}

/** The members of a view marked `needs`, by number as listed. */
export function needersOf(members: Iterable<Flagged>): number[] {
  const out: number[] = []
  for (const m of members) if (m.state === 'needs') out.push(m.no)
  return out
}
