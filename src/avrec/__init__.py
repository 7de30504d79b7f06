"""avrec: language-model recommendations for audio and video, fused with collaborative filtering."""

__version__ = "0.1.0"

from avrec.data.dataset import Dataset  # noqa: E402
from avrec.errors import AvrecError, ConfigError, DataError, DataWarning  # noqa: E402

__all__ = ["Dataset", "AvrecError", "ConfigError", "DataError", "DataWarning", "__version__"]
