"""The data-driven selectors: ``score`` (gradient Fisher per parameter) and ``learned`` (group-lasso warm-up).

Both leave the model as they found it: the head and every unit are restored after ranking, so
the run that follows trains the chosen units from the base exactly as a baseline selector's would,
and only the choice differs.
"""

from __future__ import annotations

import numpy as np

from edgepatch.kinds import get_kind
from edgepatch.kinds.keras_sites import head_layer
from edgepatch.train.budget.selection import SelectionContext, Selector, Unit, register_selector

GROUP_LASSO_STRENGTH = 0.05  # in Adam steps per step; at 0.5 every unit of MobileNetV2 fell to zero in one eurosat epoch
HEAD_EPOCHS = 3  # head fitted on cached features before scoring: gradients of a random head are noise


def _grouped(units: list[Unit]) -> tuple[list[list], list]:
    """Each unit's trained variables, and all of them in one list (the order gradients come in)."""
    groups = [get_kind(unit.kind).trainable_variables(unit.layer) for unit in units]
    return groups, [v for group in groups for v in group]


class _Restored:
    """Snapshot the head's and the units' variables (``unit_variables``); put their values back on exit."""

    def __init__(self, model, unit_variables: list):
        self.variables = [*head_layer(model).weights, *unit_variables]

    def __enter__(self):
        self.values = [v.numpy() for v in self.variables]
        return self

    def __exit__(self, *exc):
        for variable, value in zip(self.variables, self.values):
            variable.assign(value)
        return False


def _loss():
    import keras

    return keras.losses.SparseCategoricalCrossentropy(from_logits=True)


def _rank_by(units: list[Unit], totals: np.ndarray) -> list[Unit]:
    """Units by ``totals`` per parameter, highest first (ties: nearer the output first)."""
    per_parameter = totals / np.array([unit.parameters for unit in units], dtype=np.float64)
    order = sorted(range(len(units)), key=lambda i: (-per_parameter[i], -i))
    return [units[i] for i in order]


class ScoreSelector(Selector):
    name = "score"
    help = "empirical Fisher (squared loss gradient) per parameter, after fitting the head on cached features"

    def rank(self, units, context: SelectionContext):
        import tensorflow as tf

        from edgepatch.train.head_cache import fit_head_on_features

        model = context.model
        groups, flat = _grouped(units)
        loss = _loss()

        @tf.function
        def gradients(images, labels):
            with tf.GradientTape() as tape:
                value = loss(labels, model(images, training=False))
            return tape.gradient(value, flat)

        totals = np.zeros(len(units))
        with _Restored(model, flat):
            fit_head_on_features(model, context.features_data, learning_rate=context.learning_rate,
                                 epochs=HEAD_EPOCHS, batch_size=context.batch_size, seed=context.seed, verbose=0)
            batches = context.train_data if context.score_batches is None else \
                context.train_data.take(context.score_batches)
            for images, labels in batches:
                grads = iter(gradients(images, labels))
                for index, group in enumerate(groups):
                    totals[index] += sum(float(tf.reduce_sum(tf.square(next(grads)))) for _ in group)
        return _rank_by(units, totals)


class LearnedSelector(Selector):
    name = "learned"
    help = "every unit trains for a warm-up under a group-lasso penalty; ranked by how far each moved"

    def rank(self, units, context: SelectionContext):
        import keras
        import tensorflow as tf

        model = context.model
        groups, flat = _grouped(units)
        head = list(head_layer(model).trainable_weights)
        optimizer = keras.optimizers.Adam(context.learning_rate)
        optimizer.build([*flat, *head])  # its slots exist before the traced step uses them
        loss = _loss()
        with _Restored(model, flat) as restored:
            origin = [tf.constant(value) for value in restored.values[len(head_layer(model).weights):]]
            shrink = GROUP_LASSO_STRENGTH * context.learning_rate

            @tf.function
            def step(images, labels):
                with tf.GradientTape() as tape:
                    value = loss(labels, model(images, training=True))
                trained = [*flat, *head]
                optimizer.apply_gradients(zip(tape.gradient(value, trained), trained))
                position = 0
                for unit, group in zip(units, groups):  # proximal step of the group lasso, one group per unit
                    starts = origin[position:position + len(group)]
                    changes = [v - s for v, s in zip(group, starts)]
                    norm = tf.sqrt(tf.add_n([tf.reduce_sum(tf.square(c)) for c in changes]))
                    keep = tf.maximum(0.0, 1.0 - shrink * unit.parameters ** 0.5 / tf.maximum(norm, 1e-12))
                    for variable, start, change in zip(group, starts, changes):
                        variable.assign(start + keep * change)
                    position += len(group)

            for _ in range(context.warmup_epochs):
                for images, labels in context.train_data:
                    step(images, labels)
            moved = np.zeros(len(units))
            position = 0
            for index, group in enumerate(groups):
                for variable in group:
                    moved[index] += float(np.sum(np.square(variable.numpy() - origin[position].numpy())))
                    position += 1
        return _rank_by(units, moved)


register_selector(ScoreSelector())
register_selector(LearnedSelector())
