import { createHash, randomBytes } from 'node:crypto';

/** API tokens and session ids: 256-bit random, recognisable prefix, only the SHA-256 is stored (issue 3). */
export const API_TOKEN_PREFIX = 'cpt_';

export function newSecret(prefix = ''): string {
  return prefix + randomBytes(32).toString('base64url');
}

export function sha256(text: string): string {
  return createHash('sha256').update(text).digest('hex');
}

/** What a list shows of a token: enough to recognise it, useless to use. */
export function tokenDisplay(token: string): string {
  return `${token.slice(0, API_TOKEN_PREFIX.length + 6)}…`;
}
