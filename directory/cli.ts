#!/usr/bin/env node
/**
 * `dir`: run the seqcast directory, or ask a running one what it knows. See `dir --help`.
 */
import fs from 'node:fs'
import { parseArgs } from 'node:util'
import { generateKeyText, readKey } from '../lib/seal.js'
import createDebug from 'debug'
import { DirectoryServer, DEFAULT_DIRECTORY_PORT, DEFAULT_FRAME_TIMEOUT_MS, queryStatus, rotateKey } from './server.js'
import { DEFAULT_DIRECTORY_OPTIONS } from './core.js'
import type { GroupStatus } from '../lib/dirproto.js'

const USAGE = `usage: dir [serve] [options]       run the directory in the foreground
       dir ls [--dir HOST:PORT] [--key-file F] [--json]       list groups of a running directory
       dir show GROUP [--dir HOST:PORT] [--key-file F] [--json]  one group in detail
       dir keygen FILE                         write a new random group key (32 bytes as 64 hex digits, mode 600;
                                               refuses to overwrite) for \`dir --key-file\` and the members' \`key\`
       dir rotate-key --key-file NEW --old-key-file CURRENT [--dir HOST:PORT] [--timeout-ms N]
                                               move a keyed directory and every member of its groups to the key in
                                               NEW without stopping anything; waits until the old key opens nothing.
                                               The directory writes NEW over its own key file. Put NEW on every
                                               member's host too: running members get it from the directory, a member
                                               that starts later needs it in its key file. Every running member gets
                                               the new key: stop a member you no longer trust before rotating.
       dir help | --help

serve options:
  --host H             address to listen on (default 127.0.0.1; 0.0.0.0 for every interface)
  --port P             TCP port (default ${DEFAULT_DIRECTORY_PORT})
  --mcast-range R      multicast addresses for groups (default ${DEFAULT_DIRECTORY_OPTIONS.mcastRange})
  --mcast-port P       UDP port of every group (default ${DEFAULT_DIRECTORY_OPTIONS.mcastPort})
  --ping-ms N          members ping this often (default ${DEFAULT_DIRECTORY_OPTIONS.pingMs}; sent to them as welcome.heartbeatMs)
  --heartbeat-ms N     the old name of --ping-ms, still accepted
  --timeout-ms N       a member silent this long is removed (default ${DEFAULT_DIRECTORY_OPTIONS.timeoutMs})
  --flush-timeout-ms N a member that does not answer a view change this long is removed (default ${DEFAULT_DIRECTORY_OPTIONS.flushTimeoutMs})
  --transport MODE     how groups send data: multicast, unicast (to each member's address: clouds without
                       multicast), or auto (default ${DEFAULT_DIRECTORY_OPTIONS.transport}: multicast, and a group moves to unicast for good
                       when one of its members cannot hear it)
  --rejoin-grace-ms N  after start, a group this directory does not know waits this long for its members to
                       rejoin (a restart) before a join creates it anew (default ${DEFAULT_DIRECTORY_OPTIONS.rejoinGraceMs};
                       0 when no directory ran before)
  --unjoined-timeout-ms N  a connection that has not joined this long after it opened (or after its last ls)
                       is closed (default ${DEFAULT_DIRECTORY_OPTIONS.unjoinedTimeoutMs})
  --join-timeout-ms N  the old name of --unjoined-timeout-ms, still accepted
  --frame-timeout-ms N a frame not complete this long after its first byte closes its connection (default ${DEFAULT_FRAME_TIMEOUT_MS})
  --max-connections N  connections beyond this many are refused and logged (default ${DEFAULT_DIRECTORY_OPTIONS.maxConnections})
  --key-file F         the group key (\`dir keygen F\`): every group is then closed — members must join with the
                       same key (join option key), links are TLS with it, datagrams sealed (docs/SECURITY.md)
  --log-level L        info (default) or debug (same as DEBUG=seqcast:*)

ls/show/rotate-key options:
  --dir HOST:PORT      the directory to ask (default 127.0.0.1:${DEFAULT_DIRECTORY_PORT})
  --key-file F         the directory's key, if it has one (rotate-key: the new key)
  --json               machine-readable output

exit codes: 0 ok; 1 runtime error (port in use, directory unreachable, no such group); 2 usage error`

class UsageError extends Error {}

function int(v: string | undefined, name: string, def: number, min = 1): number {
  if (v === undefined) return def
  const n = Number(v)
  if (!Number.isInteger(n) || n < min) throw new UsageError(`--${name} must be an integer of at least ${min}, got ${v}`)
  return n
}

/** A renamed flag's value: its name or its old name, not both with different values. */
function renamed(values: Record<string, unknown>, name: string, old: string, def: number): number {
  const now = values[name] as string | undefined
  const before = values[old] as string | undefined
  if (now !== undefined && before !== undefined && now !== before) throw new UsageError(`--${name} and --${old} (its old name) differ: give one`)
  return now !== undefined ? int(now, name, def) : int(before, old, def)
}

/** A key file's key; a bad file is a usage error naming the flag. */
function keyFrom(file: string, flag: string): Buffer {
  try {
    return readKey(file)
  } catch (err) {
    throw new UsageError(`${flag}: ${(err as Error).message.replace(/^option key: /, '')}`)
  }
}

/** Members waiting for the group's state (PROTOCOL.md §8.1), or '-'. */
function needing(g: GroupStatus): string {
  return g.members.filter((m) => m.state === 'needs').map((m) => m.id).join(',') || '-'
}

function table(groups: GroupStatus[]): string {
  if (groups.length === 0) return '(no groups)'
  const rows = [['GROUP', 'VIEW', 'SEQUENCER', 'MEMBERS', 'NEEDS-STATE', 'MULTICAST', 'TRANSPORT', 'STATE'],
    ...groups.map((g) => [g.name, String(g.viewId), g.sequencer, g.members.map((m) => m.id).join(','), needing(g), g.mcast, g.transport, g.state])]
  const w = rows[0]!.map((_, i) => Math.max(...rows.map((r) => r[i]!.length)))
  return rows.map((r) => r.map((c, i) => c.padEnd(w[i]!)).join('  ').trimEnd()).join('\n')
}

async function main(argv: string[]): Promise<number> {
  const { values, positionals } = parseArgs({
    args: argv,
    allowPositionals: true,
    options: {
      help: { type: 'boolean', short: 'h' }, json: { type: 'boolean' }, dir: { type: 'string' },
      host: { type: 'string' }, port: { type: 'string' }, 'mcast-range': { type: 'string' }, 'mcast-port': { type: 'string' },
      'ping-ms': { type: 'string' }, 'heartbeat-ms': { type: 'string' }, 'timeout-ms': { type: 'string' }, 'flush-timeout-ms': { type: 'string' }, 'log-level': { type: 'string' },
      'rejoin-grace-ms': { type: 'string' }, transport: { type: 'string' }, 'join-timeout-ms': { type: 'string' }, 'unjoined-timeout-ms': { type: 'string' },
      'frame-timeout-ms': { type: 'string' }, 'max-connections': { type: 'string' },
      'key-file': { type: 'string' }, 'old-key-file': { type: 'string' },
    },
  })
  const cmd = positionals[0] ?? 'serve'
  if (values.help || cmd === 'help') {
    console.log(USAGE)
    return 0
  }
  const dir = values.dir ?? `127.0.0.1:${DEFAULT_DIRECTORY_PORT}`
  const key = values['key-file'] === undefined ? null : keyFrom(values['key-file'], '--key-file')
  if (cmd === 'rotate-key') {
    if (!key || values['old-key-file'] === undefined) throw new UsageError('dir rotate-key needs --key-file NEW and --old-key-file CURRENT')
    const old = keyFrom(values['old-key-file'], '--old-key-file')
    // Every member must take two steps and the old key's datagrams drain: allow for members that must be expelled.
    const timeoutMs = int(values['timeout-ms'], 'timeout-ms', 60_000)
    const epoch = await rotateKey(dir, old, key, timeoutMs)
    console.log(`key rotated: every group of ${dir} now uses the key in ${values['key-file']} (epoch ${epoch}); the old key opens nothing`)
    return 0
  }
  if (cmd === 'ls' || cmd === 'show') {
    const name = positionals[1]
    if (cmd === 'show' && !name) throw new UsageError('dir show needs a GROUP')
    const groups = await queryStatus(dir, undefined, cmd === 'show' ? name : undefined, key)
    if (cmd === 'ls') {
      console.log(values.json ? JSON.stringify(groups, null, 2) : table(groups))
      return 0
    }
    const g = groups.find((x) => x.name === name)
    if (!g) {
      console.error(`dir: no group ${name}`)
      return 1
    }
    if (values.json) console.log(JSON.stringify(g, null, 2))
    else {
      console.log(`group ${g.name}: view ${g.viewId}, ${g.state}, multicast ${g.mcast}, transport ${g.transport}, sequencer ${g.sequencer}`)
      for (const m of g.members) {
        const notes = [m.id === g.sequencer ? 'sequencer' : '', m.state ? `${m.state} state` : ''].filter((n) => n !== '')
        console.log(`  ${String(m.no).padStart(4)}  ${m.id.padEnd(20)} ${m.addr}${notes.length > 0 ? `  (${notes.join(', ')})` : ''}`)
      }
    }
    return 0
  }
  if (cmd === 'keygen') {
    // A fresh group key for the members' `key` option; only its owner may read it (it opens the group).
    const file = positionals[1]
    if (!file) throw new UsageError('dir keygen needs a FILE to write the key to')
    try {
      fs.writeFileSync(file, generateKeyText(), { mode: 0o600, flag: 'wx' })
    } catch (err) {
      console.error(`dir: cannot write ${file}: ${(err as Error).message}`)
      return 1
    }
    console.log(`wrote a new group key to ${file} (mode 600); give it to every member of the group (join option key)`)
    return 0
  }
  if (cmd !== 'serve') throw new UsageError(`unknown command ${cmd}`)
  const level = values['log-level'] ?? 'info'
  if (level !== 'info' && level !== 'debug') throw new UsageError(`--log-level must be info or debug, got ${level}`)
  if (level === 'debug') createDebug.enable('seqcast:*')
  const mcastRange = values['mcast-range'] ?? DEFAULT_DIRECTORY_OPTIONS.mcastRange
  const transport = values.transport ?? DEFAULT_DIRECTORY_OPTIONS.transport
  if (transport !== 'multicast' && transport !== 'unicast' && transport !== 'auto') {
    throw new UsageError(`--transport must be multicast, unicast or auto, got ${transport}`)
  }
  // Old names of renamed flags (the member has options heartbeatMs and joinTimeoutMs that time other things).
  const pingMs = renamed(values, 'ping-ms', 'heartbeat-ms', DEFAULT_DIRECTORY_OPTIONS.pingMs)
  const unjoinedTimeoutMs = renamed(values, 'unjoined-timeout-ms', 'join-timeout-ms', DEFAULT_DIRECTORY_OPTIONS.unjoinedTimeoutMs)
  let server: DirectoryServer
  try {
    server = new DirectoryServer({
      host: values.host ?? '127.0.0.1',
      port: values.port === undefined ? DEFAULT_DIRECTORY_PORT : Number(values.port),
      mcastRange,
      mcastPort: int(values['mcast-port'], 'mcast-port', DEFAULT_DIRECTORY_OPTIONS.mcastPort),
      pingMs,
      timeoutMs: int(values['timeout-ms'], 'timeout-ms', DEFAULT_DIRECTORY_OPTIONS.timeoutMs),
      flushTimeoutMs: int(values['flush-timeout-ms'], 'flush-timeout-ms', DEFAULT_DIRECTORY_OPTIONS.flushTimeoutMs),
      rejoinGraceMs: int(values['rejoin-grace-ms'], 'rejoin-grace-ms', DEFAULT_DIRECTORY_OPTIONS.rejoinGraceMs, 0),
      transport,
      unjoinedTimeoutMs,
      frameTimeoutMs: int(values['frame-timeout-ms'], 'frame-timeout-ms', DEFAULT_FRAME_TIMEOUT_MS),
      maxConnections: int(values['max-connections'], 'max-connections', DEFAULT_DIRECTORY_OPTIONS.maxConnections),
      key,
      ...(values['key-file'] === undefined ? {} : { keyFile: values['key-file'] }),
      info: (message) => console.log(`${new Date().toISOString()} ${message}`),
    })
  } catch (err) {
    throw new UsageError((err as Error).message)
  }
  if (values.port !== undefined && !(Number.isInteger(Number(values.port)) && Number(values.port) >= 0 && Number(values.port) < 65536)) {
    throw new UsageError(`--port must be 0-65535, got ${values.port}`)
  }
  const addr = await server.listen()
  console.log(`seqcast directory listening on ${addr.host}:${addr.port} (multicast ${mcastRange} port ${server.core.opts.mcastPort}, transport ${transport}${key ? ', keyed: members need the key' : ''})`)
  await new Promise<void>((resolve) => {
    const stop = (sig: string): void => {
      console.log(`seqcast directory stopping (${sig})`)
      void server.close().then(resolve)
    }
    process.once('SIGINT', () => stop('SIGINT'))
    process.once('SIGTERM', () => stop('SIGTERM'))
  })
  return 0
}

main(process.argv.slice(2)).then(
  (code) => process.exit(code),
  (err: Error) => {
    const usage = err instanceof UsageError || (err as NodeJS.ErrnoException).code?.startsWith('ERR_PARSE_ARGS')
    console.error(`dir: ${err.message}${usage ? '\n(see dir --help)' : ''}`)
    process.exit(usage ? 2 : 1)
  },
)
