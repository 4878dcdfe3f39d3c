/**
 * `lootbox serve`: the loot box as a replicated TCP service. Every replica is a member of one seqcast group holding
 * the same LootBox (demo-app/lootstate.ts); plain TCP clients (`nc`, a few lines of Python) connect to any replica
 * and send `draw N`. The replica multicasts `draw N <tag>`, and answers once its own tagged draw is delivered: the
 * total order decides which numbers it gets, the same at every replica, so no number is handed out twice and no
 * lock server is needed. The client protocol is in lootproto.ts; USAGE below is the user's documentation.
 */
import { randomBytes } from 'node:crypto'
import net from 'node:net'
import os from 'node:os'
import { parseArgs } from 'node:util'
import createDebug from 'debug'
import { ErrorCodes, Group, type MessageDelivery, type SeqcastError, type StateHooks, type ViewDelivery } from '../lib/index.js'
import { readKey } from '../lib/seal.js'
import { drawMessage, LootBox, SIZE } from './lootstate.js'
import { HELP_LINE, LineSplitter, MAX_DRAW, MAX_LINE, OVERLONG, parseLine, type Piece } from './lootproto.js'

const log = createDebug('seqcast:lootserve')

export const DEFAULT_PORT = 8888
export const DEFAULT_MAX_CLIENTS = 1000
/** Requests of one connection read but not yet answered; its further lines wait unread (TCP backpressure). */
export const MAX_PENDING = 64
/** Reply bytes queued to a client that does not read: beyond this its lines wait unread. */
const MAX_UNSENT = 64 * 1024

export const USAGE = `usage: npm run lootbox -- serve [--port ${DEFAULT_PORT}] [--host ADDR] [--dir HOST:PORT] [--name NAME]
                                    [--iface ADDR] [--group lootbox] [--max-clients ${DEFAULT_MAX_CLIENTS}]
A replica of the loot box (a shuffled list of 1..${SIZE}) that TCP clients draw numbers from. Start it on several
hosts against one directory (\`npx dir --host 0.0.0.0\`); every replica serves clients, and across all of them no
number is ever handed out twice.
  --port P         TCP port for clients (default ${DEFAULT_PORT}; 0: any free port, printed)
  --host ADDR      address to listen on (default 127.0.0.1; 0.0.0.0 for every interface)
  --dir H:P        the seqcast directory (default 127.0.0.1:4720); it is not started here: run \`npx dir\`
  --name NAME      this replica's name in the group, unique among live replicas (default HOSTNAME-PORT)
  --iface ADDR     local IPv4 address for the group's datagrams (default 127.0.0.1; the host's address across hosts)
  --group NAME     the group, i.e. which loot box (default lootbox)
  --max-clients N  connections served at once; one more gets an error line and is closed (default ${DEFAULT_MAX_CLIENTS})
environment: SEQCAST_KEY_FILE=F  the group key (\`dir keygen F\`), the same for every replica and the directory;
             DEBUG=seqcast:*  logs (seqcast:lootserve: connections, bad lines, draws)

Protocol: one request per line, one reply line per request, in the order sent (requests may be pipelined):
  draw N   N from 1 to ${MAX_DRAW} -> the N numbers, space-separated, in the order drawn. Sent only once the draw is
           ordered in the group and delivered to every replica. If the box holds fewer than N, the reply has those
           that are left (fewer than N numbers); every draw after that gets the line \`exhausted\`.
  stats    -> one line: stats counter=<numbers handed out> left=<numbers left> draws=<draws applied>
           state=<counter/fingerprint> view=<id> sequencer=<name> replicas=<names> handed=<replica:numbers,...>
           me=<name> clients=<connections> lost=<numbers>; handed counts, per replica, the numbers its draws got
           (every replica knows the same); lost counts this replica's numbers whose client was gone.
  help     -> the list of commands.
  Anything else gets one line starting with \`error:\` and the connection stays usable: an unknown command, a
  missing, zero, negative, non-integer or too large N (over ${MAX_DRAW}), a line over ${MAX_LINE} bytes (dropped
  whole), an empty line. At most ${MAX_PENDING} requests of a connection wait for their replies; further lines are
  read once earlier ones are answered.
Lost numbers: a number is handed out once, whatever happens next. A client that disconnects before its reply
loses its numbers; if a replica dies between a draw being ordered and its reply, that draw's numbers are lost too.
Lost numbers are never reissued. Replicas can be added and can crash (SIGKILL) at any time: a new or returning
replica takes the current state from a live one and serves at once. If every replica is down at once, the state
is gone: the next replica starts a fresh box and hands out the same numbers again.`

interface Waiting { resolve: (numbers: number[]) => void; reject: (err: Error) => void }

/** The replicated state (the box and who drew how many numbers) and this replica's draws in flight. */
class Replica {
  readonly box = new LootBox()
  /** Numbers handed out, per sender of draws: applied in the delivered order, so the same at every replica. */
  readonly handed = new Map<string, number>()
  /** Own draws sent and not yet delivered, by tag. */
  private readonly waiting = new Map<string, Waiting>()
  private readonly incarnation = randomBytes(4).toString('hex')
  private tags = 0
  /** Set once joined. */
  g!: Group
  failure: Error | null = null

  constructor(readonly name: string) {}

  /** The state transfer's hooks: the ledger as a JSON line, then the box's own state. */
  hooks(): StateHooks {
    const box = this.box.hooks()
    return {
      snapshot: () => {
        // Both parts now: the snapshot is of this moment, not of when the joiner reads it.
        const head = Buffer.from(`${JSON.stringify([...this.handed])}\n`)
        const body = box.snapshot()
        if (body instanceof Uint8Array) return Buffer.concat([head, body])
        return (async function* () {
          yield head
          yield* body
        })()
      },
      restore: async (chunks) => {
        const parts: Buffer[] = []
        for await (const c of chunks) parts.push(Buffer.from(c))
        const all = Buffer.concat(parts)
        const nl = all.indexOf(10)
        const handed = nl < 0 ? null : JSON.parse(all.subarray(0, nl).toString()) as unknown
        if (!Array.isArray(handed) || !handed.every((e) => Array.isArray(e) && typeof e[0] === 'string' && Number.isInteger(e[1]))) {
          throw new Error('bad loot box state: the numbers handed out per replica')
        }
        await box.restore((async function* () { yield all.subarray(nl + 1) })())
        this.handed.clear()
        for (const [k, v] of handed as Array<[string, number]>) this.handed.set(k, v)
      },
    }
  }

  get pending(): number {
    return this.waiting.size
  }

  /** Sends a draw and resolves with its numbers once it is delivered here ([] when the box is empty). */
  draw(n: number): Promise<number[]> {
    if (this.failure) return Promise.reject(this.failure)
    const tag = `${this.incarnation}.${++this.tags}`
    const got = new Promise<number[]>((resolve, reject) => this.waiting.set(tag, { resolve, reject }))
    this.g.send(drawMessage(n, tag)).catch((err: Error) => this.waiting.get(tag)?.reject(err))
    return got
  }

  apply(d: MessageDelivery): void {
    const r = this.box.apply(Buffer.from(d.data).toString())
    if (!r) {
      log('%s: not a draw from %s, ignored', this.name, d.sender)
      return
    }
    this.handed.set(d.sender, (this.handed.get(d.sender) ?? 0) + r.numbers.length)
    if (d.sender !== this.name) return
    const w = this.waiting.get(r.tag)
    this.waiting.delete(r.tag)
    w?.resolve(r.numbers)
  }

  /** The group is gone: every draw in flight fails (its numbers, if it was ordered, are lost). */
  fail(err: Error): void {
    this.failure ??= err
    for (const w of this.waiting.values()) w.reject(err)
    this.waiting.clear()
  }
}

interface Reply { text?: string; make?: () => string }

/** One client connection: lines in, one reply per line out, in order. */
class Client {
  private readonly lines = new LineSplitter(MAX_LINE)
  /** Replies in request order; a draw's stays empty until its numbers are delivered. */
  private readonly replies: Reply[] = []
  /** 'ending': the client closed its side; answer what it sent, then close ours. */
  private state: 'open' | 'ending' | 'closed' = 'open'

  constructor(private readonly socket: net.Socket, private readonly server: LootServer, readonly id: string) {
    socket.setNoDelay(true)
    socket.on('data', (b: Buffer) => {
      this.lines.push(b)
      this.pump()
    })
    socket.on('end', () => {
      if (this.state === 'open') this.state = 'ending'
      this.lines.end()
      this.pump()
    })
    socket.on('drain', () => this.pump())
    socket.on('error', (err) => log('%s: %s: %s', server.name, id, err.message))
    socket.on('close', () => {
      this.state = 'closed'
      this.replies.length = 0
      server.clients.delete(this)
      log('%s: %s closed', server.name, id)
    })
  }

  /** Handles the lines held, as far as the bounds allow, and reads more only when it can take them. */
  private pump(): void {
    let more = true
    while (this.state !== 'closed' && !this.blocked()) {
      const p = this.lines.next()
      if (p === null) {
        more = false
        break
      }
      this.handle(p)
    }
    if (this.state === 'closed') return
    if (this.blocked()) this.socket.pause()
    else this.socket.resume()
    if (this.state === 'ending' && !more && this.replies.length === 0) this.socket.end()
  }

  private blocked(): boolean {
    return this.replies.length >= MAX_PENDING || this.socket.writableLength >= MAX_UNSENT
  }

  private handle(p: Piece): void {
    if (p === OVERLONG) {
      log('%s: %s: line over %d bytes', this.server.name, this.id, MAX_LINE)
      return this.answer({ text: `error: line too long (over ${MAX_LINE} bytes); it was dropped` })
    }
    const req = parseLine(p)
    switch (req.kind) {
      case 'error':
        log('%s: %s: %s', this.server.name, this.id, req.message)
        return this.answer({ text: req.message })
      case 'help':
        return this.answer({ text: HELP_LINE })
      case 'stats':
        return this.answer({ make: () => this.server.statsLine() })
      case 'draw':
        return this.draw(req.n)
    }
  }

  private draw(n: number): void {
    if (this.server.stopping) return this.answer({ text: 'error: this replica is shutting down; draw on another one' })
    const reply: Reply = {}
    this.answer(reply)
    this.server.replica.draw(n).then((numbers) => {
      log('%s: %s: draw %d -> %d numbers', this.server.name, this.id, n, numbers.length)
      if (this.state === 'closed') this.server.lost += numbers.length
      reply.text = numbers.length === 0 ? 'exhausted' : numbers.join(' ')
    }, (err: SeqcastError) => {
      reply.text = `error: this replica lost its group (${err.code ?? err.message}); the draw may have been ordered and its numbers lost; draw on another replica`
    }).finally(() => {
      this.flush()
      this.pump()
    })
  }

  private answer(r: Reply): void {
    this.replies.push(r)
    this.flush()
  }

  /** Writes the replies that are ready, in order. */
  private flush(): void {
    if (this.state === 'closed') return
    while (this.replies.length > 0) {
      const r = this.replies[0]!
      const text = r.text ?? r.make?.()
      if (text === undefined) break
      this.replies.shift()
      this.socket.write(`${text}\n`)
    }
  }

  end(): void {
    if (this.state !== 'closed') this.socket.end()
  }
}

/** The TCP side: accepts clients (bounded), answers `stats`, stops cleanly. */
class LootServer {
  readonly clients = new Set<Client>()
  lost = 0
  stopping = false
  private connections = 0
  readonly tcp: net.Server

  constructor(readonly replica: Replica, private readonly maxClients: number) {
    this.tcp = net.createServer({ allowHalfOpen: true }, (socket) => this.accept(socket))
  }

  get name(): string {
    return this.replica.name
  }

  private accept(socket: net.Socket): void {
    const id = `client ${++this.connections} (${socket.remoteAddress}:${socket.remotePort})`
    if (this.clients.size >= this.maxClients) {
      log('%s: %s refused: %d clients already', this.name, id, this.clients.size)
      socket.on('error', () => {})
      socket.setTimeout(2000, () => socket.destroy())
      socket.end(`error: this replica serves ${this.maxClients} clients already; try again later or another replica\n`)
      return
    }
    log('%s: %s connected', this.name, id)
    this.clients.add(new Client(socket, this, id))
  }

  statsLine(): string {
    const { box, handed, g } = this.replica
    const v = g.view
    const byReplica = [...handed].map(([k, n]) => `${k}:${n}`).join(',') || '-'
    return `stats counter=${box.counter} left=${SIZE - box.counter} draws=${box.applied} state=${box.state} ` +
      `view=${v?.viewId ?? '-'} sequencer=${v?.sequencer ?? '-'} replicas=${v?.members.join(',') ?? '-'} handed=${byReplica} ` +
      `me=${this.name} clients=${this.clients.size} lost=${this.lost}`
  }

  close(): void {
    this.tcp.close()
    for (const c of this.clients) c.end()
  }
}

function say(name: string, line: string): void {
  process.stdout.write(`lootbox ${name}: ${line}\n`)
}

function describeView(d: ViewDelivery, last: string[] | null): string {
  const changes = last === null ? [] : [
    ...d.members.filter((m) => !last.includes(m)).map((m) => `${m} joined`),
    ...last.filter((m) => !d.members.includes(m)).map((m) => `${m} left or failed`),
  ]
  return `replicas up: ${d.members.join(', ')} (view ${d.viewId}, sequencer ${d.sequencer})${changes.length ? `; ${changes.join(', ')}` : ''}`
}

/** Joins, retrying while the directory still lists an earlier life of this name (a crash not yet noticed). */
async function join(group: string, name: string, opts: Parameters<typeof Group.join>[2]): Promise<Group> {
  const end = Date.now() + 15_000
  for (let said = false; ; said = true) {
    try {
      return await Group.join(group, name, opts)
    } catch (err) {
      if ((err as SeqcastError).code !== ErrorCodes.DUPLICATE_MEMBER || Date.now() > end) throw err
      if (!said) say(name, `the directory still lists a replica named ${name}; waiting until it is gone (or pick another --name)`)
      await new Promise((r) => setTimeout(r, 500))
    }
  }
}

function defaultName(port: number): string {
  const host = os.hostname().replace(/[^A-Za-z0-9._-]/g, '').slice(0, 40) || 'replica'
  return `${host}-${port === 0 ? process.pid : port}`
}

function usageError(msg: string): number {
  console.error(`lootbox serve: ${msg}\n${USAGE}`)
  return 2
}

/** `lootbox serve ARGS`: runs until SIGINT/SIGTERM (exit 0) or until the replica loses its group (exit 1). */
export async function main(argv: string[]): Promise<number> {
  let values: Record<string, string | boolean | undefined>
  try {
    values = parseArgs({
      args: argv,
      options: {
        port: { type: 'string' }, host: { type: 'string' }, dir: { type: 'string' }, name: { type: 'string' },
        iface: { type: 'string' }, group: { type: 'string' }, 'max-clients': { type: 'string' }, help: { type: 'boolean', short: 'h' },
      },
    }).values
  } catch (err) {
    return usageError((err as Error).message)
  }
  if (values.help) {
    console.log(USAGE)
    return 0
  }
  const port = Number(values.port ?? DEFAULT_PORT)
  if (!/^\d{1,5}$/.test(String(values.port ?? DEFAULT_PORT)) || port > 65535) return usageError(`--port must be 0-65535, not ${values.port}`)
  const maxClients = Number(values['max-clients'] ?? DEFAULT_MAX_CLIENTS)
  if (!(Number.isInteger(maxClients) && maxClients >= 1 && maxClients <= 100_000)) return usageError('--max-clients must be 1-100000')
  const name = (values.name as string | undefined) ?? defaultName(port)
  if (!/^[A-Za-z0-9._:-]{1,64}$/.test(name)) return usageError('--name must be 1-64 letters, digits or . _ : -')
  const host = (values.host as string | undefined) ?? '127.0.0.1'
  const dir = (values.dir as string | undefined) ?? '127.0.0.1:4720'
  const group = (values.group as string | undefined) ?? 'lootbox'

  const replica = new Replica(name)
  let g: Group
  try {
    g = await join(group, name, {
      directory: dir, iface: (values.iface as string | undefined) ?? '127.0.0.1', key: process.env.SEQCAST_KEY_FILE || undefined,
      // Safe delivery: a draw is answered only once every replica holds it, so a replica that answers and then dies
      // cannot take the draw with it and leave the survivors to hand the same numbers out again.
      delivery: 'safe',
      state: replica.hooks(),
    })
  } catch (err) {
    const e = err as SeqcastError
    console.error(`lootbox ${name}: cannot join group ${group} at directory ${dir}: ${e.code ?? ''} ${e.message}` +
      (e.code === ErrorCodes.DIRECTORY_UNREACHABLE ? ' (start one with `npx dir`, or give --dir HOST:PORT)' : ''))
    return e.code === ErrorCodes.BAD_ARGUMENT ? 2 : 1
  }
  replica.g = g
  say(name, `joined group ${group} at directory ${dir}: ${replica.box.counter} of ${SIZE} numbers handed out (state ${replica.box.state})`)

  const server = new LootServer(replica, maxClients)
  let done!: (code: number) => void
  const exit = new Promise<number>((resolve) => (done = resolve))
  g.on('error', (err) => log('%s: group error %s', name, err.code))
  g.on('directory', (s) => say(name, s === 'lost' ? 'lost the directory: serving on, replicas cannot change until it is back' : 'the directory is back'))

  // The state machine: one loop applies every delivery in the total order, each wholly before the next (the state
  // transfer's snapshot is taken when this loop takes a view).
  void (async () => {
    let last: string[] | null = null
    try {
      for await (const d of g) {
        if (d.type === 'view') {
          say(name, describeView(d, last))
          last = d.members
        } else {
          replica.apply(d)
        }
      }
    } catch (err) {
      replica.fail(err as Error)
    }
    if (server.stopping) return
    replica.fail(new Error('the group closed'))
    const err = replica.failure as SeqcastError
    console.error(`lootbox ${name}: left the group (${err.code ?? ''} ${err.message}); draws in flight are answered with an error; exiting`)
    setTimeout(() => {
      server.close()
      done(1)
    }, 100)
  })()

  try {
    await new Promise<void>((resolve, reject) => {
      server.tcp.once('error', reject)
      server.tcp.listen(port, host, () => {
        server.tcp.off('error', reject)
        resolve()
      })
    })
  } catch (err) {
    console.error(`lootbox ${name}: cannot listen on ${host}:${port}: ${(err as Error).message}`)
    g.close()
    return 1
  }
  server.tcp.on('error', (err) => log('%s: listener: %s', name, err.message))
  const a = server.tcp.address() as net.AddressInfo
  say(name, `listening on ${a.address}:${a.port} (try: nc ${a.address === '0.0.0.0' ? '127.0.0.1' : a.address} ${a.port}, then: draw 4)`)

  const stop = async (): Promise<void> => {
    if (server.stopping) return done(130) // a second signal: now
    server.stopping = true
    say(name, 'stopping: answering the draws in flight, then leaving the group')
    server.tcp.close()
    for (let t = 0; replica.pending > 0 && t < 100; t++) await new Promise((r) => setTimeout(r, 50))
    server.close()
    await g.leave().catch(() => {})
    done(0)
  }
  process.on('SIGINT', () => void stop())
  process.on('SIGTERM', () => void stop())
  return exit
}
