"""Benchmark of ``spfluo report`` on the demo project (issue 18): first report, then again.

    python benchmarks/report.py [--quick] [--gpu] --out RESULT.json

Runs ``spfluo demo`` (``--quick``: its smaller data) in a fresh spfluo home, then
``spfluo report`` into a new folder twice: ``first`` draws the figures of every output,
``again`` finds them unchanged and reuses them (:mod:`spfluo.figcache`).  Then the
project's own report folder, which the demo wrote (with every figure for the default
demo, none for ``--quick``), is reported again (``demo_folder``).

Per case: ``wall_s`` (the command, Python start-up included), ``figures`` (PNG files of
the page) and ``load_avg_1min`` at its start.  Target: ``again`` and, for the default
demo, ``demo_folder`` under 10 s.  ``--gpu`` is accepted for the common interface; the
report runs on the CPU.
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
import time



def _spfluo(home: str, *args: str) -> float:
    """Run ``spfluo ARGS`` in ``home``; its wall time in seconds."""
    env = dict(os.environ, SPFLUO_HOME=home)
    start = time.perf_counter()
    subprocess.run([sys.executable, "-m", "spfluo.cli", *args], env=env, cwd=home, check=True,
                   stdout=subprocess.DEVNULL)
    return time.perf_counter() - start


def _case(home: str, folder: str | None) -> dict:
    load = os.getloadavg()[0]
    args = ["report", "bench"] + (["--out", folder] if folder else [])
    wall = _spfluo(home, *args)
    where = folder or os.path.join(home, "projects", "bench", "report")
    figures = sum(name.endswith(".png") and name.startswith("run") for name in os.listdir(where))
    return {"wall_s": round(wall, 2), "figures": figures, "load_avg_1min": load}


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="the quick demo (about 2 minutes)")
    parser.add_argument("--gpu", action="store_true", help="accepted; the report runs on the CPU")
    parser.add_argument("--out", required=True, help="JSON file of the results")
    args = parser.parse_args(argv)
    with tempfile.TemporaryDirectory(prefix="spfluo-bench-report-") as home:
        demo = ["demo", "--project", "bench"] + (["--quick"] if args.quick else [])
        results = {"quick": args.quick, "demo_wall_s": round(_spfluo(home, *demo), 1)}
        folder = os.path.join(home, "site")
        results["first"] = _case(home, folder)
        results["again"] = _case(home, folder)
        results["demo_folder"] = _case(home, None)
    with open(args.out, "w", encoding="utf-8") as fh:
        json.dump(results, fh, indent=2)
    print(json.dumps(results, indent=2))
    return 0


if __name__ == "__main__":
    sys.exit(main())
