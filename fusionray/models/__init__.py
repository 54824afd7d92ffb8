"""Model catalogue, download + verification, and the ONNX Runtime session factory.

`session.py` is the only module in fusionray that imports onnxruntime.
"""
