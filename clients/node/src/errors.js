// SkeneError: every failure of a skene call, carrying the database's SQLSTATE, message
// and hint, whichever driver (pg or postgres.js) raised it.

/** A skene call failed. */
export class SkeneError extends Error {
  /**
   * @param {string} message
   * @param {{ code?: string | null, hint?: string | null, detail?: string | null, cause?: unknown, row?: unknown }} [fields]
   */
  constructor(message, fields = {}) {
    super(message, fields.cause === undefined ? undefined : { cause: fields.cause });
    this.name = 'SkeneError';
    // The SQLSTATE when the database raised the error ('22023': bad input, '55000': no
    // config applied, ...); null when no server answered (the driver's error is in
    // `cause`); 'SKENE_UNSAFE_INTEGER' when a count does not fit a JS number.
    this.code = fields.code ?? null;
    this.hint = fields.hint ?? null;
    this.detail = fields.detail ?? null;
    if (fields.row !== undefined) this.row = fields.row;
  }
}

// SQLSTATEs worth a retry: nothing was changed.
const RETRYABLE = new Set(['40001', '40P01', '57014', '55P03']);

/** Whether the call may simply be run again (deadlock, serialization failure, timeout). */
export function isRetryable(error) {
  return error instanceof SkeneError && RETRYABLE.has(error.code);
}

/**
 * The SkeneError for whatever a driver threw. A server's error (pg's DatabaseError,
 * postgres.js's PostgresError) has a severity and a SQLSTATE `code`; anything else
 * (refused connection, closed pool, ...) gets code null.
 * @param {any} error
 * @returns {SkeneError}
 */
export function toSkeneError(error) {
  if (error instanceof SkeneError) return error;
  const fromServer =
    error !== null &&
    typeof error === 'object' &&
    typeof error.severity === 'string' &&
    typeof error.code === 'string';
  if (fromServer) {
    return new SkeneError(error.message, {
      code: error.code,
      hint: error.hint || null,
      detail: error.detail || null,
      cause: error,
    });
  }
  const text = error instanceof Error ? error.message || String(error.code || error) : String(error);
  return new SkeneError(`skene: database unavailable: ${text}`, { cause: error });
}
