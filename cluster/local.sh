#!/usr/bin/env bash
# A Ray cluster on this machine, with token authentication, for `ray job submit` and the dashboard.
#
#   cluster/local.sh start [NUM_CPUS] [--worker-cpus M]   # head node (+ a second node with M CPUs)
#   cluster/local.sh add-node CPUS [--private DIR]         # one more node (root: DIR empty and its own there)
#   cluster/local.sh status                                # nodes and resources (`ray status`)
#   cluster/local.sh stop
#
# The second node is a separate raylet on the same machine with its own CPUs and temp dir, so multi-node
# placement (e.g. --placement STRICT_SPREAD) can be tried without a second machine; both share local storage.
# add-node starts a further node (temp dir ray-node3-PORT, ray-node4-PORT, ...). With --private DIR (root only) that
# node's processes see an empty folder of their own at DIR (a mount namespace with a tmpfs there): a node of a
# real cluster without the shared mount, which the shared-storage check of studies, train and data prepare refuses.
# Ports: RAY_PORT (default 6379), DASHBOARD_PORT (8265; it listens on 127.0.0.1), AGENT_PORT (the head's
# dashboard agent, 52365) and CLIENT_PORT (Ray Client, 10001): set all four to run next to another Ray.
# Token: ~/.ray/auth_token, created on first start (`ray get-auth-token --generate`); clients need
# RAY_AUTH_MODE=token and that file. Each cluster keeps its files in its own temp dir, ${TMPDIR:-/tmp}/ray-PORT
# (and ray-node2-PORT), and `stop` ends only its processes: the ones naming that dir or its GCS port, and
# their children. (`ray stop` would end every Ray process of this user: other clusters, notebooks, tests.)
set -euo pipefail
action=${1:-}
shift || true
port=${RAY_PORT:-6379}
dashboard_port=${DASHBOARD_PORT:-8265}
agent_port=${AGENT_PORT:-52365}
client_port=${CLIENT_PORT:-10001}
temp_root=${TMPDIR:-/tmp}
export RAY_AUTH_MODE=token

usage() {
  echo "usage: cluster/local.sh start [NUM_CPUS] [--worker-cpus M] | add-node CPUS [--private DIR] | status | stop" >&2
  exit 2
}

case "$action" in
  start)
    cpus=() worker_cpus=""
    while [ $# -gt 0 ]; do
      case "$1" in
        --worker-cpus) worker_cpus=${2:?--worker-cpus needs a number}; shift 2 ;;
        [0-9]*) cpus=(--num-cpus "$1"); shift ;;
        *) usage ;;
      esac
    done
    [ -s "$HOME/.ray/auth_token" ] || ray get-auth-token --generate >/dev/null
    ray start --head --port "$port" --dashboard-host 127.0.0.1 --dashboard-port "$dashboard_port" \
      --dashboard-agent-listen-port "$agent_port" --ray-client-server-port "$client_port" \
      --temp-dir "$temp_root/ray-$port" --disable-usage-stats "${cpus[@]}"
    if [ -n "$worker_cpus" ]; then
      # its own temp dir: nodes sharing one would share (and garbage-collect) each other's job files
      ray start --address "127.0.0.1:$port" --num-cpus "$worker_cpus" --disable-usage-stats \
        --temp-dir "$temp_root/ray-node2-$port"
      for _ in $(seq 60); do  # the head learns of the new node within seconds
        [ "$(ray status --address "127.0.0.1:$port" 2>/dev/null | grep -c ' node_')" -ge 2 ] && break
        sleep 1
      done
    fi
    cat <<MSG

Ray is up with token authentication (token: $HOME/.ray/auth_token)$([ -n "$worker_cpus" ] && echo ", two nodes").
Dashboard: http://127.0.0.1:$dashboard_port
Drivers on this machine join it with RAY_ADDRESS=127.0.0.1:$port (its files are in $temp_root/ray-$port).
Submit a study from the repository root:
  RAY_AUTH_MODE=token ray job submit --address http://127.0.0.1:$dashboard_port --working-dir . -- \\
    python studies/mask_ratio_sweep.py --preset smoke --store $PWD/results
MSG
    ;;
  add-node)
    node_cpus=${1:-}
    [[ "$node_cpus" =~ ^[0-9]+$ ]] || usage
    shift
    private=""
    if [ "${1:-}" = "--private" ]; then private=${2:?--private needs a folder}; shift 2; fi
    [ $# -eq 0 ] || usage
    number=3
    while [ -e "$temp_root/ray-node$number-$port" ]; do number=$((number + 1)); done
    before=$(ray status --address "127.0.0.1:$port" 2>/dev/null | grep -c ' node_' || true)
    join=(ray start --address "127.0.0.1:$port" --num-cpus "$node_cpus" --disable-usage-stats
          --temp-dir "$temp_root/ray-node$number-$port")
    if [ -n "$private" ]; then
      mkdir -p "$private"
      # the node's raylet and every worker it starts stay in this mount namespace, with the tmpfs at $private
      unshare --mount --propagation private sh -c 'mount -t tmpfs meap-scale-private "$0" && exec "$@"' \
        "$private" "${join[@]}"
    else
      "${join[@]}"
    fi
    for _ in $(seq 60); do
      [ "$(ray status --address "127.0.0.1:$port" 2>/dev/null | grep -c ' node_')" -gt "$before" ] && break
      sleep 1
    done
    echo "node $number joined the Ray cluster on port $port${private:+ (its own empty $private)}"
    ;;
  status)
    ray status --address "127.0.0.1:$port"
    ;;
  stop)
    own="$temp_root/ray-(node[0-9]+-)?$port/|[^ ]*:$port( |\$)"
    pids=""
    collect() { for pid in "$@"; do pids="$pids $pid"; collect $(pgrep -P "$pid" || true); done; }
    collect $(pgrep -f -- "$own" || true)
    if [ -z "${pids// /}" ]; then
      echo "no Ray cluster of this script on port $port is running"
      exit 0
    fi
    kill $pids 2>/dev/null || true
    for _ in $(seq 30); do
      alive=$(for pid in $pids; do if kill -0 "$pid" 2>/dev/null; then echo "$pid"; fi; done)
      [ -z "$alive" ] && break
      sleep 1
    done
    [ -n "${alive:-}" ] && kill -9 $alive 2>/dev/null || true
    echo "stopped the Ray cluster on port $port ($(echo $pids | wc -w) processes)"
    ;;
  *)
    usage
    ;;
esac
