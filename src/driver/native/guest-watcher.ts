/**
 * One guest's watcher (the native watch has one per running guest, watch.ts): holds the guest's watch monitor (qmp-watch.sock, reserved for a
 * long-lived watcher so CLI calls on qmp.sock are never blocked), follows QEMU's events, and
 * keeps the guest's live model current. Every question to QEMU has a per-guest bound; a guest
 * whose monitor does not answer in time is marked stale and stalls nothing else. The watcher
 * reconnects by itself while QEMU lives and ends when QEMU is gone.
 */
import { stat } from 'node:fs/promises';
import { setTimeout as delay } from 'node:timers/promises';
import { QmpClient, queryBalloon, queryMemoryDevices, queryBalloonGuestStats, queryStatus, requestBalloonGuestStats, type BalloonGuestStats, type QmpEventStream } from '../../qmp/index.js';
import { BALLOON_QOM_PATH } from './qemu-argv.js';
import { balloonBaseKiB } from './qemu-memory.js';
import type { RunPaths } from './paths.js';
import type { HeldLock } from './lock.js';
import { isProcessAlive, readProcStat, readRssKiB, CLOCK_TICKS_PER_S } from './host-process.js';
import { readRunRecord, type RunningRecord } from './run-status.js';
import { GuestPressureFeed } from './guest-pressure.js';
import { applyBalloon, applyTarget, applyDefinition, applyHostMemory, memorySettled, viewFromDefinition, setMonitor, setState, type GuestView } from '../view.js';
import type { DomainDef } from '../../domain/definition.js';
import type { GuestHostMemory } from '../domain-memory-api.js';
import { applyDevices, applyEvent, applyGuestStats, applySizeEvent, countSizeEvent } from './qmp-view.js';

/** Events that change the model. */
const EVENTS = ['BALLOON_CHANGE', 'MEMORY_DEVICE_SIZE_CHANGE', 'SHUTDOWN', 'STOP', 'RESUME', 'RESET', 'POWERDOWN'] as const;

/** Statistics are polled when their period has come round, less this (tick jitter). */
const STATS_SLACK_MS = 250;

/**
 * A tick that asks for a new statistics report (the guests the policy acts on) reads
 * `guest-stats` this often until the report changed, for at most FRESH_STATS_WAIT_MS; the tick
 * waits at most FRESH_STATS_BOUND_MS for all of it (a slow monitor finishes on its own).
 */
const FRESH_STATS_POLL_MS = 20;
const FRESH_STATS_WAIT_MS = 200;
const FRESH_STATS_BOUND_MS = 400;

/** Ask a quiet guest's monitor at least this often. */
const LIVENESS_MS = 10_000;

/**
 * While a guest's memory moves, its balloon and devices are read this often: QEMU sends each
 * size event at most once a second, so events alone leave the view up to a second behind, and
 * can pair a new plugged size with a balloon size from before the inflation.
 */
const MOVING_READ_MS = 200;
/** ... for at most this long after the last change was sent or seen (a guest that never gets there is not read for ever). */
const MOVING_READ_FOR_MS = 30_000;

export interface WatcherOptions {
  /** Bound on every question to this guest's monitor (and on connecting). */
  boundMs: number;
  /** Wait between reconnection attempts while QEMU lives. */
  reconnectMs: number;
  /** The guest's memory on the host now (host-memory-facts.ts), read every tick; absent: not followed. */
  readHostMemory?: (live: DomainDef, pid: number) => Promise<GuestHostMemory>;
  /**
   * The domain's job lock if free now, else null. Asking for a report sets the statistics period
   * twice; under the lock that every period change holds from QEMU to the run record, it never
   * sets back a period someone is changing. Absent: asked without it.
   */
  tryJobLock?: () => Promise<HeldLock | null>;
}

/** What changed: the memory numbers, the state/monitor, or the guest went away. */
export type WatchChange = 'memory' | 'state' | 'gone';

export class GuestWatcher {
  readonly model: GuestView;
  /** What QEMU's balloon sizes count beyond boot RAM: the live definition's DIMMs (qemu-memory.ts balloonBaseKiB). */
  #balloonBaseBytes: number;
  /** The live definition as last taken (its memory devices change with hot-plugs). */
  #live: DomainDef;
  #client: QmpClient | null = null;
  #stream: QmpEventStream | null = null;
  #stop = new AbortController();
  #loop: Promise<void> | null = null;
  /** A question to QEMU is in flight: the next tick does not queue another behind it. */
  #busy = false;
  #inflight: Promise<void> | null = null;
  #statsAtMs = 0;
  #recordMtimeMs = 0;
  #gone = false;
  #pressure: GuestPressureFeed;
  /** The read of the balloon and devices in flight, and whether another is wanted after it. */
  #sizesRead: Promise<void> | null = null;
  #sizesAgain = false;
  /** Size events that came since the last read began: their sizes are taken only if that read fails. */
  #sizeEvents: Array<{ event: string; data: Record<string, unknown> }> = [];
  #movingTimer: NodeJS.Timeout | null = null;
  #movingUntilMs = 0;

  constructor(
    private readonly paths: RunPaths,
    private readonly rec: RunningRecord,
    private readonly onChange: (w: GuestWatcher, what: WatchChange) => void,
    private readonly opts: WatcherOptions,
  ) {
    this.model = viewFromDefinition(rec.live, { id: rec.id, state: rec.paused ? 'paused' : 'running', pid: rec.pid }, Date.now() / 1000);
    this.#balloonBaseBytes = balloonBaseKiB(rec.live) * 1024;
    this.#live = rec.live;
    this.#pressure = new GuestPressureFeed(paths.pressure, (p) => { this.model.pressure = p; });
  }

  get name(): string {
    return this.model.name;
  }

  /** The live definition as last taken (null once QEMU is gone). */
  get live(): DomainDef | null {
    return this.#gone ? null : this.#live;
  }

  get gone(): boolean {
    return this.#gone;
  }

  /**
   * The held connection while it is up, also when stale: a question on it is bounded like every
   * other (its answer bound), and QEMU serves all its monitors from one loop, so a fresh
   * connection would not be answered sooner; it would only leave one more connection queued at
   * a QEMU that is not accepting.
   */
  held(): QmpClient | null {
    return (this.model.monitor === 'connected' || this.model.monitor === 'stale') && this.#client?.state === 'running' ? this.#client : null;
  }

  start(): void {
    this.#loop ??= this.#run().catch(() => { /* every failure is handled inside; never leaves a rejection */ });
    this.#pressure.start();
  }

  /** Stops watching: the guest keeps running. Resolves when the connection is closed. */
  async stop(): Promise<void> {
    this.#stop.abort();
    if (this.#movingTimer) clearTimeout(this.#movingTimer);
    this.#stream?.close();
    this.#client?.destroy();
    await Promise.all([this.#loop, this.#pressure.stop()]);
  }

  #now(): number {
    return Date.now() / 1000;
  }

  #changed(what: WatchChange): void {
    this.onChange(this, what);
  }

  async #alive(): Promise<boolean> {
    return isProcessAlive(this.rec.pid, this.rec.startTicks);
  }

  async #run(): Promise<void> {
    let first = true;
    while (!this.#stop.signal.aborted) {
      if (!(await this.#alive())) return this.#markGone();
      if (setMonitor(this.model, 'connecting', this.#now())) this.#changed('state');
      let client: QmpClient;
      try {
        // Every question on this connection, also the driver's own calls on it, has the bound.
        client = await QmpClient.connect(this.paths.qmpWatch, { timeoutMs: this.opts.boundMs, answerTimeoutMs: this.opts.boundMs, signal: this.#stop.signal });
      } catch {
        if (this.#stop.signal.aborted) return;
        if (setMonitor(this.model, 'down', this.#now())) this.#changed('state');
        await delay(this.opts.reconnectMs, undefined, { signal: this.#stop.signal }).catch(() => {});
        continue;
      }
      this.#client = client;
      // Subscribed before the first question, so no change between answer and event is missed.
      const stream = client.events({ names: EVENTS, maxQueue: 4096 });
      this.#stream = stream;
      if (!first) this.model.counters.reconnects++;
      first = false;
      await this.refresh();
      for await (const ev of stream) {
        // A size event says a size moved; the balloon and the devices are then read together,
        // so the view never adds one's new size to the other's old one.
        if (countSizeEvent(this.model, ev.event)) { this.#sizeEvents.push({ event: ev.event, data: ev.data ?? {} }); this.#readSizes('event'); continue; }
        if (applyEvent(this.model, ev.event, ev.data ?? {}, this.#now(), this.#balloonBaseBytes)) this.#changed('state');
      }
      this.#client = null;
      this.#stream = null;
      client.destroy();
      if (this.#stop.signal.aborted) return;
      // The monitor went away: QEMU exited, or only the connection broke.
      if (!(await this.#alive())) return this.#markGone();
      if (setMonitor(this.model, 'down', this.#now())) this.#changed('state');
      await delay(this.opts.reconnectMs, undefined, { signal: this.#stop.signal }).catch(() => {});
    }
  }

  #markGone(): void {
    if (this.#gone) return;
    this.#gone = true;
    void this.#pressure.stop();
    setState(this.model, 'shutoff', this.#now());
    setMonitor(this.model, 'down', this.#now());
    this.#changed('gone');
  }

  /**
   * Asks QEMU for everything the model holds (balloon, memory devices, status, guest
   * statistics), each question bounded. On a timeout the guest is marked stale; the next
   * answer makes it current again.
   */
  async refresh(): Promise<void> {
    // One question round at a time; a caller that needs fresh numbers waits for the round in
    // flight and then asks again (each round is bounded).
    while (this.#inflight) await this.#inflight;
    const c = this.#client;
    if (!c) return;
    const round = this.#refreshRound(c);
    this.#inflight = round;
    try {
      await round;
    } finally {
      this.#inflight = null;
    }
  }

  async #refreshRound(c: QmpClient): Promise<void> {
    this.#busy = true;
    const call = { timeoutMs: this.opts.boundMs, signal: this.#stop.signal };
    try {
      const [rssKiB, status, bal, devices, stats] = await Promise.all([
        readRssKiB(this.rec.pid),
        queryStatus(c, call),
        this.model.hasBalloon ? queryBalloon(c, call) : null,
        this.model.devices.length ? queryMemoryDevices(c, call) : [],
        this.model.hasBalloon ? queryBalloonGuestStats(c, BALLOON_QOM_PATH, call) : null,
      ]);
      const now = this.#now();
      this.#statsAtMs = Date.now();
      if (rssKiB !== null) this.model.rssBytes = rssKiB * 1024;
      let mem = false;
      if (bal) mem = applyBalloon(this.model, bal.actualBytes - this.#balloonBaseBytes, now) || mem;
      mem = applyDevices(this.model, devices, now) || mem;
      if (stats) mem = applyGuestStats(this.model, stats, now) || mem;
      const st = setState(this.model, status.running ? 'running' : 'paused', now);
      const mon = setMonitor(this.model, 'connected', now);
      if (st || mon) this.#changed('state');
      if (mem) this.#changed('memory');
    } catch (err) {
      this.#onQuestionFailed(err);
    } finally {
      this.#busy = false;
    }
  }

  /**
   * Reads the balloon and the memory devices (one round trip each, together), now or right after
   * the read in flight; while the memory moves, again every MOVING_READ_MS. `kick`: a size event
   * came, or a change was sent (both (re)start the moving reads' bound). A change sent is not
   * read at once (the sizes have not moved yet): its first read comes MOVING_READ_MS later, so a
   * burst of changes costs QEMU no more reads than one.
   */
  #readSizes(kick: 'event' | 'sent' | null): void {
    if (kick) this.#movingUntilMs = Date.now() + MOVING_READ_FOR_MS;
    if (kick === 'sent') {
      if (this.#movingTimer || this.#sizesRead || this.#stop.signal.aborted) return;
      this.#movingTimer = setTimeout(() => { this.#movingTimer = null; this.#readSizes(null); }, MOVING_READ_MS);
      this.#movingTimer.unref();
      return;
    }
    if (this.#movingTimer) { clearTimeout(this.#movingTimer); this.#movingTimer = null; }
    if (this.#stop.signal.aborted) return;
    if (this.#sizesRead) { this.#sizesAgain = true; return; }
    // (A listener that throws must not leave an unhandled rejection behind.)
    this.#sizesRead = this.#sizesRound().catch(() => {}).finally(() => {
      this.#sizesRead = null;
      if (this.#sizesAgain) { this.#sizesAgain = false; this.#readSizes(null); return; }
      if (this.#stop.signal.aborted || this.#gone || memorySettled(this.model) || Date.now() >= this.#movingUntilMs) return;
      this.#movingTimer = setTimeout(() => { this.#movingTimer = null; this.#readSizes(null); }, MOVING_READ_MS);
      this.#movingTimer.unref();
    });
  }

  async #sizesRound(): Promise<void> {
    const events = this.#sizeEvents.splice(0);
    const c = this.#client;
    const m = this.model;
    let changed = false;
    try {
      if (!c) throw new Error('no monitor');
      const call = { timeoutMs: this.opts.boundMs, signal: this.#stop.signal };
      const [bal, devices] = await Promise.all([m.hasBalloon ? queryBalloon(c, call) : null, m.devices.length ? queryMemoryDevices(c, call) : []]);
      const now = this.#now();
      if (bal) changed = applyBalloon(m, bal.actualBytes - this.#balloonBaseBytes, now);
      changed = applyDevices(m, devices, now) || changed;
    } catch (err) {
      // Unanswered: the events' own sizes, then.
      for (const e of events) changed = applySizeEvent(m, e.event, e.data, this.#now(), this.#balloonBaseBytes) || changed;
      this.#onQuestionFailed(err);
    }
    if (changed) this.#changed('memory');
  }

  #onQuestionFailed(err: unknown): void {
    if (this.#stop.signal.aborted) return;
    const code = (err as { code?: string }).code;
    if (code === 'QMP_TIMEOUT') {
      this.model.counters.monitorTimeouts++;
      if (setMonitor(this.model, 'stale', this.#now())) this.#changed('state');
    }
    // Disconnects end the event loop in #run, which reconnects or marks the guest gone.
  }

  /**
   * Periodic work (the daemon calls it about once a second for every guest): QEMU's resident
   * size, the run record when another process changed it, guest statistics when their period
   * came round, and a retry when stale. Never waits on a hung monitor.
   */
  async tick(freshStats = false): Promise<void> {
    if (this.#gone || this.#stop.signal.aborted) return;
    const [rssKiB, stat] = await Promise.all([readRssKiB(this.rec.pid), readProcStat(this.rec.pid)]);
    if (rssKiB === null) {
      if (!(await this.#alive())) { this.#stream?.close(); this.#client?.destroy(); return this.#markGone(); }
    } else {
      this.model.rssBytes = rssKiB * 1024;
    }
    if (stat) this.model.cpuTimeS = stat.cpuTicks / CLOCK_TICKS_PER_S;
    await this.#rereadRecord();
    const host = await this.opts.readHostMemory?.(this.#live, this.rec.pid).catch(() => null);
    if (host && applyHostMemory(this.model, host, this.#now())) this.#changed('memory');
    const c = this.#client;
    if (!c || this.#busy) return;
    // Questions to QEMU are not awaited here: a hung monitor holds up only its own guest.
    if (this.model.monitor === 'stale') { if (!this.#inflight) void this.refresh(); return; }
    const periodMs = this.model.statsPeriodS * 1000;
    if (freshStats && this.model.hasBalloon && periodMs > 0) {
      let timer: NodeJS.Timeout | undefined;
      const asked = await Promise.race([this.#freshStats(c), new Promise<true>((r) => { timer = setTimeout(() => r(true), FRESH_STATS_BOUND_MS); })]);
      clearTimeout(timer);
      if (asked) return;
    }
    // A quarter second of slack: the last poll ended a little after its tick began, and a period
    // of one second must mean a poll every tick, not every other one.
    if (this.model.hasBalloon && periodMs > 0 && Date.now() - this.#statsAtMs >= periodMs - STATS_SLACK_MS) void this.#pollStats(c);
    // A guest nobody asked anything for a while is asked, so a hung monitor is noticed.
    else if (Date.now() - this.#statsAtMs >= LIVENESS_MS && !this.#inflight) void this.refresh();
  }

  /**
   * Asks the guest for a new report and reads it once it came (the report differs from the one
   * before), or after FRESH_STATS_WAIT_MS (an idle guest may send the same numbers again).
   * The request is made under the job lock, with the period the run record has then (a CLI or
   * API change of the period holds the lock from QEMU to the record); false, nothing asked, when
   * someone holds the lock or the period is now 0: the tick polls as usual.
   */
  async #freshStats(c: QmpClient): Promise<boolean> {
    this.#busy = true;
    const call = { timeoutMs: this.opts.boundMs, signal: this.#stop.signal };
    const same = (a: BalloonGuestStats, b: BalloonGuestStats): boolean => a.lastUpdate === b.lastUpdate && JSON.stringify(a.stats) === JSON.stringify(b.stats);
    try {
      const before = await queryBalloonGuestStats(c, BALLOON_QOM_PATH, call);
      const lock = this.opts.tryJobLock ? await this.opts.tryJobLock() : null;
      if (this.opts.tryJobLock && !lock) return false;
      try {
        await this.#rereadRecord();
        if (this.model.statsPeriodS <= 0) return false;
        // (A monitor that does not answer holds the job lock no longer than a tick's bound.)
        await requestBalloonGuestStats(c, BALLOON_QOM_PATH, this.model.statsPeriodS, { ...call, timeoutMs: Math.min(call.timeoutMs, FRESH_STATS_BOUND_MS) });
      } finally {
        await lock?.release();
      }
      const end = Date.now() + FRESH_STATS_WAIT_MS;
      let stats = before;
      while (same(stats, before) && Date.now() < end) {
        await delay(FRESH_STATS_POLL_MS, undefined, { signal: this.#stop.signal });
        stats = await queryBalloonGuestStats(c, BALLOON_QOM_PATH, call);
      }
      this.#statsAtMs = Date.now();
      // A report that came after the request was taken between the request and this read:
      // its time is known to a poll interval, not only to QEMU's whole second.
      const takenAtS = same(stats, before) ? undefined : this.#now();
      if (applyGuestStats(this.model, stats, this.#now(), takenAtS)) this.#changed('memory');
    } catch (err) {
      this.#onQuestionFailed(err);
    } finally {
      this.#busy = false;
    }
    return true;
  }

  async #pollStats(c: QmpClient): Promise<void> {
    {
      this.#busy = true;
      try {
        const stats = await queryBalloonGuestStats(c, BALLOON_QOM_PATH, { timeoutMs: this.opts.boundMs, signal: this.#stop.signal });
        this.#statsAtMs = Date.now();
        if (applyGuestStats(this.model, stats, this.#now())) this.#changed('memory');
      } catch (err) {
        this.#onQuestionFailed(err);
      } finally {
        this.#busy = false;
      }
    }
  }

  /** The run record changes when a target is set (by the daemon or a CLI without it). */
  async #rereadRecord(): Promise<void> {
    const st = await stat(this.paths.status).catch(() => null);
    if (!st || st.mtimeMs === this.#recordMtimeMs) return;
    this.#recordMtimeMs = st.mtimeMs;
    const rec = await readRunRecord(this.paths);
    if (!rec || rec.phase !== 'running' || rec.pid !== this.rec.pid) return;
    this.#balloonBaseBytes = balloonBaseKiB(rec.live) * 1024;
    this.#live = rec.live;
    if (applyDefinition(this.model, rec.live, this.#now())) { this.#changed('memory'); this.#readSizes('sent'); }
  }

  /** A new memory target sent on the fast path (the run record follows later). */
  takeTarget(currentKiB: number): void {
    applyTarget(this.model, currentKiB, this.#now());
    this.#changed('memory');
    this.#readSizes('sent');
  }

  /** Take a live definition the daemon itself just wrote. */
  takeDefinition(rec: RunningRecord): void {
    this.#balloonBaseBytes = balloonBaseKiB(rec.live) * 1024;
    this.#live = rec.live;
    if (applyDefinition(this.model, rec.live, this.#now())) { this.#changed('memory'); this.#readSizes('sent'); }
  }
}
