"""Helpers shared by the measurement scripts (tools/measure-outage.py, tools/scale-run.py):
pinning, process start, CPU time from /proc, the admin API, and the bare signature's CPU time.
Python 3 standard library only."""
import json, os, re, socket, subprocess, sys, urllib.request

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
BIN = f"{ROOT}/target/release"
TICK = os.sysconf("SC_CLK_TCK")
ADMIN_TOKEN = "measure-admin-token-0123456789abcdef"
# The command prefix that pins servers (`taskset -c 0`), set in place by the script's main.
PIN = []


def cpu_seconds(pid):
    """utime + stime of a process, seconds (/proc/PID/stat)."""
    with open(f"/proc/{pid}/stat") as f:
        fields = f.read().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / TICK


def faults(pid):
    """(minor, major) page faults of a process so far (/proc/PID/stat)."""
    with open(f"/proc/{pid}/stat") as f:
        fields = f.read().rsplit(")", 1)[1].split()
    return int(fields[7]), int(fields[9])


def threads_sched(pid):
    """Per thread name: [CPU ns, ns spent runnable but waiting for a CPU, times scheduled]
    (/proc/PID/task/*/schedstat), summed over threads of the same name."""
    out = {}
    for tid in os.listdir(f"/proc/{pid}/task"):
        try:
            with open(f"/proc/{pid}/task/{tid}/comm") as f:
                name = f.read().strip()
            with open(f"/proc/{pid}/task/{tid}/schedstat") as f:
                vals = [int(x) for x in f.read().split()]
        except OSError:
            continue  # the thread ended meanwhile
        acc = out.setdefault(name, [0, 0, 0])
        for i, v in enumerate(vals[:3]):
            acc[i] += v
    return out


def context_switches(pid):
    """(voluntary, involuntary) context switches summed over a process's threads: an
    involuntary one is the thread preempted, e.g. by a client it just woke on the same vCPU."""
    vol = invol = 0
    for tid in os.listdir(f"/proc/{pid}/task"):
        try:
            with open(f"/proc/{pid}/task/{tid}/status") as f:
                for line in f:
                    if line.startswith("voluntary_ctxt_switches:"):
                        vol += int(line.split()[1])
                    elif line.startswith("nonvoluntary_ctxt_switches:"):
                        invol += int(line.split()[1])
        except OSError:
            continue
    return vol, invol


def sched_delta(before, after):
    """`threads_sched` after minus before, per thread name."""
    return {name: [a - b for a, b in zip(vals, before.get(name, [0, 0, 0]))]
            for name, vals in after.items()}


def free_port():
    s = socket.socket()
    s.bind(("127.0.0.1", 0))
    port = s.getsockname()[1]
    s.close()
    return port


def start(cmd, env=None, pattern=r"http://(\S+)"):
    """Starts `cmd` under PIN and returns (process, the address its first line announces)."""
    p = subprocess.Popen(PIN + cmd, stdout=subprocess.PIPE, stderr=subprocess.DEVNULL, text=True, env=env)
    line = p.stdout.readline()
    m = re.search(pattern, line)
    if not m:
        p.kill()
        sys.exit(f"could not start {cmd}: {line!r}")
    return p, m.group(1)


def start_backstop(conf, port, issuer, data_dir, primary_addr):
    """Writes a one-worker config to `conf` and starts `backstop serve` under PIN with
    ADMIN_TOKEN. Returns (process, admin address, seconds from spawn to the `listening on`
    line, or None if it never printed one before the admin address)."""
    import time
    with open(conf, "w") as f:
        f.write(f'listen = "127.0.0.1:{port}"\nadmin_listen = "127.0.0.1:0"\nworkers = 1\n'
                f'issuer = "{issuer}"\ndata_dir = "{data_dir}"\n'
                f'[primary]\norigin = "http://{primary_addr}"\n[log]\nlevel = "warn"\n')
    env = dict(os.environ, BACKSTOP_ADMIN_TOKEN=ADMIN_TOKEN)
    t0 = time.monotonic()
    p = subprocess.Popen(PIN + [f"{BIN}/backstop", "serve", "--config", conf], env=env,
                         stdout=subprocess.PIPE, stderr=subprocess.DEVNULL, text=True)
    listening = None
    while True:
        line = p.stdout.readline()
        if not line:
            p.kill()
            sys.exit("backstop exited before its admin API listened")
        if "listening on" in line and listening is None:
            listening = time.monotonic() - t0
        m = re.search(r"admin API on http://(\S+)", line)
        if m:
            return p, m.group(1), listening


def admin(addr, method, path, body=None, timeout=10):
    """One admin API call with ADMIN_TOKEN; the JSON answer, or None for an empty body."""
    req = urllib.request.Request(f"http://{addr}{path}", method=method,
                                 data=body.encode() if body else None,
                                 headers={"Authorization": f"Bearer {ADMIN_TOKEN}",
                                          "Content-Type": "application/json"})
    with urllib.request.urlopen(req, timeout=timeout) as r:
        raw = r.read()
        return json.loads(raw) if raw else None


def bench_sign(alg, message_bytes, seconds):
    """One bare signature's CPU time. `backstop bench-sign` prints wall time per signature,
    which on a busy shared VM includes time spent waiting for a vCPU (88 µs "per signature"
    once, against 10 µs of CPU); the server side of the ratio is CPU time, so this side is too:
    user + system time from wait4 over the signatures it reports. Both are kept."""
    p = subprocess.Popen(PIN + [f"{BIN}/backstop", "bench-sign", "--alg", alg, "--seconds", str(seconds),
                                "--message-bytes", str(message_bytes)],
                         stdout=subprocess.PIPE, stderr=subprocess.DEVNULL, text=True)
    out = p.stdout.read()
    _, status, usage = os.wait4(p.pid, 0)
    if os.waitstatus_to_exitcode(status) != 0:
        sys.exit(f"backstop bench-sign failed: {out!r}")
    r = json.loads(out)
    return {"alg": r["alg"], "signatures": r["signatures"],
            "wall_us_per_signature": r["us_per_signature"],
            "us_per_signature": (usage.ru_utime + usage.ru_stime) * 1e6 / r["signatures"]}
