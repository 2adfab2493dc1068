"""NFNets in JAX: the model family, its optimizer and the shared training kit."""
from nfnet.loading import load
from nfnet.model import NFNet, normalize_images

__all__ = ["NFNet", "load", "normalize_images"]
