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

# The hosts, as record.sh builds them.
source "$HERE/topology.sh"
setup_topology() { setup_hosts; }

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
