"""Reading and validating import files; no database access (see services.imports)."""
