#!/usr/bin/env python3
"""RSS of a `teamtalk msfs` process before, during and after a burst of held-open uploads.

Starts `teamtalk msfs` on a free port with a fresh BaseDir, reads VmRSS from
/proc/<pid>/status while idle, then opens N connections at once, each sending one upload of
SIZE MiB as fast as msfs takes it (the connections are held open until msfs answers or closes
them), samples VmRSS every 20 ms until every upload is answered, and reads it again 2 s and
--settle-secs after the connections are closed. Prints one line per phase.

    python3 teamtalk-bench/scripts/msfs_burst_rss.py target/release/teamtalk \
        --uploads 50 --size-mib 9.5
"""

import argparse
import os
import re
import socket
import subprocess
import sys
import tempfile
import threading
import time


def rss_kib(pid):
    with open(f"/proc/{pid}/status") as status:
        for line in status:
            if line.startswith("VmRSS:"):
                return int(line.split()[1])
    return 0


def free_port():
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def upload(port, size, results, index):
    boundary = "BURST"
    head = (
        f"--{boundary}\r\nContent-Disposition: form-data; name=\"file\"; "
        f"filename=\"burst_{index}.jpg\"\r\nContent-Type: image/jpeg\r\n\r\n"
    ).encode()
    tail = f"\r\n--{boundary}--\r\n".encode()
    length = len(head) + size + len(tail)
    request = (
        f"POST / HTTP/1.1\r\nHost: 127.0.0.1:{port}\r\nConnection: close\r\n"
        f"Content-Type: multipart/form-data; boundary={boundary}\r\n"
        f"Content-Length: {length}\r\n\r\n"
    ).encode()
    piece = bytes(range(256)) * 1024  # 256 KiB
    try:
        with socket.create_connection(("127.0.0.1", port)) as s:
            s.sendall(request + head)
            sent = 0
            while sent < size:
                n = min(len(piece), size - sent)
                s.sendall(piece[:n])
                sent += n
            s.sendall(tail)
            answer = b""
            while True:
                more = s.recv(4096)
                if not more:
                    break
                answer += more
            status = answer.split(b"\r\n", 1)[0].decode(errors="replace")
            code = re.search(rb'"error_code":(\d+)', answer)
            results[index] = status + (f" error_code {code.group(1).decode()}" if code else "")
    except OSError as error:
        results[index] = f"closed by msfs ({error.__class__.__name__})"


def run_burst(args, port, pid, idle, burst_no):
    size = int(args.size_mib * 1024 * 1024)
    results = [None] * args.uploads
    threads = [
        threading.Thread(target=upload, args=(port, size, results, i))
        for i in range(args.uploads)
    ]
    started = time.monotonic()
    for t in threads:
        t.start()
    peak = idle
    while any(t.is_alive() for t in threads):
        peak = max(peak, rss_kib(pid))
        time.sleep(0.02)
    burst = time.monotonic() - started
    time.sleep(2)
    soon = rss_kib(pid)
    time.sleep(max(0.0, args.settle_secs - 2))
    after = rss_kib(pid)

    answers = {}
    for r in results:
        answers[r] = answers.get(r, 0) + 1
    print(f"burst {burst_no}: uploads: {args.uploads} x {args.size_mib} MiB, burst took {burst:.1f} s")
    print(f"answers: {answers}")
    print(f"VmRSS peak:   {peak / 1024:.1f} MiB (during the burst)")
    print(f"VmRSS after:  {soon / 1024:.1f} MiB (2 s after the last answer)")
    print(f"VmRSS settled: {after / 1024:.1f} MiB ({args.settle_secs:g} s after the last answer)")


def main():
    parser = argparse.ArgumentParser()
    parser.add_argument("teamtalk")
    parser.add_argument("--uploads", type=int, default=50)
    parser.add_argument("--size-mib", type=float, default=9.5)
    parser.add_argument("--bursts", type=int, default=1, help="bursts one after the other")
    parser.add_argument("--settle-secs", type=float, default=15.0,
                        help="how long after the burst the last reading is taken")
    parser.add_argument("--conf", action="append", default=[], help="extra KEY=VALUE for msfs.conf")
    args = parser.parse_args()

    base = tempfile.mkdtemp(prefix="msfs-burst-")
    port = free_port()
    conf = os.path.join(base, "msfs.conf")
    with open(conf, "w") as f:
        f.write(f"ListenIP=127.0.0.1\nListenPort={port}\nBaseDir={base}/files\n")
        for extra in args.conf:
            f.write(extra + "\n")
    env = dict(os.environ, TEAMTALK_LOG="warn")
    server = subprocess.Popen([args.teamtalk, "msfs", "--config", conf], env=env)
    try:
        for _ in range(200):
            try:
                socket.create_connection(("127.0.0.1", port)).close()
                break
            except OSError:
                time.sleep(0.05)
        time.sleep(0.5)
        idle = rss_kib(server.pid)

        print(f"VmRSS idle:   {idle / 1024:.1f} MiB")
        for burst_no in range(1, args.bursts + 1):
            run_burst(args, port, server.pid, idle, burst_no)
    finally:
        server.terminate()
        server.wait()
        subprocess.run(["rm", "-rf", base])


if __name__ == "__main__":
    sys.exit(main())
