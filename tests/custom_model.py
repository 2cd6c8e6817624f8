"""A user's own model, referenced from a spec as ``tests.custom_model:build``."""

from torch import nn

from rayinfra.train.models import TabularMLP


def build(num_numeric: int, cardinalities: list[int], width: int = 8) -> nn.Module:
    return TabularMLP(num_numeric, cardinalities, hidden=(width,), embedding_dim=2, dropout=0.0)
