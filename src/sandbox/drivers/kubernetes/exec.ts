/**
 * Commands inside a pod through the API server's `pods/exec` (docs/adr/0011-kubernetes.md): client-node's
 * `Exec` over a WebSocket speaking v5.channel.k8s.io (stdin 0, stdout 1, stderr 2, the exit Status on 3,
 * 255 to close stdin; https://kubernetes.io/docs/reference/using-api/websockets/). v5 is what lets stdin
 * end while stdout keeps flowing (a tar reading an archive answers with its status afterwards); API servers
 * older than 1.30 do not offer it, and the driver already needs 1.33 (image volumes).
 *
 * What a caller gets is either the command's exit (code and the tail of its stderr) or an error that says
 * which way the stream failed: the upgrade refused (401/403/404/500 from the API server), the connection
 * dropped before the status arrived, or the time ran out. stdout goes to a Writable with backpressure (the
 * socket is paused while the consumer is behind); stdin is fed with backpressure too. Nothing here puts a
 * byte of stdin into a message or a URL: secrets are passed on stdin, never in argv (which the API server
 * logs in its audit trail and the URL carries).
 */
import { PassThrough, Writable, type Readable } from 'node:stream';
import { Exec, type KubeConfig, type V1Status } from '@kubernetes/client-node';
import type WebSocket from 'ws';
import { SandboxUnavailableError } from '../../types.ts';

export interface PodExecResult {
  /** The command's exit code; null when the API server's status names none (e.g. the container is gone). */
  code: number | null;
  /** The last 8 KiB of stderr. */
  stderr: string;
  /** The API server's status message when the command did not succeed. */
  message: string;
}

const STDERR_KEEP = 8192;
const STDIN_HIGH_WATER = 1 << 20;

/** Runs argv in a pod's container; resolves with its exit, rejects (SandboxUnavailableError) when the stream itself failed. */
export function podExec(
  kc: KubeConfig,
  o: { namespace: string; pod: string; container: string; argv: string[]; stdout?: Writable; stdin?: Readable; timeoutMs: number },
): Promise<PodExecResult> {
  const where = `pod ${o.namespace}/${o.pod}`;
  let ws: WebSocket | undefined;
  let stderr = Buffer.alloc(0);
  // client-node ends the stdout/stderr streams it is given when the status arrives: these sinks take the
  // bytes and leave the caller's stream to the caller.
  const out = new Writable({
    write(chunk: Buffer, _e, cb) {
      if (o.stdout && !o.stdout.write(chunk)) {
        ws?.pause();
        o.stdout.once('drain', () => ws?.resume());
      }
      cb();
    },
  });
  const err = new Writable({
    write(chunk: Buffer, _e, cb) {
      stderr = Buffer.concat([stderr, chunk]).subarray(-STDERR_KEEP);
      cb();
    },
  });
  const stdin = o.stdin ? new PassThrough() : null;
  return new Promise<PodExecResult>((resolve, reject) => {
    let done = false;
    const finish = (e: Error | undefined, st?: V1Status) => {
      if (done) return;
      done = true;
      clearTimeout(timer);
      if (e) {
        ws?.terminate();
        reject(e);
        return;
      }
      const exitCause = st?.details?.causes?.find((c) => c.reason === 'ExitCode')?.message;
      resolve({
        code: st?.status === 'Success' ? 0 : exitCause !== undefined ? Number(exitCause) : null,
        stderr: stderr.toString('utf8'),
        message: st?.status === 'Success' ? '' : (st?.message ?? ''),
      });
    };
    const timer = setTimeout(
      () => finish(new SandboxUnavailableError(`The command in ${where} did not finish within ${Math.round(o.timeoutMs / 1000)} s; it was cut off.`)),
      o.timeoutMs,
    );
    new Exec(kc)
      .exec(o.namespace, o.pod, o.container, o.argv, out, err, stdin, false, (st) => finish(undefined, st))
      .then((socket) => {
        ws = socket as unknown as WebSocket;
        if (done) {
          ws.terminate();
          return;
        }
        // Messages are delivered before the close event: a close with no status first is a dropped stream.
        ws.on('close', () =>
          finish(
            new SandboxUnavailableError(
              `The connection to ${where} (pods/exec through the API server) closed before the command's exit status arrived; nothing it did was kept.`,
            ),
          ),
        );
        if (o.stdin && stdin)
          void feed(o.stdin, stdin, ws).catch((e: unknown) =>
            finish(new SandboxUnavailableError(`The input for ${where} could not be read: ${(e as Error).message}.`, e)),
          );
      })
      .catch((e: unknown) =>
        finish(new SandboxUnavailableError(`The Kubernetes API server refused to run a command in ${where} (pods/exec): ${describe(e)}.`, e)),
      );
  });
}

/** Copies src into the exec's stdin, waiting while the socket holds more than 1 MiB unsent; its end closes stdin (v5). */
async function feed(src: Readable, stdin: PassThrough, ws: WebSocket): Promise<void> {
  for await (const chunk of src) {
    if (ws.readyState !== ws.OPEN) return;
    stdin.write(chunk as Buffer);
    while (ws.bufferedAmount > STDIN_HIGH_WATER && ws.readyState === ws.OPEN) await new Promise((r) => setTimeout(r, 5));
  }
  stdin.end();
}

/** The upgrade's failure as ws reports it ("Unexpected server response: 500"), never a request's content. */
function describe(e: unknown): string {
  const m = (e as { message?: unknown; error?: { message?: unknown } } | null)?.message ?? (e as { error?: { message?: unknown } } | null)?.error?.message;
  return typeof m === 'string' && m ? m : String(e);
}
