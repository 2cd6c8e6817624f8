"""Models by name, or a user's own through ``module:function``.

Every model maps ``(x_num [B, F] float32, x_cat [B, C] int64)`` to logits ``[B]``.
A user's factory is called as ``factory(num_numeric, cardinalities, **params)``.
"""

from __future__ import annotations

import importlib
from collections.abc import Callable, Sequence

import torch
from torch import nn

from rayinfra.config import SpecError


class TabularMLP(nn.Module):
    """Embeddings for categorical columns, concatenated with numbers, then an MLP."""

    def __init__(
        self,
        num_numeric: int,
        cardinalities: Sequence[int],
        hidden: Sequence[int] = (64, 32),
        embedding_dim: int | None = None,
        dropout: float = 0.1,
    ) -> None:
        super().__init__()
        dims = [embedding_dim or min(16, (card + 1) // 2 + 1) for card in cardinalities]
        self.embeddings = nn.ModuleList(nn.Embedding(card, dim) for card, dim in zip(cardinalities, dims))
        layers: list[nn.Module] = []
        width = num_numeric + sum(dims)
        for h in hidden:
            layers += [nn.Linear(width, h), nn.ReLU(), nn.Dropout(dropout)]
            width = h
        layers.append(nn.Linear(width, 1))
        self.mlp = nn.Sequential(*layers)

    def forward(self, x_num: torch.Tensor, x_cat: torch.Tensor) -> torch.Tensor:
        parts = [x_num] + [emb(x_cat[:, i]) for i, emb in enumerate(self.embeddings)]
        return self.mlp(torch.cat(parts, dim=1)).squeeze(1)


class Logistic(nn.Module):
    """Logistic regression: a weight per number and per category (a 1-d embedding)."""

    def __init__(self, num_numeric: int, cardinalities: Sequence[int]) -> None:
        super().__init__()
        self.linear = nn.Linear(num_numeric, 1)
        self.weights = nn.ModuleList(nn.Embedding(card, 1) for card in cardinalities)

    def forward(self, x_num: torch.Tensor, x_cat: torch.Tensor) -> torch.Tensor:
        out = self.linear(x_num).squeeze(1)
        for i, w in enumerate(self.weights):
            out = out + w(x_cat[:, i]).squeeze(1)
        return out


BUILTIN: dict[str, Callable[..., nn.Module]] = {"mlp": TabularMLP, "logistic": Logistic}


def build_model(name: str, num_numeric: int, cardinalities: Sequence[int], params: dict | None = None) -> nn.Module:
    """The model ``name`` (built-in, or ``package.module:function``) with ``params``."""
    factory = BUILTIN.get(name) or _import_factory(name)
    try:
        return factory(num_numeric, list(cardinalities), **(params or {}))
    except TypeError as err:
        raise SpecError(f"model '{name}' does not accept these params {sorted(params or {})}: {err}") from None


def _import_factory(ref: str) -> Callable[..., nn.Module]:
    module_name, _, attr = ref.partition(":")
    if not module_name or not attr:
        raise SpecError(f"unknown model '{ref}': use a built-in name ({', '.join(BUILTIN)}) or 'module:function'")
    try:
        return getattr(importlib.import_module(module_name), attr)
    except (ImportError, AttributeError) as err:
        raise SpecError(f"model factory '{ref}' cannot be imported: {err}") from None
