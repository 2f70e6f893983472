#!/usr/bin/env bash
# The test suite's system tools, from Debian's archive: Prometheus (the dashboard's queries run
# against a real one), docker-compose 1.29 (validates compose.yaml; no engine needed) and a C++
# compiler (KC_TORCH_COMPILE's test compiles the decode step with inductor, which builds C++).
# Idempotent: each package is skipped when its command is already on PATH. Needs root (CI and
# the development machines are root) or passwordless sudo.
set -euo pipefail

want=()
command -v prometheus >/dev/null 2>&1 || want+=(prometheus)
command -v docker-compose >/dev/null 2>&1 || want+=(docker-compose)
command -v g++ >/dev/null 2>&1 || want+=(g++)
[ ${#want[@]} -eq 0 ] && exit 0

sudo=""
[ "$(id -u)" -eq 0 ] || sudo="sudo -n"

# Debian's postinst would start a system Prometheus on port 9090; the tests run their own
# binary on a free port, so forbid service starts for the length of this install.
policy=/usr/sbin/policy-rc.d
made_policy=""
if [ ! -e "$policy" ]; then
    printf '#!/bin/sh\nexit 101\n' | $sudo tee "$policy" >/dev/null
    $sudo chmod +x "$policy"
    made_policy=1
fi
trap '[ -n "$made_policy" ] && $sudo rm -f "$policy"' EXIT

export DEBIAN_FRONTEND=noninteractive
$sudo apt-get update -qq
$sudo apt-get install -y -qq --no-install-recommends "${want[@]}" >/dev/null
echo "installed ${want[*]}"
