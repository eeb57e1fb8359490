# Sourced by local-cluster.sh: the network of a multi-node cluster on one machine.
#
# One network namespace per node (ip netns), each with its own loopback and an `eth0` that is one
# end of a veth pair; the other ends hang on a bridge in the root namespace, which carries the
# controller's address. Link-local addresses (169.254.0.0/16) only, no default route, no NAT,
# no forwarding: the namespaces reach each other and the controller, and nothing off the machine.
# Every object made is recorded in $MADE, one per line, so `stop` removes exactly those.

SUBNET=${HPCGEN_SLURM_SUBNET:-169.254.77}  # a /24 of the link-local range
BRIDGE=hpcgen-br0
CTL_ADDR=$SUBNET.1
HOSTS_BEGIN="# hpcgen local-cluster nodes: begin (local-cluster.sh stop removes these lines)"
HOSTS_END="# hpcgen local-cluster nodes: end"

node_name() { echo "hpcgen-node$1"; }  # also the namespace's name and the node's hostname
node_addr() { echo "$SUBNET.$((10 + $1))"; }

made() { echo "$*" >>"$MADE"; }
was_made() { [ -f "$MADE" ] && grep -qxF "$*" "$MADE"; }

refused() {  # refused WHAT: the kernel said no
  die "the kernel refused $1. Multi-node needs root with CAP_NET_ADMIN and CAP_SYS_ADMIN and a \
kernel with bridges and network namespaces; in a container, run it --privileged. The 1-node \
cluster (start without --nodes) still works"
}

probe_kernel() {  # before anything is made or checked: may we make bridges and namespaces?
  local err
  err=$( (ip link add hpcgen-probe0 type bridge && ip link del hpcgen-probe0) 2>&1) \
    || refused "a bridge (ip link add: $err)"
  err=$(unshare --net true 2>&1) || refused "a network namespace (unshare --net: $err)"
}

check_subnet() {
  case "$SUBNET" in
    169.254.[0-9]*) ;;
    *) die "HPCGEN_SLURM_SUBNET=$SUBNET: use a link-local /24 prefix (169.254.X), whose \
addresses no router forwards" ;;
  esac
}

make_bridge() {
  if ip link show "$BRIDGE" >/dev/null 2>&1; then
    was_made "bridge $BRIDGE" || die "a bridge $BRIDGE exists that this script did not make: \
remove it (ip link del $BRIDGE) or stop what uses it"
    return 0
  fi
  local err
  err=$(ip link add "$BRIDGE" type bridge 2>&1) || refused "the bridge $BRIDGE (ip link add: $err)"
  made "bridge $BRIDGE"
  ip addr add "$CTL_ADDR/24" dev "$BRIDGE"
  ip link set "$BRIDGE" up
}

make_node_netns() {  # make_node_netns I: namespace, veth pair, address, loopback
  local name addr veth=hpcgen-v$1 peer=hpcgen-p$1 err
  name=$(node_name "$1")
  addr=$(node_addr "$1")
  if ! ip netns list | grep -qw "^$name"; then
    if ! err=$(ip netns add "$name" 2>&1); then
      remove_network  # what this start made before the refusal
      refused "a network namespace (ip netns add $name: $err)"
    fi
    made "netns $name"
  fi
  was_made "netns $name" || die "a namespace $name exists that this script did not make"
  if ! ip link show "$veth" >/dev/null 2>&1; then
    ip link add "$veth" type veth peer name "$peer"
    made "veth $veth"  # deleted before its namespace: a namespace goes away asynchronously
    ip link set "$peer" netns "$name"
    ip -n "$name" link set "$peer" name eth0
  fi
  ip link set "$veth" master "$BRIDGE" up
  ip -n "$name" addr replace "$addr/24" dev eth0
  ip -n "$name" link set eth0 up
  ip -n "$name" link set lo up
}

add_hosts_lines() {  # add_hosts_lines N: every node's name -> its address, for every namespace
  remove_hosts_lines
  local block i
  block="$HOSTS_BEGIN"$'\n'
  for i in $(seq "$1"); do block+="$(node_addr "$i") $(node_name "$i")"$'\n'; done
  block+="$HOSTS_END"
  # rewritten in place: /etc/hosts may be a bind mount that a rename cannot replace
  printf '%s\n' "$block" >>/etc/hosts
  made "hosts"
}

remove_hosts_lines() {
  grep -qF "$HOSTS_BEGIN" /etc/hosts 2>/dev/null || return 0
  local kept
  kept=$(awk -v b="$HOSTS_BEGIN" -v e="$HOSTS_END" '$0 == b {skip = 1} !skip {print} $0 == e {skip = 0}' /etc/hosts)
  printf '%s\n' "$kept" >/etc/hosts
}

end_netns_processes() {  # end_netns_processes NAME: what still runs in our namespace (job steps)
  local pids
  pids=$(ip netns pids "$1" 2>/dev/null || true)
  [ -n "$pids" ] || return 0
  # shellcheck disable=SC2086
  kill $pids 2>/dev/null || true
  for _ in $(seq 20); do [ -z "$(ip netns pids "$1" 2>/dev/null)" ] && return 0; sleep 0.25; done
  # shellcheck disable=SC2086
  kill -KILL $(ip netns pids "$1") 2>/dev/null || true
}

remove_network() {  # everything $MADE lists, in reverse order
  [ -f "$MADE" ] || return 0
  local kind what
  tac "$MADE" | while read -r kind what; do
    case "$kind" in
      netns) end_netns_processes "$what"; ip netns del "$what" 2>/dev/null || true ;;
      bridge|veth) ip link del "$what" 2>/dev/null || true ;;
      hosts) remove_hosts_lines ;;
    esac
  done
  rm -f "$MADE"
}
