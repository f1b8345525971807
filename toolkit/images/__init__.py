"""Node images: the manifest and built artifacts."""
