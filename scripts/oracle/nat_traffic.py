#!/usr/bin/python3
"""NAT scenarios for the kernel oracle (run by scripts/oracle/record-nat.sh, as root).

    nat_traffic.py --list           scenario names
    nat_traffic.py --rules NAME     the scenario's nat.json (rules in nft syntax + interfaces)
    nat_traffic.py --run NAME       send its traffic (namespaces set up by record-nat.sh)
    nat_traffic.py --merge OUT A B  merge the two egress captures by time into OUT (pcap)

Reuses traffic.py's namespace switching and crafted-packet writer (phantom hosts only, so no
host stack answers). Replies are crafted toward the address and port the router's NAT chose,
read back from the server-side (or client-side) veth.
"""
import json
import os
import socket
import struct
import sys
import time

HERE = os.path.dirname(os.path.abspath(__file__))
sys.path.insert(0, HERE)
import traffic as T  # noqa: E402

PREFIX = os.environ.get("CTSAB_NS_PREFIX", "ctsab")
T.NS = {"client": f"{PREFIX}-client", "router": f"{PREFIX}-router", "server": f"{PREFIX}-server"}

R1, R2 = "10.200.1.1", "10.200.2.1"
R1_6, R2_6 = "fd00:200:0:1::1", "fd00:200:0:2::1"
IFACES = [
    {"name": "r1", "address": R1, "address6": R1_6, "routes": ["10.200.1.0/24", "fd00:200:0:1::/64"]},
    {"name": "r2", "address": R2, "address6": R2_6, "routes": ["10.200.2.0/24", "fd00:200:0:2::/64"]},
]

SCEN = {}


def scenario(name, description, rules):
    def deco(fn):
        SCEN[name] = dict(fn=fn, description=description, rules=rules)
        return fn
    return deco


class Tap:
    """Frames the router sends out of one veth, read on the far side (incoming there)."""

    def __init__(self, side, dev):
        with T.netns(side):
            s = socket.socket(socket.AF_PACKET, socket.SOCK_RAW, socket.htons(0x0003))
            s.bind((dev, 0))
        s.settimeout(0.5)
        self.s = s

    def drain(self):
        self.s.setblocking(False)
        try:
            while True:
                self.s.recv(65535)
        except BlockingIOError:
            pass
        finally:
            self.s.settimeout(0.5)

    def next_ip(self, want=None):
        """The next IP packet from the router (scapy) carrying layer `want`, or None within 0.5 s."""
        sa = T.S()
        deadline = time.time() + 0.5
        while time.time() < deadline:
            try:
                data, addr = self.s.recvfrom(65535)
            except socket.timeout:
                return None
            if addr[2] == socket.PACKET_OUTGOING:
                continue
            et = struct.unpack(">H", data[12:14])[0]
            p = sa.IP(data[14:]) if et == 0x0800 else sa.IPv6(data[14:]) if et == 0x86DD else None
            if p is not None and (want is None or p.haslayer(want)):
                return p
        return None


def ctx():
    w = T.Wire()
    taps = {"c": Tap("client", "c0"), "s": Tap("server", "s0")}
    return w, taps


def via(w, taps, side, pkt, out):
    """Send pkt from side ('c'/'s'); return what the router sent out on side `out` (or None):
    the next packet of the same layer-4 protocol (ICMP errors and other traffic skipped)."""
    taps[out].drain()
    w.send("client" if side == "c" else "server", pkt)
    sa = T.S()
    want = None
    for layer in (sa.TCP, sa.UDP, sa.ICMPv6EchoRequest, sa.ICMPv6EchoReply, sa.ICMP):
        if pkt.haslayer(layer) and not pkt.haslayer(sa.IPerror) and not pkt.haslayer(sa.IPerror6):
            want = layer
            break
    return taps[out].next_ip(want)


def l4(p):
    return p.payload


# ------------------------------------------------------------------------------------------

@scenario("nat_masquerade", "masquerade out of the server side: port kept, port clash moved, TCP, ICMP echo ids, ICMP errors, IPv6",
          ['oifname "r2" masquerade'])
def nat_masquerade(w, taps):
    sa = T.S()
    C0, C1, S0, S1 = T.PC4(0), T.PC4(1), T.PS4(0), T.PS4(1)
    # 1. UDP: the source port is free, kept (deterministic).
    o = via(w, taps, "c", sa.IP(src=C0, dst=S0) / sa.UDP(sport=5000, dport=53) / b"query-1", "s")
    via(w, taps, "s", sa.IP(src=S0, dst=R2) / sa.UDP(sport=53, dport=o[sa.UDP].sport) / b"answer-1", "c")
    # 2. Same source port from another host to the same server: the kernel moves it (random).
    o2 = via(w, taps, "c", sa.IP(src=C1, dst=S0) / sa.UDP(sport=5000, dport=53) / b"query-2", "s")
    via(w, taps, "s", sa.IP(src=S0, dst=R2) / sa.UDP(sport=53, dport=o2[sa.UDP].sport) / b"answer-2", "c")
    # 3. TCP handshake, data, and a time exceeded quoting the full SYN (inner TCP checksum).
    syn = sa.IP(src=C0, dst=S1) / sa.TCP(sport=40000, dport=80, flags="S", seq=1000, options=[("MSS", 1460)])
    so = via(w, taps, "c", syn, "s")
    p = so[sa.TCP].sport
    via(w, taps, "s", sa.IP(src=S1, dst=R2) / sa.TCP(sport=80, dport=p, flags="SA", seq=5000, ack=1001), "c")
    via(w, taps, "c", sa.IP(src=C0, dst=S1) / sa.TCP(sport=40000, dport=80, flags="A", seq=1001, ack=5001), "s")
    via(w, taps, "c", sa.IP(src=C0, dst=S1) / sa.TCP(sport=40000, dport=80, flags="PA", seq=1001, ack=5001) / b"GET /", "s")
    via(w, taps, "s", sa.IP(src=T.PS4(5), dst=R2) / sa.ICMP(type=11, code=0) / bytes(so)[:48], "c")
    # 4. ICMP echo: two hosts with the same id; the second gets another id (random).
    e1 = via(w, taps, "c", sa.IP(src=C0, dst=S0) / sa.ICMP(type=8, id=77, seq=1) / b"ping", "s")
    via(w, taps, "s", sa.IP(src=S0, dst=R2) / sa.ICMP(type=0, id=e1[sa.ICMP].id, seq=1) / b"ping", "c")
    e2 = via(w, taps, "c", sa.IP(src=C1, dst=S0) / sa.ICMP(type=8, id=77, seq=1) / b"ping", "s")
    via(w, taps, "s", sa.IP(src=S0, dst=R2) / sa.ICMP(type=0, id=e2[sa.ICMP].id, seq=1) / b"ping", "c")
    # 5. Port unreachable for flow 1 from the server, quoting what it received.
    o3 = via(w, taps, "c", sa.IP(src=C0, dst=S0) / sa.UDP(sport=5000, dport=53) / b"query-3", "s")
    via(w, taps, "s", sa.IP(src=S0, dst=R2) / sa.ICMP(type=3, code=3) / bytes(o3), "c")
    # 6. A UDP flow with checksum 0 stays without one.
    z = sa.IP(src=C0, dst=S0) / sa.UDP(sport=5001, dport=9, chksum=0) / b"nochecksum"
    via(w, taps, "c", z, "s")
    # 7. IPv6: masquerade to fd00:200:0:2::1, echo and UDP, and a packet too big.
    C6, S6 = "fd00:200:0:1::10", "fd00:200:0:2::10"  # phantoms with static neighbours in the router
    u6 = via(w, taps, "c", sa.IPv6(src=C6, dst=S6) / sa.UDP(sport=6000, dport=53) / b"v6-query", "s")
    via(w, taps, "s", sa.IPv6(src=S6, dst=R2_6) / sa.UDP(sport=53, dport=u6[sa.UDP].sport) / b"v6-answer", "c")
    i6 = via(w, taps, "c", sa.IPv6(src=C6, dst=S6) / sa.ICMPv6EchoRequest(id=99, seq=1, data=b"ping6"), "s")
    via(w, taps, "s", sa.IPv6(src=S6, dst=R2_6) / sa.ICMPv6EchoReply(id=i6[sa.ICMPv6EchoRequest].id, seq=1, data=b"ping6"), "c")
    via(w, taps, "s", sa.IPv6(src="fd00:200:0:2::15", dst=R2_6) / sa.ICMPv6PacketTooBig(mtu=1280) / bytes(u6), "c")


@scenario("nat_dnat", "DNAT port forwarding from the client side, a UDP forward, the null binding moving a clashing source port, an ICMP error",
          ['iifname "r1" ip daddr 10.200.2.1 tcp dport 8080 dnat ip to 10.200.2.10:80',
           'iifname "r1" ip daddr 10.200.2.1 udp dport 5353 dnat ip to 10.200.2.11'])
def nat_dnat(w, taps):
    sa = T.S()
    C0, B0, B1 = T.PC4(0), T.PS4(0), T.PS4(1)
    so = via(w, taps, "c", sa.IP(src=C0, dst=R2) / sa.TCP(sport=7000, dport=8080, flags="S", seq=100), "s")
    via(w, taps, "s", sa.IP(src=B0, dst=C0) / sa.TCP(sport=80, dport=so[sa.TCP].sport, flags="SA", seq=900, ack=101), "c")
    via(w, taps, "c", sa.IP(src=C0, dst=R2) / sa.TCP(sport=7000, dport=8080, flags="A", seq=101, ack=901), "s")
    # The same client port straight to the backend: its reply tuple would clash with the
    # forwarded connection's, so the null binding moves the source port (random).
    d = via(w, taps, "c", sa.IP(src=C0, dst=B0) / sa.TCP(sport=7000, dport=80, flags="S", seq=300), "s")
    via(w, taps, "s", sa.IP(src=B0, dst=C0) / sa.TCP(sport=80, dport=d[sa.TCP].sport, flags="SA", seq=700, ack=301), "c")
    # UDP forward (port kept) and its answer, then a port unreachable from the backend.
    u = via(w, taps, "c", sa.IP(src=C0, dst=R2) / sa.UDP(sport=5353, dport=5353) / b"mdns?", "s")
    via(w, taps, "s", sa.IP(src=B1, dst=C0) / sa.UDP(sport=5353, dport=5353) / b"mdns!", "c")
    via(w, taps, "s", sa.IP(src=B1, dst=C0) / sa.ICMP(type=3, code=3) / bytes(u), "c")


@scenario("nat_dnat_pool", "DNAT to a pool of four backends (the kernel's address pick), with and without persistent, IPv4 and IPv6",
          ['iifname "r1" ip daddr 10.200.2.1 udp dport 9999 dnat ip to 10.200.2.10-10.200.2.13',
           'iifname "r1" ip daddr 10.200.2.1 tcp dport 7777 dnat ip to 10.200.2.10-10.200.2.13:80 persistent',
           'iifname "r1" ip6 daddr fd00:200:0:2::1 udp dport 9999 dnat ip6 to [fd00:200:0:2::10]-[fd00:200:0:2::13]'])
def nat_dnat_pool(w, taps):
    sa = T.S()
    for i in range(8):
        o = via(w, taps, "c", sa.IP(src=T.PC4(i), dst=R2) / sa.UDP(sport=3000 + i, dport=9999) / b"lb", "s")
        if o is not None:
            via(w, taps, "s", sa.IP(src=o.dst, dst=T.PC4(i)) / sa.UDP(sport=9999, dport=o[sa.UDP].sport) / b"ok", "c")
    for i in range(8):
        o = via(w, taps, "c", sa.IP(src=T.PC4(i), dst=R2) / sa.TCP(sport=4000 + i, dport=7777, flags="S", seq=77), "s")
        if o is not None:
            via(w, taps, "s", sa.IP(src=o.dst, dst=T.PC4(i)) / sa.TCP(sport=80, dport=o[sa.TCP].sport, flags="SA", seq=99, ack=78), "c")
    for i in range(8):  # IPv6: the pick hashes all four address words
        c6 = "fd00:200:0:1::%x" % (0x10 + i)
        o = via(w, taps, "c", sa.IPv6(src=c6, dst=R2_6) / sa.UDP(sport=3100 + i, dport=9999) / b"lb6", "s")
        if o is not None:
            via(w, taps, "s", sa.IPv6(src=o.dst, dst=c6) / sa.UDP(sport=9999, dport=o[sa.UDP].sport) / b"ok6", "c")


@scenario("nat_snat_exhaust", "SNAT to a three-port range: three flows mapped, the rest dropped (no free tuple)",
          ['ip saddr 10.200.1.0/24 meta l4proto udp oifname "r2" snat ip to 10.200.2.1:20000-20002'])
def nat_snat_exhaust(w, taps):
    sa = T.S()
    outs = []
    for i in range(6):
        outs.append(via(w, taps, "c", sa.IP(src=T.PC4(i), dst=T.PS4(0)) / sa.UDP(sport=6000, dport=53) / (b"q%d" % i), "s"))
    for o in outs:
        if o is not None:
            via(w, taps, "s", sa.IP(src=T.PS4(0), dst=R2) / sa.UDP(sport=53, dport=o[sa.UDP].sport) / b"a", "c")


@scenario("nat_hairpin", "hairpin: a LAN client reaches a LAN server through the router's public address",
          ['ip daddr 10.200.2.1 tcp dport 80 dnat ip to 10.200.1.11:8080',
           'ip saddr 10.200.1.0/24 oifname "r1" masquerade',
           'oifname "r2" masquerade'])
def nat_hairpin(w, taps):
    sa = T.S()
    C0, SRV = T.PC4(0), T.PC4(1)
    s1 = via(w, taps, "c", sa.IP(src=C0, dst=R2) / sa.TCP(sport=41000, dport=80, flags="S", seq=10), "c")
    via(w, taps, "c", sa.IP(src=SRV, dst=R1) / sa.TCP(sport=8080, dport=s1[sa.TCP].sport, flags="SA", seq=20, ack=11), "c")
    via(w, taps, "c", sa.IP(src=C0, dst=R2) / sa.TCP(sport=41000, dport=80, flags="A", seq=11, ack=21), "c")
    # And out to the server side: masquerade to r2's address.
    o = via(w, taps, "c", sa.IP(src=C0, dst=T.PS4(0)) / sa.UDP(sport=41001, dport=53) / b"q", "s")
    via(w, taps, "s", sa.IP(src=T.PS4(0), dst=R2) / sa.UDP(sport=53, dport=o[sa.UDP].sport) / b"a", "c")


def merge(out, a, b):
    """Merge two pcaps (same link type) by timestamp."""
    def read(path):
        with open(path, "rb") as f:
            d = f.read()
        hdr, recs, off = d[:24], [], 24
        while off + 16 <= len(d):
            ts, us, cap, orig = struct.unpack("<IIII", d[off:off + 16])
            recs.append((ts * 1_000_000 + us, d[off:off + 16 + cap]))
            off += 16 + cap
        return hdr, recs
    ha, ra = read(a)
    _, rb = read(b)
    # The router's own multicast (MLD reports) is not traffic it forwarded.
    allr = sorted([r for r in ra + rb if not (r[1][16] & 1)], key=lambda r: r[0])
    with open(out, "wb") as f:
        f.write(ha)
        for _, r in allr:
            f.write(r)


def main(argv):
    if argv[:1] == ["--list"]:
        print("\n".join(SCEN))
    elif argv[:1] == ["--rules"]:
        sc = SCEN[argv[1]]
        print(json.dumps({"description": sc["description"], "interfaces": IFACES, "rules": sc["rules"]}, indent=2))
    elif argv[:1] == ["--run"]:
        w, taps = ctx()
        SCEN[argv[1]]["fn"](w, taps)
        time.sleep(0.3)
    elif argv[:1] == ["--merge"]:
        merge(argv[1], argv[2], argv[3])
    else:
        print(__doc__, file=sys.stderr)
        return 2
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
