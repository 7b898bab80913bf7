#!/bin/sh
# Runs a command under heaptrack for `bench --server-wrapper` (docs/PERFORMANCE.md, "Memory
# per bound idle connection"): heaptrack prints its own lines on stdout, which the bench reads
# as the server's protocol, so they are filtered out here.
# Usage: scripts/heaptrack-server.sh OUTPUT-FILE COMMAND [ARGS...]
out=$1; shift
heaptrack -o "$out" "$@" | grep --line-buffered -v '^/usr/lib/heaptrack\|^starting application\|^heaptrack\|^Heaptrack\|^	\|^$'
