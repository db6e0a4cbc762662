"""kretrain: continual training of Ultralytics YOLO detectors on Kubernetes."""

__version__ = "0.1.0"
