import { BaselineCard, ToolRegistryCard } from '../components/ToolRegistry.tsx';
import { useMe } from '../session.tsx';

/** Platform governance (platform admins): the tool registry, editable, and the tool-policy baseline, read-only. */
export function GovernancePage() {
  const me = useMe();
  if (!me.user.platformAdmin) {
    return (
      <section>
        <h1>Governance</h1>
        <p className="notice info">The tool registry is managed by platform admins. Your tenant&apos;s own tool policy is on its Governance tab.</p>
      </section>
    );
  }
  return (
    <section>
      <h1>Platform governance</h1>
      <section className="card" aria-labelledby="tools-h">
        <h2 id="tools-h">Tool registry</h2>
        <ToolRegistryCard />
      </section>
      <section className="card" aria-labelledby="baseline-h">
        <h2 id="baseline-h">Tool-policy baseline</h2>
        <BaselineCard />
      </section>
    </section>
  );
}
