// `npm run demo`: a scripted tour against a running platform (`npm start` in another terminal).
// Tokens come from the local dev issuer in .data, so run it on the machine that runs `npm start`.
import { loadDevIssuer } from './auth/dev-issuer.js';

const api = process.env.API_URL ?? `http://127.0.0.1:${process.env.PORT ?? 3000}`;
const issuer = await loadDevIssuer();
// Two workspaces, three users: alice (member) and carol (admin) in Acme, bob (admin) in Globex.
const token = {
  alice: await issuer.mint({ user: 'alice', workspace: 'ws-acme', roles: ['member'] }),
  carol: await issuer.mint({ user: 'carol', workspace: 'ws-acme', roles: ['admin', 'member'] }),
  bob: await issuer.mint({ user: 'bob', workspace: 'ws-globex', roles: ['admin', 'member'] }),
};

async function call(
  who: keyof typeof token,
  method: string,
  path: string,
  body?: unknown,
  headers: Record<string, string> = {},
) {
  const res = await fetch(`${api}${path}`, {
    method,
    headers: {
      authorization: `Bearer ${token[who]}`,
      ...(body ? { 'content-type': 'application/json' } : {}),
      ...headers,
    },
    ...(body ? { body: JSON.stringify(body) } : {}),
  });
  const json = (await res.json().catch(() => ({}))) as Record<string, unknown>;
  const code = typeof json.code === 'string' ? `  ${json.code}` : '';
  console.log(`${who.padEnd(5)} ${method} ${path} -> ${res.status}${code}`);
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
// An idempotency key: a client that never got the answer sends the same request again, safely.
const key = { 'idempotency-key': `demo-${Date.now()}` };
const startRoadmap = () =>
  call(
    'alice',
    'POST',
    `/workspaces/ws-acme/agents/${agentId}/runs`,
    { input: 'Tell me about roadmap' },
    key,
  );
let run = await startRoadmap();
console.log(await call('alice', 'GET', `/runs/${String(run.runId)}/result?waitSeconds=20`));

step("alice's client sends the same start again (same Idempotency-Key): the same run, not a second one");
const again = await startRoadmap();
console.log({ sameRun: again.runId === run.runId, status: again.status });

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

step("bob (Globex) tries to read and to cancel alice's run: refused, the run is untouched");
const alicesRun = await call('alice', 'POST', `/workspaces/ws-acme/agents/${agentId}/runs`, {
  input: 'Tell me about roadmap',
  followUpSeconds: 120,
});
await call('bob', 'GET', `/runs/${String(alicesRun.runId)}`);
await call('bob', 'POST', `/runs/${String(alicesRun.runId)}/cancel`);
await call('bob', 'POST', `/runs/${String(alicesRun.runId)}/instructions`, {
  instruction: 'Send me everything',
});
const still = await call('alice', 'GET', `/runs/${String(alicesRun.runId)}`);
console.log(
  `  alice's run is still ${String((still.progress as { status?: string } | undefined)?.status ?? still.status)}`,
);

step("carol revokes alice's membership while alice's run waits; its next step is refused");
await call('carol', 'DELETE', '/workspaces/ws-acme/members/alice');
await call('carol', 'POST', `/runs/${String(alicesRun.runId)}/instructions`, {
  instruction: 'One more thing',
});
// alice can no longer read anything in Acme; carol looks at how her run ended.
const revoked = await call('carol', 'GET', `/runs/${String(alicesRun.runId)}/result?waitSeconds=20`);
console.log(`  run ${String(revoked.status)}: ${JSON.stringify(revoked.error ?? revoked.result ?? {})}`);
// Restore the demo data, so that the demo can run again.
await call('carol', 'POST', '/workspaces/ws-acme/members', { userId: 'alice', roles: ['member'] });

step('alice may not read the audit trail; carol may (latest decisions, newest first)');
await call('alice', 'GET', '/workspaces/ws-acme/audit');
const audit = (await call('carol', 'GET', '/workspaces/ws-acme/audit?limit=25')) as { events: AuditRow[] };
printAuditTable(audit.events ?? []);

interface AuditRow {
  time: string;
  action: string;
  decision: string;
  reason: string;
  userId?: string;
  activityType?: string;
  workflowId?: string;
}

function printAuditTable(rows: AuditRow[]): void {
  const cols = [
    ['time', (r: AuditRow) => r.time.slice(11, 23)],
    ['user', (r: AuditRow) => r.userId ?? '-'],
    ['action', (r: AuditRow) => r.action],
    ['decision', (r: AuditRow) => r.decision],
    ['reason', (r: AuditRow) => r.reason],
    ['activity', (r: AuditRow) => r.activityType ?? '-'],
    ['workflow', (r: AuditRow) => (r.workflowId ?? '-').slice(0, 22)],
  ] as const;
  const cells = rows.map((r) => cols.map(([, get]) => get(r)));
  const widths = cols.map(([name], i) => Math.max(name.length, ...cells.map((c) => c[i]!.length)));
  const line = (values: readonly string[]) => values.map((v, i) => v.padEnd(widths[i]!)).join('  ');
  console.log(line(cols.map(([name]) => name)));
  console.log(widths.map((w) => '-'.repeat(w)).join('  '));
  for (const c of cells) console.log(line(c));
}
