#!/usr/bin/env python3
"""Server CPU per request: backstop against bare-hyper baselines, in one run.

Default: backstop's /healthz against `backstop-floor` (a bare hyper server).
--proxy: backstop forwarding to a primary (a `backstop-floor`) against `backstop-floor` as a
plain reverse proxy to the same primary; only the proxy process's CPU is compared.

Starts the servers (release builds), drives each with wrk
(HTTP/1.1 keep-alive) for the same duration and connection count, and reads each server's
CPU time (utime + stime from /proc/PID/stat) before and after. Client and servers share the
machine's cores, so CPU per request is the headline figure, not requests per second.

Usage: tools/measure-http.py [--proxy] [--seconds 10] [--connections 64] [--workers 1] [--rounds 3]
Needs: wrk (Debian package `wrk`), `cargo build --release --workspace` done first.
"""
import argparse, json, os, re, subprocess, sys, tempfile, time

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
TICK = os.sysconf("SC_CLK_TCK")


def cpu_seconds(pid):
    with open(f"/proc/{pid}/stat") as f:
        fields = f.read().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / TICK  # utime, stime


def start(cmd, env=None):
    p = subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=subprocess.DEVNULL, text=True, env=env)
    line = p.stdout.readline()
    m = re.search(r"http://(\S+)", line)
    if not m:
        p.kill()
        sys.exit(f"could not start {cmd}: {line!r}")
    return p, m.group(1)


def drive(pid, url, seconds, connections):
    before = cpu_seconds(pid)
    out = subprocess.run(
        ["wrk", "-t", "1", "-c", str(connections), "-d", f"{seconds}s", "--latency", url],
        capture_output=True, text=True, check=True).stdout
    after = cpu_seconds(pid)
    requests = int(re.search(r"(\d+) requests in", out).group(1))
    errors = re.search(r"Non-2xx or 3xx responses: (\d+)", out)
    if errors:
        sys.exit(f"{url}: {errors.group(1)} error responses")
    p99 = re.search(r"99%\s+(\S+)", out).group(1)
    return {"requests": requests, "rps": requests / seconds, "cpu_s": after - before,
            "cpu_us_per_req": (after - before) * 1e6 / requests, "p99": p99}


def main():
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--seconds", type=int, default=10)
    ap.add_argument("--connections", type=int, default=64)
    ap.add_argument("--workers", type=int, default=1)
    ap.add_argument("--rounds", type=int, default=3)
    ap.add_argument("--proxy", action="store_true", help="compare normal-mode forwarding with a plain proxy")
    args = ap.parse_args()

    floor_bin = f"{ROOT}/target/release/backstop-floor"
    procs = []
    floor, floor_addr = start([floor_bin, "127.0.0.1:0", str(args.workers)])
    procs.append(floor)
    tmp = tempfile.mkdtemp()
    conf = os.path.join(tmp, "b.toml")
    with open(conf, "w") as f:
        f.write(f'listen = "127.0.0.1:0"\nworkers = {args.workers}\ndata_dir = "{tmp}/data"\n'
                f'[primary]\norigin = "http://{floor_addr}"\n[log]\nlevel = "warn"\n')
    env = {k: v for k, v in os.environ.items() if k != "BACKSTOP_ADMIN_TOKEN"}
    backstop, backstop_addr = start([f"{ROOT}/target/release/backstop", "serve", "--config", conf], env)
    procs.append(backstop)
    if args.proxy:
        base, base_addr = start([floor_bin, "127.0.0.1:0", str(args.workers), f"http://{floor_addr}"])
        procs.append(base)
        base_name, base_url = "plain proxy", f"http://{base_addr}/token"
        ours_name, ours_url = "backstop proxy", f"http://{backstop_addr}/token"
    else:
        base, base_name, base_url = floor, "floor", f"http://{floor_addr}/"
        ours_name, ours_url = "backstop /healthz", f"http://{backstop_addr}/healthz"
    try:
        results = []
        # Alternate the two servers so machine noise hits both alike.
        for _ in range(args.rounds):
            f = drive(base.pid, base_url, args.seconds, args.connections)
            b = drive(backstop.pid, ours_url, args.seconds, args.connections)
            results.append({"baseline": f, "backstop": b, "ratio": b["cpu_us_per_req"] / f["cpu_us_per_req"]})
        for r in results:
            print(f"{base_name} {r['baseline']['cpu_us_per_req']:.2f} us/req ({r['baseline']['rps']:.0f} req/s, p99 {r['baseline']['p99']})"
                  f" | {ours_name} {r['backstop']['cpu_us_per_req']:.2f} us/req ({r['backstop']['rps']:.0f} req/s,"
                  f" p99 {r['backstop']['p99']}) | ratio {r['ratio']:.3f}")
        ratios = sorted(r["ratio"] for r in results)
        print(json.dumps({"mode": "proxy" if args.proxy else "healthz", "workers": args.workers,
                          "connections": args.connections, "seconds": args.seconds,
                          "median_ratio": ratios[len(ratios) // 2], "rounds": results}))
    finally:
        for p in procs:
            p.kill()


if __name__ == "__main__":
    main()
