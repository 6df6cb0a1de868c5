"""On the vehicle: ONNX export with its check in ONNX Runtime, and the torch-free vehicle-side certifier."""
