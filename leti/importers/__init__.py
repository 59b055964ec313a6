"""Outside model formats -> LayerGraph IR: .tflite, ONNX, Keras files and torch modules (through ONNX export).

``read_model(path)`` picks the reader by file suffix. Unsupported ops raise a ``LetiError`` naming the op and node.
"""
