import { createCipheriv, createDecipheriv, randomBytes } from 'node:crypto';
import { ClawplaneError } from '../errors.ts';

/**
 * AES-256-GCM with additional authenticated data (issue 4). The AAD is never stored: each caller
 * rebuilds it from the row the ciphertext sits in, so a ciphertext copied to another row, tenant or
 * version fails authentication instead of decrypting.
 */

export const KEY_BYTES = 32;
export const IV_BYTES = 12;
export const TAG_BYTES = 16;

/** Current layout of the AAD tuples below; stored per row so the layout can change later. */
export const AAD_VERSION = 1;

export interface Sealed {
  ciphertext: Buffer;
  iv: Buffer;
  tag: Buffer;
}

/**
 * A ciphertext did not authenticate: wrong key, wrong context or tampered bytes. Deliberately says
 * nothing about which, and is a 500: the stored data or the master key is wrong, not the request.
 */
export class DecryptionError extends ClawplaneError {
  constructor(what: string, cause?: unknown) {
    super(
      'vault_decrypt_failed',
      500,
      `${what} could not be decrypted: the stored ciphertext does not match its key or context. ` +
        'If CLAWPLANE_SECRET_KEY changed, restore the previous key; otherwise the row was altered and the secret must be re-entered.',
      { cause },
    );
  }
}

export function newDataKey(): Buffer {
  return randomBytes(KEY_BYTES);
}

export function seal(key: Buffer, plaintext: Buffer, aad: Buffer): Sealed {
  if (key.length !== KEY_BYTES) throw new RangeError(`AES-256-GCM needs a ${KEY_BYTES}-byte key`);
  // A random 96-bit nonce per message: safe for far more messages than one key ever seals here.
  const iv = randomBytes(IV_BYTES);
  const cipher = createCipheriv('aes-256-gcm', key, iv, { authTagLength: TAG_BYTES });
  cipher.setAAD(aad);
  const ciphertext = Buffer.concat([cipher.update(plaintext), cipher.final()]);
  return { ciphertext, iv, tag: cipher.getAuthTag() };
}

/** Decrypts or throws DecryptionError; `what` names the thing for the message ("Credential"). */
export function open(key: Buffer, sealed: Sealed, aad: Buffer, what = 'A secret'): Buffer {
  // Wrong lengths would make node:crypto throw a RangeError or, for a short tag, accept a truncated one.
  if (key.length !== KEY_BYTES || sealed.iv.length !== IV_BYTES || sealed.tag.length !== TAG_BYTES) {
    throw new DecryptionError(what);
  }
  try {
    const decipher = createDecipheriv('aes-256-gcm', key, sealed.iv, { authTagLength: TAG_BYTES });
    decipher.setAAD(aad);
    decipher.setAuthTag(sealed.tag);
    return Buffer.concat([decipher.update(sealed.ciphertext), decipher.final()]);
  } catch (err) {
    throw new DecryptionError(what, err);
  }
}

// JSON of an array of strings and numbers is an unambiguous encoding: no separator can be smuggled
// inside a field to make two different tuples serialise alike.
function tuple(...parts: (string | number)[]): Buffer {
  return Buffer.from(JSON.stringify(parts), 'utf8');
}

/** Binds a credential's ciphertext to its tenant, id and value version. */
export function credentialAad(tenantId: string, credentialId: string, version: number): Buffer {
  return tuple('clawplane/credential', AAD_VERSION, tenantId, credentialId, version);
}

/** Binds a wrapped tenant data key to its tenant (the provider adds its key id and version). */
export function tenantKeyAad(tenantId: string): Buffer {
  return tuple('clawplane/tenant-dek', AAD_VERSION, tenantId);
}

/** Binds a platform secret's ciphertext to its name and version. */
export function platformSecretAad(name: string, version: number): Buffer {
  return tuple('clawplane/platform-secret', AAD_VERSION, name, version);
}

/** Binds a platform secret's own data key to its name. */
export function platformKeyAad(name: string): Buffer {
  return tuple('clawplane/platform-dek', AAD_VERSION, name);
}

/** AAD a master key provider uses when wrapping: the caller's context plus which key and version. */
export function wrapAad(keyId: string, version: number, context: Buffer): Buffer {
  return Buffer.concat([tuple('clawplane/wrap', keyId, version), Buffer.from([0]), context]);
}
