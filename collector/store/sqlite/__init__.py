"""The SQLite span store (the embedded default): one file, WAL, stitched as spans arrive."""
