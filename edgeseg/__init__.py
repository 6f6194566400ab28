"""edgeseg: take a trained U-Net segmentation model to edge devices.

Importing the package is light: TensorFlow, Keras, LiteRT and OpenCV are imported inside
the functions that need them.
"""

__version__ = "0.1.0"
