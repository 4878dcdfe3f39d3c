/**
 * State transfer over real sockets (loopback), in one process (PROTOCOL.md §8, docs/API.md "State transfer"): a
 * replicated log whose replicas join while others send start from the state exactly at their first view — every
 * message before it in the state, every message after it delivered, none twice — also when the donor dies
 * mid-transfer, and for a state of many megabytes.
 */
import t from 'tap'
import { DirectoryServer } from '../directory/server.js'
import { Group } from '../lib/group.js'
import { ErrorCodes } from '../lib/errors.js'
import type { StateHooks } from '../lib/options.js'
import { until } from './fixtures/procs.js'

const iface = '127.0.0.1'

async function directory(t: { teardown(f: () => unknown): void }): Promise<string> {
  const server = new DirectoryServer({ host: iface, port: 0, rejoinGraceMs: 0 })
  const a = await server.listen()
  t.teardown(() => server.close())
  return `${a.host}:${a.port}`
}

/**
 * A replica of an append-only log of "sender:body" lines; its state is the log itself (plus `pad` bytes per
 * snapshot, to make it large), streamed in chunks of `chunk` bytes. `slowMs`: the snapshot stream waits this long
 * per chunk (a slow donor).
 */
class Replica {
  lines: string[] = []
  restores = 0
  g!: Group
  constructor(readonly id: string, readonly pad = 0, readonly chunk = 1 << 20, readonly slowMs = 0) {}

  hooks(): StateHooks {
    return {
      snapshot: () => {
        const body = Buffer.from(JSON.stringify(this.lines))
        const head = Buffer.alloc(8)
        head.writeUInt32BE(body.length, 0)
        head.writeUInt32BE(this.pad, 4)
        const { chunk, slowMs, pad } = this
        return (async function* () {
          yield head
          yield body
          for (let sent = 0; sent < pad; sent += chunk) {
            if (slowMs) await new Promise((r) => setTimeout(r, slowMs))
            yield Buffer.alloc(Math.min(chunk, pad - sent), 0x5a)
          }
        })()
      },
      restore: async (chunks) => {
        this.restores++
        const parts: Buffer[] = []
        let total = 0
        for await (const c of chunks) {
          total += c.length
          // Keep the head and the log; count the padding only.
          if (parts.reduce((n, p) => n + p.length, 0) < 8 + (parts.length ? Buffer.concat(parts).readUInt32BE(0) : Infinity)) parts.push(Buffer.from(c))
        }
        const all = Buffer.concat(parts)
        const n = all.readUInt32BE(0)
        if (total !== 8 + n + all.readUInt32BE(4)) throw new Error(`state of ${total} bytes, expected ${8 + n + all.readUInt32BE(4)}`)
        this.lines = JSON.parse(all.subarray(8, 8 + n).toString())
      },
    }
  }

  async join(dir: string, opts: Record<string, unknown> = {}): Promise<void> {
    this.g = await Group.join('log', this.id, { directory: dir, iface, state: this.hooks(), ...opts })
    this.g.on('message', (d) => this.lines.push(`${d.sender}:${Buffer.from(d.data).toString()}`))
  }
}

t.test('replicas that join while others send start from the state at their first view', { timeout: 60_000 }, async (t) => {
  const dir = await directory(t)
  const rs = ['a', 'b'].map((id) => new Replica(id))
  for (const r of rs) await r.join(dir)
  t.teardown(() => rs.forEach((r) => r.g.close()))
  const N = 300
  const sending = Promise.all(rs.map(async (r) => {
    for (let k = 1; k <= N; k++) {
      await r.g.send(String(k))
      if (k % 10 === 0) await new Promise((res) => setTimeout(res, 2))
    }
  }))
  await new Promise((r) => setTimeout(r, 100))
  const late = new Replica('c')
  await late.join(dir)
  rs.push(late)
  t.equal(late.restores, 1, 'c restored once')
  t.ok(late.lines.length > 0, `c started with ${late.lines.length} lines of history`)
  await sending
  t.ok(await until(() => rs.every((r) => r.lines.length === 2 * N), 20_000), 'every replica has every line')
  for (const r of rs) t.same(r.lines, rs[0]!.lines, `${r.id}: the same log, in the same order`)
})

t.test('the donor dies mid-transfer: the next holder gives the state at the view that removed it', { timeout: 90_000 }, async (t) => {
  const dir = await directory(t)
  // a is the donor (lowest number); its snapshot streams slowly: 40 MB in 1 MiB chunks, 50 ms each.
  const a = new Replica('a', 40 << 20, 1 << 20, 50)
  const b = new Replica('b', 40 << 20)
  await a.join(dir)
  await b.join(dir)
  t.teardown(() => { a.g.close(); b.g.close() })
  for (let k = 1; k <= 50; k++) await a.g.send(`x${k}`)
  const c = new Replica('c')
  const joining = c.join(dir, { stateTimeoutMs: 30_000 })
  await new Promise((r) => setTimeout(r, 600))
  a.g.close() // a crash, to the others
  await joining
  t.teardown(() => c.g.close())
  t.equal(c.restores, 2, 'restore was called again, from the new donor')
  for (let k = 1; k <= 20; k++) await b.g.send(`y${k}`)
  t.ok(await until(() => c.lines.length === b.lines.length && c.lines.at(-1) === 'b:y20', 20_000), `c caught up (${c.lines.length} lines)`)
  t.same(c.lines, b.lines, 'c holds exactly what b holds')
})

t.test('no member holds the state: ESTATE, not a stall', { timeout: 30_000 }, async (t) => {
  const dir = await directory(t)
  // a has no hooks: it holds nothing a joiner could start from.
  const a = await Group.join('log', 'a', { directory: dir, iface })
  t.teardown(() => a.close())
  await a.send('x')
  const c = new Replica('c')
  await t.rejects(c.join(dir), { code: ErrorCodes.STATE })
})
