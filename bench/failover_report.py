#!/usr/bin/env python3
"""Reads the event logs of a bench/failover.sh run: when each agent
arrived on the secondary after the primary was killed (`Client <name>
connected (failover from ...)`) and back on the primary after it was
started again (`(failback from ...)`). Prints the delays (p50, p99, max)
and the arrivals per second, writes them as JSON, and plots them when
matplotlib is installed. The log's stamps are whole seconds (UTC), so
every delay is rounded down to the second it fell in."""

import argparse
import calendar
import glob
import json
import os
import time


def arrivals(log_dir, marker):
    """Unix seconds of every event line containing `marker`."""
    out = []
    for path in sorted(glob.glob(os.path.join(log_dir, "GW*.log"))):
        for line in open(path, encoding="utf-8", errors="replace"):
            if marker not in line:
                continue
            date, clock, _ = line.split(", ", 2)
            stamp = time.strptime(f"{date} {clock}", "%d-%b-%y %H:%M:%S")
            out.append(calendar.timegm(stamp))
    return sorted(out)


def percentile(values, p):
    if not values:
        return None
    k = max(0, min(len(values) - 1, int(round(p / 100 * len(values) + 0.5)) - 1))
    return values[k]


def summary(stamps, start):
    delays = sorted(s - int(start) for s in stamps)
    per_second = {}
    for d in delays:
        per_second[d] = per_second.get(d, 0) + 1
    return {
        "count": len(delays),
        "p50_s": percentile(delays, 50),
        "p99_s": percentile(delays, 99),
        "max_s": delays[-1] if delays else None,
        "peak_per_second": max(per_second.values()) if per_second else 0,
        "seconds_spanned": len(per_second),
        "per_second": sorted(per_second.items()),
    }


def main():
    ap = argparse.ArgumentParser()
    for name in ("agents", "cmpi"):
        ap.add_argument(f"--{name}", type=int, required=True)
    for name in ("kill", "restart"):
        ap.add_argument(f"--{name}", type=float, required=True)
    for name in ("profile", "primary-log", "secondary-log", "json", "plot"):
        ap.add_argument(f"--{name}", required=True)
    a = ap.parse_args()
    report = {
        "agents": a.agents,
        "cmpi_secs": a.cmpi,
        "profile": a.profile,
        "killed_at_unix": a.kill,
        "restarted_at_unix": a.restart,
        "failover": summary(arrivals(a.secondary_log, "(failover from "), a.kill),
        "failback": summary(arrivals(a.primary_log, "(failback from "), a.restart),
    }
    with open(a.json, "w") as f:
        json.dump(report, f, indent=1)
    for what in ("failover", "failback"):
        s = report[what]
        print(
            f"{what}: {s['count']} agents, delay p50 {s['p50_s']} s, p99 {s['p99_s']} s, max {s['max_s']} s; "
            f"peak {s['peak_per_second']} arrivals/s over {s['seconds_spanned']} seconds"
        )
    try:
        import matplotlib

        matplotlib.use("Agg")
        import matplotlib.pyplot as plt
    except ImportError:
        print("matplotlib is not installed: no plot")
        return
    fig, axes = plt.subplots(1, 2, figsize=(10, 3.5))
    for ax, what, after in zip(axes, ("failover", "failback"), ("the kill", "the restart")):
        xs, ys = zip(*report[what]["per_second"]) if report[what]["per_second"] else ((), ())
        ax.bar(xs, ys, width=0.9)
        ax.set_title(f"{what}: {a.agents} agents, CMPI {a.cmpi} s")
        ax.set_xlabel(f"seconds after {after}")
        ax.set_ylabel("arrivals per second")
    fig.tight_layout()
    fig.savefig(a.plot, dpi=100)
    print(f"plot: {a.plot}")


if __name__ == "__main__":
    main()
