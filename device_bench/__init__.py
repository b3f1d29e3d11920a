"""Building a device's latency lookup table from probe models; imports ofa_sdk only, never torch.

CLI: ``python -m ofa_sdk.device_bench lut`` (`ofa_sdk.device_bench.__main__`); API: `ofa_sdk.device_bench.lut.build_lut`.
"""
