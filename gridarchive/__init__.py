"""The rules for untrusted model archives, shared by the node (checking uploads) and the client
(checking downloads), with no Django in them.

- `gridarchive.ziplimits`: a zip is sized up from its directory before anything unpacks it.
- `gridarchive.archives`: the kind of an archive, the checks of its entries and pickles before torch
  reads it, and `load` / `load_checked`, which load it only after those checks pass.
- `gridarchive.operators`: the operators a model may run, and the walks over a loaded model that
  find every operator it could call and every write into its own state.

Every refusal is `ArchiveRefused`, an exception whose message is safe to show the archive's sender.
"""

from gridarchive.errors import ArchiveRefused

__all__ = ["ArchiveRefused"]
