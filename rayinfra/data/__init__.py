"""The data layer: contracts, Delta tables, ingest, demo data."""
