"""Deploy and measure: ONNX/TorchScript export, int8 quantisation and honest latency benchmarks."""
