"""Hooks, retained activations, gradient statistics, pictures, shape trace, saliency."""
from __future__ import annotations

import numpy as np
import pytest
from PIL import Image

import minicnn
from minicnn.viz import pictures, plots
from minicnn.layers import Conv2D, Dense, Dropout, Flatten, MaxPooling2D
from minicnn.models import Sequential
from minicnn.optimizers import SGD
from minicnn.utils import to_categorical

NAMES = [f"class{k}" for k in range(10)]


def small_model(input_shape=(8, 8, 3)):
    model = Sequential([Conv2D(6, 3, input_shape=input_shape, activation="relu"), MaxPooling2D(),
                        Dropout(0.3), Flatten(), Dense(16, activation="relu"),
                        Dense(10, activation="softmax")])
    model.compile(SGD(lr=0.1), "categorical_crossentropy", metrics=["accuracy"])
    return model


def batch(n=12, shape=(8, 8, 3)):
    rng = np.random.default_rng(0)
    return rng.random((n, *shape)).astype(minicnn.floatx()), to_categorical(np.arange(n) % 10, 10)


def test_hooks_fire_in_order_with_the_right_shapes_and_can_be_removed(backend):
    model = small_model()
    x, y = batch()
    calls = []
    handles = []
    for layer in model.layers:
        handles.append(layer.register_forward_hook(
            lambda l, a, b: calls.append(("forward", l.name, tuple(a.shape), tuple(b.shape)))))
        handles.append(layer.register_backward_hook(
            lambda l, go, gi: calls.append(("backward", l.name, tuple(go.shape),
                                            None if gi is None else tuple(gi.shape)))))
    model.fit(x, y, batch_size=12, epochs=1, verbose=0)
    names = [layer.name for layer in model.layers]
    assert [c[1] for c in calls if c[0] == "forward"] == names
    assert [c[1] for c in calls if c[0] == "backward"] == names[::-1]
    forward = {c[1]: c for c in calls if c[0] == "forward"}
    backward = {c[1]: c for c in calls if c[0] == "backward"}
    assert forward["conv2d_1"][2:] == ((12, 8, 8, 3), (12, 6, 6, 6))
    assert forward["dense_2"][3] == (12, 10)  # logits: the softmax is fused into the loss
    assert backward["max_pooling2d_1"][2:] == ((12, 3, 3, 6), (12, 6, 6, 6))
    assert backward["conv2d_1"][3] is None  # nobody needs dL/dimages
    for handle in handles:
        handle.remove()
    calls.clear()
    model.fit(x, y, batch_size=12, epochs=1, verbose=0)
    assert calls == []


def test_nothing_is_retained_unless_asked(backend):
    model = small_model()
    x, y = batch()
    model.fit(x, y, batch_size=6, epochs=1, verbose=0)
    assert all(layer.last_output is None and layer.last_grad_input is None for layer in model.layers)
    dense = model.layers[4]
    dense.retain = True
    model.fit(x, y, batch_size=6, epochs=1, verbose=0)
    assert dense.last_input.shape == (6, 54) and dense.last_output.shape == (6, 16)
    assert dense.last_grad_output.shape == (6, 16) and dense.last_grad_input.shape == (6, 54)
    out = minicnn.to_host(dense.last_output)
    assert (out >= 0).all()  # after its relu
    assert model.layers[3].last_output is None


def test_gradient_statistics_are_finite_and_change_over_training():
    minicnn.set_seed(1)
    model = small_model()
    x, y = batch(48)
    history = model.fit(x, y, batch_size=8, epochs=4, verbose=0, trace_gradients=3)
    rows = history.traces
    assert len(rows) == len(model.layers) * 8  # 24 steps, every 3rd traced
    conv = [r for r in rows if r["layer"] == "conv2d_1"]
    for key in ("act_mean", "act_std", "dead_relu", "grad_norm", "update_ratio"):
        values = np.array([r[key] for r in conv])
        assert np.isfinite(values).all(), key
        assert np.ptp(values) > 0 or key == "dead_relu", f"{key} never changed"
    assert all(0 <= r["dead_relu"] <= 1 for r in conv)
    ratio = conv[0]["update_ratio"]
    w = model.layers[0].params["kernel"]
    assert 1e-6 < ratio < 1, ratio
    assert np.isnan([r["grad_norm"] for r in rows if r["layer"] == "flatten_1"]).all()
    # 6 steps an epoch; global steps 0, 3, 6 are (epoch 1, step 1), (1, 4), (2, 1)
    assert [(r["epoch"], r["step"]) for r in conv][:3] == [(1, 1), (1, 4), (2, 1)]
    assert w.dtype == np.float32


def test_update_ratio_is_the_real_relative_change():
    model = Sequential([Dense(3, input_shape=(4,))])
    model.compile(SGD(lr=0.5), "mse")
    x = np.ones((2, 4), "float32")
    y = np.zeros((2, 3), "float32")
    before = model.layers[0].params["kernel"].copy()
    history = model.fit(x, y, batch_size=2, epochs=1, verbose=0, trace_gradients=1)
    after = model.layers[0].params["kernel"]
    expected = np.linalg.norm(after - before) / np.linalg.norm(before)
    assert history.traces[0]["update_ratio"] == pytest.approx(expected, rel=1e-5)


def png_size(path):
    assert path.stat().st_size > 0
    with Image.open(path) as image:
        assert image.format == "PNG"
        return image.size


def test_pictures_have_the_expected_pixel_sizes(tmp_path):
    model = small_model()
    x, y = batch()
    history = model.fit(x, y, batch_size=4, epochs=1, verbose=0, trace_gradients=1)
    pictures.filters(model.layers[0].params["kernel"], tmp_path / "f.png", columns=4, dpi=50)
    assert png_size(tmp_path / "f.png") == (round(4 * 0.8 * 50), round((2 * 0.8 + 0.4) * 50))
    pictures.feature_maps(model, "conv2d_1", x[0], tmp_path / "m.png", columns=3, dpi=50)
    assert png_size(tmp_path / "m.png") == (round(3 * 1.2 * 50), round((2 * 1.2 + 0.4) * 50))
    maps = pictures.saliency(model, x[:5], np.arange(5), NAMES, tmp_path / "s.png", dpi=50)
    assert png_size(tmp_path / "s.png") == (round(5 * 1.6 * 50), round(3.6 * 50))
    assert maps.shape == (5, 8, 8) and (maps >= 0).all() and maps.max() > 0
    images = (x * 255).astype(np.uint8)
    shown = pictures.misclassified(images, np.arange(12) % 10, np.zeros(12, int), NAMES,
                                    tmp_path / "w.png", max_images=6, columns=3, dpi=50)
    assert shown == 6  # 10 are wrong (labels 0 at indices 0 and 10 are right), 6 shown
    assert png_size(tmp_path / "w.png") == (round(3 * 1.4 * 50), round((2 * 1.6 + 0.4) * 50))
    plots.gradient_traces(history.traces, tmp_path / "g.png")
    assert png_size(tmp_path / "g.png")[0] > 500
    with pytest.raises(ValueError, match="not \\(H, W, C\\) feature maps"):
        pictures.feature_maps(model, "dense_1", x[0], tmp_path / "bad.png")


def test_feature_maps_by_negative_index_runs_the_layers_before(tmp_path, monkeypatch):
    model = Sequential([Conv2D(3, 3, input_shape=(8, 8, 2), name="c1"),
                        Conv2D(5, 3, name="c2")])
    shown = {}
    monkeypatch.setattr(pictures, "save_figure", lambda fig, path, **kw: shown.update(
        title=fig.get_suptitle(), images=[ax.images[0].get_array() for ax in fig.axes
                                                if ax.images]))
    x = np.random.default_rng(0).random((8, 8, 2), dtype=np.float32)
    pictures.feature_maps(model, -1, x, tmp_path / "m.png")
    assert shown["title"].startswith("c2: first 5 of 5 feature maps (4x4)")
    expected = model.predict(x[None])[0]
    np.testing.assert_allclose(np.asarray(shown["images"][4]), expected[:, :, 4], rtol=1e-6)
    for bad in (2, -3):
        with pytest.raises(ValueError, match=rf"feature_maps: layer index {bad} is out of range; "
                                             r"the model has 2 layers"):
            pictures.feature_maps(model, bad, x, tmp_path / "bad.png")


def test_input_gradient_matches_finite_differences():
    minicnn.set_floatx("float64")
    minicnn.set_seed(3)
    model = small_model(input_shape=(6, 6, 2))
    x = np.random.default_rng(4).random((2, 6, 6, 2))
    classes = np.array([3, 7])
    grad = minicnn.to_host(model.input_gradient(x, classes))

    def score(images, n):
        h = images
        for layer in model.layers[:-1]:
            h = layer.forward(h, training=False)
        return float(model.layers[-1].run_forward(h, activate=False)[n, classes[n]])

    rng = np.random.default_rng(5)
    for _ in range(12):
        n, i, j, c = (int(rng.integers(0, s)) for s in (2, 6, 6, 2))
        plus, minus = x.copy(), x.copy()
        plus[n, i, j, c] += 1e-6
        minus[n, i, j, c] -= 1e-6
        numeric = (score(plus, n) - score(minus, n)) / 2e-6
        assert grad[n, i, j, c] == pytest.approx(numeric, rel=1e-5, abs=1e-9)
    assert model.layers[0].input_grad is False  # switched back after use


def test_trace_shapes_prints_every_shape_and_changes_nothing(capsys):
    minicnn.set_seed(0)
    model = small_model()
    x, y = batch(4)
    rng_state = model.layers[2].rng.bit_generator.state
    weights = model.layers[0].params["kernel"].copy()
    rows = model.trace_shapes(x, y)
    text = capsys.readouterr().out
    assert "im2col product" in text and "(144, 27) @ (27, 6)" in text
    assert "not needed (first layer)" in text
    by_name = {r["layer"].split()[0]: r for r in rows}
    assert by_name["flatten_1"]["output"] == (4, 54) and by_name["flatten_1"]["grad_input"] == (4, 3, 3, 6)
    assert model.layers[2].rng.bit_generator.state == rng_state
    np.testing.assert_array_equal(model.layers[0].params["kernel"], weights)
    assert all(not layer._forward_hooks and not layer._backward_hooks for layer in model.layers)
    model.trace_shapes(x)  # without labels: backward from ones
    assert "dense_2 (Dense)" in capsys.readouterr().out


def test_plotting_leaves_the_users_matplotlib_backend_alone(tmp_path):
    """A notebook keeps its own backend (plt.show() still works) after minicnn draws."""
    import subprocess
    import sys
    script = f"""
import matplotlib
matplotlib.use("svg")
import numpy as np
from minicnn.viz import pictures, plots
plots.confusion_heatmap(np.eye(3, dtype=int), ["a", "b", "c"], {str(tmp_path / "c.png")!r})
pictures.filters(np.ones((3, 3, 1, 2), np.float32), {str(tmp_path / "f.png")!r})
print(matplotlib.get_backend())
"""
    out = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, check=True)
    assert out.stdout.strip() == "svg"
    assert (tmp_path / "c.png").stat().st_size > 0 and (tmp_path / "f.png").stat().st_size > 0
