/**
 * Framing of the directory's TCP protocol (docs/PROTOCOL.md §3): a u32 big-endian length, then one MessagePack map.
 * Shared by the directory server and the member's directory client.
 */
import { Packr } from 'msgpackr'
import { ErrorCodes, ProtocolError } from './errors.js'
import { parseMulticastAddr } from './options.js'

/**
 * The most members (joining, in the view, or leaving and not yet released) a group may have; the directory refuses
 * a join beyond it with EGROUP_FULL. The frame limits below are sized for it.
 */
export const MAX_GROUP_MEMBERS = 1024

/**
 * The longest frame a directory accepts: the largest a member sends is a `rejoin` carrying its latest commit back,
 * 150 KB for MAX_GROUP_MEMBERS members with 64-byte ids and as many sources (test/limits.ts encodes it). Kept to
 * what members need, since a directory buffers up to this much for any connection, a stranger's too.
 */
export const MAX_FRAME_TO_DIRECTORY = 192 * 1024

/**
 * The longest frame a member (or `dir ls`) accepts: a `commit` of MAX_GROUP_MEMBERS members with 64-byte ids and as
 * many flush sources is 149 KB; a `status` page is filled up to it (test/limits.ts encodes both).
 */
export const MAX_FRAME_FROM_DIRECTORY = 256 * 1024

const packr = new Packr({ useRecords: false, mapsAsObjects: true })

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
 */
export class FrameDecoder {
  private buf: Buffer = Buffer.alloc(0)

  /** `max`: the longest frame accepted (MAX_FRAME_TO_DIRECTORY in a directory, MAX_FRAME_FROM_DIRECTORY elsewhere). */
  constructor(private readonly max = MAX_FRAME_TO_DIRECTORY) {}

  push(chunk: Buffer): Frame[] {
    this.buf = this.buf.length === 0 ? chunk : Buffer.concat([this.buf, chunk])
    const frames: Frame[] = []
    while (this.buf.length >= 4) {
      const len = this.buf.readUInt32BE(0)
      if (len === 0 || len > this.max) throw new ProtocolError(ErrorCodes.FRAME, `bad frame length ${len}`)
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

/** The encoded size of a value inside a frame (e.g. one group of a `status` page). */
export function encodedSize(value: unknown): number {
  return packr.pack(value).length
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

export type MemberEntry = { no: number; id: string; addr: string }

/**
 * A member's reading of its directory's frames (PROTOCOL.md §3.2): checks every field the member uses before it
 * acts on a frame, and turns a delta commit (`base`, `added`, `removed`) back into a full one (`members`) from the
 * last commit read. Throws ProtocolError(EFRAME) naming what is wrong. Member addresses are only checked to be
 * strings: a bad one is a counted send error (group.ts), not a reason to fail.
 */
export class DirectoryReader {
  private last: { viewId: number; members: MemberEntry[] } | null = null

  read(f: Frame): Frame {
    const bad = (what: string): never => {
      throw new ProtocolError(ErrorCodes.FRAME, `frame ${f.t} from the directory: ${what}`)
    }
    const entries = (v: unknown, name: string): MemberEntry[] => {
      if (!Array.isArray(v)) return bad(`${name} must be a list`)
      for (const r of v as Array<Partial<Record<keyof MemberEntry, unknown>> | null>) {
        if (typeof r !== 'object' || r === null || !isU32(r.no) || typeof r.id !== 'string' || typeof r.addr !== 'string') bad(`${name} must be {no, id, addr}`)
      }
      return (v as MemberEntry[]).map((r) => ({ no: r.no, id: r.id, addr: r.addr }))
    }
    switch (f.t) {
      case 'welcome':
        if (!isU32(f.no) || f.no === 0) bad('no must be a member number')
        return f
      case 'prepare':
        if (!isU32(f.viewId)) bad('viewId must be a view id')
        return f
      case 'commit':
        break
      default:
        return f
    }
    for (const k of ['viewId', 'sequencer', 'holder']) if (!isU32(f[k])) bad(`${k} must be a 32-bit number`)
    for (const k of ['cut', 'start']) if (!isSlot(f[k])) bad(`${k} must be a slot`)
    if (!parseMulticastAddr(f.mcast)) bad('mcast must be a multicast "ip:port"')
    const sources = f.sources ?? []
    if (!Array.isArray(sources)) bad('sources must be a list')
    for (const r of sources as Array<{ no?: unknown; low?: unknown; have?: unknown } | null>) {
      if (typeof r !== 'object' || r === null || !isU32(r.no) || !isSlot(r.low) || !isSlot(r.have)) bad('sources must be {no, low, have}')
    }
    let members: MemberEntry[]
    if (f.members !== undefined) {
      members = entries(f.members, 'members')
    } else {
      if (this.last === null || f.base !== this.last.viewId) bad(`a delta from view ${String(f.base)}, but the last commit read was view ${this.last?.viewId}`)
      const added = entries(f.added, 'added')
      const removed = f.removed
      if (!Array.isArray(removed) || !removed.every(isU32)) bad('removed must be a list of member numbers')
      const gone = new Set<number>([...(removed as number[]), ...added.map((e) => e.no)])
      members = [...this.last!.members.filter((e) => !gone.has(e.no)), ...added].sort((a, b) => a.no - b.no)
    }
    if (members.length > 0 && !members.some((m) => m.no === f.sequencer)) bad('the sequencer must be a member')
    this.last = { viewId: f.viewId as number, members }
    const { base: _base, added: _added, removed: _removed, ...rest } = f
    return { ...rest, members } as Frame
  }
}
