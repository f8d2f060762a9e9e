import hashlib
import json

from ingest.synthetic import make_msrvtt


def digest(root):
    h = hashlib.sha256()
    for path in sorted(p for p in root.rglob("*") if p.is_file()):
        h.update(path.relative_to(root).as_posix().encode())
        h.update(path.read_bytes())
    return h.hexdigest()


def test_generator_is_deterministic(tmp_path):
    a = make_msrvtt(tmp_path / "a", num_train=4, num_test=3, seconds=2, seed=5)
    b = make_msrvtt(tmp_path / "b", num_train=4, num_test=3, seconds=2, seed=5)
    c = make_msrvtt(tmp_path / "c", num_train=4, num_test=3, seconds=2, seed=6)
    assert digest(a) == digest(b)
    assert digest(a) != digest(c)


def test_captions_describe_the_video(synthetic_msrvtt):
    attributes = json.loads((synthetic_msrvtt / "attributes.json").read_text())
    data = json.loads((synthetic_msrvtt / "MSRVTT_data.json").read_text())
    for item in data["sentences"]:
        a = attributes[item["video_id"]]
        assert a["color"] in item["caption"] and a["shape"] in item["caption"]
        assert a["direction"] in item["caption"]
    test_combos = [
        tuple(attributes[v["video_id"]][k] for k in ("color", "shape", "size", "direction"))
        for v in data["videos"]
        if v["split"] == "test"
    ]
    assert len(test_combos) == len(set(test_combos))  # each test caption has one right video


def test_first_and_second_instrument_are_what_the_frame_shows():
    """The first instrument is the large one (in use), the second the small one: the
    questions about them have answers a model can read off the frame."""
    import numpy as np

    from ingest.synthetic import INSTRUMENTS, PLACES, _draw_scene, scene_qa

    scene = {"step": "sellotomy", "tools": [("suction", "top-left"), ("kerrisons", "bottom-right")]}
    frame = _draw_scene(scene, np.random.default_rng(0))
    areas = []
    for tool, place in scene["tools"]:
        colour = np.array(INSTRUMENTS[tool][1])
        cx, cy = PLACES[place]
        patch = frame[cy - 100 : cy + 100, cx - 100 : cx + 100].astype(int)
        areas.append(int((np.abs(patch - colour).sum(-1) <= 30).sum()))
    assert areas[0] > 2 * areas[1] > 0
    qa = dict(scene_qa(scene))
    assert (
        qa["What is the first instrument?"] == "suction"
        and qa["Where is the second instrument?"] == "bottom-right"
    )
    assert (
        qa["How many instruments are there?"] == "two"
        and qa["What is the surgical phase?"] == "sellar"
    )
