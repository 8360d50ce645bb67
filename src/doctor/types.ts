/** One finding of `clawplane doctor`: what was checked, what was found and, when it is not ok, the fix. */
export interface DoctorCheck {
  /** Stable id for monitoring, e.g. `database.migrations`. */
  id: string;
  /** What was checked, for people. */
  title: string;
  /** ok; warn (works, but look at it); fail (something is broken or unsafe); skip (does not apply here). */
  status: 'ok' | 'warn' | 'fail' | 'skip';
  /** What was found. Never a secret. */
  detail: string;
  /** What to do, when status is warn or fail. */
  fix?: string;
}

export interface DoctorReport {
  ok: boolean;
  at: string;
  checks: DoctorCheck[];
}

/** A check's outcome before it is named. */
export type Finding = Omit<DoctorCheck, 'id' | 'title'>;

export const ok = (detail: string): Finding => ({ status: 'ok', detail });
export const fail = (detail: string, fix: string): Finding => ({ status: 'fail', detail, fix });
export const warn = (detail: string, fix: string): Finding => ({ status: 'warn', detail, fix });
export const skip = (detail: string): Finding => ({ status: 'skip', detail });
