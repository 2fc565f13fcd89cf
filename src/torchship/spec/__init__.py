"""The project spec: types and loading."""

from torchship.spec.load import load_spec
from torchship.spec.model import ImageOptions, Spec, Targets

__all__ = ["ImageOptions", "Spec", "Targets", "load_spec"]
