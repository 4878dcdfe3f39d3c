/**
 * A keyed directory over real TCP (loopback): the link is TLS with a key derived from the group key (PROTOCOL.md
 * §3.4), so a client without it can neither join, rejoin nor read `dir ls`, and a key mismatch either way is EAUTH;
 * and a rotation (§3.5) moves a running group to a new key without losing a message, after which the old key opens
 * nothing — no link, no datagram.
 */
import t from 'tap'
import dgram from 'node:dgram'
import fs from 'node:fs'
import net from 'node:net'
import os from 'node:os'
import path from 'node:path'
import { randomBytes } from 'node:crypto'
import { execFileSync, spawnSync } from 'node:child_process'
import { DirectoryServer, queryStatus, rotateKey } from '../directory/server.js'
import { Group } from '../lib/group.js'
import { encodeFrame, FrameDecoder } from '../lib/frame.js'
import { ErrorCodes } from '../lib/errors.js'
import { SealedTransport } from '../lib/seal.js'
import { encodeAck } from '../lib/wire.js'
import type { Transport } from '../lib/transport.js'
import { DIR_CLI } from './fixtures/procs.js'
import { rejoin } from './fixtures/rejoin.js'

const iface = '127.0.0.1'

async function keyedDirectory(t: { teardown(f: () => unknown): void }, key: Buffer | null, keyFile?: string): Promise<{ server: DirectoryServer; addr: string }> {
  const server = new DirectoryServer({ host: iface, port: 0, rejoinGraceMs: 0, key, ...(keyFile ? { keyFile } : {}) })
  const a = await server.listen()
  t.teardown(() => server.close())
  return { server, addr: `${a.host}:${a.port}` }
}

/** What a plain TCP client (no key) gets from the directory for one frame: the frames it reads before the close. */
function plainAsk(addr: string, frame: Parameters<typeof encodeFrame>[0]): Promise<Array<Record<string, unknown>>> {
  const [host, port] = addr.split(':')
  return new Promise((resolve) => {
    const got: Array<Record<string, unknown>> = []
    const d = new FrameDecoder()
    const s = net.connect({ host: host!, port: Number(port) }, () => s.write(encodeFrame(frame)))
    s.on('data', (c) => got.push(...(d.push(c) as Array<Record<string, unknown>>)))
    s.on('error', () => {})
    s.on('close', () => resolve(got))
  })
}

t.test('a keyed directory: members with the key join and talk; without it nothing but EAUTH', async (t) => {
  const key = randomBytes(32)
  const { addr } = await keyedDirectory(t, key)
  const a = await Group.join('k', 'a', { directory: addr, iface, key })
  const b = await Group.join('k', 'b', { directory: addr, iface, key })
  t.teardown(() => { a.close(); b.close() })
  await a.send('over TLS and sealed')
  const seen: string[] = []
  for (let d = await b.receive({ timeoutMs: 3000 }); d; d = seen.length ? null : await b.receive({ timeoutMs: 3000 })) {
    if (d.type === 'message') seen.push(Buffer.from(d.data).toString())
  }
  t.same(seen, ['over TLS and sealed'])

  await t.rejects(Group.join('k', 'nokey', { directory: addr, iface }), { code: ErrorCodes.AUTH }, 'a member without a key: EAUTH')
  await t.rejects(Group.join('k', 'other', { directory: addr, iface, key: randomBytes(32) }), { code: ErrorCodes.AUTH }, 'another key: EAUTH')
  await t.rejects(queryStatus(addr, 2000), { code: ErrorCodes.AUTH }, 'dir ls without the key: EAUTH')
  await t.rejects(queryStatus(addr, 2000, undefined, randomBytes(32)), { code: ErrorCodes.AUTH }, 'dir ls with another key: EAUTH')
  t.match(await queryStatus(addr, 2000, undefined, key), [{ name: 'k', members: [{ id: 'a' }, { id: 'b' }] }], 'dir ls with the key')

  for (const f of [{ t: 'ls' }, { t: 'join', proto: 1, group: 'k', member: 'x', addr: '127.0.0.1:9' }, rejoin('a', 1)] as const) {
    const got = await plainAsk(addr, f as never)
    t.same(got.map((x) => [x.t, x.code]), [['error', ErrorCodes.AUTH]], `plain ${f.t}: one EAUTH error, then closed`)
  }
  t.match(await queryStatus(addr, 2000, undefined, key), [{ name: 'k', members: [{ id: 'a' }, { id: 'b' }] }], 'the group is untouched')
})

t.test('a keyed member and a directory without a key: EAUTH, not a stall', async (t) => {
  const { addr } = await keyedDirectory(t, null)
  await t.rejects(Group.join('k', 'a', { directory: addr, iface, key: randomBytes(32) }), { code: ErrorCodes.AUTH })
  await t.rejects(rotateKey(addr, randomBytes(32), randomBytes(32), 2000), { code: ErrorCodes.AUTH }, 'nor can it be asked to rotate')
})

t.test('rotation: a busy group moves to a new key without losing a message; the old key opens nothing after', { timeout: 60_000 }, async (t) => {
  const dirTmp = fs.mkdtempSync(path.join(os.tmpdir(), 'seqcast-rot-'))
  t.teardown(() => fs.rmSync(dirTmp, { recursive: true, force: true }))
  const file = path.join(dirTmp, 'dir.key')
  execFileSync(process.execPath, [DIR_CLI, 'keygen', file])
  const oldKey = Buffer.from(fs.readFileSync(file, 'utf8').trim(), 'hex')
  const { addr } = await keyedDirectory(t, oldKey, file)
  const ids = ['a', 'b', 'c']
  const gs: Group[] = []
  for (const id of ids) gs.push(await Group.join('rot', id, { directory: addr, iface, key: file }))
  t.teardown(() => gs.forEach((g) => g.close()))
  const N = 600
  const streams = new Map<string, string[]>(ids.map((id) => [id, []]))
  gs.forEach((g, i) => g.on('message', (d) => streams.get(ids[i]!)!.push(`${d.sender}:${Buffer.from(d.data).toString()}`)))
  const sending = Promise.all(gs.map(async (g) => {
    for (let k = 1; k <= N; k++) {
      await g.send(String(k))
      if (k % 20 === 0) await new Promise((r) => setTimeout(r, 5))
    }
  }))
  await new Promise((r) => setTimeout(r, 300))
  const newKey = randomBytes(32)
  const epoch = await rotateKey(addr, oldKey, newKey, 30_000)
  t.equal(epoch, 1, 'rotated to epoch 1')
  await sending
  const until = Date.now() + 20_000
  while (ids.some((id) => streams.get(id)!.length < ids.length * N) && Date.now() < until) await new Promise((r) => setTimeout(r, 50))
  const first = streams.get('a')!
  t.equal(first.length, ids.length * N, `every message delivered across the rotation (${first.length})`)
  for (const id of ids) t.same(streams.get(id), first, `${id}: the identical stream`)
  t.equal(fs.readFileSync(file, 'utf8').trim(), newKey.toString('hex'), 'the directory wrote the new key over its key file')
  t.equal(fs.statSync(file).mode & 0o777, 0o600, 'for its owner only')

  await t.rejects(queryStatus(addr, 2000, undefined, oldKey), { code: ErrorCodes.AUTH }, 'a link with the old key fails')
  await t.rejects(Group.join('rot', 'late', { directory: addr, iface, key: oldKey }), { code: ErrorCodes.AUTH }, 'a member with the old key cannot join')
  const late = await Group.join('rot', 'late', { directory: addr, iface, key: newKey })
  t.teardown(() => late.close())
  t.pass('a member with the new key joins')

  // A datagram sealed now with the old key, for this very group: rejected (it would have opened before).
  const a = gs[0]!
  const before = a.stats().rejected
  const sock = dgram.createSocket('udp4')
  t.teardown(() => sock.close())
  const captured: Buffer[] = []
  const inner = { toGroup: (b: Buffer) => captured.push(b), toMember: (_: string, b: Buffer) => captured.push(b), onDatagram: () => {} } as unknown as Transport
  const [status] = await queryStatus(addr, 2000, 'rot', newKey)
  const aAddr = status!.members.find((m) => m.id === 'a')!.addr
  // Sealed for a's address, as any datagram to one member is: only the key can make it fail.
  new SealedTransport(inner, oldKey).toMember(aAddr, encodeAck({ inc: a.engine.inc, viewId: a.stats().viewId, sender: 7 }, 0, 0, 0))
  await new Promise<void>((r) => sock.send(captured[0]!, Number(aAddr.split(':')[1]), aAddr.split(':')[0], () => r()))
  const deadline = Date.now() + 3000
  while (a.stats().rejected === before && Date.now() < deadline) await new Promise((r) => setTimeout(r, 20))
  t.equal(a.stats().rejected, before + 1, 'a datagram sealed with the old key is rejected and counted')
})

t.test('dir --key-file, ls --key-file, rotate-key through the CLI', { timeout: 60_000 }, async (t) => {
  const tmp = fs.mkdtempSync(path.join(os.tmpdir(), 'seqcast-cli-'))
  t.teardown(() => fs.rmSync(tmp, { recursive: true, force: true }))
  const [cur, next] = ['cur.key', 'next.key'].map((n) => path.join(tmp, n))
  for (const f of [cur!, next!]) execFileSync(process.execPath, [DIR_CLI, 'keygen', f])
  const dirFile = path.join(tmp, 'dir.key')
  fs.copyFileSync(cur!, dirFile)
  const { spawn } = await import('node:child_process')
  const port = 20000 + Math.floor(Math.random() * 20000)
  const proc = spawn(process.execPath, [DIR_CLI, '--port', String(port), '--rejoin-grace-ms', '0', '--key-file', dirFile], { stdio: ['ignore', 'pipe', 'pipe'] })
  t.teardown(() => proc.kill('SIGKILL'))
  await new Promise<void>((resolve, reject) => {
    let out = ''
    proc.stdout!.on('data', (b: Buffer) => { out += b; if (out.includes('listening')) resolve() })
    proc.once('exit', (c) => reject(new Error(`dir exited ${c}: ${out}`)))
  })
  const addr = `127.0.0.1:${port}`
  const run = (...args: string[]) => spawnSync(process.execPath, [DIR_CLI, ...args, '--dir', addr], { encoding: 'utf8' })
  let r = run('ls')
  t.equal(r.status, 1, 'ls without the key fails')
  t.match(r.stderr, /EAUTH|refused|requires the group key/)
  r = run('ls', '--key-file', cur!)
  t.equal(r.status, 0, r.stderr)
  t.match(r.stdout, /no groups/)
  r = run('rotate-key', '--key-file', next!)
  t.equal(r.status, 2, 'rotate-key without --old-key-file is a usage error')
  r = run('rotate-key', '--key-file', next!, '--old-key-file', cur!)
  t.equal(r.status, 0, r.stderr)
  t.match(r.stdout, /key rotated.*epoch 1/)
  t.equal(run('ls', '--key-file', cur!).status, 1, 'the old key is refused')
  t.equal(run('ls', '--key-file', next!).status, 0, 'the new one works')
  t.equal(fs.readFileSync(dirFile, 'utf8'), fs.readFileSync(next!, 'utf8'), 'the directory\'s key file holds the new key')
})
