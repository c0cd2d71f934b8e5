"""Training and evaluating the calcification-cluster classifier (docs/method.md §6, §7).

``calcnode train`` / ``calcnode evaluate`` (:mod:`.cli`). The pieces:

* :mod:`.labels` - the outcome table (labels.csv) and its matching to the ROIs of a data set;
* :mod:`.features` - segmentation + feature extraction per ROI, with an on-disk cache;
* :mod:`.model` - SMOTE+ENN inside training folds, grid search with patient-grouped
  stratified CV (sensitivity first, then AUC), nested CV, the final fit;
* :mod:`.report` - metrics with bootstrap intervals, ROC and importance figures, JSON and markdown;
* :mod:`.pipeline` - train and evaluate end to end.
"""
