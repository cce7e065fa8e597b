"""Run a steerlab command and keep its result as an auditable file under benchmarks/results/.

    python benchmarks/record.py NAME -- steerlab compare -m smollm2-135m -b builtin:sentiment \\
        --out runs/compare-sentiment

The command runs as given (its run directory resumes as usual). Then the JSON it wrote
(``compare.json``, ``sweep.json``, ``probe.json``, ``summary.json`` in ``--out``) is stored as
``benchmarks/results/NAME.json`` with what makes it traceable: the command, the date, the
steerlab version and git commit (and whether the tree had uncommitted changes), the machine,
the wall time, and the model's identity and weights fingerprint as the run recorded them. Per-
prompt scores are kept; completion texts are cut to ``--max-chars`` characters.
``benchmarks/reproduce.sh NAME`` reruns a recorded command by name.
"""

from __future__ import annotations

import argparse
import json
import shlex
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent))

from _common import REPO, machine

RESULT_FILES = ("compare.json", "sweep.json", "probe.json", "summary.json")
TEXT_KEYS = {"completion", "completions", "text", "texts", "reply"}


def _git(*args: str) -> str:
    out = subprocess.run(["git", "-C", str(REPO), *args], capture_output=True, text=True)
    return out.stdout.strip()


def _cut(obj: Any, limit: int, key: str = "") -> Any:
    """``obj`` with completion texts cut to ``limit`` characters."""
    if isinstance(obj, dict):
        return {k: _cut(v, limit, k) for k, v in obj.items()}
    if isinstance(obj, list):
        return [_cut(v, limit, key) for v in obj]
    if isinstance(obj, str) and key in TEXT_KEYS and len(obj) > limit:
        return obj[:limit] + "…"
    return obj


def _out_dir(cmd: list[str]) -> Path:
    if "--out" not in cmd or cmd.index("--out") + 1 >= len(cmd):
        raise SystemExit("record.py: the command needs --out DIR (where its result is read)")
    return Path(cmd[cmd.index("--out") + 1])


def record(name: str, cmd: list[str], max_chars: int = 200) -> Path:
    out = _out_dir(cmd)
    # the code that runs is the tree as it is now, whatever is committed while it runs
    commit, dirty = _git("rev-parse", "HEAD"), bool(_git("status", "--porcelain", "-uno"))
    t0 = time.perf_counter()
    subprocess.run(cmd, check=True)
    wall = time.perf_counter() - t0
    found = [out / f for f in RESULT_FILES if (out / f).is_file()]
    if not found:
        raise SystemExit(f"record.py: no result file ({', '.join(RESULT_FILES)}) in {out}")
    result = json.loads(found[0].read_text())
    doc = {
        "name": name,
        "command": shlex.join(cmd),
        "date": time.strftime("%Y-%m-%d %H:%M:%S UTC", time.gmtime()),
        "git_commit": commit,
        "git_dirty": dirty,
        "steerlab_version": result.get("steerlab_version"),
        "machine": machine(),
        "wall_seconds": round(wall, 1),
        "source_file": found[0].name,
        "model": result.get("model"),
        "provenance": result.get("provenance"),
        "result": _cut(result, max_chars),
    }
    dest = REPO / "benchmarks" / "results" / f"{name}.json"
    dest.write_text(json.dumps(doc, indent=1, default=str) + "\n")
    print(f"recorded {dest.relative_to(REPO)} ({wall:.0f} s)")
    return dest


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("name", help="result name: benchmarks/results/NAME.json")
    p.add_argument("--max-chars", type=int, default=200, help="completion texts cut to this")
    p.add_argument("command", nargs=argparse.REMAINDER, help="-- then the command")
    args = p.parse_args()
    cmd = args.command[1:] if args.command[:1] == ["--"] else args.command
    if not cmd:
        p.error("give the command after --")
    record(args.name, cmd, args.max_chars)


if __name__ == "__main__":
    main()
