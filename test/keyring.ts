/**
 * directory/keys.ts: a keyed directory's keys and the three steps of a rotation, frame by frame (PROTOCOL.md §3.5).
 */
import t from 'tap'
import { randomBytes } from 'node:crypto'
import { KeyRing } from '../directory/keys.js'
import { keyId, linkPsk } from '../lib/seal.js'
import { ErrorCodes, type SeqcastError } from '../lib/errors.js'
import type { FromDirectoryWire } from '../lib/dirproto.js'

type Keys = Extract<FromDirectoryWire, { t: 'keys' }>

function ring(timeoutMs = 1000) {
  let now = 0
  const sent: Array<{ conn: number; f: FromDirectoryWire }> = []
  const expelled: number[] = []
  const stored: Buffer[] = []
  let persistFails = false
  const r = new KeyRing(randomBytes(32), timeoutMs, {
    send: (conn, f) => sent.push({ conn, f }),
    expel: (conn) => {
      expelled.push(conn)
      r.closed(conn)
    },
    persist: (key) => {
      if (persistFails) throw new Error('EROFS: read-only file system')
      stored.push(key)
    },
    rotated: () => {},
    now: () => now,
    info: () => {},
  })
  /** The last `keys` frame each connection got. */
  const last = (conn: number): Keys => sent.filter((s) => s.conn === conn && s.f.t === 'keys').at(-1)!.f as Keys
  /** Every listed member acknowledges the last keys frame it got. */
  const ack = (...conns: number[]): void => {
    for (const c of conns) r.keyed(c, last(c).seq)
  }
  return {
    r, sent, expelled, stored, last, ack,
    failPersist: () => void (persistFails = true),
    advance: (ms: number) => {
      now += ms
      r.tick()
    },
  }
}

t.test('members are told the key before anything else, and links authenticate with it', async (t) => {
  const h = ring()
  h.r.member(1)
  const k = h.last(1)
  t.equal(k.keys.length, 1)
  t.equal(k.use, 0)
  t.equal(h.r.hint, keyId(k.keys[0]!.key), 'the TLS hint names the key in use')
  t.same(h.r.psk(keyId(k.keys[0]!.key)), linkPsk(k.keys[0]!.key), 'its id gives the link PSK')
  t.equal(h.r.psk(keyId(randomBytes(32))), null, 'another key is unknown')
})

t.test('a rotation: add, use, drain, drop — each step once every member acknowledged the one before', async (t) => {
  const h = ring(1000)
  h.r.member(1)
  h.r.member(2)
  h.ack(1, 2)
  const old = h.last(1).keys[0]!.key
  const fresh = randomBytes(32)
  h.r.rotate(99, fresh)
  t.same(h.stored, [fresh], 'the new key is stored before anything moves')
  let k = h.last(1)
  t.same(k.keys.map((e) => e.epoch), [0, 1], 'add: both keys')
  t.equal(k.use, 0, 'add: still sealing with the old one')
  t.not(h.r.psk(keyId(fresh)), null, 'links may authenticate with the new key')
  t.not(h.r.psk(keyId(old)), null, '… and still with the old one')
  h.ack(1)
  t.equal(h.last(2).use, 0, 'use waits for every member')
  h.ack(2)
  k = h.last(1)
  t.equal(k.use, 1, 'use: seal with the new key')
  t.same(k.keys.map((e) => e.epoch), [0, 1], 'the old one still opens')
  h.ack(1, 2)
  const before = h.sent.length
  h.advance(999)
  t.equal(h.sent.length, before, 'drain: the old key lives timeoutMs more')
  h.advance(1)
  k = h.last(1)
  t.same(k.keys.map((e) => e.epoch), [1], 'drop: the new key only')
  t.equal(h.r.psk(keyId(old)), null, 'a link with the old key fails')
  t.equal(h.r.hint, keyId(fresh))
  t.same(h.sent.filter((s) => s.conn === 99).map((s) => s.f), [{ t: 'rotated', epoch: 1 }], 'who asked is told')
  t.same(h.expelled, [])
})

t.test('a member that joins during a rotation gets the step and is waited for', async (t) => {
  const h = ring()
  h.r.member(1)
  h.ack(1)
  h.r.rotate(99, randomBytes(32))
  h.r.member(2)
  t.same(h.last(2).keys.map((e) => e.epoch), [0, 1], 'the joiner can open both')
  h.ack(1)
  t.equal(h.last(1).use, 0, 'the joiner has not acknowledged')
  h.ack(2)
  t.equal(h.last(1).use, 1)
})

t.test('a member that does not take a step within 2 × timeoutMs is expelled; the rotation ends', async (t) => {
  const h = ring(1000)
  for (const c of [1, 2]) h.r.member(c)
  h.ack(1, 2)
  h.r.rotate(99, randomBytes(32))
  h.ack(1)
  h.advance(2000)
  t.same(h.expelled, [], 'not before the bound')
  h.advance(1)
  t.same(h.expelled, [2], 'the silent member is expelled')
  t.equal(h.last(1).use, 1, 'the others go on')
  h.ack(1)
  h.advance(1000)
  t.same(h.last(1).keys.map((e) => e.epoch), [1], 'done')
})

t.test('a member leaving releases the step; without members a rotation needs nobody', async (t) => {
  const h = ring(1000)
  h.r.member(1)
  h.r.rotate(99, randomBytes(32))
  h.r.closed(1)
  h.advance(1000)
  t.same(h.sent.filter((s) => s.conn === 99).map((s) => s.f.t), ['rotated'])
})

t.test('refused rotations', async (t) => {
  const h = ring()
  h.r.member(1)
  const current = h.last(1).keys[0]!.key
  t.throws(() => h.r.rotate(99, current), { code: ErrorCodes.ROTATE }, 'to the key in use')
  h.r.rotate(99, randomBytes(32))
  t.throws(() => h.r.rotate(98, randomBytes(32)), { code: ErrorCodes.ROTATE }, 'while one is under way')
  const g = ring()
  g.failPersist()
  try {
    g.r.rotate(99, randomBytes(32))
    t.fail('should throw')
  } catch (err) {
    t.equal((err as SeqcastError).code, ErrorCodes.ROTATE)
    t.match((err as Error).message, /cannot store the new key: EROFS/)
  }
  g.r.member(1)
  t.same(g.last(1).keys.map((e) => e.epoch), [0], 'nothing moved')
})

t.test('acknowledgements are checked', async (t) => {
  const h = ring()
  t.throws(() => h.r.keyed(5, 1), { code: ErrorCodes.BAD_REQUEST }, 'from a connection that is no member')
  h.r.member(1)
  t.throws(() => h.r.keyed(1, 2), { code: ErrorCodes.BAD_REQUEST }, 'of a frame never sent')
  h.r.keyed(1, 1)
  h.r.keyed(1, 1)
  t.pass('twice is harmless')
})
