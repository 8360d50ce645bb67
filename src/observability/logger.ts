import { pino, type Logger, type DestinationStream } from 'pino';
import { traceLogFields } from './tracing.ts';

/**
 * JSON logs (pino). Fields that could hold a secret are redacted by path as a second line of defence;
 * the first is never logging them. Child loggers carry request_id, tenant_id, task_id, instance_id; a line
 * written while a span is active carries its trace_id and span_id (observability/tracing.ts).
 */
export function createLogger(level: string, destination?: DestinationStream): Logger {
  return pino(
    {
      level,
      base: { service: 'clawplane' },
      timestamp: pino.stdTimeFunctions.isoTime,
      mixin: traceLogFields,
      redact: {
        paths: [
          'password',
          '*.password',
          'secret',
          '*.secret',
          'token',
          '*.token',
          'apiKey',
          '*.apiKey',
          'authorization',
          '*.authorization',
          'headers.authorization',
          'headers.cookie',
          '*.headers.authorization',
          '*.headers.cookie',
        ],
        censor: '[redacted]',
      },
    },
    destination,
  );
}

export type { Logger };
