/**
 * The chat demo end to end: three processes over pipes against one directory; every screen shows the same
 * message lines in the same order.
 */
import t from 'tap'
import { spawn, type ChildProcess } from 'node:child_process'
import { freePort, ROOT, startDir, until } from './fixtures/procs.js'

const CHAT = `${ROOT}dist/demo-app/chat.js`

class Chat {
  out = ''
  readonly p: ChildProcess
  exitCode: number | null = null
  constructor(name: string, dir: string) {
    this.p = spawn(process.execPath, [CHAT, '--name', name, '--dir', dir], { stdio: ['pipe', 'pipe', 'pipe'] })
    this.p.stdout!.on('data', (b: Buffer) => (this.out += b.toString()))
    this.p.stderr!.on('data', (b: Buffer) => (this.out += b.toString()))
    this.p.on('exit', (c) => (this.exitCode = c))
  }
  type(line: string): void {
    this.p.stdin!.write(line + '\n')
  }
  messages(): string[] {
    return this.out.split('\n').filter((l) => l.startsWith('<<<'))
  }
}

t.test('three chats see the same lines in the same order', async (t) => {
  const dir = await startDir(await freePort())
  const chats: Chat[] = []
  t.teardown(async () => {
    for (const c of chats) c.p.kill('SIGKILL')
    await dir.stop()
  })
  for (const name of ['alice', 'bob', 'carol']) {
    chats.push(new Chat(name, dir.addr))
    await until(() => chats.at(-1)!.out.includes('you joined lobby'), 30_000)
  }
  t.ok(await until(() => chats[0]!.out.includes('carol joined lobby (3 members, sequencer alice)'), 30_000), 'join lines')
  for (let i = 0; i < 5; i++) for (const c of chats) c.type(`hello ${i} from ${c.p.pid}`)
  t.ok(await until(() => chats.every((c) => c.messages().length === 15), 30_000), 'every chat shows 15 lines')
  t.same(chats[1]!.messages(), chats[0]!.messages(), 'bob = alice')
  t.same(chats[2]!.messages(), chats[0]!.messages(), 'carol = alice')
  t.match(chats[0]!.messages()[0], /^<<<(alice|bob|carol)->GROUP<lobby>: hello 0 from \d+>>>$/)
  chats[0]!.type('/who')
  t.ok(await until(() => /lobby: alice, bob, carol \(sequencer alice/.test(chats[0]!.out), 15_000), '/who')
  chats[0]!.type('/nope')
  t.ok(await until(() => chats[0]!.out.includes('unknown command /nope'), 15_000), 'hint for a bad command')
  chats[2]!.type('/quit')
  t.ok(await until(() => chats[2]!.exitCode === 0, 30_000), '/quit exits 0')
  t.ok(await until(() => chats[0]!.out.includes('carol left lobby (2 members, sequencer alice)'), 30_000), 'others see the leave')
  chats[1]!.p.stdin!.end() // Ctrl-D
  t.ok(await until(() => chats[1]!.exitCode === 0, 30_000), 'end of input leaves cleanly')
})
