"""What each model costs: resource-seconds per job and version, prices, and budgets."""
