"""vlm stage."""
