"""`spfluo catalog`: sync, query (table and CSV), check, migrate, exit codes.

The first sync runs as a fresh process (the real command); the rest call
``spfluo.cli.main`` in this process (same parser and code, no start-up cost).
"""

import csv
import io
import os
import subprocess
import sys

from spfluo.cli import main

from ._fixtures import N_RUNS


def run(capsys, *args, cwd=None):
    old = os.getcwd()
    if cwd:
        os.chdir(cwd)
    try:
        code = main([str(a) for a in args])
    finally:
        os.chdir(old)
    out = capsys.readouterr()
    return code, out.out, out.err


def test_help():
    for args in (["catalog", "--help"], ["catalog", "sync", "--help"],
                 ["catalog", "query", "--help"], ["catalog", "query", "runs", "--help"],
                 ["catalog", "query", "uses", "--help"],
                 ["catalog", "check", "--help"], ["catalog", "migrate", "--help"]):
        out = subprocess.run([sys.executable, "-m", "spfluo.cli", *args], capture_output=True,
                             text=True, timeout=60)
        assert out.returncode == 0, (args, out.stderr)
        assert "usage: spfluo catalog" in out.stdout


def test_sync_query_check(root, tmp_path, catalog_data, template, capsys):
    url = f"sqlite:///{tmp_path / 'cat.sqlite'}"
    out = subprocess.run([sys.executable, "-m", "spfluo.cli", "catalog", "sync", root, "--db", url],
                         capture_output=True, text=True, timeout=300)
    assert out.returncode == 0, out.stderr
    assert "3 project(s) found, 3 read, 0 unchanged, 0 could not be read" in out.stdout
    assert f"read     {root}/alpha: {N_RUNS} run(s)" in out.stdout
    code, text, _ = run(capsys, "catalog", "sync", root, "--db", url)
    assert code == 0 and "3 project(s) found, 0 read, 3 unchanged" in text

    code, text, err = run(capsys, "catalog", "query", "uses", catalog_data["psf"], "--db", url,
                          "--format", "csv")
    assert code == 0, err
    rows = list(csv.DictReader(io.StringIO(text)))
    assert sorted((r["project"], int(r["run"])) for r in rows) == sorted(
        (p, template[1][k]) for p in ("alpha", "beta", "gamma") for k in ("recon", "recon2"))
    assert {float(r["resolution_um"]) for r in rows} == {0.12, 0.2}

    code, text, err = run(capsys, "catalog", "query", "runs", "--db", url, "--protocol",
                          "ImportFluoImages", "--param", "voxelSizeZ=0.25", "--output", "cells.csv",
                          "--format", "csv", cwd=tmp_path)
    assert code == 0, err
    assert "wrote 3 row(s) to cells.csv" in text
    rows = list(csv.DictReader(open(tmp_path / "cells.csv")))
    assert [r["label"] for r in rows] == ["cells"] * 3

    code, text, _ = run(capsys, "catalog", "query", "best-resolution", "--db", url)
    assert code == 0 and "outputVolume" in text and "0.12" in text
    code, text, _ = run(capsys, "catalog", "query", "runs", "--db", url, "--status", "failed")
    assert text.count(" failed ") == 6 and "No file matches" in text
    code, text, _ = run(capsys, "catalog", "check", "--db", url)
    assert code == 0 and text.strip() == "catalog consistent"
    code, text, _ = run(capsys, "catalog", "migrate", "--db", url)
    assert code == 0 and "at schema revision 0001" in text


def test_exit_codes(root, tmp_path, capsys):
    url = f"sqlite:///{tmp_path / 'cat.sqlite'}"
    broken = os.path.join(root, "broken")
    os.mkdir(broken)
    with open(os.path.join(broken, "project.sqlite"), "wb") as f:
        f.write(b"garbage" * 64)
    code, text, err = run(capsys, "catalog", "sync", root, "--db", url, "--quiet")
    assert code == 1 and f"FAILED   {broken}" in err
    assert "3 read" in text and "1 could not be read" in text
    code, _, err = run(capsys, "catalog", "query", "runs", "--db", url, "--param", "nonsense")
    assert code == 2 and "write NAME=VALUE" in err
    code, _, err = run(capsys, "catalog", "query", "runs", "--db",
                       f"sqlite:///{tmp_path / 'none.sqlite'}")
    assert code == 2 and "is empty" in err
    code, _, err = run(capsys, "catalog", "sync", tmp_path / "nowhere", "--db", url)
    assert code == 2 and "is no folder" in err
    code, _, err = run(capsys, "catalog", "sync", root, "--db", "oracle://x@y/z")
    assert code == 2 and "supports SQLite and PostgreSQL" in err
    code, _, err = run(capsys, "catalog", "sync", root, "--db", url, "--jobs", "0")
    assert code == 2 and "jobs must be >= 1" in err
