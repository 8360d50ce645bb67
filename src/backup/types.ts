/**
 * The object-store port for backups (issue 7): one interface, one file per implementation
 * (`fs-store.ts`: a directory, the default; `s3-store.ts`: any S3-compatible service). Objects are
 * moved as files so a large backup never sits in memory; what is stored is already encrypted.
 */
export interface ObjectStore {
  /** "fs" or "s3", for logs and the CLI. */
  readonly kind: string;
  /** Uploads the file at `file` as `key`; resolves to the stored size in bytes. */
  put(key: string, file: string): Promise<number>;
  /** Downloads `key` into `file`. Throws ObjectMissingError when there is no such object. */
  get(key: string, file: string): Promise<void>;
  /** Removes `key`; no error when it is already gone. */
  delete(key: string): Promise<void>;
}

/** Object keys are ours (tenant/instance/backup ids), never a caller's text: refuse anything else. */
export const OBJECT_KEY = /^[a-z0-9][a-z0-9/._-]{0,255}$/;

export class ObjectMissingError extends Error {
  constructor(key: string, cause?: unknown) {
    super(`backup object ${key} is missing from the object store`, { cause });
  }
}

export function checkKey(key: string): string {
  if (!OBJECT_KEY.test(key) || key.includes('..')) throw new Error(`invalid object key ${JSON.stringify(key)}`);
  return key;
}
