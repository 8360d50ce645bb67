import { timingSafeEqual } from 'node:crypto';
import { writeFile, rm, mkdir } from 'node:fs/promises';
import path from 'node:path';
import type { Logger } from 'pino';
import { appendAudit } from '../audit/log.ts';
import type { Db } from '../db/pool.ts';
import { ConflictError, ForbiddenError } from '../errors.ts';
import type { Audited } from '../tenancy/tenants.ts';
import type { Vault } from '../vault/vault.ts';
import { getSetting, putSetting } from './settings.ts';
import { newSecret, sha256 } from './tokens.ts';

/** First-boot steps, in order (issue 3). */
export const ONBOARDING_STEPS = ['admin', 'oidc', 'provider', 'defaults'] as const;
export type OnboardingStep = (typeof ONBOARDING_STEPS)[number];
export type StepStatus = 'pending' | 'done' | 'skipped';

export interface OnboardingState {
  complete: boolean;
  steps: { name: OnboardingStep; status: StepStatus }[];
  /** The step to do next, or null when complete. */
  next: OnboardingStep | null;
  /** What to do next, in words. */
  hint: string;
}

interface Stored {
  steps: Partial<Record<OnboardingStep, StepStatus>>;
  completedAt?: string;
}

const HINTS: Record<OnboardingStep, string> = {
  admin:
    'Create the breakglass admin: POST /api/v1/onboarding/admin with {email, password, setupCode}. The setup code is in the file "setup-code" in the data directory.',
  oidc: 'Configure single sign-on, or skip it: POST /api/v1/onboarding/oidc with the provider settings or {"skip": true}.',
  provider: 'Add the first LLM provider, or skip it for now: POST /api/v1/onboarding/provider.',
  defaults: 'Set the default agent settings: POST /api/v1/onboarding/defaults.',
};

export const SETUP_CODE_FILE = 'setup-code';
/** The setup code, sealed, so every replica writes the same one into its data directory. */
const SETUP_CODE_SECRET = 'onboarding.setup-code';

/** Default settings new tenants' agents start from. */
export interface AgentDefaults {
  agentName: string;
  defaultModel: string | null;
  execPolicy: 'deny' | 'ask';
  idleTimeoutMinutes: number;
}

export class OnboardingService {
  private readonly db: Db;
  private readonly dataDir: string;
  private readonly vault: Vault;
  private completeCache = false;

  constructor(db: Db, dataDir: string, vault: Vault) {
    this.db = db;
    this.dataDir = dataDir;
    this.vault = vault;
  }

  async state(): Promise<OnboardingState> {
    const s = (await getSetting<Stored>(this.db, 'onboarding')) ?? { steps: {} };
    const steps = ONBOARDING_STEPS.map((name) => ({ name, status: s.steps[name] ?? ('pending' as StepStatus) }));
    const next = steps.find((x) => x.status === 'pending')?.name ?? null;
    const complete = next === null;
    if (complete) this.completeCache = true;
    return { complete, steps, next, hint: next ? HINTS[next] : 'Onboarding is complete.' };
  }

  /** Cheap check for the gate in front of every other route; completion never reverts. */
  async isComplete(): Promise<boolean> {
    if (this.completeCache) return true;
    return (await this.state()).complete;
  }

  /** Throws unless `step` is the next one (or an already finished later step being redone). */
  async expect(step: OnboardingStep): Promise<void> {
    const st = await this.state();
    if (st.complete) throw new ConflictError('Onboarding is already complete. Change these settings from the admin pages instead.', 'onboarding_complete');
    const idx = ONBOARDING_STEPS.indexOf(step);
    const nextIdx = st.next === null ? ONBOARDING_STEPS.length : ONBOARDING_STEPS.indexOf(st.next);
    if (idx > nextIdx) throw new ConflictError(`Onboarding step "${step}" comes later. ${st.hint}`, 'onboarding_out_of_order');
  }

  async mark(step: OnboardingStep, status: Exclude<StepStatus, 'pending'>, by: Audited): Promise<OnboardingState> {
    await this.db.tx(async (tx) => {
      const s = (await getSetting<Stored>(tx, 'onboarding')) ?? { steps: {} };
      s.steps[step] = status;
      if (ONBOARDING_STEPS.every((n) => s.steps[n] && s.steps[n] !== 'pending')) s.completedAt = new Date().toISOString();
      await putSetting(tx, 'onboarding', s);
      await appendAudit(tx, { actor: by.actor, action: `onboarding.${step}`, decision: status, requestId: by.requestId ?? null });
      if (s.completedAt) await appendAudit(tx, { actor: by.actor, action: 'onboarding.complete', decision: 'success', requestId: by.requestId ?? null });
    });
    return this.state();
  }

  /**
   * While no admin exists, a one-time setup code (written to the data directory, mode 0600) is required to
   * create it, so whoever first reaches an exposed port cannot claim the platform. Logs name the file,
   * never the code. One code for the platform: the first replica to start seals it in the vault and every
   * replica (and restart) writes that same code, so it works whichever replica the admin reaches.
   */
  async prepareSetupCode(log: Logger): Promise<void> {
    const st = await this.state();
    const file = path.join(this.dataDir, SETUP_CODE_FILE);
    if (st.steps[0]?.status !== 'pending') {
      await rm(file, { force: true });
      return;
    }
    const code = await this.vault.platformSecretOnce(SETUP_CODE_SECRET, () => newSecret().slice(0, 24));
    await mkdir(this.dataDir, { recursive: true, mode: 0o711 });
    await writeFile(file, code + '\n', { mode: 0o600 });
    await putSetting(this.db, 'setup_code', { hash: sha256(code) });
    log.warn({ file }, 'first boot: open the onboarding wizard and enter the setup code from this file to create the admin');
  }

  async checkSetupCode(code: string): Promise<void> {
    const s = await getSetting<{ hash: string }>(this.db, 'setup_code');
    const a = Buffer.from(sha256(code));
    const b = Buffer.from(s?.hash ?? '');
    if (!s || a.length !== b.length || !timingSafeEqual(a, b)) {
      throw new ForbiddenError(`The setup code is wrong. It is in the file "${SETUP_CODE_FILE}" in Clawplane's data directory on the host.`);
    }
  }

  async finishAdminStep(by: Audited): Promise<OnboardingState> {
    await this.db.query(`DELETE FROM platform_settings WHERE key = 'setup_code'`);
    await this.vault.deletePlatformSecret(SETUP_CODE_SECRET);
    await rm(path.join(this.dataDir, SETUP_CODE_FILE), { force: true });
    return this.mark('admin', 'done', by);
  }

  async agentDefaults(): Promise<AgentDefaults> {
    return (
      (await getSetting<AgentDefaults>(this.db, 'agent_defaults')) ?? { agentName: 'main', defaultModel: null, execPolicy: 'deny', idleTimeoutMinutes: 30 }
    );
  }

  async setAgentDefaults(d: AgentDefaults, by: Audited): Promise<void> {
    await this.db.tx(async (tx) => {
      await putSetting(tx, 'agent_defaults', d);
      await appendAudit(tx, { actor: by.actor, action: 'settings.agent_defaults', decision: 'success', detail: { ...d }, requestId: by.requestId ?? null });
    });
  }
}
