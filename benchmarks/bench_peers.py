"""steerlab vs repeng and steering-vectors: time to train a mean-difference vector, and agreement.

Each peer runs in its own venv (.bench-venvs/<peer>, created here if missing: torch==2.13.0,
the CPU build on local disk, plus the peer from PyPI), through ``peer_worker_<peer>.py``. All
sides use the same 64 contrast pairs (steerlab's happy/sad prompts), raw text without the
chat template, batch size 16, the last token, and the output of decoder block l
(steerlab ``site="resid_post"``, steering-vectors' ``decoder_block``).

(a) one vector at layer 15: steerlab stops the forward after block 15; the peers run the
    whole model. Target: steerlab >= 1.5x faster than each peer.
(b) all layers: steerlab vs its own plain forward (target <= 1.05x) and vs the peers.
(c) agreement: cosine between steerlab's and steering-vectors' mean differences at every
    layer (target > 0.999); repeng's mean differences from its own activation reader too, and
    for reference its pca_diff direction (a different method).

Each process also times a plain forward of its own over the same batches, so besides the
direct ratio a *normalized* ratio (each side divided by its own plain forward) is reported:
it cancels load drift between processes and speed differences between transformers versions.

Run: ``python benchmarks/bench_peers.py [--quick] [--json out.json]``
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent))

from _common import (
    REPO,
    contrast_pairs,
    emit,
    interleaved,
    machine,
    max_wait,
    med,
    monitor_for,
    parser,
    print_table,
    r3,
    set_threads,
    spread,
    verdict,
)

HERE = Path(__file__).resolve().parent
VENVS = REPO / ".bench-venvs"
TORCH_PIN = "torch==2.13.0"  # the CPU wheel on local disk; unpinned pulls a multi-GB CUDA build
PEERS = {"steering-vectors": "peer_worker_steering_vectors.py", "repeng": "peer_worker_repeng.py"}
TARGET_LAYER_SPEEDUP = 1.5
TARGET_ALL_VS_PLAIN = 1.05
TARGET_COS = 0.999


def base_python() -> str:
    for cand in (getattr(sys, "_base_executable", None), shutil.which("python3.11"),
                 shutil.which("python3")):
        if cand and Path(cand).exists():
            return cand
    return sys.executable


def ensure_venv(peer: str, say: Any) -> tuple[Path | None, dict[str, Any]]:
    """Create .bench-venvs/<peer> and install the peer if needed. Never raises."""
    venv = VENVS / peer
    py = venv / "bin" / "python"
    info: dict[str, Any] = {"venv": str(venv), "created": False, "installed": False}
    log = VENVS / f"{peer}-install.log"
    try:
        if not py.exists():
            say(f"creating venv {venv} ...")
            VENVS.mkdir(parents=True, exist_ok=True)
            subprocess.run([base_python(), "-m", "venv", str(venv)], check=True,
                           capture_output=True, text=True, timeout=300)
            info["created"] = True
        probe = subprocess.run(
            [str(py), "-c", f"import importlib.metadata as m; print(m.version({peer!r}))"],
            capture_output=True, text=True, timeout=120)
        if probe.returncode != 0:
            say(f"installing {TORCH_PIN} {peer} into {venv} (log: {log}) ...")
            with open(log, "w") as f:
                r = subprocess.run([str(py), "-m", "pip", "install", TORCH_PIN, peer],
                                   stdout=f, stderr=subprocess.STDOUT, timeout=1800)
            if r.returncode != 0:
                tail = log.read_text().strip().splitlines()[-5:]
                info["error"] = f"pip install failed (exit {r.returncode}): " + " | ".join(tail)
                return None, info
            info["installed"] = True
        return py, info
    except (subprocess.SubprocessError, OSError) as e:
        info["error"] = f"{type(e).__name__}: {e}"
        return None, info


def run_worker(peer: str, py: Path, args: list[str], out: Path, say: Any) -> dict[str, Any]:
    cmd = [str(py), str(HERE / PEERS[peer]), "--out", str(out), *args]
    env = {**os.environ, "TQDM_DISABLE": "1", "TOKENIZERS_PARALLELISM": "false",
           "HF_HUB_OFFLINE": "1", "TRANSFORMERS_OFFLINE": "1", "PYTHONWARNINGS": "ignore"}
    t0 = time.perf_counter()
    lines: list[str] = []
    with subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True,
                          env=env) as p:
        assert p.stdout is not None
        for line in p.stdout:
            lines.append(line.rstrip())
            if line.strip() and "Loading weights" not in line:
                say(f"  [{peer}] {line.rstrip()[:150]}")
        rc = p.wait(timeout=1800)
    wall = time.perf_counter() - t0
    res_file = out / "result.json"
    if not res_file.exists():
        return {"peer": peer, "ok": False, "error": f"worker exited {rc} without a result",
                "output_tail": lines[-15:], "wall_s": wall}
    res = json.loads(res_file.read_text())
    res["wall_s"] = wall
    res["exit_code"] = rc
    return res


def cosines(a: Any, b: Any) -> list[float]:
    import numpy as np

    a = np.asarray(a, dtype=np.float64)
    b = np.asarray(b, dtype=np.float64)
    num = (a * b).sum(-1)
    den = np.linalg.norm(a, axis=-1) * np.linalg.norm(b, axis=-1)
    return [float(x) for x in np.atleast_1d(num / np.maximum(den, 1e-30))]


def rel_err(a: Any, b: Any) -> list[float]:
    import numpy as np

    a = np.asarray(a, dtype=np.float64)
    b = np.asarray(b, dtype=np.float64)
    return [float(x) for x in np.atleast_1d(
        np.linalg.norm(a - b, axis=-1) / np.maximum(np.linalg.norm(b, axis=-1), 1e-30))]


def _slim(r: dict[str, Any]) -> dict[str, Any]:
    out = {k: v for k, v in r.items() if k not in ("token_ids", "traceback")}
    if "traceback" in r:
        out["traceback_tail"] = r["traceback"].splitlines()[-6:]
    return out


def main() -> None:
    ap = parser(__doc__.splitlines()[0])
    ap.add_argument("--peers", default=",".join(PEERS), help="comma list of peers to run")
    args = ap.parse_args()
    import numpy as np
    import torch

    from steerlab.capture import forward_kwargs
    from steerlab.directions import extract
    from steerlab.models.chat import encode
    from steerlab.models.fetch import ensure_builtin
    from steerlab.models.load import load_model
    from steerlab.models.registry import get_builtin

    say = print
    n_pairs = 16 if args.quick else 64
    repeats = args.repeats or (1 if args.quick else 3)
    bs = 16
    layer = 15
    set_threads(args.threads)
    mon = monitor_for(max_wait(args))
    info = machine()
    peers = [p.strip() for p in args.peers.split(",") if p.strip()]
    for p in peers:
        if p not in PEERS:
            raise SystemExit(f"unknown peer {p!r}: use {', '.join(PEERS)}")

    # --- venvs first (installing is slow and must not overlap timing) ----------------------
    venv_info: dict[str, Any] = {}
    pys: dict[str, Path | None] = {}
    for p in peers:
        pys[p], venv_info[p] = ensure_venv(p, say)
        if pys[p] is None:
            say(f"!! {p}: cannot be installed: {venv_info[p].get('error')}")

    # --- steerlab ---------------------------------------------------------------------------
    mon.wait_quiet("start", say)
    lm = load_model("smollm2-135m")
    spec = get_builtin("smollm2-135m")
    assert spec is not None
    model_dir = ensure_builtin(spec)  # the safetensors cache dir (~/.cache/steerlab/models/...)
    if not (model_dir / "config.json").is_file():
        raise SystemExit(f"expected the cached model at {model_dir}")
    n_layers = lm.info.n_layers
    pos, neg = contrast_pairs(n_pairs)
    batches = [encode(lm.tokenizer, s[i : i + bs], chat=False)
               for s in (pos, neg) for i in range(0, len(s), bs)]

    def plain() -> None:
        with torch.inference_mode():
            for b in batches:
                lm.model(**forward_kwargs(b))

    def ext(layers: Any) -> Any:
        return lambda: extract(lm, pos, neg, method="mean_diff", layers=layers,
                               site="resid_post", chat=False, batch_size=bs)

    extract(lm, pos[:2], neg[:2], layers="all", site="resid_post", chat=False)  # warm-up
    with torch.inference_mode():
        lm.model(**forward_kwargs(batches[0]))
    say(f"steerlab: timing plain / layer {layer} / all layers x {repeats} "
        f"over {2 * n_pairs} texts ...")
    sl_times = interleaved({"plain": plain, "layer": ext(layer), "all": ext("all")},
                           repeats=repeats, warmup=0, monitor=mon, say=say)
    sl = {k: med(v) for k, v in sl_times.items()}
    d_all = ext("all")()
    d_one = ext(layer)()
    sl_all = d_all.vectors.double().numpy()
    sl_one = d_one.vectors[0].double().numpy()
    sl_ids = {"pos": [], "neg": []}
    for key, s in (("pos", pos), ("neg", neg)):
        for i in range(0, len(s), bs):
            b = encode(lm.tokenizer, s[i : i + bs], chat=False)
            for row, m in zip(b.input_ids, b.attention_mask, strict=True):
                sl_ids[key].append(row[m.bool()].tolist())

    # --- peers ------------------------------------------------------------------------------
    tmp = Path(tempfile.mkdtemp(prefix="steerlab-bench-peers-"))
    peer_res: dict[str, dict[str, Any]] = {}
    wargs = ["--model-dir", str(model_dir), "--n-pairs", str(n_pairs), "--batch-size", str(bs),
             "--layer", str(layer), "--repeats", str(repeats), "--max-wait", str(max_wait(args)),
             "--threads", str(args.threads)]
    for p in peers:
        if pys[p] is None:
            peer_res[p] = {"peer": p, "ok": False, "error": venv_info[p].get("error", "no venv")}
            continue
        mon.wait_quiet(f"before {p}", say)
        say(f"running {p} worker ...")
        peer_res[p] = run_worker(p, pys[p], wargs, tmp / p, say)
        if not peer_res[p].get("ok"):
            say(f"!! {p} failed: {peer_res[p].get('error')}")

    # --- tables -----------------------------------------------------------------------------
    rows = [["steerlab", "mean_diff (resid_post)", f"{sl['plain']:.2f}", f"{sl['layer']:.2f}",
             f"{sl['all']:.2f}", f"{sl['all'] / sl['plain']:.3f}",
             f"{max(spread(v) for v in sl_times.values()):.0%}"]]
    speed: dict[str, Any] = {}
    for p, r in peer_res.items():
        if not r.get("ok"):
            rows.append([p, "FAILED: " + str(r.get("error"))[:60], "-", "-", "-", "-", "-"])
            continue
        m = r["median_s"]
        method = ("pca_diff (ControlVector.train)" if p == "repeng"
                  else "mean (train_steering_vector)")
        rows.append([p, method, f"{m['plain']:.2f}", f"{m['layer']:.2f}", f"{m['all']:.2f}",
                     f"{m['all'] / m['plain']:.3f}",
                     f"{max(spread(v) for v in r['times_s'].values()):.0%}"])
        speed[p] = {
            "layer_speedup_direct": r3(m["layer"] / sl["layer"]),
            "layer_speedup_normalized": r3((m["layer"] / m["plain"]) / (sl["layer"] / sl["plain"])),
            "all_speedup_direct": r3(m["all"] / sl["all"]),
            "all_speedup_normalized": r3((m["all"] / m["plain"]) / (sl["all"] / sl["plain"])),
            "peer_plain_vs_steerlab_plain": r3(m["plain"] / sl["plain"]),
            "peer_median_s": {k: r3(v) for k, v in m.items()},
        }
        speed[p]["layer_ok"] = speed[p]["layer_speedup_direct"] >= TARGET_LAYER_SPEEDUP
    print_table(f"time to train on {n_pairs} pairs (median s of {repeats}; ratios are what count)",
                ["tool", "method", "plain fwd", f"layer {layer}", "all layers", "all/plain",
                 "max spread"], rows)
    rows2 = []
    for p, s in speed.items():
        rows2.append([p, f"{s['layer_speedup_direct']:.2f}x",
                      f"{s['layer_speedup_normalized']:.2f}x",
                      verdict(s["layer_ok"]), f"{s['all_speedup_direct']:.2f}x",
                      f"{s['all_speedup_normalized']:.2f}x"])
    if rows2:
        print_table("steerlab speed-up over each peer (peer time / steerlab time)",
                    ["peer", f"layer {layer}", f"layer {layer} (normalized)",
                     f">= {TARGET_LAYER_SPEEDUP}x", "all layers", "all (normalized)"], rows2)

    # --- agreement --------------------------------------------------------------------------
    agree: dict[str, Any] = {}
    for p, r in peer_res.items():
        if not r.get("ok"):
            continue
        out = tmp / p
        pv_all = np.load(out / "all.npy")
        pv_one = np.load(out / "layer.npy")
        same_ids = r["token_ids"] == sl_ids
        cos = cosines(sl_all, pv_all)
        err = rel_err(pv_all, sl_all)
        a: dict[str, Any] = {
            "identical_token_ids": same_ids,
            "cos_per_layer": [round(c, 6) for c in cos],
            "rel_err_per_layer": [float(f"{e:.3g}") for e in err],
            "cos_layer_run": round(cosines(sl_one, pv_one)[0], 6),
        }
        if p == "repeng":
            # hidden_states[30] is after the final norm: not block 29's raw output.
            inner = cos[: n_layers - 1]
            a["note"] = ("mean differences from repeng's reader; its last layer (29) reads "
                         "hidden_states[30], taken after the final norm, so it is excluded")
            a["cos_min_layers_0_to_28"] = round(min(inner), 6)
            a["cos_last_layer_post_norm"] = round(cos[-1], 6)
            a["ok"] = min(inner) > TARGET_COS
            pca = np.load(out / "pca_all.npy")
            a["pca_diff_abs_cos_per_layer"] = [round(abs(c), 4) for c in cosines(sl_all, pca)]
        else:
            a["cos_min"] = round(min(cos), 6)
            a["ok"] = min(cos) > TARGET_COS
        agree[p] = a
    if agree:
        hdr = ["layer"] + [f"cos (rel. L2 err) vs {p}" for p in agree]
        if "repeng" in agree:
            hdr.append("|cos| vs repeng pca_diff")
        rows3 = []
        for i in range(n_layers):
            row = [str(i)] + [f"{agree[p]['cos_per_layer'][i]:.7f} "
                              f"(err {agree[p]['rel_err_per_layer'][i]:.1e})" for p in agree]
            if "repeng" in agree:
                row.append(f"{agree['repeng']['pca_diff_abs_cos_per_layer'][i]:.3f}")
            rows3.append(row)
        print_table("agreement with steerlab's mean difference (resid_post, last token)",
                    hdr, rows3)
        for p, a in agree.items():
            key = "cos_min_layers_0_to_28" if p == "repeng" else "cos_min"
            print(f"{p}: identical token ids: {a['identical_token_ids']}; min cosine {a[key]:.6f} "
                  f"(target > {TARGET_COS}): {verdict(a['ok'])}; layer-{layer}-only run cosine "
                  f"{a['cos_layer_run']:.6f}" + (f"; {a['note']}" if "note" in a else ""))

    all_ratio = sl["all"] / sl["plain"]
    print(f"\nsteerlab all layers / plain forward: {all_ratio:.3f} "
          f"(target <= {TARGET_ALL_VS_PLAIN}): {verdict(all_ratio <= TARGET_ALL_VS_PLAIN)}")
    for p, r in peer_res.items():
        if r.get("load", {}).get("compat_copy"):
            print(f"note: {p} runs transformers {r['versions']['transformers']}, which cannot read "
                  f"the transformers-5 model dir as is; it loaded a compatible copy "
                  f"({'; '.join(r['load']['compat_notes'])})")
        if not r.get("ok"):
            print(f"!! {p} did not run: {r.get('error')}")
    if "repeng" in peer_res and peer_res["repeng"].get("ok"):
        print("note: repeng has no mean-difference method; its timings are "
              "ControlVector.train(method='pca_diff'), which costs the same forward pass.")

    result = {
        "benchmark": "bench_peers",
        "model": "smollm2-135m",
        "model_dir": str(model_dir),
        "quick": args.quick,
        "pairs": n_pairs,
        "batch_size": bs,
        "layer": layer,
        "repeats": repeats,
        "machine": info,
        "load": mon.summary(),
        "steerlab": {"median_s": {k: r3(v) for k, v in sl.items()},
                     "runs_s": {k: [r3(x) for x in v] for k, v in sl_times.items()},
                     "all_vs_plain": r3(sl["all"] / sl["plain"]),
                     "layer_vs_plain": r3(sl["layer"] / sl["plain"])},
        "target_all_vs_plain_max": TARGET_ALL_VS_PLAIN,
        "all_vs_plain_ok": sl["all"] / sl["plain"] <= TARGET_ALL_VS_PLAIN,
        "target_layer_speedup_min": TARGET_LAYER_SPEEDUP,
        "target_cos_min": TARGET_COS,
        "venvs": venv_info,
        "peers": {p: _slim(r) for p, r in peer_res.items()},
        "speedup": speed,
        "agreement": agree,
        "vectors_dir": str(tmp),
    }
    mon.warn_if_noisy()
    for p, r in peer_res.items():
        kept = (r.get("load_monitor") or {}).get("noisy_runs_kept", 0)
        if kept:
            print(f"!! {p}: {kept} of its timed runs were kept under load: its ratios are noise.")
    emit(result, args.json)


if __name__ == "__main__":
    main()
