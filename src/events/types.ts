/**
 * Every event the control plane publishes, by name, with its payload (docs/adr/0009-replica-coordination.md).
 * Payloads carry ids only, never a secret: they travel through PostgreSQL NOTIFY (at most 8000 bytes).
 */
export interface ClawplaneEvents {
  /** A tenant's tool restrictions changed; `tenantId: null` means the baseline (every tenant). */
  'policy.changed': { tenantId: string | null };
  /** The tool registry changed (risk, scopes). */
  'tools.changed': Record<string, never>;
  /** The grant signing key was rotated: cached keys are stale. */
  'grant_keys.changed': Record<string, never>;
  /** An API token was revoked. */
  'api_token.revoked': { tokenId: string };
  /** A sandbox's broker token was revoked (the sandbox stopped). */
  'broker_token.revoked': { id: string };
  /** A credential was revoked, replaced or rotated; `platform` for the platform's default provider key. */
  'credential.changed': { credentialId: string };
  /** Model routes changed for a tenant; `tenantId: null` for every tenant (the platform default provider). */
  'routes.changed': { tenantId: string | null };
  /** A tenant's broker governance (caps, rate limits, egress allow-list) changed. */
  'governance.changed': { tenantId: string };
  /** An instance's gateway token changed (rotation, resume): cached copies are stale. */
  'gateway_token.changed': { instanceId: string };
  /** An instance's desired state changed: its reconciler should look at it. */
  'instance.changed': { instanceId: string };
  /** Knowledge rows were deleted or re-written: replicas drop their in-memory vectors (docs/adr/0007). */
  'knowledge.removed': { tenantId: string; table: 'agent_memories' | 'findings' | 'chat_messages'; ids: string[] };
  /** An approval was decided; the worker holding the task's gateway turn acts on it. */
  'approval.decided': { tenantId: string; taskId: string; approvalId: string; kind: string; decision: 'approved' | 'rejected' | 'expired' };
}

export type EventName = keyof ClawplaneEvents;
