#!/usr/bin/env bash
# setup.sh: install what sockfaas, its tests and its benchmarks need on a
# Debian machine. Idempotent: installs only what is missing and says so.
#
#   scripts/setup.sh            runtime needs (python3 and its packages, iptables)
#   scripts/setup.sh --peers    also the peer runtimes the benchmarks compare
#                               against (runc, crun) and hyperfine
set -euo pipefail

say() { printf 'setup: %s\n' "$*"; }

want=(python3 python3-numpy python3-pandas python3-pil iptables iproute2 gcc)
if [[ "${1:-}" == "--peers" ]]; then
	want+=(runc crun hyperfine nats-server)
fi

missing=()
for p in "${want[@]}"; do
	if ! dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q 'install ok installed'; then
		missing+=("$p")
	fi
done

if ((${#missing[@]} == 0)); then
	say "all packages present: ${want[*]}"
else
	if [[ $(id -u) -ne 0 ]]; then
		say "missing packages: ${missing[*]}; run as root (or: sudo apt-get install ${missing[*]})" >&2
		exit 1
	fi
	say "installing: ${missing[*]}"
	export DEBIAN_FRONTEND=noninteractive
	apt-get update -qq
	apt-get install -y -qq --no-install-recommends "${missing[@]}" >/dev/null
	say "installed: ${missing[*]}"
fi

if ! command -v go >/dev/null 2>&1 && [[ -x /usr/local/go/bin/go ]]; then
	export PATH=$PATH:/usr/local/go/bin
fi
if ! command -v go >/dev/null 2>&1; then
	# Debian's Go is older than go.mod asks for; with GOTOOLCHAIN=auto (the
	# default) it fetches the right toolchain from the module proxy.
	say "installing: golang-go (it fetches the Go toolchain go.mod names on first use)"
	export DEBIAN_FRONTEND=noninteractive
	apt-get update -qq
	apt-get install -y -qq --no-install-recommends golang-go ca-certificates >/dev/null
fi
say "go: $(GOTOOLCHAIN=auto go version)"
