/**
 * Framing of the directory's TCP protocol (docs/PROTOCOL.md §3): a u32 big-endian length, then one MessagePack map.
 * Shared by the directory server and the member's directory client.
 */
import { Packr } from 'msgpackr'
import { ErrorCodes, ProtocolError } from './errors.js'

export const MAX_FRAME = 65_536

const packr = new Packr({ useRecords: false, mapsAsObjects: true })

export type Frame = { t: string; [field: string]: unknown }

export function encodeFrame(frame: Frame): Buffer {
  const body = packr.pack(frame)
  if (body.length > MAX_FRAME) throw new ProtocolError(ErrorCodes.FRAME, `frame of ${body.length} bytes exceeds ${MAX_FRAME}`)
  const out = Buffer.allocUnsafe(4 + body.length)
  out.writeUInt32BE(body.length, 0)
  body.copy(out, 4)
  return out
}

/**
 * Accumulates TCP chunks and yields whole frames. Throws ProtocolError(EFRAME) on an oversized, empty or
 * undecodable frame, or one that is not a map with a string `t`; the caller then closes the connection.
 */
export class FrameDecoder {
  private buf: Buffer = Buffer.alloc(0)

  push(chunk: Buffer): Frame[] {
    this.buf = this.buf.length === 0 ? chunk : Buffer.concat([this.buf, chunk])
    const frames: Frame[] = []
    while (this.buf.length >= 4) {
      const len = this.buf.readUInt32BE(0)
      if (len === 0 || len > MAX_FRAME) throw new ProtocolError(ErrorCodes.FRAME, `bad frame length ${len}`)
      if (this.buf.length < 4 + len) break
      const body = this.buf.subarray(4, 4 + len)
      this.buf = this.buf.subarray(4 + len)
      let value: unknown
      try {
        value = packr.unpack(body)
      } catch (err) {
        throw new ProtocolError(ErrorCodes.FRAME, `undecodable frame: ${(err as Error).message}`)
      }
      if (typeof value !== 'object' || value === null || Array.isArray(value) || typeof (value as Frame).t !== 'string') {
        throw new ProtocolError(ErrorCodes.FRAME, 'frame is not a map with a string field t')
      }
      frames.push(value as Frame)
    }
    return frames
  }
}

/** Read a typed field from a decoded frame, or throw ProtocolError(EFRAME) naming it. */
export function field<K extends 'string' | 'number' | 'object'>(
  frame: Frame,
  name: string,
  kind: K,
): K extends 'string' ? string : K extends 'number' ? number : unknown {
  const v = frame[name]
  const ok = kind === 'number' ? typeof v === 'number' && Number.isFinite(v) : kind === 'object' ? typeof v === 'object' && v !== null : typeof v === kind
  if (!ok) throw new ProtocolError(ErrorCodes.FRAME, `frame ${frame.t}: field ${name} must be a ${kind}`)
  return v as never
}
