"""Upload of closed sessions to central storage (file:// depot or S3-compatible)."""
