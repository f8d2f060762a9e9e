import numpy as np
import torch

from jobs.similarity import sharded_similarity
from models import WTIHead


def test_sharded_matrix_equals_single_process(ray_local):
    torch.manual_seed(0)
    head = WTIHead(32)
    text, video = torch.randn(23, 8, 32), torch.randn(41, 5, 32)
    text_mask = (torch.arange(8) < torch.randint(1, 9, (23, 1))).long()
    video_mask = (torch.arange(5) < torch.randint(1, 6, (41, 1))).long()
    with torch.no_grad():
        t, tw = head.prepare_text(text, text_mask)
        v, vw = head.prepare_video(video, video_mask)
        want = head(text, video, text_mask, video_mask).numpy()
    for shards in (1, 3, 7):
        got = sharded_similarity(t, tw, v, vw, num_shards=shards)
        assert got.shape == (23, 41)
        assert np.allclose(got, want, atol=1e-6)
