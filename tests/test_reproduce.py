"""``benchmarks/reproduce.sh``: a long run's journals move between machines through the repo."""

from __future__ import annotations

import os
import subprocess
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
SCRIPT = ROOT / "benchmarks" / "reproduce.sh"


def _sh(*args: str, env: dict[str, str]) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        ["bash", str(SCRIPT), *args], env={**os.environ, **env}, capture_output=True, text=True
    )


def test_a_kept_journal_seeds_a_fresh_run_and_never_overwrites_a_local_one(tmp_path: Path):
    runs, journals = tmp_path / "runs", tmp_path / "journals"
    # PYTHON=true stands in for the run itself: what is tested is what happens before it
    env = {"RUNS": str(runs), "JOURNALS": str(journals), "PYTHON": "true"}
    name = "compare-sentiment-quick"
    cache = runs / name / "cache"
    cache.mkdir(parents=True)
    (cache / "runs-abc.jsonl").write_text('{"id": "a", "value": 1}\n')
    (cache / "capture-abc.safetensors").write_bytes(b"x")  # not a journal: stays behind

    kept = _sh("--keep-journal", name, env=env)
    assert kept.returncode == 0, kept.stderr
    assert sorted(p.name for p in (journals / name).iterdir()) == ["runs-abc.jsonl"]
    assert "1 finished units" in kept.stdout

    fresh = tmp_path / "fresh"  # another machine: no run directory yet
    r = _sh(name, env={**env, "RUNS": str(fresh)})
    assert r.returncode == 0, r.stderr
    assert (fresh / name / "cache" / "runs-abc.jsonl").read_text() == '{"id": "a", "value": 1}\n'

    (cache / "runs-abc.jsonl").write_text('{"id": "a", "value": 1}\n{"id": "b", "value": 2}\n')
    (journals / name / "runs-abc.jsonl").write_text("")  # an older copy must not win
    assert _sh(name, env=env).returncode == 0
    assert len((cache / "runs-abc.jsonl").read_text().splitlines()) == 2


def test_keeping_a_journal_of_a_run_that_has_none_fails_clearly(tmp_path: Path):
    r = _sh("--keep-journal", "nothing", env={"RUNS": str(tmp_path), "JOURNALS": str(tmp_path)})
    assert r.returncode == 1
    assert "no journal" in r.stderr
