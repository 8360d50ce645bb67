import { randomBytes } from 'node:crypto';
import { mkdir, readFile, writeFile, stat } from 'node:fs/promises';
import path from 'node:path';
import type { Logger } from 'pino';
import { ConfigError } from '../errors.ts';
import { decodeKey, type Config } from './schema.ts';

const KEY_FILE = 'secret.key';

/**
 * Fills `config.secretKey`. An explicit CLAWPLANE_SECRET_KEY wins. In embedded mode (no DATABASE_URL)
 * a missing key is generated once into the data directory with mode 0600 and a warning (issue 2): the
 * key protects every tenant's credentials, so losing that file loses them.
 */
export async function resolveSecretKey(config: Config, log: Logger): Promise<Buffer> {
  if (config.secretKey) return config.secretKey;
  if (config.databaseUrl !== undefined) {
    throw new ConfigError('CLAWPLANE_SECRET_KEY is required when DATABASE_URL is set (every process must share it). Fix: openssl rand -base64 32');
  }
  const file = path.join(config.dataDir, KEY_FILE);
  await mkdir(config.dataDir, { recursive: true, mode: 0o711 });
  try {
    const text = await readFile(file, 'utf8');
    const key = decodeKey(text);
    if (!key) throw new ConfigError(`${file} does not hold a valid key (>= 32 bytes, base64 or hex). Restore it from a backup.`);
    const mode = (await stat(file)).mode & 0o777;
    if ((mode & 0o077) !== 0) log.warn({ file, mode: mode.toString(8) }, 'secret key file is readable by other users; chmod 600 it');
    config.secretKey = key;
    return key;
  } catch (err) {
    if ((err as NodeJS.ErrnoException).code !== 'ENOENT') throw err;
  }
  const key = randomBytes(32);
  try {
    await writeFile(file, key.toString('base64') + '\n', { mode: 0o600, flag: 'wx' });
  } catch (err) {
    // Another process created it first: use theirs so both agree.
    if ((err as NodeJS.ErrnoException).code === 'EEXIST') return resolveSecretKey(config, log);
    throw err;
  }
  log.warn({ file }, 'CLAWPLANE_SECRET_KEY is not set: generated a new one. Back this file up; losing it loses every stored credential.');
  config.secretKey = key;
  return key;
}
