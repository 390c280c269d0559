"""README's table of the Keras 2 API, checked against the code.

Each row names a Keras 2.2.4 module and what minicnn has of it. A name in the
table must exist; "every argument" must hold against Keras 2.2.4's signatures,
written out here from its source; what the table says is refused must be
refused; and whatever minicnn has must be in the table.
"""
from __future__ import annotations

import importlib
import inspect
import re
from pathlib import Path

import numpy as np
import pytest

import minicnn
from minicnn import activations, callbacks, initializers, layers, losses, metrics, optimizers

README = Path(__file__).resolve().parents[1] / "README.md"

# Keras 2.2.4's constructor arguments (keras/layers/*.py, keras/optimizers.py,
# keras/callbacks.py, keras_preprocessing/image.py), the layer keywords aside.
KERAS_ARGUMENTS = {
    "Conv2D": "filters kernel_size strides padding data_format dilation_rate activation use_bias "
              "kernel_initializer bias_initializer kernel_regularizer bias_regularizer "
              "activity_regularizer kernel_constraint bias_constraint",
    "Dense": "units activation use_bias kernel_initializer bias_initializer kernel_regularizer "
             "bias_regularizer activity_regularizer kernel_constraint bias_constraint",
    "Activation": "activation",
    "Dropout": "rate noise_shape seed",
    "Flatten": "data_format",
    "Reshape": "target_shape",
    "MaxPooling2D": "pool_size strides padding data_format",
    "AveragePooling2D": "pool_size strides padding data_format",
    "GlobalAveragePooling2D": "data_format",
    "GlobalMaxPooling2D": "data_format",
    "ZeroPadding2D": "padding data_format",
    "Cropping2D": "cropping data_format",
    "BatchNormalization": "axis momentum epsilon center scale beta_initializer gamma_initializer "
                          "moving_mean_initializer moving_variance_initializer beta_regularizer "
                          "gamma_regularizer beta_constraint gamma_constraint",
    "LeakyReLU": "alpha",
    "ELU": "alpha",
    "PReLU": "alpha_initializer alpha_regularizer alpha_constraint shared_axes",
    "Rescaling": "scale offset",  # tf.keras's
    "SGD": "lr momentum decay nesterov",
    "RMSprop": "lr rho epsilon decay",
    "Adagrad": "lr epsilon decay",
    "Adadelta": "lr rho epsilon decay",
    "Adam": "lr beta_1 beta_2 epsilon decay amsgrad",
    "Adamax": "lr beta_1 beta_2 epsilon decay",
    "Nadam": "lr beta_1 beta_2 epsilon schedule_decay",
    "L1L2": "l1 l2",
    "l1": "l",
    "l2": "l",
    "l1_l2": "l1 l2",
    "Callback": "",
    "History": "",
    "BaseLogger": "stateful_metrics",
    "ProgbarLogger": "count_mode stateful_metrics",
    "EarlyStopping": "monitor min_delta patience verbose mode baseline restore_best_weights",
    "ModelCheckpoint": "filepath monitor verbose save_best_only save_weights_only mode period",
    "LearningRateScheduler": "schedule verbose",
    "ReduceLROnPlateau": "monitor factor patience verbose mode min_delta cooldown min_lr",
    "CSVLogger": "filename separator append",
    "TerminateOnNaN": "",
    "BackupAndRestore": "backup_dir",  # tf.keras's
    # tf.keras's Optimizer(use_ema, ema_momentum, ema_overwrite_frequency), as a callback
    "ExponentialMovingAverage": "momentum update_frequency overwrite_frequency "
                                "include_non_trainable",
    "LambdaCallback": "on_epoch_begin on_epoch_end on_batch_begin on_batch_end on_train_begin "
                      "on_train_end",
    "TensorBoard": "log_dir histogram_freq batch_size write_graph write_grads write_images "
                   "embeddings_freq embeddings_layer_names embeddings_metadata embeddings_data "
                   "update_freq",
    "ImageDataGenerator": "featurewise_center samplewise_center featurewise_std_normalization "
                          "samplewise_std_normalization zca_whitening zca_epsilon rotation_range "
                          "width_shift_range height_shift_range brightness_range shear_range "
                          "zoom_range channel_shift_range fill_mode cval horizontal_flip "
                          "vertical_flip rescale preprocessing_function data_format "
                          "validation_split dtype",
    "to_categorical": "y num_classes dtype",
    "Sequence": "",
}
OPTIMIZER_KEYWORDS = ("clipnorm", "clipvalue")  # Keras's **kwargs of every optimizer
# Keras 2.2.4's Sequential methods and their arguments.
KERAS_METHODS = {
    "compile": "optimizer loss metrics",
    "fit": "x y batch_size epochs verbose callbacks validation_split validation_data shuffle "
           "class_weight sample_weight initial_epoch steps_per_epoch validation_steps",
    "evaluate": "x y batch_size verbose sample_weight",
    "predict": "x batch_size verbose",
    "fit_generator": "generator steps_per_epoch epochs verbose callbacks validation_data "
                     "validation_steps class_weight max_queue_size workers use_multiprocessing "
                     "shuffle initial_epoch",
    "evaluate_generator": "generator steps max_queue_size workers use_multiprocessing verbose",
    "predict_generator": "generator steps max_queue_size workers use_multiprocessing verbose",
    "train_on_batch": "x y sample_weight class_weight",
    "test_on_batch": "x y sample_weight",
    "predict_on_batch": "x",
    "predict_classes": "x batch_size verbose",
    "predict_proba": "x batch_size verbose",
    "get_layer": "name index",
    "save": "filepath overwrite include_optimizer",
    "save_weights": "filepath",
    "load_weights": "filepath",
}
MODULES = {"layers": layers, "optimizers": optimizers, "losses": losses, "metrics": metrics,
           "regularizers": minicnn.regularizers, "initializers": initializers,
           "activations": activations, "callbacks": callbacks,
           "preprocessing.image": importlib.import_module("minicnn.preprocessing.image"),
           "utils": minicnn.utils, "models": minicnn.models}


def table() -> dict[str, tuple[list[str], str]]:
    """{Keras module: (the names of the middle column, the arguments column)}."""
    text = README.read_text()
    section = text[text.index("## The Keras 2 API"):]
    rows = {}
    for line in section.splitlines():
        cells = [c.strip() for c in line.strip().strip("|").split("|")]
        if len(cells) == 3 and cells[0].startswith("`"):
            rows[cells[0].strip("`")] = (re.findall(r"`([A-Za-z_0-9]+)`", cells[1]), cells[2])
    return rows


def argument_names(function) -> set[str]:
    return {p.name for p in inspect.signature(function).parameters.values()
            if p.kind not in (p.VAR_POSITIONAL, p.VAR_KEYWORD)}


def test_the_table_has_a_row_for_every_module():
    assert set(table()) == set(MODULES)


@pytest.mark.parametrize("module", sorted(MODULES))
def test_every_name_in_the_table_exists(module):
    names, _ = table()[module]
    assert names
    for name in names:
        if module == "losses":
            assert name in losses.LOSSES, f"losses: no {name!r}"
        elif module == "metrics":
            metrics.get(name, losses.get("categorical_crossentropy"))
        elif module == "initializers":
            assert name in initializers.INITIALIZERS, f"initializers: no {name!r}"
        elif module == "activations":
            activations.get(name)
        else:
            assert hasattr(MODULES[module], name), f"minicnn.{module} has no {name}"


@pytest.mark.parametrize("module", ["layers", "optimizers", "regularizers", "callbacks",
                                    "preprocessing.image", "utils"])
def test_every_argument_means_the_whole_keras_signature(module):
    names, arguments = table()[module]
    assert arguments.startswith("every argument")
    for name in names:
        ours = argument_names(getattr(MODULES[module], name))
        keras = set(KERAS_ARGUMENTS[name].split())
        if module == "optimizers":
            keras |= set(OPTIMIZER_KEYWORDS)
        assert keras <= ours, f"{name} lacks Keras's {sorted(keras - ours)}"


def test_the_model_methods_take_keras_arguments():
    names, methods_cell = table()["models"]
    methods = re.findall(r"`([a-z_]+)`", methods_cell)
    for method in methods:
        assert hasattr(minicnn.models.Sequential, method), f"Sequential has no {method}"
    for method, arguments in KERAS_METHODS.items():
        assert method in methods
        ours = argument_names(getattr(minicnn.models.Sequential, method))
        missing = set(arguments.split()) - ours - {"filepath"}
        assert not missing, f"Sequential.{method} lacks Keras's {sorted(missing)}"


REFUSED = [
    (lambda: layers.Conv2D(2, 3, data_format="channels_first"), "channels_first"),
    (lambda: layers.Dense(2, kernel_constraint="max_norm"), "kernel_constraint"),
    (lambda: layers.Conv2D(2, 3, bias_constraint="non_neg"), "bias_constraint"),
    (lambda: layers.BatchNormalization(gamma_constraint="non_neg"), "gamma_constraint"),
    (lambda: layers.PReLU(alpha_constraint="non_neg"), "alpha_constraint"),
    (lambda: layers.Dropout(0.5, noise_shape=(None, 1)), "noise_shape"),
    (lambda: callbacks.TensorBoard(embeddings_freq=1), "embeddings"),
    (lambda: MODULES["preprocessing.image"].ImageDataGenerator(data_format="channels_first"),
     "channels_first"),
]


@pytest.mark.parametrize("make, word", REFUSED)
def test_what_the_table_calls_refused_is_refused(make, word):
    try:
        make()
    except ImportError:  # TensorBoard without its optional package
        pytest.skip("tensorboardX is not installed")
    except (ValueError, TypeError) as error:
        assert word in str(error)
    else:
        pytest.fail(f"accepted: {word}")


def test_everything_minicnn_has_is_in_the_table():
    rows = table()
    layer_classes = {n for n in layers.__all__ if n != "Layer"}
    assert layer_classes <= set(rows["layers"][0])
    optimizer_classes = {n for n, c in vars(optimizers).items() if inspect.isclass(c)
                         and issubclass(c, optimizers.Optimizer) and c is not optimizers.Optimizer}
    assert optimizer_classes <= set(rows["optimizers"][0])
    callback_classes = {n for n, c in vars(callbacks).items() if inspect.isclass(c)
                        and issubclass(c, callbacks.Callback) and not n.startswith("_")}
    assert callback_classes <= set(rows["callbacks"][0])
    # Each loss under one of its names (the others are aliases).
    listed = {type(losses.get(name)) for name in rows["losses"][0]}
    assert {type(losses.get(name)) for name in losses.LOSSES} <= listed
    listed_metrics = set(rows["metrics"][0]) | set(rows["losses"][0]) | {"acc"}
    for name in metrics.METRICS:
        if name not in listed_metrics:
            assert type(losses.get(name)) in listed or name in {"accuracy", "acc"}, name
    assert set(activations.ACTIVATIONS) <= set(rows["activations"][0])
    # Keras's short names ("one", "normal") are aliases of listed initializers.
    listed_initializers = {repr(initializers.get(n)) for n in rows["initializers"][0]}
    for name, initializer in initializers.INITIALIZERS.items():
        assert repr(initializer) in listed_initializers, name


def test_a_regularizer_is_in_the_reported_loss():
    """One of the table's claims that is about behaviour, not names."""
    model = minicnn.models.Sequential([layers.Dense(2, input_shape=(3,), use_bias=False,
                                                    kernel_regularizer="l2")])
    model.compile(optimizer="sgd", loss="mse")
    x, y = np.ones((4, 3), "float32"), np.zeros((4, 2), "float32")
    kernel = model.get_weights()[0]
    plain = float(((x @ kernel) ** 2).mean())
    assert np.isclose(model.evaluate(x, y), plain + 0.01 * (kernel ** 2).sum(), rtol=1e-5)
