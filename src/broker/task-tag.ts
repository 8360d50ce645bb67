/**
 * Which task a model call belongs to, carried through the gateway (docs/adr/0009-replica-coordination.md,
 * "Usage by task").
 *
 * OpenClaw's HTTP chat endpoint does not pass request headers on to the provider call, and the session
 * id it sends (`session_id`, with `compat.sendSessionAffinityHeaders`) is its own, unknown to the task.
 * What it does pass on is the request's system text (OpenAI-compatible `system` messages become the run's
 * extra system prompt, present in every model call of that run, tool loops included). So a task turn
 * sends one system line, `[clawplane-task <taskId> <mac>]`; the broker finds it in the system messages,
 * checks the MAC, attributes the call to the task and removes the line before the provider sees it.
 *
 * The MAC (HMAC-SHA256 under a key derived from CLAWPLANE_SECRET_KEY, bound to the tenant) means a chat
 * client or an agent cannot attribute its calls to a task, not even one of its own tenant's: a forged or
 * copied-to-another-tenant tag is ignored (and still removed). Every replica derives the same key.
 */
import { createHmac, hkdfSync, timingSafeEqual } from 'node:crypto';

const TAG = /\[clawplane-task ([0-9a-f-]{36}) ([A-Za-z0-9_-]{22})\]\n?/g;

export class TaskTags {
  readonly #key: Buffer;

  constructor(secret: Buffer) {
    this.#key = Buffer.from(hkdfSync('sha256', secret, 'clawplane/task-tag', 'clawplane/task-tag/v1', 32));
  }

  /** The system line a task turn sends to its gateway. */
  tag(tenantId: string, taskId: string): string {
    return `[clawplane-task ${taskId} ${this.#mac(tenantId, taskId)}]`;
  }

  /**
   * Removes every task tag from the system messages of an OpenAI (`messages`) or Anthropic (`system`)
   * request body, in place; returns the task of the first tag whose MAC is valid for this tenant.
   */
  take(tenantId: string, body: Record<string, unknown>): string | null {
    let found: string | null = null;
    const strip = (text: string): string => {
      if (!text.includes('[clawplane-task ')) return text;
      return text.replace(TAG, (_m, taskId: string, mac: string) => {
        if (found === null && this.#valid(tenantId, taskId, mac)) found = taskId;
        return '';
      });
    };
    const stripContent = (content: unknown): unknown => {
      if (typeof content === 'string') return strip(content);
      if (Array.isArray(content)) return content.map((p: unknown) => (isRecord(p) && typeof p['text'] === 'string' ? { ...p, text: strip(p['text']) } : p));
      return content;
    };
    if (Array.isArray(body['messages'])) {
      body['messages'] = body['messages'].map((m: unknown) =>
        isRecord(m) && (m['role'] === 'system' || m['role'] === 'developer') ? { ...m, content: stripContent(m['content']) } : m,
      );
    }
    if (body['system'] !== undefined) body['system'] = stripContent(body['system']);
    return found;
  }

  #mac(tenantId: string, taskId: string): string {
    return createHmac('sha256', this.#key).update(`${tenantId}\n${taskId}`).digest('base64url').slice(0, 22);
  }

  #valid(tenantId: string, taskId: string, mac: string): boolean {
    const want = Buffer.from(this.#mac(tenantId, taskId));
    const got = Buffer.from(mac);
    return got.length === want.length && timingSafeEqual(got, want);
  }
}

function isRecord(v: unknown): v is Record<string, unknown> {
  return typeof v === 'object' && v !== null && !Array.isArray(v);
}
