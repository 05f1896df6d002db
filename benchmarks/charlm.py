"""The real-data task: a small character-level transformer language model on
the source text of the Python standard library, which is on every machine
with Python and needs no download.

The corpus is a fixed, sorted list of modules (all present from Python 3.8
to 3.13), read as bytes: the vocabulary is the 256 byte values, so nothing
depends on a tokenizer. Every file's last 10% is held out; the rest is the
training text. The corpus' SHA-256 goes into the benchmark JSON, so runs on
different Python builds can be told apart.

Each rank samples training windows of `context` bytes at positions drawn by
its own generator. The held-out loss is the mean next-byte cross-entropy
(nats) over a fixed set of held-out windows, the same on every rank.
"""

from __future__ import annotations

import hashlib
import math
import os
import sysconfig

import torch
from torch import nn

MODULES = sorted([
    "abc.py", "argparse.py", "ast.py", "bisect.py", "calendar.py", "colorsys.py", "configparser.py",
    "contextlib.py", "copy.py", "csv.py", "dataclasses.py", "difflib.py", "enum.py", "fractions.py",
    "functools.py", "heapq.py", "inspect.py", "ipaddress.py", "json/decoder.py", "json/encoder.py",
    "logging/__init__.py", "pprint.py", "queue.py", "random.py", "shlex.py", "shutil.py", "statistics.py",
    "string.py", "tempfile.py", "textwrap.py", "threading.py", "tokenize.py", "typing.py", "weakref.py",
])
HELD_OUT_FRACTION = 0.1
VOCAB = 256


class Corpus:
    """Training and held-out bytes of the standard library's MODULES."""

    def __init__(self, stdlib: str | None = None):
        root = stdlib or sysconfig.get_paths()["stdlib"]
        train, held_out = [], []
        digest = hashlib.sha256()
        for name in MODULES:
            path = os.path.join(root, name)
            try:
                with open(path, "rb") as f:
                    data = f.read()
            except OSError as e:
                raise RuntimeError(f"charlm: the corpus needs {path} from the Python standard library ({e})") from e
            digest.update(name.encode() + b"\0" + data)
            cut = len(data) - int(len(data) * HELD_OUT_FRACTION)
            train.append(data[:cut])
            held_out.append(data[cut:])
        self.train = torch.frombuffer(bytearray(b"".join(train)), dtype=torch.uint8).long()
        self.held_out = torch.frombuffer(bytearray(b"".join(held_out)), dtype=torch.uint8).long()
        self.sha256 = digest.hexdigest()


_corpus: Corpus | None = None


def corpus() -> Corpus:
    global _corpus
    if _corpus is None:
        _corpus = Corpus()
    return _corpus


class CharLM(nn.Module):
    """A GPT-style decoder: byte and position embeddings, pre-norm blocks of
    causal self-attention and an MLP, and a head tied to the embedding."""

    def __init__(self, context: int = 64, width: int = 128, layers: int = 2, heads: int = 4):
        super().__init__()
        self.context = context
        self.embed = nn.Embedding(VOCAB, width)
        self.position = nn.Parameter(torch.zeros(context, width))
        self.blocks = nn.ModuleList(
            nn.TransformerEncoderLayer(width, heads, dim_feedforward=4 * width, dropout=0.0, activation="gelu",
                                       batch_first=True, norm_first=True)
            for _ in range(layers)
        )
        self.norm = nn.LayerNorm(width)
        nn.init.normal_(self.embed.weight, std=0.02)
        nn.init.normal_(self.position, std=0.02)
        mask = torch.triu(torch.full((context, context), -math.inf), diagonal=1)
        self.register_buffer("causal", mask, persistent=False)

    def forward(self, tokens: torch.Tensor) -> torch.Tensor:
        t = tokens.shape[1]
        h = self.embed(tokens) + self.position[:t]
        for block in self.blocks:
            h = block(h, src_mask=self.causal[:t, :t], is_causal=True)
        return self.norm(h) @ self.embed.weight.t()  # logits over the 256 byte values


class Embed(nn.Module):
    """Byte and position embeddings: the first layer of the pipeline form."""

    def __init__(self, context: int, width: int):
        super().__init__()
        self.embed = nn.Embedding(VOCAB, width)
        self.position = nn.Parameter(torch.zeros(context, width))
        nn.init.normal_(self.embed.weight, std=0.02)
        nn.init.normal_(self.position, std=0.02)

    def forward(self, tokens: torch.Tensor) -> torch.Tensor:
        return self.embed(tokens) + self.position[: tokens.shape[1]]


class CausalBlock(nn.Module):
    """One pre-norm transformer block with its own causal mask, so that it
    is a layer of an nn.Sequential (a pipeline cuts between blocks)."""

    def __init__(self, context: int, width: int, heads: int):
        super().__init__()
        self.block = nn.TransformerEncoderLayer(width, heads, dim_feedforward=4 * width, dropout=0.0,
                                                activation="gelu", batch_first=True, norm_first=True)
        mask = torch.triu(torch.full((context, context), -math.inf), diagonal=1)
        self.register_buffer("causal", mask, persistent=False)

    def forward(self, h: torch.Tensor) -> torch.Tensor:
        t = h.shape[1]
        return self.block(h, src_mask=self.causal[:t, :t], is_causal=True)


class Head(nn.Module):
    """Final norm and the projection to byte logits (untied from the
    embedding: in a pipeline they live on different stages)."""

    def __init__(self, width: int):
        super().__init__()
        self.norm = nn.LayerNorm(width)
        self.out = nn.Linear(width, VOCAB, bias=False)
        nn.init.normal_(self.out.weight, std=0.02)

    def forward(self, h: torch.Tensor) -> torch.Tensor:
        return self.out(self.norm(h))


def sequential_layers(context: int = 64, width: int = 128, layers: int = 4, heads: int = 4) -> list:
    """The char LM as factories of the layers of an nn.Sequential (embedding,
    `layers` blocks, head), for pipelines: a stage builds only its own
    (bagua_ravnest.pipeline.stage_module)."""
    return ([lambda: Embed(context, width)] + [lambda: CausalBlock(context, width, heads)] * layers
            + [lambda: Head(width)])


def lm_loss(logits: torch.Tensor, targets: torch.Tensor) -> torch.Tensor:
    return nn.functional.cross_entropy(logits.reshape(-1, VOCAB), targets.reshape(-1))


class CharTask:
    """An endless, deterministic stream of (input, target) windows for one rank."""

    def __init__(self, rank: int, batch_size: int, context: int = 64, seed: int = 0):
        self.text = corpus().train
        self.batch_size, self.context = batch_size, context
        self.generator = torch.Generator().manual_seed(seed * 7919 + rank)

    loss = staticmethod(lm_loss)

    def held_out(self) -> tuple[torch.Tensor, torch.Tensor]:
        return held_out_windows(context=self.context)

    def batch(self) -> tuple[torch.Tensor, torch.Tensor]:
        starts = torch.randint(0, len(self.text) - self.context - 1, (self.batch_size,), generator=self.generator)
        window = torch.stack([self.text[s : s + self.context + 1] for s in starts.tolist()])
        return window[:, :-1], window[:, 1:]


def held_out_windows(count: int = 64, context: int = 64) -> tuple[torch.Tensor, torch.Tensor]:
    """`count` windows at evenly spaced positions of the held-out text."""
    text = corpus().held_out
    starts = torch.linspace(0, len(text) - context - 2, count).long()
    window = torch.stack([text[s : s + context + 1] for s in starts.tolist()])
    return window[:, :-1], window[:, 1:]


