"""Where the callback's per-step time goes on a GPU: host time of each per-step piece on BERT-base shapes.

On a GPU the Trainer waits for every step's loss (``logging_nan_inf_filter`` reads it on the
host), so the host time the callback adds at each optimizer step adds to the wall time one for
one. This times, on parameters shaped like BERT-base (110M, 199 tensors) on ``--device``:

- ``alignment``: ``GradientAlignment.before_step`` + ``after_step`` as shipped (on a GPU with
  Triton, one launch per read through a table of addresses, ``hf_metalr.controller.pointer_gather``);
- ``alignment, index_select per owner``: the same with the fallback read, one ``index_select`` per
  parameter that holds a window, for the gradient and for the parameters (checked: both reads give
  the same values, bit for bit);
- ``iterate average``: ``IterateAverage.after_step`` (a ``_foreach_lerp_`` of the parameters);
- ``fused AdamW step``: ``torch.optim.AdamW(fused=True)`` on a GPU, ``foreach`` on the CPU, for scale.

``--dtype bfloat16`` (or ``float16``) makes the parameters and gradients that dtype, as in a model
trained in pure bf16: the one-launch read widens them to float32 itself.

Each is the median host time of ``--repeats`` calls, the device queue drained before each call
(the launch cost, not the kernels'), and the median with a device synchronisation after the call.
Nothing is asserted; it prints a table and writes ``--out`` (JSON) when given.
"""

from __future__ import annotations

import argparse
import json
import statistics
import sys
import time
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parent))
from overhead import bert_base_shapes  # noqa: E402


def timed(function, repeats: int, sync) -> tuple[float, float]:
    """Median host ms of ``function()`` (queue drained before) and median ms with a sync after."""
    host, whole = [], []
    for _ in range(repeats):
        sync()
        begin = time.perf_counter()
        function()
        host.append(time.perf_counter() - begin)
        sync()
        whole.append(time.perf_counter() - begin)
    return statistics.median(host[2:]) * 1e3, statistics.median(whole[2:]) * 1e3


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    p.add_argument("--repeats", type=int, default=50)
    p.add_argument("--dtype", default="float32", choices=("float32", "bfloat16", "float16"),
                   help="the parameters' and gradients' dtype (bfloat16: a model trained in pure bf16)")
    p.add_argument("--out", type=Path)
    a = p.parse_args(argv)
    from hf_metalr.controller.alignment import GradientAlignment
    from hf_metalr.controller.iterate_average import IterateAverage

    device = torch.device(a.device)
    sync = torch.cuda.synchronize if device.type == "cuda" else (lambda: None)
    generator = torch.Generator().manual_seed(0)
    dtype = getattr(torch, a.dtype)
    params = [torch.nn.Parameter((torch.randn(s, generator=generator) * 0.02).to(device, dtype)) for s in bert_base_shapes()]
    for param in params:
        param.grad = torch.randn(param.shape, generator=generator).to(device, dtype)
    alignment = GradientAlignment(params)
    average = IterateAverage(params)
    fallback = GradientAlignment(params)
    fallback._gather = None
    gathered = alignment._read([param.grad for param in params], 0).clone()
    if not torch.equal(gathered, fallback._read([param.grad for param in params], 0)):
        raise RuntimeError("the pointer gather and the index_select reads differ")

    def step(signal):
        def run():
            signal.before_step()
            signal.after_step()
        return run

    fused = {"fused": True} if device.type == "cuda" else {"foreach": True}
    optimizer = torch.optim.AdamW(params, lr=1e-9, **fused)
    rows = {
        f"alignment ({'pointer gather' if alignment._gather is not None else 'index_select, no Triton'})":
            timed(step(alignment), a.repeats, sync),
        "alignment, index_select per owner": timed(step(fallback), a.repeats, sync),
        "iterate average fold": timed(average.after_step, a.repeats, sync),
        f"AdamW step ({next(iter(fused))})": timed(optimizer.step, a.repeats, sync),
    }
    name = torch.cuda.get_device_name(device) if device.type == "cuda" else "CPU"
    print(f"{name}, BERT-base shapes ({sum(q.numel() for q in params) / 1e6:.1f}M {a.dtype} parameters, {len(params)} tensors; "
          f"sketch of {alignment.coordinates} coordinates in {len(alignment._owners)} tensors)")
    print(f"{'per-step piece':<40} {'host ms':>8} {'with sync ms':>13}")
    for label, (host, whole) in rows.items():
        print(f"{label:<40} {host:>8.3f} {whole:>13.3f}")
    if a.out:
        a.out.write_text(json.dumps({"device": name, "ms": {k: {"host": h, "with_sync": w} for k, (h, w) in rows.items()}},
                                    indent=2))
    return 0


if __name__ == "__main__":
    sys.exit(main())
