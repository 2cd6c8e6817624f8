"""Feature views in Feast's terms on rayinfra's own Delta tables: definitions, the shared
point-in-time aggregate, the online store (SQLite embedded, Redis on clusters) and its materialization."""
