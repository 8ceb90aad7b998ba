"""Request bodies the lean SMB 3 client (smb_wire.py) sends for more than one caller."""

from __future__ import annotations

import struct

_CREATE = struct.Struct("<HBBIQQIIIIIHHII")


def create_body(name: str, access: int, attributes: int, share: int, disposition: int,
                options: int) -> bytes:
    """An SMB2 CREATE request body for `name` (share-relative, either slash)."""
    encoded = name.replace("/", "\\").encode("utf-16-le")
    body = _CREATE.pack(57, 0, 0, 2, 0, 0, access, attributes, share, disposition, options,
                        64 + _CREATE.size, len(encoded), 0, 0) + encoded
    return body if encoded else body + b"\0" * 8  # the buffer may not be empty
