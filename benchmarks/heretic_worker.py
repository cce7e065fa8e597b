"""Worker for bench_heretic.py: run heretic-llm's optimization headless and save its model.

Runs in the heretic venv (``.bench-venvs/heretic``); imports nothing from steerlab.

heretic (p-e-w/heretic) has no batch mode: after its Optuna study it asks, through
``questionary`` menus, which Pareto-optimal trial to use and what to do with it. This worker
runs heretic's own ``heretic.main.run()`` unchanged and answers those menus from code:

* "Which trial do you want to use?" -> the trial with the fewest refusals whose KL divergence
  is at most ``--kl-cap`` (heretic's menu warns that KL above 0.5 usually means damage); if no
  trial is under the cap, the one with the lowest KL. The whole Pareto front is recorded.
* "What do you want to do with the decensored model?" -> "Save the model to a local folder"
  (merged, ``export_strategy = "merge"``), then back out and exit.
* Any other question raises, so the worker can never hang waiting for a terminal.

Settings go in a ``config.toml`` written into the work dir (heretic reads it from the current
directory; ``sys.argv`` is emptied so its CLI parser sees no flags). Prompt sets come from
``--prompts`` (a JSON file prepared by bench_heretic.py) and are handed to heretic as
``datasets.save_to_disk`` folders, a source its ``load_prompts`` supports (plain-text files
would split the prompts that contain newlines).

Writes ``result.json`` (timings, per-trial metrics, the chosen trial, settings) and the merged
model into ``--out/heretic-model``.
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import statistics
import sys
import time
import traceback
from pathlib import Path
from typing import Any

HERETIC_VERSION = "1.4.0"  # the version whose menus and internals this worker drives


def args_() -> argparse.Namespace:
    p = argparse.ArgumentParser()
    p.add_argument("--model-dir", required=True)
    p.add_argument("--out", required=True)
    p.add_argument("--prompts", required=True, help="JSON: train/val harmful/harmless lists")
    p.add_argument("--trials", type=int, required=True)
    p.add_argument("--startup-trials", type=int, required=True)
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--batch-size", type=int, default=16)
    p.add_argument("--response-tokens", type=int, default=32)
    p.add_argument("--kl-cap", type=float, default=0.5)
    p.add_argument("--system-prompt", default="auto")
    p.add_argument("--threads", type=int, default=0, help="torch threads (0: torch's choice)")
    p.add_argument(
        "--prefix-check",
        action="store_true",
        help="let heretic look for a common response prefix (200 generations)",
    )
    return p.parse_args()


def versions() -> dict[str, str]:
    from importlib.metadata import PackageNotFoundError, version

    out = {"python": sys.version.split()[0]}
    for pkg in ("heretic-llm", "torch", "transformers", "optuna", "peft", "datasets"):
        try:
            out[pkg] = version(pkg)
        except PackageNotFoundError:
            out[pkg] = "not installed"
    return out


def default_system_prompt(model_dir: str) -> tuple[str, str]:
    """The system prompt the chat template inserts when none is given, so that heretic (which
    always sends one) renders prompts exactly as steerlab does (steerlab sends none)."""
    from transformers import AutoTokenizer

    tok = AutoTokenizer.from_pretrained(model_dir)
    user = [{"role": "user", "content": "PROBE"}]
    plain = tok.apply_chat_template(user, tokenize=False, add_generation_prompt=True)
    mark = "\x00SYSTEM\x00"
    with_sys = tok.apply_chat_template(
        [{"role": "system", "content": mark}, *user], tokenize=False, add_generation_prompt=True
    )
    if mark not in with_sys:
        return "", "the chat template drops system messages"
    head, tail = with_sys.split(mark, 1)
    if plain.startswith(head) and plain.endswith(tail):
        default = plain[len(head) : len(plain) - len(tail)]
        sys_chat = [{"role": "system", "content": default}, *user]
        if tok.apply_chat_template(sys_chat, tokenize=False, add_generation_prompt=True) == plain:
            return default, "identical rendering to the template's default (no system message)"
    return "", "the template has no default system prompt: renderings differ"


def save_sets(prompts: dict[str, list[str]], root: Path) -> dict[str, dict[str, Any]]:
    """Each list as a ``datasets`` folder with a ``text`` column (heretic's load_from_disk path)."""
    from datasets import Dataset

    specs = {}
    for name, items in prompts.items():
        d = root / name
        if d.exists():
            shutil.rmtree(d)
        Dataset.from_dict({"text": list(items)}).save_to_disk(str(d))
        specs[name] = {"dataset": str(d), "split": "train", "column": "text"}
    return specs


def write_config(
    a: argparse.Namespace, specs: dict[str, dict[str, Any]], system: str, out: Path
) -> dict[str, Any]:
    import tomli_w

    cfg: dict[str, Any] = {
        "model": a.model_dir,
        "dtypes": ["float32"],  # as steerlab runs on CPU; bf16 is slower on CPU anyway
        "device_map": "cpu",
        "batch_size": a.batch_size,  # fixed: the auto search generates at batch sizes 1..128
        "max_response_length": a.response_tokens,
        "n_trials": a.trials,
        "n_startup_trials": a.startup_trials,
        "seed": a.seed,
        "study_checkpoint_dir": str(out / "checkpoints"),
        "export_strategy": "merge",
        "system_prompt": system,
        "good_prompts": specs["train_harmless"],
        "bad_prompts": specs["train_harmful"],
        "good_evaluation_prompts": specs["val_harmless"],
        "bad_evaluation_prompts": specs["val_harmful"],
    }
    if not a.prefix_check:
        cfg["response_prefix"] = ""  # skip the common-prefix probe (Qwen2.5 has none)
    (out / "config.toml").write_text(tomli_w.dumps(cfg))
    return cfg


class Driver:
    """Answers heretic's menus; records when each phase ended."""

    def __init__(self, save_dir: Path, kl_cap: float) -> None:
        self.save_dir = save_dir
        self.kl_cap = kl_cap
        self.marks: dict[str, float] = {}
        self.loadavg: dict[str, list[float]] = {}
        self.pareto: list[dict[str, Any]] = []
        self.chosen: dict[str, Any] | None = None
        self.saved = False
        self.picked = False

    def mark(self, name: str) -> None:
        self.marks.setdefault(name, time.perf_counter())
        self.loadavg.setdefault(name, [round(x, 2) for x in os.getloadavg()])

    def select(self, message: str, choices: list[Any]) -> Any:
        if message.startswith("How would you like to proceed"):
            return "restart"  # a stale checkpoint: never reuse it
        if message.startswith("Which trial do you want to use"):
            if self.picked:
                return ""  # second visit, after saving: exit heretic
            self.mark("optimization_done")
            trials = [c.value for c in choices if not isinstance(c.value, str)]
            self.pareto = [trial_row(t) for t in trials]
            under = [t for t in trials if t.user_attrs["kl_divergence"] <= self.kl_cap]
            # The front comes sorted by refusals (then KL): first under the cap = fewest
            # refusals within budget; otherwise the gentlest edit.
            pick = under[0] if under else min(trials, key=lambda t: t.user_attrs["kl_divergence"])
            self.chosen = {
                **trial_row(pick),
                "rule": (
                    f"fewest refusals with KL <= {self.kl_cap:g}"
                    if under
                    else f"no trial with KL <= {self.kl_cap:g}: lowest KL"
                ),
            }
            self.picked = True
            print(
                f"[worker] picked trial {self.chosen['index']}: {self.chosen['rule']}", flush=True
            )
            return pick
        if message.startswith("What do you want to do with the decensored model"):
            if not self.saved:
                self.mark("restored")
                return "Save the model to a local folder"
            self.mark("saved")
            return ""
        raise RuntimeError(f"heretic asked an unexpected question: {message!r}")

    def path(self, message: str) -> str:
        if self.save_dir.exists():
            shutil.rmtree(self.save_dir)
        self.saved = True
        return str(self.save_dir)

    def text(self, message: str, *_a: Any, **_k: Any) -> str:
        raise RuntimeError(f"heretic asked for text input: {message!r}")


def trial_row(t: Any) -> dict[str, Any]:
    dur = None
    if t.datetime_start is not None and t.datetime_complete is not None:
        dur = (t.datetime_complete - t.datetime_start).total_seconds()
    ua = t.user_attrs
    return {
        "index": ua.get("index"),
        "refusals": ua.get("refusals"),
        "n_bad_prompts": ua.get("n_bad_prompts"),
        "base_refusals": ua.get("base_refusals"),
        "kl_divergence": ua.get("kl_divergence"),
        "direction_index": ua.get("direction_index"),
        "parameters": ua.get("parameters"),
        "values": list(t.values) if t.values else None,
        "state": t.state.name,
        "duration_s": dur,
        "start": t.datetime_start.timestamp() if t.datetime_start else None,
    }


def install_driver(drv: Driver) -> None:
    import heretic.main as hm

    hm.prompt_select = drv.select
    hm.prompt_path = drv.path
    hm.prompt_text = drv.text

    base_model, base_eval = hm.Model, hm.Evaluator

    class TimedModel(base_model):  # type: ignore[misc, valid-type]
        def __init__(self, *a: Any, **k: Any) -> None:
            super().__init__(*a, **k)
            drv.mark("model_loaded")

    class TimedEvaluator(base_eval):  # type: ignore[misc, valid-type]
        def __init__(self, *a: Any, **k: Any) -> None:
            drv.mark("prompts_loaded")  # heretic loads the direction prompts first
            super().__init__(*a, **k)
            drv.mark("baseline_evaluated")

    hm.Model = TimedModel
    hm.Evaluator = TimedEvaluator


def study_trials(ckpt_dir: Path) -> list[dict[str, Any]]:
    import optuna
    from optuna.storages import JournalStorage
    from optuna.storages.journal import JournalFileBackend

    files = sorted(ckpt_dir.glob("*.jsonl"))
    if not files:
        return []
    storage = JournalStorage(JournalFileBackend(str(files[0])))
    study = optuna.load_study(study_name="heretic", storage=storage)
    return [trial_row(t) for t in study.trials]


def main() -> None:
    a = args_()
    out = Path(a.out)
    out.mkdir(parents=True, exist_ok=True)
    for k in [k for k in os.environ if k.startswith("HERETIC_")]:
        del os.environ[k]  # heretic reads HERETIC_* settings from the environment
    os.environ.update(
        {
            "HF_HUB_OFFLINE": "1",
            "TRANSFORMERS_OFFLINE": "1",
            "HF_DATASETS_OFFLINE": "1",
            "TOKENIZERS_PARALLELISM": "false",
        }
    )
    result: dict[str, Any] = {"ok": False, "versions": versions()}
    try:
        if result["versions"]["heretic-llm"] != HERETIC_VERSION:
            print(
                f"[worker] warning: written for heretic-llm {HERETIC_VERSION}, found "
                f"{result['versions']['heretic-llm']}",
                flush=True,
            )
        prompts = json.loads(Path(a.prompts).read_text())
        system, why = default_system_prompt(a.model_dir)
        if a.system_prompt != "auto":
            system, why = a.system_prompt, "given with --system-prompt"
        result["system_prompt"] = {"text": system, "why": why}
        specs = save_sets(
            {
                k: prompts[k]
                for k in ("train_harmful", "train_harmless", "val_harmful", "val_harmless")
            },
            out / "data",
        )
        ckpt = out / "checkpoints"
        shutil.rmtree(ckpt, ignore_errors=True)
        result["config"] = write_config(a, specs, system, out)
        result["sizes"] = {k: len(v) for k, v in prompts.items()}
        drv = Driver(out / "heretic-model", a.kl_cap)
        install_driver(drv)
        import heretic.main as hm
        import torch

        if a.threads > 0:
            torch.set_num_threads(a.threads)
        result["torch_threads"] = torch.get_num_threads()
        os.chdir(out)  # heretic reads ./config.toml
        sys.argv = ["heretic"]
        drv.mark("start")
        hm.run()
        drv.mark("end")
        trials = study_trials(ckpt)
        done = [t for t in trials if t["state"] == "COMPLETE"]
        starts = [t["start"] for t in trials if t["start"] is not None]
        m = drv.marks
        t0 = m["start"]
        phases = {k: round(v - t0, 2) for k, v in sorted(m.items(), key=lambda kv: kv[1])}
        # Optimization = first trial start (wall clock) to the trial menu; the trial
        # timestamps are datetimes, so convert the menu mark through time.time().
        opt_s = None
        if starts and "optimization_done" in m:
            wall_at_menu = time.time() - (time.perf_counter() - m["optimization_done"])
            opt_s = round(wall_at_menu - min(starts), 2)
        durs = [t["duration_s"] for t in done if t["duration_s"] is not None]
        result.update(
            {
                "ok": drv.saved and (out / "heretic-model" / "config.json").is_file(),
                "model_dir": str(out / "heretic-model"),
                "trials": trials,
                "n_trials_completed": len(done),
                "pareto_front": drv.pareto,
                "chosen": drv.chosen,
                "timings": {
                    "phases_since_start_s": phases,
                    "load_model_s": round(m["model_loaded"] - t0, 2)
                    if "model_loaded" in m
                    else None,
                    "setup_s": (
                        round(min(starts) - (time.time() - (time.perf_counter() - t0)), 2)
                        if starts
                        else None
                    ),
                    "baseline_eval_s": (
                        round(m["baseline_evaluated"] - m["prompts_loaded"], 2)
                        if "baseline_evaluated" in m and "prompts_loaded" in m
                        else None
                    ),
                    "directions_s": (
                        round(
                            min(starts)
                            - (time.time() - (time.perf_counter() - m["baseline_evaluated"])),
                            2,
                        )
                        if starts and "baseline_evaluated" in m
                        else None
                    ),
                    "optimization_s": opt_s,
                    "trial_s": durs,
                    "trial_median_s": statistics.median(durs) if durs else None,
                    "save_s": (
                        round(m["saved"] - m["restored"], 2)
                        if "saved" in m and "restored" in m
                        else None
                    ),
                    "total_s": round(m["end"] - t0, 2),
                },
                "loadavg": drv.loadavg,
            }
        )
        if not result["ok"]:
            result["error"] = "heretic finished without saving a model"
    except BaseException as e:  # report everything, KeyboardInterrupt too
        result["error"] = f"{type(e).__name__}: {e}"
        result["traceback"] = traceback.format_exc()
    (out / "result.json").write_text(json.dumps(result, indent=2, default=str))
    print(f"[worker] wrote {out / 'result.json'} (ok={result['ok']})", flush=True)


if __name__ == "__main__":
    main()
