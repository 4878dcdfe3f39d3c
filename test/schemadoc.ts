/**
 * The spec's field tables are lib/schema.ts rendered (scripts/schemadoc.ts): docs/PROTOCOL.md holds each block exactly as
 * rendered, and docs/protocol-schema.json is the schema as it is. Run `npm run spec:gen` after changing the schema.
 */
import t from 'tap'
import fs from 'node:fs'
import { applyBlocks, blockNames, renderBlocks, schemaJson } from '../scripts/schemadoc.js'
import { DATAGRAMS } from '../lib/schema.js'

const protocol = fs.readFileSync(new URL('../docs/PROTOCOL.md', import.meta.url), 'utf8')

t.test('docs/PROTOCOL.md holds every schema block once, exactly as rendered', async (t) => {
  const names = blockNames(protocol)
  t.same([...names].sort(), Object.keys(renderBlocks()).sort(), 'one block per datagram type, the header, both frame directions and the shapes')
  t.ok(applyBlocks(protocol) === protocol, 'no block is stale (npm run spec:gen rewrites them)')
  for (const d of DATAGRAMS) t.ok(renderBlocks()[d.name]!.includes('header `viewId`'), `${d.name} says what its header's viewId is`)
})

t.test('a stale block is caught, and an unknown one refused', async (t) => {
  const stale = protocol.replace(/(<!-- schema:ACK -->\n[\s\S]*?)\| `have` \| u48 \|/, '$1| `have` | u32 |')
  t.not(stale, protocol, 'the test edit applies')
  t.not(applyBlocks(stale), stale)
  t.equal(applyBlocks(stale), protocol)
  t.throws(() => applyBlocks('<!-- schema:nothing -->\n<!-- /schema -->'), /no schema block named nothing/)
})

t.test('docs/protocol-schema.json is lib/schema.ts as it is', async (t) => {
  const json = fs.readFileSync(new URL('../docs/protocol-schema.json', import.meta.url), 'utf8')
  t.ok(json === schemaJson(), 'up to date (npm run spec:gen rewrites it)')
  const parsed = JSON.parse(json) as { datagrams: unknown[]; frames: { toDirectory: unknown[]; fromDirectory: unknown[] } }
  t.equal(parsed.datagrams.length, 6)
  t.ok(parsed.frames.toDirectory.length > 0 && parsed.frames.fromDirectory.length > 0)
})
