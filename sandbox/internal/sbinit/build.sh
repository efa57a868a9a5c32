#!/bin/sh
# Builds the sandbox init helper from csrc/sbinit.c; `go generate` runs it.
#
#   build.sh GOARCH [OUT]     OUT defaults to init_GOARCH.bin
#
# CC overrides the compiler; by default the GOARCH's cross gcc if installed,
# else gcc when that targets GOARCH. The output is reproducible: same gcc,
# same bytes (no build ID, no symbols, no paths).
set -eu
cd "$(dirname "$0")"
arch=${1:?usage: build.sh GOARCH [OUT]}
out=${2:-init_$arch.bin}

case $arch in
amd64) triple=x86_64-linux-gnu; archflags=-fcf-protection=none ;;
arm64) triple=aarch64-linux-gnu; archflags=-mbranch-protection=none ;;
*) echo "build.sh: no init helper for $arch" >&2; exit 1 ;;
esac
if [ -z "${CC:-}" ]; then
	if command -v "$triple-gcc" >/dev/null 2>&1; then CC=$triple-gcc; else CC=gcc; fi
fi
case $($CC -dumpmachine) in
"${triple%%-*}"-*) ;;
*) echo "build.sh: $CC does not target $arch; set CC to a $triple compiler" >&2; exit 1 ;;
esac

tmp=$out.tmp.$$
trap 'rm -f "$tmp"' EXIT
# Freestanding: no libc, no startup files, no stack protector (it needs
# libc's canary in TLS), no unwind tables, no PIE (nothing to relocate).
$CC -std=gnu11 -Os -Wall -Wextra -Werror \
	-ffreestanding -fno-stack-protector -fno-pie -fno-builtin \
	-fno-asynchronous-unwind-tables -fno-unwind-tables \
	-ffunction-sections -fdata-sections $archflags \
	-nostdlib -static -no-pie \
	-Wl,--gc-sections -Wl,--build-id=none -Wl,-z,norelro \
	-Wl,-z,noseparate-code -Wl,-z,noexecstack -s \
	-o "$tmp" csrc/sbinit.c
mv "$tmp" "$out"
trap - EXIT
