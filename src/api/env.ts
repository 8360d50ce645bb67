import type { Logger } from 'pino';
import type { TenantRef } from '../identity/authz.ts';
import type { Principal, TenantRole } from '../identity/principal.ts';

/** Per-request variables every handler can read with `c.get(...)`. */
export interface AppEnv {
  Variables: {
    requestId: string;
    log: Logger;
    /** Who is calling; undefined when anonymous. */
    principal: Principal | undefined;
    /** The tenant named in the path, once the tenant middleware resolved it and the caller may see it. */
    tenant: TenantRef | undefined;
    /** The caller's role in that tenant (users: membership; tokens: the token's role). */
    role: TenantRole | undefined;
  };
}
