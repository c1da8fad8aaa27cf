import js from '@eslint/js';
import tseslint from 'typescript-eslint';

/** What code that may run in the workflow sandbox must not import. */
const SANDBOX_SAFE = [
  {
    group: ['node:*', 'crypto', 'fs', 'path', 'os', 'jose', 'pino', 'pg'],
    message: 'Sandbox-safe code must not import Node built-ins or key material.',
  },
  {
    group: ['**/worker/**', '**/crypto/**', '**/client/**', '**/audit/**', '**/postgres/**'],
    message: 'Sandbox-safe code imports only context/ and header/.',
  },
];

export default tseslint.config(
  { ignores: ['**/node_modules/**', '**/dist/**', '.tools/**', '.data/**', 'bench/results/**'] },
  js.configs.recommended,
  ...tseslint.configs.recommended,
  {
    rules: {
      '@typescript-eslint/no-unused-vars': ['error', { argsIgnorePattern: '^_', varsIgnorePattern: '^_' }],
      '@typescript-eslint/consistent-type-imports': 'error',
    },
  },
  {
    // CommonJS modules the SDK require()s (a failure converter).
    files: ['**/*.cjs'],
    languageOptions: { sourceType: 'commonjs', globals: { require: 'readonly', exports: 'writable' } },
    rules: { '@typescript-eslint/no-require-imports': 'off' },
  },
  {
    files: ['**/*.mjs'],
    languageOptions: { globals: { process: 'readonly', console: 'readonly', Buffer: 'readonly' } },
  },
  {
    // The workflow sandbox: no Node built-ins, no clocks, no keys (docs/wire-format.md, _Determinism_).
    files: [
      'packages/temporal-user-context/src/workflow/**/*.ts',
      'packages/temporal-user-context/src/context/**/*.ts',
      'packages/temporal-user-context/src/header/**/*.ts',
    ],
    rules: {
      'no-restricted-imports': [
        'error',
        {
          patterns: [...SANDBOX_SAFE],
        },
      ],
    },
  },
  {
    // What the sandbox loads for every workflow: no validation library either (evaluated per workflow,
    // zod cost ~9 ms each; bench/README.md), not even through the modules that hold the zod schemas.
    // Types are free. Found by review: the rule above did not say so.
    files: [
      'packages/temporal-user-context/src/workflow/**/*.ts',
      'packages/temporal-user-context/src/header/wire.ts',
    ],
    rules: {
      'no-restricted-imports': [
        'error',
        {
          patterns: [
            ...SANDBOX_SAFE,
            {
              group: ['zod', '**/context/schema*', '**/context/system-principal*', '**/header/schema*'],
              allowTypeImports: true,
              message: 'The workflow sandbox loads no validation library (zod costs every workflow).',
            },
          ],
        },
      ],
    },
  },
);
