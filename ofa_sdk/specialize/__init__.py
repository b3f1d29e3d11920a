"""On-device specialization (``ofa-sdk search``), numpy only: the zoo's search kit (`kit`), the
accuracy predictor (`predictor`), the evolutionary search (`evolution`, `genome`; training runs
the same code), the subnet's weights sliced from the supernet (`subnet`), its forward pass and BN
recalibration (`forward`), the ONNX writer (`onnx_writer`), the content-addressed model cache
(`materialize`) and the `search` that ties them together (`ondevice`)."""
