/**
 * The loot box's client protocol (`lootbox serve`), pure: no sockets. A client sends lines; every line gets exactly
 * one reply line, in the order the lines were sent. Everything a client sends is hostile until checked here.
 */

/** The most numbers one draw may ask for. */
export const MAX_DRAW = 1000
/** The longest line accepted, in bytes, without its newline (and a `\r` before it). */
export const MAX_LINE = 256

export const HELP_LINE = `commands: draw N (N numbers, 1-${MAX_DRAW}, in the order drawn) | stats | help`

export type Request =
  | { kind: 'draw'; n: number }
  | { kind: 'stats' }
  | { kind: 'help' }
  | { kind: 'error'; message: string }

/** A token as it may be echoed back: short, quoted, control characters escaped. */
function shown(s: string): string {
  return JSON.stringify(s.length > 24 ? `${s.slice(0, 24)}…` : s)
}

function bad(message: string): Request {
  return { kind: 'error', message: `error: ${message}` }
}

/** One line (newline removed) → what the client asked for, or the one error line to answer. */
export function parseLine(line: string): Request {
  const words = line.trim().split(/\s+/).filter((w) => w !== '')
  if (words.length === 0) return bad(`empty line; ${HELP_LINE}`)
  const [cmd, ...args] = words as [string, ...string[]]
  switch (cmd.toLowerCase()) {
    case 'draw': {
      if (args.length === 0) return bad(`draw needs a count: draw N, N from 1 to ${MAX_DRAW}`)
      if (args.length > 1) return bad(`draw takes one count, not ${shown(args.join(" "))}: draw N, N from 1 to ${MAX_DRAW}`)
      const arg = args[0]!
      if (/^-\d+$/.test(arg)) return bad(`N is negative (${shown(arg)}); N is from 1 to ${MAX_DRAW}`)
      if (!/^\d+$/.test(arg)) return bad(`N is not an integer (${shown(arg)}); N is from 1 to ${MAX_DRAW}`)
      const n = arg.length > 9 ? Infinity : Number(arg) // no precision games with 30-digit numbers
      if (n === 0) return bad(`N is zero; N is from 1 to ${MAX_DRAW}`)
      if (n > MAX_DRAW) return bad(`N is over the maximum of ${MAX_DRAW} (${shown(arg)})`)
      return { kind: 'draw', n }
    }
    case 'stats':
    case 'help':
      return args.length === 0 ? { kind: cmd.toLowerCase() as 'stats' | 'help' } : bad(`${cmd.toLowerCase()} takes no arguments`)
    default:
      return bad(`unknown command ${shown(cmd)}; ${HELP_LINE}`)
  }
}

/** What the splitter hands out: a line (newline and a trailing `\r` removed), or the mark of an overlong one. */
export const OVERLONG = Symbol('overlong')
export type Piece = string | typeof OVERLONG

/**
 * Cuts a byte stream into lines, holding at most `maxLine` bytes of an unfinished line beyond what the caller has
 * not pulled yet. A line over `maxLine` is reported once, as soon as it is known to be too long, and the rest of it
 * (up to its newline) is dropped unread. Pull-based, so a reader that stops pulling (backpressure) holds only what
 * was pushed.
 */
export class LineSplitter {
  private buf: Buffer = Buffer.alloc(0)
  private state: 'line' | 'skip' = 'line'
  private ended = false

  constructor(private readonly maxLine = MAX_LINE) {}

  push(chunk: Buffer): void {
    this.buf = this.buf.length === 0 ? chunk : Buffer.concat([this.buf, chunk])
  }

  /** The stream ended: an unfinished last line counts as a line. */
  end(): void {
    this.ended = true
  }

  /** Bytes held. */
  get held(): number {
    return this.buf.length
  }

  /** The next complete line, the overlong mark, or null when more bytes are needed. */
  next(): Piece | null {
    for (;;) {
      const nl = this.buf.indexOf(10)
      if (this.state === 'skip') {
        if (nl < 0) {
          this.buf = Buffer.alloc(0)
          return null
        }
        this.buf = this.buf.subarray(nl + 1)
        this.state = 'line'
        continue
      }
      if (nl < 0) {
        if (this.buf.length > this.maxLine + 1) { // + 1: room for the `\r` of a `\r\n` still to come
          this.buf = Buffer.alloc(0)
          this.state = 'skip'
          return OVERLONG
        }
        if (!this.ended || this.buf.length === 0) return null
        const last = this.buf
        this.buf = Buffer.alloc(0)
        return this.cut(last)
      }
      const line = this.buf.subarray(0, nl)
      this.buf = this.buf.subarray(nl + 1)
      return this.cut(line)
    }
  }

  private cut(line: Buffer): Piece {
    const end = line.length > 0 && line[line.length - 1] === 13 ? line.length - 1 : line.length
    return end > this.maxLine ? OVERLONG : line.toString('utf8', 0, end)
  }
}
