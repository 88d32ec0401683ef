/**
 * The translation chain of an address, drawn as a row of steps: the virtual address, each
 * page-table level (table, index, entry, flags), the guest-physical address and its region,
 * QEMU's host virtual address and the host physical address. Takes the daemon's translation
 * JSON (the same document as `virtmem translate --json`: 64-bit values as "0x..." strings).
 */

/** The parts of the translation document the view reads; everything else is ignored. */
export interface TranslationDoc {
  gva: string;
  cpu?: number;
  mapped: boolean;
  gpa: string | null;
  hva: string | null;
  hpa: string | null;
  walk: {
    outcome: string;
    mode: string;
    cr3: string;
    steps: Array<{ level: string; table: string; index: number; entry: string; leaf: boolean; flags: Record<string, unknown>; page?: string; nextTable?: string }>;
    pageSizeBytes?: number | null;
    message?: string;
  };
  target: null | {
    region?: { name: string | null; kind: string; start: string; end: string } | null;
    notMemory?: string | null;
    hpaUnavailable?: string | null;
  };
  notes?: string[];
}

/** Whether `v` has the fields the view needs (the API's answer is checked, not trusted). */
export function isTranslationDoc(v: unknown): v is TranslationDoc {
  if (typeof v !== 'object' || v === null) return false;
  const o = v as Record<string, unknown>;
  const w = o.walk as Record<string, unknown> | undefined;
  return typeof o.gva === 'string' && typeof o.mapped === 'boolean' && typeof w === 'object' && w !== null && Array.isArray(w.steps) && typeof w.mode === 'string';
}

const FLAG_LETTERS: Array<[key: string, letter: string, title: string]> = [
  ['present', 'P', 'present'], ['writable', 'W', 'writable'], ['user', 'U', 'user'], ['accessed', 'A', 'accessed'],
  ['dirty', 'D', 'dirty'], ['hugePage', 'PS', 'large page'], ['global', 'G', 'global'], ['noExecute', 'NX', 'no-execute'],
];

function el<K extends keyof HTMLElementTagNameMap>(tag: K, cls: string, text?: string): HTMLElementTagNameMap[K] {
  const e = document.createElement(tag);
  if (cls) e.className = cls;
  if (text !== undefined) e.textContent = text;
  return e;
}

function step(testId: string, title: string, main: string, details: string[], kind = ''): HTMLElement {
  const li = el('li', `step ${kind}`.trim());
  li.dataset.testid = testId;
  li.append(el('div', 'step-title', title), el('code', 'step-main', main));
  for (const d of details) li.append(el('div', 'step-detail', d));
  return li;
}

function rowTitle(text: string): HTMLElement {
  return el('h4', 'chain-title', text);
}

/** Renders `doc` into `out`, replacing what was there. */
export function renderTranslation(out: HTMLElement, doc: TranslationDoc, testPrefix: string): void {
  out.replaceChildren();
  // Two rows: the walk through the guest's page tables, then where the address lands.
  const chain = el('div', 'chain');
  chain.dataset.testid = `${testPrefix}-chain`;
  chain.setAttribute('aria-label', `translation of ${doc.gva}`);
  const walk = el('ol', 'chain-row');
  walk.setAttribute('aria-label', 'page-table walk in the guest');
  walk.append(step(`${testPrefix}-gva`, 'GVA', doc.gva, [`${doc.walk.mode} paging`, `CR3 ${doc.walk.cr3}`]));
  for (const s of doc.walk.steps) {
    const flags = FLAG_LETTERS.filter(([k]) => s.flags[k] === true).map(([, letter]) => letter).join(' ');
    const present = s.flags.present === true;
    const details = [`table ${s.table}`, `entry ${s.entry}`, flags ? `flags ${flags}` : 'not present'];
    if (s.leaf && s.page) details.push(`page ${s.page}`);
    walk.append(step(`${testPrefix}-level-${s.level}`, s.level, `index ${s.index}`, details, present ? (s.leaf ? 'leaf' : '') : 'missing'));
  }
  chain.append(rowTitle('Page-table walk (guest)'), walk);
  if (doc.mapped && doc.gpa) {
    const lands = el('ol', 'chain-row');
    lands.setAttribute('aria-label', 'guest-physical to host addresses');
    const region = doc.target?.region;
    const details = region ? [`${region.kind} ${region.name ?? ''}`.trim(), `${region.start}–${region.end}`] : [];
    if (doc.walk.pageSizeBytes) details.push(`${doc.walk.pageSizeBytes / 1024} KiB page`);
    lands.append(step(`${testPrefix}-gpa`, 'GPA', doc.gpa, details));
    lands.append(step(`${testPrefix}-hva`, 'HVA (in QEMU)', doc.hva ?? '—', doc.hva ? ['host virtual, QEMU process'] : [doc.target?.notMemory ?? 'not guest RAM'], doc.hva ? '' : 'missing'));
    lands.append(step(`${testPrefix}-hpa`, 'HPA', doc.hpa ?? '—', doc.hpa ? ['host physical (pagemap)'] : [doc.target?.hpaUnavailable ?? 'unknown'], doc.hpa ? '' : 'missing'));
    chain.append(rowTitle('Where it lands'), lands);
  }
  out.append(chain);
  const messages = [...(doc.walk.message ? [doc.walk.message] : []), ...(doc.notes ?? [])];
  if (messages.length > 0) {
    const notes = el('ul', 'notes');
    notes.dataset.testid = `${testPrefix}-notes`;
    for (const m of messages) notes.append(el('li', '', m));
    out.append(notes);
  }
}
