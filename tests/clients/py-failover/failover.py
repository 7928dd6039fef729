"""redis-py's Sentinel support driven by the e2e discovery tests.

Finds the master (or a replica) only through the Sentinel endpoint given, and prints one line
per operation: "ok <i> <server addr>" / "err <i> <error>" for writes, "read <server addr> <role>"
for reads. With --wait N a write counts as "ok" only once `WAIT N` says N replicas have it;
otherwise it prints "unacked <i> <server addr>".

Options for the benchmarks (tests/bench), which leave the output above unchanged when absent:
--sentinel takes several comma-separated endpoints (real Sentinels come in threes);
--timestamps prefixes every write line with `time.monotonic()` (CLOCK_MONOTONIC, seconds) taken
when the reply (or error) arrived; --key-prefix renames the keys; --retry-interval sets the pause
after a failed write.
"""

import argparse
import sys
import time

from redis.sentinel import Sentinel


def main():
    p = argparse.ArgumentParser()
    p.add_argument("--sentinel", default="127.0.0.1:26379",
                   help="Sentinel endpoint host:port, or several separated by commas")
    p.add_argument("--master", required=True, help="Sentinel master name")
    p.add_argument("--password", default=None, help="password of the Redis instances")
    p.add_argument("--sentinel-password", default=None, help="password of the Sentinel endpoint")
    p.add_argument("--sentinel-ca", default=None,
                   help="CA file: reach the Sentinel endpoint over TLS, verifying it with this CA")
    p.add_argument("--mode", choices=["write", "read"], default="write")
    p.add_argument("--duration", type=float, default=120, help="seconds to keep writing")
    p.add_argument("--interval", type=float, default=0.05, help="pause between writes")
    p.add_argument("--reads", type=int, default=5, help="reads to make from a replica")
    p.add_argument("--wait", type=int, default=0, help="replicas that must acknowledge a write")
    p.add_argument("--timestamps", action="store_true",
                   help="prefix each write line with the monotonic time of the reply")
    p.add_argument("--key-prefix", default="vigil:py", help="keys written are <prefix>:<i>")
    p.add_argument("--retry-interval", type=float, default=0.1, help="pause after a failed write")
    args = p.parse_args()

    endpoints = []
    for endpoint in args.sentinel.split(","):
        host, port = endpoint.strip().rsplit(":", 1)
        endpoints.append((host, int(port)))
    timeouts = {"socket_timeout": 0.5, "socket_connect_timeout": 0.5}
    sentinel_kwargs = dict(timeouts)
    if args.sentinel_password:
        sentinel_kwargs["password"] = args.sentinel_password
    if args.sentinel_ca:
        # The endpoint is dialled by IP, which its certificate need not name (as redis-cli).
        sentinel_kwargs.update(ssl=True, ssl_ca_certs=args.sentinel_ca, ssl_check_hostname=False)
    sentinel = Sentinel(endpoints, sentinel_kwargs=sentinel_kwargs, **timeouts)
    client_kwargs = dict(password=args.password, decode_responses=True, **timeouts)

    if args.mode == "read":
        sys.exit(read(sentinel.slave_for(args.master, **client_kwargs), args.reads))
    master = sentinel.master_for(args.master, **client_kwargs)
    write(master, args)


def write(master, args):
    """Sets <key prefix>:<i> = i, with CLIENT INFO on the same connection to tell which server
    took it (and WAIT, when asked), until the duration is over; errors are printed and retried."""
    deadline = time.monotonic() + args.duration
    wait = args.wait

    def stamp():
        return f"{time.monotonic():.6f} " if args.timestamps else ""

    i = 0
    while time.monotonic() < deadline:
        try:
            pipe = master.pipeline(transaction=False)
            pipe.set(f"{args.key_prefix}:{i}", i)
            pipe.client_info()
            if wait:
                pipe.execute_command("WAIT", wait, 1000)
            replies = pipe.execute()
            acked = not wait or replies[2] >= wait
            print(f"{stamp()}{'ok' if acked else 'unacked'} {i} {replies[1]['laddr']}", flush=True)
            time.sleep(args.interval)
        except Exception as e:  # every failure is reported, then retried
            print(f"{stamp()}err {i} {type(e).__name__}: {e}".replace("\n", " "), flush=True)
            time.sleep(args.retry_interval)
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
