"""airbench94 in PyTorch on the CPU: the fast recipe's optional peer.

    python benchmarks/torch_airbench.py --data ../shared/datasets/cifar-10-python.tar.gz \
        --seed 0 --threads 2 --json torch_airbench.json
    python benchmarks/torch_airbench.py --data ... --steps-only 10 --json steps.json

A port of Keller Jordan's airbench94 (2024) with only device changes: float32
instead of float16, the CPU instead of CUDA, ``--threads`` intra-op threads, a
seed, and the images read by minicnn's CIFAR-10 loader (NumPy arrays turned
into tensors) instead of torchvision. The network, initialisation, optimiser,
schedules, lookahead, augmentation and test-time augmentation are the
original's, drawing random numbers in the original's order and keeping its
channels-last layout, so that a seeded run here and the original moved to the
CPU the same way take the same steps, bit for bit (``--no-channels-last``
computes the same in PyTorch's default layout, rounded differently).

The recipe: a frozen 2x2 whitening convolution (patch-covariance eigenvectors,
bias trained for 3 epochs) -> GELU -> three groups (64, 256, 256) of
conv 3x3 -> max-pool 2 -> BatchNorm (bias only) -> GELU -> conv 3x3 -> BatchNorm
-> GELU, then max-pool 3, a bias-free dense layer to 10 and a scale of 1/9.
Batch 1024, 9.9 epochs, Nesterov SGD (momentum 0.85) with decoupled weight
decay, BatchNorm biases at 64x the learning rate, a triangular schedule per
step, label smoothing 0.2 on a summed loss, lookahead from epoch 3, alternating
flips and 2-pixel translations; test-time augmentation by mirror and 1-pixel
translations.

``--steps-only N`` trains nothing to the end: after ``--warmup`` steps it times
N training steps (forward, loss, backward, optimiser and schedule step; the
batches are prepared outside the timed region) and reports images/s per step,
for the side-by-side benchmark. With ``--profile`` it then runs
``--profile-steps`` more steps with a clock around every module's forward and
backward (module hooks, which add a little time) and reports the medians per
group of modules, each group one layer of examples/cifar10_fast.py's minicnn
model under that layer's name: every module is its own group, except that
the GELU after a BatchNorm2d counts with it, as minicnn runs that pair as one
fused op and times it on its batch_normalization row (the activation's group
is then empty).

PyTorch is an optional peer, never a dependency; minicnn never imports this
script (it uses only minicnn's dataset loader).
"""
from __future__ import annotations

import argparse
import json
import math
import resource
import statistics
import sys
import time
import warnings
from pathlib import Path
from typing import Any, Iterator

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from minicnn.datasets import cifar10  # noqa: E402
from minicnn.fileio import write_text_atomic  # noqa: E402
from minicnn.ops import memory  # noqa: E402

# airbench94's hyperparameters, unchanged.
HYP = {
    "epochs": 9.9,
    "batch_size": 1024,
    "lr": 11.5,               # per 1024 examples
    "momentum": 0.85,
    "weight_decay": 0.0153,   # per 1024 examples, decoupled from the learning rate
    "bias_scaler": 64.0,      # learning-rate multiplier of the BatchNorm biases
    "label_smoothing": 0.2,
    "ema_start_epochs": 3,
    "ema_decay_base": 0.95,
    "ema_decay_pow": 3.0,
    "ema_every_n_steps": 5,
    "whiten_bias_epochs": 3,
    "whiten_kernel": 2,
    "whiten_eps": 5e-4,
    "whiten_images": 5000,
    "flip": True,
    "translate": 2,
    "bn_momentum": 0.6,       # Keras convention: PyTorch's momentum is 1 - 0.6
    "bn_eps": 1e-12,
    "widths": (64, 256, 256),
    "scaling_factor": 1 / 9,
    "tta_level": 2,
}
CIFAR_MEAN = (0.4914, 0.4822, 0.4465)
CIFAR_STD = (0.2470, 0.2435, 0.2616)


def import_torch() -> Any:
    try:
        import torch  # noqa: PLC0415
    except ImportError as exc:
        sys.exit(f"torch_airbench.py: PyTorch is not installed ({exc}); it is an optional peer: "
                 "pip install torch")
    return torch


# ----------------------------------------------------------------------------- data

def to_images(torch: Any, x: np.ndarray) -> Any:
    """uint8 NHWC -> float32 NCHW in [0, 1]."""
    return torch.from_numpy(x).permute(0, 3, 1, 2).float().div(255)


def normalize(torch: Any, images: Any) -> Any:
    mean = torch.tensor(CIFAR_MEAN).view(1, 3, 1, 1)
    std = torch.tensor(CIFAR_STD).view(1, 3, 1, 1)
    return images.sub(mean).div(std)


def random_flip(torch: Any, images: Any) -> Any:
    """Each image mirrored left-right with probability 1/2."""
    mask = (torch.rand(len(images)) < 0.5).view(-1, 1, 1, 1)
    return torch.where(mask, images.flip(-1), images)


def random_crop(torch: Any, padded: Any, size: int) -> Any:
    """A size x size crop of each padded image at its own random offset (shift -r..r per axis)."""
    r = (padded.size(-1) - size) // 2
    shifts = torch.randint(-r, r + 1, size=(len(padded), 2))
    out = torch.empty((len(padded), padded.size(1), size, size), dtype=padded.dtype)
    for dy in range(-r, r + 1):  # one masked copy per offset: (2r+1)^2 copies, not N
        for dx in range(-r, r + 1):
            mask = (shifts[:, 0] == dy) & (shifts[:, 1] == dx)
            out[mask] = padded[mask, :, r + dy:r + dy + size, r + dx:r + dx + size]
    return out


class TrainLoader:
    """airbench's training loader: normalise, pre-flip and pre-pad once; per epoch a random
    translation, every other epoch all images mirrored; shuffled batches, the last partial one
    dropped."""

    def __init__(self, torch: Any, images: Any, labels: Any, batch_size: int,
                 channels_last: bool) -> None:
        self.torch, self.images, self.labels = torch, images, labels
        self.batch_size, self.channels_last = batch_size, channels_last
        self.epoch = 0
        self.padded = None

    def __len__(self) -> int:
        return len(self.images) // self.batch_size

    def __iter__(self) -> Iterator[tuple[Any, Any]]:
        torch, F = self.torch, self.torch.nn.functional
        pad = HYP["translate"]
        if self.epoch == 0:
            images = normalize(torch, self.images)
            if HYP["flip"]:
                images = random_flip(torch, images)  # then whole-set flips alternate per epoch
            self.padded = F.pad(images, (pad,) * 4, mode="reflect")
        images = random_crop(torch, self.padded, self.images.size(-1))
        if HYP["flip"] and self.epoch % 2 == 1:
            images = images.flip(-1)
        if self.channels_last:
            images = images.contiguous(memory_format=torch.channels_last)
        self.epoch += 1
        order = torch.randperm(len(images))
        for i in range(len(self)):
            idx = order[i * self.batch_size:(i + 1) * self.batch_size]
            yield images[idx], self.labels[idx]


# ----------------------------------------------------------------------------- network

def make_net(torch: Any, channels_last: bool) -> Any:
    nn = torch.nn

    class Scale(nn.Module):
        def __init__(self, scale: float) -> None:
            super().__init__()
            self.scale = scale

        def forward(self, x):  # noqa: ANN001, ANN202
            return x * self.scale

    def conv(c_in: int, c_out: int, kernel: int = 3, padding: Any = "same",
             bias: bool = False) -> Any:
        layer = nn.Conv2d(c_in, c_out, kernel, padding=padding, bias=bias)
        with torch.no_grad():
            if bias:
                layer.bias.zero_()
            # the first c_in filters pass their input channel through: an implicit residual
            nn.init.dirac_(layer.weight[:c_in])
        return layer

    def norm(channels: int) -> Any:
        bn = nn.BatchNorm2d(channels, eps=HYP["bn_eps"], momentum=1 - HYP["bn_momentum"])
        bn.weight.requires_grad = False  # no scale, bias only
        return bn

    def group(c_in: int, c_out: int) -> list:
        # construction order = the original's (conv1, pool, norm1, conv2, norm2): same random init
        conv1, pool, norm1 = conv(c_in, c_out), nn.MaxPool2d(2), norm(c_out)
        conv2, norm2 = conv(c_out, c_out), norm(c_out)
        return [conv1, pool, norm1, nn.GELU(), conv2, norm2, nn.GELU()]

    k = HYP["whiten_kernel"]
    whiten_width = 2 * 3 * k * k
    w1, w2, w3 = HYP["widths"]
    net = nn.Sequential(conv(3, whiten_width, k, padding=0, bias=True), nn.GELU(),
                        *group(whiten_width, w1), *group(w1, w2), *group(w2, w3),
                        nn.MaxPool2d(3), nn.Flatten(), nn.Linear(w3, 10, bias=False),
                        Scale(HYP["scaling_factor"]))
    net[0].weight.requires_grad = False
    if channels_last:
        net = net.to(memory_format=torch.channels_last)
    return net


def init_whitening(torch: Any, layer: Any, images: Any) -> None:
    """Set the whitening kernel to the eigenvectors of the images' k x k patch covariance (not
    centred), each divided by sqrt(eigenvalue + eps), largest first, then their negatives."""
    c, (h, w) = images.size(1), layer.weight.shape[2:]
    patches = images.unfold(2, h, 1).unfold(3, w, 1).transpose(1, 3).reshape(-1, c, h, w)
    flat = patches.reshape(len(patches), -1)
    covariance = flat.T @ flat / len(flat)
    eigenvalues, eigenvectors = torch.linalg.eigh(covariance, UPLO="U")
    eigenvalues = eigenvalues.flip(0).view(-1, 1, 1, 1)
    eigenvectors = eigenvectors.T.reshape(c * h * w, c, h, w).flip(0)
    scaled = eigenvectors / torch.sqrt(eigenvalues + HYP["whiten_eps"])
    with torch.no_grad():
        layer.weight.copy_(torch.cat((scaled, -scaled)))


def triangle(torch: Any, steps: int, start: float, end: float, peak: float) -> Any:
    """Piecewise-linear multiplier over steps 0..steps: start -> 1 at int(peak * steps) -> end."""
    xp = torch.tensor([0, int(peak * steps), steps])
    fp = torch.tensor([start, 1, end])
    x = torch.arange(1 + steps)
    slope = (fp[1:] - fp[:-1]) / (xp[1:] - xp[:-1])
    intercept = fp[:-1] - slope * xp[:-1]
    piece = torch.clamp(torch.sum(x[:, None] >= xp[None, :], 1) - 1, 0, len(slope) - 1)
    return slope[piece] * x + intercept[piece]


class Lookahead:
    """An average of every float tensor of the state (weights and BatchNorm statistics):
    ``avg = lerp(avg, current, 1 - decay)``, then the network is set to the average."""

    def __init__(self, net: Any) -> None:
        self.average = {k: v.clone() for k, v in net.state_dict().items()}

    def update(self, net: Any, decay: float) -> None:
        for avg, current in zip(self.average.values(), net.state_dict().values()):
            if current.is_floating_point():
                avg.lerp_(current, 1 - decay)
                current.copy_(avg)


def make_optimizer(torch: Any, net: Any, batch_size: int, total_steps: int) -> tuple[Any, Any]:
    """Nesterov SGD for a loss summed over the batch, in airbench's decoupled form: the step is
    scaled by 1 / (1 + 1/(1 - momentum)) per 1024 examples, and each param group's
    ``weight_decay`` is divided by its learning rate so that the decay per step is the same for
    every group (the BatchNorm biases get 64x the learning rate, not 64x the decay)."""
    momentum = HYP["momentum"]
    kilostep_scale = 1024 * (1 + 1 / (1 - momentum))
    lr = HYP["lr"] / kilostep_scale
    wd = HYP["weight_decay"] * batch_size / kilostep_scale
    lr_biases = lr * HYP["bias_scaler"]
    norm_biases = [m.bias for m in net.modules() if isinstance(m, torch.nn.BatchNorm2d)]
    others = [p for p in net.parameters()
              if p.requires_grad and all(p is not b for b in norm_biases)]
    groups = [dict(params=norm_biases, lr=lr_biases, weight_decay=wd / lr_biases),
              dict(params=others, lr=lr, weight_decay=wd / lr)]
    optimizer = torch.optim.SGD(groups, momentum=momentum, nesterov=True)
    schedule = triangle(torch, total_steps, start=0.2, end=0.07, peak=0.23)
    scheduler = torch.optim.lr_scheduler.LambdaLR(optimizer, lambda i: schedule[i])
    return optimizer, scheduler


# ----------------------------------------------------------------------------- evaluation

def evaluate(torch: Any, net: Any, images: Any, labels: Any, batch: int,
             channels_last: bool) -> dict[str, float]:
    """Accuracy without test-time augmentation, with the mirror (level 1), and with mirror and
    two 1-pixel translations (level 2): logits 0.5 * mirror + 0.5 * mean of the two translated
    views, each mirror-averaged. All three come from the same six forward passes."""
    F = torch.nn.functional
    fmt = torch.channels_last if channels_last else torch.contiguous_format

    def f(x):  # noqa: ANN001, ANN202
        return net(x.contiguous(memory_format=fmt))

    def mirror(x, plain=None):  # noqa: ANN001, ANN202
        return 0.5 * (f(x) if plain is None else plain) + 0.5 * f(x.flip(-1))

    net.eval()
    logits = {0: [], 1: [], 2: []}
    with torch.no_grad():
        for x in images.split(batch):
            plain = f(x)
            mirrored = mirror(x, plain)
            padded = F.pad(x, (1,) * 4, mode="reflect")
            shifted = [mirror(padded[:, :, 0:32, 0:32]), mirror(padded[:, :, 2:34, 2:34])]
            logits[0].append(plain)
            logits[1].append(mirrored)
            logits[2].append(0.5 * mirrored + 0.5 * torch.stack(shifted).mean(0))
    return {level: float((torch.cat(out).argmax(1) == labels).float().mean())
            for level, out in logits.items()}


# ----------------------------------------------------------------------------- main

def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--data", default=None, metavar="PATH",
                   help="CIFAR-10 archive or folder (as minicnn.datasets.cifar10.load_data)")
    p.add_argument("--seed", type=int, default=0, help="torch.manual_seed (default 0)")
    p.add_argument("--epochs", type=float, default=HYP["epochs"],
                   help="training epochs, fractional allowed (default 9.9)")
    p.add_argument("--threads", type=int, default=2,
                   help="torch.set_num_threads (default 2)")
    p.add_argument("--batch-size", type=int, default=HYP["batch_size"],
                   help="training batch (default 1024; smaller only for quick checks)")
    p.add_argument("--eval-batch", type=int, default=2000, help="test batch (default 2000)")
    p.add_argument("--train-limit", type=int, default=None, metavar="N",
                   help="use only the first N training images")
    p.add_argument("--test-limit", type=int, default=None, metavar="N",
                   help="use only the first N test images")
    p.add_argument("--channels-last", action=argparse.BooleanOptionalAction, default=True,
                   help="channels-last weights and activations, the original's layout (default; "
                        "--no-channels-last: PyTorch's default NCHW, same math, other rounding)")
    p.add_argument("--eval-each-epoch", action="store_true",
                   help="also print the test accuracy after each epoch (not timed)")
    p.add_argument("--steps-only", type=int, default=None, metavar="N",
                   help="time N training steps after --warmup steps, then stop")
    p.add_argument("--warmup", type=int, default=3, help="untimed steps before --steps-only")
    p.add_argument("--profile", action="store_true",
                   help="with --steps-only: then time every module's forward and backward over "
                        "--profile-steps more steps, grouped like minicnn's layers")
    p.add_argument("--profile-steps", type=int, default=3, metavar="K",
                   help="instrumented steps for --profile (default 3; medians are reported)")
    p.add_argument("--late-steps", action="store_true",
                   help="with --steps-only: time steps as after epoch 3 (the whitening bias "
                        "frozen) instead of epoch 0")
    p.add_argument("--keep-freed-memory", action="store_true",
                   help="tell glibc to keep freed memory for reuse, as minicnn's training "
                        "does (minicnn.ops.memory); default: glibc's defaults, as PyTorch runs")
    p.add_argument("--json", default=None, metavar="OUT", help="write the results here")
    args = p.parse_args(argv)
    for name in ("threads", "batch_size", "eval_batch", "train_limit", "test_limit",
                 "steps_only", "profile_steps"):
        value = getattr(args, name)
        if value is not None and value < 1:
            p.error(f"--{name.replace('_', '-')} must be a positive integer, got {value}")
    if args.warmup < 0:
        p.error(f"--warmup must be >= 0, got {args.warmup}")
    if args.profile and args.steps_only is None:
        p.error("--profile needs --steps-only N (it profiles steps after the timed ones)")
    if args.late_steps and args.steps_only is None:
        p.error("--late-steps needs --steps-only N")
    if not args.epochs > 0:
        p.error(f"--epochs must be > 0, got {args.epochs}")
    return args


def peak_rss_bytes() -> int:
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024  # Linux reports KiB


def train_step(torch: Any, net: Any, loss_fn: Any, optimizer: Any, scheduler: Any,
               inputs: Any, labels: Any, after_backward: Any = None) -> tuple[Any, Any]:
    outputs = net(inputs)
    loss = loss_fn(outputs, labels).sum()
    optimizer.zero_grad(set_to_none=True)
    loss.backward()
    if after_backward is not None:  # profile_step's clock
        after_backward()
    optimizer.step()
    scheduler.step()
    return outputs, loss


def main(argv: list[str] | None = None) -> None:
    args = parse_args(argv)
    torch = import_torch()
    kept = memory.keep_freed_memory() if args.keep_freed_memory else False
    torch.set_num_threads(args.threads)
    torch.manual_seed(args.seed)

    (x_train, y_train), (x_test, y_test) = cifar10.load_data(args.data, verbose=False)
    x_train, y_train = x_train[:args.train_limit], y_train[:args.train_limit]
    x_test, y_test = x_test[:args.test_limit], y_test[:args.test_limit]
    if len(x_train) < args.batch_size:
        sys.exit(f"torch_airbench.py: {len(x_train)} training images make no batch of "
                 f"{args.batch_size} (the last partial batch is dropped); lower --batch-size "
                 "or raise --train-limit")
    train_images = to_images(torch, x_train)
    train_labels = torch.from_numpy(y_train[:, 0].astype(np.int64))
    test_images = normalize(torch, to_images(torch, x_test))
    test_labels = torch.from_numpy(y_test[:, 0].astype(np.int64))

    loader = TrainLoader(torch, train_images, train_labels, args.batch_size, args.channels_last)
    if args.steps_only is not None:
        total_steps = args.warmup + args.steps_only + (args.profile_steps if args.profile else 0)
    else:
        total_steps = math.ceil(len(loader) * args.epochs)
    net = make_net(torch, args.channels_last)
    optimizer, scheduler = make_optimizer(torch, net, args.batch_size, total_steps)
    loss_fn = torch.nn.CrossEntropyLoss(label_smoothing=HYP["label_smoothing"], reduction="none")
    print(f"PyTorch {torch.__version__} ({cpu_capability(torch)} kernels), "
          f"{torch.get_num_threads()} threads, "
          f"{len(train_images)} training / {len(test_images)} test images, batch "
          f"{args.batch_size}, {total_steps} steps", flush=True)

    start = time.perf_counter()
    init_whitening(torch, net[0], normalize(torch, train_images[:HYP["whiten_images"]]))
    whitening_seconds = time.perf_counter() - start

    results: dict[str, Any] = {
        "script": "benchmarks/torch_airbench.py", "torch_version": torch.__version__,
        "cpu_capability": cpu_capability(torch),
        "threads": torch.get_num_threads(), "seed": args.seed, "batch_size": args.batch_size,
        "channels_last": args.channels_last, "keeps_freed_memory": kept,
        "train_images": len(train_images),
        "test_images": len(test_images)}
    if args.steps_only is not None:
        results.update(steps_only(torch, args, net, loss_fn, optimizer, scheduler, loader))
    else:
        results.update(train(torch, args, net, loss_fn, optimizer, scheduler, loader,
                             total_steps, whitening_seconds, (test_images, test_labels)))
        start = time.perf_counter()
        acc = evaluate(torch, net, test_images, test_labels, args.eval_batch, args.channels_last)
        results["eval_seconds"] = time.perf_counter() - start
        results.update(test_accuracy=acc[2], test_accuracy_no_tta=acc[0],
                       test_accuracy_mirror=acc[1])
        print(f"test accuracy: {acc[0]:.4f} plain, {acc[1]:.4f} with the mirror, {acc[2]:.4f} "
              f"with mirror and translations (TTA level 2); evaluation "
              f"{results['eval_seconds']:.1f} s", flush=True)
    results["peak_rss_bytes"] = peak_rss_bytes()
    print(f"peak RSS {results['peak_rss_bytes'] / 2**30:.2f} GiB")
    if args.json:
        write_text_atomic(args.json, json.dumps(results, indent=2))
        print(f"wrote {args.json}")


def cpu_capability(torch: Any) -> str:
    """The instruction set PyTorch's CPU kernels run with here ("AVX2", "AVX512", ...)."""
    try:
        return str(torch.backends.cpu.get_cpu_capability())
    except AttributeError:  # PyTorch before 2.0
        return "unknown"


def train(torch: Any, args: argparse.Namespace, net: Any, loss_fn: Any, optimizer: Any,
          scheduler: Any, loader: TrainLoader, total_steps: int, whitening_seconds: float,
          test_set: tuple[Any, Any]) -> dict[str, Any]:
    """The original's training loop; times each epoch (augmentation included, evaluation not)."""
    lookahead, step = None, 0
    epoch_seconds, epoch_images = [], []
    for epoch in range(math.ceil(args.epochs)):
        net[0].bias.requires_grad = epoch < HYP["whiten_bias_epochs"]
        start = time.perf_counter()
        net.train()
        images = 0
        for inputs, labels in loader:
            outputs, loss = train_step(torch, net, loss_fn, optimizer, scheduler, inputs, labels)
            step += 1
            images += len(inputs)
            every = HYP["ema_every_n_steps"]
            if epoch >= HYP["ema_start_epochs"] and step % every == 0:
                if lookahead is None:
                    lookahead = Lookahead(net)
                else:  # the average's decay grows over training: move fast, then average hard
                    decay = (HYP["ema_decay_base"] ** every
                             * (step / total_steps) ** HYP["ema_decay_pow"])
                    lookahead.update(net, decay=decay)
            if step >= total_steps:
                break
        if lookahead is not None:
            lookahead.update(net, decay=1.0)  # the network ends each epoch at the average
        epoch_seconds.append(time.perf_counter() - start)
        epoch_images.append(images)
        line = (f"epoch {epoch + 1}/{math.ceil(args.epochs)} - {epoch_seconds[-1]:.1f}s - "
                f"{images / epoch_seconds[-1]:.0f} images/s - last batch loss "
                f"{float(loss.detach()) / len(inputs):.4f} acc "
                f"{float((outputs.argmax(1) == labels).float().mean()):.4f}")
        if args.eval_each_epoch:  # evaluation uses no random numbers: the run is unchanged
            acc = evaluate(torch, net, *test_set, args.eval_batch, args.channels_last)
            line += f" - test acc {acc[0]:.4f}"
        print(line, flush=True)
    train_seconds = whitening_seconds + sum(epoch_seconds)
    return {"epochs": args.epochs, "steps": step, "train_seconds": train_seconds,
            "whitening_seconds": whitening_seconds, "epoch_seconds": epoch_seconds,
            "images_per_second": sum(epoch_images) / train_seconds,
            "epoch_images_per_second": [n / s for n, s in zip(epoch_images, epoch_seconds)]}


def steps_only(torch: Any, args: argparse.Namespace, net: Any, loss_fn: Any, optimizer: Any,
               scheduler: Any, loader: TrainLoader) -> dict[str, Any]:
    """Times single training steps as in epoch 0 (whitening bias trained), or with
    ``--late-steps`` as after epoch 3 (it is frozen), batches prepared beforehand."""
    net.train()
    net[0].bias.requires_grad = not args.late_steps
    profile_steps = args.profile_steps if args.profile else 0
    needed = args.warmup + args.steps_only + profile_steps
    batches: list = []
    while len(batches) < needed:  # a new epoch of the loader when one runs out
        for batch in loader:
            batches.append(batch)
            if len(batches) == needed:
                break
    seconds = []
    for i, (inputs, labels) in enumerate(batches[:needed - profile_steps]):
        start = time.perf_counter()
        train_step(torch, net, loss_fn, optimizer, scheduler, inputs, labels)
        if i >= args.warmup:
            seconds.append(time.perf_counter() - start)
    rates = [args.batch_size / s for s in seconds]
    print(f"{args.steps_only} steps at batch {args.batch_size} after {args.warmup} warm-up: "
          f"median {statistics.median(rates):.0f} images/s "
          f"(min {min(rates):.0f}, max {max(rates):.0f})", flush=True)
    results = {"steps_only": args.steps_only, "warmup": args.warmup, "step_seconds": seconds,
               "late_steps": args.late_steps,
               "step_images_per_second": rates,
               "median_step_images_per_second": statistics.median(rates)}
    if args.profile:
        profiles = [profile_step(torch, net, loss_fn, optimizer, scheduler, inputs, labels)
                    for inputs, labels in batches[needed - profile_steps:]]
        results["profile"] = profile_report(net, profiles)
    return results


# ----------------------------------------------------------------------------- profile

# The minicnn layer (examples/cifar10_fast.py's build_model) each kind of module stands for,
# named as Keras names layers: the class in snake case, then a count per class from 1.
MINICNN_KIND = {"Conv2d": "conv", "GELU": "activation", "MaxPool2d": "max_pooling2d",
                "BatchNorm2d": "batch_normalization", "Flatten": "flatten", "Linear": "dense",
                "Scale": "rescaling"}


def profile_groups(net: Any) -> list[dict[str, Any]]:
    """One group per module of ``net``, named like the matching minicnn layer (whiten,
    activation_1, conv1_1, max_pooling2d_1, batch_normalization_1, ...), each with the
    indices of the modules timed in it: its own, except that a GELU right after a
    BatchNorm2d goes to the BatchNorm2d's group (minicnn's fused pair) and leaves its
    own group empty."""
    groups, counts, convs = [], {}, 0
    for i, module in enumerate(net):
        kind = MINICNN_KIND[type(module).__name__]
        if kind == "conv":
            convs += 1
            # the whitening conv, then two per group of the three: conv{group}_{1,2}
            name = "whiten" if convs == 1 else f"conv{(convs - 2) // 2 + 1}_{(convs - 2) % 2 + 1}"
        else:
            counts[kind] = counts.get(kind, 0) + 1
            name = f"{kind}_{counts[kind]}"
        groups.append({"name": name, "modules": [i]})
        if kind == "activation" and i > 0 and type(net[i - 1]).__name__ == "BatchNorm2d":
            groups[i - 1]["modules"].append(i)
            groups[i]["modules"] = []
    return groups


def profile_step(torch: Any, net: Any, loss_fn: Any, optimizer: Any, scheduler: Any,
                 inputs: Any, labels: Any) -> dict[str, Any]:
    """One training step with a clock around each module's forward and backward (forward
    pre/post hooks, full backward pre/post hooks): seconds per module and for the step.

    The whitening conv's input needs no gradient, so its backward hook would fire before
    its bias gradient is made: its backward runs from its pre-hook to the end of
    loss.backward(), which is all that is left to do by then."""
    clock, n = time.perf_counter, len(net)
    forward, backward, started, handles = [0.0] * n, [0.0] * n, {}, []

    def begin(key: tuple) -> Any:
        return lambda *_: started.__setitem__(key, clock())

    def end(key: tuple, totals: list, i: int) -> Any:
        def hook(*_: Any) -> None:
            totals[i] += clock() - started.pop(key)
        return hook

    for i, module in enumerate(net):
        handles += [module.register_forward_pre_hook(begin(("f", i))),
                    module.register_forward_hook(end(("f", i), forward, i)),
                    module.register_full_backward_pre_hook(begin(("b", i)))]
        if i > 0:
            handles.append(module.register_full_backward_hook(end(("b", i), backward, i)))

    def first_module_done() -> None:
        backward[0] += clock() - started.pop(("b", 0))

    try:
        with warnings.catch_warnings():  # the whitening conv's, handled by first_module_done
            warnings.filterwarnings("ignore", "Full backward hook is firing")
            start = clock()
            train_step(torch, net, loss_fn, optimizer, scheduler, inputs, labels,
                       after_backward=first_module_done)
            step = clock() - start
    finally:
        for handle in handles:
            handle.remove()
    return {"forward": forward, "backward": backward, "step": step}


def profile_report(net: Any, profiles: list[dict[str, Any]]) -> dict[str, Any]:
    """Per group, the medians over the instrumented steps of its modules' summed forward
    and backward seconds, and the median whole step; printed as a table."""
    med = statistics.median
    layers = []
    for group in profile_groups(net):
        times = {part: med([sum(p[part][i] for i in group["modules"]) for p in profiles])
                 for part in ("forward", "backward")}
        layers.append({"name": group["name"],
                       "modules": [f"{i}:{type(net[i]).__name__}" for i in group["modules"]],
                       **times})
    step = med([p["step"] for p in profiles])
    print(f"profile: ms per training step, medians of {len(profiles)} instrumented steps "
          "(module hooks; each GELU after a BatchNorm2d counts with it, as minicnn fuses them)")
    for row in layers:
        print(f"  {row['name']:24s} forward {row['forward'] * 1e3:9.2f}  backward "
              f"{row['backward'] * 1e3:9.2f}  ({' + '.join(row['modules']) or 'fused above'})")
    print(f"  {'whole step':24s} {step * 1e3:9.2f}", flush=True)
    return {"steps": len(profiles), "step": step, "layers": layers,
            "grouping": "one group per minicnn layer of examples/cifar10_fast.py, named like it; "
                        "each module is its own group except a GELU right after a BatchNorm2d, "
                        "which counts with the BatchNorm2d (minicnn fuses the pair); seconds"}


if __name__ == "__main__":
    main()
