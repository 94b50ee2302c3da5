/**
 * Comparing our NAT with the kernel's, on fixtures recorded by scripts/oracle/record-nat.sh:
 * before.pcap (NFLOG at prerouting, before translation, labelled with the kernel's verdict),
 * after.pcap (what left the router), table.txt (conntrack -L), nat.json (the rules, which the
 * recorder gave nft and we give setNatRules).
 *
 * Each packet must get the kernel's verdict, and every packet the kernel forwarded must come out
 * of our rewrite byte for byte (after the router's TTL decrement), except where the kernel drew
 * a random port or ICMP id: there ours must differ from the original too, lie in the rule's
 * range, carry a correct checksum, and stay the same for the whole connection. Later packets
 * addressed to the kernel's random choice are readdressed to ours before we see them. A packet
 * our NAT drops (no free tuple) must be one the kernel labelled new and did not forward.
 */
import { readFileSync } from 'node:fs';
import { join } from 'node:path';
import { LINKTYPE_NFLOG } from '../input/packet/packet.js';
import { nflogPrefix, parseFrame } from '../input/packet/parse.js';
import { Packet } from '../input/packet/packet.js';
import { readCapture } from '../input/capture/reader.js';
import { ConntrackTable } from '../table/table.js';
import type { NatConfig } from '../track/nat/rules.js';
import { CtOps } from './ops.js';
import { parseLabel } from './oracle.js';
import { replay } from './replay.js';

export interface NatOracleResult {
  packets: number;
  /** Verdicts equal to the kernel's. */
  verdictsAgree: number;
  /** Packets the kernel forwarded that we rewrote to the same bytes / to a random choice of ours. */
  identical: number;
  randomChoice: number;
  /** Packets our NAT dropped for want of a tuple (the kernel: new, not forwarded). */
  natDropped: number;
  /** conntrack -L entries equal (tuples, up to random choices; TCP state). */
  tableAgree: number;
  tableKernel: number;
  problems: string[];
}

function sum(b: Uint8Array, off: number, n: number, acc = 0): number {
  for (let i = 0; i + 1 < n; i += 2) acc += (b[off + i]! << 8) | b[off + i + 1]!;
  if (n & 1) acc += b[off + n - 1]! << 8;
  while (acc > 0xffff) acc = (acc & 0xffff) + Math.floor(acc / 65536);
  return acc;
}

interface L4 { v4: boolean; proto: number; l4: number; end: number; }

function l4Of(ip: Uint8Array): L4 | null {
  const v4 = ip[0]! >> 4 === 4;
  if (v4) {
    const ihl = (ip[0]! & 15) * 4;
    return { v4, proto: ip[9]!, l4: ihl, end: Math.min(ip.length, (ip[2]! << 8) | ip[3]!) };
  }
  if (ip[0]! >> 4 !== 6) return null;
  return { v4, proto: ip[6]!, l4: 40, end: Math.min(ip.length, 40 + ((ip[4]! << 8) | ip[5]!)) };
}

/** Offset of the layer-4 checksum, or -1 (UDP with checksum 0 over IPv4: none). */
function csumOff(x: L4, ip: Uint8Array): number {
  if (x.proto === 6) return x.l4 + 16;
  if (x.proto === 17) return x.v4 && ip[x.l4 + 6] === 0 && ip[x.l4 + 7] === 0 ? -1 : x.l4 + 6;
  if (x.proto === 1 || x.proto === 58) return x.l4 + 2;
  return -1;
}

/** Full recompute of the layer-4 checksum into the packet (independent of src/track/nat). */
function fixL4(ip: Uint8Array): void {
  const x = l4Of(ip);
  if (x === null) return;
  const c = csumOff(x, ip);
  if (c < 0) return;
  ip[c] = 0; ip[c + 1] = 0;
  const n = x.end - x.l4;
  let acc = 0;
  if (x.proto !== 1) {
    acc = x.v4 ? sum(ip, 12, 8) : sum(ip, 8, 32);
    acc += x.proto + (n >>> 16) + (n & 0xffff);
  }
  let v = (~sum(ip, x.l4, n, acc)) & 0xffff;
  if (x.proto === 17 && v === 0) v = 0xffff;
  ip[c] = v >> 8; ip[c + 1] = v & 0xff;
}

function l4Ok(ip: Uint8Array): boolean {
  const copy = ip.slice();
  fixL4(copy);
  const x = l4Of(ip)!;
  const c = csumOff(x, ip);
  return c < 0 || (copy[c] === ip[c] && copy[c + 1] === ip[c + 1]);
}

/** The router's forwarding: TTL / hop limit minus one (IPv4 header checksum recomputed). */
function forwarded(ip: Uint8Array): Uint8Array {
  const o = ip.slice();
  if (o[0]! >> 4 === 4) {
    o[8] = o[8]! - 1;
    const ihl = (o[0]! & 15) * 4;
    o[10] = 0; o[11] = 0;
    const v = (~sum(o, 0, ihl)) & 0xffff;
    o[10] = v >> 8; o[11] = v & 0xff;
  } else {
    o[7] = o[7]! - 1;
  }
  return o;
}

function addrKey(ip: Uint8Array, src: boolean): string {
  const v4 = ip[0]! >> 4 === 4;
  const off = v4 ? (src ? 12 : 16) : (src ? 8 : 24);
  return Buffer.from(ip.subarray(off, off + (v4 ? 4 : 16))).toString('hex');
}

function rd16(b: Uint8Array, o: number): number {
  return (b[o]! << 8) | b[o + 1]!;
}

/** The port range a rule gives (":lo-hi" in its `to`), or null. */
function ruleRange(cfg: NatConfig): [number, number] | null {
  for (const r of cfg.rules) {
    const m = /:(\d+)-(\d+)\b(?!.*:)/.exec(typeof r === 'string' ? r : r.to ?? '');
    if (m) return [Number(m[1]), Number(m[2])];
  }
  return null;
}

/** Compare one fixture directory. */
export function compareNatWithKernel(dir: string): NatOracleResult {
  const cfg = JSON.parse(readFileSync(join(dir, 'nat.json'), 'utf8')) as NatConfig;
  const range = ruleRange(cfg);
  const table = ConntrackTable.create({ max: 4096 });
  table.setNatRules(cfg);
  const res: NatOracleResult = {
    packets: 0, verdictsAgree: 0, identical: 0, randomChoice: 0, natDropped: 0, tableAgree: 0, tableKernel: 0, problems: [],
  };
  // What left the router, as IP packets (Ethernet frames; the router's own multicast skipped).
  const after: Uint8Array[] = [];
  for (const rec of readCapture(readFileSync(join(dir, 'after.pcap')))) {
    if (rec.buf[rec.off]! & 1) continue;
    after.push(rec.buf.slice(rec.off + 14, rec.off + rec.len));
  }
  let j = 0;
  /** Kernel's random choice -> ours: "proto|addr|port" (port or ICMP id). */
  const toOurs = new Map<string, number>();
  const toKernel = new Map<string, number>();
  const scratch = new Packet();
  let label: ReturnType<typeof parseLabel> = null;
  const r = replay(readFileSync(join(dir, 'before.pcap')), {
    table,
    onRecord: (linktype, buf, off, len) => {
      label = linktype === LINKTYPE_NFLOG ? parseLabel(nflogPrefix(buf, off, len)) : null;
      // Readdress packets sent to the kernel's random choice to ours (in place, checksum redone).
      parseFrame(linktype, buf, off, len, scratch);
      if (scratch.reason !== null) return;
      const ip = buf.subarray(scratch.l3off, scratch.l3off + scratch.ipLen);
      const x = l4Of(ip);
      if (x === null) return;
      const isEcho = x.proto === 1 ? ip[x.l4] === 0 || ip[x.l4] === 8 : x.proto === 58 ? ip[x.l4] === 128 || ip[x.l4] === 129 : false;
      const field = x.proto === 6 || x.proto === 17 ? x.l4 + 2 : isEcho ? x.l4 + 4 : -1;
      if (field < 0) return;
      const key = `${x.proto}|${addrKey(ip, false)}|${rd16(ip, field)}`;
      const ours = toOurs.get(key);
      if (ours !== undefined) {
        ip[field] = ours >> 8; ip[field + 1] = ours & 0xff;
        fixL4(ip);
      }
    },
    onPacket: (i, v, pkt) => {
      res.packets++;
      const exp = label;
      const natDrop = v.drop && (v.reason ?? '').startsWith('NAT:');
      if (natDrop) {
        res.natDropped++;
        if (exp?.ctstate !== 'new' || exp.dir !== 'original') res.problems.push(`#${i}: our NAT dropped it, the kernel said ${JSON.stringify(exp)}`);
        return; // the kernel dropped it at confirm: nothing left the router
      }
      if (exp !== null && exp.ctstate === v.ctstate && exp.dir === v.direction) res.verdictsAgree++;
      else res.problems.push(`#${i}: verdict ${v.ctstate}/${v.direction} (${v.reason}), kernel ${JSON.stringify(exp)}`);
      const ours = pkt.buf.slice(pkt.l3off, pkt.l3off + pkt.ipLen);
      if (ours[0]! >> 4 === 4 && sum(ours, 0, (ours[0]! & 15) * 4) !== 0xffff) res.problems.push(`#${i}: our IPv4 header checksum is wrong`);
      const kern = after[j++];
      if (kern === undefined) { res.problems.push(`#${i}: the kernel forwarded nothing more`); return; }
      const mine = forwarded(ours);
      if (Buffer.compare(mine, kern) === 0) { res.identical++; return; }
      // A random choice? Only the port / id and the checksum may differ.
      const x = l4Of(mine);
      const c = x === null ? -1 : csumOff(x, mine);
      const diff: number[] = [];
      if (mine.length !== kern.length) { res.problems.push(`#${i}: length ${mine.length} vs kernel ${kern.length}`); return; }
      for (let k = 0; k < mine.length; k++) if (mine[k] !== kern[k]) diff.push(k);
      const allowed = x === null ? [] : x.proto === 1 || x.proto === 58 ? [x.l4 + 4, x.l4 + 5] : [x.l4, x.l4 + 1, x.l4 + 2, x.l4 + 3];
      if (c >= 0) allowed.push(c, c + 1);
      if (x === null || !diff.every((k) => allowed.includes(k))) {
        res.problems.push(`#${i}: bytes differ at ${diff.join(',')}\n  ours   ${Buffer.from(mine).toString('hex')}\n  kernel ${Buffer.from(kern).toString('hex')}`);
        return;
      }
      if (!l4Ok(mine)) { res.problems.push(`#${i}: our layer-4 checksum is wrong`); return; }
      const f = x.proto === 1 || x.proto === 58 ? x.l4 + 4 : diff.some((k) => k === x.l4 || k === x.l4 + 1) ? x.l4 : x.l4 + 2;
      const src = f === x.l4 || x.proto === 1 || x.proto === 58;
      const kv = rd16(kern, f);
      const ov = rd16(mine, f);
      if (range !== null && (x.proto === 6 || x.proto === 17) && (ov < range[0] || ov > range[1])) {
        res.problems.push(`#${i}: our port ${ov} is outside the rule's range ${range[0]}-${range[1]}`);
      }
      if (x.proto !== 1 && x.proto !== 58 && kv >= 1024 && ov < 1024) res.problems.push(`#${i}: our port ${ov} left the range of ${kv}`);
      const key = `${x.proto}|${addrKey(kern, src)}|${kv}`;
      const had = toOurs.get(key);
      if (had !== undefined && had !== ov) res.problems.push(`#${i}: mapping not consistent (${kv} -> ${had} then ${ov})`);
      toOurs.set(key, ov);
      toKernel.set(`${x.proto}|${addrKey(kern, src)}|${ov}`, kv);
      res.randomChoice++;
    },
  });
  if (r.error) res.problems.push(`capture: ${r.error.message}`);
  if (j !== after.length) res.problems.push(`the kernel forwarded ${after.length} packets, we matched ${j}`);
  // conntrack -L: the same tuples (our random choices mapped back to the kernel's) and TCP states.
  const norm = (line: string, mapBack: boolean): string => {
    const proto = /\b(tcp|udp|icmp|icmpv6)\s+(\d+)/.exec(line);
    const state = /\d+ ([A-Z_]+) src=/.exec(line)?.[1] ?? '';
    const kv = [...line.matchAll(/\b(src|dst|sport|dport|type|code|id)=(\S+)/g)].map((m) => [m[1]!, m[2]!]);
    if (mapBack && proto) {
      // The reply tuple's destination port / id (second half) is where a random choice shows.
      const half = kv.length / 2;
      const daddr = kv.slice(half).find((p) => p[0] === 'dst')?.[1] ?? '';
      const pn = Number(proto[2]);
      for (let k = half; k < kv.length; k++) {
        const [name, val] = kv[k]!;
        if (name === 'dport' || name === 'id') {
          const hexAddr = Buffer.from(daddr.includes(':') ? expand6(daddr) : daddr.split('.').map(Number)).toString('hex');
          const back = toKernel.get(`${pn}|${hexAddr}|${val}`);
          if (back !== undefined) kv[k] = [name, String(back)];
        }
      }
    }
    return `${proto?.[1] ?? '?'} ${state} ${kv.map((p) => p.join('=')).join(' ')}`;
  };
  const kernelLines = readFileSync(join(dir, 'table.txt'), 'utf8').split('\n').filter((l) => l.trim() !== '');
  res.tableKernel = kernelLines.length;
  const ops = new CtOps(table);
  const ourSet = new Set(ops.list({}, { now: table.clock }).map((l) => norm(l, true)));
  ops.close();
  for (const l of kernelLines) {
    if (ourSet.has(norm(l, false))) res.tableAgree++;
    else res.problems.push(`conntrack -L: kernel ${norm(l, false)} not ours; ours: ${[...ourSet].join(' | ')}`);
  }
  r.conntrack.close();
  return res;
}

function expand6(a: string): number[] {
  const [h, t] = a.split('::');
  const head = h ? h.split(':') : [];
  const tail = t ? t.split(':') : [];
  const g = [...head, ...new Array<string>(8 - head.length - tail.length).fill('0'), ...tail].map((x) => parseInt(x, 16));
  const out: number[] = [];
  for (const x of g) out.push(x >> 8, x & 0xff);
  return out;
}
