/**
 * The classic group-communication API: thin functions over `Group` (group.ts).
 *
 *   const g = await grp_join('lobby', 'alice', { directory: '127.0.0.1:4720', iface: '127.0.0.1' })
 *   await grp_send(g, 'hello')
 *   const d = await grp_receive(g, { timeoutMs: 1000 })   // { type: 'view' | 'message', ... } or null
 *   await grp_leave(g)
 */
import { ArgumentError } from './errors.js'
import { Group } from './group.js'
import type { Delivery } from './host.js'
import type { JoinOptions } from './options.js'

function handle(g: unknown): Group {
  if (!(g instanceof Group)) throw new ArgumentError('the first argument must be a group handle from grp_join')
  return g
}

/** Joins `group` as `memberId`; resolves once the member is in a view. */
export function grp_join(group: string, memberId: string, opts?: JoinOptions): Promise<Group> {
  return Group.join(group, memberId, opts)
}

/** Resolves once `data` is accepted for sending (it may wait: flow control). */
export async function grp_send(g: Group, data: Uint8Array | string): Promise<void> {
  return handle(g).send(data)
}

/** The next delivery in the group's total order; null if `timeoutMs` passes first. */
export async function grp_receive(g: Group, opts: { timeoutMs?: number } = {}): Promise<Delivery | null> {
  return handle(g).receive(opts)
}

/** Announces the leave; `g` is unusable afterwards. */
export async function grp_leave(g: Group): Promise<void> {
  return handle(g).leave()
}
