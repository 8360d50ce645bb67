import type { Logger } from 'pino';
import { appendAudit } from '../audit/log.ts';
import type { Upstreams } from '../broker/upstream.ts';
import type { Db } from '../db/pool.ts';
import { NotFoundError, ValidationError } from '../errors.ts';
import type { CredentialService } from '../vault/credentials.ts';

/**
 * Approval requests delivered to a chat the tenant chose (docs/security.md, "Approval links"): task and exec
 * approvals and configuration reviews are posted to Telegram or Slack with the tenant's own bot credential
 * (a `telegram` or `slack` skill credential in the vault), through the broker's guarded way out (SSRF check,
 * pinned address, no redirects). The message carries links to the console page where the decision is made:
 * a link opens the console, which asks for sign-in; it never decides by itself, so a forwarded or leaked
 * message grants nothing. The signed webhook (src/tasks/webhook.ts) stays as it was.
 *
 * The bot token never leaves this module: it is decrypted for one request, sent in the Authorization header
 * (Slack) or the request path (Telegram's bot API has no other way), never logged, audited or traced (the
 * span shows a path without it), and a failure is reported by its HTTP status or error code only.
 */

export const CHANNEL_KINDS = ['telegram', 'slack'] as const;
export type ChannelKind = (typeof CHANNEL_KINDS)[number];

export interface ApprovalChannel {
  kind: ChannelKind;
  /** The tenant's skill credential holding the bot token. */
  credentialId: string;
  /** Telegram chat id, or Slack channel id. */
  target: string;
  updatedBy: string;
  updatedAt: string;
}

/** What is waiting for a decision, and where in the console it is decided. */
export interface ApprovalNotice {
  kind: 'task' | 'exec' | 'config';
  /** The approval id, or the configuration version number. */
  id: string;
  /** One line: what asks and for what. */
  summary: string;
}

/** Sends approval notices to the tenant's chats (what the task and configuration services are given). */
export interface ApprovalChat {
  deliver(tenantId: string, notice: ApprovalNotice): Promise<unknown>;
}

export interface ChatApis {
  telegram: string;
  slack: string;
}

const TARGET: Record<ChannelKind, RegExp> = {
  // A numeric chat id (negative for groups) or a public @channelusername.
  telegram: /^(-?[0-9]{1,20}|@[A-Za-z][A-Za-z0-9_]{4,31})$/,
  // A Slack conversation id (C…, G…, D…).
  slack: /^[CGD][A-Z0-9]{6,20}$/,
};

export class ApprovalDelivery implements ApprovalChat {
  readonly #db: Db;
  readonly #credentials: CredentialService;
  readonly #upstreams: Upstreams;
  readonly #apis: ChatApis;
  readonly #origin: string;
  readonly #log: Logger;

  constructor(o: { db: Db; credentials: CredentialService; upstreams: Upstreams; apis: ChatApis; publicOrigin: string; log: Logger }) {
    this.#db = o.db;
    this.#credentials = o.credentials;
    this.#upstreams = o.upstreams;
    this.#apis = o.apis;
    this.#origin = o.publicOrigin.replace(/\/+$/, '');
    this.#log = o.log;
  }

  async list(tenantId: string): Promise<ApprovalChannel[]> {
    const r = await this.#db.query<{ kind: ChannelKind; credential_id: string; target: string; updated_by: string; updated_at: Date }>(
      'SELECT kind, credential_id, target, updated_by, updated_at FROM approval_channels WHERE tenant_id = $1 ORDER BY kind',
      [tenantId],
    );
    return r.rows.map((x) => ({
      kind: x.kind,
      credentialId: x.credential_id,
      target: x.target,
      updatedBy: x.updated_by,
      updatedAt: x.updated_at.toISOString(),
    }));
  }

  /** Sets where approvals of `kind` go; the credential must be the tenant's own active skill credential of that kind. */
  async set(
    tenantId: string,
    kind: ChannelKind,
    input: { credentialId: string; target: string },
    by: { actor: string; requestId?: string },
  ): Promise<ApprovalChannel> {
    if (!TARGET[kind].test(input.target)) {
      throw new ValidationError(
        `"${input.target.slice(0, 40)}" is not a ${kind === 'telegram' ? 'Telegram chat id (a number, or @channelname)' : 'Slack channel id (such as C0123456789)'}.`,
        [{ path: 'body.target', message: `not a ${kind} target` }],
      );
    }
    let cred;
    try {
      cred = await this.#credentials.get(tenantId, input.credentialId);
    } catch (err) {
      if (err instanceof NotFoundError)
        throw new ValidationError('No such credential in this tenant: connect the bot on the Credentials page first.', [
          { path: 'body.credentialId', message: 'not a credential of this tenant' },
        ]);
      throw err;
    }
    if (cred.skill !== kind || cred.status !== 'active') {
      throw new ValidationError(
        `Credential "${cred.name}" is not an active ${kind} bot credential: connect the ${kind === 'telegram' ? 'Telegram' : 'Slack'} skill and choose its bot token.`,
        [{ path: 'body.credentialId', message: `not an active ${kind} skill credential` }],
      );
    }
    await this.#db.tx(async (tx) => {
      await tx.query(
        `INSERT INTO approval_channels (tenant_id, kind, credential_id, target, updated_by) VALUES ($1, $2, $3, $4, $5)
         ON CONFLICT (tenant_id, kind) DO UPDATE SET credential_id = EXCLUDED.credential_id, target = EXCLUDED.target, updated_by = EXCLUDED.updated_by, updated_at = now()`,
        [tenantId, kind, cred.id, input.target, by.actor],
      );
      await appendAudit(tx, {
        actor: by.actor,
        tenantId,
        action: 'approval_channel.set',
        target: `approval_channel:${kind}`,
        decision: 'success',
        detail: { kind, credentialId: cred.id, target: input.target },
        requestId: by.requestId ?? null,
      });
    });
    const out = (await this.list(tenantId)).find((c) => c.kind === kind);
    if (!out) throw new Error('approval channel missing after it was set');
    return out;
  }

  async remove(tenantId: string, kind: ChannelKind, by: { actor: string; requestId?: string }): Promise<void> {
    await this.#db.tx(async (tx) => {
      const r = await tx.query('DELETE FROM approval_channels WHERE tenant_id = $1 AND kind = $2', [tenantId, kind]);
      if (r.rowCount === 0) throw new NotFoundError('Approval channel');
      await appendAudit(tx, {
        actor: by.actor,
        tenantId,
        action: 'approval_channel.removed',
        target: `approval_channel:${kind}`,
        decision: 'success',
        detail: { kind },
        requestId: by.requestId ?? null,
      });
    });
  }

  /**
   * Posts `notice` to every channel the tenant set; each outcome is audited (`approval.delivered`). Never
   * throws: a chat being down must not fail the approval (the console and the webhook still have it).
   */
  async deliver(tenantId: string, notice: ApprovalNotice): Promise<{ kind: ChannelKind; ok: boolean }[]> {
    const out: { kind: ChannelKind; ok: boolean }[] = [];
    let channels: ApprovalChannel[];
    try {
      channels = await this.list(tenantId);
    } catch (err) {
      this.#log.warn({ tenant_id: tenantId, err: (err as Error).message }, 'approval delivery: could not read the channels');
      return out;
    }
    for (const ch of channels) {
      let outcome: { ok: boolean; why: string };
      try {
        outcome = await this.#send(tenantId, ch, notice);
      } catch (err) {
        // The request URL may hold the bot token (Telegram): report the error's code, never its message.
        outcome = {
          ok: false,
          why:
            (err as NodeJS.ErrnoException).code ??
            (err instanceof NotFoundError ? 'credential_missing' : err instanceof Error && 'code' in err ? String(err.code) : 'request_failed'),
        };
      }
      out.push({ kind: ch.kind, ok: outcome.ok });
      if (!outcome.ok) this.#log.warn({ tenant_id: tenantId, channel: ch.kind, approval: notice.id, why: outcome.why }, 'approval delivery to chat failed');
      await this.#db
        .tx((tx) =>
          appendAudit(tx, {
            actor: 'system',
            tenantId,
            action: 'approval.delivered',
            target: `approval_channel:${ch.kind}`,
            decision: outcome.ok ? 'success' : 'failure',
            detail: { kind: notice.kind, id: notice.id, channel: ch.kind, ...(outcome.ok ? {} : { why: outcome.why }) },
          }),
        )
        .catch((e: unknown) => this.#log.error({ err: (e as Error).message }, 'audit of an approval delivery failed'));
    }
    return out;
  }

  /** The console page where `notice` is decided (sign-in first); the link carries no token and decides nothing. */
  async link(tenantId: string, notice: ApprovalNotice): Promise<string> {
    const r = await this.#db.query<{ slug: string }>('SELECT slug FROM tenants WHERE id = $1', [tenantId]);
    const slug = encodeURIComponent(r.rows[0]?.slug ?? '');
    const page = notice.kind === 'config' ? `configuration?version=${encodeURIComponent(notice.id)}` : `tasks?approval=${encodeURIComponent(notice.id)}`;
    return `${this.#origin}/tenants/${slug}/${page}`;
  }

  async #send(tenantId: string, ch: ApprovalChannel, notice: ApprovalNotice): Promise<{ ok: boolean; why: string }> {
    const cred = await this.#credentials.decryptForBroker(tenantId, ch.credentialId, { actor: 'system', purpose: `approval-delivery:${ch.kind}` });
    const link = await this.link(tenantId, notice);
    const what = notice.kind === 'config' ? 'A gateway configuration change' : notice.kind === 'exec' ? 'A shell command' : 'A tool use';
    const text = `${what} waits for your decision: ${notice.summary}\nApprove or reject it in Clawplane (sign-in required): ${link}`;
    let url: string;
    let spanPath: string;
    let headers: Record<string, string> = { 'content-type': 'application/json' };
    let body: unknown;
    if (ch.kind === 'telegram') {
      // https://core.telegram.org/bots/api#sendmessage: the token is part of the path.
      url = `${this.#apis.telegram.replace(/\/+$/, '')}/bot${cred.value}/sendMessage`;
      spanPath = '/bot<token>/sendMessage';
      body = { chat_id: ch.target, text, reply_markup: { inline_keyboard: [[{ text: 'Open to approve or reject', url: link }]] } };
    } else {
      // https://api.slack.com/methods/chat.postMessage: bearer token; `ok` in the body says whether it posted.
      url = `${this.#apis.slack.replace(/\/+$/, '')}/chat.postMessage`;
      spanPath = new URL(url).pathname;
      headers = { ...headers, authorization: `Bearer ${cred.value}` };
      body = {
        channel: ch.target,
        text,
        blocks: [
          { type: 'section', text: { type: 'mrkdwn', text: `${what} waits for your decision: ${notice.summary}` } },
          { type: 'actions', elements: [{ type: 'button', text: { type: 'plain_text', text: 'Open to approve or reject' }, url: link }] },
        ],
      };
    }
    const res = await this.#upstreams.request(url, {
      method: 'POST',
      headers,
      body: Buffer.from(JSON.stringify(body)),
      timeoutMs: 15_000,
      signal: AbortSignal.timeout(20_000),
      spanPath,
    });
    const chunks: Buffer[] = [];
    for await (const c of res as AsyncIterable<Buffer>) chunks.push(c);
    const status = res.statusCode ?? 0;
    let answered: { ok?: unknown; error?: unknown; description?: unknown } = {};
    try {
      answered = JSON.parse(Buffer.concat(chunks).toString('utf8')) as typeof answered;
    } catch {
      answered = {};
    }
    if (status >= 200 && status < 300 && answered.ok === true) return { ok: true, why: '' };
    // Both APIs answer {ok:false, error|description}: a short code, kept (never the request).
    const code = typeof answered.error === 'string' ? answered.error : `http_${status}`;
    return { ok: false, why: code.slice(0, 80) };
  }
}
