// What each entry point loads at run time (type-only imports aside), read from the sources with the
// TypeScript parser: the Node entries stay out of the workflow sandbox's code, and the workflow entry
// stays out of Node's and of the validation and crypto libraries (the SDK evaluates workflow-side
// modules per workflow; docs/wire-format.md, _Determinism_).
import { readFileSync } from 'node:fs';
import { dirname, join, resolve } from 'node:path';
import { fileURLToPath } from 'node:url';
import ts from 'typescript';
import { describe, expect, it } from 'vitest';

const src = fileURLToPath(new URL('../../src/', import.meta.url));

/** Relative files and bare modules `file` imports at run time (not `import type`, not type-only names). */
function runtimeImports(file: string): string[] {
  const text = readFileSync(file, 'utf8');
  const source = ts.createSourceFile(file, text, ts.ScriptTarget.ES2022, false);
  const out: string[] = [];
  for (const node of source.statements) {
    let specifier: ts.Expression | undefined;
    if (ts.isImportDeclaration(node)) {
      const clause = node.importClause;
      const typeOnly =
        clause?.isTypeOnly === true ||
        (clause !== undefined &&
          clause.name === undefined &&
          clause.namedBindings !== undefined &&
          ts.isNamedImports(clause.namedBindings) &&
          clause.namedBindings.elements.length > 0 &&
          clause.namedBindings.elements.every((e) => e.isTypeOnly));
      if (!typeOnly) specifier = node.moduleSpecifier;
    } else if (ts.isExportDeclaration(node) && node.moduleSpecifier && !node.isTypeOnly) {
      const named = node.exportClause;
      const typeOnly =
        named !== undefined &&
        ts.isNamedExports(named) &&
        named.elements.length > 0 &&
        named.elements.every((e) => e.isTypeOnly);
      if (!typeOnly) specifier = node.moduleSpecifier;
    }
    if (specifier && ts.isStringLiteral(specifier)) out.push(specifier.text);
  }
  return out;
}

/** Every source file and bare module an entry loads at run time. */
function closure(entry: string): { files: Set<string>; modules: Set<string> } {
  const files = new Set<string>();
  const modules = new Set<string>();
  const visit = (file: string) => {
    if (files.has(file)) return;
    files.add(file);
    for (const spec of runtimeImports(file)) {
      if (spec.startsWith('.')) visit(resolve(dirname(file), spec.replace(/\.js$/, '.ts')));
      else modules.add(spec);
    }
  };
  visit(join(src, entry));
  return { files, modules };
}

const relative = (files: Set<string>) => [...files].map((f) => f.slice(src.length)).sort();

describe('what each entry point loads at run time', () => {
  it.each(['index.ts', 'postgres/index.ts', 'codec-server/index.ts', 'testing/index.ts'])(
    '%s loads neither the workflow SDK nor workflow code beyond names and patch ids',
    (entry) => {
      const { files, modules } = closure(entry);
      // Found by review: the main entry imported two names from workflow/api.ts, and with them the
      // workflow SDK and its module-level proxies, in every client and worker process.
      expect([...modules].filter((m) => m.startsWith('@temporalio/workflow'))).toEqual([]);
      const allowed = ['workflow/activity-names.ts', 'workflow/patches.ts'];
      expect(relative(files).filter((f) => f.startsWith('workflow/') && !allowed.includes(f))).toEqual([]);
    },
  );

  it('the workflow entry loads no Node module and no validation, crypto or logging library', () => {
    const { files, modules } = closure('workflow/index.ts');
    const banned = [...modules].filter(
      (m) => m.startsWith('node:') || ['zod', 'jose', 'pino', 'pg', 'sonic-boom'].includes(m.split('/')[0]!),
    );
    expect(banned).toEqual([]);
    // Its files: the workflow side, the header's wire checks and the plain context modules.
    const outside = relative(files).filter(
      (f) => !f.startsWith('workflow/') && !f.startsWith('header/') && !f.startsWith('context/'),
    );
    expect(outside).toEqual([]);
  });
});

describe('the workflow entry', () => {
  it('exports the workflow-side API and the failure helpers, not the error class no workflow code receives', async () => {
    const workflow = await import('../../src/workflow/index.js');
    // Found by review: it exported `UserContextError` and `isUserContextError`, which match nothing a
    // workflow sees (refusals arrive as `ApplicationFailure`s: `isUserContextFailure`).
    expect(Object.keys(workflow).sort()).toEqual([
      'ErrorCodes',
      'MEMO_KEY',
      'USER_ID_ATTRIBUTE',
      'WORKSPACE_ID_ATTRIBUTE',
      'getActor',
      'getOriginator',
      'getUserContext',
      'isUserContextFailure',
      'sameWorkspacePolicy',
      'setActorPolicy',
      'userContextFailureCode',
      'verifyActor',
    ]);
  });
});
