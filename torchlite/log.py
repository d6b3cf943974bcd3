"""torchlite's logger. Set TORCHLITE_LOG=debug|info|warning to see what the passes and backend do."""
import logging
import os

logger = logging.getLogger("torchlite")
_level = os.environ.get("TORCHLITE_LOG", "").upper()
if _level:
    logger.setLevel(_level)
    if not logger.handlers:
        handler = logging.StreamHandler()
        handler.setFormatter(logging.Formatter("[torchlite %(levelname)s] %(message)s"))
        logger.addHandler(handler)
