"""The accuracy predictor: an ensemble of attention and LSTM networks that read the cell encoding.

Each network embeds the inputs and operators of every block, computes self-attention over the
sequence of blocks and reads the result with a bidirectional LSTM, ending in one sigmoid unit:
the expected proxy-training accuracy. The ensemble has one network per fold of the training
results, and a prediction is the mean over the ensemble.

Time features and the time predictor live in ``popnas.predict.features`` and ``popnas.predict.time``.
"""

from __future__ import annotations

import logging
from collections.abc import Sequence

import keras
import numpy as np
from keras import layers
from sklearn.model_selection import KFold

from popnas.space import Cell, SearchSpace

logger = logging.getLogger(__name__)

EMBEDDING_SIZE = 10
"""Width of the embedding of each input and each operator, so a block is 4 embeddings wide."""
ATTENTION_FILTERS = 16
"""Filters of the two pointwise convolutions that make the attention queries and keys."""
LSTM_UNITS = 48
"""Units of each direction of the bidirectional LSTM."""
PREDICT_BATCH_SIZE = 8192
"""Cells per batch at prediction time. The search predicts 5,000 to 40,000 cells per step."""


class AccuracyPredictor:
    """Predicts the proxy-training accuracy of cells of ``space`` from the accuracies measured so far.

    ``folds`` networks are trained, each on the results outside one fold of a seeded shuffled
    k-fold split, with early stopping on that fold. Cells are encoded in canonical form, so
    isomorphic cells get the same prediction and the training set needs no augmentation with
    equivalent cells. Training is seeded with ``seed + fold``, so the same seed and results give
    the same predictions within one process (TensorFlow on CPU; other devices may differ).

    ``epochs`` is the maximum number of epochs, ``batch_size`` the training batch size,
    ``learning_rate`` that of Adam, ``l2`` the L2 penalty on the LSTM and output weights and
    ``patience`` the epochs without improvement of the held-out loss before training stops.
    """

    def __init__(
        self,
        space: SearchSpace,
        *,
        folds: int = 5,
        seed: int = 0,
        epochs: int = 30,
        batch_size: int = 8,
        learning_rate: float = 0.004,
        l2: float = 1e-5,
        patience: int = 5,
    ) -> None:
        problems = []
        if folds < 2:
            problems.append(f"folds must be at least 2, received folds={folds}")
        if epochs < 1:
            problems.append(f"epochs must be at least 1, received epochs={epochs}")
        if batch_size < 1:
            problems.append(f"batch_size must be at least 1, received batch_size={batch_size}")
        if not learning_rate > 0:
            problems.append(f"learning_rate must be positive, received learning_rate={learning_rate}")
        if not l2 >= 0:
            problems.append(f"l2 must be zero or positive, received l2={l2}")
        if patience < 0:
            problems.append(f"patience must be zero or positive, received patience={patience}")
        if problems:
            raise ValueError("invalid accuracy predictor settings: " + "; ".join(problems))

        self.space = space
        self.folds = folds
        self.seed = seed
        self.epochs = epochs
        self.batch_size = batch_size
        self.learning_rate = learning_rate
        self.l2 = l2
        self.patience = patience
        # One compiled network serves every fold, fit and prediction, and each fold loads its own
        # weights into it. Keras then traces the train function once per predictor instead of
        # once per fold, and each trace took about 5 seconds on the 2-core development machine.
        self._network: keras.Model | None = None
        self._optimizer_start: list[np.ndarray] = []
        self._fold_weights: list[list[np.ndarray]] = []

    def fit(self, cells: Sequence[Cell], accuracies: Sequence[float]) -> None:
        """Train the ensemble on ``cells`` and their measured ``accuracies`` (each in [0, 1]).

        With fewer results than ``folds``, the ensemble has one network per result instead, so
        each fold holds out one result. Fewer than 2 results raise ValueError, because no result
        would be left to stop training on. Lengths that differ, accuracies outside [0, 1] and
        cells outside the search space also raise ValueError. After an error the previous
        ensemble stays.

        NOTE: ``keras.utils.set_random_seed`` reseeds the global Python, NumPy and TensorFlow
        generators for each fold, so code that draws from those global generators after a fit
        draws a fixed sequence.
        """
        targets = np.asarray(accuracies, dtype=np.float64).reshape(-1)
        if len(cells) != len(targets):
            raise ValueError(
                f"cells and accuracies must have the same length, received {len(cells)} cells "
                f"and {len(targets)} accuracies"
            )
        if len(cells) < 2:
            raise ValueError(
                f"the accuracy predictor needs at least 2 results to fit (one to train on, one to stop "
                f"early on), received {len(cells)}"
            )
        invalid = [value for value in targets if not (0.0 <= value <= 1.0)]
        if invalid:
            raise ValueError(f"accuracies must lie in [0, 1], received {invalid[:5]}")
        inputs, operators = self._encode(cells)

        folds = min(self.folds, len(cells))
        if folds < self.folds:
            logger.warning(
                "accuracy predictor: %d results are fewer than folds=%d, training an ensemble of %d networks",
                len(cells),
                self.folds,
                folds,
            )
        network = self._compiled_network()
        splitter = KFold(n_splits=folds, shuffle=True, random_state=self.seed)
        fold_weights = []
        for fold, (train_rows, held_out_rows) in enumerate(splitter.split(inputs)):
            keras.utils.set_random_seed(self.seed + fold)
            # A network built now draws its initial weights from the seed just set.
            network.set_weights(self._build_network().get_weights())
            for variable, value in zip(network.optimizer.variables, self._optimizer_start, strict=True):
                variable.assign(value)
            history = network.fit(
                (inputs[train_rows], operators[train_rows]),
                targets[train_rows],
                validation_data=((inputs[held_out_rows], operators[held_out_rows]), targets[held_out_rows]),
                epochs=self.epochs,
                batch_size=self.batch_size,
                shuffle=True,
                callbacks=[
                    keras.callbacks.EarlyStopping(monitor="val_loss", patience=self.patience, restore_best_weights=True)
                ],
                verbose=0,
            )
            held_out_losses = history.history["val_loss"]
            logger.debug(
                "accuracy predictor: fold %d of %d trained for %d epochs, best held-out MSE %.5f",
                fold + 1,
                folds,
                len(held_out_losses),
                min(held_out_losses),
            )
            fold_weights.append(network.get_weights())
        self._fold_weights = fold_weights

    def predict(self, cells: Sequence[Cell]) -> np.ndarray:
        """Predict the accuracy of ``cells``: the ensemble mean, float64 in [0, 1], shape (len(cells),).

        Raises RuntimeError before the first successful fit and ValueError for cells outside the
        search space.
        """
        if self._network is None or not self._fold_weights:
            raise RuntimeError("the accuracy predictor has not been fitted, so call fit() with results first")
        if not cells:
            return np.zeros(0, dtype=np.float64)
        inputs, operators = self._encode(cells)
        total = np.zeros(len(cells), dtype=np.float64)
        for weights in self._fold_weights:
            self._network.set_weights(weights)
            # Eager calls on large batches skip tracing a predict function. On the 2-core development
            # machine that trace took longer than predicting 20,000 cells.
            for start in range(0, len(cells), PREDICT_BATCH_SIZE):
                rows = slice(start, start + PREDICT_BATCH_SIZE)
                output = self._network((inputs[rows], operators[rows]), training=False)
                total[rows] += keras.ops.convert_to_numpy(output).reshape(-1)
        # Clipping only absorbs float32 rounding of the sigmoid.
        return np.clip(total / len(self._fold_weights), 0.0, 1.0)

    def _encode(self, cells: Sequence[Cell]) -> tuple[np.ndarray, np.ndarray]:
        for cell in cells:
            self.space.check_cell(cell)
        return self.space.encode([cell.canonical() for cell in cells])

    def _compiled_network(self) -> keras.Model:
        if self._network is None:
            network = self._build_network()
            network.compile(
                optimizer=keras.optimizers.Adam(learning_rate=self.learning_rate),
                loss="mean_squared_error",
                # XLA compilation took longer than the training it sped up (measured on CPU). Running
                # 16 batches per call cuts the per-batch overhead, which dominates with batches of 8.
                jit_compile=False,
                steps_per_execution=16,
            )
            network.optimizer.build(network.trainable_variables)
            self._optimizer_start = [keras.ops.convert_to_numpy(variable) for variable in network.optimizer.variables]
            self._network = network
        return self._network

    def _build_network(self) -> keras.Model:
        blocks = self.space.max_blocks
        regularizer = keras.regularizers.L2(self.l2) if self.l2 > 0 else None

        inputs = keras.Input(shape=(blocks, 2), dtype="int32", name="inputs")
        operators = keras.Input(shape=(blocks, 2), dtype="int32", name="operators")
        # Code 0 marks a missing block. Reshape would drop the per-code mask that mask_zero makes,
        # so the block mask is computed here and passed to the layers that read the block sequence.
        block_mask = keras.ops.any(keras.ops.not_equal(operators, 0), axis=-1)

        embedded_inputs = layers.Embedding(self.space.input_vocabulary, EMBEDDING_SIZE, name="input_embedding")(inputs)
        embedded_operators = layers.Embedding(
            self.space.operator_vocabulary, EMBEDDING_SIZE, name="operator_embedding"
        )(operators)
        # (cells, blocks, 2, 2 * size) -> (cells, blocks, 4 * size): one feature vector per block,
        # ordered input_1, operator_1, input_2, operator_2.
        embedded = layers.Concatenate()([embedded_inputs, embedded_operators])
        sequence = layers.Reshape((blocks, 4 * EMBEDDING_SIZE))(embedded)

        query = layers.Conv1D(ATTENTION_FILTERS, 1, activation="relu", name="query")(sequence)
        key = layers.Conv1D(ATTENTION_FILTERS, 1, activation="relu", name="key")(sequence)
        attended = layers.Attention(name="self_attention")([query, sequence, key], mask=[block_mask, block_mask])

        # The sequence has only max_blocks steps, so unrolling it replaces the while loop of the
        # LSTM. That halved the fit time of 300 results on the 2-core development machine.
        lstm = layers.LSTM(LSTM_UNITS, kernel_regularizer=regularizer, recurrent_regularizer=regularizer, unroll=True)
        recurrent = layers.Bidirectional(lstm)(attended, mask=block_mask)
        accuracy = layers.Dense(1, activation="sigmoid", kernel_regularizer=regularizer, name="accuracy")(recurrent)
        return keras.Model(inputs=(inputs, operators), outputs=accuracy, name="accuracy_predictor")
