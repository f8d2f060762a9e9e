"""The references' own README commands, as their users type them: CLIP4Clip's five ("How to
Run"), DRL's fine-tuning command and its zero-shot line (scripts/msrvtt.sh). Each is the
README's text with only these changes: the launcher (``python -m torch.distributed.launch
--nproc_per_node=N main_task_retrieval.py`` / ``main.py``) becomes ``python jobs/train.py
--num_workers 1``, ``${DATA_PATH}`` points at a small corpus in the benchmark's real layout,
and the epochs, batches and frames are small. ``--pretrained_clip_name ViT-B/32`` finds a
tiny CLIP archive in OpenAI's format where ``clip.load`` keeps it (``~/.cache/clip``).

``metrics.json`` must report the texts and videos that CLIP4Clip's loader would score on the
same folder; the counts here are computed from the folder the way CLIP4Clip's loaders count
(``clip4clip_counts``), not by the project's readers.
"""

import json
import pickle
import shlex
import shutil
from pathlib import Path

import pytest
import torch
from helpers import save_torchscript, tiny_openai_clip

pytestmark = pytest.mark.slow  # a whole job per command


# CLIP4Clip's README, "How to Run", as printed there (the launcher line included).
CLIP4CLIP = {
    "msrvtt": """python -m torch.distributed.launch --nproc_per_node=4 \\
main_task_retrieval.py --do_train --num_thread_reader=0 \\
--epochs=5 --batch_size=128 --n_display=50 \\
--train_csv ${DATA_PATH}/MSRVTT_train.9k.csv \\
--val_csv ${DATA_PATH}/MSRVTT_JSFUSION_test.csv \\
--data_path ${DATA_PATH}/MSRVTT_data.json \\
--features_path ${DATA_PATH}/MSRVTT_Videos \\
--output_dir ckpts/ckpt_msrvtt_retrieval_looseType \\
--lr 1e-4 --max_words 32 --max_frames 12 --batch_size_val 16 \\
--datatype msrvtt --expand_msrvtt_sentences  \\
--feature_framerate 1 --coef_lr 1e-3 \\
--freeze_layer_num 0  --slice_framepos 2 \\
--loose_type --linear_patch 2d --sim_header meanP \\
--pretrained_clip_name ViT-B/32""",
    "msvd": """python -m torch.distributed.launch --nproc_per_node=4 \\
main_task_retrieval.py --do_train --num_thread_reader=2 \\
--epochs=5 --batch_size=128 --n_display=50 \\
--data_path ${DATA_PATH} \\
--features_path ${DATA_PATH}/MSVD_Videos \\
--output_dir ckpts/ckpt_msvd_retrieval_looseType \\
--lr 1e-4 --max_words 32 --max_frames 12 --batch_size_val 16 \\
--datatype msvd \\
--feature_framerate 1 --coef_lr 1e-3 \\
--freeze_layer_num 0 --slice_framepos 2 \\
--loose_type --linear_patch 2d --sim_header meanP \\
--pretrained_clip_name ViT-B/32""",
    "lsmdc": """python -m torch.distributed.launch --nproc_per_node=4 \\
main_task_retrieval.py --do_train --num_thread_reader=2 \\
--epochs=5 --batch_size=128 --n_display=50 \\
--data_path ${DATA_PATH} \\
--features_path ${DATA_PATH}/LSMDC_Videos \\
--output_dir ckpts/ckpt_lsmdc_retrieval_looseType \\
--lr 1e-4 --max_words 32 --max_frames 12 --batch_size_val 16 \\
--datatype lsmdc --feature_framerate 1 --coef_lr 1e-3 \\
--freeze_layer_num 0  --slice_framepos 2 \\
--loose_type --linear_patch 2d --sim_header meanP \\
--pretrained_clip_name ViT-B/32""",
    "activity": """python -m torch.distributed.launch --nproc_per_node=8 \\
main_task_retrieval.py --do_train --num_thread_reader=2 \\
--epochs=5 --batch_size=128 --n_display=50 \\
--data_path ${DATA_PATH} \\
--features_path ${DATA_PATH}/Activity_Videos \\
--output_dir ckpts/ckpt_activity_retrieval_looseType \\
--lr 1e-4 --max_words 64 --max_frames 64 --batch_size_val 16 \\
--datatype activity --feature_framerate 1 --coef_lr 1e-3 \\
--freeze_layer_num 0  --slice_framepos 2 \\
--loose_type --linear_patch 2d --sim_header meanP \\
--pretrained_clip_name ViT-B/32""",
    "didemo": """python -m torch.distributed.launch --nproc_per_node=8 \\
main_task_retrieval.py --do_train --num_thread_reader=2 \\
--epochs=5 --batch_size=128 --n_display=50 \\
--data_path ${DATA_PATH} \\
--features_path ${DATA_PATH}/DiDeMo_Videos \\
--output_dir ckpts/ckpt_didemo_retrieval_looseType \\
--lr 1e-4 --max_words 64 --max_frames 64 --batch_size_val 16 \\
--datatype didemo --feature_framerate 1 --coef_lr 1e-3 \\
--freeze_layer_num 0  --slice_framepos 2 \\
--loose_type --linear_patch 2d --sim_header meanP \\
--pretrained_clip_name ViT-B/32""",
}
# DRL's README, "Fine-tuning code", and its zero-shot line of scripts/msrvtt.sh.
DRL_TRAIN = """CUDA_VISIBLE_DEVICES=0,1,2,3 python -m torch.distributed.launch --nproc_per_node=4 \\
main.py --do_train 1 --workers 8 --n_display 50 \\
--epochs 5 --lr 1e-4 --coef_lr 1e-3 --batch_size 128 --batch_size_val 128 \\
--anno_path data/MSR-VTT/anns --video_path data/MSR-VTT/videos --datatype msrvtt \\
--max_words 32 --max_frames 12 --video_framerate 1 \\
--base_encoder ViT-B/32 --agg_module seqTransf \\
--interaction wti --wti_arch 2 --cdcr 3 --cdcr_alpha1 0.11 --cdcr_alpha2 0.0 --cdcr_lambda 0.001 \\
--output_dir ckpts/ckpt_msrvtt_wti_cdcr"""
DRL_ZERO_SHOT = (
    "CUDA_VISIBLE_DEVICES=0,1,2,3 python -m torch.distributed.launch --nproc_per_node=4 main.py "
    "--do_eval 1 --workers 8 --n_display 50 --epochs 5 --lr 1e-4 --coef_lr 1e-3 --batch_size 128 "
    "--batch_size_val 128 --anno_path data/MSR-VTT/anns --video_path data/MSR-VTT/videos "
    "--datatype msrvtt --max_words 32 --max_frames 12 --video_framerate 1 --base_encoder ViT-B/32 "
    "--agg_module None --interaction dp --output_dir ckpts/ckpt_msrvtt_zeroshot"
)
SMALL = {  # small epochs, batches and frames (the videos are 2 s at 1 fps: 2 frames)
    "--epochs=5": "--epochs=1",
    "--epochs 5": "--epochs 1",
    "--batch_size=128": "--batch_size=8",
    "--batch_size 128": "--batch_size 8",
    "--max_frames 12": "--max_frames 2",
    "--max_frames 64": "--max_frames 2",
    "--n_display=50": "--n_display=1",
}


def as_run_here(command: str, data_path: Path | None = None) -> str:
    """The README command with the launcher replaced, ``${DATA_PATH}`` set and small sizes."""
    command = command.replace("\\\n", " ")
    script = "main_task_retrieval.py" if "main_task_retrieval.py" in command else "main.py"
    rest = command.split(script, 1)[1]
    for big, small in SMALL.items():
        rest = rest.replace(big, small)
    if data_path is not None:
        rest = rest.replace("${DATA_PATH}", str(data_path))
    return f"python jobs/train.py --num_workers 1{rest}"


@pytest.fixture(scope="module")
def clip_home(tmp_path_factory):
    """A HOME whose ``~/.cache/clip`` holds ``ViT-B-32.pt`` (a tiny OpenAI-format CLIP,
    TorchScript as OpenAI ships it) and CLIP's BPE vocabulary beside it."""
    home = tmp_path_factory.mktemp("home")
    cache = home / ".cache" / "clip"
    cache.mkdir(parents=True)
    save_torchscript(tiny_openai_clip(), cache / "ViT-B-32.pt")
    from open_clip.tokenizer import default_bpe  # imported by tiny_openai_clip

    shutil.copy(default_bpe(), cache / "bpe_simple_vocab_16e6.txt.gz")
    return home


@pytest.fixture(scope="module")
def corpora(tmp_path_factory):
    """A small corpus per benchmark, in its real layout (CLIP4Clip's README folder names)."""
    from ingest.synthetic import make_benchmark, make_msrvtt

    root = tmp_path_factory.mktemp("data")
    size = dict(num_train=8, num_test=4, seconds=2, fps=4)
    msrvtt = make_msrvtt(root / "msrvtt", width=80, height=80, **size)
    (msrvtt / "videos").rename(msrvtt / "MSRVTT_Videos")
    out = {"msrvtt": msrvtt}
    for datatype in ("msvd", "lsmdc", "activity", "didemo"):
        out[datatype] = make_benchmark(datatype, root / datatype, **size)
    return out


def clip4clip_counts(datatype: str, data_path: Path, features: Path) -> tuple[int, int]:
    """(texts, videos) that CLIP4Clip's test loader scores on this folder, counted as its
    dataloaders count them (``dataloader_*_retrieval.py``; msrvtt: the JSFusion CSV)."""
    stems = {p.stem for p in features.rglob("*") if p.is_file()}
    names = {p.name for p in features.rglob("*") if p.is_file()}
    if datatype == "msrvtt":
        rows = (data_path / "MSRVTT_JSFUSION_test.csv").read_text().splitlines()[1:]
        return len(rows), len(rows)
    if datatype == "msvd":
        ids = (data_path / "test_list.txt").read_text().split()
        captions = pickle.loads((data_path / "raw-captions.pkl").read_bytes())
        return sum(len(captions[v]) for v in ids), len(ids)
    if datatype == "lsmdc":
        lines = (data_path / "LSMDC16_challenge_1000_publictect.csv").read_text().splitlines()
        pairs = [line.split("\t")[0] for line in lines if line.split("\t")[0] in stems]
        return len(pairs), len(pairs)
    if datatype == "activity":
        ids = json.loads((data_path / "val_ids.json").read_text())
        captions = json.loads((data_path / "val_1.json").read_text())
        pairs = [v for v in ids if v in captions and v[2:] in stems]
        return len(pairs), len(pairs)
    listed = set((data_path / "test_list.txt").read_text().split())
    described = {item["video"] for item in json.loads((data_path / "test_data.json").read_text())}
    videos = listed & described & names
    return len(videos), len(videos)


def run_in(folder: Path, command: str, monkeypatch) -> int:
    """``command`` (``python jobs/train.py ...``) in ``folder``, in this process (the test
    session's Ray; the CLI's own process is tests/test_seed_command.py's)."""
    from jobs import train

    words = shlex.split(command)
    assert words[:2] == ["python", "jobs/train.py"]
    monkeypatch.chdir(folder)
    return train.main(words[2:])


@pytest.mark.parametrize("datatype", list(CLIP4CLIP))
def test_clip4clips_readme_command_runs_as_printed(
    datatype, corpora, clip_home, ray_local, tmp_path, monkeypatch, capsys
):
    monkeypatch.setenv("HOME", str(clip_home))
    data_path = corpora[datatype]
    command = as_run_here(CLIP4CLIP[datatype], data_path)
    assert run_in(tmp_path, command, monkeypatch) == 0, capsys.readouterr().err[-2000:]
    run = tmp_path / "ckpts" / f"ckpt_{datatype}_retrieval_looseType"
    metrics = json.loads((run / "metrics.json").read_text())
    features = Path(command.split("--features_path ")[1].split()[0])
    texts, videos = clip4clip_counts(datatype, data_path, features)
    assert (metrics["num_texts"], metrics["num_videos"]) == (texts, videos)
    config = json.loads((run / "checkpoint" / "config.json").read_text())["config"]
    assert (config["sim_header"], config["linear_patch"]) == ("meanP", "2d")
    saved = json.loads((run / "train_config.json").read_text())
    assert saved["freeze_layer_num"] == 0 and saved["dataset"] == datatype
    if datatype == "msrvtt":  # every caption of every training video, each epoch
        assert saved["expand_msrvtt_sentences"] is True
        assert saved["num_train_rows"] == 8 * 5


def drl_folder(corpora, tmp_path) -> Path:
    """DRL's data layout, data/MSR-VTT/anns (the CSVs and MSRVTT_data.json) and videos, in a
    folder that the commands run from (as DRL's repository root is)."""
    anns = tmp_path / "data" / "MSR-VTT" / "anns"
    anns.mkdir(parents=True)
    for name in ("MSRVTT_train.9k.csv", "MSRVTT_JSFUSION_test.csv", "MSRVTT_data.json"):
        shutil.copy(corpora["msrvtt"] / name, anns / name)
    (tmp_path / "data" / "MSR-VTT" / "videos").symlink_to(corpora["msrvtt"] / "MSRVTT_Videos")
    return tmp_path


def test_drls_readme_command_runs_as_printed(
    corpora, clip_home, ray_local, tmp_path, monkeypatch, capsys
):
    """Run from a folder laid out as DRL's repository (data/MSR-VTT/...)."""
    monkeypatch.setenv("HOME", str(clip_home))
    folder = drl_folder(corpora, tmp_path)
    assert run_in(folder, as_run_here(DRL_TRAIN), monkeypatch) == 0, capsys.readouterr().err[-3000:]
    run = folder / "ckpts" / "ckpt_msrvtt_wti_cdcr"
    metrics = json.loads((run / "metrics.json").read_text())
    counts = clip4clip_counts("msrvtt", corpora["msrvtt"], corpora["msrvtt"] / "MSRVTT_Videos")
    assert (metrics["num_texts"], metrics["num_videos"]) == counts
    config = json.loads((run / "checkpoint" / "config.json").read_text())["config"]
    assert (config["sim_header"], config["interaction"], config["wti_arch"]) == (
        "seqTransf",
        "wti",
        2,
    )
    saved = json.loads((run / "train_config.json").read_text())
    assert saved["cdcr"] == 3 and saved["cdcr_alpha1"] == 0.11
    assert saved["expand_msrvtt_sentences"] is True  # DRL trains on every caption


def test_drls_zero_shot_line_evaluates_clip_as_it_is(
    corpora, clip_home, ray_local, tmp_path, monkeypatch, capsys
):
    """``--do_eval 1`` with no trained model: the CLIP of --base_encoder, meanP + dp (DRL's
    zero-shot row); ``jobs/evaluate.py --pretrained_clip_name ViT-B/32`` scores the same."""
    from jobs import evaluate

    monkeypatch.setenv("HOME", str(clip_home))
    folder = drl_folder(corpora, tmp_path)
    assert run_in(folder, as_run_here(DRL_ZERO_SHOT), monkeypatch) == 0, capsys.readouterr().err
    run = folder / "ckpts" / "ckpt_msrvtt_zeroshot"
    metrics = json.loads((run / "metrics.json").read_text())
    config = json.loads((run / "zero_shot" / "config.json").read_text())["config"]
    assert (config["sim_header"], config["interaction"]) == ("meanP", "dp")
    assert not (run / "checkpoint").exists()  # nothing was trained

    anns = folder / "data" / "MSR-VTT" / "anns"
    argv = shlex.split(
        f"--pretrained_clip_name ViT-B/32 --datatype msrvtt --max_frames 2 "
        f"--train_csv {anns}/MSRVTT_train.9k.csv --val_csv {anns}/MSRVTT_JSFUSION_test.csv "
        f"--data_path {anns}/MSRVTT_data.json --features_path {folder}/data/MSR-VTT/videos "
        f"--output_dir {tmp_path / 'zero_shot_eval'}"
    )
    assert evaluate.main(argv) == 0, capsys.readouterr().err
    again = json.loads((tmp_path / "zero_shot_eval" / "metrics.json").read_text())
    assert again["t2v"] == metrics["t2v"] and again["v2t"] == metrics["v2t"]

    # --init_model: a CLIP4Clip meanP file holding this same CLIP scores the same.
    clip = torch.jit.load(str(clip_home / ".cache" / "clip" / "ViT-B-32.pt")).state_dict()
    torch.save({f"module.clip.{k}": v for k, v in clip.items()}, tmp_path / "pytorch_model.bin.0")
    init = tmp_path / "init_eval"
    argv[argv.index("--output_dir") + 1] = str(init)
    assert evaluate.main([*argv, "--init_model", str(tmp_path / "pytorch_model.bin.0")]) == 0
    from_file = json.loads((init / "metrics.json").read_text())
    assert from_file["t2v"] == metrics["t2v"] and from_file["v2t"] == metrics["v2t"]
    saved = json.loads((init / "init_model" / "config.json").read_text())["config"]
    assert (saved["sim_header"], saved["interaction"]) == ("meanP", "dp")
