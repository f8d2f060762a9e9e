"""PitVQANet's recipe, as the PitVQA reference trains it.

The step (``Recipe``): Adam at a fixed learning rate, cross-entropy over the answer
classes: one ``step(batch) -> loss``; and validation: accuracy, macro P/R/F1 and the
majority-class baseline over every worker's rows. It runs without Ray:
``jobs/train_loop.py`` calls it on each Ray Train worker, ``bench/train.py`` in a plain loop
and inside Ray Train, the tests on a fixed batch.

Around it, what the driver does for this model, in run order: the tokenizer and the model
config from the flags, the pit24 / endo18 data (``jobs.data``), and the evaluation of the
best checkpoint (``jobs.evaluate``).
"""

from __future__ import annotations

import numpy as np
import torch
from torch import nn

from jobs.config import TrainConfig
from jobs.distributed import gather_objects, is_distributed
from jobs.metrics import vqa_metrics
from models import PitVQAConfig, PitVQANet
from models.precision import autocast, grad_scaler

METRIC = "f1"  # the validation metric plotted beside the loss


class Recipe:
    """Build (seeded), then ``prepare`` (DDP on Ray Train; nothing without it), then ``step``."""

    def __init__(self, config: TrainConfig):
        self.config = config
        torch.manual_seed(config.seed)
        self.model = PitVQANet(PitVQAConfig(**config.model_config))
        if is_distributed() and config.use_gpu:
            # SyncBatchNorm needs GPU tensors; CPU workers keep per-worker batch statistics.
            self.model = nn.SyncBatchNorm.convert_sync_batchnorm(self.model)
        trainable = [p for p in self.model.parameters() if p.requires_grad]
        self.optimizer = torch.optim.Adam(trainable, lr=config.lr)
        # The reference keeps the learning rate fixed (a schedule object all the same, so
        # that both recipes save and restore the same training state).
        self.scheduler = torch.optim.lr_scheduler.LambdaLR(self.optimizer, lambda step: 1.0)
        self.criterion = nn.CrossEntropyLoss()
        self.trained = self.model  # what ``step`` calls: the model, or its DDP wrapper
        self.device = "cuda" if config.use_gpu else "cpu"
        self.scaler = grad_scaler(config.compute_dtype, self.device)  # fp16's loss scaling

    def begin_epoch(self, epoch: int) -> None:
        """Nothing is drawn per epoch here (the shuffle is the data iterator's)."""

    def prepare(self, wrap) -> None:
        """Wrap the trained module (``ray.train.torch.prepare_model``) after a restore."""
        self.trained = wrap(self.model)

    def step(self, batch: dict[str, torch.Tensor]) -> float:
        """One optimisation step on ``batch`` (``pixel_values``, ``input_ids``,
        ``attention_mask``, ``label``); returns the loss. The batch has at least two rows:
        BatchNorm in the head cannot train on one (the loop drops a last batch of one)."""
        self.trained.train()
        with autocast(self.config.compute_dtype, self.device):
            logits = self.trained(
                batch["pixel_values"], batch["input_ids"], batch["attention_mask"]
            )
        loss = self.criterion(logits.float(), batch["label"])  # the loss in fp32
        self.optimizer.zero_grad(set_to_none=True)
        self.scaler.scale(loss).backward()
        self.scaler.step(self.optimizer)  # skipped when fp16 overflowed
        self.scaler.update()
        self.scheduler.step()
        return loss.item()

    def step_line(self, loss: float) -> str:
        return f"loss {loss:.4f}"

    @torch.no_grad()
    def validate(self, batches) -> dict:
        """Validation metrics over every worker's questions (each worker's predictions are
        gathered, so every worker computes the same metrics)."""
        self.model.eval()
        predicted, truth = [], []
        for batch in batches:
            with autocast(self.config.compute_dtype, self.device):
                logits = self.model(
                    batch["pixel_values"], batch["input_ids"], batch["attention_mask"]
                )
            predicted.append(logits.argmax(-1).cpu().numpy())
            truth.append(batch["label"].cpu().numpy())
        gathered = gather_objects((predicted, truth))
        empty = np.zeros(0, np.int64)
        y_pred = np.concatenate([p for worker in gathered for p in worker[0]] or [empty])
        y_true = np.concatenate([t for worker in gathered for t in worker[1]] or [empty])
        if not len(y_true):
            return {}
        num_classes = self.config.model_config["num_classes"]
        metrics, _ = vqa_metrics(y_true, y_pred, num_classes, np.asarray(self.config.train_labels))
        keep = ("acc", "f1", "precision", "recall", "balanced_acc", "majority_acc")
        return {k: metrics[k] for k in keep}

    @staticmethod
    def score(metrics: dict) -> float:
        """The best epoch's measure: validation macro-F1, as the reference."""
        return metrics.get("f1", 0.0)

    def epoch_row(self) -> dict:
        return {}

    @staticmethod
    def epoch_line(metrics: dict) -> str:
        return (
            f"val acc {100 * metrics.get('acc', 0):.1f}% macro-F1 {metrics.get('f1', 0):.3f} "
            f"(majority class {100 * metrics.get('majority_acc', 0):.1f}%)"
        )


# -- the run around the step (the driver; flags in, nothing of it on the workers) ---------


def build_tokenizer(args, train_texts: list[str]):
    """``--tokenizer_path``, else the GPT-2 folder's, else a tiny GPT-2-style BPE trained on
    the training questions."""
    from models import build_bpe_tokenizer, load_tokenizer

    path = args.tokenizer_path or args.gpt2_path
    if path:
        return load_tokenizer(path)
    return build_bpe_tokenizer(train_texts, vocab_size=1000, style="gpt2")


def build_model_config(args, tokenizer) -> PitVQAConfig:
    """The typed model config from the preset, the ViT/BLIP/GPT-2 weights and the flags."""
    from models import NUM_CLASSES

    common = dict(num_classes=NUM_CLASSES[args.dataset], max_length=args.max_length)
    if args.preset == "base":
        return PitVQAConfig.base(
            args.vit_path,
            args.blip_path,
            args.gpt2_path,
            vocab_size=len(tokenizer),
            text_encoder_init=args.text_encoder_init,
            **common,
        )
    return PitVQAConfig.tiny(vocab_size=len(tokenizer), image_size=args.image_size, **common)


def read_source(args):
    """The questions of ``--data_root`` (pit24 / endo18), or the synthetic pit24 tree."""
    from jobs.data import VQASource, vqa_questions, vqa_root

    root = vqa_root(args.dataset, args.data_root, args.synthetic_dir, args.synthetic_videos)
    return VQASource(root, *vqa_questions(args.dataset, root, args.output_dir))


def load_data(args, source, tokenizer, model_config: PitVQAConfig, training: bool = True):
    """Tokenized and sized for the model (``jobs.data.vqa_data``)."""
    from jobs.data import vqa_data

    return vqa_data(
        args.dataset,
        source,
        tokenizer,
        model_config.image_size,
        model_config.max_length,
        training,
    )


def evaluate(args, checkpoint, data, output_dir, use_gpu: bool) -> dict:
    """The validation questions: ``metrics.json`` and the confusion matrix."""
    from jobs.evaluate import evaluate_vqa

    return evaluate_vqa(
        checkpoint,
        data.val,
        data.labels,
        data.train_labels,
        output_dir,
        use_gpu,
        data.class_types,
        args.compute_dtype,
    )


def after_training(args, checkpoint, data, output_dir, use_gpu: bool) -> dict:
    """The evaluation of the best checkpoint (nothing else to build for this model)."""
    return evaluate(args, checkpoint, data, output_dir, use_gpu)
