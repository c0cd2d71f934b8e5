"""pyradiomics features of many small objects at once, with pyradiomics' values.

:func:`batched_radiomics_rows` computes what
:func:`analysis.features.pyrad_reference.radiomics_rows_reference` computes (one
``RadiomicsFeatureExtractor.execute`` per object; settings in :mod:`analysis.features.pyrad_reference`),
but pays pyradiomics' per-call Python overhead (SimpleITK images, mask checks, ~100 feature
functions each doing a few numpy operations on tiny arrays) once per batch of objects.
Written against pyradiomics 3.1.4 (segment-based, native 2D image, force2D off, fixed bin
width, default feature-class settings).

Per object, as pyradiomics does it: the mask's bounding box (``checkMask`` +
``cropToTumorMask`` without padding; the arrays handed to the C code have that shape); the
discretisation of ``imageoperations.getBinEdges``/``binImage`` (edges from the object's own
minimum); the texture matrices from the same C functions with the same arguments
(``radiomics._cmatrices.calculate_glcm/glrlm/glszm/gldm/ngtdm``), reduced to the gray levels
present (pyradiomics deletes the others); shape2D by ``_cshape.calculate_coefficients2D``,
``RadiomicsShape2D``'s eigenvalue code and its feature methods.

Per batch, the feature formulas of ``firstorder.py``, ``glcm.py``, ``glrlm.py``,
``glszm.py``, ``gldm.py`` and ``ngtdm.py``, operation by operation as pyradiomics writes them,
on arrays with an object axis (pyradiomics' feature methods are written for a leading voxel
batch axis already; here each object brings its own gray-level vector):

* firstorder: order statistics of all objects at once (numpy's percentile/median arithmetic);
  the sums on all objects with the same voxel count (pyradiomics' (1, n) arrays, row by row);
  Entropy/Uniformity by pyradiomics' methods.
* GLCM, GLRLM: (i, j or run length, object, angle) arrays, gray levels zero-padded.  numpy
  sums an axis that is not innermost in memory one element after the other, so the padding
  changes no bit; pyradiomics' arrays are summed in the same way, in (i, j) or (j, i) memory
  order depending on how many rows ``numpy.delete`` removed (see "Summation order" below),
  which the batch reproduces.  Empty angles (deleted by pyradiomics) are left out of the
  per-angle means.  MCC: Q is summed over k in pyradiomics' order; the eigenvalues are taken
  per object on its own L x L matrices, real or complex as numpy returns them for it.
* GLSZM, GLDM, NGTDM: (levels, columns, object) arrays, summed sequentially; pyradiomics sums
  its contiguous arrays pairwise, so the last bits differ (~1e-15 relative: every sum has
  non-negative terms only).

firstorder, shape2D, GLCM and GLRLM are bit-identical to pyradiomics (numpy 2.4); every value
is within 1e-14 relative (tests/test_features_fastrad.py checks 1e-9 on real objects and edge
cases).  A row depends only on its own task: splitting the tasks into calls changes no bit.

Computed by pyradiomics itself instead, per object:

* GLCM and GLRLM (bare ``RadiomicsGLCM``/``RadiomicsGLRLM`` instances on the object's
  discretised crop, :func:`_direct`) when pyradiomics' arrays have fewer than four angles: a
  one-pixel-thick bounding box (the C code generates only the angle along it), two or more
  empty GLCM angles with three or more gray levels, no GLCM pair, a GLRLM angle without runs.
* the whole row (:func:`analysis.features.pyrad_reference.radiomics_rows_reference`) for non-finite
  intensities in the mask, more than ``MAX_LEVELS`` gray levels, and inputs outside the
  contract (not 2D, shapes differing, a mask other than 0/1).

Empty and one-pixel masks give the reference path's NaN row and reason.
"""
from __future__ import annotations

import logging
import time
import warnings

import numpy as np

from . import pyrad_reference as reference

# radiomics (its C matrices and feature classes) is imported inside the functions that use
# it, on purpose: importing it takes about a quarter of a second, which importing this module
# (analysis.features imports it through pyrad) should not cost.

#: objects with more distinct gray levels than this go to the per-object pyradiomics path
#: (their L x L matrices make the batch arrays large; pyradiomics' cost is in the math then)
MAX_LEVELS = 256
#: batch size limit for the (objects, levels, levels, angles) GLCM arrays (elements)
CHUNK_ELEMENTS = 1_000_000

_EPS = np.spacing(1)
_NA = 4  # angles of a 2D image (distance 1): pyradiomics' generate_angles order

_FIRSTORDER = [n[len("firstorder_"):] for n in reference.TEXTURE_NAMES if n.startswith("firstorder_")]
_SHAPE = [n[len("shape2D_"):] for n in reference.SHAPE2D_NAMES]


class _Obj:
    """One object's per-object preprocessing (what pyradiomics computes before the formulas)."""

    __slots__ = ("index", "mask", "levels", "counts", "Ng", "L", "values", "glcm", "glcm_valid",
                 "glcm_jmajor", "glrlm", "glrlm_rmajor", "glszm", "glszm_j", "gldm", "gldm_j", "ngtdm",
                 "shape", "binned", "direct")


def _bin_edges(values: np.ndarray, bin_width: float):
    """``imageoperations.getBinEdges`` (fixed bin width) for finite float32 ``values``.

    pyradiomics takes ``min()``/``max()`` of the float32 values (np.float32 scalars, as
    ``values.min()`` gives them) and does the same arithmetic on them."""
    minimum = values.min()
    maximum = values.max()
    low = minimum - (minimum % bin_width)
    high = maximum + 2 * bin_width
    edges = np.arange(low, high, bin_width)
    if len(edges) == 1:
        edges = [edges[0] - .5, edges[0] + .5]
    return edges


def _prepare(img: np.ndarray, msk: np.ndarray, bin_width: float, with_shape: bool, pixel_spacing):
    """The per-object part, or None when the object must go to the reference path."""
    from radiomics import cMatrices

    rows = np.flatnonzero(msk.any(axis=1))
    cols = np.flatnonzero(msk.any(axis=0))
    box = (slice(rows[0], rows[-1] + 1), slice(cols[0], cols[-1] + 1))
    mask = np.ascontiguousarray(msk[box])
    image = np.ascontiguousarray(img[box], dtype=np.float32)
    vals = image[mask]
    if not np.isfinite(vals).all():
        return None
    binned = np.zeros(mask.shape, dtype="int")
    binned[mask] = np.digitize(vals, _bin_edges(vals, bin_width))
    levels, counts = np.unique(binned[mask], return_counts=True)
    if levels.size > MAX_LEVELS:
        return None
    o = _Obj()
    o.mask = mask
    o.levels = levels
    o.counts = counts
    o.Ng = Ng = int(np.max(levels))
    o.L = L = int(levels.size)
    o.values = vals.astype("float")
    idx = levels - 1
    dist = np.array([1])

    o.binned = binned
    o.direct = min(mask.shape) < 2
    if not o.direct:
        P, _ = cMatrices.calculate_glcm(binned, mask, dist, Ng, False, 0)  # (1, Ng, Ng, 4)
        P = P[0] if L == Ng else P[0][np.ix_(idx, idx)]
        P = P + np.transpose(P, (1, 0, 2))  # symmetricalGLCM
        valid = np.sum(P, (0, 1)) != 0
        empty_angles = _NA - int(valid.sum())
        o.glcm, o.glcm_valid = P, valid
        # memory order of pyradiomics' P_glcm (see the texture batches comment)
        o.glcm_jmajor = (Ng - L) != 1 and empty_angles != 1
        # two or more empty angles deleted: pyradiomics' array has the angle axis outermost and
        # numpy sums its (i, j) blocks pairwise (from 3 gray levels on); none left: NaN rules
        o.direct = empty_angles == _NA or (empty_angles >= 2 and L >= 3)

        Nr = int(np.max(mask.shape))
        P, _ = cMatrices.calculate_glrlm(binned, mask, Ng, Nr, False, 0)  # (1, Ng, Nr, 4)
        P = P[0] if L == Ng else P[0][idx]
        if not np.all(np.sum(P, (0, 1)) != 0):
            # an angle without runs (pyradiomics' C code counts no run for a pixel without
            # neighbours along it): pyradiomics deletes it, which changes its array layout
            o.direct = True
        else:
            runs = np.flatnonzero(P.any(axis=(0, 2)))
            o.glrlm = P[:, :runs[-1] + 1]
            # memory order of pyradiomics' P_glrlm after it deletes the empty run lengths
            o.glrlm_rmajor = (Nr - runs.size) != 1

    # GLSZM / GLDM: columns (zone sizes, dependence counts) pyradiomics deletes when empty are
    # left out here too; ``*_j`` holds the column values (jvector)
    P = cMatrices.calculate_glszm(binned, mask, Ng, int(np.sum(mask)), False, 0)  # (1, Ng, Ns)
    P = P[0] if L == Ng else P[0][idx]
    cols = np.flatnonzero(P.any(axis=0))
    o.glszm, o.glszm_j = P[:, cols], (cols + 1).astype(np.float64)

    P = cMatrices.calculate_gldm(binned, mask, dist, Ng, 0, False, 0)  # (1, Ng, Nd)
    P = P[0] if L == Ng else P[0][idx]
    cols = np.flatnonzero(P.any(axis=0))
    o.gldm, o.gldm_j = P[:, cols], (cols + 1).astype(np.float64)

    P = cMatrices.calculate_ngtdm(binned, mask, dist, Ng, False, 0)  # (1, Ng, 3)
    o.ngtdm = P[0][P[0, :, 0] != 0]

    if with_shape:
        o.shape = _shape2d(mask, pixel_spacing)
    return o


# --------------------------------------------------------------------------- shape2D

def _bare(cls, **attrs):
    """A pyradiomics feature-class instance without its __init__ (no SimpleITK images)."""
    inst = object.__new__(cls)
    inst.logger = logging.getLogger(cls.__module__)
    inst.coefficients = {}
    for k, v in attrs.items():
        setattr(inst, k, v)
    return inst


def _call(inst, name: str) -> float:
    """One feature method, as ``RadiomicsFeaturesBase._calculateFeatures`` + ``execute`` +
    ``float()`` use it: an exception gives NaN."""
    try:
        return float(np.squeeze(getattr(inst, f"get{name}FeatureValue")()))
    except Exception:
        return float("nan")


def _shape2d(mask: np.ndarray, pixel_spacing: np.ndarray) -> list[float]:
    """shape2D of one cropped mask: ``RadiomicsShape2D._initSegmentBasedCalculation`` (2D
    branch) and its feature methods."""
    from radiomics import cShape
    from radiomics.shape2D import RadiomicsShape2D

    inst = _bare(RadiomicsShape2D, pixelSpacing=pixel_spacing)
    inst.maskArray = np.pad(mask, pad_width=1, mode="constant", constant_values=0)
    inst.labelledPixelCoordinates = np.where(inst.maskArray != 0)
    inst.Perimeter, inst.Surface, inst.Diameter = cShape.calculate_coefficients2D(inst.maskArray,
                                                                                  inst.pixelSpacing)
    Np = len(inst.labelledPixelCoordinates[0])
    coordinates = np.array(inst.labelledPixelCoordinates, dtype="int").transpose((1, 0))
    physical = coordinates * inst.pixelSpacing[None, :]
    physical -= np.mean(physical, axis=0)
    physical /= np.sqrt(Np)
    covariance = np.dot(physical.T.copy(), physical)
    inst.eigenValues = np.linalg.eigvals(covariance)
    machine_errors = np.bitwise_and(inst.eigenValues < 0, inst.eigenValues > -1e-10)
    if np.sum(machine_errors) > 0:
        inst.eigenValues[machine_errors] = 0
    inst.eigenValues.sort()
    return [_call(inst, name) for name in _SHAPE]


# --------------------------------------------------------------------------- firstorder

def _groups(keys) -> dict:
    out: dict = {}
    for pos, k in enumerate(keys):
        out.setdefault(k, []).append(pos)
    return out


def _order_statistics(objs: list[_Obj]) -> dict[str, np.ndarray]:
    """Minimum, maximum, median and the 10/25/75/90th percentiles of each object's intensities,
    all objects at once, with numpy's arithmetic: ``percentile`` (method 'linear') interpolates
    between the sorted values at floor((n - 1) q) and the next one as ``_lerp`` does, ``median``
    (and pyradiomics' ``nanmedian``) is the middle value or the sum of the two middle values
    divided by 2."""
    n = np.array([o.values.size for o in objs])
    start = np.concatenate(([0], np.cumsum(n)[:-1]))
    X = np.concatenate([np.sort(o.values) for o in objs])  # each object's values, sorted
    first = start[:, None]
    last = (n - 1)[:, None]
    q = np.true_divide(np.array([10, 25, 75, 90]), 100)  # as numpy.percentile divides q
    virtual = (n[:, None] - 1) * q[None, :]
    prev = np.floor(virtual)
    above = virtual >= last
    prev_i = np.where(above, last, prev.astype(np.intp))
    next_i = np.where(above, last, prev.astype(np.intp) + 1)
    gamma = virtual - prev  # (irrelevant where above: both neighbours are the last value)
    a, b = X[first + prev_i], X[first + next_i]
    diff_b_a = b - a
    lerp = a + diff_b_a * gamma
    lerp = np.where(gamma >= 0.5, b - diff_b_a * (1 - gamma), lerp)
    half = n // 2
    odd = (n % 2) == 1
    lo = X[start + np.where(odd, half, half - 1)]
    hi = X[start + half]
    return {"Minimum": X[start], "Maximum": X[start + n - 1],
            "Median": np.where(odd, hi, (lo + hi) / 2.0),
            "10Percentile": lerp[:, 0], "25Percentile": lerp[:, 1], "75Percentile": lerp[:, 2],
            "90Percentile": lerp[:, 3]}


def _firstorder_group(X: np.ndarray, area: float, p10: np.ndarray, p90: np.ndarray) -> dict[str, np.ndarray]:
    """``RadiomicsFirstOrder``'s sum-based intensity features for objects with the same voxel
    count: ``X`` (objects, voxels) holds pyradiomics' ``targetVoxelArray`` (1, voxels) of each,
    row by row (numpy sums each row the same way).  pyradiomics uses numpy's nan-functions;
    without NaN in a row they do exactly these operations: ``nanmean`` = ``sum / n``,
    ``nanvar`` = ``sum((x - sum / n)**2) / n``, ``nansum`` = ``sum``."""
    n = X.shape[1]

    def nanmean(a, keepdims=False):
        return np.sum(a, 1, keepdims=keepdims) / n

    def moment(a, m):
        mn = nanmean(a, keepdims=True)
        d = a - mn
        if m == 2:
            s = np.power(d, m)
        else:
            # pow is slow for negative bases: take it once per distinct value (same numbers)
            u, inv = np.unique(d, return_inverse=True)
            s = np.power(u, m)[inv].reshape(d.shape)
        return nanmean(s)

    f: dict[str, np.ndarray] = {}
    shifted = X + 0  # voxelArrayShift 0
    energy = np.sum(shifted ** 2, 1)
    f["Energy"] = energy
    f["TotalEnergy"] = energy * area
    f["Mean"] = nanmean(X)
    u_x = nanmean(X, keepdims=True)
    f["MeanAbsoluteDeviation"] = nanmean(np.absolute(X - u_x))
    # robust MAD: voxels outside [P10, P90] set to NaN; nanmean = sum over the others / their count
    out = ((X - p10[:, None]) < 0) | ((X - p90[:, None]) > 0)
    cnt = np.sum(~out, 1, keepdims=True)
    kept = np.where(out, 0.0, X)
    m = np.sum(kept, 1, keepdims=True) / cnt
    f["RobustMeanAbsoluteDeviation"] = np.sum(np.where(out, 0.0, np.absolute(X - m)), 1) / cnt[:, 0]
    f["RootMeanSquared"] = np.sqrt(np.sum(shifted ** 2, 1) / float(n))
    m2 = moment(X, 2)
    m3 = moment(X, 3)
    m4 = moment(X, 4)
    m2[m2 == 0] = 1  # flat region
    m3[m2 == 0] = 0
    m4[m2 == 0] = 0
    f["Skewness"] = m3 / m2 ** 1.5
    f["Kurtosis"] = m4 / m2 ** 2.0
    d = X - np.sum(X, 1, keepdims=True) / n
    var = np.sum(np.multiply(d, d), 1) / n
    f["Variance"] = np.sqrt(var) ** 2
    return f


def _firstorder(objs: list[_Obj], pixel_spacing_xy) -> np.ndarray:
    """(n, 18) firstorder values: order statistics of all objects at once
    (:func:`_order_statistics`), sum-based features per voxel count (:func:`_firstorder_group`),
    Entropy/Uniformity by pyradiomics' methods on all objects with the same number of gray
    levels at once (``p_i`` (objects, levels): pyradiomics' (1, levels) array row by row)."""
    from radiomics.firstorder import RadiomicsFirstOrder

    out = np.full((len(objs), len(_FIRSTORDER)), np.nan)
    cols = {name: c for c, name in enumerate(_FIRSTORDER)}
    st = _order_statistics(objs)
    for name in ("Minimum", "Maximum", "Median", "10Percentile", "90Percentile"):
        out[:, cols[name]] = st[name]
    out[:, cols["Range"]] = st["Maximum"] - st["Minimum"]
    out[:, cols["InterquartileRange"]] = st["75Percentile"] - st["25Percentile"]
    area = np.multiply.reduce(pixel_spacing_xy)  # TotalEnergy: cubicMMPerVoxel of a 2D image
    for rows in _groups(o.values.size for o in objs).values():
        X = np.stack([objs[r].values for r in rows])
        group = _firstorder_group(X, area, st["10Percentile"][rows], st["90Percentile"][rows])
        for name, vals in group.items():
            out[rows, cols[name]] = vals
    for rows in _groups(o.L for o in objs).values():
        inst = _bare(RadiomicsFirstOrder, pixelSpacing=pixel_spacing_xy, voxelArrayShift=0)
        p_i = np.stack([objs[r].counts for r in rows])
        sumBins = np.sum(p_i, 1, keepdims=True).astype("float")
        sumBins[sumBins == 0] = 1  # Prevent division by 0 errors
        inst.coefficients["p_i"] = p_i.astype("float") / sumBins
        for name in ("Entropy", "Uniformity"):
            out[rows, cols[name]] = _batch_call(inst, name, len(rows))
    return out


def _batch_call(inst, name: str, n: int) -> np.ndarray:
    try:
        return np.broadcast_to(np.asarray(getattr(inst, f"get{name}FeatureValue")(), dtype=float), (n,))
    except Exception:
        return np.full(n, np.nan)


# --------------------------------------------------------------------------- GLCM/GLRLM per object

def _direct(o: _Obj) -> dict[str, dict[str, float]] | None:
    """GLCM and GLRLM of one object by pyradiomics' own code (``_initCalculation`` and the
    feature methods on a bare instance holding the discretised crop): for objects whose
    pyradiomics arrays have fewer than 4 angles (one pixel thick, or two or more empty angles)
    numpy sums them in an order the batch does not reproduce."""
    from radiomics.glcm import RadiomicsGLCM
    from radiomics.glrlm import RadiomicsGLRLM

    out = {}
    for cls, key, extra in ((RadiomicsGLCM, "glcm", {"symmetricalGLCM": True, "weightingNorm": None,
                                                     "P_glcm": None}),
                            (RadiomicsGLRLM, "glrlm", {"weightingNorm": None, "P_glrlm": None})):
        inst = _bare(cls, settings={"label": 1, "distances": [1], "force2D": False, "force2Ddimension": 0},
                     label=1, voxelBased=False, imageArray=o.binned, maskArray=o.mask, **extra)
        inst.coefficients["grayLevels"] = o.levels
        inst.coefficients["Ng"] = o.Ng
        try:
            inst._initCalculation()
        except Exception:  # pyradiomics' execute would raise: the reference path reports it
            return None
        out[key] = {name: _call(inst, name) for name, deprecated in cls.getFeatureNames().items()
                    if not deprecated}
    return out


# --------------------------------------------------------------------------- texture batches
#
# Summation order.  numpy sums a reduced axis that is not the innermost one of the array in
# memory element by element in index order, so adding the zeros of padded gray levels, run
# lengths or objects changes no bit.  The GLCM and GLRLM arrays below keep the object axis and
# the angle axis innermost ((levels, levels, objects, angles)), so every sum over gray levels
# or run lengths is such a sequential sum.  pyradiomics' own arrays differ in which of the two
# matrix axes is outer in memory, depending on how many rows/columns ``numpy.delete`` removed
# (several or none: fancy indexing puts the indexed axis outermost; exactly one: a fresh
# C-ordered copy); numpy then sums over (i, j) in that memory order.  ``_Obj.glcm_jmajor`` and
# ``_Obj.glrlm_rmajor`` record it and the batch arrays are laid out the same way (a transposed
# view), so GLCM and GLRLM sums happen in pyradiomics' order.  Temporaries inherit the layout by
# numpy's rules (an operand broadcast along an axis does not vote; on a conflict C order wins),
# the same in both since the operands are built alike (gray-level vectors broadcast, (i + j)-like
# grids C-ordered).  The tests check the bits.

def _nanmean_valid(x: np.ndarray, valid: np.ndarray) -> np.ndarray:
    """pyradiomics' ``numpy.nanmean(x, 1)`` over the object's non-empty angles; x: (objects, angles)."""
    return np.nanmean(np.where(valid, x, np.nan), 1)


def _glcm(objs: list[_Obj], jmajor: bool) -> dict[str, np.ndarray]:
    """GLCM features of a batch: ``RadiomicsGLCM._calculateMatrix``/``_calculateCoefficients``
    and its feature methods, operation by operation, on (i, j, object, angle) arrays with
    per-object gray levels."""
    B, L, A = len(objs), max(o.L for o in objs), _NA
    Pm = np.zeros((L, L, B, A))
    ivec = np.ones((L, B))
    for b, o in enumerate(objs):
        Pm[:o.L, :o.L, b] = o.glcm
        ivec[:o.L, b] = o.levels
    # symmetric counts: the transposed view has the same values, with j as the outer axis in memory
    P = Pm.transpose(1, 0, 2, 3) if jmajor else Pm
    Ng = np.array([o.Ng for o in objs])
    valid = np.array([o.glcm_valid for o in objs])
    sumP = np.sum(P, (0, 1))
    sumP[~valid] = 1.0  # the object's empty angles (deleted by pyradiomics); P is 0 there
    P /= sumP[None, None]

    eps = _EPS
    i = ivec[:, None, :, None]
    j = ivec[None, :, :, None]
    NgMax = int(Ng.max())
    kValuesSum = np.arange(2, (NgMax * 2) + 1, dtype="float")[:, None, None]
    kValuesDiff = np.arange(0, NgMax, dtype="float")[:, None, None]
    px = P.sum(1, keepdims=True)
    py = P.sum(0, keepdims=True)
    ux = np.sum(i * P, (0, 1), keepdims=True)
    uy = np.sum(j * P, (0, 1), keepdims=True)
    # pxAddy / pxSuby: pyradiomics sums P[:, i + j == k, :] over the selected (i, j) in row-major
    # order, one after the other; bincount adds in the same order (padding adds exact zeros).
    gl = ivec.astype(np.intp)
    weights = np.ascontiguousarray(P).ravel()  # (i, j, b, a) order
    ks = gl[:, None, :] + gl[None, :, :] - 2
    nks = 2 * NgMax - 1
    idx = ((ks * B + np.arange(B))[..., None] * A + np.arange(A)).ravel()
    pxAddy = np.bincount(idx, weights=weights, minlength=nks * B * A).reshape(nks, B, A)
    kd = np.abs(gl[:, None, :] - gl[None, :, :])
    idx = ((kd * B + np.arange(B))[..., None] * A + np.arange(A)).ravel()
    pxSuby = np.bincount(idx, weights=weights, minlength=NgMax * B * A).reshape(NgMax, B, A)
    HXY = (-1) * np.sum((P * np.log2(P + eps)), (0, 1))

    f: dict[str, np.ndarray] = {}

    def mean(x):
        return _nanmean_valid(x, valid)

    f["Autocorrelation"] = mean(np.sum(P * (i * j), (0, 1)))
    f["JointAverage"] = mean(ux[0, 0])
    # (i + j - ux - uy) ** k: pow is slow for negative bases; where P is 0 the term is 0 anyway,
    # so the power is only taken where P != 0 (elementwise the same numbers)
    t = ((i + j) - ux - uy)
    nonzero = P != 0
    f["ClusterProminence"] = mean(np.sum((P * np.power(t, 4, out=np.zeros_like(t), where=nonzero)), (0, 1)))
    f["ClusterShade"] = mean(np.sum((P * np.power(t, 3, out=np.zeros_like(t), where=nonzero)), (0, 1)))
    f["ClusterTendency"] = mean(np.sum((P * (t ** 2)), (0, 1)))
    del t
    f["Contrast"] = mean(np.sum((P * ((np.abs(i - j)) ** 2)), (0, 1)))
    di, dj = i - ux, j - uy
    ss = np.sum(P * (di ** 2), (0, 1), keepdims=True)
    sigx = ss ** 0.5
    sigy = np.sum(P * (dj ** 2), (0, 1), keepdims=True) ** 0.5
    corm = np.sum(P * di * dj, (0, 1), keepdims=True)
    del di, dj
    corr = corm / (sigx * sigy + eps)
    corr[sigx * sigy == 0] = 1
    f["Correlation"] = mean(corr[0, 0])
    diffavg = np.sum((kValuesDiff * pxSuby), 0, keepdims=True)
    f["DifferenceAverage"] = mean(diffavg[0])
    f["DifferenceEntropy"] = mean((-1) * np.sum((pxSuby * np.log2(pxSuby + eps)), 0))
    f["DifferenceVariance"] = mean(np.sum((pxSuby * ((kValuesDiff - diffavg) ** 2)), 0))
    f["JointEnergy"] = mean(np.sum((P ** 2), (0, 1)))
    f["JointEntropy"] = mean(HXY)
    HX = (-1) * np.sum((px * np.log2(px + eps)), (0, 1))
    HY = (-1) * np.sum((py * np.log2(py + eps)), (0, 1))
    pxpy = px * py
    log_pxpy = np.log2(pxpy + eps)
    HXY1 = (-1) * np.sum((P * log_pxpy), (0, 1))
    div = np.fmax(HX, HY)
    imc1 = HXY - HXY1
    imc1[div != 0] /= div[div != 0]
    imc1[div == 0] = 0
    f["Imc1"] = mean(imc1)
    HXY2 = (-1) * np.sum((pxpy * log_pxpy), (0, 1))
    del pxpy, log_pxpy
    imc2 = (1 - np.e ** (-2 * (HXY2 - HXY))) ** 0.5
    imc2[HXY2 == HXY] = 0
    f["Imc2"] = mean(imc2)
    f["Idm"] = mean(np.sum(pxSuby / (1 + (kValuesDiff ** 2)), 0))
    Ngb = Ng[:, None]
    f["Idmn"] = mean(np.sum(pxSuby / (1 + ((kValuesDiff ** 2) / (Ngb ** 2))), 0))
    f["Id"] = mean(np.sum(pxSuby / (1 + kValuesDiff), 0))
    f["Idn"] = mean(np.sum(pxSuby / (1 + (kValuesDiff / Ngb)), 0))
    f["InverseVariance"] = mean(np.sum(pxSuby[1:] / kValuesDiff[1:] ** 2, 0))
    f["MaximumProbability"] = mean(np.amax(P, (0, 1)))
    f["SumAverage"] = mean(np.sum((kValuesSum * pxAddy), 0))
    f["SumEntropy"] = mean((-1) * np.sum((pxAddy * np.log2(pxAddy + eps)), 0))
    f["SumSquares"] = mean(ss[0, 0])
    f["MCC"] = _mcc(objs, P, px, py, valid)
    return f


def _mcc(objs, P, px, py, valid) -> np.ndarray:
    """GLCM MCC: Q as pyradiomics builds it (elementwise, summed over k in order; padding adds
    exact zeros), the eigenvalues of each object's own L x L matrices (numpy computes each
    matrix of a stack on its own), real or complex per object as numpy returns them for that
    object alone."""
    eps = _EPS
    out = np.full(len(objs), np.nan)
    Q = None
    for L, rows in _groups(o.L for o in objs).items():
        if L < 2:
            out[rows] = 1.0  # pyradiomics: flat region
            continue
        if Q is None:
            # pyradiomics: Q = sum over k of P[i, k] * P[j, k] / (px[i] * py[k] + eps), k = 0, 1, ...
            # The term is an exact 0 unless P[i, k] and P[j, k] are both nonzero: for each k only
            # the block of rows i (and columns j) where some object has P[i, k] != 0 is added.
            Q = np.zeros(P.shape)  # (i, j, object, angle)
            support = P.any(axis=(2, 3))  # (i, k)
            for gl in range(P.shape[0]):
                rows_k = np.flatnonzero(support[:, gl])
                if rows_k.size == 0:
                    continue
                lo, hi = rows_k[0], rows_k[-1] + 1
                Q[lo:hi, lo:hi] += ((P[lo:hi, None, gl] * P[None, lo:hi, gl]) /
                                    (px[lo:hi, None, 0] * py[None, 0, gl] + eps))
        stack = Q[:L, :L, rows].transpose((2, 3, 0, 1))  # (objects, angles, L, L)
        try:
            eig = np.linalg.eigvals(stack)
        except np.linalg.LinAlgError:
            eig = None
        for pos, r in enumerate(rows):
            v = valid[r]
            if eig is None:
                try:
                    w = np.linalg.eigvals(stack[pos][v][None])
                except np.linalg.LinAlgError:
                    continue  # pyradiomics: the feature fails -> NaN
            else:
                w = eig[pos][v][None]
                if np.iscomplexobj(w) and np.all(w.imag == 0.0):
                    w = w.real  # numpy returns real eigenvalues when the object's are all real
            w = np.sort(w, axis=-1)
            MCC = np.sqrt(w[:, :, -2])
            out[r] = float(np.nanmean(MCC, 1).real[0])
    return out


def _glrlm(objs: list[_Obj], rmajor: bool) -> dict[str, np.ndarray]:
    """GLRLM features of a batch (``RadiomicsGLRLM``) on (i, run length, object, angle) arrays.

    Run-length columns are 1..longest run of the batch; columns pyradiomics deletes (no run of
    that length) hold zeros, which add nothing to its sums."""
    B, L, A = len(objs), max(o.L for o in objs), _NA
    R = max(o.glrlm.shape[1] for o in objs)
    ivector = np.ones((L, B))
    if rmajor:  # pyradiomics' P_glrlm has the run-length axis outermost in memory
        Pm = np.zeros((R, L, B, A))
        for b, o in enumerate(objs):
            Pm[:o.glrlm.shape[1], :o.L, b] = o.glrlm.transpose(1, 0, 2)
        P = Pm.transpose(1, 0, 2, 3)
    else:
        P = np.zeros((L, R, B, A))
        for b, o in enumerate(objs):
            P[:o.L, :o.glrlm.shape[1], b] = o.glrlm
    for b, o in enumerate(objs):
        ivector[:o.L, b] = o.levels
    Nr = np.sum(P, (0, 1))
    valid = Nr != 0
    Nr[~valid] = np.nan
    pr = np.sum(P, 0)
    pg = np.sum(P, 1)
    jvector = np.arange(1, R + 1, dtype=np.float64)
    iv = ivector[:, :, None]
    jv = jvector[:, None, None]
    iv4 = ivector[:, None, :, None]
    jv4 = jvector[None, :, None, None]

    f: dict[str, np.ndarray] = {}

    def mean(x):
        return _nanmean_valid(x, valid)

    f["ShortRunEmphasis"] = mean(np.sum((pr / (jv ** 2)), 0) / Nr)
    f["LongRunEmphasis"] = mean(np.sum((pr * (jv ** 2)), 0) / Nr)
    f["GrayLevelNonUniformity"] = mean(np.sum((pg ** 2), 0) / Nr)
    f["GrayLevelNonUniformityNormalized"] = mean(np.sum(pg ** 2, 0) / (Nr ** 2))
    f["RunLengthNonUniformity"] = mean(np.sum((pr ** 2), 0) / Nr)
    f["RunLengthNonUniformityNormalized"] = mean(np.sum((pr ** 2), 0) / Nr ** 2)
    Np = np.sum(pr * jv, 0)
    f["RunPercentage"] = mean(Nr / Np)
    pgn = pg / Nr[None]
    u_i = np.sum(pgn * iv, 0, keepdims=True)
    f["GrayLevelVariance"] = mean(np.sum(pgn * (iv - u_i) ** 2, 0))
    prn = pr / Nr[None]
    u_j = np.sum(prn * jv, 0, keepdims=True)
    f["RunVariance"] = mean(np.sum(prn * (jv - u_j) ** 2, 0))
    p_glrlm = P / Nr[None, None]
    f["RunEntropy"] = mean(-np.sum(p_glrlm * np.log2(p_glrlm + _EPS), (0, 1)))
    f["LowGrayLevelRunEmphasis"] = mean(np.sum((pg / (iv ** 2)), 0) / Nr)
    f["HighGrayLevelRunEmphasis"] = mean(np.sum((pg * (iv ** 2)), 0) / Nr)
    f["ShortRunLowGrayLevelEmphasis"] = mean(np.sum((P / ((iv4 ** 2) * (jv4 ** 2))), (0, 1)) / Nr)
    f["ShortRunHighGrayLevelEmphasis"] = mean(np.sum((P * (iv4 ** 2) / (jv4 ** 2)), (0, 1)) / Nr)
    f["LongRunLowGrayLevelEmphasis"] = mean(np.sum((P * (jv4 ** 2) / (iv4 ** 2)), (0, 1)) / Nr)
    f["LongRunHighGrayLevelEmphasis"] = mean(np.sum((P * ((jv4 ** 2) * (iv4 ** 2))), (0, 1)) / Nr)
    return f


# GLSZM, GLDM and NGTDM: (levels, columns, objects) arrays, objects innermost, so every sum is a
# sequential sum in index order, independent of the other objects of the batch (zero padding
# adds exact zeros).  pyradiomics sums these (1, ...) arrays along their contiguous last axes,
# where numpy uses pairwise summation: the rounding differs (~1e-16 relative); every one of
# these sums has non-negative terms only, so nothing amplifies it.  A batch of one object gets
# an all-zero companion: with a length-1 object axis numpy would sum the contiguous rest pairwise
# (different bits from the same object in a larger batch).

def _stack2(mats: list[np.ndarray], levels: list[np.ndarray], jvals: list[np.ndarray]):
    """(Lmax, Kmax, B) zero-padded stack, (Lmax, B) gray levels and (Kmax, B) column values,
    both padded with 1."""
    B = max(len(mats), 2)
    L = max(m.shape[0] for m in mats)
    K = max(m.shape[1] for m in mats)
    P = np.zeros((L, K, B))
    ivector = np.ones((L, B))
    jvector = np.ones((K, B))
    for b, (m, lv, jv) in enumerate(zip(mats, levels, jvals)):
        P[:m.shape[0], :m.shape[1], b] = m
        ivector[:lv.size, b] = lv
        jvector[:jv.size, b] = jv
    return P, ivector, jvector


def _zone_like(P, ivector, jvector, Nz) -> dict[str, np.ndarray]:
    """The formulas GLSZM and GLDM share (``ps``/``pd`` = column sums, ``pg`` = row sums), as
    pyradiomics writes them, on (levels, columns, objects) arrays."""
    ps = np.sum(P, 0)
    pg = np.sum(P, 1)
    iv = ivector
    jv = jvector
    iv3 = ivector[:, None, :]
    jv3 = jvector[None, :, :]
    f = {
        "SmallEmphasis": np.sum(ps / (jv ** 2), 0) / Nz,
        "LargeEmphasis": np.sum(ps * (jv ** 2), 0) / Nz,
        "GrayLevelNonUniformity": np.sum(pg ** 2, 0) / Nz,
        "GrayLevelNonUniformityNormalized": np.sum(pg ** 2, 0) / Nz ** 2,
        "SizeNonUniformity": np.sum(ps ** 2, 0) / Nz,
        "SizeNonUniformityNormalized": np.sum(ps ** 2, 0) / Nz ** 2,
        "LowGrayLevelEmphasis": np.sum(pg / (iv ** 2), 0) / Nz,
        "HighGrayLevelEmphasis": np.sum(pg * (iv ** 2), 0) / Nz,
        "SmallLowGrayLevelEmphasis": np.sum(P / ((iv3 ** 2) * (jv3 ** 2)), (0, 1)) / Nz,
        "SmallHighGrayLevelEmphasis": np.sum(P * (iv3 ** 2) / (jv3 ** 2), (0, 1)) / Nz,
        "LargeLowGrayLevelEmphasis": np.sum(P * (jv3 ** 2) / (iv3 ** 2), (0, 1)) / Nz,
    }
    pgn = pg / Nz[None]
    u_i = np.sum(pgn * iv, 0, keepdims=True)
    f["GrayLevelVariance"] = np.sum(pgn * (iv - u_i) ** 2, 0)
    psn = ps / Nz[None]
    u_j = np.sum(psn * jv, 0, keepdims=True)
    f["SizeVariance"] = np.sum(psn * (jv - u_j) ** 2, 0)
    p = P / Nz[None, None]
    f["Entropy"] = -np.sum(p * np.log2(p + _EPS), (0, 1))
    return f


def _glszm(objs: list[_Obj]) -> dict[str, np.ndarray]:
    """GLSZM features of a batch (``RadiomicsGLSZM``)."""
    P, ivector, jvector = _stack2([o.glszm for o in objs], [o.levels for o in objs],
                                  [o.glszm_j for o in objs])
    ps = np.sum(P, 0)
    Nz = np.sum(P, (0, 1))
    Nz[Nz == 0] = 1
    Np = np.sum(ps * jvector, 0)  # integer valued: exact in any order
    Np[Np == 0] = 1
    z = _zone_like(P, ivector, jvector, Nz)
    jv3 = jvector[None, :, :]
    iv3 = ivector[:, None, :]
    return {
        "GrayLevelNonUniformity": z["GrayLevelNonUniformity"],
        "GrayLevelNonUniformityNormalized": z["GrayLevelNonUniformityNormalized"],
        "GrayLevelVariance": z["GrayLevelVariance"],
        "HighGrayLevelZoneEmphasis": z["HighGrayLevelEmphasis"],
        "LargeAreaEmphasis": z["LargeEmphasis"],
        "LargeAreaHighGrayLevelEmphasis": np.sum(P * (iv3 ** 2) * (jv3 ** 2), (0, 1)) / Nz,
        "LargeAreaLowGrayLevelEmphasis": z["LargeLowGrayLevelEmphasis"],
        "LowGrayLevelZoneEmphasis": z["LowGrayLevelEmphasis"],
        "SizeZoneNonUniformity": z["SizeNonUniformity"],
        "SizeZoneNonUniformityNormalized": z["SizeNonUniformityNormalized"],
        "SmallAreaEmphasis": z["SmallEmphasis"],
        "SmallAreaHighGrayLevelEmphasis": z["SmallHighGrayLevelEmphasis"],
        "SmallAreaLowGrayLevelEmphasis": z["SmallLowGrayLevelEmphasis"],
        "ZoneEntropy": z["Entropy"],
        "ZonePercentage": Nz / Np,
        "ZoneVariance": z["SizeVariance"],
    }


def _gldm(objs: list[_Obj]) -> dict[str, np.ndarray]:
    """GLDM features of a batch (``RadiomicsGLDM``)."""
    P, ivector, jvector = _stack2([o.gldm for o in objs], [o.levels for o in objs], [o.gldm_j for o in objs])
    pd = np.sum(P, 0)
    Nz = np.sum(pd, 0)
    Nz[Nz == 0] = 1
    jv3 = jvector[None, :, :]
    iv3 = ivector[:, None, :]
    z = _zone_like(P, ivector, jvector, Nz)
    return {
        "DependenceEntropy": z["Entropy"],
        "DependenceNonUniformity": z["SizeNonUniformity"],
        "DependenceNonUniformityNormalized": z["SizeNonUniformityNormalized"],
        "DependenceVariance": z["SizeVariance"],
        "GrayLevelNonUniformity": z["GrayLevelNonUniformity"],
        "GrayLevelVariance": z["GrayLevelVariance"],
        "HighGrayLevelEmphasis": z["HighGrayLevelEmphasis"],
        "LargeDependenceEmphasis": z["LargeEmphasis"],
        "LargeDependenceHighGrayLevelEmphasis": np.sum(P * ((jv3 ** 2) * (iv3 ** 2)), (0, 1)) / Nz,
        "LargeDependenceLowGrayLevelEmphasis": z["LargeLowGrayLevelEmphasis"],
        "LowGrayLevelEmphasis": z["LowGrayLevelEmphasis"],
        "SmallDependenceEmphasis": z["SmallEmphasis"],
        "SmallDependenceHighGrayLevelEmphasis": z["SmallHighGrayLevelEmphasis"],
        "SmallDependenceLowGrayLevelEmphasis": z["SmallLowGrayLevelEmphasis"],
    }


def _ngtdm(objs: list[_Obj]) -> dict[str, np.ndarray]:
    """NGTDM features of a batch (``RadiomicsNGTDM``: its formulas are written for a batch and
    already handle gray levels with p_i = 0, here the zero padding) on (levels, objects) and
    (levels, levels, objects) arrays."""
    B = max(len(objs), 2)  # (see above)
    L = max(o.ngtdm.shape[0] for o in objs)
    P = np.zeros((L, B, 3))
    for b, o in enumerate(objs):
        P[:o.ngtdm.shape[0], b] = o.ngtdm
    n_i = np.ascontiguousarray(P[:, :, 0])
    Nvp = np.sum(n_i, 0)
    p_i = n_i / Nvp[None]
    s_i = np.ascontiguousarray(P[:, :, 1])
    i = np.ascontiguousarray(P[:, :, 2])
    Ngp = np.sum(n_i > 0, 0)
    zero = p_i == 0
    pair_zero = zero[:, None] | zero[None, :]

    f: dict[str, np.ndarray] = {}
    sum_coarse = np.sum(p_i * s_i, 0)
    sum_coarse[sum_coarse != 0] = 1 / sum_coarse[sum_coarse != 0]
    sum_coarse[sum_coarse == 0] = 1e6
    f["Coarseness"] = sum_coarse

    div = Ngp * (Ngp - 1)
    contrast = (np.sum(p_i[:, None] * p_i[None, :] * (i[:, None] - i[None, :]) ** 2, (0, 1)) *
                np.sum(s_i, 0) / Nvp)
    contrast[div != 0] /= div[div != 0]
    contrast[div == 0] = 0
    f["Contrast"] = contrast

    i_pi = i * p_i
    absdiff = np.abs(i_pi[:, None] - i_pi[None, :])
    absdiff[pair_zero] = 0
    absdiff = np.sum(absdiff, (0, 1))
    busyness = np.sum(p_i * s_i, 0)
    busyness[absdiff != 0] = busyness[absdiff != 0] / absdiff[absdiff != 0]
    busyness[absdiff == 0] = 0
    f["Busyness"] = busyness

    pi_si = p_i * s_i
    numerator = pi_si[:, None] + pi_si[None, :]
    numerator[pair_zero] = 0
    divisor = p_i[:, None] + p_i[None, :]
    divisor[divisor == 0] = 1
    f["Complexity"] = np.sum(np.abs(i[:, None] - i[None, :]) * numerator / divisor, (0, 1)) / Nvp

    sum_s_i = np.sum(s_i, 0)
    strength = (p_i[:, None] + p_i[None, :]) * (i[:, None] - i[None, :]) ** 2
    strength[pair_zero] = 0
    strength = np.sum(strength, (0, 1))
    strength[sum_s_i != 0] /= sum_s_i[sum_s_i != 0]
    strength[sum_s_i == 0] = 0
    f["Strength"] = strength
    return f


def _batches(objs: list[_Obj], key=None) -> list[list[int]]:
    """Positions in ``objs`` in batches: same ``key`` (memory layout), similar gray-level count
    (little padding), at most ``CHUNK_ELEMENTS`` GLCM elements."""
    out = []
    for group in _groups(key(o) if key else None for o in objs).values():
        group.sort(key=lambda p: objs[p].L)
        cur: list[int] = []
        for p in group:
            L = objs[p].L
            if cur and ((len(cur) + 1) * L * L * _NA > CHUNK_ELEMENTS or L > 1.1 * objs[cur[0]].L + 1):
                out.append(cur)
                cur = []
            cur.append(p)
        if cur:
            out.append(cur)
    return out


def batched_radiomics_rows(tasks, spacing_mm, bin_width: float, with_shape: bool):
    """Same contract and values as :func:`analysis.features.pyrad_reference.radiomics_rows_reference`."""
    reference.quiet_radiomics_logging()
    names = reference.FOREGROUND_NAMES if with_shape else reference.BACKGROUND_NAMES
    col = {name: c for c, name in enumerate(names)}
    out = np.full((len(tasks), len(names)), np.nan)
    errors: list[tuple[int, str]] = []
    t0 = time.perf_counter()
    sx, sy = float(spacing_mm[1]), float(spacing_mm[0])
    pixel_spacing = np.array((sx, sy)[::-1])  # shape2D: inputImage.GetSpacing()[::-1]
    objs: list[_Obj] = []
    fallback: list[int] = []
    with warnings.catch_warnings(), np.errstate(all="ignore"):
        warnings.simplefilter("ignore")
        for k, (img, msk) in enumerate(tasks):
            img, msk = np.asarray(img), np.asarray(msk)
            if img.ndim != 2 or img.shape != msk.shape or not (
                    msk.dtype == bool or np.all((msk == 0) | (msk == 1))):
                fallback.append(k)  # outside the contract: pyradiomics decides (or raises)
                continue
            msk = msk.astype(bool, copy=False)
            n = int(np.count_nonzero(msk))
            if n == 0:
                errors.append((k, "empty mask"))
                continue
            if n == 1:
                errors.append((k, "single pixel: pyradiomics cannot measure a one-pixel region"))
                continue
            o = _prepare(img, msk, float(bin_width), with_shape, pixel_spacing)
            if o is None:
                fallback.append(k)
                continue
            o.index = k
            objs.append(o)

        if objs:
            rows = np.array([o.index for o in objs])
            out[rows[:, None], [col[f"firstorder_{n}"] for n in _FIRSTORDER]] = _firstorder(objs, (sx, sy))
            if with_shape:
                out[rows[:, None], [col[f"shape2D_{n}"] for n in _SHAPE]] = np.array([o.shape for o in objs])
            batched = [p for p, o in enumerate(objs) if not o.direct]
            for cls, fn, key in (("glcm", _glcm, lambda o: o.glcm_jmajor),
                                 ("glrlm", _glrlm, lambda o: o.glrlm_rmajor),
                                 ("glszm", _glszm, None), ("gldm", _gldm, None), ("ngtdm", _ngtdm, None)):
                members = batched if cls in ("glcm", "glrlm") else list(range(len(objs)))
                for batch in _batches([objs[p] for p in members], key):
                    batch = [members[p] for p in batch]
                    args = [[objs[p] for p in batch]]
                    if key is not None:
                        args.append(key(objs[batch[0]]))
                    for name, vals in fn(*args).items():
                        out[rows[batch], col[f"{cls}_{name}"]] = vals[:len(batch)]
            for o in objs:
                if o.direct:
                    values = _direct(o)
                    if values is None:
                        fallback.append(o.index)
                        continue
                    for cls, vals in values.items():
                        for name, v in vals.items():
                            out[o.index, col[f"{cls}_{name}"]] = v

    if fallback:
        fallback.sort()
        vals, errs, _ = reference.radiomics_rows_reference([tasks[k] for k in fallback], spacing_mm,
                                                           bin_width, with_shape)
        out[fallback] = vals
        errors.extend((fallback[i], r) for i, r in errs)
        errors.sort(key=lambda e: e[0])
    return out, errors, time.perf_counter() - t0
