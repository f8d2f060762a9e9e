"""The text-video retriever: CLIP4Clip's backbone and temporal header, DRL's interaction.

``encode_text`` and ``encode_video`` are separate from scoring so that an index stores
video encodings and a service encodes only the query.
"""

from __future__ import annotations

import copy
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Literal

import torch
import torch.nn.functional as F
from torch import nn
from transformers import CLIPConfig, CLIPModel, CLIPTextConfig
from transformers.models.clip.modeling_clip import CLIPEncoderLayer

from . import openai_clip
from .hf_config import config_dict
from .wti import WTIHead

SIM_HEADERS = ("meanP", "seqTransf")
INTERACTIONS = ("dp", "ti", "wti")
LINEAR_PATCHES = ("2d", "3d")


def _tiny_clip(vocab_size: int, image_size: int) -> dict:
    # Special ids of the tiny BPE (models.tokenizer, clip style): start 0, end 1, pad = end.
    text = dict(
        vocab_size=vocab_size,
        bos_token_id=0,
        eos_token_id=1,
        pad_token_id=1,
        hidden_size=64,
        intermediate_size=128,
        num_hidden_layers=4,
        num_attention_heads=2,
        max_position_embeddings=64,
        hidden_act="quick_gelu",
    )
    vision = dict(
        image_size=image_size,
        patch_size=16,
        hidden_size=64,
        intermediate_size=128,
        num_hidden_layers=2,
        num_attention_heads=2,
        hidden_act="quick_gelu",
    )
    return config_dict(CLIPConfig(text_config=text, vision_config=vision, projection_dim=64))


@dataclass
class RetrieverConfig:
    """Everything needed to rebuild the retriever; saved as ``config.json``.

    ``clip_config`` is the HF CLIP config. ``clip_path`` names a local pretrained CLIP
    folder and matters only when building a fresh model.
    """

    sim_header: Literal["meanP", "seqTransf"] = "seqTransf"
    interaction: Literal["dp", "ti", "wti"] = "wti"
    max_words: int = 32
    max_frames: int = 12
    temporal_layers: int = 4
    # Rows of the seqTransf frame-position table (None: max_frames). CLIP4Clip and DRL keep
    # CLIP's 77; only the first max_frames are ever used.
    frame_positions: int | None = None
    # Both references build the seqTransf blocks with LayerNorm eps 1e-12 (until_module),
    # not CLIP's 1e-5.
    temporal_layer_norm_eps: float = 1e-12
    wti_arch: int = 2  # DRL's weight heads: 1 Linear, 2 (default) or 3 Linear-ReLU layers
    # CLIP4Clip's --linear_patch: 2d is CLIP's patch embedding; 3d a Conv3d over 3 frames.
    linear_patch: Literal["2d", "3d"] = "2d"
    clip_config: dict = field(default_factory=dict)
    clip_path: str | None = None  # a HF CLIP folder or OpenAI's ViT-B-32.pt

    def __post_init__(self):
        if self.sim_header not in SIM_HEADERS:
            raise ValueError(f"sim_header must be one of {SIM_HEADERS}, got {self.sim_header!r}")
        if self.interaction not in INTERACTIONS:
            raise ValueError(f"interaction must be one of {INTERACTIONS}, got {self.interaction!r}")
        if self.linear_patch not in LINEAR_PATCHES:
            raise ValueError(f"linear_patch must be 2d or 3d, got {self.linear_patch!r}")

    @classmethod
    def tiny(cls, vocab_size: int = 1000, image_size: int = 64, **kw) -> RetrieverConfig:
        return cls(clip_config=_tiny_clip(vocab_size, image_size), **kw)

    @classmethod
    def base(cls, clip_path: str, **kw) -> RetrieverConfig:
        """CLIP (reference: ViT-B/32) from a local HF folder or OpenAI's ``ViT-B-32.pt``."""
        if Path(clip_path).is_file():
            clip_config = openai_clip.clip_config(openai_clip.read_state_dict(clip_path))
        else:
            clip_config = config_dict(CLIPConfig.from_pretrained(clip_path, local_files_only=True))
        return cls(clip_config=clip_config, clip_path=clip_path, **kw)

    @property
    def image_size(self) -> int:
        return self.clip_config["vision_config"]["image_size"]

    @property
    def embed_dim(self) -> int:
        return self.clip_config["projection_dim"]

    def to_dict(self) -> dict:
        return asdict(self)


class TemporalTransformer(nn.Module):
    """CLIP4Clip's seqTransf header: frame positions, a masked transformer, residual.

    Its layers are CLIP text-transformer layers (width D, D/64 heads), so that they can be
    initialised from CLIP's text layers 0..n-1 as CLIP4Clip does.
    """

    def __init__(
        self,
        text_config: CLIPTextConfig,
        num_layers: int,
        positions: int,
        layer_norm_eps: float = 1e-12,
    ):
        super().__init__()
        self.frame_position_embeddings = nn.Embedding(positions, text_config.hidden_size)
        layer_config = copy.deepcopy(text_config)  # keeps the attention implementation
        layer_config.layer_norm_eps = layer_norm_eps
        self.layers = nn.ModuleList(CLIPEncoderLayer(layer_config) for _ in range(num_layers))

    def init_from_clip_text(self, clip: CLIPModel) -> None:
        text_model = clip.text_model
        for layer, source in zip(self.layers, text_model.encoder.layers):
            layer.load_state_dict(source.state_dict())
        positions = text_model.embeddings.position_embedding.weight
        rows = min(positions.shape[0], self.frame_position_embeddings.num_embeddings)
        with torch.no_grad():
            self.frame_position_embeddings.weight[:rows] = positions[:rows]

    def forward(self, frames: torch.Tensor, frame_mask: torch.Tensor) -> torch.Tensor:
        """frames ``[V, F, D]``, frame_mask ``[V, F]`` -> ``[V, F, D]``."""
        V, num_frames, _ = frames.shape
        positions = torch.arange(num_frames, device=frames.device)
        hidden = frames + self.frame_position_embeddings(positions)  # (V, F, D)
        # Additive key mask, (V, 1, F, F): padded frames are never attended to.
        blocked = (frame_mask == 0)[:, None, None, :].expand(V, 1, num_frames, num_frames)
        bias = torch.zeros(blocked.shape, dtype=hidden.dtype, device=hidden.device)
        bias = bias.masked_fill(blocked, torch.finfo(hidden.dtype).min)
        for layer in self.layers:
            hidden = layer(hidden, bias)
        return hidden + frames


class FramePatches3d(nn.Conv3d):
    """CLIP4Clip's ``--linear_patch 3d``: patches embedded by a Conv3d spanning 3 frames
    (kernel ``3 x p x p``, stride ``1 x p x p``, frame padding 1), in place of CLIP's Conv2d.

    It stands where HF CLIP keeps its ``patch_embedding`` and takes the same ``[V*F, 3, H,
    W]`` input; ``num_frames`` (set by ``Retriever.encode_video``) says where one video ends,
    so each video is convolved on its own. (CLIP4Clip convolves the whole batch as one
    sequence, so there the first and last frame of a video also see its batch neighbours'.)
    """

    def __init__(self, patch: nn.Conv2d):
        width, channels, size, _ = patch.weight.shape
        super().__init__(
            channels, width, (3, size, size), stride=(1, size, size), padding=(1, 0, 0), bias=False
        )
        # CLIP4Clip's initialisation: CLIP's 2D kernel in the middle frame, zeros either side.
        with torch.no_grad():
            self.weight.zero_()
            self.weight[:, :, 1] = patch.weight
        self.num_frames = 1

    def forward(self, pixels: torch.Tensor) -> torch.Tensor:
        frames = pixels.reshape(-1, self.num_frames, *pixels.shape[1:]).transpose(1, 2)
        out = super().forward(frames).transpose(1, 2)  # (V, F, width, grid, grid)
        return out.reshape(-1, *out.shape[2:])


def freeze_clip_layers(model: Retriever, freeze_layer_num: int) -> int:
    """CLIP4Clip's ``--freeze_layer_num N`` (``main_task_retrieval.py``): every CLIP tensor
    stops training except the final norms, projections and logit scale, and the text and
    vision blocks numbered ``N`` and above (``-1``: nothing is frozen; ``0``: the embeddings
    and the pre-norm). As in CLIP4Clip, nothing is frozen with ``linear_patch 3d`` (its test
    ``name.find("conv2.")`` is true for every name). Returns the number of tensors frozen."""
    if freeze_layer_num < 0 or model.config.linear_patch == "3d":
        return 0
    trained = (
        "text_model.final_layer_norm.",
        "text_projection.",
        "logit_scale",
        "vision_model.post_layernorm.",
        "visual_projection.",
    )
    frozen = 0
    for name, param in model.clip.named_parameters():
        in_block = name.startswith(("vision_model.encoder.layers.", "text_model.encoder.layers."))
        if name.startswith(trained) or (
            in_block and int(name.split(".layers.")[1].split(".")[0]) >= freeze_layer_num
        ):
            continue
        param.requires_grad_(False)
        frozen += 1
    return frozen


class Retriever(nn.Module):
    """CLIP4Clip + DRL: ``encode_text``, ``encode_video`` and ``similarity``.

    ``forward`` is the training-time score matrix ``[A, V]`` (unscaled); the loss lives in
    ``models.losses``.
    """

    def __init__(self, config: RetrieverConfig):
        super().__init__()
        self.config = config
        if config.clip_path and Path(config.clip_path).is_file():
            self.clip = openai_clip.load_clip_file(config.clip_path)
        elif config.clip_path:
            self.clip = CLIPModel.from_pretrained(config.clip_path, local_files_only=True)
        else:
            self.clip = CLIPModel(CLIPConfig(**config.clip_config))
        if config.linear_patch == "3d":
            embeddings = self.clip.vision_model.embeddings
            embeddings.patch_embedding = FramePatches3d(embeddings.patch_embedding)
        dim = config.embed_dim
        self.temporal = None
        if config.sim_header == "seqTransf":
            text_config = self.clip.text_model.config  # carries the attention implementation
            if text_config.hidden_size != dim:
                raise ValueError(
                    f"seqTransf needs CLIP's text width ({text_config.hidden_size}) to equal its "
                    f"projection dim ({dim})"
                )
            self.temporal = TemporalTransformer(
                text_config,
                config.temporal_layers,
                config.frame_positions or config.max_frames,
                config.temporal_layer_norm_eps,
            )
            if config.clip_path:
                self.temporal.init_from_clip_text(self.clip)
        self.head = (
            WTIHead(dim, config.interaction, arch=config.wti_arch)
            if config.interaction != "dp"
            else None
        )

    @property
    def logit_scale(self) -> nn.Parameter:
        return self.clip.logit_scale

    def encode_text(
        self, input_ids: torch.Tensor, attention_mask: torch.Tensor
    ) -> tuple[torch.Tensor, torch.Tensor]:
        """Every token's projected state after the final layer norm: ``[A, L, D]`` and mask ``[A, L]``."""
        hidden = self.clip.text_model(
            input_ids=input_ids, attention_mask=attention_mask
        ).last_hidden_state
        return self.clip.text_projection(hidden), attention_mask  # (A, L, D)

    def encode_video(
        self, pixel_values: torch.Tensor, frame_mask: torch.Tensor
    ) -> tuple[torch.Tensor, torch.Tensor]:
        """pixel_values ``[V, F, 3, H, W]`` -> per-frame features ``[V, F, D]`` and mask ``[V, F]``.

        Each frame's CLS state after the post layer norm, projected, then the temporal header.
        """
        V, num_frames = pixel_values.shape[:2]
        patches = self.clip.vision_model.embeddings.patch_embedding
        if isinstance(patches, FramePatches3d):
            patches.num_frames = num_frames
        pooled = self.clip.vision_model(
            pixel_values=pixel_values.flatten(0, 1)
        ).pooler_output  # (V*F, Dv)
        frames = self.clip.visual_projection(pooled).view(V, num_frames, -1)  # (V, F, D)
        if self.temporal is not None:
            frames = self.temporal(frames, frame_mask)
        return frames, frame_mask

    def similarity(self, text_feat, video_feat, text_mask, video_mask) -> torch.Tensor:
        """Unscaled scores ``[A, V]`` by the configured interaction. Argument order as
        ``WTIHead.forward`` and the references (features, then masks)."""
        if self.head is not None:
            return self.head(text_feat, video_feat, text_mask, video_mask)
        return dot_product_scores(text_feat, video_feat, text_mask, video_mask)

    def prepare_text(self, text_feat, text_mask) -> tuple[torch.Tensor, torch.Tensor]:
        """What exact scoring (``models.token_wise_scores``) needs of the texts:
        normalised tokens ``[A, L, D]`` and weights ``[A, L]``. For ``dp`` that is the one
        end-of-text token with weight 1, so every interaction is scored by the same kernel."""
        if self.head is not None:
            return self.head.prepare_text(text_feat, text_mask)
        token = end_token(text_feat, text_mask)  # (A, D)
        return token.unsqueeze(1), token.new_ones(token.shape[0], 1)

    def prepare_video(self, video_feat, video_mask) -> tuple[torch.Tensor, torch.Tensor]:
        """As ``prepare_text`` for videos (``[V, F, D]``, ``[V, F]``); for ``dp`` the
        normalised mean of the normalised real frames, ``[V, 1, D]``. Depends on the video
        only, so an index stores it."""
        if self.head is not None:
            return self.head.prepare_video(video_feat, video_mask)
        video = mean_frame(video_feat, video_mask)  # (V, D)
        return video.unsqueeze(1), video.new_ones(video.shape[0], 1)

    def forward(self, input_ids, attention_mask, pixel_values, frame_mask) -> torch.Tensor:
        text_feat, text_mask = self.encode_text(input_ids, attention_mask)
        video_feat, video_mask = self.encode_video(pixel_values, frame_mask)
        return self.similarity(text_feat, video_feat, text_mask, video_mask)


def end_token(text_feat: torch.Tensor, text_mask: torch.Tensor) -> torch.Tensor:
    """The normalised end-of-text token ``[A, D]``: the last real token (CLIP puts it right
    before the padding)."""
    last = text_mask.sum(-1).long() - 1  # (A,)
    return F.normalize(text_feat[torch.arange(text_feat.shape[0]), last], dim=-1)


def mean_frame(video_feat: torch.Tensor, video_mask: torch.Tensor) -> torch.Tensor:
    """CLIP4Clip's meanP video vector ``[V, D]``: normalised mean of the normalised real frames."""
    mask = video_mask.unsqueeze(-1).to(video_feat.dtype)  # (V, F, 1)
    frames = F.normalize(video_feat, dim=-1) * mask
    return F.normalize(frames.sum(1) / mask.sum(1).clamp(min=1), dim=-1)


def dot_product_scores(text_feat, video_feat, text_mask, video_mask) -> torch.Tensor:
    """CLIP4Clip's meanP similarity ``[A, V]``: end-of-text token vs mean frame."""
    return end_token(text_feat, text_mask) @ mean_frame(video_feat, video_mask).T
