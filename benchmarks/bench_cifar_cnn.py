"""Train and run the tutorial's CIFAR-10 network in minicnn and in PyTorch, side by side.

    python benchmarks/bench_cifar_cnn.py                 # everything, one to two minutes
    python benchmarks/bench_cifar_cnn.py --no-torch      # minicnn alone
    python benchmarks/bench_cifar_cnn.py --threads 1 --repeats 9 --json out.json

The network (Conv2D 256 -> pool -> dropout, Conv2D 256 -> ..., Conv2D 128 -> ...,
Dense 512, 256, 10 softmax), 32x32x3 inputs, float32, SGD lr 0.05 decay 1e-4,
softmax cross-entropy on one-hot labels. The batches are random pixels of
CIFAR's shape, or with --data the first images of a real CIFAR-10 copy. The
data changes minicnn's time a little: real images have flat regions, whose
equal pixels give equal conv outputs, so max-pooling has ties to settle.

What is measured, all in one run:

* the plain float32 matmul rate, 2048 x 2048 x 2048, as the yardstick;
* training images/s at --batch-size (forward + backward + SGD update);
* inference images/s at --infer-batch (minicnn's predict, torch in inference mode);
* for minicnn, one instrumented step per round: every layer's forward and
  backward timed on its own, plus loss and optimizer; and right after it each
  convolution's three matrix products (forward col @ W, dW, dX) re-run on the
  layer's own operands (its cached col and kernel matrix), which gives their
  GFLOP/s and the share of the step that is not conv matmul;
* with PyTorch, one instrumented step of the faster torch contender per round,
  its modules timed through forward and backward hooks and grouped like
  minicnn's layers, printed beside minicnn's breakdown.

The contenders are interleaved round by round (all training rounds first, then
all inference rounds), so that a machine that speeds up or slows down (a shared
cloud CPU does) affects every contender alike, and their order rotates from
round to round. Each timed block starts
after a short pause and one untimed call: OpenBLAS leaves a worker thread
spinning for ~0.1 s after its last call, which would steal a core from
whoever is timed next.

Medians over --repeats rounds are reported with their spread (min-max), and a
ratio is the median of the per-round ratios. PyTorch is optional and imported
only here: when it is missing, minicnn is reported alone. Torch gets the same
thread count as BLAS and runs in whichever memory format (NCHW or channels-last)
is faster on this machine; both are measured.

Large NumPy arrays are given transparent huge pages (NumPy madvises them); with
THP defrag=madvise the kernel may stall to compact memory for them, which makes
minicnn's batch-256 inference slow and noisy. The "Memory:" line says how this
machine is set; NUMPY_MADVISE_HUGEPAGE=0 in the environment turns it off.

glibc's malloc is told to keep freed memory in the process (for both
contenders; --release-freed-memory leaves it at its defaults), and the report
prints page faults per step: see keep_freed_memory for why.
"""
from __future__ import annotations

import argparse
import ctypes
import json
import os
import platform
import resource
import statistics
import sys
import time


def parse_args(argv=None):
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0],
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--repeats", type=int, default=10, help="measurement rounds (default 10)")
    p.add_argument("--warmup", type=int, default=3, help="untimed steps before measuring (default 3)")
    p.add_argument("--steps", type=int, default=3, help="training steps per round (default 3)")
    p.add_argument("--batch-size", type=int, default=32, help="training batch (default 32)")
    p.add_argument("--infer-batch", type=int, default=256, help="inference batch (default 256)")
    p.add_argument("--infer-steps", type=int, default=1, help="inference batches per round (default 1)")
    p.add_argument("--threads", type=int, default=None,
                   help="BLAS (and torch) threads; default: whatever BLAS chose (the environment's)")
    p.add_argument("--no-torch", action="store_true", help="do not run PyTorch even if installed")
    p.add_argument("--no-profile", action="store_true", help="skip minicnn's per-layer breakdown")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--data", metavar="PATH",
                   help="a CIFAR-10 archive or cifar-10-batches-py folder: time on its first "
                        "training and test images instead of random pixels")
    p.add_argument("--release-freed-memory", action="store_true",
                   help="leave glibc's malloc at its defaults, which give freed memory back to the "
                        "system, so new arrays fault fresh pages in; by default the benchmark tells "
                        "it (mallopt) to keep freed memory, the state PyTorch reaches by itself "
                        "in a long training run (see keep_freed_memory)")
    p.add_argument("--json", metavar="PATH", help="also write every number to this JSON file")
    return p.parse_args(argv)


ARGS = parse_args()
# As examples/cifar10.py does (see minicnn/__init__.py): before NumPy loads OpenBLAS.
os.environ.setdefault("OPENBLAS_THREAD_TIMEOUT", "4")
if ARGS.threads is not None:
    # Must happen before NumPy loads its BLAS. Only when asked: otherwise the
    # user's environment decides.
    for var in ("OPENBLAS_NUM_THREADS", "OMP_NUM_THREADS", "MKL_NUM_THREADS"):
        os.environ[var] = str(ARGS.threads)

import numpy as np  # noqa: E402

import minicnn  # noqa: E402
from minicnn.layers import Conv2D, Dense, Dropout, Flatten, MaxPooling2D  # noqa: E402
from minicnn.fileio import write_text_atomic  # noqa: E402
from minicnn.models import Sequential  # noqa: E402
from minicnn.ops import memory  # noqa: E402
from minicnn.optimizers import SGD  # noqa: E402

MINICNN_IMPORTED_TORCH = "torch" in sys.modules  # must stay False: torch is only a peer here

NUM_CLASSES = 10
INPUT_SHAPE = (32, 32, 3)
PAUSE_S = 0.3  # between timed blocks: see settle()


# ----------------------------------------------------------------------------- environment
def blas_info() -> dict:
    """Which BLAS NumPy runs and with how many threads (threadpoolctl when installed,
    else the OpenBLAS library found in this process, else numpy.show_config)."""
    info = {"numpy": np.__version__}
    for var in ("OPENBLAS_NUM_THREADS", "OMP_NUM_THREADS", "OPENBLAS_CORETYPE", "OPENBLAS_L2_SIZE"):
        if os.environ.get(var):
            info[var] = os.environ[var]
    try:
        import threadpoolctl  # noqa: PLC0415
        for pool in threadpoolctl.threadpool_info():
            if pool.get("user_api") == "blas":
                info.update(library=pool.get("internal_api"), version=pool.get("version"),
                            threads=pool.get("num_threads"), core=pool.get("architecture"),
                            source="threadpoolctl")
                return info
    except ImportError:
        pass
    try:
        with open("/proc/self/maps") as maps:
            paths = {line.split()[-1] for line in maps if "openblas" in line.lower()}
        for path in paths:
            lib = ctypes.CDLL(path)
            for prefix, suffix in (("scipy_openblas", "64_"), ("openblas", "64_"), ("openblas", "")):
                threads = getattr(lib, f"{prefix}_get_num_threads{suffix}", None)
                if threads is None:
                    continue
                core = getattr(lib, f"{prefix}_get_corename{suffix}")
                config = getattr(lib, f"{prefix}_get_config{suffix}")
                core.restype = config.restype = ctypes.c_char_p
                info.update(library="openblas", version=config().decode().split()[1],
                            threads=int(threads()), core=core().decode(), source="libopenblas")
                return info
    except (OSError, AttributeError, IndexError):
        pass
    try:
        blas = np.show_config(mode="dicts")["Build Dependencies"]["blas"]
        info.update(library=blas.get("name"), version=blas.get("version"), source="show_config",
                    threads=int(os.environ.get("OPENBLAS_NUM_THREADS", os.cpu_count() or 1)))
    except Exception:  # noqa: BLE001 (best effort, older NumPy)
        info.update(library="unknown", threads=os.cpu_count() or 1, source="guess")
    return info


def memory_info() -> str:
    """Transparent huge pages and NumPy's use of them: with defrag=madvise, NumPy's
    large arrays can stall on page compaction, which shows as noisy timings."""
    parts = []
    for key in ("enabled", "defrag"):
        try:
            with open(f"/sys/kernel/mm/transparent_hugepage/{key}") as f:
                text = f.read()
            parts.append(f"THP {key}={text[text.index('[') + 1:text.index(']')]}")
        except (OSError, ValueError):
            pass
    parts.append(f"NUMPY_MADVISE_HUGEPAGE={os.environ.get('NUMPY_MADVISE_HUGEPAGE', 'unset')}")
    return ", ".join(parts)


def cpu_name() -> str:
    try:
        with open("/proc/cpuinfo") as f:
            for line in f:
                if line.startswith("model name"):
                    return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or platform.machine()


def load_torch(threads: int):
    """PyTorch, imported lazily (minicnn itself never imports it), or None with a reason."""
    if ARGS.no_torch:
        return None, "skipped (--no-torch)"
    try:
        import torch  # noqa: PLC0415
    except ImportError as exc:
        return None, f"PyTorch is not installed ({exc}); reporting minicnn alone"
    torch.set_num_threads(threads)
    return torch, f"PyTorch {torch.__version__}, {torch.get_num_threads()} threads"


def batches(args):
    """The training batch (x, one-hot y), the inference batch, and a line saying what they are."""
    if args.data:
        from minicnn.datasets import cifar10  # noqa: PLC0415
        (x_train, y_train), (x_test, _) = cifar10.load_data(args.data, download=False,
                                                            verbose=False)[:2]
        scale = np.float32(255)
        x = x_train[:args.batch_size].astype(np.float32) / scale
        labels = y_train[:args.batch_size, 0]
        x_infer = x_test[:args.infer_batch].astype(np.float32) / scale
        note = f"the first images of {args.data}"
    else:
        rng = np.random.default_rng(args.seed)
        x = rng.random((args.batch_size, *INPUT_SHAPE), dtype=np.float32)
        labels = rng.integers(0, NUM_CLASSES, args.batch_size)
        x_infer = rng.random((args.infer_batch, *INPUT_SHAPE), dtype=np.float32)
        note = "random pixels in [0, 1) (--data PATH times real CIFAR-10 images)"
    return x, np.eye(NUM_CLASSES, dtype=np.float32)[labels], x_infer, note


# ----------------------------------------------------------------------------- models
def minicnn_model() -> Sequential:
    model = Sequential()
    model.add(Conv2D(256, (3, 3), activation="relu", input_shape=INPUT_SHAPE))
    model.add(MaxPooling2D((2, 2)))
    model.add(Dropout(0.3))
    model.add(Conv2D(256, (3, 3), activation="relu"))
    model.add(MaxPooling2D((2, 2)))
    model.add(Dropout(0.3))
    model.add(Conv2D(128, (3, 3), activation="relu"))
    model.add(MaxPooling2D((2, 2)))
    model.add(Dropout(0.3))
    model.add(Flatten())
    model.add(Dense(512, activation="relu"))
    model.add(Dense(256, activation="relu"))
    model.add(Dense(NUM_CLASSES, activation="softmax"))
    model.compile(optimizer=SGD(lr=0.05, decay=1e-4), loss="categorical_crossentropy")
    return model


def torch_model(torch, channels_last: bool):
    nn = torch.nn
    net = nn.Sequential(
        nn.Conv2d(3, 256, 3), nn.ReLU(), nn.MaxPool2d(2), nn.Dropout(0.3),
        nn.Conv2d(256, 256, 3), nn.ReLU(), nn.MaxPool2d(2), nn.Dropout(0.3),
        nn.Conv2d(256, 128, 3), nn.ReLU(), nn.MaxPool2d(2), nn.Dropout(0.3),
        nn.Flatten(),
        nn.Linear(512, 512), nn.ReLU(), nn.Linear(512, 256), nn.ReLU(), nn.Linear(256, NUM_CLASSES))
    return net.to(memory_format=torch.channels_last) if channels_last else net


class TorchContender:
    """One PyTorch network in one memory format, with its own data and optimizer."""

    def __init__(self, torch, channels_last: bool, x, y, x_infer) -> None:
        self.torch = torch
        self.name = "torch NHWC" if channels_last else "torch NCHW"
        self.net = torch_model(torch, channels_last)
        fmt = torch.channels_last if channels_last else torch.contiguous_format
        # minicnn's data is NHWC; torch's logical layout is NCHW either way.
        self.x = torch.from_numpy(x.transpose(0, 3, 1, 2).copy()).contiguous(memory_format=fmt)
        self.x_infer = torch.from_numpy(x_infer.transpose(0, 3, 1, 2).copy()).contiguous(memory_format=fmt)
        self.y = torch.from_numpy(y)  # one-hot probabilities, as minicnn gets them
        self.opt = torch.optim.SGD(self.net.parameters(), lr=0.05)
        # Keras 2's time-based decay, lr / (1 + decay * t), stepped per batch like minicnn's.
        self.sched = torch.optim.lr_scheduler.LambdaLR(self.opt, lambda t: 1.0 / (1.0 + 1e-4 * t))
        self.loss = torch.nn.CrossEntropyLoss()  # softmax + cross-entropy, fused like minicnn's

    def train_step(self, after_backward=None) -> None:
        self.net.train()
        self.opt.zero_grad(set_to_none=True)
        loss = self.loss(self.net(self.x), self.y)
        loss.backward()
        if after_backward is not None:  # profile_step's clock
            after_backward()
        self.opt.step()
        self.sched.step()

    def infer(self) -> None:
        self.net.eval()
        with self.torch.inference_mode():
            self.torch.softmax(self.net(self.x_infer), dim=1)

    # torch module i -> the minicnn layer it corresponds to: each conv's ReLU counts
    # with the pooling after it, as minicnn times the ReLU it moves after its pooling.
    LAYER_OF_MODULE = (0, 1, 1, 2, 3, 4, 4, 5, 6, 7, 7, 8, 9, 10, 10, 11, 11, 12)

    def profile_step(self) -> dict:
        """train_step with a clock around each module's forward and backward (module
        hooks, which add a little time), grouped like minicnn's layers.

        The first conv's input needs no gradient, so its backward hook would fire
        before its weight gradient is made: its backward runs from its pre-hook to
        the end of loss.backward(), which is all that is left to do by then."""
        clock, groups = time.perf_counter, max(self.LAYER_OF_MODULE) + 1
        forward, backward, started, handles = [0.0] * groups, [0.0] * groups, {}, []
        for i, module in enumerate(self.net):
            group = self.LAYER_OF_MODULE[i]

            def begin(key):
                return lambda *_: started.__setitem__(key, clock())

            def end(key, totals, group=group):
                def hook(*_):
                    totals[group] += clock() - started.pop(key)
                return hook
            handles += [module.register_forward_pre_hook(begin(("f", i))),
                        module.register_forward_hook(end(("f", i), forward)),
                        module.register_full_backward_pre_hook(begin(("b", i)))]
            if i > 0:
                handles.append(module.register_full_backward_hook(end(("b", i), backward)))
        def first_conv_done() -> None:
            backward[self.LAYER_OF_MODULE[0]] += clock() - started.pop(("b", 0))
        try:
            start = clock()
            self.train_step(after_backward=first_conv_done)
            step = clock() - start
        finally:
            for handle in handles:
                handle.remove()
        return {"forward": forward, "backward": backward, "step": step}


# ----------------------------------------------------------------------------- timing helpers
def timed(fn, count: int = 1) -> float:
    start = time.perf_counter()
    for _ in range(count):
        fn()
    return (time.perf_counter() - start) / count


def settle() -> None:
    """Pause so the previous contender's worker threads stop spinning. After each call
    OpenBLAS keeps a worker busy-waiting for about 0.1 s; a contender timed right
    after that would share the second core with it."""
    time.sleep(PAUSE_S)


def block(fn, count: int) -> tuple[float, float]:
    """Seconds and page faults per call of ``count`` calls, after a pause and one untimed call."""
    settle()
    fn()
    faults = resource.getrusage(resource.RUSAGE_SELF).ru_minflt
    seconds = timed(fn, count)
    return seconds, (resource.getrusage(resource.RUSAGE_SELF).ru_minflt - faults) / count


def rotate(names: list[str], r: int) -> list[str]:
    """Round r starts with a different contender, so none is always first or last."""
    k = r % len(names)
    return names[k:] + names[:k]


def summary(values: list[float]) -> dict:
    return {"median": statistics.median(values), "min": min(values), "max": max(values),
            "runs": len(values)}


def matmul_gflops(a, b, out) -> float:
    seconds = timed(lambda: np.matmul(a, b, out=out))
    return 2 * a.shape[0] * a.shape[1] * b.shape[1] / seconds / 1e9


def conv_products(layer, batch: int) -> dict:
    """Re-run a conv layer's three products on its own operands; seconds and GFLOP/s each.

    Mirrors conv2d.py: y = col @ [W; b],  [dW; db]^T = dy^T @ col,  and dcol = dy @ W^T
    one kernel offset at a time, dy @ W[i, j]^T into a reused buffer (the adds onto dx
    are not products and not timed here). FLOPs count the convolution proper (2 M K F),
    not the bias column, so the rates are the useful work done.
    """
    col, matrix = layer.im2col_operands()
    f = layer.filters
    m = col.shape[0]
    k = layer.params["kernel"].size // f
    dy = np.random.default_rng(0).standard_normal((m, f), dtype=col.dtype)
    flops = 2.0 * m * k * f
    result = {"M": m, "K": k, "F": f, "batch": batch}
    kinds = {"forward": lambda: col @ matrix, "dW": lambda: dy.T @ col}
    if layer.input_grad:
        kernel = layer.params["kernel"]
        part = np.ones((m, kernel.shape[2]), dtype=col.dtype)  # like the layer's reused buffer
        offsets = [(i, j) for i in range(kernel.shape[0]) for j in range(kernel.shape[1])]
        kinds["dX"] = lambda: [np.matmul(dy, kernel[i, j].T, out=part) for i, j in offsets]
    for kind, fn in kinds.items():
        fn()  # operands into cache as they would be after the previous step
        seconds = timed(fn)
        result[kind] = {"seconds": seconds, "gflops": flops / seconds / 1e9}
    return result


def keep_freed_memory() -> bool:
    """glibc's malloc gives arrays of a few MB back to the system when they are freed,
    so the next one page-faults in again (the kernel zeroes each page). minicnn's
    training tells it to keep freed memory (minicnn.ops.memory); here it is told so
    before either contender runs, for both.

    Why on by default: measured here, PyTorch in this benchmark's short loops
    faulted in about 6,000 pages per training step and 144,000 per inference batch
    (--release-freed-memory), but in a whole-epoch run
    (benchmarks/torch_reference_run.py) only about 1,100 per step. Short timing
    loops would make it pay for faults that real training does not; this setting
    gives it the state it reaches by itself (0 faults here). With
    --release-freed-memory, $MINICNN_KEEP_FREED_MEMORY=0 keeps minicnn's training
    from changing the setting. The report prints the counts."""
    return memory.keep_freed_memory()


# ----------------------------------------------------------------------------- main
def main() -> dict:
    args = ARGS
    blas = blas_info()
    threads = int(blas.get("threads") or 1)
    torch, torch_note = load_torch(threads)

    x, y, x_infer, data_note = batches(args)

    print(f"# minicnn vs PyTorch: the tutorial CNN, training batch {args.batch_size}, "
          f"inference batch {args.infer_batch}, float32")
    print(f"CPU: {cpu_name()}, {os.cpu_count()} logical cores; Python {platform.python_version()}")
    blas_line = ", ".join(f"{k}={v}" for k, v in blas.items())
    print(f"BLAS: {blas_line}")
    if args.release_freed_memory:
        os.environ["MINICNN_KEEP_FREED_MEMORY"] = "0"  # minicnn's first step leaves glibc alone
    reused = False if args.release_freed_memory else keep_freed_memory()
    print(f"minicnn host threads for the memory-bound passes (ops.threads.over_batch): "
          f"{minicnn.ops.host_threads()}; OPENBLAS_THREAD_TIMEOUT="
          f"{os.environ.get('OPENBLAS_THREAD_TIMEOUT')}; malloc keeps freed memory "
          f"(off with --release-freed-memory): {reused}")
    print(f"Memory: {memory_info()}")
    if os.environ.get("NUMPY_MADVISE_HUGEPAGE") is None and "defrag=madvise" in memory_info():
        print("  (NumPy asks for huge pages for large arrays and the kernel may stall to compact "
              "memory for them: if minicnn's timings are noisy, rerun with "
              "NUMPY_MADVISE_HUGEPAGE=0 in the environment; it must be set before NumPy loads)")
    print(f"PyTorch: {torch_note}")
    print(f"Data: {data_note}")
    if MINICNN_IMPORTED_TORCH:
        print("WARNING: importing minicnn imported torch; it must not")

    minicnn.set_seed(args.seed)
    model = minicnn_model()
    contenders = {"minicnn": model}
    if torch is not None:
        torch.manual_seed(args.seed)
        for channels_last in (False, True):
            c = TorchContender(torch, channels_last, x, y, x_infer)
            contenders[c.name] = c
    torch_names = [name for name in contenders if name != "minicnn"]

    def train(name):
        if name == "minicnn":
            return lambda: model.train_on_batch(x, y)
        return contenders[name].train_step

    def infer(name):
        if name == "minicnn":
            return lambda: model.predict(x_infer, batch_size=args.infer_batch)
        return contenders[name].infer

    a = np.random.default_rng(1).random((2048, 2048), dtype=np.float32)
    b = np.random.default_rng(2).random((2048, 2048), dtype=np.float32)
    c_out = np.empty_like(a)

    print(f"warming up ({args.warmup} steps each)...", flush=True)
    for name in contenders:
        timed(train(name), args.warmup)
    matmul_gflops(a, b, c_out)
    conv_layers = [layer for layer in model.layers if isinstance(layer, Conv2D)]

    train_rate = {name: [] for name in contenders}
    infer_rate = {name: [] for name in contenders}
    train_faults = {name: [] for name in contenders}  # page faults per step or batch
    infer_faults = {name: [] for name in contenders}
    reference, profiles, products = [], [], []
    torch_profiles = {name: [] for name in torch_names}
    # Training first, then inference: a batch of 256 leaves the memory in a state
    # (large freed arrays, huge pages to compact) that the next training steps pay for.
    for r in range(args.repeats):
        reference.append(matmul_gflops(a, b, c_out))
        for name in rotate(list(contenders), r):
            seconds, faults = block(train(name), args.steps)
            train_rate[name].append(args.batch_size / seconds)
            train_faults[name].append(faults)
        if not args.no_profile:
            settle()
            model.train_on_batch(x, y)  # like block(): one untimed step first
            profiles.append(model.profile_step(x, y))
            products.append([conv_products(layer, args.batch_size) for layer in conv_layers])
            for name in torch_names:
                settle()
                contenders[name].train_step()
                torch_profiles[name].append(contenders[name].profile_step())
        print(f"training round {r + 1}/{args.repeats}: matmul {reference[-1]:.0f} GFLOP/s | "
              + ", ".join(f"{n} {train_rate[n][-1]:.0f}" for n in contenders) + " img/s", flush=True)
    for name in contenders:
        timed(infer(name), 1)  # warm-up at the inference batch
    for r in range(args.repeats):
        reference.append(matmul_gflops(a, b, c_out))
        for name in rotate(list(contenders), r):
            seconds, faults = block(infer(name), args.infer_steps)
            infer_rate[name].append(args.infer_batch / seconds)
            infer_faults[name].append(faults)
        print(f"inference round {r + 1}/{args.repeats}: matmul {reference[-1]:.0f} GFLOP/s | "
              + ", ".join(f"{n} {infer_rate[n][-1]:.0f}" for n in contenders) + " img/s", flush=True)

    results = {"config": vars(args), "blas": blas, "cpu": cpu_name(), "torch": torch_note,
               "data": data_note, "memory": memory_info(),
               "matmul_2048_gflops": summary(reference),
               "train_img_s": {n: summary(v) for n, v in train_rate.items()},
               "infer_img_s": {n: summary(v) for n, v in infer_rate.items()},
               "malloc_keeps_freed_memory": memory.keeping_freed_memory(),
               "train_page_faults_per_step": {n: summary(v) for n, v in train_faults.items()},
               "infer_page_faults_per_batch": {n: summary(v) for n, v in infer_faults.items()}}

    def best_torch(rates):
        return max(torch_names, key=lambda n: statistics.median(rates[n])) if torch_names else None

    for key, rates in (("train", train_rate), ("infer", infer_rate)):
        best = best_torch(rates)
        if best is not None:
            ratios = [m / t for m, t in zip(rates["minicnn"], rates[best])]
            results[f"{key}_vs_torch"] = {"torch": best, **summary(ratios)}

    print()
    print("## Throughput (images/s; median [min-max] over rounds; page faults per step or batch)")
    for title, key, rates, faults in (("training", "train", train_rate, train_faults),
                                      ("inference", "infer", infer_rate, infer_faults)):
        for name in contenders:
            s = summary(rates[name])
            print(f"  {title:9s} {name:11s} {s['median']:8.1f}  [{s['min']:.1f}-{s['max']:.1f}]"
                  f"  {statistics.median(faults[name]):8.0f} faults")
        if f"{key}_vs_torch" in results:
            v = results[f"{key}_vs_torch"]
            print(f"  {title:9s} minicnn / {v['torch']}: {v['median']:.2f}x  "
                  f"[{v['min']:.2f}-{v['max']:.2f}]")

    if profiles:
        report_profile(results, model, conv_layers, profiles, products, reference)
        peer = results.get("train_vs_torch", {}).get("torch")
        if peer is not None:
            report_side_by_side(results, model, profiles, peer, torch_profiles[peer])
    print_markdown(results)
    if args.json:
        write_text_atomic(args.json, json.dumps(results, indent=2))
        print(f"\nwrote {args.json}")
    return results


def report_side_by_side(results, model, profiles, peer: str, peer_profiles: list) -> None:
    """Per layer, minicnn's and PyTorch's forward and backward times in one table."""
    med = statistics.median
    print()
    print(f"## Side by side with {peer} (ms per training step, medians of {len(profiles)} "
          "instrumented steps; PyTorch timed through module hooks, which add a little; "
          "each conv's ReLU counts with its pooling)")
    print(f"  {'layer':18s} {'minicnn fwd':>11s} {'bwd':>7s}   {'torch fwd':>9s} {'bwd':>7s}")
    rows, totals = [], [0.0, 0.0]
    for i, layer in enumerate(model.layers):
        ours = [med([p[k][i] for p in profiles]) * 1e3 for k in ("forward", "backward")]
        theirs = [med([p[k][i] for p in peer_profiles]) * 1e3 for k in ("forward", "backward")]
        totals[0] += sum(ours)
        totals[1] += sum(theirs)
        rows.append({"layer": layer.name, "minicnn_ms": ours, "torch_ms": theirs})
        print(f"  {layer.name:18s} {ours[0]:11.2f} {ours[1]:7.2f}   {theirs[0]:9.2f} {theirs[1]:7.2f}")
    steps = [med([p["step"] for p in profiles]) * 1e3, med([p["step"] for p in peer_profiles]) * 1e3]
    print(f"  {'rest of the step':18s} {steps[0] - totals[0]:11.2f} {'':7s}   "
          f"{steps[1] - totals[1]:9.2f}   (loss, optimizer, checks, autograd's own work)")
    print(f"  {'whole step':18s} {steps[0]:11.2f} {'':7s}   {steps[1]:9.2f}")
    results["side_by_side"] = {"torch": peer, "layers": rows, "step_ms": steps}


def report_profile(results, model, conv_layers, profiles, products, reference) -> None:
    med = statistics.median
    step = med([p["step"] for p in profiles])
    print()
    print(f"## minicnn step breakdown (ms, median of {len(profiles)} instrumented steps; "
          f"step {step * 1e3:.1f} ms)")
    print(f"  {'layer':18s} {'forward':>8s} {'backward':>9s} {'share':>6s}")
    rows = []
    for i, layer in enumerate(model.layers):
        fwd = med([p["forward"][i] for p in profiles])
        bwd = med([p["backward"][i] for p in profiles])
        rows.append({"layer": layer.name, "forward_ms": fwd * 1e3, "backward_ms": bwd * 1e3})
        print(f"  {layer.name:18s} {fwd * 1e3:8.2f} {bwd * 1e3:9.2f} {(fwd + bwd) / step:6.1%}")
    for key in ("loss", "finite check", "optimizer"):
        t = med([p[key] for p in profiles])
        rows.append({"layer": key, "forward_ms": t * 1e3, "backward_ms": 0.0})
        print(f"  {key:18s} {t * 1e3:8.2f} {'':9s} {t / step:6.1%}")
    results["profile"] = {"step_ms": step * 1e3, "layers": rows}

    print()
    ref = med(reference)
    print(f"## Convolution matrix products (median GFLOP/s; plain 2048^3 float32 matmul: "
          f"{ref:.0f} GFLOP/s in the same run)")
    conv_rows, matmul_share = [], []
    for p, round_products in zip(profiles, products):
        matmul_share.append(sum(v["seconds"] for prod in round_products
                                for kind, v in prod.items() if isinstance(v, dict)) / p["step"])
    all_seconds, all_flops = 0.0, 0.0
    for j, layer in enumerate(conv_layers):
        first = products[0][j]
        line = f"  {layer.name:10s} M={first['M']:<6d} K={first['K']:<5d} F={first['F']:<4d}"
        row = {"layer": layer.name, "M": first["M"], "K": first["K"], "F": first["F"]}
        for kind in ("forward", "dW", "dX"):
            if kind not in first:
                line += f" {kind} {'(not needed)':>17s}"
                continue
            rate = med([r[j][kind]["gflops"] for r in products])
            seconds = med([r[j][kind]["seconds"] for r in products])
            all_seconds += seconds
            all_flops += 2.0 * first["M"] * first["K"] * first["F"]
            row[kind] = {"gflops": rate, "ms": seconds * 1e3, "of_matmul": rate / ref}
            line += f" {kind} {rate:6.0f} ({rate / ref:4.0%}) {seconds * 1e3:6.2f} ms"
        conv_rows.append(row)
        print(line)
    overall = all_flops / all_seconds / 1e9
    share = med(matmul_share)
    print(f"  all conv products: {overall:.0f} GFLOP/s = {overall / ref:.0%} of the 2048^3 rate; "
          f"{all_seconds * 1e3:.1f} ms of a {step * 1e3:.1f} ms step")
    print(f"  share of the step that is NOT conv matmul (im2col, col2im, pooling, activations, "
          f"dropout, dense, loss, SGD, Python): {1 - share:.0%}")
    results["conv_products"] = {"layers": conv_rows, "overall_gflops": overall,
                                "overall_of_matmul": overall / ref, "matmul_ms": all_seconds * 1e3,
                                "non_matmul_share": 1 - share}


def print_markdown(results) -> None:
    ref = results["matmul_2048_gflops"]["median"]
    blas = results["blas"]
    train, infer = results["train_img_s"], results["infer_img_s"]
    print()
    malloc = ("glibc keeps freed memory" if results["malloc_keeps_freed_memory"]
              else "glibc's default malloc (--release-freed-memory)")
    print(f"## Summary (markdown; {results['cpu']}, {blas.get('library')} {blas.get('version', '')} "
          f"{blas.get('core', '')}, {blas.get('threads')} threads; data: {results['data']}; {malloc})")
    print()
    has_torch = "train_vs_torch" in results
    if has_torch:
        print("| batch | minicnn img/s | PyTorch img/s | minicnn / PyTorch |")
        print("|---|---:|---:|---:|")
        for title, key, rates in (("training, batch", "train", train), ("inference, batch", "infer", infer)):
            v = results[f"{key}_vs_torch"]
            size = results["config"]["batch_size" if key == "train" else "infer_batch"]
            print(f"| {title} {size} | {rates['minicnn']['median']:.0f} | "
                  f"{rates[v['torch']]['median']:.0f} ({v['torch']}) | **{v['median']:.2f}x** |")
    else:
        print("| batch | minicnn img/s | PyTorch |")
        print("|---|---:|---|")
        print(f"| training, batch {results['config']['batch_size']} | "
              f"{train['minicnn']['median']:.0f} | not run |")
        print(f"| inference, batch {results['config']['infer_batch']} | "
              f"{infer['minicnn']['median']:.0f} | not run |")
    if "conv_products" in results:
        cp = results["conv_products"]
        print()
        print(f"| conv products (GFLOP/s, % of {ref:.0f} GFLOP/s 2048^3 matmul) | forward | dW | dX |")
        print("|---|---:|---:|---:|")
        for row in cp["layers"]:
            cells = [f"{row[k]['gflops']:.0f} ({row[k]['of_matmul']:.0%})" if k in row else "-"
                     for k in ("forward", "dW", "dX")]
            print(f"| {row['layer']} ({row['M']}x{row['K']} @ {row['K']}x{row['F']}) | "
                  + " | ".join(cells) + " |")
        print(f"| all conv products | {cp['overall_gflops']:.0f} ({cp['overall_of_matmul']:.0%}) | | |")
        print()
        print(f"Step time not spent in conv matmuls: {cp['non_matmul_share']:.0%} "
              f"of {results['profile']['step_ms']:.0f} ms.")


if __name__ == "__main__":
    main()
