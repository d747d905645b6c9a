"""Tokenizers: a byte-level BPE trained on the training split, or a given Hugging Face tokenizer.

Whatever the origin, the saved tokenizer has [MASK], BOS, EOS and PAD special tokens, and workers
load it from a local folder, so nothing is downloaded inside a Ray worker.
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Iterable, Iterator

from transformers import PreTrainedTokenizerFast

from meap_scale.data.errors import DataError

MASK, BOS, EOS, PAD = "[MASK]", "<s>", "</s>", "<pad>"
SPECIAL_TOKENS = (PAD, BOS, EOS, MASK)


def train_bpe(texts: Iterable[str], vocab_size: int) -> PreTrainedTokenizerFast:
    """Byte-level BPE (GPT-2 style pre-tokenisation, so any text encodes) with our special tokens."""
    from tokenizers import Tokenizer, decoders, models, pre_tokenizers, trainers

    tokenizer = Tokenizer(models.BPE())
    tokenizer.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    tokenizer.decoder = decoders.ByteLevel()
    trainer = trainers.BpeTrainer(vocab_size=vocab_size, special_tokens=list(SPECIAL_TOKENS), min_frequency=2,
                                  initial_alphabet=pre_tokenizers.ByteLevel.alphabet(), show_progress=False)
    tokenizer.train_from_iterator(texts, trainer)
    return PreTrainedTokenizerFast(tokenizer_object=tokenizer, bos_token=BOS, eos_token=EOS, pad_token=PAD,
                                   mask_token=MASK)


def _looks_like_path(name: str) -> bool:
    """Hub ids are ``name`` or ``org/name``; anything rooted, relative or deeper is a local path."""
    return name.startswith((".", "/", "~")) or name.count("/") > 1


def check_tokenizer_name(name: str) -> None:
    """Fail before any work when a tokenizer path is given but does not exist."""
    if name != "bpe" and _looks_like_path(name) and not Path(name).expanduser().exists():
        raise DataError(f"tokenizer path {name!r} does not exist; give a tokenizer folder, a hub name, or 'bpe'")


def load_pretrained(name: str) -> PreTrainedTokenizerFast:
    """A local folder or hub tokenizer, with any missing special token added."""
    check_tokenizer_name(name)
    from transformers import AutoTokenizer

    try:
        tokenizer = AutoTokenizer.from_pretrained(os.path.expanduser(name), use_fast=True)
    except Exception as error:  # missing files, offline hub and bad names surface as several types
        raise DataError(f"could not load tokenizer {name!r}: {type(error).__name__}: {error}") from error
    missing = {key: token for key, token in (("mask_token", MASK), ("bos_token", BOS), ("eos_token", EOS),
                                              ("pad_token", PAD)) if getattr(tokenizer, key) is None}
    if missing:
        tokenizer.add_special_tokens(missing)
    return tokenizer


def special_token_ids(tokenizer: PreTrainedTokenizerFast) -> dict[str, int]:
    return {"mask": tokenizer.mask_token_id, "bos": tokenizer.bos_token_id, "eos": tokenizer.eos_token_id,
            "pad": tokenizer.pad_token_id}


def batched_texts(dataset, batch_size: int = 1000) -> Iterator[list[str]]:
    for batch in dataset.iter(batch_size=batch_size):
        yield batch["text"]
