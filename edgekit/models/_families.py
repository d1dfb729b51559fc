"""Import every model family so that their @register_model decorators run."""

from __future__ import annotations

from edgekit.models import (  # noqa: F401
    densenet,
    mnasnet,
    mobilenet_v1,
    mobilenet_v2,
    resnet,
    shufflenet,
    squeezenet,
)
