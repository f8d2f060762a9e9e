"""The retriever's recipe, as DRL trains CLIP4Clip + WTI.

The step (``Recipe``): the model, AdamW with CLIP at ``lr * coef_lr`` and no decay on 1-D
parameters, a linear warm-up then cosine schedule, the contrastive objective (+ CDCR),
gradient clipping and the logit-scale clamp: one ``step(batch) -> loss``; and validation:
t2v/v2t recall over every worker's rows. It runs without Ray: ``jobs/train_loop.py`` calls
it on each Ray Train worker, ``bench/train.py`` in a plain loop and inside Ray Train, the
tests on a fixed batch.

Around it, what the driver does for this model, in run order: the tokenizer and the model
config from the flags, the MSR-VTT-layout data (``jobs.data``), and the evaluation of the
best checkpoint (``jobs.evaluate``).
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import torch
from transformers import get_cosine_schedule_with_warmup

from ingest.video import frame_permutation
from jobs.config import TrainConfig
from jobs.distributed import all_gather_rows, all_reduce, world_rank
from jobs.metrics import best_caption_ranks, metrics_from_ranks
from models import (
    ContrastiveObjective,
    Retriever,
    RetrieverConfig,
    clamp_logit_scale_,
    freeze_clip_layers,
    token_wise_rank_counts,
    token_wise_true_scores,
)
from models.encode import encode_tokens, encode_videos
from models.precision import autocast, grad_scaler

METRIC = "R@1"  # the validation metric plotted beside the loss


def param_groups(model: Retriever, lr: float, coef_lr: float, weight_decay: float) -> list[dict]:
    """CLIP at ``lr * coef_lr``, the new modules at ``lr``; no weight decay on biases, norm
    weights and other 1-D parameters (CLIP's logit scale and class embedding included)."""
    groups: dict[tuple[bool, bool], list] = {}
    for name, param in model.named_parameters():
        if param.requires_grad:
            groups.setdefault((name.startswith("clip."), param.ndim >= 2), []).append(param)
    return [
        {
            "params": params,
            "lr": lr * coef_lr if is_clip else lr,
            "weight_decay": weight_decay if decays else 0.0,
        }
        for (is_clip, decays), params in groups.items()
    ]


class Recipe:
    """Build (seeded), then ``prepare`` (DDP on Ray Train; nothing without it), then ``step``."""

    def __init__(self, config: TrainConfig):
        self.config = config
        torch.manual_seed(config.seed)
        self.model = Retriever(RetrieverConfig(**config.model_config))
        if config.init_checkpoint:  # --init_model, imported (``starting_checkpoint``)
            from safetensors.torch import load_model

            load_model(self.model, str(Path(config.init_checkpoint) / "model.safetensors"))
        freeze_clip_layers(self.model, config.freeze_layer_num)
        self.optimizer = torch.optim.AdamW(
            param_groups(self.model, config.lr, config.coef_lr or 1.0, config.weight_decay),
            betas=(0.9, 0.98),
            eps=1e-6,
        )
        steps_per_epoch = max(1, config.num_train_rows // config.batch_size)
        total_steps = steps_per_epoch * config.epochs
        # DRL's schedule: linear warm-up over warmup_proportion of the steps, then cosine to 0.
        self.scheduler = get_cosine_schedule_with_warmup(
            self.optimizer, int(config.warmup_proportion * total_steps), total_steps
        )
        self.objective = ContrastiveObjective(
            self.model, config.cdcr, config.cdcr_alpha1, config.cdcr_alpha2, config.cdcr_lambda
        )
        self.trained = self.objective  # what ``step`` calls: the objective, or its DDP wrapper
        self.device = "cuda" if config.use_gpu else "cpu"
        self.scaler = grad_scaler(config.compute_dtype, self.device)  # fp16's loss scaling
        self.global_batch = 0  # the last step's batch over every worker
        self.begin_epoch(1)

    def begin_epoch(self, epoch: int) -> None:
        """Seed the epoch's draws (a caption per video, a training frame order): the same
        seed, epoch and worker draw the same, a resumed run included."""
        self.rng = np.random.default_rng([self.config.seed, epoch, world_rank()])

    def inputs(self, batch: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
        """The batch as the model takes it: one caption drawn per video where a row holds
        several (``caption_count``), and the frames in ``--train_frame_order``."""
        if "caption_count" in batch:
            counts = batch["caption_count"].cpu().numpy()
            pick = torch.as_tensor(
                (self.rng.random(len(counts)) * counts).astype(np.int64),
                device=batch["input_ids"].device,
            )
            rows = torch.arange(len(counts), device=pick.device)
            batch = {
                **batch,
                "input_ids": batch["input_ids"][rows, pick],
                "attention_mask": batch["attention_mask"][rows, pick],
            }
        if self.config.train_frame_order:
            mask = batch["frame_mask"]
            index = frame_permutation(
                mask.sum(1).cpu().numpy(), mask.shape[1], self.config.train_frame_order, self.rng
            )
            index = torch.as_tensor(index, device=mask.device)
            rows = torch.arange(len(index), device=mask.device)[:, None]
            batch = {**batch, "pixel_values": batch["pixel_values"][rows, index]}
        return batch

    def prepare(self, wrap) -> None:
        """Wrap the trained module (``ray.train.torch.prepare_model``) after a restore."""
        self.trained = wrap(self.objective)

    def step(self, batch: dict[str, torch.Tensor]) -> float:
        """One optimisation step on ``batch`` (``input_ids``, ``attention_mask``,
        ``pixel_values``, ``frame_mask``); returns the loss."""
        batch = self.inputs(batch)
        self.trained.train()
        with autocast(self.config.compute_dtype, self.device):
            out = self.trained(
                batch["input_ids"],
                batch["attention_mask"],
                batch["pixel_values"],
                batch["frame_mask"],
            )
        self.optimizer.zero_grad(set_to_none=True)
        self.scaler.scale(out["loss"]).backward()
        self.scaler.unscale_(self.optimizer)  # clipping sees the true gradients
        torch.nn.utils.clip_grad_norm_(self.model.parameters(), self.config.max_grad_norm)
        self.scaler.step(self.optimizer)  # skipped when fp16 overflowed
        self.scaler.update()
        self.scheduler.step()
        clamp_logit_scale_(self.model.logit_scale)
        self.global_batch = int(out["global_batch"])
        return out["loss"].item()

    def step_line(self, loss: float) -> str:
        return f"loss {loss:.4f} lr {self.scheduler.get_last_lr()[-1]:.2e}"

    @torch.no_grad()
    def validate(self, batches) -> dict:
        """Test-set t2v/v2t metrics without any worker holding the ``[texts, videos]`` matrix.

        Each worker encodes its share of the rows (``models.encode``, as the final
        evaluation). The texts are all-gathered (``A x L x D``, small); each video is scored
        by one worker (the lowest rank that holds a caption of it) against all texts, and the
        rank counts are all-reduced (``models.token_wise_rank_counts``, the evaluation's
        kernel), so every worker computes the same metrics from every row.
        """
        model = self.model.eval()
        device = next(model.parameters()).device
        parts = []
        for batch in batches:
            with autocast(self.config.compute_dtype, device):
                text = encode_tokens(model, batch["input_ids"], batch["attention_mask"])
                video = encode_videos(model, batch["pixel_values"], batch["frame_mask"])
            index = batch["video_index"].to(device)
            parts.append((text.features, text.weights, video.features, video.weights, index))
        # A worker whose share is empty still joins the collectives, with empty tensors of
        # the others' shapes (text tokens, dim, frames).
        shape = (*parts[0][0].shape[1:], parts[0][2].shape[1]) if parts else (0, 0, 0)
        tokens, dim, frames = all_reduce(torch.tensor(shape, device=device), "max").tolist()
        parts = parts or [
            (
                torch.zeros(0, tokens, dim, device=device),
                torch.zeros(0, tokens, device=device),
                torch.zeros(0, frames, dim, device=device),
                torch.zeros(0, frames, device=device),
                torch.zeros(0, dtype=torch.long, device=device),
            )
        ]
        text, text_weight, video, video_weight, video_index = (torch.cat(x) for x in zip(*parts))
        rank = world_rank()
        all_index = all_gather_rows(video_index)
        if not len(all_index):
            return {}
        all_text, all_weight = all_gather_rows(text), all_gather_rows(text_weight)
        owner_of_row = all_gather_rows(torch.full_like(video_index, rank))
        owner = torch.full((int(all_index.max()) + 1,), 1 << 30, dtype=torch.long, device=device)
        owner.scatter_reduce_(0, all_index, owner_of_row, reduce="amin")  # its lowest-ranked holder
        mine = owner[video_index] == rank
        local_ids, first = np.unique(video_index[mine].cpu().numpy(), return_index=True)
        local_video, local_weight = video[mine][first], video_weight[mine][first]
        position = torch.full_like(owner, -1)
        position[torch.as_tensor(local_ids, device=device, dtype=torch.long)] = torch.arange(
            len(local_ids), device=device
        )
        columns = position[all_index]  # each text's video among this worker's, or -1
        true_score = token_wise_true_scores(
            all_text, all_weight, local_video, local_weight, columns
        )
        true_score = all_reduce(torch.nan_to_num(true_score, nan=0.0))
        higher, text_rank = token_wise_rank_counts(
            all_text, all_weight, local_video, local_weight, columns, true_score
        )
        higher, text_rank = all_reduce(higher), all_reduce(text_rank)
        videos = torch.unique(all_index)
        v2t = best_caption_ranks(
            text_rank.cpu().numpy(),
            torch.searchsorted(videos, all_index).cpu().numpy(),
            len(videos),
        )
        metrics = metrics_from_ranks((1 + higher).cpu().numpy(), v2t, len(videos))
        t2v = metrics["t2v"]
        return {
            "R@1": t2v["R@1"],
            "R@5": t2v["R@5"],
            "R@10": t2v["R@10"],
            "v2t_R@1": metrics["v2t"]["R@1"],
            "MdR": t2v["MdR"],
            "chance_R@1": metrics["chance_R@1"],
            "val_texts": metrics["num_texts"],
            "val_videos": metrics["num_videos"],
        }

    @staticmethod
    def score(metrics: dict) -> float:
        """The best epoch's measure: R@1, ties broken by R@5."""
        return metrics.get("R@1", 0.0) + metrics.get("R@5", 0.0) / 100

    def epoch_row(self) -> dict:
        return {"global_batch": self.global_batch}

    @staticmethod
    def epoch_line(metrics: dict) -> str:
        return (
            f"test t2v R@1 {metrics.get('R@1', 0):.1f} R@5 {metrics.get('R@5', 0):.1f} "
            f"(chance {metrics.get('chance_R@1', 0):.1f})"
        )


# -- the run around the step (the driver; flags in, nothing of it on the workers) ---------


def build_tokenizer(args, train_texts: list[str]):
    """``--tokenizer_path``, else the CLIP folder's, else a tiny CLIP-style BPE trained on
    the training captions."""
    from models import build_bpe_tokenizer, load_tokenizer

    path = args.tokenizer_path or args.clip_path
    if path:
        return load_tokenizer(path)
    return build_bpe_tokenizer(train_texts, vocab_size=1000, style="clip")


def build_model_config(args, tokenizer) -> RetrieverConfig:
    """The typed model config from the preset, the CLIP weights and the data flags (or, with
    --init_model, the imported file's architecture at the flags' text and frame lengths)."""
    if getattr(args, "init_checkpoint", None):
        from models.checkpoint import read_config

        saved = read_config(args.init_checkpoint)["config"]
        return RetrieverConfig(
            **{**saved, "max_words": args.max_words, "max_frames": args.max_frames}
        )
    common = dict(
        sim_header=getattr(args, "sim_header", "meanP"),
        interaction=getattr(args, "interaction", "dp"),
        max_words=args.max_words,
        max_frames=args.max_frames,
        temporal_layers=getattr(args, "cross_num_hidden_layers", 4),
        linear_patch=args.linear_patch,
        wti_arch=args.wti_arch,
    )
    if args.preset == "base":
        return RetrieverConfig.base(args.clip_path, **common)
    return RetrieverConfig.tiny(vocab_size=len(tokenizer), image_size=args.image_size, **common)


def starting_checkpoint(args, output_dir: Path) -> Path | None:
    """A checkpoint folder of weights nobody trained here, in ``output_dir``: --init_model
    (a CLIP4Clip or DRL ``pytorch_model.bin``, read as ``jobs/import_checkpoint.py`` reads
    it) as ``init_model/``, else the CLIP the flags name as it is (zero-shot: DRL's
    ``--do_eval`` without a trained model; meanP + dp unless the flags say otherwise) as
    ``zero_shot/``. None when there is neither (no CLIP weights given)."""
    from models import Retriever, load_tokenizer, reference, save_checkpoint
    from models.openai_clip import read_state_dict

    if args.init_model:
        if not args.tokenizer_path:
            raise ValueError(
                "--init_model needs CLIP's BPE vocabulary: --pretrained_clip_name ViT-B/32 (with "
                "the file in ~/.cache/clip) or --tokenizer_path bpe_simple_vocab_16e6.txt.gz"
            )
        if not Path(args.init_model).is_file():
            raise ValueError(f"--init_model {args.init_model}: no such file")
        print(f"reading --init_model {args.init_model}; nothing in it is run", flush=True)
        explicit = getattr(args, "interaction", "wti")
        model = reference.retriever_from_reference(
            read_state_dict(args.init_model),
            "clip4clip",
            None,
            explicit if explicit != "wti" else None,  # the file says whether it is WTI
            args.max_words,
            args.max_frames,
        )
        folder = output_dir / "init_model"
    elif args.clip_path:
        model = Retriever(build_model_config(args, None))
        folder = output_dir / "zero_shot"
    else:
        return None
    tokenizer = load_tokenizer(args.tokenizer_path or args.clip_path)
    save_checkpoint(folder, model, tokenizer)
    c = model.config
    print(
        f"{folder.name}: {c.sim_header} + {c.interaction}, linear_patch {c.linear_patch}",
        flush=True,
    )
    return folder


def read_source(args):
    """The benchmark's annotations the flags name, or its synthetic corpus (generated once)."""
    from jobs.data import retrieval_source

    return retrieval_source(
        args.dataset,
        args.train_csv,
        args.val_csv,
        args.data_path,
        args.features_path,
        args.output_dir,
        args.synthetic_dir,
        args.synthetic_train,
        args.synthetic_test,
        getattr(args, "expand_msrvtt_sentences", True),
    )


def load_data(args, source, tokenizer, model_config: RetrieverConfig, training: bool = True):
    """Decoded once, tokenized and sized for the model (``jobs.data.retrieval_data``)."""
    from ingest.video import ClipSpec
    from jobs.data import retrieval_data

    spec = ClipSpec(
        args.feature_framerate,
        model_config.max_frames,
        args.slice_framepos,
        model_config.image_size,
    )
    return retrieval_data(
        source,
        spec,
        tokenizer,
        model_config.max_words,
        training,
        args.eval_frame_order,
        args.seed,
        args.num_thread_reader or None,
    )


def evaluate(args, checkpoint, data, output_dir, use_gpu: bool, videos: dict | None = None) -> dict:
    """The test captions against the test videos; the videos are encoded here unless
    ``videos`` brings their encodings (``jobs/train.py`` reuses the ones it indexed)."""
    from jobs.encode import ClipEncoder, collect, encode
    from jobs.evaluate import evaluate_retriever

    dtype = args.compute_dtype
    if videos is None:
        videos = collect(encode(data.test_clips, ClipEncoder, checkpoint, use_gpu, 16, dtype))
    return evaluate_retriever(
        checkpoint,
        data.test_pairs,
        data.test_video_ids,
        videos,
        output_dir,
        args.num_shards,
        use_gpu,
        dtype,
    )


def after_training(args, checkpoint, data, output_dir, use_gpu: bool) -> dict:
    """Encode every decoded video once with the best checkpoint: into the index that
    ``serve run serve.app`` serves (unless ``--no-index``), keeping the test videos'
    encodings for the evaluation that follows."""
    from jobs.index import build_index

    clips = data.clips if args.index else data.test_clips
    print(
        f"encoding {'every decoded video for the index' if args.index else 'the test videos'} "
        "with the best epoch",
        flush=True,
    )
    _, videos = build_index(
        checkpoint,
        clips,
        output_dir / "index" if args.index else None,
        use_gpu,
        keep=set(data.test_video_ids),
        compute_dtype=args.compute_dtype,
    )
    return evaluate(args, checkpoint, data, output_dir, use_gpu, videos)
