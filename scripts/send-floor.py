#!/usr/bin/env python3
"""The kernel's floor for one device write: system CPU per small TCP send on loopback.

One process writes FRAME-byte frames round-robin to N loopback TCP connections (TCP_NODELAY,
as the server's), another drains them with epoll, as the bench's client processes do. The
writer's *system* time per send is what one push's write to its device costs in the kernel
before the server does anything else; on loopback it includes the receiver's TCP input and
wakeup, which run in the writer's syscall. User time is Python's and is not the point.

    python3 scripts/send-floor.py N SENDS [FRAME]
    python3 scripts/send-floor.py 5000 200000       # the bench's 5,000 connections

See docs/PERFORMANCE.md, "The floor of one device write".
"""
import os
import resource
import select
import socket
import sys
import time


def main():
    n = int(sys.argv[1])
    sends = int(sys.argv[2])
    frame = int(sys.argv[3]) if len(sys.argv) > 3 else 150
    resource.setrlimit(resource.RLIMIT_NOFILE, (20000, 20000))
    if n > 19000:
        sys.exit("at most 19,000 connections: the receiver holds one file per connection")
    listener = socket.socket()
    listener.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    listener.bind(("127.0.0.1", 0))
    listener.listen(4096)
    port = listener.getsockname()[1]
    ready_r, ready_w = os.pipe()
    pid = os.fork()
    if pid == 0:
        receive(listener, port, n, sends * frame, ready_w)
    conns = [listener.accept()[0] for _ in range(n)]
    for c in conns:
        c.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
    os.read(ready_r, 1)
    msg = b"x" * frame
    t0, w0 = os.times(), time.monotonic()
    for i in range(sends):
        conns[i % n].send(msg)
    t1, w1 = os.times(), time.monotonic()
    _, status = os.waitpid(pid, 0)
    if status != 0:
        sys.exit("the receiver failed")
    us = 1e6 / sends
    print(
        f"N={n} sends={sends} frame={frame} B: writer system {us * (t1.system - t0.system):.2f} µs/send, "
        f"user {us * (t1.user - t0.user):.2f} µs/send, wall {us * (w1 - w0):.2f} µs/send"
    )


def receive(listener, port, n, total, ready_w):
    """The receiving side (a child process): connects, then drains until `total` bytes came."""
    listener.close()
    conns = {}
    for i in range(n):
        c = socket.socket()
        c.connect(("127.0.0.1", port))
        c.setblocking(False)
        conns[c.fileno()] = c
    ep = select.epoll()
    for fd in conns:
        ep.register(fd, select.EPOLLIN)
    os.write(ready_w, b"r")
    got, deadline = 0, time.monotonic() + 300
    while got < total:
        if time.monotonic() > deadline:
            os._exit(1)
        for fd, _ in ep.poll(1):
            try:
                got += len(conns[fd].recv(65536))
            except BlockingIOError:
                pass
    os._exit(0)


if __name__ == "__main__":
    main()
