/**
 * A seeded frame fuzzer (issue 11): valid frames of every type, mutated field by field — types, ranges, lengths,
 * nesting, huge lists, a wrong `t` — plus random bytes, through the framing into DirectoryCore (which parses with
 * parseToDirectory) and into a member's DirectoryReader, keyed (odd seeds: keys frames, rotations) or not; state
 * flags, `join` `state` and `ready` frames (§8.1) among them. Nothing
 * may throw but ProtocolError (or RotateError, a refused rotation); everything the
 * directory sends must be a frame a member accepts; afterwards the directory still answers `ls` and still gives a
 * join its view. A failure names its seed: SEQCAST_FUZZ_SEED=<seed> npx tap test/fuzz-frames.ts reruns it alone.
 */
import t from 'tap'
import { DirectoryCore, DEFAULT_DIRECTORY_OPTIONS, type ConnId } from '../directory/core.js'
import { DirectoryReader } from '../lib/dirproto.js'
import { encodeFrame, FrameDecoder, MAX_FRAME_FROM_DIRECTORY, MAX_FRAME_TO_DIRECTORY, type Frame } from '../lib/frame.js'
import { ProtocolError, RotateError } from '../lib/errors.js'
import { rng } from './fixtures/sim-rng.js'

const CASES = 10_000
const SEEDS = process.env.SEQCAST_FUZZ_SEED ? [Number(process.env.SEQCAST_FUZZ_SEED)] : [1, 2, 3, 4]

type Rand = () => number
const int = (r: Rand, n: number): number => Math.floor(r() * n)
const pick = <T>(r: Rand, xs: readonly T[]): T => xs[int(r, xs.length)]!

const member = (no: number, id = `m${no}`, state?: 'holds' | 'needs') => ({ no, id, addr: `127.0.0.1:${9000 + no}`, ...(state ? { state } : {}) })
/** Mostly the incarnation and address of the directory's own group g (its harness fixes the incarnation). */
const commitBody = (r: Rand, group: string) => ({
  group, viewId: 7, inc: r() < 0.8 ? '0000000100000000' : 'c0ffee0000000007', mcast: r() < 0.8 ? '239.255.0.1:46100' : '239.255.0.9:46100',
  transport: pick(r, ['multicast', 'unicast']), members: [member(1, 'a', pick(r, ['holds', undefined])), member(2, 'b', pick(r, ['holds', 'needs', undefined])), member(3)],
  sequencer: 1, cut: 499, start: 500,
  holder: 1, sources: [{ no: 1, low: 0, have: 499 }], nextNo: 5,
})

/** A valid frame to the directory, of a random type; `group`/`viewId`: what the sending member is in. */
function toDirectory(r: Rand, group: string, viewId: number, self: number): Frame {
  switch (int(r, 12)) {
    case 9: return { t: 'keyed', seq: 1 + int(r, 4) }
    case 10: return { t: 'rotate', key: Buffer.alloc(32, int(r, 256)) }
    case 11: return { t: 'ready', group }
    case 0: return { t: 'join', proto: 1, group, member: `f${int(r, 1e6)}`, addr: `127.0.0.1:${1 + int(r, 65535)}`, ...(r() < 0.5 ? { state: true } : {}) }
    case 1: {
      const g = r() < 0.6 ? group : pick(r, ['r1', 'r2'])
      return { t: 'rejoin', proto: 1, group: g, member: pick(r, ['a', 'b', 'm3']), no: 1 + int(r, 3), addr: '127.0.0.1:9001', seenViewId: 7 + int(r, 3), leaving: r() < 0.2, commit: commitBody(r, g) }
    }
    case 2: return { t: 'ping' }
    case 3: return r() < 0.5 ? { t: 'ls' } : { t: 'ls', after: group, group }
    case 4: return { t: 'leave', group }
    case 5: return { t: 'prepared', group, viewId: viewId + int(r, 3), have: int(r, 100), low: 0 }
    case 6: return { t: 'installed', group, viewId }
    case 7: return { t: 'suspect', group, viewId, no: self + int(r, 3) - 1, reason: 'fuzz' }
    default: return { t: 'deaf', group, viewId }
  }
}

/** A valid frame from the directory, of a random type. */
function fromDirectory(r: Rand): Frame {
  switch (int(r, 11)) {
    case 9: return { t: 'keys', seq: 3, keys: [{ epoch: 4, key: Buffer.alloc(32, 1) }, { epoch: 5, key: Buffer.alloc(32, 2) }], use: 5 }
    case 10: return { t: 'rotated', epoch: 5 }
    case 0: return { t: 'welcome', no: 3, heartbeatMs: 500, timeoutMs: 2000 }
    case 1: return { t: 'pong' }
    case 2: return { t: 'prepare', group: 'g', viewId: 8 }
    case 3: return { t: 'commit', ...commitBody(r, 'g') }
    case 4: {
      const { members: _m, ...rest } = commitBody(r, 'g')
      return { t: 'commit', ...rest, viewId: 8, base: 7, added: [member(2, 'b', 'holds'), member(4, 'm4', 'needs')], removed: [3] }
    }
    case 5: return { t: 'released', group: 'g' }
    case 6: return { t: 'expelled', group: 'g', reason: 'fuzz' }
    case 7: return { t: 'error', code: 'EGROUP_FULL', message: 'full' }
    default: return { t: 'status', groups: [{ name: 'g', viewId: 7, members: [member(1, 'm1', 'holds'), member(2, 'm2', 'needs'), member(3)], sequencer: 'm1', mcast: '239.255.0.9:46100', transport: 'multicast', state: 'stable' }], next: 'g' }
  }
}

/** A value of the wrong type, out of range, huge, or deeply nested. */
function oddValue(r: Rand): unknown {
  const odd: Array<() => unknown> = [
    () => -1, () => 0, () => 1, () => 2 ** 32, () => 2 ** 32 - 1, () => 2 ** 48, () => 2 ** 53 + 2, () => 1e308, () => -0.5, () => 1.5,
    () => Number.NaN, () => Infinity, () => int(r, 2 ** 32), () => '', () => 'x'.repeat(65), () => 'é'.repeat(40), () => 'y'.repeat(60_000),
    () => '\u0000', () => '239.255.0.1:46100', () => '127.0.0.1:99999', () => '127.0.0.1:0', () => 'g', () => 'commit', () => true, () => null,
    () => 'holds', () => 'needs', () => 'ready', () => false,
    () => [], () => ({}), () => [1, 2, 3], () => Array(40_000).fill(7), () => Array.from({ length: 1100 }, (_, i) => member(i + 1)),
    () => ({ no: 1, id: 'a', addr: '127.0.0.1:1' }), () => [[[[[[[[[[[]]]]]]]]]]], () => ({ a: { b: { c: { d: [{ t: 'ping' }] } } } }),
    () => Buffer.from('bytes'), () => BigInt('18446744073709551615'),
  ]
  return pick(r, odd)()
}

/** A number near a boundary of the field's range, or of the one it had. */
function boundary(r: Rand, x: number): number {
  return pick(r, [0, -1, 1, 2 ** 31, 2 ** 32 - 2, 2 ** 32 - 1, 2 ** 32 - 1, 2 ** 32, 2 ** 48 - 1, 2 ** 48, 2 ** 53 - 1, x + 1, x - 1, x * 1000, x + 65_536, x + 2 ** 20])
}

/** Every (container, key) in `v`, depth first. */
function slots(v: unknown, out: Array<[Record<string | number, unknown>, string | number]> = []): typeof out {
  if (Array.isArray(v)) v.slice(0, 8).forEach((x, i) => { out.push([v as never, i]); slots(x, out) })
  else if (v && typeof v === 'object' && !Buffer.isBuffer(v)) for (const k of Object.keys(v)) { out.push([v as never, k]); slots((v as Record<string, unknown>)[k], out) }
  return out
}

/**
 * Half the time one number moved to a boundary (the frame stays well formed, and reaches the state machine);
 * otherwise one to three mutations: a field replaced, deleted, added, a list cut or grown, a wrong `t`.
 */
function mutate(r: Rand, f: Frame): Frame {
  if (r() < 0.5) {
    const numbers = slots(f).filter(([obj, key]) => typeof obj[key] === 'number')
    if (numbers.length > 0) {
      const [obj, key] = pick(r, numbers)
      obj[key] = boundary(r, obj[key] as number)
      return f
    }
  }
  // Mostly one mutation of a top-level field: a frame close to valid reaches furthest into the state machine.
  for (let n = r() < 0.6 ? 1 : 2 + int(r, 2); n > 0; n--) {
    const [obj, key] = r() < 0.5 ? [f as Record<string, unknown>, pick(r, Object.keys(f))] : pick(r, slots(f))
    const action = int(r, 6)
    if (typeof obj[key] === 'number' && r() < 0.6) obj[key] = boundary(r, obj[key] as number)
    else if (action === 0 || key === 't') obj[key] = key === 't' && r() < 0.5 ? pick(r, ['join', 'commit', 'status', 'welcome', 'x', '']) : oddValue(r)
    else if (action === 1 && !Array.isArray(obj)) delete obj[key]
    else if (action === 2) obj[`extra${int(r, 3)}`] = oddValue(r)
    else if (action === 3 && Array.isArray(obj[key])) (obj[key] as unknown[]).push(...(obj[key] as unknown[]))
    else if (action === 4 && Array.isArray(obj[key])) (obj[key] as unknown[]).length = int(r, (obj[key] as unknown[]).length + 1)
    else obj[key] = oddValue(r)
  }
  return f
}

/** The bytes of `f` as a peer would send them, or null when they cannot be packed or exceed `max`. */
function wire(f: Frame, max: number): Buffer | null {
  try {
    return encodeFrame(f, max)
  } catch {
    return null
  }
}

function fuzz(seed: number): string[] {
  const r = rng(seed)
  const failures: string[] = []
  let caseNo = -1
  const fail = (what: string, err: unknown): void => {
    if (failures.length < 5) failures.push(`seed ${seed} case ${caseNo}: ${what}: ${(err as Error)?.stack ?? String(err)}`)
  }
  let now = 0
  const readers = new Map<ConnId, DirectoryReader>()
  /** Frames to the two honest members, answered after each step (never from inside the core). */
  const inbox: Array<{ conn: ConnId; f: Frame }> = []
  const honest = new Map<ConnId, { have: number }>()
  // Odd seeds: a keyed directory (keys frames to answer, rotations a fuzzed frame may start).
  const key = seed % 2 === 1 ? Buffer.alloc(32, 0xee) : null
  const core = new DirectoryCore({ ...DEFAULT_DIRECTORY_OPTIONS, rejoinGraceMs: 0, key }, {
    now: () => now,
    send: (conn, f) => {
      try {
        const bytes = encodeFrame(f as Frame, MAX_FRAME_FROM_DIRECTORY)
        const decoded = new FrameDecoder(MAX_FRAME_FROM_DIRECTORY).push(bytes)[0]!
        if (!readers.has(conn)) readers.set(conn, new DirectoryReader())
        const read = readers.get(conn)!.read(decoded)
        if (honest.has(conn)) inbox.push({ conn, f: read })
      } catch (err) {
        fail(`the directory sent connection ${conn} a frame a member refuses (${JSON.stringify(f).slice(0, 200)})`, err)
      }
    },
    close: (conn) => {
      closing.push(conn)
    },
    randomIncarnation: () => '0000000100000000',
    info: () => {},
  })
  const closing: ConnId[] = []
  const step = (): void => {
    for (let k = 0; k < 100 && (inbox.length > 0 || closing.length > 0); k++) {
      for (const conn of closing.splice(0)) {
        core.closed(conn)
        honest.delete(conn)
      }
      for (const { conn, f } of inbox.splice(0)) {
        const h = honest.get(conn)
        if (!h) continue
        if (f.t === 'prepare') core.frame(conn, { t: 'prepared', group: 'g', viewId: f.viewId as number, have: h.have, low: 0 })
        if (f.t === 'keys') core.frame(conn, { t: 'keyed', seq: f.seq as number })
        if (f.t === 'commit') {
          h.have = f.start as number
          core.frame(conn, { t: 'installed', group: 'g', viewId: f.viewId as number })
          // As if it restored the state at once; ignored unless the commit marked it needs.
          core.frame(conn, { t: 'ready', group: 'g' })
        }
      }
    }
  }
  const honestJoin = (conn: ConnId, id: string): void => {
    honest.set(conn, { have: 0 })
    core.opened(conn)
    core.frame(conn, { t: 'join', proto: 1, group: 'g', member: id, addr: `127.0.0.1:${8000 + conn}`, state: true })
    step()
  }
  honestJoin(1, 'a')
  honestJoin(2, 'b')
  let conn = 10
  const opened: ConnId[] = []
  for (caseNo = 0; caseNo < CASES; caseNo++) {
    now += 5
    for (const h of honest.keys()) core.frame(h, { t: 'ping' })
    if (caseNo % 20 === 0) core.tick()
    const c = ++conn
    core.opened(c)
    opened.push(c)
    const viewId = core.status().find((g) => g.name === 'g')?.viewId ?? 1
    const kind = int(r, 10)
    try {
      if (kind === 0) {
        // Random bytes, sometimes behind a plausible length.
        const body = Buffer.from(Array.from({ length: int(r, 300) }, () => int(r, 256)))
        const bytes = r() < 0.5 ? body : Buffer.concat([Buffer.from([0, 0, body.length >> 8, body.length & 255]), body])
        for (const f of new FrameDecoder(MAX_FRAME_TO_DIRECTORY).push(bytes)) core.frame(c, f)
      } else if (kind === 1) {
        // A member's reader: a good full commit first, so a mutated delta has its base.
        const reader = new DirectoryReader()
        reader.read({ t: 'commit', ...commitBody(r, 'g') })
        const bytes = wire(mutate(r, fromDirectory(r)), MAX_FRAME_FROM_DIRECTORY)
        if (bytes) for (const f of new FrameDecoder(MAX_FRAME_FROM_DIRECTORY).push(bytes)) reader.read(f)
      } else {
        // From a member of g (joined first, half the time) or a stranger.
        const f = mutate(r, toDirectory(r, 'g', viewId, c))
        if (r() < 0.5 && f.t !== 'rejoin' && f.t !== 'join') core.frame(c, { t: 'join', proto: 1, group: 'g', member: `f${c}`, addr: `127.0.0.1:${1 + (c % 65535)}` })
        const bytes = wire(f, MAX_FRAME_TO_DIRECTORY)
        if (bytes) for (const f of new FrameDecoder(MAX_FRAME_TO_DIRECTORY).push(bytes)) core.frame(c, f)
      }
    } catch (err) {
      if (!(err instanceof ProtocolError || err instanceof RotateError)) fail('threw something other than ProtocolError or RotateError', err)
      else closing.push(c) // what the server does on a refused frame
    }
    try {
      step()
      if (caseNo % 50 === 0) core.status()
    } catch (err) {
      fail('the directory broke afterwards', err)
    }
    if (r() < 0.3) closing.push(opened.splice(int(r, opened.length), 1)[0]!)
  }
  // Afterwards: every stranger gone, the directory still lists its groups and gives a newcomer its view.
  try {
    closing.push(...opened)
    step()
    for (let ms = 0; ms < 6000; ms += 100) {
      now += 100
      for (const h of honest.keys()) core.frame(h, { t: 'ping' })
      core.tick()
      step()
    }
    const before = core.status()
    if (!before.every((g) => Number.isInteger(g.viewId) && g.members.length <= 1024)) fail('status', JSON.stringify(before).slice(0, 300))
    honestJoin(3, 'z')
    const g = core.status().find((x) => x.name === 'g')
    if (!g || g.state !== 'stable' || !g.members.some((m) => m.id === 'z')) fail('a join after the fuzz gets no view', JSON.stringify(g))
    // The honest members (state hooks, each `ready` at its commit) hold the state whatever the fuzz sent.
    else if (!g.members.filter((m) => ['a', 'b', 'z'].includes(m.id)).every((m) => m.state === 'holds')) fail('an honest member lost its flag', JSON.stringify(g.members))
  } catch (err) {
    fail('the directory broke after the fuzz', err)
  }
  return failures
}

for (const seed of SEEDS) {
  t.test(`seed ${seed}: ${CASES} mutated frames and random bytes`, async (t) => {
    const failures = fuzz(seed)
    t.same(failures, [], failures.length ? `rerun alone: SEQCAST_FUZZ_SEED=${seed} npx tap test/fuzz-frames.ts` : 'nothing but ProtocolError, and the group goes on')
  })
}
