"""Monthly backups: the `backups` asset, the `backup` job and its monthly schedule."""
