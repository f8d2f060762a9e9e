"""Clip decoding throughput: the Ray Data job vs a single-process decord loop.

    python bench/decode.py     # 200 synthetic 320x240 H.264 videos, 12 s at 25 fps (MSR-VTT-like)

Both sides decode the same files with the same sampling (1 fps, up to 12 frames, short
side to 224, centre crop) and count real frames. The target is 85% of linear scaling in
the CPUs Ray uses. Prints a table, then one JSON line.
"""
from __future__ import annotations

import argparse
import json
import platform
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

import ray  # noqa: E402

from ingest.clips import DecodeLog, clip_dataset  # noqa: E402
from ingest.synthetic import make_msrvtt  # noqa: E402
from ingest.video import ClipSpec, decode_clip, find_videos  # noqa: E402


def single_process(videos, spec):
    frames = 0
    for path in videos.values():
        _, mask = decode_clip(path, spec)
        frames += int(mask.sum())
    return frames


def ray_data(videos, spec, workers):
    """Frames decoded, and (seconds to the first batch, frames in it): the pool's start-up."""
    collector = DecodeLog.remote()
    frames, first = 0, None
    start = time.perf_counter()
    for batch in clip_dataset(videos, spec, collector, concurrency=workers).iter_batches(batch_size=None):
        frames += int(batch["frame_mask"].sum())
        if first is None:
            first = (time.perf_counter() - start, frames)
    return frames, first


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--videos", type=int, default=200)
    parser.add_argument("--seconds", type=int, default=12)
    parser.add_argument("--fps", type=int, default=25)
    parser.add_argument("--width", type=int, default=320)
    parser.add_argument("--height", type=int, default=240)
    parser.add_argument("--gop", type=int, default=250, help="key-frame interval (x264's default, as in real files)")
    parser.add_argument("--codec", default="libx264", help="H.264, as MSR-VTT's files")
    parser.add_argument("--workers", type=int, default=None, help="decoding actors (default: the CPUs Ray has)")
    parser.add_argument("--data", default=None, help="folder of videos to use instead of generating them")
    args = parser.parse_args(argv)

    with tempfile.TemporaryDirectory() as tmp:
        if args.data:
            videos = find_videos(args.data)
        else:
            print(f"generating {args.videos} videos ...", flush=True)
            root = make_msrvtt(tmp, num_train=args.videos, num_test=0, seconds=args.seconds, fps=args.fps,
                               width=args.width, height=args.height, gop=args.gop, codec=args.codec)
            videos = find_videos(root / "videos")
        spec = ClipSpec()
        ray.init(ignore_reinit_error=True, include_dashboard=False, log_to_driver=False)
        cpus = int(ray.cluster_resources()["CPU"])
        workers = args.workers or cpus
        single_process(dict(list(videos.items())[:2]), spec)  # warm the page cache and imports

        start = time.perf_counter()
        frames_single = single_process(videos, spec)
        t_single = time.perf_counter() - start
        start = time.perf_counter()
        frames_ray, (t_first, frames_first) = ray_data(videos, spec, workers)
        t_ray = time.perf_counter() - start

    fps_single, fps_ray = frames_single / t_single, frames_ray / t_ray
    speedup = fps_ray / fps_single
    efficiency = speedup / workers
    # Once the actor pool is up (after its first batch), as in a long job where the
    # start-up of a few seconds is amortised.
    fps_steady = (frames_ray - frames_first) / (t_ray - t_first)
    steady_efficiency = fps_steady / fps_single / workers
    device = f"{platform.machine()} CPU, Ray with {cpus} CPUs, {workers} decoding actors"
    print(f"decode {len(videos)} videos ({args.width}x{args.height}, {args.seconds} s at {args.fps} fps) on {device}")
    print(f"{'path':<22}{'seconds':>9}{'frames':>8}{'frames/s':>10}")
    print(f"{'single-process decord':<22}{t_single:>9.2f}{frames_single:>8}{fps_single:>10.1f}")
    print(f"{'Ray Data job':<22}{t_ray:>9.2f}{frames_ray:>8}{fps_ray:>10.1f}")
    print(f"{'Ray, after 1st batch':<22}{t_ray - t_first:>9.2f}{frames_ray - frames_first:>8}{fps_steady:>10.1f}")
    print(f"speed-up {speedup:.2f}x with {workers} actors: {efficiency:.0%} of linear scaling end to end "
          f"(pool start-up {t_first:.1f} s included); {steady_efficiency:.0%} once the pool is up")
    print(json.dumps({"bench": "decode", "device": device, "videos": len(videos), "frames": frames_ray,
                      "seconds": {"single_process": round(t_single, 3), "ray_data": round(t_ray, 3)},
                      "speedup": round(speedup, 3), "workers": workers, "scaling_efficiency": round(efficiency, 3),
                      "pool_startup_s": round(t_first, 3), "steady_scaling_efficiency": round(steady_efficiency, 3)}))
    return 0 if frames_ray == frames_single else 1


if __name__ == "__main__":
    sys.exit(main())
