"""What a plugin's own tests need to build a model exactly as a run builds it.

A strategy or attack package tests itself on robench's micro ViT (``MICRO``, random weights, no
download) wrapped in ``Normalized`` so that it takes [0, 1] pixels, as every model robench
attacks does. These names are public: docs/writing-plugins.md and the example packages use them.
"""

from robench.backbone import MICRO, BackboneSpec, Normalized
from robench.pipeline.models import create_backbone

__all__ = ["MICRO", "BackboneSpec", "Normalized", "create_backbone"]
