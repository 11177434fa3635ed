"""The recipes table: runs ``vggjax train --preset NAME`` for several seeds and tabulates them.

Each run is the real command, timed from its start to its last line (data loading and
compile included), one after another on this machine. Per preset the table gives the
network, its parameters, the epochs, the wall time and the final validation and test
accuracy as mean ± std over the seeds, with the machine, the date and ``uptime`` before
and after (a figure means little without the load). Results are kept in
``OUT/results.json`` (one entry per run, appended as each finishes, so a long sweep can be
stopped and continued); ``--plot`` draws every preset's validation-accuracy curves.

    .venv/bin/python benchmarks/recipes.py --preset fast --seeds 0 1 2 --out runs/recipes
    .venv/bin/python benchmarks/recipes.py --preset best --seeds 0 --out runs/recipes
    .venv/bin/python benchmarks/recipes.py --out runs/recipes --table-only --plot docs/img/recipes.png
"""

from __future__ import annotations

import argparse
import json
import platform
import statistics
import subprocess
import sys
import time
from datetime import date
from pathlib import Path


def uptime() -> str:
    return subprocess.run(["uptime"], capture_output=True, text=True).stdout.strip()


def cpu_name() -> str:
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or platform.machine()


def run_preset(preset: str, seed: int, out: Path, extra: list[str]) -> dict:
    """Runs one ``vggjax train --preset`` to completion; returns its result entry.

    Raises:
      SystemExit: if the run fails (its exit status and the tail of its output are printed).
    """
    run_dir = out / f"{preset}-seed{seed}"
    cmd = [sys.executable, "-m", "vggjax", "train", "--preset", preset, "--seed", str(seed)]
    cmd += ["--out", str(run_dir), "--overwrite", *extra]
    before = uptime()
    began = time.perf_counter()
    proc = subprocess.run(cmd, capture_output=True, text=True)
    wall = time.perf_counter() - began
    if proc.returncode != 0:
        sys.exit(f"{' '.join(cmd)} exited {proc.returncode}:\n{(proc.stdout + proc.stderr)[-2000:]}")
    records = [json.loads(line) for line in (run_dir / "metrics.jsonl").read_text().splitlines()]
    config = json.loads((run_dir / "config.json").read_text())
    last = records[-1]
    return {
        "preset": preset,
        "seed": seed,
        "command": " ".join(["vggjax", *cmd[3:]]),
        "arch": config["arch"],
        "width": config["width"],
        "image_size": config["image_size"],
        "params": count_params(config),
        "epochs": config["epochs"],
        "wall_s": round(wall, 1),
        "val_acc": last.get("val_acc"),
        "test_acc": last.get("test_acc"),
        "curve": [r.get("val_acc", r.get("test_acc")) for r in records],
        "uptime_before": before,
        "uptime_after": uptime(),
        "machine": f"{cpu_name()}, {__import__('os').cpu_count()} cores",
        "date": date.today().isoformat(),
    }


def count_params(config: dict) -> int:
    """Trainable parameters of a run's network, from the arch summary (no JAX needed)."""
    from vggjax.arch import get_arch
    from vggjax.arch.summary import summarize, totals

    arch = get_arch(config["arch"], width=config["width"])
    head = config["head"]
    rows = summarize(
        arch,
        input_size=config["image_size"],
        channels=config["channels"],
        num_classes=config["num_classes"],
        head=head,
        hidden=config["hidden"],
    )
    return totals(rows)["total_params"]


def mean_std(values: list[float]) -> str:
    values = [v for v in values if v is not None]
    if not values:
        return "—"
    if len(values) == 1:
        return f"{values[0]:.4f}"
    return f"{statistics.mean(values):.4f} ± {statistics.stdev(values):.4f}"


def table(results: list[dict]) -> str:
    """The markdown table, one row per preset, in the order the presets were first run."""
    lines = [
        "| preset | network | params | epochs | wall time (s) | val accuracy | test accuracy | seeds |",
        "|---|---|---|---|---|---|---|---|",
    ]
    for preset in dict.fromkeys(r["preset"] for r in results):
        rs = [r for r in results if r["preset"] == preset]
        walls = [r["wall_s"] for r in rs]
        wall = f"{statistics.mean(walls):.0f}" + (f" ± {statistics.stdev(walls):.0f}" if len(rs) > 1 else "")
        net = f"`{rs[0]['arch']}` ×{rs[0]['width']:g} at {rs[0]['image_size']}px"
        lines.append(
            f"| `{preset}` | {net} | {rs[0]['params']:,} | {rs[0]['epochs']} | {wall} | "
            f"{mean_std([r['val_acc'] for r in rs])} | {mean_std([r['test_acc'] for r in rs])} | {len(rs)} |"
        )
    machines = sorted({f"{r['machine']}, {r['date']}" for r in results})
    return "\n".join(lines) + "\n\nMachine and date: " + "; ".join(machines)


def plot(results: list[dict], path: Path) -> None:
    """Validation accuracy per epoch of every run, one colour per preset."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(6, 4))
    colours = {}
    for r in results:
        colour = colours.setdefault(r["preset"], f"C{len(colours)}")
        label = (
            r["preset"] if sum(x["preset"] == r["preset"] for x in results[: results.index(r)]) == 0 else None
        )
        ax.plot(range(1, len(r["curve"]) + 1), r["curve"], color=colour, alpha=0.8, label=label)
    ax.set_xlabel("epoch")
    ax.set_ylabel("validation accuracy")
    ax.set_ylim(0.75, 0.97)
    ax.xaxis.get_major_locator().set_params(integer=True)
    ax.grid(alpha=0.3)
    ax.legend(title="preset")
    fig.tight_layout()
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_suffix(".tmp.png")
    fig.savefig(tmp, dpi=110)
    tmp.replace(path)


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--preset", action="append", default=[], help="preset to run (repeatable)")
    p.add_argument("--seeds", type=int, nargs="+", default=[0], help="seeds to run each preset with")
    p.add_argument(
        "--out", type=Path, default=Path("runs/recipes"), help="folder for the runs and results.json"
    )
    p.add_argument("--table-only", action="store_true", help="run nothing; print the table of results.json")
    p.add_argument("--plot", type=Path, help="also draw the validation curves into this PNG")
    p.add_argument("extra", nargs=argparse.REMAINDER, help="more train flags after --, e.g. -- --epochs 2")
    args = p.parse_args()
    extra = args.extra[1:] if args.extra[:1] == ["--"] else args.extra
    args.out.mkdir(parents=True, exist_ok=True)
    store = args.out / "results.json"
    results = json.loads(store.read_text()) if store.exists() else []
    if not args.table_only:
        for preset in args.preset:
            for seed in args.seeds:
                entry = run_preset(preset, seed, args.out, extra)
                results = [r for r in results if (r["preset"], r["seed"]) != (preset, seed)] + [entry]
                tmp = store.with_suffix(".tmp")
                tmp.write_text(json.dumps(results, indent=1))
                tmp.replace(store)
                print(
                    f"{preset} seed {seed}: val {entry['val_acc']}, test {entry['test_acc']}, "
                    f"{entry['wall_s']} s ({entry['uptime_before']} / {entry['uptime_after']})",
                    flush=True,
                )
    print(table(results))
    if args.plot:
        plot(results, args.plot)


if __name__ == "__main__":
    main()
