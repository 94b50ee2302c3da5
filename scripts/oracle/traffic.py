#!/usr/bin/python3
"""Traffic for the kernel-oracle scenarios (run by scripts/oracle/record.sh, as root).

    traffic.py --list                  scenario names, one per line
    traffic.py --sysctls NAME          net.netfilter.* settings of a scenario (name=value lines)
    traffic.py --run NAME              generate the scenario's traffic (needs the namespaces)
    traffic.py --meta NAME DIR LOGGED  write DIR/meta.json from DIR/capture.pcap

One process drives all three namespaces: a thread switches into a namespace with setns(2)
(which only affects the calling thread) to create sockets there; a socket stays in the
namespace it was created in. Crafted packets are built with scapy and written to an AF_PACKET
socket bound to the client's or the server's veth, addressed to the router's MAC.
"""
import ctypes
import json
import os
import socket
import struct
import sys
import threading
import time
from contextlib import contextmanager

HERE = os.path.dirname(os.path.abspath(__file__))
sys.path.insert(0, HERE)

PREFIX = os.environ.get("CTSAB_NS_PREFIX", "ctsab")  # record.sh's namespace prefix
NS = {"client": f"{PREFIX}-client", "router": f"{PREFIX}-router", "server": f"{PREFIX}-server"}
MAC = {"c0": "02:c7:5a:00:01:02", "r1": "02:c7:5a:00:01:01", "r2": "02:c7:5a:00:02:01", "s0": "02:c7:5a:00:02:02"}
C4, S4 = "10.200.1.2", "10.200.2.2"
C6, S6 = "fd00:200:0:1::2", "fd00:200:0:2::2"


def PC4(i=0):  # phantom client-side IPv4 host (owned by nobody, reached through the client veth)
    return f"10.200.1.{10 + i}"


def PS4(i=0):
    return f"10.200.2.{10 + i}"


def PC6(i=0):
    return f"fd00:200:0:1::{10 + i:x}"


def PS6(i=0):
    return f"fd00:200:0:2::{10 + i:x}"


GAP = 0.02  # seconds between crafted packets: keeps their order through the router fixed

# ------------------------------------------------------------------------------------------
# Scenario registry


SCENARIOS = {}


def scenario(name, description, sysctls=None, notes="", crafted_only=False, wire=False):
    """wire: also capture what reaches the router (tcpdump -i any -Q in, wire.pcap): fragment
    scenarios, whose fragments the NFLOG capture never shows (FORWARD sees the datagrams)."""
    def deco(fn):
        SCENARIOS[name] = dict(fn=fn, description=description, sysctls=sysctls or {}, notes=notes,
                               crafted_only=crafted_only, wire=wire)
        return fn
    return deco


# ------------------------------------------------------------------------------------------
# Namespaces

_libc = ctypes.CDLL(None, use_errno=True)
CLONE_NEWNET = 0x40000000


def _setns_fd(fd):
    if _libc.setns(fd, CLONE_NEWNET) != 0:
        e = ctypes.get_errno()
        raise OSError(e, os.strerror(e))


@contextmanager
def netns(side):
    """Run the body with the calling thread in namespace `side` (client/router/server)."""
    orig = os.open("/proc/thread-self/ns/net", os.O_RDONLY)
    target = os.open(f"/run/netns/{NS[side]}", os.O_RDONLY)
    try:
        _setns_fd(target)
        yield
    finally:
        _setns_fd(orig)
        os.close(orig)
        os.close(target)


def sock_in(side, family, type_, proto=0):
    with netns(side):
        return socket.socket(family, type_, proto)


def thread(fn, *args):
    t = threading.Thread(target=fn, args=args, daemon=True)
    t.start()
    return t


# ------------------------------------------------------------------------------------------
# Capture control (files shared with record.sh)

WORK = os.environ.get("CTSAB_WORK", "/tmp")
SENT = {"crafted": 0}


def begin_capture(flush=False):
    """Ask record.sh to (optionally flush the router's table and) start the capture; wait."""
    if flush:
        open(os.path.join(WORK, "want-flush"), "w").close()
    open(os.path.join(WORK, "want-capture"), "w").close()
    deadline = time.time() + 20
    while not os.path.exists(os.path.join(WORK, "capture-started")):
        if time.time() > deadline:
            raise RuntimeError("capture did not start")
        time.sleep(0.02)
    time.sleep(0.1)


# ------------------------------------------------------------------------------------------
# Crafted packets

_scapy = None


def S():
    """Lazy scapy import (slow) -> module namespace."""
    global _scapy
    if _scapy is None:
        import scapy.all as sa
        sa.conf.verb = 0
        _scapy = sa
    return _scapy


class Wire:
    """Writes crafted IP packets onto the client's or the server's veth, towards the router."""

    def __init__(self):
        self.sock = {}
        for side, dev in (("client", "c0"), ("server", "s0")):
            with netns(side):
                s = socket.socket(socket.AF_PACKET, socket.SOCK_RAW)
                s.bind((dev, 0))
            self.sock[side] = s
        self.src = {"client": MAC["c0"], "server": MAC["s0"]}
        self.dst = {"client": MAC["r1"], "server": MAC["r2"]}

    def send(self, side, pkt, gap=GAP, drop_expected=False):
        """pkt: scapy IP/IPv6 packet, or raw bytes of an IP packet. drop_expected: the router
        drops it before conntrack/FORWARD (so it is not counted as a packet to be captured)."""
        if isinstance(pkt, (bytes, bytearray)):
            raw = bytes(pkt)
        else:
            raw = bytes(pkt)
        etype = 0x86DD if (raw[0] >> 4) == 6 else 0x0800
        frame = bytes.fromhex(self.dst[side].replace(":", "")) + bytes.fromhex(self.src[side].replace(":", "")) \
            + struct.pack(">H", etype) + raw
        self.sock[side].send(frame)
        if not drop_expected:
            SENT["crafted"] += 1
        if gap:
            time.sleep(gap)

    def c(self, pkt, gap=GAP, **kw):
        self.send("client", pkt, gap, **kw)

    def s(self, pkt, gap=GAP, **kw):
        self.send("server", pkt, gap, **kw)


def ipc(src, dst, **kw):
    sa = S()
    if ":" in src:
        kw.pop("flags", None)
        kw.pop("id", None)
        return sa.IPv6(src=src, dst=dst, **kw)
    return sa.IP(src=src, dst=dst, **kw)


class Tcp:
    """A crafted TCP connection; c()/s() send from the client/server side and track seq numbers."""

    def __init__(self, w, cip, sip, sport, dport, cisn=1000000, sisn=5000000):
        self.w, self.cip, self.sip, self.sport, self.dport = w, cip, sip, sport, dport
        self.nxt = {"c": cisn, "s": sisn}

    def send(self, me, flags, data=b"", seq=None, ack=None, win=64240, opts=None, advance=True,
             chksum=None, dataofs=None, urgptr=0, gap=GAP):
        sa = S()
        other = "s" if me == "c" else "c"
        if seq is None:
            seq = self.nxt[me]
        if ack is None:
            ack = self.nxt[other] if "A" in flags else 0
        src, dst = (self.cip, self.sip) if me == "c" else (self.sip, self.cip)
        sp, dp = (self.sport, self.dport) if me == "c" else (self.dport, self.sport)
        kw = {}
        if chksum is not None:
            kw["chksum"] = chksum
        if dataofs is not None:
            kw["dataofs"] = dataofs
        pkt = ipc(src, dst) / sa.TCP(sport=sp, dport=dp, flags=flags, seq=seq % 2**32, ack=ack % 2**32, window=win,
                                     options=opts or [], urgptr=urgptr, **kw)
        if data:
            pkt = pkt / sa.Raw(data)
        if advance:
            end = seq + len(data) + ("S" in flags) + ("F" in flags)
            if end > self.nxt[me]:
                self.nxt[me] = end
        self.w.send("client" if me == "c" else "server", pkt, gap)
        return pkt

    def c(self, flags, data=b"", **kw):
        return self.send("c", flags, data, **kw)

    def s(self, flags, data=b"", **kw):
        return self.send("s", flags, data, **kw)

    def handshake(self, copts=None, sopts=None):
        self.c("S", opts=copts if copts is not None else [("MSS", 1460)])
        self.s("SA", opts=sopts if sopts is not None else [("MSS", 1460)])
        self.c("A")

    def close_by_client(self):
        self.c("FA")
        self.s("FA")
        self.c("A")

    def close_by_server(self):
        self.s("FA")
        self.c("FA")
        self.s("A")


# ------------------------------------------------------------------------------------------
# Real sockets


class TcpServer:
    """A TCP server in the server namespace; handler(conn) runs in a thread per connection."""

    def __init__(self, addr, port, handler, backlog=1024):
        fam = socket.AF_INET6 if ":" in addr else socket.AF_INET
        self.ls = sock_in("server", fam, socket.SOCK_STREAM)
        self.ls.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        self.ls.bind((addr, port))
        self.ls.listen(backlog)
        self.handler = handler
        self.threads = []
        self.stop = False
        self.t = thread(self._loop)

    def _loop(self):
        self.ls.settimeout(0.2)
        while not self.stop:
            try:
                conn, _ = self.ls.accept()
            except socket.timeout:
                continue
            except OSError:
                return
            conn.settimeout(None)
            self.threads.append(thread(self._run, conn))

    def _run(self, conn):
        try:
            self.handler(conn)
        except OSError:
            pass

    def close(self, join=10):
        self.stop = True
        deadline = time.time() + join
        for t in list(self.threads):
            t.join(max(0.0, deadline - time.time()))
        self.t.join(1)
        self.ls.close()


def tcp_connect(addr, port, sport=None, timeout=5):
    fam = socket.AF_INET6 if ":" in addr else socket.AF_INET
    s = sock_in("client", fam, socket.SOCK_STREAM)
    s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    if sport:
        s.bind((C6 if fam == socket.AF_INET6 else C4, sport))
    s.settimeout(timeout)
    s.connect((addr, port))
    return s


def recv_exact(s, n):
    buf = b""
    while len(buf) < n:
        d = s.recv(n - len(buf))
        if not d:
            break
        buf += d
    return buf


def recv_all(s):
    buf = b""
    while True:
        d = s.recv(65536)
        if not d:
            return buf
        buf += d


def echo_handler(conn):
    while True:
        d = conn.recv(65536)
        if not d:
            break
        conn.sendall(d)
    conn.close()


def udp_sock(side, addr, port=0):
    fam = socket.AF_INET6 if ":" in addr else socket.AF_INET
    s = sock_in(side, fam, socket.SOCK_DGRAM)
    s.bind((addr, port))
    s.settimeout(2)
    return s


def linger0(s):
    s.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))


def settle(t=0.3):
    time.sleep(t)


sys.modules.setdefault("traffic", sys.modules[__name__])
import scenarios  # noqa: E402,F401  (registers the scenarios)
import fuzz  # noqa: E402  (fuzz_<generator>_<seed> scenarios, made on demand)


def get_scenario(name):
    sc = SCENARIOS.get(name) or fuzz.scenario_for(name)
    if sc is None:
        sys.exit(f"unknown scenario {name!r}; known: {' '.join(SCENARIOS)} fuzz_<{'|'.join(fuzz.GENERATORS)}>_<seed>")
    return sc


def write_sent(path):
    """The fuzz generator's record of sent packets: u8 kind, u32 length, bytes (see fuzz.Sender)."""
    with open(path, "wb") as f:
        for kind, raw in SENT.get("packets", []):
            f.write(struct.pack(">BI", kind, len(raw)) + raw)


def read_sent(path):
    out = []
    with open(path, "rb") as f:
        data = f.read()
    off = 0
    while off < len(data):
        kind, ln = struct.unpack(">BI", data[off:off + 5])
        out.append((kind, data[off + 5:off + 5 + ln]))
        off += 5 + ln
    return out


def ip4_csum_ok(p):
    ihl = (p[0] & 15) * 4
    if len(p) < ihl or ihl < 20:
        return False
    s = sum(struct.unpack(f">{ihl // 2}H", p[:ihl]))
    while s > 0xffff:
        s = (s & 0xffff) + (s >> 16)
    return s == 0xffff


def norm_forwarded(p):
    """A packet as sent, with what forwarding changes cleared (TTL / hop limit, IPv4 header checksum)."""
    p = bytearray(p)
    if len(p) >= 20 and p[0] >> 4 == 4:
        p[8] = 0
        p[10:12] = b"\0\0"
    elif len(p) >= 40 and p[0] >> 4 == 6:
        p[7] = 0
    return bytes(p)


def check_sent(sent, logged):
    """Every sent packet logged exactly once and in order -> list of problems (empty if so)."""
    problems = []
    if len(sent) != len(logged):
        problems.append(f"sent {len(sent)} packets (fragments counted once), capture has {len(logged)}")
    for i, ((kind, want), got) in enumerate(zip(sent, logged)):
        if kind == 0:
            ok = norm_forwarded(want) == norm_forwarded(got)
        else:  # a reassembled datagram: the same transport bytes
            h1 = 40 if want[0] >> 4 == 6 else (want[0] & 15) * 4
            h2 = 40 if got[0] >> 4 == 6 else (got[0] & 15) * 4
            ok = want[h1:] == got[h2:]
        if not ok:
            problems.append(f"packet {i}: logged bytes differ from the packet sent at that position (order?)")
            break
    for i, got in enumerate(logged):
        if len(got) >= 20 and got[0] >> 4 == 4 and not ip4_csum_ok(got):
            problems.append(f"packet {i}: stale IPv4 header checksum in the log (options rewritten after FORWARD)")
            break
    return problems


# ------------------------------------------------------------------------------------------


def write_meta(name, outdir, logged):
    import summarize
    from collections import Counter
    sc = get_scenario(name)
    recs = [summarize.parse_nflog(rec) for _ts, rec in summarize.read_pcap(os.path.join(outdir, "capture.pcap"))]
    counts = Counter(r["prefix"] for r in recs)
    order = ["ct:new:original", "ct:new:reply", "ct:established:original", "ct:established:reply",
             "ct:related:original", "ct:related:reply", "ct:invalid", "ct:untracked", "ct:other"]
    labels = {k: counts[k] for k in order if counts.get(k)}
    labels.update({k: v for k, v in counts.items() if k not in labels})
    sent = {}
    try:
        with open(os.path.join(WORK, "sent.json")) as f:
            sent = json.load(f)
    except OSError:
        pass
    meta = {
        "name": name,
        "description": sc["description"],
        "sysctls": sc["sysctls"],
        "notes": sc["notes"],
        "packets": len(recs),
        "labels": labels,
        "kernel": os.uname().release,
        "nft_logged": int(logged),
    }
    if sc["crafted_only"]:
        meta["crafted_sent"] = sent.get("crafted")
    if sc.get("wire") and os.path.exists(os.path.join(outdir, "wire.pcap")):
        with open(os.path.join(outdir, "wire.pcap"), "rb") as f:
            raw = f.read()
        n, at = 0, 24  # classic pcap (tcpdump -w): records after the 24-byte file header
        order = "<" if raw[:4] in (b"\xd4\xc3\xb2\xa1", b"\x4d\x3c\xb2\xa1") else ">"
        while at + 16 <= len(raw):
            at += 16 + struct.unpack(order + "I", raw[at + 8:at + 12])[0]
            n += 1
        meta["wire_packets"] = n
    problems = []
    if sc.get("fuzz"):
        meta["fuzz"] = sc["fuzz"]
        sent_pkts = read_sent(os.path.join(WORK, "sent.bin"))
        meta["fuzz"]["sent"] = len(sent_pkts)
        problems += check_sent(sent_pkts, [r["payload"] for r in recs])
    if int(logged) != len(recs):
        problems.append(f"capture has {len(recs)} packets but the router logged {logged}")
    if sc["crafted_only"] and not sc.get("fuzz") and not sc.get("wire") and sent.get("crafted") is not None and sent["crafted"] != len(recs):
        problems.append(f"sent {sent['crafted']} crafted packets, capture has {len(recs)} "
                        "(some were dropped before FORWARD)")
    if problems:
        meta["capture_problems"] = problems
        for p in problems:
            print(f"  WARNING {name}: {p}", file=sys.stderr)
    with open(os.path.join(outdir, "meta.json"), "w") as f:
        json.dump(meta, f, indent=2)
        f.write("\n")
    print(f"  {name}: {len(recs)} packets " + " ".join(f"{k}={v}" for k, v in labels.items()))


def main(argv):
    if argv[:1] == ["--list"]:
        print("\n".join(SCENARIOS))
    elif argv[:1] == ["--check"]:
        get_scenario(argv[1])
    elif argv[:1] == ["--wire"]:
        print(1 if get_scenario(argv[1]).get("wire") else 0)
    elif argv[:1] == ["--sysctls"]:
        for k, v in get_scenario(argv[1])["sysctls"].items():
            print(f"{k}={v}")
    elif argv[:1] == ["--run"]:
        get_scenario(argv[1])["fn"]()
        write_sent(os.path.join(WORK, "sent.bin"))
        with open(os.path.join(WORK, "sent.json"), "w") as f:
            json.dump({k: v for k, v in SENT.items() if k != "packets"}, f)
    elif argv[:1] == ["--renote"]:
        # refresh description/notes of existing fixtures without re-recording
        for name in argv[1:] or list(SCENARIOS):
            path = os.path.join(os.environ.get("CTSAB_FIXTURES", os.path.join(
                HERE, "..", "..", "test", "fixtures", "kernel")), name, "meta.json")
            if not os.path.exists(path):
                continue
            with open(path) as f:
                meta = json.load(f)
            meta["description"] = SCENARIOS[name]["description"]
            meta["notes"] = SCENARIOS[name]["notes"]
            with open(path, "w") as f:
                json.dump(meta, f, indent=2)
                f.write("\n")
    elif argv[:1] == ["--meta"]:
        write_meta(argv[1], argv[2], argv[3])
    else:
        sys.exit(__doc__)


if __name__ == "__main__":
    main(sys.argv[1:])
