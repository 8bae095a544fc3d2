"""One module per schema revision, applied in order by `core.db.create_schema`."""
