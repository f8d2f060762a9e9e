"""The GPU checklist (../shared/spec/gpu.md) in one bounded command.

    python bench/gpu.py --out $OUT                          # on a lent GPU machine (below)
    python bench/gpu.py --device cpu --small --out /tmp/x   # the dry run (tests/bench)

Runs, in order, each step a process of its own with a time limit: the GPU-marked tests;
exact scoring (``bench/wti.py``, 5k x 5k at L=32, F=12, D=512, against DRL's loop);
search (``bench/search.py`` at 1M videos of the tiny checkpoint, default search and the
peer); one training step of each model at full size in a plain loop and in Ray Train at
each precision (``bench/train.py --size full``); ``/search`` latency with the index shards
on the GPU (``bench/serve.py``). A step that needs a checkpoint the machine lacks
(``runs/wti/checkpoint``, ``runs/pitvqa/checkpoint``: carry them) is skipped with the
reason. Each step's output goes to ``<out>/<step>.log`` and its JSON line into
``<out>/gpu.json``; a table is printed and written to ``<out>/gpu.md``. The limits add up
to under 8 minutes (``--small``: seconds).

On the lent machine (no registry there): ``bash ../shared/gpu/stage-wheels.sh`` here first,
carry ``.whl`` and ``runs/wti/checkpoint`` + ``runs/pitvqa/checkpoint``, and run
``python3 -m pip install -q --no-index --no-deps --target /tmp/site .whl/*.whl && export
PYTHONPATH=/tmp/site:$PWD && python3 bench/gpu.py --out $OUT``.
"""

from __future__ import annotations

import argparse
import json
import platform
import subprocess
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
RETRIEVER = ROOT / "runs" / "wti" / "checkpoint"
PITVQA = ROOT / "runs" / "pitvqa" / "checkpoint"


def steps(device: str, small: bool) -> list[dict]:
    """The checklist: name, command, time limit (s), and the checkpoints it needs."""
    py = sys.executable
    if small:  # the dry run: every step at a toy size
        wti = ["--texts", "64", "--videos", "64", "--dim", "32", "--repeat", "1"]
        search = [
            "--videos",
            "2000",
            "--queries",
            "10",
            "--nprobe",
            "4",
            "--peer_candidates",
            "200",
        ]
        train = ["--size", "32", "--steps", "3", "--epochs", "2", "--batch", "4", "--frames", "2"]
        train += ["--threads", "1"]
        precisions = "bf16"  # the autocast path (fp32 is every other test's)
        serve = ["--videos", "500", "--concurrency", "1", "--requests", "10", "--seconds", "3"]
    else:
        wti = ["--texts", "5000", "--videos", "5000"]
        # 200k rendered clips can be encoded within the step's limit on a GPU node (1M took
        # 24 min on 2 CPU cores); no peer (faiss-cpu is not staged: no registry there).
        search = ["--videos", "200000", "--queries", "100", "--nprobe", "", "--cones", "8,16"]
        train = ["--size", "full", "--steps", "10", "--epochs", "2", "--batch", "32"]
        precisions = "fp32,bf16,fp16" if device == "cuda" else "fp32,bf16"
        serve = ["--videos", "100000", "--concurrency", "1,8", "--seconds", "10"]
    serve += ["--modes", "default"]
    search += ["--device", device]
    limit = 60 if small else None
    return [
        {
            "name": "gpu_tests",
            "command": [
                py,
                "-m",
                "pytest",
                "-q",
                "-m",
                "gpu",
                "tests/models",
                "-p",
                "no:cacheprovider",
            ],
            "limit": limit or 45,
            "needs": [],
            "modules": ["pytest"],
        },
        {
            "name": "wti_5k",
            "command": [py, "bench/wti.py", "--device", device, *wti],
            "limit": limit or 60,
            "needs": [],
        },
        {
            "name": "search",
            "command": [py, "bench/search.py", "--checkpoint", str(RETRIEVER), *search],
            "limit": limit or 135,
            "needs": [RETRIEVER],
        },
        *(
            {
                "name": f"train_{model}",
                "command": [
                    py,
                    "bench/train.py",
                    "--model",
                    model,
                    "--device",
                    device,
                    "--precision",
                    precisions,
                    *train,
                ],
                "limit": 2 * limit if small else 85,  # Ray Train's start on 2 busy cores
                "needs": [],
            }
            for model in ("retriever", "pitvqa")
        ),
        {
            "name": "serve",
            "command": [
                py,
                "bench/serve.py",
                "--checkpoint",
                str(RETRIEVER),
                "--vqa_checkpoint",
                str(PITVQA),
                *serve,
            ],
            "limit": limit or 60,
            "needs": [RETRIEVER, PITVQA],
        },
    ]


def last_json(text: str) -> dict | None:
    for line in reversed(text.strip().splitlines()):
        if line.startswith("{"):
            try:
                return json.loads(line)
            except ValueError:
                return None
    return None


def run_step(step: dict, out: Path) -> dict:
    import importlib.util

    missing = [str(p) for p in step["needs"] if not (p / "config.json").is_file()]
    if missing:
        return {"status": "skipped", "why": f"no checkpoint at {', '.join(missing)}"}
    absent = [m for m in step.get("modules", []) if importlib.util.find_spec(m) is None]
    if absent:
        return {"status": "skipped", "why": f"not installed: {', '.join(absent)}"}
    started = time.time()
    log = out / f"{step['name']}.log"
    with log.open("w") as f:
        try:
            done = subprocess.run(
                step["command"],
                cwd=ROOT,
                stdout=f,
                stderr=subprocess.STDOUT,
                timeout=step["limit"],
                env=None,
            )
            status = "ok" if done.returncode == 0 else f"failed (exit {done.returncode})"
        except subprocess.TimeoutExpired:
            status = f"timed out ({step['limit']} s)"
    return {
        "status": status,
        "seconds": round(time.time() - started, 1),
        "result": last_json(log.read_text(errors="replace")),
    }


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--out", required=True, help="folder for the logs, gpu.json and gpu.md")
    parser.add_argument("--device", choices=("cuda", "cpu"), default="cuda")
    parser.add_argument("--small", action="store_true", help="every step at a toy size")
    parser.add_argument("--only", default=None, help="comma-separated step names")
    args = parser.parse_args(argv)
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    chosen = [
        s
        for s in steps(args.device, args.small)
        if not args.only or s["name"] in args.only.split(",")
    ]
    import torch

    gpu = torch.cuda.get_device_name(0) if torch.cuda.is_available() else None
    report = {
        "bench": "gpu",
        "device": args.device,
        "gpu": gpu,
        "machine": platform.processor() or platform.machine(),
        "torch": torch.__version__,
        "date": time.strftime("%Y-%m-%d"),
        "small": args.small,
        "steps": {},
    }
    print(f"GPU checklist on {gpu or 'no GPU'} ({args.device}{', small' if args.small else ''})")
    for step in chosen:
        print(f"== {step['name']} (at most {step['limit']} s)", flush=True)
        report["steps"][step["name"]] = row = run_step(step, out)
        print(
            f"   {row['status']}{' ' + str(row.get('seconds')) + ' s' if 'seconds' in row else ''}"
            f"{': ' + row['why'] if 'why' in row else ''}",
            flush=True,
        )
        (out / "gpu.json").write_text(json.dumps(report, indent=1) + "\n")  # kept as it goes
    table = ["| step | status | seconds | log |", "|---|---|---|---|"]
    for name, row in report["steps"].items():
        table.append(f"| {name} | {row['status']} | {row.get('seconds', '')} | {name}.log |")
    (out / "gpu.md").write_text(
        f"GPU checklist, {report['date']}, {gpu or 'no GPU'}, torch {report['torch']}\n\n"
        + "\n".join(table)
        + "\n"
    )
    print("\n".join(table))
    print(json.dumps(report))
    return 0 if all(r["status"] in ("ok", "skipped") for r in report["steps"].values()) else 1


if __name__ == "__main__":
    sys.exit(main())
