"""Image-quality metrics on the FID Inception-v3: FID, KID, IS, precision/recall.

Numbers follow pytorch-fid's protocol by default (TF Inception 2015-12-05 pool3 features, bilinear
resize to 299) and carry that protocol with them. Nothing here imports torchvision.
"""

from .evaluate import METRICS, TrainingEvaluator, evaluate_images, write_metrics_json
from .features import (
    RESIZE_MODES,
    FeatureExtractor,
    LogitsUnavailableError,
    extract_features,
    preprocess,
)
from .fid import SmallSampleWarning, feature_stats, fid_from_features, fid_from_stats
from .inception import (
    WEIGHTS_SHA1,
    InceptionWeightsError,
    cache_root,
    cached_weights_path,
    load_inception,
    resolve_inception_path,
)
from .inception_score import inception_score
from .kid import kid_from_features
from .precision_recall import precision_recall

__all__ = [
    "METRICS",
    "RESIZE_MODES",
    "WEIGHTS_SHA1",
    "FeatureExtractor",
    "InceptionWeightsError",
    "LogitsUnavailableError",
    "SmallSampleWarning",
    "TrainingEvaluator",
    "cache_root",
    "cached_weights_path",
    "evaluate_images",
    "extract_features",
    "feature_stats",
    "fid_from_features",
    "fid_from_stats",
    "inception_score",
    "kid_from_features",
    "load_inception",
    "precision_recall",
    "preprocess",
    "resolve_inception_path",
    "write_metrics_json",
]
