"""Run onnx2tf on one ONNX file, in its own process: ``python -m edgeseg.model.onnx2tf_child
SRC.onnx OUT_DIR``.

A child because onnx2tf changes process state a library must not (its working folder, global
random seeds, TensorFlow's logging, a module named ``tf_keras``) and takes minutes; a crash in
it is a return code, not a dead ``edgeseg``. What it does, each for a trap seen:

- it works in a temporary folder on a copy of the file (onnx2tf rewrites its input in place);
- it writes the sample images onnx2tf 1.x otherwise downloads for an RGB model into that
  folder (seeded noise: onnx2tf only runs them through the model, never checks them);
- when the ``tf_keras`` module is not installed (its ``tf-keras`` distribution declares the
  full ``tensorflow`` one, which would install beside ``tensorflow-cpu``), it gives onnx2tf
  the Keras 2 that TensorFlow itself bundles (``tensorflow.python.keras``) under that name;
  ``EDGESEG_ONNX2TF_KERAS=bundled`` asks for it even when tf_keras is there (tests).

It writes the SavedModel into ``OUT_DIR`` and deletes the .tflite files onnx2tf writes beside
it (edgeseg converts the SavedModel with its own recipes). Exit 0 and the last line ``ok`` on
success; otherwise the error on stderr.
"""

from __future__ import annotations

import os
import shutil
import sys
import tempfile
import types
from pathlib import Path

# onnx2tf's sample file name for an RGB model (utils/common_functions.download_test_image_data)
SAMPLE_NAME = "calibration_image_sample_data_20x128x128x3_float32.npy"
KERAS_ENV = "EDGESEG_ONNX2TF_KERAS"


def bundled_tf_keras() -> types.ModuleType:
    """A ``tf_keras`` module over TensorFlow's bundled Keras 2, with what onnx2tf 1.28 uses."""
    import tensorflow as tf
    from tensorflow.python import keras as bundled
    from tensorflow.python.keras import activations, backend, initializers, layers
    from tensorflow.python.keras.engine.input_layer import Input
    from tensorflow.python.keras.engine.training import Model

    module = types.ModuleType("tf_keras")
    module.__dict__.update(
        Model=Model,
        Input=Input,
        layers=layers,
        backend=backend,
        initializers=initializers,
        activations=activations,
        # onnx2tf seeds Keras at import; TensorFlow's own seed is what Keras 2 reads.
        utils=types.SimpleNamespace(set_random_seed=tf.random.set_seed),
        __version__=f"bundled-{getattr(bundled, '__version__', tf.__version__)}",
    )
    return module


def main(argv: list[str]) -> int:
    src, out = Path(argv[0]).resolve(), Path(argv[1]).resolve()
    os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
    want_bundled = os.environ.get(KERAS_ENV) == "bundled"
    try:
        if want_bundled:
            raise ImportError
        import tf_keras  # noqa: F401
    except ImportError:
        sys.modules["tf_keras"] = bundled_tf_keras()
    import numpy as np

    with tempfile.TemporaryDirectory(prefix="edgeseg-onnx2tf-") as tmp:
        work = Path(tmp)
        model = work / "model.onnx"
        shutil.copyfile(src, model)
        rng = np.random.default_rng(0)
        np.save(work / SAMPLE_NAME, rng.random((20, 128, 128, 3), dtype=np.float32))
        os.chdir(work)
        import onnx2tf

        onnx2tf.convert(
            input_onnx_file_path=str(model),
            output_folder_path=str(out),
            non_verbose=True,
            not_use_onnxsim=True,  # edgeseg has run onnxsim through its Python API
        )
    for f in out.glob("*.tflite"):
        f.unlink()
    if not (out / "saved_model.pb").is_file():
        print("onnx2tf wrote no SavedModel", file=sys.stderr)
        return 1
    print(f"keras: {sys.modules['tf_keras'].__version__}")
    print("ok")
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
