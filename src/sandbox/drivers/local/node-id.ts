import { readFileSync } from 'node:fs';
import os from 'node:os';

/** This host's identity for SandboxRef.owner.nodeId: systemd's machine id, else the host name. */
export function nodeIdOfThisHost(): string {
  try {
    const id = readFileSync('/etc/machine-id', 'utf8').trim();
    if (id) return id;
  } catch {
    // no machine id (a minimal container): the host name
  }
  return os.hostname();
}
