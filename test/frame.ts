/**
 * TCP framing (lib/frame.ts): frames split anywhere decode the same, and each byte is copied a bounded number of
 * times however the frame is split (a stranger dribbling one frame a byte at a time must not cost quadratic work),
 * into no more memory than about twice what arrived.
 */
import t from 'tap'
import { encodeFrame, FrameDecoder, MAX_FRAME_TO_DIRECTORY, type Frame } from '../lib/frame.js'
import { ErrorCodes } from '../lib/errors.js'

/** Bytes copied by Buffer.concat and Buffer#copy (what the decoder can use to gather a frame) while `fn` runs. */
function bytesCopied(fn: () => void): number {
  let copied = 0
  const concat = Buffer.concat
  const copy = Buffer.prototype.copy
  Buffer.concat = function (list: readonly Uint8Array[], total?: number) {
    const out = concat.call(Buffer, list, total)
    copied += out.length
    return out
  } as typeof Buffer.concat
  Buffer.prototype.copy = function (this: Buffer, target: Uint8Array, ...rest: number[]) {
    const n = copy.call(this, target, ...rest)
    copied += n
    return n
  } as typeof Buffer.prototype.copy
  try {
    fn()
  } finally {
    Buffer.concat = concat
    Buffer.prototype.copy = copy
  }
  return copied
}

t.test('frames split at every byte, or several in one chunk, decode the same', async (t) => {
  const frames: Frame[] = [{ t: 'ping' }, { t: 'join', proto: 1, group: 'g', member: 'a', addr: '127.0.0.1:9' }, { t: 'ls', after: 'x'.repeat(300) }]
  const bytes = Buffer.concat(frames.map((f) => encodeFrame(f)))
  for (const size of [1, 2, 3, 5, 7, 64, bytes.length]) {
    const d = new FrameDecoder()
    const out: Frame[] = []
    for (let i = 0; i < bytes.length; i += size) out.push(...d.push(bytes.subarray(i, i + size)))
    t.same(out, frames, `chunks of ${size}`)
    t.equal(d.pending, 0, 'nothing left over')
  }
})

t.test('a frame dribbled a byte at a time is gathered with each byte copied at most three times', async (t) => {
  const bytes = encodeFrame({ t: 'ping', pad: 'a'.repeat(64 * 1024) })
  const d = new FrameDecoder()
  const out: Frame[] = []
  const pendings: number[] = []
  const copied = bytesCopied(() => {
    for (let i = 0; i < bytes.length; i++) {
      out.push(...d.push(bytes.subarray(i, i + 1)))
      if (i === 2 || i === 1000) pendings.push(d.pending)
    }
  })
  t.equal(out.length, 1, 'one frame')
  t.same(pendings, [3, 1001], 'pending counts the bytes of the partial frame')
  t.ok(copied <= 3 * bytes.length, `${copied} bytes copied for a frame of ${bytes.length}`)
})

t.test('a length alone does not reserve the frame: what is held grows with what arrives', async (t) => {
  const bytes = encodeFrame({ t: 'ping', pad: 'a'.repeat(150_000) })
  const d = new FrameDecoder()
  d.push(bytes.subarray(0, 10))
  const held = (): number => (d as unknown as { body: Buffer }).body.length
  t.ok(held() <= 4096, `${held()} bytes held after 10 of ${bytes.length}`)
  d.push(bytes.subarray(10, 20_000))
  t.ok(held() <= 40_000, `${held()} bytes held after 20 000`)
  t.equal(d.push(bytes.subarray(20_000)).length, 1)
})

t.test('the length is checked before any of the body is buffered', async (t) => {
  const head = Buffer.alloc(4)
  head.writeUInt32BE(MAX_FRAME_TO_DIRECTORY + 1)
  const d = new FrameDecoder()
  t.same(d.push(head.subarray(0, 3)), [])
  t.throws(() => d.push(head.subarray(3)), { code: ErrorCodes.FRAME })
  const zero = Buffer.alloc(4)
  t.throws(() => new FrameDecoder().push(zero), { code: ErrorCodes.FRAME }, 'an empty frame')
})

/**
 * A flat MessagePack map written by hand, each integer in the format asked: any reader of the spec may pick any
 * integer format (PROTOCOL.md §3 "Integers"), and seqcast itself writes integers ≥ 2^32 as float 64.
 */
type IntFormat = 'fix' | 'u8' | 'u16' | 'u32' | 'u64' | 'i64' | 'f64'
function mapWith(fields: Record<string, string | number>, format: IntFormat): Buffer {
  const parts: Buffer[] = [Buffer.from([0x80 | Object.keys(fields).length])]
  const str = (s: string): Buffer => Buffer.concat([Buffer.from([0xa0 | Buffer.byteLength(s)]), Buffer.from(s)])
  for (const [k, v] of Object.entries(fields)) {
    parts.push(str(k))
    if (typeof v === 'string') { parts.push(str(v)); continue }
    const fmt = format === 'fix' && v > 127 ? 'u64' : format
    const b = Buffer.alloc({ fix: 1, u8: 2, u16: 3, u32: 5, u64: 9, i64: 9, f64: 9 }[fmt])
    if (fmt === 'fix') b[0] = v
    else if (fmt === 'u8') (b[0] = 0xcc, b[1] = v)
    else if (fmt === 'u16') (b[0] = 0xcd, b.writeUInt16BE(v, 1))
    else if (fmt === 'u32') (b[0] = 0xce, b.writeUInt32BE(v, 1))
    else if (fmt === 'u64') (b[0] = 0xcf, b.writeBigUInt64BE(BigInt(v), 1))
    else if (fmt === 'i64') (b[0] = 0xd3, b.writeBigInt64BE(BigInt(v), 1))
    else (b[0] = 0xcb, b.writeDoubleBE(v, 1))
    parts.push(b)
  }
  const body = Buffer.concat(parts)
  const len = Buffer.alloc(4)
  len.writeUInt32BE(body.length)
  return Buffer.concat([len, body])
}

t.test('an integer in any MessagePack format is read as its value, by the directory and by a member', async (t) => {
  const { parseToDirectory, DirectoryReader } = await import('../lib/dirproto.js')
  for (const format of ['fix', 'u8', 'u16', 'u32', 'u64', 'i64', 'f64'] as const) {
    const [prepared] = new FrameDecoder().push(mapWith({ t: 'prepared', group: 'g', viewId: 3, have: 7, low: 2 }, format))
    t.same(parseToDirectory(prepared!), { t: 'prepared', group: 'g', viewId: 3, have: 7, low: 2 }, `prepared, ${format}`)
    const [welcome] = new FrameDecoder().push(mapWith({ t: 'welcome', no: 1, heartbeatMs: 100, timeoutMs: 200 }, format))
    t.match(new DirectoryReader().read(welcome!), { t: 'welcome', no: 1, heartbeatMs: 100, timeoutMs: 200 }, `welcome, ${format}`)
  }
  // A 48-bit slot in 64 bits, and one past what a slot may be: a value out of range, not a frame of the wrong shape.
  const [big] = new FrameDecoder().push(mapWith({ t: 'prepared', group: 'g', viewId: 3, have: 2 ** 48 - 1, low: 0 }, 'u64'))
  t.equal(parseToDirectory(big!).t, 'prepared')
  const [over] = new FrameDecoder().push(mapWith({ t: 'prepared', group: 'g', viewId: 3, have: 2 ** 53 + 2, low: 0 }, 'u64'))
  t.throws(() => parseToDirectory(over!), { code: ErrorCodes.BAD_REQUEST })
  const [neg] = new FrameDecoder().push(mapWith({ t: 'prepared', group: 'g', viewId: 3, have: -1, low: 0 }, 'i64'))
  t.throws(() => parseToDirectory(neg!), { code: ErrorCodes.BAD_REQUEST })
})

t.test('a float that is not an integer is a field of the wrong type (EFRAME), as PROTOCOL.md §3 says', async (t) => {
  const { parseToDirectory } = await import('../lib/dirproto.js')
  for (const have of [1.5, -0.5, Infinity, NaN]) {
    const [f] = new FrameDecoder().push(mapWith({ t: 'prepared', group: 'g', viewId: 3, have, low: 0 }, 'f64'))
    t.throws(() => parseToDirectory(f!), { code: ErrorCodes.FRAME }, `have ${have}`)
  }
})
