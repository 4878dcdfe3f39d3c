/**
 * What the directory keeps of a group and its members (PROTOCOL.md §3, §5, §7): core.ts owns these records,
 * viewchange.ts moves them from view to view.
 */
import type { CommitFrame, GroupTransport, MemberState } from '../lib/dirproto.js'

export type ConnId = number

export interface Member {
  no: number
  id: string
  addr: string
  /** null: known from a rejoined view, not (yet) connected. */
  conn: ConnId | null
  dead: boolean
  leaving: boolean
  /** View id of the latest commit this member holds (after a directory restart: as its rejoin said). */
  commitSeen: number
  /** Its state-transfer flag (state.ts); undefined: no state hooks. */
  state: MemberState | undefined
}

export interface Flush {
  viewId: number
  participants: Member[]
  reports: Map<number, { have: number; low: number }>
  deadline: number
}

export interface Group {
  name: string
  /** The group's incarnation (16 hex digits), in every datagram: another directory's group of this name is another group. */
  inc: string
  mcast: string
  /** What the next commit carries: moves to unicast for good when a member cannot hear the multicast (§3.3). */
  transport: GroupTransport
  nextNo: number
  /** The last view id handed out (also for abandoned attempts). */
  viewCounter: number
  viewId: number
  members: Member[]
  sequencer: number
  lastStart: number
  lastCut: number
  /** When this directory committed the latest view (null: a rebuilt group's adopted commit, of unknown age). */
  committedAt: number | null
  joiners: Member[]
  /** Excluded by a commit, not yet released; with the view that excluded them. */
  leavers: Array<{ m: Member; viewId: number }>
  flush: Flush | null
  /** The latest commit, until every member installed it: who has not yet, from whom they fetch, and until when. */
  installing: { viewId: number; waiting: Set<number>; holder: number; deadline: number } | null
  changeNeeded: boolean
  /** After a directory restart: members of the rebuilt view that have not rejoined yet, until the deadline. */
  recovering: { deadline: number } | null
  /** The latest commit, as sent (or as a rejoin brought it back): resent to members that missed it. */
  lastCommit: CommitFrame | null
  /**
   * A rebuilt group in which some member saw a view id above the adopted commit: a commit this directory cannot see
   * may have reached members that never came back, so the next view skips past anything it could have ordered.
   */
  unknownCommit: boolean
}
