"""Distributed training (Ray Train), hyperparameter search (Ray Tune)."""
