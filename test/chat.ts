/**
 * The chat demo end to end: three processes over pipes against one directory. Each types lines the moment it starts
 * (before it has joined) and carol joins while alice and bob are talking: every line typed must show, in the order
 * typed, on every screen in the group when it was sent, and every screen must show the same lines in the same
 * order from the view in which it joined on (the one ordered stream). A chat that joins shows the room's last 20
 * lines first (state transfer): exactly those before its join on the others' screens, so that history and live lines
 * together are one stretch of the stream — none lost, none twice at the seam.
 */
import t from 'tap'
import { spawn, type ChildProcess } from 'node:child_process'
import { freePort, ROOT, startDir, until } from './fixtures/procs.js'

const CHAT = `${ROOT}dist/demo-app/chat.js`

class Chat {
  out = ''
  readonly p: ChildProcess
  exitCode: number | null = null
  /** The message lines this chat typed, as its own screen would show them. */
  readonly typed: string[] = []
  constructor(readonly name: string, dir: string) {
    this.p = spawn(process.execPath, [CHAT, '--name', name, '--dir', dir], { stdio: ['pipe', 'pipe', 'pipe'] })
    this.p.stdout!.on('data', (b: Buffer) => (this.out += b.toString()))
    this.p.stderr!.on('data', (b: Buffer) => (this.out += b.toString()))
    this.p.on('exit', (c) => (this.exitCode = c))
  }
  type(line: string): void {
    this.p.stdin!.write(line + '\n')
  }
  say(text: string): void {
    this.typed.push(`<<<${this.name}->GROUP<lobby>: ${text}>>>`)
    this.type(text)
  }
  joined(): boolean {
    return this.out.includes('*** you joined lobby')
  }
  /** How many message lines the screen shows (counted as they arrive: the chatter below asks every millisecond). */
  shown(): number {
    for (let nl = this.out.indexOf('\n', this.scanned); nl >= 0; nl = this.out.indexOf('\n', this.scanned)) {
      if (this.out.startsWith('<<<', this.scanned)) this.counted++
      this.scanned = nl + 1
    }
    return this.counted
  }
  private scanned = 0
  private counted = 0
  messages(): string[] {
    return this.out.split('\n').filter((l) => l.startsWith('<<<'))
  }
  /** The history shown on joining: the lines under "*** the last N lines in lobby:", as live lines look. */
  history(): string[] {
    const lines = this.out.split('\n')
    const at = lines.findIndex((l) => /^\*\*\* the last \d+ lines? in lobby:$/.test(l))
    if (at < 0) return []
    const n = Number(/the last (\d+)/.exec(lines[at]!)![1])
    const shown = lines.slice(at + 1, at + 1 + n)
    return shown.every((l) => l.startsWith('  <<<')) ? shown.map((l) => l.slice(2)) : []
  }
  /** The message lines shown before the view in which `other` joined. */
  messagesBefore(other: string): string[] {
    const lines = this.out.split('\n')
    const at = lines.findIndex((l) => l.startsWith(`*** ${other} joined lobby`))
    return at < 0 ? [] : lines.slice(0, at).filter((l) => l.startsWith('<<<'))
  }
  /** The message lines shown after the view in which `other` joined. */
  messagesSince(other: string): string[] {
    const lines = this.out.split('\n')
    const at = lines.findIndex((l) => l.startsWith(`*** ${other} joined lobby`))
    return at < 0 ? [] : lines.slice(at + 1).filter((l) => l.startsWith('<<<'))
  }
}

/** `lines` appear in `screen` in this order (other lines may come between). */
function inOrder(screen: string[], lines: string[]): boolean {
  let i = 0
  for (const l of screen) if (l === lines[i]) i++
  return i === lines.length
}

t.test('three chats see the same lines in the same order', async (t) => {
  const dir = await startDir(await freePort())
  const chats: Chat[] = []
  let chatter: NodeJS.Timeout | undefined
  t.teardown(async () => {
    clearInterval(chatter)
    for (const c of chats) c.p.kill('SIGKILL')
    await dir.stop()
  })
  const start = (name: string): Chat => {
    const c = new Chat(name, dir.addr)
    chats.push(c)
    for (let i = 0; i < 3; i++) c.say(`${name} early ${i}`) // typed before the chat has joined
    return c
  }
  const alice = start('alice')
  t.ok(await until(() => alice.joined(), 30_000), 'alice joined')
  const bob = start('bob')
  t.ok(await until(() => bob.joined() && alice.out.includes('bob joined lobby'), 30_000), 'bob joined')

  // alice and bob talk in bursts while carol starts, joins and catches up, at most 400 lines ahead of alice's screen:
  // deliveries, several to an ORDER, keep arriving as carol starts reading hers. (A chat that took the first of them
  // on a second path showed it after the rest of its batch; this load caught that in about one run in five.)
  let k = 0
  chatter = setInterval(() => {
    if (k - alice.shown() > 400) return
    for (const c of [alice, bob]) for (let i = 0; i < 4; i++) c.say(`${c.name} chatter ${k++}`)
  }, 1)
  const carol = start('carol')
  t.ok(await until(() => carol.joined() && carol.shown() >= 50, 30_000), 'carol joined and hears the others')
  clearInterval(chatter)
  t.ok(await until(() => alice.out.includes('carol joined lobby (3 members, sequencer alice)'), 30_000), 'join lines')

  const typed = chats.reduce((n, c) => n + c.typed.length, 0)
  const settled = (): boolean =>
    alice.messages().length === typed &&
    bob.messages().length === alice.messagesSince('bob').length &&
    carol.messages().length === alice.messagesSince('carol').length
  t.ok(await until(settled, 30_000), `alice shows all ${typed} lines typed; bob and carol all since they joined`)
  for (const [i, c] of chats.entries()) {
    for (const screen of chats.slice(0, i + 1)) {
      t.ok(inOrder(screen.messages(), c.typed), `${c.name}'s lines, the early ones included, all show at ${screen.name}, in the order typed`)
    }
  }
  t.same(bob.messages(), alice.messagesSince('bob'), 'bob = alice since bob joined')
  t.same(carol.messages(), alice.messagesSince('carol'), 'carol = alice since carol joined')
  t.same(carol.messages(), bob.messagesSince('carol'), 'carol = bob since carol joined')
  t.match(alice.messages()[0], /^<<<alice->GROUP<lobby>: alice early 0>>>$/)

  // The seam: a joiner's history is the last 20 lines before its join on the others' screens, then the live lines.
  t.same(alice.history(), [], 'alice, the first member, has no history')
  const before = alice.messagesBefore('carol')
  t.ok(before.length > 20, `the room had ${before.length} lines when carol joined`)
  t.same(carol.history(), before.slice(-20), "carol's history: the last 20 lines before her join, on alice's screen")
  t.same(carol.history(), bob.messagesBefore('carol').slice(-20), 'and on bob\'s')
  t.same([...carol.history(), ...carol.messages()], alice.messages().slice(before.length - 20),
    'history then live lines: one stretch of the stream, none lost or twice at the seam')
  const screen = carol.out.split('\n')
  const firstLive = screen.findIndex((l) => l.startsWith('<<<'))
  t.ok(screen.findIndex((l) => l.startsWith('*** the last 20 lines in lobby:')) > screen.findIndex((l) => l.startsWith('*** you joined lobby')) &&
    screen.findIndex((l) => l.startsWith('*** the last 20 lines in lobby:')) < firstLive, 'carol: "you joined", the history, then live lines')
  t.same(bob.history(), alice.messagesBefore('bob').slice(-20), `bob's history: the ${bob.history().length} lines before his join`)

  alice.type('/who')
  t.ok(await until(() => /lobby: alice, bob, carol \(sequencer alice/.test(alice.out), 15_000), '/who')
  alice.type('/nope')
  t.ok(await until(() => alice.out.includes('unknown command /nope'), 15_000), 'hint for a bad command')
  carol.type('/quit')
  t.ok(await until(() => carol.exitCode === 0, 30_000), '/quit exits 0')
  t.ok(await until(() => alice.out.includes('carol left lobby (2 members, sequencer alice)'), 30_000), 'others see the leave')
  bob.p.stdin!.end() // Ctrl-D
  t.ok(await until(() => bob.exitCode === 0, 30_000), 'end of input leaves cleanly')
})

t.test('--help prints the usage and exits 0', async (t) => {
  const p = spawn(process.execPath, [CHAT, '--help'], { stdio: ['ignore', 'pipe', 'pipe'] })
  let out = ''
  p.stdout!.on('data', (b: Buffer) => (out += b.toString()))
  const code = await new Promise<number | null>((resolve) => p.on('exit', resolve))
  t.equal(code, 0)
  t.match(out, /^usage: npm run chat -- --name NAME/)
  t.match(out, /commands: \/who {2}\/stats {2}\/to GROUP text {2}\/quit {2}\/help/)
})
