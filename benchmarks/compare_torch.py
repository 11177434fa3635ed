"""vggjax against PyTorch on this CPU: same network, batch, optimizer and input, one process.

For each case three sides take turns (vggjax-oneDNN, vggjax-JAX, torch, vggjax-oneDNN, …) so
that load from other processes hits all alike; each figure is the median over the turns.
vggjax-oneDNN is the default ``impl="cpu_fast"`` (oneDNN convolutions, vggjax.nn.onednn; the
header line says if it fell back to pure JAX), vggjax-JAX is ``impl="cpu_jax"``.

Cases (VGG input uint8 at the model's size, scaled to [0, 1] inside the step on both sides;
LPIPS input float32 in [0, 1]):
  thin VGG-11 (width 0.25, hidden 4096, 1 channel, 10 classes, dropout 0.5) train step,
    SGD momentum 0.9 weight decay 5e-4, at 32x32 and 64x64 (batch 128) and 224x224 (batch 32);
  VGG-16 (3 channels, 1000 classes) inference at 224x224, batch 8;
  LPIPS-VGG v0.1 against the ``lpips`` package (benchmarks/lpips_speed.py's steps): the distance
    of 8 pairs of 64x64 RGB images, and its gradient with respect to one image of each pair
    (the loss use); figures in pairs/s.

Each allocator mode runs in a fresh child process, since glibc reads its settings once:
  default:   glibc as it comes; vggjax's mallopt is switched off (VGGJAX_MALLOC=default).
  allocator: MALLOC_MMAP_MAX_=0 MALLOC_TRIM_THRESHOLD_=2147483647 MALLOC_ARENA_MAX=1 in the
             child's environment, so glibc applies them from the first allocation for both
             frameworks in the process; this is the same setting `vggjax` applies to
             itself with mallopt.

Needs the test extra (torch, torchvision, lpips): `.venv/bin/pip install -e '.[test]'`; none of
them is a vggjax dependency.

    .venv/bin/python benchmarks/compare_torch.py            # both modes, all cases
    .venv/bin/python benchmarks/compare_torch.py --mode allocator --cases vgg11-32 --turns 3
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

sys.path.insert(0, str(Path(__file__).resolve().parent))  # lpips_speed's steps

ALLOCATOR_ENV = {"MALLOC_MMAP_MAX_": "0", "MALLOC_TRIM_THRESHOLD_": "2147483647", "MALLOC_ARENA_MAX": "1"}
# name: (kind, arch, width, image size, channels, classes, batch, steps per turn)
CASES = {
    "vgg11-32": ("train", "vgg11", 0.25, 32, 1, 10, 128, 4),
    "vgg11-64": ("train", "vgg11", 0.25, 64, 1, 10, 128, 2),
    "vgg11-224": ("train", "vgg11", 0.25, 224, 1, 10, 32, 1),
    "vgg16-224-infer": ("inference", "vgg16", 1.0, 224, 3, 1000, 8, 1),
    "lpips-64": ("lpips", "vgg16", 1.0, 64, 3, 0, 8, 4),
    "lpips-64-grad": ("lpips-grad", "vgg16", 1.0, 64, 3, 0, 8, 2),
}


def torch_vgg(arch, channels: int, classes: int, size: int):
    """The same VGG in PyTorch (NCHW, torchvision's layer order, flatten head)."""
    import torch.nn as nn

    layers, c = [], channels
    for block in arch.blocks:
        for k in block.kernels:
            layers += [nn.Conv2d(c, block.channels, k, padding=k // 2), nn.ReLU(inplace=True)]
            c = block.channels
        layers.append(nn.MaxPool2d(2, 2))
    side = size >> len(arch.blocks)
    return nn.Sequential(
        *layers,
        nn.Flatten(),
        nn.Linear(c * side * side, 4096),
        nn.ReLU(inplace=True),
        nn.Dropout(0.5),
        nn.Linear(4096, 4096),
        nn.ReLU(inplace=True),
        nn.Dropout(0.5),
        nn.Linear(4096, classes),
    )


def torch_runner(kind, arch, channels, classes, size, batch):
    import torch

    if kind.startswith("lpips"):
        from lpips_speed import torch_step

        return repeated(torch_step(batch, size, kind == "lpips-grad"))

    torch.manual_seed(0)
    model = torch_vgg(arch, channels, classes, size)
    images = torch.randint(0, 256, (batch, channels, size, size), dtype=torch.uint8)
    labels = torch.randint(0, classes, (batch,))
    if kind == "inference":
        model.eval()

        def run(n):
            with torch.inference_mode():
                for _ in range(n):
                    model(images.float() / 255.0)

        return run
    opt = torch.optim.SGD(model.parameters(), lr=0.01, momentum=0.9, weight_decay=5e-4)
    loss_fn = torch.nn.CrossEntropyLoss()

    def run(n):
        for _ in range(n):
            opt.zero_grad(set_to_none=True)
            loss = loss_fn(model(images.float() / 255.0), labels)
            loss.backward()
            opt.step()
        loss.item()

    return run


def repeated(step):
    """``run(n)``: ``step()`` n times (each call blocks until its result is ready)."""

    def run(n):
        for _ in range(n):
            step()

    return run


def jax_runner(kind, arch_name, width, channels, classes, size, batch, impl="cpu_fast"):
    if kind.startswith("lpips"):
        from lpips_speed import vggjax_step

        return repeated(vggjax_step(batch, size, kind == "lpips-grad", "float32", impl))
    from vggjax.bench import BenchConfig, InferenceRunner, TrainRunner
    from vggjax.config import TrainConfig

    train = TrainConfig(
        arch=arch_name,
        width=width,
        image_size=size,
        channels=channels,
        batch_size=batch,
        num_classes=classes,
        impl=impl,
    )
    config = BenchConfig(train=train, source_size=size).validate()
    return (TrainRunner if kind == "train" else InferenceRunner)(config)


def measure(mode: str, cases: list[str], turns: int) -> list[dict]:
    """Runs in the child process: interleaved turns, medians per case."""
    if mode == "allocator":
        from vggjax.runtime import keep_freed_memory

        keep_freed_memory()  # already in effect through the environment; harmless twice
    import torch

    from vggjax.arch import get_arch
    from vggjax.nn import onednn_build

    rows = []
    for name in cases:
        kind, arch_name, width, size, channels, classes, batch, steps = CASES[name]
        arch = get_arch(arch_name, width=width)
        shape = (kind, arch_name, width, channels, classes, size, batch)
        runners = {
            "vggjax": jax_runner(*shape, impl="cpu_fast"),
            "vggjax_jax": jax_runner(*shape, impl="cpu_jax"),
            "torch": torch_runner(kind, arch, channels, classes, size, batch),
        }
        for run in runners.values():
            run(1)  # compile / warm up
        rates = {side: [] for side in runners}
        for _ in range(turns):
            for side, run in runners.items():
                start = time.perf_counter()
                run(steps)
                rates[side].append(steps * batch / (time.perf_counter() - start))
        med = {side: statistics.median(r) for side, r in rates.items()}
        rows.append(
            {
                "mode": mode,
                "case": name,
                "vggjax": med["vggjax"],
                "vggjax_jax": med["vggjax_jax"],
                "torch": med["torch"],
                "ratio": med["vggjax"] / med["torch"],
                "ratio_jax": med["vggjax_jax"] / med["torch"],
                "convs": onednn_build.status(),
                "turns": turns,
                "torch_threads": torch.get_num_threads(),
            }
        )
        print(json.dumps(rows[-1]), file=sys.stderr, flush=True)
    return rows


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--mode", choices=["both", "default", "allocator"], default="both")
    parser.add_argument("--cases", default=",".join(CASES), help=f"comma-separated, from {', '.join(CASES)}")
    parser.add_argument("--turns", type=int, default=7, help="timed turns per framework and case")
    parser.add_argument("--child", action="store_true", help=argparse.SUPPRESS)
    args = parser.parse_args()
    cases = args.cases.split(",")
    if args.child:
        print(json.dumps(measure(args.mode, cases, args.turns)))
        return
    rows = []
    for mode in ("default", "allocator") if args.mode == "both" else (args.mode,):
        env = {k: v for k, v in os.environ.items() if k not in ALLOCATOR_ENV}
        env.update(ALLOCATOR_ENV if mode == "allocator" else {"VGGJAX_MALLOC": "default"})
        cmd = [sys.executable, __file__, "--child", "--mode", mode, "--cases", ",".join(cases)]
        out = subprocess.run(
            cmd + ["--turns", str(args.turns)], env=env, check=True, capture_output=True, text=True
        )
        rows += json.loads(out.stdout.strip().splitlines()[-1])
    load = os.getloadavg()
    print(
        f"{time.strftime('%Y-%m-%d %H:%M')}, {platform.processor() or platform.machine()}, "
        f"{os.cpu_count()} cores, load average {load[0]:.1f} at the end"
    )
    if rows:
        print(f"vggjax-oneDNN convolutions: {rows[0]['convs']}")
    print("figures per second: images (train, inference) or image pairs (lpips)")
    head = ("case", "allocator", "oneDNN /s", "JAX /s", "torch /s", "oneDNN/torch", "JAX/torch")
    print(f"{head[0]:<18}{head[1]:<11}" + "".join(f"{h:>14}" for h in head[2:]))
    for r in rows:
        figures = (r["vggjax"], r["vggjax_jax"], r["torch"])
        print(
            f"{r['case']:<18}{r['mode']:<11}"
            + "".join(f"{v:>14.1f}" for v in figures)
            + f"{r['ratio']:>14.2f}{r['ratio_jax']:>14.2f}"
        )


if __name__ == "__main__":
    main()
