"""SMB file handles smbclient does not offer as such."""

from __future__ import annotations

import io
from typing import Any


class ReadWhileWritten(io.RawIOBase):
    """An SMB file read while another handle still writes it. smbclient's reader returns
    nothing past the size the file had when it was opened; this one asks the server every
    time, and the server's end of file (STATUS_END_OF_FILE) is the end. With `owned` off,
    closing the reader leaves `raw` open (a file read back on the handle that wrote it)."""

    def __init__(self, raw: Any, owned: bool = True):
        self._raw, self._owned = raw, owned
        raw.fd.end_of_file = 1 << 62  # smbclient's cached size, consulted before each read

    def readable(self) -> bool:
        return True

    def readinto(self, buffer: Any) -> int:
        from smbprotocol.exceptions import EndOfFile

        try:
            return self._raw.readinto(buffer)
        except EndOfFile:
            return 0

    def close(self) -> None:
        if not self.closed and self._owned:
            self._raw.close()
        super().close()
