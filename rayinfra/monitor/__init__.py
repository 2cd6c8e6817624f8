"""Data profiles and drift. whylogs stays behind this package so it could be replaced."""
