#!/usr/bin/env python3
"""Aggregate bench/run.sh records: medians, min-max, ratios against peers of
the same run; write bench/results/<date>.json, PNG plots and the table between
the markers in bench/README.md.

Usage: report.py RECORDS.jsonl DATE "PARAMS"
"""
import json
import os
import platform
import statistics
import subprocess
import sys

BENCH = os.path.dirname(os.path.abspath(__file__))
BEGIN = "<!-- run.sh:begin -->"
END = "<!-- run.sh:end -->"


def med(xs):
    xs = [x for x in xs if isinstance(x, (int, float))]
    if not xs:
        return None
    return {"median": statistics.median(xs), "min": min(xs), "max": max(xs), "n": len(xs)}


def fmt(s, digits=2, scale=1.0):
    if s is None:
        return "n/a"
    f = "%%.%df" % digits
    return "%s (%s–%s)" % (f % (s["median"] * scale), f % (s["min"] * scale), f % (s["max"] * scale))


def ratio(a, b, digits=2):
    if a is None or b is None or not b["median"]:
        return "n/a"
    return ("%%.%df×" % digits) % (a["median"] / b["median"])


def machine():
    cpu = "?"
    try:
        for line in open("/proc/cpuinfo"):
            if line.startswith("model name"):
                cpu = line.split(":", 1)[1].strip()
                break
    except OSError:
        pass
    mem = os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES") / 2**30
    return "%d cores (%s), %.0f GiB, Linux %s" % (os.cpu_count(), cpu, mem, platform.release())


def git_rev():
    try:
        rev = subprocess.run(["git", "-C", BENCH, "rev-parse", "--short", "HEAD"],
                             capture_output=True, text=True).stdout.strip()
        dirty = subprocess.run(["git", "-C", BENCH, "status", "--porcelain", "--", "../src"],
                               capture_output=True, text=True).stdout.strip()
        return rev + (" + uncommitted src/" if dirty else "")
    except OSError:
        return "?"


def main():
    recs = [json.loads(l) for l in open(sys.argv[1]) if l.strip()]
    date, params = sys.argv[2], sys.argv[3]
    groups = {}
    for r in recs:
        groups.setdefault((r["workload"], r["case"]), []).append(r)

    def get(w, c, key, sub=None):
        rs = [r for r in groups.get((w, c), []) if r.get("status") is None]
        vals = []
        for r in rs:
            v = r.get(key)
            if sub is not None:
                v = v.get(sub) if isinstance(v, dict) else None
            vals.append(v)
        return med(vals)

    def status(w, c):
        rs = groups.get((w, c), [])
        return rs[0].get("status") if rs and rs[0].get("status") else None

    summary = {}
    out = []
    out.append("Run %s UTC on %s; ringway %s. `%s`.\n" % (date, machine(), git_rev(), params))
    out.append("Figures are medians of the runs with min–max in brackets; every ratio is "
               "against a peer measured in the same run of `bench/run.sh`.\n")

    # W1 / W5 bulk
    for w, cases, title in [
        ("W1", ["direct", "haproxy-copy", "haproxy-splice", "socat", "ringway", "rathole",
                "ringway-1hop-loadgen"], "W1 bulk, iperf3 one stream"),
        ("W5-bulk", ["direct", "haproxy-tls", "ringway-tls", "ringway-1hop-loadgen-tls"],
         "W5 bulk over TLS"),
    ]:
        if not any((w, c) in groups for c in cases):
            continue
        d = get(w, "direct", "gbps")
        peer = "haproxy-copy" if w == "W1" else "haproxy-tls"
        hp = get(w, peer, "gbps")
        hp_cpu = get(w, peer, "cpu_secs_per_gb")
        out.append("\n### %s\n" % title)
        out.append("| case | relay processes | Gbit/s | × direct | × %s | relay CPU-s/GB | CPU/GB × %s |" % (peer, peer))
        out.append("|---|---|---|---|---|---|---|")
        for c in cases:
            st = status(w, c)
            if st:
                out.append("| %s | | %s | | | | |" % (c, st))
                continue
            if (w, c) not in groups:
                continue
            g = get(w, c, "gbps")
            cpu = get(w, c, "cpu_secs_per_gb")
            procs = groups[(w, c)][0].get("relay_processes", "")
            out.append("| %s | %s | %s | %s | %s | %s | %s |" % (
                c, procs, fmt(g), ratio(g, d), ratio(g, hp), fmt(cpu, 3), ratio(cpu, hp_cpu)))
            summary.setdefault(w, {})[c] = {"gbps": g, "cpu_secs_per_gb": cpu}

    # W2 / W5 latency
    for w, cases, title in [
        ("W2", ["direct", "haproxy-copy", "haproxy-splice", "socat", "ringway", "rathole",
                "ringway-1hop-loadgen"], "W2 64 B round trips"),
        ("W5-rtt", ["direct", "haproxy-tls", "ringway-tls", "ringway-1hop-loadgen-tls"],
         "W5 64 B round trips over TLS"),
    ]:
        if not any((w, c) in groups for c in cases):
            continue
        d50, d99 = get(w, "direct", "rtt", "p50_us"), get(w, "direct", "rtt", "p99_us")
        peer = "haproxy-copy" if w == "W2" else "haproxy-tls"
        out.append("\n### %s\n" % title)
        out.append("| case | p50 µs | p99 µs | added p50 µs | added p99 µs | added p50 × %s | relay CPU µs/RTT | CPU × %s |" % (peer, peer))
        out.append("|---|---|---|---|---|---|---|---|")

        def added(c, k, base):
            vals = []
            for r in groups.get((w, c), []):
                if isinstance(r.get("rtt"), dict) and k in r["rtt"] and base:
                    vals.append(r["rtt"][k] - base["median"])
            return med(vals)

        hp_add = added(peer, "p50_us", d50)
        hp_cpu = get(w, peer, "relay_cpu_us_per_rtt")
        for c in cases:
            st = status(w, c)
            if st:
                out.append("| %s | %s | | | | | | |" % (c, st))
                continue
            if (w, c) not in groups:
                continue
            p50, p99 = get(w, c, "rtt", "p50_us"), get(w, c, "rtt", "p99_us")
            cpu = get(w, c, "relay_cpu_us_per_rtt")
            if c.startswith("ringway-1hop"):
                a50 = a99 = None
            else:
                a50, a99 = added(c, "p50_us", d50), added(c, "p99_us", d99)
            out.append("| %s | %s | %s | %s | %s | %s | %s | %s |" % (
                c, fmt(p50, 1), fmt(p99, 1), fmt(a50, 1), fmt(a99, 1), ratio(a50, hp_add),
                fmt(cpu, 2), ratio(cpu, hp_cpu)))
            summary.setdefault(w, {})[c] = {"p50_us": p50, "p99_us": p99, "added_p50_us": a50,
                                            "added_p99_us": a99, "relay_cpu_us_per_rtt": cpu}
        if w == "W2":
            out.append("\nDirect and peer rows: `bench/pingpong.py` (Python client and threaded echo "
                       "server, same for every relay, so 'added' is relay cost). "
                       "`ringway-1hop-loadgen`: `ringway-loadgen controls --pattern pingpong` "
                       "against `ringway-loadgen agents` through the gateway alone (Rust at both "
                       "ends; no direct baseline, so no 'added').")

    # W3
    if any(k[0] == "W3" for k in groups):
        out.append("\n### W3 idle agents\n")
        out.append("| case | gateway RSS B/agent | gateway CPU-s per s | poll RTT p99 µs | agents up |")
        out.append("|---|---|---|---|---|")
        for c in ["ringway-cmpi60", "ringway-cmpi5"]:
            if (("W3", c)) not in groups:
                continue
            rss = get("W3", c, "rss_bytes_per_agent")
            cpu = get("W3", c, "gateway_cpu_secs_per_sec")
            prt = get("W3", c, "poll_rtt_p99_us")
            up = get("W3", c, "agents_up")
            out.append("| %s | %s | %s | %s | %s |" % (c, fmt(rss, 0), fmt(cpu, 4),
                                                        fmt(prt, 0) if c.endswith("5") else "n/a (no polls)",
                                                        fmt(up, 0)))
            summary.setdefault("W3", {})[c] = {"rss_bytes_per_agent": rss,
                                               "gateway_cpu_secs_per_sec": cpu,
                                               "poll_rtt_p99_us": prt}
        rh = get("W3", "rathole-held-conn", "rss_bytes_per_conn")
        if rh:
            r60 = summary.get("W3", {}).get("ringway-cmpi60", {}).get("rss_bytes_per_agent")
            out.append("\nPeer: rathole server RSS per held idle tunnelled connection: %s B "
                       "(ringway per idle agent is %s of it). Not the same object: an idle rathole "
                       "*client* costs the server one control channel." % (fmt(rh, 0), ratio(r60, rh)))
            summary["W3"]["rathole-held-conn"] = {"rss_bytes_per_conn": rh}

    # W4
    if any(k[0] == "W4" for k in groups):
        out.append("\n### W4 session setup\n")
        out.append("| case | sessions/s | setup p50 µs | setup p99 µs | p99 × haproxy-copy |")
        out.append("|---|---|---|---|---|")
        hp99 = get("W4", "haproxy-copy", "setup", "p99_us")
        for c in ["direct", "haproxy-copy", "haproxy-splice", "socat", "ringway", "rathole"]:
            if ("W4", c) not in groups or status("W4", c):
                continue
            ps = get("W4", c, "setup", "per_sec")
            p50, p99 = get("W4", c, "setup", "p50_us"), get("W4", c, "setup", "p99_us")
            out.append("| %s (connect + first 64 B echo, 1 client, sequential) | %s | %s | %s | %s |" % (
                c, fmt(ps, 0), fmt(p50, 0), fmt(p99, 0), ratio(p99, hp99)))
            summary.setdefault("W4", {})[c] = {"per_sec": ps, "p50_us": p50, "p99_us": p99}
        c = "ringway-loadgen-4controls"
        if ("W4", c) in groups:
            ps, p50, p99 = (get("W4", c, "sessions_per_sec"), get("W4", c, "setup_p50_us"),
                            get("W4", c, "setup_p99_us"))
            out.append("| %s (1,000 agents, loadgen, `--per-session 1`) | %s | %s | %s | %s |" % (
                c, fmt(ps, 0), fmt(p50, 0), fmt(p99, 0), ratio(p99, hp99)))
            summary.setdefault("W4", {})[c] = {"sessions_per_sec": ps, "p50_us": p50, "p99_us": p99}

    table = "\n".join(out) + "\n"
    res = os.path.join(BENCH, "results")
    with open(os.path.join(res, date + ".json"), "w") as f:
        json.dump({"date": date, "machine": machine(), "ringway": git_rev(), "params": params,
                   "medians": summary, "runs": recs}, f, indent=1)
    plots = make_plots(recs, groups, res, date)
    if plots:
        table += "\nPlots: " + ", ".join("`results/%s`" % p for p in plots) + "\n"
    else:
        table += "\nNo plots: matplotlib is not installed.\n"
    readme = os.path.join(BENCH, "README.md")
    text = open(readme).read()
    if BEGIN in text:
        pre, rest = text.split(BEGIN, 1)
        post = rest.split(END, 1)[1]
        text = pre + BEGIN + "\n" + table + END + post
    else:
        text += "\n" + BEGIN + "\n" + table + END + "\n"
    open(readme, "w").write(text)
    print(table)


def make_plots(recs, groups, res, date):
    try:
        import matplotlib
        matplotlib.use("Agg")
        import matplotlib.pyplot as plt
    except ImportError:
        return []
    made = []
    for w in ["W1", "W5-bulk"]:
        cases = [c for (ww, c) in groups if ww == w and not groups[(ww, c)][0].get("status")]
        if not cases:
            continue
        meds, lo, hi = [], [], []
        for c in cases:
            v = [r["gbps"] for r in groups[(w, c)] if isinstance(r.get("gbps"), (int, float))]
            m = statistics.median(v) if v else 0
            meds.append(m)
            lo.append(m - min(v) if v else 0)
            hi.append(max(v) - m if v else 0)
        fig, ax = plt.subplots(figsize=(9, 4.5))
        ax.bar(cases, meds, yerr=[lo, hi], capsize=4, color="#4a7ab5")
        ax.set_ylabel("Gbit/s (median, min–max)")
        ax.set_title("%s throughput, %s" % (w, date))
        plt.setp(ax.get_xticklabels(), rotation=25, ha="right")
        fig.tight_layout()
        name = "%s-%s-throughput.png" % (date, w.lower())
        fig.savefig(os.path.join(res, name), dpi=100)
        plt.close(fig)
        made.append(name)
    sdir = os.path.join(res, date, "peers", "samples")
    for w in ["W2", "W5-rtt"]:
        files = sorted(f for f in os.listdir(sdir) if f.startswith(w + "-") and f.endswith("-1.txt")) \
            if os.path.isdir(sdir) else []
        if not files:
            continue
        fig, ax = plt.subplots(figsize=(9, 4.5))
        for f in files:
            xs = sorted(int(x) / 1000.0 for x in open(os.path.join(sdir, f)).read().split())
            n = len(xs)
            ax.plot(xs, [(i + 1) / n for i in range(n)], label=f[len(w) + 1:-6])
        ax.set_xscale("log")
        ax.set_xlabel("round trip µs (64 B, run 1)")
        ax.set_ylabel("fraction")
        ax.set_title("%s latency CDF, %s" % (w, date))
        ax.grid(True, which="both", alpha=0.3)
        ax.legend()
        fig.tight_layout()
        name = "%s-%s-latency-cdf.png" % (date, w.lower())
        fig.savefig(os.path.join(res, name), dpi=100)
        plt.close(fig)
        made.append(name)
    return made


if __name__ == "__main__":
    main()
