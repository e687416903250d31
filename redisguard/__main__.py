"""``python -m redisguard ...``: the same commands as the ``redisguard`` console script."""

from __future__ import annotations

import sys

from ._cli import main

if __name__ == "__main__":
    sys.exit(main())
