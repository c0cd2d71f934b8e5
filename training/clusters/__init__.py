"""Training and evaluation of the calcification cluster model (views without ROI, docs/clusters.md).

:mod:`.views` reads simulated views (with truth clusters) and real normal views (PNGs);
:mod:`.collect` segments them and labels the candidate clusters (hit rule); :mod:`.train` fits the
:class:`analysis.clusters.ClusterModel`; :mod:`.evaluate` gives the cluster FROC and false marks;
:mod:`.pipeline` ties them to ``calcnode train-clusters`` / ``evaluate-clusters``.
"""
