"""Worker for bench_peers.py: train control vectors with ``repeng``.

Runs in the repeng venv. repeng has no mean-difference method: ``ControlVector.train`` offers
``pca_diff`` (default), ``pca_center`` and ``umap``. It always runs the full model with
``output_hidden_states=True`` and reads ``hidden_states[l + 1]`` (the output of block l;
for the last block that entry is taken after the final norm) at the last non-pad token of
the raw text. So this worker:

* times ``ControlVector.train(method="pca_diff")`` (its public API) for one layer and for all;
* builds mean-difference vectors from repeng's own reader (``batched_get_hiddens``), untimed,
  to compare activations with steerlab;
* saves the pca_diff unit vectors for reference.
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
    result: dict = {"peer": "repeng", "ok": False,
                    "versions": pc.versions("repeng", "torch", "transformers")}
    try:
        import numpy as np
        from repeng import ControlVector, DatasetEntry
        from repeng.extract import batched_get_hiddens

        model, tok, info = pc.load_hf(a.model_dir, out)
        result["load"] = info
        pos, neg = pc.contrast_pairs(a.n_pairs)
        dataset = [DatasetEntry(positive=p, negative=n) for p, n in zip(pos, neg, strict=True)]
        n_layers = info["n_layers"]
        all_layers = list(range(n_layers))
        bs = a.batch_size
        plain = pc.plain_forward_fn(model, tok, pos, neg, bs)

        def train(layers):
            return lambda: ControlVector.train(model, tok, dataset, hidden_layers=layers,
                                               batch_size=bs, method="pca_diff")

        ControlVector.train(model, tok, dataset[:4], hidden_layers=all_layers, batch_size=bs)
        mon = pc.monitor_for(a.max_wait)
        fns = {"plain": plain, "layer": train([a.layer]), "all": train(all_layers)}
        times = pc.interleaved(fns, repeats=a.repeats, warmup=0, monitor=mon, say=print)
        result["times_s"] = times
        result["median_s"] = {k: pc.med(v) for k, v in times.items()}
        result["load_monitor"] = mon.summary()

        # Mean differences from repeng's own reader (strings interleaved pos, neg as it does).
        strs = [s for ex in dataset for s in (ex.positive, ex.negative)]
        hid = batched_get_hiddens(model, tok, strs, all_layers, bs)
        md = np.stack([hid[i][::2].astype(np.float64).mean(0)
                       - hid[i][1::2].astype(np.float64).mean(0) for i in all_layers])
        np.save(out / "all.npy", md.astype(np.float32))
        np.save(out / "layer.npy", md[a.layer].astype(np.float32))
        pca = train(all_layers)()
        np.save(out / "pca_all.npy", np.stack([pca.directions[i] for i in all_layers]))
        result["layers"] = all_layers
        result["layer"] = a.layer
        result["token_ids"] = {"pos": pc.token_ids(tok, pos), "neg": pc.token_ids(tok, neg)}
        result["settings"] = {
            "batch_size": bs, "timed_method": "ControlVector.train(method='pca_diff')",
            "mean_diff": "from repeng.extract.batched_get_hiddens (untimed)",
            "read": "hidden_states[l+1] at the last non-pad token; the last layer's entry is "
                    "after the final norm",
        }
        result["ok"] = True
    except BaseException as e:
        result["error"] = f"{type(e).__name__}: {e}"
        result["traceback"] = traceback.format_exc()
        print(result["traceback"], file=sys.stderr)
    pc.write_result(out, result)


if __name__ == "__main__":
    main()
