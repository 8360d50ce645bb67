/**
 * The master-key port (issue 4). The vault wraps each tenant's data key with a KeyProvider; today the
 * local provider derives the master key from CLAWPLANE_SECRET_KEY, later a KMS or Vault Transit can
 * implement the same interface so the master key never enters Clawplane's memory.
 */

/** A data key encrypted under one master key version. Stored beside the data it protects. */
export interface WrappedKey {
  /** Which master key: `local`, a KMS key ARN, a Transit key name. */
  keyId: string;
  version: number;
  ciphertext: Buffer;
  /** AES-GCM nonce and tag; a provider whose ciphertext is self-contained stores empty buffers. */
  iv: Buffer;
  tag: Buffer;
}

export interface KeyVersionInfo {
  version: number;
  current: boolean;
  createdAt: Date;
}

export interface KeyProvider {
  /** Stable id of the master key this provider manages. */
  readonly keyId: string;
  /** The version `wrap` uses now; creates version 1 on first use. */
  currentVersion(): Promise<number>;
  /** Every version that still exists, oldest first. */
  listVersions(): Promise<KeyVersionInfo[]>;
  /** Makes a new version current and returns it; older versions keep unwrapping. */
  createVersion(): Promise<number>;
  /** Encrypts a data key under the current version, bound to `aad` (the owner's context). */
  wrap(dataKey: Buffer, aad: Buffer): Promise<WrappedKey>;
  /** Decrypts under the version named in `wrapped`; fails unless `aad` is the one used to wrap. */
  unwrap(wrapped: WrappedKey, aad: Buffer): Promise<Buffer>;
}

/**
 * Where a provider that cannot keep versions itself (the local one) records them. The master key is
 * never stored: only which versions exist, which is current, and a check value per version.
 */
export interface KeyVersionStore {
  list(keyId: string): Promise<(KeyVersionInfo & { checkValue: string })[]>;
  /**
   * Atomically adds version max+1 as current and returns it. With `onlyIfNone`, returns the existing
   * current version instead when there is one (so concurrent first starts agree on version 1).
   */
  createNext(keyId: string, checkValue: (version: number) => string, opts?: { onlyIfNone?: boolean }): Promise<number>;
}
