"""Training and evaluating the calcification selection CNN (HDoGReg's regression network).

* :mod:`.patches` - training patches around HDoG candidates, with per-particle truth;
* :mod:`.train` - ``calcnode train-seg``: the network and its operating point;
* :mod:`.evaluate` - ``calcnode evaluate-seg``: FROC, IoU and mIoU against truth;
* :mod:`.ceiling` - ``calcnode seg-ceiling``: the ideal observer's bound on a simulated set.

The network itself and its use at analysis time live in :mod:`analysis.segmentation`.
"""
