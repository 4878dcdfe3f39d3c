/**
 * Framing of the directory's TCP protocol (docs/PROTOCOL.md §3): a u32 big-endian length, then one MessagePack map.
 * Shared by the directory server and the member's directory client.
 */
import { Packr } from 'msgpackr'
import { ErrorCodes, ProtocolError } from './errors.js'
import { parseMulticastAddr } from './options.js'

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

const isU32 = (v: unknown): boolean => Number.isInteger(v) && (v as number) >= 0 && (v as number) <= 0xffff_ffff
const isSlot = (v: unknown): boolean => Number.isSafeInteger(v) && (v as number) >= 0

/**
 * Checks what a member takes from a directory frame (PROTOCOL.md §3.2) before it acts on it; throws
 * ProtocolError(EFRAME) naming the field. Member addresses are only checked to be strings: a bad one is a counted
 * send error (group.ts), not a reason to fail.
 */
export function checkDirectoryFrame(f: Frame): void {
  const bad = (what: string): never => {
    throw new ProtocolError(ErrorCodes.FRAME, `frame ${f.t} from the directory: ${what}`)
  }
  switch (f.t) {
    case 'welcome':
      if (!isU32(f.no) || f.no === 0) bad('no must be a member number')
      return
    case 'prepare':
      if (!isU32(f.viewId)) bad('viewId must be a view id')
      return
    case 'commit': {
      for (const k of ['viewId', 'sequencer', 'holder']) if (!isU32(f[k])) bad(`${k} must be a 32-bit number`)
      for (const k of ['cut', 'start']) if (!isSlot(f[k])) bad(`${k} must be a slot`)
      if (!parseMulticastAddr(f.mcast)) bad('mcast must be a multicast "ip:port"')
      const members = f.members
      if (!Array.isArray(members)) bad('members must be a list')
      for (const m of members as unknown[]) {
        const r = m as { no?: unknown; id?: unknown; addr?: unknown } | null
        if (typeof r !== 'object' || r === null || !isU32(r.no) || typeof r.id !== 'string' || typeof r.addr !== 'string') bad('members must be {no, id, addr}')
      }
      if ((members as unknown[]).length > 0 && !(members as Array<{ no: number }>).some((m) => m.no === f.sequencer)) bad('the sequencer must be a member')
      const sources = f.sources ?? []
      if (!Array.isArray(sources)) bad('sources must be a list')
      for (const r of sources as Array<{ no?: unknown; low?: unknown; have?: unknown } | null>) {
        if (typeof r !== 'object' || r === null || !isU32(r.no) || !isSlot(r.low) || !isSlot(r.have)) bad('sources must be {no, low, have}')
      }
      return
    }
  }
}
