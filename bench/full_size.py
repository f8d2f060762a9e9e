"""The papers' models at full size, end to end, through the real entry points.

    python bench/full_size.py                 # ViT-B/32 CLIP retriever, PitVQANet (ViT-B/16, BLIP text, GPT-2)
    python bench/full_size.py --size small    # the same stages on small widths (the slow test)
    python bench/full_size.py --precision fp32,bf16   # every stage at each precision, compared

Nothing is downloaded: the base architectures are built from their configs alone
(``CLIPConfig()`` is ViT-B/32, ``ViTConfig()`` ViT-B/16, ``BlipConfig()`` BLIP-base,
``GPT2Config()`` GPT-2 small) with random weights and saved as local folders, with a
GPT-2-sized BPE (50257 tokens) and a CLIP-sized one (49408) made here. Then, each as its
own process, as a user runs them: ``jobs/train.py`` (a few Ray Train steps of each model on
small synthetic sets in the real layouts), ``jobs/evaluate.py``, ``jobs/index.py``, and
``serve run serve:build_app`` answering one ``/search`` and one ``/vqa``, all on one Ray that
this script starts (as a user's jobs share their cluster) and stops at the end, unless
RAY_ADDRESS names a cluster to use. ``--stages`` runs a subset (build, the training runs,
the index and serve always run: the later stages need them). Prints time and
peak memory (the machine's memory in use above the idle level, Ray's processes included)
per stage, training samples/s per model and indexing videos/s, and ends with one JSON
line. With several ``--precision`` values every stage runs at each (``--precision`` of the
jobs, ``precision=`` of the service), and the features of the first precision's trained
models are compared with each other precision's: the cosine of each video's, caption's and
answer's output to the first's (``feature_cosines``).
"""

from __future__ import annotations

import argparse
import base64
import io
import json
import os
import platform
import re
import subprocess
import sys
import threading
import time
import urllib.request
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from cluster.processes import stop_serve_run  # noqa: E402


def memory_in_use() -> int:
    """Bytes of the machine's memory in use (MemTotal - MemAvailable, Linux)."""
    fields = dict(line.split(":", 1) for line in Path("/proc/meminfo").read_text().splitlines())
    return (int(fields["MemTotal"].split()[0]) - int(fields["MemAvailable"].split()[0])) * 1024


class PeakMemory:
    """The machine's memory in use, sampled every 0.2 s: peak above the level at start."""

    def __enter__(self):
        self.start = self.peak = memory_in_use()
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._sample, daemon=True)
        self._thread.start()
        return self

    def _sample(self):
        while not self._stop.wait(0.2):
            self.peak = max(self.peak, memory_in_use())

    def __exit__(self, *exc):
        self._stop.set()
        self._thread.join()
        self.gb = (self.peak - self.start) / 2**30


def sized_bpe(vocab_size: int, specials: list[str]):
    """A byte-level BPE with exactly ``vocab_size`` tokens (256 bytes, merges of byte pairs,
    then ``specials``): the real tokenizers' sizes without their vocabulary files."""
    from tokenizers import Tokenizer, decoders, models, pre_tokenizers
    from transformers import PreTrainedTokenizerFast

    from models.tokenizer import _bytes_to_unicode

    symbols = _bytes_to_unicode()
    merges = [(a, b) for a in symbols for b in symbols][: vocab_size - 256 - len(specials)]
    vocab = {s: i for i, s in enumerate(symbols + [a + b for a, b in merges])}
    bpe = Tokenizer(models.BPE(vocab=vocab, merges=merges))
    bpe.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    bpe.decoder = decoders.ByteLevel()
    bpe.add_special_tokens(specials)
    end = specials[-1]
    return PreTrainedTokenizerFast(
        tokenizer_object=bpe, bos_token=specials[0], eos_token=end, unk_token=end, pad_token=end
    )


def build_weight_folders(folder: Path, size: str) -> dict[str, Path]:
    """CLIP, ViT, BLIP and GPT-2 folders from configs alone (random weights)."""
    import torch
    from transformers import (
        BlipConfig,
        CLIPConfig,
        CLIPModel,
        GPT2Config,
        GPT2Model,
        ViTConfig,
        ViTModel,
    )

    torch.manual_seed(0)
    if size == "full":
        clip, vit, blip, gpt2 = CLIPConfig(), ViTConfig(), BlipConfig(), GPT2Config()
    else:  # the same stages at small widths
        small = dict(
            hidden_size=64, intermediate_size=128, num_hidden_layers=2, num_attention_heads=1
        )
        clip = CLIPConfig(
            text_config={**small, "num_hidden_layers": 4},
            vision_config={**small, "image_size": 64, "patch_size": 16},
            projection_dim=64,
        )
        vit = ViTConfig(**small, image_size=64, patch_size=16)
        blip = BlipConfig(
            text_config=small, vision_config=small
        )  # its cross-attention width follows the vision width
        gpt2 = GPT2Config(n_embd=64, n_layer=2, n_head=1)
    paths = {name: folder / name for name in ("clip", "vit", "blip", "gpt2")}
    CLIPModel(clip).save_pretrained(paths["clip"])
    sized_bpe(clip.text_config.vocab_size, ["<|startoftext|>", "<|endoftext|>"]).save_pretrained(
        paths["clip"]
    )
    ViTModel(vit, add_pooling_layer=False).save_pretrained(paths["vit"])
    blip.save_pretrained(paths["blip"])  # the reference builds BLIP's text encoder from its config
    GPT2Model(gpt2).save_pretrained(paths["gpt2"])
    sized_bpe(gpt2.vocab_size, ["<|endoftext|>"]).save_pretrained(paths["gpt2"])
    return paths


def run(stage: str, args: list[str], results: dict, env=None) -> subprocess.CompletedProcess:
    print(f"\n== {stage}: {' '.join(args)}", flush=True)
    with PeakMemory() as memory:
        started = time.time()
        done = subprocess.run(args, cwd=ROOT, env=env, text=True, capture_output=True)
        seconds = time.time() - started
    tail = "\n".join((done.stdout + done.stderr).strip().splitlines()[-6:])
    print(tail, flush=True)
    if done.returncode != 0:
        raise SystemExit(f"{stage} failed (exit {done.returncode}):\n{done.stderr[-3000:]}")
    results[stage] = {"seconds": round(seconds, 1), "peak_memory_gb": round(memory.gb, 2)}
    return done


def samples_per_second(output_dir: Path, train_output: str) -> float:
    """Training rows per second of the fastest epoch (``history.jsonl``); the row count is
    the job's own ("training ... on DATASET: N training rows")."""
    rows = int(re.search(r": (\d+) training rows", train_output).group(1))
    history = [json.loads(line) for line in (output_dir / "history.jsonl").read_text().splitlines()]
    return round(rows / min(row["seconds"] for row in history), 2)


def http(url: str, body=None, timeout=300):
    data = json.dumps(body).encode() if body is not None else None
    request = urllib.request.Request(url, data=data, headers={"Content-Type": "application/json"})
    with urllib.request.urlopen(request, timeout=timeout) as response:
        return json.loads(response.read())


def videos_per_second(index_output: str) -> float:
    """The index job's last ``encoded N videos (X/s)``."""
    return float(re.findall(r"encoded \d+ videos \(([\d.]+)/s\)", index_output)[-1])


def feature_cosines(paths: dict, precisions: list[str], image_size: int) -> dict:
    """The trained full-size models (the first precision's run) on fixed inputs at each
    precision: per output, the lowest and the mean cosine to the first precision's, and for
    PitVQANet the share of identical answers."""
    import torch

    from models import load_checkpoint
    from models.encode import encode_texts, encode_videos
    from models.precision import autocast

    generator = torch.Generator().manual_seed(0)
    retriever, tokenizer = load_checkpoint(paths["wti"])
    vqa, vqa_tokenizer = load_checkpoint(paths["pitvqa"])
    frames = torch.randn(
        4, retriever.config.max_frames, 3, image_size, image_size, generator=generator
    )
    captions = ["a red circle moves left", "a blue square on noise", "two shapes", "a green one"]
    image = torch.rand(4, 3, vqa.config.image_size, vqa.config.image_size, generator=generator)
    questions = vqa_tokenizer(["what is the phase?"] * 4, return_tensors="pt", padding=True)
    outputs = {}
    for precision in precisions:
        with torch.no_grad(), autocast(precision, "cpu"):
            outputs[precision] = {
                "video": encode_videos(retriever, frames, torch.ones(4, frames.shape[1])).pooled,
                "text": encode_texts(retriever, tokenizer, captions).pooled,
                "vqa_logits": vqa(
                    image, questions["input_ids"], questions["attention_mask"]
                ).float(),
            }
    first = outputs[precisions[0]]
    out = {}
    for precision in precisions[1:]:
        row = {}
        for name, value in outputs[precision].items():
            cosine = torch.nn.functional.cosine_similarity(
                value.float(), first[name].float(), dim=-1
            )
            row[name] = {
                "min": round(float(cosine.min()), 5),
                "mean": round(float(cosine.mean()), 5),
            }
        same = outputs[precision]["vqa_logits"].argmax(-1) == first["vqa_logits"].argmax(-1)
        row["vqa_same_answer"] = float(same.float().mean())
        out[precision] = row
    return out


def serve_stage(
    paths: dict,
    results: dict,
    image_size: int,
    env: dict,
    port: int = 8000,
    precision: str = "auto",
) -> None:
    """``serve run serve:build_app ...``: wait for /healthz, then one /search and one /vqa."""
    import numpy as np
    from PIL import Image

    command = [
        str(Path(sys.executable).parent / "serve"),
        "run",
        "serve:build_app",
        f"checkpoint={paths['wti']}",
        f"index={paths['index']}",
        f"vqa_checkpoint={paths['pitvqa']}",
        "num_shards=1",
        f"precision={precision}",
    ]
    print(f"\n== serve: {' '.join(command)}", flush=True)
    with PeakMemory() as memory:
        started = time.time()
        process = subprocess.Popen(
            command,
            cwd=ROOT,
            env=env,
            stdout=subprocess.PIPE,
            stderr=subprocess.STDOUT,
            text=True,
            start_new_session=True,
        )
        base = f"http://127.0.0.1:{port}"
        try:
            deadline = time.time() + 600
            while True:
                try:
                    health = http(f"{base}/healthz", timeout=10)
                    if health.get("search", {}).get("shards_up"):
                        break
                except OSError:
                    pass
                if process.poll() is not None or time.time() > deadline:
                    raise SystemExit(f"serve did not come up:\n{process.stdout.read()[-3000:]}")
                time.sleep(1)
            up = time.time() - started
            t0 = time.time()
            found = http(f"{base}/search", {"text": "a red circle moves to the left", "top_k": 3})
            search_s = time.time() - t0
            buffer = io.BytesIO()
            Image.fromarray(
                np.random.default_rng(0).integers(0, 255, (image_size, image_size, 3), np.uint8)
            ).save(buffer, format="PNG")
            t0 = time.time()
            answer = http(
                f"{base}/vqa",
                {
                    "image": base64.b64encode(buffer.getvalue()).decode(),
                    "question": "what is the surgical phase",
                },
            )
            vqa_s = time.time() - t0
        finally:
            stopping = time.time()
            stop_serve_run(process)
            # What it started on the shared Ray outlives it: its index shard holds a CPU
            # that the next precision's stages need.
            from ray import serve

            serve.shutdown()
            print(f"serve run stopped in {time.time() - stopping:.1f} s", flush=True)
    print(
        f"search: {found['results'][:2]}\nvqa: {answer['answer']} ({answer['confidence']:.3f})",
        flush=True,
    )
    results["serve"] = {
        "seconds_to_ready": round(up, 1),
        "search_seconds": round(search_s, 2),
        "vqa_seconds": round(vqa_s, 2),
        "peak_memory_gb": round(memory.gb, 2),
    }


STAGES = (
    "build",
    "train_retriever",
    "evaluate_retriever",
    "index",
    "train_pitvqa",
    "evaluate_pitvqa",
    "serve",
)
# May be left out: the evaluations (each training run ends with one), and indexing with the
# service (the test suite's dry run: their entry points have end-to-end tests of their own).
OPTIONAL = ("evaluate_retriever", "evaluate_pitvqa", "index", "serve")


def shared_ray() -> tuple[dict, object]:
    """The environment for the stages' processes: RAY_ADDRESS of the cluster they share (one
    started here when none is named, so that each stage does not start and stop its own),
    and a function that stops what was started here."""
    import ray

    if os.environ.get("RAY_ADDRESS") not in (None, "", "local"):
        return dict(os.environ), lambda: None
    context = ray.init(address="local", include_dashboard=False, log_to_driver=False)
    return {**os.environ, "RAY_ADDRESS": context.address_info["gcs_address"]}, ray.shutdown


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--size", choices=("full", "small"), default="full")
    parser.add_argument(
        "--work_dir", default="bench/results/full_size", help="weights, data and runs go here"
    )
    parser.add_argument("--train_videos", type=int, default=16)
    parser.add_argument("--test_videos", type=int, default=8)
    parser.add_argument("--batch_size", type=int, default=8)
    parser.add_argument(
        "--precision",
        default="auto",
        help="comma-separated precisions to run every stage at (auto, fp32, bf16, fp16)",
    )
    parser.add_argument(
        "--stages",
        default=",".join(STAGES),
        help=f"comma-separated stages to run; {', '.join(OPTIONAL)} may be left out",
    )
    args = parser.parse_args(argv)
    stages = set(args.stages.split(","))
    if stages - set(STAGES) or set(STAGES) - set(OPTIONAL) - stages:
        parser.error(
            f"--stages: choose from {', '.join(STAGES)}; only {', '.join(OPTIONAL)} may be left out"
        )
    work = (ROOT / args.work_dir).resolve()
    work.mkdir(parents=True, exist_ok=True)
    precisions = args.precision.split(",")
    results: dict = {}
    env, stop_ray = shared_ray()
    try:
        for precision in precisions:
            print(f"\n######## precision {precision}", flush=True)
            results[precision] = {}
            paths = run_stages(args, work, stages, env, results[precision], precision)
        cosines = (
            feature_cosines(paths, precisions, 224 if args.size == "full" else 64)
            if len(precisions) > 1
            else {}
        )
    finally:
        stop_ray()
    print(
        f"\n{'precision':<10}{'stage':<20}{'seconds':>10}{'peak GB':>10}{'samples/s':>11}{'videos/s':>10}"
    )
    for precision, stages_run in results.items():
        for stage, row in stages_run.items():
            seconds = row.get("seconds", row.get("seconds_to_ready"))
            print(
                f"{precision:<10}{stage:<20}{seconds:>10}{row['peak_memory_gb']:>10}"
                f"{row.get('samples_per_second', ''):>11}{row.get('videos_per_second', ''):>10}"
            )
    for precision, row in cosines.items():
        print(f"{precision} vs {precisions[0]}: {json.dumps(row)}")
    print(
        json.dumps(
            {
                "size": args.size,
                "parameters_millions": parameters(paths),
                "cpus": os.cpu_count(),
                "machine": platform.processor() or platform.machine(),
                "precisions": results,
                "feature_cosine": cosines,
            }
        )
    )
    return 0


def parameters(paths: dict) -> dict:
    from models import load_checkpoint

    return {
        name: round(
            sum(
                p.numel()
                for p in load_checkpoint(paths[name], with_tokenizer=False)[0].parameters()
            )
            / 1e6,
            1,
        )
        for name in ("wti", "pitvqa")
    }


def run_stages(
    args, work: Path, stages: set[str], env: dict, results: dict, precision: str
) -> dict:
    """Every stage at ``precision`` (the runs under ``work/<precision>``); the paths used."""
    python = sys.executable

    print(
        f"building the {args.size} architectures from their configs (random weights) in {work}",
        flush=True,
    )
    with PeakMemory() as memory:
        started = time.time()
        paths = build_weight_folders(work / "weights", args.size)
    results["build"] = {
        "seconds": round(time.time() - started, 1),
        "peak_memory_gb": round(memory.gb, 2),
    }
    work = work / precision  # this precision's runs; the weights and data are shared
    flag = ["--precision", precision]
    synthetic = work.parent / "synthetic"
    data = [
        "--synthetic_dir",
        str(synthetic),
        "--synthetic_train",
        str(args.train_videos),
        "--synthetic_test",
        str(args.test_videos),
    ]
    paths["wti"], paths["pitvqa"] = work / "wti" / "checkpoint", work / "pitvqa" / "checkpoint"
    paths["index"] = work / "wti" / "index"

    done = run(
        "train_retriever",
        [
            python,
            "jobs/train.py",
            "--clip_path",
            str(paths["clip"]),
            "--epochs",
            "1",
            "--batch_size",
            str(args.batch_size),
            "--output_dir",
            str(work / "wti"),
            "--index",
            "0",
            "--fresh",
            *data,
            *flag,
        ],
        results,
        env,
    )
    results["train_retriever"]["samples_per_second"] = samples_per_second(work / "wti", done.stdout)
    if "evaluate_retriever" in stages:
        run(
            "evaluate_retriever",
            [
                python,
                "jobs/evaluate.py",
                "--checkpoint",
                str(paths["wti"]),
                "--output_dir",
                str(work / "wti" / "eval"),
                *data,
                *flag,
            ],
            results,
            env,
        )
    videos = synthetic / f"msrvtt_{args.train_videos}x{args.test_videos}" / "videos"
    done = "index" in stages and run(
        "index",
        [
            python,
            "jobs/index.py",
            "--checkpoint",
            str(paths["wti"]),
            "--features_path",
            str(videos),
            "--output_dir",
            str(paths["index"]),
            *flag,
        ],
        results,
        env,
    )
    if done:
        results["index"]["videos_per_second"] = videos_per_second(done.stdout)

    pit24 = work.parent / "pit24"
    if not (pit24 / ".complete").is_file():  # one frame per video: 25 images, the reference split
        print("\n== making a small PitVQA-layout tree (25 videos, one frame each)", flush=True)
        subprocess.run(
            [
                python,
                "-c",
                "import sys; sys.path.insert(0, '.'); from ingest.synthetic import make_pit24; "
                f"make_pit24({str(pit24)!r}, seconds=1)",
            ],
            cwd=ROOT,
            check=True,
        )
        (pit24 / ".complete").touch()
    done = run(
        "train_pitvqa",
        [
            python,
            "jobs/train.py",
            "--dataset=pit24",
            f"--data_root={pit24}",
            "--epochs=1",
            f"--batch_size={args.batch_size}",
            "--lr=0.00002",
            "--vit_path",
            str(paths["vit"]),
            "--blip_path",
            str(paths["blip"]),
            "--gpt2_path",
            str(paths["gpt2"]),
            "--output_dir",
            str(work / "pitvqa"),
            "--fresh",
            *flag,
        ],
        results,
        env,
    )
    results["train_pitvqa"]["samples_per_second"] = samples_per_second(work / "pitvqa", done.stdout)
    if "evaluate_pitvqa" in stages:
        run(
            "evaluate_pitvqa",
            [
                python,
                "jobs/evaluate.py",
                "--checkpoint",
                str(paths["pitvqa"]),
                f"--data_root={pit24}",
                "--output_dir",
                str(work / "pitvqa" / "eval"),
                *flag,
            ],
            results,
            env,
        )
    image_size = json.loads((paths["pitvqa"] / "config.json").read_text())["config"]["image_size"]
    if "serve" in stages and "index" in stages:
        serve_stage(paths, results, image_size, env, precision=precision)
    return paths


if __name__ == "__main__":
    sys.exit(main())
