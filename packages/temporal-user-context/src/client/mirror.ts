import { TypedSearchAttributes, type SearchAttributePair } from '@temporalio/common';
import type { KeyObject } from 'node:crypto';
import { ErrorCodes, UserContextError } from '../context/errors.js';
import { parseUserContext, type UserContext } from '../context/schema.js';
import type { KeyRing } from '../crypto/keyring.js';
import { pseudonymsOf } from '../crypto/pseudonym.js';
import type { ContextHeader } from '../header/wire.js';
import { MEMO_KEY, USER_ID_ATTRIBUTE, WORKSPACE_ID_ATTRIBUTE } from '../context/mirror-keys.js';

/**
 * How the context is mirrored at start for the Web UI and audits. Mirrors are never read back as the
 * truth: workers trust only the signed header.
 * - `pseudonym`: keyed pseudonyms, as in the header; reveals nothing to readers of history
 *   (`pseudonymsOf` gives an operator the values to search for);
 * - `plain`: real ids (search attributes are indexed in plain text, never encrypted);
 * - `off`: nothing.
 */
export type MirrorMode = 'pseudonym' | 'plain' | 'off';

/** Where the context is mirrored at start, each with its {@link MirrorMode}. */
export interface MirrorOptions {
  /** Memo key `userContext`: `{ userId, workspaceId, mode }`. Default `pseudonym`. */
  memo: MirrorMode;
  /**
   * Search attributes `UserId` and `WorkspaceId` (Keyword). Default `off`: the namespace must have
   * them registered, or the server refuses the start.
   */
  searchAttributes: MirrorMode;
}

const MODES: readonly string[] = ['pseudonym', 'plain', 'off'];

const FIELDS: readonly string[] = ['memo', 'searchAttributes'];

/**
 * The plugin's mirror options, defaults filled in field by field (an explicit `undefined`, as from an
 * unset variable, means the default: never search attributes on a namespace that may lack them). Any
 * other value is refused with `USER_CONTEXT_MISCONFIGURED` rather than read as some mode: so is a
 * `mirror` that is not an object (`mirror: 'plain'` would otherwise read as the defaults, pseudonyms
 * where plain ids were asked for) and a field other than the two (a misspelt one would be ignored).
 */
export function mirrorOptionsOf(options: Partial<MirrorOptions> | undefined): MirrorOptions {
  if (options !== undefined) {
    if (typeof options !== 'object' || options === null || Array.isArray(options)) {
      throw new UserContextError(
        ErrorCodes.MISCONFIGURED,
        'mirror must be an object: { memo?, searchAttributes? }',
      );
    }
    for (const field of Object.keys(options)) {
      if (!FIELDS.includes(field)) {
        throw new UserContextError(
          ErrorCodes.MISCONFIGURED,
          'mirror takes only the fields memo and searchAttributes',
        );
      }
    }
  }
  const mirror = {
    memo: options?.memo ?? 'pseudonym',
    searchAttributes: options?.searchAttributes ?? 'off',
  } satisfies MirrorOptions;
  for (const [field, mode] of Object.entries(mirror)) {
    if (!MODES.includes(mode)) {
      throw new UserContextError(ErrorCodes.MISCONFIGURED, `mirror.${field} must be pseudonym, plain or off`);
    }
  }
  return mirror;
}

function ids(
  mode: MirrorMode,
  context: UserContext,
  header: ContextHeader,
): { userId: string; workspaceId: string } {
  return mode === 'plain'
    ? { userId: context.userId, workspaceId: context.workspaceId }
    : { userId: header.sub, workspaceId: header.ws };
}

export function mirrorOptions<
  T extends {
    memo?: Record<string, unknown>;
    typedSearchAttributes?: SearchAttributePair[] | TypedSearchAttributes;
  },
>(options: T, context: UserContext, header: ContextHeader, mirror: MirrorOptions): T {
  let out = options;
  if (mirror.memo !== 'off') {
    out = {
      ...out,
      memo: { ...out.memo, [MEMO_KEY]: { ...ids(mirror.memo, context, header), mode: mirror.memo } },
    };
  }
  if (mirror.searchAttributes !== 'off') {
    const { userId, workspaceId } = ids(mirror.searchAttributes, context, header);
    const existing = out.typedSearchAttributes;
    const base =
      existing instanceof TypedSearchAttributes ? existing : new TypedSearchAttributes(existing ?? []);
    out = {
      ...out,
      typedSearchAttributes: base.updateCopy([
        { key: USER_ID_ATTRIBUTE, value: userId },
        { key: WORKSPACE_ID_ATTRIBUTE, value: workspaceId },
      ]),
    };
  }
  return out;
}

/** What to find in the search-attribute mirror: a user's records, a workspace's, or both. */
export interface MirrorQueryIds {
  userId?: string | undefined;
  workspaceId?: string | undefined;
}

/**
 * The list filter that finds what a search-attribute mirror in `mode` writes for these ids, workflows
 * and schedules alike: `UserId = "…" AND WorkspaceId = "…"`, or one of the two when only one id is
 * given, with the values the mode writes (keyed pseudonyms: `key` is a key ring or the pseudonym key
 * of a lookup file). A narrowing, never an authorisation: search attributes are whatever a client set.
 * Ids are checked against the id format first (`USER_CONTEXT_INVALID`), so no value can close its
 * quotes; no id at all is `USER_CONTEXT_MISCONFIGURED`, and so is mode `off`, which writes nothing to
 * find: a filter of nothing would list every user's work (until the twenty-eighth round it returned
 * `undefined`, which `list({ query })` takes as no filter at all).
 */
export function mirrorQuery(mode: MirrorMode, key: KeyRing | KeyObject, ids: MirrorQueryIds): string {
  // null counts as left out too (JavaScript callers), never as a value to look for; so do null ids.
  const userId = ids?.userId ?? undefined;
  const workspaceId = ids?.workspaceId ?? undefined;
  if (userId === undefined && workspaceId === undefined) {
    throw new UserContextError(ErrorCodes.MISCONFIGURED, 'mirrorQuery needs a userId, a workspaceId or both');
  }
  // One of the two may be left out: a valid placeholder stands in for it, and is not queried.
  const given = { userId: userId ?? 'x', workspaceId: workspaceId ?? 'x' };
  parseUserContext({ ...given, roles: [] });
  if (mode === 'off')
    throw new UserContextError(
      ErrorCodes.MISCONFIGURED,
      "mirrorQuery: the search-attribute mirror is off, so nothing is found by it (set mirror: { searchAttributes: 'pseudonym' } where work is started, or filter by what you store)",
    );
  const values = mode === 'plain' ? given : pseudonymsOf(key, given);
  const terms: string[] = [];
  if (userId !== undefined) terms.push(`${USER_ID_ATTRIBUTE.name} = "${values.userId}"`);
  if (workspaceId !== undefined) terms.push(`${WORKSPACE_ID_ATTRIBUTE.name} = "${values.workspaceId}"`);
  return terms.join(' AND ');
}
