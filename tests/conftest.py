import pytest
import torch

from models import build_bpe_tokenizer

CORPUS = [
    "a red circle moves to the left",
    "a blue square moves up",
    "a green triangle moves to the right",
    "what instrument is being used",
    "where is the suction located",
    "how many tools are there",
    "what is the surgical phase",
] * 5


def pytest_collection_modifyitems(config, items):
    if torch.cuda.is_available():
        return
    skip = pytest.mark.skip(reason="needs a CUDA GPU")
    for item in items:
        if "gpu" in item.keywords:
            item.add_marker(skip)


@pytest.fixture(scope="session")
def gpt2_tokenizer():
    return build_bpe_tokenizer(CORPUS, vocab_size=300, style="gpt2")


@pytest.fixture(scope="session")
def clip_tokenizer():
    return build_bpe_tokenizer(CORPUS, vocab_size=300, style="clip")


@pytest.fixture(scope="session")
def ray_local():
    """One real local Ray instance for the whole test session."""
    import ray

    if not ray.is_initialized():
        # address="local": a fresh instance even when a `ray start` cluster runs on this machine.
        ray.init(address="local", num_cpus=2, include_dashboard=False, log_to_driver=False, configure_logging=False)
    yield ray
    ray.shutdown()


@pytest.fixture(scope="session")
def synthetic_msrvtt(tmp_path_factory):
    from ingest.synthetic import make_msrvtt

    return make_msrvtt(tmp_path_factory.mktemp("msrvtt"), num_train=12, num_test=6, seconds=4, fps=8)
