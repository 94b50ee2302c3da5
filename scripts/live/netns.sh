#!/usr/bin/env bash
# Namespaces and netfilter rules for live NFQUEUE traffic: client - router - server.
#   netns.sh up PREFIX                 create PREFIX-client, PREFIX-router, PREFIX-server
#   netns.sh rules PREFIX MODE QUEUES  MODE: shadow | enforce | conntrack | none; QUEUES e.g. 0:1
#   netns.sh down PREFIX
# Addresses (private, only inside these namespaces):
#   client 10.200.1.2 (and .3-.6) fd00:200:0:1::2 | router 10.200.1.1 / 10.200.2.1 | server 10.200.2.2 fd00:200:0:2::2
#   phantom hosts for crafted packets: 10.200.1.10 (behind the client), 10.200.2.10 (behind the server)
# Offloads are off (as in scripts/oracle/record.sh), so the router's conntrack verifies checksums
# (CTSAB_OFFLOADS=on keeps them).
# iptables: the nf_tables flavour (iptables-nft; CTSAB_IPTABLES=iptables-legacy for the other);
# NFQUEUE goes through xt_NFQUEUE (this kernel has no nft_queue).
set -euo pipefail
# System tools first (npx puts node_modules/.bin, with an unrelated "nft", in front).
export PATH=/usr/sbin:/usr/bin:/sbin:/bin:$PATH
cmd=${1:?usage: netns.sh up|rules|down PREFIX ...}
P=${2:?prefix}
C=$P-client R=$P-router S=$P-server
nsx() { local ns=$1; shift; ip netns exec "$ns" "$@"; }
IPT=${CTSAB_IPTABLES:-iptables-nft}
IP6T=${IPT/iptables/ip6tables}

case "$cmd" in
up)
  for ns in $C $R $S; do
    ip netns del "$ns" 2>/dev/null || true
    ip netns add "$ns"
    nsx "$ns" ip link set lo up
    for k in all default; do
      nsx "$ns" sysctl -qw net.ipv6.conf.$k.accept_dad=0 net.ipv6.conf.$k.accept_ra=0 net.ipv6.conf.$k.router_solicitations=0
    done
  done
  ip link add ${P}c0 netns $C type veth peer name ${P}r1 netns $R
  ip link add ${P}s0 netns $S type veth peer name ${P}r2 netns $R
  for pair in "$C ${P}c0" "$R ${P}r1" "$R ${P}r2" "$S ${P}s0"; do
    read -r ns dev <<<"$pair"
    # CTSAB_OFFLOADS=on keeps the veth defaults (checksum offload, TSO/GSO/GRO: 64 KiB packets).
    [ "${CTSAB_OFFLOADS:-off}" = on ] || nsx "$ns" ethtool -K "$dev" tx off rx off tso off gso off gro off >/dev/null 2>&1 || true
    nsx "$ns" ip link set "$dev" up
  done
  nsx $C ip addr add 10.200.1.2/24 dev ${P}c0
  # More client addresses: the kernel spreads queues by address pair (--queue-balance).
  for i in 3 4 5 6; do nsx $C ip addr add 10.200.1.$i/24 dev ${P}c0; done
  nsx $C ip -6 addr add fd00:200:0:1::2/64 dev ${P}c0 nodad
  nsx $R ip addr add 10.200.1.1/24 dev ${P}r1
  nsx $R ip -6 addr add fd00:200:0:1::1/64 dev ${P}r1 nodad
  nsx $R ip addr add 10.200.2.1/24 dev ${P}r2
  nsx $R ip -6 addr add fd00:200:0:2::1/64 dev ${P}r2 nodad
  nsx $S ip addr add 10.200.2.2/24 dev ${P}s0
  nsx $S ip -6 addr add fd00:200:0:2::2/64 dev ${P}s0 nodad
  nsx $C ip route add 10.200.0.0/16 via 10.200.1.1
  nsx $C ip -6 route add fd00:200::/56 via fd00:200:0:1::1
  nsx $S ip route add 10.200.0.0/16 via 10.200.2.1
  nsx $S ip -6 route add fd00:200::/56 via fd00:200:0:2::1
  nsx $R sysctl -qw net.ipv4.ip_forward=1 net.ipv6.conf.all.forwarding=1 net.ipv4.conf.all.send_redirects=0
  # Static neighbours: no ARP / ND on the wire.
  c_mac=$(nsx $C cat /sys/class/net/${P}c0/address); s_mac=$(nsx $S cat /sys/class/net/${P}s0/address)
  r1_mac=$(nsx $R cat /sys/class/net/${P}r1/address); r2_mac=$(nsx $R cat /sys/class/net/${P}r2/address)
  nsx $C ip neigh replace 10.200.1.1 lladdr $r1_mac dev ${P}c0 nud permanent
  nsx $C ip -6 neigh replace fd00:200:0:1::1 lladdr $r1_mac dev ${P}c0 nud permanent
  nsx $S ip neigh replace 10.200.2.1 lladdr $r2_mac dev ${P}s0 nud permanent
  nsx $S ip -6 neigh replace fd00:200:0:2::1 lladdr $r2_mac dev ${P}s0 nud permanent
  for a in 10.200.1.2 10.200.1.3 10.200.1.4 10.200.1.5 10.200.1.6 10.200.1.10; do nsx $R ip neigh replace $a lladdr $c_mac dev ${P}r1 nud permanent; done
  nsx $R ip -6 neigh replace fd00:200:0:1::2 lladdr $c_mac dev ${P}r1 nud permanent
  for a in 10.200.2.2 10.200.2.10; do nsx $R ip neigh replace $a lladdr $s_mac dev ${P}r2 nud permanent; done
  nsx $R ip -6 neigh replace fd00:200:0:2::2 lladdr $s_mac dev ${P}r2 nud permanent
  # Packets for the phantom server address are counted as they reach the server (then dropped by it).
  nsx $S nft -f - <<NFT
table netdev ctsab_count {
  chain in {
    type filter hook ingress device ${P}s0 priority 0;
    ip daddr 10.200.2.10 counter
  }
}
NFT
  ;;
rules)
  mode=${3:?mode}; queues=${4:-0:0}
  # --queue-balance A:B spreads flows by address pair (both directions to one queue); one queue: --queue-num.
  if [ "${queues%%:*}" = "${queues##*:}" ]; then qarg="--queue-num ${queues%%:*}"; else qarg="--queue-balance $queues"; fi
  nsx $R nft flush ruleset
  if [ "$IPT" = iptables-legacy ]; then
    for t in $IPT $IP6T; do nsx $R $t -F; nsx $R $t -t raw -F; done
  fi
  case "$mode" in
  shadow)
    # The kernel's ct state and direction into the packet mark, read by the workers (NFQA_MARK):
    # 0x5ab00000 | (state + 1) << 4 | direction; state new 0, established 1, related 2, invalid 3, untracked 4.
    nsx $R nft -f - <<'NFT'
table inet ctsab_shadow {
  chain forward {
    type filter hook forward priority -10; policy accept;
    ct state invalid meta mark set 0x5ab00040
    ct state untracked meta mark set 0x5ab00050
    ct direction original meta mark set ct state map { new : 0x5ab00010, established : 0x5ab00020, related : 0x5ab00030 }
    ct direction reply meta mark set ct state map { new : 0x5ab00011, established : 0x5ab00021, related : 0x5ab00031 }
  }
}
NFT
    for t in $IPT $IP6T; do nsx $R $t -A FORWARD -j NFQUEUE $qarg --queue-bypass; done
    ;;
  enforce|accept)
    # Our decision is the only state: the kernel does not track the queued traffic.
    for t in $IPT $IP6T; do
      nsx $R $t -t raw -A PREROUTING -i ${P}r1 -j CT --notrack
      nsx $R $t -t raw -A PREROUTING -i ${P}r2 -j CT --notrack
      nsx $R $t -A FORWARD -j NFQUEUE $qarg
    done
    # Packets leaving with a mark our verdicts set (policy marks, connmark-equivalent).
    nsx $R nft -f - <<'NFT'
table inet ctsab_marks {
  chain post {
    type filter hook postrouting priority 0; policy accept;
    meta mark 0x10 counter
  }
}
NFT
    ;;
  conntrack)
    nsx $R nft -f - <<'NFT'
table inet ctsab_fw {
  chain forward {
    type filter hook forward priority 0; policy accept;
    ct state established,related accept
    ct state invalid drop
  }
}
NFT
    ;;
  none) ;;
  *) echo "netns.sh: unknown mode $mode" >&2; exit 2 ;;
  esac
  ;;
down)
  for ns in $C $R $S; do ip netns del "$ns" 2>/dev/null || true; done
  ;;
*) echo "netns.sh: unknown command $cmd" >&2; exit 2 ;;
esac
