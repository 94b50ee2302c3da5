/**
 * Prometheus text exposition (format 0.0.4) of a table's counters: the metric names, HELP and
 * TYPE lines node_exporter's conntrack collector uses (node_nf_conntrack_entries,
 * node_nf_conntrack_entries_limit, node_nf_conntrack_stat_*, all gauges there), so existing
 * dashboards and alerts work unchanged, plus our own under `conntrack_sab_`: per-worker
 * statistics (label `worker`), GC counters, grace periods, slots, zones.
 */
import { STAT_NAMES, H_EPOCH, H_FREE_COUNT, H_GC_BUSY_US, H_GC_INTERVAL, H_GC_RUNS, H_GC_SWEEPS, W_LIMBO_COUNT, WORKER_WORDS, ZC_ZORIG, zoneRec } from '../table/layout.js';
import { cachedDeltas } from '../table/zones.js';
import { workerStats } from './ops.js';
import type { Snapshot } from './snapshot.js';
import type { ConntrackTable } from '../table/table.js';

/** What the exposition is made of: read from a live table or from a snapshot. */
export interface MetricsSource {
  entries: number;
  limit: number;
  /** Statistic rows by worker record. */
  workers: { wid: number; stats: Record<string, number> }[];
  gc: { runs: number; sweeps: number; busyUs: number; intervalMs: number | null };
  epoch: number;
  /** Slots waiting out a grace period, per worker record (live tables only). */
  limbo: { wid: number; slots: number }[];
  /** Slots on the shared free list (live tables only). */
  freeSlots: number | null;
  capacity: number | null;
  bytes: number | null;
  /** Entries per zone (zones with entries). */
  zones: Map<number, number>;
}

/** Read a live table's counters (any thread; racy reads of single-writer words, like /proc). */
export function metricsFromTable(table: ConntrackTable): MetricsSource {
  const i32 = table.i32;
  const st = workerStats(table);
  const limbo: { wid: number; slots: number }[] = [];
  for (let w = 0; w < table.maxWorkers; w++) {
    // Atomics.load: the owner changes its limbo count with Atomics.add / sub.
    const n = Atomics.load(i32, table.sec.workers + w * WORKER_WORDS + W_LIMBO_COUNT);
    if (n !== 0) limbo.push({ wid: w, slots: n });
  }
  const zones = new Map<number, number>();
  const deltas = cachedDeltas(table, ZC_ZORIG); // the records' unfolded parts (zones.ts)
  for (let z = 0; z < 65536; z++) {
    // Zone counters change under the bucket locks with Atomics.add / sub.
    const n = Atomics.load(i32, table.sec.zones + zoneRec(z)) + (deltas.get(z) ?? 0);
    if (n !== 0) zones.set(z, n);
  }
  return {
    // The entry count (H_COUNT plus the records' unfolded parts) and the GC words: current values.
    entries: table.count,
    limit: table.max,
    workers: st.perWorker.map((r) => ({ wid: r.wid, stats: r.stats })),
    gc: {
      runs: Atomics.load(i32, H_GC_RUNS) >>> 0,
      sweeps: Atomics.load(i32, H_GC_SWEEPS) >>> 0,
      busyUs: Atomics.load(i32, H_GC_BUSY_US) >>> 0,
      intervalMs: Atomics.load(i32, H_GC_INTERVAL),
    },
    epoch: Atomics.load(i32, H_EPOCH) >>> 0,
    limbo,
    freeSlots: Atomics.load(i32, H_FREE_COUNT),
    capacity: table.capacity,
    bytes: table.byteLength,
    zones,
  };
}

/** A snapshot's counters (as they were when it was taken). */
export function metricsFromSnapshot(snap: Snapshot): MetricsSource {
  return {
    entries: snap.count,
    limit: snap.max,
    workers: snap.stats.rows.map((r) => ({
      wid: r.wid,
      stats: Object.fromEntries(snap.stats.names.map((n, i) => [n, r.values[i] ?? 0])),
    })),
    gc: { runs: snap.stats.gcRuns, sweeps: snap.stats.gcSweeps, busyUs: snap.stats.gcBusyUs, intervalMs: null },
    epoch: snap.stats.epoch,
    limbo: [],
    freeSlots: null,
    capacity: null,
    bytes: null,
    zones: snap.zones,
  };
}

/** node_exporter's conntrack collector: metric suffix, statistic, HELP text. */
const NODE_STATS: readonly [string, string, string][] = [
  ['found', 'found', 'Number of searched entries which were successful.'],
  ['invalid', 'invalid', 'Number of packets seen which can not be tracked.'],
  ['ignore', 'ignore', 'Number of packets seen which are already connected to a conntrack entry.'],
  ['insert', 'insert', 'Number of entries inserted into the list.'],
  ['insert_failed', 'insert_failed', 'Number of entries for which list insertion was attempted but failed.'],
  ['drop', 'drop', 'Number of packets dropped due to conntrack failure.'],
  ['early_drop', 'early_drop', 'Number of dropped conntrack entries to make room for new ones, if maximum table size was reached.'],
  ['search_restart', 'search_restart', 'Number of conntrack table lookups which had to be restarted due to hashtable resizes.'],
];

const STAT_HELP: Record<string, string> = {
  found: 'Lookups that found an entry.',
  invalid: 'Packets that could not be tracked.',
  insert: 'Entries inserted.',
  insert_failed: 'Inserts that failed.',
  drop: 'Packets dropped because of a conntrack failure.',
  early_drop: 'Entries evicted to make room for new ones (early_drop).',
  error: 'Packets refused by a protocol tracker\'s error checks.',
  search_restart: 'Lookups restarted because an entry moved under them.',
  clash_resolve: 'Insert clashes resolved by joining the other entry.',
  chaintoolong: 'Inserts refused because a hash chain was too long.',
  new: 'Packets that created an entry.',
  ignore: 'Untracked packets.',
  expired: 'Entries removed because their timeout passed.',
  packets: 'Packets seen.',
  gc_evict: 'Entries evicted by the GC worker under pressure.',
  soft_recycle: 'ASSURED entries recycled past the soft timeout.',
  grace_periods: 'Grace periods completed.',
  slots_recycled: 'Entry slots reused after a grace period.',
  csum_offload: 'Packets accepted whose checksum was left to offload (pseudo-header partial sum).',
  frag_held: 'IP fragments held for reassembly.',
  frag_reasm: 'IP datagrams reassembled from fragments.',
  frag_drop: 'IP fragments dropped by reassembly (overlap, oversize, bad length, no room).',
  frag_timeout: 'Reassembly queues expired (ipfrag_time).',
  frag_evict: 'Reassembly queues evicted to stay under ipfrag_high_thresh.',
};

/** Escape a label value (backslash, double quote, newline), as the exposition format says. */
export function escapeLabelValue(v: string): string {
  return v.replace(/\\/g, '\\\\').replace(/"/g, '\\"').replace(/\n/g, '\\n');
}

class Exposition {
  private lines: string[] = [];
  family(name: string, type: 'gauge' | 'counter', help: string): void {
    this.lines.push(`# HELP ${name} ${help.replace(/\\/g, '\\\\').replace(/\n/g, '\\n')}`, `# TYPE ${name} ${type}`);
  }
  sample(name: string, value: number, labels: Record<string, string> = {}): void {
    const l = Object.entries(labels).map(([k, v]) => `${k}="${escapeLabelValue(v)}"`).join(',');
    this.lines.push(`${name}${l ? `{${l}}` : ''} ${Number.isFinite(value) ? String(value) : 'NaN'}`);
  }
  text(): string {
    return this.lines.join('\n') + '\n';
  }
}

/** The Prometheus text exposition of a table's (or a snapshot's) counters. */
export function formatPrometheus(src: MetricsSource): string {
  const x = new Exposition();
  const total: Record<string, number> = {};
  for (const n of STAT_NAMES) total[n] = 0;
  for (const w of src.workers) for (const n of STAT_NAMES) total[n]! += w.stats[n] ?? 0;

  x.family('node_nf_conntrack_entries', 'gauge', 'Number of currently allocated flow entries for connection tracking.');
  x.sample('node_nf_conntrack_entries', src.entries);
  x.family('node_nf_conntrack_entries_limit', 'gauge', 'Maximum size of connection tracking table.');
  x.sample('node_nf_conntrack_entries_limit', src.limit);
  for (const [suffix, stat, help] of NODE_STATS) {
    const name = `node_nf_conntrack_stat_${suffix}`;
    x.family(name, 'gauge', help);
    x.sample(name, total[stat] ?? 0);
  }

  for (const n of STAT_NAMES) {
    const name = `conntrack_sab_${n}_total`;
    x.family(name, 'counter', `${STAT_HELP[n] ?? n} Per worker record.`);
    for (const w of src.workers) x.sample(name, w.stats[n] ?? 0, { worker: String(w.wid) });
  }
  x.family('conntrack_sab_gc_runs_total', 'counter', 'GC runs (bounded slices) completed.');
  x.sample('conntrack_sab_gc_runs_total', src.gc.runs);
  x.family('conntrack_sab_gc_sweeps_total', 'counter', 'Full GC passes over every bucket completed.');
  x.sample('conntrack_sab_gc_sweeps_total', src.gc.sweeps);
  x.family('conntrack_sab_gc_busy_seconds_total', 'counter', 'Wall time spent inside GC runs.');
  x.sample('conntrack_sab_gc_busy_seconds_total', src.gc.busyUs / 1e6);
  if (src.gc.intervalMs !== null) {
    x.family('conntrack_sab_gc_interval_seconds', 'gauge', 'The GC worker\'s current adaptive interval.');
    x.sample('conntrack_sab_gc_interval_seconds', src.gc.intervalMs / 1000);
  }
  // Grace periods: conntrack_sab_grace_periods_total{worker} above (one of the statistics).
  x.family('conntrack_sab_epoch', 'gauge', 'The QSBR global epoch.');
  x.sample('conntrack_sab_epoch', src.epoch);
  if (src.limbo.length || src.freeSlots !== null) {
    x.family('conntrack_sab_limbo_slots', 'gauge', 'Deleted entries waiting out a grace period, per worker record.');
    for (const l of src.limbo) x.sample('conntrack_sab_limbo_slots', l.slots, { worker: String(l.wid) });
  }
  if (src.freeSlots !== null) {
    x.family('conntrack_sab_free_slots', 'gauge', 'Entry slots on the shared free list.');
    x.sample('conntrack_sab_free_slots', src.freeSlots);
  }
  if (src.capacity !== null) {
    x.family('conntrack_sab_slots', 'gauge', 'Entry slots in the slab (nf_conntrack_max plus slack).');
    x.sample('conntrack_sab_slots', src.capacity);
  }
  if (src.bytes !== null) {
    x.family('conntrack_sab_table_bytes', 'gauge', 'Bytes of the shared table.');
    x.sample('conntrack_sab_table_bytes', src.bytes);
  }
  x.family('conntrack_sab_zone_entries', 'gauge', 'Entries per conntrack zone (zones with entries).');
  for (const [z, n] of [...src.zones.entries()].sort((a, b) => a[0] - b[0])) {
    x.sample('conntrack_sab_zone_entries', n, { zone: String(z) });
  }
  return x.text();
}

/** Shorthand: the exposition of a live table. */
export function prometheusText(table: ConntrackTable): string {
  return formatPrometheus(metricsFromTable(table));
}
