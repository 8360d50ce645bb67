import { fstatSync } from 'node:fs';
import { chmod, rename, rm } from 'node:fs/promises';
import net from 'node:net';

/**
 * A listening socket the host creates (root-owned, in a root-only directory) and passes into the
 * sandbox as a file descriptor, so no path to it exists inside and the host never follows a path the
 * tenant could plant (openclaw-in-bubblewrap.md, "Risks found").
 */
export async function listenHostSocket(file: string): Promise<{ fd: number; ino: number; release(): Promise<void>; close(): void }> {
  const tmp = `${file}.${process.pid}.tmp`;
  await rm(tmp, { force: true });
  const server = net.createServer();
  await new Promise<void>((resolve, reject) => {
    server.once('error', reject);
    server.listen(tmp, () => resolve());
  });
  await chmod(tmp, 0o600);
  const fd = (server as unknown as { _handle: { fd: number } })._handle.fd;
  return {
    fd,
    ino: fstatSync(fd).ino,
    async release() {
      // libuv unlinks a Unix socket's path on close: move the path away first so it stays for the sandbox.
      await rename(tmp, file);
      await new Promise<void>((resolve) => server.close(() => resolve()));
    },
    /** On failure: closed, and its path gone. */
    close() {
      server.close();
    },
  };
}
