"""A probes folder's files: ``manifest.json`` and one ``<fmt>.zip`` per format (`pack_probes`),
which is what a zoo ships and ``ofa_sdk.device_bench.probes`` verifies and unpacks."""

from __future__ import annotations

import logging
import os
from pathlib import Path
from typing import Any

from ofa_sdk.cache import atomic_write_json, sha256_file

__all__ = ["MANIFEST", "ARCHIVE_SUFFIX", "pack_probes"]

logger = logging.getLogger("ofa_sdk.training.probes")

MANIFEST = "manifest.json"
#: A format's archive in the probes folder: ``onnx_fp32.zip`` holds every ONNX model and sidecar.
ARCHIVE_SUFFIX = ".zip"
_ZIP_DATE = (2020, 4, 26, 0, 0, 0)  # fixed member timestamps: the same probes, the same bytes


def pack_probes(folder: str | os.PathLike, manifest: dict[str, Any]) -> dict[str, Any]:
    """Pack each complete format of a probe folder into ``<fmt>.zip``; record it in the manifest.

    One ZIP_DEFLATED archive per format holds that format's probe and calibration files with
    their sidecars, under the manifest's relative paths. ``manifest["archives"][fmt]`` gets the
    archive's path, sha256 and size and each member's sha256 and size, so the device checks the
    download and every file it unpacks (``ofa_sdk.device_bench.probes``). Writes are atomic; the
    manifest is saved too. Formats with a missing file are skipped (the export is unfinished).
    """
    import zipfile

    folder = Path(folder)
    records = [manifest.get("null", {}), *manifest.get("probes", {}).values(),
               *manifest.get("calibration", [])]
    archives: dict[str, Any] = {}
    for fmt in manifest.get("formats", []):
        rels = [r["files"][fmt]["path"] for r in records if fmt in r.get("files", {})]
        if len(rels) != len(records):
            continue
        members: dict[str, Any] = {}
        path = folder / f"{fmt}{ARCHIVE_SUFFIX}"
        tmp = path.with_name(f".{path.name}.{os.getpid()}.tmp")
        try:
            with zipfile.ZipFile(tmp, "w", compression=zipfile.ZIP_DEFLATED,
                                 compresslevel=9) as zf:
                for rel in rels:
                    for name in (rel, rel + ".json"):
                        src = folder / name
                        info = zipfile.ZipInfo(name, date_time=_ZIP_DATE)
                        info.compress_type = zipfile.ZIP_DEFLATED
                        info.external_attr = 0o644 << 16
                        data = src.read_bytes()
                        zf.writestr(info, data, compresslevel=9)
                        members[name] = {"sha256": sha256_file(src), "size": len(data)}
            os.replace(tmp, path)
        finally:
            tmp.unlink(missing_ok=True)
        archives[fmt] = {"path": path.name, "sha256": sha256_file(path),
                         "size": path.stat().st_size, "members": members}
        logger.info("packed %d %s files (%.1f MB) into %s (%.2f MB)", len(members), fmt,
                    sum(m["size"] for m in members.values()) / 1e6, path,
                    path.stat().st_size / 1e6)
    manifest["archives"] = archives
    atomic_write_json(folder / MANIFEST, manifest)
    return manifest
