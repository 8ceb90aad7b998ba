"""The lean SMB client's authentication: the SPNEGO context (pyspnego, the same NTLM/Kerberos
negotiation smbprotocol uses) and its first token, made while the server answers the
negotiate."""

from __future__ import annotations

from typing import Any


class WireUnsupported(Exception):
    """The server or share needs something this lean client does not do: list through
    smbprotocol instead."""


def ntlm_credentials(user: str, password: str) -> tuple[Any, ...]:
    """spnego.client's credential arguments. pyspnego derives an LM hash from a password with
    pure-Python DES (~1 ms of CPU per connection) that NTLMv2 never uses, so NTLM is given
    the NT hash alone (the password is still given for Kerberos). A client set to NTLMv1
    (pyspnego's LM_COMPAT_LEVEL below 3) then sends a zero LM hash; a server that refuses it
    raises WireUnsupported, and the caller falls back to smbprotocol as for any other."""
    import spnego

    if not (user and password):
        return (user or None, password or None)
    try:
        from spnego._ntlm_raw.crypto import ntowfv1  # not public: fall back without it
    except ImportError:
        return (user, password)
    return ([spnego.NTLMHash(user, nt_hash=ntowfv1(password).hex()),
             spnego.Password(user, password)],)


def start_auth(user: str, password: str, host: str) -> tuple[Any, bytes | None]:
    """The SPNEGO context and its first token (client-initiated: it does not need the
    server's hint from the negotiate answer)."""
    import spnego

    try:
        ctx = spnego.client(*ntlm_credentials(user, password), hostname=host, service="cifs",
                            options=spnego.NegotiateOptions.session_key, protocol="negotiate")
        return ctx, ctx.step(None)
    except spnego.exceptions.SpnegoError as err:
        raise WireUnsupported(f"authentication cannot start: {err}") from err
