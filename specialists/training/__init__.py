"""Training, export and evaluation of specialists (needs the ``train`` extra: sklearn, onnx, matplotlib).

Never imported by the serving runtime.
"""
