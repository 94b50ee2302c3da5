/**
 * A small stateful firewall policy for live traffic: accept established and related packets,
 * drop invalid ones, and accept or drop new connections by rule (addresses/CIDR, ports,
 * protocol, zone), first match wins. Each decision can set the packet mark, and (connmark) the
 * connection's mark, which later packets of the connection then carry.
 *
 * Policy file (JSON):
 *   { "default": "drop", "invalid": "drop", "untracked": "accept", "connmark": true,
 *     "rules": [ { "action": "accept", "proto": "tcp", "dst": "10.200.2.0/24", "dport": "80,8000-8999", "mark": 1 },
 *                { "action": "accept", "proto": "icmp" } ] }
 * Rules are compiled into typed arrays; evaluating one allocates nothing.
 */
import { readFileSync } from 'node:fs';
import { CT_ESTABLISHED, CT_INVALID, CT_NEW, CT_RELATED, CT_UNTRACKED, type Verdict } from '../track/verdict.js';
import { type Packet } from '../input/packet/packet.js';
import { parseCidr } from './ops.js';

/** Policy action: drop the packet. */
export const ACTION_DROP = 0;
/** Policy action: accept the packet. */
export const ACTION_ACCEPT = 1;

/** One rule for new connections: match (CIDR, ports, protocol, zone) and action, with an optional mark. */
export interface PolicyRule {
  action: 'accept' | 'drop';
  /** Source / destination address or CIDR (IPv4 or IPv6); one or a list. */
  src?: string | string[];
  dst?: string | string[];
  /** Ports: a number, "a-b", or a comma-separated list of those (TCP, UDP, SCTP, UDP-Lite). */
  sport?: number | string;
  dport?: number | string;
  /** Protocol name (tcp, udp, icmp, icmpv6, sctp, udplite, gre) or number. */
  proto?: string | number;
  /** Conntrack zone of the packet. */
  zone?: number;
  /** Packet mark to set (and connection mark with connmark). */
  mark?: number;
}

/** A policy as JSON (--policy FILE): default actions and the rules for new connections. */
export interface PolicySpec {
  /** What a new connection matching no rule gets (default accept). */
  default?: 'accept' | 'drop';
  /** Invalid packets (default drop). */
  invalid?: 'accept' | 'drop';
  /** Packets conntrack does not track (default accept). */
  untracked?: 'accept' | 'drop';
  /** Keep the decided mark on the connection; established packets carry it (default false). */
  connmark?: boolean;
  /** Mark for new connections no rule marks (0: leave the mark). */
  mark?: number;
  rules?: PolicyRule[];
}

const PROTOS: Record<string, number> = { icmp: 1, tcp: 6, udp: 17, gre: 47, icmpv6: 58, 'ipv6-icmp': 58, sctp: 132, udplite: 136 };
const PORT_PROTOS = new Set([6, 17, 132, 136]);

// Rule words (Int32Array, R_WORDS per rule); address words are uint32 in the Packet's form.
const R_ACTION = 0;
const R_MARK = 1;
const R_PROTO = 2; // -1 any
const R_ZONE = 3; // -1 any
const R_SRC = 4; // first CIDR index into the cidr table, count in R_NSRC
const R_NSRC = 5;
const R_DST = 6;
const R_NDST = 7;
const R_SPORT = 8; // first port range index, count in R_NSPORT
const R_NSPORT = 9;
const R_DPORT = 10;
const R_NDPORT = 11;
const R_WORDS = 12;
// CIDR entries: family, 4 address words, 4 mask words.
const C_FAMILY = 0;
const C_ADDR = 1;
const C_MASK = 5;
const C_WORDS = 9;

/** "10.0.0.0/8", "fd00::/64", a bare address: family, address and mask words (uint32). */
export function policyCidr(s: string): { family: number; addr: number[]; mask: number[] } {
  try {
    const c = parseCidr(s.trim());
    return { family: c.family, addr: [...c.net].map((w) => w >>> 0), mask: [...c.mask].map((w) => w >>> 0) };
  } catch (e) {
    throw new Error(`policy: "${s}": ${(e as Error).message}`);
  }
}

function parsePorts(v: number | string): Array<[number, number]> {
  const out: Array<[number, number]> = [];
  for (const part of String(v).split(',')) {
    const m = /^\s*(\d+)\s*(?:-\s*(\d+)\s*)?$/.exec(part);
    if (!m) throw new Error(`policy: bad port or range "${part}"`);
    const lo = Number(m[1]);
    const hi = m[2] === undefined ? lo : Number(m[2]);
    if (lo > 65535 || hi > 65535 || lo > hi) throw new Error(`policy: bad port range "${part}"`);
    out.push([lo, hi]);
  }
  return out;
}

function action(v: unknown, what: string, dflt: number): number {
  if (v === undefined) return dflt;
  if (v === 'accept') return ACTION_ACCEPT;
  if (v === 'drop') return ACTION_DROP;
  throw new Error(`policy: ${what} must be "accept" or "drop", got ${JSON.stringify(v)}`);
}

/** The firewall policy of enforce mode: established/related accepted, invalid dropped, new by rule; marks to set. */
export class Policy {
  readonly spec: PolicySpec;
  readonly defaultAction: number;
  readonly invalidAction: number;
  readonly untrackedAction: number;
  readonly connmark: boolean;
  readonly defaultMark: number;
  private readonly rules: Int32Array;
  private readonly cidrs: Uint32Array;
  private readonly ports: Int32Array;
  readonly ruleCount: number;
  /** Index of the rule the last new connection matched, -1 for the default. */
  lastRule = -1;
  /** Mark the last decision set on the packet, -1 for none. */
  mark = -1;

  constructor(spec: PolicySpec = {}) {
    if (typeof spec !== 'object' || spec === null || Array.isArray(spec)) throw new Error('policy: expected a JSON object');
    for (const k of Object.keys(spec)) {
      if (!['default', 'invalid', 'untracked', 'connmark', 'mark', 'rules'].includes(k)) throw new Error(`policy: unknown key "${k}"`);
    }
    this.spec = spec;
    this.defaultAction = action(spec.default, 'default', ACTION_ACCEPT);
    this.invalidAction = action(spec.invalid, 'invalid', ACTION_DROP);
    this.untrackedAction = action(spec.untracked, 'untracked', ACTION_ACCEPT);
    this.connmark = spec.connmark === true;
    this.defaultMark = markOf(spec.mark, 'mark');
    const rules = spec.rules ?? [];
    if (!Array.isArray(rules)) throw new Error('policy: "rules" must be a list');
    const cidrs: number[] = [];
    const ports: number[] = [];
    this.rules = new Int32Array(rules.length * R_WORDS);
    rules.forEach((r, i) => {
      const at = `rule ${i + 1}`;
      if (typeof r !== 'object' || r === null) throw new Error(`policy: ${at} is not an object`);
      for (const k of Object.keys(r)) {
        if (!['action', 'src', 'dst', 'sport', 'dport', 'proto', 'zone', 'mark'].includes(k)) throw new Error(`policy: ${at}: unknown key "${k}"`);
      }
      const o = i * R_WORDS;
      const w = this.rules;
      if (r.action !== 'accept' && r.action !== 'drop') throw new Error(`policy: ${at}: "action" must be "accept" or "drop"`);
      w[o + R_ACTION] = action(r.action, `${at} action`, ACTION_ACCEPT);
      w[o + R_MARK] = r.mark === undefined ? -1 : markOf(r.mark, `${at} mark`);
      let proto = -1;
      if (r.proto !== undefined) {
        proto = typeof r.proto === 'number' ? r.proto : (PROTOS[String(r.proto).toLowerCase()] ?? -2);
        if (!Number.isInteger(proto) || proto < 0 || proto > 255) throw new Error(`policy: ${at}: unknown protocol ${JSON.stringify(r.proto)}`);
      }
      w[o + R_PROTO] = proto;
      if (r.zone !== undefined && (!Number.isInteger(r.zone) || r.zone < 0 || r.zone > 65535)) throw new Error(`policy: ${at}: zone must be 0..65535`);
      w[o + R_ZONE] = r.zone ?? -1;
      const addCidrs = (v: string | string[] | undefined, first: number, count: number): void => {
        const list = v === undefined ? [] : Array.isArray(v) ? v : [v];
        w[o + first] = cidrs.length / C_WORDS;
        w[o + count] = list.length;
        for (const s of list) {
          const c = policyCidr(String(s));
          cidrs.push(c.family, ...c.addr, ...c.mask);
        }
      };
      addCidrs(r.src, R_SRC, R_NSRC);
      addCidrs(r.dst, R_DST, R_NDST);
      const addPorts = (v: number | string | undefined, first: number, count: number): void => {
        const list = v === undefined ? [] : parsePorts(v);
        if (list.length && proto >= 0 && !PORT_PROTOS.has(proto)) throw new Error(`policy: ${at}: ports need tcp, udp, sctp or udplite`);
        w[o + first] = ports.length / 2;
        w[o + count] = list.length;
        for (const [lo, hi] of list) ports.push(lo, hi);
      };
      addPorts(r.sport, R_SPORT, R_NSPORT);
      addPorts(r.dport, R_DPORT, R_NDPORT);
    });
    this.ruleCount = rules.length;
    this.cidrs = Uint32Array.from(cidrs);
    this.ports = Int32Array.from(ports);
  }

  static fromFile(path: string): Policy {
    let text: string;
    try {
      text = readFileSync(path, 'utf8');
    } catch (e) {
      throw new Error(`policy: cannot read ${path}: ${(e as Error).message}`);
    }
    let spec: unknown;
    try {
      spec = JSON.parse(text);
    } catch (e) {
      throw new Error(`policy: ${path} is not JSON: ${(e as Error).message}`);
    }
    return new Policy(spec as PolicySpec);
  }

  private cidrMatch(first: number, count: number, pkt: Packet, dst: boolean): boolean {
    if (count === 0) return true;
    const a = dst ? pkt.dst : pkt.src;
    const c = this.cidrs;
    for (let k = first; k < first + count; k++) {
      const b = k * C_WORDS;
      if (c[b + C_FAMILY] !== pkt.family) continue;
      if (((a[0]! & c[b + C_MASK]!) >>> 0) === c[b + C_ADDR] && ((a[1]! & c[b + C_MASK + 1]!) >>> 0) === c[b + C_ADDR + 1] &&
        ((a[2]! & c[b + C_MASK + 2]!) >>> 0) === c[b + C_ADDR + 2] && ((a[3]! & c[b + C_MASK + 3]!) >>> 0) === c[b + C_ADDR + 3]) return true;
    }
    return false;
  }

  private portMatch(first: number, count: number, port: number, hasPorts: boolean): boolean {
    if (count === 0) return true;
    if (!hasPorts) return false;
    const p = this.ports;
    for (let k = first; k < first + count; k++) if (port >= p[2 * k]! && port <= p[2 * k + 1]!) return true;
    return false;
  }

  /** The first rule a new connection's first packet matches, or -1. */
  match(pkt: Packet, zone: number): number {
    const w = this.rules;
    const hasPorts = PORT_PROTOS.has(pkt.l4proto);
    for (let i = 0; i < this.ruleCount; i++) {
      const o = i * R_WORDS;
      const proto = w[o + R_PROTO]!;
      if (proto >= 0 && proto !== pkt.l4proto) continue;
      const z = w[o + R_ZONE]!;
      if (z >= 0 && z !== zone) continue;
      if (!this.cidrMatch(w[o + R_SRC]!, w[o + R_NSRC]!, pkt, false)) continue;
      if (!this.cidrMatch(w[o + R_DST]!, w[o + R_NDST]!, pkt, true)) continue;
      if (!this.portMatch(w[o + R_SPORT]!, w[o + R_NSPORT]!, pkt.sport, hasPorts)) continue;
      if (!this.portMatch(w[o + R_DPORT]!, w[o + R_NDPORT]!, pkt.dport, hasPorts)) continue;
      return i;
    }
    return -1;
  }

  /**
   * The action for a decided packet (ACTION_*); sets `mark` (-1: leave the packet's mark) and
   * `lastRule`. `connMark` is the connection's stored mark (0 when none).
   */
  decide(v: Verdict, pkt: Packet, zone: number, connMark: number): number {
    this.lastRule = -1;
    this.mark = -1;
    if (v.drop) return ACTION_DROP; // table full or over a limit: the kernel's NF_DROP
    const s = v.state;
    if (s === CT_ESTABLISHED || s === CT_RELATED) {
      if (this.connmark && connMark !== 0) this.mark = connMark >>> 0;
      return ACTION_ACCEPT;
    }
    if (s === CT_INVALID) return this.invalidAction;
    if (s === CT_UNTRACKED) return this.untrackedAction;
    if (s !== CT_NEW) return ACTION_DROP;
    const r = this.match(pkt, zone);
    this.lastRule = r;
    if (r < 0) {
      if (this.defaultMark !== 0) this.mark = this.defaultMark;
      return this.defaultAction;
    }
    const m = this.rules[r * R_WORDS + R_MARK]!;
    if (m !== -1) this.mark = m >>> 0;
    else if (this.defaultMark !== 0) this.mark = this.defaultMark;
    return this.rules[r * R_WORDS + R_ACTION]!;
  }
}

function markOf(v: unknown, what: string): number {
  if (v === undefined) return 0;
  if (typeof v !== 'number' || !Number.isInteger(v) || v < 0 || v > 0xffffffff) throw new Error(`policy: ${what} must be an integer 0..0xffffffff`);
  return v | 0;
}

