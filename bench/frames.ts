/**
 * What decoding costs when a frame arrives in small pieces: one frame of `--size` bytes (default 64 KiB, a
 * directory accepts up to MAX_FRAME_TO_DIRECTORY) fed to FrameDecoder `--chunk` bytes at a time (default 1), as a
 * stranger dribbling it would. Prints the CPU ms of the median of 5 runs.
 *   node dist/bench/frames.js [--size N] [--chunk N]
 */
import { parseArgs } from 'node:util'
import { encodeFrame, FrameDecoder } from '../lib/frame.js'

const { values } = parseArgs({ options: { size: { type: 'string' }, chunk: { type: 'string' } } })
const size = Number(values.size ?? 65536)
const chunk = Number(values.chunk ?? 1)
const bytes = encodeFrame({ t: 'ping', pad: Buffer.alloc(size - 20, 0x61).toString() })
const runs: number[] = []
for (let r = 0; r < 5; r++) {
  const d = new FrameDecoder()
  const pieces: Buffer[] = []
  for (let i = 0; i < bytes.length; i += chunk) pieces.push(bytes.subarray(i, i + chunk))
  const t0 = process.cpuUsage()
  let frames = 0
  for (const p of pieces) frames += d.push(p).length
  const used = process.cpuUsage(t0)
  if (frames !== 1) throw new Error(`decoded ${frames} frames`)
  runs.push((used.user + used.system) / 1000)
}
runs.sort((a, b) => a - b)
console.log(`frame of ${bytes.length} bytes in ${Math.ceil(bytes.length / chunk)} chunks of ${chunk}: ${runs[2]!.toFixed(1)} ms CPU (median of 5: ${runs.map((x) => x.toFixed(1)).join(', ')})`)
