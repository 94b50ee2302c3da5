/**
 * The parsed view of one frame: what the parser fills in and the trackers read.
 * One Packet object is reused for every frame a thread handles (no per-packet allocation).
 */

export const NFPROTO_IPV4 = 2;
export const NFPROTO_IPV6 = 10;

export const IPPROTO_ICMP = 1;
export const IPPROTO_TCP = 6;
export const IPPROTO_UDP = 17;
export const IPPROTO_ICMPV6 = 58;

// TCP flag bits as in the header's 13th byte.
export const TH_FIN = 0x01;
export const TH_SYN = 0x02;
export const TH_RST = 0x04;
export const TH_PSH = 0x08;
export const TH_ACK = 0x10;
export const TH_URG = 0x20;
export const TH_ECE = 0x40;
export const TH_CWR = 0x80;

// Link types understood by the parser (pcap LINKTYPE_* numbers).
/** pcap link type: Ethernet (802.1Q / 802.1ad tags understood). */
export const LINKTYPE_ETHERNET = 1;
/** pcap link type: raw IPv4 or IPv6 packets, no link header. */
export const LINKTYPE_RAW = 101;
/** pcap link type: Linux cooked capture v1 (`tcpdump -i any`). */
export const LINKTYPE_LINUX_SLL = 113;
/** pcap link type: raw IPv4 packets. */
export const LINKTYPE_IPV4 = 228;
/** pcap link type: raw IPv6 packets. */
export const LINKTYPE_IPV6 = 229;
/** pcap link type: netfilter NFLOG messages (the kernel-equivalence captures). */
export const LINKTYPE_NFLOG = 239;
/** pcap link type: Linux cooked capture v2. */
export const LINKTYPE_LINUX_SLL2 = 276;

/** Packet.dirty bits: the parser wrote TCP fields (seq .. hasSack) / ICMP and inner-packet fields. */
export const PKT_DIRTY_TCP = 1;
export const PKT_DIRTY_ICMP = 2;

/** A parsed frame (layer 3 and 4 fields); reused, filled by parseFrame(). */
export class Packet {
  /** null when the frame parsed; else why it is invalid (a constant string, not built per packet). */
  reason: string | null = null;
  /** True when the frame is not an IP packet conntrack would see (ARP, LLDP, ...). */
  notIp = false;
  /** Table clock time of the packet, ms (set by the caller). */
  now = 0;

  /** NFPROTO_IPV4 or NFPROTO_IPV6. */
  family = 0;
  /** Layer-4 protocol number (after IPv6 extension headers). */
  l4proto = 0;
  /** Addresses: IPv4 in word 0 (network byte order read as a big-endian uint32), words 1..3 zero. */
  readonly src = new Uint32Array(4);
  readonly dst = new Uint32Array(4);
  /** TCP/UDP ports; ICMP echo: sport = id, dport = type << 8 | code. */
  sport = 0;
  dport = 0;

  /** The frame bytes and where the layer-3 and layer-4 headers start. */
  buf: Uint8Array = new Uint8Array(0);
  l3off = 0;
  l4off = 0;
  /** Bytes of layer 4 (header + payload) as bounded by the IP length and the captured bytes. */
  l4len = 0;
  /** IP-level length of the packet (IPv4 total length, IPv6 40 + payload length). */
  ipLen = 0;
  /** True when the layer-4 header and payload were all captured (checksums can be verified). */
  complete = true;
  /** IPv4: the packet is a fragment (MF set or offset != 0). IPv6: a fragment header was seen with offset != 0 or M set. */
  fragment = false;
  /** Set by a tracker that accepted an offloaded (pseudo-header partial sum) checksum. */
  csumPartial = false;

  // TCP
  seq = 0; // uint32
  ack = 0; // uint32
  tcpFlags = 0;
  window = 0; // raw 16-bit window
  doff = 0; // header length in bytes
  dataLen = 0; // payload bytes after the TCP header
  /** Window scale option value, or -1 when absent (only meaningful on SYN). */
  wscale = -1;
  sackPerm = false;
  /** The ACK moved past each SACK block's right edge in turn (uint32, the kernel's tcp_sack), valid when hasSack. */
  sackMax = 0;
  hasSack = false;

  // ICMP / ICMPv6
  icmpType = 0;
  icmpCode = 0;
  icmpId = 0;
  /** The packet is an ICMP error carrying an inner packet; inner* fields describe it. */
  icmpError = false;
  innerFamily = 0;
  innerProto = 0;
  readonly innerSrc = new Uint32Array(4);
  readonly innerDst = new Uint32Array(4);
  innerSport = 0;
  innerDport = 0;
  /** Where the inner packet's layer-4 header starts in buf (its IP header starts at l4off + 8); 0 = not reached. */
  innerL4off = 0;
  /** Why the inner packet could not give a tuple (null when it did). */
  innerReason: string | null = null;

  /**
   * Which optional groups of fields the parser wrote since the last reset (PKT_DIRTY_*): parseFrame
   * clears only those (resetParsed), so a UDP packet does not pay for the TCP and ICMP fields.
   * @internal
   */
  dirty = 0;

  /** Reset every field before parsing a new frame. */
  reset(): void {
    this.dirty = PKT_DIRTY_TCP | PKT_DIRTY_ICMP;
    this.resetParsed();
  }

  /**
   * parseFrame's reset: the fields every parse may set, and the TCP and ICMP groups only when the
   * parser wrote them since (the `dirty` bits; a Packet filled by hand should be reset()).
   * @internal
   */
  resetParsed(): void {
    this.reason = null;
    this.notIp = false;
    this.family = 0;
    this.l4proto = 0;
    // Element stores: cheaper than fill() calls on 4-word arrays, once per packet.
    const a = this.src;
    const b = this.dst;
    a[0] = 0; a[1] = 0; a[2] = 0; a[3] = 0;
    b[0] = 0; b[1] = 0; b[2] = 0; b[3] = 0;
    this.sport = 0;
    this.dport = 0;
    this.l3off = 0;
    this.l4off = 0;
    this.l4len = 0;
    this.ipLen = 0;
    this.complete = true;
    this.fragment = false;
    this.csumPartial = false;
    this.dataLen = 0;
    const dirty = this.dirty;
    if (dirty === 0) return;
    this.dirty = 0;
    if (dirty & PKT_DIRTY_TCP) this.resetTcp();
    if (dirty & PKT_DIRTY_ICMP) this.resetIcmp();
  }

  private resetTcp(): void {
    this.seq = 0;
    this.ack = 0;
    this.tcpFlags = 0;
    this.window = 0;
    this.doff = 0;
    this.wscale = -1;
    this.sackPerm = false;
    this.sackMax = 0;
    this.hasSack = false;
  }

  private resetIcmp(): void {
    this.icmpType = 0;
    this.icmpCode = 0;
    this.icmpId = 0;
    this.icmpError = false;
    this.innerFamily = 0;
    this.innerProto = 0;
    const c = this.innerSrc;
    const d = this.innerDst;
    c[0] = 0; c[1] = 0; c[2] = 0; c[3] = 0;
    d[0] = 0; d[1] = 0; d[2] = 0; d[3] = 0;
    this.innerSport = 0;
    this.innerDport = 0;
    this.innerL4off = 0;
    this.innerReason = null;
  }
}
