# DualFuse: the two commands a user needs are `make train` and `make test`.
SWIFT    ?= swift
# Numeric code is 10-50x slower unoptimised, so everything builds in release (tests with testability on).
RELEASE  := -c release
TESTFLAGS := $(RELEASE) -Xswiftc -enable-testing
BIN      := .build/release
DATA     ?= data/synth
EPOCHS   ?= 12

.PHONY: deps build test train bench fuzz clean

deps:
	@tools/install-deps.sh

build: deps
	$(SWIFT) build $(RELEASE)

# The main job on the bundled default: synthetic RGB-IR scenes (generated if absent), a short
# training of the mid-fusion dual yolov8n at 128 px, then a prediction on one validation pair.
train: build
	@test -f $(DATA)/data.yaml || $(BIN)/synth_data --out $(DATA) --train 512 --val 128 --imgsz 128 --seed 0
	$(BIN)/train_dual --data $(DATA)/data.yaml --cfg configs/models/dual_yolov8n_mid.yaml \
		--hyp configs/hyp/quick.yaml --epochs $(EPOCHS) --batch 16 --imgsz 128 --name demo --exist-ok
	$(BIN)/predict --weights runs/train/demo/weights/best.safetensors \
		--source "$$(ls $(DATA)/images/val/*.png | head -n 1)" --name demo --exist-ok
	@echo "training run: runs/train/demo (results.csv, steps.csv, weights/best.safetensors)"
	@echo "prediction:   runs/predict/demo (rgb/ and ir/ annotated images, labels/, predictions.json)"

# Swift Testing suites run concurrently (each thread has its own compute context); XCTest cases
# (the long training tests and the RSS checks) run one after another in the same process.
# Then the fuzz targets (libFuzzer): every committed input of Tests/Fuzz replayed, 10 s of new
# inputs per target (about 1.5 minutes in all).
# The export and TensorBoard tests read their files back with ONNX Runtime and TensorBoard, from
# a Python virtual environment in .venv (made once by tools/install-python-tools.sh).
test: deps
	@tools/install-python-tools.sh
	$(SWIFT) build --build-tests $(TESTFLAGS)
	$(SWIFT) test --skip-build $(TESTFLAGS)
	tools/fuzz/build.sh
	tools/fuzz/run.sh --ci

# A fuzzing campaign: SECONDS per target; new inputs that add coverage are merged into Tests/Fuzz.
SECONDS ?= 600
fuzz: deps
	$(SWIFT) build --build-tests $(TESTFLAGS)
	tools/fuzz/build.sh
	tools/fuzz/run.sh $(SECONDS)

bench: build
	$(BIN)/bench conv
	$(BIN)/bench model --cfg configs/models/dual_yolov8n_mid.yaml --nc 1
	$(BIN)/bench loss

clean:
	rm -rf .build
