#!/usr/bin/env node
/**
 * The loot box: a replicated state machine on seqcast, where order is the whole point.
 *
 * Every process is a replica of the same shuffled list of 1..100 000 and a draw counter. A draw is a group message
 * `draw N`; every replica applies draws in the delivered order, so the N numbers a draw gets are the same at every
 * replica, no number is ever handed out twice, and all replicas agree — with no lock server.
 *
 *   npm run lootbox -- [--clients 4] [--draws 200] [--dir host:port]
 *
 * forks `clients` processes that draw concurrently (1–5 numbers per draw, at random moments), then checks that all
 * numbers drawn are distinct and that every replica ends in the same state.
 */
import { fork } from 'node:child_process'
import { fileURLToPath } from 'node:url'
import { parseArgs } from 'node:util'
import { Group } from '../lib/index.js'
import { DirectoryServer } from '../directory/server.js'
import { readKey } from '../lib/seal.js'
import { drawMessage, LootBox } from './lootstate.js'

// `lootbox serve ...`: the loot box as replicated TCP servers that clients draw from (lootserve.ts).
if (process.argv[2] === 'serve') process.exit(await (await import('./lootserve.js')).main(process.argv.slice(3)))

interface Report { name: string; got: number[]; counter: number; applied: number; state: string }

async function replica(name: string, dir: string, clients: number, draws: number): Promise<Report> {
  const box = new LootBox()
  const got: number[] = []
  const g = await Group.join('lootbox', name, { directory: dir, iface: '127.0.0.1', key: process.env.SEQCAST_KEY_FILE || undefined })

  // The state machine: one loop applies every delivery in the total order (others' draws may arrive before our
  // own first send, so nothing is consumed anywhere else).
  const apply = (async () => {
    for await (const d of g) {
      if (d.type !== 'message') continue
      const r = box.apply(Buffer.from(d.data).toString())
      if (r && d.sender === name) got.push(...r.numbers)
      if (box.applied === clients * draws) return
    }
  })()

  while ((g.view?.members.length ?? 0) < clients) await new Promise((r) => setTimeout(r, 5))
  for (let i = 0; i < draws; i++) {
    await g.send(drawMessage(1 + Math.floor(Math.random() * 5)))
    if (Math.random() < 0.3) await new Promise((r) => setTimeout(r, Math.random() * 3))
  }
  await apply
  await g.leave()
  return { name, got, counter: box.counter, applied: box.applied, state: box.state }
}

const { values } = parseArgs({
  options: {
    clients: { type: 'string', default: '4' }, draws: { type: 'string', default: '200' }, dir: { type: 'string' },
    child: { type: 'string' }, help: { type: 'boolean', short: 'h' },
  },
})
if (values.help) {
  console.log('usage: npm run lootbox -- [--clients N] [--draws N] [--dir HOST:PORT]\n       npm run lootbox -- serve --help   (the loot box as TCP servers)')
  process.exit(0)
}
const clients = Number(values.clients)
const draws = Number(values.draws)
if (!(clients >= 1 && clients <= 32 && draws >= 1 && draws <= 10_000)) {
  console.error('lootbox: --clients must be 1-32 and --draws 1-10000')
  process.exit(2)
}

if (values.child) {
  const report = await replica(values.child, values.dir!, clients, draws)
  process.send!(report)
  process.exit(0)
}

let server: DirectoryServer | undefined
let dir = values.dir
if (!dir) {
  // With SEQCAST_KEY_FILE the directory is keyed too (a directory and its members share one key).
  const key = process.env.SEQCAST_KEY_FILE ? readKey(process.env.SEQCAST_KEY_FILE) : null
  server = new DirectoryServer({ host: '127.0.0.1', port: 0, rejoinGraceMs: 0, key }) // on a fresh port no directory ran before
  const a = await server.listen()
  dir = `${a.host}:${a.port}`
}
console.log(`${clients} replicas draw ${draws} times each, concurrently (directory ${dir})`)
const self = fileURLToPath(import.meta.url)
const started = performance.now()
const reports = await Promise.all(Array.from({ length: clients }, (_, i) => new Promise<Report>((resolve, reject) => {
  const child = fork(self, ['--child', `client${i + 1}`, '--dir', dir!, '--clients', String(clients), '--draws', String(draws)])
  child.once('message', (r) => resolve(r as Report))
  child.once('exit', (code) => code !== 0 && reject(new Error(`client${i + 1} exited with ${code}`)))
})))
const secs = (performance.now() - started) / 1000
await server?.close()
const all = reports.flatMap((r) => r.got)
const distinct = new Set(all).size === all.length
const agree = reports.every((r) => r.state === reports[0]!.state && r.counter === reports[0]!.counter)
for (const r of reports) console.log(`  ${r.name}: got ${r.got.length} numbers (first ${r.got.slice(0, 5).join(', ')} …), state ${r.state}, counter ${r.counter}`)
console.log(`${clients * draws} draws in ${secs.toFixed(2)} s; ${all.length} numbers handed out: ${distinct ? 'all distinct' : 'DUPLICATES'}; replicas ${agree ? 'agree' : 'DISAGREE'}`)
process.exit(distinct && agree && all.length === reports[0]!.counter ? 0 : 1)
