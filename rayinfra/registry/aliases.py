"""The registry's alias names. Kept apart from ``lifecycle`` so the request path can name a
role without importing MLflow (seconds on the first request otherwise)."""

CHAMPION, CHALLENGER = "champion", "challenger"
