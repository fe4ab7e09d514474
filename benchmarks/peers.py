"""Trains catdog-dist's networks in TensorFlow/Keras or PyTorch on in-memory random data and
prints one JSON line with images/s: the peers catdog-dist is measured against.

    python peers.py --framework keras|torch --model vgg|resnet|resnet-pool --image-size 64 --batch-size 64 \
        --steps 30 --threads 2 [--layout channels_last|nchw] [--precision fp32|bf16]
    (layout: PyTorch only)

--precision bf16 is each framework's own one-line mixed precision: Keras's `mixed_bfloat16`
policy (bf16 compute, fp32 variables; the sigmoid output in fp32), PyTorch's
`torch.autocast("cpu", dtype=torch.bfloat16)` around forward and loss (oneDNN's AVX512_BF16
kernels where the CPU has them).

The networks are the same layers, shapes and parameter counts as `catdog-dist bench --model`:
vgg is the 2017 study's VGG13-like net (8 conv 3x3 with ReLU, 4 max-pools, dense 256-256-1
with dropout 0.5); resnet is catdog-dist's `resnet` (stride-2 stem conv 3x3x32 + BatchNorm,
four stages of one basic block of two conv 3x3 + BatchNorm with an identity skip, a stride-2
conv 3x3 + BatchNorm entering each new stage, global average pooling, dropout 0.2, dense 1);
resnet-pool is catdog-dist's default, `resnet` with each new stage entered by a 2x2 max pool
and a stride-1 conv 3x3 + BatchNorm instead (the same weights).
Both train with Adam (1e-4) on a sigmoid binary cross-entropy, as catdog-dist does.
"""
import argparse
import json
import os
import time


def keras_model(name, size, precision="fp32"):
    os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
    from tensorflow import keras
    from tensorflow.keras import layers

    keras.mixed_precision.set_global_policy("mixed_bfloat16" if precision == "bf16" else "float32")
    inputs = keras.Input((size, size, 3))
    if name == "vgg":
        x = inputs
        for filters in (32, 64, 128, 256):
            x = layers.Conv2D(filters, 3, padding="same", activation="relu")(x)
            x = layers.Conv2D(filters, 3, padding="same", activation="relu")(x)
            x = layers.MaxPooling2D(2)(x)
        x = layers.Flatten()(x)
        x = layers.Dense(256, activation="relu")(x)
        x = layers.Dropout(0.5)(x)
        x = layers.Dense(256, activation="relu")(x)
        x = layers.Dropout(0.5)(x)
    else:
        def conv_bn(x, filters, stride=1, relu=True):
            x = layers.Conv2D(filters, 3, strides=stride, padding="same", use_bias=False)(x)
            x = layers.BatchNormalization(momentum=0.9)(x)
            return layers.ReLU()(x) if relu else x

        x = conv_bn(inputs, 32, stride=2)
        for stage, filters in enumerate((32, 64, 128, 256)):
            if stage > 0 and name == "resnet-pool":
                x = conv_bn(layers.MaxPooling2D(2)(x), filters)
            elif stage > 0:
                x = conv_bn(x, filters, stride=2)
            skip = x
            x = conv_bn(x, filters)
            x = conv_bn(x, filters, relu=False)
            x = layers.ReLU()(layers.Add()([x, skip]))
        x = layers.GlobalAveragePooling2D()(x)
        x = layers.Dropout(0.2)(x)
    outputs = layers.Dense(1, activation="sigmoid", dtype="float32")(x)
    return keras.Model(inputs, outputs)


def run_keras(a):
    import numpy as np
    import tensorflow as tf
    from tensorflow import keras

    tf.config.threading.set_intra_op_parallelism_threads(a.threads)
    tf.config.threading.set_inter_op_parallelism_threads(a.threads)
    model = keras_model(a.model, a.image_size, a.precision)
    model.compile(optimizer=keras.optimizers.Adam(1e-4), loss="binary_crossentropy")
    rng = np.random.default_rng(0)
    n = a.batch_size * (a.steps + a.warmup_steps)
    x = rng.random((n, a.image_size, a.image_size, 3), dtype=np.float32)
    y = rng.integers(0, 2, (n, 1)).astype(np.float32)
    warm = a.batch_size * a.warmup_steps
    model.fit(x[:warm], y[:warm], batch_size=a.batch_size, epochs=1, verbose=0)
    start = time.perf_counter()
    model.fit(x[warm:], y[warm:], batch_size=a.batch_size, epochs=1, verbose=0)
    seconds = time.perf_counter() - start
    return {"framework": "keras", "version": tf.__version__, "parameters": model.count_params(),
            "images_per_s": a.batch_size * a.steps / seconds}


def torch_model(name):
    import torch.nn as nn

    if name == "vgg":
        layers, channels = [], 3
        for filters in (32, 64, 128, 256):
            for _ in range(2):
                layers += [nn.Conv2d(channels, filters, 3, padding=1), nn.ReLU(inplace=True)]
                channels = filters
            layers.append(nn.MaxPool2d(2))
        return nn.Sequential(*layers, nn.Flatten(), nn.LazyLinear(256), nn.ReLU(inplace=True), nn.Dropout(0.5),
                             nn.Linear(256, 256), nn.ReLU(inplace=True), nn.Dropout(0.5), nn.Linear(256, 1))

    def conv_bn(cin, cout, stride=1, relu=True):
        parts = [nn.Conv2d(cin, cout, 3, stride=stride, padding=1, bias=False), nn.BatchNorm2d(cout, momentum=0.1)]
        return parts + ([nn.ReLU(inplace=True)] if relu else [])

    class Block(nn.Module):
        def __init__(self, filters):
            super().__init__()
            self.body = nn.Sequential(*conv_bn(filters, filters), *conv_bn(filters, filters, relu=False))
            self.relu = nn.ReLU(inplace=True)

        def forward(self, x):
            return self.relu(self.body(x) + x)

    parts, channels = conv_bn(3, 32, stride=2), 32
    for stage, filters in enumerate((32, 64, 128, 256)):
        if stage > 0 and name == "resnet-pool":
            parts += [nn.MaxPool2d(2)] + conv_bn(channels, filters)
        elif stage > 0:
            parts += conv_bn(channels, filters, stride=2)
        parts.append(Block(filters))
        channels = filters
    return nn.Sequential(*parts, nn.AdaptiveAvgPool2d(1), nn.Flatten(), nn.Dropout(0.2), nn.Linear(256, 1))


def run_torch(a):
    import torch

    torch.set_num_threads(a.threads)
    torch.set_num_interop_threads(a.threads)
    torch.manual_seed(0)
    model = torch_model(a.model)
    layout = torch.channels_last if a.layout == "channels_last" else torch.contiguous_format
    x = torch.rand(a.batch_size, 3, a.image_size, a.image_size).contiguous(memory_format=layout)
    y = torch.randint(0, 2, (a.batch_size, 1)).float()
    model(x[:1])  # sizes the lazy layer
    model = model.to(memory_format=layout)
    optimizer = torch.optim.Adam(model.parameters(), lr=1e-4)
    loss_fn = torch.nn.BCEWithLogitsLoss()

    def step():
        optimizer.zero_grad(set_to_none=True)
        with torch.autocast("cpu", dtype=torch.bfloat16, enabled=a.precision == "bf16"):
            loss = loss_fn(model(x), y)
        loss.backward()
        optimizer.step()

    for _ in range(a.warmup_steps):
        step()
    start = time.perf_counter()
    for _ in range(a.steps):
        step()
    seconds = time.perf_counter() - start
    return {"framework": "torch", "version": torch.__version__, "layout": a.layout,
            "parameters": sum(p.numel() for p in model.parameters()), "images_per_s": a.batch_size * a.steps / seconds}


def main():
    p = argparse.ArgumentParser()
    p.add_argument("--framework", choices=["keras", "torch"], required=True)
    p.add_argument("--model", choices=["vgg", "resnet", "resnet-pool"], default="vgg")
    p.add_argument("--image-size", type=int, default=64)
    p.add_argument("--batch-size", type=int, default=64)
    p.add_argument("--steps", type=int, default=30)
    p.add_argument("--warmup-steps", type=int, default=3)
    p.add_argument("--threads", type=int, default=os.cpu_count())
    p.add_argument("--layout", choices=["channels_last", "nchw"], default="channels_last")
    p.add_argument("--precision", choices=["fp32", "bf16"], default="fp32")
    a = p.parse_args()
    result = run_keras(a) if a.framework == "keras" else run_torch(a)
    result.update({"model": a.model, "image_size": a.image_size, "batch_size": a.batch_size, "threads": a.threads,
                   "precision": a.precision})
    print(json.dumps(result))


if __name__ == "__main__":
    main()
