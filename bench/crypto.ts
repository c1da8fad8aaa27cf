/**
 * `npm run bench:crypto`: cost of sealing and opening a context token, against the floor of doing
 * the same cryptography with plain node:crypto (AES-256-GCM decrypt + Ed25519 verify of the same
 * token), and the payload codec against raw node:crypto AES-256-GCM on the same buffers. One run;
 * writes bench/results/crypto.json. Not a test: it measures.
 */
import { createDecipheriv, verify as edVerify } from 'node:crypto';
import { mkdirSync, writeFileSync } from 'node:fs';
import { fileURLToPath } from 'node:url';
import {
  ContextVerifier,
  KeyRing,
  generateKeySet,
  issueContextToken,
  openContextToken,
} from 'temporal-user-context';

const keys = generateKeySet('bench');
const edge = KeyRing.fromJSON(keys.edge);
const worker = KeyRing.fromJSON(keys.worker);
const user = { userId: 'user-0001', workspaceId: 'ws-0001', roles: ['member', 'editor', 'viewer'] };

function median(xs: number[]): number {
  return [...xs].sort((a, b) => a - b)[Math.floor(xs.length / 2)]!;
}

/** Median µs per call of `fn` over `batches` batches of `n` calls. */
async function measure(fn: () => unknown, n = 200, batches = 15): Promise<number> {
  return (await interleaved([fn], n, batches))[0]!;
}

/**
 * Median µs per call of each function, measured in alternating batches (a, b, a, b, ...) so that CPU
 * frequency, GC and neighbours affect them alike: what the ratio needs, more than absolute numbers.
 */
async function interleaved(fns: Array<() => unknown>, n = 200, batches = 15): Promise<number[]> {
  for (const fn of fns) for (let i = 0; i < n; i++) await fn(); // warm-up
  const samples: number[][] = fns.map(() => []);
  for (let b = 0; b < batches; b++) {
    for (const [k, fn] of fns.entries()) {
      const t = performance.now();
      for (let i = 0; i < n; i++) await fn();
      samples[k]!.push(((performance.now() - t) * 1000) / n);
    }
  }
  return samples.map(median);
}

/** The floor: the same token opened with node:crypto directly (no JOSE parsing beyond splitting). */
function rawOpen(token: string): unknown {
  const [protectedB64, , ivB64, ctB64, tagB64] = token.split('.') as [string, string, string, string, string];
  const outer = JSON.parse(Buffer.from(protectedB64, 'base64url').toString());
  const seal = worker.sealing.get(outer.kid)!;
  const decipher = createDecipheriv('aes-256-gcm', seal.raw, Buffer.from(ivB64, 'base64url'));
  decipher.setAAD(Buffer.from(protectedB64, 'ascii'));
  decipher.setAuthTag(Buffer.from(tagB64, 'base64url'));
  const jws = Buffer.concat([decipher.update(Buffer.from(ctB64, 'base64url')), decipher.final()]).toString();
  const [h, p, s] = jws.split('.') as [string, string, string];
  const inner = JSON.parse(Buffer.from(h, 'base64url').toString());
  const key = worker.signing.get(inner.kid)!.publicKey;
  if (!edVerify(null, Buffer.from(`${h}.${p}`), key, Buffer.from(s, 'base64url')))
    throw new Error('bad signature');
  return JSON.parse(Buffer.from(p, 'base64url').toString());
}

async function main(): Promise<void> {
  const issue = () =>
    issueContextToken(edge, user, { namespace: 'default', use: 'start', workflowId: 'wf-bench' });
  const { header } = await issue();
  const sealUs = await measure(issue);
  const [openColdUs, rawOpenLimitUs] = (await interleaved([
    () => openContextToken(worker, header.tok),
    () => rawOpen(header.tok),
  ])) as [number, number];
  const verifier = new ContextVerifier(worker);
  const openCachedUs = await measure(() => verifier.open(header.tok), 2000);
  let codec: Record<string, unknown>;
  try {
    const mod = (await import('./crypto-codec.js')) as {
      benchCodec: () => Promise<Record<string, { codecMBps: number; rawMBps: number; codecRatio: number }>>;
    };
    codec = await mod.benchCodec();
  } catch (err) {
    codec = { error: `codec benchmark unavailable: ${(err as Error).message}` };
  }
  const result = {
    sealUs,
    openColdUs,
    openCachedUs,
    rawOpenLimitUs,
    openColdOverFloor: openColdUs / rawOpenLimitUs,
    openCachedOverCold: openCachedUs / openColdUs,
    codecRatio: Object.fromEntries(
      Object.entries(codec).map(([k, v]) => [k, (v as { codecRatio?: number }).codecRatio ?? v]),
    ),
    codec,
    tokenChars: header.tok.length,
    targets: { openColdOverFloor: '<= 2', openCachedOverCold: '<= 0.05', codecRatio: '>= 0.85' },
    node: process.version,
    date: new Date().toISOString(),
  };
  process.stdout.write(`${JSON.stringify(result, null, 2)}\n`);
  const out = fileURLToPath(new URL('./results/', import.meta.url));
  mkdirSync(out, { recursive: true });
  writeFileSync(`${out}crypto.json`, `${JSON.stringify(result, null, 2)}\n`);
}

await main();
