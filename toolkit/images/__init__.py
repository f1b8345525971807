"""Node images: `node_images/<name>/image.yaml` read into a typed manifest (`load_manifest`)."""

from .manifest import ImageManifest, PortSpec, load_manifest

__all__ = ["ImageManifest", "PortSpec", "load_manifest"]
