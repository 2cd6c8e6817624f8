"""Ingest job: `ray job submit --working-dir . -- python jobs/ingest.py FILE... --spec jobs/specs/fraud.yaml`.

Thin entrypoint over `rayinfra ingest`. Files must be readable where the job runs
(shared storage on a cluster).
"""

from rayinfra.cli import app

if __name__ == "__main__":
    app(["ingest", *__import__("sys").argv[1:]])
