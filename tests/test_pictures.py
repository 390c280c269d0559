"""What the pictures show: whole-epoch ticks, traces at the real step numbers,
colour bars, and titles that name the image and the class score."""
from __future__ import annotations

import numpy as np
import pandas as pd
import pytest

import minicnn
from minicnn.layers import Conv2D, Dense, Flatten
from minicnn.models import Sequential
from minicnn.optimizers import SGD
from minicnn.utils import to_categorical
from minicnn.viz import pictures, plots

NAMES = [f"class{k}" for k in range(10)]


@pytest.fixture
def drawn(monkeypatch):
    """The figures the plotting functions would save, kept instead of written."""
    figures = []
    for module in (plots, pictures):
        monkeypatch.setattr(module, "save_figure", lambda fig, path, **kw: figures.append(fig))
    return figures


def tiny_model():
    model = Sequential([Conv2D(4, 3, input_shape=(6, 6, 3), activation="relu"), Flatten(),
                        Dense(10, activation="softmax")])
    model.compile(SGD(lr=0.1), "categorical_crossentropy", metrics=["accuracy"])
    return model


def tiny_data(n=48):
    rng = np.random.default_rng(0)
    return (rng.random((n, 6, 6, 3)).astype(minicnn.floatx()),
            to_categorical(np.arange(n) % 10, 10))


@pytest.mark.parametrize("epochs", [1, 2, 7, 25])
def test_learning_curve_ticks_are_whole_epochs(drawn, tmp_path, epochs):
    history = {"acc": list(np.linspace(0.1, 0.5, epochs)), "val_acc": [0.2] * epochs}
    plots.learning_curve(history, "acc", tmp_path / "a.png")
    fig = drawn[-1]
    fig.canvas.draw()
    ax = fig.axes[0]
    low, high = ax.get_xlim()
    ticks = [t for t in ax.get_xticks() if low <= t <= high]
    assert ticks and all(float(t).is_integer() and 1 <= t <= epochs for t in ticks)
    labels = [label.get_text() for label in ax.get_xticklabels() if label.get_text()]
    assert labels and all(text.lstrip("\N{MINUS SIGN}-").isdigit() for text in labels), labels
    assert ax.get_legend() is not None


def traced_rows(epochs, tmp_path):
    """history.traces of a small run, through the CSV the example writes."""
    minicnn.set_seed(2)
    x, y = tiny_data()
    history = tiny_model().fit(x, y, batch_size=8, epochs=epochs, verbose=0, trace_gradients=3)
    csv = tmp_path / "gradient_stats.csv"
    pd.DataFrame(history.traces).to_csv(csv, index=False)
    return pd.read_csv(csv)


def curves(fig, panel_title):
    ax = next(ax for ax in fig.axes if ax.get_title() == panel_title)
    return ax, {line.get_label(): line.get_xdata() for line in ax.get_lines()
                if not line.get_label().startswith("_")}


def test_gradient_traces_are_drawn_at_the_csvs_step_numbers(drawn, tmp_path):
    stats = traced_rows(1, tmp_path)  # 6 steps, every 3rd traced: steps 1 and 4
    plots.gradient_traces(stats.to_dict("records"), tmp_path / "g.png")
    fig = drawn[-1]
    ax, lines = curves(fig, "gradient norm")
    assert set(lines) == {"conv2d_1", "dense_1"}
    for layer, xdata in lines.items():
        expected = stats.loc[stats["layer"] == layer, "step"].to_numpy()
        np.testing.assert_array_equal(xdata, expected)
    np.testing.assert_array_equal(lines["conv2d_1"], [1, 4])
    assert ax.get_ylabel() and fig.axes[-1].get_xlabel() == "training step"
    # The layers' legend is the figure's, beside the panels; no panel carries one
    # except the rule-of-thumb line's.
    assert len(fig.legends) == 1
    assert [t.get_text() for t in fig.legends[0].get_texts()] == ["conv2d_1", "dense_1"]
    assert [ax.get_title() for ax in fig.axes if ax.get_legend()] == ["update / weight ratio"]


def test_gradient_traces_over_epochs_count_steps_over_the_run(drawn, tmp_path):
    stats = traced_rows(2, tmp_path)  # (epoch, step) (1, 1), (1, 4), (2, 1), (2, 4)
    rows = stats.to_dict("records")
    with pytest.raises(ValueError, match="give steps_per_epoch"):
        plots.gradient_traces(rows, tmp_path / "g.png")
    plots.gradient_traces(rows, tmp_path / "g.png", steps_per_epoch=6)
    _, lines = curves(drawn[-1], "update / weight ratio")
    np.testing.assert_array_equal(lines["dense_1"], [1, 4, 7, 10])


def test_saliency_has_a_colour_bar_and_names_image_and_class(drawn, tmp_path):
    model = tiny_model()
    x, _ = tiny_data(3)
    pictures.saliency(model, x, np.array([3, 7, 3]), NAMES, tmp_path / "s.png",
                      indices=[12, 40, 41])
    fig = drawn[-1]
    images = [ax for ax in fig.axes if ax.images]
    tops, maps = images[:3], images[3:]
    assert [ax.get_title() for ax in tops] == ["image 12\ntrue: class3", "image 40\ntrue: class7",
                                               "image 41\ntrue: class3"]
    assert [ax.get_title() for ax in maps] == [f"gradient of the\n{c} score"
                                               for c in ("class3", "class7", "class3")]
    bars = [ax for ax in fig.axes if not ax.images]
    assert len(bars) == 1 and bars[0].get_ylabel() == "|d score / d pixel|"
    assert maps[-1].images[0].colorbar is not None
    assert len({ax.images[0].get_clim() for ax in maps}) == 1  # one scale for all maps


def test_feature_maps_share_one_colour_scale_and_name_the_image(drawn, tmp_path):
    model = tiny_model()
    x, _ = tiny_data(1)
    pictures.feature_maps(model, "conv2d_1", x[0], tmp_path / "m.png",
                          image_name="test image 0 (class0)")
    fig = drawn[-1]
    assert fig.get_suptitle().endswith("of test image 0 (class0)")
    maps = [ax.images[0] for ax in fig.axes if ax.images]
    assert len(maps) == 4 and len({image.get_clim() for image in maps}) == 1
    assert maps[-1].colorbar is not None and maps[-1].colorbar.ax.get_ylabel() == "activation"
