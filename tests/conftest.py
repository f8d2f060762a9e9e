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
