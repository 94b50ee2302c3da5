#!/usr/bin/env python3
"""Print the conntrack labels recorded in NFLOG captures (test/fixtures/kernel/*/capture.pcap).

    scripts/oracle/summarize.py                 # every fixture: packet count + label counts
    scripts/oracle/summarize.py -v tcp_rst      # one line per packet
    scripts/oracle/summarize.py --check         # compare with each meta.json, exit 1 on mismatch

Self-contained (no scapy): parses the classic pcap format with LINKTYPE_NFLOG (239) and the
NFLOG TLVs itself. NFLOG record: 1 byte address family, 1 byte version, 2 bytes resource id
(big endian), then TLVs: u16 length (host order, includes the 4 header bytes), u16 type (host
order), value, padded to 4 bytes. Types used here: 10 = prefix (NUL-terminated label),
9 = payload (the IP packet), 3 = timestamp (u64 sec, u64 usec, big endian).
"""
import json
import os
import struct
import sys
from collections import Counter, OrderedDict

LINKTYPE_NFLOG = 239
NFULA_TIMESTAMP = 3
NFULA_PAYLOAD = 9
NFULA_PREFIX = 10

ROOT = os.path.abspath(os.path.join(os.path.dirname(__file__), "..", ".."))
FIXTURES = os.path.join(ROOT, "test", "fixtures", "kernel")


def read_pcap(path):
    """Yield (pcap_ts, record_bytes) for every record of a classic pcap file."""
    with open(path, "rb") as f:
        data = f.read()
    if len(data) < 24:
        raise ValueError(f"{path}: too short for a pcap header")
    magic = data[:4]
    if magic in (b"\xd4\xc3\xb2\xa1", b"\x4d\x3c\xb2\xa1"):
        e = "<"
    elif magic in (b"\xa1\xb2\xc3\xd4", b"\xa1\xb2\x3c\x4d"):
        e = ">"
    else:
        raise ValueError(f"{path}: not a classic pcap file")
    nano = magic in (b"\x4d\x3c\xb2\xa1", b"\xa1\xb2\x3c\x4d")
    linktype = struct.unpack(e + "I", data[20:24])[0] & 0x0FFFFFFF
    if linktype != LINKTYPE_NFLOG:
        raise ValueError(f"{path}: linktype {linktype}, expected {LINKTYPE_NFLOG} (NFLOG)")
    off = 24
    while off + 16 <= len(data):
        sec, frac, incl, _orig = struct.unpack(e + "IIII", data[off:off + 16])
        off += 16
        rec = data[off:off + incl]
        off += incl
        yield sec + frac / (1e9 if nano else 1e6), rec


def parse_nflog(rec):
    """Return dict: family, prefix, payload, timestamp (or None)."""
    family = rec[0]
    tlvs = {}
    off = 4
    while off + 4 <= len(rec):
        # libpcap writes the TLV length/type in the capturing host's byte order (little endian
        # on x86); a length that makes no sense in one order is tried in the other.
        ln, typ = struct.unpack("<HH", rec[off:off + 4])
        if ln < 4 or off + ln > len(rec):
            ln, typ = struct.unpack(">HH", rec[off:off + 4])
        if ln < 4:
            break
        tlvs.setdefault(typ, rec[off + 4:off + ln])
        off += (ln + 3) & ~3
    prefix = tlvs.get(NFULA_PREFIX, b"").split(b"\0", 1)[0].decode("ascii", "replace")
    ts = None
    if NFULA_TIMESTAMP in tlvs and len(tlvs[NFULA_TIMESTAMP]) >= 16:
        s, us = struct.unpack(">QQ", tlvs[NFULA_TIMESTAMP][:16])
        ts = s + us / 1e6
    return {"family": family, "prefix": prefix, "payload": tlvs.get(NFULA_PAYLOAD, b""), "timestamp": ts}


def describe(payload):
    """A short one-line description of an IPv4/IPv6 packet (best effort)."""
    if not payload:
        return "(no payload)"
    v = payload[0] >> 4
    names = {1: "icmp", 6: "tcp", 17: "udp", 47: "gre", 58: "icmp6", 132: "sctp", 136: "udplite"}
    if v == 4 and len(payload) >= 20:
        ihl = (payload[0] & 15) * 4
        proto = payload[9]
        src = ".".join(map(str, payload[12:16]))
        dst = ".".join(map(str, payload[16:20]))
        frag = struct.unpack(">H", payload[6:8])[0]
        l4 = payload[ihl:]
        fr = " frag" if frag & 0x3FFF else ""
    elif v == 6 and len(payload) >= 40:
        proto = payload[6]
        import ipaddress
        src = str(ipaddress.IPv6Address(payload[8:24]))
        dst = str(ipaddress.IPv6Address(payload[24:40]))
        l4 = payload[40:]
        fr = ""
        # skip extension headers
        while proto in (0, 43, 60, 44) and len(l4) >= 8:
            if proto == 44:
                fr += " frag"
                proto, l4 = l4[0], l4[8:]
            else:
                nxt, hl = l4[0], (l4[1] + 1) * 8
                fr += {0: " hbh", 43: " rh", 60: " dstopt"}[proto]
                proto, l4 = nxt, l4[hl:]
    else:
        return f"(ip version {v}, {len(payload)} bytes)"
    name = names.get(proto, f"proto{proto}")
    extra = ""
    if proto in (6, 17, 132, 136) and len(l4) >= 4:
        sp, dp = struct.unpack(">HH", l4[:4])
        src, dst = f"{src}:{sp}" if v == 4 else f"[{src}]:{sp}", f"{dst}:{dp}" if v == 4 else f"[{dst}]:{dp}"
        if proto == 6 and len(l4) >= 14:
            fl = l4[13] | ((l4[12] & 1) << 8)
            letters = "".join(ch for bit, ch in zip(range(9), "FSRPAUECN") if fl & (1 << bit))
            seq, ack = struct.unpack(">II", l4[4:12])
            doff = (l4[12] >> 4) * 4
            extra = f" [{letters or '.'}] seq={seq} ack={ack} len={max(0, len(l4) - doff)}"
    elif proto in (1, 58) and len(l4) >= 2:
        extra = f" type={l4[0]} code={l4[1]}"
    return f"{name} {src} > {dst}{extra}{fr} ({len(payload)}B)"


def labels_of(path):
    return [parse_nflog(rec)["prefix"] for _ts, rec in read_pcap(path)]


def main(argv):
    verbose = "-v" in argv
    check = "--check" in argv
    names = [a for a in argv if not a.startswith("-")]
    if not names:
        names = sorted(d for d in os.listdir(FIXTURES) if os.path.isfile(os.path.join(FIXTURES, d, "capture.pcap")))
    bad = 0
    total_all = Counter()
    for name in names:
        path = name if name.endswith(".pcap") else os.path.join(FIXTURES, name, "capture.pcap")
        recs = [(ts, parse_nflog(rec)) for ts, rec in read_pcap(path)]
        counts = Counter(r["prefix"] for _ts, r in recs)
        total_all.update(counts)
        print(f"{name}: {len(recs)} packets  " + "  ".join(f"{k}={v}" for k, v in sorted(counts.items())))
        if verbose:
            t0 = None
            for i, (ts, r) in enumerate(recs):
                t = r["timestamp"] if r["timestamp"] is not None else ts
                t0 = t if t0 is None else t0
                print(f"  {i:5d} {t - t0:9.6f} {r['prefix']:<24} {describe(r['payload'])}")
        if check:
            meta_path = os.path.join(os.path.dirname(path), "meta.json")
            with open(meta_path) as f:
                meta = json.load(f)
            if meta.get("packets") != len(recs) or meta.get("labels") != dict(counts):
                print(f"  MISMATCH with {meta_path}: {meta.get('packets')} {meta.get('labels')}")
                bad += 1
    if len(names) > 1:
        print(f"TOTAL: {sum(total_all.values())} packets  " + "  ".join(f"{k}={v}" for k, v in sorted(total_all.items())))
    return 1 if bad else 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
