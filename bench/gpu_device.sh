#!/usr/bin/env bash
# On the GPU machine (docs/gpu.md): install the carried wheels, run bench/gpu_check.py, and
# copy its report to $OUT. Arguments go to gpu_check.py (e.g. --parts ray --budget-s 120).
#   PY       the Python with torch (default python3, the device's)
#   SITE     where the wheels go (default /tmp/site; kept on a warm machine between calls)
#   BUNDLES  folders of wheels to install (default .gpu-bundle/wheels)
#   INSTALL_ONLY=1  stop after installing and importing the torch-free part (the rehearsal here)
set -u
cd "$(dirname "$0")/.."
PY=${PY:-python3}
SITE=${SITE:-/tmp/site}
BUNDLES=${BUNDLES-.gpu-bundle/wheels}
for folder in $BUNDLES; do
  "$PY" -m pip install -q --no-index --no-deps --no-compile --no-cache-dir --upgrade \
    --target "$SITE" "$folder"/*.whl || { echo "cannot install $folder" >&2; exit 3; }
done
export PYTHONPATH="$SITE${PYTHONPATH:+:$PYTHONPATH}" PATH="$SITE/bin:$PATH"
export LOVECS_SHARED_DATA=${LOVECS_SHARED_DATA:-$PWD/.gpu-bundle/data}
"$PY" -c "from osgeo import gdal; import lovecs_core.contract, lovecs_core.model.card; print('gdal', gdal.__version__)" ||
  exit 4
[ "${INSTALL_ONLY:-0}" = 1 ] && exit 0
"$PY" -c "import torch, segmentation_models_pytorch, lovecs_core.mapping.predict; print('torch', torch.__version__, torch.cuda.is_available())" ||
  exit 5
REPORT=${REPORT:-bench/out/gpu-check}
"$PY" bench/gpu_check.py --device "${DEVICE:-cuda}" --out "$REPORT" "$@"
rc=$?
if [ -n "${OUT:-}" ]; then
  cp "$REPORT/report.json" "$REPORT/report.md" "$OUT/" 2>/dev/null
  tar czf "$OUT/gpu-check-logs.tgz" -C "$REPORT" logs parts 2>/dev/null
fi
exit $rc
