#!/usr/bin/env python3
"""Judge and report a bench/soak.sh run: figures from its 10 s samples and
the load generators' final summaries, a plot, a verdict, and the soak
section of bench/README.md (between the soak markers).

Flat means: after the warm-up (ramp, first heartbeats, allocator growth),
the samples' range stays within a bound of their mean. Every bound is a
constant below with its reason. Exit status 1 when any check fails.
"""
import argparse
import csv
import json
import os
import platform
import sys

BEGIN = "<!-- soak:begin -->"
END = "<!-- soak:end -->"

# RSS may move by a tenth of its mean once warm: allocator caches, relay
# buffers of the sessions open at a sample, churned agents' records being
# replaced. A leak of one agent record or buffer per churn or session
# (~4,000 sessions and ~1,500 churns per 10 minutes, tens of KiB each)
# would pass that within the hour.
RSS_RANGE = 0.10
# Descriptors may move by 2 % once warm: at a sample some of the 200 busy
# sessions are between two sessions (2 sockets each) and a few churned
# agents are reconnecting; 2 % of 15,600 is ~310.
FD_RANGE = 0.02


def load(path):
    with open(path) as f:
        rows = [{k: int(v) for k, v in r.items()} for r in csv.DictReader(f)]
    if not rows:
        sys.exit(f"{path}: no samples")
    return rows


def linear_slope(xs, ys):
    """Least-squares slope of ys over xs (units of y per unit of x)."""
    n = len(xs)
    if n < 2:
        return 0.0
    mx, my = sum(xs) / n, sum(ys) / n
    den = sum((x - mx) ** 2 for x in xs)
    return sum((x - mx) * (y - my) for x, y in zip(xs, ys)) / den if den else 0.0


def plot(rows, warmup, png, title):
    try:
        import matplotlib

        matplotlib.use("Agg")
        import matplotlib.pyplot as plt
    except ImportError:
        print("matplotlib missing (pip install matplotlib): no plot", file=sys.stderr)
        return False
    t = [r["t_secs"] / 60 for r in rows]
    fig, axes = plt.subplots(3, 1, figsize=(7, 6), sharex=True)
    axes[0].plot(t, [r["rss_kib"] / 1024 for r in rows], color="tab:blue")
    axes[0].set_ylabel("RSS (MiB)")
    axes[1].plot(t, [r["fds"] for r in rows], color="tab:green", label="descriptors")
    axes[1].plot(t, [r["connections_open"] for r in rows], color="tab:olive", label="connections", linestyle="--")
    axes[1].legend(loc="lower right", fontsize=8)
    # Room above the lines, which would otherwise run along the frame.
    axes[1].set_ylim(0, max(r["fds"] for r in rows) * 1.15)
    axes[1].set_ylabel("open")
    axes[2].plot(t, [r["mismatches"] for r in rows], color="tab:red", label="echo mismatches")
    axes[2].plot(t, [r["errors"] for r in rows], color="tab:orange", label="loadgen errors", linestyle="--")
    axes[2].legend(loc="upper left", fontsize=8)
    axes[2].set_ylabel("count")
    axes[2].set_xlabel("minutes")
    for ax in axes:
        ax.axvline(warmup / 60, color="grey", linewidth=0.8, linestyle=":")
        ax.set_ylim(bottom=0)
        ax.grid(alpha=0.3)
    # Counts are whole numbers, and zero must read as zero, not a fraction.
    axes[2].set_ylim(0, max([1] + [r["mismatches"] for r in rows] + [r["errors"] for r in rows]) * 1.2)
    axes[2].yaxis.get_major_locator().set_params(integer=True)
    fig.suptitle(title, fontsize=10)
    fig.tight_layout()
    fig.savefig(png, dpi=72)
    return True


def main():
    ap = argparse.ArgumentParser()
    for name in ("--csv", "--summaries", "--png", "--readme", "--commit", "--setup", "--title"):
        ap.add_argument(name, required=True)
    for name in ("--warmup", "--reloads", "--reload-failures", "--reloaded-events"):
        ap.add_argument(name, type=int, required=True)
    a = ap.parse_args()

    rows = load(a.csv)
    steady = [r for r in rows if r["t_secs"] >= a.warmup] or rows
    with open(a.summaries) as f:
        summaries = json.load(f)
    busy = summaries.get("busy.json", {})
    idle = [s for k, s in summaries.items() if k.startswith("idle-")]
    last = rows[-1]

    def spread(key):
        vals = [r[key] for r in steady]
        mean = sum(vals) / len(vals)
        return min(vals), max(vals), mean, (max(vals) - min(vals)) / mean if mean else 0.0

    rss_min, rss_max, rss_mean, rss_range = spread("rss_kib")
    fd_min, fd_max, fd_mean, fd_range = spread("fds")
    rss_slope_kib_h = linear_slope([r["t_secs"] / 3600 for r in steady], [r["rss_kib"] for r in steady])
    # The last half alone: growth that is still going on, as against
    # growth that was over early (caches filling for their window).
    late = steady[len(steady) // 2 :]
    late_slope_kib_h = linear_slope([r["t_secs"] / 3600 for r in late], [r["rss_kib"] for r in late])
    mismatches = busy.get("controls", {}).get("mismatches", last["mismatches"])
    completed = busy.get("controls", {}).get("sessions_completed", last["sessions_completed"])
    round_trips = busy.get("controls", {}).get("round_trips", 0)
    churned = sum(s["agents"]["churned"] for s in idle)
    errors = sum(s["errors"]["total"] for s in summaries.values())
    errors_by_op = {}
    for s in summaries.values():
        for op, n in s["errors"]["by_op"].items():
            errors_by_op[op] = errors_by_op.get(op, 0) + n

    checks = [
        (f"RSS range after warm-up {rss_range:.1%} <= {RSS_RANGE:.0%}", rss_range <= RSS_RANGE),
        (f"descriptor range after warm-up {fd_range:.1%} <= {FD_RANGE:.0%}", fd_range <= FD_RANGE),
        (f"echo mismatches {mismatches} == 0", mismatches == 0),
        (f"reloads failed {a.reload_failures} == 0", a.reload_failures == 0 and a.reloads > 0),
        (f"gateway logged {a.reloaded_events} reloads for {a.reloads} asked", a.reloaded_events == a.reloads),
    ]
    ok = all(c for _, c in checks)
    for text, passed in checks:
        print(("PASS " if passed else "FAIL ") + text)

    date = os.path.basename(a.csv)[len("soak-") : -len(".csv")]
    plotted = plot(rows, a.warmup, a.png, a.title)
    first = rows[0]
    mib = lambda kib: f"{kib / 1024:.1f} MiB"
    lines = [
        BEGIN,
        f"Run {date} UTC on {os.cpu_count()} cores, Linux {platform.release()}; ringway {a.commit}. {a.setup}.",
        "",
        "| figure | first sample | end | min / max after warm-up |",
        "|---|---|---|---|",
        f"| gateway RSS | {mib(first['rss_kib'])} | {mib(last['rss_kib'])} | "
        f"{mib(rss_min)} / {mib(rss_max)} (range {rss_range:.1%}; slope {rss_slope_kib_h / 1024:+.1f} MiB/h, "
        f"{late_slope_kib_h / 1024:+.1f} MiB/h over the last half) |",
        f"| gateway descriptors | {first['fds']:,} | {last['fds']:,} | {fd_min:,} / {fd_max:,} (range {fd_range:.1%}) |",
        f"| connections open (/metrics) | {first['connections_open']:,} | {last['connections_open']:,} | |",
        f"| agents up | {first['agents_up']:,} | {last['agents_up']:,} | |",
        "",
        f"Echo mismatches: **{mismatches}** in {round_trips:,} round trips; sessions completed: {completed:,}; "
        f"agents churned (hung up and registered again): {churned:,}; reloads: {a.reloads} "
        f"({a.reload_failures} failed); load generator errors: {errors}"
        + (f" (by operation: {errors_by_op})" if errors_by_op else "")
        + ".",
        "",
        "Verdict: " + ("**flat, no mismatch**" if ok else "**FAILED**: " + "; ".join(t for t, c in checks if not c)),
    ]
    if plotted:
        lines += ["", f"![soak: RSS, descriptors, mismatches over time]({os.path.basename(a.png)})"]
    lines.append(END)
    block = "\n".join(lines)
    print(block)

    with open(a.readme) as f:
        text = f.read()
    if BEGIN in text and END in text:
        head, rest = text.split(BEGIN, 1)
        text = head + block + rest.split(END, 1)[1]
    else:
        text = text.rstrip("\n") + "\n\n" + block + "\n"
    with open(a.readme, "w") as f:
        f.write(text)
    return 0 if ok else 1


if __name__ == "__main__":
    sys.exit(main())
