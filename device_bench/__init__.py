"""Building a device's latency lookup table from probe models; imports ofa_sdk only, never torch.

CLI: ``python -m device_bench lut`` (`device_bench.__main__`); API: `device_bench.lut.build_lut`.
"""
