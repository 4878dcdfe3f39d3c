/**
 * State transfer as one member lives it (PROTOCOL.md §8): who gives the state and who waits for it, computed from
 * each view it delivers; the donor's snapshot at the moment its application takes such a view; the joiner's hold on
 * deliveries until `restore` resolved, and its restart when the donor changes. The data path is statexfer.ts; the
 * host (group.ts, or the simulator) wires engine deliveries, STATE datagrams, the tick and the inbox to it.
 *
 *   joiner:  waiting ──first view (needs)──▶ pulling ──restore resolved──▶ ready (sends `ready`, releases the inbox)
 *               │  first view (holds: a first member) ─────────────────────▶ ready                 ▲
 *               │                            pulling ──a view with another donor──▶ pulling (from byte 0, new point)
 *               └──no donor / stateTimeoutMs / restore throws──▶ failed (ESTATE)
 */
import { StateError } from './errors.js'
import type { Delivery } from './host.js'
import type { Inbox } from './inbox.js'
import type { StateHooks } from './options.js'
import { NO_DONOR } from './stateview.js'
import { StateDonor, StateJoiner } from './statexfer.js'
import { Kind, type Incarnation, type StateData, type StateReq } from './wire.js'

export interface StateMemberEnv {
  /** This member's number (0 before its welcome). */
  me(): number
  inc(): Incarnation
  now(): number
  maxDatagram: number
  stateTimeoutMs: number
  /** Unicast to member `no` at its view address. */
  send(no: number, buf: Buffer): void
  /**
   * The view this member installed last, delivered or not (undefined before the first): while its held deliveries
   * are full the engine delivers nothing, and the view that names a new donor must still be seen.
   */
  installed(): number | undefined
  /** Who gives the state in view `viewId` and who needs it, and its members (undefined: a view it does not know). */
  stateOf(viewId: number): { donor: number; needs: number[]; members: number[] } | undefined
  inbox: Inbox
  /** The joiner has its state (or is a first member): tell the directory, let the join resolve. */
  ready(sendReady: boolean): void
  fail(err: StateError): void
  log(fmt: string, ...args: unknown[]): void
}

type Phase = 'waiting' | 'pulling' | 'ready' | 'failed'

export class StateMember {
  phase: Phase = 'waiting'
  private readonly donor: StateDonor
  private readonly joiner: StateJoiner
  /** Views this member is the donor of, with who needs the state: the snapshot is taken when the application takes the view. */
  private readonly toSnapshot = new Map<number, number[]>()
  /** The stream given to the latest `restore`: only its end counts. */
  private current: AsyncIterable<Uint8Array> | null = null
  private restored = false
  private consumed = false
  private members = new Set<number>()
  /** The state point of the transfer under way: views delivered before it change nothing (their deliveries are dropped). */
  private point = 0

  /** A member joining with hooks: it waits for the state (or learns from its first view that it is a first member). */
  constructor(private readonly hooks: StateHooks, private readonly env: StateMemberEnv) {
    const opts = { maxDatagram: env.maxDatagram, stateTimeoutMs: env.stateTimeoutMs }
    this.donor = new StateDonor(opts, {
      get me() { return env.me() },
      get inc() { return env.inc() },
      now: () => env.now(),
      send: (to, buf) => env.send(to, buf),
      snapshotFailed: (viewId, err) => env.log('state: the snapshot of view %d failed: %s', viewId, (err as Error)?.message ?? err),
    })
    this.joiner = new StateJoiner(opts, {
      get me() { return env.me() },
      get inc() { return env.inc() },
      now: () => env.now(),
      send: (to, buf) => env.send(to, buf),
      done: () => {
        this.consumed = true
        this.finish()
      },
      failed: (err) => this.failWith(err),
    })
    env.inbox.hold()
  }

  /** A view delivery from the engine, before it goes to the inbox. */
  view(d: Extract<Delivery, { type: 'view' }>): void {
    const s = this.env.stateOf(d.viewId)
    if (!s) return
    const now = new Set(s.members)
    for (const no of this.members) if (!now.has(no)) this.donor.left(no)
    this.members = now
    const me = this.env.me()
    this.env.log('state: view %d (%s): donor %d, needs %o', d.viewId, this.phase, s.donor, s.needs)
    if (this.phase === 'waiting' && !s.needs.includes(me)) {
      // Not marked needs in its first view: a first member of the group, whose state is the initial one. That view
      // may already add joiners (its join view was superseded before it installed it): it is then their donor.
      this.phase = 'ready'
      this.env.inbox.release()
      this.env.ready(false)
    }
    if (this.phase === 'ready') {
      if (s.donor === me && s.needs.length > 0) this.toSnapshot.set(d.viewId, s.needs)
      return
    }
    if (this.phase === 'failed' || d.viewId <= this.point) return
    // A joiner under way that a view does not mark needs (none is marked holds before its `ready`): nothing changes.
    if (!s.needs.includes(me)) return
    this.pull(d.viewId, s.donor)
  }

  /**
   * Pulls the snapshot of view `viewId` from `donor`, unless the transfer under way is from it already. The state
   * point is that view: what was held before it is in the state, and so is what the engine delivers before it.
   */
  private pull(viewId: number, donor: number): void {
    if (donor === NO_DONOR) return this.failWith(new StateError(`no member of the group holds its state (view ${viewId}): every member that had it left`))
    const stream = this.joiner.start(viewId, donor)
    if (!stream) return // the same donor: the transfer goes on
    this.env.log('state: pulling the snapshot of view %d from member %d', viewId, donor)
    this.point = viewId
    this.env.inbox.dropUntil((x) => x.type === 'view' && x.viewId === viewId)
    this.phase = 'pulling'
    this.current = stream
    this.restored = false
    this.consumed = false
    let result: unknown
    try {
      result = this.hooks.restore(stream)
    } catch (err) {
      return this.failWith(new StateError(`restore threw: ${(err as Error)?.message ?? err}`))
    }
    Promise.resolve(result).then(
      () => {
        if (this.current !== stream) return
        this.restored = true
        this.finish()
      },
      (err: unknown) => {
        // A stream the transfer abandoned ends with an error: that call's failure is expected.
        if (this.current !== stream) return
        this.failWith(new StateError(`restore failed: ${(err as Error)?.message ?? err}`))
      },
    )
  }

  /** The application takes a delivery (inbox.ts): a view this member is the donor of is where it takes its snapshot. */
  handing(d: Delivery): void {
    if (d.type !== 'view') return
    const needs = this.toSnapshot.get(d.viewId)
    if (!needs) return
    this.toSnapshot.delete(d.viewId)
    try {
      this.donor.take(d.viewId, this.hooks.snapshot(), needs)
      this.env.log('state: took the snapshot of view %d for %o', d.viewId, needs)
    } catch (err) {
      // Its joiners get NONE and move to the snapshot of the next view (this member's or the next donor's), or fail
      // at their bound.
      this.env.log('state: snapshot() threw at view %d: %s', d.viewId, (err as Error)?.message ?? err)
    }
  }

  datagram(d: StateReq | StateData): void {
    if (d.kind === Kind.STATEREQ) this.donor.onRequest(d)
    else this.joiner.onState(d)
  }

  tick(): void {
    this.donor.tick()
    this.joiner.tick()
    if (this.phase === 'pulling') this.follow()
  }

  /**
   * A view installed but not delivered yet may name another donor (the one pulled from crashed): its deliveries
   * may be blocked behind the held ones, which only a restored state releases — so move to it now.
   */
  private follow(): void {
    const viewId = this.env.installed()
    if (viewId === undefined || viewId <= this.point) return
    const s = this.env.stateOf(viewId)
    // The same donor goes on (pull changes nothing) unless it answered NONE: then its snapshot is at this view.
    if (!s || !s.needs.includes(this.env.me())) return
    this.pull(viewId, s.donor)
  }

  close(): void {
    this.donor.close()
    this.joiner.close()
    this.current = null
  }

  private finish(): void {
    if (this.phase !== 'pulling' || !this.restored || !this.consumed) return
    this.phase = 'ready'
    this.current = null
    this.env.inbox.release()
    this.env.ready(true)
  }

  private failWith(err: StateError): void {
    if (this.phase === 'failed' || this.phase === 'ready') return
    this.phase = 'failed'
    this.current = null
    this.env.fail(err)
  }
}
