"""A real Serve app on 127.0.0.1, on the session's Ray, over a real index.

The retriever is trained here for a few seconds (a plain loop on rendered synthetic clips)
so that its features carry the attributes, as the benchmark's do: on random-init features
candidate generation means nothing. The index holds 600 rendered clips, encoded and
written by the index job's own encoder and writer; PitVQANet is random-init (only its wiring is
under test).
"""

import numpy as np
import pytest
import torch
from serve_helpers import CANDIDATES, INDEX_VIDEOS, free_port, run_app

from ingest.synthetic import render_clips
from jobs.encode import ClipEncoder
from jobs.index import add_encoded, index_info
from models import (
    PitVQAConfig,
    PitVQANet,
    RetrieverConfig,
    build_bpe_tokenizer,
    save_checkpoint,
    tokenize,
)
from retrieval.store import IndexWriter


@pytest.fixture(scope="session")
def trained_retriever(tmp_path_factory):
    """A few seconds of the job's own recipe (``jobs.recipes.retriever``) in a plain loop."""
    from ingest.datasets import normalize_clips
    from jobs.config import TrainConfig
    from jobs.recipes import recipe_for

    clips, frames = render_clips(192, max_frames=4, image_size=64, seed=5)
    captions = [c for clip in clips for c in clip.captions()]
    tokenizer = build_bpe_tokenizer(captions, vocab_size=400, style="clip")
    model_config = RetrieverConfig.tiny(vocab_size=len(tokenizer), max_frames=4)
    epochs, batch_size = 8, 32
    config = TrainConfig(
        model="retriever",
        model_config=model_config.to_dict(),
        output_dir=str(tmp_path_factory.mktemp("wti_run")),
        num_train_rows=len(clips),
        epochs=epochs,
        batch_size=batch_size,
        lr=1e-3,
        coef_lr=1.0,
        seed=0,
    )
    recipe = recipe_for("retriever")(config)
    pixels = torch.from_numpy(normalize_clips({"frames": frames})["pixel_values"])
    rng = np.random.default_rng(0)
    for _ in range(epochs):
        for batch in np.array_split(rng.permutation(len(clips)), len(clips) // batch_size):
            texts = [clips[i].captions()[rng.integers(5)] for i in batch]
            tokens = tokenize(tokenizer, texts, model_config.max_words)
            recipe.step(
                {
                    **tokens,
                    "pixel_values": pixels[batch],
                    "frame_mask": torch.ones(len(batch), 4, dtype=torch.long),
                }
            )
    folder = tmp_path_factory.mktemp("wti") / "checkpoint"
    save_checkpoint(folder, recipe.model.eval(), tokenizer)
    return folder


@pytest.fixture(scope="session")
def rendered_index(trained_retriever):
    encoder = ClipEncoder(str(trained_retriever))  # the index job's encoder, called in-process
    folder = trained_retriever.parent / "index"
    writer = IndexWriter(
        folder, rows_per_segment=250, info=index_info(trained_retriever)
    )  # 3 storage shards
    clips, frames = render_clips(INDEX_VIDEOS, max_frames=4, image_size=64, seed=11)
    for first in range(0, INDEX_VIDEOS, 200):
        batch = {
            "video_id": np.array([f"video{i}" for i in range(first, first + 200)], dtype=object),
            "frames": frames[first : first + 200],
            "frame_mask": np.ones((200, 4), np.uint8),
        }
        add_encoded(writer, encoder(batch))
    writer.close()
    return folder


@pytest.fixture(scope="session")
def pitvqa_checkpoint(tmp_path_factory, gpt2_tokenizer):
    torch.manual_seed(0)
    model = PitVQANet(PitVQAConfig.tiny(num_classes=59, vocab_size=len(gpt2_tokenizer))).eval()
    folder = tmp_path_factory.mktemp("pitvqa") / "checkpoint"
    save_checkpoint(folder, model, gpt2_tokenizer)
    return folder


@pytest.hookimpl(wrapper=True)
def pytest_runtest_teardown(item, nextitem):
    """Serve is shut down once the last test of this folder has run (no test outside it uses
    an app): its replicas would take CPU from every test after it. After the test's own
    teardown: a module's fixture deletes its app first (the folder's last test is the
    session's when the folder runs alone)."""
    yield
    import ray

    if ray.is_initialized() and (nextitem is None or nextitem.path.parent != item.path.parent):
        from ray import serve

        serve.shutdown()


@pytest.fixture(scope="session")
def serve_port(ray_local):
    from ray import serve

    port = free_port()
    # One proxy, on the head: nodes that tests add share this machine's ports.
    serve.start(proxy_location="HeadOnly", http_options={"host": "127.0.0.1", "port": port})
    yield port
    serve.shutdown()


@pytest.fixture(scope="session")
def app_url(serve_port, trained_retriever, rendered_index, pitvqa_checkpoint):
    # shard_cpus=0: this app stays up for the whole session, and the training tests that
    # run beside it need the head's two CPUs (the CPU default, one per shard, is tested in
    # test_serve_nodes_haproxy.py).
    return run_app(
        serve_port,
        "default",
        checkpoint=str(trained_retriever),
        index=str(rendered_index),
        vqa_checkpoint=str(pitvqa_checkpoint),
        num_shards=2,
        candidates=CANDIDATES,
        shard_cpus=0,
    )
