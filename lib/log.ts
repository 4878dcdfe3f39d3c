import createDebug from 'debug'

/** `DEBUG=seqcast:*` enables every layer; `seqcast:order`, `seqcast:repair`, `seqcast:view`, `seqcast:dir`, ... one each. */
export function logger(layer: string): createDebug.Debugger {
  return createDebug(`seqcast:${layer}`)
}
