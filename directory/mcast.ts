/**
 * The multicast addresses a directory hands its groups: a range given as a.b.c.d/prefix, and one address per
 * group drawn from it by the group's incarnation.
 */
import { parseIncarnation } from '../lib/wire.js'

/** `size` addresses from `base` (an IPv4 address as an unsigned 32-bit number). */
export interface McastRange {
  base: number
  size: number
}

/** Parses an IPv4 multicast range ('239.255.0.0/16'); throws on anything else. Host bits are ignored. */
export function parseRange(range: string): McastRange {
  const m = /^(\d{1,3})\.(\d{1,3})\.(\d{1,3})\.(\d{1,3})\/(\d{1,2})$/.exec(range)
  if (!m) throw new Error(`bad multicast range ${range} (want a.b.c.d/prefix)`)
  const octets = m.slice(1, 5).map(Number)
  const prefix = Number(m[5])
  if (octets.some((o) => o > 255) || prefix < 4 || prefix > 32 || octets[0]! < 224 || octets[0]! > 239) {
    throw new Error(`bad multicast range ${range} (must lie in 224.0.0.0/4, prefix 4-32)`)
  }
  const size = 2 ** (32 - prefix)
  const base = ((octets[0]! * 2 ** 24 + octets[1]! * 2 ** 16 + octets[2]! * 2 ** 8 + octets[3]!) >>> 0) & ~(size - 1)
  return { base: base >>> 0, size }
}

/** Whether the dotted IPv4 address `host` lies in `range`. */
export function inRange(range: McastRange, host: string): boolean {
  const n = host.split('.').reduce((acc, o) => acc * 256 + Number(o), 0)
  return n >= range.base && n < range.base + range.size
}

function ipOf(n: number): string {
  return [n >>> 24, (n >>> 16) & 255, (n >>> 8) & 255, n & 255].join('.')
}

/**
 * The "ip:port" of a new group of incarnation `inc`: an address derived from the incarnation, so that independent
 * directories rarely pick the same one (and when they do, the incarnation in every datagram keeps the groups apart);
 * the next free one if `used` holds it.
 */
export function mcastAddress(range: McastRange, port: number, inc: string, used: ReadonlySet<string>): string {
  // Not the first and last of a range of 4 or more (they look like a subnet's network and broadcast addresses).
  const first = range.size > 2 ? 1 : 0
  const usable = range.size - 2 * first
  const { lo } = parseIncarnation(inc)!
  const at = (k: number): string => `${ipOf((range.base + first + ((lo + k) % usable)) >>> 0)}:${port}`
  for (let k = 0; k < usable; k++) if (!used.has(at(k))) return at(k)
  // More groups than addresses: share one; the incarnation in every datagram keeps them apart.
  return at(0)
}
