/**
 * What each role runs in a process (src/server/roles.ts): the parts are named in one table, started in order
 * and stopped in reverse, and a part that fails to start leaves nothing of this process running.
 */
import assert from 'node:assert/strict';
import { describe, test } from 'node:test';
import type { Role } from '../src/config/schema.ts';
import { createLogger } from '../src/observability/logger.ts';
import { roleParts, startParts, type RolePart } from '../src/server/roles.ts';
import { startTestServer } from './helpers/server.ts';

const log = createLogger('silent');

describe('starting and stopping the parts of a process', () => {
  test('parts start in order and stop in reverse', async () => {
    const seen: string[] = [];
    const part = (name: string): RolePart => ({ name, start: () => void seen.push(`start ${name}`), stop: async () => void seen.push(`stop ${name}`) });
    const stop = await startParts([part('a'), part('b'), part('c')], log);
    await stop();
    assert.deepEqual(seen, ['start a', 'start b', 'start c', 'stop c', 'stop b', 'stop a']);
    // Stopping twice stops nothing twice (shutdown and a failed start may both call it).
    await stop();
    assert.equal(seen.length, 6);
  });

  test('a part that fails to start stops those already started and the start fails with its error', async () => {
    const seen: string[] = [];
    const ok = (name: string): RolePart => ({ name, start: () => void seen.push(`start ${name}`), stop: () => void seen.push(`stop ${name}`) });
    const broken: RolePart = {
      name: 'reconciler',
      start: () => Promise.reject(new Error('cannot list sandboxes: the Docker API is unreachable')),
      stop: () => void seen.push('stop reconciler'),
    };
    await assert.rejects(startParts([ok('broker'), ok('task runtime'), broken, ok('idle reaper')], log), /Docker API is unreachable/);
    assert.deepEqual(seen, ['start broker', 'start task runtime', 'stop task runtime', 'stop broker']);
  });

  test('a part that cannot stop cleanly does not keep the others running', async () => {
    const seen: string[] = [];
    const stop = await startParts(
      [
        { name: 'a', start: () => undefined, stop: () => void seen.push('stop a') },
        { name: 'b', start: () => undefined, stop: () => Promise.reject(new Error('flush failed')) },
        { name: 'c', start: () => undefined, stop: () => void seen.push('stop c') },
      ],
      log,
    );
    await stop();
    assert.deepEqual(seen, ['stop c', 'stop a']);
  });
});

describe('the parts of each role', async () => {
  const server = await startTestServer();
  const names = (roles: Role[]) =>
    roleParts(new Set(roles), { config: server.config, db: server.db, log, services: server.services, replicaId: 'roles-test' }).map((p) => p.name);
  const everyProcess = ['broker', 'task runtime', 'lane runtime', 'activity'];

  test('an API replica runs no loop of another role', () => {
    assert.deepEqual(names(['api']), everyProcess);
    assert.deepEqual(names(['api', 'broker']), everyProcess);
  });

  test('the reconciler role runs the reconciler, backup sweep, pool scaler and idle reaper; the worker role the knowledge loops', () => {
    assert.deepEqual(names(['reconciler']), [...everyProcess, 'reconciler', 'backup sweep', 'pool scaler', 'idle reaper']);
    assert.deepEqual(names(['worker']), [...everyProcess, 'knowledge indexer', 'session ingest']);
    assert.deepEqual(names(['api', 'worker', 'broker', 'reconciler']), [
      ...everyProcess,
      'reconciler',
      'backup sweep',
      'pool scaler',
      'idle reaper',
      'knowledge indexer',
      'session ingest',
    ]);
  });
});
