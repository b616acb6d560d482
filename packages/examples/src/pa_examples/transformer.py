"""A small transformer language model trained from scratch: dict batches, loss_func=None, gradient accumulation.

The model is a character-level, decoder-only transformer (about 400,000 parameters) trained on
a short story bundled with pa-examples (``texts/lighthouse.txt``, written for pa and dedicated to
the public domain), with gradient accumulation, gradient clipping and a warmup-cosine schedule;
at the end it writes a few lines in the same style.

Each batch is a dict, ``{"input_ids": ..., "labels": ...}``, and the model returns a dict with
``loss`` and ``logits``, like Hugging Face models do. The Trainer's default batch handling
expects ``(inputs, targets)`` and a ``loss_func``, so a small subclass overrides
``calculate_train_batch_loss`` and ``calculate_eval_batch_loss`` to call ``model(**batch)``.

    pa-examples run transformer
    torchrun --nproc_per_node 2 -m pa_examples.transformer
    pa-examples run transformer --text-file my_book.txt --epochs 5
    pa-examples run transformer --hf-dataset karpathy/tiny_shakespeare   # needs `datasets`, downloads
"""

from __future__ import annotations

import argparse
import math
from importlib import resources
from typing import Any

import torch
import torch.nn.functional as F
from torch import nn
from torch.utils.data import Dataset

from pa_callbacks import get_default_callbacks
from pa_core import Trainer
from pa_core.schedulers import CosineLrScheduler
from pa_examples.common import leave_process_group

__all__ = [
    "CharTokenizer",
    "LanguageModelTrainer",
    "TextWindows",
    "TinyGPT",
    "bundled_text",
    "hugging_face_text",
    "main",
]


def bundled_text() -> str:
    """The short story that ships with pa-examples (about 5,000 characters)."""
    return (resources.files("pa_examples") / "texts" / "lighthouse.txt").read_text(encoding="utf-8")


def hugging_face_text(name: str, config: str | None, split: str, column: str, max_chars: int) -> str:
    """The ``column`` of a Hugging Face dataset, joined into one text (downloaded on first use)."""
    try:
        from datasets import load_dataset
    except ImportError:
        raise SystemExit("--hf-dataset needs the datasets package: pip install datasets") from None
    rows = load_dataset(name, config, split=split)
    text, size = [], 0
    for row in rows:
        text.append(row[column])
        size += len(row[column])
        if size >= max_chars:
            break
    return "\n".join(text)[:max_chars]


class CharTokenizer:
    """Maps each distinct character of a text to an integer id, and back."""

    def __init__(self, text: str) -> None:
        self.chars = sorted(set(text))
        self.ids = {char: index for index, char in enumerate(self.chars)}

    @property
    def vocab_size(self) -> int:
        """How many distinct characters there are."""
        return len(self.chars)

    def encode(self, text: str) -> torch.Tensor:
        """The ids of ``text``'s characters; ``ValueError`` for characters never seen."""
        unknown = sorted(set(text) - self.ids.keys())
        if unknown:
            raise ValueError(f"characters not in the training text: {unknown}")
        return torch.tensor([self.ids[char] for char in text], dtype=torch.long)

    def decode(self, ids: torch.Tensor) -> str:
        """The text of a 1-D tensor of ids."""
        return "".join(self.chars[i] for i in ids.tolist())


class TextWindows(Dataset):
    """Windows of ``block_size`` tokens starting every ``stride`` tokens; the labels are the
    same window shifted by one token (each position predicts the next character)."""

    def __init__(self, token_ids: torch.Tensor, block_size: int, stride: int) -> None:
        if len(token_ids) <= block_size:
            raise ValueError(f"the text ({len(token_ids)} tokens) must be longer than the block size ({block_size})")
        self.token_ids, self.block_size = token_ids, block_size
        self.starts = range(0, len(token_ids) - block_size, stride)

    def __len__(self) -> int:
        return len(self.starts)

    def __getitem__(self, index: int) -> dict[str, torch.Tensor]:
        window = self.token_ids[self.starts[index] : self.starts[index] + self.block_size + 1]
        return {"input_ids": window[:-1], "labels": window[1:]}


class TinyGPT(nn.Module):
    """A decoder-only transformer: token and position embeddings, pre-norm transformer blocks
    with a causal mask, and a linear head over the vocabulary."""

    def __init__(
        self, vocab_size: int, block_size: int, d_model: int = 128, n_heads: int = 4, n_layers: int = 2
    ) -> None:
        super().__init__()
        self.block_size = block_size
        self.token_embedding = nn.Embedding(vocab_size, d_model)
        self.position_embedding = nn.Embedding(block_size, d_model)
        block = nn.TransformerEncoderLayer(
            d_model,
            n_heads,
            dim_feedforward=4 * d_model,
            dropout=0.1,
            activation="gelu",
            batch_first=True,
            norm_first=True,
        )
        self.blocks = nn.TransformerEncoder(block, n_layers, enable_nested_tensor=False)
        self.norm = nn.LayerNorm(d_model)
        self.lm_head = nn.Linear(d_model, vocab_size)

    def forward(self, input_ids: torch.Tensor, labels: torch.Tensor | None = None) -> dict[str, Any]:
        """``{"loss": ..., "logits": ...}``; the loss is None without ``labels``."""
        length = input_ids.size(1)
        positions = torch.arange(length, device=input_ids.device)
        hidden = self.token_embedding(input_ids) + self.position_embedding(positions)
        causal_mask = nn.Transformer.generate_square_subsequent_mask(length, device=input_ids.device)
        hidden = self.blocks(hidden, mask=causal_mask, is_causal=True)
        logits = self.lm_head(self.norm(hidden))
        loss = F.cross_entropy(logits.flatten(0, 1), labels.flatten()) if labels is not None else None
        return {"loss": loss, "logits": logits}

    @torch.no_grad()
    def generate(
        self, input_ids: torch.Tensor, num_tokens: int, temperature: float = 0.8, seed: int = 0
    ) -> torch.Tensor:
        """Continue ``input_ids`` (shape ``(1, length)``) by ``num_tokens`` sampled tokens."""
        generator = torch.Generator(device=input_ids.device).manual_seed(seed)
        for _ in range(num_tokens):
            logits = self(input_ids[:, -self.block_size :])["logits"][:, -1]
            probabilities = torch.softmax(logits / temperature, dim=-1)
            next_id = torch.multinomial(probabilities, num_samples=1, generator=generator)
            input_ids = torch.cat([input_ids, next_id], dim=1)
        return input_ids


class LanguageModelTrainer(Trainer):
    """Feeds each dict batch to the model as keyword arguments and takes the loss it returns."""

    def calculate_train_batch_loss(self, batch: dict[str, torch.Tensor]) -> dict[str, Any]:
        outputs = self.model(**batch)
        return {"loss": outputs["loss"], "model_outputs": outputs["logits"], "batch_size": batch["input_ids"].size(0)}

    def calculate_eval_batch_loss(self, batch: dict[str, torch.Tensor]) -> dict[str, Any]:
        return self.calculate_train_batch_loss(batch)


def main(argv: list[str] | None = None) -> dict[str, Any]:
    """Train the language model and write a sample; return the last eval loss and the sample."""
    parser = argparse.ArgumentParser(prog="pa-examples run transformer", description=__doc__.splitlines()[0])
    parser.add_argument("--epochs", type=int, default=8, help="training epochs (default: 8)")
    parser.add_argument("--batch-size", type=int, default=8, help="batch size on each process (default: 8)")
    parser.add_argument(
        "--gradient-accumulation-steps", type=int, default=4, help="batches per optimizer update (default: 4)"
    )
    parser.add_argument("--lr", type=float, default=3e-3, help="peak learning rate (default: 0.003)")
    parser.add_argument("--block-size", type=int, default=64, help="characters of context (default: 64)")
    parser.add_argument("--d-model", type=int, default=128, help="width of the model (default: 128)")
    parser.add_argument("--layers", type=int, default=2, help="transformer blocks (default: 2)")
    parser.add_argument("--heads", type=int, default=4, help="attention heads (default: 4)")
    parser.add_argument("--prompt", default="The light", help="the start of the generated text")
    parser.add_argument("--text-file", help="train on this UTF-8 text file instead of the bundled story")
    parser.add_argument("--hf-dataset", help="train on a Hugging Face dataset's text (downloads it)")
    parser.add_argument("--hf-config", help="the dataset's configuration name, if it has several")
    parser.add_argument("--hf-split", default="train", help="the dataset split (default: train)")
    parser.add_argument("--hf-text-column", default="text", help="the column holding the text (default: text)")
    parser.add_argument("--max-chars", type=int, default=2_000_000, help="use at most this much text")
    parser.add_argument("--seed", type=int, default=0, help="seed of the initial weights (default: 0)")
    parser.add_argument("--fast", action="store_true", help="a tiny model for 1 epoch (for tests)")
    args = parser.parse_args(argv)
    if args.fast:
        args.epochs, args.d_model, args.layers, args.heads = 1, 32, 1, 2

    if args.hf_dataset:
        text = hugging_face_text(args.hf_dataset, args.hf_config, args.hf_split, args.hf_text_column, args.max_chars)
    elif args.text_file:
        with open(args.text_file, encoding="utf-8") as file:
            text = file.read(args.max_chars)
    else:
        text = bundled_text()
    tokenizer = CharTokenizer(text)
    token_ids = tokenizer.encode(text)
    split = int(0.9 * len(token_ids))
    # Overlapping windows: each character is seen in several contexts. Fewer in fast mode.
    train_stride = args.block_size if args.fast else max(args.block_size // 8, 1)
    train_set = TextWindows(token_ids[:split], args.block_size, stride=train_stride)
    eval_set = TextWindows(token_ids[split:], args.block_size, stride=max(args.block_size // 4, 1))

    torch.manual_seed(args.seed)
    model = TinyGPT(tokenizer.vocab_size, args.block_size, args.d_model, args.heads, args.layers)
    trainer = LanguageModelTrainer(
        model,
        loss_func=None,  # the model computes its own loss
        optimizer=torch.optim.AdamW(model.parameters(), lr=args.lr, weight_decay=0.01),
        callbacks=get_default_callbacks(progress_bar=not args.fast),
    )
    trainer.print(
        f"{sum(p.numel() for p in model.parameters()):,} parameters, {tokenizer.vocab_size} characters, "
        f"{len(train_set)} training windows of {args.block_size}"
    )
    trainer.train(
        train_set,
        num_epochs=args.epochs,
        eval_dataset=eval_set,
        per_device_batch_size=args.batch_size,
        gradient_accumulation_steps=args.gradient_accumulation_steps,
        gradient_clip_value=1.0,
        create_scheduler_fn=CosineLrScheduler.create_scheduler_fn(
            num_warmup_epochs=1 if args.epochs > 2 else 0, warmup_starting_lr_ratio=0.1, min_lr_ratio=0.1
        ),
    )

    eval_loss = trainer.run_history.get_latest_metric("eval_loss_epoch")
    prompt = tokenizer.encode(args.prompt).unsqueeze(0).to(trainer.device)
    trainer.model.eval()
    sample = tokenizer.decode(trainer.model.generate(prompt, num_tokens=40 if args.fast else 300)[0])
    trainer.print(f"eval loss {eval_loss:.3f} (perplexity {math.exp(eval_loss):.2f} per character)\n")
    trainer.print(sample)
    leave_process_group()
    return {"eval_loss": eval_loss, "sample": sample}


if __name__ == "__main__":
    main()
