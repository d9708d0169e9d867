# SAR2EO & Cloud — the two commands a new user needs (each does all set-up first, idempotently):
#
#   make demo     headless run of both algorithms on the bundled real sample through qgis_process.bin
#   make test     the whole test suite (also what CI runs, via .ci/run)
#
# Other targets: test-debian13, setup, zip, zip-full, deploy, resources, metadata, icons, pb-deploy, pb-zip, clean,
# clean-debian13. `make help` lists them.
SHELL := /bin/bash
.DEFAULT_GOAL := help
# The venv's Python once set-up has run; building the zip needs only python3 and pyrcc5.
PY := $(shell test -x .venv/bin/python && echo .venv/bin/python || echo python3)
PLUGINS_DIR ?= $(HOME)/.local/share/QGIS/QGIS3/profiles/default/python/plugins

.PHONY: help setup demo test test-debian13 zip zip-full deploy resources metadata icons pb-deploy pb-zip clean \
	clean-debian13

help:  ## list the targets
	@grep -E '^[a-z0-9-]+:.*## ' $(MAKEFILE_LIST) | sed -E 's/:.*## /\t/' | expand -t 16

setup:  ## install system packages (apt, if missing), .venv, pinned pip packages; compile resources
	./scripts/setup.sh

demo:  ## set-up, then translate + cloud-mask the bundled real sample headless -> artifacts/demo/
	./scripts/demo.sh

test:  ## set-up, then the test suite -> artifacts/test/{junit.xml,pytest.log}
	./scripts/test.sh

test-debian13:  ## the whole suite on Debian 13 / QGIS 3.40 in a chroot (root) -> artifacts/test-debian13/
	./scripts/test_debian13.sh

zip:  ## code-only dist/sar2eo_cloud_plugin-<version>.zip for plugins.qgis.org (< 25 MB; models from the dock)
	$(PY) scripts/build_plugin.py zip

zip-full:  ## dist/sar2eo_cloud_plugin-<version>-full.zip with every model inside, for offline installs
	$(PY) scripts/build_plugin.py zip --full

deploy:  ## build the full zip and unpack it into PLUGINS_DIR (default: your QGIS default profile)
	$(PY) scripts/build_plugin.py deploy --full "$(PLUGINS_DIR)"

resources:  ## compile resources.qrc -> sar2eo_cloud_plugin/resources.py (pyrcc5)
	$(PY) scripts/build_plugin.py resources

metadata:  ## check metadata.txt; link it and LICENSE into the package
	$(PY) scripts/build_plugin.py metadata

icons:  ## re-render sar2eo_cloud_plugin/icons/icon.png from icon.svg
	QT_QPA_PLATFORM=offscreen $(PY) scripts/render_icons.py

pb-deploy: resources metadata  ## the same plugin folder deployed by pb_tool into PLUGINS_DIR
	cd sar2eo_cloud_plugin && ../.venv/bin/pb_tool deploy -y -n --config_file ../pb_tool.cfg -p "$(PLUGINS_DIR)"

pb-zip: resources metadata  ## pb_tool's zip of the plugin folder -> dist/sar2eo_cloud_plugin-pb_tool.zip
	rm -rf build/pb_tool && mkdir -p dist
	cd sar2eo_cloud_plugin && ../.venv/bin/pb_tool zip -q -n --config_file ../pb_tool.cfg -p ../build/pb_tool </dev/null
	mv sar2eo_cloud_plugin/sar2eo_cloud_plugin.zip dist/sar2eo_cloud_plugin-pb_tool.zip

clean:  ## remove build outputs (dist/, build/ but the Debian 13 root, compiled resources, artifacts/{demo,test})
	rm -rf dist artifacts/demo artifacts/test artifacts/test-debian13 sar2eo_cloud_plugin/resources.py
	test ! -d build || find build -mindepth 1 -maxdepth 1 ! -name 'debian13-root*' -exec rm -rf {} +
	find . \( -path ./.venv -o -path ./build \) -prune -o -name __pycache__ -type d -exec rm -rf {} +

clean-debian13:  ## remove the cached Debian 13 root of test-debian13 (refused while anything is mounted in it)
	@if [ -d build/debian13-root ] && findmnt -rn -o TARGET | grep -q "^$$(realpath build/debian13-root)/"; then \
	    echo "something is mounted under build/debian13-root (a test-debian13 run?); not removing it" >&2; exit 1; fi
	rm -rf build/debian13-root build/debian13-root.partial build/debian13-root.lock
