/**
 * The dashboard page: this host's card with virtmem's own guests, then one group per libvirt
 * host (`daemon --hosts`: up or down and why, its memory) with its guests; every guest of every
 * host has the same card, keyed by host and name. Refreshed from the daemon's API every couple
 * of seconds (and soon after the daemon's event stream says something changed; a guest's new
 * figures, a host going down and a policy decision go straight to their card or group). The
 * set-memory form follows its operation to the end; the translate form (virtmem's own guests
 * only) draws the chain; the policy section says what the automatic policy did last and why
 * (loaded when the card appears, then kept current by the stream's `policy` events).
 * All knowledge of the API's URLs and documents is in api.ts.
 */
import { GuestChart } from './chart.js';
import { formatBytes, formatPercent, parseSizeInput } from './format.js';
import { api, type GuestRef, type GuestView, type LibvirtHostView, type Snapshot } from './api.js';
import { cardId, cardKey, groupByHost } from './model.js';
import { emptyPolicyView, mergePolicyView, policyLines, withPolicyEvent, type PolicyView } from './policy-model.js';
import { followOperation } from './progress.js';
import { renderTranslation } from './translate-view.js';

const REFRESH_MS = 2000;

interface GuestCard {
  /** The guest the card's calls address (its host's paths for a libvirt host's guest). */
  ref: GuestRef;
  root: HTMLElement;
  chart: GuestChart | null;
  busy: boolean;
  policy: PolicyView;
  /** The policy document is being fetched; until it has come the card retries on each refresh. */
  policyLoading: boolean;
  /** Why the last fetch of the policy document failed, or null. */
  policyError: string | null;
}

/** One libvirt host's group: its header and the container of its guests' cards. */
interface HostGroupEl {
  root: HTMLElement;
  guests: HTMLElement;
  /** The host's index in GET /api/v1/hosts: its test hooks (libvirt-host-N) and its guests' (NAME@N). */
  index: number;
}

/** Cards by cardKey(host, name); libvirt hosts' groups by URI. */
const cards = new Map<string, GuestCard>();
const groups = new Map<string, HostGroupEl>();
const $ = <T extends Element>(root: ParentNode, sel: string): T => {
  const e = root.querySelector<T>(sel);
  if (!e) throw new Error(`dashboard: element ${sel} missing from the page`);
  return e;
};

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
  // This host's own guests: a libvirt host's may run elsewhere.
  const rss = s.guests.reduce((acc, g) => acc + (g.host === null ? g.sample.hostRssBytes ?? 0 : 0), 0);
  setText('host-guests-rss', formatBytes(rss));
  if (h.memTotalBytes && h.memAvailableBytes !== null) {
    const used = (h.memTotalBytes - h.memAvailableBytes) / h.memTotalBytes;
    $<HTMLElement>(document, '.meter-used').style.width = `${(used * 100).toFixed(1)}%`;
    $<HTMLElement>(document, '.meter-guests').style.width = `${Math.min(used, rss / h.memTotalBytes) * 100}%`;
  }
}

/** Test hooks and unique ids of every card's parts (labels wrap their inputs, so ids are for tests). */
const CARD_HOOKS: ReadonlyArray<[string, string]> = [
  ['.guest-state', 'state'], ['.guest-host', 'on-host'], ['.g-total', 'total'], ['.g-max', 'max'], ['.g-used', 'used'], ['.g-avail', 'available'], ['.g-rss', 'rss'], ['.g-age', 'stats-age'],
  ['.chart', 'chart'], ['.setmem', 'setmem-form'], ['.setmem-size', 'setmem-size'], ['.setmem-unit', 'setmem-unit'], ['.setmem-go', 'setmem-submit'],
  ['.setmem-progress', 'setmem-progress'], ['.setmem-status', 'setmem-status'],
  ['.policy', 'policy'], ['.policy-state', 'policy-state'], ['.policy-bounds', 'policy-bounds'], ['.policy-decision', 'policy-decision'],
  ['.policy-ago', 'policy-ago'], ['.policy-reason', 'policy-reason'],
  ['.host-memory', 'host-memory'], ['.hm-backing', 'hm-backing'], ['.hm-placement', 'hm-placement'], ['.hm-cgroup', 'hm-cgroup'], ['.hm-ksm', 'hm-ksm'],
];
/** The translate form's, on virtmem's own guests' cards only. */
const TRANSLATE_HOOKS: ReadonlyArray<[string, string]> = [
  ['.translate', 'translate-form'], ['.translate-address', 'translate-address'], ['.translate-cpu', 'translate-cpu'], ['.translate-go', 'translate-submit'],
  ['.translate-error', 'translate-error'], ['.translate-out', 'translate-out'],
];

/** A new card for `g`; `hostIndex`: its libvirt host's index in GET /hosts, null for virtmem's own guest. */
function makeCard(g: GuestView, hostIndex: number | null): GuestCard {
  const tpl = $<HTMLTemplateElement>(document, '#guest-card');
  const root = (tpl.content.firstElementChild as HTMLElement).cloneNode(true) as HTMLElement;
  const id = cardId(g.name, hostIndex);
  root.dataset.testid = `guest-${id}`;
  root.dataset.guest = g.name;
  if (g.host !== null) root.dataset.host = g.host;
  root.setAttribute('aria-labelledby', `guest-${id}-title`);
  const title = $(root, '.guest-name');
  title.id = `guest-${id}-title`;
  title.textContent = g.name;
  const onHost = $<HTMLElement>(root, '.guest-host');
  onHost.textContent = g.host === null ? '' : `on ${g.host}`;
  onHost.hidden = g.host === null;
  // Translation reads guest RAM through QEMU's process: virtmem's own guests only.
  const local = g.host === null;
  if (!local) {
    $(root, '.translate').remove();
    $(root, '.translate-out').remove();
    $(root, '.tools').classList.add('single');
  }
  for (const [sel, hook] of local ? [...CARD_HOOKS, ...TRANSLATE_HOOKS] : CARD_HOOKS) {
    const e = $<HTMLElement>(root, sel);
    e.dataset.testid = `${hook}-${id}`;
    e.id = `${hook}-${id}`;
  }
  const ref = { host: g.host, name: g.name };
  const card: GuestCard = { ref, root, chart: null, busy: false, policy: emptyPolicyView(g.name, g.host), policyLoading: false, policyError: null };
  wireSetMem(card, id);
  if (local) wireTranslate(card, g.name, id);
  return card;
}

function wireSetMem(card: GuestCard, id: string): void {
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
    // Until this resize reports, nothing of the last one's end may read as this one's.
    delete status.dataset.state;
    delete bar.dataset.state;
    bar.value = 0;
    void followOperation(card.ref, parsed.bytes, (p) => {
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
  api.policy(card.ref)
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

/** A `policy` event from the stream: the decision goes straight into its guest's card (by host and name). */
function onPolicyEvent(data: unknown): void {
  const views = new Map([...cards].map(([key, c]) => [key, c.policy]));
  const view = withPolicyEvent(views, data);
  const card = view && cards.get(cardKey(view.host, view.name));
  if (!view || !card) return;
  card.policy = view;
  renderPolicy(card);
}

/** The card's state and figures (also straight from a `memory` event, before the next refresh). */
function renderFigures(card: GuestCard, g: GuestView): void {
  const root = card.root;
  const state = $<HTMLElement>(root, '.guest-state');
  // Stale: the daemon has lost its line to the guest (monitor, or libvirt host): old numbers.
  state.textContent = g.stale ? `${g.state} · stale` : g.state;
  state.classList.toggle('off', g.state !== 'running' || g.stale);
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
  // Its memory on the host: backing, placement, cgroup, KSM (the section hides when the daemon does not say).
  const hm = g.hostMemory;
  $<HTMLElement>(root, '.host-memory').hidden = hm === null;
  if (hm) {
    $(root, '.hm-backing').textContent = hm.backing;
    $(root, '.hm-placement').textContent = hm.placement;
    $(root, '.hm-cgroup').textContent = hm.cgroup;
    $(root, '.hm-ksm').textContent = hm.ksm;
  }
}

/** Draws `g` into its card, making the card (in `container`) when it is new. */
function renderGuest(g: GuestView, container: HTMLElement, hostIndex: number | null): void {
  const key = cardKey(g.host, g.name);
  let card = cards.get(key);
  if (!card) {
    card = makeCard(g, hostIndex);
    cards.set(key, card);
    container.append(card.root);
  }
  if (!card.chart) {
    const chart = new GuestChart($(card.root, '.chart'), `chart-${cardId(g.name, hostIndex)}`);
    card.chart = chart;
    // The daemon keeps recent samples: a page opened now shows the last minutes at once.
    const s = g.sample;
    const bootBytes = s.bootInGuestBytes !== null && s.balloonHeldBytes !== null ? s.bootInGuestBytes + s.balloonHeldBytes : null;
    api.history(card.ref, bootBytes).then((older) => chart.prefill(older)).catch(() => { /* the live samples still come */ });
  }
  renderFigures(card, g);
  card.chart.push(g.sample);
  if (card.policy.settings === null && !card.policyLoading) loadPolicy(card);
  renderPolicy(card);
}

/** A `memory` event: the guest's new figures go straight into its card (the chart gets them on the next refresh). */
function onMemoryEvent(g: GuestView): void {
  const card = cards.get(cardKey(g.host, g.name));
  if (card) renderFigures(card, g);
}

/** A new group for libvirt host `h` (index `index` in GET /hosts): header and its guests' container. */
function makeHostGroup(h: LibvirtHostView, index: number): HostGroupEl {
  const tpl = $<HTMLTemplateElement>(document, '#host-group');
  const root = (tpl.content.firstElementChild as HTMLElement).cloneNode(true) as HTMLElement;
  root.dataset.testid = `libvirt-host-${index}`;
  root.dataset.uri = h.uri;
  root.setAttribute('aria-labelledby', `libvirt-host-${index}-title`);
  const title = $(root, '.host-title');
  title.id = `libvirt-host-${index}-title`;
  $(title, '.host-uri').textContent = h.uri;
  const hooks: Array<[string, string]> = [['.host-state', 'state'], ['.host-reason', 'reason'], ['.h-memtotal', 'memtotal'], ['.h-memavailable', 'memavailable'], ['.h-budget', 'budget'], ['.h-guests', 'guests'], ['.guests', 'cards']];
  for (const [sel, hook] of hooks) $<HTMLElement>(root, sel).dataset.testid = `libvirt-host-${hook}-${index}`;
  return { root, guests: $<HTMLElement>(root, '.guests'), index };
}

/** The group's header: up or down and why, the host's memory, its policy budget, its guests. */
function renderHostGroup(grp: HostGroupEl, h: LibvirtHostView): void {
  grp.root.dataset.state = h.up ? 'up' : 'down';
  const badge = $<HTMLElement>(grp.root, '.host-state');
  badge.textContent = h.up ? 'up' : 'down';
  badge.classList.toggle('off', !h.up);
  const reason = $<HTMLElement>(grp.root, '.host-reason');
  reason.hidden = h.up || !h.reason;
  reason.textContent = h.up ? '' : h.reason ?? '';
  $(grp.root, '.h-memtotal').textContent = formatBytes(h.memTotalBytes);
  $(grp.root, '.h-memavailable').textContent = formatBytes(h.memAvailableBytes);
  $(grp.root, '.h-budget').textContent = h.budgetBytes === null ? 'none' : formatBytes(h.budgetBytes);
  $(grp.root, '.h-guests').textContent = String(h.guests);
}

/** A libvirt host's `host` event (it went down, came back): its header at once. */
function onHostEvent(h: LibvirtHostView): void {
  const grp = groups.get(h.uri);
  if (grp) renderHostGroup(grp, h);
}

/**
 * One group per libvirt host, in the daemon's order; hidden without hosts. The hosts are fixed
 * for a daemon's life: when they differ (the page now talks to a daemon started with other
 * hosts) the groups and their cards are made anew, so hooks and indexes stay one host's.
 */
function renderLibvirtHosts(hosts: readonly LibvirtHostView[]): void {
  $<HTMLElement>(document, '[data-testid="libvirt-hosts"]').hidden = hosts.length === 0;
  const same = hosts.length === groups.size && hosts.every((h, i) => groups.get(h.uri)?.index === i);
  if (!same) {
    for (const [key, card] of cards) {
      if (card.ref.host !== null) { card.root.remove(); cards.delete(key); }
    }
    groups.clear();
    const made = hosts.map((h, i) => {
      const grp = makeHostGroup(h, i);
      groups.set(h.uri, grp);
      return grp.root;
    });
    $<HTMLElement>(document, '[data-testid="libvirt-hosts-list"]').replaceChildren(...made);
  }
  for (const h of hosts) renderHostGroup(groups.get(h.uri)!, h);
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
    const shown = new Set<string>();
    for (const grp of groupByHost(snap.guests, hosts)) {
      const container = grp.host === null ? $<HTMLElement>(document, '#guests') : groups.get(grp.host.uri)!.guests;
      for (const g of grp.guests) {
        renderGuest(g, container, grp.index);
        shown.add(cardKey(g.host, g.name));
      }
    }
    for (const [key, card] of cards) {
      if (!shown.has(key)) { card.root.remove(); cards.delete(key); }
    }
    $<HTMLElement>(document, '[data-testid="no-guests"]').hidden = shown.size > 0;
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
  api.watch({ change: () => scheduleRefresh(150), memory: onMemoryEvent, policy: onPolicyEvent, host: onHostEvent });
  void refresh();
}

// uPlot's script is deferred like this module; both have run by DOMContentLoaded.
if (document.readyState === 'loading') document.addEventListener('DOMContentLoaded', start);
else start();
