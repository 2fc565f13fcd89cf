"""nvidia/cuda tags: the cuDNN part of the name changes across CUDA releases."""

from __future__ import annotations

import pytest

from torchship.compat import Matrix


@pytest.mark.parametrize(
    ("cuda", "flavor", "ubuntu", "tag"),
    [
        ((11, 8), "cudnn-devel", "22.04", "nvidia/cuda:11.8.0-cudnn8-devel-ubuntu22.04"),
        ((12, 1), "cudnn-runtime", None, "nvidia/cuda:12.1.1-cudnn8-runtime-ubuntu22.04"),
        ((12, 3), "cudnn-devel", None, "nvidia/cuda:12.3.2-cudnn9-devel-ubuntu22.04"),
        ((12, 4), "cudnn-devel", "22.04", "nvidia/cuda:12.4.1-cudnn-devel-ubuntu22.04"),
        ((12, 8), "runtime", None, "nvidia/cuda:12.8.1-runtime-ubuntu24.04"),
        ((13, 0), "base", None, "nvidia/cuda:13.0.3-base-ubuntu24.04"),
        ((13, 2), "devel", "22.04", "nvidia/cuda:13.2.1-devel-ubuntu22.04"),
    ],
)
def test_tags(
    matrix: Matrix, cuda: tuple[int, int], flavor: str, ubuntu: str | None, tag: str
) -> None:
    img = matrix.cuda_image(cuda)
    assert img is not None and img.tag(flavor, ubuntu) == tag


def test_no_cuda13_on_ubuntu_20_04(matrix: Matrix) -> None:
    img = matrix.cuda_image((13, 0))
    assert img is not None
    with pytest.raises(ValueError, match=r"no Ubuntu 20\.04"):
        img.tag("base", "20.04")
    with pytest.raises(ValueError, match="unknown nvidia/cuda flavor"):
        img.tag("slim")


def test_minor_without_its_own_image_falls_back_within_the_major(matrix: Matrix) -> None:
    img = matrix.cuda_image((12, 7))
    assert img is not None and img.cuda == (12, 6, 3)
    assert matrix.cuda_image((10, 2)) is None
