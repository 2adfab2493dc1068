"""NFNets in JAX: the model family, its optimizer and the shared training kit."""
from nfnet.model import NFNet, normalize_images

__all__ = ["NFNet", "load", "normalize_images"]


def __getattr__(name: str):
  # `load` pulls in the weight converters, whose modules are also command
  # lines (`python -m nfnet.convert`, `python -m nfnet.info`): imported
  # eagerly here, runpy would find them imported already and warn.
  if name == "load":
    from nfnet.loading import load  # pylint: disable=import-outside-toplevel
    return load
  raise AttributeError(f"module 'nfnet' has no attribute {name!r}")
