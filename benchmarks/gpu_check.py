"""End-to-end check of steerlab on whatever torch sees: a CUDA machine, or this CPU.

On CUDA: bfloat16 and ``device_map="auto"`` (blocks may land on several GPUs); without CUDA:
float32 on ``cpu``, and what needs CUDA is skipped with the reason. Every check is timed and
reported as held or failed with the reason; a failure never stops the checks after it.

    STEERLAB_TORCH=torch bash scripts/setup.sh          # on the CUDA machine, once
    .venv/bin/python benchmarks/gpu_check.py --json out.json [--quick] [--skip-refusal]

Exit code 0 when every check that ran held, 1 otherwise.
"""

from __future__ import annotations

import argparse
import hashlib
import sys
import tempfile
import time
import traceback
from collections import Counter
from collections.abc import Callable
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent))

import torch
from _common import emit, machine, print_table

import steerlab
from steerlab.capture import forward_kwargs
from steerlab.hooks import module_device, scoped_hooks
from steerlab.models.adapter import blocks_of
from steerlab.models.chat import encode
from steerlab.refusal.export import tolerance

PROMPTS = ["Tell me about your day.", "What should I cook tonight?"]


class Skip(Exception):
    """A check that cannot run here (the message says why)."""


class Env:
    """What the checks share: settings, the loaded model, the extracted direction."""

    def __init__(self, args: Any) -> None:
        self.args, self.cuda = args, torch.cuda.is_available() and not args.cpu
        self.device = "cuda" if self.cuda else "cpu"
        self.dtype = "bfloat16" if self.cuda else "float32"
        self.device_map = "auto" if self.cuda else None
        self.lm: Any = None
        self.direction: Any = None
        self.mid = 0

    def need(self, *names: str) -> None:
        missing = [n for n in names if getattr(self, n) is None]
        if missing:
            raise RuntimeError(f"needs {', '.join(missing)} from an earlier check, which failed")

    def load(self, spec: str) -> Any:
        return steerlab.load_model(spec, device=self.device, dtype=self.dtype,
                                   device_map=self.device_map)


_WEIGHTS: dict[str, torch.Tensor] = {}
_CHUNK = 1 << 22
_K = 2654435761
_INTS = {1: torch.uint8, 2: torch.int16, 4: torch.int32, 8: torch.int64}


def _device_sums(t: torch.Tensor) -> torch.Tensor:
    """Two int64 sums of a tensor's bits, computed where it lives: any changed bit changes the
    plain sum; values moved to other positions change the position-weighted one (wrapping)."""
    bits = t.detach().contiguous().reshape(-1).view(_INTS[t.element_size()])
    if str(t.device) not in _WEIGHTS:
        _WEIGHTS[str(t.device)] = torch.arange(_CHUNK, device=t.device) * _K + 1
    w, s = _WEIGHTS[str(t.device)], torch.zeros(2, dtype=torch.int64, device=t.device)
    for i in range(0, bits.numel(), _CHUNK):
        b = bits[i : i + _CHUNK].to(torch.int64)
        plain = b.sum()
        s += torch.stack([plain, (b * w[: b.numel()]).sum() + plain * (i * _K)])
    return s


@torch.no_grad()
def digest(model: torch.nn.Module, on_device: bool = False) -> str:
    """A digest of the state dict: names, dtypes, which tensors share storage (ties), and every
    bit. ``on_device``: reduce each tensor where it lives and move only two int64 sums to the
    host (for weights on GPUs); else sha256 over the host bytes (exact, faster on CPU)."""
    h = hashlib.sha256()
    seen: dict[tuple[int, int], str] = {}
    for name, t in model.state_dict().items():
        key = (t.untyped_storage().data_ptr(), t.storage_offset())
        h.update(f"{name}:{t.dtype}:{tuple(t.shape)}:".encode())
        if key in seen:  # a tied weight: record the tie, not the bytes again
            h.update(f"alias of {seen[key]};".encode())
            continue
        seen[key] = name
        if on_device:
            s = _device_sums(t).cpu()
            h.update(f"{int(s[0])}:{int(s[1])};".encode())
        else:
            bits = t.detach().contiguous().reshape(-1).view(_INTS[t.element_size()])
            h.update(bits.cpu().numpy())  # the buffer itself, no copy on the host
    return h.hexdigest()[:16]


@torch.no_grad()
def logits(lm: Any, prompt: str) -> torch.Tensor:
    """Logits of one prompt (one prompt per forward: no padding), float32."""
    batch = encode(lm.tokenizer, [prompt]).to(lm.device)
    return lm.model(**forward_kwargs(batch)).logits[0].float()


def unchanged(env: Env, fn: Callable[[], Any]) -> tuple[Any, bool, bool]:
    """fn()'s result, whether the weights are bit-identical afterwards, and no hooks remain."""
    model = env.lm.model

    def hooks() -> int:
        return sum(len(m._forward_hooks) + len(m._forward_pre_hooks) for m in model.modules())

    h0, n0 = digest(model, env.cuda), hooks()
    out = fn()
    return out, digest(model, env.cuda) == h0, hooks() == n0


def block_devices(lm: Any) -> Counter[str]:
    return Counter(str(module_device(b)) for b in blocks_of(lm.model, lm.adapter))


# Checks: each returns (held, detail, extra JSON), or raises (failed) or Skip (not run here).


def check_cuda(env: Env) -> tuple[bool, str, dict[str, Any]]:
    if not env.cuda:
        raise Skip("no CUDA: running float32 on cpu (bf16, device_map='auto' and the CUDA "
                   "peak-memory figure are not tested)")
    names = [torch.cuda.get_device_name(i) for i in range(torch.cuda.device_count())]
    bf16 = torch.cuda.is_bf16_supported()
    return bf16, f"{len(names)} GPU(s): {', '.join(names)}; bf16: {bf16}", {"gpus": names}


def check_load(env: Env) -> tuple[bool, str, dict[str, Any]]:
    env.lm = env.load(env.args.model)
    devs = block_devices(env.lm)
    env.mid = env.lm.info.n_layers // 2
    dmap = getattr(env.lm.model, "hf_device_map", None)
    spread = ", ".join(f"{d} x{n}" for d, n in devs.items())
    detail = (f"{env.lm.info.model_id}, {env.lm.info.n_layers} blocks on {spread}; "
              f"dtype {next(env.lm.model.parameters()).dtype}".replace("torch.", ""))
    return True, detail, {"blocks_per_device": dict(devs),
                          "hf_device_map": {k: str(v) for k, v in (dmap or {}).items()}}


def check_extract(env: Env) -> tuple[bool, str, dict[str, Any]]:
    env.need("lm")
    n = env.args.pairs
    happy = steerlab.read_prompts("builtin:happy")[:n]
    sad = steerlab.read_prompts("builtin:sad")[:n]
    d = steerlab.extract(env.lm, happy, sad, method="mean_diff", layers="all")
    norms = d.vectors.float().norm(dim=1)
    # resid_pre[0] at the last token is that token's embedding, the same for every prompt
    # when the chat template ends each one alike: a zero row there is expected.
    ok = (d.vectors.shape == (env.lm.info.n_layers, env.lm.info.d_model)
          and bool(torch.isfinite(d.vectors).all()) and bool((norms[1:] > 0).all()))
    env.direction = d if ok else None
    return ok, (f"mean_diff {n} vs {n}, {len(d.layers)} layers, |v| at layer {env.mid}: "
                f"{float(norms[env.mid]):.2f}"), {"norm_mid": float(norms[env.mid])}


def check_steer(env: Env) -> tuple[bool, str, dict[str, Any]]:
    env.need("lm", "direction")
    lm, k = env.lm, env.args.new_tokens
    plain = steerlab.generate(lm.model, lm.tokenizer, PROMPTS, max_new_tokens=k)

    def steered() -> list[str]:
        with steerlab.Steer(env.direction, layers=env.mid, coeff=4.0).applied(lm):
            return steerlab.generate(lm.model, lm.tokenizer, PROMPTS, max_new_tokens=k)

    texts, same, clean = unchanged(env, steered)
    differ = sum(a != b for a, b in zip(plain, texts, strict=True))
    ok = differ > 0 and same and clean
    return ok, (f"layer {env.mid} coeff 4, {k} tokens: {differ}/{len(PROMPTS)} texts differ; "
                f"bit-identical after: {same}; hooks removed: {clean}; e.g. {texts[0][:40]!r}"), {
        "plain": plain, "steered": texts, "bit_identical_after": same, "hooks_removed": clean}


def check_ablate_clamp(env: Env) -> tuple[bool, str, dict[str, Any]]:
    env.need("lm", "direction")
    lm = env.lm
    base = logits(lm, PROMPTS[0])
    out: dict[str, Any] = {}
    for name, iv in (("ablate", steerlab.Ablate(env.direction, layer=env.mid)),
                     ("clamp", steerlab.Clamp(env.direction, value=8.0, layer=env.mid))):
        def run(iv: Any = iv) -> torch.Tensor:
            with iv.applied(lm):
                return logits(lm, PROMPTS[0])

        got, same, clean = unchanged(env, run)
        rel = float((got - base).abs().max() / base.abs().max())
        out[name] = {"rel_change": rel, "finite": bool(torch.isfinite(got).all()),
                     "bit_identical_after": same, "hooks_removed": clean}
    ok = all(v["rel_change"] > 0 and v["finite"] and v["bit_identical_after"]
             and v["hooks_removed"] for v in out.values())
    return ok, "; ".join(f"{k}: logits moved {v['rel_change']:.3f} of scale"
                         for k, v in out.items()), out


@torch.no_grad()
def check_placement(env: Env) -> tuple[bool, str, dict[str, Any]]:
    """Recorders before and after the steering hooks on every block: the steered input must
    arrive on the block's device, and after - before must be exactly the block's delta."""
    env.need("lm", "direction")
    lm, coeff = env.lm, 2.0
    blocks = blocks_of(lm.model, lm.adapter)
    seen: dict[str, dict[int, torch.Tensor]] = {"before": {}, "after": {}}

    def rec(where: str, i: int) -> Callable[[torch.Tensor], None]:
        return lambda h: seen[where].__setitem__(i, h.detach().clone())

    with scoped_hooks() as first:
        for i, b in enumerate(blocks):
            first.pre(b, rec("before", i))
        with steerlab.Steer(env.direction, layers="all", coeff=coeff).applied(lm), \
                scoped_hooks() as last:
            for i, b in enumerate(blocks):
                last.pre(b, rec("after", i))
            logits(lm, PROMPTS[0])
    bad, worst = [], 0.0
    for i, b in enumerate(blocks):
        dev = module_device(b)
        h0, h1 = seen["before"].get(i), seen["after"].get(i)
        if h0 is None or h1 is None or h1.device != dev or h0.device != dev:
            bad.append(f"block {i}: input on {None if h1 is None else h1.device}, block on {dev}")
            continue
        want = coeff * env.direction.vector(i).to(dev, h1.dtype)
        # (h0 + delta) - h0 is delta up to one rounding of each side in the activations' dtype
        eps = torch.finfo(h1.dtype).eps
        bound = 2 * eps * float(h0.abs().max() + want.abs().max())
        worst = max(worst, float(((h1 - h0) - want).abs().max()) / bound)
    devs = block_devices(lm)
    kind = "several devices" if len(devs) > 1 else f"one device ({next(iter(devs))})"
    ok = not bad and worst <= 1.0
    detail = (f"{len(blocks)} blocks on {kind}: inputs on their block's device; steered - "
              f"unsteered = delta within {worst:.2f} of the rounding bound")
    detail += "; multi-GPU spread not tested (one device)" if len(devs) == 1 else ""
    return ok, detail if not bad else "; ".join(bad[:3]), {
        "devices": dict(devs), "err_over_rounding_bound": worst, "bad": bad}


def check_orthogonalize(env: Env) -> tuple[bool, str, dict[str, Any]]:
    env.need("lm", "direction")
    lm = env.lm
    vec = env.direction.vector(env.mid)
    with steerlab.Ablate(vec).applied(lm):
        ref = [logits(lm, p) for p in PROMPTS]
    gpus, mem0 = range(torch.cuda.device_count() if env.cuda else 0), []

    def edited() -> list[torch.Tensor]:
        for i in gpus:  # the peak of the edit, its forwards and the restore; not the digests
            torch.cuda.reset_peak_memory_stats(i)
            mem0.append(torch.cuda.memory_allocated(i))
        with steerlab.Orthogonalize(vec).applied(lm):
            return [logits(lm, p) for p in PROMPTS]

    got, same, clean = unchanged(env, edited)
    rel = max(float((g - r).abs().max() / r.abs().max().clamp_min(1e-12))
              for g, r in zip(got, ref, strict=True))
    tol = tolerance(next(lm.model.parameters()).dtype)
    extra: dict[str, Any] = {"max_rel_diff": rel, "tolerance_rel": tol,
                             "bit_identical_after": same, "hooks_removed": clean}
    detail = (f"max_rel_diff vs runtime ablation {rel:.2e} (tol {tol:g}); bit-identical "
              f"after: {same}")
    if env.cuda:  # the worst GPU's peak during the edit, over what it held before
        peak = max((torch.cuda.max_memory_allocated(i) - m) / m for i, m in enumerate(mem0) if m)
        extra["cuda_peak_extra_over_allocated"] = peak
        detail += f"; CUDA peak +{peak:.3f}x of allocated"
    return rel <= tol and same and clean, detail, extra


def check_refusal(env: Env) -> tuple[bool, str, dict[str, Any]]:
    from steerlab.refusal import QUICK, RefusalConfig, run_refusal

    if env.args.skip_refusal:
        raise Skip("--skip-refusal")
    a = env.args
    shrink = dict(n_train=a.refusal_train, n_val=8, n_eval=a.refusal_eval, max_new_tokens=8,
                  positions=1, keep=2, early_prompts=4)
    shrink.update(a.refusal_quick)
    cfg = RefusalConfig(**{**QUICK, **shrink, "model": a.refusal_model})
    lm = env.lm if a.refusal_model == a.model else env.load(a.refusal_model)
    with tempfile.TemporaryDirectory(prefix="gpu-check-refusal-") as out:
        rep = run_refusal(lm, cfg, out)
        files = {f: (Path(out) / f).is_file() for f in ("report.json", "report.html")}
    sel = rep.get("selected") or {}
    ok = rep.get("status") == "complete" and all(files.values()) and sel.get("layer") is not None
    t = rep.get("timings", {})
    return ok, (f"{a.refusal_model}: layer {sel.get('layer')}, pos {sel.get('position')}; "
                + ", ".join(f"{k} {v:.0f}s" for k, v in t.items())
                + f"; report.json/html: {all(files.values())}"), {
        "selected": sel, "timings": t, "files": files, "config": shrink}


def check_discover(env: Env) -> tuple[bool, str, dict[str, Any]]:
    from steerlab.melbo import MelboConfig
    from steerlab.melbo.discover import DiscoverConfig, run_discover

    if env.args.skip_discover:
        raise Skip("--skip-discover")
    a = env.args
    lm = env.lm or env.load(a.model)
    prompts = steerlab.read_prompts("builtin:harmless:val")[:4]
    cfg = DiscoverConfig(melbo=MelboConfig(num_vectors=2, steps=a.discover_steps), radius=8.0,
                         max_new_tokens=8)
    with tempfile.TemporaryDirectory(prefix="gpu-check-discover-") as out:
        rep = run_discover(lm, prompts, out, cfg)
        names = ("report.json", "report.html", "vectors.safetensors", "vectors/vec_1.safetensors")
        files = {f: (Path(out) / f).is_file() for f in names}
    ok = all(files.values()) and rep.get("kind") == "steerlab.melbo.discover"
    return ok, (f"{a.model}: 4 prompts, 2 vectors, {a.discover_steps} steps, R 8; "
                f"report, html, vectors written: {all(files.values())}"), {"files": files}


def check_sweep(env: Env) -> tuple[bool, str, dict[str, Any]]:
    from steerlab.behaviors import load_behavior
    from steerlab.evaluate import next_logprobs_rows
    from steerlab.sweep import SweepConfig, run_sweep

    env.need("lm", "direction")
    lm, lay = env.lm, env.mid
    v = env.direction.vector(lay)
    v = v / v.norm() * 8.0
    cells = [steerlab.Steer(v * c, layers=lay) for c in (0.5, 1.0)]
    texts = PROMPTS[:2] * 2
    rows = [c for c in cells for _ in PROMPTS[:2]]
    together = next_logprobs_rows(lm, texts, rows)
    worst = 0.0
    for j, c in enumerate((0.5, 1.0)):
        with steerlab.Steer(v * c, layers=lay).applied(lm) as t:
            alone = next_logprobs_rows(t, PROMPTS[:2])
        worst = max(worst, float((together[2 * j : 2 * j + 2] - alone).abs().max()))
    beh = load_behavior("builtin:sentiment")
    cfg = SweepConfig(layers=f"{lay},{lay + 1}", coeffs=(0.25, 1.0), max_new_tokens=6)
    with tempfile.TemporaryDirectory(prefix="gpu-check-sweep-") as out:
        rep, same, clean = unchanged(env, lambda: run_sweep(lm, beh, cfg, out))
        files = {f: (Path(out) / f).is_file() for f in ("sweep.json", "report.html")}
    tol = 1e-4 if env.dtype == "float32" else 5e-2
    ok = worst < tol and all(files.values()) and same and clean and len(rep.cells) == 4
    return ok, (f"per-row vs one cell alone max |logprob diff| {worst:.1e} (tol {tol:g}); "
                f"4-cell sweep chose {rep.chosen.key}, test score "
                f"{rep.test.steered.score:.2f} vs {rep.test.unsteered.score:.2f};"
                f" files {all(files.values())}; bit-identical after: {same}"), {
        "max_abs_diff": worst, "chosen": rep.chosen.to_dict(), "test": rep.test.to_dict(),
        "timings": rep.timings}


CHECKS: list[tuple[str, Callable[[Env], tuple[bool, str, dict[str, Any]]]]] = [
    ("cuda", check_cuda), ("load", check_load), ("extract", check_extract),
    ("steer+generate", check_steer), ("ablate, clamp", check_ablate_clamp),
    ("placement", check_placement), ("orthogonalize", check_orthogonalize),
    ("refusal", check_refusal), ("discover", check_discover), ("sweep", check_sweep),
]


def run_checks(env: Env, say: Callable[[str], None] = print) -> list[dict[str, Any]]:
    """Run every check, in order; one that fails or raises never stops the next."""
    results = []
    for name, fn in CHECKS:
        t0 = time.perf_counter()
        try:
            held, detail, extra = fn(env)
            row = {"check": name, "held": bool(held), "detail": detail, **extra}
        except Skip as e:
            row = {"check": name, "held": None, "skipped": True, "detail": f"skipped: {e}"}
        except Exception as e:  # a failure is a result here
            row = {"check": name, "held": False, "detail": f"{type(e).__name__}: {e}",
                   "traceback": traceback.format_exc(limit=6)}
        row["seconds"] = round(time.perf_counter() - t0, 2)
        say(f"  {name}: {'skipped' if row['held'] is None else 'held' if row['held'] else 'FAILED'}"
            f" ({row['seconds']:.1f} s)")
        results.append(row)
    return results


def parse(argv: list[str] | None = None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--model", default="smollm2-135m")
    p.add_argument("--refusal-model", default="qwen2.5-coder-0.5b")
    p.add_argument("--quick", action="store_true", help="smallest settings")
    p.add_argument("--json", metavar="PATH", help="also write the JSON result to PATH")
    p.add_argument("--skip-refusal", action="store_true")
    p.add_argument("--skip-discover", action="store_true")
    p.add_argument("--cpu", action="store_true", help="ignore CUDA even when it is there")
    args = p.parse_args(argv)
    q = args.quick
    args.pairs = 8 if q else 16
    args.new_tokens = 8 if q else 16
    # n_train 32 left 5 refused harmful prompts on qwen2.5-coder-0.5b after the refusal filter,
    # below the pipeline's minimum of 8; 96 keeps about 15, 64 keeps 10. n_eval 8 is that
    # minimum too. --quick also fixes the coefficient (no scan) and screens fewer layers.
    args.refusal_train, args.refusal_eval = (64, 8) if q else (96, 8)
    args.refusal_quick = dict(coeff="1.0", prune_last=0.5, max_new_tokens=4) if q else {}
    args.discover_steps = 4 if q else 10
    return args


def main(argv: list[str] | None = None) -> int:
    args = parse(argv)
    env = Env(args)
    info = machine()
    print(f"gpu_check on {env.device} ({env.dtype}, device_map={env.device_map}), "
          f"model {args.model}{' (quick)' if args.quick else ''}")
    t0 = time.perf_counter()
    results = run_checks(env)
    rows = [[r["check"], "skipped" if r["held"] is None else "yes" if r["held"] else "NO",
             f"{r['seconds']:.1f}", r["detail"][:110]] for r in results]
    print_table(f"steerlab gpu_check ({env.device}, {env.dtype})",
                ["check", "held", "s", "detail"], rows)
    ran = [r for r in results if r["held"] is not None]
    failed = [r["check"] for r in ran if not r["held"]]
    result = {"benchmark": "gpu_check", "device": env.device, "dtype": env.dtype,
              "device_map": env.device_map, "quick": args.quick, "model": args.model,
              "all_held": not failed, "ran": len(ran), "failed": failed,
              "total_s": round(time.perf_counter() - t0, 1), "checks": results, "machine": info}
    emit(result, args.json)
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
