import { useEffect, useRef, useState, type FormEvent, type KeyboardEvent } from 'react';
import { api2, ApiError, type ChatMessage } from '../../api.ts';
import { Async, Empty, ErrorMessage, Field, formatDate, Loading } from '../../components/ui.tsx';
import { useResource } from '../../useResource.ts';
import { NotAMember, type TabProps } from './TenantPage.tsx';

interface Turn {
  role: 'user' | 'assistant' | 'system';
  content: string;
}

/**
 * Chat with one of the tenant's agents through the chat API: the reply streams in token by token; a
 * stopped instance is woken first (the page says so). Past conversations are listed beside it.
 */
export function ChatTab({ tenant, role }: TabProps) {
  if (!role) return <NotAMember what="conversations" />;
  return <Chat slug={tenant.slug} canChat={role !== 'viewer' && tenant.status === 'active'} />;
}

function Chat({ slug, canChat }: { slug: string; canChat: boolean }) {
  const sessions = useResource(() => api2.chat.sessions(slug), [slug]);
  const [session, setSession] = useState<string | undefined>(undefined);
  return (
    <div className="chat-layout">
      <aside className="card" aria-labelledby="sessions-h">
        <h2 id="sessions-h">Conversations</h2>
        <button type="button" className="secondary" onClick={() => setSession(undefined)} aria-pressed={session === undefined}>
          New conversation
        </button>
        <Async resource={sessions} what="conversations">
          {({ items }) =>
            items.length === 0 ? (
              <Empty>No conversations yet.</Empty>
            ) : (
              <ul className="sessions">
                {items.map((s) => (
                  <li key={s.sessionId}>
                    <button type="button" className="link" aria-current={s.sessionId === session ? 'true' : undefined} onClick={() => setSession(s.sessionId)}>
                      {s.title || s.sessionId}
                    </button>
                    <div className="small muted">
                      {s.agent}, {s.messages} messages, {formatDate(s.lastAt)}
                    </div>
                  </li>
                ))}
              </ul>
            )
          }
        </Async>
      </aside>
      <Conversation key={session ?? 'new'} slug={slug} session={session} canChat={canChat} onSession={(s) => (setSession(s), sessions.reload())} />
    </div>
  );
}

function Conversation({ slug, session, canChat, onSession }: { slug: string; session: string | undefined; canChat: boolean; onSession: (id: string) => void }) {
  const [turns, setTurns] = useState<Turn[] | undefined>(session ? undefined : []);
  const [loadError, setLoadError] = useState<unknown>(undefined);
  const [agent, setAgent] = useState('main');
  const [text, setText] = useState('');
  const [streaming, setStreaming] = useState(false);
  const [progress, setProgress] = useState<string | undefined>(undefined);
  const [error, setError] = useState<unknown>(undefined);
  const abort = useRef<AbortController | null>(null);
  const log = useRef<HTMLOListElement>(null);

  useEffect(() => {
    if (!session) return;
    let live = true;
    api2.chat.messages(slug, session).then(
      (r) => {
        if (!live) return;
        setTurns(r.items.map((m: ChatMessage) => ({ role: m.role, content: m.content })));
        const last = r.items.at(-1);
        if (last) setAgent(last.agent);
      },
      (e: unknown) => live && setLoadError(e),
    );
    return () => {
      live = false;
    };
  }, [slug, session]);
  useEffect(() => () => abort.current?.abort(), []);
  useEffect(() => {
    log.current?.lastElementChild?.scrollIntoView?.({ block: 'end' });
  }, [turns]);

  const send = (e?: FormEvent) => {
    e?.preventDefault();
    const content = text.trim();
    if (!content || streaming) return;
    setText('');
    setError(undefined);
    setStreaming(true);
    setTurns((t) => [...(t ?? []), { role: 'user', content }, { role: 'assistant', content: '' }]);
    const ac = new AbortController();
    abort.current = ac;
    const append = (delta: string) =>
      setTurns((t) => {
        const copy = [...(t ?? [])];
        const last = copy.at(-1);
        if (last) copy[copy.length - 1] = { ...last, content: last.content + delta };
        return copy;
      });
    void api2.chat
      .stream(slug, { model: `agent/${agent.trim() || 'main'}`, messages: [{ role: 'user', content }] }, { session, signal: ac.signal }, (event, data) => {
        if (event === 'clawplane.progress') {
          const p = JSON.parse(data) as { state?: string };
          setProgress(p.state ?? 'waking');
          return;
        }
        setProgress(undefined);
        if (data === '[DONE]') return;
        const chunk = JSON.parse(data) as { choices?: { delta?: { content?: string } }[]; error?: { message?: string; code?: string } | string };
        if (chunk.error) {
          const m = typeof chunk.error === 'string' ? chunk.error : (chunk.error.message ?? 'The agent answered with an error.');
          setError(new ApiError(502, typeof chunk.error === 'string' ? 'gateway' : (chunk.error.code ?? 'gateway'), m));
          return;
        }
        const delta = chunk.choices?.[0]?.delta?.content;
        if (delta) append(delta);
      })
      .then(
        (r) => {
          if (!session && r.session) onSession(r.session);
        },
        (err: unknown) => {
          if (!ac.signal.aborted) setError(err);
          // Drop the empty assistant turn of a request that never got an answer.
          setTurns((t) => (t?.at(-1)?.role === 'assistant' && t.at(-1)?.content === '' ? t.slice(0, -1) : t));
        },
      )
      .finally(() => {
        setStreaming(false);
        setProgress(undefined);
      });
  };
  const onKey = (e: KeyboardEvent<HTMLTextAreaElement>) => {
    if (e.key === 'Enter' && !e.shiftKey) {
      e.preventDefault();
      send();
    }
  };

  return (
    <section className="card chat" aria-label="Conversation">
      <h2>{session ? `Conversation ${session}` : 'New conversation'}</h2>
      <ErrorMessage error={loadError} />
      {turns === undefined && loadError === undefined ? <Loading what="the conversation" /> : null}
      {turns && turns.length === 0 ? <Empty>Say something to your agent. The gateway is woken if it is asleep.</Empty> : null}
      {turns && turns.length > 0 ? (
        <ol className="messages" ref={log} aria-live="polite" aria-label="Messages">
          {turns.map((t, i) => (
            <li key={i} className={`msg msg-${t.role}`}>
              <span className="sr-only">{t.role === 'user' ? 'You' : t.role === 'assistant' ? 'Agent' : 'System'}: </span>
              {t.content || (streaming && i === turns.length - 1 ? '…' : '')}
            </li>
          ))}
        </ol>
      ) : null}
      {progress ? (
        <p className="notice info" role="status">
          Waking the gateway… ({progress})
        </p>
      ) : null}
      <ErrorMessage error={error} />
      {canChat ? (
        <form onSubmit={send} aria-label="Send a message">
          <div className="row">
            <Field label="Agent" hint='Sent as model "agent/<name>".'>
              {(id, d) => <input id={id} aria-describedby={d} value={agent} disabled={session !== undefined} onChange={(e) => setAgent(e.target.value)} />}
            </Field>
          </div>
          <Field label="Message" hint="Enter sends; Shift+Enter for a new line.">
            {(id, d) => <textarea id={id} aria-describedby={d} rows={3} value={text} onChange={(e) => setText(e.target.value)} onKeyDown={onKey} />}
          </Field>
          <button type="submit" disabled={streaming || !text.trim()}>
            {streaming ? 'Answering…' : 'Send'}
          </button>{' '}
          {streaming ? (
            <button type="button" className="secondary" onClick={() => abort.current?.abort()}>
              Stop
            </button>
          ) : null}
        </form>
      ) : (
        <p className="notice info">Chatting needs the member role and an active tenant.</p>
      )}
    </section>
  );
}
