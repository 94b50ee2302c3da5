#!/usr/bin/env bash
# Record the Linux kernel's conntrack decisions as test fixtures.
#
#   sudo scripts/oracle/record.sh [SCENARIO ...]     (no argument: all scenarios)
#   scripts/oracle/record.sh --list
#
# For every scenario this builds three fresh network namespaces
#   ctsab-client <-veth-> ctsab-router <-veth-> ctsab-server
# starts an NFLOG capture of the router's FORWARD decisions, conntrack -E, runs the scenario's
# traffic (scripts/oracle/traffic.py) and writes test/fixtures/kernel/<scenario>/.
# See scripts/oracle/README.md.
set -euo pipefail
# System tools only: under npm/npx, node_modules/.bin holds an unrelated `nft` (@vercel/nft).
export PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin

HERE="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
ROOT="$(cd "$HERE/../.." && pwd)"
OUTROOT="${CTSAB_FIXTURES:-$ROOT/test/fixtures/kernel}"
PY=/usr/bin/python3          # Debian's python3, which has scapy
P=${CTSAB_NS_PREFIX:-ctsab}   # name prefix of everything we create (set it to run recorders side by side)
NS_C=$P-client NS_R=$P-router NS_S=$P-server
NFLOG_GROUP=1

if [[ "${1:-}" == "--list" ]]; then exec "$PY" "$HERE/traffic.py" --list; fi
if [[ $EUID -ne 0 ]]; then echo "record.sh: must run as root" >&2; exit 1; fi
for t in ip nft conntrack tcpdump ethtool; do
  command -v "$t" >/dev/null || { echo "record.sh: missing $t (apt-get install nftables conntrack tcpdump ethtool iproute2)" >&2; exit 1; }
done
"$PY" -c 'import scapy' 2>/dev/null || { echo "record.sh: $PY lacks scapy (apt-get install python3-scapy)" >&2; exit 1; }

export CTSAB_NS_PREFIX=$P    # traffic.py finds the namespaces by it
TCPDUMP_PID= WIRE_PID= EVENTS_PID= WORK= CAPTURE_BASE=0 WIRE=0
cleanup() {
  set +e
  [[ -n "$TCPDUMP_PID" ]] && kill -TERM "$TCPDUMP_PID" 2>/dev/null && wait "$TCPDUMP_PID" 2>/dev/null
  [[ -n "$WIRE_PID" ]] && kill -TERM "$WIRE_PID" 2>/dev/null && wait "$WIRE_PID" 2>/dev/null
  [[ -n "$EVENTS_PID" ]] && kill -KILL "$EVENTS_PID" 2>/dev/null && wait "$EVENTS_PID" 2>/dev/null
  TCPDUMP_PID= WIRE_PID= EVENTS_PID=
  for ns in $NS_C $NS_R $NS_S; do ip netns del "$ns" 2>/dev/null; done
  [[ -n "$WORK" && -d "$WORK" ]] && rm -rf "$WORK"
  WORK=
}
trap cleanup EXIT
trap 'exit 130' INT TERM

nsx() { local ns=$1; shift; ip netns exec "$ns" "$@"; }

# The hosts (topology.sh), then the labelling chain.
source "$HERE/topology.sh"
setup_topology() {
  setup_hosts
  # The labelling chain: conntrack (loaded by the ct expressions) runs at PREROUTING, so in
  # FORWARD each packet already carries the kernel's verdict.
  nsx $NS_R nft -f - <<EOF
table inet $P {
  chain forward_log {
    type filter hook forward priority filter; policy accept;
    ct state invalid counter log prefix "ct:invalid" group $NFLOG_GROUP queue-threshold 1 accept
    ct state untracked counter log prefix "ct:untracked" group $NFLOG_GROUP queue-threshold 1 accept
    ct state new ct direction original counter log prefix "ct:new:original" group $NFLOG_GROUP queue-threshold 1 accept
    ct state new ct direction reply counter log prefix "ct:new:reply" group $NFLOG_GROUP queue-threshold 1 accept
    ct state established ct direction original counter log prefix "ct:established:original" group $NFLOG_GROUP queue-threshold 1 accept
    ct state established ct direction reply counter log prefix "ct:established:reply" group $NFLOG_GROUP queue-threshold 1 accept
    ct state related ct direction original counter log prefix "ct:related:original" group $NFLOG_GROUP queue-threshold 1 accept
    ct state related ct direction reply counter log prefix "ct:related:reply" group $NFLOG_GROUP queue-threshold 1 accept
    counter log prefix "ct:other" group $NFLOG_GROUP queue-threshold 1 accept
  }
  # Packets with TTL / hop limit 1 never reach FORWARD (the router answers time exceeded), yet
  # conntrack has seen them: log them right after conntrack instead, with the same labels.
  chain ttl1_log {
    type filter hook prerouting priority -150; policy accept;
$(for m in "ip daddr 10.200.0.0/16 ip ttl" "ip6 daddr fd00:200::/56 ip6 hoplimit"; do
    echo "    $m < 2 ct state invalid counter log prefix \"ct:invalid\" group $NFLOG_GROUP queue-threshold 1"
    echo "    $m < 2 ct state untracked counter log prefix \"ct:untracked\" group $NFLOG_GROUP queue-threshold 1"
    for st in new established related; do for d in original reply; do
      echo "    $m < 2 ct state $st ct direction $d counter log prefix \"ct:$st:$d\" group $NFLOG_GROUP queue-threshold 1"
    done; done
  done)
  }
}
EOF
}

nft_logged_total() {
  nsx $NS_R nft list table inet $P | sed -n 's/.*counter packets \([0-9]*\) .*/\1/p' | awk '{s+=$1} END {print s+0}'
}

# Start tcpdump on nflog and wait until it is listening.
start_capture() {
  local pcap=$1 errf=$WORK/tcpdump.err
  : >"$errf"
  ip netns exec $NS_R tcpdump -n -U -s 0 -B 4096 -i nflog:$NFLOG_GROUP -w "$pcap" 2>"$errf" &
  TCPDUMP_PID=$!
  local i
  for i in $(seq 1 100); do
    grep -q "listening on" "$errf" && break
    sleep 0.05
  done
  grep -q "listening on" "$errf" || { cat "$errf" >&2; echo "tcpdump did not start" >&2; exit 1; }
  if [[ $WIRE -eq 1 ]]; then
    # Everything that reaches the router, as it arrives (fragments before reassembly).
    local werr=$WORK/wire.err
    : >"$werr"
    ip netns exec $NS_R tcpdump -n -U -s 0 -B 4096 -i any -Q in -w "$WORK/wire.pcap" 2>"$werr" &
    WIRE_PID=$!
    for i in $(seq 1 100); do
      grep -q "listening on" "$werr" && break
      sleep 0.05
    done
    grep -q "listening on" "$werr" || { cat "$werr" >&2; echo "tcpdump (wire) did not start" >&2; exit 1; }
  fi
  sleep 0.3
}

stop_capture() {
  sleep 1.0                     # let the last NFLOG messages flush
  kill -TERM "$TCPDUMP_PID"      # (SIGINT is ignored by background jobs of a script)
  wait "$TCPDUMP_PID" || true
  TCPDUMP_PID=
  if [[ -n "$WIRE_PID" ]]; then kill -TERM "$WIRE_PID"; wait "$WIRE_PID" || true; WIRE_PID=; fi
}

record_one() {
  local sc=$1 out="$OUTROOT/$1"
  echo "=== $sc"
  WORK=$(mktemp -d /tmp/ctsab-rec.XXXXXX)
  WIRE=$("$PY" "$HERE/traffic.py" --wire "$sc")
  setup_topology
  # Scenario sysctls (router namespace only): net.netfilter.* unless the name has its own prefix.
  local kv
  while read -r kv; do
    [[ -z "$kv" ]] && continue
    if [[ "$kv" == net.* ]]; then nsx $NS_R sysctl -qw "$kv"; else nsx $NS_R sysctl -qw "net.netfilter.$kv"; fi
  done < <("$PY" "$HERE/traffic.py" --sysctls "$sc")
  nsx $NS_R conntrack -F 2>/dev/null || true
  # conntrack -E (stdbuf: line-buffer the output so nothing is lost when it is stopped)
  : >"$WORK/events.txt"
  ip netns exec $NS_R stdbuf -oL conntrack -E -b 16777216 -o timestamp,extended,id >>"$WORK/events.txt" 2>"$WORK/events.err" &
  EVENTS_PID=$!
  sleep 0.3
  # The scenario runs its own "pre-capture" phase (mid-stream pickup) and then calls back
  # into us through these files: it creates $WORK/want-capture when it wants the capture and
  # the table flush, and waits for $WORK/capture-started.
  export CTSAB_WORK=$WORK
  "$PY" "$HERE/traffic.py" --run "$sc" &
  local tpid=$!
  while kill -0 $tpid 2>/dev/null; do
    if [[ -e "$WORK/want-capture" && ! -e "$WORK/capture-started" ]]; then
      if [[ -e "$WORK/want-flush" ]]; then nsx $NS_R conntrack -F 2>/dev/null || true; echo "# conntrack -F (capture starts)" >>"$WORK/events.txt"; fi
      CAPTURE_BASE=$(nft_logged_total)    # packets forwarded before the capture (mid-stream set-up)
      start_capture "$WORK/capture.pcap"
      touch "$WORK/capture-started"
    fi
    sleep 0.02
  done
  wait $tpid || { echo "traffic for $sc failed" >&2; exit 1; }
  [[ -n "$TCPDUMP_PID" ]] || { echo "scenario $sc never started the capture" >&2; exit 1; }
  nsx $NS_R conntrack -L -o extended >"$WORK/table.txt" 2>/dev/null || true
  local logged; logged=$(( $(nft_logged_total) - CAPTURE_BASE ))
  stop_capture
  sleep 0.2
  # conntrack -E does not stop on SIGTERM while blocked; its output is line-buffered (stdbuf)
  kill -KILL "$EVENTS_PID" 2>/dev/null || true; wait "$EVENTS_PID" 2>/dev/null || true; EVENTS_PID=
  nsx $NS_R nft list table inet $P >"$WORK/counters.txt"
  mkdir -p "$out"
  cp "$WORK/capture.pcap" "$WORK/events.txt" "$WORK/table.txt" "$out/"
  if [[ $WIRE -eq 1 ]]; then cp "$WORK/wire.pcap" "$out/"; fi
  chmod 644 "$out"/*
  "$PY" "$HERE/traffic.py" --meta "$sc" "$out" "$logged"
  # Our replay against what was just recorded (src/ops/oracle.ts), when the project is built.
  if command -v node >/dev/null && [[ -f "$HERE/../../dist/src/ops/oracle.js" ]]; then
    node "$HERE/compare.mjs" "$out" || echo "record.sh: $sc differs from our replay (see above)" >&2
  fi
  for ns in $NS_C $NS_R $NS_S; do ip netns del "$ns"; done
  rm -rf "$WORK"; WORK=
}

if [[ $# -eq 0 ]]; then
  mapfile -t SCENARIOS < <("$PY" "$HERE/traffic.py" --list)
else
  SCENARIOS=("$@")
fi
for sc in "${SCENARIOS[@]}"; do
  "$PY" "$HERE/traffic.py" --check "$sc"
  record_one "$sc"
done
