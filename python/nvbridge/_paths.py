# SPDX-License-Identifier: MIT
"""Where `make install` put libnvbridge.so.1 (it rewrites LIBDIR); None in the tree."""
from typing import Optional

LIBDIR: Optional[str] = None
