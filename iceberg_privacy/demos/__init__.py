"""The end-to-end demos behind ``iceberg-privacy demo`` (the README's main job)."""
