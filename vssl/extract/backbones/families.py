"""Imports every built-in backbone family so that their factories register themselves."""

from . import tiny  # noqa: F401
from . import video_vit  # noqa: F401
from . import image_vit  # noqa: F401
from . import efficientnet_lite  # noqa: F401
from . import slowonly  # noqa: F401
from . import timesformer  # noqa: F401
from . import mae_st  # noqa: F401
from . import dinov2  # noqa: F401
from . import clip  # noqa: F401
from . import siglip  # noqa: F401
from . import vjepa2  # noqa: F401
