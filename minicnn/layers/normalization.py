"""Batch normalization (Keras 2.2.4's ``BatchNormalization``).

Each channel c (the entries along ``axis``; the last axis by default) is
normalized over the other axes, m values per channel (m = N for (N, F),
N*H*W for (N, H, W, C)). ``axis`` may name any axis but the batch axis; a
training batch needs m >= 2 (one value has no variance):

Forward, training:   mu = mean(x)   var = mean((x - mu)^2)   (the biased variance)
                     x_hat = (x - mu) / sqrt(var + eps)   y = gamma * x_hat + beta
         inference:  the same with mu, var replaced by moving_mean, moving_variance

Backward (training; mu and var depend on x, so the gradient flows through them):
    dgamma = sum(dy * x_hat)     dbeta = sum(dy)
    dx = gamma / (m * sqrt(var + eps)) * (m * dy - sum(dy) - x_hat * sum(dy * x_hat))
After an inference forward mu and var are the moving statistics, constants for x:
    dx = gamma * dy / sqrt(var + eps)
    dmoving_mean = -gamma * sum(dy) / sqrt(var + eps)
    dmoving_variance = -gamma * sum(dy * x_hat) / (2 (var + eps))

Moving statistics. Every training forward folds the batch's statistics in:
    moving_mean     = momentum * moving_mean     + (1 - momentum) * mu
    moving_variance = momentum * moving_variance + (1 - momentum) * var * m / (m - (1 + eps))
The variance is made (nearly) unbiased as Keras 2.2.4 does it, with the epsilon
in the denominator included (keras/layers/normalization.py, BatchNormalization.call:
``variance *= sample_size / (sample_size - (1.0 + self.epsilon))``), and the
average is the TensorFlow backend's ``moving_average_update``. A training
forward's output never reads the moving statistics, so calling it again (a
gradient check, ``compute_loss(training=True)``) changes no output; a training
step runs one training forward, so ``train_on_batch`` updates them exactly once
(before its divergence check: a step that raises ``TrainingDiverged`` has moved them).
Fused with the activation after it: when an Activation('relu') or
Activation('gelu') layer follows, the model's passes call
``run_fused_forward``/``run_fused_backward`` (see minicnn.plan), which compute
the same formulas through ``ops.batch_norm_act_forward``/``_backward`` for a
channels-last axis (any other axis runs the two layers one after the other).

They are weights made with ``trainable=False``: saved, loaded and counted as
non-trainable, never touched by an optimizer. Their gradient is still filled
in (zero after a training forward, which does not read them), so a gradient
check covers every weight in both modes.
"""
from __future__ import annotations

import numbers
from typing import Any, Callable

from minicnn import activations, backend, initializers, ops, regularizers
from minicnn.layers.base import Layer, plain, regularizer_config, unsupported


class BatchNormalization(Layer):
    def __init__(self, axis: int = -1, momentum: float = 0.99, epsilon: float = 1e-3,
                 center: bool = True, scale: bool = True,
                 beta_initializer: str | Callable = "zeros",
                 gamma_initializer: str | Callable = "ones",
                 moving_mean_initializer: str | Callable = "zeros",
                 moving_variance_initializer: str | Callable = "ones",
                 beta_regularizer: Any = None, gamma_regularizer: Any = None,
                 beta_constraint: Any = None, gamma_constraint: Any = None,
                 **kwargs: Any) -> None:
        super().__init__(**kwargs)
        unsupported("BatchNormalization", beta_constraint=beta_constraint,
                    gamma_constraint=gamma_constraint)
        self.beta_regularizer = regularizers.get(beta_regularizer,
                                                 "BatchNormalization beta_regularizer")
        self.gamma_regularizer = regularizers.get(gamma_regularizer,
                                                  "BatchNormalization gamma_regularizer")
        if not isinstance(axis, numbers.Integral) or isinstance(axis, bool):
            raise ValueError(f"BatchNormalization: axis must be an int (the channel axis, "
                             f"-1 for channels-last), got {axis!r}")
        for name, value in (("momentum", momentum), ("epsilon", epsilon)):
            if not isinstance(value, numbers.Real) or isinstance(value, bool):
                raise ValueError(f"BatchNormalization: {name} must be a number, got {value!r}")
        if not 0 <= momentum <= 1:
            raise ValueError(f"BatchNormalization: momentum must be in [0, 1], got {momentum!r}")
        if not epsilon > 0:
            raise ValueError(f"BatchNormalization: epsilon must be positive, got {epsilon!r}")
        self.axis = int(axis)
        self.momentum, self.epsilon = float(momentum), float(epsilon)
        self.center, self.scale = bool(center), bool(scale)
        self.beta_initializer = initializers.get(beta_initializer,
                                                 "BatchNormalization beta_initializer")
        self.gamma_initializer = initializers.get(gamma_initializer,
                                                  "BatchNormalization gamma_initializer")
        self.moving_mean_initializer = initializers.get(
            moving_mean_initializer, "BatchNormalization moving_mean_initializer")
        self.moving_variance_initializer = initializers.get(
            moving_variance_initializer, "BatchNormalization moving_variance_initializer")

    def build(self, input_shape: tuple) -> None:
        rank = len(input_shape)
        if not -rank <= self.axis < rank or self.axis % rank == 0:
            raise ValueError(f"{self.describe()}: axis={self.axis} must name a non-batch axis of "
                             f"the input of shape {tuple(input_shape)} (1 to {rank - 1}, or "
                             f"-1 to {-(rank - 1)})")
        self._channel = self.axis % rank
        shape = (input_shape[self._channel],)
        if self.scale:
            self.add_weight("gamma", shape, initializer=self.gamma_initializer,
                            regularizer=self.gamma_regularizer)
        if self.center:
            self.add_weight("beta", shape, initializer=self.beta_initializer,
                            regularizer=self.beta_regularizer)
        self.add_weight("moving_mean", shape, initializer=self.moving_mean_initializer,
                        trainable=False)
        self.add_weight("moving_variance", shape, initializer=self.moving_variance_initializer,
                        trainable=False)
        super().build(input_shape)

    def _broadcast(self, v, ndim: int):
        """A per-channel vector shaped to broadcast against the input."""
        shape = [1] * ndim
        shape[self._channel] = v.shape[0]
        return v.reshape(shape)

    def _forward(self, x, training):
        xp = backend.get_array_module(x)
        axes = tuple(a for a in range(x.ndim) if a != self._channel)
        count = 1
        for a in axes:
            count *= x.shape[a]
        if training:
            if count < 2:
                raise ValueError(f"{self.describe()}: training needs at least 2 values per "
                                 f"channel to take a batch variance, got input of shape "
                                 f"{tuple(x.shape)}; use a larger batch")
            mean = x.mean(axis=axes)
            centred = x - self._broadcast(mean, x.ndim)
            variance = (centred * centred).mean(axis=axes)
            unbiased = variance * (count / (count - (1.0 + self.epsilon)))
            for name, batch_value in (("moving_mean", mean), ("moving_variance", unbiased)):
                moving = self.params[name]
                moving[...] = self.momentum * moving + (1.0 - self.momentum) * batch_value
        else:
            mean, variance = self.params["moving_mean"], self.params["moving_variance"]
            centred = x - self._broadcast(mean, x.ndim)
        inv_std = 1.0 / xp.sqrt(variance + self.epsilon)
        x_hat = centred * self._broadcast(inv_std, x.ndim)
        y = x_hat
        if self.scale:
            y = y * self._broadcast(self.params["gamma"], x.ndim)
        if self.center:
            y = y + self._broadcast(self.params["beta"], x.ndim)
        self._cache = (x_hat, inv_std, axes, count, training)  # x_hat is y's size, as Dense's x
        return y

    def _backward(self, grad):
        x_hat, inv_std, axes, count, batch_statistics = self._cache
        xp = backend.get_array_module(grad)
        ndim = grad.ndim
        sum_dy = grad.sum(axis=axes)
        sum_dy_xhat = (grad * x_hat).sum(axis=axes)
        if self.scale:
            self.grads["gamma"] = sum_dy_xhat
        if self.center:
            self.grads["beta"] = sum_dy
        scale = inv_std * self.params["gamma"] if self.scale else inv_std
        if batch_statistics:  # the output never read the moving statistics
            for name in ("moving_mean", "moving_variance"):
                self.grads[name] = xp.zeros_like(self.params[name])
        else:
            self.grads["moving_mean"] = -scale * sum_dy
            self.grads["moving_variance"] = -0.5 * scale * inv_std * sum_dy_xhat
        if not self.input_grad:
            return None
        if not batch_statistics:
            return grad * self._broadcast(scale, ndim)
        return self._broadcast(scale / count, ndim) * (
            count * grad - self._broadcast(sum_dy, ndim)
            - x_hat * self._broadcast(sum_dy_xhat, ndim))

    # ----------------------------------------------------------- fused with an activation
    @staticmethod
    def fusable_activation(activation: activations.ActivationFunction | None) -> str | None:
        """The fused op's name for an activation that can run inside this layer's pass."""
        if type(activation) is activations.ReLU:
            return "relu"
        if type(activation) is activations.Gelu:
            return "gelu_tanh" if activation.approximate else "gelu"
        return None

    def fused_activation_forward(self, x, training: bool,
                                 activation: activations.ActivationFunction):
        """activation(this layer's output) in one op (see the module docstring)."""
        name = self.fusable_activation(activation)
        if self._channel != x.ndim - 1 or name is None:  # run as written
            self._fused = (None, training, activation)
            return activation.forward(self._forward(x, training))
        gamma = self.params["gamma"] if self.scale else None
        beta = self.params["beta"] if self.center else None
        if training:
            count = x.size // x.shape[-1]
            if count < 2:
                raise ValueError(f"{self.describe()}: training needs at least 2 values per "
                                 f"channel to take a batch variance, got input of shape "
                                 f"{tuple(x.shape)}; use a larger batch")
            y, mean, variance, cache = ops.batch_norm_act_forward(
                x, gamma, beta, None, None, self.epsilon, name, keep_cache=True)
            unbiased = variance * (count / (count - (1.0 + self.epsilon)))
            for moving_name, batch_value in (("moving_mean", mean), ("moving_variance", unbiased)):
                moving = self.params[moving_name]
                moving[...] = self.momentum * moving + (1.0 - self.momentum) * batch_value
        else:  # the cache is only a reference to x and a few vectors: always kept
            y, _, _, cache = ops.batch_norm_act_forward(
                x, gamma, beta, self.params["moving_mean"], self.params["moving_variance"],
                self.epsilon, name, keep_cache=True)
        self._fused = (cache, training, activation)
        return y

    def fused_activation_backward(self, grad):
        """dL/dx through the activation and this layer, after ``fused_activation_forward``."""
        cache, batch_statistics, activation = self._fused
        if cache is None:
            return self._backward(activation.backward(grad))
        dx, sum_dz, sum_dzx = ops.batch_norm_act_backward(grad, cache, batch_statistics,
                                                           self.input_grad)
        if self.scale:
            self.grads["gamma"] = sum_dzx
        if self.center:
            self.grads["beta"] = sum_dz
        xp = backend.get_array_module(grad)
        if batch_statistics:  # the output never read the moving statistics
            for name in ("moving_mean", "moving_variance"):
                self.grads[name] = xp.zeros_like(self.params[name])
        else:
            self.grads["moving_mean"] = -cache.scale * sum_dz
            self.grads["moving_variance"] = -0.5 * cache.scale * cache.inv_std * sum_dzx
        return dx

    def run_fused_forward(self, x, training: bool, activation: activations.ActivationFunction):
        """``run_forward`` for the fused pair: builds, checks x, keeps x's shape."""
        self.check_input(x)
        self.maybe_build(x.shape)
        self.keep_cache = True
        y = self.fused_activation_forward(x, training, activation)
        self._x_shape = tuple(x.shape)
        return y

    def run_fused_backward(self, grad):
        """``run_backward`` for the fused pair: checks dx and every gradient."""
        self._require_forward()
        dx = self.fused_activation_backward(grad)
        self._check_gradients(dx)
        return dx

    def config(self) -> dict:
        return {"axis": self.axis, "momentum": self.momentum, "epsilon": self.epsilon,
                "center": self.center, "scale": self.scale}

    def get_config(self) -> dict:
        serialize = initializers.serialize
        return plain({
            **super().get_config(),
            "beta_initializer": serialize(self.beta_initializer),
            "gamma_initializer": serialize(self.gamma_initializer),
            "moving_mean_initializer": serialize(self.moving_mean_initializer),
            "moving_variance_initializer": serialize(self.moving_variance_initializer),
            **regularizer_config(self, "beta", "gamma"), "beta_constraint": None,
            "gamma_constraint": None})
