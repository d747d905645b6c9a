#!/usr/bin/env bash
# Start or stop a one-machine Ray cluster with token authentication, for `ray job submit`.
#
#   cluster/local.sh start [NUM_CPUS]   # head node; prints how to submit a study
#   cluster/local.sh stop
#
# Ports: RAY_PORT (default 6379) and DASHBOARD_PORT (default 8265). Token: ~/.ray/auth_token, created
# on first start (`ray get-auth-token --generate`); clients need RAY_AUTH_MODE=token and that file.
# Note: `stop` runs `ray stop`, which stops every Ray process of this user on the machine.
set -euo pipefail
action=${1:-}
port=${RAY_PORT:-6379}
dashboard_port=${DASHBOARD_PORT:-8265}
export RAY_AUTH_MODE=token

case "$action" in
  start)
    [ -s "$HOME/.ray/auth_token" ] || ray get-auth-token --generate >/dev/null
    cpus=()
    [ -n "${2:-}" ] && cpus=(--num-cpus "$2")
    ray start --head --port "$port" --dashboard-host 127.0.0.1 --dashboard-port "$dashboard_port" \
      --disable-usage-stats "${cpus[@]}"
    cat <<MSG

Ray head is up with token authentication (token: $HOME/.ray/auth_token).
Dashboard: http://127.0.0.1:$dashboard_port
Submit a study from the repository root:
  RAY_AUTH_MODE=token ray job submit --address http://127.0.0.1:$dashboard_port --working-dir . -- \\
    python studies/mask_ratio_sweep.py --preset smoke --storage $PWD/results
MSG
    ;;
  stop)
    ray stop
    ;;
  *)
    echo "usage: cluster/local.sh start [NUM_CPUS] | stop" >&2
    exit 2
    ;;
esac
