/**
 * `npm run spec:gen`: rewrites the schema blocks of docs/PROTOCOL.md and docs/protocol-schema.json from
 * lib/schema.ts. `--check`: changes nothing, exits 1 if either is stale (test/schemadoc.ts checks the same).
 */
import fs from 'node:fs'
import path from 'node:path'
import { fileURLToPath } from 'node:url'
import { applyBlocks, schemaJson } from './schemadoc.js'

const root = path.resolve(path.dirname(fileURLToPath(import.meta.url)), '..', '..')
const protocol = path.join(root, 'docs', 'PROTOCOL.md')
const json = path.join(root, 'docs', 'protocol-schema.json')
const check = process.argv.includes('--check')
let stale = false
for (const [file, make] of [[protocol, () => applyBlocks(fs.readFileSync(protocol, 'utf8'))], [json, schemaJson]] as const) {
  const want = make()
  const have = fs.existsSync(file) ? fs.readFileSync(file, 'utf8') : ''
  if (want === have) continue
  stale = true
  if (check) console.error(`${path.relative(root, file)} is stale: run npm run spec:gen`)
  else {
    fs.writeFileSync(file, want)
    console.log(`wrote ${path.relative(root, file)}`)
  }
}
if (check && stale) process.exitCode = 1
