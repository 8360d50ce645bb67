/**
 * The supervisor: the first program in every sandbox (issue 6). It is mounted read-only and imports only
 * node: built-ins, because nothing else of Clawplane is inside. It
 * - starts N gateway executors, each with its own state dir, and restarts a crashed one with backoff; starts
 *   and stops executors on request (PUT /executors) while the others keep serving (a pool scaling);
 * - serves the ingress socket (a listening fd the host created and passed in, so no path to it exists
 *   in here; or, in a container, a socket in a directory bound from the host) and proxies each request or WebSocket to an executor's loopback port;
 * - serves 127.0.0.1:<egress> for the gateways' model calls and forwards them to the broker's socket,
 *   attaching the sandbox's broker token (re-read per request, so the host can re-register the sandbox
 *   after a control-plane restart without restarting gateways);
 * - answers the host on a second passed-in socket: health, exec (isolation probes, backups), stop.
 */
import { spawn, type ChildProcess } from 'node:child_process';
import { randomBytes } from 'node:crypto';
import { appendFileSync, closeSync, mkdirSync, openSync, readdirSync, readFileSync, rmSync, symlinkSync } from 'node:fs';
import path from 'node:path';
import http from 'node:http';
import net from 'node:net';
import { pipeline } from 'node:stream';

import type { ExecutorSpec, SupervisorConfig, SupervisorHealth, SupervisorListen, SupervisorRunRequest } from './protocol.ts';

type ExecState = 'starting' | 'ready' | 'backoff' | 'stopped';

interface Executor {
  spec: ExecutorSpec;
  /** Asked to run (at start by cfg.run, later by PUT /executors); an unwanted one is stopped and not restarted. */
  wanted: boolean;
  state: ExecState;
  child: ChildProcess | undefined;
  pid: number | undefined;
  restarts: number;
  startedAt: number;
  readyAt: number | undefined;
  lastExit: { code: number | null; signal: string | null; at: string } | undefined;
  delayMs: number;
  timer: NodeJS.Timeout | undefined;
}

const confPath = process.argv[2] ?? '/conf/sandbox.json';
const cfg = JSON.parse(readFileSync(confPath, 'utf8')) as SupervisorConfig;
const HOP = new Set(['connection', 'keep-alive', 'proxy-connection', 'transfer-encoding', 'upgrade', 'te', 'trailer']);
let stopping = false;

function log(msg: string, fields: Record<string, unknown> = {}): void {
  const line = JSON.stringify({ ts: new Date().toISOString(), src: 'supervisor', msg, ...fields }) + '\n';
  try {
    appendFileSync(cfg.logFile, line);
  } catch {
    process.stderr.write(line);
  }
}

const executors: Executor[] = cfg.executors.map((spec) => ({
  spec,
  wanted: !cfg.run || cfg.run.includes(spec.id),
  state: 'stopped',
  child: undefined,
  pid: undefined,
  restarts: 0,
  startedAt: 0,
  readyAt: undefined,
  lastExit: undefined,
  delayMs: cfg.backoff.initialMs,
  timer: undefined,
}));

function startExecutor(e: Executor): void {
  if (stopping || !e.wanted) return;
  const { spec } = e;
  mkdirSync(`${spec.stateDir}/home`, { recursive: true });
  const token = readFileSync(cfg.gatewayTokenFile, 'utf8').trim();
  const hooksToken = cfg.hooksTokenFile ? readFileSync(cfg.hooksTokenFile, 'utf8').trim() : undefined;
  const out = openSync(spec.logFile, 'a');
  const [cmd, ...args] = cfg.command;
  const child = spawn(cmd ?? 'node', [...args, '--port', String(spec.port)], {
    cwd: spec.stateDir,
    // The sandbox's env is already empty; gateways get only what they need. HOME is required: without
    // it the gateway exits with uv_os_homedir ENOENT (openclaw-in-bubblewrap.md).
    env: {
      ...cfg.env,
      HOME: `${spec.stateDir}/home`,
      OPENCLAW_HOME: `${spec.stateDir}/home`,
      OPENCLAW_STATE_DIR: spec.stateDir,
      OPENCLAW_CONFIG_PATH: spec.configPath,
      OPENCLAW_GATEWAY_TOKEN: token,
      ...(hooksToken ? { CLAWPLANE_HOOKS_TOKEN: hooksToken } : {}),
    },
    stdio: ['ignore', out, out],
  });
  closeSync(out);
  e.child = child;
  e.pid = child.pid;
  e.state = 'starting';
  e.startedAt = Date.now();
  e.readyAt = undefined;
  log('executor started', { executor: spec.id, pid: child.pid, restarts: e.restarts });
  child.on('error', (err) => log('executor spawn failed', { executor: spec.id, error: err.message }));
  child.on('exit', (code, signal) => {
    e.child = undefined;
    e.pid = undefined;
    e.lastExit = { code, signal, at: new Date().toISOString() };
    if (stopping || !e.wanted) {
      e.state = 'stopped';
      if (!stopping) log('executor stopped on request', { executor: spec.id, code, signal });
      return;
    }
    // A gateway that ran for a while before dying starts over at the initial delay.
    if (Date.now() - e.startedAt > cfg.backoff.resetAfterMs) e.delayMs = cfg.backoff.initialMs;
    e.state = 'backoff';
    e.restarts++;
    log('executor exited; restarting after backoff', { executor: spec.id, code, signal, delayMs: e.delayMs });
    e.timer = setTimeout(() => startExecutor(e), e.delayMs);
    e.delayMs = Math.min(e.delayMs * 2, cfg.backoff.maxMs);
  });
}

/** Asks one gateway's /readyz (a local request) and moves it between starting and ready. */
function probe(e: Executor): Promise<void> {
  return new Promise((resolve) => {
    const req = http.get({ host: '127.0.0.1', port: e.spec.port, path: '/readyz', timeout: 3000 }, (res) => {
      res.resume();
      const ok = res.statusCode === 200;
      if (ok && e.state === 'starting') {
        e.state = 'ready';
        e.readyAt = Date.now();
        log('executor ready', { executor: e.spec.id, ms: e.readyAt - e.startedAt });
        pruneCompileCaches();
      } else if (!ok && e.state === 'ready') {
        e.state = 'starting';
        log('executor not ready', { executor: e.spec.id, status: res.statusCode });
      }
      resolve();
    });
    req.on('timeout', () => req.destroy());
    req.on('error', () => resolve());
    req.on('close', () => resolve());
  });
}

/**
 * Polls each gateway's /readyz: every 100 ms while one is starting (readiness is what a woken request
 * waits for; issue 7), every second once all are ready (the host reads the result from /health).
 */
function pollHealth(): void {
  const live = executors.filter((e) => e.state === 'starting' || e.state === 'ready');
  void Promise.all(live.map(probe)).then(() => {
    const starting = executors.some((e) => e.state === 'starting' || e.state === 'backoff');
    setTimeout(pollHealth, starting ? 100 : 1000).unref();
  });
}

function pickExecutor(id: string | undefined): Executor | undefined {
  if (id) return executors.find((e) => e.spec.id === id);
  return executors.find((e) => e.wanted && e.state === 'ready') ?? executors.find((e) => e.wanted) ?? executors[0];
}

/**
 * Runs exactly `run` from now on: starts the wanted ones that are not running (at once, without backoff) and
 * stops the others (SIGTERM, then SIGKILL after the grace time). Executors not named keep what they do.
 */
function setRun(run: string[]): void {
  for (const e of executors) {
    const want = run.includes(e.spec.id);
    if (want === e.wanted) continue;
    e.wanted = want;
    clearTimeout(e.timer);
    e.timer = undefined;
    if (want) {
      e.delayMs = cfg.backoff.initialMs;
      if (!e.child) startExecutor(e);
    } else if (e.child) {
      const child = e.child;
      child.kill('SIGTERM');
      setTimeout(() => {
        if (e.child === child) child.kill('SIGKILL');
      }, 15_000).unref();
    } else e.state = 'stopped';
  }
  log('executors to run', { run: executors.filter((e) => e.wanted).map((e) => e.spec.id) });
}

function cleanHeaders(h: http.IncomingHttpHeaders): http.OutgoingHttpHeaders {
  const out: http.OutgoingHttpHeaders = {};
  for (const [k, v] of Object.entries(h)) if (!HOP.has(k) && v !== undefined) out[k] = v;
  return out;
}

function jsonError(res: http.ServerResponse, status: number, message: string): void {
  if (res.headersSent) {
    res.destroy();
    return;
  }
  res.writeHead(status, { 'content-type': 'application/json' });
  res.end(JSON.stringify({ error: { message, type: 'clawplane_sandbox' } }));
}

/**
 * Streams one request to `target` and the answer back, unbuffered (SSE works). One connection per
 * request (`agent: false`): an idle keep-alive connection to the broker's host socket fails a warm-resume
 * dump ("Can't dump half of stream unix connection"), and one to a gateway comes back closed after a
 * restore (--tcp-close), failing the first request (ADR 0006).
 */
function proxy(
  req: http.IncomingMessage,
  res: http.ServerResponse,
  target: http.RequestOptions,
  what: string,
  onHead?: (h: http.OutgoingHttpHeaders) => void,
): void {
  const up = http.request({ agent: false, ...target, method: req.method, path: req.url }, (ur) => {
    const head = cleanHeaders(ur.headers);
    onHead?.(head);
    res.writeHead(ur.statusCode ?? 502, head);
    // pipe() neither ends nor fails `res` when `ur` is cut mid-stream, and the caller then waits forever;
    // pipeline destroys `res` at once, so the cut reaches the next hop as an error.
    pipeline(ur, res, () => undefined);
  });
  up.on('error', (err) => {
    // After the head went out only a cut can tell the caller: an error body would be read as the answer.
    if (res.headersSent) res.destroy(err);
    else jsonError(res, 502, `${what} is not reachable (${(err as NodeJS.ErrnoException).code ?? err.message})`);
  });
  res.on('close', () => up.destroy());
  req.pipe(up);
}

/**
 * Tracing (W3C trace context; docs/architecture.md, Observability). Nothing in here can reach a collector,
 * so the supervisor's span is recorded by the host: for a request that carries `traceparent`, the
 * supervisor picks its span's id, passes it on to the gateway as the parent, and reports the id, when the
 * request arrived and how long the gateway took to answer in the x-clawplane-supervisor-span response
 * header. Model calls the gateway makes meanwhile carry that span as their parent to the broker.
 */
const TRACEPARENT = /^00-([0-9a-f]{32})-([0-9a-f]{16})-([0-9a-f]{2})$/;
interface Traced {
  traceId: string;
  spanId: string;
  flags: string;
}
/** Traced turns in flight (the gateway's egress calls are stamped with one when it is the only one). */
const traced = new Set<Traced>();

function traceIngress(req: http.IncomingMessage, res: http.ServerResponse, headers: http.OutgoingHttpHeaders): (h: http.OutgoingHttpHeaders) => void {
  delete headers['tracestate'];
  const m = TRACEPARENT.exec(String(req.headers['traceparent'] ?? ''));
  if (!m) {
    delete headers['traceparent'];
    // Only the supervisor reports a span: a gateway's header of that name never reaches the host.
    return (h) => delete h['x-clawplane-supervisor-span'];
  }
  const at = Date.now();
  const t: Traced = { traceId: m[1] ?? '', spanId: randomBytes(8).toString('hex'), flags: m[3] ?? '00' };
  headers['traceparent'] = `00-${t.traceId}-${t.spanId}-${t.flags}`;
  traced.add(t);
  res.on('close', () => traced.delete(t));
  return (h) => {
    h['x-clawplane-supervisor-span'] = `id=${t.spanId}; at=${at}; head_ms=${Date.now() - at}`;
  };
}

/**
 * The parent for a model call on its way to the broker: the one traced turn in flight. With several
 * (concurrent turns on one sandbox) the call cannot be told apart from here (every gateway reaches the
 * egress port from 127.0.0.1), so it goes untraced rather than into the wrong trace. A traceparent the
 * gateway sent itself is never passed on.
 */
function egressTraceparent(): string | undefined {
  if (traced.size !== 1) return undefined;
  const [t] = traced;
  return t ? `00-${t.traceId}-${t.spanId}-${t.flags}` : undefined;
}

// Ingress: the host's (and later the ingress module's) only way in.
const ingress = http.createServer((req, res) => {
  const id = req.headers['x-clawplane-executor'];
  const e = pickExecutor(typeof id === 'string' ? id : undefined);
  if (!e) return jsonError(res, 404, 'no such executor');
  if (!e.wanted) return jsonError(res, 503, `executor ${e.spec.id} is stopped (its pool scaled down)`);
  const headers = cleanHeaders(req.headers);
  delete headers['x-clawplane-executor'];
  proxy(req, res, { host: '127.0.0.1', port: e.spec.port, headers }, `gateway ${e.spec.id}`, traceIngress(req, res, headers));
});
ingress.on('upgrade', (req, socket, head) => {
  const id = req.headers['x-clawplane-executor'];
  const e = pickExecutor(typeof id === 'string' ? id : undefined);
  if (!e || !e.wanted) return socket.destroy();
  const up = net.connect(e.spec.port, '127.0.0.1', () => {
    const lines = [`${req.method ?? 'GET'} ${req.url ?? '/'} HTTP/1.1`];
    for (let i = 0; i < req.rawHeaders.length; i += 2) {
      const k = req.rawHeaders[i] ?? '';
      if (k.toLowerCase() !== 'x-clawplane-executor') lines.push(`${k}: ${req.rawHeaders[i + 1] ?? ''}`);
    }
    up.write(lines.join('\r\n') + '\r\n\r\n');
    if (head.length) up.write(head);
    up.pipe(socket).pipe(up);
  });
  up.on('error', () => socket.destroy());
  socket.on('error', () => up.destroy());
});

// Egress: model calls and tool proxy requests go to the broker, never anywhere else (there is no network).
const egress = http.createServer((req, res) => {
  let token: string;
  try {
    token = readFileSync(cfg.brokerTokenFile, 'utf8').trim();
  } catch {
    return jsonError(res, 503, 'the broker registration of this sandbox is missing; the control plane re-registers it on its next reconcile');
  }
  const headers = cleanHeaders(req.headers);
  headers['authorization'] = `Bearer ${token}`;
  headers['host'] = 'broker';
  delete headers['tracestate'];
  const parent = egressTraceparent();
  if (parent) headers['traceparent'] = parent;
  else delete headers['traceparent'];
  proxy(
    req,
    res,
    cfg.brokerUrl
      ? { host: new URL(cfg.brokerUrl).hostname, port: Number(new URL(cfg.brokerUrl).port || 80), headers }
      : { socketPath: cfg.brokerSocket, headers },
    'the broker',
  );
});

function health(): SupervisorHealth {
  return {
    // Every executor asked to run is ready. While one is being added this is false; a pool's turns read
    // their own executor's state instead, so the others keep serving.
    ready: executors.every((e) => !e.wanted || e.state === 'ready'),
    pid: process.pid,
    rssBytes: process.memoryUsage.rss(),
    executors: executors.map((e) => ({
      id: e.spec.id,
      state: e.state,
      pid: e.pid ?? null,
      restarts: e.restarts,
      startedAt: e.startedAt ? new Date(e.startedAt).toISOString() : null,
      readyMs: e.readyAt ? e.readyAt - e.startedAt : null,
      lastExit: e.lastExit ?? null,
    })),
  };
}

function readBody(req: http.IncomingMessage, limit: number): Promise<string> {
  return new Promise((resolve, reject) => {
    let size = 0;
    const chunks: Buffer[] = [];
    req.on('data', (c: Buffer) => {
      size += c.length;
      if (size > limit) reject(new Error('body too large'));
      else chunks.push(c);
    });
    req.on('end', () => resolve(Buffer.concat(chunks).toString('utf8')));
    req.on('error', reject);
  });
}

/** Runs a command in here: same namespaces, uid, limits and empty environment as the gateways. */
function exec(argv: string[], timeoutMs: number): Promise<Record<string, unknown>> {
  return new Promise((resolve) => {
    const [cmd, ...args] = argv;
    const c = spawn(cmd ?? 'true', args, {
      env: { PATH: cfg.env['PATH'] ?? '/usr/bin:/bin', HOME: '/tmp' },
      stdio: ['ignore', 'pipe', 'pipe'],
      timeout: timeoutMs,
    });
    const out: Buffer[] = [];
    const err: Buffer[] = [];
    c.stdout.on('data', (d: Buffer) => out.push(d));
    c.stderr.on('data', (d: Buffer) => err.push(d));
    c.on('error', (e) => resolve({ code: null, signal: null, stdout: '', stderr: e.message }));
    c.on('close', (code, signal) =>
      resolve({
        code,
        signal,
        stdout: Buffer.concat(out)
          .toString('utf8')
          .slice(0, 1 << 20),
        stderr: Buffer.concat(err)
          .toString('utf8')
          .slice(0, 1 << 20),
      }),
    );
  });
}

const control = http.createServer((req, res) => {
  const reply = (status: number, body: unknown) => {
    res.writeHead(status, { 'content-type': 'application/json' });
    res.end(JSON.stringify(body));
  };
  if (req.method === 'GET' && req.url === '/health') {
    // A starting gateway is probed now rather than at the next poll: the host learns at once when it is ready.
    const starting = executors.filter((e) => e.state === 'starting');
    if (starting.length === 0) return reply(200, health());
    void Promise.all(starting.map(probe)).then(() => reply(200, health()));
    return;
  }
  if (req.method === 'POST' && req.url === '/exec') {
    readBody(req, 1 << 16)
      .then(async (text) => {
        const b = JSON.parse(text) as { argv?: unknown; timeoutMs?: unknown };
        if (!Array.isArray(b.argv) || !b.argv.every((a) => typeof a === 'string') || b.argv.length === 0)
          return reply(400, { error: 'argv must be a non-empty string array' });
        reply(200, await exec(b.argv as string[], typeof b.timeoutMs === 'number' ? b.timeoutMs : 30_000));
      })
      .catch((err: unknown) => reply(400, { error: (err as Error).message }));
    return;
  }
  if (req.method === 'PUT' && req.url === '/executors') {
    readBody(req, 1 << 16)
      .then((text) => {
        const b = JSON.parse(text) as Partial<SupervisorRunRequest>;
        if (!Array.isArray(b.run) || !b.run.every((id) => typeof id === 'string')) return reply(400, { error: 'run must be an array of executor ids' });
        const unknown = b.run.filter((id) => !executors.some((e) => e.spec.id === id));
        if (unknown.length > 0) return reply(400, { error: `no such executor: ${unknown.join(', ')}` });
        setRun(b.run);
        reply(200, health());
      })
      .catch((err: unknown) => reply(400, { error: (err as Error).message }));
    return;
  }
  if (req.method === 'POST' && req.url === '/quiesce') {
    // Before a warm-resume dump (issue 10): no idle connection to the host may stay open.
    ingress.closeIdleConnections();
    res.on('finish', () => control.closeIdleConnections());
    return reply(200, { quiesced: true });
  }
  if (req.method === 'POST' && req.url === '/stop') {
    reply(202, { stopping: true });
    void shutdown('control');
    return;
  }
  reply(404, { error: 'unknown control request' });
});

async function shutdown(why: string): Promise<void> {
  if (stopping) return;
  stopping = true;
  log('stopping', { why });
  ingress.close();
  egress.close();
  for (const e of executors) {
    clearTimeout(e.timer);
    e.child?.kill('SIGTERM');
  }
  const deadline = Date.now() + 15_000;
  while (executors.some((e) => e.child) && Date.now() < deadline) await new Promise((r) => setTimeout(r, 100));
  for (const e of executors) e.child?.kill('SIGKILL');
  log('stopped');
  control.close();
  process.exit(0);
}

process.on('SIGTERM', () => void shutdown('SIGTERM'));
process.on('SIGINT', () => void shutdown('SIGINT'));
// Keep serving when one bridged connection fails in an unexpected way; log it.
process.on('uncaughtException', (err) => log('uncaught exception', { error: err.message, stack: err.stack }));

egress.listen(cfg.egressPort, '127.0.0.1');
/**
 * A passed-in fd (local driver), a path in a host-bound directory (docker driver; a stale socket file is
 * replaced), or a TCP port (kubernetes driver: the pod's own network namespace; ADR 0011).
 */
function listenOn(server: net.Server | http.Server, where: SupervisorListen): void {
  if ('fd' in where) {
    server.listen({ fd: where.fd });
    return;
  }
  if ('port' in where) {
    server.listen(where.port, where.host);
    return;
  }
  rmSync(where.path, { force: true });
  server.listen(where.path);
}
listenOn(ingress, cfg.ingress);
listenOn(control, cfg.control);
/**
 * OpenClaw keeps V8's compile cache in $TMPDIR/node-compile-cache, and /tmp in here is a new tmpfs at
 * every start: each wake compiled the whole gateway again, which a gateway on a host (whose /tmp keeps
 * the cache) does not (issue 7 bench: cold wake vs raw boot). The instance's shared-rw directory outlives
 * restarts and is not part of backups (those hold work/ only); only this instance's gateways write it.
 * One directory per runtime version (`openclaw@<version>`), so an upgrade starts a fresh one; the others
 * are removed once a gateway of this version is ready (pruneCompileCaches), so a failed upgrade that is
 * rolled back keeps the good version's cache, and a cache never holds more than one version (40-80 MB each).
 */
const COMPILE_CACHE_ROOT = '/tenant/shared-rw/node-compile-cache';
const compileCacheKey = runtimeKey();
let compileCachesPruned = false;

/** `<name>@<version>` of the gateway's package (the package.json beside its entry file), for file names. */
function runtimeKey(): string {
  try {
    const entry = cfg.command[1] ?? '';
    const pkg = JSON.parse(readFileSync(path.join(path.dirname(entry), 'package.json'), 'utf8')) as { name?: unknown; version?: unknown };
    return `${String(pkg.name)}@${String(pkg.version)}`.replace(/[^A-Za-z0-9@._+-]/g, '_').slice(0, 100);
  } catch {
    return 'unknown';
  }
}

function persistCompileCache(): void {
  const dir = `${COMPILE_CACHE_ROOT}/${compileCacheKey}`;
  try {
    mkdirSync(dir, { recursive: true });
    symlinkSync(dir, `${cfg.env['TMPDIR'] ?? '/tmp'}/node-compile-cache`);
  } catch (err) {
    log('compile cache stays in /tmp (gateways compile afresh at each start)', { error: (err as Error).message });
  }
}

/** Once a gateway of this runtime is ready: the caches of every other version go. */
function pruneCompileCaches(): void {
  if (compileCachesPruned) return;
  compileCachesPruned = true;
  try {
    const stale = readdirSync(COMPILE_CACHE_ROOT).filter((name) => name !== compileCacheKey);
    for (const name of stale) rmSync(`${COMPILE_CACHE_ROOT}/${name}`, { recursive: true, force: true });
    if (stale.length) log('compile caches of other runtime versions removed', { kept: compileCacheKey, removed: stale.length });
  } catch (err) {
    log('could not prune compile caches', { error: (err as Error).message });
  }
}

log('supervisor started', { executors: executors.length, pid: process.pid });
persistCompileCache();
for (const e of executors) startExecutor(e);
pollHealth();
