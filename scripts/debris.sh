#!/usr/bin/env bash
# debris.sh: find (or remove, with --clean) system state that sockfaas tests
# and benchmarks leave behind: mounts, cgroups, state directories and the
# processes in those cgroups, all named sockfaas-test-* or sockfaas-bench-*.
# A live `sockfaas run` (named plain "sockfaas") is never touched. Exits 1 in
# check mode when anything is found, so a test run that leaks fails.
set -uo pipefail
clean=0
[[ "${1:-}" == "--clean" ]] && clean=1

found=0
report() { printf 'debris: %s\n' "$*"; found=1; }

# Mounts, deepest first so parents are detached last.
mapfile -t mounts < <(awk '{print $5}' /proc/self/mountinfo | grep -E '/sockfaas-(test|bench)-' | sort -r)
for m in "${mounts[@]}"; do
	report "mount $m"
	((clean)) && umount -l "$m" 2>/dev/null
done

# Processes: sandbox processes live in sockfaas cgroups; kill those cgroups'
# members, then remove the cgroups bottom-up.
mapfile -t cgs < <(find /sys/fs/cgroup -mindepth 1 -maxdepth 5 -type d -regextype egrep -regex '.*/sockfaas-(test|bench)-[^/]*' 2>/dev/null | sort -r)
for c in "${cgs[@]}"; do
	report "cgroup $c"
	if ((clean)); then
		# Frozen (paused) processes die only once thawed.
		find "$c" -name freezer.state -exec sh -c 'for f; do echo THAWED >"$f"; done' _ {} + 2>/dev/null
		find "$c" -name cgroup.freeze -exec sh -c 'for f; do echo 0 >"$f"; done' _ {} + 2>/dev/null
		find "$c" -name cgroup.procs -exec cat {} + 2>/dev/null | xargs -r kill -9 2>/dev/null
	fi
done
if ((clean)) && ((${#cgs[@]})); then
	sleep 0.2
	for c in "${cgs[@]}"; do
		find "$c" -depth -type d -exec rmdir {} + 2>/dev/null
	done
fi

for d in /run/sockfaas-test-* /run/sockfaas-bench-* /tmp/sockfaas-test-* /tmp/sockfaas-bench-* \
	/run/lock/sockfaas/cgroup%sockfaas-test-* /run/lock/sockfaas/cgroup%sockfaas-bench-*; do
	[[ -e "$d" ]] || continue
	report "directory $d"
	((clean)) && rm -rf --one-file-system "$d"
done

if ((clean)); then
	((found)) && echo "debris: removed what was listed" || echo "debris: nothing to remove"
	exit 0
fi
exit $found
