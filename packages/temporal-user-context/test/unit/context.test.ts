// Cases 18–21 of the threat model for the context model (pure code).
import { describe, expect, it } from 'vitest';
import {
  ErrorCodes,
  MAX_CONTEXT_BYTES,
  MAX_ROLES,
  parseUserContext,
  systemPrincipal,
  UserContextError,
  isUserContextFailure,
  userContextFailureCode,
} from 'temporal-user-context';
import { sameUserContext } from '../../src/context/schema.js';
import { QueryNotRegisteredError } from '@temporalio/client';
import { isSystemPrincipal } from '../../src/context/system-principal.js';
import { safeReason } from '../../src/context/safe-reason.js';
import { ActivityFailure, ApplicationFailure, RetryState } from '@temporalio/common';

const ok = { userId: 'alice', workspaceId: 'ws-acme', roles: ['member'] };

function codeOf(fn: () => unknown): string | undefined {
  try {
    fn();
    return undefined;
  } catch (err) {
    expect(err).toBeInstanceOf(UserContextError);
    return (err as UserContextError).code;
  }
}

describe('UserContext schema', () => {
  it('accepts a well-formed context and freezes it', () => {
    const ctx = parseUserContext(ok);
    expect(ctx).toEqual(ok);
    expect(Object.isFrozen(ctx)).toBe(true);
    expect(Object.isFrozen(ctx.roles)).toBe(true);
  });

  it('a 10-role context with long ids serialises to at most 1 KiB', () => {
    const roles = Array.from({ length: 10 }, (_, i) => `role-${i}-${'x'.repeat(30)}`);
    const ctx = parseUserContext({ userId: 'u'.repeat(128), workspaceId: 'w'.repeat(128), roles });
    expect(new TextEncoder().encode(JSON.stringify(ctx)).length).toBeLessThanOrEqual(1024);
  });

  it.each([
    ['missing roles', { userId: 'a', workspaceId: 'w' }],
    ['unknown key', { ...ok, isAdmin: true }],
    ['empty id', { ...ok, userId: '' }],
    ['id too long', { ...ok, userId: 'a'.repeat(129) }],
    ['role upper case', { ...ok, roles: ['Admin'] }],
    ['duplicate roles', { ...ok, roles: ['member', 'member'] }],
    ['too many roles', { ...ok, roles: Array.from({ length: 17 }, (_, i) => `r${i}`) }],
    ['roles not an array', { ...ok, roles: 'admin' }],
    ['number id', { ...ok, userId: 42 }],
    ['null', null],
    ['array', [ok]],
  ])('refuses %s', (_name, input) => {
    expect(codeOf(() => parseUserContext(input))).toBe(ErrorCodes.INVALID);
  });

  it.each([
    'auth0|5f7c8ec7c33c6c004bbafe82',
    'google-oauth2|103547991597142817347',
    'dana+agents@example.com',
  ])("accepts an identity provider's subject as it is: %s", (userId) => {
    expect(parseUserContext({ ...ok, userId }).userId).toBe(userId);
    expect(parseUserContext({ ...ok, workspaceId: userId }).workspaceId).toBe(userId);
  });

  it.each([
    ['leading pipe', '|auth0'],
    ['leading plus', '+alice'],
    ['SQL injection', "x'; SET LOCAL app.workspace_id = 'other"],
    ['SQL comment', "' OR 1=1--"],
    ['CR/LF log injection', 'alice\r\n{"decision":"allow"}'],
    ['JSON in id', '{"userId":"root"}'],
    ['Cyrillic homoglyph', 'аlice'],
    ['full-width digits', 'user１２３'],
    ['zero-width space', 'al\u200bice'],
    ['bidi override', 'alice\u202egnp.exe'],
    ['NFD form', 'jose\u0301'],
    ['NFC but non-ASCII', 'josé'],
    ['leading dash', '-alice'],
    ['space', 'alice smith'],
  ])('case 14/20/21: refuses an id with %s', (_name, userId) => {
    expect(codeOf(() => parseUserContext({ ...ok, userId }))).toBe(ErrorCodes.INVALID);
    expect(codeOf(() => parseUserContext({ ...ok, workspaceId: userId }))).toBe(ErrorCodes.INVALID);
  });

  it('case 19: prototype-pollution keys are refused and pollute nothing', () => {
    const hostile = JSON.parse('{"userId":"a","workspaceId":"w","roles":[],"__proto__":{"isAdmin":true}}');
    expect(codeOf(() => parseUserContext(hostile))).toBe(ErrorCodes.INVALID);
    expect(codeOf(() => parseUserContext({ ...ok, constructor: { prototype: { isAdmin: true } } }))).toBe(
      ErrorCodes.INVALID,
    );
    expect(({} as Record<string, unknown>).isAdmin).toBeUndefined();
  });

  it('case 18: the largest context the schema admits fits the size cap, and inputs far above it are refused', () => {
    // The schema bounds every field, so the cap is reached only if the schema is ever widened past it.
    const longest = {
      userId: 'u'.repeat(128),
      workspaceId: 'w'.repeat(128),
      roles: Array.from({ length: MAX_ROLES }, (_, i) => `r${String(i).padStart(2, '0')}`.padEnd(48, 'x')),
    };
    const size = new TextEncoder().encode(JSON.stringify(parseUserContext(longest))).length;
    expect(size).toBeGreaterThan(1024);
    expect(size).toBeLessThanOrEqual(MAX_CONTEXT_BYTES);
    expect(codeOf(() => parseUserContext({ ...longest, roles: [...longest.roles, 'one-more'] }))).toBe(
      ErrorCodes.INVALID,
    );
    // Far above the cap: a megabyte id, a hundred thousand roles.
    expect(codeOf(() => parseUserContext({ ...ok, userId: 'a'.repeat(1 << 20) }))).toBe(ErrorCodes.INVALID);
    expect(
      codeOf(() => parseUserContext({ ...ok, roles: Array.from({ length: 100_000 }, (_, i) => `r${i}`) })),
    ).toBe(ErrorCodes.INVALID);
  });

  it("a refusal's reason and message never repeat the input's keys, line breaks or length", () => {
    const key = `x\r\n2030-01-01T00:00:00.000Z [INFO] forged {"ok":true}\u2028${'A'.repeat(5000)}`;
    let refusal: UserContextError | undefined;
    try {
      parseUserContext({ ...ok, [key]: 1 });
    } catch (err) {
      refusal = err as UserContextError;
    }
    expect(refusal).toMatchObject({
      code: ErrorCodes.INVALID,
      reason: 'context: 1 unknown key(s) (a context has userId, workspaceId and roles only)',
    });
    expect(refusal!.message).toBe(`${ErrorCodes.INVALID}: ${refusal!.reason}`);
  });

  it('a value that throws when read (a getter, a Proxy trap) is refused as INVALID, not thrown through', () => {
    const getter = {
      ...ok,
      get roles(): string[] {
        throw new Error('boom');
      },
    };
    const trap = new Proxy(ok, {
      ownKeys() {
        throw new Error('trap');
      },
    });
    for (const hostile of [getter, trap])
      expect(() => parseUserContext(hostile)).toThrow(
        expect.objectContaining({ code: ErrorCodes.INVALID, reason: 'context: unreadable value' }),
      );
  });

  it('compares contexts by user, workspace and set of roles', () => {
    expect(sameUserContext(parseUserContext(ok), parseUserContext({ ...ok }))).toBe(true);
    expect(
      sameUserContext(
        parseUserContext({ ...ok, roles: ['a', 'b'] }),
        parseUserContext({ ...ok, roles: ['b', 'a'] }),
      ),
    ).toBe(true);
    expect(sameUserContext(parseUserContext(ok), parseUserContext({ ...ok, roles: ['admin'] }))).toBe(false);
    // A repeated role is no set: compared both ways (found by review).
    const twice = { userId: 'alice', workspaceId: 'ws-acme', roles: ['x', 'x'] } as never;
    const pair = { userId: 'alice', workspaceId: 'ws-acme', roles: ['x', 'y'] } as never;
    expect(sameUserContext(pair, twice)).toBe(false);
    expect(sameUserContext(twice, pair)).toBe(false);
    expect(sameUserContext(parseUserContext(ok), parseUserContext({ ...ok, workspaceId: 'ws-other' }))).toBe(
      false,
    );
  });
});

describe('UserContext schema: found by mutation testing', () => {
  it('holds every role to the whole role format, not just its start', () => {
    for (const role of [
      'member\n',
      'member admin',
      'member;drop',
      `m${'a'.repeat(48)}`,
      'Admin',
      '1member',
      '',
    ]) {
      expect(
        codeOf(() => parseUserContext({ ...ok, roles: [role] })),
        JSON.stringify(role),
      ).toBe(ErrorCodes.INVALID);
    }
    expect(parseUserContext({ ...ok, roles: [`m${'a'.repeat(47)}`] }).roles).toEqual([`m${'a'.repeat(47)}`]);
  });

  it('a context with more, fewer or other roles is not the same context, either way round', () => {
    const member = parseUserContext({ ...ok, roles: ['member'] });
    const more = parseUserContext({ ...ok, roles: ['member', 'admin'] });
    const other = parseUserContext({ ...ok, roles: ['member', 'owner'] });
    expect(sameUserContext(member, more)).toBe(false);
    expect(sameUserContext(more, member)).toBe(false);
    expect(sameUserContext(more, other)).toBe(false);
    expect(sameUserContext(other, more)).toBe(false);
    expect(
      sameUserContext(more, parseUserContext({ ...ok, userId: 'bob', roles: ['admin', 'member'] })),
    ).toBe(false);
  });
});

describe('isSystemPrincipal, safeReason: found by mutation testing', () => {
  it('isSystemPrincipal is true for objects of kind system only, and never throws', () => {
    expect(isSystemPrincipal(systemPrincipal('nightly', 'nightly cleanup'))).toBe(true);
    expect(isSystemPrincipal({ kind: 'system' })).toBe(true);
    for (const value of [
      null,
      undefined,
      'system',
      { kind: 'robot' },
      {},
      Object.assign(() => 0, { kind: 'system' }),
    ])
      expect(isSystemPrincipal(value)).toBe(false);
  });

  it('safeReason caps at exactly 4000 code units, never cutting a surrogate pair', () => {
    expect(safeReason('a'.repeat(4000))).toBe('a'.repeat(4000));
    expect(safeReason('a'.repeat(4001))).toBe(`${'a'.repeat(4000)}…`);
    expect(safeReason(`${'a'.repeat(3999)}\u{1F600}b`)).toBe(`${'a'.repeat(3999)}…`);
    expect(safeReason(`${'a'.repeat(3999)}\u{10000}b`)).toBe(`${'a'.repeat(3999)}…`);
    expect(safeReason(`${'a'.repeat(3999)}\u{10FFFF}b`)).toBe(`${'a'.repeat(3999)}…`);
    expect(safeReason(`${'a'.repeat(3998)}\u{1F600}b`)).toBe(`${'a'.repeat(3998)}\u{1F600}…`);
  });
});

describe('SystemPrincipal', () => {
  it('requires a name and a printable reason', () => {
    expect(systemPrincipal('reindexer', 'nightly search reindex')).toEqual({
      kind: 'system',
      name: 'reindexer',
      reason: 'nightly search reindex',
    });
    expect(codeOf(() => systemPrincipal('reindexer', ''))).toBe(ErrorCodes.INVALID);
    expect(codeOf(() => systemPrincipal('../admin', 'x y z'))).toBe(ErrorCodes.INVALID);
    expect(codeOf(() => systemPrincipal('reindexer', 'ok\nforged line'))).toBe(ErrorCodes.INVALID);
  });

  it('a reason that says nothing (blank, invisible, a line separator, a lone surrogate) is no reason', () => {
    for (const reason of [
      '   ',
      '\u3164\u3164\u3164',
      '\u115F\u1160\uFFA0',
      'ok\u2028forged',
      'ok \uD800 x',
      '...',
    ])
      expect(
        codeOf(() => systemPrincipal('reindexer', reason)),
        JSON.stringify(reason),
      ).toBe(ErrorCodes.INVALID);
    expect(systemPrincipal('reindexer', 'réindexation 2').reason).toBe('réindexation 2');
  });
});

describe('UserContextError', () => {
  it('keeps line breaks, controls and bidi characters of a quoted id out of its reason and message, and caps them', () => {
    const err = new UserContextError(
      ErrorCodes.LINEAGE_MISMATCH,
      `workflow a\nb\u202Ec\u0085d${'z'.repeat(5000)}`,
    );
    expect(err.reason.startsWith('workflow a\uFFFDb\uFFFDc\uFFFDd')).toBe(true);
    expect(err.reason).toHaveLength(4001);
    expect(err.reason.endsWith('z…')).toBe(true);
    expect(err.message).toBe(`${ErrorCodes.LINEAGE_MISMATCH}: ${err.reason}`);
    // A plain reason stays as it is.
    expect(new UserContextError(ErrorCodes.MISSING, 'no context').reason).toBe('no context');
  });
});

describe('refusals as they cross Temporal (main entry, for clients and activities)', () => {
  it('userContextFailureCode finds the code on the failure or in its cause chain, and nothing else', () => {
    const refused = ApplicationFailure.create({ type: ErrorCodes.LINEAGE_MISMATCH, message: 'x' });
    const wrapped = new ActivityFailure(
      'failed',
      'act',
      'a-1',
      RetryState.NON_RETRYABLE_FAILURE,
      'worker',
      refused,
    );
    expect(userContextFailureCode(wrapped)).toBe(ErrorCodes.LINEAGE_MISMATCH);
    expect(isUserContextFailure(wrapped, ErrorCodes.LINEAGE_MISMATCH)).toBe(true);
    expect(isUserContextFailure(wrapped, ErrorCodes.MISSING)).toBe(false);
    expect(userContextFailureCode(new UserContextError(ErrorCodes.INVALID, 'bad'))).toBe(ErrorCodes.INVALID);
    expect(userContextFailureCode(ApplicationFailure.create({ type: 'SomethingElse', message: 'x' }))).toBe(
      undefined,
    );
  });

  it("reads a refused query's code from the start of its message, only there and only a known code", () => {
    const failedQuery = (message: string) => new QueryNotRegisteredError(message, 3);
    expect(userContextFailureCode(failedQuery(`${ErrorCodes.ACTOR_FORBIDDEN}: query "x" refused`))).toBe(
      ErrorCodes.ACTOR_FORBIDDEN,
    );
    for (const message of [
      `query failed: ${ErrorCodes.ACTOR_FORBIDDEN}: quoted`,
      'USER_CONTEXT_NOT_A_CODE: x',
      `${ErrorCodes.ACTOR_FORBIDDEN}`,
    ])
      expect(userContextFailureCode(failedQuery(message)), message).toBeUndefined();
    // Another error's message is never read.
    expect(userContextFailureCode(new Error(`${ErrorCodes.ACTOR_FORBIDDEN}: x`))).toBeUndefined();
  });
});
