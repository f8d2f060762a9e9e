"""What a WTI score is made of, as a picture (the counterpart of DRL's ``demo/show_wti.py``):

    python jobs/explain.py --checkpoint runs/wti/checkpoint --video VIDEO.mp4 \\
        --text "a red circle moves to the left"

Decodes the video as ``jobs/index.py`` does (``jobs.index.clip_spec``: the checkpoint's
frame count and size, the same ``--feature_framerate`` and ``--slice_framepos``), encodes it and the text with the checkpoint, and writes ``--output`` (explain.png):
the frames with their WTI weights, the words x frames similarity heat map with each word's
best frame boxed and its weight, and the score as the sum of its parts
(``models.wti.explain_pair``; ``/search`` with ``"explain": true`` returns the same numbers).
Runs on this machine's CPU or GPU; no Ray.
"""

from __future__ import annotations

import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from jobs.cli import Parser, fail  # noqa: E402

PROG = "jobs/explain.py"


def build_parser() -> Parser:
    parser = Parser(prog=PROG, description=__doc__)
    add = parser.add_argument
    add("--checkpoint", default="runs/wti/checkpoint", help="a retriever checkpoint folder")
    add("--video", required=True, help="a video file (any format decord reads)")
    add("--text", required=True, help="the query")
    add("--output", default="explain.png", help="the PNG to write")
    add("--feature_framerate", type=float, default=1.0, help="frames per second sampled")
    add(
        "--slice_framepos", type=int, choices=(0, 1, 2), default=2, help="0 head, 1 tail, 2 uniform"
    )
    return parser


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    if not args.text.strip():
        return fail(PROG, "--text is blank")
    checkpoint = Path(args.checkpoint)
    from models.checkpoint import read_config

    try:
        saved = read_config(checkpoint)
    except (FileNotFoundError, ValueError, KeyError) as err:
        return fail(PROG, f"--checkpoint: {err}")
    if saved.get("model") != "retriever":
        return fail(
            PROG,
            f"--checkpoint {checkpoint} is a {saved.get('model')} checkpoint, not the retriever",
        )
    if saved["config"].get("interaction", "wti") == "dp":
        return fail(PROG, "--checkpoint scores by dot product (no token-wise parts to show)")

    from ingest.datasets import normalize_clips
    from ingest.video import BadVideo, decode_clip
    from jobs.index import clip_spec

    try:
        frames, mask = decode_clip(
            args.video, clip_spec(saved, args.feature_framerate, args.slice_framepos)
        )
    except BadVideo as err:
        return fail(PROG, f"--video {args.video}: {err}")

    from jobs.plots import plot_explanation
    from models import load_checkpoint
    from models.device import pick_device
    from models.encode import encode_texts, encode_videos
    from models.tokenizer import token_words
    from models.wti import explain_pair

    model, tokenizer = load_checkpoint(checkpoint, device=pick_device())
    model.eval()
    pixels = normalize_clips({"frames": frames[None]})["pixel_values"]
    video = encode_videos(model, pixels, mask[None])
    text = encode_texts(model, tokenizer, [args.text])
    words = token_words(tokenizer, args.text, model.config.max_words)
    parts = explain_pair(text.features[0], text.weights[0], video.features[0], video.weights[0])
    real = int(mask.sum())
    shown = {
        "similarity": parts["similarity"][: len(words), :real],
        "token_weights": parts["token_weights"][: len(words)],
        "frame_weights": parts["frame_weights"][:real],
        "token_best_frame": parts["token_best_frame"][: len(words)],
        **{k: parts[k] for k in ("score", "text_to_video", "video_to_text")},
    }
    shown = {k: v.cpu().numpy() if hasattr(v, "cpu") else v for k, v in shown.items()}
    for name in ("score", "text_to_video", "video_to_text"):
        shown[name] = float(shown[name])
    output = plot_explanation(
        frames[:real], words, shown, args.output, f"{Path(args.video).name}: {args.text!r}"
    )
    print(
        f"score {shown['score']:.4f} = (text→video {shown['text_to_video']:.4f} + "
        f"video→text {shown['video_to_text']:.4f}) / 2; wrote {output}"
    )
    return 0


if __name__ == "__main__":
    from jobs.cli import run

    run(main)
