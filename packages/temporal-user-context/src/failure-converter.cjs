// The failure converter the plugin installs while its payload codec is on (docs/codec.md). CommonJS:
// the SDK loads a `failureConverterPath` with require() on clients and workers, and bundles it into
// the workflow sandbox, where it must stay free of Node built-ins, clocks and keys.
'use strict';
const { ApplicationFailure, DefaultFailureConverter } = require('@temporalio/common');

/**
 * The library's codes (`ErrorCodes`), exactly: an application's own failure whose type merely begins
 * with `USER_CONTEXT_` is not one, and keeps its message encrypted (found by review: a prefix let it
 * through in clear). A unit test holds this list to `ErrorCodes`.
 */
const CODES = new Set([
  'USER_CONTEXT_MISSING',
  'USER_CONTEXT_INVALID',
  'USER_CONTEXT_TOO_LARGE',
  'USER_CONTEXT_HEADER_MALFORMED',
  'USER_CONTEXT_TOKEN_INVALID',
  'USER_CONTEXT_KEY_UNKNOWN',
  'USER_CONTEXT_TOKEN_EXPIRED',
  'USER_CONTEXT_AUDIENCE_MISMATCH',
  'USER_CONTEXT_LINEAGE_MISMATCH',
  'USER_CONTEXT_EXPLICIT_MISMATCH',
  'USER_CONTEXT_ACTOR_FORBIDDEN',
  'USER_CONTEXT_POLICY_FAILED',
  'USER_CONTEXT_SYSTEM_PRINCIPAL_FORBIDDEN',
  'USER_CONTEXT_MEMBERSHIP_REVOKED',
  'USER_CONTEXT_ROLE_MISSING',
  'USER_CONTEXT_REVOKED',
  'USER_CONTEXT_PLAINTEXT_PAYLOAD',
  'USER_CONTEXT_PAYLOAD_TAMPERED',
  'USER_CONTEXT_MISCONFIGURED',
]);
exports.REFUSAL_CODES = CODES;

/**
 * A refusal of this library: an ApplicationFailure whose type is one of its codes (or that wraps a
 * UserContextError), or a UserContextError itself (a codec refusal fails a workflow task with it),
 * recognised by name and code because this module cannot import the TypeScript class.
 */
function isRefusal(err) {
  if (err instanceof ApplicationFailure) {
    if (CODES.has(err.type)) return true;
    // A UserContextError thrown in a query or update handler, which the SDK wraps as an
    // ApplicationFailure of type 'UserContextError' with the error's message (`<code>: <reason>`).
    const code = err.type === 'UserContextError' && /^(USER_CONTEXT_[A-Z_]+): /.exec(err.message);
    return Boolean(code) && CODES.has(code[1]);
  }
  return err instanceof Error && err.name === 'UserContextError' && CODES.has(err.code);
}

/**
 * A failure's message and stack trace move into a payload (`encodedAttributes`), which the codec then
 * encrypts like any other: history keeps a failure's type, not what it says. This library's own
 * refusals stay readable, without their stack: their messages hold a code and a reason, no user data
 * (no ids, which the audit records carry instead); a refused query
 * reaches its caller only as the failure's message (the SDK's client does not decode a query's
 * failure), and a refused workflow task shows why in history.
 */
class UserContextFailureConverter extends DefaultFailureConverter {
  constructor() {
    super({ encodeCommonAttributes: true });
  }

  errorToFailure(err, payloadConverter, context) {
    if (!isRefusal(err)) return super.errorToFailure(err, payloadConverter, context);
    const failure = this.errorToFailureInner(err, payloadConverter, context);
    // The stack stays in the worker's log: in history it would show the worker's source paths and
    // function names, in clear.
    failure.stackTrace = '';
    return failure;
  }
}

exports.failureConverter = new UserContextFailureConverter();
