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
