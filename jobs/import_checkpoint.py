"""Turn a reference repository's checkpoint file into a checkpoint folder of this project.

    python jobs/import_checkpoint.py drl pytorch_model.bin.4 --output_dir runs/drl/checkpoint \\
        --tokenizer_path bpe_simple_vocab_16e6.txt.gz
    python jobs/import_checkpoint.py clip4clip pytorch_model.bin.4 --output_dir runs/c4c/checkpoint \\
        --tokenizer_path bpe_simple_vocab_16e6.txt.gz --max_frames 12
    python jobs/import_checkpoint.py pitvqa pitvqa_pit24_weights_3.pth.tar --output_dir runs/pitvqa/checkpoint \\
        --dataset pit24 --gpt2_path gpt2/

The folder (config.json + model.safetensors + tokenizer) is what training writes, so
``jobs/evaluate.py --checkpoint``, ``jobs/index.py --checkpoint`` and ``serve run
serve:build_app checkpoint=...`` (``vqa_checkpoint=...``) take it as they take a trained one.
Nothing in the file runs: PitVQA's pickled model object is read by an unpickler that
rebuilds tensors only (``models/safe_load.py``); a file that asks to run code is refused
(exit 2). What the models cannot represent is one line naming the keys (exit 2), and the
output folder is written whole or not at all.
"""

from __future__ import annotations

import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from jobs.cli import Parser, fail, positive_int  # noqa: E402

PROG = "jobs/import_checkpoint.py"
KINDS = ("drl", "clip4clip", "pitvqa")


def build_parser() -> Parser:
    parser = Parser(prog=PROG, description=__doc__)
    add = parser.add_argument
    add(
        "kind",
        choices=KINDS,
        help="drl / clip4clip: pytorch_model.bin.N; pitvqa: the pickled *.pth.tar",
    )
    add("file", help="the reference checkpoint file")
    add(
        "--output_dir",
        required=True,
        help="the checkpoint folder to write (replaced whole if it is one)",
    )
    g = parser.add_argument_group("retriever (drl, clip4clip), the references' names and defaults")
    g.add_argument(
        "--sim_header",
        "--agg_module",
        choices=("meanP", "seqTransf", "seqLSTM", "tightTransf"),
        default=None,
        help="the temporal header; meanP and seqTransf are supported (default: from the file)",
    )
    g.add_argument(
        "--interaction",
        choices=("wti", "ti", "dp", "xti"),
        default=None,
        help="wti, ti or dp; xti is not supported (default: from the file; drl ti, clip4clip dp without "
        "weight heads)",
    )
    g.add_argument("--max_words", type=positive_int, default=32, help="text tokens")
    g.add_argument("--max_frames", type=positive_int, default=12, help="frames per video")
    g.add_argument(
        "--wti_arch",
        type=int,
        choices=(1, 2, 3),
        default=None,
        help="DRL's weight heads (default: from the file)",
    )
    g.add_argument(
        "--tokenizer_path",
        default=None,
        help="CLIP's bpe_simple_vocab_16e6.txt.gz or a CLIP tokenizer folder (needed for drl and clip4clip)",
    )
    g = parser.add_argument_group("pitvqa")
    g.add_argument(
        "--dataset", choices=("pit24", "endo18"), default="pit24", help="the answer classes"
    )
    g.add_argument(
        "--gpt2_path",
        default=None,
        help="GPT-2 folder: the tokenizer (default: the one pickled in the file) and the architecture "
        "when the file does not give it",
    )
    g.add_argument(
        "--vit_path",
        default=None,
        help="ViT folder, for the architecture when the file does not give it",
    )
    g.add_argument(
        "--blip_path",
        default=None,
        help="BLIP folder, for the architecture when the file does not give it",
    )
    return parser


def convert(args):
    """``(model, tokenizer, extra config fields)`` for the file; raises on anything unusable."""
    from models import load_tokenizer, reference, safe_load
    from models.openai_clip import read_state_dict

    if args.kind == "pitvqa":
        from ingest.qa import load_labels

        obj = safe_load.read(args.file)
        model = reference.pitvqa_from_reference(
            obj, args.dataset, args.vit_path, args.blip_path, args.gpt2_path
        )
        record = obj.get("model") if isinstance(obj, dict) else None
        tokenizer = (
            load_tokenizer(args.gpt2_path) if args.gpt2_path else reference.pitvqa_tokenizer(record)
        )
        if tokenizer is None:
            raise ValueError("the file holds no tokenizer: add --gpt2_path (the GPT-2 folder)")
        if len(tokenizer) != model.config.vocab_size:
            raise ValueError(
                f"the tokenizer has {len(tokenizer)} tokens, the model's embedding "
                f"{model.config.vocab_size}"
            )
        return model, tokenizer, {"labels": load_labels(args.dataset)}
    if not args.tokenizer_path:
        raise ValueError(
            "--tokenizer_path is needed: CLIP's bpe_simple_vocab_16e6.txt.gz or a CLIP tokenizer folder"
        )
    tokenizer = load_tokenizer(args.tokenizer_path)
    model = reference.retriever_from_reference(
        read_state_dict(args.file),
        args.kind,
        args.sim_header,
        args.interaction,
        args.max_words,
        args.max_frames,
        args.wti_arch,
    )
    if len(tokenizer) != model.config.clip_config["text_config"]["vocab_size"]:
        raise ValueError(
            f"the tokenizer has {len(tokenizer)} tokens, CLIP's embedding "
            f"{model.config.clip_config['text_config']['vocab_size']}"
        )
    return model, tokenizer, {}


def write_atomically(output_dir: Path, model, tokenizer, extra: dict) -> None:
    """Write the folder beside ``output_dir`` and move it in place whole."""
    from models import save_checkpoint
    from models.folders import replace_folder

    with replace_folder(output_dir) as staging:
        save_checkpoint(staging, model, tokenizer, extra)


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    output_dir = Path(args.output_dir).resolve()
    if (
        output_dir.exists()
        and any(output_dir.iterdir())
        and not (output_dir / "config.json").is_file()
    ):
        return fail(
            PROG,
            f"--output_dir {output_dir} exists and is not a checkpoint folder; not overwriting it",
        )
    for flag in ("gpt2_path", "vit_path", "blip_path"):
        if getattr(args, flag) and not Path(getattr(args, flag)).is_dir():
            return fail(PROG, f"--{flag} {getattr(args, flag)}: no such folder")
    from models.safe_load import UnsafeFile
    from models.tokenizer import tokenizer_path_problem

    if args.tokenizer_path and tokenizer_path_problem(args.tokenizer_path):
        return fail(PROG, f"--tokenizer_path {tokenizer_path_problem(args.tokenizer_path)}")

    print(f"reading {args.file} ({args.kind}); nothing in it is run", flush=True)
    try:
        model, tokenizer, extra = convert(args)
    except UnsafeFile as err:
        return fail(PROG, f"{args.file} refused: {err}; nothing from it was run")
    except (ValueError, KeyError, FileNotFoundError, OSError) as err:
        return fail(PROG, f"{args.file}: {err}")
    extra["imported_from"] = {"kind": args.kind, "file": str(Path(args.file).name)}
    write_atomically(output_dir, model, tokenizer, extra)
    params = sum(p.numel() for p in model.parameters())
    print(
        f"wrote {output_dir} ({type(model).__name__}, {params / 1e6:.1f}M parameters, {model.config.to_dict().get('interaction', args.dataset)})"
    )
    return 0


if __name__ == "__main__":
    from jobs.cli import run

    run(main)
