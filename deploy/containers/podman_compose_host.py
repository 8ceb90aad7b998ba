"""podman-compose with services on `network_mode: host` left off every compose network.

podman-compose 1.0.3 (Debian bookworm's) adds the project's default network to every container
(`--net <project>_default`, creating that network first) even when the service sets
`network_mode: host`; podman then joins a bridge this machine cannot make. Newer releases skip
the network for such services; this does the same for the one it wraps, and changes nothing
else. Run by deploy/containers/lib.sh as `python3 podman_compose_host.py <podman-compose args>`.
"""

from __future__ import annotations

import sys

import podman_compose as pc


def _wrap(name: str, empty):
    original = getattr(pc, name, None)
    if original is None:  # another release: nothing to fix
        return

    def wrapped(compose, cnt, *args, **kwargs):
        if cnt.get("network_mode"):
            return empty
        return original(compose, cnt, *args, **kwargs)

    setattr(pc, name, wrapped)


_wrap("get_net_args", [])
_wrap("assert_cnt_nets", None)

if __name__ == "__main__":
    sys.argv[0] = "podman-compose"
    sys.exit(pc.main())
