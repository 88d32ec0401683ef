/** Public surface of the QMP layer (QEMU Machine Protocol client). */

export {
  QmpError,
  QmpCommandError,
  QmpDisconnectedError,
  QmpTimeoutError,
  QmpAbortedError,
  QmpProtocolError,
  QmpStateError,
  QmpConnectError,
  type QmpErrorCode,
  type QmpTimeoutStage,
} from './errors.js';
export { QmpLineDecoder, encodeCommand, DEFAULT_MAX_LINE_BYTES, type DecodeResult } from './framing.js';
export {
  parseGreeting,
  parseEvent,
  parseReply,
  parseServerMessage,
  type QmpGreeting,
  type QmpReturn,
  type QmpErrorReply,
  type QmpEvent,
  type QmpServerMessage,
} from './messages.js';
export { QmpEventStream, DEFAULT_EVENT_QUEUE, DEFAULT_EVENT_TIMEOUT_MS, type QmpEventStreamOptions } from './event-stream.js';
export {
  QmpClient,
  DEFAULT_CONNECT_TIMEOUT_MS,
  DEFAULT_COMMAND_TIMEOUT_MS,
  DEFAULT_CLOSE_TIMEOUT_MS,
  type QmpClientState,
  type QmpCallOptions,
  type QmpConnectOptions,
  type QmpDebugEvent,
} from './client.js';
export * from './commands.js';
