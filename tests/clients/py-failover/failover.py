"""redis-py's Sentinel support driven by the e2e discovery tests.

Finds the master (or a replica) only through the Sentinel endpoint given, and prints one line
per operation: "ok <i> <server addr>" / "err <i> <error>" for writes, "read <server addr> <role>"
for reads.
"""

import argparse
import sys
import time

from redis.sentinel import Sentinel


def main():
    p = argparse.ArgumentParser()
    p.add_argument("--sentinel", default="127.0.0.1:26379", help="Sentinel endpoint host:port")
    p.add_argument("--master", required=True, help="Sentinel master name")
    p.add_argument("--password", default=None, help="password of the Redis instances")
    p.add_argument("--sentinel-password", default=None, help="password of the Sentinel endpoint")
    p.add_argument("--mode", choices=["write", "read"], default="write")
    p.add_argument("--duration", type=float, default=120, help="seconds to keep writing")
    p.add_argument("--interval", type=float, default=0.05, help="pause between writes")
    p.add_argument("--reads", type=int, default=5, help="reads to make from a replica")
    args = p.parse_args()

    host, port = args.sentinel.rsplit(":", 1)
    timeouts = {"socket_timeout": 0.5, "socket_connect_timeout": 0.5}
    sentinel_kwargs = dict(timeouts)
    if args.sentinel_password:
        sentinel_kwargs["password"] = args.sentinel_password
    sentinel = Sentinel([(host, int(port))], sentinel_kwargs=sentinel_kwargs, **timeouts)
    client_kwargs = dict(password=args.password, decode_responses=True, **timeouts)

    if args.mode == "read":
        sys.exit(read(sentinel.slave_for(args.master, **client_kwargs), args.reads))
    write(sentinel.master_for(args.master, **client_kwargs), args.duration, args.interval)


def write(master, duration, interval):
    """Sets vigil:py:<i> = i, with CLIENT INFO on the same connection to tell which server took
    it, until the duration is over; errors are printed and retried."""
    deadline = time.monotonic() + duration
    i = 0
    while time.monotonic() < deadline:
        try:
            pipe = master.pipeline(transaction=False)
            pipe.set(f"vigil:py:{i}", i)
            pipe.client_info()
            _, info = pipe.execute()
            print(f"ok {i} {info['laddr']}", flush=True)
            time.sleep(interval)
        except Exception as e:  # every failure is reported, then retried
            print(f"err {i} {type(e).__name__}: {e}".replace("\n", " "), flush=True)
            time.sleep(0.1)
        i += 1


def read(replica, n):
    """Reads from a replica n times; prints the server's address and role each time."""
    for _ in range(n):
        info = replica.client_info()
        role = replica.execute_command("ROLE")
        print(f"read {info['laddr']} {role[0]}", flush=True)
    return 0


if __name__ == "__main__":
    main()
