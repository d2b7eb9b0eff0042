#!/usr/bin/env python3
"""Step 6 of the system test: no datagram is lost while chatd restarts.

Sends `CHAT/1 <n> CONNECT` for n = 1..COUNT, each exactly once and never
retried, one every INTERVAL seconds, in turn from SOURCES sockets bound to
consecutive addresses from BIND (so that no address goes past chatd's
default per-address rate limit: 40 at once, 20 a second); when n reaches
RESTART_AT it starts COMMAND (e.g. `systemctl restart chatd`) without waiting
for it, and keeps sending. Then it receives until every id has its reply or
the deadline passes, and reports ids without a reply and ids with more than
one. Exit status 0 only if every id got exactly one reply and COMMAND
succeeded.

  sender.py --bind 127.0.0.3 --server 127.0.0.1 --port 7447 \
            --count 300 --interval 0.01 --restart-at 150 --deadline 10 -- systemctl restart chatd
"""
import argparse
import collections
import re
import socket
import subprocess
import sys
import time

REPLY = re.compile(rb"^CHAT/1 ([0-9]+) ")


def main():
    parser = argparse.ArgumentParser()
    parser.add_argument("--bind", default="127.0.0.3")
    parser.add_argument("--server", default="127.0.0.1")
    parser.add_argument("--port", type=int, default=7447)
    parser.add_argument("--count", type=int, default=300)
    parser.add_argument("--sources", type=int, default=10)
    parser.add_argument("--interval", type=float, default=0.01)
    parser.add_argument("--restart-at", type=int, default=150)
    parser.add_argument("--deadline", type=float, default=10.0,
                        help="seconds to wait for replies after the last datagram")
    parser.add_argument("command", nargs=argparse.REMAINDER)
    args = parser.parse_args()
    command = args.command[1:] if args.command[:1] == ["--"] else args.command

    first = int.from_bytes(socket.inet_aton(args.bind), "big")
    socks = []
    for i in range(args.sources):
        sock = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
        sock.bind((socket.inet_ntoa((first + i).to_bytes(4, "big")), 0))
        sock.setblocking(False)
        socks.append(sock)
    replies = collections.Counter()
    strays = 0

    def drain():
        nonlocal strays
        for sock in socks:
            while True:
                try:
                    data, source = sock.recvfrom(2048)
                except BlockingIOError:
                    break
                m = REPLY.match(data)
                if m and source[1] == args.port:
                    replies[int(m.group(1))] += 1
                else:
                    strays += 1

    restart = None
    restart_started = restart_ended = None
    restart_window = [None, None]  # the ids sent while COMMAND ran
    start = time.monotonic()
    for n in range(1, args.count + 1):
        # Fixed schedule (not sleep-after-send), so a slow send does not
        # stretch the run.
        delay = start + (n - 1) * args.interval - time.monotonic()
        if delay > 0:
            time.sleep(delay)
        if n == args.restart_at and command:
            restart_started = time.monotonic()
            restart = subprocess.Popen(command)
            restart_window[0] = n
        socks[(n - 1) % len(socks)].sendto(b"CHAT/1 %d CONNECT" % n, (args.server, args.port))
        if restart is not None and restart_ended is None and restart.poll() is not None:
            restart_ended = time.monotonic()
            restart_window[1] = n
        drain()

    deadline = time.monotonic() + args.deadline
    while time.monotonic() < deadline:
        if restart is not None and restart_ended is None and restart.poll() is not None:
            restart_ended = time.monotonic()
            restart_window[1] = args.count
        drain()
        if len(replies) == args.count and (restart is None or restart_ended is not None):
            break
        time.sleep(0.01)
    drain()

    rc = 0
    if restart is not None:
        if restart_ended is None:
            restart.kill()
            print(f"sender: `{' '.join(command)}` did not finish within the deadline")
            rc = 1
        else:
            print(f"sender: `{' '.join(command)}` exited {restart.returncode} after "
                  f"{restart_ended - restart_started:.2f}s; ids {restart_window[0]}..{restart_window[1]} "
                  f"were sent while it ran")
            if restart.returncode != 0:
                rc = 1
    missing = [n for n in range(1, args.count + 1) if replies[n] == 0]
    doubled = [n for n in range(1, args.count + 1) if replies[n] > 1]
    unknown = [n for n in replies if not 1 <= n <= args.count]
    print(f"sender: sent {args.count}, answered {args.count - len(missing)}, "
          f"missing {len(missing)}{' ' + str(missing[:20]) if missing else ''}, "
          f"answered more than once {len(doubled)}{' ' + str(doubled[:20]) if doubled else ''}, "
          f"unknown ids {len(unknown)}, stray datagrams {strays}")
    if missing or doubled or unknown:
        rc = 1
    return rc


if __name__ == "__main__":
    sys.exit(main())
