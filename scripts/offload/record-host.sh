#!/usr/bin/env bash
# Real traffic (TCP transfers, UDP, ICMP echo; 3000-byte UDP and echo, fragmented) between two network namespaces with the veth offloads left at their defaults,
# captured on a host the ordinary way (tcpdump -i <dev> and -i any), beside the kernel's own
# conntrack decisions for the same packets (nft counters of `ct state invalid` in the host).
#
#   sudo scripts/offload/record-host.sh OUTDIR
#
# Writes OUTDIR/host.pcap, OUTDIR/any.pcap and OUTDIR/kernel.json
# ({"invalid": N, "packets": N, "offload": {...ethtool -k...}}). Namespaces: $CTSAB_NS_PREFIX-oa /
# -ob (default ctA). Takes a few seconds.
set -euo pipefail
# System tools only: under npm/npx, node_modules/.bin holds an unrelated `nft` (@vercel/nft).
export PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin
OUT=${1:?usage: record-host.sh OUTDIR}
P=${CTSAB_NS_PREFIX:-ctA}
A=$P-oa B=$P-ob
PY=/usr/bin/python3
[[ $EUID -eq 0 ]] || { echo "record-host.sh: must run as root" >&2; exit 1; }
for t in ip nft tcpdump ethtool; do command -v $t >/dev/null || { echo "record-host.sh: missing $t" >&2; exit 1; }; done
PIDS=()
cleanup() {
  set +e
  for p in "${PIDS[@]}"; do kill -TERM "$p" 2>/dev/null; wait "$p" 2>/dev/null; done
  ip netns del $A 2>/dev/null; ip netns del $B 2>/dev/null
}
trap cleanup EXIT
mkdir -p "$OUT"
for ns in $A $B; do ip netns del $ns 2>/dev/null || true; ip netns add $ns; ip -n $ns link set lo up; done
ip link add va netns $A type veth peer name vb netns $B
for ns in $A $B; do
  ip netns exec $ns sysctl -qw net.ipv6.conf.all.accept_dad=0 net.ipv6.conf.default.accept_dad=0
done
ip -n $A addr add 10.200.60.1/24 dev va; ip -n $A -6 addr add fd00:200:0:60::1/64 dev va nodad
ip -n $B addr add 10.200.60.2/24 dev vb; ip -n $B -6 addr add fd00:200:0:60::2/64 dev vb nodad
ip -n $A link set va up; ip -n $B link set vb up
# The kernel's verdicts: conntrack runs in both hosts (the ct expressions load it); count what
# it finds invalid and every packet it sees, before (prerouting/output priority) nothing else.
for ns in $A $B; do
  ip netns exec $ns nft -f - <<NFT
table inet $P {
  chain pre { type filter hook prerouting priority 0; policy accept; ct state invalid counter; counter; }
  chain out { type filter hook output priority 0; policy accept; ct state invalid counter; counter; }
}
NFT
done
ip netns exec $A ethtool -k va > "$OUT/ethtool.txt" 2>/dev/null || true
start_dump() { # ns file args...
  local ns=$1 f=$2; shift 2
  ip netns exec $ns tcpdump -n -U -s 0 -B 4096 "$@" -w "$f" 2>"$f.err" &
  PIDS+=($!)
  for _ in $(seq 1 100); do grep -q "listening on" "$f.err" 2>/dev/null && return; sleep 0.05; done
  cat "$f.err" >&2; echo "tcpdump did not start" >&2; exit 1
}
start_dump $A "$OUT/host.pcap" -i va
start_dump $A "$OUT/any.pcap" -i any
sleep 0.3
ip netns exec $B $PY - <<'PYEOF' &
import socket, threading
def tcp(fam, addr):
    s = socket.socket(fam, socket.SOCK_STREAM); s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    s.bind((addr, 5000)); s.listen(4); s.settimeout(8)
    for _ in range(1):
        c, _a = s.accept()
        while True:
            d = c.recv(65536)
            if not d: break
            c.sendall(d)
        c.close()
def udp(fam, addr):
    u = socket.socket(fam, socket.SOCK_DGRAM); u.bind((addr, 5001)); u.settimeout(8)
    for _ in range(4):
        d, a = u.recvfrom(4000); u.sendto(d, a)
ts = [threading.Thread(target=f, args=a) for f, a in ((tcp, (socket.AF_INET, "10.200.60.2")), (tcp, (socket.AF_INET6, "fd00:200:0:60::2")),
      (udp, (socket.AF_INET, "10.200.60.2")), (udp, (socket.AF_INET6, "fd00:200:0:60::2")))]
for t in ts: t.start()
for t in ts: t.join()
PYEOF
PIDS+=($!)
sleep 0.4
ip netns exec $A $PY - <<'PYEOF'
import socket
for fam, addr in ((socket.AF_INET, "10.200.60.2"), (socket.AF_INET6, "fd00:200:0:60::2")):
    s = socket.create_connection((addr, 5000), timeout=5)
    data = bytes(range(256)) * 800
    s.sendall(data); s.shutdown(socket.SHUT_WR)
    got = b""
    while True:
        d = s.recv(65536)
        if not d: break
        got += d
    assert got == data, (len(got), len(data))
    s.close()
    u = socket.socket(fam, socket.SOCK_DGRAM); u.settimeout(3)
    for i in range(3):
        u.sendto(b"query %d" % i * 20, (addr, 5001)); u.recvfrom(2000)
    u.sendto(b"Q" * 3000, (addr, 5001)); assert len(u.recvfrom(4000)[0]) == 3000  # fragmented both ways
    u.close()
PYEOF
# ping (ICMP echo through ping sockets; the kernel fills in id and checksum)
ip netns exec $A sysctl -qw net.ipv4.ping_group_range="0 2147483647"
ip netns exec $A $PY - <<'PYEOF'
import socket, time
for fam, proto, typ, addr in ((socket.AF_INET, socket.IPPROTO_ICMP, 8, "10.200.60.2"), (socket.AF_INET6, socket.IPPROTO_ICMPV6, 128, "fd00:200:0:60::2")):
    s = socket.socket(fam, socket.SOCK_DGRAM, proto); s.settimeout(2)
    for i in range(3):
        s.sendto(bytes([typ, 0, 0, 0, 0, 0, 0, i + 1]) + b"ping" * 8, (addr, 0)); s.recvfrom(2000)
        time.sleep(0.02)
    s.sendto(bytes([typ, 0, 0, 0, 0, 0, 0, 9]) + b"P" * 3000, (addr, 0)); s.recvfrom(4000)  # like ping -s 3000
    s.close()
PYEOF
sleep 1.5   # > tcpdump's 1 s buffer timeout: every captured packet is written before it stops
counts() { ip netns exec $A nft list table inet $P 2>&1 | tee "$OUT/nft.txt" | sed -n 's/.*counter packets \([0-9]*\) .*/\1/p' | tr '\n' ' '; }
# Per chain: invalid counter first, then all packets.
read -r pre_inv pre_all out_inv out_all <<<"$(counts)"
for p in "${PIDS[@]}"; do kill -TERM "$p" 2>/dev/null || true; wait "$p" 2>/dev/null || true; done
PIDS=()
txcsum=$(sed -n 's/^tx-checksumming: \([a-z]*\).*/\1/p' "$OUT/ethtool.txt")
dropped() { sed -n 's/^\([0-9]*\) packets dropped by kernel.*/\1/p' "$1"; }
printf '{"invalid": %d, "packets": %d, "tx_checksumming": "%s", "dropped": {"host.pcap": %d, "any.pcap": %d}}\n' \
  $((pre_inv + out_inv)) $((pre_all + out_all)) "${txcsum:-unknown}" "$(dropped "$OUT/host.pcap.err")" "$(dropped "$OUT/any.pcap.err")" > "$OUT/kernel.json"
cat "$OUT/kernel.json"
