#!/usr/bin/env bash
# The project's test command (README.md): installs the real programs the
# tests drive, then runs the whole suite. On a machine that already has
# them, `cargo test --workspace` alone does the same.
#
# What the tests need, and why:
#   curl, openssl        TLS tests talk to the gateway as independent clients
#   chromium             the console test renders the admin page headless
#   openssh-client/server  an ssh session through agent, gateway and control
#   iptables, iproute2   fault tests: packet loss inside network namespaces
#   redis-server, redis-tools  the clustered directory (load-balanced
#                        gateways), and redis-cli to read it back
set -euo pipefail
cd "$(dirname "$0")/.."

need=()
have() { command -v "$1" >/dev/null 2>&1; }
have curl || need+=(curl)
have openssl || need+=(openssl)
have chromium || need+=(chromium)
have ssh || need+=(openssh-client)
[ -x /usr/sbin/sshd ] || need+=(openssh-server)
have iptables || need+=(iptables)
have ip || need+=(iproute2)
have redis-server || need+=(redis-server)
have redis-cli || need+=(redis-tools)
if [ ${#need[@]} -gt 0 ]; then
  echo "== installing: ${need[*]}"
  if [ "$(id -u)" = 0 ]; then sudo=""; else sudo="sudo"; fi
  $sudo apt-get update -qq
  DEBIAN_FRONTEND=noninteractive $sudo apt-get install -y -qq --no-install-recommends "${need[@]}"
fi

echo "== cargo test --workspace"
cargo test --workspace "$@"
