import { z } from 'zod';
import { ConfigError } from '../errors.ts';

/**
 * Every setting Clawplane reads, as one zod schema over environment variables (issue 2). Command-line
 * flags are mapped onto the same names before parsing, so a flag and its variable are validated alike.
 * Each `describe()` is the fix printed when the value is bad, and the README's configuration table.
 */
const port = z.coerce.number().int().min(0).max(65535);
// A DNS name or IPv4 literal with an optional :port, or a bracketed IPv6 literal with an optional :port.
const ALLOW_HOST = /^(?:[a-z0-9](?:[a-z0-9.-]{0,251}[a-z0-9])?\.?|\[[0-9a-f:.]+\])(?::[0-9]{1,5})?$/i;
const splitList = (v: string) => v.split(',').map((h) => h.trim()).filter((h) => h !== '');

export const settingsSchema = z.strictObject({
  CLAWPLANE_ENV: z
    .enum(['development', 'production', 'test'])
    .default('development')
    .describe('development | production | test. production requires DATABASE_URL and CLAWPLANE_SECRET_KEY.'),
  CLAWPLANE_DATA_DIR: z
    .string()
    .min(1)
    .default('./.clawplane')
    .describe('Directory for the embedded database, the generated secret key and runtime files.'),
  DATABASE_URL: z
    .string()
    .regex(/^postgres(ql)?:\/\/\S+$/, 'must be a postgres:// or postgresql:// URL')
    .optional()
    .describe('PostgreSQL >= 15 connection URL, e.g. postgres://user:pass@host:5432/clawplane. Unset: embedded PostgreSQL.'),
  CLAWPLANE_SECRET_KEY: z
    .string()
    .refine((v) => decodeKey(v) !== undefined, 'must be at least 32 random bytes, as base64, base64url or hex')
    .optional()
    .describe('Master secret (>= 32 bytes, base64 or hex). Generate one with: openssl rand -base64 32'),
  CLAWPLANE_HOST: z
    .string()
    .min(1)
    .default('127.0.0.1')
    .describe('Address the HTTP server listens on. Loopback by default: no public port unless asked.'),
  CLAWPLANE_PORT: port.default(8787).describe('HTTP port, 0..65535 (0 picks a free port).'),
  CLAWPLANE_PUBLIC_URL: z
    .url({ protocol: /^https?$/ })
    .optional()
    .describe('The URL users reach Clawplane at (for OIDC redirects and secure cookies), e.g. https://claw.example.com'),
  CLAWPLANE_LOG_LEVEL: z
    .enum(['fatal', 'error', 'warn', 'info', 'debug', 'trace', 'silent'])
    .default('info')
    .describe('fatal | error | warn | info | debug | trace | silent.'),
  CLAWPLANE_BODY_LIMIT_BYTES: z.coerce
    .number()
    .int()
    .min(1024)
    .max(64 * 1024 * 1024)
    .default(1024 * 1024)
    .describe('Largest accepted request body in bytes (1024..67108864).'),
  CLAWPLANE_SHUTDOWN_TIMEOUT_MS: z.coerce
    .number()
    .int()
    .min(0)
    .max(600_000)
    .default(10_000)
    .describe('How long a graceful shutdown waits for in-flight requests, in milliseconds.'),
  CLAWPLANE_EMBEDDED_PG_PORT: port
    .default(0)
    .describe('Loopback port of the embedded PostgreSQL (0 picks a free port). Ignored when DATABASE_URL is set.'),
  CLAWPLANE_EGRESS_ALLOW_HOSTS: z
    .string()
    .default('')
    .refine((v) => splitList(v).every((h) => ALLOW_HOST.test(h)), 'must be a comma-separated list of host or host:port entries')
    .describe('Hosts (or host:port) that provider and webhook URLs may reach over plain http or at private/loopback addresses, despite the SSRF rules, e.g. ollama.internal:11434,10.0.0.5. Cloud metadata addresses stay refused. Default: none.'),
});

export type Settings = z.infer<typeof settingsSchema>;

/** The parsed configuration the rest of the code receives through constructors. */
export interface Config {
  env: Settings['CLAWPLANE_ENV'];
  dataDir: string;
  databaseUrl: string | undefined;
  /** Raw bytes of the master secret; undefined until `resolveSecretKey` fills it in embedded mode. */
  secretKey: Buffer | undefined;
  host: string;
  port: number;
  publicUrl: string | undefined;
  logLevel: Settings['CLAWPLANE_LOG_LEVEL'];
  bodyLimitBytes: number;
  shutdownTimeoutMs: number;
  embeddedPgPort: number;
  /** Entries of CLAWPLANE_EGRESS_ALLOW_HOSTS: `host` or `host:port`, for the SSRF guard's allow-list. */
  egressAllowHosts: string[];
}

const settingNames = new Set(Object.keys(settingsSchema.shape));

/**
 * Parses the environment (only the variables this schema knows) plus flags already mapped to variable
 * names. Throws ConfigError naming the variable and the fix; never echoes a secret value.
 */
export function parseConfig(env: NodeJS.ProcessEnv, flags: Partial<Record<keyof Settings, string>> = {}): Config {
  const input: Record<string, string> = {};
  for (const [k, v] of Object.entries(env)) {
    if (settingNames.has(k) && v !== undefined && v !== '') input[k] = v;
  }
  for (const [k, v] of Object.entries(flags)) if (v !== undefined) input[k] = v;

  const parsed = settingsSchema.safeParse(input);
  if (!parsed.success) {
    const lines = parsed.error.issues.map((issue) => {
      const name = String(issue.path[0] ?? '(unknown)');
      const field = settingsSchema.shape[name as keyof Settings];
      const shown = name === 'CLAWPLANE_SECRET_KEY' || name === 'DATABASE_URL' ? '' : ` (got ${JSON.stringify(input[name])})`;
      return `${name} ${issue.message}${shown}. Fix: ${field?.description ?? 'unset it'}`;
    });
    throw new ConfigError(`Invalid configuration:\n  ${lines.join('\n  ')}`);
  }
  const s = parsed.data;
  if (s.CLAWPLANE_ENV === 'production') {
    const missing = (['DATABASE_URL', 'CLAWPLANE_SECRET_KEY'] as const).filter((k) => s[k] === undefined);
    if (missing.length > 0) {
      throw new ConfigError(
        `Invalid configuration:\n  ${missing
          .map((k) => `${k} is required when CLAWPLANE_ENV=production. Fix: ${settingsSchema.shape[k].description ?? ''}`)
          .join('\n  ')}`,
      );
    }
  }
  return {
    env: s.CLAWPLANE_ENV,
    dataDir: s.CLAWPLANE_DATA_DIR,
    databaseUrl: s.DATABASE_URL,
    secretKey: s.CLAWPLANE_SECRET_KEY === undefined ? undefined : decodeKey(s.CLAWPLANE_SECRET_KEY),
    host: s.CLAWPLANE_HOST,
    port: s.CLAWPLANE_PORT,
    publicUrl: s.CLAWPLANE_PUBLIC_URL,
    logLevel: s.CLAWPLANE_LOG_LEVEL,
    bodyLimitBytes: s.CLAWPLANE_BODY_LIMIT_BYTES,
    shutdownTimeoutMs: s.CLAWPLANE_SHUTDOWN_TIMEOUT_MS,
    embeddedPgPort: s.CLAWPLANE_EMBEDDED_PG_PORT,
    egressAllowHosts: splitList(s.CLAWPLANE_EGRESS_ALLOW_HOSTS),
  };
}

/** Decodes a key given as hex or base64/base64url; undefined when it is not >= 32 bytes. */
export function decodeKey(text: string): Buffer | undefined {
  const t = text.trim();
  let buf: Buffer | undefined;
  if (/^[0-9a-fA-F]+$/.test(t) && t.length % 2 === 0) buf = Buffer.from(t, 'hex');
  else if (/^[A-Za-z0-9+/_-]+={0,2}$/.test(t)) buf = Buffer.from(t.replace(/-/g, '+').replace(/_/g, '/'), 'base64');
  return buf !== undefined && buf.length >= 32 ? buf : undefined;
}
