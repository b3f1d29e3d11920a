"""Building a device's latency lookup table from probe models: the builder lives in
`ofa_sdk.lut_build` (``ofa-sdk search`` builds a device's LUT with it); this module re-exports it
for ``python -m ofa_sdk.device_bench``."""

from ofa_sdk.lut_build import (BenchSettings, BuildResult, build_lut, check_runtime,
                               interpolate_entries, partial_path, raw_path, recalibrate_lut)

__all__ = ["BenchSettings", "BuildResult", "build_lut", "recalibrate_lut", "partial_path",
           "raw_path", "check_runtime", "interpolate_entries"]
