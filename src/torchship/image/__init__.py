"""Images: a Dockerfile rendered from the lock alone (pure), and building it with an engine."""

from torchship.image.dockerfile import VARIANTS, Rendered, RenderOptions, image_tag, render

__all__ = ["VARIANTS", "RenderOptions", "Rendered", "image_tag", "render"]
