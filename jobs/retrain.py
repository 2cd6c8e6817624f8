"""Retraining job: `ray job submit -- python jobs/retrain.py --spec jobs/specs/fraud.yaml`.

Thin entrypoint over `rayinfra retrain` (train on the latest table version, register,
gate against the champion). The DriftMonitor submits the same command when drift holds.
"""

import sys

from rayinfra.cli import app

if __name__ == "__main__":
    app(["retrain", *sys.argv[1:]])
