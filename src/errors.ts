/**
 * The errors the public API throws on purpose. Each carries a stable `code` (as Node's own
 * errors do); test `err.code`, not the message, which may be reworded.
 *
 * | Code | Class | When |
 * |---|---|---|
 * | `ERR_CT_INVALID_ARG` | ConntrackError | An argument or option has the wrong type or form (bad address, unknown sysctl or protocol) |
 * | `ERR_CT_OUT_OF_RANGE` | ConntrackRangeError | A number outside its range (capacity, port, zone, index past a batch's count) |
 * | `ERR_CT_BATCH_FULL` | ConntrackRangeError | `PacketBatch.push` on a batch whose index or data area is full |
 * | `ERR_CT_INVALID_STATE` | ConntrackError | The object cannot do that now (pool closed, walk inside a batch, a second GC worker) |
 * | `ERR_CT_NO_RESOURCE` | ConntrackError | A fixed pool ran out (worker records, event subscribers, extension blocks, policy slots) |
 * | `ERR_CT_UNSUPPORTED` | ConntrackError | The table was created without the feature (no event ring) |
 * | `ERR_CT_BAD_HANDLE` | ConntrackError | attach() of something that is not a table or batch of this layout version |
 * | `ERR_CT_BAD_CAPTURE` | CaptureError | A capture that cannot be read (`offset` says where) |
 * | `ERR_CT_BAD_SNAPSHOT` | SnapshotError | A snapshot that cannot be read (`offset` says where) |
 * | `ERR_CT_SNAPSHOT_REFUSED` | SnapshotError | A valid snapshot that does not fit the target table (nothing was inserted) |
 * | `ERR_CT_WORKER_DIED` | WorkerDeathError | A pool worker died during a batch (recovered; the batch was not retried) |
 * | `ERR_CT_TIMEOUT` | ConntrackError | A bounded wait ran out |
 * | `ABORT_ERR` | ConntrackError, name `AbortError` | The operation's AbortSignal fired (`cause`: the signal's reason) |
 * | `ERR_CT_INTERNAL` | ConntrackError | A broken internal invariant (a bug: please report it) |
 */

/** Every `code` a conntrack-sab error can carry (see the table in src/errors.ts). */
export type ConntrackErrorCode =
  | 'ERR_CT_INVALID_ARG'
  | 'ERR_CT_OUT_OF_RANGE'
  | 'ERR_CT_BATCH_FULL'
  | 'ERR_CT_INVALID_STATE'
  | 'ERR_CT_NO_RESOURCE'
  | 'ERR_CT_UNSUPPORTED'
  | 'ERR_CT_BAD_HANDLE'
  | 'ERR_CT_BAD_CAPTURE'
  | 'ERR_CT_BAD_SNAPSHOT'
  | 'ERR_CT_SNAPSHOT_REFUSED'
  | 'ERR_CT_WORKER_DIED'
  | 'ERR_CT_TIMEOUT'
  | 'ABORT_ERR'
  | 'ERR_CT_INTERNAL';

/** All codes, for checks and documentation. */
export const ERROR_CODES: readonly ConntrackErrorCode[] = [
  'ERR_CT_INVALID_ARG', 'ERR_CT_OUT_OF_RANGE', 'ERR_CT_BATCH_FULL', 'ERR_CT_INVALID_STATE',
  'ERR_CT_NO_RESOURCE', 'ERR_CT_UNSUPPORTED', 'ERR_CT_BAD_HANDLE', 'ERR_CT_BAD_CAPTURE',
  'ERR_CT_BAD_SNAPSHOT', 'ERR_CT_SNAPSHOT_REFUSED', 'ERR_CT_WORKER_DIED', 'ERR_CT_TIMEOUT',
  'ABORT_ERR', 'ERR_CT_INTERNAL',
];

/** An error thrown by conntrack-sab, with a stable `code`. */
export class ConntrackError extends Error {
  /** What went wrong, as a stable code (see ConntrackErrorCode). */
  readonly code: ConntrackErrorCode;
  constructor(code: ConntrackErrorCode, message: string, options?: { cause?: unknown }) {
    super(message, options);
    this.code = code;
    this.name = code === 'ABORT_ERR' ? 'AbortError' : 'ConntrackError';
  }
}

/** A conntrack-sab error that is also a RangeError (a number or index outside its range). */
export class ConntrackRangeError extends RangeError {
  /** `ERR_CT_OUT_OF_RANGE` or `ERR_CT_BATCH_FULL`. */
  readonly code: ConntrackErrorCode;
  constructor(code: ConntrackErrorCode, message: string) {
    super(message);
    this.code = code;
    this.name = 'ConntrackRangeError';
  }
}

/** Is `e` an error thrown by conntrack-sab (any class above, CaptureError, SnapshotError, WorkerDeathError)? */
export function isConntrackError(e: unknown): e is Error & { code: ConntrackErrorCode } {
  const code: unknown = e instanceof Error ? (e as Error & { code?: unknown }).code : undefined;
  return typeof code === 'string' && (ERROR_CODES as readonly string[]).includes(code);
}

/** @internal An ERR_CT_INVALID_ARG error. */
export function argError(message: string): ConntrackError {
  return new ConntrackError('ERR_CT_INVALID_ARG', message);
}

/** @internal An ERR_CT_OUT_OF_RANGE RangeError. */
export function rangeError(message: string): ConntrackRangeError {
  return new ConntrackRangeError('ERR_CT_OUT_OF_RANGE', message);
}

/** @internal An ERR_CT_INVALID_STATE error. */
export function stateError(message: string): ConntrackError {
  return new ConntrackError('ERR_CT_INVALID_STATE', message);
}

/** @internal The AbortError for an aborted signal (Node's convention: code ABORT_ERR, cause = reason). */
export function abortError(signal: AbortSignal, what: string): ConntrackError {
  return new ConntrackError('ABORT_ERR', `${what} was aborted`, { cause: signal.reason });
}

/** @internal Throw the AbortError when `signal` has fired (call between slices, never per packet). */
export function checkAbort(signal: AbortSignal | undefined, what: string): void {
  if (signal?.aborted) throw abortError(signal, what);
}
