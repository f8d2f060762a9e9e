"""Data preparation jobs on Ray Data.

    python jobs/decode.py clips --features_path VIDEOS --output_dir OUT [--max_frames 12 ...]
    python jobs/decode.py pitvqa-frames --videos RAW_VIDEOS --data_root ROOT

``clips`` decodes every video in a folder into Parquet shards of sampled frames (CLIP4Clip /
DRL sampling) for training and indexing. ``pitvqa-frames`` runs PitVQA's "video to images,
then preprocess": one frame per second, cropped and resized to 224x224, under
``ROOT/images/video_XX/``. Both skip bad videos, list them in a report and print the count.
Ray comes from ``RAY_ADDRESS`` or starts locally.
"""

from __future__ import annotations

import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from jobs.cli import Parser, fail, positive_float, positive_int  # noqa: E402

PROG = "jobs/decode.py"


def parse_args(argv):
    parser = Parser(prog=PROG, description=__doc__)
    sub = parser.add_subparsers(dest="command", required=True, parser_class=Parser)
    clips = sub.add_parser("clips", help="videos -> Parquet shards of sampled frames")
    clips.add_argument("--features_path", required=True, help="folder of videos")
    clips.add_argument("--output_dir", required=True, help="clips/ and skipped.jsonl go here")
    clips.add_argument("--max_frames", type=positive_int, default=12, help="frames per clip")
    clips.add_argument(
        "--feature_framerate", type=positive_float, default=1.0, help="frames per second sampled"
    )
    clips.add_argument(
        "--slice_framepos", type=int, choices=(0, 1, 2), default=2, help="0 head, 1 tail, 2 uniform"
    )
    clips.add_argument(
        "--image_size", type=positive_int, default=224, help="side of the square frames"
    )
    clips.add_argument(
        "--workers",
        type=positive_int,
        default=None,
        help="decoders at a time (default: the cluster's CPUs)",
    )
    frames = sub.add_parser(
        "pitvqa-frames", help="raw PitVQA videos -> 1 fps, preprocessed PNG frames"
    )
    frames.add_argument("--videos", required=True, help="folder of video_XX.mp4 files")
    frames.add_argument(
        "--data_root", required=True, help="the dataset root: images/video_XX/ go here"
    )
    return parser.parse_args(argv)


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)

    from ingest.report import Report
    from ingest.video import ClipSpec, find_videos

    source = Path(args.features_path if args.command == "clips" else args.videos)
    if not source.is_dir():
        return fail(PROG, f"{source} is not a folder")
    videos = find_videos(source)
    if not videos:
        return fail(PROG, f"no video files in {source}")
    from cluster import ClusterError, connect

    try:
        connect()
    except ClusterError as err:
        return fail(PROG, str(err))
    if args.command == "clips":
        from ingest.clips import write_clips

        try:
            spec = ClipSpec(
                args.feature_framerate, args.max_frames, args.slice_framepos, args.image_size
            )
        except ValueError as err:
            return fail(PROG, str(err))
        written, report = write_clips(videos, args.output_dir, spec, args.workers)
        print(f"decoded {written} of {len(videos)} videos into {Path(args.output_dir) / 'clips'}")
        print(report.summary("decode") + f"; report: {Path(args.output_dir) / 'skipped.jsonl'}")
    else:
        from ingest.extract import extract_frames

        report = Report()
        images = extract_frames(videos, args.data_root, report)
        report.write(Path(args.data_root) / "skipped_videos.jsonl")
        print(f"wrote {len(images)} frames under {Path(args.data_root) / 'images'}")
        print(
            report.summary("extract") + f"; report: {Path(args.data_root) / 'skipped_videos.jsonl'}"
        )
    return 0


if __name__ == "__main__":
    from jobs.cli import run

    run(main)
