"""A Keras 2 CNN of the usual kind, ported to minicnn by renaming its imports.

    MINICNN_CIFAR10=../shared/datasets/cifar-10-python.tar.gz python examples/keras2_cnn.py
    python examples/keras2_cnn.py --train-limit 2000 --test-limit 500 --epochs 2   # a quick look

Below the imports this is plain Keras 2.2 code: write ``keras`` for ``minicnn``
in the imports and Keras 2.2.4 runs it unchanged. Three blocks of two 3x3
Conv2D (32, 64, 128 filters, L2 weight decay) each followed by
BatchNormalization and ReLU, then max-pooling and dropout; a softmax Dense
head. Adam, random shifts and mirror images from ImageDataGenerator,
EarlyStopping on the validation loss (the best weights restored), and
ModelCheckpoint keeping the best whole model, which is loaded back to report
the test accuracy. ``cifar10.load_data()`` reads the archive named by
``$MINICNN_CIFAR10``, else finds or downloads it as Keras does.
"""
import argparse
import os

from minicnn import regularizers
from minicnn.callbacks import EarlyStopping, ModelCheckpoint
from minicnn.datasets import cifar10
from minicnn.layers import (Activation, BatchNormalization, Conv2D, Dense, Dropout, Flatten,
                            MaxPooling2D)
from minicnn.models import Sequential, load_model
from minicnn.optimizers import Adam
from minicnn.preprocessing.image import ImageDataGenerator
from minicnn.utils import to_categorical


def build_model(weight_decay):
    model = Sequential()
    for block, filters in enumerate((32, 64, 128)):
        for _ in range(2):
            extra = {"input_shape": (32, 32, 3)} if not model.layers else {}
            model.add(Conv2D(filters, (3, 3), padding="same",
                             kernel_regularizer=regularizers.l2(weight_decay), **extra))
            model.add(BatchNormalization())
            model.add(Activation("relu"))
        model.add(MaxPooling2D(pool_size=(2, 2)))
        model.add(Dropout(0.2 + 0.1 * block))
    model.add(Flatten())
    model.add(Dense(10, activation="softmax"))
    return model


def main():
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--epochs", type=int, default=50)
    parser.add_argument("--batch-size", type=int, default=64)
    parser.add_argument("--lr", type=float, default=1e-3)
    parser.add_argument("--weight-decay", type=float, default=1e-4)
    parser.add_argument("--patience", type=int, default=8)
    parser.add_argument("--train-limit", type=int, default=None, help="use the first N training images")
    parser.add_argument("--test-limit", type=int, default=None, help="use the first N test images")
    parser.add_argument("--out", default="runs/keras2_cnn", help="folder for the best model")
    args = parser.parse_args()

    (x_train, y_train), (x_test, y_test) = cifar10.load_data()
    x_train, y_train = x_train[:args.train_limit], y_train[:args.train_limit]
    x_test, y_test = x_test[:args.test_limit], y_test[:args.test_limit]
    x_train = x_train.astype("float32") / 255
    x_test = x_test.astype("float32") / 255
    y_train = to_categorical(y_train, 10)
    y_test = to_categorical(y_test, 10)
    print(x_train.shape[0], "train samples,", x_test.shape[0], "test samples")

    model = build_model(args.weight_decay)
    model.compile(loss="categorical_crossentropy", optimizer=Adam(lr=args.lr),
                  metrics=["accuracy"])
    model.summary()

    datagen = ImageDataGenerator(width_shift_range=0.1, height_shift_range=0.1,
                                 horizontal_flip=True, fill_mode="nearest")
    datagen.fit(x_train)
    os.makedirs(args.out, exist_ok=True)
    best = os.path.join(args.out, "best_model.npz")
    callbacks = [EarlyStopping(monitor="val_loss", patience=args.patience,
                               restore_best_weights=True),
                 ModelCheckpoint(best, monitor="val_loss", save_best_only=True)]
    model.fit_generator(datagen.flow(x_train, y_train, batch_size=args.batch_size),
                        steps_per_epoch=len(x_train) // args.batch_size,
                        epochs=args.epochs, validation_data=(x_test, y_test),
                        callbacks=callbacks, verbose=2)

    model = load_model(best)
    scores = model.evaluate(x_test, y_test, verbose=0)
    print("Test loss:", scores[0])
    print("Test accuracy:", scores[1])


if __name__ == "__main__":
    main()
