#!/usr/bin/env python3
"""Live heap per bound idle connection by allocation site, from heaptrack folded stacks
(heaptrack_print -F stacks.txt --flamegraph-cost-type leaked; the server exited with
everything allocated). Usage: sites.py stacks.txt connections"""
import sys, collections
path, n = sys.argv[1], int(sys.argv[2])
def site(frames):
    s = ';'.join(frames)
    if 'bind_new_task' in s: return 'tokio task cell (connection task future)'
    if 'registration_set.rs' in s: return 'tokio socket registration (ScheduledIo)'
    if '(local.rs)' in s and 'register' in s: return 'local router entry'
    if '(cache.rs)' in s:
        if 'reserve_rehash' in s or 'fallible_with_capacity' in s: return 'memory backend: hash tables (key map, zset indexes, route hashes)'
        if '(node.rs)' in s: return 'memory backend: zset order (B-tree nodes)'
        if 'BinaryHeap' in s or 'push<> (mod.rs)' in s: return 'memory backend: TTL deadline heap'
        return 'memory backend: keys, values, members, small vectors'
    if '(machine.rs)' in s:
        if 'push_back' in s: return 'session: action queue kept after handshake/bind'
        return 'session: identity strings (device, os, versions, user, tags)'
    if '(checks.rs)' in s: return 'check wheel (entries, their vectors)'
    if 'reserve_rehash' in s or 'fallible_with_capacity' in s: return 'server maps (connections by seq, local routes)'
    if '(sync.rs)' in s and 'task_tracker' in s: return 'Arc<Connection>'
    return 'other'
tot = collections.Counter()
for line in open(path):
    st, _, c = line.rstrip('\n').rpartition(' ')
    try: c = int(c)
    except ValueError: continue
    tot[site(st.split(';'))] += c
all_ = sum(tot.values())
for k, c in tot.most_common():
    print(f'| {k} | {c/n:,.0f} |')
print(f'| **total live heap** | **{all_/n:,.0f}** |')
