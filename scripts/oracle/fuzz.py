"""Seeded random traffic for differential testing against the kernel (scripts/oracle/fuzz.sh).

A fuzz scenario is named `fuzz_<generator>_<seed>`; record.sh records it like any scenario.
The same name always generates the same packets (random.Random(seed), no clock or socket
state in the choices). Generators:

  tcp             random TCP walks (default sysctls)
  tcp_liberal     the same walks, nf_conntrack_tcp_be_liberal=1
  tcp_noloose     nf_conntrack_tcp_loose=0
  tcp_ignrst      nf_conntrack_tcp_ignore_invalid_rst=1
  tcp_maxretrans  nf_conntrack_tcp_max_retrans=1
  mixed           UDP, ICMP/ICMPv6 echo and errors, IPv4 options, IPv6 extension headers,
                  TTL 1, unknown protocols, a few TCP flows for errors to quote
  mixedfrag       mixed plus fragmented datagrams (needs defragmentation to replay)

Every crafted packet goes through send(), which also records it (WORK/sent.bin) with what the
router's FORWARD log should show, so the recorder can check that every packet was logged
exactly once and in order (traffic.py check_sent).
"""
import os
import random
import struct
import time

from traffic import PC4, PC6, PS4, PS6, S, Wire, begin_capture, SENT

GENERATORS = {
    "tcp": {},
    "tcp_liberal": {"nf_conntrack_tcp_be_liberal": 1},
    "tcp_noloose": {"nf_conntrack_tcp_loose": 0},
    "tcp_ignrst": {"nf_conntrack_tcp_ignore_invalid_rst": 1},
    "tcp_maxretrans": {"nf_conntrack_tcp_max_retrans": 1},
    "tcpflow": {"nf_conntrack_tcp_max_retrans": 2},
    "mixed": {},
    "mixedfrag": {},
    "file": {},  # re-send the packets of an NFLOG capture (CTSAB_FUZZ_FILE): checks a minimised case
}

FGAP = 0.001        # between fuzz packets (order through the router is kept: see README)
TCP_CONNS = 90      # connections per TCP seed (about 2,000 packets)
MIXED_FLOWS = 600   # flows per mixed seed


def parse_name(name):
    """fuzz_<gen>_<seed> -> (gen, seed) or None."""
    if not name.startswith("fuzz_"):
        return None
    gen, _, seed = name[5:].rpartition("_")
    if gen not in GENERATORS or not seed.isdigit():
        return None
    return gen, int(seed)


def scenario_for(name):
    p = parse_name(name)
    if p is None:
        return None
    gen, seed = p
    sysctls = dict(GENERATORS[gen])
    if gen == "file":
        for kv in filter(None, os.environ.get("CTSAB_FUZZ_SYSCTLS", "").split(",")):
            k, _, v = kv.partition("=")
            sysctls[k] = int(v)
    return dict(fn=lambda: run(gen, seed), sysctls=sysctls, crafted_only=True,
                description=f"Fuzz generator {gen}, seed {seed} (scripts/oracle/fuzz.py).",
                notes="", fuzz={"generator": gen, "seed": seed})


# ------------------------------------------------------------------------------------------
# Sending with a record of every packet

class Sender:
    def __init__(self, rng):
        self.w = Wire()
        self.rng = rng
        self.gap_budget = 2.5  # seconds of deliberate idle time per seed, at most

    def send(self, side, pkt, kind=0, expect=None):
        """kind 0: logged as sent (TTL/hop limit and IPv4 header checksum aside); 1: a fragment
        of a datagram logged once, reassembled (expect = the datagram's bytes, sent with the
        last fragment of the group)."""
        raw = bytes(pkt)
        self.w.send(side, raw, gap=FGAP)
        if kind == 0:
            SENT.setdefault("packets", []).append((0, raw))
        elif expect is not None:
            SENT.setdefault("packets", []).append((1, bytes(expect)))

    def gap(self):
        """Now and then a short idle time (timers must agree to the second)."""
        if self.rng.random() < 0.01 and self.gap_budget > 0:
            g = self.rng.choice([0.3, 0.6, 1.1])
            self.gap_budget -= g
            time.sleep(g)


# ------------------------------------------------------------------------------------------
# TCP random walks

FLAG_SETS = [("A", 30), ("PA", 25), ("FA", 6), ("R", 4), ("RA", 4), ("S", 4), ("SA", 4), ("F", 2), ("SF", 1),
             ("SR", 1), ("", 1), ("FPU", 1), ("PAU", 1), ("SAF", 1), ("RAF", 1), ("P", 1), ("SEC", 1), ("AE", 1)]


def wchoice(rng, items):
    tot = sum(w for _, w in items)
    r = rng.random() * tot
    for v, w in items:
        r -= w
        if r < 0:
            return v
    return items[-1][0]


class Walk:
    """One TCP connection's random walk; seq/ack choices aimed at the tracker's window edges."""

    def __init__(self, tx, rng, v6, cip, sip, sport, dport):
        self.tx, self.rng, self.v6 = tx, rng, v6
        self.cip, self.sip, self.sport, self.dport = cip, sip, sport, dport
        self.isn = {"c": rng.getrandbits(32), "s": rng.getrandbits(32)}
        self.nxt = dict(self.isn)           # next seq each side would send
        self.ack = {"c": 0, "s": 0}         # last ack each side sent
        self.win = {"c": 64240, "s": 64240}
        self.ws = {"c": 0, "s": 0}          # window scale each side announced

    def opts(self, syn):
        rng = self.rng
        o = []
        if syn or rng.random() < 0.05:
            if rng.random() < 0.8:
                o.append(("MSS", rng.choice([536, 1220, 1460, 9000, 0])))
            if rng.random() < 0.5:
                o.append(("WScale", rng.choice([0, 1, 2, 7, 8, 14, 14, 15])))
            if rng.random() < 0.5:
                o.append(("SAckOK", b""))
        if rng.random() < 0.3:
            o.append(("Timestamp", (rng.getrandbits(32), rng.getrandbits(32) if rng.random() < 0.7 else 0)))
        if not syn and rng.random() < 0.1:
            other = rng.choice("cs")
            base = self.nxt[other]
            o.append(("SAck", (base % 2**32, (base + rng.randint(1, 3000)) % 2**32)))
        if rng.random() < 0.05:
            o.insert(0, ("NOP", None))
        return o

    def seq_for(self, me):
        rng = self.rng
        other = "s" if me == "c" else "c"
        nxt = self.nxt[me]
        maxend = self.ack[other] + (self.win[other] << self.ws[other])
        return wchoice(rng, [
            (nxt, 60), (nxt - 1, 5), (nxt + 1, 4), (nxt - rng.randint(2, 3000), 5), (maxend, 3), (maxend - 1, 2),
            (maxend + 1, 2), (nxt + 2**30, 2), (nxt - 2**30, 2), (rng.getrandbits(32), 2), (self.isn[me], 2),
            (nxt + (self.win[other] << self.ws[other]), 2)])

    def ack_for(self, me):
        rng = self.rng
        other = "s" if me == "c" else "c"
        nxt = self.nxt[other]
        return wchoice(rng, [
            (nxt, 65), (nxt - 1, 5), (nxt + 1, 5), (nxt - rng.randint(2, 5000), 5), (nxt + rng.randint(2, 5000), 3),
            (nxt + 2**30, 2), (0, 2), (rng.getrandbits(32), 2), (self.isn[other], 2)])

    def seg(self, me, flags, seq=None, ack=None, data=b"", opts=None, win=None, bad=None):
        sa = S()
        rng = self.rng
        other = "s" if me == "c" else "c"
        if seq is None:
            seq = self.seq_for(me)
        if ack is None:
            ack = self.ack_for(me) if "A" in flags else (0 if rng.random() < 0.8 else rng.getrandbits(32))
        if win is None:
            win = wchoice(rng, [(64240, 50), (65535, 10), (0, 8), (1, 3), (rng.randint(2, 65535), 20), (512, 5)])
        if opts is None:
            opts = self.opts("S" in flags)
        src, dst = (self.cip, self.sip) if me == "c" else (self.sip, self.cip)
        sp, dp = (self.sport, self.dport) if me == "c" else (self.dport, self.sport)
        kw = {}
        if bad == "csum":
            kw["chksum"] = rng.getrandbits(16)
        elif bad == "dataofs":
            kw["dataofs"] = rng.choice([0, 3, 4, 15])
        ip = sa.IPv6(src=src, dst=dst) if self.v6 else sa.IP(src=src, dst=dst)
        pkt = ip / sa.TCP(sport=sp, dport=dp, flags=flags, seq=seq % 2**32, ack=ack % 2**32, window=win,
                          options=opts, **kw)
        if data:
            pkt = pkt / sa.Raw(data)
        if bad == "csum":
            # scapy keeps the given checksum; make sure it is really wrong
            good = sa.IPv6(bytes(pkt)) if self.v6 else sa.IP(bytes(pkt))
            del good[sa.TCP].chksum
            if bytes(good) == bytes(pkt):
                pkt[sa.TCP].chksum ^= 0x5a5a
        end = seq + len(data) + ("S" in flags) + ("F" in flags)
        if bad is None:
            if (end - self.nxt[me]) % 2**32 < 2**31 and "R" not in flags:
                self.nxt[me] = end % 2**32
            if "A" in flags:
                self.ack[me] = ack % 2**32
            self.win[me] = win
            for k, v in opts:
                if k == "WScale" and "S" in flags:
                    self.ws[me] = min(v, 14)
        self.tx.send("client" if me == "c" else "server", pkt)
        self.tx.gap()

    def run(self, start, steps):
        rng = self.rng
        if start in ("full", "partial"):
            self.seg("c", "S", seq=self.isn["c"], ack=0)
            if start == "full" or rng.random() < 0.6:
                self.seg("s", "SA", seq=self.isn["s"], ack=self.nxt["c"] if rng.random() < 0.85 else None)
                if start == "full":
                    self.seg("c", "A", seq=self.nxt["c"], ack=self.nxt["s"] if rng.random() < 0.9 else None)
        for _ in range(steps):
            me = "c" if rng.random() < 0.55 else "s"
            flags = wchoice(rng, FLAG_SETS)
            if flags == "S" and rng.random() < 0.5:
                # retransmitted SYN, possibly with a new ISN
                if rng.random() < 0.5:
                    self.isn[me] = rng.getrandbits(32)
                    self.nxt[me] = self.isn[me]
                self.seg(me, "S", seq=self.isn[me], ack=0)
                continue
            data = b""
            if "P" in flags or ("A" in flags and rng.random() < 0.3):
                data = bytes(rng.getrandbits(8) for _ in range(rng.choice([1, 10, 100, 536, rng.randint(1, 1400)])))
            bad = None
            r = rng.random()
            if r < 0.02:
                bad = "csum"
            elif r < 0.03:
                bad = "dataofs"
            self.seg(me, flags, data=data, bad=bad)


def gen_tcp(tx, rng, conns=TCP_CONNS):
    used = []
    ports = rng.sample(range(20000, 60000), conns)
    for i in range(conns):
        v6 = rng.random() < 0.3
        if used and rng.random() < 0.12:
            # the same tuple again (a reopen over TIME_WAIT / CLOSE / a live entry)
            v6, ci, si, sport = rng.choice(used)
        else:
            ci, si, sport = rng.randrange(10), rng.randrange(10), ports[i]
            used.append((v6, ci, si, sport))
        cip, sip = (PC6(ci), PS6(si)) if v6 else (PC4(ci), PS4(si))
        walk = Walk(tx, rng, v6, cip, sip, sport, rng.choice([80, 443, 22, 5001]))
        start = wchoice(rng, [("full", 5), ("partial", 3), ("none", 2)])
        walk.run(start, rng.randint(5, 40))


class Flow2(Walk):
    """A mostly well-behaved TCP connection (tcpflow): handshake, data both ways with exact
    ACKs, retransmissions, duplicate ACKs, zero-window probes, out-of-order segments, then a
    close (FIN either side, simultaneous, half-close with data, RST exact / inexact), sometimes a
    reopen; 5% of the steps are replaced by a random segment (Walk.seg's aim)."""

    def exact(self, me, flags, data=b"", seq=None, win=None, opts=None):
        other = "s" if me == "c" else "c"
        self.seg(me, flags, seq=self.nxt[me] if seq is None else seq,
                 ack=self.nxt[other] if "A" in flags else 0, data=data,
                 opts=opts if opts is not None else [], win=64240 if win is None else win)

    def noise(self):
        if self.rng.random() < 0.05:
            me = self.rng.choice("cs")
            self.seg(me, wchoice(self.rng, FLAG_SETS))

    def data(self, me, n=None):
        rng = self.rng
        return bytes(rng.getrandbits(8) for _ in range(n if n is not None else rng.choice([1, 50, 300, 1000])))

    def run2(self):
        rng = self.rng
        ws_c = rng.choice([None, 0, 2, 7, 14])
        ws_s = rng.choice([None, 0, 7, 14]) if ws_c is not None else None
        copt = [("MSS", 1460)] + ([("WScale", ws_c)] if ws_c is not None else []) + ([("SAckOK", b"")] if rng.random() < 0.5 else [])
        sopt = [("MSS", 1460)] + ([("WScale", ws_s)] if ws_s is not None else []) + ([("SAckOK", b"")] if rng.random() < 0.5 else [])
        self.exact("c", "S", seq=self.isn["c"], opts=copt)
        if rng.random() < 0.1:
            self.exact("c", "S", seq=self.isn["c"], opts=copt)  # retransmitted SYN
        self.exact("s", "SA", seq=self.isn["s"], opts=sopt)
        if rng.random() < 0.1:
            self.exact("s", "SA", seq=self.isn["s"], opts=sopt)
        self.exact("c", "A")
        for _ in range(rng.randint(2, 25)):
            self.noise()
            me = rng.choice("cs")
            other = "s" if me == "c" else "c"
            r = rng.random()
            if r < 0.45:
                self.exact(me, "PA", self.data(me))
                if rng.random() < 0.7:
                    self.exact(other, "A")
            elif r < 0.55:  # retransmission of the same segment
                d = self.data(me, 100)
                seq = self.nxt[me]
                self.exact(me, "PA", d, seq=seq)
                for _ in range(rng.randint(1, 4)):
                    self.exact(me, "PA", d, seq=seq)
            elif r < 0.65:  # duplicate ACKs
                for _ in range(rng.randint(2, 5)):
                    self.exact(me, "A")
            elif r < 0.72:  # zero window, probe, window update
                self.exact(other, "A", win=0)
                self.exact(me, "A", seq=self.nxt[me] - 1)
                self.exact(other, "A")
            elif r < 0.80:  # out of order: a later segment first
                d1, d2 = self.data(me, 200), self.data(me, 200)
                s0 = self.nxt[me]
                self.exact(me, "PA", d2, seq=s0 + 200)
                self.exact(me, "PA", d1, seq=s0)
                self.exact(other, "A")
            elif r < 0.85:  # keep-alive
                self.exact(me, "A", seq=self.nxt[me] - 1, data=b"\0" if rng.random() < 0.5 else b"")
            else:
                self.tx.gap()
        # close
        r = rng.random()
        a, b = ("c", "s") if rng.random() < 0.6 else ("s", "c")
        if r < 0.5:
            self.exact(a, "FA")
            if rng.random() < 0.3:
                self.exact(b, "PA", self.data(b))  # half-close: data after the FIN
                self.exact(a, "A")
            self.exact(b, "FA")
            self.exact(a, "A")
        elif r < 0.6:  # simultaneous close
            self.exact(a, "FA")
            self.exact(b, "FA", seq=self.nxt[b])
            self.exact(a, "A")
            self.exact(b, "A")
        elif r < 0.75:
            self.exact(a, "R" if rng.random() < 0.5 else "RA")
        elif r < 0.85:
            self.seg(a, "RA", seq=self.nxt[a] + rng.choice([1, 100, -100]), ack=self.nxt[b])  # inexact RST
            self.exact(b, "A")
            self.exact(a, "RA")
        # else: left open
        if rng.random() < 0.2:
            self.isn["c"] = (self.nxt["c"] + rng.choice([1, 100000, -100000])) % 2**32
            self.nxt["c"] = self.isn["c"]
            self.exact("c", "S", seq=self.isn["c"], opts=copt)
            self.exact("s", "SA", seq=self.isn["s"], opts=sopt)
            self.exact("c", "A")


def gen_tcpflow(tx, rng, conns=70):
    ports = rng.sample(range(20000, 60000), conns)
    for i in range(conns):
        v6 = rng.random() < 0.3
        ci, si = rng.randrange(10), rng.randrange(10)
        cip, sip = (PC6(ci), PS6(si)) if v6 else (PC4(ci), PS4(si))
        Flow2(tx, rng, v6, cip, sip, ports[i], rng.choice([80, 443, 22, 5001])).run2()


# ------------------------------------------------------------------------------------------
# Mixed traffic

def ip_hdr(rng, v6, src, dst, ttl=64, options=True):
    """An IP header; IPv4 with, sometimes, options that no router rewrites (NOP, EOL, router
    alert: record-route and timestamp options are changed in the router after FORWARD logged
    the packet with its old header checksum)."""
    sa = S()
    if v6:
        return sa.IPv6(src=src, dst=dst, hlim=ttl)
    kw = {}
    if options and rng.random() < 0.08:
        kw["options"] = rng.choice([
            [sa.IPOption_NOP(), sa.IPOption_NOP(), sa.IPOption_NOP(), sa.IPOption_EOL()],
            [sa.IPOption_Router_Alert()],
            [sa.IPOption_NOP(), sa.IPOption_Router_Alert(), sa.IPOption_NOP(), sa.IPOption_NOP(), sa.IPOption_NOP()],
        ])
    return sa.IP(src=src, dst=dst, ttl=ttl, id=rng.getrandbits(16), **kw)


def ext_chain(rng):
    """A random IPv6 extension-header chain (scapy layers: hop-by-hop first if at all,
    destination options, routing with segments left 0, AH; scapy's AH length does not always
    match what follows, which sends the kernel's walk elsewhere: useful too)."""
    sa = S()
    chain = []
    for _ in range(rng.choice([1, 1, 2, 3])):
        k = rng.choice(["hbh", "dst", "rt", "ah"])
        if k == "hbh" and not chain:
            chain.append(sa.IPv6ExtHdrHopByHop(options=[sa.PadN(optdata=b"\0" * rng.choice([0, 2, 4]))]))
        elif k in ("dst", "hbh"):
            chain.append(sa.IPv6ExtHdrDestOpt(options=[sa.PadN(optdata=b"\0" * rng.choice([0, 2, 4, 12]))]))
        elif k == "rt":
            chain.append(sa.IPv6ExtHdrRouting(type=rng.choice([0, 2, 4]), segleft=0,
                                              addresses=[] if rng.random() < 0.5 else ["fd00:200:0:2::99"]))
        else:
            chain.append(sa.AH(spi=rng.getrandbits(32), seq=1, icv=b"\0" * 12))
    return chain


def build_v6(src, dst, hlim, chain, l4):
    sa = S()
    p = sa.IPv6(src=src, dst=dst, hlim=hlim)
    for h in chain:
        p = p / h
    return p / l4


def raw_ah_v6(rng, src, dst, inner_proto, payload):
    """IPv6 + AH whose declared length may run past the packet (hand-built)."""
    sa = S()
    ahlen = rng.choice([1, 4, 40, 255])
    ah = bytes([inner_proto, ahlen, 0, 0]) + struct.pack(">II", rng.getrandbits(32), 1) + b"\0" * 4
    body = ah + payload
    ip = bytes(sa.IPv6(src=src, dst=dst, nh=51, plen=len(body)))
    return ip[:40] + body


class Flow:
    def __init__(self, kind, v6, src, dst, sport, dport, first):
        self.kind, self.v6, self.src, self.dst, self.sport, self.dport = kind, v6, src, dst, sport, dport
        self.first = first  # bytes of the first packet (quoted by ICMP errors)
        self.n = 0
        self.plain = True  # its first packet surely made the connection (TTL 1 allowed later)
        self.replied = False  # a valid reply was sent (the entry has SEEN_REPLY)


def gen_mixed(tx, rng, flows=MIXED_FLOWS, frags=False):
    """TTL / hop limit 1 only on packets of existing connections (with a plain header) that change
    no status bit: the router drops such a packet after conntrack saw it, before confirming a new
    entry (a new connection would exist only in our replay) and before delivering the cached
    events (they would come out with the connection's next packet)."""
    sa = S()
    live = []
    ports = iter(rng.sample(range(20000, 60000), flows * 2))

    def addrs(v6):
        ci, si = rng.randrange(10), rng.randrange(10)
        return (PC6(ci), PS6(si)) if v6 else (PC4(ci), PS4(si))

    def side_of(src):
        return "client" if src.startswith("10.200.1.") or src.startswith("fd00:200:0:1:") else "server"

    def l4_udp(sport, dport, data, csum=None):
        u = sa.UDP(sport=sport, dport=dport)
        if csum is not None:
            u.chksum = csum
        return u / sa.Raw(data)

    def send_udp(f, reverse=False, ttl=64, bad=None):
        src, dst = (f.dst, f.src) if reverse else (f.src, f.dst)
        sp, dp = (f.dport, f.sport) if reverse else (f.sport, f.dport)
        data = bytes(rng.getrandbits(8) for _ in range(rng.randint(0, 64)))
        csum = None
        if bad == "csum":
            csum = rng.randint(1, 0xffff)
        elif bad == "zero":
            csum = 0
        if f.v6 and ttl > 1 and rng.random() < 0.25:
            p = build_v6(src, dst, ttl, ext_chain(rng), l4_udp(sp, dp, data, csum))
            if f.n == 0:
                f.plain = False  # the chain may end in another protocol: no UDP connection made
        else:
            p = ip_hdr(rng, f.v6, src, dst, ttl) / l4_udp(sp, dp, data, csum)
        f.n += 1
        raw = bytes(p)
        if bad == "len":
            # UDP length field bigger / smaller than the payload
            ip = bytearray(raw)
            off = len(raw) - len(data) - 8
            struct.pack_into(">H", ip, off + 4, rng.choice([4, 7, len(data) + 9, 0xffff]))
            raw = bytes(ip)
        tx.send(side_of(src), raw)
        return raw

    def send_echo(f, reverse=False, ttl=64, bad=None, typ=None):
        src, dst = (f.dst, f.src) if reverse else (f.src, f.dst)
        if f.v6:
            t = typ if typ is not None else (129 if reverse else 128)
            icmp = sa.ICMPv6EchoRequest(id=f.sport, seq=f.n) if t == 128 else (
                sa.ICMPv6EchoReply(id=f.sport, seq=f.n) if t == 129 else sa.ICMPv6Unknown(type=t))
            if bad == "csum":
                icmp.cksum = rng.randint(1, 0xffff)
            p = ip_hdr(rng, True, src, dst, ttl) / icmp / sa.Raw(b"ping")
        else:
            t = typ if typ is not None else (0 if reverse else 8)
            icmp = sa.ICMP(type=t, id=f.sport, seq=f.n)
            if bad == "csum":
                icmp.chksum = rng.randint(1, 0xffff)
            p = ip_hdr(rng, False, src, dst, ttl) / icmp / sa.Raw(b"ping")
        f.n += 1
        raw = bytes(p)
        tx.send(side_of(src), raw)
        return raw

    def send_generic(f, reverse=False):
        src, dst = (f.dst, f.src) if reverse else (f.src, f.dst)
        data = bytes(rng.getrandbits(8) for _ in range(rng.randint(0, 40)))
        if f.v6:
            if rng.random() < 0.3:
                chain = ext_chain(rng)
                chain[-1].nh = f.sport  # the last header names the protocol
                raw = bytes(build_v6(src, dst, 64, chain, sa.Raw(data)))
            else:
                raw = bytes(sa.IPv6(src=src, dst=dst, nh=f.sport) / sa.Raw(data))
        else:
            raw = bytes(ip_hdr(rng, False, src, dst) / sa.Raw(data))
            raw = raw[:9] + bytes([f.sport]) + raw[10:]
            raw = fix_ip4_csum(raw)
        tx.send(side_of(src), raw)

    def send_error(f):
        """An ICMP error about flow f's first packet, from the far side (or corrupted)."""
        quote = bytearray(f.first)
        how = wchoice(rng, [("ok", 10), ("trunc8", 3), ("trunc4", 2), ("ver", 2), ("ports", 2), ("proto", 1),
                            ("reverse", 2), ("outercsum", 1), ("innercsum", 1), ("tiny", 1)])
        if how == "trunc8":
            quote = quote[:(40 if f.v6 else (quote[0] & 15) * 4) + 8]
        elif how == "trunc4":
            quote = quote[:(40 if f.v6 else (quote[0] & 15) * 4) + 4]
        elif how == "tiny":
            quote = quote[:rng.choice([0, 10, 20, 39])]
        elif how == "ver":
            quote[0] = (rng.choice([4, 6, 5, 0]) << 4) | (quote[0] & 15)
        elif how == "ports":
            off = 40 if f.v6 else (quote[0] & 15) * 4
            if len(quote) >= off + 4:
                quote[off] ^= 0x11
        elif how == "proto":
            if f.v6:
                quote[6] = rng.choice([6, 17, 58, 253])
            else:
                quote[9] = rng.choice([6, 17, 1, 253])
        elif how == "innercsum" and not f.v6:
            quote[10] ^= 0xff
        # error from a host on the server side, about the client's packet, towards the client
        esrc = PS6(rng.randrange(10)) if f.v6 else PS4(rng.randrange(10))
        edst = f.src
        if how == "reverse":
            esrc, edst = (PC6(rng.randrange(10)) if f.v6 else PC4(rng.randrange(10))), f.dst
        if f.v6:
            err = rng.choice([sa.ICMPv6DestUnreach(code=rng.choice([0, 1, 3, 4])), sa.ICMPv6PacketTooBig(mtu=1280),
                              sa.ICMPv6TimeExceeded(), sa.ICMPv6ParamProblem(ptr=6)])
            p = sa.IPv6(src=esrc, dst=edst) / err / sa.Raw(bytes(quote))
            if how == "outercsum":
                p[1].cksum = rng.randint(1, 0xffff)
        else:
            err = rng.choice([sa.ICMP(type=3, code=rng.choice([0, 1, 3, 4, 13])), sa.ICMP(type=11, code=0),
                              sa.ICMP(type=12, code=0), sa.ICMP(type=5, code=1, gw=PS4(0)), sa.ICMP(type=4)])
            if how == "outercsum":
                err.chksum = rng.randint(1, 0xffff)
            p = ip_hdr(rng, False, esrc, edst) / err / sa.Raw(bytes(quote))
        tx.send(side_of(esrc), p)

    def send_tcp_first(f):
        p = ip_hdr(rng, f.v6, f.src, f.dst) / sa.TCP(sport=f.sport, dport=f.dport, flags="S", seq=rng.getrandbits(32),
                                                      options=[("MSS", 1460)])
        raw = bytes(p)
        tx.send(side_of(f.src), raw)
        return raw

    for i in range(flows):
        # start a new flow, then a few random steps on random live flows
        kind = wchoice(rng, [("udp", 5), ("echo", 3), ("generic", 1), ("tcp", 1)])
        v6 = rng.random() < 0.4
        src, dst = addrs(v6)
        if kind == "generic":
            proto = rng.choice([253, 254, 99, 143, 200] if v6 else [253, 254, 99, 200, 142])
            f = Flow(kind, v6, src, dst, proto, 0, b"")
            send_generic(f)
        else:
            f = Flow(kind, v6, src, dst, next(ports), rng.choice([53, 123, 5000, 80]) if kind != "echo" else 0, b"")
            if kind == "udp":
                f.first = send_udp(f)
            elif kind == "echo":
                f.sport = rng.getrandbits(16)
                f.first = send_echo(f)
            else:
                f.first = send_tcp_first(f)
        live.append(f)
        for _ in range(rng.randint(0, 4)):
            g = rng.choice(live)
            r = rng.random()
            if g.kind == "generic":
                send_generic(g, reverse=rng.random() < 0.5)
            elif r < 0.15:
                send_error(g)
            elif g.kind == "udp":
                bad = wchoice(rng, [(None, 20), ("csum", 1), ("zero", 1), ("len", 1)])
                rev = rng.random() < 0.5
                # TTL 1 only where the packet changes no status bit (its events would wait in
                # the kernel's cache for the connection's next forwarded packet): before any
                # reply, from the originator.
                ttl = 1 if rng.random() < 0.05 and g.plain and not rev and not g.replied else 64
                send_udp(g, reverse=rev, ttl=ttl, bad=bad)
                if rev and (bad is None or (bad == "zero" and not g.v6)):
                    g.replied = True
            elif g.kind == "echo":
                bad = "csum" if rng.random() < 0.05 else None
                rev = rng.random() < 0.5
                ttl = 1 if rng.random() < 0.05 and (not rev or g.replied) else 64
                typ = None
                if rng.random() < 0.05:
                    typ = rng.choice([13, 15, 17, 42, 99] if not g.v6 else [130, 139, 200])
                    ttl = 64  # another type is another connection: TTL 1 only on existing ones
                send_echo(g, reverse=rev, ttl=ttl, bad=bad, typ=typ)
                if rev and bad is None and typ is None and ttl > 1:
                    g.replied = True
            elif g.kind == "tcp":
                send_error(g)
        # IPv6 AH running past the packet, ESP, unknown/no next header
        if v6 and rng.random() < 0.06:
            payload = bytes(sa.UDP(sport=next(ports), dport=53) / sa.Raw(b"x" * rng.randint(0, 30)))
            raw = raw_ah_v6(rng, src, dst, rng.choice([17, 6, 59, 253]), payload)
            tx.send(side_of(src), raw)
        if v6 and rng.random() < 0.03:
            raw = bytes(sa.IPv6(src=src, dst=dst, nh=rng.choice([50, 59])) / sa.Raw(bytes(rng.getrandbits(8) for _ in range(rng.randint(0, 24)))))
            tx.send(side_of(src), raw)
        if frags and rng.random() < 0.1:
            send_fragmented(tx, rng, v6, src, dst, next(ports))
        tx.gap()


def fix_ip4_csum(raw):
    raw = bytearray(raw)
    raw[10:12] = b"\0\0"
    ihl = (raw[0] & 15) * 4
    s = sum(struct.unpack(f">{ihl // 2}H", bytes(raw[:ihl])))
    while s > 0xffff:
        s = (s & 0xffff) + (s >> 16)
    struct.pack_into(">H", raw, 10, ~s & 0xffff)
    return bytes(raw)


def send_fragmented(tx, rng, v6, src, dst, sport):
    sa = S()
    data = bytes(rng.getrandbits(8) for _ in range(rng.randint(100, 400)))
    side = "client"
    if v6:
        whole = sa.IPv6(src=src, dst=dst) / sa.UDP(sport=sport, dport=53) / sa.Raw(data)
        fr = sa.fragment6(sa.IPv6(src=src, dst=dst) / sa.IPv6ExtHdrFragment(id=rng.getrandbits(32)) /
                          sa.UDP(sport=sport, dport=53) / sa.Raw(data), 200)
    else:
        whole = sa.IP(src=src, dst=dst, id=rng.getrandbits(16)) / sa.UDP(sport=sport, dport=53) / sa.Raw(data)
        fr = sa.fragment(whole, rng.choice([64, 120]))
    fr = list(fr)
    if rng.random() < 0.3:
        rng.shuffle(fr)
    for k, f in enumerate(fr):
        tx.send(side, f, kind=1, expect=bytes(whole) if k == len(fr) - 1 else None)


# ------------------------------------------------------------------------------------------

def resend_file(tx, path):
    """Send the packets of an NFLOG capture again, each from its side, with the TTL / hop limit
    the router's decrement took (TTL 1 packets were logged before forwarding: kept)."""
    import summarize
    with open(path, "rb") as f:
        raw_ip = struct.unpack("<I", f.read(24)[20:24])[0] in (101, 228, 229)
    if raw_ip:  # a raw-IP pcap (e.g. written with scapy): packets as sent
        import scapy.all as sa
        last = None
        for pk in sa.rdpcap(path):
            if last is not None and float(pk.time) - last > FGAP:
                time.sleep(min(3.0, float(pk.time) - last))  # the file's own time gaps
            last = float(pk.time)
            b = bytes(pk)
            src = b[12:16] if b[0] >> 4 == 4 else b[8:16]
            tx.send("client" if src[:3] == bytes([10, 200, 1]) or src == bytes.fromhex("fd00020000000001") else "server", b)
        return
    for _ts, rec in summarize.read_pcap(path):
        p = bytearray(summarize.parse_nflog(rec)["payload"])
        if not p:
            continue
        if p[0] >> 4 == 4:
            if p[8] != 1:
                p[8] += 1
            p = bytearray(fix_ip4_csum(bytes(p)))
            src = ".".join(str(b) for b in p[12:16])
            side = "client" if src.startswith("10.200.1.") else "server"
        else:
            if p[7] != 1:
                p[7] += 1
            side = "client" if p[8:14] == bytes.fromhex("fd0002000000") and p[14:16] == b"\0\1" else "server"
        tx.send(side, bytes(p))


def run(gen, seed):
    rng = random.Random(f"{gen}:{seed}")
    tx = Sender(rng)
    S()  # import scapy before the capture starts
    begin_capture()
    if gen == "file":
        resend_file(tx, os.environ["CTSAB_FUZZ_FILE"])
    elif gen == "tcpflow":
        gen_tcpflow(tx, rng)
    elif gen.startswith("tcp"):
        gen_tcp(tx, rng)
    else:
        gen_mixed(tx, rng, frags=gen == "mixedfrag")
