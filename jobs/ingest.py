"""Ingest job: `ray job submit --working-dir . -- python jobs/ingest.py FILE... --spec jobs/specs/fraud.yaml`.

Thin entrypoint over `rayinfra ingest`. Files must be readable where the job runs
(shared storage on a cluster).
"""

import sys

from rayinfra.cli import app

if __name__ == "__main__":
    app(["ingest", *sys.argv[1:]])
