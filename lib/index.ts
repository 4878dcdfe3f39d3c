/** The public API of seqcast. Everything exported here is documented in docs/API.md. */
export { grp_join, grp_leave, grp_receive, grp_send } from './api.js'
export { Group, type GroupEvents, type GroupStats, type MessageDelivery, type ViewDelivery } from './group.js'
export type { Delivery } from './host.js'
export {
  DEFAULT_DIRECTORY, DEFAULT_IFACE, DEFAULT_MAX_DATAGRAM, DEFAULT_MAX_MESSAGE, DEFAULT_SEND_WINDOW, type DeliveryMode,
  type JoinOptions, type StateHooks,
} from './options.js'
export { MAX_GROUP_MEMBERS } from './frame.js'
export {
  ArgumentError, DirectoryError, DuplicateMemberError, ErrorCodes, ExpelledError, GroupFullError, JoinTimeoutError,
  LeaveTimeoutError, MessageTooLargeError, NotJoinedError, ProtocolError, SeqcastError, AuthError, RotateError, StateError,
  MulticastUnreachableError, type ErrorCode,
} from './errors.js'
