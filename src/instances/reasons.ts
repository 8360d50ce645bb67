/**
 * Status reasons are read by people (the console's instance page, the events list): they say why an
 * instance changed state, and their numbers are rounded.
 */

/** A duration for people: "850 ms", "4.2 s", "45 s", "12 min", "3 h". */
export function forPeople(ms: number): string {
  if (!Number.isFinite(ms) || ms < 0) return 'an unknown time';
  if (ms < 1000) return `${Math.round(ms)} ms`;
  if (ms < 10_000) return `${(Math.round(ms / 100) / 10).toString()} s`;
  if (ms < 120_000) return `${Math.round(ms / 1000)} s`;
  if (ms < 2 * 3_600_000) return `${Math.round(ms / 60_000)} min`;
  return `${Math.round(ms / 3_600_000)} h`;
}

/** Why the idle reaper stopped or suspended an instance. */
export function idleReason(idleMs: number): string {
  return `idle for ${forPeople(idleMs)}, past the idle timeout`;
}

/** The status reason of an instance suspended to a snapshot: why, then its size and how long the dump took. */
export function suspendedReason(why: string, imageBytes: number, dumpMs: number): string {
  return `suspended to a snapshot: ${why} (${Math.round(imageBytes / 2 ** 20)} MiB, dumped in ${forPeople(dumpMs)})`;
}
