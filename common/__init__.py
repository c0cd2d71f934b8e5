"""Bottom-layer helpers shared by every package of calcnode (``dicom_node``, ``training``,
``sr_templates``, ``bench``): small, dependency-free building blocks such as
:mod:`common.durable` (atomic writes that survive a power cut). This package imports nothing of
ours, so any layer may import it without creating a cycle; ``analysis`` alone stays independent
of it (it serialises to bytes and leaves the writing to its callers).
"""
