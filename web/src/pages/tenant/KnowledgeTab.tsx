import { useState, type FormEvent } from 'react';
import { knowledgeApi, type Finding, type Memory, type SearchMode } from '../../api.ts';
import { Async, ConfirmButton, Empty, ErrorMessage, Field, formatDate, useAction } from '../../components/ui.tsx';
import { useResource } from '../../useResource.ts';
import { NotAMember, type TabProps } from './TenantPage.tsx';

/**
 * What the tenant's agents remember, and what tasks or people found (docs/adr/0007): list, search by
 * words and meaning, correct and delete. Everyone in the tenant reads; members and admins change.
 */
export function KnowledgeTab({ tenant, role }: TabProps) {
  const slug = tenant.slug;
  const [q, setQ] = useState('');
  const [mode, setMode] = useState<SearchMode>('hybrid');
  const [search, setSearch] = useState<{ q: string; mode: SearchMode } | undefined>(undefined);
  const filter = search ? { q: search.q, mode: search.mode } : {};
  const memories = useResource(async () => (role ? knowledgeApi.memories(slug, { ...filter, limit: 100 }) : undefined), [slug, role, search?.q, search?.mode]);
  const findings = useResource(async () => (role ? knowledgeApi.findings(slug, { ...filter, limit: 100 }) : undefined), [slug, role, search?.q, search?.mode]);
  if (!role) return <NotAMember what="memories and findings" />;
  const canEdit = role !== 'viewer' && tenant.status === 'active';
  const submit = (e: FormEvent) => {
    e.preventDefault();
    setSearch(q.trim() ? { q: q.trim(), mode } : undefined);
  };
  const note = memories.data?.note ?? findings.data?.note;
  return (
    <>
      <form className="card" role="search" aria-label="Search memories and findings" onSubmit={submit}>
        <div className="row">
          <Field label="Search" hint="Empty: the newest first.">
            {(id, d) => <input id={id} aria-describedby={d} type="search" maxLength={500} value={q} onChange={(e) => setQ(e.target.value)} />}
          </Field>
          <Field label="Match" hint="By meaning needs an embeddings model route.">
            {(id, d) => (
              <select
                id={id}
                aria-describedby={d}
                value={mode}
                onChange={(e) => setMode((['hybrid', 'words', 'meaning'] as const).find((m) => m === e.target.value) ?? 'hybrid')}
              >
                <option value="hybrid">words and meaning</option>
                <option value="words">words</option>
                <option value="meaning">meaning</option>
              </select>
            )}
          </Field>
        </div>
        <div className="actions">
          <button type="submit">Search</button>
        </div>
        {note ? (
          <p className="notice info" role="status">
            {note}
          </p>
        ) : null}
      </form>
      {canEdit ? <MemoryForm slug={slug} onSaved={memories.reload} /> : null}
      <h2>Memories</h2>
      <Async resource={memories} what="memories">
        {(d) =>
          !d || d.items.length === 0 ? (
            <Empty>{search ? 'No memory matches.' : 'No memories yet. Agents record them after tasks; you can add one above.'}</Empty>
          ) : (
            <table>
              <caption className="sr-only">Memories</caption>
              <thead>
                <tr>
                  <th scope="col">Memory</th>
                  <th scope="col">Agent</th>
                  <th scope="col">Importance</th>
                  {search ? <th scope="col">Score</th> : null}
                  <th scope="col">Expires</th>
                  <th scope="col">Changed</th>
                  {canEdit ? <th scope="col">Actions</th> : null}
                </tr>
              </thead>
              <tbody>
                {d.items.map((m) => (
                  <MemoryRow key={m.id} slug={slug} m={m} canEdit={canEdit} showScore={search !== undefined} onChanged={memories.reload} />
                ))}
              </tbody>
            </table>
          )
        }
      </Async>
      {canEdit ? <FindingForm slug={slug} onSaved={findings.reload} /> : null}
      <h2>Findings</h2>
      <Async resource={findings} what="findings">
        {(d) =>
          !d || d.items.length === 0 ? (
            <Empty>{search ? 'No finding matches.' : 'No findings yet.'}</Empty>
          ) : (
            <table>
              <caption className="sr-only">Findings</caption>
              <thead>
                <tr>
                  <th scope="col">Finding</th>
                  <th scope="col">Tags</th>
                  <th scope="col">Confidence</th>
                  <th scope="col">Sources</th>
                  <th scope="col">Recorded</th>
                  {canEdit ? <th scope="col">Actions</th> : null}
                </tr>
              </thead>
              <tbody>
                {d.items.map((f) => (
                  <FindingRow key={f.id} slug={slug} f={f} canEdit={canEdit} onChanged={findings.reload} />
                ))}
              </tbody>
            </table>
          )
        }
      </Async>
    </>
  );
}

function MemoryRow({ slug, m, canEdit, showScore, onChanged }: { slug: string; m: Memory; canEdit: boolean; showScore: boolean; onChanged: () => void }) {
  const [editing, setEditing] = useState(false);
  const [content, setContent] = useState(m.content);
  const [importance, setImportance] = useState(String(m.importance));
  const action = useAction();
  const save = (e: FormEvent) => {
    e.preventDefault();
    void action.run(async () => {
      await knowledgeApi.updateMemory(slug, m.id, { content: content.trim(), importance: Number(importance) });
      setEditing(false);
      onChanged();
    });
  };
  return (
    <tr>
      <td>
        {editing ? (
          <form onSubmit={save} aria-label={`Edit memory ${m.id}`}>
            <textarea aria-label="Content" required maxLength={4000} value={content} onChange={(e) => setContent(e.target.value)} autoFocus />
            <input aria-label="Importance (0–1)" type="number" min={0} max={1} step={0.05} value={importance} onChange={(e) => setImportance(e.target.value)} />
            <ErrorMessage error={action.error} />
            <button type="submit" disabled={action.busy}>
              Save
            </button>
            <button type="button" className="secondary" onClick={() => setEditing(false)}>
              Cancel
            </button>
          </form>
        ) : (
          <>
            {m.key ? <code>{m.key}</code> : null} {m.content}
          </>
        )}
      </td>
      <td>{m.agent ?? <span className="muted">every agent</span>}</td>
      <td className="num">{m.importance.toFixed(2)}</td>
      {showScore ? <td className="num">{m.score?.toFixed(2) ?? '—'}</td> : null}
      <td>{m.expiresAt ? formatDate(m.expiresAt) : '—'}</td>
      <td>{formatDate(m.updatedAt)}</td>
      {canEdit ? (
        <td className="cell-actions">
          <button type="button" className="secondary" aria-expanded={editing} onClick={() => setEditing(!editing)}>
            Edit <span className="sr-only">memory {m.id}</span>
          </button>
          <ConfirmButton
            label="Delete"
            confirmLabel={`Delete memory ${m.id}`}
            onConfirm={async () => (await knowledgeApi.removeMemory(slug, m.id), onChanged())}
          />
        </td>
      ) : null}
    </tr>
  );
}

function FindingRow({ slug, f, canEdit, onChanged }: { slug: string; f: Finding; canEdit: boolean; onChanged: () => void }) {
  return (
    <tr>
      <td>
        <strong>{f.title}</strong>
        {f.body ? <p className="small">{f.body}</p> : null}
      </td>
      <td>{f.tags.length ? f.tags.join(', ') : '—'}</td>
      <td className="num">{f.confidence.toFixed(2)}</td>
      <td>{f.sources.length ? f.sources.join(' · ') : '—'}</td>
      <td>{formatDate(f.createdAt)}</td>
      {canEdit ? (
        <td className="cell-actions">
          <ConfirmButton
            label="Delete"
            confirmLabel={`Delete finding ${f.title}`}
            onConfirm={async () => (await knowledgeApi.removeFinding(slug, f.id), onChanged())}
          />
        </td>
      ) : null}
    </tr>
  );
}

function MemoryForm({ slug, onSaved }: { slug: string; onSaved: () => void }) {
  const [content, setContent] = useState('');
  const [agent, setAgent] = useState('');
  const [importance, setImportance] = useState('0.5');
  const action = useAction();
  const submit = (e: FormEvent) => {
    e.preventDefault();
    void action.run(async () => {
      await knowledgeApi.createMemory(slug, { content: content.trim(), importance: Number(importance), ...(agent.trim() ? { agent: agent.trim() } : {}) });
      setContent('');
      onSaved();
    });
  };
  return (
    <form className="card" onSubmit={submit} aria-label="Add a memory">
      <h2>Add a memory</h2>
      <div className="row">
        <Field label="Memory">
          {(id, d) => <input id={id} aria-describedby={d} required maxLength={4000} value={content} onChange={(e) => setContent(e.target.value)} />}
        </Field>
        <Field label="Agent (optional)" hint="Empty: every agent of the tenant.">
          {(id, d) => <input id={id} aria-describedby={d} maxLength={64} value={agent} onChange={(e) => setAgent(e.target.value)} />}
        </Field>
        <Field label="Importance (0–1)">
          {(id, d) => (
            <input id={id} aria-describedby={d} type="number" min={0} max={1} step={0.05} value={importance} onChange={(e) => setImportance(e.target.value)} />
          )}
        </Field>
      </div>
      <ErrorMessage error={action.error} />
      <div className="actions">
        <button type="submit" disabled={action.busy}>
          {action.busy ? 'Saving…' : 'Add memory'}
        </button>
      </div>
    </form>
  );
}

function FindingForm({ slug, onSaved }: { slug: string; onSaved: () => void }) {
  const [title, setTitle] = useState('');
  const [body, setBody] = useState('');
  const [tags, setTags] = useState('');
  const action = useAction();
  const submit = (e: FormEvent) => {
    e.preventDefault();
    void action.run(async () => {
      await knowledgeApi.createFinding(slug, {
        title: title.trim(),
        body,
        tags: tags
          .split(',')
          .map((x) => x.trim())
          .filter(Boolean),
      });
      setTitle('');
      setBody('');
      setTags('');
      onSaved();
    });
  };
  return (
    <form className="card" onSubmit={submit} aria-label="Record a finding">
      <h2>Record a finding</h2>
      <div className="row">
        <Field label="Title">
          {(id, d) => <input id={id} aria-describedby={d} required maxLength={300} value={title} onChange={(e) => setTitle(e.target.value)} />}
        </Field>
        <Field label="Tags" hint="Comma-separated single words.">
          {(id, d) => <input id={id} aria-describedby={d} value={tags} onChange={(e) => setTags(e.target.value)} />}
        </Field>
      </div>
      <Field label="Details">
        {(id, d) => <textarea id={id} aria-describedby={d} maxLength={20000} value={body} onChange={(e) => setBody(e.target.value)} />}
      </Field>
      <ErrorMessage error={action.error} />
      <div className="actions">
        <button type="submit" disabled={action.busy}>
          {action.busy ? 'Saving…' : 'Record finding'}
        </button>
      </div>
    </form>
  );
}
