/**
 * The dashboard page: a host card and one card per guest, refreshed from the daemon's API every
 * couple of seconds (and at once when the daemon's event stream says something changed); the
 * set-memory form follows its operation to the end; the translate form draws the chain; the
 * policy section says what the automatic policy did last and why (loaded when the card appears,
 * then kept current by the stream's `policy` events).
 * All knowledge of the API's URLs and documents is in api.ts.
 */
import { GuestChart } from './chart.js';
import { formatBytes, formatPercent, parseSizeInput } from './format.js';
import { api, type GuestView, type LibvirtHostView, type Snapshot } from './api.js';
import { emptyPolicyView, mergePolicyView, policyLines, withPolicyEvent, type PolicyView } from './policy-model.js';
import { followOperation } from './progress.js';
import { renderTranslation } from './translate-view.js';

const REFRESH_MS = 2000;

interface GuestCard {
  root: HTMLElement;
  chart: GuestChart | null;
  busy: boolean;
  policy: PolicyView;
  /** The policy document is being fetched; until it has come the card retries on each refresh. */
  policyLoading: boolean;
  /** Why the last fetch of the policy document failed, or null. */
  policyError: string | null;
}

const cards = new Map<string, GuestCard>();
const $ = <T extends Element>(root: ParentNode, sel: string): T => {
  const e = root.querySelector<T>(sel);
  if (!e) throw new Error(`dashboard: element ${sel} missing from the page`);
  return e;
};
const safeId = (name: string): string => name.replace(/[^A-Za-z0-9_-]/g, '_');

function setText(sel: string, text: string): void {
  $(document, `[data-testid="${sel}"]`).textContent = text;
}

function setConnection(state: 'live' | 'down', text: string): void {
  const dot = $<HTMLElement>(document, '[data-testid="connection-dot"]');
  dot.className = `dot ${state}`;
  setText('connection', text);
}

function renderHost(s: Snapshot): void {
  const h = s.host;
  setText('host-memtotal', formatBytes(h.memTotalBytes));
  setText('host-memavailable', formatBytes(h.memAvailableBytes));
  setText('host-psi-some', formatPercent(h.psiSomeAvg10));
  setText('host-psi-full', formatPercent(h.psiFullAvg10));
  const rss = s.guests.reduce((acc, g) => acc + (g.sample.hostRssBytes ?? 0), 0);
  setText('host-guests-rss', formatBytes(rss));
  if (h.memTotalBytes && h.memAvailableBytes !== null) {
    const used = (h.memTotalBytes - h.memAvailableBytes) / h.memTotalBytes;
    $<HTMLElement>(document, '.meter-used').style.width = `${(used * 100).toFixed(1)}%`;
    $<HTMLElement>(document, '.meter-guests').style.width = `${Math.min(used, rss / h.memTotalBytes) * 100}%`;
  }
}

function makeCard(g: GuestView): GuestCard {
  const tpl = $<HTMLTemplateElement>(document, '#guest-card');
  const root = (tpl.content.firstElementChild as HTMLElement).cloneNode(true) as HTMLElement;
  const id = safeId(g.name);
  root.dataset.testid = `guest-${id}`;
  root.dataset.guest = g.name;
  root.setAttribute('aria-labelledby', `guest-${id}-title`);
  const title = $(root, '.guest-name');
  title.id = `guest-${id}-title`;
  title.textContent = g.name;
  // Test hooks and unique ids for every control (labels wrap their inputs, so ids are for tests).
  const hooks: Array<[string, string]> = [
    ['.guest-state', 'state'], ['.g-total', 'total'], ['.g-max', 'max'], ['.g-used', 'used'], ['.g-avail', 'available'], ['.g-rss', 'rss'], ['.g-age', 'stats-age'],
    ['.chart', 'chart'], ['.setmem', 'setmem-form'], ['.setmem-size', 'setmem-size'], ['.setmem-unit', 'setmem-unit'], ['.setmem-go', 'setmem-submit'],
    ['.setmem-progress', 'setmem-progress'], ['.setmem-status', 'setmem-status'], ['.translate', 'translate-form'],
    ['.translate-address', 'translate-address'], ['.translate-cpu', 'translate-cpu'], ['.translate-go', 'translate-submit'],
    ['.translate-error', 'translate-error'], ['.translate-out', 'translate-out'],
    ['.policy', 'policy'], ['.policy-state', 'policy-state'], ['.policy-bounds', 'policy-bounds'], ['.policy-decision', 'policy-decision'],
    ['.policy-ago', 'policy-ago'], ['.policy-reason', 'policy-reason'],
  ];
  for (const [sel, hook] of hooks) {
    const e = $<HTMLElement>(root, sel);
    e.dataset.testid = `${hook}-${id}`;
    e.id = `${hook}-${id}`;
  }
  const card: GuestCard = { root, chart: null, busy: false, policy: emptyPolicyView(g.name), policyLoading: false, policyError: null };
  wireSetMem(card, g.name, id);
  wireTranslate(card, g.name, id);
  return card;
}

function wireSetMem(card: GuestCard, name: string, id: string): void {
  const form = $<HTMLFormElement>(card.root, '.setmem');
  const size = $<HTMLInputElement>(form, '.setmem-size');
  const unit = $<HTMLSelectElement>(form, '.setmem-unit');
  const go = $<HTMLButtonElement>(form, '.setmem-go');
  const box = $<HTMLElement>(form, '.progress-box');
  const bar = $<HTMLProgressElement>(form, '.setmem-progress');
  const status = $<HTMLElement>(form, '.setmem-status');
  form.addEventListener('submit', (ev) => {
    ev.preventDefault();
    if (card.busy) return;
    const parsed = parseSizeInput(size.value, unit.value);
    box.hidden = false;
    // A refused input shows only why; the bar of an earlier resize would read as this one's.
    bar.hidden = 'error' in parsed;
    if ('error' in parsed) {
      delete status.dataset.state;
      status.className = 'setmem-status failed';
      status.textContent = parsed.error;
      return;
    }
    card.busy = true;
    go.disabled = true;
    status.className = 'setmem-status';
    status.textContent = `Starting: target ${formatBytes(parsed.bytes)}…`;
    bar.value = 0;
    void followOperation(name, parsed.bytes, (p) => {
      bar.max = 1000;
      bar.value = Math.round(p.fraction * 1000);
      bar.dataset.actualBytes = p.actualBytes === null ? '' : String(p.actualBytes);
      bar.dataset.targetBytes = String(p.targetBytes);
      bar.dataset.state = p.state;
      status.dataset.state = p.state;
      status.className = `setmem-status ${p.state === 'succeeded' ? 'done' : p.state === 'failed' ? 'failed' : ''}`;
      status.textContent = p.text;
      if (p.state !== 'running') { card.busy = false; go.disabled = false; scheduleRefresh(0); }
    }).catch((err: unknown) => {
      status.className = 'setmem-status failed';
      status.dataset.state = 'failed';
      status.textContent = err instanceof Error ? err.message : String(err);
      card.busy = false;
      go.disabled = false;
    });
  });
  size.setAttribute('aria-describedby', `setmem-status-${id}`);
}

function wireTranslate(card: GuestCard, name: string, id: string): void {
  const form = $<HTMLFormElement>(card.root, '.translate');
  const addr = $<HTMLInputElement>(form, '.translate-address');
  const cpu = $<HTMLInputElement>(form, '.translate-cpu');
  const go = $<HTMLButtonElement>(form, '.translate-go');
  const err = $<HTMLElement>(form, '.translate-error');
  const out = $<HTMLElement>(card.root, '.translate-out');
  form.addEventListener('submit', (ev) => {
    ev.preventDefault();
    const a = addr.value.trim().replace(/_/g, '');
    err.hidden = true;
    if (!/^(0x)?[0-9a-fA-F]{1,16}$/.test(a)) {
      err.hidden = false;
      err.textContent = `'${addr.value}' is not an address: type up to 16 hex digits, e.g. 0xffffffff81000000`;
      return;
    }
    const cpuIndex = Number(cpu.value || '0');
    go.disabled = true;
    out.setAttribute('aria-busy', 'true');
    api.translate(name, a.startsWith('0x') ? a : `0x${a}`, cpuIndex)
      .then((doc) => renderTranslation(out, doc, `translate-${id}`))
      .catch((e: unknown) => { err.hidden = false; err.textContent = e instanceof Error ? e.message : String(e); })
      .finally(() => { go.disabled = false; out.removeAttribute('aria-busy'); });
  });
}

/** Daemon clock minus the browser's, from the last snapshot: "ago" is measured on the daemon's clock. */
let clockOffsetMs = 0;

/** Fetches the guest's policy document (settings and last decision) into its card. */
function loadPolicy(card: GuestCard): void {
  card.policyLoading = true;
  api.policy(card.policy.name)
    .then((loaded) => { card.policy = mergePolicyView(card.policy, loaded); card.policyError = null; })
    .catch((err: unknown) => { card.policyError = err instanceof Error ? err.message : String(err); })
    .finally(() => { card.policyLoading = false; renderPolicy(card); });
}

/** The card's policy section; every text goes in with textContent (the reason is arbitrary text). */
function renderPolicy(card: GuestCard): void {
  const l = policyLines(card.policy, Date.now() + clockOffsetMs);
  const state = $<HTMLElement>(card.root, '.policy-state');
  const failed = l.state === 'loading' && card.policyError !== null;
  state.textContent = failed ? `unknown: ${card.policyError}` : l.status;
  state.dataset.state = failed ? 'unknown' : l.state;
  state.classList.toggle('off', l.state !== 'on');
  const bounds = $<HTMLElement>(card.root, '.policy-bounds');
  bounds.textContent = l.bounds;
  const settings = card.policy.settings;
  bounds.dataset.floorBytes = settings?.floorBytes == null ? '' : String(settings.floorBytes);
  bounds.dataset.ceilingBytes = settings?.ceilingBytes == null ? '' : String(settings.ceilingBytes);
  const decision = $<HTMLElement>(card.root, '.policy-decision');
  decision.textContent = l.decision;
  decision.dataset.action = card.policy.last?.action ?? '';
  decision.dataset.at = card.policy.last?.at ?? '';
  $(card.root, '.policy-ago').textContent = l.ago;
  $(card.root, '.policy-reason').textContent = l.reason;
}

/** A `policy` event from the stream: the decision goes straight into its guest's card. */
function onPolicyEvent(data: unknown): void {
  const views = new Map([...cards].map(([name, c]) => [name, c.policy]));
  const view = withPolicyEvent(views, data);
  const card = view && cards.get(view.name);
  if (!view || !card) return;
  card.policy = view;
  renderPolicy(card);
}

function renderGuest(g: GuestView): void {
  let card = cards.get(g.name);
  const list = $(document, '#guests');
  if (!card) {
    card = makeCard(g);
    cards.set(g.name, card);
    list.append(card.root);
  }
  const root = card.root;
  if (!card.chart) {
    const chart = new GuestChart($(root, '.chart'), `chart-${safeId(g.name)}`);
    card.chart = chart;
    // The daemon keeps recent samples: a page opened now shows the last minutes at once.
    const s = g.sample;
    const bootBytes = s.bootInGuestBytes !== null && s.balloonHeldBytes !== null ? s.bootInGuestBytes + s.balloonHeldBytes : null;
    api.history(g.name, bootBytes).then((older) => chart.prefill(older)).catch(() => { /* the live samples still come */ });
  }
  const state = $<HTMLElement>(root, '.guest-state');
  state.textContent = g.state;
  state.classList.toggle('off', g.state !== 'running');
  const figure = (sel: string, bytes: number | null): void => {
    const e = $<HTMLElement>(root, sel);
    e.textContent = formatBytes(bytes);
    e.dataset.bytes = bytes === null ? '' : String(bytes);
  };
  figure('.g-total', g.totalBytes);
  figure('.g-max', g.maxBytes);
  figure('.g-used', g.sample.guestUsedBytes);
  figure('.g-avail', g.sample.guestAvailableBytes);
  figure('.g-rss', g.sample.hostRssBytes);
  // Used/available come from the guest's own report, which can trail the balloon by a period.
  $(root, '.g-age').textContent = g.statsAgeS === null ? 'none yet' : `${g.statsAgeS.toFixed(1)} s ago`;
  card.chart.push(g.sample);
  if (card.policy.settings === null && !card.policyLoading) loadPolicy(card);
  renderPolicy(card);
}

/** The "libvirt hosts" section: one table per host, its domains' memory; hidden without hosts. */
function renderLibvirtHosts(hosts: readonly LibvirtHostView[]): void {
  const section = $<HTMLElement>(document, '[data-testid="libvirt-hosts"]');
  section.hidden = hosts.length === 0;
  const list = $<HTMLElement>(document, '[data-testid="libvirt-hosts-list"]');
  const el = <K extends keyof HTMLElementTagNameMap>(tag: K, text?: string, testid?: string): HTMLElementTagNameMap[K] => {
    const e = document.createElement(tag);
    if (text !== undefined) e.textContent = text;
    if (testid) e.dataset.testid = testid;
    return e;
  };
  const tables = hosts.map((h, i) => {
    const box = el('div', undefined, `libvirt-host-${i}`);
    box.dataset.uri = h.uri;
    box.dataset.state = h.up ? 'up' : 'down';
    const head = el('h3', `${h.uri} `);
    const badge = el('span', h.up ? 'up' : 'down', `libvirt-host-state-${i}`);
    badge.className = `badge${h.up ? '' : ' off'}`;
    head.append(badge);
    box.append(head);
    if (!h.up && h.reason) box.append(el('p', h.reason, `libvirt-host-reason-${i}`));
    const table = el('table');
    const hr = el('tr');
    for (const t of ['Domain', 'State', 'Memory', 'Max']) hr.append(el('th', t));
    table.append(hr);
    for (const d of h.domains) {
      const tr = el('tr', undefined, `libvirt-domain-${i}-${safeId(d.name)}`);
      tr.dataset.domain = d.name;
      tr.dataset.bytes = d.currentBytes === null ? '' : String(d.currentBytes);
      tr.append(el('td', d.name), el('td', d.state), el('td', formatBytes(d.currentBytes)), el('td', formatBytes(d.maxBytes)));
      table.append(tr);
    }
    box.append(table);
    return box;
  });
  list.replaceChildren(...tables);
}

let timer: ReturnType<typeof setTimeout> | null = null;
let dueAtMs = 0;
let inFlight: AbortController | null = null;

/**
 * Fetch and draw after `delayMs`, or sooner if a refresh is already due sooner (so a burst of
 * events cannot keep pushing it back); a refresh in flight is abandoned when the next starts.
 */
function scheduleRefresh(delayMs: number): void {
  const due = Date.now() + delayMs;
  if (timer && dueAtMs <= due) return;
  if (timer) clearTimeout(timer);
  dueAtMs = due;
  timer = setTimeout(() => { timer = null; void refresh(); }, delayMs);
}

async function refresh(): Promise<void> {
  inFlight?.abort();
  const ctl = new AbortController();
  inFlight = ctl;
  const bound = setTimeout(() => ctl.abort(), 10_000);
  try {
    const [snap, hosts] = await Promise.all([api.snapshot(ctl.signal), api.libvirtHosts(ctl.signal)]);
    clockOffsetMs = snap.tS * 1000 - Date.now();
    renderHost(snap);
    renderLibvirtHosts(hosts);
    for (const g of snap.guests) renderGuest(g);
    for (const [name, card] of cards) {
      if (!snap.guests.some((g) => g.name === name)) { card.root.remove(); cards.delete(name); }
    }
    $<HTMLElement>(document, '[data-testid="no-guests"]').hidden = snap.guests.length > 0;
    $<HTMLElement>(document, '[data-testid="page-error"]').hidden = true;
    document.body.dataset.updatedAt = String(snap.tS);
    setConnection('live', `live · ${new Date(snap.tS * 1000).toLocaleTimeString()}`);
  } catch (err) {
    if (ctl.signal.aborted && inFlight !== ctl) return;
    setConnection('down', 'no answer from the daemon');
    const e = $<HTMLElement>(document, '[data-testid="page-error"]');
    e.hidden = false;
    e.textContent = err instanceof Error ? err.message : String(err);
  } finally {
    clearTimeout(bound);
    if (inFlight === ctl) { inFlight = null; scheduleRefresh(REFRESH_MS); }
  }
}

function start(): void {
  // The event stream only makes the page react sooner; polling keeps it right without it.
  api.watch(() => scheduleRefresh(150), onPolicyEvent);
  void refresh();
}

// uPlot's script is deferred like this module; both have run by DOMContentLoaded.
if (document.readyState === 'loading') document.addEventListener('DOMContentLoaded', start);
else start();
