"""Run files: the journal survives a torn last line, and only steerlab-made dirs are deleted."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch

from steerlab.errors import SteerlabError
from steerlab.runs import MARKER, Journal, Run, RunCache, atomic_write, mark, remove_tree


def test_journal_drops_a_torn_last_line_and_appends_cleanly(tmp_path: Path) -> None:
    # Defect: a line torn by an interrupt (no newline, half a JSON object) was kept, and the
    # next put() was glued onto it, so both the torn item and the new one were lost on resume.
    path = tmp_path / "j.jsonl"
    whole = json.dumps({"id": "a", "value": {"x": 1}, "seconds": 0.5}) + "\n"
    torn = json.dumps({"id": "b", "value": [1, 2, 3], "seconds": 1.0})[:17]
    path.write_text(whole + torn)
    j = Journal(path)
    assert j.items == {"a": {"x": 1}}
    assert j.get("b") is None
    j.put("c", [4, 5], seconds=2.0)
    j.put("b", "redone")
    fresh = Journal(path)
    assert fresh.items == {"a": {"x": 1}, "c": [4, 5], "b": "redone"}
    assert fresh.seconds["c"] == 2.0
    assert all(json.loads(line) for line in path.read_text().splitlines())  # every line whole


def test_journal_hit_reports_earlier_compute_time(tmp_path: Path) -> None:
    cache = RunCache(tmp_path, base={"weights": "w1"})
    j = cache.journal("sweep", ["k"])
    j.put("item", 3, seconds=1.5)
    hits: list[tuple[str, float]] = []
    again = RunCache(tmp_path, base={"weights": "w1"}, on_hit=lambda s, t: hits.append((s, t)))
    assert again.journal("sweep", ["k"]).get("item") == 3
    assert hits == [("sweep", 1.5)]
    # Another model's weights: another journal, nothing reused.
    other = RunCache(tmp_path, base={"weights": "w2"})
    assert other.journal("sweep", ["k"]).get("item") is None


def test_cache_json_is_keyed_on_base_and_key(tmp_path: Path) -> None:
    calls: list[int] = []

    def compute() -> int:
        calls.append(1)
        return len(calls)

    a = RunCache(tmp_path, base="w1")
    assert a.json("s", [1], compute) == 1
    assert a.json("s", [1], compute) == 1 and a.hits == ["s"]
    assert a.json("s", [2], compute) == 2
    assert RunCache(tmp_path, base="w2").json("s", [1], compute) == 3
    assert [p for p in tmp_path.rglob("*") if ".tmp" in p.name] == []


def test_atomic_write_leaves_no_temporary_file(tmp_path: Path) -> None:
    target = tmp_path / "sub" / "f.json"
    atomic_write(target, b"one")
    atomic_write(target, b"two")
    assert target.read_bytes() == b"two"
    assert sorted(p.name for p in target.parent.iterdir()) == ["f.json"]


def test_remove_tree_deletes_only_steerlab_dirs(tmp_path: Path) -> None:
    mine = tmp_path / "mine"
    mine.mkdir()
    (mine / "notes.txt").write_text("keep")
    with pytest.raises(SteerlabError, match="not made by steerlab"):
        remove_tree(mine)
    assert (mine / "notes.txt").read_text() == "keep"
    made = tmp_path / "made"
    made.mkdir()
    (made / "x").write_text("x")
    mark(made, "export")
    assert (made / MARKER).is_file()
    remove_tree(made)
    assert not made.exists()
    run_dir = tmp_path / "run"
    Run(run_dir, kind="refusal")
    assert json.loads((run_dir / MARKER).read_text())["kind"] == "refusal"
    with pytest.raises(SteerlabError, match="would contain"):
        remove_tree(tmp_path, keep=(run_dir,))
    # A run directory is resumed, never replaced: it may hold the user's other files.
    (run_dir / "notes.txt").write_text("keep")
    with pytest.raises(SteerlabError, match="not an export or an organism"):
        remove_tree(run_dir)
    assert (run_dir / "notes.txt").read_text() == "keep"
    assert run_dir.exists()


def test_run_never_claims_a_directory_that_held_files(tmp_path: Path) -> None:
    """A Run in a user's non-empty directory writes there but does not mark it as steerlab's,
    so no later --overwrite can delete it."""
    home = tmp_path / "home"
    home.mkdir()
    (home / "thesis.tex").write_text("precious")
    Run(home, kind="refusal").write_json("report.json", {"ok": True})
    assert not (home / MARKER).exists()
    with pytest.raises(SteerlabError, match="not made by steerlab"):
        remove_tree(home)
    assert (home / "thesis.tex").read_text() == "precious"


def test_identity_covers_bfloat16_weights_and_the_adapter() -> None:
    """Half-precision weights fingerprint (numpy has no bfloat16), and the layer adapter is
    part of what cached results depend on."""
    import dataclasses

    from conftest import make_model, make_tokenizer

    from steerlab.models.adapter import get_adapter
    from steerlab.models.load import LoadedModel, model_info
    from steerlab.runs import model_identity

    m = make_model("llama").to(torch.bfloat16)
    ad = get_adapter(m)
    lm = LoadedModel(m, make_tokenizer(), ad, model_info(m, "tiny", ad))
    ident = model_identity(lm)
    assert ident["dtype"] == "torch.bfloat16" and len(ident["weights"]) == 16
    other = dataclasses.replace(lm, adapter=dataclasses.replace(ad, mlp_write="mlp.up_proj"))
    assert model_identity(other) != ident


def test_journal_counts_only_earlier_sessions_items_once(tmp_path: Path) -> None:
    """A resumed run adds what earlier sessions spent, once per item; items put in this
    session, or asked for again, are not "resumed" (a copied baseline made every compare run
    look resumed)."""
    hits: list[float] = []
    j = Journal(tmp_path / "j.jsonl", hits.append)
    j.put("a", {"x": 1}, 5.0)
    assert j.get("a") == {"x": 1} and hits == []
    again = Journal(tmp_path / "j.jsonl", hits.append)
    again.put("b", {"x": 2}, 7.0)
    for _ in range(3):
        assert again.get("a") == {"x": 1}
        assert again.get("b") == {"x": 2}
    assert hits == [5.0]
