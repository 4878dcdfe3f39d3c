/**
 * The directory client (lib/dirlink.ts) alone, on a fake clock and a fake connection: the join, the lease and its
 * renewal by pongs, reconnect backoff, the rejoin, and what a lost connection means in each lifecycle state.
 */
import t from 'tap'
import { DirLink, RECONNECT_MAX_MS, RECONNECT_MIN_MS, type DirLinkEnv } from '../lib/dirlink.js'
import type { Lifecycle } from '../lib/host.js'
import type { SeqcastError } from '../lib/errors.js'
import { ErrorCodes } from '../lib/errors.js'
import type { Frame } from '../lib/frame.js'

function harness(lifecycle: Lifecycle = 'joining') {
  const h = {
    now: 0,
    lifecycle,
    connects: [] as number[],
    written: [] as Frame[],
    frames: [] as Frame[],
    events: [] as string[],
    renewed: 0,
    failed: null as SeqcastError | null,
    closedLeaving: false,
    rejoin: { t: 'rejoin', no: 1 } as Frame | null,
  }
  const env: DirLinkEnv = {
    now: () => h.now,
    connect: () => void h.connects.push(h.now),
    write: (f) => void h.written.push(f),
    frame: (f) => void h.frames.push(f),
    lifecycle: () => h.lifecycle,
    rejoin: () => h.rejoin,
    directory: (s) => void h.events.push(s),
    leaseRenewed: () => void h.renewed++,
    fail: (err) => void (h.failed = err),
    closeWhileLeaving: () => void (h.closedLeaving = true),
  }
  const link = new DirLink(env, '127.0.0.1:5000')
  /** Joined and welcomed with pings every 500 ms and a 2 000 ms timeout: a lease of 1 500 ms. */
  const welcomed = (): void => {
    link.start({ t: 'join' })
    link.connected()
    link.received({ t: 'welcome', no: 1, heartbeatMs: 500, timeoutMs: 2000 })
    h.lifecycle = 'joined'
  }
  const pings = (): number => h.written.filter((f) => f.t === 'ping').length
  return { h, link, welcomed, pings }
}

t.test('the join goes out once connected; a refused first connection fails the join', async (t) => {
  const { h, link } = harness()
  link.start({ t: 'join', group: 'g' })
  t.same(h.connects, [0], 'connects at start')
  t.same(h.written, [], 'nothing written before the connection is up')
  link.connected()
  t.same(h.written, [{ t: 'join', group: 'g' }])

  const b = harness()
  b.link.start({ t: 'join' })
  b.link.connectFailed('ECONNREFUSED')
  t.equal(b.h.failed?.code, ErrorCodes.DIRECTORY_UNREACHABLE)
})

t.test('pings every heartbeatMs from the welcome on, only while connected', async (t) => {
  const { h, link, welcomed, pings } = harness()
  welcomed()
  for (h.now = 0; h.now <= 2000; h.now += 10) link.tick()
  t.equal(pings(), 5, 'at 0, 500, 1000, 1500 and 2000 ms')
  link.closed()
  const before = pings()
  for (; h.now <= 2200; h.now += 10) link.tick()
  t.equal(pings(), before, 'no ping is "sent" while the connection is down')
})

t.test('the lease: valid while pongs come back, invalid once it runs out, renewed by a late pong', async (t) => {
  const { h, link, welcomed } = harness()
  welcomed()
  link.tick() // ping at 0
  t.ok(link.leaseValid())
  h.now = 1499
  t.ok(link.leaseValid(), 'valid for timeoutMs - heartbeatMs after the welcome')
  h.now = 1500
  t.notOk(link.leaseValid(), 'runs out without a pong')
  h.now = 1600
  link.received({ t: 'pong' }) // answers the ping sent at 0: valid until 0 + 1500 — no renewal
  t.notOk(link.leaseValid(), 'a pong extends the lease from when its ping was sent, not from its arrival')
  t.equal(h.renewed, 0)
  link.tick() // ping at 1600
  h.now = 1700
  link.received({ t: 'pong' })
  t.ok(link.leaseValid(), 'the pong of the ping at 1600 renews it to 3100')
  t.equal(h.renewed, 1, 'and delivery is told to go on')
  h.now = 3100
  t.notOk(link.leaseValid())
  link.closed()
  t.ok(link.leaseValid(), 'without a connection the data path goes on (§7): the lease does not hold it')
})

t.test('a lost connection: reconnects with backoff 250 ms doubling to 2 s, then rejoins', async (t) => {
  const { h, link, welcomed } = harness()
  welcomed()
  h.now = 1000
  link.closed()
  t.same(h.events, ['lost'])
  h.connects.length = 0
  for (; h.now <= 10_000; h.now += 10) {
    link.tick()
    if (link.state === 'reconnecting') link.connectFailed('ECONNREFUSED')
  }
  const gaps = h.connects.slice(1).map((c, i) => c - h.connects[i]!)
  t.equal(h.connects[0], 1000 + RECONNECT_MIN_MS, 'first attempt after 250 ms')
  t.same(gaps.slice(0, 4), [500, 1000, 2000, 2000], 'then doubling, capped at RECONNECT_MAX_MS')
  t.equal(Math.max(...gaps), RECONNECT_MAX_MS)
  h.written.length = 0
  link.tick()
  while (link.state !== 'reconnecting') link.tick(), (h.now += 10)
  link.connected()
  t.same(h.written, [{ t: 'rejoin', no: 1 }], 'the rejoin the engine built')
  t.same(h.events, ['lost', 'restored'])
  t.equal(link.state, 'up')
  // The backoff starts over after a success.
  link.closed()
  const at = h.now
  h.connects.length = 0
  for (; h.now <= at + 300; h.now += 10) link.tick()
  t.same(h.connects, [at + RECONNECT_MIN_MS])
})

t.test('what a lost connection means depends on the lifecycle', async (t) => {
  const joining = harness()
  joining.link.start({ t: 'join' })
  joining.link.connected()
  joining.link.closed()
  t.equal(joining.h.failed?.code, ErrorCodes.DIRECTORY_LOST, 'joining: the join fails')

  const leaving = harness()
  leaving.welcomed()
  leaving.h.lifecycle = 'leaving'
  leaving.link.closed()
  t.ok(leaving.h.closedLeaving, 'leaving: the member closes')
  t.equal(leaving.h.connects.length, 1, 'and does not reconnect')

  const nothing = harness()
  nothing.welcomed()
  nothing.h.rejoin = null
  nothing.link.closed()
  while (nothing.link.state !== 'reconnecting') nothing.link.tick(), (nothing.h.now += 10)
  nothing.link.connected()
  t.equal(nothing.h.failed?.code, ErrorCodes.DIRECTORY_LOST, 'nothing to rejoin with: fails')
})

t.test('a frame the member cannot act on fails it; frames after close are ignored', async (t) => {
  const { h, link } = harness()
  link.start({ t: 'join' })
  link.connected()
  link.received({ t: 'welcome', no: 0 })
  t.equal(h.failed?.code, ErrorCodes.FRAME, 'a welcome without a member number')
  t.same(h.frames, [])
  link.received({ t: 'prepare', viewId: 3 })
  t.same(h.frames, [], 'nothing is read once failed')
})
