"""TF 1.x graph sources for the graph tests (issue 11), made in tf1.13 at test time (Python 3.7).

``python build_graphs.py OUT`` writes into OUT:

- ``cnn.pb`` / ``cnn.pbtxt``: a ``tf.layers`` CNN (conv, batch norm, dropout, dense, softmax) whose batch norm
  and dropout follow a bool ``is_training`` placeholder, trained a few steps so that the moving averages
  are not their initial values, frozen with ``convert_variables_to_constants`` as a user would (the
  training branches are still in the graph);
- ``cnn_saved_model/``: the same session through ``tf.saved_model.simple_save`` (inputs ``image``, outputs
  ``scores``; ``is_training`` is not in the signature);
- ``cnn_ckpt/model.ckpt.*``: the training graph as a checkpoint (``.meta`` + data): it also holds the
  ``labels`` placeholder, the loss, the optimizer and the saver;
- ``dropout_cnn.pb``: a CNN with the classic TF 1.x dropout of the MNIST tutorials (``mnist_deep.py``):
  ``with tf.name_scope("dropout"): keep_prob = tf.placeholder(tf.float32)`` (op ``dropout/Placeholder``: found
  by structure, not by name) and ``tf.nn.dropout(h, keep_prob)``, no ``tf.cond``; trained a few steps with
  keep_prob 0.5, frozen with keep_prob still a placeholder and the random mask in the graph;
- ``three_outputs.h5``: a standalone-Keras model with a classification, a regression and a sequence head;
- ``images.npy``: 120 inputs of shape (16, 16, 3) in [0, 1]; ``eval.npz``: ``x`` (24 of them), ``y`` (labels);
- ``not_a_graph.pb``: bytes that are not a GraphDef.
"""

import os
import sys

import numpy as np

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")

import tensorflow as tf  # noqa: E402

SIZE = 16
CLASSES = 4


def build_cnn(out):
    graph = tf.Graph()
    with graph.as_default():
        tf.set_random_seed(0)
        image = tf.placeholder(tf.float32, [None, SIZE, SIZE, 3], name="image")
        is_training = tf.placeholder(tf.bool, [], name="is_training")
        labels = tf.placeholder(tf.int64, [None], name="labels")
        x = tf.layers.conv2d(image, 8, 3, padding="same", name="conv1")
        x = tf.layers.batch_normalization(x, training=is_training, name="bn1")
        x = tf.nn.relu(x)
        x = tf.layers.max_pooling2d(x, 2, 2)
        x = tf.layers.conv2d(x, 8, 3, padding="same", activation=tf.nn.relu, name="conv2")
        x = tf.layers.flatten(x)
        x = tf.layers.dropout(x, rate=0.5, training=is_training)
        logits = tf.layers.dense(x, CLASSES, name="logits")
        scores = tf.nn.softmax(logits, name="scores")
        loss = tf.losses.sparse_softmax_cross_entropy(labels, logits)
        with tf.control_dependencies(tf.get_collection(tf.GraphKeys.UPDATE_OPS)):
            train = tf.train.AdamOptimizer(0.01).minimize(loss, name="train")
        tf.identity(tf.reduce_mean(tf.cast(tf.equal(tf.argmax(scores, 1), labels), tf.float32)), name="accuracy")
        saver = tf.train.Saver()
        rng = np.random.RandomState(0)
        with tf.Session(graph=graph) as sess:
            sess.run(tf.global_variables_initializer())
            for _ in range(20):
                batch = rng.uniform(0, 1, size=(16, SIZE, SIZE, 3)).astype("float32")
                target = (batch.mean(axis=(1, 2, 3)) * 1000).astype("int64") % CLASSES
                sess.run(train, {image: batch, labels: target, is_training: True})
            frozen = tf.graph_util.convert_variables_to_constants(sess, graph.as_graph_def(), ["scores"])
            with open(os.path.join(out, "cnn.pb"), "wb") as handle:
                handle.write(frozen.SerializeToString())
            tf.train.write_graph(frozen, out, "cnn.pbtxt", as_text=True)
            tf.saved_model.simple_save(sess, os.path.join(out, "cnn_saved_model"), inputs={"image": image},
                                       outputs={"scores": scores})
            os.makedirs(os.path.join(out, "cnn_ckpt"))
            saver.save(sess, os.path.join(out, "cnn_ckpt", "model.ckpt"))


def build_dropout_cnn(out):
    graph = tf.Graph()
    with graph.as_default():
        tf.set_random_seed(0)
        image = tf.placeholder(tf.float32, [None, SIZE, SIZE, 3], name="image")
        labels = tf.placeholder(tf.int64, [None], name="labels")
        x = tf.layers.conv2d(image, 8, 3, padding="same", activation=tf.nn.relu, name="conv1")
        x = tf.layers.max_pooling2d(x, 2, 2)
        x = tf.layers.flatten(x)
        x = tf.layers.dense(x, 16, activation=tf.nn.relu, name="fc1")
        with tf.name_scope("dropout"):
            keep_prob = tf.placeholder(tf.float32)
            x = tf.nn.dropout(x, keep_prob)
        logits = tf.layers.dense(x, CLASSES, name="logits")
        tf.nn.softmax(logits, name="scores")
        loss = tf.losses.sparse_softmax_cross_entropy(labels, logits)
        train = tf.train.AdamOptimizer(0.01).minimize(loss, name="train")
        rng = np.random.RandomState(2)
        with tf.Session(graph=graph) as sess:
            sess.run(tf.global_variables_initializer())
            for _ in range(10):
                batch = rng.uniform(0, 1, size=(16, SIZE, SIZE, 3)).astype("float32")
                target = (batch.mean(axis=(1, 2, 3)) * 1000).astype("int64") % CLASSES
                sess.run(train, {image: batch, labels: target, keep_prob: 0.5})
            frozen = tf.graph_util.convert_variables_to_constants(sess, graph.as_graph_def(), ["scores"])
    with open(os.path.join(out, "dropout_cnn.pb"), "wb") as handle:
        handle.write(frozen.SerializeToString())


def build_three_outputs(out):
    import keras

    image = keras.layers.Input((SIZE, SIZE, 3), name="image")
    x = keras.layers.Conv2D(8, 3, padding="same", activation="relu")(image)
    x = keras.layers.MaxPooling2D(2)(x)
    pooled = keras.layers.GlobalAveragePooling2D()(x)
    classes = keras.layers.Dense(CLASSES, activation="softmax", name="classes")(pooled)
    box = keras.layers.Dense(2, name="box")(pooled)
    rows = keras.layers.Reshape((SIZE // 2, SIZE // 2 * 8))(x)
    sequence = keras.layers.TimeDistributed(keras.layers.Dense(3), name="sequence")(rows)
    keras.models.Model(image, [classes, box, sequence]).save(os.path.join(out, "three_outputs.h5"))


def main(out):
    if not os.path.isdir(out):
        os.makedirs(out)
    build_cnn(out)
    build_dropout_cnn(out)
    build_three_outputs(out)
    images = np.random.RandomState(1).uniform(0, 1, size=(120, SIZE, SIZE, 3)).astype("float32")
    np.save(os.path.join(out, "images.npy"), images)
    # labelled held-out data for --eval: 24 images and a class per image
    np.savez(os.path.join(out, "eval.npz"), x=images[:24],
             y=(images[:24].mean(axis=(1, 2, 3)) * 1000).astype("int64") % CLASSES)
    with open(os.path.join(out, "not_a_graph.pb"), "wb") as handle:
        handle.write(b"\x00\xff" * 64 + b"this is not a GraphDef\n" * 8)


if __name__ == "__main__":
    main(sys.argv[1])
