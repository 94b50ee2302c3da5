/**
 * Netlink sockets through libc, reached with the optional `koffi` FFI (Node has no AF_NETLINK).
 * Loaded on demand (dynamic import), so the rest of the library works without koffi; a missing
 * koffi or a platform without libc netlink gives one clear error.
 */

export const AF_NETLINK = 16;
export const SOCK_RAW = 3;
export const SOCK_CLOEXEC = 0x80000;
export const NETLINK_NETFILTER = 12;
export const SOL_SOCKET = 1;
export const SOL_NETLINK = 270;
export const SO_RCVBUF = 8;
export const SO_RCVBUFFORCE = 33;
export const SO_RCVTIMEO = 20;
export const NETLINK_NO_ENOBUFS = 5;
export const MSG_DONTWAIT = 0x40;

export const EINTR = 4;
export const EAGAIN = 11;
export const ENOBUFS = 105;

/** The libc calls this module uses. */
interface Libc {
  socket(domain: number, type: number, proto: number): number;
  bind(fd: number, addr: Uint8Array, len: number): number;
  setsockopt(fd: number, level: number, name: number, val: Uint8Array, len: number): number;
  recv(fd: number, buf: Uint8Array, len: number, flags: number): number;
  send(fd: number, buf: Uint8Array, len: number, flags: number): number;
  close(fd: number): number;
  open(path: string, flags: number): number;
  setns(fd: number, nstype: number): number;
  ifIndex(name: string): number;
  errno(): number;
  strerror(e: number): string;
}

/** The part of koffi's API used here. */
interface KoffiLib {
  func(signature: string): unknown;
}
interface Koffi {
  load(path: string): KoffiLib;
  errno(): number;
}

let libc: Libc | null = null;

/** Thrown when live traffic cannot run here (no koffi, not Linux, or no CAP_NET_ADMIN). */
export class LiveUnavailableError extends Error {}

/** Load koffi and bind libc (once per thread). Throws LiveUnavailableError with the reason. */
export async function loadLibc(): Promise<Libc> {
  if (libc) return libc;
  if (process.platform !== 'linux') throw new LiveUnavailableError('live traffic (NFQUEUE) needs Linux');
  let koffi: Koffi;
  try {
    const name = 'koffi'; // a variable: the build does not need koffi's types (optional dependency)
    const m = await import(name) as { default?: Koffi };
    koffi = (m.default ?? m) as Koffi;
  } catch (e) {
    throw new LiveUnavailableError(`live traffic needs the optional dependency koffi (npm install koffi): ${(e as Error).message}`);
  }
  let lib: KoffiLib;
  try {
    lib = koffi.load('libc.so.6');
  } catch (e) {
    throw new LiveUnavailableError(`cannot load libc.so.6 through koffi: ${(e as Error).message}`);
  }
  const strerror = lib.func('const char *strerror(int)') as (e: number) => string;
  libc = {
    socket: lib.func('int socket(int, int, int)') as Libc['socket'],
    bind: lib.func('int bind(int, const void *, uint32_t)') as Libc['bind'],
    setsockopt: lib.func('int setsockopt(int, int, int, const void *, uint32_t)') as Libc['setsockopt'],
    recv: lib.func('long recv(int, void *, unsigned long, int)') as Libc['recv'],
    send: lib.func('long send(int, const void *, unsigned long, int)') as Libc['send'],
    close: lib.func('int close(int)') as Libc['close'],
    open: lib.func('int open(const char *, int)') as Libc['open'],
    setns: lib.func('int setns(int, int)') as Libc['setns'],
    ifIndex: lib.func('unsigned int if_nametoindex(const char *)') as Libc['ifIndex'],
    errno: () => koffi.errno(),
    strerror,
  };
  return libc;
}

/** True when koffi can be loaded here (for tests and the bench to skip cleanly). */
export async function liveAvailable(): Promise<string | null> {
  try {
    await loadLibc();
    return null;
  } catch (e) {
    return (e as Error).message;
  }
}

const O_RDONLY_CLOEXEC = 0o2000000;
const CLONE_NEWNET = 0x40000000;

/**
 * Move the calling thread (only it: a worker thread is its own OS thread) into a network
 * namespace, by name (/run/netns/NAME, as `ip netns` makes) or path. Sockets it opens afterwards
 * live there.
 */
export async function enterNetns(nameOrPath: string): Promise<void> {
  const c = await loadLibc();
  const path = nameOrPath.includes('/') ? nameOrPath : `/run/netns/${nameOrPath}`;
  const fd = c.open(path, O_RDONLY_CLOEXEC);
  if (fd < 0) throw new NetlinkError(`network namespace ${nameOrPath}: ${c.strerror(c.errno())}`, c.errno());
  const r = c.setns(fd, CLONE_NEWNET);
  const e = c.errno();
  c.close(fd);
  if (r < 0) throw new NetlinkError(`setns(${nameOrPath}): ${c.strerror(e)}`, e);
}

export class NetlinkError extends Error {
  constructor(message: string, readonly errno: number) {
    super(message);
  }
}

export const AF_PACKET = 17;
export const ETH_P_ALL = 0x0003;
export const SOL_PACKET = 263;
export const PACKET_ADD_MEMBERSHIP = 1;
export const PACKET_MR_PROMISC = 1;

/** A NETLINK_NETFILTER socket (one per queue; owned by one thread), or an AF_PACKET one. */
export class NetlinkSocket {
  readonly fd: number;
  private readonly c: Libc;
  private readonly opt = new Uint8Array(16);
  private readonly optView = new DataView(this.opt.buffer);

  private constructor(c: Libc, fd: number) {
    this.c = c;
    this.fd = fd;
  }

  /** Open and bind a socket (the kernel picks the port id). Needs libc loaded (loadLibc()). */
  static async open(): Promise<NetlinkSocket> {
    const c = await loadLibc();
    const fd = c.socket(AF_NETLINK, SOCK_RAW | SOCK_CLOEXEC, NETLINK_NETFILTER);
    if (fd < 0) throw NetlinkSocket.err(c, 'socket(AF_NETLINK, NETLINK_NETFILTER)');
    const s = new NetlinkSocket(c, fd);
    const sa = new Uint8Array(12); // struct sockaddr_nl: family, pad, pid 0 (kernel assigns), groups 0
    new DataView(sa.buffer).setUint16(0, AF_NETLINK, true);
    if (c.bind(fd, sa, sa.length) < 0) {
      const e = NetlinkSocket.err(c, 'bind(AF_NETLINK)');
      c.close(fd);
      throw e;
    }
    return s;
  }

  /**
   * A passive AF_PACKET socket on one interface (all protocols, promiscuous: a mirror port's
   * traffic). It reads Ethernet frames; the NetlinkSocket methods recv/close/timeouts apply.
   */
  static async openPacket(ifname: string): Promise<NetlinkSocket> {
    const c = await loadLibc();
    const ifindex = c.ifIndex(ifname);
    if (ifindex === 0) throw new NetlinkError(`no interface ${ifname}`, c.errno());
    const proto = ((ETH_P_ALL & 0xff) << 8) | (ETH_P_ALL >>> 8); // htons
    const fd = c.socket(AF_PACKET, SOCK_RAW | SOCK_CLOEXEC, proto);
    if (fd < 0) throw NetlinkSocket.err(c, 'socket(AF_PACKET)');
    const s = new NetlinkSocket(c, fd);
    const sa = new Uint8Array(20); // struct sockaddr_ll
    const dv = new DataView(sa.buffer);
    dv.setUint16(0, AF_PACKET, true);
    dv.setUint16(2, proto, true); // already in network order
    dv.setInt32(4, ifindex, true);
    if (c.bind(fd, sa, sa.length) < 0) {
      const e = NetlinkSocket.err(c, `bind(AF_PACKET, ${ifname})`);
      c.close(fd);
      throw e;
    }
    const mr = new Uint8Array(16); // struct packet_mreq
    const mv = new DataView(mr.buffer);
    mv.setInt32(0, ifindex, true);
    mv.setUint16(4, PACKET_MR_PROMISC, true);
    c.setsockopt(fd, SOL_PACKET, PACKET_ADD_MEMBERSHIP, mr, mr.length); // best effort
    return s;
  }

  private static err(c: Libc, what: string): NetlinkError {
    const e = c.errno();
    return new NetlinkError(`${what}: ${c.strerror(e)} (errno ${e})`, e);
  }

  errno(): number {
    return this.c.errno();
  }

  strerror(e: number): string {
    return this.c.strerror(e);
  }

  private setInt(level: number, name: number, v: number): number {
    this.optView.setInt32(0, v, true);
    return this.c.setsockopt(this.fd, level, name, this.opt, 4);
  }

  /**
   * Receive buffer for bursts: SO_RCVBUFFORCE (CAP_NET_ADMIN, above rmem_max), else SO_RCVBUF.
   * Also NETLINK_NO_ENOBUFS: an overrun drops packets (fail-open decides their fate) rather than
   * failing the next recv.
   */
  setReceiveBuffer(bytes: number): void {
    if (this.setInt(SOL_SOCKET, SO_RCVBUFFORCE, bytes) < 0 && this.setInt(SOL_SOCKET, SO_RCVBUF, bytes) < 0) {
      throw NetlinkSocket.err(this.c, 'setsockopt(SO_RCVBUF)');
    }
    this.setInt(SOL_NETLINK, NETLINK_NO_ENOBUFS, 1);
  }

  /** A blocking recv returns EAGAIN after `ms` (so a worker loop can look at its stop flag). */
  setReceiveTimeout(ms: number): void {
    this.optView.setBigInt64(0, BigInt(Math.floor(ms / 1000)), true);
    this.optView.setBigInt64(8, BigInt((ms % 1000) * 1000), true);
    if (this.c.setsockopt(this.fd, SOL_SOCKET, SO_RCVTIMEO, this.opt, 16) < 0) throw NetlinkSocket.err(this.c, 'setsockopt(SO_RCVTIMEO)');
  }

  /** recv() into `buf` (a view; written in place). Returns bytes, or -errno. */
  recv(buf: Uint8Array, flags = 0): number {
    const n = this.c.recv(this.fd, buf, buf.length, flags);
    return n >= 0 ? n : -this.c.errno();
  }

  /** send() the first `len` bytes of `buf`. Returns bytes, or -errno. */
  send(buf: Uint8Array, len: number): number {
    const n = this.c.send(this.fd, buf, len, 0);
    return n >= 0 ? n : -this.c.errno();
  }

  close(): void {
    this.c.close(this.fd);
  }

  /** Close a socket by fd (a dead worker's, from another thread). */
  static async closeFd(fd: number): Promise<void> {
    (await loadLibc()).close(fd);
  }
}
