"""SMB 3 message signing for the lean client (smb_wire.py): the SP800-108 key derivation and
AES-GMAC / AES-CMAC signatures."""

from __future__ import annotations

import hmac
import struct
from typing import Any

SIGN_CMAC, SIGN_GMAC = 1, 2
_ZERO_SIG = bytes(16)


def kdf(key: bytes, label: bytes, context: bytes, length: int = 16) -> bytes:
    from cryptography.hazmat.primitives import hashes
    from cryptography.hazmat.primitives.kdf.kbkdf import KBKDFHMAC, CounterLocation, Mode

    return KBKDFHMAC(algorithm=hashes.SHA256(), mode=Mode.CounterMode, length=length, rlen=4,
                     llen=4, location=CounterLocation.BeforeFixed, label=label,
                     context=context, fixed=None).derive(key)


class Signer:
    """AES-GMAC (SMB 3.1.1 when the server offers it) or AES-CMAC signatures."""

    def __init__(self, key: bytes, algorithm: int):
        from cryptography.hazmat.primitives.ciphers.aead import AESGCM

        self.key, self.algorithm = key, algorithm
        self._gcm = AESGCM(key)  # GMAC of one buffer: a GCM tag over no plaintext

    def signature(self, mid: int, response: bool, *parts: bytes | bytearray | memoryview
                  ) -> bytes:
        """The signature of a message given as `parts` (its signature field zeroed), each
        fed to the MAC where it lies: a 1 MiB read answer is not copied for it."""
        if self.algorithm == SIGN_GMAC:
            nonce = struct.pack("<QI", mid, 1 if response else 0)
            if len(parts) == 1:  # every message but large ones: no import on this path
                return self._gcm.encrypt(nonce, b"", parts[0])
            from cryptography.hazmat.primitives.ciphers import Cipher, algorithms, modes

            gmac = Cipher(algorithms.AES(self.key), modes.GCM(nonce)).encryptor()
            for part in parts:
                gmac.authenticate_additional_data(part)
            gmac.finalize()
            return gmac.tag
        from cryptography.hazmat.primitives import cmac
        from cryptography.hazmat.primitives.ciphers import algorithms

        mac = cmac.CMAC(algorithms.AES(self.key))
        for part in parts:
            mac.update(part)
        return mac.finalize()

    def verify(self, message: memoryview, mid: int) -> bool:
        """Whether one signed answer carries its right signature."""
        if len(message) <= 65536:  # copied into one buffer: one call of the MAC
            whole = bytearray(message)
            whole[48:64] = _ZERO_SIG
            parts: tuple[Any, ...] = (whole,)
        else:
            header = bytearray(message[:64])
            header[48:64] = _ZERO_SIG
            parts = (header, message[64:])
        return hmac.compare_digest(self.signature(mid, True, *parts), bytes(message[48:64]))
