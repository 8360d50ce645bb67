import { copyFile, mkdir, rename, rm, stat } from 'node:fs/promises';
import path from 'node:path';
import { checkKey, ObjectMissingError, type ObjectStore } from './types.ts';

/** Backups as files below one directory (CLAWPLANE_BACKUP_DIR); written to a temp name, then renamed. */
export class FsObjectStore implements ObjectStore {
  readonly kind = 'fs';
  readonly dir: string;

  constructor(dir: string) {
    this.dir = path.resolve(dir);
  }

  #path(key: string): string {
    return path.join(this.dir, checkKey(key));
  }

  async put(key: string, file: string): Promise<number> {
    const dest = this.#path(key);
    await mkdir(path.dirname(dest), { recursive: true, mode: 0o700 });
    const tmp = `${dest}.${process.pid}.tmp`;
    await copyFile(file, tmp);
    await rename(tmp, dest);
    return (await stat(dest)).size;
  }

  async get(key: string, file: string): Promise<void> {
    try {
      await copyFile(this.#path(key), file);
    } catch (err) {
      if ((err as NodeJS.ErrnoException).code === 'ENOENT') throw new ObjectMissingError(key, err);
      throw err;
    }
  }

  async delete(key: string): Promise<void> {
    await rm(this.#path(key), { force: true });
  }
}
