"""Mammogram simulator: synthetic Hologic-like MG studies with amorphous
microcalcification clusters, radiologist-style ROIs and full truth.

Entry points: ``calcnode synth`` (:mod:`dicom_node.commands.synth`),
:func:`training.synth.dataset.generate_dataset` and
``python -m training.synth.preview``. See docs/simulator.md.
"""
