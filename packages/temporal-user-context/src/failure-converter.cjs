// The failure converter the plugin installs while its payload codec is on (docs/codec.md). CommonJS:
// the SDK loads a `failureConverterPath` with require() on clients and workers, and bundles it into
// the workflow sandbox, where it must stay free of Node built-ins, clocks and keys.
'use strict';
const { ApplicationFailure, DefaultFailureConverter } = require('@temporalio/common');

/**
 * A refusal of this library: an ApplicationFailure whose type is one of its codes (or that wraps a
 * UserContextError), or a UserContextError itself (a codec refusal fails a workflow task with it),
 * recognised by name and code because this module cannot import the TypeScript class.
 */
function isRefusal(err) {
  if (err instanceof ApplicationFailure) {
    if (typeof err.type === 'string' && err.type.startsWith('USER_CONTEXT_')) return true;
    // A UserContextError thrown in a query or update handler, which the SDK wraps as an
    // ApplicationFailure of type 'UserContextError' with the error's message (`<code>: <reason>`).
    return err.type === 'UserContextError' && /^USER_CONTEXT_[A-Z_]+: /.test(err.message);
  }
  return (
    err instanceof Error &&
    err.name === 'UserContextError' &&
    typeof err.code === 'string' &&
    err.code.startsWith('USER_CONTEXT_')
  );
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
