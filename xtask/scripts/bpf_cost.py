# Where tcptrace's cost per connection goes, program by program, for one or more builds
# side by side: `python3 xtask/scripts/bpf_cost.py ROUNDS LABEL=BINARY [LABEL=BINARY ...]`
# (`LABEL=none:BINARY` runs BINARY's churn with no tracer: the baseline of the round).
# Each round runs, for every binary in turn, `tcptrace watch --json --interval 1h` and a
# 5 s `tcptrace load churn` (loopback, 127.201/127.202 addresses), with
# kernel.bpf_stats_enabled set (restored at the end). Per run it prints each BPF program's
# runs and ns per churn connection (from the fdinfo of the tracer's bpf-prog fds), the
# tracer process's CPU per connection (schedstat of every thread), its voluntary context
# switches per second, the churn's rate and its own CPU per connection; then the medians.
import glob, json, os, resource, statistics, subprocess, sys, time

STATS = "/proc/sys/kernel/bpf_stats_enabled"


def programs(pid):
    """prog_id -> (prog_type, run_time_ns, run_cnt) for the bpf-prog fds of `pid`."""
    out = {}
    for fd in glob.glob(f"/proc/{pid}/fd/*"):
        try:
            if os.readlink(fd) != "anon_inode:bpf-prog":
                continue
            info = open(f"/proc/{pid}/fdinfo/{os.path.basename(fd)}").read()
        except OSError:
            continue
        d = dict(l.split(":\t", 1) for l in info.splitlines() if ":\t" in l)
        out[int(d["prog_id"])] = (d.get("prog_type"), int(d.get("run_time_ns", 0)), int(d.get("run_cnt", 0)))
    return out


def tasks_sum(pid, file, parse):
    total = 0
    for path in glob.glob(f"/proc/{pid}/task/*/{file}"):
        try:
            total += parse(open(path).read())
        except (OSError, ValueError):
            pass
    return total


def cpu_ns(pid):
    return tasks_sum(pid, "schedstat", lambda s: int(s.split()[0]))


def switches(pid):
    return tasks_sum(pid, "status", lambda s: int(next(l.split()[1] for l in s.splitlines() if l.startswith("voluntary_ctxt_switches"))))


def churn_run(binary):
    """A 5 s churn: its JSON summary and its own CPU per connection, in us."""
    r0 = resource.getrusage(resource.RUSAGE_CHILDREN)
    churn = json.loads(subprocess.run([binary, "load", "churn", "--duration", "5s"], capture_output=True, text=True, check=True).stdout)
    r1 = resource.getrusage(resource.RUSAGE_CHILDREN)
    return churn, (r1.ru_utime + r1.ru_stime - r0.ru_utime - r0.ru_stime) * 1e6 / churn["connections"]


def run(binary):
    if binary.startswith("none:"):
        # The baseline: the churn alone (the load generator is the binary after "none:").
        churn, churn_us = churn_run(binary[5:])
        return {"programs": [], "bpf_us": 0.0, "tracer_us": 0.0, "switches": 0.0, "rate": churn["rate"], "churn_us": churn_us, "lost": 0, "drift": 0}
    tracer = subprocess.Popen([binary, "watch", "--json", "--interval", "1h"], stdout=subprocess.PIPE, stderr=subprocess.DEVNULL)
    tracer.stdout.readline()
    time.sleep(1)
    before, cpu0, sw0, t0 = programs(tracer.pid), cpu_ns(tracer.pid), switches(tracer.pid), time.monotonic()
    churn, churn_us = churn_run(binary)
    after, cpu1, sw1, t1 = programs(tracer.pid), cpu_ns(tracer.pid), switches(tracer.pid), time.monotonic()
    tracer.send_signal(2)
    last = json.loads(tracer.stdout.read().decode().strip().splitlines()[-1])
    tracer.wait()
    n = churn["connections"]
    progs = []
    for prog_id, (kind, ns, count) in sorted(after.items()):
        runs = count - before.get(prog_id, (kind, 0, 0))[2]
        if runs:
            spent = ns - before.get(prog_id, (kind, 0, 0))[1]
            progs.append((f"type {kind}", runs / n, spent / runs, spent / n))
    return {
        "programs": progs,
        "bpf_us": sum(p[3] for p in progs) / 1000,
        "tracer_us": (cpu1 - cpu0) / n / 1000,
        "switches": (sw1 - sw0) / (t1 - t0),
        "rate": churn["rate"],
        "churn_us": churn_us,
        "lost": last.get("lost"),
        "drift": last.get("drift"),
    }


def main():
    rounds = int(sys.argv[1])
    builds = [arg.split("=", 1) for arg in sys.argv[2:]]
    old = open(STATS).read().strip()
    open(STATS, "w").write("1")
    results = {label: [] for label, _ in builds}
    try:
        for r in range(rounds):
            for label, binary in builds:
                res = run(binary)
                results[label].append(res)
                progs = "; ".join(f"{k}: {runs:.2f} runs x {ns:.0f} ns" for k, runs, ns, _ in res["programs"])
                print(f"round {r + 1} {label}: BPF {res['bpf_us']:.2f} us/conn ({progs}), tracer {res['tracer_us']:.2f} us/conn, "
                      f"{res['switches']:.0f} switches/s, {res['rate']:.0f} conn/s, churn {res['churn_us']:.1f} us/conn, "
                      f"lost {res['lost']}, drift {res['drift']}", flush=True)
    finally:
        open(STATS, "w").write(old)
    print("\n| build | BPF us/conn (median) | range | tracer us/conn (median) | range | switches/s | conn/s | churn CPU us/conn | lost (max) | drift (max) | runs |")
    print("| --- | ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: |")
    for label, runs in results.items():
        col = lambda k: [x[k] for x in runs]
        rng = lambda k: f"{min(col(k)):.2f}–{max(col(k)):.2f}"
        med = lambda k: statistics.median(col(k))
        print(f"| {label} | {med('bpf_us'):.2f} | {rng('bpf_us')} | {med('tracer_us'):.2f} | {rng('tracer_us')} | {med('switches'):.0f} | "
              f"{med('rate'):.0f} | {med('churn_us'):.1f} | {max(col('lost'))} | {max(col('drift'))} | {len(runs)} |")


main()
