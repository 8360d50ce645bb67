import { OpenAPIHono } from '@hono/zod-openapi';
import { bodyLimit } from 'hono/body-limit';
import { requestId } from 'hono/request-id';
import { routePath } from 'hono/route';
import type { Logger } from 'pino';
import type { Config } from '../config/schema.ts';
import type { Db } from '../db/pool.ts';
import { PayloadTooLargeError, RouteNotFoundError, UnsupportedMediaTypeError, ValidationError } from '../errors.ts';
import type { Metrics } from '../observability/metrics.ts';
import { extractTraceContext, failSpan, SpanKind, startSpan, tracingOn, withSpan } from '../observability/tracing.ts';
import type { AppEnv } from './env.ts';
import { errorResponse } from './errors.ts';
import { storableInput } from './input.ts';
import type { Services } from '../server/services.ts';
import { authentication, tenantScope } from './auth.ts';
import { registerAuth } from './routes/auth.ts';
import { registerCredentials } from './routes/credentials.ts';
import { registerDocs } from './routes/docs.ts';
import { registerMembers } from './routes/members.ts';
import { registerOnboarding } from './routes/onboarding.ts';
import { registerPolicy } from './routes/policy.ts';
import { registerPlatform } from './routes/platform.ts';
import { registerReplicas } from './routes/replicas.ts';
import { registerGrantKeys } from './routes/grant-keys.ts';
import type { ReplicaRegistry } from '../replicas/registry.ts';
import { registerDoctor } from './routes/doctor.ts';
import { registerProviders } from './routes/providers.ts';
import { registerSystem } from './routes/system.ts';
import { registerTenants } from './routes/tenants.ts';
import { registerTokens } from './routes/tokens.ts';
import { registerInstances } from './routes/instances.ts';
import { registerChat } from './routes/chat.ts';
import { registerOpenAi } from './routes/openai.ts';
import { registerBackups } from './routes/backups.ts';
import { registerTasks } from './routes/tasks.ts';
import { registerWeb } from './routes/web.ts';
import { registerBroker } from './routes/broker.ts';
import { registerAudit } from './routes/audit.ts';
import { registerKnowledge } from './routes/knowledge.ts';
import { registerUsage } from './routes/usage.ts';
import { registerLanes } from './routes/lanes.ts';
import { registerPools } from './routes/pools.ts';
import { registerApprovalChannels, registerGovernance } from './routes/governance.ts';
import { registerSwarms } from './routes/swarms.ts';

/** What route modules need; passed in, never read from globals (STYLE 2). */
export interface AppDeps {
  config: Config;
  db: Db;
  log: Logger;
  metrics: Metrics;
  /** Latest migration version this build ships; readiness compares the database with it. */
  expectedMigration: number;
  services: Services;
  /** The replica registry of `clawplane serve` (GET /api/v1/platform/replicas). */
  replicas?: ReplicaRegistry | undefined;
  /** Cookies get Secure (and the __Host- prefix) when users reach Clawplane over https. */
  secureCookies: boolean;
  /** scheme://host[:port] users reach Clawplane at, for redirects. */
  publicOrigin: string;
}

export type App = OpenAPIHono<AppEnv>;

/** The app-wide values a route module may name beside services. */
type AppValues = Omit<AppDeps, 'services'>;

/** What a route module receives: the services and app-wide values it names (and the type checker holds it to them). */
export type RouteDeps<S extends keyof Services = never, A extends keyof AppValues = never> = Pick<Services, S> & Pick<AppValues, A>;

/** Picks the named services and values out of the app's dependencies. */
function routeDeps(deps: AppDeps) {
  return <S extends keyof Services, A extends keyof AppValues = never>(services: readonly S[], values: readonly A[] = []): RouteDeps<S, A> => {
    const out: Record<string, unknown> = {};
    for (const k of services) out[k] = deps.services[k];
    for (const k of values) out[k] = deps[k];
    return out as RouteDeps<S, A>;
  };
}

const TARGET_NAMES: Record<string, string> = { json: 'body', param: 'path', query: 'query', header: 'header', cookie: 'cookie' };
const BODY_METHODS = new Set(['POST', 'PUT', 'PATCH', 'DELETE']);
const JSON_TYPE = /^application\/([\w.-]+\+)?json$/i;

export function createApp(deps: AppDeps): App {
  const app = new OpenAPIHono<AppEnv>({
    // Schema failures become one ValidationError naming each bad field by path (issue 2).
    defaultHook: (result) => {
      if (!result.success) {
        const issues = result.error.issues.map((i) => ({
          path: [TARGET_NAMES[result.target] ?? result.target, ...i.path.map(String)].join('.'),
          message: i.code === 'unrecognized_keys' ? `unknown field(s): ${i.keys.join(', ')}` : i.message,
        }));
        throw new ValidationError(`The request is invalid: ${issues.map((i) => `${i.path}: ${i.message}`).join('; ')}.`, issues);
      }
    },
  });

  app.use(requestId());
  // Every answer carries X-Request-Id (clients quote it): the middleware above sets it only on responses
  // Hono builds, not on a Response a handler returns as is (the chat stream, the console's files).
  app.use(async (c, next) => {
    await next();
    if (c.res.status !== 101 && !c.res.headers.has('x-request-id')) c.header('X-Request-Id', c.get('requestId'));
  });
  // One server span per request, continuing a caller's `traceparent` (docs/architecture.md, Observability).
  // Hono's own OpenTelemetry middleware records the full URL; this one keeps to route, path and status.
  const SYSTEM = new Set(['/healthz', '/readyz', '/metrics']);
  app.use(async (c, next) => {
    if (!tracingOn() || SYSTEM.has(c.req.path)) return next();
    const span = startSpan(
      `${c.req.method} request`,
      { 'http.request.method': c.req.method, 'url.path': c.req.path, 'clawplane.request_id': c.get('requestId') },
      { kind: SpanKind.SERVER, parent: extractTraceContext(c.req.raw.headers) },
    );
    try {
      await withSpan(span, next);
    } catch (err) {
      failSpan(span, err);
      throw err;
    } finally {
      const route = routePath(c) || 'unmatched';
      const tenant = c.get('tenant');
      span.updateName(`${c.req.method} ${route}`);
      span.setAttributes({ 'http.route': route, 'http.response.status_code': c.res.status, ...(tenant?.id ? { 'clawplane.tenant_id': tenant.id } : {}) });
      if (c.res.status >= 500) failSpan(span, { code: `http_${c.res.status}` });
      span.end();
    }
  });
  app.use(async (c, next) => {
    const started = performance.now();
    c.set('log', deps.log.child({ request_id: c.get('requestId') }));
    await next();
    // The route of the handler that answered (the last one run), not the last pattern that matched: the web
    // console's catch-all matches every path.
    const route = routePath(c) || 'unmatched';
    const seconds = (performance.now() - started) / 1000;
    deps.metrics.httpRequests.inc({ method: c.req.method, route, status: String(c.res.status) });
    deps.metrics.httpDuration.observe({ method: c.req.method, route }, seconds);
    c.get('log').info({ method: c.req.method, path: c.req.path, status: c.res.status, ms: Math.round(seconds * 1000) }, 'request');
  });
  app.use(
    bodyLimit({
      maxSize: deps.config.bodyLimitBytes,
      onError: () => {
        throw new PayloadTooLargeError(deps.config.bodyLimitBytes);
      },
    }),
  );
  // A body must be JSON: otherwise the validator would silently see `{}` and report missing fields.
  app.use(async (c, next) => {
    if (BODY_METHODS.has(c.req.method) && c.req.path.startsWith('/api/')) {
      const len = c.req.header('content-length');
      const hasBody = (len !== undefined && len !== '0') || c.req.header('transfer-encoding') !== undefined;
      const type = (c.req.header('content-type') ?? '').split(';')[0]?.trim() ?? '';
      if (hasBody && !JSON_TYPE.test(type)) throw new UnsupportedMediaTypeError();
    }
    await next();
  });

  // Before authentication: the tenant in the path is looked up there, and PostgreSQL cannot hold NUL.
  app.use(storableInput(() => app.openAPIRegistry.definitions.flatMap((d) => (d.type === 'route' ? [{ method: d.route.method, path: d.route.path }] : []))));

  // Each route module gets the services and values it names and nothing else: this is the one place that
  // says which part of the control plane a route reaches (docs/architecture.md, "Composition").
  const give = routeDeps(deps);
  app.use(authentication(give(['sessions', 'tokens', 'tenants', 'onboarding'], ['secureCookies'])));
  const scope = tenantScope(deps.services.tenants);
  app.use('/api/v1/tenants/:tenant', scope);
  app.use('/api/v1/tenants/:tenant/*', scope);

  app.onError((err, c) => errorResponse(c, err, deps.config.bodyLimitBytes));
  app.notFound((c) => errorResponse(c, new RouteNotFoundError(c.req.method, c.req.path), deps.config.bodyLimitBytes));

  registerSystem(app, give([], ['db', 'expectedMigration', 'metrics']));
  registerOnboarding(app, give(['oidc', 'onboarding', 'platformProvider', 'sessions', 'users'], ['secureCookies']));
  registerAuth(app, give(['oidc', 'sessions', 'users'], ['publicOrigin', 'secureCookies']));
  registerPlatform(app, give(['oidc', 'onboarding', 'platformProvider']));
  registerReplicas(app, give([], ['replicas']));
  registerGrantKeys(app, give(['grantKeys']));
  registerDoctor(app, give(['instances', 'runtimes', 'sandboxes'], ['config', 'db']));
  registerTenants(app, give(['tenants']));
  registerMembers(app, give(['tenants']));
  registerTokens(app, give(['tokens']));
  registerCredentials(app, give(['credentials', 'skills']));
  registerProviders(app, give(['providers']));
  registerInstances(app, give(['instances', 'reconciler', 'rotator', 'sandboxes']));
  registerChat(app, give(['archive', 'gate', 'ingress', 'instances', 'sessions', 'tenants', 'tokens'], ['publicOrigin', 'secureCookies']));
  registerOpenAi(app, give(['gate', 'ingress', 'onboarding', 'tenants']));
  registerBackups(app, give(['backups', 'instances']));
  registerTasks(app, give(['agents', 'approvals', 'tasks']));
  registerPolicy(app, give(['gatewayConfig', 'grants', 'policy']));
  registerBroker(app, give(['broker', 'brokerGovernance'], ['db']));
  registerAudit(app, give([], ['db']));
  registerKnowledge(app, give(['findings', 'memories', 'searchArchive', 'sessionIngest']));
  registerUsage(app, give(['broker'], ['db']));
  registerLanes(app, give(['lanes']));
  registerGovernance(app, give(['gatewayConfig']));
  registerPools(app, give(['pools']));
  registerApprovalChannels(app, give(['approvalDelivery']));
  registerSwarms(app, give(['swarms'], ['db']));
  registerDocs(app);
  // Last: the console's SPA fallback answers any GET no route above took (never /api/).
  registerWeb(app);
  return app;
}
