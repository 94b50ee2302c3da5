/**
 * The nfnetlink_queue protocol (NFQUEUE): configuration messages, packet messages, verdicts.
 * Netlink headers are host byte order (little-endian here); nfqueue attribute payloads and the
 * queue number in nfgenmsg are network byte order. Parsing reuses one NfqPacket per thread.
 */
import { EAGAIN, EINTR, NetlinkError, type NetlinkSocket } from './netlink.js';

// Netlink message header (struct nlmsghdr) and flags.
export const NLMSG_HDRLEN = 16;
export const NLMSG_ERROR = 2;
export const NLMSG_DONE = 3;
export const NLM_F_REQUEST = 1;
export const NLM_F_ACK = 4;
/** struct nfgenmsg: family, version, queue number (big-endian). */
export const NFGEN_LEN = 4;
export const NLA_HDRLEN = 4;
export const NLA_TYPE_MASK = 0x3fff;

export const NFNL_SUBSYS_QUEUE = 3;
export const NFQNL_MSG_PACKET = 0;
export const NFQNL_MSG_VERDICT = 1;
export const NFQNL_MSG_CONFIG = 2;
export const NFQNL_MSG_VERDICT_BATCH = 3;

// Configuration attributes and values.
export const NFQA_CFG_CMD = 1;
export const NFQA_CFG_PARAMS = 2;
export const NFQA_CFG_QUEUE_MAXLEN = 3;
export const NFQA_CFG_MASK = 4;
export const NFQA_CFG_FLAGS = 5;
export const NFQNL_CFG_CMD_BIND = 1;
export const NFQNL_CFG_CMD_UNBIND = 2;
export const NFQNL_COPY_PACKET = 2;
export const NFQA_CFG_F_FAIL_OPEN = 1;
export const NFQA_CFG_F_CONNTRACK = 2;
export const NFQA_CFG_F_GSO = 4;

// Packet attributes.
export const NFQA_PACKET_HDR = 1;
export const NFQA_VERDICT_HDR = 2;
export const NFQA_MARK = 3;
export const NFQA_IFINDEX_INDEV = 5;
export const NFQA_IFINDEX_OUTDEV = 6;
export const NFQA_PAYLOAD = 10;
export const NFQA_CT = 11;
export const NFQA_CT_INFO = 12;
export const NFQA_CAP_LEN = 13;
export const NFQA_SKB_INFO = 14;
export const NFQA_SKB_CSUMNOTREADY = 1;

// Verdicts (netfilter.h).
export const NF_DROP = 0;
export const NF_ACCEPT = 1;

// enum ip_conntrack_info, as NFQA_CT_INFO carries it.
export const IP_CT_ESTABLISHED = 0;
export const IP_CT_RELATED = 1;
export const IP_CT_NEW = 2;
export const IP_CT_ESTABLISHED_REPLY = 3;
export const IP_CT_RELATED_REPLY = 4;

const MSG_PACKET_TYPE = (NFNL_SUBSYS_QUEUE << 8) | NFQNL_MSG_PACKET;

const align4 = (n: number): number => (n + 3) & ~3;

/** One received packet message, parsed in place (offsets into the receive buffer). */
export class NfqPacket {
  /** Packet id (uint32), for the verdict. -1 when the message was not a packet. */
  id = -1;
  queue = 0;
  hwProtocol = 0;
  hook = 0;
  /** NFQA_MARK, or 0 when absent. */
  mark = 0;
  hasMark = false;
  /** NFQA_CT_INFO (the kernel's ctinfo, only with the netlink glue), -1 when absent. */
  ctInfo = -1;
  /** NFQA_SKB_INFO bits. */
  skbInfo = 0;
  /** Original length (NFQA_CAP_LEN, when the copy was truncated), else the payload length. */
  capLen = 0;
  payloadOff = 0;
  payloadLen = 0;
  indev = 0;
  outdev = 0;
}

/**
 * Parse the netlink message at `off` of `buf` (one datagram from recv). Returns the message
 * length, or 0 when the buffer holds no complete message. `p.id` is -1 for a non-packet message.
 */
export function parsePacketMessage(buf: Uint8Array, dv: DataView, off: number, end: number, p: NfqPacket): number {
  p.id = -1;
  if (end - off < NLMSG_HDRLEN) return 0;
  const len = dv.getUint32(off, true);
  if (len < NLMSG_HDRLEN || off + len > end) return 0;
  const type = dv.getUint16(off + 4, true);
  if (type !== MSG_PACKET_TYPE || len < NLMSG_HDRLEN + NFGEN_LEN) return len;
  p.queue = dv.getUint16(off + NLMSG_HDRLEN + 2, false);
  p.mark = 0;
  p.hasMark = false;
  p.ctInfo = -1;
  p.skbInfo = 0;
  p.capLen = -1;
  p.payloadOff = 0;
  p.payloadLen = 0;
  p.indev = 0;
  p.outdev = 0;
  let a = off + NLMSG_HDRLEN + NFGEN_LEN;
  const mend = off + len;
  let id = -1;
  while (a + NLA_HDRLEN <= mend) {
    const alen = dv.getUint16(a, true);
    if (alen < NLA_HDRLEN || a + alen > mend) break;
    const at = dv.getUint16(a + 2, true) & NLA_TYPE_MASK;
    const v = a + NLA_HDRLEN;
    switch (at) {
      case NFQA_PACKET_HDR:
        id = dv.getUint32(v, false);
        p.hwProtocol = dv.getUint16(v + 4, false);
        p.hook = buf[v + 6]!;
        break;
      case NFQA_MARK: p.mark = dv.getUint32(v, false); p.hasMark = true; break;
      case NFQA_CT_INFO: p.ctInfo = dv.getUint32(v, false); break;
      case NFQA_SKB_INFO: p.skbInfo = dv.getUint32(v, false); break;
      case NFQA_CAP_LEN: p.capLen = dv.getUint32(v, false); break;
      case NFQA_IFINDEX_INDEV: p.indev = dv.getUint32(v, false); break;
      case NFQA_IFINDEX_OUTDEV: p.outdev = dv.getUint32(v, false); break;
      case NFQA_PAYLOAD: p.payloadOff = v; p.payloadLen = alen - NLA_HDRLEN; break;
      default: break;
    }
    a += align4(alen);
  }
  if (p.capLen < 0) p.capLen = p.payloadLen;
  p.id = id;
  return len;
}

/** Writes netlink messages into one buffer, sent with one send(). */
export class MessageWriter {
  readonly buf: Uint8Array;
  readonly dv: DataView;
  len = 0;
  private msgStart = 0;
  seq = 1;

  constructor(bytes: number) {
    this.buf = new Uint8Array(bytes);
    this.dv = new DataView(this.buf.buffer);
  }

  get room(): number {
    return this.buf.length - this.len;
  }

  begin(msgType: number, flags: number, queue: number): void {
    const o = this.len;
    this.msgStart = o;
    this.dv.setUint32(o + 4, (NFNL_SUBSYS_QUEUE << 8) | msgType, true); // type (u16) + flags (u16)
    this.dv.setUint16(o + 6, flags, true);
    this.dv.setUint32(o + 8, this.seq++ >>> 0, true);
    this.dv.setUint32(o + 12, 0, true); // port id 0: to the kernel
    this.buf[o + 16] = 0; // AF_UNSPEC
    this.buf[o + 17] = 0; // NFNETLINK_V0
    this.dv.setUint16(o + 18, queue, false);
    this.len = o + NLMSG_HDRLEN + NFGEN_LEN;
  }

  /** An attribute with a big-endian u32 payload. */
  attrU32(type: number, v: number): void {
    const o = this.len;
    this.dv.setUint16(o, NLA_HDRLEN + 4, true);
    this.dv.setUint16(o + 2, type, true);
    this.dv.setUint32(o + 4, v >>> 0, false);
    this.len = o + 8;
  }

  attrBytes(type: number, bytes: readonly number[]): void {
    const o = this.len;
    this.dv.setUint16(o, NLA_HDRLEN + bytes.length, true);
    this.dv.setUint16(o + 2, type, true);
    for (let i = 0; i < bytes.length; i++) this.buf[o + NLA_HDRLEN + i] = bytes[i]!;
    const end = o + align4(NLA_HDRLEN + bytes.length);
    for (let i = o + NLA_HDRLEN + bytes.length; i < end; i++) this.buf[i] = 0;
    this.len = end;
  }

  /** A verdict header attribute: struct nfqnl_msg_verdict_hdr { be32 verdict; be32 id; }. */
  attrVerdict(verdict: number, id: number): void {
    const o = this.len;
    this.dv.setUint16(o, NLA_HDRLEN + 8, true);
    this.dv.setUint16(o + 2, NFQA_VERDICT_HDR, true);
    this.dv.setUint32(o + 4, verdict, false);
    this.dv.setUint32(o + 8, id >>> 0, false);
    this.len = o + 12;
  }

  end(): void {
    this.dv.setUint32(this.msgStart, this.len - this.msgStart, true);
  }

  reset(): void {
    this.len = 0;
  }
}

/**
 * Send one configuration message and wait for its acknowledgement. Throws NetlinkError with
 * the kernel's errno when refused.
 */
export function configure(sock: NetlinkSocket, w: MessageWriter, rx: Uint8Array, queue: number, fill: (w: MessageWriter) => void, what: string): void {
  w.reset();
  w.begin(NFQNL_MSG_CONFIG, NLM_F_REQUEST | NLM_F_ACK, queue);
  fill(w);
  w.end();
  const seq = w.seq - 1;
  const sent = sock.send(w.buf, w.len);
  if (sent < 0) throw new NetlinkError(`nfqueue ${what} (queue ${queue}): send: ${sock.strerror(-sent)}`, -sent);
  const dv = new DataView(rx.buffer, rx.byteOffset, rx.byteLength);
  for (let tries = 0; tries < 1000; tries++) {
    const n = sock.recv(rx);
    if (n === -EINTR) continue;
    if (n === -EAGAIN) throw new NetlinkError(`nfqueue ${what} (queue ${queue}): no answer from the kernel`, EAGAIN);
    if (n < 0) throw new NetlinkError(`nfqueue ${what} (queue ${queue}): recv: ${sock.strerror(-n)}`, -n);
    let off = 0;
    while (off + NLMSG_HDRLEN <= n) {
      const len = dv.getUint32(off, true);
      if (len < NLMSG_HDRLEN) break;
      const type = dv.getUint16(off + 4, true);
      if (type === NLMSG_ERROR && dv.getUint32(off + NLMSG_HDRLEN + 4 + 8, true) === seq) {
        const errno = -dv.getInt32(off + NLMSG_HDRLEN, true);
        if (errno === 0) return;
        throw new NetlinkError(`nfqueue ${what} (queue ${queue}): ${sock.strerror(errno)} (errno ${errno})`, errno);
      }
      off += align4(len);
    }
    // Anything else (an early packet of the queue): dropped here; fail-open does not apply, the
    // kernel will hold it until the socket closes or a batch verdict covers it.
  }
  throw new NetlinkError(`nfqueue ${what} (queue ${queue}): no acknowledgement`, EAGAIN);
}

export interface BindOptions {
  /** Bytes of each packet copied to us (headers suffice for tracking; 0xffff: whole packet). */
  copyRange: number;
  /** Packets the kernel holds for this queue before fail-open (or drops). */
  maxLen: number;
  failOpen: boolean;
  /** Ask for the kernel's conntrack info (NFQA_CT); fails with EOPNOTSUPP without the glue. */
  conntrack: boolean;
}

const EPERM = 1;
const EOPNOTSUPP = 95;

/**
 * Bind `queue` to this socket and set copy mode, length and flags. With `conntrack`, asks for
 * NFQA_CT and falls back to none where the kernel lacks the glue. Returns whether NFQA_CT is on.
 */
export function bindQueue(sock: NetlinkSocket, w: MessageWriter, rx: Uint8Array, queue: number, o: BindOptions): boolean {
  try {
    configure(sock, w, rx, queue, (m) => m.attrBytes(NFQA_CFG_CMD, [NFQNL_CFG_CMD_BIND, 0, 0, 0]), 'bind');
  } catch (e) {
    // The kernel answers EPERM both without CAP_NET_ADMIN and for a queue another socket holds.
    if (e instanceof NetlinkError && e.errno === EPERM) {
      throw new NetlinkError(`${e.message}: queue ${queue} is bound by another socket, or CAP_NET_ADMIN is missing`, EPERM);
    }
    throw e;
  }
  const r = o.copyRange >>> 0;
  configure(sock, w, rx, queue, (m) => m.attrBytes(NFQA_CFG_PARAMS, [r >>> 24, (r >>> 16) & 255, (r >>> 8) & 255, r & 255, NFQNL_COPY_PACKET]), 'copy mode');
  configure(sock, w, rx, queue, (m) => m.attrU32(NFQA_CFG_QUEUE_MAXLEN, o.maxLen), 'queue length');
  const mask = NFQA_CFG_F_FAIL_OPEN | NFQA_CFG_F_CONNTRACK;
  const setFlags = (ct: boolean): void => {
    const flags = (o.failOpen ? NFQA_CFG_F_FAIL_OPEN : 0) | (ct ? NFQA_CFG_F_CONNTRACK : 0);
    configure(sock, w, rx, queue, (m) => { m.attrU32(NFQA_CFG_MASK, mask); m.attrU32(NFQA_CFG_FLAGS, flags); }, 'flags');
  };
  if (o.conntrack) {
    try {
      setFlags(true);
      return true;
    } catch (e) {
      if (!(e instanceof NetlinkError) || e.errno !== EOPNOTSUPP) throw e;
      // No CONFIG_NETFILTER_NETLINK_GLUE_CT: the kernel's state comes by the mark instead.
    }
  }
  setFlags(false);
  return false;
}

/**
 * Verdicts for the packets of one receive batch, in packet order: runs of the same verdict and
 * mark become one NFQNL_MSG_VERDICT_BATCH (it covers every held id up to the run's last), a lone
 * packet one NFQNL_MSG_VERDICT; all sent with one send().
 */
export class VerdictBatcher {
  readonly w: MessageWriter;
  private runVerdict = -1;
  private runMark = -1;
  private runLast = -1;
  private runCount = 0;
  private readonly queue: number;
  /** Messages and packets sent, for statistics. */
  batches = 0;

  constructor(queue: number, bytes = 1 << 16) {
    this.queue = queue;
    this.w = new MessageWriter(bytes);
  }

  /** Verdict for packet `id`; `mark` -1 leaves the packet's mark alone. */
  add(id: number, verdict: number, mark: number): void {
    if (this.runCount > 0 && (verdict !== this.runVerdict || mark !== this.runMark)) this.closeRun();
    this.runVerdict = verdict;
    this.runMark = mark;
    this.runLast = id;
    this.runCount++;
  }

  private closeRun(): void {
    const w = this.w;
    w.begin(this.runCount > 1 ? NFQNL_MSG_VERDICT_BATCH : NFQNL_MSG_VERDICT, NLM_F_REQUEST, this.queue);
    w.attrVerdict(this.runVerdict, this.runLast);
    if (this.runMark !== -1) w.attrU32(NFQA_MARK, this.runMark);
    w.end();
    this.batches++;
    this.runCount = 0;
  }

  /** Send every pending verdict. Returns -errno on a failed send, else 0. */
  flush(sock: NetlinkSocket): number {
    if (this.runCount > 0) this.closeRun();
    if (this.w.len === 0) return 0;
    const n = sock.send(this.w.buf, this.w.len);
    this.w.reset();
    return n < 0 ? n : 0;
  }

  /** Room left before a flush is needed (a verdict message is at most 32 bytes). */
  get full(): boolean {
    return this.w.room < 64;
  }
}
