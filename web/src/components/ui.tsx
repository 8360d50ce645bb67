/** Small building blocks every page uses: states (loading, empty, error), labelled fields, actions. */
import { useId, useState, type ReactNode } from 'react';
import { ApiError, messageOf } from '../api.ts';
import type { Resource } from '../useResource.ts';

/** An error from the API, with its message (written for people) and the request id for support. */
export function ErrorMessage({ error }: { error: unknown }) {
  if (error === undefined || error === null) return null;
  const requestId = error instanceof ApiError ? error.requestId : undefined;
  return (
    <div className="notice error" role="alert">
      <strong>Error:</strong> {messageOf(error)}
      {requestId ? <span className="muted small"> (request {requestId})</span> : null}
    </div>
  );
}

export function Loading({ what }: { what: string }) {
  return (
    <p className="loading" role="status" aria-live="polite">
      Loading {what}…
    </p>
  );
}

export function Empty({ children }: { children: ReactNode }) {
  return <p className="empty">{children}</p>;
}

/** Renders a resource's loading and error states, then `children(data)`. */
export function Async<T>({ resource, what, children }: { resource: Resource<T>; what: string; children: (data: T) => ReactNode }) {
  if (resource.error !== undefined) {
    return (
      <div>
        <ErrorMessage error={resource.error} />
        <button type="button" className="secondary" onClick={resource.reload}>
          Try again
        </button>
      </div>
    );
  }
  if (resource.data === undefined) return <Loading what={what} />;
  return <>{children(resource.data)}</>;
}

/** A labelled form control; `hint` explains what to enter and is linked with aria-describedby. */
export function Field(props: { label: string; hint?: ReactNode; children: (id: string, describedBy: string | undefined) => ReactNode }) {
  const id = useId();
  const hintId = `${id}-hint`;
  return (
    <div className="field">
      <label htmlFor={id}>{props.label}</label>
      {props.children(id, props.hint ? hintId : undefined)}
      {props.hint ? (
        <div className="hint" id={hintId}>
          {props.hint}
        </div>
      ) : null}
    </div>
  );
}

/** Runs an async action with a busy flag and keeps its error to show next to the form. */
export function useAction(): { busy: boolean; error: unknown; run: (fn: () => Promise<void>) => Promise<void>; clear: () => void } {
  const [busy, setBusy] = useState(false);
  const [error, setError] = useState<unknown>(undefined);
  const run = async (fn: () => Promise<void>) => {
    setBusy(true);
    setError(undefined);
    try {
      await fn();
    } catch (err) {
      setError(err);
    } finally {
      setBusy(false);
    }
  };
  return { busy, error, run, clear: () => setError(undefined) };
}

/** Copies text to the clipboard and says so. */
export function CopyButton({ text, label = 'Copy' }: { text: string; label?: string }) {
  const [state, setState] = useState<'idle' | 'copied' | 'failed'>('idle');
  const copy = () => {
    navigator.clipboard.writeText(text).then(
      () => setState('copied'),
      () => setState('failed'),
    );
  };
  return (
    <button type="button" className="secondary" onClick={copy}>
      {state === 'copied' ? 'Copied' : state === 'failed' ? 'Copy failed: select and copy by hand' : label}
    </button>
  );
}

export function StatusBadge({ status }: { status: string }) {
  return <span className={`badge badge-${status}`}>{status}</span>;
}

export function formatDate(iso: string | null): string {
  if (!iso) return '—';
  return new Date(iso).toLocaleString(undefined, { dateStyle: 'medium', timeStyle: 'short' });
}

export const ROLE_LABEL: Record<string, string> = { tenant_admin: 'Tenant admin', member: 'Member', viewer: 'Viewer' };

/** A destructive action in two steps (no browser dialog): the first click asks, the second does it. */
export function ConfirmButton(props: { label: string; confirmLabel: string; onConfirm: () => Promise<void>; disabled?: boolean }) {
  const [asking, setAsking] = useState(false);
  const action = useAction();
  if (!asking) {
    return (
      <button type="button" className="secondary danger-text" disabled={props.disabled} onClick={() => setAsking(true)}>
        {props.label}
      </button>
    );
  }
  return (
    <span className="confirm">
      {/* Focus moves to the question, so keyboard users confirm with Enter or Tab to Cancel. */}
      <button type="button" className="danger" autoFocus disabled={action.busy} onClick={() => void action.run(props.onConfirm).then(() => setAsking(false))}>
        {props.confirmLabel}
      </button>
      <button type="button" className="secondary" onClick={() => setAsking(false)}>
        Cancel
      </button>
      <ErrorMessage error={action.error} />
    </span>
  );
}

/** Previous / Next under a paged list, with the page number. */
export function Pager({ page, next, prev, label }: { page: number; next: (() => void) | undefined; prev: (() => void) | undefined; label: string }) {
  if (page === 1 && !next) return null;
  return (
    <nav className="pager" aria-label={`${label} pages`}>
      <button type="button" className="secondary" disabled={!prev} onClick={prev}>
        Previous
      </button>
      <span aria-live="polite">Page {page}</span>
      <button type="button" className="secondary" disabled={!next} onClick={next}>
        Next
      </button>
    </nav>
  );
}

/** A search box for a paged list (the API matches a case-insensitive substring). */
/**
 * A list's search field. Its label names the list ("Find members"), never a field of a form on the same
 * page ("Email", "Name"), so a label says which input it is; the placeholder says what it matches.
 */
export function SearchBox({ label, placeholder, value, onChange }: { label: string; placeholder?: string; value: string; onChange: (v: string) => void }) {
  const id = useId();
  return (
    <div className="field search">
      <label htmlFor={id}>{label}</label>
      <input id={id} type="search" maxLength={100} placeholder={placeholder} value={value} onChange={(e) => onChange(e.target.value)} />
    </div>
  );
}
