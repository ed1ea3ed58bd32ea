// The Leash console: a page of the server itself that calls the same API as curl and the CLI,
// with the token the person signed in with (the operator token, or a person's token from the
// identity provider, whose every call the admin policies decide). The token is kept in this
// tab's sessionStorage only, sent as a bearer token to Leash's own origin and nowhere else.
// Preact and htm, served by Leash from its own dependencies: no build step, no inline script.
import { h, render } from 'preact';
import { useEffect, useState } from 'preact/hooks';
import htm from 'htm';

const html = htm.bind(h);
const TOKEN_KEY = 'leash-console-token';

const token = () => sessionStorage.getItem(TOKEN_KEY);
const signOut = () => {
  sessionStorage.removeItem(TOKEN_KEY);
  location.hash = '#/';
  rerender();
};

/** One API call with the signed-in token; a 401 signs out (the token expired or was withdrawn). */
async function api(method, path, body) {
  const res = await fetch(path, {
    method,
    headers: { authorization: `Bearer ${token()}`, ...(body === undefined ? {} : { 'content-type': 'application/json' }) },
    body: body === undefined ? undefined : JSON.stringify(body),
    credentials: 'omit',
    redirect: 'error',
  });
  const text = await res.text();
  let answer = null;
  try {
    answer = text ? JSON.parse(text) : null;
  } catch {
    answer = { detail: text };
  }
  if (res.status === 401) {
    signOut();
    throw new Error('signed out: the token is no longer accepted');
  }
  if (!res.ok) throw new Error(`${answer?.code ?? res.status}: ${answer?.detail ?? answer?.title ?? 'refused'}`);
  return answer;
}

/** Loads `path` (again whenever `deps` change): [value, error, reload]. */
function useApi(path, deps = []) {
  const [state, setState] = useState({ value: null, error: null });
  const [round, setRound] = useState(0);
  useEffect(() => {
    let live = true;
    setState({ value: null, error: null });
    api('GET', path).then((value) => live && setState({ value, error: null }), (err) => live && setState({ value: null, error: err.message }));
    return () => {
      live = false;
    };
  }, [path, round, ...deps]);
  return [state.value, state.error, () => setRound((r) => r + 1)];
}

const Status = ({ of }) => html`<span class="status ${of}">${of}</span>`;
const Failure = ({ error }) => (error ? html`<p class="error" role="alert">${error}</p>` : null);
const when = (iso) => (iso ? new Date(iso).toLocaleString() : '');
const link = (path, text) => html`<a href=${`#${path}`}>${text}</a>`;

function SignIn() {
  const [error, setError] = useState(null);
  const submit = async (e) => {
    e.preventDefault();
    const given = new FormData(e.target).get('token').trim();
    const res = await fetch('/v1/agents?limit=1', { headers: { authorization: `Bearer ${given}` }, credentials: 'omit' });
    if (res.status !== 200) return setError(res.status === 401 ? 'That token is not accepted.' : `Leash answered ${res.status}.`);
    sessionStorage.setItem(TOKEN_KEY, given);
    location.hash = '#/agents';
    rerender();
  };
  return html`<form class="signin" onSubmit=${submit}>
    <h1>Sign in to Leash</h1>
    <p class="note">The operator token, or your own token from the organisation's identity provider.</p>
    <label>Token <input name="token" type="password" autocomplete="off" required /></label>
    <p><button type="submit">Sign in</button></p>
    <${Failure} error=${error} />
  </form>`;
}

function Agents() {
  const [filter, setFilter] = useState({ status: '', owner: '', tag: '' });
  const query = new URLSearchParams(Object.entries({ ...filter, limit: '1000' }).filter(([, v]) => v !== ''));
  const [page, error] = useApi(`/v1/agents?${query}`, []);
  const change = (name) => (e) => setFilter({ ...filter, [name]: e.target.value });
  return html`<h1>Agents</h1>
    <form class="filters" onSubmit=${(e) => e.preventDefault()}>
      <label>Status <select name="status" value=${filter.status} onChange=${change('status')}>
        ${['', 'active', 'registered', 'discovered', 'suspended', 'quarantined', 'revoked', 'retired'].map((s) => html`<option value=${s}>${s === '' ? 'any' : s === 'discovered' ? 'discovered (shadow agents)' : s}</option>`)}
      </select></label>
      <label>Owner <input name="owner" value=${filter.owner} onChange=${change('owner')} /></label>
      <label>Tag <input name="tag" value=${filter.tag} onChange=${change('tag')} /></label>
    </form>
    <${Failure} error=${error} />
    ${page && html`<table>
      <thead><tr><th>agent</th><th>status</th><th>owner</th><th>trust</th><th>purpose</th><th>last seen</th></tr></thead>
      <tbody>${page.agents.map((a) => html`<tr data-agent=${a.id}>
        <td>${link(`/agents/${encodeURIComponent(a.id)}`, a.id)}</td><td><${Status} of=${a.status} /></td><td>${a.owner ?? '—'}</td>
        <td>${a.trustScore}</td><td>${a.purpose}</td><td>${when(a.lastSeen)}</td></tr>`)}</tbody>
    </table>
    ${page.agents.length === 0 && html`<p class="note">No agent matches.</p>`}`}`;
}

/** A button that asks for a reason, and a typed confirmation for what cannot be undone. */
function Confirmed({ label, danger, confirmWord, fields = [], onConfirm }) {
  const [open, setOpen] = useState(false);
  const [error, setError] = useState(null);
  const submit = async (e) => {
    e.preventDefault();
    const form = new FormData(e.target);
    if (confirmWord && form.get('confirm') !== confirmWord) return setError(`Type ${confirmWord} to confirm.`);
    try {
      await onConfirm(form.get('reason'), form);
      setOpen(false);
      setError(null);
    } catch (err) {
      setError(err.message);
    }
  };
  if (!open) return html`<button class=${danger ? 'danger' : ''} onClick=${() => setOpen(true)}>${label}</button>`;
  return html`<form class="row" onSubmit=${submit} aria-label=${label}>
    <label>Reason <input name="reason" required maxlength="1000" /></label>
    ${fields.map((f) => html`<label>${f.label} <input name=${f.name} maxlength="128" /></label>`)}
    ${confirmWord && html`<label>Type ${confirmWord} <input name="confirm" autocomplete="off" /></label>`}
    <button type="submit" class=${danger ? 'danger' : ''}>Confirm: ${label}</button>
    <button type="button" class="plain" onClick=${() => setOpen(false)}>Cancel</button>
    <${Failure} error=${error} />
  </form>`;
}

function Agent({ id }) {
  const path = `/v1/agents/${encodeURIComponent(id)}`;
  const [agent, error, reload] = useApi(path);
  const [events, eventsError, reloadEvents] = useApi(`${path}/events`);
  const [decisions, decisionsError] = useApi(`/v1/decisions?agent=${encodeURIComponent(id)}&limit=20`);
  const act = (verb, body) => async () => {
    await api('POST', `${path}/${verb}`, body);
    reload();
    reloadEvents();
  };
  if (error) return html`<${Failure} error=${error} />`;
  if (!agent) return html`<p class="note">Loading…</p>`;
  const findings = agent.findings ?? [];
  return html`<h1>Agent ${agent.id} <${Status} of=${agent.status} /></h1>
    <dl>
      <dt>owner</dt><dd>${agent.owner ?? '—'}</dd><dt>purpose</dt><dd>${agent.purpose}</dd>
      <dt>trust score</dt><dd data-field="trustScore">${agent.trustScore}</dd><dt>groups</dt><dd>${agent.groups.join(', ') || '—'}</dd>
      <dt>tags</dt><dd>${agent.tags.join(', ') || '—'}</dd><dt>version</dt><dd>${agent.version}</dd>
    </dl>
    <div class="row">
      <${Confirmed} label="Suspend" onConfirm=${(reason) => act('suspend', { reason })()} />
      <${Confirmed} label="Revoke" danger onConfirm=${(reason) => act('revoke', { mode: 'immediate', reason })()} />
    </div>
    <h2>Findings</h2>
    ${findings.length === 0 ? html`<p class="note">None open.</p>` : html`<table><thead><tr><th>detector</th><th>severity</th><th>response</th><th>evidence</th></tr></thead>
      <tbody>${findings.map((f) => html`<tr><td>${f.detector}</td><td>${f.severity}</td><td>${f.response}</td><td>${JSON.stringify(f.evidence)}</td></tr>`)}</tbody></table>`}
    <h2>Timeline</h2>
    <${Failure} error=${eventsError} />
    ${events && html`<table class="timeline"><thead><tr><th>when</th><th>event</th><th>by</th><th>what</th></tr></thead>
      <tbody>${[...events.events].reverse().map((e) => html`<tr><td>${when(e.at)}</td><td>${e.type}</td><td>${e.actor ?? ''}${e.breakGlass ? ' (break-glass)' : ''}</td>
        <td>${e.data?.reason ?? ''}</td></tr>`)}</tbody></table>`}
    <h2>Recent decisions</h2>
    <${Failure} error=${decisionsError} />
    ${decisions && html`<${DecisionTable} decisions=${decisions.decisions} />`}`;
}

const DecisionTable = ({ decisions }) => html`<table><thead><tr><th>when</th><th>subject</th><th>action</th><th>resource</th><th>decision</th><th>layer</th><th>code</th></tr></thead>
  <tbody>${decisions.map((d) => html`<tr>
    <td>${link(`/decisions/${d.id}`, when(d.at))}</td><td>${d.subject ? `${d.subject.type} ${d.subject.id}` : '—'}</td><td>${d.action ?? '—'}</td>
    <td>${d.resource ? `${d.resource.type} ${d.resource.id}` : '—'}</td><td><${Status} of=${d.decision ? 'allow' : 'deny'} /></td><td>${d.layer}</td><td>${d.code ?? ''}</td></tr>`)}</tbody></table>
  ${decisions.length === 0 && html`<p class="note">No decisions.</p>`}`;

function Decisions() {
  const [outcome, setOutcome] = useState('');
  const [page, error] = useApi(`/v1/decisions?limit=100${outcome ? `&decision=${outcome}` : ''}`);
  return html`<h1>Decisions</h1>
    <form class="filters"><label>Outcome <select value=${outcome} onChange=${(e) => setOutcome(e.target.value)}>
      <option value="">any</option><option value="true">allowed</option><option value="false">denied</option></select></label></form>
    <${Failure} error=${error} />
    ${page && html`<${DecisionTable} decisions=${page.decisions} />`}`;
}

function Decision({ id }) {
  const [trace, error] = useApi(`/v1/audit/decisions/${encodeURIComponent(id)}/trace`);
  if (error) return html`<${Failure} error=${error} />`;
  if (!trace) return html`<p class="note">Loading…</p>`;
  const d = trace.decision;
  return html`<h1>Decision <${Status} of=${d.decision ? 'allow' : 'deny'} /></h1>
    <dl>
      <dt>id</dt><dd>${id}</dd><dt>when</dt><dd>${when(d.at)}</dd>
      <dt>who, for whom</dt><dd class="chain">${trace.chain.map((c) => `${c.role} ${c.type} ${c.id}`).join(' → ')}</dd>
      <dt>action</dt><dd>${d.request?.action?.name ?? '—'}</dd>
      <dt>resource</dt><dd>${d.request?.resource ? `${d.request.resource.type} ${d.request.resource.id}` : '—'}</dd>
      <dt>deciding layer</dt><dd>${d.layer}${d.code ? ` (${d.code})` : ''}</dd>
      <dt>policies</dt><dd class="reasons">${(d.reasons ?? []).join(', ') || '—'}</dd>
      <dt>policy version</dt><dd>${d.policyVersion}${trace.policy ? ` (sha-256 ${trace.policy.sha256.slice(0, 12)}…)` : ''}</dd>
      ${trace.grant && html`<dt>grant</dt><dd>${JSON.stringify(trace.grant)}</dd>`}
    </dl>
    <h2>Full trace</h2>
    <pre class="trace">${JSON.stringify(trace, null, 2)}</pre>`;
}

function Approvals() {
  const [page, error, reload] = useApi('/v1/approvals?status=pending');
  // A designated approver answers as themselves; the operator token must name the approver it answers for.
  const approver = [{ name: 'approver', label: 'Approver (with the operator token)' }];
  const answer = (id, verb) => async (reason, form) => {
    const named = form.get('approver');
    await api('POST', `/v1/approvals/${encodeURIComponent(id)}/${verb}`, { reason, ...(named ? { approver: named } : {}) });
    reload();
  };
  return html`<h1>Approvals waiting</h1>
    <${Failure} error=${error} />
    ${page && html`<table><thead><tr><th>asked</th><th>agent</th><th>for</th><th>action</th><th>resource</th><th>approvers</th><th></th></tr></thead>
      <tbody>${page.approvals.map((a) => html`<tr><td>${when(a.requestedAt)}</td><td>${a.agent}</td><td>${a.human ?? '—'}</td><td>${a.action}</td>
        <td>${JSON.stringify(a.resource)}</td><td>${a.approvers.join(', ')}</td>
        <td><${Confirmed} label="Approve" fields=${approver} onConfirm=${answer(a.id, 'approve')} /> <${Confirmed} label="Deny" danger fields=${approver} onConfirm=${answer(a.id, 'deny')} /></td></tr>`)}</tbody></table>
    ${page.approvals.length === 0 && html`<p class="note">Nothing waits.</p>`}`}`;
}

function WhatIf() {
  const [current] = useApi('/v1/policy-set');
  const [report, setReport] = useState(null);
  const [error, setError] = useState(null);
  const run = async (e) => {
    e.preventDefault();
    const form = new FormData(e.target);
    setError(null);
    setReport(null);
    try {
      const range = Object.fromEntries(['since', 'until'].map((k) => [k, form.get(k)]).filter(([, v]) => v).map(([k, v]) => [k, new Date(v).toISOString()]));
      setReport(await api('POST', '/v1/audit/what-if', { policies: { schema: current.schema, policies: form.get('policies') }, ...range }));
    } catch (err) {
      setError(err.message);
    }
  };
  if (!current) return html`<p class="note">Loading the policy set in force…</p>`;
  return html`<h1>What if</h1>
    <p class="note">Runs the recorded decisions again against a candidate policy set (the schema in force) and lists what would change.</p>
    <form onSubmit=${run}>
      <label>Candidate policies (version ${current.version} in force)<textarea name="policies" rows="16">${current.policies}</textarea></label>
      <div class="row"><label>Since <input name="since" type="datetime-local" /></label><label>Until <input name="until" type="datetime-local" /></label>
      <button type="submit">Run what-if</button></div>
    </form>
    <${Failure} error=${error} />
    ${report && html`<p class="summary">${report.decisions} decisions replayed: ${report.differing} would change (${report.allowToDeny} allow→deny, ${report.denyToAllow} deny→allow).</p>
      <table class="flips"><thead><tr><th>decision</th><th>subject</th><th>action</th><th>resource</th><th>change</th></tr></thead>
      <tbody>${report.records.filter((r) => r.change && r.change !== 'same').map((r) => html`<tr><td>${link(`/decisions/${r.id}`, when(r.at))}</td>
        <td>${r.subject.type} ${r.subject.id}</td><td>${r.action}</td><td>${r.resource.type} ${r.resource.id}</td><td>${r.change}</td></tr>`)}</tbody></table>`}`;
}

function KillSwitch() {
  const [scope, setScope] = useState('all');
  const [value, setValue] = useState('');
  const [result, setResult] = useState(null);
  const pull = async (reason) => {
    const body = { scope: scope === 'all' ? { all: true } : { [scope]: value }, mode: 'immediate', reason };
    setResult(await api('POST', '/v1/kill-switch', body));
  };
  return html`<h1>Kill switch</h1>
    <p class="note">Revokes every live agent in scope, on every node, before it answers.</p>
    <form class="filters" onSubmit=${(e) => e.preventDefault()}>
      <label>Scope <select value=${scope} onChange=${(e) => setScope(e.target.value)}><option value="all">every agent</option><option value="owner">an owner's agents</option><option value="tag">agents with a tag</option></select></label>
      ${scope !== 'all' && html`<label>${scope} <input value=${value} onInput=${(e) => setValue(e.target.value)} /></label>`}
    </form>
    <${Confirmed} label="Revoke them all" danger confirmWord="REVOKE" onConfirm=${pull} />
    ${result && html`<p class="summary">Revoked ${result.revoked.length}: ${result.revoked.join(', ') || 'none'}; confirmed by ${result.nodesConfirmed} of ${result.nodesExpected} nodes.</p>`}`;
}

function Delegation() {
  const [humans, error] = useApi('/v1/humans');
  const [agents] = useApi('/v1/agents?limit=1000');
  // Sub-agents are the ones a parent's token was exchanged for: the allowed `delegate` decisions.
  const [exchanges] = useApi('/v1/decisions?decision=true&limit=1000');
  if (error) return html`<${Failure} error=${error} />`;
  if (!humans || !agents || !exchanges) return html`<p class="note">Loading…</p>`;
  const children = new Map();
  for (const d of exchanges.decisions) {
    if (d.action !== 'delegate' || !d.subject || !d.resource) continue;
    if (!children.has(d.subject.id)) children.set(d.subject.id, new Set());
    children.get(d.subject.id).add(d.resource.id);
  }
  const status = new Map(agents.agents.map((a) => [a.id, a.status]));
  const agentItem = (id, how, seen) => html`<li data-agent=${id}>${how} ${link(`/agents/${encodeURIComponent(id)}`, id)} <${Status} of=${status.get(id) ?? 'unknown'} />
    ${children.has(id) && !seen.has(id) && html`<ul class="tree">${[...children.get(id)].map((child) => agentItem(child, 'delegated to', new Set([...seen, id])))}</ul>`}</li>`;
  const owned = (human) => agents.agents.filter((a) => a.owner === human);
  return html`<h1>Delegation</h1>
    <p class="note">Each person, the agents they own and the sub-agents those delegated to (by token exchange), and the agents acting for them under their grants.</p>
    <ul class="tree">${humans.humans.map((person) => html`<li data-human=${person.id}><strong>${person.id}</strong>
      <ul class="tree">${owned(person.id).map((a) => agentItem(a.id, 'owns', new Set()))}
        <${Grants} human=${person.id} /></ul></li>`)}</ul>`;
}

function Grants({ human }) {
  const [grants] = useApi(`/v1/humans/${encodeURIComponent(human)}/grants`);
  if (!grants) return null;
  return grants.grants.filter((g) => g.status === 'active').map((g) => html`<li>lets ${link(`/agents/${encodeURIComponent(g.agent)}`, g.agent)} act for them: ${g.purpose} (until ${when(g.expiresAt)})</li>`);
}

const PAGES = [['/agents', 'Agents'], ['/decisions', 'Decisions'], ['/approvals', 'Approvals'], ['/what-if', 'What if'], ['/delegation', 'Delegation'], ['/kill-switch', 'Kill switch']];

function route(path) {
  const [, first, second] = path.split('/');
  const id = second === undefined ? undefined : decodeURIComponent(second);
  if (first === 'agents' && id) return html`<${Agent} id=${id} />`;
  if (first === 'decisions' && id) return html`<${Decision} id=${id} />`;
  const pages = { decisions: Decisions, approvals: Approvals, 'what-if': WhatIf, 'kill-switch': KillSwitch, delegation: Delegation };
  const Page = pages[first] ?? Agents;
  return html`<${Page} />`;
}

function App() {
  if (!token()) return html`<${SignIn} />`;
  const path = location.hash.replace(/^#/, '') || '/agents';
  return html`<header><strong>Leash</strong>
      <nav>${PAGES.map(([p, name]) => html`<a href=${`#${p}`} class=${path.startsWith(p) ? 'here' : ''}>${name}</a>`)}</nav>
      <span class="who"><button class="plain" onClick=${signOut}>Sign out</button></span></header>
    <main key=${path}>${route(path)}</main>`;
}

const rerender = () => render(html`<${App} />`, document.getElementById('app'));
addEventListener('hashchange', rerender);
rerender();
