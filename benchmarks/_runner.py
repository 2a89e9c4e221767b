"""The command line of a benchmark: each case in its own process (so that ``peak_rss_mb`` is
its own), one summary line per case, the JSON list of cases written after each one."""

from __future__ import annotations

import argparse
import json
import os
import resource
import subprocess
import sys


def peak_rss_mb() -> float:
    """Peak resident memory of this process, MB."""
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024.0


def cpu_seconds() -> float:
    """User + system CPU time of this process, seconds."""
    usage = resource.getrusage(resource.RUSAGE_SELF)
    return usage.ru_utime + usage.ru_stime


def main(script: str, doc: str, cases, run_case, keys, argv=None) -> int:
    """``cases(quick) -> {name: spec}``, ``run_case(name, spec, gpu) -> dict``; ``keys``
    are the metrics printed on each case's summary line."""
    parser = argparse.ArgumentParser(description=doc.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="reduced setting (about a minute)")
    parser.add_argument("--gpu", action="store_true", help="run on a CUDA GPU (CuPy)")
    parser.add_argument("--out", required=True, help="result JSON file")
    parser.add_argument("--case", help=argparse.SUPPRESS)  # internal: one case, JSON on stdout
    parser.add_argument("--only", nargs="*", help="run only these cases")
    args = parser.parse_args(argv)
    table = cases(args.quick)
    if args.case:
        print(json.dumps(run_case(args.case, table[args.case], args.gpu)))
        return 0
    results = []
    root = os.path.dirname(os.path.dirname(os.path.abspath(script)))
    for name in table:
        if args.only and name not in args.only:
            continue
        cmd = [sys.executable, os.path.abspath(script), "--out", args.out, "--case", name]
        cmd += ["--quick"] if args.quick else []
        cmd += ["--gpu"] if args.gpu else []
        proc = subprocess.run(cmd, capture_output=True, text=True, cwd=root)
        if proc.returncode != 0:
            print(f"{name}: FAILED\n{proc.stderr[-2000:]}", flush=True)
            results.append({"case": name, "error": proc.stderr[-500:]})
            continue
        res = json.loads(proc.stdout.strip().splitlines()[-1])
        results.append(res)
        print(f"{name}: " + ", ".join(f"{k}={res[k]}" for k in keys if k in res), flush=True)
        with open(args.out, "w") as fh:  # partial results survive an interruption
            json.dump(results, fh, indent=2)
    with open(args.out, "w") as fh:
        json.dump(results, fh, indent=2)
    return 0
