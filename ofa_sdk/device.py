"""Identifying this device: CPU, cores, installed runtimes, and a fingerprint to key measurements.

Nothing here imports a runtime: backends are found with ``importlib.util.find_spec`` and their
versions read from package metadata, so `detect_device` stays cheap on the warm path of ``pick``.
A zoo's device class (``docs/zoo-format.md``) is matched against the detected CPU by
`match_score`.
"""

from __future__ import annotations

import functools
import hashlib
import importlib.util
import json
import os
import platform
import re
import sys
from dataclasses import asdict, dataclass, field
from typing import Any, Mapping

from ofa_sdk.constants import RUNTIME_PACKAGES

__all__ = ["DeviceInfo", "detect_device", "normalize_arch", "match_score", "threads_text",
           "RUNTIME_PACKAGES", "ISA_FEATURES", "ClassMatch", "match_class", "CPUINFO_ENV",
           "usable_cores", "peak_rss_mb"]

#: Read this file instead of /proc/cpuinfo (to emulate another CPU, e.g. in tests).
CPUINFO_ENV = "OFA_SDK_CPUINFO"



def threads_text(n: int) -> str:
    """``"1 thread"``, ``"2 threads"``: how every table and message words a thread count."""
    return f"{n} thread{'' if n == 1 else 's'}"


# CPU features that change which kernels a runtime uses (and so its latency); others are noise.
# ARM's NEON dot-product instructions are "asimddp" in /proc/cpuinfo, int8 matmul is "i8mm".
ISA_FEATURES = _FEATURES = ("sse4_2", "avx", "avx2", "fma", "f16c", "avx512f", "avx512bw", "avx512_vnni",
             "avx_vnni", "amx_int8", "neon", "asimd", "asimdhp", "asimddp", "i8mm", "sve", "sve2",
             "bf16")
_ARCH_ALIASES = {"amd64": "x86_64", "x64": "x86_64", "x86-64": "x86_64", "i686": "x86",
                 "i386": "x86", "arm64": "aarch64", "armv8": "aarch64", "armv7l": "armv7",
                 "armhf": "armv7"}
# ARM "CPU part" ids (implementer 0x41) of common edge cores.
_ARM_PARTS = {"0xd03": "Cortex-A53", "0xd04": "Cortex-A35", "0xd05": "Cortex-A55",
              "0xd07": "Cortex-A57", "0xd08": "Cortex-A72", "0xd09": "Cortex-A73",
              "0xd0a": "Cortex-A75", "0xd0b": "Cortex-A76", "0xd0d": "Cortex-A77",
              "0xd41": "Cortex-A78", "0xd44": "Cortex-X1", "0xd46": "Cortex-A510",
              "0xd47": "Cortex-A710", "0xd4d": "Cortex-A715", "0xd0c": "Neoverse-N1",
              "0xd40": "Neoverse-V1", "0xd49": "Neoverse-N2"}


def normalize_arch(name: str) -> str:
    """``amd64``/``x64`` -> ``x86_64``, ``arm64`` -> ``aarch64``; other names lower-cased.

    >>> normalize_arch("AMD64"), normalize_arch("arm64")
    ('x86_64', 'aarch64')
    """
    low = name.strip().lower()
    return _ARCH_ALIASES.get(low, low)


@dataclass(frozen=True)
class DeviceInfo:
    """What this device is, as far as latency goes; `fingerprint` keys the measurement cache."""

    system: str                       # Linux, Darwin, Windows
    arch: str                         # normalized machine: x86_64, aarch64, armv7 ...
    cpu_model: str                    # "AMD EPYC 7B13", "Cortex-A53" ...
    cpu_features: tuple[str, ...]     # the latency-relevant subset of the CPU flags
    cores: int                        # CPUs this process may run on
    runtimes: Mapping[str, str] = field(default_factory=dict)  # runtime -> "package version"

    @property
    def fingerprint(self) -> str:
        """16 hex digits of sha256 over every field: a new runtime version is a new device."""
        blob = json.dumps(self._json_fields(), sort_keys=True).encode()
        return hashlib.sha256(blob).hexdigest()[:16]

    def _json_fields(self) -> dict[str, Any]:
        d = asdict(self)
        d["cpu_features"] = list(self.cpu_features)
        d["runtimes"] = dict(self.runtimes)
        return d

    def to_json(self) -> dict[str, Any]:
        return {**self._json_fields(), "fingerprint": self.fingerprint}

    @classmethod
    def from_json(cls, data: Mapping[str, Any]) -> DeviceInfo:
        return cls(system=str(data["system"]), arch=str(data["arch"]),
                   cpu_model=str(data["cpu_model"]),
                   cpu_features=tuple(str(f) for f in data.get("cpu_features", ())),
                   cores=int(data["cores"]), runtimes=dict(data.get("runtimes", {})))

    def __str__(self) -> str:
        rts = ", ".join(f"{k}={v}" for k, v in self.runtimes.items()) or "no runtime"
        return f"{self.cpu_model} ({self.arch}, {self.cores} cores; {rts})"


def _read_cpuinfo(path: str = "/proc/cpuinfo") -> dict[str, str]:
    """The first processor block of /proc/cpuinfo (plus machine-wide keys such as Hardware)."""
    out: dict[str, str] = {}
    try:
        with open(path, encoding="utf-8", errors="replace") as f:
            for line in f:
                key, sep, value = line.partition(":")
                if sep:
                    out.setdefault(key.strip().lower(), value.strip())
    except OSError:
        pass
    return out


def _cpu_model(info: Mapping[str, str], arch: str) -> str:
    for key in ("model name", "hardware", "cpu model", "processor"):
        value = info.get(key, "")
        if value and not value.isdigit():
            # x86 strings carry padding and clock speeds that vary within one model line
            return re.sub(r"\s+", " ", re.sub(r"@.*$", "", value)).strip()
    part = info.get("cpu part", "").lower()
    if part in _ARM_PARTS and info.get("cpu implementer", "").lower() == "0x41":
        return _ARM_PARTS[part]
    return platform.processor() or arch


def usable_cores() -> int:
    """The CPUs this process may run on (its affinity mask where the OS has one)."""
    return _cores()


def _cores() -> int:
    try:
        return len(os.sched_getaffinity(0))
    except (AttributeError, OSError):  # macOS, Windows
        return os.cpu_count() or 1


def peak_rss_mb() -> float | None:
    """Peak resident set size of this process in MB, or ``None`` where getrusage is missing."""
    try:
        import resource
    except ImportError:  # Windows
        return None
    rss = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    # Linux reports KiB, macOS bytes.
    return rss / (1024 * 1024) if sys.platform == "darwin" else rss / 1024


def _dist_version(dist: str, spec: Any) -> str | None:
    """Version of ``dist`` from its ``.dist-info`` folder next to the module (cheap), else from
    `importlib.metadata` (which costs ~50 ms to import, too much for a warm ``pick``)."""
    locations = list(spec.submodule_search_locations or []) or [os.path.dirname(spec.origin or "")]
    site = os.path.dirname(locations[0]) if locations and locations[0] else ""
    prefix = dist.replace("-", "_").lower() + "-"
    try:
        names = [n for n in os.listdir(site)
                 if n.lower().startswith(prefix) and n.endswith(".dist-info")] if site else []
    except OSError:
        names = []
    if len(names) == 1:
        return names[0][len(prefix):-len(".dist-info")]
    from importlib import metadata

    try:
        return metadata.version(dist)
    except metadata.PackageNotFoundError:
        return None


def _runtime_versions() -> dict[str, str]:
    found: dict[str, str] = {}
    for runtime, candidates in RUNTIME_PACKAGES.items():
        for module, dist in candidates:
            try:
                spec = importlib.util.find_spec(module)
            except (ImportError, ValueError):  # a broken install counts as absent
                spec = None
            if spec is None:
                continue
            version = _dist_version(dist, spec)
            found[runtime] = f"{dist} {version}" if version else dist
            break
    return found


@functools.lru_cache(maxsize=1)
def detect_device() -> DeviceInfo:
    """This device, read from /proc/cpuinfo, `platform` and the installed runtime packages.

    Cached for the process; call ``detect_device.cache_clear()`` after installing a runtime.
    ``$OFA_SDK_CPUINFO`` names a file to read instead of /proc/cpuinfo (emulating another CPU).

    >>> dev = detect_device()
    >>> len(dev.fingerprint)
    16
    """
    arch = normalize_arch(platform.machine() or "unknown")
    info = _read_cpuinfo(os.environ.get(CPUINFO_ENV) or "/proc/cpuinfo")
    flags = set((info.get("flags") or info.get("features") or "").lower().split())
    if arch == "aarch64":
        flags.add("neon")  # mandatory in ARMv8-A; /proc/cpuinfo calls it asimd
    features = tuple(f for f in _FEATURES if f in flags)
    return DeviceInfo(system=platform.system() or "unknown", arch=arch,
                      cpu_model=_cpu_model(info, arch), cpu_features=features, cores=_cores(),
                      runtimes=_runtime_versions())


def match_score(device: DeviceInfo, cpu: str) -> float:
    """How well a device class's ``cpu`` string (e.g. ``x86_64 AVX2``) describes ``device``.

    The first word is the architecture; each further word must be a CPU feature of the device or
    part of its model name. 0 means another architecture; 1 means every word matches; in between,
    the fraction of words that match (a nearby class, usable with calibration).

    >>> dev = DeviceInfo("Linux", "x86_64", "AMD EPYC", ("avx2", "fma"), 2)
    >>> [match_score(dev, cpu) for cpu in ("x86_64 AVX2", "x86_64 AVX512F", "aarch64")]
    [1.0, 0.5, 0.0]
    """
    words = cpu.split()
    if not words or normalize_arch(words[0]) != device.arch:
        return 0.0
    rest = [w.lower() for w in words[1:]]
    if not rest:
        return 1.0
    model = device.cpu_model.lower()
    hits = sum(1 for w in rest if w in device.cpu_features or w in model)
    return 0.5 + 0.5 * hits / len(rest)


@dataclass(frozen=True)
class ClassMatch:
    """How a zoo device class describes this device.

    ``kind``: ``exact`` (same CPU words and, where the class lists it, the same ISA),
    ``same-cpu-other-isa`` (same CPU words, other ISA features: its latencies are another
    machine's), ``closest`` (same architecture only) or ``other-arch``.
    ``missing``/``extra``: ISA features the class has and this device lacks / the reverse.
    """

    kind: str
    score: float
    missing: tuple[str, ...] = ()
    extra: tuple[str, ...] = ()

    def describe(self) -> str:
        if self.kind != "same-cpu-other-isa":
            return self.kind
        parts = ([f"lacks {' '.join(self.missing)}"] if self.missing else []) + \
            ([f"has {' '.join(self.extra)}"] if self.extra else [])
        return f"same CPU, other ISA: this device {', '.join(parts)}"


def match_class(device: DeviceInfo, cpu: str, isa: tuple[str, ...] | None) -> ClassMatch:
    """Match a device class (its ``cpu`` words and optional ``isa`` list) against ``device``.

    >>> dev = DeviceInfo("Linux", "x86_64", "AMD EPYC", ("avx2", "fma"), 2)
    >>> match_class(dev, "x86_64 AMD EPYC", ("avx2", "fma", "avx512f")).kind
    'same-cpu-other-isa'
    """
    score = match_score(device, cpu)
    if score == 0.0:
        return ClassMatch("other-arch", score)
    missing: tuple[str, ...] = ()
    extra: tuple[str, ...] = ()
    if isa is not None:
        have, want = set(device.cpu_features), {f.lower() for f in isa}
        missing = tuple(sorted(want - have))
        extra = tuple(sorted((have - want) & set(ISA_FEATURES)))
    if score < 1.0:
        return ClassMatch("closest", score, missing, extra)
    return ClassMatch("same-cpu-other-isa" if missing or extra else "exact", score, missing,
                      extra)
