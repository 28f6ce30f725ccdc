"""Classical in-context learners: the baselines a meta-trained model is compared against."""

from icl_jax.baselines.classifiers import accuracy_per_position
from icl_jax.baselines.classifiers import BASELINES
from icl_jax.baselines.classifiers import DEFAULT_SGD_LR
from icl_jax.baselines.classifiers import make_baselines
from icl_jax.baselines.classifiers import predict_centroid
from icl_jax.baselines.classifiers import predict_knn
from icl_jax.baselines.classifiers import predict_majority
from icl_jax.baselines.classifiers import predict_sgd
from icl_jax.baselines.classifiers import SGD_LR_GRID
from icl_jax.baselines.classifiers import tune_sgd_lr
from icl_jax.baselines.logreg import DEFAULT_L2
from icl_jax.baselines.logreg import DEFAULT_NUM_ITERS
from icl_jax.baselines.logreg import fit_logreg
from icl_jax.baselines.logreg import LogRegFit
from icl_jax.baselines.logreg import predict_logreg
