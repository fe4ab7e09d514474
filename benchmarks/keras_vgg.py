"""Trains the 2017 study's VGG-like network with TensorFlow/Keras on in-memory random data
and prints one JSON line with images/s: the reference catdog-dist is measured against.

    python keras_vgg.py --image-size 64 --batch-size 64 --steps 30 --threads 2
"""
import argparse
import json
import os
import time


def main():
    p = argparse.ArgumentParser()
    p.add_argument("--image-size", type=int, default=64)
    p.add_argument("--batch-size", type=int, default=64)
    p.add_argument("--steps", type=int, default=30)
    p.add_argument("--warmup-steps", type=int, default=3)
    p.add_argument("--threads", type=int, default=os.cpu_count())
    a = p.parse_args()
    os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
    import numpy as np
    import tensorflow as tf
    from tensorflow import keras
    from tensorflow.keras import layers

    tf.config.threading.set_intra_op_parallelism_threads(a.threads)
    tf.config.threading.set_inter_op_parallelism_threads(a.threads)
    model = keras.Sequential([keras.Input((a.image_size, a.image_size, 3))])
    for filters in (32, 64, 128, 256):
        model.add(layers.Conv2D(filters, 3, padding="same", activation="relu"))
        model.add(layers.Conv2D(filters, 3, padding="same", activation="relu"))
        model.add(layers.MaxPooling2D(2))
    model.add(layers.Flatten())
    model.add(layers.Dense(256, activation="relu"))
    model.add(layers.Dropout(0.5))
    model.add(layers.Dense(256, activation="relu"))
    model.add(layers.Dropout(0.5))
    model.add(layers.Dense(1, activation="sigmoid"))
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
    print(json.dumps({"framework": "keras", "tensorflow": tf.__version__, "parameters": model.count_params(),
                      "images_per_s": a.batch_size * a.steps / seconds, "threads": a.threads}))


if __name__ == "__main__":
    main()
