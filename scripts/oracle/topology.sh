#!/usr/bin/env bash
# The recorders' three namespaces (sourced by record.sh and record-nat.sh, which set NS_C, NS_R,
# NS_S and define nsx). setup_hosts builds the hosts, links, addresses, routes and neighbours.
# Topology. Addresses (only 10.200.0.0/16 and fd00:200::/56):
#   client c0 10.200.1.2  fd00:200:0:1::2   mac 02:c7:5a:00:01:02
#   router r1 10.200.1.1  fd00:200:0:1::1   mac 02:c7:5a:00:01:01
#   router r2 10.200.2.1  fd00:200:0:2::1   mac 02:c7:5a:00:02:01
#   server s0 10.200.2.2  fd00:200:0:2::2   mac 02:c7:5a:00:02:02
# "Phantom" hosts for crafted traffic, assigned to no interface: 10.200.1.10-19 /
# fd00:200:0:1::10-19 behind the client, 10.200.2.10-19 / fd00:200:0:2::10-19 behind the server.
# The router has static neighbour entries for them pointing at the client/server MACs; the
# client/server kernels (forwarding off) silently drop packets for addresses they do not own, so
# no host stack ever answers crafted packets (no stray RSTs or ICMP errors).
setup_hosts() {
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
