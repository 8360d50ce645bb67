/**
 * The backup object stores and backup encryption (issue 7), without a gateway: the filesystem store,
 * and the S3 store through the real AWS SDK against s3rver (an S3-compatible server from npm that runs
 * here; no MinIO binary can be installed from npm or Debian on this machine).
 */
import assert from 'node:assert/strict';
import { randomBytes } from 'node:crypto';
import { mkdtemp, readFile, rm, writeFile } from 'node:fs/promises';
import type { AddressInfo } from 'node:net';
import os from 'node:os';
import path from 'node:path';
import { after, describe, test } from 'node:test';
import S3rver from 's3rver';
import { decryptFile, encryptFile } from '../src/backup/crypto.ts';
import { FsObjectStore } from '../src/backup/fs-store.ts';
import { S3ObjectStore } from '../src/backup/s3-store.ts';
import { ObjectMissingError, type ObjectStore } from '../src/backup/types.ts';

describe('backup stores and encryption', async () => {
  const dir = await mkdtemp(path.join(os.tmpdir(), 'clawplane-backup-store-'));
  after(() => rm(dir, { recursive: true, force: true }));
  const s3rver = new S3rver({
    port: 0,
    address: '127.0.0.1',
    silent: true,
    directory: path.join(dir, 's3'),
    configureBuckets: [{ name: 'backups', configs: [] }],
  });
  const addr = (await s3rver.run()) as AddressInfo;
  after(() => s3rver.close());
  const s3 = new S3ObjectStore({
    endpoint: `http://127.0.0.1:${addr.port}`,
    region: 'us-east-1',
    bucket: 'backups',
    prefix: 'clawplane/',
    accessKeyId: 'S3RVER',
    secretAccessKey: 'S3RVER',
    forcePathStyle: true,
  });
  after(() => s3.close());
  const stores: ObjectStore[] = [new FsObjectStore(path.join(dir, 'fs')), s3];

  for (const store of stores) {
    test(`${store.kind}: put, get, delete a 3 MiB object; a missing one says so`, async () => {
      const src = path.join(dir, `${store.kind}.src`);
      const data = randomBytes(3 << 20);
      await writeFile(src, data);
      const key = 'tenant-1/instance-1/backup-1.cpbk';
      assert.equal(await store.put(key, src), data.length);
      const back = path.join(dir, `${store.kind}.back`);
      await store.get(key, back);
      assert.ok((await readFile(back)).equals(data));
      await store.delete(key);
      await assert.rejects(store.get(key, back), ObjectMissingError);
      await store.delete(key); // idempotent
      await assert.rejects(store.put('../escape', src), /invalid object key/);
    });
  }

  test('encryption: round trip under the tenant key; a flipped byte, another backup id or another key is refused', async () => {
    const key = randomBytes(32);
    const plain = path.join(dir, 'plain');
    await writeFile(plain, randomBytes(200_000));
    const enc = path.join(dir, 'enc');
    const sha = await encryptFile(key, 'tenant-a', 'b1', plain, enc);
    const out = path.join(dir, 'out');
    await decryptFile(key, 'tenant-a', 'b1', enc, out, sha);
    assert.ok((await readFile(out)).equals(await readFile(plain)));
    await assert.rejects(decryptFile(key, 'tenant-a', 'b2', enc, out, sha), { code: 'backup_corrupted' });
    await assert.rejects(decryptFile(key, 'tenant-b', 'b1', enc, out, sha), { code: 'backup_corrupted' });
    await assert.rejects(decryptFile(randomBytes(32), 'tenant-a', 'b1', enc, out, sha), { code: 'backup_corrupted' });
    const buf = await readFile(enc);
    buf[1000] = (buf[1000] ?? 0) ^ 1;
    await writeFile(enc, buf);
    await assert.rejects(decryptFile(key, 'tenant-a', 'b1', enc, out, sha), /encryption tag does not verify/);
    await writeFile(enc, buf.subarray(0, 10));
    await assert.rejects(decryptFile(key, 'tenant-a', 'b1', enc, out, sha), /truncated/);
  });
});
