/**
 * Every error seqcast raises is a SeqcastError with a stable string `code` (documented in docs/API.md).
 * Match on `code`, not on the class: codes are the contract.
 */
export const ErrorCodes = {
  BAD_ARGUMENT: 'EBAD_ARGUMENT',
  NOT_JOINED: 'ENOT_JOINED',
  DIRECTORY_UNREACHABLE: 'EDIRECTORY_UNREACHABLE',
  DIRECTORY_LOST: 'EDIRECTORY_LOST',
  DUPLICATE_MEMBER: 'EDUPLICATE_MEMBER',
  GROUP_FULL: 'EGROUP_FULL',
  MESSAGE_TOO_LARGE: 'EMESSAGE_TOO_LARGE',
  EXPELLED: 'EEXPELLED',
  JOIN_TIMEOUT: 'EJOIN_TIMEOUT',
  LEAVE_TIMEOUT: 'ELEAVE_TIMEOUT',
  BAD_REQUEST: 'EBAD_REQUEST',
  PROTOCOL: 'EPROTOCOL',
  FRAME: 'EFRAME',
  MULTICAST_UNREACHABLE: 'ENOMULTICAST',
  AUTH: 'EAUTH',
  ROTATE: 'EROTATE',
  STATE: 'ESTATE',
} as const

export type ErrorCode = (typeof ErrorCodes)[keyof typeof ErrorCodes]

export class SeqcastError extends Error {
  readonly code: ErrorCode
  constructor(code: ErrorCode, message: string, options?: { cause?: unknown }) {
    super(message, options)
    this.code = code
    this.name = new.target.name
  }
}

/** A bad argument or option: a programmer error. */
export class ArgumentError extends SeqcastError {
  constructor(message: string) {
    super(ErrorCodes.BAD_ARGUMENT, message)
  }
}

/** The group handle was never joined, has left, or was closed. */
export class NotJoinedError extends SeqcastError {
  constructor(message = 'the group handle is not joined (it has left or was closed)') {
    super(ErrorCodes.NOT_JOINED, message)
  }
}

/** The directory could not be reached, or the connection to it was lost. */
export class DirectoryError extends SeqcastError {
  constructor(code: typeof ErrorCodes.DIRECTORY_UNREACHABLE | typeof ErrorCodes.DIRECTORY_LOST, message: string, cause?: unknown) {
    super(code, message, { cause })
  }
}

/** Another live member of the group already uses this member id. */
export class DuplicateMemberError extends SeqcastError {
  constructor(message: string) {
    super(ErrorCodes.DUPLICATE_MEMBER, message)
  }
}

/** The group has MAX_GROUP_MEMBERS members already (counting those joining and leaving). */
export class GroupFullError extends SeqcastError {
  constructor(message: string) {
    super(ErrorCodes.GROUP_FULL, message)
  }
}

export class MessageTooLargeError extends SeqcastError {
  constructor(size: number, max: number, limit = 'maxMessage') {
    super(ErrorCodes.MESSAGE_TOO_LARGE, `message of ${size} bytes exceeds ${limit} (${max} bytes)`)
  }
}

/** The directory removed this member from the group (it was suspected, e.g. paused past the timeout). */
export class ExpelledError extends SeqcastError {
  constructor(message: string) {
    super(ErrorCodes.EXPELLED, message)
  }
}

export class JoinTimeoutError extends SeqcastError {
  constructor(message: string) {
    super(ErrorCodes.JOIN_TIMEOUT, message)
  }
}

/**
 * The group did not confirm a leave in time (this member's messages never became stable, or the view change
 * never released it): the member closed without it, which to the others is a crash.
 */
export class LeaveTimeoutError extends SeqcastError {
  constructor(message: string) {
    super(ErrorCodes.LEAVE_TIMEOUT, message)
  }
}

/** The directory refused a request as malformed, or a peer broke the protocol. */
export class ProtocolError extends SeqcastError {
  constructor(code: typeof ErrorCodes.BAD_REQUEST | typeof ErrorCodes.PROTOCOL | typeof ErrorCodes.FRAME, message: string) {
    super(code, message)
  }
}

/**
 * This member cannot hear its group's multicast, and the directory runs `--transport multicast`, so it cannot move
 * the group to unicast: run the directory with `--transport unicast` or `auto`.
 */
export class MulticastUnreachableError extends SeqcastError {
  constructor(message: string) {
    super(ErrorCodes.MULTICAST_UNREACHABLE, message)
  }
}

/** The group's datagrams fail authentication at this member: its key is not the group's (or the group has one). */
export class AuthError extends SeqcastError {
  constructor(message: string) {
    super(ErrorCodes.AUTH, message)
  }
}

/** A key rotation was refused: the directory has no key, one is under way, or it cannot store the new key. */
export class RotateError extends SeqcastError {
  constructor(message: string) {
    super(ErrorCodes.ROTATE, message)
  }
}

/**
 * The state could not be transferred (PROTOCOL.md §8): no member holds it, none was received within
 * `stateTimeoutMs`, or — on the stream handed to `restore` — the transfer restarted from another donor.
 */
export class StateError extends SeqcastError {
  constructor(message: string, cause?: unknown) {
    super(ErrorCodes.STATE, message, { cause })
  }
}

/** Map an `error` frame from the directory to the matching class. */
export function errorFromCode(code: string, message: string): SeqcastError {
  switch (code) {
    case ErrorCodes.DUPLICATE_MEMBER: return new DuplicateMemberError(message)
    case ErrorCodes.GROUP_FULL: return new GroupFullError(message)
    case ErrorCodes.EXPELLED: return new ExpelledError(message)
    case ErrorCodes.BAD_REQUEST: return new ProtocolError(ErrorCodes.BAD_REQUEST, message)
    case ErrorCodes.FRAME: return new ProtocolError(ErrorCodes.FRAME, message)
    case ErrorCodes.MULTICAST_UNREACHABLE: return new MulticastUnreachableError(message)
    case ErrorCodes.AUTH: return new AuthError(message)
    case ErrorCodes.ROTATE: return new RotateError(message)
    default: return new ProtocolError(ErrorCodes.PROTOCOL, `${code}: ${message}`)
  }
}
