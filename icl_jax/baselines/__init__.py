"""Classical in-context learners: the baselines a meta-trained model is compared against.

Classifiers: `BASELINES` (classifiers.py, logreg.py). Regressors: `REGRESSION_BASELINES`
(regression.py), with the scikit-learn tree learners (trees.py) in `HOST_REGRESSION_BASELINES`.
"""

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
from icl_jax.baselines.common import normalized_squared_error_BxT
from icl_jax.baselines.logreg import DEFAULT_L2
from icl_jax.baselines.logreg import DEFAULT_NUM_ITERS
from icl_jax.baselines.logreg import fit_logreg
from icl_jax.baselines.logreg import LogRegFit
from icl_jax.baselines.logreg import predict_logreg
from icl_jax.baselines.regression import DEFAULT_GD_LR
from icl_jax.baselines.regression import DEFAULT_GD_NUM_STEPS
from icl_jax.baselines.regression import DEFAULT_RIDGE_LAM
from icl_jax.baselines.regression import GD_LR_GRID
from icl_jax.baselines.trees import HOST_REGRESSION_BASELINES
from icl_jax.baselines.regression import make_regression_baselines
from icl_jax.baselines.regression import normalized_squared_error
from icl_jax.baselines.regression import normalized_squared_error_interval
from icl_jax.baselines.regression import predict_averaging
from icl_jax.baselines.trees import predict_boosting
from icl_jax.baselines.regression import predict_gd
from icl_jax.baselines.regression import predict_gp_posterior_mean
# classifiers.predict_knn holds the plain name.
from icl_jax.baselines.regression import predict_knn as predict_knn_regression
from icl_jax.baselines.regression import predict_lasso
from icl_jax.baselines.regression import predict_least_squares
from icl_jax.baselines.regression import predict_ridge
from icl_jax.baselines.trees import predict_tree
from icl_jax.baselines.regression import REGRESSION_BASELINES
from icl_jax.baselines.regression import tune_gd_lr
