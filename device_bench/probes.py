"""Reading a ``probes/`` folder on the device: lives in `ofa_sdk.probes`, re-exported here."""

from ofa_sdk.probes import MANIFEST, NULL_KEY, ProbeArchive, ProbeFile, ProbeSet, format_for

__all__ = ["MANIFEST", "NULL_KEY", "ProbeArchive", "ProbeFile", "ProbeSet", "format_for"]
