import { z } from 'zod';
import { ValidationError } from '../errors.ts';
import type { CredentialType } from './credentials.ts';

/**
 * What each skill needs to connect (issue 4), as data: the same definition builds the zod schema that
 * validates input and the JSON description the UI renders a form from, so the two cannot disagree.
 * Secret fields become credentials (one per field); the other fields are stored beside them as
 * non-secret metadata.
 */

export interface SkillField {
  /** Key in the input object, e.g. `bot_token`. */
  name: string;
  label: string;
  /** `secret`: write-only, stored encrypted; `text`: a plain setting; `list`: several plain values. */
  type: 'secret' | 'text' | 'list';
  /** How a secret field is stored; required for `secret` fields. */
  credentialType?: CredentialType;
  required: boolean;
  help?: string;
  /** A regular expression (source) every value must match; the UI may check it before sending. */
  pattern?: string;
  /** What a matching value looks like, for the error message ("starts with xoxb-"). */
  patternHint?: string;
}

export interface SkillDefinition {
  /** Stable id: the `skill` column of its credentials. */
  id: string;
  label: string;
  description: string;
  fields: readonly SkillField[];
}

/** A field as the UI receives it: the definition plus an explicit `secret` flag. */
export type SkillFieldDescription = SkillField & { secret: boolean };
export interface SkillDescription extends Omit<SkillDefinition, 'fields'> {
  fields: SkillFieldDescription[];
}

export interface ParsedSkillInput {
  skill: string;
  secrets: { field: string; credentialType: CredentialType; value: string }[];
  settings: Record<string, string | string[]>;
}

const ID = /^[a-z0-9][a-z0-9_-]{0,49}$/;
const FIELD = /^[a-z][a-z0-9_]{0,39}$/;
const MAX_VALUE = 8192;

export const BUILTIN_SKILLS: readonly SkillDefinition[] = [
  {
    id: 'slack',
    label: 'Slack',
    description: 'Post and read messages as a Slack app.',
    fields: [
      {
        name: 'bot_token',
        label: 'Bot token',
        type: 'secret',
        credentialType: 'bot_token',
        required: true,
        pattern: '^xoxb-[A-Za-z0-9-]{10,}$',
        patternHint: 'starts with xoxb-',
        help: 'OAuth & Permissions → Bot User OAuth Token.',
      },
      {
        name: 'signing_secret',
        label: 'Signing secret',
        type: 'secret',
        credentialType: 'secret',
        required: false,
        pattern: '^[a-f0-9]{32}$',
        patternHint: '32 hexadecimal characters',
        help: 'Basic Information → App Credentials; needed to receive events.',
      },
    ],
  },
  {
    id: 'github',
    label: 'GitHub',
    description: 'Read and change repositories with a personal access token.',
    fields: [
      {
        name: 'pat',
        label: 'Personal access token',
        type: 'secret',
        credentialType: 'pat',
        required: true,
        pattern: '^(ghp_[A-Za-z0-9]{30,}|github_pat_[A-Za-z0-9_]{22,})$',
        patternHint: 'starts with ghp_ or github_pat_',
      },
      {
        name: 'scopes',
        label: 'Scopes',
        type: 'list',
        required: true,
        pattern: '^[a-z][a-z_:]{1,39}$',
        patternHint: 'a GitHub scope such as repo or read:org',
        help: 'The scopes the token was granted; tools needing others are refused.',
      },
    ],
  },
  {
    id: 'telegram',
    label: 'Telegram',
    description: 'Chat through a Telegram bot.',
    fields: [
      {
        name: 'bot_token',
        label: 'Bot token',
        type: 'secret',
        credentialType: 'bot_token',
        required: true,
        pattern: '^[0-9]{5,}:[A-Za-z0-9_-]{30,}$',
        patternHint: 'the form 123456:ABC… from @BotFather',
      },
    ],
  },
  {
    id: 'notion',
    label: 'Notion',
    description: 'Read and write pages shared with a Notion integration.',
    fields: [
      {
        name: 'api_key',
        label: 'Integration secret',
        type: 'secret',
        credentialType: 'api_key',
        required: true,
        pattern: '^(secret_|ntn_)[A-Za-z0-9]{20,}$',
        patternHint: 'starts with ntn_ or secret_',
      },
    ],
  },
  {
    id: 'gmail',
    label: 'Gmail',
    description: 'Read and send mail with an OAuth token.',
    fields: [
      {
        name: 'oauth_token',
        label: 'OAuth token',
        type: 'secret',
        credentialType: 'oauth_token',
        required: true,
        pattern: '^\\S{20,}$',
        patternHint: 'at least 20 characters, no spaces',
      },
    ],
  },
  {
    id: 'whatsapp',
    label: 'WhatsApp',
    description: 'Send and receive messages through the WhatsApp Cloud API.',
    fields: [
      {
        name: 'api_key',
        label: 'Access token',
        type: 'secret',
        credentialType: 'api_key',
        required: true,
        pattern: '^\\S{20,}$',
        patternHint: 'at least 20 characters, no spaces',
      },
      {
        name: 'phone_number_id',
        label: 'Phone number ID',
        type: 'text',
        required: true,
        pattern: '^[0-9]{6,20}$',
        patternHint: 'the numeric id from WhatsApp Manager',
      },
    ],
  },
];

function fieldSchema(f: SkillField): z.ZodType {
  let s = z.string().min(1, 'is required').max(MAX_VALUE, `must be at most ${MAX_VALUE} characters`);
  // The message names the expected shape, never the value: a rejected secret must not be echoed.
  if (f.pattern) s = s.regex(new RegExp(f.pattern), `does not look right: expected ${f.patternHint ?? 'a different format'}`);
  const value = f.type === 'list' ? z.array(s).min(1, 'needs at least one value').max(100) : s;
  return f.required ? value : value.optional();
}

export class SkillRegistry {
  readonly #defs = new Map<string, { def: SkillDefinition; schema: z.ZodType }>();

  /** Adds a skill; throws if the id is taken or the definition is malformed (a programming error). */
  register(def: SkillDefinition): void {
    if (!ID.test(def.id)) throw new Error(`Skill id "${def.id}" must match ${ID.source}`);
    if (this.#defs.has(def.id)) throw new Error(`Skill "${def.id}" is already registered`);
    const names = new Set<string>();
    for (const f of def.fields) {
      if (!FIELD.test(f.name) || names.has(f.name)) throw new Error(`Skill "${def.id}": field "${f.name}" is invalid or repeated`);
      if ((f.type === 'secret') !== (f.credentialType !== undefined)) {
        throw new Error(`Skill "${def.id}": field "${f.name}" must have a credentialType exactly when it is a secret`);
      }
      if (f.pattern) new RegExp(f.pattern); // fail at registration, not on a user's input
      names.add(f.name);
    }
    if (!def.fields.some((f) => f.type === 'secret')) throw new Error(`Skill "${def.id}" needs at least one secret field`);
    const schema = z.strictObject(Object.fromEntries(def.fields.map((f) => [f.name, fieldSchema(f)])));
    this.#defs.set(def.id, { def: structuredClone(def), schema });
  }

  has(id: string): boolean {
    return this.#defs.has(id);
  }

  /** The JSON description of every skill, for the UI's forms. */
  describe(): SkillDescription[] {
    return [...this.#defs.values()].map(({ def }) => ({
      ...structuredClone(def),
      fields: def.fields.map((f) => ({ ...f, secret: f.type === 'secret' })),
    }));
  }

  /** Validates a form submission; throws ValidationError naming each bad field (never its value). */
  parse(id: string, input: unknown): ParsedSkillInput {
    const entry = this.#defs.get(id);
    if (!entry) {
      throw new ValidationError(`Unknown skill "${id}". Known skills: ${[...this.#defs.keys()].join(', ')}.`, [
        { path: 'skill', message: 'is not a known skill' },
      ]);
    }
    const r = entry.schema.safeParse(input);
    if (!r.success) {
      const issues = r.error.issues.map((i) => ({ path: i.path.map(String).join('.') || '(input)', message: i.message }));
      throw new ValidationError(`The ${entry.def.label} settings are invalid: ${issues.map((i) => `${i.path} ${i.message}`).join('; ')}.`, issues);
    }
    const values = r.data as Record<string, string | string[] | undefined>;
    const out: ParsedSkillInput = { skill: id, secrets: [], settings: {} };
    for (const f of entry.def.fields) {
      const v = values[f.name];
      if (v === undefined) continue;
      if (f.type === 'secret' && f.credentialType && typeof v === 'string') out.secrets.push({ field: f.name, credentialType: f.credentialType, value: v });
      else out.settings[f.name] = v;
    }
    return out;
  }
}

/** A registry holding the built-in skills; register more with `registry.register(def)`. */
export function createSkillRegistry(extra: readonly SkillDefinition[] = []): SkillRegistry {
  const registry = new SkillRegistry();
  for (const def of [...BUILTIN_SKILLS, ...extra]) registry.register(def);
  return registry;
}
