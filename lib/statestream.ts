/**
 * The stream a joiner hands to the application's `restore` (PROTOCOL.md §8.3, lib/statexfer.ts): the state's bytes
 * in order, each once, copied out of their datagrams into pages.
 */
import { StateError } from './errors.js'

const EMPTY = new Uint8Array(0)

/** The stream copies the state into pages of this size: few, large chunks for `restore`, one copy of each byte. */
const PAGE = 64 * 1024

/**
 * The bytes of one transfer, as `restore` reads them: one reader, chunks in order. Bytes written are copied into
 * pages; a reader gets what is queued (full pages, then the filled part of the current one — the rest of that page
 * is filled later, never under what the reader holds). `taken` reports each chunk handed out (the joiner's flow
 * control), `stopped` a reader that quit early.
 */
export class StateStream implements AsyncIterableIterator<Uint8Array> {
  private queue: Uint8Array[] = []
  private head = 0
  private page: Buffer | null = null
  /** The current page's bytes [start, fill) are written and not yet queued. */
  private start = 0
  private fill = 0
  private ended = false
  private error: StateError | null = null
  private waiter: { resolve: (r: IteratorResult<Uint8Array>) => void; reject: (e: unknown) => void } | null = null

  constructor(private readonly taken: (n: number) => void, private readonly stopped: () => void) {}

  [Symbol.asyncIterator](): this {
    return this
  }

  /** The next bytes of the state, in order (copied). */
  write(src: Uint8Array): void {
    if (this.ended || this.error) return
    for (let o = 0; o < src.length;) {
      if (!this.page || this.fill === this.page.length) {
        this.cut()
        this.page = Buffer.allocUnsafeSlow(PAGE)
        this.start = this.fill = 0
      }
      const n = Math.min(src.length - o, this.page.length - this.fill)
      this.page.set(src.subarray(o, o + n), this.fill)
      this.fill += n
      o += n
    }
    if (this.waiter) {
      const c = this.shift()
      if (!c) return
      const w = this.waiter
      this.waiter = null
      w.resolve({ value: c, done: false })
      this.taken(c.length)
    }
  }

  /** No more bytes after those written. */
  end(): void {
    this.ended = true
    this.settle()
  }

  /** The transfer is over without its end: the reader gets `err`, bytes not read are dropped. */
  fail(err: StateError): void {
    if (this.ended || this.error) return
    this.error = err
    this.drop()
    this.settle()
  }

  next(): Promise<IteratorResult<Uint8Array>> {
    if (this.error) return Promise.reject(this.error)
    if (this.waiter) return Promise.reject(new StateError('the state has one reader: next() called before the previous one resolved'))
    const c = this.shift()
    if (c) {
      this.taken(c.length)
      return Promise.resolve({ value: c, done: false })
    }
    if (this.ended) return Promise.resolve({ value: undefined, done: true })
    return new Promise((resolve, reject) => { this.waiter = { resolve, reject } })
  }

  return(): Promise<IteratorResult<Uint8Array>> {
    if (!this.ended && !this.error) {
      this.error = new StateError('the reader stopped')
      this.drop()
      this.stopped()
    }
    return Promise.resolve({ value: undefined, done: true })
  }

  /** Queues the written part of the current page. */
  private cut(): void {
    if (this.page && this.fill > this.start) {
      this.queue.push(this.page.subarray(this.start, this.fill))
      this.start = this.fill
    }
  }

  private shift(): Uint8Array | undefined {
    if (this.head === this.queue.length) this.cut()
    if (this.head === this.queue.length) return undefined
    const c = this.queue[this.head]!
    this.queue[this.head++] = EMPTY
    if (this.head === this.queue.length) {
      this.queue = []
      this.head = 0
    }
    return c
  }

  private drop(): void {
    this.queue = []
    this.head = 0
    this.page = null
    this.start = this.fill = 0
  }

  private settle(): void {
    const w = this.waiter
    if (!w) return
    this.waiter = null
    if (this.error) w.reject(this.error)
    else if (this.ended) w.resolve({ value: undefined, done: true })
  }
}
