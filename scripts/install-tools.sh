#!/usr/bin/env bash
# The test suite's system tools: from Debian's archive Prometheus (the dashboard's queries run
# against a real one), docker-compose 1.29 (validates compose.yaml; no engine needed), a C++
# compiler (KC_TORCH_COMPILE's test compiles the decode step with inductor, which builds C++)
# and kcat (librdkafka: the producer that is not ours, publishing tasks from docs/wire/ and a
# task that continues its own trace); from the Go module proxy Helm (lints and renders the
# chart; Debian packages none), built with the Go toolchain into /usr/local/bin (about 6
# minutes on 2 cores with empty caches).
# Idempotent: each tool is skipped when its command is already on PATH. Needs root (CI and
# the development machines are root) or passwordless sudo.
set -euo pipefail

HELM_VERSION=v3.21.4

sudo=""
[ "$(id -u)" -eq 0 ] || sudo="sudo -n"

install_helm() {
    command -v go >/dev/null 2>&1 || { echo "install-tools: Helm is built with Go: put go on PATH" >&2; exit 1; }
    # Its own GOPATH and cache: CI's HOME is empty, and nothing of the build stays behind.
    local work
    work=$(mktemp -d)
    GOPATH="$work/gopath" GOCACHE="$work/cache" GOBIN="$work/bin" GOFLAGS="-modcacherw -buildvcs=false" \
        go install "helm.sh/helm/v3/cmd/helm@$HELM_VERSION"
    $sudo install -m 0755 "$work/bin/helm" /usr/local/bin/helm
    rm -rf "$work"
    echo "installed helm $HELM_VERSION"
}
command -v helm >/dev/null 2>&1 || install_helm

want=()
command -v prometheus >/dev/null 2>&1 || want+=(prometheus)
command -v docker-compose >/dev/null 2>&1 || want+=(docker-compose)
command -v g++ >/dev/null 2>&1 || want+=(g++)
command -v kcat >/dev/null 2>&1 || want+=(kcat)
[ ${#want[@]} -eq 0 ] && exit 0

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
