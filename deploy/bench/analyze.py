#!/usr/bin/env python3
"""Reads the per-call and health CSV files `crm bench` writes and prints `key=value` results for
the reliability targets (T7 overload recovery, T8 database outage, T9 SIGTERM), and merges report
sections. Used by deploy/bench/run; standard library only.

    analyze.py recovery CALLS.csv LIMIT_US
    analyze.py outage CALLS.csv HEALTH.csv STOP_US START_US READY_US
    analyze.py sigterm CALLS.csv KILL_US EXIT_US NOTICE_MS
    analyze.py merge REPORT.md SECTIONS_DIR HEADER.md NOTES.md
"""

import csv
import os
import re
import sys

UNAVAILABLE = 14


def calls(path):
    with open(path, newline="") as f:
        return [
            (int(r["start_unix_us"]), int(r["latency_us"]), int(r["code"]))
            for r in csv.DictReader(f)
        ]


def quantile(values, q):
    if not values:
        return 0
    values = sorted(values)
    return values[min(len(values) - 1, int(q * len(values)))]


def recovery(path, limit_us):
    """Seconds after the overload until every later one-second window has no failure and a p99
    within `limit_us`."""
    rows = calls(path)
    if not rows:
        print("recovery_s=n/a")
        return
    t0 = rows[0][0]
    windows = {}
    for start, latency, code in rows:
        windows.setdefault((start - t0) // 1_000_000, []).append((latency, code))
    last_bad = -1
    for second in sorted(windows):
        w = windows[second]
        bad = any(code != 0 for _, code in w) or quantile([l for l, _ in w], 0.99) > limit_us
        if bad:
            last_bad = second
    first = [quantile([l for l, _ in windows[s]], 0.99) for s in sorted(windows)][:3]
    print(f"recovery_s={last_bad + 1} first_windows_p99_us={'/'.join(map(str, first))}")


def outage(calls_path, health_path, stop_us, start_us, ready_us):
    rows = calls(calls_path)
    failures = [(s, l, c) for s, l, c in rows if c != 0]
    during = [(s, l, c) for s, l, c in failures if s + l >= stop_us]
    first_fail = min((s + l for s, l, _ in during), default=None)
    unavailable = sum(1 for _, _, c in during if c == UNAVAILABLE)
    codes = {}
    for _, _, c in during:
        codes[c] = codes.get(c, 0) + 1
    # Calls in flight or started while the database was down.
    down = [(s, l, c) for s, l, c in rows if s + l >= stop_us and s <= ready_us]
    fail_latencies = [l for _, l, c in down if c != 0]
    last_fail_end = max((s + l for s, l, c in failures), default=None)
    with open(health_path, newline="") as f:
        health = [(int(r["unix_us"]), r["status"]) for r in csv.DictReader(f)]
    not_serving = min((t for t, st in health if t >= stop_us and st != "SERVING"), default=None)
    serving_again = min((t for t, st in health if t >= start_us and st == "SERVING"), default=None)
    ms = lambda v, base: "n/a" if v is None else f"{(v - base) / 1000:.0f}"
    print(
        f"to_first_failure_ms={ms(first_fail, stop_us)} failures={len(during)} "
        f"unavailable={unavailable} codes={'/'.join(f'{k}:{v}' for k, v in sorted(codes.items())) or 'none'} "
        f"fail_p99_ms={quantile(fail_latencies, 0.99) / 1000:.0f} fail_max_ms={max(fail_latencies, default=0) / 1000:.0f} "
        f"to_not_serving_ms={ms(not_serving, stop_us)} "
        f"recovery_after_ready_ms={ms(last_fail_end, ready_us) if last_fail_end and last_fail_end > ready_us else 0} "
        f"serving_after_ready_ms={ms(serving_again, ready_us)} "
        f"db_restart_ms={(ready_us - start_us) / 1000:.0f}"
    )


def sigterm(calls_path, kill_us, exit_us, notice_ms):
    rows = calls(calls_path)
    notice_end = kill_us + notice_ms * 1000
    before = [r for r in rows if r[0] < kill_us]
    notice = [r for r in rows if kill_us <= r[0] < notice_end]
    after = [r for r in rows if r[0] >= notice_end]
    failed = lambda rs: sum(1 for r in rs if r[2] != 0)
    codes = {}
    for r in before + notice:
        if r[2] != 0:
            codes[r[2]] = codes.get(r[2], 0) + 1
    print(
        f"started_before={len(before)} failed_before={failed(before)} "
        f"started_in_notice={len(notice)} failed_in_notice={failed(notice)} "
        f"started_after={len(after)} refused_after={failed(after)} "
        f"codes={'/'.join(f'{k}:{v}' for k, v in sorted(codes.items())) or 'none'} "
        f"exit_ms={(exit_us - kill_us) / 1000:.0f}"
    )


SECTION = re.compile(r"<!-- (T\d+) -->\n.*?<!-- /\1 -->\n", re.S)


def merge(report, sections_dir, header, notes):
    """The header, then every target's section (the new one when this run measured it, else
    the one already in the report), then the hand-written notes."""
    old = {}
    if os.path.exists(report):
        with open(report) as f:
            for m in SECTION.finditer(f.read()):
                old[m.group(1)] = m.group(0)
    new = {}
    for name in os.listdir(sections_dir):
        with open(os.path.join(sections_dir, name)) as f:
            key = name.removesuffix(".md")
            new[key] = f"<!-- {key} -->\n{f.read().rstrip()}\n<!-- /{key} -->\n"
    with open(header) as f:
        out = f.read().rstrip() + "\n\n"
    for key in sorted(set(old) | set(new), key=lambda k: int(k[1:])):
        out += new.get(key, old.get(key)) + "\n"
    if os.path.exists(notes):
        with open(notes) as f:
            out += f.read()
    with open(report, "w") as f:
        f.write(out)


if __name__ == "__main__":
    cmd, args = sys.argv[1], sys.argv[2:]
    if cmd == "recovery":
        recovery(args[0], int(args[1]))
    elif cmd == "outage":
        outage(args[0], args[1], *map(int, args[2:5]))
    elif cmd == "sigterm":
        sigterm(args[0], int(args[1]), int(args[2]), int(args[3]))
    elif cmd == "merge":
        merge(*args)
    else:
        sys.exit(f"unknown command {cmd}")
