/**
 * Framing of the directory's TCP protocol (docs/PROTOCOL.md §3): a u32 big-endian length, then one MessagePack map,
 * and the limits on both. Shared by the directory server and the member's directory client; what the maps hold
 * is lib/dirproto.ts.
 */
import { Packr } from 'msgpackr'
import { ErrorCodes, ProtocolError } from './errors.js'

/**
 * The most members (joining, in the view, or leaving and not yet released) a group may have; the directory refuses
 * a join beyond it with EGROUP_FULL. The frame limits below are sized for it.
 */
export const MAX_GROUP_MEMBERS = 1024

/**
 * The longest frame a directory accepts: the largest a member sends is a `rejoin` carrying its latest commit back,
 * 161 KB for MAX_GROUP_MEMBERS members with 64-byte ids, a state flag each and as many sources (test/limits.ts
 * encodes it). Kept to what members need, since a directory buffers up to this much for any connection, a
 * stranger's too.
 */
export const MAX_FRAME_TO_DIRECTORY = 192 * 1024

/**
 * The longest frame a member (or `dir ls`) accepts: a `commit` of MAX_GROUP_MEMBERS members with 64-byte ids and as
 * many flush sources is 161 KB with a state flag on every member; a `status` page is filled up to it (test/limits.ts
 * encodes both).
 */
export const MAX_FRAME_FROM_DIRECTORY = 256 * 1024

/** The first buffer for a frame that arrives in pieces; it doubles from there. */
const MIN_GATHER = 4096

// `int64AsType: 'auto'`: a 64-bit integer is read as a number where it is exact (≤ 2^53), else as a BigInt — which
// every field check then refuses as out of range. Any integer format is valid (PROTOCOL.md §3 "Integers").
const packr = new Packr({ useRecords: false, mapsAsObjects: true, int64AsType: 'auto' as 'number' }) // 'auto' is missing from msgpackr's types

export type Frame = { t: string; [field: string]: unknown }

/** `max`: what the receiving side accepts — MAX_FRAME_TO_DIRECTORY, or MAX_FRAME_FROM_DIRECTORY from a directory. */
export function encodeFrame(frame: Frame, max = MAX_FRAME_TO_DIRECTORY): Buffer {
  const body = packr.pack(frame)
  if (body.length > max) throw new ProtocolError(ErrorCodes.FRAME, `frame ${frame.t} of ${body.length} bytes exceeds ${max}`)
  const out = Buffer.allocUnsafe(4 + body.length)
  out.writeUInt32BE(body.length, 0)
  body.copy(out, 4)
  return out
}

/**
 * Accumulates TCP chunks and yields whole frames. Throws ProtocolError(EFRAME) on an oversized, empty or
 * undecodable frame, or one that is not a map with a string `t`; the caller then closes the connection.
 * Linear in the bytes received however they are split: a frame that arrives whole in a chunk is decoded where it
 * lies; otherwise its bytes are gathered in a buffer that doubles as they come, up to the frame's length — each
 * byte copied at most three times, and never much more memory than was received (a 4-byte length alone does not
 * reserve 192 KiB). Joining the buffer to every chunk cost 346 ms of CPU for a 64 KiB frame sent a byte at a time.
 */
export class FrameDecoder {
  /** The length prefix, while it is incomplete. */
  private readonly head = Buffer.alloc(4)
  private headFill = 0
  /** The frame under way, once its length is known: `bodyLen` bytes, of which `bodyFill` are in `body`. */
  private body: Buffer | null = null
  private bodyLen = 0
  private bodyFill = 0

  /** `max`: the longest frame accepted (MAX_FRAME_TO_DIRECTORY in a directory, MAX_FRAME_FROM_DIRECTORY elsewhere). */
  constructor(private readonly max = MAX_FRAME_TO_DIRECTORY) {}

  /** Bytes of a frame not yet complete (0 between frames): the directory times out a frame that stays partial. */
  get pending(): number {
    return this.body === null ? this.headFill : 4 + this.bodyFill
  }

  push(chunk: Buffer): Frame[] {
    const frames: Frame[] = []
    let at = 0
    while (at < chunk.length) {
      if (this.body === null) {
        let len: number
        if (this.headFill === 0 && chunk.length - at >= 4) {
          len = chunk.readUInt32BE(at)
          at += 4
        } else {
          const n = Math.min(4 - this.headFill, chunk.length - at)
          chunk.copy(this.head, this.headFill, at, at + n)
          this.headFill += n
          at += n
          if (this.headFill < 4) break
          len = this.head.readUInt32BE(0)
        }
        this.headFill = 0
        if (len === 0 || len > this.max) throw new ProtocolError(ErrorCodes.FRAME, `bad frame length ${len}`)
        if (chunk.length - at >= len) {
          frames.push(decodeBody(chunk.subarray(at, at + len)))
          at += len
          continue
        }
        this.body = Buffer.allocUnsafe(Math.min(len, Math.max(MIN_GATHER, chunk.length - at)))
        this.bodyLen = len
        this.bodyFill = 0
      }
      const n = Math.min(this.bodyLen - this.bodyFill, chunk.length - at)
      if (this.bodyFill + n > this.body.length) {
        const grown = Buffer.allocUnsafe(Math.min(this.bodyLen, Math.max(2 * this.body.length, this.bodyFill + n)))
        this.body.copy(grown, 0, 0, this.bodyFill)
        this.body = grown
      }
      chunk.copy(this.body, this.bodyFill, at, at + n)
      this.bodyFill += n
      at += n
      if (this.bodyFill < this.bodyLen) break
      const body = this.body
      this.body = null
      this.bodyFill = 0
      frames.push(decodeBody(body))
    }
    return frames
  }
}

function decodeBody(body: Buffer): Frame {
  let value: unknown
  try {
    value = packr.unpack(body)
  } catch (err) {
    throw new ProtocolError(ErrorCodes.FRAME, `undecodable frame: ${(err as Error).message}`)
  }
  if (typeof value !== 'object' || value === null || Array.isArray(value) || typeof (value as Frame).t !== 'string') {
    throw new ProtocolError(ErrorCodes.FRAME, 'frame is not a map with a string field t')
  }
  return value as Frame
}

/** The encoded size of a value inside a frame (e.g. one group of a `status` page). */
export function encodedSize(value: unknown): number {
  return packr.pack(value).length
}
