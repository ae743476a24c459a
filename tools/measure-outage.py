#!/usr/bin/env python3
"""Outage-mode server CPU per minted token, as a ratio to the floor, in one run.

The floor (issue 5): server CPU per request of a bare hyper server answering a fixed body
(`backstop-floor`, driven with the same refresh-grant requests, answering a body as long as
backstop's token response) plus one bare signature of the same algorithm per token the response
carries (`backstop bench-sign`, backstop's own signer; two with an ID token, one with
--without-id-token), all measured in the same run as backstop.

Seeds a data directory with N sessions (`backstop seed`), starts the mock primary and backstop
(one worker) on it, forces outage mode through the admin API, then drives refresh grants for
the seeded sessions with backstop-loadgen (closed loop, HTTP/1.1 keep-alive; each request a
different session, round robin over --tokens of them; `--driver wrk` for wrk as before) and
reads backstop's CPU time from /proc/PID/stat before and after. Every response must be a 200
with a token, else the run fails.

Usage: tools/measure-outage.py [--alg EdDSA] [--sessions 100000] [--seconds 5] [--rounds 3]
Needs: `cargo build --release --workspace` done first (with `--driver wrk`: the Debian package
`wrk`).
"""
import argparse, json, os, re, shutil, socket, subprocess, sys, tempfile, time, urllib.request

from benchlib import (BIN, PIN, ROOT, admin, bench_sign, context_switches, cpu_seconds,
                      free_port, start, start_backstop)

LUA = r"""
local bodies = {}
for line in io.lines(os.getenv("BACKSTOP_TOKENS")) do
  local c, t = line:match("(%S+) (%S+)")
  bodies[#bodies + 1] = "grant_type=refresh_token&client_id=" .. c .. "&refresh_token=" .. t
end
local headers = {["Content-Type"] = "application/x-www-form-urlencoded"}
local i = 0
request = function()
  i = i + 1
  return wrk.format("POST", "/token", headers, bodies[(i % #bodies) + 1])
end
"""


# How the load generator is started: under SCHED_BATCH unless --client-preempts (main()).
CLIENT = []


def drive_loadgen(pid, url, seconds, connections, tokens):
    """The same measurement with backstop-loadgen: closed loop, one client thread."""
    cmd = CLIENT + [f"{BIN}/backstop-loadgen", "--url", url, "--population", tokens, "--seconds",
           str(seconds), "--connections", str(connections), "--server-pid", str(pid),
           "--format", "json"]
    if PIN:
        cmd += ["--pin", "0"]
    switches0 = context_switches(pid)
    r = json.loads(subprocess.run(cmd, capture_output=True, text=True, check=True).stdout)
    switches1 = context_switches(pid)
    if r["ok"] != r["requests"]:
        sys.exit(f"{url}: {r['requests'] - r['ok']} error responses: {r['outcomes']}")
    c = r["server_cpu"]
    return {"requests": r["requests"], "rps": r["throughput_per_sec"],
            "cpu_s": c["seconds"], "cpu_us_per_req": c["us_per_request"],
            "user_us_per_req": c["user_seconds"] * 1e6 / max(1, r["requests"]),
            "system_us_per_req": c["system_seconds"] * 1e6 / max(1, r["requests"]),
            "voluntary_switches_per_req": (switches1[0] - switches0[0]) / max(1, r["requests"]),
            "involuntary_switches_per_req": (switches1[1] - switches0[1]) / max(1, r["requests"]),
            "p99": f"{r['service_us']['p99']:.0f}us"}


def drive(pid, url, seconds, connections, script=None, env=None):
    cmd = PIN + ["wrk", "-t", "1", "-c", str(connections), "-d", f"{seconds}s", "--latency"]
    if script:
        cmd += ["-s", script]
    before = cpu_seconds(pid)
    out = subprocess.run(cmd + [url], capture_output=True, text=True, check=True, env=env).stdout
    after = cpu_seconds(pid)
    requests = int(re.search(r"(\d+) requests in", out).group(1))
    errors = re.search(r"Non-2xx or 3xx responses: (\d+)", out)
    if errors:
        sys.exit(f"{url}: {errors.group(1)} error responses\n{out}")
    p99 = re.search(r"Latency Distribution[\s\S]*?99%\s+(\S+)", out).group(1)
    return {"requests": requests, "rps": requests / seconds, "cpu_s": after - before,
            "cpu_us_per_req": (after - before) * 1e6 / requests, "p99": p99}


def main():
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--alg", default="EdDSA", choices=["EdDSA", "ES256", "RS256"])
    ap.add_argument("--sessions", type=int, default=100_000)
    ap.add_argument("--tokens", type=int, default=20_000, help="sessions the load cycles over")
    ap.add_argument("--seconds", type=int, default=5)
    ap.add_argument("--connections", type=int, default=32)
    ap.add_argument("--rounds", type=int, default=3)
    ap.add_argument("--client-preempts", action="store_true",
                    help="run the load generator as a normal task, not SCHED_BATCH: on a shared vCPU "
                         "each response it is woken by then preempts the server, charging the server "
                         "a context switch per response (the slower server more often than the floor)")
    ap.add_argument("--warmup", type=int, default=2,
                    help="seconds of load on each server before the rounds, not measured: the first "
                         "touch of every cycled session's records (page faults on the mapping) and "
                         "cold caches are start-up, not the per-token cost")
    ap.add_argument("--spread", action="store_true",
                    help="let client and servers use any vCPU (default: all on vCPU 0)")
    ap.add_argument("--without-id-token", action="store_true",
                    help="grants without openid: one token (one signature) per refresh")
    ap.add_argument("--driver", default="loadgen", choices=["loadgen", "wrk"],
                    help="load tool (loadgen also sends each session's `resource`)")
    args = ap.parse_args()
    # A client on the server's vCPU that wakes on each response preempts the server at once
    # (measured: backstop 0.78 involuntary switches per request, the floor none, since the
    # floor's short bursts stay within its slice). A remote client never does that; under
    # SCHED_BATCH a woken client waits for the tick instead, for the floor and backstop alike.
    CLIENT[:] = [] if args.client_preempts or args.driver == "wrk" else ["chrt", "--batch", "0"]
    signatures = 1 if args.without_id_token else 2
    # On this 2-vCPU VM a wake-up across vCPUs costs tens of microseconds, charged to the
    # server's system time, and a slower server pays it on more requests (its client sleeps
    # more often). Pinning client and server to one vCPU removes that artifact from both sides
    # of the ratio; --spread shows it.
    PIN[:] = [] if args.spread else ["taskset", "-c", "0"]

    tmp = tempfile.mkdtemp(prefix="backstop-outage-")
    port = free_port()
    issuer = f"http://127.0.0.1:{port}"
    tokens = os.path.join(tmp, "tokens.txt")
    print(f"seeding {args.sessions} {args.alg} sessions in {tmp} ...", file=sys.stderr)
    subprocess.run([f"{BIN}/backstop", "seed", "--data-dir", f"{tmp}/data", "--sessions",
                    str(args.sessions), "--issuer", issuer, "--alg", args.alg,
                    "--tokens-out", tokens, "--tokens-max", str(args.tokens)]
                   + (["--without-id-token"] if args.without_id_token else []),
                   check=True, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)

    procs = []
    try:
        mock, mock_addr = start([f"{BIN}/backstop-mock-primary"])
        procs.append(mock)
        # A token-sized floor response: measured below from one backup answer.
        floor = None
        backstop, admin_addr, _ = start_backstop(os.path.join(tmp, "b.toml"), port, issuer,
                                                 f"{tmp}/data", mock_addr)
        procs.append(backstop)
        deadline = time.time() + 20
        while admin(admin_addr, "GET", "/admin/status")["primary_metadata"]["token_path"] is None:
            if time.time() > deadline:
                sys.exit("backstop never learned the token endpoint")
            time.sleep(0.1)
        admin(admin_addr, "POST", "/admin/mode", '{"mode":"outage"}')
        with open(tokens) as f:
            client_id, token = f.readline().split()[:2]
        req = urllib.request.Request(f"{issuer}/token", method="POST", data=(
            f"grant_type=refresh_token&client_id={client_id}&refresh_token={token}").encode(),
            headers={"Content-Type": "application/x-www-form-urlencoded"})
        with urllib.request.urlopen(req, timeout=5) as r:
            raw = r.read()
            response_bytes = len(raw)
        # The bare signature signs as much as a minted token does (its header.payload).
        signing_input_bytes = len(json.loads(raw)["access_token"].rsplit(".", 1)[0])
        floor, floor_addr = start([f"{BIN}/backstop-floor", "127.0.0.1:0", "1"],
                                  env=dict(os.environ, BACKSTOP_FLOOR_BODY_BYTES=str(response_bytes)))
        procs.append(floor)

        wrk_env = dict(os.environ, BACKSTOP_TOKENS=tokens)
        script = os.path.join(tmp, "refresh.lua")
        with open(script, "w") as f:
            f.write(LUA)
        results = []
        if args.warmup > 0:
            for pid, url in ((floor.pid, f"http://{floor_addr}/token"), (backstop.pid, f"{issuer}/token")):
                if args.driver == "wrk":
                    drive(pid, url, args.warmup, args.connections, script, wrk_env)
                else:
                    drive_loadgen(pid, url, args.warmup, args.connections, tokens)
        for _ in range(args.rounds):
            sign = bench_sign(args.alg, signing_input_bytes, 1)
            if args.driver == "wrk":
                fl = drive(floor.pid, f"http://{floor_addr}/token", args.seconds, args.connections,
                           script, wrk_env)
                ours = drive(backstop.pid, f"{issuer}/token", args.seconds, args.connections,
                             script, wrk_env)
            else:
                fl = drive_loadgen(floor.pid, f"http://{floor_addr}/token", args.seconds,
                                   args.connections, tokens)
                ours = drive_loadgen(backstop.pid, f"{issuer}/token", args.seconds,
                                     args.connections, tokens)
            floor_us = fl["cpu_us_per_req"] + signatures * sign["us_per_signature"]
            results.append({"floor_http": fl, "sign_us": sign["us_per_signature"],
                            "backstop": ours, "floor_us": floor_us,
                            "ratio": ours["cpu_us_per_req"] / floor_us})
        for r in results:
            print(f"floor {r['floor_http']['cpu_us_per_req']:.2f} us/req + {signatures} x sign {r['sign_us']:.2f} us"
                  f" = {r['floor_us']:.2f} us | backstop outage {r['backstop']['cpu_us_per_req']:.2f} us/token"
                  f" ({r['backstop']['rps']:.0f} tokens/s, p99 {r['backstop']['p99']}) | ratio {r['ratio']:.3f}")
            if "user_us_per_req" in r["backstop"]:
                b, f = r["backstop"], r["floor_http"]
                print(f"    user / system us per request: backstop {b['user_us_per_req']:.2f} / {b['system_us_per_req']:.2f}, "
                      f"floor http {f['user_us_per_req']:.2f} / {f['system_us_per_req']:.2f}; context switches "
                      f"per request (voluntary / involuntary): backstop {b['voluntary_switches_per_req']:.3f} / "
                      f"{b['involuntary_switches_per_req']:.3f}, floor {f['voluntary_switches_per_req']:.3f} / "
                      f"{f['involuntary_switches_per_req']:.3f}")
        ratios = sorted(r["ratio"] for r in results)
        print(json.dumps({"alg": args.alg, "signatures_per_token_response": signatures,
                          "pinned_to_one_vcpu": not args.spread,
                          "response_bytes": response_bytes,
                          "signing_input_bytes": signing_input_bytes,
                          "sessions": args.sessions, "connections": args.connections,
                          "seconds": args.seconds, "warmup_secs": args.warmup, "client_sched_batch": bool(CLIENT), "driver": args.driver, "median_ratio": ratios[len(ratios) // 2],
                          "rounds": results}))
    finally:
        for p in procs:
            p.kill()
            p.wait()
        # The seeded data directory is large; nothing in it is needed after the run.
        shutil.rmtree(tmp, ignore_errors=True)


if __name__ == "__main__":
    main()
