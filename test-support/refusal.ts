/**
 * The `code` that `promise` rejects with when it rejects with an instance of `type` (the project's
 * coded errors: `UserContextError`, the platform's `AuthError`); undefined when it resolves. Anything
 * else is rethrown, so that a test never mistakes an unexpected failure for a refusal.
 */
export async function codeOf(
  promise: Promise<unknown>,
  type: abstract new (...args: never[]) => Error & { code: string },
): Promise<string | undefined> {
  try {
    await promise;
    return undefined;
  } catch (err) {
    if (!(err instanceof type)) throw err;
    return err.code;
  }
}
