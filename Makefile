# calcnode: `make run` starts the node, `make test` runs the whole suite.
# Both start from a fresh clone: they create .venv and install what is missing.

PYTHON ?= python3
VENV   := .venv
BIN    := $(VENV)/bin
STAMP  := $(VENV)/.installed-stamp

.PHONY: run test install system-deps ohif viewer bench clean seg-train-data demo-seg-model demo-classifier evaluate-demo-classifier classifier-learning-curve seg-test-data seg-val-data \
	evaluate-demo-seg demo-cluster-model evaluate-demo-clusters \
	evaluate-real-insertions

# The venv is rebuilt when pyproject.toml changes.
$(STAMP): pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(BIN)/pip install --quiet --upgrade pip
	$(BIN)/pip install --quiet -e '.[test]'
	touch $(STAMP)

install: $(STAMP)

# DCMTK, dicom3tools, Orthanc with its DICOMweb plugin and Chromium: the real peers the tests talk to.
system-deps:
	@sh deploy/install-system-deps.sh

# The OHIF viewer's built distribution (npm @ohif/app, its dist/ folder), for the local viewer
# (deploy/viewer/) and its test. An exact version; fetched once (the stamp file).
OHIF_VERSION := 3.13.2
OHIF_DIR     := .cache/ohif
OHIF_STAMP   := $(OHIF_DIR)/.$(OHIF_VERSION).stamp
$(OHIF_STAMP):
	@sh deploy/viewer/fetch-ohif.sh $(OHIF_VERSION) $(OHIF_DIR)

ohif: $(OHIF_STAMP)

# The local viewer (Orthanc + DICOMweb + OHIF on loopback) with the given files: make viewer FILES='study/ results/'
viewer: $(STAMP) system-deps ohif
	$(BIN)/calcnode viewer $(FILES)

run: $(STAMP)
	$(BIN)/calcnode serve

# lint-imports checks the architecture contracts in pyproject.toml ([tool.importlinter]).
test: $(STAMP) system-deps ohif
	$(BIN)/lint-imports
	$(BIN)/python -m pytest -ra

bench: $(STAMP)
	$(BIN)/python -m bench

# The shipped demonstration segmentation model (NOT FOR CLINICAL USE): simulator data with
# real-background insertion, and real tissue: three of the four real views of real-tissue/ as hard
# negatives and insertion backgrounds (0.07 mm assumed: the PNGs state no spacing). The fourth,
# nyu_gmic_0_L-MLO, is HELD OUT of training (docs/segmentation.md "Real tissue"). Fixed seeds.
INTEROP_MG := ../shared/interop/mg
REAL_TISSUE := ../shared/interop/real-tissue
REAL_TRAIN := $(REAL_TISSUE)/nyu_gmic_0_L-CC.png $(REAL_TISSUE)/nyu_gmic_0_R-CC.png $(REAL_TISSUE)/nyu_gmic_0_R-MLO.png
REAL_HELD_OUT := $(REAL_TISSUE)/nyu_gmic_0_L-MLO.png
SYNTH_TYPES := amorphous:3,punctate,fine_pleomorphic,fine_linear_branching
seg-train-data: $(STAMP)
	rm -rf data/seg-train data/seg-train-bg data/seg-train-2 data/seg-train-real data/seg-train-3 \
	    data/seg-train-4 data/seg-train-real-2 data/seg-train-real-3 data/seg-train-proc
	$(BIN)/calcnode synth --out data/seg-train --cases 30 --seed 101 --types $(SYNTH_TYPES) --tissue smooth --quiet
	$(BIN)/calcnode synth --out data/seg-train-2 --cases 20 --seed 103 --types $(SYNTH_TYPES) --tissue smooth --quiet
	$(BIN)/calcnode synth --out data/seg-train-bg --cases 30 --seed 102 --types $(SYNTH_TYPES) --tissue smooth \
	    --max-clusters 3 --quiet --background $(INTEROP_MG)/MG1_J2KI.dcm \
	    $(INTEROP_MG)/cbis_ddsm/benign_1-130.dcm $(INTEROP_MG)/cbis_ddsm/malignant_1-280.dcm
	$(BIN)/calcnode synth --out data/seg-train-real --cases 12 --seed 104 --types $(SYNTH_TYPES) --tissue smooth \
	    --max-clusters 3 --quiet --background $(REAL_TRAIN) --background-spacing 0.07
	$(BIN)/calcnode synth --out data/seg-train-real-2 --cases 30 --seed 106 --types $(SYNTH_TYPES) --tissue smooth \
	    --max-clusters 3 --quiet --background $(REAL_TRAIN) --background-spacing 0.07
	$(BIN)/calcnode synth --out data/seg-train-3 --cases 400 --seed 105 --types $(SYNTH_TYPES) --tissue smooth \
	    --lateralities L --quiet
	$(BIN)/calcnode synth --out data/seg-train-4 --cases 250 --seed 107 --types amorphous --tissue smooth \
	    --lateralities L --quiet
	$(BIN)/calcnode synth --out data/seg-train-real-3 --cases 300 --seed 108 --types $(SYNTH_TYPES) --tissue smooth \
	    --max-clusters 3 --quiet --background $(REAL_TRAIN) --background-spacing 0.07
	$(BIN)/calcnode synth --out data/seg-train-proc --cases 150 --seed 109 --types $(SYNTH_TYPES) --tissue processed \
	    --lateralities L --quiet

# Model H: the previous shipped model (SEG_BASE: model G, kept in weights/; its recipe and ancestry
# in docs/segmentation.md "Training") deepened by one dilated layer (dilations 1,2,4,8,16,1: receptive
# field 2.3 -> 4.5 mm; the new layer starts as the identity, so training starts from G's output) and
# fine-tuned on 64 px patches of ~2,170 images: simulated smooth tissue, insertions into the films,
# into MG1 and into the three real training views, and the processed (NPS-matched) tissue, with
# calcifications scaled to each image's grain (docs/simulator.md). Up to 30 epochs (early stop after 6
# without improvement) of 20,000 of the data sets' patches and 4,000 of the real views' (half the
# hardest), proximity target 0.35 mm. The threshold is then calibrated on the validation set
# (seg-val-data, never trained on): the most sensitive with <= 1 false positive per cm² of ROI there
# AND <= 0.4 objects per cm² of breast on the three real training views (the held-out L-MLO is not
# used). Issue 20's limit is 0.5 per cm² on real views; single views of one exam differ by up to 1.5x
# at one threshold (H: 0.32-0.48; 20-40 objects each, so +-20 % is counting noise alone), so their
# mean is held below it with a margin for the views no one here has. ~40 min on 2 idle cores, after
# the data. docs/segmentation.md "The shipped model since the thirteenth session".
SEG_BASE := analysis/segmentation/weights/demo-seg-cnn-2026-12-07-g.pt
SEG_MODEL := analysis/segmentation/weights/demo-seg-cnn.pt
demo-seg-model: seg-train-data seg-val-data
	$(BIN)/calcnode train-seg --data data/seg-train --data data/seg-train-bg --data data/seg-train-2 \
	    --data data/seg-train-real --data data/seg-train-real-2 --data data/seg-train-real-3 --data data/seg-train-3 \
	    --data data/seg-train-4 --data data/seg-train-proc \
	    --negatives $(REAL_TRAIN) --negative-spacing 0.07 --seed 0 \
	    --init $(SEG_BASE) --dilations 1,2,4,8,16,1 --patch-px 64 \
	    --proximity-radius 0.35 --learning-rate 5e-4 --max-epochs 30 \
	    --patches-per-epoch 20000 --negatives-per-epoch 4000 --out data/seg-model-uncalibrated.pt
	$(BIN)/calcnode calibrate-seg --model data/seg-model-uncalibrated.pt --data data/seg-val --data data/seg-val-bg \
	    --data data/seg-val-proc --negatives $(REAL_TRAIN) --negative-spacing 0.07 --max-negative-fp-per-cm2 0.4 \
	    --out $(SEG_MODEL)

# A segmentation test set: $(1) simulated cases (seed $(2)) in data/$(3), $(4) insertions into
# the interop set's three real mammograms (seed $(5)) in data/$(3)-bg, and $(6) cases of the
# processed (NPS-matched) tissue, left breasts (seed $(7)), in data/$(3)-proc.
define seg-eval-set
	rm -rf data/$(3) data/$(3)-bg data/$(3)-proc
	$(BIN)/calcnode synth --out data/$(3) --cases $(1) --seed $(2) --types $(SYNTH_TYPES) --tissue smooth --quiet
	$(BIN)/calcnode synth --out data/$(3)-bg --cases $(4) --seed $(5) --types $(SYNTH_TYPES) --tissue smooth \
	    --max-clusters 3 --quiet --background $(INTEROP_MG)/MG1_J2KI.dcm \
	    $(INTEROP_MG)/cbis_ddsm/benign_1-130.dcm $(INTEROP_MG)/cbis_ddsm/malignant_1-280.dcm
	$(BIN)/calcnode synth --out data/$(3)-proc --cases $(6) --seed $(7) --types $(SYNTH_TYPES) --tissue processed \
	    --lateralities L --quiet
endef

# The held-out segmentation set of the README's figures (seeds never used in training): 164
# patients, so that a per-type figure is known to a few hundredths even though a type's particles
# come in a few clusters (docs/segmentation.md). ~8 minutes; evaluate-demo-seg ~25 more.
seg-test-data: $(STAMP)
	$(call seg-eval-set,128,201,seg-test,36,202,24,207)
	rm -rf data/seg-test-real
	$(BIN)/calcnode synth --out data/seg-test-real --cases 60 --seed 208 --types $(SYNTH_TYPES) --tissue smooth \
	    --max-clusters 3 --quiet --background $(REAL_HELD_OUT) --background-spacing 0.07

# The validation set: seeds 203 and 204 (never trained or tested on), 44 patients. Models are
# compared, and a model's threshold is calibrated (calcnode calibrate-seg), on it before the
# held-out set is looked at (docs/segmentation.md). About 2 minutes.
seg-val-data: $(STAMP)
	$(call seg-eval-set,32,203,seg-val,12,204,12,206)

# The real views: false objects per cm² of breast (0.07 mm assumed), the held-out view and the
# three training views reported apart (evaluate-seg tells them by the model's own record).
# The held-out set is also measured per tissue (data/seg-evaluation/by-tissue/<set>/): simulated
# smooth, films, processed, and the insertions into the held-out real view L-MLO.
SEG_TEST_SETS := seg-test seg-test-bg seg-test-proc seg-test-real
evaluate-demo-seg: seg-test-data
	$(BIN)/calcnode seg-ceiling $(SEG_TEST_SETS:%=--data data/%) --out data/seg-evaluation/ceiling.json
	$(BIN)/calcnode evaluate-seg --model analysis/segmentation/weights/demo-seg-cnn.pt \
	    $(SEG_TEST_SETS:%=--data data/%) --ceiling data/seg-evaluation/ceiling.json \
	    --negatives $(REAL_HELD_OUT) $(REAL_TRAIN) --negative-spacing 0.07 --out data/seg-evaluation
	for set in $(SEG_TEST_SETS); do \
	    $(BIN)/calcnode seg-ceiling --data data/$$set --out data/seg-evaluation/by-tissue/$$set/ceiling.json && \
	    $(BIN)/calcnode evaluate-seg --model analysis/segmentation/weights/demo-seg-cnn.pt --data data/$$set \
	        --ceiling data/seg-evaluation/by-tissue/$$set/ceiling.json --out data/seg-evaluation/by-tissue/$$set \
	        || exit 1; \
	done

# Calcifications inserted into the real view that no model trains on (L-MLO; 0.07 mm assumed): the
# segmentation's and the cluster detector's sensitivity in real tissue, reported apart from the
# simulated tissue's (docs/segmentation.md, "Real tissue: calcifications inserted into a real view").
# About 5 minutes.
evaluate-real-insertions: $(STAMP)
	rm -rf data/real-insertions data/real-insertions-evaluation
	$(BIN)/calcnode synth --out data/real-insertions --cases 60 --seed 312 --types $(SYNTH_TYPES) --tissue smooth \
	    --max-clusters 3 --negative-fraction 0.25 --quiet --background $(REAL_HELD_OUT) --background-spacing 0.07
	$(BIN)/calcnode seg-ceiling --data data/real-insertions --out data/real-insertions-evaluation/ceiling.json
	$(BIN)/calcnode evaluate-seg --model analysis/segmentation/weights/demo-seg-cnn.pt --data data/real-insertions \
	    --ceiling data/real-insertions-evaluation/ceiling.json --out data/real-insertions-evaluation/segmentation
	$(BIN)/calcnode evaluate-clusters --data data/real-insertions --quiet --out data/real-insertions-evaluation/clusters

# The shipped demonstration classifier (NOT FOR CLINICAL USE): simulated amorphous clusters with
# fixed seeds, segmented with the demonstration CNN (run demo-seg-model first) at the CNN's own
# calibrated threshold: the one operating point the SEG, the cluster detector and the classifier
# share (1.1.0 used HDoGReg's 10^-3.5). About 10 minutes on 2 idle cores. See docs/classifier.md.
demo-classifier: $(STAMP)
	rm -rf data/cls-train
	$(BIN)/calcnode synth --out data/cls-train --cases 170 --seed 201 --lateralities L --tissue smooth --quiet
	$(BIN)/calcnode train --data data/cls-train --seed 0 \
	    --name calcnode-demo --version 1.5.0 \
	    --out analysis/models/calcnode-demo-1.5.0 --report analysis/models/calcnode-demo-1.5.0-report

# Its held-out evaluation (docs/classifier.md): 40 simulated patients of another seed (100 ROIs),
# at the bundle's threshold, with intervals and the Bayes-optimal AUC. About 5 minutes.
evaluate-demo-classifier: $(STAMP)
	rm -rf data/cls-test
	$(BIN)/calcnode synth --out data/cls-test --cases 40 --seed 202 --lateralities L --tissue smooth --quiet
	$(BIN)/calcnode evaluate --model analysis/models/calcnode-demo-1.5.0 --data data/cls-test --seed 0 \
	    --quiet --out data/cls-evaluation

# Its learning curve (docs/classifier.md#learning-curve; NOT FOR CLINICAL USE): nested-CV AUC on
# patient-grouped subsets of ~100 to 2000 usable ROIs of data/cls-train plus two more simulator sets
# (data/cls-curve, data/cls-curve-2: other seeds, the same settings; made here if missing), beside the Bayes-optimal AUC on the same ROIs, with the
# CNN and operating point the bundle carries. Written into the bundle's report, which it belongs to.
# Sizes beyond the usable ROIs are listed as skipped. ~10 minutes of data, then ~11 of 2 idle cores.
CURVE_SIZES := 100,200,450,1000,2000,all
classifier-learning-curve: $(STAMP)
	test -f data/cls-train/labels.csv || $(BIN)/calcnode synth --out data/cls-train --cases 170 --seed 201 \
	    --lateralities L --tissue smooth --quiet
	test -f data/cls-curve/labels.csv || $(BIN)/calcnode synth --out data/cls-curve --cases 600 --seed 211 \
	    --lateralities L --tissue smooth --quiet
	test -f data/cls-curve-2/labels.csv || $(BIN)/calcnode synth --out data/cls-curve-2 --cases 250 --seed 212 \
	    --lateralities L --tissue smooth --quiet
	$(BIN)/calcnode learning-curve --data data/cls-train --data data/cls-curve --data data/cls-curve-2 --sizes $(CURVE_SIZES) --seed 0 \
	    --seg-model analysis/models/calcnode-demo-1.5.0/segmentation-cnn.pt --workers 2 \
	    --out analysis/models/calcnode-demo-1.5.0-report/learning-curve

# The shipped demonstration cluster model (views without ROI; NOT FOR CLINICAL USE): simulated
# 2000 x 1600 views at 0.07 mm (1-3 clusters per affected breast, a quarter of the cases without any):
# 228 cases of the smooth tissue (36 + 64 + 64 + 64) and 48 of the processed tissue (seed 309); 80
# insertions into the right-breast real views (seed 311, their benign lesion ignored); and those two
# real views as negatives. The left-breast real views are held out for evaluate-demo-clusters. Members
# are the calcifications with CNN support >= 0.93, below the operating point: the support at which
# CNN H keeps as many objects per cm² of the two real training views as CNN G kept at 0.9, the
# members' support of models 3-5 (docs/clusters.md, model 6). The scorer is LightGBM (the default
# learner; docs/clusters.md "The scorer"); its threshold is set out of fold at 0.15 false marks per
# training image (0.1 before CNN H; docs/clusters.md, model 5). About 35 minutes on 2 idle cores
# (~60 shared). See docs/clusters.md.
CLUSTER_SYNTH := --size 2000x1600 --max-clusters 3 --negative-fraction 0.25 --types $(SYNTH_TYPES) --quiet
CLUSTER_MODEL := analysis/models/calcnode-clusters-demo-1/cluster-model.json
CLUSTER_REAL_TRAIN := $(REAL_TISSUE)/nyu_gmic_0_R-CC.png $(REAL_TISSUE)/nyu_gmic_0_R-MLO.png
demo-cluster-model: $(STAMP)
	rm -rf data/cluster-train data/cluster-train-2 data/cluster-train-3 data/cluster-train-4 \
	    data/cluster-train-proc data/cluster-train-realbg
	$(BIN)/calcnode synth --out data/cluster-train --cases 36 --seed 301 $(CLUSTER_SYNTH)
	$(BIN)/calcnode synth --out data/cluster-train-2 --cases 64 --seed 303 $(CLUSTER_SYNTH)
	$(BIN)/calcnode synth --out data/cluster-train-3 --cases 64 --seed 305 $(CLUSTER_SYNTH)
	$(BIN)/calcnode synth --out data/cluster-train-4 --cases 64 --seed 307 $(CLUSTER_SYNTH)
	$(BIN)/calcnode synth --out data/cluster-train-proc --cases 48 --seed 309 --tissue processed $(CLUSTER_SYNTH)
	$(BIN)/calcnode synth --out data/cluster-train-realbg --cases 80 --seed 311 --max-clusters 3 \
	    --negative-fraction 0.25 --types $(SYNTH_TYPES) --tissue smooth --quiet \
	    --background $(CLUSTER_REAL_TRAIN) --background-spacing 0.07
	$(BIN)/calcnode train-clusters --data data/cluster-train --data data/cluster-train-2 --data data/cluster-train-3 \
	    --data data/cluster-train-4 --data data/cluster-train-proc --data data/cluster-train-realbg \
	    --seed 0 --quiet --version 6 --member-threshold 0.93 --target-fp 0.15 --negatives $(CLUSTER_REAL_TRAIN) \
	    --save-candidates data/cluster-train-candidates.json --out $(CLUSTER_MODEL)

# Its held-out evaluation: another seed (160 views), and the two left-breast real views. About 6 minutes.
evaluate-demo-clusters: $(STAMP)
	rm -rf data/cluster-test
	$(BIN)/calcnode synth --out data/cluster-test --cases 40 --seed 302 $(CLUSTER_SYNTH)
	$(BIN)/calcnode evaluate-clusters --data data/cluster-test --model $(CLUSTER_MODEL) --quiet \
	    --negatives $(REAL_TISSUE)/nyu_gmic_0_L-CC.png $(REAL_TISSUE)/nyu_gmic_0_L-MLO.png \
	    --save-candidates data/cluster-evaluation-candidates.json --out data/cluster-evaluation

clean:
	rm -rf $(VENV) var .pytest_cache
