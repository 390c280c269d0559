"""Custom layers the Keras way: README's example runs as written, such a layer works
everywhere a built-in one does, and the usual mistakes get errors naming the layer."""
from __future__ import annotations

import contextlib
import io
import re
from pathlib import Path

import numpy as np
import pytest

import minicnn
from minicnn.gradcheck import check_layer, check_model
from minicnn.layers import Conv2D, Dense, Flatten, Layer, MaxPooling2D
from minicnn.models import Sequential
from minicnn.utils import to_categorical

README = Path(__file__).resolve().parents[1] / "README.md"


def readme_example() -> str:
    section = README.read_text().split("## Your own layer", 1)[1]
    return re.search(r"```python\n(.*?)```", section, re.S).group(1)


@pytest.fixture
def custom(tmp_path, monkeypatch):
    """README's classes (and everything its example made), run in a temporary folder."""
    monkeypatch.chdir(tmp_path)
    namespace: dict = {}
    printed = io.StringIO()
    with contextlib.redirect_stdout(printed):
        exec(compile(readme_example(), "README.md custom layer", "exec"), namespace)
    namespace["printed"] = printed.getvalue()
    return namespace


def test_readme_example_runs_as_written(custom, tmp_path):
    assert custom["printed"].splitlines()[0] == "True True"  # both gradient checks pass
    assert re.search(r"scale_1 \(Scale\)\s+\(None, 6, 6, 8\)\s+16", custom["printed"])
    assert re.search(r"global_average_1 \(GlobalAverage\)\s+\(None, 8\)\s+0", custom["printed"])
    assert (tmp_path / "custom.npz").is_file()


def model_with(custom, **compile_args) -> Sequential:
    model = Sequential([Conv2D(4, 3, activation="relu", input_shape=(6, 6, 2)), custom["Scale"](),
                        custom["GlobalAverage"](), Dense(3, activation="softmax")])
    model.compile(**{"optimizer": "sgd", "loss": "categorical_crossentropy",
                     "metrics": ["accuracy"], **compile_args})
    return model


def data(n=12, seed=0):
    rng = np.random.default_rng(seed)
    return rng.random((n, 6, 6, 2), dtype=np.float32), to_categorical(np.arange(n) % 3, 3)


def test_a_custom_layer_trains_evaluates_predicts_and_round_trips_its_weights(custom, backend,
                                                                              tmp_path):
    x, y = data()
    model = model_with(custom)
    scale = model.layers[1]
    gamma_before = minicnn.to_host(scale.params["gamma"]).copy()
    history = model.fit(x, y, batch_size=4, epochs=2, verbose=0, validation_data=(x, y))
    assert len(history.history["val_acc"]) == 2
    assert not np.allclose(minicnn.to_host(scale.params["gamma"]), gamma_before)  # it learns
    loss, acc = model.evaluate(x, y)
    assert np.isfinite(loss) and 0 <= acc <= 1
    assert model.predict(x).shape == (12, 3)
    model.save_weights(tmp_path / "w.npz")
    other = model_with(custom)
    other.load_weights(tmp_path / "w.npz")
    np.testing.assert_allclose(other.predict(x), model.predict(x), rtol=1e-6, atol=1e-7)


def test_a_custom_layer_resumes_from_a_checkpoint(custom, tmp_path):
    x, y = data()
    path = tmp_path / "run.npz"
    minicnn.set_seed(3)
    straight = model_with(custom)
    straight.fit(x, y, batch_size=4, epochs=2, verbose=0, shuffle=False)
    minicnn.set_seed(3)
    first = model_with(custom)
    first.fit(x, y, batch_size=4, epochs=1, verbose=0, shuffle=False, checkpoint=path)
    minicnn.set_seed(99)  # other initial weights: the checkpoint must replace them
    resumed = model_with(custom)
    resumed.fit(x, y, batch_size=4, epochs=2, verbose=0, shuffle=False, checkpoint=path,
                resume=True)
    for a, b in zip(straight.layers, resumed.layers):
        for name in a.params:
            np.testing.assert_allclose(minicnn.to_host(b.params[name]),
                                       minicnn.to_host(a.params[name]), rtol=1e-5, atol=1e-7)


def test_hooks_and_retain_see_a_custom_layer(custom):
    x, y = data(4)
    model = model_with(custom)
    scale = model.layers[1]
    seen = []
    handle = scale.register_forward_hook(lambda layer, a, b: seen.append((a.shape, b.shape)))
    scale.register_backward_hook(lambda layer, g_out, g_in: seen.append((g_out.shape, g_in.shape)))
    scale.retain = True
    model.train_on_batch(x, y)
    assert seen == [((4, 4, 4, 4), (4, 4, 4, 4))] * 2
    assert scale.last_input.shape == scale.last_grad_input.shape == (4, 4, 4, 4)
    handle.remove()


def test_gradient_checks_of_a_model_with_custom_layers(custom):
    minicnn.set_floatx("float64")
    model = model_with(custom)
    x, y = data(3)
    result = check_model(model, x.astype(np.float64), y, max_entries=10)
    assert result.passed, str(result)


def test_check_layer_catches_a_wrong_custom_backward(custom):
    class WrongScale(custom["Scale"]):
        def backward(self, dy):
            dx = super().backward(dy)
            self.grads["gamma"] = self.grads["gamma"] * 1.01  # 1% off
            return dx
    minicnn.set_floatx("float64")
    x = np.random.default_rng(0).standard_normal((2, 3, 3, 2))
    assert check_layer(custom["Scale"](), x).passed
    assert not check_layer(WrongScale(), x).passed


# ---------------------------------------------------------------- the usual mistakes
class Doubler(Layer):
    """y = 2x, with a weight w that does nothing, so the tests can break its gradient."""

    def build(self, input_shape):
        self.add_weight(name="w", shape=(input_shape[-1],), initializer="zeros")
        super().build(input_shape)

    def forward(self, x, training=False):
        return 2 * x + 0 * self.params["w"]

    def backward(self, dy):
        self.grads["w"] = (0 * dy).sum(axis=0)
        return 2 * dy


def tiny(layer: Layer) -> Sequential:
    model = Sequential([Dense(3, input_shape=(4,)), layer, Dense(2, activation="softmax")])
    model.compile(optimizer="sgd", loss="categorical_crossentropy")
    return model


def step(model: Sequential) -> None:
    x = np.random.default_rng(0).random((5, 4), dtype=np.float32)
    model.train_on_batch(x, to_categorical([0, 1, 0, 1, 0], 2))


def test_the_correct_doubler_trains():
    model = tiny(Doubler(name="double"))
    step(model)
    assert model.layers[1].grads["w"].shape == (3,)


def test_a_forgotten_gradient_names_the_layer_and_the_weight():
    class Forgets(Doubler):
        def backward(self, dy):
            return 2 * dy
    model = tiny(Forgets(name="forgetful"))
    with pytest.raises(ValueError, match=r"Forgets 'forgetful': backward left grads\['w'\] unset"):
        step(model)
    assert model.optimizer.iterations == 0  # no update happened


def test_a_gradient_of_the_wrong_shape_names_the_layer():
    class WrongGradShape(Doubler):
        def backward(self, dy):
            self.grads["w"] = dy.sum()
            return 2 * dy
    with pytest.raises(ValueError, match=r"WrongGradShape 'odd': grads\['w'\] has shape \(\), "
                                         r"but the weight has \(3,\)"):
        step(tiny(WrongGradShape(name="odd")))


def test_a_dx_of_the_wrong_shape_names_this_layer_not_the_one_below():
    class WrongDx(Doubler):
        def backward(self, dy):
            super().backward(dy)
            return dy[:, :2]
    with pytest.raises(ValueError, match=r"WrongDx 'culprit': backward returned dx of shape "
                                         r"\(5, 2\) for an input of shape \(5, 3\)"):
        step(tiny(WrongDx(name="culprit")))


def test_a_backward_that_returns_nothing_names_the_layer():
    class NoDx(Doubler):
        def backward(self, dy):
            super().backward(dy)
    with pytest.raises(ValueError, match=r"NoDx 'no_dx_1': backward returned None; it must return "
                                         r"dL/dx, an array of x's shape \(5, 3\)"):
        step(tiny(NoDx()))


def test_an_output_shape_that_disagrees_with_compute_output_shape_names_the_layer():
    class Halves(Layer):  # changes the shape but does not say so
        def forward(self, x, training=False):
            return x[:, :2]

        def backward(self, dy):
            return dy
    with pytest.raises(ValueError, match=r"Halves 'half': forward returned shape \(5, 2\) for an "
                                         r"input of shape \(5, 3\), but compute_output_shape gives "
                                         r"\(None, 3\)"):
        step(tiny(Halves(name="half")))


def test_a_build_that_forgets_super_build_still_builds():
    class NoSuper(Doubler):
        def build(self, input_shape):
            self.add_weight(name="w", shape=(input_shape[-1],), initializer="zeros")
    model = tiny(NoSuper())
    assert model.layers[1].built and model.layers[1].output_shape == (None, 3)
    step(model)


def test_non_trainable_weights_of_a_custom_layer_stay_put_and_are_counted():
    class Frozen(Doubler):
        def build(self, input_shape):
            self.add_weight(name="w", shape=(input_shape[-1],), initializer="ones",
                            trainable=False)
            Layer.build(self, input_shape)  # not Doubler's, which would add w again

        def backward(self, dy):
            self.grads["w"] = dy.sum(axis=0)  # a real gradient, which must not be applied
            return 2 * dy
    model = tiny(Frozen())
    step(model)
    np.testing.assert_array_equal(minicnn.to_host(model.layers[1].params["w"]), np.ones(3))
    lines = []
    model.summary(print_fn=lines.append)
    assert "Total params: 26" in lines and "Trainable params: 23" in lines
    assert "Non-trainable params: 3" in lines


def test_custom_layers_run_on_every_backend(custom, backend):
    x, y = data(4)
    model = Sequential([Conv2D(4, 3, input_shape=(6, 6, 2)), MaxPooling2D(), custom["Scale"](),
                        Flatten(), Dense(3, activation="softmax")])
    model.compile(optimizer="sgd", loss="categorical_crossentropy", metrics=["accuracy"])
    loss, acc = model.train_on_batch(x, y)
    assert np.isfinite(loss)
