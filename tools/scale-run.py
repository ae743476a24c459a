#!/usr/bin/env python3
"""Scale run (issue 7): backstop in outage mode on a large seeded store, driven open loop by
backstop-loadgen with a mixed population, against the floor measured in the same run.

Steps: seed N sessions (`backstop seed`, timed); start the mock primary and backstop on that
data directory and measure time to ready (spawn -> listening line -> first successful
`/admin/status`); force outage mode (`POST /admin/mode`); revoke some seeded users
(`POST /admin/revocations`, event `account_disabled`) and load a Conditional Access policy that
blocks one seeded app (`PUT /admin/policies`); build a mixed population file (classes `hit`:
seeded sessions that must get 200; `unknown`: random refresh tokens, must get 503
`temporarily_unavailable`; `revoked`: sessions of revoked users, must be refused; `policy`:
sessions of the blocked app, must be refused with `access_denied`); drive the floor
(`backstop-floor` answering a body as long as a token response, with the same requests) and
then backstop with backstop-loadgen, open loop at --rate for --seconds; measure one bare
signature (`backstop bench-sign`). Records time to ready, RSS (VmHWM/VmRSS), throughput,
latency percentiles, outcomes per class (checked against the expected count of each class),
server CPU per 1 000 requests and per 1 000 tokens, and the ratio to the floor:

    ratio = backstop CPU / (floor CPU per request x requests + tokens minted x bare signature)

Writes a JSON result (--json) and prints a table. Exit status 1 if any class got an answer it
must not get.

Usage: tools/scale-run.py [--sessions 10000000] [--seconds 30] [--rate 10000]
Needs: `cargo build --release -p backstop -p backstop-floor -p backstop-mock-primary -p backstop-loadgen`.
Python 3 standard library only.
"""
import argparse, json, os, random, re, shutil, socket, subprocess, sys, tempfile, time
import urllib.parse, urllib.request

from benchlib import (BIN, PIN, admin, bench_sign, cpu_seconds, faults, free_port,
                      sched_delta, start, start_backstop, threads_sched)
# `backstop seed` names its apps `seed-app-{i % apps}` and users `user-{i // 2:010}` (src/seed.rs).
SEED_APPS = 4
BLOCKED_APP = "seed-app-3"

def rss_kib(pid):
    out = {}
    with open(f"/proc/{pid}/status") as f:
        for line in f:
            key, _, value = line.partition(":")
            if key in ("VmHWM", "VmRSS"):
                out[key] = int(value.split()[0])
    return out


def block_app_policy(app):
    """A Conditional Access document (Graph shape, see tests/ca_outage.rs) blocking one app."""
    return {
        "conditionalAccessPolicies": [{
            "id": "scale-run-block-app",
            "displayName": f"scale run: block {app}",
            "state": "enabled",
            "conditions": {
                "users": {"includeUsers": ["All"]},
                "applications": {"includeApplications": [app]},
                "clientAppTypes": ["all"],
            },
            "grantControls": {"operator": "OR", "builtInControls": ["block"]},
        }],
        "namedLocations": [],
    }


def revoked_users(token_lines, count):
    """Even user indices spread over the sessions written to the tokens file: user u owns
    sessions 2u and 2u+1, whose apps are seed-app-0 and seed-app-1 when u is even, so no
    revoked session is also one the policy blocks (each refused for one reason only)."""
    users_available = token_lines // 2
    if users_available < 2 or count <= 0:
        return []
    stride = max(2, (users_available // count) & ~1)
    return [u for u in range(0, users_available, stride)][:count]


def build_population(tokens_file, out_file, revoked, shares, rng):
    """Writes the mixed population; returns the class of each line, in order."""
    with open(tokens_file) as f:
        seeded = [line.split() for line in f if line.strip()]
    revoked_set = set(revoked)
    by_class = {"hit": [], "policy": [], "revoked": []}
    for i, fields in enumerate(seeded):
        if i // 2 in revoked_set:
            by_class["revoked"].append(fields)
        elif fields[0] == BLOCKED_APP:
            by_class["policy"].append(fields)
        else:
            by_class["hit"].append(fields)
    hits = by_class["hit"]
    if not hits:
        sys.exit("no hit sessions: seed more sessions")
    # Hits make up the rest of the mix; every seeded hit line appears once.
    total = int(len(hits) / max(1e-9, 1.0 - sum(shares.values())))
    lines = [(fields, "hit") for fields in hits]
    for cls in ("revoked", "policy"):
        pool = by_class[cls]
        n = int(total * shares[cls])
        if pool and n:
            lines += [(pool[k % len(pool)], cls) for k in range(n)]
    client, resource = hits[0][0], hits[0][2]
    for _ in range(int(total * shares["unknown"])):
        lines.append(([client, "%064x" % rng.getrandbits(256), resource], "unknown"))
    rng.shuffle(lines)
    with open(out_file, "w") as f:
        for fields, cls in lines:
            f.write(" ".join(fields) + f" class:{cls}\n")
    return [cls for _, cls in lines]


def loadgen(url, population, pid, args, out_json):
    cmd = [f"{BIN}/backstop-loadgen", "--url", url, "--population", population,
           "--rate", str(args.rate), "--seconds", str(args.seconds),
           "--connections", str(args.connections), "--server-pid", str(pid),
           "--json", out_json, "--format", "json"]
    if args.client_cpu is not None:
        cmd += ["--pin", str(args.client_cpu)]
    elif not args.spread:
        cmd += ["--pin", "0"]
    subprocess.run(cmd, check=True, stdout=subprocess.DEVNULL)
    with open(out_json) as f:
        return json.load(f)


def by_class(report):
    out = {}
    for o in report["outcomes"]:
        key = f"{o['status']} {o['error']}".strip()
        out.setdefault(o["class"], {})[key] = out.setdefault(o["class"], {}).get(key, 0) + o["count"]
    return out


def check(classes, report):
    """Compares outcomes per class with what each class must get; returns (expected, problems)."""
    population = len(classes)
    expected = {}
    # Slot k sends line k mod L, and slots are taken in order: the first `requests` were sent.
    full, part = divmod(report["requests"], population)
    for i, cls in enumerate(classes):
        expected[cls] = expected.get(cls, 0) + full + (1 if i < part else 0)
    got = by_class(report)
    problems = []
    for cls, n in expected.items():
        outcomes = got.get(cls, {})
        total = sum(outcomes.values())
        if total != n:
            problems.append(f"{cls}: {total} answers, expected {n}")
        for key, count in outcomes.items():
            status = int(key.split()[0])
            ok = {"hit": status == 200,
                  "unknown": key == "503 temporarily_unavailable",
                  "revoked": 400 <= status < 500,
                  "policy": key == "400 access_denied"}[cls]
            if not ok:
                problems.append(f"{cls}: {count} x {key}")
    return expected, problems


def main():
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--sessions", type=int, default=10_000_000)
    ap.add_argument("--hit-sessions", type=int, default=1_000_000,
                    help="seeded sessions written to the tokens file (the hit population is drawn from them)")
    ap.add_argument("--rate", type=int, default=10_000)
    ap.add_argument("--seconds", type=int, default=30)
    ap.add_argument("--connections", type=int, default=32)
    ap.add_argument("--alg", default="EdDSA", choices=["EdDSA", "ES256", "RS256"])
    ap.add_argument("--without-id-token", action="store_true",
                    help="grants without openid: one token (one signature) per refresh")
    ap.add_argument("--revoked-users", type=int, default=500)
    ap.add_argument("--share-unknown", type=float, default=0.05)
    ap.add_argument("--share-revoked", type=float, default=0.05)
    ap.add_argument("--share-policy", type=float, default=0.05)
    ap.add_argument("--spread", action="store_true",
                    help="let client and servers use any vCPU (default: all pinned to vCPU 0)")
    ap.add_argument("--client-cpu", type=int, default=None,
                    help="pin the load generator to this vCPU instead (servers stay on vCPU 0): "
                         "the latency setup, client and server never compete for one core")
    ap.add_argument("--settle", type=int, default=0,
                    help="seconds to wait before driving backstop (after the floor's run), so "
                         "start-up work beside serving is done; its CPU is reported apart")
    ap.add_argument("--backstop-first", action="store_true",
                    help="drive backstop right after its set-up, before the floor, so its run overlaps "
                         "the store's background validation of the segments found at start")
    ap.add_argument("--work-dir", help="where the data directory goes (default: a new temp dir, removed after)")
    ap.add_argument("--keep", action="store_true", help="keep the work directory")
    ap.add_argument("--json", default=None, help="result file (default: WORK/scale-run.json, printed)")
    args = ap.parse_args()
    signatures = 1 if args.without_id_token else 2
    PIN[:] = [] if args.spread else ["taskset", "-c", "0"]

    work = args.work_dir or tempfile.mkdtemp(prefix="backstop-scale-")
    os.makedirs(work, exist_ok=True)
    data = os.path.join(work, "data")
    tokens = os.path.join(work, "tokens.txt")
    population = os.path.join(work, "population.txt")
    result_file = args.json or os.path.join(work, "scale-run.json")
    port = free_port()
    issuer = f"http://127.0.0.1:{port}"
    result = {"sessions": args.sessions, "alg": args.alg, "signatures_per_token_response": signatures,
              "rate": args.rate, "seconds": args.seconds, "connections": args.connections,
              "backstop_first": args.backstop_first,
              "pinned_to_vcpu0": not args.spread, "client_cpu": args.client_cpu,
              "backstop_workers": 1}
    procs = []
    try:
        print(f"seeding {args.sessions} {args.alg} sessions in {data} ...", file=sys.stderr)
        t = time.monotonic()
        seeded = subprocess.run(
            [f"{BIN}/backstop", "seed", "--data-dir", data, "--sessions", str(args.sessions),
             "--issuer", issuer, "--alg", args.alg, "--apps", str(SEED_APPS), "--tokens-out", tokens,
             "--tokens-max", str(min(args.hit_sessions, args.sessions))]
            + (["--without-id-token"] if args.without_id_token else []),
            check=True, stdout=subprocess.PIPE, stderr=subprocess.DEVNULL, text=True)
        result["seed_secs"] = round(time.monotonic() - t, 2)
        result["seed_output"] = seeded.stdout.strip().splitlines()[-1:] or None
        result["data_dir_bytes"] = sum(os.path.getsize(os.path.join(d, f))
                                       for d, _, fs in os.walk(data) for f in fs)

        mock, mock_addr = start([f"{BIN}/backstop-mock-primary"])
        procs.append(mock)
        print("starting backstop ...", file=sys.stderr)
        t0 = time.monotonic()
        backstop, admin_addr, listening = start_backstop(os.path.join(work, "backstop.toml"), port,
                                                         issuer, data, mock_addr)
        procs.append(backstop)
        if listening is None:
            sys.exit("backstop never printed its `listening on` line")
        result["ready_listening_secs"] = round(listening, 4)
        deadline = time.monotonic() + 120
        status = None
        while status is None:
            try:
                status = admin(admin_addr, "GET", "/admin/status", timeout=2)
            except OSError:
                if time.monotonic() > deadline:
                    sys.exit("backstop's admin API never answered")
                time.sleep(0.01)
        result["ready_status_secs"] = round(time.monotonic() - t0, 4)
        while admin(admin_addr, "GET", "/admin/status")["primary_metadata"]["token_path"] is None:
            if time.monotonic() > deadline:
                sys.exit("backstop never learned the token endpoint")
            time.sleep(0.05)
        result["ready_metadata_secs"] = round(time.monotonic() - t0, 4)
        result["rss_after_start_kib"] = rss_kib(backstop.pid)
        result["store_after_start"] = admin(admin_addr, "GET", "/admin/status").get("store")

        admin(admin_addr, "POST", "/admin/mode", '{"mode":"outage"}')
        with open(tokens) as f:
            token_lines = sum(1 for _ in f)
        revoked = revoked_users(token_lines, args.revoked_users)
        t = time.monotonic()
        for u in revoked:
            admin(admin_addr, "POST", "/admin/revocations", json.dumps(
                {"id": f"scale-run-{u}", "kind": "account_disabled",
                 "subject": {"type": "user", "id": f"user-{u:010}"}}))
        result["revocations"] = {"users": len(revoked), "secs": round(time.monotonic() - t, 2)}
        admin(admin_addr, "PUT", "/admin/policies", json.dumps(block_app_policy(BLOCKED_APP)))
        result["policy"] = f"block {BLOCKED_APP}"

        shares = {"unknown": args.share_unknown, "revoked": args.share_revoked, "policy": args.share_policy}
        classes = build_population(tokens, population, revoked, shares, random.Random(7))
        result["population"] = {cls: classes.count(cls) for cls in sorted(set(classes))}

        # One served token: its size sets the floor's body, its signing input the bare signature's.
        # (A session without DPoP: this probe cannot sign a proof.)
        with open(population) as f:
            probe = next((l.split() for l in f if l.rstrip().endswith("class:hit") and len(l.split()) == 4), None)
        if probe is None:
            sys.exit("every hit session is DPoP-bound: one without DPoP is needed to size the floor's body")
        form = urllib.parse.urlencode({"grant_type": "refresh_token", "client_id": probe[0],
                                       "refresh_token": probe[1], "resource": probe[2]})
        req = urllib.request.Request(f"{issuer}/token", method="POST", data=form.encode(),
                                     headers={"Content-Type": "application/x-www-form-urlencoded"})
        t = time.monotonic()
        with urllib.request.urlopen(req, timeout=10) as r:
            raw = r.read()
        result["first_token_secs"] = round(time.monotonic() - t, 4)
        response_bytes = len(raw)
        signing_input_bytes = len(json.loads(raw)["access_token"].rsplit(".", 1)[0])
        result["response_bytes"] = response_bytes
        result["signing_input_bytes"] = signing_input_bytes

        floor, floor_addr = start([f"{BIN}/backstop-floor", "127.0.0.1:0", "1"],
                                  env=dict(os.environ, BACKSTOP_FLOOR_BODY_BYTES=str(response_bytes)))
        procs.append(floor)
        sign = bench_sign(args.alg, signing_input_bytes, 2)
        print(f"driving the floor, then backstop: {args.rate}/s for {args.seconds} s each ...", file=sys.stderr)
        floor_json = os.path.join(work, "floor.json")
        if not args.backstop_first:
            fl = loadgen(f"http://{floor_addr}/token", population, floor.pid, args, floor_json)
        if args.settle:
            # Lets start-up work that runs beside serving (the store's background validation of
            # every segment) finish first; its CPU is reported, not charged to the run.
            before = cpu_seconds(backstop.pid)
            time.sleep(args.settle)
            result["settle"] = {"secs": args.settle, "backstop_cpu_secs": round(cpu_seconds(backstop.pid) - before, 2)}
        # Whether the store's background validation of the segments found at start (SCHED_IDLE,
        # beside serving) overlapped backstop's run: bytes still to check before and after it.
        pending_before = admin(admin_addr, "GET", "/admin/status")["store"].get("validation_pending_bytes")
        # Where backstop's threads spent the run: CPU, and time runnable but waiting for a vCPU
        # (a worker waiting there is latency the server's own code did not cause); page faults.
        sched0, faults0 = threads_sched(backstop.pid), faults(backstop.pid)
        ours = loadgen(f"{issuer}/token", population, backstop.pid, args, os.path.join(work, "backstop.json"))
        sched1, faults1 = threads_sched(backstop.pid), faults(backstop.pid)
        result["rss_after_run_kib"] = rss_kib(backstop.pid)
        result["threads_during_run"] = {name: {"cpu_ms": round(v[0] / 1e6, 1), "wait_for_cpu_ms": round(v[1] / 1e6, 1),
                                               "scheduled": v[2]}
                                        for name, v in sched_delta(sched0, sched1).items() if v[0] or v[1]}
        result["page_faults_during_run"] = {"minor": faults1[0] - faults0[0], "major": faults1[1] - faults0[1]}
        if args.backstop_first:
            fl = loadgen(f"http://{floor_addr}/token", population, floor.pid, args, floor_json)
        pending_after = admin(admin_addr, "GET", "/admin/status")["store"].get("validation_pending_bytes")
        result["validation_pending_bytes"] = {"before_run": pending_before, "after_run": pending_after}

        expected, problems = check(classes, ours)
        signatures_made = ours["ok"] * signatures
        backstop_cpu = ours["server_cpu"]["seconds"]
        floor_cpu = (fl["server_cpu"]["us_per_request"] * 1e-6 * (ours["requests"] - ours["transport_errors"])
                     + signatures_made * sign["us_per_signature"] * 1e-6)
        result.update({
            "sign_us": sign["us_per_signature"], "sign": sign,
            "floor": fl, "backstop": ours,
            "expected_per_class": expected, "outcomes_per_class": by_class(ours), "problems": problems,
            "backstop_cpu_s_per_1000_requests": ours["server_cpu"]["seconds_per_1000_requests"],
            # A "token" here is one served token response (HTTP 200), as in measure-outage.py;
            # it carries `signatures_per_token_response` signed tokens.
            "backstop_cpu_s_per_1000_tokens": backstop_cpu / max(1, ours["ok"]) * 1000,
            "floor_cpu_s_per_1000_requests": fl["server_cpu"]["seconds_per_1000_requests"],
            "floor_cpu_s_same_work": floor_cpu,
            "ratio_to_floor": backstop_cpu / floor_cpu if floor_cpu > 0 else None,
        })
        with open(result_file, "w") as f:
            json.dump(result, f, indent=2)
        print_table(result, args)
        print(f"result: {result_file}")
        if problems:
            print("FAILED: " + "; ".join(problems), file=sys.stderr)
            sys.exit(1)
    finally:
        for p in procs:
            p.kill()
            p.wait()
        if not args.keep and not args.work_dir:
            # The result file is kept when it was asked for elsewhere; the data dir never is.
            shutil.rmtree(work, ignore_errors=True)
        elif not args.keep:
            shutil.rmtree(data, ignore_errors=True)


def print_table(r, args):
    b, f = r["backstop"], r["floor"]
    lat = b["latency_us"] or {}
    pin = "all on vCPU 0" if r["pinned_to_vcpu0"] else "unpinned"
    if r.get("client_cpu") is not None:
        pin = f"servers on vCPU 0, load generator on vCPU {r['client_cpu']}"
    print(f"scale run: {r['sessions']} sessions, {r['alg']} ({r['signatures_per_token_response']} tokens per response), "
          f"open loop {args.rate}/s for {args.seconds} s, {args.connections} connections, 1 backstop worker, {pin}; "
          f"population {sum(r['population'].values())} lines {r['population']}")
    print(f"  seed                 {r['seed_secs']:.1f} s; data dir {r['data_dir_bytes'] / 2**30:.2f} GiB")
    print(f"  time to ready        listening {r['ready_listening_secs'] * 1000:.1f} ms, /admin/status "
          f"{r['ready_status_secs'] * 1000:.1f} ms, primary metadata {r['ready_metadata_secs'] * 1000:.1f} ms")
    print(f"  RSS (KiB)            after start {r['rss_after_start_kib']}, after run {r['rss_after_run_kib']}")
    for name, t in sorted((r.get("threads_during_run") or {}).items()):
        print(f"  thread {name:<15} CPU {t['cpu_ms']:.0f} ms, runnable but waiting for a vCPU {t['wait_for_cpu_ms']:.0f} ms, "
              f"scheduled {t['scheduled']} times")
    pf = r.get("page_faults_during_run")
    if pf:
        print(f"  page faults          {pf['minor']} minor, {pf['major']} major during backstop's run")
    v = r.get("validation_pending_bytes") or {}
    if v.get("before_run") is not None:
        print(f"  store validation     {v['before_run'] / 2**30:.2f} GiB left to check when backstop's run began, "
              f"{v['after_run'] / 2**30:.2f} GiB when it ended")
    print(f"  server CPU           backstop {r['backstop_cpu_s_per_1000_requests']:.4f} s / 1000 requests, "
          f"{r['backstop_cpu_s_per_1000_tokens']:.4f} s / 1000 token responses; floor http "
          f"{r['floor_cpu_s_per_1000_requests']:.4f} s / 1000 requests + sign {r['sign_us']:.2f} us CPU "
          f"({r['sign']['wall_us_per_signature']:.2f} us wall)")
    bc, fc = b["server_cpu"], f["server_cpu"]
    print(f"  user / system        backstop {bc['user_seconds'] * 1e6 / max(1, b['requests']):.1f} / "
          f"{bc['system_seconds'] * 1e6 / max(1, b['requests']):.1f} us per request; floor "
          f"{fc['user_seconds'] * 1e6 / max(1, f['requests']):.1f} / {fc['system_seconds'] * 1e6 / max(1, f['requests']):.1f}")
    print(f"  ratio to floor       {r['ratio_to_floor']:.3f}  (backstop CPU / (floor http x requests + token responses x "
          f"{r['signatures_per_token_response']} bare signatures))")
    print(f"  throughput           backstop {b['throughput_per_sec']:.0f} req/s ({b['unsent']} not sent), floor {f['throughput_per_sec']:.0f} req/s")
    print(f"  latency backstop us  p50 {lat.get('p50', 0):.0f}  p90 {lat.get('p90', 0):.0f}  p99 {lat.get('p99', 0):.0f}  "
          f"p99.9 {lat.get('p999', 0):.0f}  max {lat.get('max', 0):.0f}  (from due time; setup above)")
    svc = b["service_us"] or {}
    print(f"  from send us         p50 {svc.get('p50', 0):.0f}  p90 {svc.get('p90', 0):.0f}  p99 {svc.get('p99', 0):.0f}  "
          f"p99.9 {svc.get('p999', 0):.0f}  max {svc.get('max', 0):.0f}")
    for cls, outcomes in sorted(r["outcomes_per_class"].items()):
        print(f"  {cls:<8} expected {r['expected_per_class'].get(cls, 0):>8}  got {outcomes}")
    print("  checks               " + ("OK" if not r["problems"] else "FAILED: " + "; ".join(r["problems"])))


if __name__ == "__main__":
    main()
