/**
 * Host details a tenant must not read: absolute paths under the host's own directories (the data and
 * sandbox roots, /tmp, /var, /proc, home directories…) and host uids. Applied where text becomes
 * tenant-readable — instance status reasons and events, and every error body (api/errors.ts) — as the
 * net under messages written for people; operators get the full text in the logs (request id, instance id).
 */
const HOST_PATH = /(?<![\w/:.])\/(?:tmp|var|proc|sys|dev|run|home|root|usr|etc|opt|srv|mnt|work|nix|snap|media|boot|lib|lib64|bin|sbin)(?:\/[^\s'"`()<>,;]*)?/g;
const UID = /\b(uid|gid|euid|ruid)([=: ]+)\d+/gi;

const extra: string[] = [];

/** Also hides these roots (the configured data and sandbox directories, wherever they are). */
export function registerHostRoot(dir: string): void {
  const d = dir.replace(/\/+$/, '');
  if (d.length > 1 && !extra.includes(d)) extra.push(d);
}

/** `text` with host paths and uids replaced by placeholders; unchanged when there are none. */
export function scrubHostDetails(text: string): string {
  let out = text;
  for (const d of extra) out = out.split(d).join('<data dir>');
  return out.replace(HOST_PATH, '<host path>').replace(UID, '$1$2<uid>');
}
