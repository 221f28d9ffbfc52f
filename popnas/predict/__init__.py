"""Predictors of the search: time features, dynamic reindex, the accuracy and time predictors, and their quality.

This layer imports only ``popnas.space``; the search loop decides when to fit and what to predict.
TensorFlow loads with ``popnas.predict.accuracy``, not with this package.
"""

from popnas.predict.features import TIME_FEATURES, dynamic_reindex, time_feature_frame, time_features
from popnas.predict.quality import mape, spearman

__all__ = ["TIME_FEATURES", "dynamic_reindex", "mape", "spearman", "time_feature_frame", "time_features"]
