/**
 * Backup encryption (issue 7): AES-256-GCM under the tenant's data key (Vault.getOrCreateTenantKey),
 * streamed file to file. The associated data binds an object to its tenant and backup id, so an
 * object swapped for another tenant's (or another backup's) fails to open like a corrupted one.
 * Layout: "CPBK" | version (1) | iv (12) | ciphertext | tag (16).
 */
import { createCipheriv, createDecipheriv, createHash, randomBytes } from 'node:crypto';
import { createReadStream, createWriteStream } from 'node:fs';
import { open, stat } from 'node:fs/promises';
import { Transform } from 'node:stream';
import { pipeline } from 'node:stream/promises';
import { ClawplaneError } from '../errors.ts';

const MAGIC = Buffer.from('CPBK');
const VERSION = 1;
const HEADER = MAGIC.length + 1 + 12;
const TAG = 16;

export class BackupCorruptedError extends ClawplaneError {
  constructor(backupId: string, why: string) {
    super('backup_corrupted', 422, `Backup ${backupId} cannot be used: ${why}. Nothing was changed; restore an earlier backup (GET …/backups lists them).`);
  }
}

function aad(tenantId: string, backupId: string): Buffer {
  return Buffer.from(`clawplane-backup:v${VERSION}:${tenantId}:${backupId}`);
}

/** Encrypts `src` into `dest`; resolves to the SHA-256 (hex) of the plaintext. */
export async function encryptFile(key: Buffer, tenantId: string, backupId: string, src: string, dest: string): Promise<string> {
  const iv = randomBytes(12);
  const cipher = createCipheriv('aes-256-gcm', key, iv);
  cipher.setAAD(aad(tenantId, backupId));
  const hash = createHash('sha256');
  const out = createWriteStream(dest, { mode: 0o600 });
  out.write(Buffer.concat([MAGIC, Buffer.from([VERSION]), iv]));
  const tee = new Transform({
    transform(chunk: Buffer, _e, cb) {
      hash.update(chunk);
      cb(null, chunk);
    },
  });
  await pipeline(createReadStream(src), tee, cipher, out, { end: false });
  await new Promise<void>((resolve, reject) => out.end(cipher.getAuthTag(), (err?: Error | null) => (err ? reject(err) : resolve())));
  return hash.digest('hex');
}

/**
 * Decrypts `src` into `dest` and checks the tag and the plaintext's SHA-256. Throws BackupCorruptedError
 * (and leaves `dest` unusable to the caller) when either fails: nothing may be restored from it.
 */
export async function decryptFile(key: Buffer, tenantId: string, backupId: string, src: string, dest: string, sha256: string): Promise<void> {
  const size = (await stat(src)).size;
  if (size < HEADER + TAG) throw new BackupCorruptedError(backupId, 'the object is truncated');
  const fh = await open(src, 'r');
  const head = Buffer.alloc(HEADER);
  const tag = Buffer.alloc(TAG);
  try {
    await fh.read(head, 0, HEADER, 0);
    await fh.read(tag, 0, TAG, size - TAG);
  } finally {
    await fh.close();
  }
  if (!head.subarray(0, 4).equals(MAGIC) || head[4] !== VERSION) throw new BackupCorruptedError(backupId, 'the object is not a Clawplane backup (bad header)');
  const decipher = createDecipheriv('aes-256-gcm', key, head.subarray(5, HEADER));
  decipher.setAAD(aad(tenantId, backupId));
  decipher.setAuthTag(tag);
  const hash = createHash('sha256');
  const tee = new Transform({
    transform(chunk: Buffer, _e, cb) {
      hash.update(chunk);
      cb(null, chunk);
    },
  });
  try {
    await pipeline(createReadStream(src, { start: HEADER, end: size - TAG - 1 }), decipher, tee, createWriteStream(dest, { mode: 0o600 }));
  } catch (err) {
    if (err instanceof Error && /unable to authenticate|auth/i.test(err.message))
      throw new BackupCorruptedError(backupId, 'its encryption tag does not verify (the object was modified or belongs to another backup)');
    throw err;
  }
  if (hash.digest('hex') !== sha256) throw new BackupCorruptedError(backupId, 'its content does not match the recorded SHA-256');
}
