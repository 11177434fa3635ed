"""LPIPS-VGG pairs/s: vggjax against the ``lpips`` package (0.1.4, torch) on this machine, in one run.

Both compute LPIPS v0.1 of a batch of pairs, float32 inputs in [0, 1] (``normalize=True`` in
the reference) with the same random VGG-16 weights (the speed does not depend on them).
The frameworks take turns (vggjax, torch, vggjax, torch, …) so that load from other
processes hits both alike; each figure is the median over the turns, after a warm-up call
(vggjax's compile). ``--grad`` times the loss use instead: the gradient with respect to
one image, the other a fixed target (``frozen_y=True`` in vggjax; in torch only ``x``
requires grad). ``uptime`` is printed before and after, since the figure means little
without the machine's load. glibc keeps freed memory for both (vggjax's own setting, see
:func:`vggjax.runtime.keep_freed_memory`).

Needs the test extra (torch, torchvision, lpips): ``pip install -e '.[test]'``.

    .venv/bin/python benchmarks/lpips_speed.py                       # 64x64 and 256x256, batch 8
    .venv/bin/python benchmarks/lpips_speed.py --sizes 64 --batch 16 --turns 5 --grad --json
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import statistics
import subprocess
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "tests"))  # lpips_reference: import lpips


def uptime() -> str:
    return subprocess.run(["uptime"], capture_output=True, text=True).stdout.strip()


def vggjax_step(batch: int, size: int, grad: bool, dtype: str, impl: str):
    import jax
    import jax.numpy as jnp
    import numpy as np

    from vggjax.perceptual import LPIPS
    from vggjax.perceptual.weights import read_lin, trunk_shapes, trunk_variables

    rng = np.random.default_rng(0)
    state = {k: (rng.standard_normal(s) * 0.05).astype(np.float32) for k, s in trunk_shapes().items()}
    lin = tuple(jnp.asarray(w) for w in read_lin(None, "0.1"))
    metric = LPIPS(trunk_variables(state), lin, version="0.1", dtype=dtype, impl=impl)
    x, y = (jnp.asarray(rng.random((batch, size, size, 3), dtype=np.float32)) for _ in range(2))
    if grad:
        step = jax.jit(jax.grad(lambda m, a, b: m(a, b, frozen_y=True).distance.sum(), argnums=1))
    else:
        step = jax.jit(lambda m, a, b: m(a, b).distance)
    return lambda: jax.block_until_ready(step(metric, x, y))


def torch_step(batch: int, size: int, grad: bool):
    import torch

    model = reference_model()
    x, y = torch.rand(batch, 3, size, size), torch.rand(batch, 3, size, size)

    def run():
        if grad:
            a = x.clone().requires_grad_()
            model(a, y, normalize=True).sum().backward()
            return a.grad
        with torch.no_grad():
            return model(x, y, normalize=True)

    return run


def reference_model():
    import warnings

    from lpips_reference import import_lpips

    lpips = import_lpips()
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", UserWarning)
        return lpips.LPIPS(net="vgg", pnet_rand=True, verbose=False).eval()


def timed(fn, reps: int) -> float:
    start = time.perf_counter()
    for _ in range(reps):
        fn()
    return (time.perf_counter() - start) / reps


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--sizes", type=int, nargs="+", default=[64, 256], help="image sides")
    p.add_argument("--batch", type=int, default=8, help="pairs per call")
    p.add_argument("--turns", type=int, default=3, help="timed turns per framework (median reported)")
    p.add_argument("--grad", action="store_true", help="time the gradient w.r.t. one image instead")
    p.add_argument("--dtype", default="float32", choices=["float32", "bfloat16"], help="vggjax trunk dtype")
    p.add_argument("--impl", default="auto", choices=["auto", "xla", "cpu_fast"], help="vggjax conv impl")
    p.add_argument("--json", action="store_true", help="print JSON")
    args = p.parse_args()

    from vggjax.runtime import keep_freed_memory

    keep_freed_memory()
    import jax
    import torch

    before = uptime()
    rows = []
    for size in args.sizes:
        reps = max(1, round(4 * (64 / size) ** 2))  # calls per turn: about the same work per size
        jx = vggjax_step(args.batch, size, args.grad, args.dtype, args.impl)
        tc = torch_step(args.batch, size, args.grad)
        jx(), tc()  # compile, warm up
        times = {"vggjax": [], "lpips": []}
        for _ in range(args.turns):
            times["vggjax"].append(timed(jx, reps))
            times["lpips"].append(timed(tc, reps))
        med = {k: statistics.median(v) for k, v in times.items()}
        rows.append(
            {
                "size": size,
                "batch": args.batch,
                "vggjax_pairs_per_s": args.batch / med["vggjax"],
                "lpips_pairs_per_s": args.batch / med["lpips"],
                "ratio": med["lpips"] / med["vggjax"],
            }
        )
    report = {
        "what": "gradient w.r.t. one image" if args.grad else "forward",
        "machine": f"{platform.processor() or platform.machine()}, {os.cpu_count()} CPUs",
        "jax": f"{jax.__version__} ({jax.default_backend()}, vggjax dtype {args.dtype}, impl {args.impl})",
        "torch": f"{torch.__version__} ({torch.get_num_threads()} threads)",
        "uptime_before": before,
        "uptime_after": uptime(),
        "rows": rows,
    }
    if args.json:
        print(json.dumps(report, indent=1))
        return
    print(f"LPIPS-VGG v0.1, {report['what']}, {report['machine']}")
    print(f"jax {report['jax']}; torch {report['torch']}")
    print(f"before: {before}")
    print(f"{'size':>9} {'batch':>5} {'vggjax pairs/s':>15} {'lpips pairs/s':>14} {'ratio':>6}")
    for r in rows:
        side = f"{r['size']}x{r['size']}"
        print(
            f"{side:>9} {r['batch']:>5} {r['vggjax_pairs_per_s']:>15.2f} "
            f"{r['lpips_pairs_per_s']:>14.2f} {r['ratio']:>6.2f}"
        )
    print(f"after:  {report['uptime_after']}")


if __name__ == "__main__":
    main()
