"""The commands users already type: the seed's PitVQA command, word for word, and CLIP flags."""

import json
import os
import re
import shutil
import subprocess
import sys
from pathlib import Path

import jsonschema
import pytest
import torch
from helpers import VQA_SCHEMA

ROOT = Path(__file__).resolve().parents[1]


@pytest.fixture(scope="module")
def seed_run(ray_cluster, tmp_path_factory):
    """``python jobs/train.py --dataset=pit24 --data_root=DIR --epochs=60 --batch_size=64
    --lr=0.00002``, word for word, from a folder laid out like the repository root, in its own
    process on the session's cluster (``RAY_ADDRESS``, as a job on a cluster runs; a job that
    starts its own Ray is tests/test_job_submit.py's): the run that the tests below read."""
    from ingest.synthetic import make_pit24

    tmp_path = tmp_path_factory.mktemp("seed")
    data_root = make_pit24(tmp_path / "pit24", seconds=1)  # 25 videos, one frame each
    (tmp_path / "repo").mkdir()
    (tmp_path / "repo" / "jobs").symlink_to(ROOT / "jobs")  # so that runs/ lands in tmp_path
    command = f"python jobs/train.py --dataset=pit24 --data_root={data_root} --epochs=60 --batch_size=64 --lr=0.00002"
    python = str(Path(sys.executable).parent)
    done = subprocess.run(
        command,
        shell=True,
        cwd=tmp_path / "repo",
        capture_output=True,
        text=True,
        timeout=900,
        # Ray Train's report poll (jobs/train.py: 0.25 s unless set) is most of a
        # 60-epoch run this small; the command itself is as printed.
        env={
            "PATH": f"{python}:/usr/bin:/bin",
            "HOME": str(tmp_path),
            "RAY_TRAIN_HEALTH_CHECK_INTERVAL_S": "0.05",
            "RAY_ADDRESS": ray_cluster.address,
            **{k: v for k, v in os.environ.items() if k.startswith("RAY_AUTH")},
        },
    )
    return done, data_root, tmp_path / "repo" / "runs" / "pitvqa"


@pytest.mark.slow  # 60 epochs of a whole job
def test_the_seeds_pitvqa_command_runs_as_printed(seed_run):
    done, _, run = seed_run
    assert done.returncode == 0, done.stderr[-3000:]
    assert "training pitvqa (tiny) on pit24" in done.stdout
    history = [json.loads(line) for line in (run / "history.jsonl").read_text().splitlines()]
    assert [row["epoch"] for row in history] == list(range(1, 61))
    config = json.loads((run / "checkpoint" / "config.json").read_text())
    assert config["model"] == "pitvqa" and config["config"]["num_classes"] == 59
    assert len(config["labels"]) == 59  # for serving


@pytest.mark.slow  # reads the seed command's run
def test_the_seeds_command_prints_no_traceback_and_no_error_line(seed_run):
    done, _, _ = seed_run
    assert done.returncode == 0, done.stderr[-3000:]
    output = done.stdout + done.stderr
    assert "Traceback" not in output, output[-3000:]
    # Ray's C++ error lines ("[2026-12-05 15:19:03,121 E 32526 32526] core_worker.cc:...")
    # and Python ERROR records.
    errors = re.findall(r".*(?:\[[\d-]+ [\d:,]+ E \d+ \d+\]|\bERROR\b).*", output)
    assert not errors, errors


@pytest.mark.slow  # reads the seed command's run
def test_pitvqa_trains_and_evaluates(seed_run):
    from jobs import train

    done, data_root, run = seed_run
    assert done.returncode == 0, done.stderr[-3000:]
    rows = [json.loads(line) for line in (run / "history.jsonl").read_text().splitlines()]
    best = max(rows, key=lambda row: row["val_score"])
    metrics = json.loads((run / "metrics.json").read_text())
    jsonschema.validate(metrics, VQA_SCHEMA)
    assert metrics["num_classes"] == 59
    # The evaluation of the copied checkpoint agrees with the validation of its epoch.
    assert metrics["f1"] == pytest.approx(best["f1"])
    assert metrics["acc"] == pytest.approx(best["acc"])
    assert (run / "confusion.png").stat().st_size > 1000
    assert set(metrics["per_type"]) == {"phase", "step", "instrument", "count", "position"}
    assert sum(t["num_questions"] for t in metrics["per_type"].values()) == metrics["num_questions"]

    # --do_train 0 (CLIP4Clip's --do_eval): the checkpoint of this --output_dir, evaluated again.
    weights = (run / "checkpoint" / "model.safetensors").read_bytes()
    (run / "metrics.json").unlink()
    assert (
        train.main(
            [
                "--dataset=pit24",
                f"--data_root={data_root}",
                "--output_dir",
                str(run),
                "--n_display",
                "0",
                "--do_train",
                "0",
            ]
        )
        == 0
    )
    again = json.loads((run / "metrics.json").read_text())
    assert again["acc"] == metrics["acc"] and again["per_type"] == metrics["per_type"]
    # Nothing was trained: the history and the checkpoint are the ones before.
    after = [json.loads(line) for line in (run / "history.jsonl").read_text().splitlines()]
    assert after == rows and [row["epoch"] for row in after] == list(range(1, 61))
    assert (run / "checkpoint" / "model.safetensors").read_bytes() == weights


def test_the_dataset_names_the_model():
    from jobs import train

    assert train.parse_args(["--dataset=pit24", "--data_root=/d"]).model == "pitvqa"
    assert train.parse_args(["--dataset", "endo18"]).kind == "pitvqa"
    assert train.parse_args(["--dataset", "msrvtt"]).model == "wti"
    assert train.parse_args([]).model == "wti"


def test_clip_path_takes_openais_file_and_asks_for_its_tokenizer(tmp_path, capsys):
    from jobs import train

    clip = tmp_path / "ViT-B-32.pt"
    torch.save({}, clip)
    code = train.main(["--clip_path", str(clip), "--output_dir", str(tmp_path / "out")])
    assert code == 2
    assert "--tokenizer_path" in capsys.readouterr().err
    args = train.parse_args(["--pretrained_clip_name", str(clip)])
    from jobs.args import resolve

    args.tokenizer_path = str(shutil.which("python3"))  # a file that is not a BPE vocabulary
    assert "no such folder or file" in resolve(args, "retriever")


def test_a_clip_model_name_means_openais_file_in_its_download_cache(tmp_path, monkeypatch, capsys):
    """``--pretrained_clip_name ViT-B/32`` (and DRL's ``--base_encoder``) is the file
    OpenAI's ``clip.load`` keeps in ``~/.cache/clip``, with CLIP's BPE vocabulary found beside
    it; a missing file is one line naming it, exit 2. Nothing is downloaded."""
    import importlib.util

    from jobs import train
    from jobs.args import resolve

    monkeypatch.setenv("HOME", str(tmp_path))
    cache = tmp_path / ".cache" / "clip"
    cache.mkdir(parents=True)
    code = train.main(["--pretrained_clip_name", "ViT-B/32", "--output_dir", str(tmp_path / "o")])
    err = capsys.readouterr().err.strip().splitlines()
    assert code == 2 and len(err) == 1 and str(cache / "ViT-B-32.pt") in err[0], err

    torch.save({}, cache / "ViT-B-32.pt")
    args = train.parse_args(["--base_encoder", "ViT-B/32"])
    assert "bpe_simple_vocab_16e6.txt.gz" in resolve(args, "retriever")  # no vocabulary yet

    # CLIP's real BPE vocabulary, as open_clip ships it, where clip.load keeps it.
    open_clip = Path(importlib.util.find_spec("open_clip").submodule_search_locations[0])
    shutil.copy(open_clip / "bpe_simple_vocab_16e6.txt.gz", cache)
    args = train.parse_args(["--pretrained_clip_name", "ViT-B/32"])
    assert resolve(args, "retriever") is None
    assert args.clip_path == str(cache / "ViT-B-32.pt") and args.preset == "base"
    assert args.tokenizer_path == str(cache / "bpe_simple_vocab_16e6.txt.gz")
    # A path stays a path; a given tokenizer is kept.
    args = train.parse_args(["--clip_path", str(cache / "ViT-B-32.pt"), "--tokenizer_path", "x"])
    assert resolve(args, "retriever") is not None and args.tokenizer_path == "x"


@pytest.mark.parametrize(
    "flags",
    [
        "--sim_header tightTransf",
        "--sim_header seqLSTM",
        "--agg_module seqLSTM",
        "--interaction xti",
        "--fp16 --precision bf16",
        "--do_pretrain",
        "--use_mil",
        "--resume_model x.bin",
        "--gradient_accumulation_steps 2",
        "--freeze_layer_num 13",
        "--task_type caption",
    ],
)
def test_what_the_project_cannot_honour_is_one_line_naming_it(flags, tmp_path, capsys):
    from jobs import train

    code = train.main([*flags.split(), "--output_dir", str(tmp_path / "out")])
    err = capsys.readouterr().err.strip().splitlines()
    assert code == 2 and len(err) == 1, err
    assert flags.split()[0] in err[0] or flags.split()[-1] in err[0], err
    assert not (tmp_path / "out").exists()  # refused before anything ran


def test_the_references_fp16_switch_is_fp16_autocast_which_needs_a_gpu():
    """CLIP4Clip's / DRL's ``--fp16`` (apex) is ``--precision fp16``: autocast with a loss
    scaler, on GPUs; on CPUs it is refused with one line naming it."""
    from jobs import train
    from jobs.args import resolve
    from jobs.distributed import compute_dtype

    args = train.parse_args(["--fp16"])
    assert resolve(args, "retriever") is None and args.precision == "fp16"
    with pytest.raises(ValueError, match="--fp16"):
        compute_dtype(args.precision, use_gpu=False, large=False)


def test_the_references_other_flags_are_accepted(tmp_path):
    """Flags their scripts parse and this project has no use for are accepted, as are DRL's
    --agg_module None (meanP) and the launcher's --local_rank."""
    from jobs import train
    from jobs.args import resolve

    flags = (
        "--agg_module None --local_rank 3 --world_size 4 --n_gpu 4 --lr_decay 0.9 --margin 0.1 "
        "--n_pair 1 --video_dim 1024 --hard_negative_rate 0.5 --negative_weighting 1 --cache_dir x "
        "--cross_model cross-base --do_lower_case --loose_type --distributed 0 --device cuda "
        "--text_num_hidden_layers 12 --visual_num_hidden_layers 12 --fp16_opt_level O1 "
        "--num_thread_reader 0 --workers 8 --train_frame_order 2 --eval_frame_order 1 "
        "--linear_patch 3d --wti_arch 3"
    )
    args = train.parse_args(flags.split())
    assert resolve(args, "retriever") is None
    assert args.sim_header == "meanP" and args.num_thread_reader == 8 and args.wti_arch == 3
