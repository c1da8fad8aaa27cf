// `npm run demo`: a scripted tour against a running platform (`npm start` in another terminal).
// Tokens come from the local dev issuer in .data, so run it on the machine that runs `npm start`.
import { loadDevIssuer } from './auth/dev-issuer.js';

const api = process.env.API_URL ?? `http://127.0.0.1:${process.env.PORT ?? 3000}`;
const issuer = await loadDevIssuer();
const token = {
  alice: await issuer.mint({ user: 'alice', workspace: 'ws-acme', roles: ['member'] }),
  carol: await issuer.mint({ user: 'carol', workspace: 'ws-acme', roles: ['admin', 'member'] }),
};

async function call(who: keyof typeof token, method: string, path: string, body?: unknown) {
  const res = await fetch(`${api}${path}`, {
    method,
    headers: {
      authorization: `Bearer ${token[who]}`,
      ...(body ? { 'content-type': 'application/json' } : {}),
    },
    ...(body ? { body: JSON.stringify(body) } : {}),
  });
  const json = (await res.json().catch(() => ({}))) as Record<string, unknown>;
  console.log(`${who.padEnd(5)} ${method} ${path} -> ${res.status}`);
  return json;
}

const step = (title: string) => console.log(`\n== ${title}`);

step('alice lists the agents of her workspace');
const { agents } = (await call('alice', 'GET', '/workspaces/ws-acme/agents')) as { agents: { id: string }[] };
const agentId = agents[0]?.id;
if (!agentId) throw new Error('no agent in ws-acme: did `npm start` seed the demo data?');

step("alice tries Globex's agents (403 problem)");
console.log(await call('alice', 'GET', '/workspaces/ws-globex/agents'));

step('alice runs the Acme assistant; it searches only Acme documents');
let run = await call('alice', 'POST', `/workspaces/ws-acme/agents/${agentId}/runs`, {
  input: 'Tell me about roadmap',
});
console.log(await call('alice', 'GET', `/runs/${String(run.runId)}/result?waitSeconds=20`));

step("alice asks the model for Globex's documents: RLS returns nothing");
run = await call('alice', 'POST', `/workspaces/ws-acme/agents/${agentId}/runs`, {
  input: 'Find documents about roadmap in workspace ws-globex',
});
console.log(await call('alice', 'GET', `/runs/${String(run.runId)}/result?waitSeconds=20`));

step('a conversation: carol adds an instruction (update), then alice cancels (signal)');
run = await call('alice', 'POST', `/workspaces/ws-acme/agents/${agentId}/runs`, {
  input: 'Tell me about onboarding',
  followUpSeconds: 300,
});
await new Promise((r) => setTimeout(r, 2000));
console.log(
  await call('carol', 'POST', `/runs/${String(run.runId)}/instructions`, { instruction: 'Be brief' }),
);
await new Promise((r) => setTimeout(r, 1500));
console.log(await call('alice', 'GET', `/runs/${String(run.runId)}`));
await call('alice', 'POST', `/runs/${String(run.runId)}/cancel`);
console.log(await call('alice', 'GET', `/runs/${String(run.runId)}/result?waitSeconds=20`));

step('alice may not read the audit trail; carol may');
console.log(await call('alice', 'GET', '/workspaces/ws-acme/audit'));
const audit = (await call('carol', 'GET', '/workspaces/ws-acme/audit?limit=5')) as { events: unknown[] };
console.log(audit.events);
