/**
 * NAT rules: what nft's `snat`, `dnat`, `masquerade` and `redirect` statements say, as objects
 * or as nft-like text, decided at a connection's first packet (nat/nat.ts).
 *
 * The rule set is shared by every thread of a table: setNatRules() stores it as JSON text in
 * the table's NAT section under a seqlock (H_NAT_SEQ); each thread compiles it again when the
 * sequence changes (one Atomics.load per new connection), so matching allocates nothing.
 *
 * Interfaces model the router: each has an IPv4/IPv6 address (masquerade's source, redirect's
 * destination) and routes (CIDRs); a packet's output interface is the one whose route holds its
 * destination (longest prefix), its input interface the one whose route holds its source.
 */
import {
  H_NAT_LEN, H_NAT_SEQ, NAT_RULE_BYTES, NAT_RULE_LOCK,
} from '../../table/layout.js';
import { lock, unlock } from '../../table/locks.js';
import { parseAddr } from '../tuple.js';
import { NFPROTO_IPV4, NFPROTO_IPV6 } from '../../input/packet/packet.js';
import type { ConntrackTable } from '../../table/table.js';

/** The NAT statement of a rule, as nft names it. */
export type NatType = 'snat' | 'dnat' | 'masquerade' | 'redirect';

/** One NAT rule. Match fields are all optional (absent: any); `to` is nft's argument. */
export interface NatRule {
  type: NatType;
  /** 4 or 6 (nft's `ip` / `ip6` before snat/dnat); default: the family of the addresses given. */
  family?: 4 | 6;
  /** tcp, udp, udplite, sctp, dccp, icmp, icmpv6, gre, or a protocol number (nft: meta l4proto). */
  protocol?: string | number;
  /** Source / destination address or CIDR (nft: ip saddr 10.0.0.0/8). */
  saddr?: string;
  daddr?: string;
  /** Port or range "lo-hi" (nft: tcp dport 80, udp sport 1000-2000); needs a port protocol. */
  sport?: number | string;
  dport?: number | string;
  /** Zone id (nft: ct zone), namespace, connection mark (nft: ct mark and mask). */
  zone?: number;
  namespace?: number;
  mark?: number;
  markMask?: number;
  /** Input / output interface name (nft: iifname / oifname), from `interfaces`' routes. */
  iif?: string;
  oif?: string;
  /** snat/dnat: "addr", "addr-addr", with ":port" or ":lo-hi"; IPv6 in brackets. redirect: ":port[-hi]". masquerade: ":lo-hi". */
  to?: string;
  /** nft flags: random, fully-random, persistent. */
  random?: boolean;
  fullyRandom?: boolean;
  persistent?: boolean;
}

/** A router interface: its addresses (masquerade's and redirect's source) and the routes out of it. */
export interface NatInterface {
  name: string;
  /** IPv4 and IPv6 address of the interface (masquerade / redirect use them). */
  address?: string;
  address6?: string;
  /** CIDRs reached through this interface, e.g. ["10.0.0.0/8"], ["0.0.0.0/0", "::/0"]. */
  routes?: string[];
}

/** What table.setNatRules() takes: the rules, in order, and the interfaces masquerade and redirect use. */
export interface NatConfig {
  rules: (NatRule | string)[];
  interfaces?: NatInterface[];
}

// Range flags (the kernel's NF_NAT_RANGE_*).
export const RANGE_MAP_IPS = 1;
export const RANGE_PROTO_SPECIFIED = 2;
export const RANGE_PROTO_RANDOM = 4;
export const RANGE_PERSISTENT = 8;
export const RANGE_PROTO_RANDOM_FULLY = 16;
export const RANGE_PROTO_RANDOM_ALL = RANGE_PROTO_RANDOM | RANGE_PROTO_RANDOM_FULLY;

export const T_SNAT = 0;
export const T_DNAT = 1;
export const T_MASQ = 2;
export const T_REDIRECT = 3;
const TYPES: Record<NatType, number> = { snat: T_SNAT, dnat: T_DNAT, masquerade: T_MASQ, redirect: T_REDIRECT };

/** A range to map into (the kernel's nf_nat_range2). Addresses: 4 words, IPv4 in word 0. */
export class NatRange {
  flags = 0;
  readonly minAddr = new Int32Array(4);
  readonly maxAddr = new Int32Array(4);
  minPort = 0;
  maxPort = 0;
}

/** A compiled rule: plain fields, matched without allocation. */
export class CompiledRule {
  type = T_SNAT;
  family = 0; // NFPROTO_* or 0 = any
  proto = -1;
  hasS = false;
  readonly sAddr = new Int32Array(4);
  sPrefix = 0;
  hasD = false;
  readonly dAddr = new Int32Array(4);
  dPrefix = 0;
  spLo = -1;
  spHi = -1;
  dpLo = -1;
  dpHi = -1;
  zone = -1;
  ns = -1;
  mark = 0;
  markMask = 0; // 0 = no mark match
  iif = -1;
  oif = -1;
  readonly range = new NatRange();
  /** masquerade / redirect: the range's addresses come from the interface at match time. */
  ifaceAddr = false;
}

export class CompiledIface {
  name = '';
  has4 = false;
  readonly addr4 = new Int32Array(4);
  has6 = false;
  readonly addr6 = new Int32Array(4);
  readonly routes: { family: number; addr: Int32Array; prefix: number }[] = [];
}

export interface CompiledNat {
  pre: CompiledRule[]; // dnat, redirect (prerouting)
  post: CompiledRule[]; // snat, masquerade (postrouting)
  ifaces: CompiledIface[];
}

const PROTOS: Record<string, number> = {
  tcp: 6, udp: 17, udplite: 136, sctp: 132, dccp: 33, icmp: 1, icmpv6: 58, 'ipv6-icmp': 58, gre: 47,
};
const PORT_PROTOS = new Set([6, 17, 136, 132, 33]);

function protoNumber(p: string | number): number {
  if (typeof p === 'number') {
    if (!Number.isInteger(p) || p < 0 || p > 255) throw new Error(`bad protocol ${p}`);
    return p;
  }
  const n = PROTOS[p.toLowerCase()];
  if (n === undefined) {
    if (/^\d+$/.test(p)) return protoNumber(Number(p));
    throw new Error(`unknown protocol "${p}"`);
  }
  return n;
}

function portRange(v: number | string, what: string): [number, number] {
  const s = String(v);
  const m = /^(\d+)(?:-(\d+))?$/.exec(s);
  if (!m) throw new Error(`bad ${what} "${s}"`);
  const lo = Number(m[1]);
  const hi = m[2] !== undefined ? Number(m[2]) : lo;
  if (lo > 65535 || hi > 65535 || lo > hi) throw new Error(`bad ${what} "${s}"`);
  return [lo, hi];
}

function cidr(text: string, out: Int32Array): { family: number; prefix: number } {
  const [a, p] = text.split('/');
  const family = parseAddr(a!, out, 0);
  const max = family === NFPROTO_IPV4 ? 32 : 128;
  const prefix = p === undefined ? max : Number(p);
  if (!Number.isInteger(prefix) || prefix < 0 || prefix > max) throw new Error(`bad prefix in "${text}"`);
  return { family, prefix };
}

/** Does address a (4 words) lie in prefix/len? IPv4 uses word 0. */
export function inPrefix(a: Int32Array | Uint32Array, ao: number, p: Int32Array, len: number): boolean {
  for (let i = 0; i < 4 && len > 0; i++, len -= 32) {
    const bits = len >= 32 ? 32 : len;
    const mask = bits === 32 ? -1 : ~(-1 >>> bits);
    if (((a[ao + i]! ^ p[i]!) & mask) !== 0) return false;
  }
  return true;
}

/** Parse nft's `to` argument: addr[-addr][:port[-port]], [v6][-[v6]][:ports], or :ports. */
function parseTo(text: string, r: NatRange): number {
  let family = 0;
  let addrPart = text;
  let portPart: string | null = null;
  if (text.startsWith('[')) {
    const m = /^\[([^\]]+)\](?:-\[([^\]]+)\])?(?::(.+))?$/.exec(text);
    if (!m) throw new Error(`bad address in "${text}"`);
    addrPart = m[2] ? `${m[1]}-${m[2]}` : m[1]!;
    portPart = m[3] ?? null;
  } else if (text.startsWith(':')) {
    addrPart = '';
    portPart = text.slice(1);
  } else if (!text.includes('::') && (text.match(/:/g) ?? []).length === 1) {
    const i = text.indexOf(':');
    addrPart = text.slice(0, i);
    portPart = text.slice(i + 1);
  }
  if (addrPart !== '') {
    const [lo, hi] = addrPart.split('-');
    family = parseAddr(lo!, r.minAddr, 0);
    if (hi !== undefined) {
      if (parseAddr(hi, r.maxAddr, 0) !== family) throw new Error(`address range mixes families in "${text}"`);
    } else {
      r.maxAddr.set(r.minAddr);
    }
    for (let i = 0; i < 4; i++) {
      const a = r.minAddr[i]! >>> 0;
      const b = r.maxAddr[i]! >>> 0;
      if (a < b) break;
      if (a > b) throw new Error(`address range runs backwards in "${text}"`);
    }
    r.flags |= RANGE_MAP_IPS;
  }
  if (portPart !== null) {
    const [lo, hi] = portRange(portPart, 'port range');
    r.minPort = lo;
    r.maxPort = hi;
    r.flags |= RANGE_PROTO_SPECIFIED;
  }
  return family;
}

/**
 * Parse one rule in nft syntax (the statements of a nat chain rule):
 *   [ip|ip6 saddr|daddr CIDR] [tcp|udp|udplite|sctp|dccp sport|dport N[-M]] [meta l4proto P]
 *   [iifname|oifname NAME] [ct zone N] [ct mark N[/MASK]] [netns N]
 *   snat|dnat [ip|ip6] to ADDR[-ADDR][:PORT[-PORT]] | masquerade [to :PORTS] | redirect [to :PORTS]
 *   [random] [fully-random] [persistent]   (comma-separated as in nft, or separate words)
 */
export function parseNatRule(text: string): NatRule {
  const w = text.trim().split(/[\s,]+/).filter((x) => x !== '');
  const r: Partial<NatRule> = {};
  let i = 0;
  const next = (what: string): string => {
    const v = w[i++];
    if (v === undefined) throw new Error(`"${text}": ${what} expected`);
    return v;
  };
  const setFamily = (f: 4 | 6): void => {
    if (r.family !== undefined && r.family !== f) throw new Error(`"${text}": mixes ip and ip6`);
    r.family = f;
  };
  while (i < w.length) {
    const k = w[i++]!;
    if (k === 'ip' || k === 'ip6') {
      const f = k === 'ip' ? 4 : 6;
      const field = next('saddr or daddr');
      if (field !== 'saddr' && field !== 'daddr') throw new Error(`"${text}": unknown ${k} field "${field}"`);
      setFamily(f);
      r[field] = next('address');
    } else if (k in PROTOS && (w[i] === 'sport' || w[i] === 'dport')) {
      r.protocol = k;
      const field = next('sport or dport') as 'sport' | 'dport';
      r[field] = next('port');
    } else if (k === 'meta') {
      const f = next('meta key');
      if (f === 'l4proto') r.protocol = next('protocol');
      else if (f === 'iifname' || f === 'oifname') r[f === 'iifname' ? 'iif' : 'oif'] = next('interface');
      else throw new Error(`"${text}": unsupported meta ${f}`);
    } else if (k === 'iifname' || k === 'iif') {
      r.iif = next('interface').replace(/^"|"$/g, '');
    } else if (k === 'oifname' || k === 'oif') {
      r.oif = next('interface').replace(/^"|"$/g, '');
    } else if (k === 'ct') {
      const f = next('ct key');
      if (f === 'zone') r.zone = Number(next('zone'));
      else if (f === 'mark') {
        const v = next('mark');
        const [m, mask] = v.split('/');
        r.mark = Number(m);
        if (mask !== undefined) r.markMask = Number(mask);
      } else throw new Error(`"${text}": unsupported ct ${f}`);
    } else if (k === 'netns') {
      r.namespace = Number(next('namespace'));
    } else if (k === 'snat' || k === 'dnat' || k === 'masquerade' || k === 'redirect') {
      r.type = k;
      if (w[i] === 'ip' || w[i] === 'ip6') setFamily(w[i++] === 'ip' ? 4 : 6);
      if (w[i] === 'to') {
        i++;
        r.to = next('address');
      }
    } else if (k === 'random') {
      r.random = true;
    } else if (k === 'fully-random') {
      r.fullyRandom = true;
    } else if (k === 'persistent') {
      r.persistent = true;
    } else {
      throw new Error(`"${text}": unexpected "${k}"`);
    }
  }
  if (r.type === undefined) throw new Error(`"${text}": no snat, dnat, masquerade or redirect statement`);
  return r as NatRule;
}

/** Parse a rule file: one rule per line, `#` comments, blank lines ignored. */
export function parseNatRules(text: string): NatRule[] {
  const out: NatRule[] = [];
  for (const line of text.split('\n')) {
    const l = line.replace(/#.*/, '').trim();
    if (l !== '') out.push(parseNatRule(l));
  }
  return out;
}

function compileRule(spec: NatRule, ifaceIndex: Map<string, number>): CompiledRule {
  const c = new CompiledRule();
  const type = TYPES[spec.type];
  if (type === undefined) throw new Error(`unknown NAT type "${String(spec.type)}"`);
  c.type = type;
  let family = spec.family === 4 ? NFPROTO_IPV4 : spec.family === 6 ? NFPROTO_IPV6 : 0;
  if (spec.family !== undefined && family === 0) throw new Error(`family must be 4 or 6, got ${String(spec.family)}`);
  const fam = (f: number, what: string): void => {
    if (family !== 0 && family !== f) throw new Error(`${what} is not of the rule's family`);
    family = f;
  };
  if (spec.protocol !== undefined) c.proto = protoNumber(spec.protocol);
  if (spec.saddr !== undefined) {
    const x = cidr(spec.saddr, c.sAddr);
    fam(x.family, `saddr ${spec.saddr}`);
    c.hasS = true;
    c.sPrefix = x.prefix;
  }
  if (spec.daddr !== undefined) {
    const x = cidr(spec.daddr, c.dAddr);
    fam(x.family, `daddr ${spec.daddr}`);
    c.hasD = true;
    c.dPrefix = x.prefix;
  }
  if (spec.sport !== undefined || spec.dport !== undefined) {
    if (!PORT_PROTOS.has(c.proto)) throw new Error('a port match needs protocol tcp, udp, udplite, sctp or dccp');
    if (spec.sport !== undefined) [c.spLo, c.spHi] = portRange(spec.sport, 'sport');
    if (spec.dport !== undefined) [c.dpLo, c.dpHi] = portRange(spec.dport, 'dport');
  }
  if (spec.zone !== undefined) {
    if (!Number.isInteger(spec.zone) || spec.zone < 0 || spec.zone > 65535) throw new Error(`bad zone ${spec.zone}`);
    c.zone = spec.zone;
  }
  if (spec.namespace !== undefined) {
    if (!Number.isInteger(spec.namespace) || spec.namespace < 0) throw new Error(`bad namespace ${spec.namespace}`);
    c.ns = spec.namespace;
  }
  if (spec.mark !== undefined) {
    if (!Number.isFinite(spec.mark)) throw new Error(`bad mark ${spec.mark}`);
    c.mark = spec.mark | 0;
    c.markMask = spec.markMask !== undefined ? spec.markMask | 0 : -1;
    c.mark &= c.markMask;
  }
  const iface = (name: string): number => {
    const k = ifaceIndex.get(name);
    if (k === undefined) throw new Error(`unknown interface "${name}" (declare it in interfaces)`);
    return k;
  };
  if (spec.iif !== undefined) c.iif = iface(spec.iif);
  if (spec.oif !== undefined) c.oif = iface(spec.oif);
  if (spec.to !== undefined) {
    const f = parseTo(spec.to, c.range);
    if (f !== 0) fam(f, `to ${spec.to}`);
    if ((c.type === T_MASQ || c.type === T_REDIRECT) && (c.range.flags & RANGE_MAP_IPS)) {
      throw new Error(`${spec.type} takes ports only ("to :PORT"), not an address`);
    }
  } else if (c.type === T_SNAT || c.type === T_DNAT) {
    throw new Error(`${spec.type} needs "to"`);
  }
  if (c.type === T_MASQ || c.type === T_REDIRECT) {
    c.ifaceAddr = true;
    c.range.flags |= RANGE_MAP_IPS;
  }
  if (spec.random) c.range.flags |= RANGE_PROTO_RANDOM;
  if (spec.fullyRandom) c.range.flags |= RANGE_PROTO_RANDOM_FULLY;
  if (spec.persistent) c.range.flags |= RANGE_PERSISTENT;
  c.family = family;
  return c;
}

/** Compile and check a configuration; throws with a clear message on any mistake. */
export function compileNat(cfg: NatConfig): CompiledNat {
  const ifaces: CompiledIface[] = [];
  const index = new Map<string, number>();
  for (const f of cfg.interfaces ?? []) {
    if (typeof f.name !== 'string' || f.name === '') throw new Error('interface without a name');
    if (index.has(f.name)) throw new Error(`interface "${f.name}" declared twice`);
    const c = new CompiledIface();
    c.name = f.name;
    if (f.address !== undefined) {
      if (parseAddr(f.address, c.addr4, 0) !== NFPROTO_IPV4) throw new Error(`address of ${f.name} is not IPv4`);
      c.has4 = true;
    }
    if (f.address6 !== undefined) {
      if (parseAddr(f.address6, c.addr6, 0) !== NFPROTO_IPV6) throw new Error(`address6 of ${f.name} is not IPv6`);
      c.has6 = true;
    }
    for (const r of f.routes ?? []) {
      const addr = new Int32Array(4);
      const x = cidr(r, addr);
      c.routes.push({ family: x.family, addr, prefix: x.prefix });
    }
    index.set(f.name, ifaces.length);
    ifaces.push(c);
  }
  const pre: CompiledRule[] = [];
  const post: CompiledRule[] = [];
  for (const r of cfg.rules) {
    const spec = typeof r === 'string' ? parseNatRule(r) : r;
    const c = compileRule(spec, index);
    (c.type === T_DNAT || c.type === T_REDIRECT ? pre : post).push(c);
  }
  return { pre, post, ifaces };
}

/** Normalise (parse text rules) for storage. */
function normalise(cfg: NatConfig): NatConfig {
  return {
    rules: cfg.rules.map((r) => (typeof r === 'string' ? parseNatRule(r) : r)),
    interfaces: cfg.interfaces ?? [],
  };
}

/**
 * Install a rule set for every thread of the table (replaces the previous one; an empty rule
 * list turns NAT off). New connections use it; existing ones keep their mappings, as in the kernel.
 */
export function setNatRules(table: ConntrackTable, wid: number, cfg: NatConfig): void {
  const norm = normalise(cfg);
  compileNat(norm); // throws on a bad rule before anything is stored
  const bytes = new TextEncoder().encode(JSON.stringify(norm));
  if (bytes.length > NAT_RULE_BYTES) throw new Error(`NAT rule set too large (${bytes.length} > ${NAT_RULE_BYTES} bytes)`);
  const i32 = table.i32;
  const lk = table.sec.natLocks + NAT_RULE_LOCK;
  lock(i32, lk, wid);
  try {
    // Seqlock: odd while the text changes; readers retry until they see the same even value twice.
    Atomics.add(i32, H_NAT_SEQ, 1); // odd: readers retry
    const u8 = new Uint8Array(table.buffer, table.sec.natRules * 4, NAT_RULE_BYTES);
    u8.set(bytes);
    Atomics.store(i32, H_NAT_LEN, bytes.length); // inside the seqlock, with the text
    Atomics.add(i32, H_NAT_SEQ, 1); // publishes the text (seq-cst after the plain byte stores)
  } finally {
    unlock(i32, lk);
  }
}

/** Read the table's current rule set (for tools and tests). */
export function getNatRules(table: ConntrackTable): NatConfig {
  return readShared(table).cfg;
}

function readShared(table: ConntrackTable): { seq: number; cfg: NatConfig } {
  const i32 = table.i32;
  const u8 = new Uint8Array(table.buffer, table.sec.natRules * 4, NAT_RULE_BYTES);
  for (let spins = 0; ; spins++) {
    if (spins > 10_000_000) throw new Error('NAT rule set: a writer never finished (sequence stays odd)');
    const s0 = Atomics.load(i32, H_NAT_SEQ); // seqlock read side
    if (s0 & 1) continue;
    const len = Atomics.load(i32, H_NAT_LEN); // checked by the second sequence read below
    const text = len === 0 ? '' : new TextDecoder().decode(u8.slice(0, len));
    if (Atomics.load(i32, H_NAT_SEQ) !== s0) continue; // changed while we copied: again
    const cfg = text === '' ? { rules: [], interfaces: [] } : JSON.parse(text) as NatConfig;
    return { seq: s0, cfg };
  }
}

/** A thread's compiled copy of the shared rule set, refreshed when it changes. */
export class NatRuleCache {
  private seq = 0;
  nat: CompiledNat = { pre: [], post: [], ifaces: [] };
  constructor(private readonly table: ConntrackTable) {}
  /** True when NAT is on (at least one rule). One Atomics.load when nothing changed. */
  refresh(): boolean {
    if (Atomics.load(this.table.i32, H_NAT_SEQ) !== this.seq) { // a new rule set was published
      const r = readShared(this.table);
      this.nat = compileNat(r.cfg);
      this.seq = r.seq;
    }
    return this.nat.pre.length + this.nat.post.length > 0;
  }
}
