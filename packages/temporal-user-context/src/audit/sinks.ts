import { pino, type Logger } from 'pino';
import type { AuditEvent, AuditSink } from './event.js';
import { sanitizeAuditEvent } from './sanitize.js';

/** Default sink: one pino line per event at `info` (allow) or `warn` (deny), under `audit`. */
export function pinoAuditSink(logger: Logger = pino({ name: 'temporal-user-context' })): AuditSink {
  return {
    emit(event) {
      const level = event.decision === 'deny' ? 'warn' : 'info';
      logger[level]({ audit: event }, `user-context ${event.action} ${event.decision}`);
    },
  };
}

/** Collects events in memory; for tests and for the demo's audit table. */
export function memoryAuditSink(): AuditSink & { readonly events: AuditEvent[]; clear(): void } {
  const events: AuditEvent[] = [];
  return {
    events,
    emit(event) {
      events.push(event);
    },
    clear() {
      events.length = 0;
    },
  };
}

/** Fans one event out to several sinks; a failing sink never blocks the others or the caller. */
export class Auditor {
  constructor(private readonly sinks: readonly AuditSink[]) {}

  emit(event: Omit<AuditEvent, 'time'> & { time?: string }): void {
    const clean = sanitizeAuditEvent(event, event.time ?? new Date().toISOString());
    for (const sink of this.sinks) {
      try {
        const pending = sink.emit(clean);
        if (pending && typeof (pending as Promise<void>).catch === 'function') {
          (pending as Promise<void>).catch((err: unknown) => reportSinkFailure(err));
        }
      } catch (err) {
        reportSinkFailure(err);
      }
    }
  }
}

function reportSinkFailure(err: unknown): void {
  // Never let an audit sink crash a worker; say so on stderr where operators will see it.
  process.stderr.write(
    `temporal-user-context: audit sink failed: ${err instanceof Error ? err.message : String(err)}\n`,
  );
}
