"""examples/keras2_cnn.py: a Keras 2 CNN that runs after renaming its imports.

It uses BatchNormalization, Adam, an L2 regularizer, ImageDataGenerator,
EarlyStopping and ModelCheckpoint. One test reads the script and checks that
below its imports it never names minicnn, and that every name it imports is a
Keras 2.2.4 name in the same module; the other runs it on a tiny dataset.
"""
from __future__ import annotations

import ast
import os
import re
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

from test_example_cifar10 import write_fake_cifar

ROOT = Path(__file__).resolve().parents[1]
SCRIPT = ROOT / "examples" / "keras2_cnn.py"

# The public names of Keras 2.2.4's modules that the script imports from.
KERAS_224 = {
    "keras": {"regularizers", "layers", "models", "optimizers", "callbacks", "utils"},
    "keras.callbacks": {"Callback", "BaseLogger", "TerminateOnNaN", "ProgbarLogger", "History",
                        "ModelCheckpoint", "EarlyStopping", "RemoteMonitor",
                        "LearningRateScheduler", "TensorBoard", "ReduceLROnPlateau",
                        "CSVLogger", "LambdaCallback"},
    "keras.datasets": {"cifar10", "cifar100", "mnist", "fashion_mnist", "imdb", "reuters",
                       "boston_housing"},
    "keras.layers": {"Activation", "BatchNormalization", "Conv2D", "Dense", "Dropout", "Flatten",
                     "MaxPooling2D", "AveragePooling2D", "GlobalAveragePooling2D",
                     "GlobalMaxPooling2D", "ZeroPadding2D", "Cropping2D", "Reshape", "LeakyReLU",
                     "ELU", "PReLU"},
    "keras.models": {"Sequential", "Model", "load_model", "model_from_json", "save_model"},
    "keras.optimizers": {"SGD", "RMSprop", "Adagrad", "Adadelta", "Adam", "Adamax", "Nadam"},
    "keras.preprocessing.image": {"ImageDataGenerator", "NumpyArrayIterator", "Iterator"},
    "keras.utils": {"to_categorical", "Sequence", "plot_model"},
}


def test_only_the_imports_name_minicnn_and_they_are_keras_names():
    source = SCRIPT.read_text()
    tree = ast.parse(source)
    import_lines = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.ImportFrom) and node.module.split(".")[0] == "minicnn":
            keras_module = "keras" + node.module[len("minicnn"):]
            assert keras_module in KERAS_224, f"Keras 2.2.4 has no module {keras_module}"
            for alias in node.names:
                assert alias.name in KERAS_224[keras_module], \
                    f"Keras 2.2.4's {keras_module} has no {alias.name}"
            import_lines.update(range(node.lineno, node.end_lineno + 1))
        elif isinstance(node, ast.Import):
            assert not any(a.name.startswith("minicnn") for a in node.names), \
                "import minicnn as a module of its own: Keras code imports names from keras.*"
            import_lines.update(range(node.lineno, node.end_lineno + 1))
    docstring_end = tree.body[0].end_lineno  # the module docstring may name minicnn
    for number, line in enumerate(source.splitlines(), start=1):
        if number > docstring_end and number not in import_lines:
            assert "minicnn" not in line.lower(), f"line {number} names minicnn: {line!r}"


@pytest.fixture(scope="module")
def run(tmp_path_factory):
    root = tmp_path_factory.mktemp("keras2")
    data = write_fake_cifar(root / "data", per_batch=16)
    out = root / "out"
    env = dict(os.environ, MPLBACKEND="Agg", PYTHONPATH=str(ROOT), MINICNN_CIFAR10=str(data))
    result = subprocess.run(
        [sys.executable, str(SCRIPT), "--epochs", "3", "--batch-size", "16",
         "--patience", "1", "--out", str(out)],
        capture_output=True, text=True, env=env, timeout=600, cwd=root)
    assert result.returncode == 0, result.stderr[-3000:]
    return result, out, data


def test_it_trains_checkpoints_and_reports_the_best_model(run):
    result, out, data = run
    printed = result.stdout
    assert "80 train samples, 16 test samples" in printed
    assert "Epoch 1/3" in printed
    accuracy = float(re.search(r"Test accuracy: ([0-9.]+)", printed).group(1))
    loss = float(re.search(r"Test loss: ([0-9.]+)", printed).group(1))

    # The printed numbers are those of the best model file, evaluated here.
    from minicnn.datasets import cifar10
    from minicnn.models import load_model
    from minicnn.utils import to_categorical

    model = load_model(out / "best_model.npz")
    (_, _), (x_test, y_test) = cifar10.load_data(str(data), verbose=False)
    got_loss, got_accuracy = model.evaluate(x_test.astype("float32") / 255,
                                            to_categorical(y_test, 10))
    assert np.isclose(got_loss, loss, rtol=1e-4)
    assert np.isclose(got_accuracy, accuracy, atol=1e-6)
    assert [layer.kind for layer in model.layers].count("BatchNormalization") == 6
    assert type(model.optimizer).__name__ == "Adam"
    assert model.get_layer(index=0).get_config()["kernel_regularizer"]["config"]["l2"] > 0
