"""
# Infinite-width kernels as scikit-learn estimators

`ntkit.estimators` wraps the NTK and NNGP of fully-connected networks as scikit-learn
estimators: the architecture is a few parameters (`depth`, the number `fix` of frozen bottom
layers, the activation), the learner a C-SVM on the precomputed kernel (or kernel ridge).
Arora et al. (2020) found such kernels strong on small data sets; `ntkit uci` runs their
protocol on the UCI collection. Here the same idea on a set that scikit-learn ships, the
wine data, with the estimators inside an ordinary `Pipeline` and `GridSearchCV`.
"""

import os

import matplotlib.pyplot as plt
import numpy as np
from sklearn.datasets import load_wine
from sklearn.model_selection import GridSearchCV, train_test_split
from sklearn.pipeline import make_pipeline
from sklearn.preprocessing import StandardScaler

from ntkit.estimators import NNGPClassifier, NTKClassifier

# NTKIT_EXAMPLES_SMALL=1 runs every example at a reduced size (the docs build test uses it).
SMALL = os.environ.get("NTKIT_EXAMPLES_SMALL") == "1"
DEPTHS = [1, 2] if SMALL else [1, 2, 3, 4]
CS = [1.0, 10.0] if SMALL else [0.1, 1.0, 10.0, 100.0]
FOLDS = 3 if SMALL else 5

# %%
# ## Data
#
# 178 wines, 13 features, 3 classes; a stratified quarter held out for the final test.

X, y = load_wine(return_X_y=True)
X_train, X_test, y_train, y_test = train_test_split(X, y, test_size=0.25, stratify=y,
                                                    random_state=0)

# %%
# ## Grid search over the architecture and C
#
# The features are standardised first: the kernels see inputs through `x . x' / d`. `fix`
# (at most `depth`) is 0, the usual NTK, or 1, the first layer frozen.

ntk_grid = {"ntkclassifier__depth": DEPTHS, "ntkclassifier__fix": [0, 1],
            "ntkclassifier__C": CS}
ntk_search = GridSearchCV(make_pipeline(StandardScaler(), NTKClassifier()), ntk_grid,
                          cv=FOLDS).fit(X_train, y_train)

nngp_grid = {"nngpclassifier__depth": DEPTHS, "nngpclassifier__C": CS}
nngp_search = GridSearchCV(make_pipeline(StandardScaler(), NNGPClassifier()), nngp_grid,
                           cv=FOLDS).fit(X_train, y_train)

for name, search in (("NTK", ntk_search), ("NNGP", nngp_search)):
    best = {k.split("__")[1]: v for k, v in search.best_params_.items()}
    print(f"{name:>4}: best {best}, cross-validated accuracy {search.best_score_:.3f}, "
          f"test accuracy {search.score(X_test, y_test):.3f}")

# %%
# ## Cross-validated accuracy by depth
#
# For each depth, the best over `C` (and, for the NTK, one line per `fix`).


def best_by_depth(search, prefix, **fixed):
    results = search.cv_results_
    scores = []
    for depth in DEPTHS:
        keep = results[f"param_{prefix}__depth"] == depth
        for name, value in fixed.items():
            keep &= results[f"param_{prefix}__{name}"] == value
        scores.append(np.max(results["mean_test_score"][keep]))
    return scores


curves = {f"NTK, fix = {fix}": best_by_depth(ntk_search, "ntkclassifier", fix=fix)
          for fix in (0, 1)}
curves["NNGP"] = best_by_depth(nngp_search, "nngpclassifier")
fig, ax = plt.subplots(figsize=(5, 4))
for (label, scores), style in zip(curves.items(), ("o-", "o-", "s--"), strict=True):
    ax.plot(DEPTHS, scores, style, label=label)
# The axis from 0.9 at most: on this easy set every kernel is within a few points.
bottom = min(0.9, min(min(scores) for scores in curves.values()) - 0.01)
ax.set(xlabel="depth (hidden layers)", ylabel=f"{FOLDS}-fold CV accuracy", xticks=DEPTHS,
       ylim=(bottom, 1.0), title="Wine: ReLU kernels with a C-SVM")
ax.legend()
fig.tight_layout()
plt.show()
