# Start-up with 100,000 connections already open: `tcptrace load hold` workers in a
# network namespace (13 listeners in a SO_REUSEPORT group, then 13 connecting workers),
# then the time from launching `tcptrace watch --json` to its first line (the first
# snapshot, after attaching, seeding and the first capacity refresh), 5 runs.
import json, subprocess, sys, time, statistics
BIN = sys.argv[1]
NS = "tcptrace-startup"
subprocess.run(["ip", "netns", "del", NS], stderr=subprocess.DEVNULL)
subprocess.run(["ip", "netns", "add", NS], check=True)
subprocess.run(["ip", "netns", "exec", NS, "ip", "link", "set", "lo", "up"], check=True)
def hold(*args):
    return subprocess.Popen(["ip", "netns", "exec", NS, BIN, "load", "hold", *args],
                            stdin=subprocess.PIPE, stdout=subprocess.DEVNULL)
workers = [hold("--listen", "127.0.0.1:8080") for _ in range(13)]
time.sleep(2)
workers += [hold("--connect", "127.0.0.1:8080", "--from", f"127.1.0.{i}", "--count", "7693") for i in range(1, 14)]
try:
    for _ in range(180):
        out = subprocess.run(["ip", "netns", "exec", NS, "ss", "-Htn", "state", "established", "( sport = :8080 )"], capture_output=True, text=True).stdout
        n = out.count("\n")
        if n >= 100009:
            break
        time.sleep(1)
    print(f"server ends held: {n}")
    times = []
    for r in range(5):
        t0 = time.monotonic()
        p = subprocess.Popen([BIN, "watch", "--json", "--interval", "10s"], stdout=subprocess.PIPE, stderr=subprocess.DEVNULL, text=True)
        line = p.stdout.readline()
        t = time.monotonic() - t0
        p.terminate(); p.wait()
        times.append(t)
        print(f"run {r+1}: first snapshot after {t:.3f} s, live {json.loads(line)['live']}")
    print(f"median {statistics.median(times):.3f} s")
finally:
    for w in workers:
        w.kill()
    for w in workers:
        w.wait()
    subprocess.run(["ip", "netns", "del", NS])
