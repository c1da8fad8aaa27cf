// `npm run token -- --user alice --workspace ws-acme --roles member`: mints a demo bearer token with the
// local development issuer (.data/auth/dev-issuer.json).
import { parseArgs } from 'node:util';
import { loadDevIssuer } from './auth/dev-issuer.js';

const { values } = parseArgs({
  options: {
    user: { type: 'string', default: 'alice' },
    workspace: { type: 'string', default: 'ws-acme' },
    roles: { type: 'string', default: 'member' },
    expires: { type: 'string', default: '8h' },
  },
});
const issuer = await loadDevIssuer();
const token = await issuer.mint({
  user: values.user,
  workspace: values.workspace,
  roles: values.roles
    .split(',')
    .map((r) => r.trim())
    .filter(Boolean),
  expiresIn: values.expires,
});
console.log(token);
