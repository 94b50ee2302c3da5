#!/usr/bin/env bash
# Record the Linux kernel's NAT decisions as test fixtures (test/fixtures/kernel-nat/<scenario>/).
#
#   sudo CTSAB_NS_PREFIX=ctG scripts/oracle/record-nat.sh [SCENARIO ...]   (no argument: all)
#   scripts/oracle/record-nat.sh --list
#
# The topology of record.sh (client <-veth-> router <-veth-> server), and in the router:
#   - the scenario's nat rules (scripts/oracle/nat_traffic.py --rules: nft syntax, also what the
#     project installs), in `type nat` chains at dstnat (prerouting) and srcnat (postrouting);
#   - a prerouting filter chain at priority -150 (after conntrack, before DNAT) that logs every
#     packet with the kernel's verdict (NFLOG group 1, labels as record.sh): before.pcap;
#   - tcpdump -Q out on r1 and r2: what left the router after translation, merged: after.pcap.
# Plus conntrack -L (table.txt) and -E (events.txt). See scripts/oracle/README.md.
set -euo pipefail

HERE="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
ROOT="$(cd "$HERE/../.." && pwd)"
OUTROOT="${CTSAB_FIXTURES:-$ROOT/test/fixtures/kernel-nat}"
PY=/usr/bin/python3
P=${CTSAB_NS_PREFIX:-ctsab}
export CTSAB_NS_PREFIX=$P
NS_C=$P-client NS_R=$P-router NS_S=$P-server
NFLOG_GROUP=1

if [[ "${1:-}" == "--list" ]]; then exec "$PY" "$HERE/nat_traffic.py" --list; fi
if [[ $EUID -ne 0 ]]; then echo "record-nat.sh: must run as root" >&2; exit 1; fi
for t in ip nft conntrack tcpdump ethtool; do
  command -v "$t" >/dev/null || { echo "record-nat.sh: missing $t" >&2; exit 1; }
done

PIDS=() WORK=
cleanup() {
  set +e
  for p in "${PIDS[@]}"; do kill -TERM "$p" 2>/dev/null; wait "$p" 2>/dev/null; done
  PIDS=()
  for ns in $NS_C $NS_R $NS_S; do ip netns del "$ns" 2>/dev/null; done
  [[ -n "$WORK" && -d "$WORK" ]] && rm -rf "$WORK"
  WORK=
}
trap cleanup EXIT
trap 'exit 130' INT TERM

nsx() { local ns=$1; shift; ip netns exec "$ns" "$@"; }

# The topology, as record.sh builds it (kept in step by hand).
setup_topology() {
  for ns in $NS_C $NS_R $NS_S; do
    ip netns del "$ns" 2>/dev/null || true
    ip netns add "$ns"
    nsx "$ns" ip link set lo up
    for k in all default; do
      nsx "$ns" sysctl -qw net.ipv6.conf.$k.accept_dad=0 net.ipv6.conf.$k.router_solicitations=0 \
        net.ipv6.conf.$k.accept_ra=0 net.ipv6.conf.$k.dad_transmits=0
    done
  done
  ip link add c0 netns $NS_C type veth peer name r1 netns $NS_R
  ip link add s0 netns $NS_S type veth peer name r2 netns $NS_R
  nsx $NS_C ip link set c0 address 02:c7:5a:00:01:02
  nsx $NS_R ip link set r1 address 02:c7:5a:00:01:01
  nsx $NS_R ip link set r2 address 02:c7:5a:00:02:01
  nsx $NS_S ip link set s0 address 02:c7:5a:00:02:02
  local ns dev
  for pair in "$NS_C c0" "$NS_R r1" "$NS_R r2" "$NS_S s0"; do
    read -r ns dev <<<"$pair"
    for k in accept_dad router_solicitations accept_ra dad_transmits; do
      nsx "$ns" sysctl -qw "net.ipv6.conf.$dev.$k=0"
    done
    nsx "$ns" ethtool -K "$dev" tx off rx off tso off gso off gro off >/dev/null 2>&1 || true
    nsx "$ns" ip link set "$dev" up
  done
  nsx $NS_C ip addr add 10.200.1.2/24 dev c0
  nsx $NS_C ip -6 addr add fd00:200:0:1::2/64 dev c0 nodad
  nsx $NS_R ip addr add 10.200.1.1/24 dev r1
  nsx $NS_R ip -6 addr add fd00:200:0:1::1/64 dev r1 nodad
  nsx $NS_R ip addr add 10.200.2.1/24 dev r2
  nsx $NS_R ip -6 addr add fd00:200:0:2::1/64 dev r2 nodad
  nsx $NS_S ip addr add 10.200.2.2/24 dev s0
  nsx $NS_S ip -6 addr add fd00:200:0:2::2/64 dev s0 nodad
  nsx $NS_C ip route add 10.200.0.0/16 via 10.200.1.1
  nsx $NS_C ip -6 route add fd00:200::/56 via fd00:200:0:1::1
  nsx $NS_S ip route add 10.200.0.0/16 via 10.200.2.1
  nsx $NS_S ip -6 route add fd00:200::/56 via fd00:200:0:2::1
  nsx $NS_R sysctl -qw net.ipv4.ip_forward=1 net.ipv6.conf.all.forwarding=1
  # The router must never answer anything itself: no redirects.
  nsx $NS_R sysctl -qw net.ipv4.conf.all.send_redirects=0 net.ipv4.conf.default.send_redirects=0 \
    net.ipv4.conf.r1.send_redirects=0 net.ipv4.conf.r2.send_redirects=0
  # Static neighbours everywhere (no ARP / ND on the wire).
  nsx $NS_C ip neigh replace 10.200.1.1 lladdr 02:c7:5a:00:01:01 dev c0 nud permanent
  nsx $NS_C ip -6 neigh replace fd00:200:0:1::1 lladdr 02:c7:5a:00:01:01 dev c0 nud permanent
  nsx $NS_S ip neigh replace 10.200.2.1 lladdr 02:c7:5a:00:02:01 dev s0 nud permanent
  nsx $NS_S ip -6 neigh replace fd00:200:0:2::1 lladdr 02:c7:5a:00:02:01 dev s0 nud permanent
  local i
  nsx $NS_R ip neigh replace 10.200.1.2 lladdr 02:c7:5a:00:01:02 dev r1 nud permanent
  nsx $NS_R ip -6 neigh replace fd00:200:0:1::2 lladdr 02:c7:5a:00:01:02 dev r1 nud permanent
  nsx $NS_R ip neigh replace 10.200.2.2 lladdr 02:c7:5a:00:02:02 dev r2 nud permanent
  nsx $NS_R ip -6 neigh replace fd00:200:0:2::2 lladdr 02:c7:5a:00:02:02 dev r2 nud permanent
  for i in $(seq 10 19); do
    nsx $NS_R ip neigh replace 10.200.1.$i lladdr 02:c7:5a:00:01:02 dev r1 nud permanent
    nsx $NS_R ip -6 neigh replace fd00:200:0:1::$i lladdr 02:c7:5a:00:01:02 dev r1 nud permanent
    nsx $NS_R ip neigh replace 10.200.2.$i lladdr 02:c7:5a:00:02:02 dev r2 nud permanent
    nsx $NS_R ip -6 neigh replace fd00:200:0:2::$i lladdr 02:c7:5a:00:02:02 dev r2 nud permanent
  done
}

setup_nat() {
  local sc=$1
  "$PY" "$HERE/nat_traffic.py" --rules "$sc" >"$WORK/nat.json"
  {
    echo "table inet $P {"
    echo "  chain pre_log {"
    echo "    type filter hook prerouting priority -150; policy accept;"
    echo "    meta pkttype != host accept"   # multicast / broadcast (MLD reports): never forwarded
    for l in "invalid" "untracked"; do
      echo "    ct state $l counter log prefix \"ct:$l\" group $NFLOG_GROUP queue-threshold 1 accept"
    done
    for s in new established related; do for d in original reply; do
      echo "    ct state $s ct direction $d counter log prefix \"ct:$s:$d\" group $NFLOG_GROUP queue-threshold 1 accept"
    done; done
    echo "    counter log prefix \"ct:other\" group $NFLOG_GROUP queue-threshold 1 accept"
    echo "  }"
    echo "  chain nat_pre { type nat hook prerouting priority dstnat; policy accept; }"
    echo "  chain nat_post { type nat hook postrouting priority srcnat; policy accept; }"
    echo "}"
  } | nsx $NS_R nft -f -
  # Each rule goes to the chain of its kind (the project sorts them the same way).
  "$PY" - "$WORK/nat.json" <<'PYEOF' | while IFS= read -r line; do nsx $NS_R nft "add rule inet $P $line"; done
import json, sys
for r in json.load(open(sys.argv[1]))["rules"]:
    chain = "nat_pre" if (" dnat " in f" {r} " or " redirect" in f" {r}") else "nat_post"
    print(f"{chain} {r}")
PYEOF
}

record_one() {
  local sc=$1 out="$OUTROOT/$1"
  echo "=== $sc"
  WORK=$(mktemp -d /tmp/ctsab-nat.XXXXXX)
  setup_topology
  setup_nat "$sc"
  nsx $NS_R conntrack -F 2>/dev/null || true
  : >"$WORK/events.txt"
  ip netns exec $NS_R stdbuf -oL conntrack -E -b 16777216 -o timestamp,extended,id >>"$WORK/events.txt" 2>/dev/null &
  PIDS+=($!)
  local dev
  for dev in r1 r2; do
    ip netns exec $NS_R tcpdump -n -U -s 0 -Q out -i $dev -w "$WORK/out-$dev.pcap" 2>"$WORK/tcpdump-$dev.err" &
    PIDS+=($!)
  done
  ip netns exec $NS_R tcpdump -n -U -s 0 -B 4096 -i nflog:$NFLOG_GROUP -w "$WORK/before.pcap" 2>"$WORK/tcpdump-nflog.err" &
  PIDS+=($!)
  local i f
  for f in r1 r2 nflog; do
    for i in $(seq 1 100); do grep -q "listening on" "$WORK/tcpdump-$f.err" && break; sleep 0.05; done
  done
  sleep 0.3
  "$PY" "$HERE/nat_traffic.py" --run "$sc"
  nsx $NS_R conntrack -L -o extended >"$WORK/table.txt" 2>/dev/null || true
  nsx $NS_R conntrack -S >"$WORK/stats.txt" 2>/dev/null || true
  sleep 1.0
  for p in "${PIDS[@]}"; do kill -TERM "$p" 2>/dev/null || true; done
  for p in "${PIDS[@]}"; do wait "$p" 2>/dev/null || true; done
  PIDS=()
  nsx $NS_R nft list ruleset >"$WORK/ruleset.txt"
  "$PY" "$HERE/nat_traffic.py" --merge "$WORK/after.pcap" "$WORK/out-r1.pcap" "$WORK/out-r2.pcap"
  mkdir -p "$out"
  cp "$WORK/before.pcap" "$WORK/after.pcap" "$WORK/events.txt" "$WORK/table.txt" "$WORK/stats.txt" "$WORK/nat.json" "$WORK/ruleset.txt" "$out/"
  chmod 644 "$out"/*
  for ns in $NS_C $NS_R $NS_S; do ip netns del "$ns"; done
  rm -rf "$WORK"; WORK=
}

if [[ $# -eq 0 ]]; then
  mapfile -t SCENARIOS < <("$PY" "$HERE/nat_traffic.py" --list)
else
  SCENARIOS=("$@")
fi
for sc in "${SCENARIOS[@]}"; do record_one "$sc"; done
