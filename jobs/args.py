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
# CLIP4Clip's five retrieval benchmarks (its ``--datatype``), then PitVQA's two.
DATASETS = {
    "retriever": ("msrvtt", "msvd", "lsmdc", "activity", "didemo"),
    "pitvqa": ("pit24", "endo18"),
}
# The references' flags that change nothing here, and why (accepted so that their commands
# run as written): name -> (type, default, help).
NO_EFFECT = {
    "lr_decay": (float, 0.9, "CLIP4Clip: parsed, unused by its retrieval task"),
    "video_dim": (int, 1024, "CLIP4Clip: parsed, unused by its retrieval task"),
    "margin": (float, 0.1, "CLIP4Clip: parsed, unused by its retrieval task"),
    "hard_negative_rate": (float, 0.5, "CLIP4Clip: parsed, unused by its retrieval task"),
    "negative_weighting": (int, 1, "CLIP4Clip: parsed, unused by its retrieval task"),
    "n_pair": (int, 1, "CLIP4Clip: parsed, unused by its retrieval task"),
    "text_num_hidden_layers": (int, 12, "CLIP4Clip: parsed; the CLIP file fixes the depth"),
    "visual_num_hidden_layers": (int, 12, "CLIP4Clip: parsed; the CLIP file fixes the depth"),
    "cross_model": (str, "cross-base", "CLIP4Clip: the cross config, used by tightTransf only"),
    "cache_dir": (str, "", "CLIP4Clip: its download cache (nothing is downloaded here)"),
    "fp16_opt_level": (str, "O1", "CLIP4Clip: apex's level for --fp16"),
    "n_gpu": (int, 1, "CLIP4Clip: set by its launcher (Ray Train places the workers)"),
    "world_size": (int, 0, "set by the references' launcher (Ray Train places the workers)"),
    "local_rank": (int, 0, "set by torch.distributed.launch (Ray Train places the workers)"),
    "rank": (int, 0, "set by the references' launcher (Ray Train places the workers)"),
    "distributed": (int, 0, "DRL: multi-machine DDP (a Ray cluster of several nodes is that)"),
    "device": (str, "cpu", "DRL: cpu/cuda (--use_gpu decides here)"),
}
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


# The references' switches that ask for something this project does not do.
UNSUPPORTED_SWITCHES = {
    "do_pretrain": "CLIP4Clip's pretraining task is not part of this project",
    "use_mil": "CLIP4Clip's MIL-NCE loss is not part of this project",
    "sampled_use_mil": "CLIP4Clip's MIL-NCE loss is not part of this project",
}
RESUME_MODEL = (
    "a run resumes from its --output_dir by itself (Ray Train's checkpoints); --init_model "
    "gives the starting weights"
)
SIM_HEADERS = {"meanP": "meanP", "None": "meanP", "seqTransf": "seqTransf"}
INTERACTIONS = ("wti", "ti", "dp")
PRECISIONS = ("auto", "fp32", "bf16", "fp16")  # models.precision's (not imported: no torch here)


def reference_problems(args) -> str | None:
    """The references' flag values this project cannot honour, as one line; maps DRL's
    ``--agg_module None`` to meanP."""
    for name, why in UNSUPPORTED_SWITCHES.items():
        if getattr(args, name, None):
            return f"--{name}: {why}"
    if getattr(args, "resume_model", None):
        return f"--resume_model {args.resume_model}: {RESUME_MODEL}"
    if getattr(args, "task_type", "retrieval") != "retrieval":
        return f"--task_type {args.task_type}: only retrieval is supported"
    if hasattr(args, "sim_header"):
        if args.sim_header not in SIM_HEADERS:
            return (
                f"--sim_header {args.sim_header} is not supported (meanP, seqTransf, and DRL's "
                "None = meanP are; CLIP4Clip's seqLSTM and tightTransf are not)"
            )
        args.sim_header = SIM_HEADERS[args.sim_header]
        if args.interaction not in INTERACTIONS:
            return f"--interaction {args.interaction} is not supported (wti, ti and dp are)"
        if args.fp16:  # CLIP4Clip's / DRL's apex switch: fp16 autocast with a loss scaler
            if args.precision not in ("auto", "fp16"):
                return f"--fp16 contradicts --precision {args.precision}"
            args.precision = "fp16"
        if args.gradient_accumulation_steps != 1:
            return (
                f"--gradient_accumulation_steps {args.gradient_accumulation_steps}: only 1 is "
                "supported (give the whole --batch_size; Ray Train splits it over the workers)"
            )
        if not -1 <= args.freeze_layer_num <= 12:
            return f"--freeze_layer_num {args.freeze_layer_num}: must be in [-1, 12] (CLIP4Clip)"
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
            default=None,
            help="checkpoint folder (config.json + model.safetensors); without it, the CLIP "
            "that --pretrained_clip_name names is evaluated zero-shot (meanP + dp, DRL's "
            "table), or --init_model",
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
        choices=DATASETS["retriever"] + DATASETS["pitvqa"],
        default=None,
        help="the retriever's benchmark (CLIP4Clip's five) or PitVQANet's dataset "
        "(default: msrvtt for the retriever, pit24 for pitvqa)",
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
        "--deterministic",
        action="store_true",
        help="also the GPU kernels that are nondeterministic by default (atomic adds, cuDNN's "
        "algorithm search, cuBLAS's workspace) run deterministically (slower); a CPU run is "
        "reproducible without it (docs/decisions.md)",
    )
    add(
        "--precision",
        choices=PRECISIONS,
        default="auto",
        help="what the models compute in (autocast; weights, optimizer, losses and exact scores "
        "stay fp32): auto = bf16 where the hardware runs it fast (a GPU with bf16, a CPU with "
        "AVX-512 BF16 or AMX), else fp32; fp16 needs a GPU (with a loss scaler when training)",
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
    g = parser.add_argument_group("experiment tracking (MLflow; cluster/tracking.py)")
    g.add_argument(
        "--mlflow",
        action=Switch,
        default=True,
        help="log the run (flags, each epoch, metrics.json, plots, the checkpoint) to MLflow "
        "(--no-mlflow: off)",
    )
    g.add_argument(
        "--mlflow_tracking_uri",
        default=None,
        help="an MLflow server or store (default: MLFLOW_TRACKING_URI, else the local store "
        "sqlite:///<parent of --output_dir>/mlflow.db, i.e. runs/mlflow.db)",
    )
    g.add_argument(
        "--experiment_name",
        default=None,
        help="the MLflow experiment (default: the model, wti or pitvqa)",
    )

    g = parser.add_argument_group(
        "retrieval data (CLIP4Clip's layouts of its five benchmarks, CLIP4Clip/DRL names)"
    )
    g.add_argument("--train_csv", default=None, help="msrvtt: MSRVTT_train.9k.csv")
    g.add_argument("--val_csv", default=None, help="msrvtt: MSRVTT_JSFUSION_test.csv")
    g.add_argument(
        "--data_path",
        default=None,
        help="msrvtt: MSRVTT_data.json (CLIP4Clip's or Frozen-in-Time's layout); msvd, lsmdc, "
        "activity, didemo: the folder of the annotation files (docs/data.md)",
    )
    g.add_argument(
        "--features_path",
        "--video_path",
        default=None,
        help="folder of the videos (msvd, lsmdc, activity, didemo: searched below it too)",
    )
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
        "--eval_frame_order",
        type=int,
        choices=(0, 1, 2),
        default=0,
        help="frame order of the evaluated (and indexed) clips: 0 as decoded, 1 reversed, 2 "
        "shuffled (seeded)",
    )
    g.add_argument(
        "--num_thread_reader",
        "--workers",
        type=int,
        default=None,
        help="decoding parallelism: Ray Data decoders at a time (CLIP4Clip's / DRL's data-loading "
        "workers; 0 or none: one per CPU of the cluster). Never the Ray Train workers",
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
    g.add_argument(
        "--init_model",
        default=None,
        help="a CLIP4Clip or DRL pytorch_model.bin.N to start from (training) or to evaluate "
        "(--do_eval, jobs/evaluate.py without --checkpoint), read as jobs/import_checkpoint.py does",
    )
    g.add_argument(
        "--linear_patch",
        choices=("2d", "3d"),
        default="2d",
        help="CLIP4Clip's patch embedding: 2d (CLIP's) or 3d (a 3x1x1-frame Conv3d initialised "
        "from CLIP's, each video convolved on its own)",
    )
    g.add_argument(
        "--wti_arch", type=int, choices=(1, 2, 3), default=2, help="DRL's weight-branch heads"
    )
    g.add_argument(
        "--task_type", default="retrieval", help="CLIP4Clip: retrieval (the only task here)"
    )
    g = parser.add_argument_group("the references' flags that change nothing here")
    for name, (kind, default, why) in NO_EFFECT.items():
        g.add_argument(f"--{name}", type=kind, default=default, help=why)
    g.add_argument(
        "--loose_type",
        action=Switch,
        default=None,
        help="CLIP4Clip: loose scoring, the only kind here (its tight type is --sim_header "
        "tightTransf, refused)",
    )
    g.add_argument(
        "--do_lower_case", action=Switch, default=None, help="CLIP's tokenizer lower-cases anyway"
    )
    for name, why in UNSUPPORTED_SWITCHES.items():
        g.add_argument(f"--{name}", action=Switch, default=None, help=f"refused: {why}")
    g.add_argument("--resume_model", default=None, help=f"refused: {RESUME_MODEL}")
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
        default="seqTransf",
        help="temporal header: meanP (DRL's None) or seqTransf (CLIP4Clip's seqLSTM and "
        "tightTransf are refused)",
    )
    g.add_argument(
        "--interaction",
        default="wti",
        help="text-video interaction: wti, ti or dp (DRL's xti is refused)",
    )
    g.add_argument(
        "--cross_num_hidden_layers", type=positive_int, default=4, help="seqTransf layers"
    )
    g.add_argument(
        "--freeze_layer_num",
        type=int,
        default=-1,
        help="CLIP4Clip: freeze CLIP's embeddings and its blocks below N (-1: nothing, as DRL; "
        "0: the embeddings only, CLIP4Clip's default; nothing with --linear_patch 3d, as "
        "CLIP4Clip); at most 12",
    )
    g.add_argument(
        "--train_frame_order",
        type=int,
        choices=(0, 1, 2),
        default=0,
        help="frame order of the training clips: 0 as decoded, 1 reversed, 2 shuffled anew "
        "each epoch (seeded)",
    )
    g.add_argument(
        "--expand_msrvtt_sentences",
        action=Switch,
        default=None,
        help="msrvtt: every caption of a training video is a sample each epoch; without it, "
        "one of them drawn per video per epoch (CLIP4Clip). Default: on with DRL's --anno_path "
        "and with the built-in data (DRL always expands), off with CLIP4Clip's --train_csv",
    )
    g.add_argument(
        "--gradient_accumulation_steps",
        type=positive_int,
        default=1,
        help="CLIP4Clip: only 1 here (a contrastive loss over micro-batches is another loss)",
    )
    g.add_argument(
        "--fp16", action=Switch, default=None, help="the same as --precision fp16 (apex's O1 there)"
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
        "--stall_timeout_s",
        type=float,
        default=900.0,
        help="once an epoch has been reported, the job fails with one line if no epoch is "
        "reported for this long, or three times the longest epoch so far if that is longer "
        "(Ray Train stuck, e.g. after a lost node); rerun the command to resume",
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
    error = reference_problems(args) or resolve_clip_name(args)
    if error:
        return error
    if hasattr(args, "expand_msrvtt_sentences") and args.expand_msrvtt_sentences is None:
        # DRL always trains on every caption; CLIP4Clip only with the switch.
        args.expand_msrvtt_sentences = bool(args.anno_path) or not args.train_csv
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
    if args.anno_path and args.dataset != "msrvtt":  # the annotation folder of the others
        args.data_path = args.data_path or args.anno_path
    elif args.anno_path:  # DRL keeps the annotations together
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
