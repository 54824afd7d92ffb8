"""fusionray: distributed face-swap video rendering on Ray, ONNX Runtime and PyAV."""

__version__ = "0.1.0"
