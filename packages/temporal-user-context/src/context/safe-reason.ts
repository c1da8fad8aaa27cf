// What a reason must not carry into a failure message, history or a log line: C0/C1 controls (CR, LF),
// zero-width and bidi formatting characters, line and paragraph separators, lone surrogates (the audit
// sanitiser's class). Reasons quote ids at times (a workflow id may hold a line break).
const UNSAFE_IN_REASON = /[\p{Cc}\p{Cf}\p{Cs}\p{Zl}\p{Zp}]/gu;
const MAX_REASON = 4000;

/**
 * `reason` with unsafe characters replaced by U+FFFD, capped at 4 000 UTF-16 units (then `…`): what
 * every refusal's reason and message go through. Pure and sandbox-safe.
 */
export function safeReason(reason: string): string {
  const cleaned = String(reason).replace(UNSAFE_IN_REASON, '\uFFFD');
  if (cleaned.length <= MAX_REASON) return cleaned;
  // No lone surrogate is left: a high surrogate as the last unit kept has its pair just past the cap.
  const last = cleaned.charCodeAt(MAX_REASON - 1);
  return `${cleaned.slice(0, last >= 0xd800 && last <= 0xdbff ? MAX_REASON - 1 : MAX_REASON)}…`;
}
