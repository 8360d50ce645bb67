import path from 'node:path';
import { fileURLToPath } from 'node:url';

/** The committed description of the schema the migration files produce (see schema-snapshot.ts). */
export const SNAPSHOT_FILE = path.join(path.dirname(fileURLToPath(import.meta.url)), 'schema.snapshot.txt');
