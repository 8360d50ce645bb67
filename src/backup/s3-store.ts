import { createReadStream, createWriteStream } from 'node:fs';
import { stat } from 'node:fs/promises';
import { Readable } from 'node:stream';
import { pipeline } from 'node:stream/promises';
import { DeleteObjectCommand, GetObjectCommand, NoSuchKey, PutObjectCommand, S3Client } from '@aws-sdk/client-s3';
import { checkKey, ObjectMissingError, type ObjectStore } from './types.ts';

export interface S3StoreOptions {
  /** e.g. https://s3.eu-west-1.amazonaws.com or http://minio.internal:9000; empty: AWS's default for the region. */
  endpoint: string;
  region: string;
  bucket: string;
  /** Prepended to every key, e.g. "clawplane/backups/". */
  prefix: string;
  accessKeyId: string;
  secretAccessKey: string;
  /** Path-style URLs (bucket in the path): what MinIO and most self-hosted S3 servers want. */
  forcePathStyle: boolean;
}

/** Backups in an S3-compatible bucket through the AWS SDK (CLAWPLANE_BACKUP_STORE=s3). */
export class S3ObjectStore implements ObjectStore {
  readonly kind = 's3';
  readonly #client: S3Client;
  readonly #o: S3StoreOptions;

  constructor(opts: S3StoreOptions) {
    this.#o = opts;
    this.#client = new S3Client({
      region: opts.region,
      ...(opts.endpoint ? { endpoint: opts.endpoint } : {}),
      forcePathStyle: opts.forcePathStyle,
      // Checksums only where S3 requires them: the SDK's default aws-chunked CRC uploads are not understood
      // by every S3-compatible server (s3rver stored the chunk framing as the object's bytes).
      requestChecksumCalculation: 'WHEN_REQUIRED',
      responseChecksumValidation: 'WHEN_REQUIRED',
      credentials: { accessKeyId: opts.accessKeyId, secretAccessKey: opts.secretAccessKey },
    });
  }

  #key(key: string): string {
    return this.#o.prefix + checkKey(key);
  }

  async put(key: string, file: string): Promise<number> {
    const size = (await stat(file)).size;
    // A file stream with a known length: the SDK streams it (no buffering of the whole backup).
    await this.#client.send(
      new PutObjectCommand({
        Bucket: this.#o.bucket,
        Key: this.#key(key),
        Body: createReadStream(file),
        ContentLength: size,
        ContentType: 'application/octet-stream',
      }),
    );
    return size;
  }

  async get(key: string, file: string): Promise<void> {
    try {
      const r = await this.#client.send(new GetObjectCommand({ Bucket: this.#o.bucket, Key: this.#key(key) }));
      if (!(r.Body instanceof Readable)) throw new Error('the S3 response has no readable body');
      await pipeline(r.Body, createWriteStream(file, { mode: 0o600 }));
    } catch (err) {
      if (err instanceof NoSuchKey || (err as { name?: string }).name === 'NoSuchKey') throw new ObjectMissingError(key, err);
      throw err;
    }
  }

  async delete(key: string): Promise<void> {
    await this.#client.send(new DeleteObjectCommand({ Bucket: this.#o.bucket, Key: this.#key(key) }));
  }

  close(): void {
    this.#client.destroy();
  }
}
