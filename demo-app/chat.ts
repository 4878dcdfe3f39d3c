#!/usr/bin/env node
/**
 * A chat across terminals on seqcast: every line typed is multicast to the group and printed by every member in
 * the same (total) order, the sender's own included.
 *
 *   npm run chat -- --name alice [--group lobby]... [--dir host:port] [--iface 127.0.0.1]
 *
 * With no --dir, it uses the directory at 127.0.0.1:4720, and starts one inside this process if none answers.
 * A chat that joins a room with history first shows the room's last 20 lines (state transfer: the state is those
 * lines), then the live ones: the seam between them loses no line and shows none twice.
 */
import readline from 'node:readline'
import { parseArgs } from 'node:util'
import { Group, type SeqcastError, type StateHooks, type ViewDelivery } from '../lib/index.js'
import { DirectoryServer, DEFAULT_DIRECTORY_PORT, queryStatus } from '../directory/server.js'
import { readKey } from '../lib/seal.js'

const USAGE = `usage: npm run chat -- --name NAME [--group GROUP]... [--dir HOST:PORT] [--iface ADDR] [--safe]
  --name NAME     your member id (required)
  --group GROUP   a group to join (default lobby); repeat for several
  --dir H:P       the directory (default: 127.0.0.1:${DEFAULT_DIRECTORY_PORT}, started here if none answers)
  --iface ADDR    local IPv4 address for multicast (default 127.0.0.1)
  --safe          safe delivery: show a line only once every member has it
environment: SEQCAST_KEY_FILE=F  the group key (\`dir keygen F\`): every chat of the room needs the same one
commands: /who  /stats  /to GROUP text  /quit  /help     (Ctrl-C or Ctrl-D leave too)`

function fail(msg: string, code: number): never {
  console.error(`chat: ${msg}`)
  process.exit(code)
}

let values: { name?: string; group?: string[]; dir?: string; iface?: string; help?: boolean; safe?: boolean }
try {
  values = parseArgs({
    options: {
      name: { type: 'string' }, group: { type: 'string', multiple: true }, dir: { type: 'string' },
      iface: { type: 'string' }, help: { type: 'boolean', short: 'h' }, safe: { type: 'boolean' },
    },
  }).values
} catch (err) {
  fail(`${(err as Error).message}\n${USAGE}`, 2)
}
if (values.help) {
  console.log(USAGE)
  process.exit(0)
}
if (!values.name) fail(`--name is required\n${USAGE}`, 2)
const me = values.name
const groupNames = [...new Set(values.group ?? ['lobby'])]
const tty = process.stdout.isTTY === true
const rl = readline.createInterface({ input: process.stdin, output: process.stdout, terminal: tty, prompt: tty ? `${me}> ` : '' })

/** Prints a line above the prompt without garbling what the user is typing. */
function say(line: string): void {
  if (!tty) {
    process.stdout.write(line + '\n')
    return
  }
  readline.clearLine(process.stdout, 0)
  readline.cursorTo(process.stdout, 0)
  process.stdout.write(line + '\n')
  rl.prompt(true)
}

const groupKey = process.env.SEQCAST_KEY_FILE ? readKey(process.env.SEQCAST_KEY_FILE) : null

async function directoryAddress(): Promise<{ addr: string; embedded?: DirectoryServer }> {
  if (values.dir) return { addr: values.dir }
  const addr = `127.0.0.1:${DEFAULT_DIRECTORY_PORT}`
  try {
    await queryStatus(addr, 500, undefined, groupKey)
    return { addr }
  } catch {
    // With SEQCAST_KEY_FILE the embedded directory is keyed too (a directory and its members share one key).
    const server = new DirectoryServer({ host: '127.0.0.1', port: DEFAULT_DIRECTORY_PORT, key: groupKey })
    try {
      await server.listen()
      say(`*** started a directory on ${addr} (it lives as long as this chat)`)
      return { addr, embedded: server }
    } catch {
      return { addr } // another chat started one a moment ago
    }
  }
}

function describe(v: ViewDelivery): string {
  return `${v.members.length} member${v.members.length === 1 ? '' : 's'}, sequencer ${v.sequencer}`
}

/** Lines of history a joiner is shown (the state of a room). */
const HISTORY = 20
/** The longest text a history line keeps (longer lines are cut in the history), and the most a history may weigh. */
const MAX_LINE = 64 * 1024
const MAX_HISTORY_BYTES = 16 << 20

function line(name: string, sender: string, text: string): string {
  return `<<<${sender}->GROUP<${name}>: ${text}>>>`
}

/**
 * A room's last lines, [sender, text], as this chat showed them: its state. The snapshot is taken when the screen
 * takes the view that adds a joiner (show() takes deliveries one at a time), so it holds exactly the lines before it.
 */
function historyHooks(history: Array<[string, string]>): StateHooks {
  return {
    snapshot: () => Buffer.from(JSON.stringify(history)),
    restore: async (chunks) => {
      const parts: Buffer[] = []
      let n = 0
      for await (const c of chunks) {
        n += c.length
        if (n > MAX_HISTORY_BYTES) throw new Error(`a history larger than ${MAX_HISTORY_BYTES} bytes`)
        parts.push(Buffer.from(c))
      }
      const got: unknown = JSON.parse(Buffer.concat(parts).toString('utf8'))
      const ok = Array.isArray(got) && got.length <= HISTORY &&
        got.every((e) => Array.isArray(e) && e.length === 2 && e.every((x) => typeof x === 'string' && x.length <= MAX_LINE))
      if (!ok) throw new Error('not a history of chat lines')
      history.splice(0, history.length, ...(got as Array<[string, string]>))
    },
  }
}

const groups = new Map<string, Group>()
let embedded: DirectoryServer | undefined
let quitting = false

/**
 * What the user types is read from the start, so nothing typed while the chat is still joining is lost: each line
 * and the end of input join one chain, which waits for every group to be joined and keeps the order they were typed in.
 */
let joinedAll!: () => void
let input = new Promise<void>((resolve) => (joinedAll = resolve))
rl.on('line', (line) => {
  input = input.then(() => command(line))
})
rl.on('close', () => {
  input = input.then(quit)
})
process.on('SIGINT', () => void quit())
process.on('SIGTERM', () => void quit())

/**
 * Shows one group's deliveries — views and messages in the one order the group delivers them. `shown` resolves once
 * the joining view is on screen: typed input waits for it, so "you joined" comes before any answer to a command.
 */
async function show(name: string, g: Group, history: Array<[string, string]>, shown: () => void): Promise<void> {
  let last: string[] | null = null
  try {
    for await (const d of g) {
      if (d.type === 'message') {
        const text = Buffer.from(d.data).toString('utf8')
        say(line(name, d.sender, text))
        history.push([d.sender, text.slice(0, MAX_LINE)])
        if (history.length > HISTORY) history.shift()
      } else if (last === null) {
        say(`*** you joined ${name} (${d.members.length} member${d.members.length === 1 ? '' : 's'}: ${d.members.join(', ')}; sequencer ${d.sequencer})`)
        // What the room said before this view (restored from another member), set apart from the live lines.
        if (history.length > 0) {
          say(`*** the last ${history.length} line${history.length === 1 ? '' : 's'} in ${name}:`)
          for (const [sender, text] of history) say(`  ${line(name, sender, text)}`)
        }
      } else {
        for (const m of d.members) if (!last.includes(m)) say(`*** ${m} joined ${name} (${describe(d)})`)
        for (const m of last) if (!d.members.includes(m)) say(`*** ${m} left ${name} (${describe(d)})`)
      }
      if (d.type === 'view') last = d.members
      shown()
    }
  } catch {
    // The member failed: its 'error' event says why.
  }
  shown()
}
const onScreen: Array<Promise<void>> = []

const found = await directoryAddress()
embedded = found.embedded
for (const name of groupNames) {
  let g: Group
  const history: Array<[string, string]> = []
  try {
    g = await Group.join(name, me, {
      directory: found.addr, iface: values.iface ?? '127.0.0.1', delivery: values.safe ? 'safe' : 'agreed', key: groupKey ?? undefined,
      state: historyHooks(history),
    })
  } catch (err) {
    fail(`cannot join ${name}: ${(err as SeqcastError).code ?? ''} ${(err as Error).message}`, 1)
  }
  groups.set(name, g)
  g.on('error', (err) => say(`*** ${name}: ${err.code} ${err.message}`))
  g.on('directory', (state) => say(`*** ${name}: directory connection ${state}`))
  // Deliveries are pulled, never also taken by 'message'/'view' listeners: one path, so one order. The joining
  // view is the first of them.
  onScreen.push(new Promise((resolve) => void show(name, g, history, resolve)))
}

async function quit(): Promise<void> {
  if (quitting) return
  quitting = true
  await Promise.all([...groups.values()].map((g) => g.leave().catch(() => g.close())))
  await embedded?.close()
  rl.close()
  process.exit(0)
}

async function send(group: string, text: string): Promise<void> {
  const g = groups.get(group)
  if (!g) return say(`*** not in group ${group} (you are in ${[...groups.keys()].join(', ')})`)
  try {
    await g.send(text)
  } catch (err) {
    say(`*** cannot send: ${(err as SeqcastError).code} ${(err as Error).message}`)
  }
}

function command(line: string): void {
  if (quitting) return
  const text = line.trim()
  if (text === '') return rl.prompt()
  if (!text.startsWith('/')) {
    void send(groupNames[0]!, text)
    return rl.prompt()
  }
  const [cmd, ...rest] = text.split(/\s+/)
  switch (cmd) {
    case '/quit':
      void quit()
      return
    case '/who':
      for (const [name, g] of groups) say(`*** ${name}: ${g.view?.members.join(', ')} (sequencer ${g.view?.sequencer}, view ${g.view?.viewId})`)
      break
    case '/stats':
      for (const [name, g] of groups) {
        const s = g.stats()
        say(`*** ${name}: sent ${s.sent} delivered ${s.delivered} views ${s.views} nacks ${s.nacksSent} resent ${s.resent} retransmitted ${s.retransmitted} dropped ${s.dropped} duplicates ${s.duplicates}${s.sequencer ? ' (sequencer)' : ''}`)
      }
      break
    case '/to':
      if (rest.length < 2) say('*** usage: /to GROUP text')
      else void send(rest[0]!, rest.slice(1).join(' '))
      break
    case '/help':
      say(USAGE.split('\n').at(-1)!)
      break
    default:
      say(`*** unknown command ${cmd}; try /help`)
  }
  rl.prompt()
}

await Promise.all(onScreen)
rl.prompt()
joinedAll()
