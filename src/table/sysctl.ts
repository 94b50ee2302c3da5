/**
 * Tunables under the kernel's own sysctl names (net.netfilter.*), with the kernel's defaults.
 * Values live in the table's shared sysctl words so every worker sees one configuration.
 * Timeouts are in seconds, switches 0/1.
 */
import { argError, rangeError } from '../errors.js';

/** One sysctl: its name, default and allowed range. */
export interface SysctlDef {
  readonly name: string;
  readonly index: number;
  readonly def: number;
  readonly min: number;
  readonly max: number;
}

const defs: SysctlDef[] = [];
function def(name: string, value: number, min = 0, max = 0x7fffffff): number {
  const index = defs.length;
  defs.push({ name, index, def: value, min, max });
  return index;
}

const DAY = 86400;
export const S_TCP_TIMEOUT_SYN_SENT = def('nf_conntrack_tcp_timeout_syn_sent', 120);
export const S_TCP_TIMEOUT_SYN_RECV = def('nf_conntrack_tcp_timeout_syn_recv', 60);
export const S_TCP_TIMEOUT_ESTABLISHED = def('nf_conntrack_tcp_timeout_established', 5 * DAY);
export const S_TCP_TIMEOUT_FIN_WAIT = def('nf_conntrack_tcp_timeout_fin_wait', 120);
export const S_TCP_TIMEOUT_CLOSE_WAIT = def('nf_conntrack_tcp_timeout_close_wait', 60);
export const S_TCP_TIMEOUT_LAST_ACK = def('nf_conntrack_tcp_timeout_last_ack', 30);
export const S_TCP_TIMEOUT_TIME_WAIT = def('nf_conntrack_tcp_timeout_time_wait', 120);
export const S_TCP_TIMEOUT_CLOSE = def('nf_conntrack_tcp_timeout_close', 10);
export const S_TCP_TIMEOUT_MAX_RETRANS = def('nf_conntrack_tcp_timeout_max_retrans', 300);
export const S_TCP_TIMEOUT_UNACKNOWLEDGED = def('nf_conntrack_tcp_timeout_unacknowledged', 300);
export const S_TCP_LOOSE = def('nf_conntrack_tcp_loose', 1, 0, 1);
export const S_TCP_BE_LIBERAL = def('nf_conntrack_tcp_be_liberal', 0, 0, 1);
export const S_TCP_MAX_RETRANS = def('nf_conntrack_tcp_max_retrans', 3, 0, 255);
export const S_TCP_IGNORE_INVALID_RST = def('nf_conntrack_tcp_ignore_invalid_rst', 0, 0, 1);
export const S_UDP_TIMEOUT = def('nf_conntrack_udp_timeout', 30);
export const S_UDP_TIMEOUT_STREAM = def('nf_conntrack_udp_timeout_stream', 120);
export const S_ICMP_TIMEOUT = def('nf_conntrack_icmp_timeout', 30);
export const S_ICMPV6_TIMEOUT = def('nf_conntrack_icmpv6_timeout', 30);
export const S_GENERIC_TIMEOUT = def('nf_conntrack_generic_timeout', 600);
export const S_CHECKSUM = def('nf_conntrack_checksum', 1, 0, 1);
export const S_LOG_INVALID = def('nf_conntrack_log_invalid', 0, 0, 255);
export const S_ACCT = def('nf_conntrack_acct', 0, 0, 1);
export const S_TIMESTAMP = def('nf_conntrack_timestamp', 0, 0, 1);
export const S_EVENTS = def('nf_conntrack_events', 1, 0, 2);
export const S_MAX = def('nf_conntrack_max', 65536, 1);
/** Ours (the talk's proposal): minimum idle time before an ASSURED entry may be fast-recycled. */
export const S_SOFT_TIMEOUT = def('nf_conntrack_soft_timeout', 3600);

// SCTP (nf_conntrack_proto_sctp): one timeout per state. Appended here so the indices above stay put.
export const S_SCTP_TIMEOUT_CLOSED = def('nf_conntrack_sctp_timeout_closed', 10);
export const S_SCTP_TIMEOUT_COOKIE_WAIT = def('nf_conntrack_sctp_timeout_cookie_wait', 3);
export const S_SCTP_TIMEOUT_COOKIE_ECHOED = def('nf_conntrack_sctp_timeout_cookie_echoed', 3);
export const S_SCTP_TIMEOUT_ESTABLISHED = def('nf_conntrack_sctp_timeout_established', 210);
export const S_SCTP_TIMEOUT_SHUTDOWN_SENT = def('nf_conntrack_sctp_timeout_shutdown_sent', 3);
export const S_SCTP_TIMEOUT_SHUTDOWN_RECD = def('nf_conntrack_sctp_timeout_shutdown_recd', 3);
export const S_SCTP_TIMEOUT_SHUTDOWN_ACK_SENT = def('nf_conntrack_sctp_timeout_shutdown_ack_sent', 3);
export const S_SCTP_TIMEOUT_HEARTBEAT_SENT = def('nf_conntrack_sctp_timeout_heartbeat_sent', 30);
// GRE (nf_conntrack_proto_gre): unreplied and replied ("stream") timeouts.
export const S_GRE_TIMEOUT = def('nf_conntrack_gre_timeout', 30);
export const S_GRE_TIMEOUT_STREAM = def('nf_conntrack_gre_timeout_stream', 180);

/**
 * Ours: accept TCP/UDP/UDP-Lite checksums that are the pseudo-header partial sum left by a
 * sender with checksum offload (1, default), as the kernel never verifies those; 0 = strict
 * (such packets are invalid, the behaviour before offload was recognised).
 */
export const S_CHECKSUM_OFFLOAD = def('nf_conntrack_checksum_offload', 1, 0, 1);

// Defragmentation before tracking (nf_defrag_ipv4 / nf_defrag_ipv6; src/input/defrag): the
// kernel's names, net.ipv4.* for IPv4 and net.netfilter.nf_conntrack_frag6_* for IPv6.
// Memory bounds in bytes, timeouts in seconds.
export const S_IPFRAG_TIME = def('ipfrag_time', 30, 1);
export const S_IPFRAG_HIGH_THRESH = def('ipfrag_high_thresh', 4 * 1024 * 1024, 0);
export const S_IPFRAG_LOW_THRESH = def('ipfrag_low_thresh', 3 * 1024 * 1024, 0);
export const S_FRAG6_TIMEOUT = def('nf_conntrack_frag6_timeout', 60, 1);
export const S_FRAG6_HIGH_THRESH = def('nf_conntrack_frag6_high_thresh', 4 * 1024 * 1024, 0);
export const S_FRAG6_LOW_THRESH = def('nf_conntrack_frag6_low_thresh', 3 * 1024 * 1024, 0);
/** Ours: 0 turns defragmentation off (fragments are then decided one by one, as before). */
export const S_DEFRAG = def('nf_conntrack_defrag', 1, 0, 1);

/** Every setting the table knows, under the kernel's sysctl names, with defaults and ranges. */
export const SYSCTLS: readonly SysctlDef[] = defs;

const byName = new Map<string, SysctlDef>(defs.map((d) => [d.name, d]));

/** Look a sysctl up by its kernel name, with or without the `net.netfilter.` prefix. */
export function findSysctl(name: string): SysctlDef | undefined {
  const n = name.startsWith('net.netfilter.') ? name.slice('net.netfilter.'.length)
    : name.startsWith('net.ipv4.') ? name.slice('net.ipv4.'.length) : name;
  return byName.get(n);
}

/** Parse `NAME=VALUE`; throws an Error naming the problem. */
export function parseSysctlAssignment(text: string): { def: SysctlDef; value: number } {
  const eq = text.indexOf('=');
  if (eq <= 0) throw argError(`--sysctl expects NAME=VALUE, got "${text}"`);
  const name = text.slice(0, eq).trim();
  const raw = text.slice(eq + 1).trim();
  const d = findSysctl(name);
  if (!d) throw argError(`unknown sysctl "${name}" (known: ${defs.map((x) => x.name).join(', ')})`);
  if (!/^-?\d+$/.test(raw)) throw argError(`sysctl ${d.name}: "${raw}" is not an integer`);
  const value = Number(raw);
  if (value < d.min || value > d.max) {
    throw rangeError(`sysctl ${d.name}: ${value} is out of range ${d.min}..${d.max}`);
  }
  return { def: d, value };
}
