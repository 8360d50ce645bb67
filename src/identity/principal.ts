/** Roles inside a tenant, weakest first. Platform admin is a user flag, not a tenant role. */
export const TENANT_ROLES = ['viewer', 'member', 'tenant_admin'] as const;
export type TenantRole = (typeof TENANT_ROLES)[number];

/** Who is calling: a signed-in user (session cookie) or a tenant-scoped API token. */
export type Principal =
  | {
      kind: 'user';
      userId: string;
      email: string;
      platformAdmin: boolean;
      /** SHA-256 of the session id; present for cookie sessions (CSRF applies). */
      sessionHash: string;
      csrfToken: string;
    }
  | {
      kind: 'token';
      tokenId: string;
      tenantId: string;
      role: TenantRole;
      createdBy: string | null;
    };

/** The actor string written to audit rows. */
export function actorOf(p: Principal | undefined): string {
  if (!p) return 'anonymous';
  return p.kind === 'user' ? `user:${p.userId}` : `token:${p.tokenId}`;
}

export function roleAtLeast(have: TenantRole, need: TenantRole): boolean {
  return TENANT_ROLES.indexOf(have) >= TENANT_ROLES.indexOf(need);
}
