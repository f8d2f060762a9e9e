"""The flags of ``jobs/train.py`` and ``jobs/evaluate.py``.

Names follow the reference repos, so that their commands work as written: PitVQA's
(``--dataset=pit24 --epochs=60 --batch_size=64 --lr=0.00002``, with ``--data_root``),
CLIP4Clip's (``--train_csv --val_csv --data_path --features_path --max_words --max_frames
--feature_framerate --slice_framepos --sim_header --coef_lr ...``) and DRL's
(``--interaction --cdcr*``, and its spellings ``--agg_module``, ``--video_framerate``,
``--video_path``, ``--anno_path``, ``--datatype``). Each flag also takes ``-`` for ``_``.
Defaults marked "preset" depend on ``--preset``: the tiny preset trains a random-init
model from scratch in minutes, the base preset follows the papers.
"""

from __future__ import annotations

from pathlib import Path

from jobs.cli import Parser, Switch, positive_float, positive_int

# Nothing heavy is imported here: ``--help`` and a bad flag answer before Ray or torch load.
DEFAULT_SYNTHETIC_DIR = Path.home() / ".cache" / "vqa-wti-ray" / "synthetic"

MODELS = {"wti": "retriever", "retriever": "retriever", "pitvqa": "pitvqa"}
DATASETS = {"retriever": ("msrvtt",), "pitvqa": ("pit24", "endo18")}
# CLIP's model names (CLIP4Clip's --pretrained_clip_name, DRL's --base_encoder) -> the file
# OpenAI's ``clip.load`` keeps in its download cache, with the BPE vocabulary beside it.
OPENAI_CLIP_FILES = {
    "ViT-B/32": "ViT-B-32.pt",
    "ViT-B/16": "ViT-B-16.pt",
    "ViT-L/14": "ViT-L-14.pt",
}
CLIP_BPE = "bpe_simple_vocab_16e6.txt.gz"


def clip_cache() -> Path:
    """OpenAI's CLIP download cache (``clip.load``'s default root)."""
    return Path.home() / ".cache" / "clip"


def resolve_clip_name(args) -> str | None:
    """A CLIP model name in ``--clip_path`` becomes OpenAI's file in the cache, and its BPE
    vocabulary the tokenizer when none is given; an error line when a file is not there
    (nothing is downloaded)."""
    if args.clip_path not in OPENAI_CLIP_FILES:
        return None
    file = clip_cache() / OPENAI_CLIP_FILES[args.clip_path]
    if not file.is_file():
        return (
            f"--pretrained_clip_name {args.clip_path}: no {file}; put OpenAI's "
            f"{file.name} there (where clip.load keeps it; nothing is downloaded)"
        )
    args.clip_path = str(file)
    if not args.tokenizer_path:
        found = [p for p in (file.parent / CLIP_BPE, clip_cache() / CLIP_BPE) if p.is_file()]
        if not found:
            return (
                f"--pretrained_clip_name: no {CLIP_BPE} beside {file}; put CLIP's BPE "
                "vocabulary there or give --tokenizer_path"
            )
        args.tokenizer_path = str(found[0])
    return None


# The local weights a base preset is built from (their presence also selects the preset).
WEIGHT_FLAGS = {"retriever": ("clip_path",), "pitvqa": ("vit_path", "blip_path", "gpt2_path")}


def model_for(model: str | None, dataset: str | None) -> str:
    """``--model``, or the model that ``--dataset`` names (pit24/endo18: pitvqa; msrvtt: wti)."""
    if model:
        return model
    return "pitvqa" if dataset in DATASETS["pitvqa"] else "wti"


# Preset-dependent defaults: (tiny, base). The tiny values were tuned so that the main
# jobs reach their targets in a few CPU minutes; the base values are the papers'.
PRESET_DEFAULTS = {
    "retriever": {
        "epochs": (12, 5),
        "batch_size": (32, 128),
        "lr": (1e-3, 1e-4),
        "coef_lr": (1.0, 1e-3),
        "max_frames": (4, 12),
    },
    "pitvqa": {"epochs": (30, 60), "batch_size": (32, 64), "lr": (1e-3, 2e-5)},
}


def build_parser(prog: str, description: str, evaluate: bool = False) -> Parser:
    parser = Parser(prog=prog, description=description)
    add = parser.add_argument
    if evaluate:
        add(
            "--checkpoint",
            required=True,
            help="checkpoint folder (config.json + model.safetensors)",
        )
        add(
            "--output_dir",
            default=None,
            help="where metrics.json and plots go (default: next to the checkpoint)",
        )
    else:
        add(
            "--model",
            choices=sorted(MODELS),
            default=None,
            help="wti (= retriever): CLIP4Clip + DRL's WTI; pitvqa: PitVQANet (default: the one --dataset names, else wti)",
        )
        add(
            "--output_dir",
            default=None,
            help="checkpoints, metrics.json, history.jsonl and plots (default: runs/<model>)",
        )
        add(
            "--preset",
            choices=("tiny", "base"),
            default=None,
            help="tiny: small random-init models; base: the papers' models from the weight flags "
            "(default: base when a weight flag is given, else tiny)",
        )
    add(
        "--dataset",
        "--datatype",
        choices=("msrvtt", "pit24", "endo18"),
        default=None,
        help="default: msrvtt for the retriever, pit24 for pitvqa",
    )
    add(
        "--synthetic_dir",
        default=str(DEFAULT_SYNTHETIC_DIR),
        help="where the built-in synthetic datasets are generated when no data flags are given",
    )
    add(
        "--seed",
        "--random_seed",
        type=int,
        default=42,
        help="random seed (model init, shuffling, synthetic data)",
    )
    add(
        "--num_workers",
        type=positive_int,
        default=None,
        help="Ray Train workers (default: one per GPU, else 1)",
    )
    add(
        "--use_gpu",
        action=Switch,
        default=None,
        help="train and evaluate on GPUs (default: when the cluster has them)",
    )
    add(
        "--num_shards",
        type=positive_int,
        default=None,
        help="video shards of the retrieval evaluation, one Ray task each (default: one per GPU, else 2; at "
        "most one per column block of the kernel, a few hundred videos)",
    )

    g = parser.add_argument_group("retrieval data (MSR-VTT layout, CLIP4Clip/DRL names)")
    g.add_argument("--train_csv", default=None, help="MSRVTT_train.9k.csv")
    g.add_argument("--val_csv", default=None, help="MSRVTT_JSFUSION_test.csv")
    g.add_argument(
        "--data_path",
        default=None,
        help="MSRVTT_data.json (CLIP4Clip's or Frozen-in-Time's layout)",
    )
    g.add_argument("--features_path", "--video_path", default=None, help="folder of the videos")
    g.add_argument(
        "--anno_path", default=None, help="DRL: folder holding the two CSVs and MSRVTT_data.json"
    )
    g.add_argument("--max_words", type=positive_int, default=32, help="text tokens")
    g.add_argument(
        "--max_frames",
        type=positive_int,
        default=None,
        help="frames per clip (preset: 4 tiny, 12 base)",
    )
    g.add_argument(
        "--feature_framerate",
        "--video_framerate",
        type=positive_float,
        default=1.0,
        help="frames per second sampled",
    )
    g.add_argument(
        "--slice_framepos", type=int, choices=(0, 1, 2), default=2, help="0 head, 1 tail, 2 uniform"
    )
    g.add_argument(
        "--synthetic_train",
        type=positive_int,
        default=240,
        help="synthetic MSR-VTT training videos",
    )
    g.add_argument(
        "--synthetic_test",
        type=positive_int,
        default=48,
        help="synthetic MSR-VTT test videos (at most 96)",
    )

    g = parser.add_argument_group("VQA data (PitVQA / EndoVis18-VQA layouts)")
    g.add_argument(
        "--data_root", default=None, help="dataset root (pit24: QA/ and images/; endo18: seq_N/)"
    )
    g.add_argument(
        "--synthetic_videos",
        type=positive_int,
        default=25,
        help="synthetic pit24 videos (the split needs 25)",
    )
    g.add_argument("--max_length", type=positive_int, default=30, help="question tokens")

    g = parser.add_argument_group("pretrained weights (local folders; nothing is downloaded)")
    g.add_argument(
        "--clip_path",
        "--pretrained_clip_name",
        "--base_encoder",
        default=None,
        help="CLIP for the base retriever: a HF CLIP folder, OpenAI's ViT-B-32.pt, or a name "
        f"({', '.join(OPENAI_CLIP_FILES)}: OpenAI's file in ~/.cache/clip/, as clip.load keeps it)",
    )
    g.add_argument("--vit_path", default=None, help="ViT folder (base PitVQANet)")
    g.add_argument("--blip_path", default=None, help="BLIP folder (base PitVQANet)")
    g.add_argument("--gpt2_path", default=None, help="GPT-2 folder (base PitVQANet)")
    g.add_argument(
        "--tokenizer_path",
        default=None,
        help="tokenizer folder, or CLIP's bpe_simple_vocab_16e6.txt.gz (default: the CLIP/GPT-2 folder, "
        "or a tiny BPE)",
    )
    g.add_argument(
        "--image_size", type=positive_int, default=64, help="image side of the tiny presets"
    )
    if evaluate:
        return parser

    g = parser.add_argument_group("training")
    g.add_argument(
        "--epochs",
        type=positive_int,
        default=None,
        help="preset: retriever 12 tiny / 5 base; pitvqa 30 / 60",
    )
    g.add_argument(
        "--batch_size",
        type=positive_int,
        default=None,
        help="global batch over all workers (preset: retriever 32 / 128; pitvqa 32 / 64)",
    )
    g.add_argument("--batch_size_val", type=positive_int, default=64, help="validation batch")
    g.add_argument(
        "--lr",
        type=positive_float,
        default=None,
        help="learning rate (preset: retriever 1e-3 / 1e-4; pitvqa 1e-3 / 2e-5)",
    )
    g.add_argument(
        "--coef_lr",
        type=positive_float,
        default=None,
        help="CLIP's lr is lr * coef_lr (preset: 1 / 1e-3)",
    )
    g.add_argument(
        "--weight_decay",
        type=float,
        default=0.2,
        help="retriever AdamW weight decay (none on biases and norms)",
    )
    g.add_argument(
        "--warmup_proportion", type=float, default=0.1, help="retriever cosine schedule warm-up"
    )
    g.add_argument(
        "--max_grad_norm", type=positive_float, default=1.0, help="retriever gradient clipping"
    )
    g.add_argument(
        "--sim_header",
        "--agg_module",
        choices=("meanP", "seqTransf"),
        default="seqTransf",
        help="temporal header",
    )
    g.add_argument(
        "--interaction", choices=("wti", "ti", "dp"), default="wti", help="text-video interaction"
    )
    g.add_argument(
        "--cross_num_hidden_layers", type=positive_int, default=4, help="seqTransf layers"
    )
    g.add_argument(
        "--cdcr",
        type=int,
        choices=(0, 1, 2, 3),
        default=0,
        help="DRL's channel decorrelation (0 = off)",
    )
    # DRL's published setting (the library's defaults too): alpha1 0.14, alpha2 0.
    g.add_argument("--cdcr_alpha1", type=float, default=0.14, help="CDCR on-diagonal weight")
    g.add_argument("--cdcr_alpha2", type=float, default=0.0, help="CDCR off-diagonal weight")
    g.add_argument("--cdcr_lambda", type=float, default=0.001, help="CDCR loss weight")
    g.add_argument(
        "--text_encoder_init",
        choices=("config", "pretrained"),
        default="config",
        help="PitVQANet's BLIP text encoder: random from config (reference) or pretrained",
    )
    g.add_argument(
        "--max_failures", type=int, default=2, help="worker failures Ray Train recovers from"
    )
    g.add_argument(
        "--storage_path",
        default=None,
        help="where Ray Train keeps the epoch checkpoints: a folder every node sees, or s3://... "
        "(default: <output_dir>)",
    )
    g.add_argument(
        "--placement_strategy",
        choices=("PACK", "SPREAD", "STRICT_PACK", "STRICT_SPREAD"),
        default="PACK",
        help="how Ray Train places the workers on nodes",
    )
    g.add_argument(
        "--index",
        action=Switch,
        default=True,
        help="retriever: index every decoded video for serving after training (--no-index or "
        "--index 0: skip; jobs/index.py builds it later)",
    )
    g.add_argument(
        "--fresh",
        action="store_true",
        help="discard an earlier run in --output_dir instead of resuming it",
    )
    g.add_argument(
        "--n_display",
        type=int,
        default=100,
        help="log the loss every N steps (0: never; CLIP4Clip: 100)",
    )
    g.add_argument(
        "--do_train",
        action=Switch,
        default=None,
        help="CLIP4Clip/DRL's switch: train, then evaluate (the default unless --do_eval is given alone)",
    )
    g.add_argument(
        "--do_eval",
        action=Switch,
        default=None,
        help="CLIP4Clip/DRL's switch: alone (or with --do_train 0) it evaluates <output_dir>/checkpoint "
        "without training; training always ends with an evaluation",
    )
    g.add_argument(
        "--inject_failure",
        type=positive_int,
        default=None,
        help="testing: the first worker to reach this step raises, once per output_dir",
    )
    return parser


def resolve(args, kind: str) -> str | None:
    """Fill the preset defaults and derived paths in place; return an error line or None."""
    defaults = PRESET_DEFAULTS[kind]
    error = resolve_clip_name(args)
    if error:
        return error
    if hasattr(args, "preset") and args.preset is None:
        weights = WEIGHT_FLAGS[kind]
        args.preset = "base" if any(getattr(args, name) for name in weights) else "tiny"
    column = 0 if getattr(args, "preset", "tiny") == "tiny" else 1
    for name, values in defaults.items():
        if getattr(args, name, None) is None and hasattr(args, name):
            setattr(args, name, values[column])
    if args.dataset is None:
        args.dataset = DATASETS[kind][0]
    if args.dataset not in DATASETS[kind]:
        return f"--dataset {args.dataset} is not a {kind} dataset (choose from {', '.join(DATASETS[kind])})"
    if args.anno_path:  # DRL keeps the annotations together
        anno = Path(args.anno_path)
        args.train_csv = args.train_csv or str(anno / "MSRVTT_train.9k.csv")
        args.val_csv = args.val_csv or str(anno / "MSRVTT_JSFUSION_test.csv")
        args.data_path = args.data_path or str(anno / "MSRVTT_data.json")
    if getattr(args, "preset", None) == "base":
        missing = [f"--{name}" for name in WEIGHT_FLAGS[kind] if not getattr(args, name)]
        if missing:
            return f"--preset base needs the local weight folder(s) {' '.join(missing)}"
    for name in ("vit_path", "blip_path", "gpt2_path"):
        if getattr(args, name) and not Path(getattr(args, name)).is_dir():
            return f"--{name} {getattr(args, name)}: no such folder"
    if args.clip_path and not Path(args.clip_path).exists():
        return f"--clip_path {args.clip_path}: no such folder or file (a HF CLIP folder or OpenAI's ViT-B-32.pt)"
    from models.tokenizer import tokenizer_path_problem

    if args.tokenizer_path and tokenizer_path_problem(args.tokenizer_path):
        return f"--tokenizer_path {tokenizer_path_problem(args.tokenizer_path)}"
    if (
        kind == "retriever"
        and args.clip_path
        and Path(args.clip_path).is_file()
        and not args.tokenizer_path
    ):
        return (
            f"--clip_path {args.clip_path} holds no tokenizer: add --tokenizer_path "
            "(a CLIP tokenizer folder or bpe_simple_vocab_16e6.txt.gz)"
        )
    if kind == "retriever" and getattr(args, "cdcr", 0) and args.interaction == "dp":
        return "--cdcr needs token-wise features: use --interaction wti or ti"
    if hasattr(args, "do_train") and args.do_train is None:
        args.do_train = not args.do_eval  # as CLIP4Clip: --do_eval alone evaluates
    if not 0 <= getattr(args, "warmup_proportion", 0) < 1:
        return "--warmup_proportion must be in [0, 1)"
    return None
