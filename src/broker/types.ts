/**
 * The contract between the broker (the only way out of a sandbox, issue 5) and the sandbox drivers
 * (issue 6). A sandbox start registers with the broker and gets a short-lived broker token bound to
 * (tenant, instance, sandbox start) and a host-created Unix socket serving the broker's HTTP API
 * (OpenAI-compatible /v1/chat/completions, /v1/responses, /v1/models, /v1/embeddings and
 * Anthropic-compatible /v1/messages). The driver bind-mounts the socket into the sandbox; the in-sandbox
 * supervisor forwards the gateway's model calls to it with `Authorization: Bearer <token>`.
 * Closing the registration revokes the token and removes the socket.
 */
export interface SandboxRegistration {
  /** Absolute host path of the listening Unix socket (in a directory only the host can write). */
  socketPath: string;
  /** The broker token for this sandbox start; never shown to users; revoked by close(). */
  token: string;
  /** Opaque id of this sandbox start (the token's subject). */
  sandboxStartId: string;
  /** Revokes the token and closes the socket. Idempotent. */
  close(): Promise<void>;
}

export interface SandboxBroker {
  /** Registers one sandbox start; the agent name(s) are used for per-agent model routing and budgets. */
  registerSandbox(input: { tenantId: string; instanceId: string; sandboxId: string }): Promise<SandboxRegistration>;
  /**
   * Revokes every other live token of this sandbox start (a credential rotation: the old token may have
   * been registered by another replica, or by this one before a restart). Optional: test brokers may omit it.
   */
  revokeOtherTokens?(registration: SandboxRegistration | null, sandboxId: string): Promise<void>;
}
