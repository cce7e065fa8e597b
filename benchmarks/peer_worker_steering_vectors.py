"""Worker for bench_peers.py: train mean-difference vectors with ``steering-vectors``.

Runs in the steering-vectors venv. ``train_steering_vector`` records the OUTPUT of each
decoder block (steerlab's ``resid_post``) and reads token index -1 of the raw text (no chat
template), with the tokenizer's own padding; its default aggregator is the mean of the
pairwise differences (= difference of the class means).
"""

from __future__ import annotations

import sys
import traceback
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))

import _peer_common as pc


def main() -> None:
    pc.env_quiet()
    a = pc.worker_args()
    out = Path(a.out)
    out.mkdir(parents=True, exist_ok=True)
    result: dict = {"peer": "steering-vectors", "ok": False,
                    "versions": pc.versions("steering-vectors", "torch", "transformers")}
    try:
        import numpy as np
        import torch
        from steering_vectors import train_steering_vector

        model, tok, info = pc.load_hf(a.model_dir, out)
        result["load"] = info
        pos, neg = pc.contrast_pairs(a.n_pairs)
        pairs = list(zip(pos, neg, strict=True))
        bs = a.batch_size
        plain = pc.plain_forward_fn(model, tok, pos, neg, bs)

        def train(layers):
            return lambda: train_steering_vector(model, tok, pairs, layers=layers,
                                                 read_token_index=-1, batch_size=bs)

        # Warm-up on two pairs; then interleaved timing.
        train_steering_vector(model, tok, pairs[:2], layers=None, batch_size=bs)
        mon = pc.monitor_for(a.max_wait)
        fns = {"plain": plain, "layer": train([a.layer]), "all": train(None)}
        times = pc.interleaved(fns, repeats=a.repeats, warmup=0, monitor=mon, say=print)
        result["times_s"] = times
        result["median_s"] = {k: pc.med(v) for k, v in times.items()}
        result["load_monitor"] = mon.summary()

        sv_all = train(None)()
        sv_one = train([a.layer])()
        layers = sorted(sv_all.layer_activations)
        stacked = torch.stack([sv_all.layer_activations[i] for i in layers])
        np.save(out / "all.npy", stacked.float().numpy())
        np.save(out / "layer.npy", sv_one.layer_activations[a.layer].float().numpy())
        result["layers"] = layers
        result["layer"] = a.layer
        result["token_ids"] = {"pos": pc.token_ids(tok, pos), "neg": pc.token_ids(tok, neg)}
        result["settings"] = {"batch_size": bs, "read_token_index": -1,
                              "layer_type": "decoder_block (output of block l)",
                              "aggregator": "mean_aggregator (mean of pos - neg)"}
        result["ok"] = True
    except BaseException as e:  # report, never fail silently
        result["error"] = f"{type(e).__name__}: {e}"
        result["traceback"] = traceback.format_exc()
        print(result["traceback"], file=sys.stderr)
    pc.write_result(out, result)


if __name__ == "__main__":
    main()
