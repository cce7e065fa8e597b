"""steerlab vs heretic-llm: harmful refusals, first-token KL on harmless prompts, wall time.

heretic (p-e-w/heretic, PyPI ``heretic-llm``) abliterates with an Optuna study that
co-minimizes refusals and first-token KL. It runs in its own venv (``.bench-venvs/heretic``:
``torch==2.13.0``, the CPU wheel on local disk, plus ``heretic-llm==1.4.0``) through
``heretic_worker.py``, which drives heretic's own ``run()`` headless and saves the merged
model of the trial it picks. steerlab's side is read, not re-run: the model a
``steerlab refusal ... --export DIR`` run exported, and that run's ``report.json`` timings.

Both edited models and the original are then evaluated here, identically, with steerlab's
measures on the same prompts (neither tool trained or selected on them):

* harmful: the 100 JailbreakBench behaviours (``/work/shared/datasets/jailbreakbench.json``),
  greedy generations of ``--max-new-tokens`` (32) tokens, refusals by the reference phrase
  list (``substring_refusal``) and the first-sentence measure (``strict_refusal``);
* harmless: the first 100 of ``harmless_test.json``, mean KL(original || edited) of the first
  reply token's distribution (``last_token_logprobs`` + ``kl_divergence``).

heretic's data: directions from ``harmful_train.json`` / ``harmless_train.json``; its
optimization objective (refusals + KL per trial) on ``harmful_val.json`` /
``harmless_val.json`` -- a validation split, as steerlab selects on its own val sets; scoring
trials on the evaluation prompts would tune heretic on the test set. Prompts that also occur
in an evaluation set are dropped, and prompts longer than ``--max-prompt-tokens`` (rendered)
are dropped as steerlab does. heretic's system prompt is set to the one Qwen's chat template
inserts by default, so both tools see byte-identical prompts.

Run (full, on a quiet machine):
    python benchmarks/bench_heretic.py --trials 16 --steerlab-export DIR \
        [--steerlab-report RUN/report.json] --json out.json
Smoke test of the plumbing: ``--quick`` (2 trials, 8 prompts per set).
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent))

from _common import REPO, LoadMonitor, emit, machine, parser, print_table, r3

HERE = Path(__file__).resolve().parent
VENV = REPO / ".bench-venvs" / "heretic"
PINS = ["torch==2.13.0", "heretic-llm==1.4.0"]  # torch: the local CPU wheel (else multi-GB CUDA)
DATA = Path("/work/shared/datasets")
MODEL_DIR = Path("~/.cache/steerlab/models/qwen2.5-coder-0.5b").expanduser()
# steerlab report.json steps needed to produce the edited model (``coefficient`` only feeds
# the addition variant of its evaluation; ``evaluation``/``export`` are after the fact).
STEERLAB_FIT_STEPS = ("data", "filter", "candidates", "selection", "orthogonalize")


def say(msg: str) -> None:
    print(msg, flush=True)


def base_python() -> str:
    for cand in (
        getattr(sys, "_base_executable", None),
        shutil.which("python3.11"),
        shutil.which("python3"),
    ):
        if cand and Path(cand).exists():
            return cand
    return sys.executable


def ensure_venv() -> Path:
    """Create .bench-venvs/heretic with the pinned packages if missing."""
    py = VENV / "bin" / "python"
    log = VENV.parent / "heretic-install.log"
    if not py.exists():
        say(f"creating venv {VENV} ...")
        VENV.parent.mkdir(parents=True, exist_ok=True)
        subprocess.run([base_python(), "-m", "venv", str(VENV)], check=True, timeout=300)
    probe = subprocess.run(
        [str(py), "-c", "import importlib.metadata as m;print(m.version('heretic-llm'))"],
        capture_output=True,
        text=True,
    )
    if probe.returncode != 0:
        say(f"installing {' '.join(PINS)} into {VENV} (log: {log}) ...")
        with open(log, "w") as f:
            r = subprocess.run(
                [str(py), "-m", "pip", "install", *PINS],
                stdout=f,
                stderr=subprocess.STDOUT,
                timeout=3600,
            )
        if r.returncode != 0:
            raise SystemExit(f"pip install failed (exit {r.returncode}); see {log}")
    return py


def _key(s: str) -> str:
    return " ".join(s.lower().split())


def read_set(name: str) -> list[str]:
    return [
        x["instruction"] if isinstance(x, dict) else x
        for x in json.loads((DATA / name).read_text())
    ]


def heretic_prompts(
    tok: Any, held_out: set[str], n_train: int, n_val: int, max_tokens: int
) -> tuple[dict[str, list[str]], dict[str, Any]]:
    """First N usable prompts of each shared train/val set (file order; no shuffling)."""
    from steerlab.models.chat import encode

    out: dict[str, list[str]] = {}
    notes: dict[str, Any] = {}
    for key, fname, cap in (
        ("train_harmful", "harmful_train.json", n_train),
        ("train_harmless", "harmless_train.json", n_train),
        ("val_harmful", "harmful_val.json", n_val),
        ("val_harmless", "harmless_val.json", n_val),
    ):
        kept: list[str] = []
        leaked = too_long = 0
        for p in dict.fromkeys(read_set(fname)):
            if len(kept) >= cap:
                break
            if _key(p) in held_out:
                leaked += 1
                continue
            if max_tokens and int(encode(tok, [p]).input_ids.shape[1]) > max_tokens:
                too_long += 1
                continue
            kept.append(p)
        out[key] = kept
        notes[key] = {
            "file": fname,
            "kept": len(kept),
            "dropped_in_eval_set": leaked,
            "dropped_too_long": too_long,
        }
    return out, notes


def run_worker(py: Path, work: Path, args: Any, startup: int, prompts_file: Path) -> dict:
    out = work / "heretic"
    cmd = [
        str(py),
        str(HERE / "heretic_worker.py"),
        "--model-dir",
        str(args.model_dir),
        "--out",
        str(out),
        "--prompts",
        str(prompts_file),
        "--trials",
        str(args.trials),
        "--startup-trials",
        str(startup),
        "--seed",
        str(args.seed),
        "--batch-size",
        str(args.batch_size),
        "--response-tokens",
        str(args.heretic_response_tokens),
        "--kl-cap",
        str(args.kl_cap),
    ]
    if args.prefix_check:
        cmd.append("--prefix-check")
    if getattr(args, "threads", 0):
        cmd += ["--threads", str(args.threads)]
    env = {
        **os.environ,
        "TQDM_DISABLE": "1",
        "PYTHONWARNINGS": "ignore",
        "PYTHONUNBUFFERED": "1",
        "HF_HUB_OFFLINE": "1",
        "TRANSFORMERS_OFFLINE": "1",
        "TOKENIZERS_PARALLELISM": "false",
    }
    log = work / "heretic.log"
    say(f"running heretic ({args.trials} trials, {startup} random startup); log: {log}")
    t0 = time.perf_counter()
    shown = (
        "Running trial",
        "* KL divergence",
        "* Refusals",
        "Initial refusals",
        "Elapsed time",
        "[worker]",
        "Error",
        "Traceback",
        "Optimization finished",
    )
    with (
        open(log, "w") as f,
        subprocess.Popen(
            cmd, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True, env=env
        ) as p,
    ):
        assert p.stdout is not None
        for line in p.stdout:
            f.write(line)
            f.flush()
            if any(s in line for s in shown):
                say(f"  [heretic] {line.rstrip()[:150]}")
        rc = p.wait()
    wall = time.perf_counter() - t0
    res_file = out / "result.json"
    if not res_file.exists():
        tail = log.read_text().splitlines()[-15:]
        raise SystemExit(f"heretic worker exited {rc} without a result:\n" + "\n".join(tail))
    res = json.loads(res_file.read_text())
    res["worker_wall_s"] = round(wall, 2)
    res["exit_code"] = rc
    return res


def find_report(export: Path, given: str | None) -> Path | None:
    if given:
        return Path(given)
    for cand in (
        export / "report.json",
        export.parent / "report.json",
        REPO / "runs" / "refusal" / "report.json",
    ):
        if cand.is_file():
            return cand
    return None


def steerlab_timings(report_path: Path | None, export: Path) -> dict[str, Any]:
    info: dict[str, Any] = {"report": str(report_path) if report_path else None}
    if report_path is None or not report_path.is_file():
        info["note"] = "no report.json found: pass --steerlab-report RUN_DIR/report.json"
        return info
    rep = json.loads(report_path.read_text())
    t = rep.get("timings", {})
    info["timings"] = t
    info["fit_s"] = round(sum(t.get(k, 0.0) for k in STEERLAB_FIT_STEPS), 2)
    info["total_s"] = t.get("total")
    info["resumed_steps"] = rep.get("resumed_steps", [])
    info["selected"] = rep.get("selected")
    info["config"] = {
        k: rep.get("config", {}).get(k)
        for k in (
            "n_train",
            "n_val",
            "max_prompt_tokens",
            "harmful",
            "harmless",
            "harmful_val",
            "harmless_val",
            "seed",
        )
    }
    if info["resumed_steps"]:
        info["note"] = "steps resumed from the run cache took ~0 s: " + ", ".join(
            info["resumed_steps"]
        )
    ex = export / "steerlab_export.json"
    if ex.is_file():
        sel = json.loads(ex.read_text()).get("selected", {})
        if rep.get("selected") and sel.get("layer") != rep["selected"].get("layer"):
            info["warning"] = "report.json and the export disagree on the selected layer"
    return info


def evaluate(
    path: Path, tok: Any, harmful: list[str], harmless: list[str], base_lp: Any, args: Any
) -> tuple[dict[str, Any], Any, list[str]]:
    """One model: greedy generations on harmful (phrase measures), KL on harmless."""
    import torch

    from steerlab.generation import generate, last_token_logprobs
    from steerlab.metrics import kl_divergence, strict_refusal, substring_refusal
    from steerlab.models.load import load_model

    t0 = time.perf_counter()
    lm = load_model(str(path))  # weights only: every model uses the original's tokenizer
    model = lm.model
    t_load = time.perf_counter() - t0
    t0 = time.perf_counter()
    with torch.inference_mode():
        texts = generate(
            model,
            tok,
            harmful,
            max_new_tokens=args.max_new_tokens,
            batch_size=args.batch_size,
            seed=args.seed,
        )
        lp = last_token_logprobs(model, tok, harmless, batch_size=args.batch_size)
    assert isinstance(texts, list)
    loose = [substring_refusal(t) for t in texts]
    strict = [strict_refusal(t) for t in texts]
    n = len(texts)
    m = {
        "model_dir": str(path),
        "harmful_refusals": sum(loose),
        "harmful_refusal_rate": sum(loose) / n,
        "harmful_refusals_strict": sum(strict),
        "harmful_refusal_rate_strict": sum(strict) / n,
        "n_harmful": n,
        "n_harmless": len(harmless),
        "kl_harmless": None if base_lp is None else kl_divergence(base_lp, lp),
        "load_s": round(t_load, 2),
        "eval_s": round(time.perf_counter() - t0, 2),
    }
    del lm, model
    return m, lp, texts


def main() -> None:
    ap = parser(__doc__.splitlines()[0])
    ap.add_argument(
        "--trials", type=int, default=None, help="heretic Optuna trials (16; --quick: 2)"
    )
    ap.add_argument(
        "--startup-trials",
        type=int,
        default=None,
        help="random-sampling trials first (default: 30%% of --trials, as heretic's 60 of 200)",
    )
    ap.add_argument(
        "--steerlab-export",
        type=Path,
        default=None,
        help="model dir written by `steerlab refusal ... --export DIR`",
    )
    ap.add_argument(
        "--steerlab-report",
        default=None,
        help="that run's report.json (default: DIR/report.json, DIR/../report.json, "
        "runs/refusal/report.json)",
    )
    ap.add_argument("--model-dir", type=Path, default=MODEL_DIR, help="the original model")
    ap.add_argument("--n-eval", type=int, default=100, help="evaluation prompts per set")
    ap.add_argument(
        "--n-train",
        type=int,
        default=128,
        help="heretic direction prompts per class (steerlab's n_train cap)",
    )
    ap.add_argument(
        "--n-val",
        type=int,
        default=32,
        help="heretic objective prompts per class (steerlab's n_val)",
    )
    ap.add_argument(
        "--max-prompt-tokens",
        type=int,
        default=96,
        help="drop longer heretic train/val prompts, as steerlab does (0: keep all)",
    )
    ap.add_argument("--batch-size", type=int, default=16)
    ap.add_argument("--max-new-tokens", type=int, default=32, help="evaluation generation length")
    ap.add_argument(
        "--heretic-response-tokens",
        type=int,
        default=32,
        help="heretic's max_response_length for counting refusals (its default: 100)",
    )
    ap.add_argument(
        "--kl-cap",
        type=float,
        default=0.5,
        help="pick heretic's Pareto trial with fewest refusals and KL <= this",
    )
    ap.add_argument(
        "--prefix-check",
        action="store_true",
        help="let heretic probe for a common response prefix (off: Qwen has none)",
    )
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument(
        "--work",
        type=Path,
        default=Path("/tmp/steerlab-bench-heretic"),
        help="scratch dir (heretic's model, data, logs, completions)",
    )
    ap.add_argument(
        "--reuse-heretic",
        action="store_true",
        help="skip the heretic run; evaluate WORK/heretic from a previous run",
    )
    args = ap.parse_args()
    if args.quick:
        args.n_eval, args.n_train, args.n_val = 8, 16, 8
    if args.trials is None:
        args.trials = 2 if args.quick else 16
    startup = args.startup_trials
    if startup is None:
        startup = max(1, round(0.3 * args.trials))
    startup = min(startup, args.trials)

    import torch
    from transformers import AutoTokenizer
    from transformers.utils import logging as hf_logging

    hf_logging.disable_progress_bar()
    if getattr(args, "threads", 0):
        torch.set_num_threads(args.threads)
    info = machine()
    mon = LoadMonitor(max_wait_s=args.max_wait)
    args.work.mkdir(parents=True, exist_ok=True)
    if args.steerlab_export is not None and not (args.steerlab_export / "config.json").is_file():
        raise SystemExit(f"--steerlab-export {args.steerlab_export}: no config.json there")
    if not (args.model_dir / "config.json").is_file():
        raise SystemExit(f"original model not found at {args.model_dir}")

    harmful = read_set("jailbreakbench.json")[: args.n_eval]
    harmless = read_set("harmless_test.json")[: args.n_eval]
    held_out = {_key(p) for p in harmful + harmless}
    tok = AutoTokenizer.from_pretrained(args.model_dir)  # one tokenizer for every model

    # --- heretic ---------------------------------------------------------------------------
    py = ensure_venv()
    load = {"loadavg_before_heretic": [round(x, 2) for x in os.getloadavg()]}
    if args.reuse_heretic:
        res_file = args.work / "heretic" / "result.json"
        if not res_file.is_file():
            raise SystemExit(f"--reuse-heretic: no {res_file}")
        her = json.loads(res_file.read_text())
        data_notes = her.get("data_notes")
        say(f"reusing heretic result {res_file}")
    else:
        prompts, data_notes = heretic_prompts(
            tok, held_out, args.n_train, args.n_val, args.max_prompt_tokens
        )
        pfile = args.work / "heretic_prompts.json"
        pfile.write_text(json.dumps(prompts))
        mon.wait_quiet("heretic", say)
        her = run_worker(py, args.work, args, startup, pfile)
        her["data_notes"] = data_notes
        (args.work / "heretic" / "result.json").write_text(json.dumps(her, indent=2))
    load["loadavg_after_heretic"] = [round(x, 2) for x in os.getloadavg()]
    if not her.get("ok"):
        tb = "\n".join(str(her.get("traceback", "")).splitlines()[-12:])
        raise SystemExit(f"heretic failed: {her.get('error')}\n{tb}")

    # --- evaluation --------------------------------------------------------------------------
    models: list[tuple[str, Path]] = [("original", args.model_dir)]
    if args.steerlab_export is not None:
        models.append(("steerlab", args.steerlab_export))
    models.append(("heretic", Path(her["model_dir"])))
    mon.wait_quiet("evaluation", say)
    evals: dict[str, dict[str, Any]] = {}
    completions: dict[str, list[str]] = {}
    base_lp = None
    for name, path in models:
        say(
            f"evaluating {name} ({len(harmful)} harmful generations, {len(harmless)} "
            f"harmless first tokens) ..."
        )
        m, lp, texts = evaluate(path, tok, harmful, harmless, base_lp, args)
        if name == "original":
            base_lp = lp
            m["kl_harmless"] = 0.0
        evals[name] = m
        completions[name] = texts
        say(
            f"  {name}: {m['harmful_refusals']}/{m['n_harmful']} refusals (strict "
            f"{m['harmful_refusals_strict']}), KL {m['kl_harmless']:.4f}, eval {m['eval_s']}s"
        )
    (args.work / "completions.json").write_text(
        json.dumps({"harmful_prompts": harmful, **completions}, indent=2)
    )
    load["loadavg_at_end"] = [round(x, 2) for x in os.getloadavg()]

    # --- report ------------------------------------------------------------------------------
    sl = (
        steerlab_timings(
            find_report(args.steerlab_export, args.steerlab_report), args.steerlab_export
        )
        if args.steerlab_export
        else None
    )
    ht = her["timings"]
    her_load = (her.get("loadavg") or {}).get("start", load["loadavg_before_heretic"])[0]
    n_done = her.get("n_trials_completed")
    rows = []
    for name, m in evals.items():
        fit = total = trials = "-"
        if name == "steerlab" and sl:
            fit = f"{sl['fit_s']:.1f}" if sl.get("fit_s") is not None else "?"
            total = f"{sl['total_s']:.1f}" if sl.get("total_s") is not None else "?"
        if name == "heretic":
            setup = ht.get("setup_s") or 0.0
            load_s = ht.get("load_model_s") or 0.0
            fit = f"{(setup - load_s) + (ht.get('optimization_s') or 0.0):.1f}"
            total = f"{ht['total_s']:.1f}"
            trials = f"{n_done} (median {ht.get('trial_median_s') or 0:.1f}s)"
        rows.append(
            [
                name,
                f"{m['harmful_refusals']}/{m['n_harmful']}",
                f"{m['harmful_refusal_rate']:.0%}",
                f"{m['harmful_refusals_strict']}/{m['n_harmful']}",
                f"{m['kl_harmless']:.4f}",
                fit,
                total,
                trials,
            ]
        )
    print_table(
        f"refusal removal on {args.model_dir.name}: JailbreakBench ({len(harmful)}) refusals, "
        f"KL on {len(harmless)} harmless (1-min loadavg: {her_load:.2f} at heretic start, "
        f"{load['loadavg_at_end'][0]:.2f} at end)",
        ["tool", "refusals", "rate", "strict", "KL harmless", "fit s", "total s", "trials"],
        rows,
    )
    chosen = her.get("chosen") or {}
    say(
        f"heretic: optimization {ht.get('optimization_s')}s for {n_done} trials "
        f"(median {ht.get('trial_median_s')}s/trial); setup {ht.get('setup_s')}s (model load "
        f"{ht.get('load_model_s')}s, baseline on its val prompts {ht.get('baseline_eval_s')}s, "
        f"directions {ht.get('directions_s')}s); total "
        f"{ht.get('total_s')}s; picked trial {chosen.get('index')} ({chosen.get('rule')}): "
        f"{chosen.get('refusals')}/{chosen.get('n_bad_prompts')} refusals on its val prompts, "
        f"KL {chosen.get('kl_divergence')}"
    )
    say(
        "fit s: steerlab = report.json data+filter+candidates+selection+orthogonalize; "
        "heretic = setup after model load + optimization. total s: steerlab = report total "
        "(includes its 7-variant evaluation, excludes model load); heretic = load through save."
    )
    if sl and sl.get("note"):
        say(f"note: {sl['note']}")
    if sl and sl.get("warning"):
        say(f"warning: {sl['warning']}")
    if args.steerlab_export is None:
        say("note: no --steerlab-export given: steerlab was not compared")

    result = {
        "benchmark": "heretic",
        "machine": info,
        "load": {**load, "monitor": mon.summary(), "heretic_phases": her.get("loadavg")},
        "settings": {k: (str(v) if isinstance(v, Path) else v) for k, v in vars(args).items()},
        "eval_sets": {
            "harmful": f"{DATA / 'jailbreakbench.json'}[:{args.n_eval}]",
            "harmless": f"{DATA / 'harmless_test.json'}[:{args.n_eval}]",
        },
        "results": {
            k: {kk: (r3(vv) if isinstance(vv, float) else vv) for kk, vv in v.items()}
            for k, v in evals.items()
        },
        "heretic": {
            "versions": her.get("versions"),
            "trials_requested": args.trials,
            "startup_trials": startup,
            "trials_completed": n_done,
            "timings": ht,
            "chosen": chosen,
            "pareto_front": [
                {k: t.get(k) for k in ("index", "refusals", "kl_divergence")}
                for t in her.get("pareto_front", [])
            ],
            "system_prompt": her.get("system_prompt"),
            "data": data_notes,
            "worker_wall_s": her.get("worker_wall_s"),
        },
        "steerlab": sl,
        "work_dir": str(args.work),
    }
    emit(result, args.json)


if __name__ == "__main__":
    main()
