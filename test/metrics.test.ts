/** Prometheus text exposition: parses, carries node_exporter's names, agrees with the table. */
import test from 'ava';
import { Conntrack } from '../src/track/core.js';
import { escapeLabelValue, formatPrometheus, metricsFromSnapshot, prometheusText } from '../src/ops/metrics.js';
import { LINKTYPE_RAW } from '../src/input/packet/packet.js';
import { decodeSnapshot, encodeSnapshot } from '../src/ops/snapshot.js';
import { ConntrackTable } from '../src/table/table.js';
import { udp4 } from './helpers/frames.js';

interface Sample { name: string; labels: Record<string, string>; value: number }
interface Parsed { samples: Sample[]; types: Map<string, string>; help: Map<string, string> }

/** A small parser for the text format (0.0.4): comments, names, labels, values. */
function parse(text: string): Parsed {
  const samples: Sample[] = [];
  const types = new Map<string, string>();
  const help = new Map<string, string>();
  if (!text.endsWith('\n')) throw new Error('exposition must end with a newline');
  for (const line of text.slice(0, -1).split('\n')) {
    let m = /^# (HELP|TYPE) ([a-zA-Z_:][a-zA-Z0-9_:]*) (.*)$/.exec(line);
    if (m) {
      const map = m[1] === 'HELP' ? help : types;
      if (map.has(m[2]!)) throw new Error(`second ${m[1]} for ${m[2]}`);
      if (m[1] === 'TYPE' && !['counter', 'gauge', 'histogram', 'summary', 'untyped'].includes(m[3]!)) throw new Error(`bad type in "${line}"`);
      if (m[1] === 'TYPE' && samples.some((s) => s.name === m![2])) throw new Error(`TYPE after samples of ${m[2]}`);
      map.set(m[2]!, m[3]!);
      continue;
    }
    m = /^([a-zA-Z_:][a-zA-Z0-9_:]*)(?:\{(.*)\})? (\S+)$/.exec(line);
    if (!m) throw new Error(`unparseable line "${line}"`);
    const labels: Record<string, string> = {};
    if (m[2]) {
      const re = /([a-zA-Z_][a-zA-Z0-9_]*)="((?:[^"\\]|\\.)*)"(,|$)/y;
      let pos = 0;
      while (pos < m[2].length) {
        re.lastIndex = pos;
        const l = re.exec(m[2]);
        if (!l) throw new Error(`bad labels in "${line}"`);
        labels[l[1]!] = l[2]!;
        pos = re.lastIndex;
      }
    }
    const value = Number(m[3]);
    if (Number.isNaN(value) && m[3] !== 'NaN') throw new Error(`bad value in "${line}"`);
    if (!types.has(m[1]!)) throw new Error(`sample ${m[1]} before its TYPE`);
    samples.push({ name: m[1]!, labels, value });
  }
  return { samples, types, help };
}

function one(p: Parsed, name: string): number {
  const s = p.samples.filter((x) => x.name === name);
  if (s.length !== 1) throw new Error(`${name}: ${s.length} samples`);
  return s[0]!.value;
}

function table(): ConntrackTable {
  const t = ConntrackTable.create({ max: 1000 });
  const ct = new Conntrack(t);
  for (let i = 0; i < 30; i++) {
    ct.decide(udp4({ src: `10.0.0.${i + 1}`, dst: '192.0.2.1', sport: 1000, dport: 53 }), LINKTYPE_RAW, 1_000_000, i % 2 ? 3 : 0);
  }
  ct.decide(udp4({ src: '10.0.0.1', dst: '192.0.2.1', sport: 1000, dport: 53 }), LINKTYPE_RAW, 1_000_000); // found
  ct.close();
  t.clock = 1_000_000;
  return t;
}

test('the exposition parses and carries node_exporter\'s conntrack names, HELP and TYPE', (t) => {
  const tb = table();
  const p = parse(prometheusText(tb));
  t.is(one(p, 'node_nf_conntrack_entries'), 30);
  t.is(one(p, 'node_nf_conntrack_entries_limit'), 1000);
  t.is(p.help.get('node_nf_conntrack_entries'), 'Number of currently allocated flow entries for connection tracking.');
  t.is(p.help.get('node_nf_conntrack_entries_limit'), 'Maximum size of connection tracking table.');
  for (const s of ['found', 'invalid', 'ignore', 'insert', 'insert_failed', 'drop', 'early_drop', 'search_restart']) {
    t.is(p.types.get(`node_nf_conntrack_stat_${s}`), 'gauge', s);
    t.truthy(p.help.get(`node_nf_conntrack_stat_${s}`), s);
  }
  t.is(one(p, 'node_nf_conntrack_stat_insert'), 30);
  t.is(one(p, 'node_nf_conntrack_stat_found'), tb.stats().total['found']);
  // Our extras: per worker (label worker), counters, zones.
  const ins = p.samples.filter((s) => s.name === 'conntrack_sab_insert_total');
  t.true(ins.length >= 1);
  t.true(ins.every((s) => /^\d+$/.test(s.labels['worker'] ?? '')));
  t.is(ins.reduce((a, s) => a + s.value, 0), 30);
  t.is(p.types.get('conntrack_sab_insert_total'), 'counter');
  t.is(p.samples.find((s) => s.name === 'conntrack_sab_zone_entries' && s.labels['zone'] === '3')?.value, 15);
  t.is(p.samples.find((s) => s.name === 'conntrack_sab_zone_entries' && s.labels['zone'] === '0')?.value, 15);
  t.is(p.types.get('conntrack_sab_grace_periods_total'), 'counter');
  for (const n of ['conntrack_sab_gc_runs_total', 'conntrack_sab_gc_sweeps_total', 'conntrack_sab_epoch']) {
    t.notThrows(() => one(p, n), n);
  }
  for (const name of p.types.keys()) t.true(name.startsWith('node_nf_conntrack_') || name.startsWith('conntrack_sab_'), name);
});

test('a snapshot\'s metrics are the table\'s as it was saved', (t) => {
  const tb = table();
  const live = parse(prometheusText(tb));
  const snap = parse(formatPrometheus(metricsFromSnapshot(decodeSnapshot(encodeSnapshot(tb)))));
  for (const n of ['node_nf_conntrack_entries', 'node_nf_conntrack_entries_limit', 'node_nf_conntrack_stat_found', 'node_nf_conntrack_stat_insert']) {
    t.is(one(snap, n), one(live, n), n);
  }
  t.deepEqual(
    snap.samples.filter((s) => s.name === 'conntrack_sab_insert_total'),
    live.samples.filter((s) => s.name === 'conntrack_sab_insert_total' && s.value !== 0),
  );
});

test('label values are escaped as the exposition format says', (t) => {
  // Backslash, double quote and newline: \\, \" and \n; nothing else changes.
  t.is(escapeLabelValue('a\\b"c\nd é'), 'a\\\\b\\"c\\nd é');
  t.is(escapeLabelValue('plain-1'), 'plain-1');
});
