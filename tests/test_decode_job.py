"""jobs/decode.py as a user runs it: main(argv) on a real local Ray."""

import shutil

import pytest

from jobs.decode import main


def test_clips_job_reports_and_writes(ray_local, synthetic_msrvtt, tmp_path, capsys):
    videos = tmp_path / "videos"
    shutil.copytree(synthetic_msrvtt / "videos", videos)
    (videos / "broken.mp4").write_bytes(b"\x00" * 100)
    assert (
        main(
            [
                "clips",
                "--features_path",
                str(videos),
                "--output_dir",
                str(tmp_path / "out"),
                "--max-frames",
                "4",
                "--image_size",
                "32",
            ]
        )
        == 0
    )
    out = capsys.readouterr().out
    assert "decoded 18 of 19 videos" in out and "skipped 1 (1 bad_video)" in out
    lines = (tmp_path / "out" / "skipped.jsonl").read_text().splitlines()
    assert len(lines) == 1 and '"path": "' + str(videos / "broken.mp4") + '"' in lines[0]


@pytest.mark.parametrize(
    "argv",
    [
        ["clips"],
        ["clips", "--features_path", "x", "--output_dir", "y", "--slice_framepos", "7"],
        ["nonsense"],
        ["clips", "--features_path", "/no/such/dir", "--output_dir", "y"],
    ],
)
def test_bad_arguments_exit_2_with_one_line(argv, capsys):
    with pytest.raises(SystemExit) as exit_info:
        code = main(argv)
        raise SystemExit(code)
    assert exit_info.value.code == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and "error" in err[0]
